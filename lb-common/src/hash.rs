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

/// The kernel's `hsiphash()` of one 32-bit word on a 64-bit kernel (lib/siphash.c:
/// SipHash-1-3 with a 128-bit key, cut to 32 bits), as IPVS mh hashes addresses with it.
#[inline(always)]
pub fn hsiphash_u32(key: [u64; 2], word: u32) -> u32 {
    let mut v0 = 0x736f_6d65_7073_6575_u64 ^ key[0];
    let mut v1 = 0x646f_7261_6e64_6f6d_u64 ^ key[1];
    let mut v2 = 0x6c79_6765_6e65_7261_u64 ^ key[0];
    let mut v3 = 0x7465_6462_7974_6573_u64 ^ key[1];
    // The length (4 bytes) in the top byte, the data in the low ones (little-endian).
    let b = (4u64 << 56) | word as u64;
    macro_rules! sipround {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13);
            v1 ^= v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16);
            v3 ^= v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21);
            v3 ^= v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17);
            v1 ^= v2;
            v2 = v2.rotate_left(32);
        };
    }
    v3 ^= b;
    sipround!();
    v0 ^= b;
    v2 ^= 0xff;
    sipround!();
    sipround!();
    sipround!();
    ((v0 ^ v1) ^ (v2 ^ v3)) as u32
}

/// IPVS mh's two keys (`generate_hash_secret()` in ip_vs_mh.c): fixed, so every director
/// and every kernel builds the same table.
pub const MH_KEY1: [u64; 2] = [2_654_435_761, 2_654_435_761];
pub const MH_KEY2: [u64; 2] = [2_654_446_892, 2_654_446_892];

/// `ip_vs_mh_hashkey()` for an IPv4 address (host order) and port, at `offset`.
#[inline(always)]
pub fn mh_hashkey(key: [u64; 2], addr_v4: u32, port: u16, offset: u32) -> u32 {
    hsiphash_u32(key, offset.wrapping_add(port as u32).wrapping_add(addr_v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lib/test_siphash.c's 64-bit hsiphash vector for the 4 bytes 00 01 02 03 under the key
    /// 00..0f: the kernel's own check of the function IPVS mh hashes with.
    #[test]
    fn hsiphash_matches_the_kernels_test_vector() {
        assert_eq!(hsiphash_u32([0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908], 0x0302_0100), 0x88d3_8328);
    }
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
