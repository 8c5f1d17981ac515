//! Benchmark traffic: frames built layer by layer, in the sizes and mixes the report uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;

use crate::kernel::mac::Mac;

/// Frame sizes (bytes on the wire, without FCS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The smallest Ethernet frame: 64 bytes with FCS, 60 without.
    Min64,
    /// Simple IMIX: 7 × 60, 4 × 590, 1 × 1514 bytes.
    Imix,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Min64 => "64B",
            Size::Imix => "IMIX",
        }
    }

    /// Length of the `i`-th frame of a stream.
    pub fn len(self, i: usize) -> usize {
        match self {
            Size::Min64 => 60,
            Size::Imix => match i % 12 {
                0..=6 => 60,
                7..=10 => 590,
                _ => 1514,
            },
        }
    }
}

pub const CLIENT_MAC: Mac = [0x02, 0xbe, 0, 0, 0, 0x0a];
pub const DIRECTOR_MAC: Mac = [0x02, 0xbe, 0, 0, 0, 0x02];
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const NON_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// The IPv6 service's VIP, and the director's own IPv6 address.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub const NON_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// The `n`-th IPv6 client (2001:db8:1::/64 onwards, never the VIP's network).
pub fn client6(n: u32) -> [u8; 16] {
    let n = n % (1 << 16);
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n as u16).octets()
}

/// The `n`-th client address (198.18.1.0/24 onwards, never the VIP's subnet).
pub fn client(n: u32) -> [u8; 4] {
    let n = n % (1 << 16);
    [198, 19, (n >> 8) as u8, (n & 0xff) as u8]
}

/// A TCP segment from `src` to `dst` (one family) with exactly `flags`, padded to `len`
/// bytes (at least its headers).
pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, len: usize) -> Vec<u8> {
    let l3 = if src.is_ipv4() { 20 } else { 40 };
    let payload_len = len.saturating_sub(14 + l3 + 20);
    let mut out = Vec::with_capacity(len.max(14 + l3 + 20));
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("a segment from {src} to {dst}: one family"),
    };
    ip.tcp(sport, dport, 1, 64240).write(&mut out, &vec![0u8; payload_len]).expect("building a frame");
    out[14 + l3 + 13] = flags;
    out
}

use lb_common::conn::tcp::{FLAG_ACK as ACK, FLAG_SYN as SYN};
const PSH_ACK: u8 = ACK | 0x08;

/// The flow `i` of a set of `n`: distinct (client, port) pairs.
pub fn flow(i: u32) -> ([u8; 4], u16) {
    (client(i / 50_000), 10_000 + (i % 50_000) as u16)
}

/// Which VIP (and which of the director's own addresses) the benchmark's frames go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// A segment of flow `i` (its client and port in this family) to the VIP, or with
    /// `own` to the director's own address; at least the headers long.
    fn segment(self, i: u32, own: bool, dport: u16, flags: u8, len: usize) -> Vec<u8> {
        let (c, p) = flow(i);
        let (src, dst): (IpAddr, IpAddr) = match self {
            Family::V4 => (c.into(), if own { NON_VIP } else { VIP }.into()),
            Family::V6 => (client6(u32::from_be_bytes(c) & 0xffff).into(), if own { NON_VIP6 } else { VIP6 }.into()),
        };
        tcp(src, dst, p, dport, flags, len)
    }
}

/// SYNs of `n` new flows, starting at flow `first`.
pub fn syn_storm(family: Family, first: u32, n: u32, size: Size) -> Vec<Vec<u8>> {
    (0..n).map(|i| family.segment(first + i, false, 80, SYN, size.len(i as usize))).collect()
}

/// What opens `n` flows (SYN, then the handshake's ACK), and then their data segments.
pub fn established(family: Family, first: u32, n: u32, size: Size) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut setup = Vec::with_capacity(2 * n as usize);
    let mut data = Vec::with_capacity(n as usize);
    for i in 0..n {
        setup.push(family.segment(first + i, false, 80, SYN, 60));
        setup.push(family.segment(first + i, false, 80, ACK, 60));
        data.push(family.segment(first + i, false, 80, PSH_ACK, size.len(i as usize)));
    }
    (setup, data)
}

/// Traffic for the director's own address.
pub fn non_vip(family: Family, n: u32, size: Size) -> Vec<Vec<u8>> {
    (0..n).map(|i| family.segment(i, true, 22, PSH_ACK, size.len(i as usize))).collect()
}

/// A realistic mix: data on `flows` established flows, with one new flow (SYN) in twenty.
pub fn realistic(established_first: u32, flows: u32, new_first: u32, n: u32, size: Size) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            if i % 20 == 19 {
                Family::V4.segment(new_first + i / 20, false, 80, SYN, size.len(i as usize))
            } else {
                Family::V4.segment(established_first + fastrand::u32(0..flows), false, 80, PSH_ACK, size.len(i as usize))
            }
        })
        .collect()
}
