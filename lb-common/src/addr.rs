//! Addresses in map keys and values are always 16 bytes, so IPv6 needs no layout change.
//! IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2).

/// A 16-byte address as stored in every map key and value.
pub type Addr16 = [u8; 16];

/// Stores an IPv4 address (network byte order) in the 16-byte form the maps use.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> Addr16 {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// The address whose bytes are the little-endian words `w` (how a key's words hold it).
#[inline(always)]
pub fn from_words(w: [u64; 2]) -> Addr16 {
    // SAFETY: 16 bytes either way; on drlb's little-endian targets the bytes in memory order.
    unsafe { core::mem::transmute::<[u64; 2], Addr16>(w) }
}

/// Returns the IPv4 address inside an IPv4-mapped 16-byte address, if it is one.
pub fn as_v4(addr: &Addr16) -> Option<[u8; 4]> {
    if addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

/// An address in the maps' 16-byte form.
pub fn from_ip(ip: core::net::IpAddr) -> Addr16 {
    match ip {
        core::net::IpAddr::V4(v4) => v4_mapped(v4.octets()),
        core::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a map entry holds (`None` for the all-zero address of an empty entry).
pub fn to_ip(a: &Addr16) -> Option<core::net::IpAddr> {
    match as_v4(a) {
        Some(v4) => Some(core::net::IpAddr::from(v4)),
        None if a.iter().any(|b| *b != 0) => Some(core::net::IpAddr::from(*a)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_round_trip() {
        let a = v4_mapped([198, 18, 0, 100]);
        assert_eq!(as_v4(&a), Some([198, 18, 0, 100]));
        assert_eq!(as_v4(&[0; 16]), None);
    }
}
