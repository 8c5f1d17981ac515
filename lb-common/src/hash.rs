//! The stable flow hash used to pick a real server until connection state exists.

/// murmur3's 32-bit finaliser: cheap and mixes every input bit into every output bit.
#[inline(always)]
const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[inline(always)]
const fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// Hashes a 5-tuple. Same input, same output, on every CPU and in userspace.
#[inline(always)]
pub fn flow_hash(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = 0x9747_b28c_u32 ^ proto as u32;
    let mut i = 0;
    while i < 16 {
        h = fmix32(h ^ word(src, i)).wrapping_add(word(dst, i));
        i += 4;
    }
    fmix32(h ^ ((sport as u32) << 16 | dport as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn source_ports_spread_over_buckets() {
        let src = crate::addr::v4_mapped([198, 18, 0, 10]);
        let dst = crate::addr::v4_mapped([198, 18, 0, 100]);
        let mut counts = [0u32; 4];
        for port in 30000..34000u16 {
            counts[(flow_hash(&src, &dst, port, 80, 6) % 4) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread {counts:?}");
        }
        let distinct: HashSet<u32> =
            (0..1000u16).map(|p| flow_hash(&src, &dst, p, 80, 6)).collect();
        assert_eq!(distinct.len(), 1000);
    }
}
