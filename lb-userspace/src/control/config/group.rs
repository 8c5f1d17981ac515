//! `group:` of a service: more addresses and ports served as that same service — one
//! scheduler state, one set of connection counts, one persistence domain (keepalived's
//! `virtual_server_group`, and what operators use an IPVS fwmark service for: a client's
//! HTTP and HTTPS going to the same real server).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// Addresses one range may cover: keepalived's IPv4 ranges vary the last byte (at most 256);
/// a longer IPv6 range is almost certainly a typo in its last group.
pub const MAX_RANGE_ADDRESSES: u32 = 256;

/// One entry of `group:`: an address or a range of them, on a port (the service's when
/// absent; 0 for every port).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub vip: VipRange,
    pub port: Option<u16>,
}

/// `198.18.0.3`, `198.18.0.3-10` (the last byte runs to 10, as keepalived writes it),
/// `198.18.0.3-198.18.0.10`, `2001:db8::1-ff` (the last group, in hex) or
/// `2001:db8::1-2001:db8::ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl VipRange {
    /// The addresses, first to last.
    pub fn addresses(&self) -> Vec<IpAddr> {
        match (self.first, self.last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a)..=u32::from(b)).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect(),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a)..=u128::from(b)).map(|n| IpAddr::V6(Ipv6Addr::from(n))).collect(),
            _ => Vec::new(),
        }
    }

    pub fn parse(text: &str) -> Result<VipRange, String> {
        let text = text.trim();
        let Some((first, end)) = text.split_once('-') else {
            let a: IpAddr = text.parse().map_err(|_| format!("`{text}` is not an IP address or range"))?;
            return Ok(VipRange { first: a, last: a });
        };
        let first: IpAddr = first.trim().parse().map_err(|_| format!("`{first}` in `{text}` is not an IP address"))?;
        let end = end.trim();
        let last = match end.parse::<IpAddr>() {
            Ok(last) => last,
            // keepalived's short form: the end replaces the last byte (IPv4, decimal) or the
            // last 16-bit group (IPv6, hex).
            Err(_) => match first {
                IpAddr::V4(a) => {
                    let b: u8 = end.parse().map_err(|_| format!("`{end}` in `{text}` is neither an address nor a last byte (0-255)"))?;
                    let mut o = a.octets();
                    o[3] = b;
                    IpAddr::V4(o.into())
                }
                IpAddr::V6(a) => {
                    let g = u16::from_str_radix(end, 16)
                        .map_err(|_| format!("`{end}` in `{text}` is neither an address nor a last group (hex, 0-ffff)"))?;
                    let mut s = a.segments();
                    s[7] = g;
                    IpAddr::V6(s.into())
                }
            },
        };
        let count = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(b) >= u32::from(a) => u128::from(u32::from(b) - u32::from(a)) + 1,
            (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(b) >= u128::from(a) => u128::from(b) - u128::from(a) + 1,
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                return Err(format!("range `{text}` ends before it starts"));
            }
            _ => return Err(format!("range `{text}` mixes IPv4 and IPv6")),
        };
        if count > u128::from(MAX_RANGE_ADDRESSES) {
            return Err(format!("range `{text}` covers {count} addresses; at most {MAX_RANGE_ADDRESSES}"));
        }
        Ok(VipRange { first, last })
    }
}

impl fmt::Display for VipRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last { write!(f, "{}", self.first) } else { write!(f, "{}-{}", self.first, self.last) }
    }
}

impl<'de> Deserialize<'de> for VipRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        VipRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(text: &str) -> Vec<String> {
        VipRange::parse(text).unwrap().addresses().iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn ranges_are_read_as_keepalived_writes_them() {
        assert_eq!(addrs("198.18.0.3"), ["198.18.0.3"]);
        assert_eq!(addrs("198.18.0.3-5"), ["198.18.0.3", "198.18.0.4", "198.18.0.5"]);
        assert_eq!(addrs("198.18.0.254-198.18.1.1"), ["198.18.0.254", "198.18.0.255", "198.18.1.0", "198.18.1.1"]);
        assert_eq!(addrs("2001:db8::fe-101"), ["2001:db8::fe", "2001:db8::ff", "2001:db8::100", "2001:db8::101"]);
        assert_eq!(addrs("2001:db8::1-2001:db8::2"), ["2001:db8::1", "2001:db8::2"]);
    }

    #[test]
    fn bad_ranges_say_why() {
        for (text, why) in [
            ("198.18.0.9-3", "ends before it starts"),
            ("198.18.0.1-2001:db8::1", "mixes IPv4 and IPv6"),
            ("198.18.0.1-256", "last byte"),
            ("198.18.0.0-198.18.2.0", "at most 256"),
            ("2001:db8::1-xyz", "last group"),
            ("vip", "not an IP address"),
        ] {
            let e = VipRange::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
