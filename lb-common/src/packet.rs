//! Header parsing, written once for the XDP program and the host.
//!
//! Parsing reads through [`Packet`], which bounds-checks every access: in BPF against
//! `data_end` (what the verifier demands), on the host against a slice. Offsets stay
//! provably small (VLAN: 14 or 18; IHL: at most 60) so the verifier can track them.

use crate::addr::{v4_mapped, Addr16};
use crate::maps::{IPPROTO_TCP, IPPROTO_UDP};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPV4_MIN_HLEN: usize = 20;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;

/// Bounds-checked access to a frame's bytes.
pub trait Packet {
    /// The frame's length in bytes.
    fn len(&self) -> usize;
    /// The `N` bytes at `off`, or `None` if the frame is shorter than `off + N`.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// Overwrites the `N` bytes at `off`; `false` if the frame is shorter than `off + N`.
    fn store<const N: usize>(&mut self, off: usize, bytes: &[u8; N]) -> bool;
    /// Runs `f` on the `N` bytes at `off` in place, or `None` if the frame is shorter.
    /// Unlike `load`, nothing is copied: `f` reads just the bytes it needs, each straight
    /// from the checked header (the BPF target copies unaligned bytes one by one).
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R>;
    /// The 4 bytes at `off` read as a little-endian u32 (drlb's targets, bpfel included,
    /// are little-endian), in one load where the target allows it.
    #[inline(always)]
    fn load_u32(&self, off: usize) -> Option<u32> {
        self.load::<4>(off).map(u32::from_le_bytes)
    }
    /// Writes `v`'s little-endian bytes at `off`, in one store where the target allows it.
    #[inline(always)]
    fn store_u32(&mut self, off: usize, v: u32) -> bool {
        self.store::<4>(off, &v.to_le_bytes())
    }
}

/// A frame held in memory (host tests, the benchmark's packet builder).
impl Packet for [u8] {
    #[inline]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }

    #[inline]
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R> {
        let h: &[u8; N] = self.get(off..off.checked_add(N)?)?.try_into().ok()?;
        Some(f(h))
    }

    #[inline]
    fn store<const N: usize>(&mut self, off: usize, bytes: &[u8; N]) -> bool {
        match off.checked_add(N).and_then(|end| self.get_mut(off..end)) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

/// What the frame carries at layer 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    Ipv4(Ipv4Info),
    Arp,
    Ipv6,
    Other,
    /// Too short or inconsistent to know where it is going.
    Malformed,
}

/// The parts of an IPv4 header the dataplane decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    /// Source and destination address as loaded: the header's 4 bytes read little-endian
    /// (`u32::from_le_bytes`), so `to_le_bytes()` gives them back in network order.
    pub src4: u32,
    pub dst4: u32,
    pub proto: u8,
    /// Any fragment (MF set or non-zero offset): no dependable L4 header.
    pub fragment: bool,
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
}

impl Ipv4Info {
    /// The source in the maps' 16-byte form.
    #[inline(always)]
    pub fn src(&self) -> Addr16 {
        v4_mapped(self.src4.to_le_bytes())
    }

    /// The destination in the maps' 16-byte form.
    #[inline(always)]
    pub fn dst(&self) -> Addr16 {
        v4_mapped(self.dst4.to_le_bytes())
    }
}

/// Ports (host byte order) and TCP flags of an L4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Info {
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Reads Ethernet with at most one 802.1Q/802.1ad tag: (ethertype, offset of layer 3).
#[inline(always)]
pub fn ethernet<P: Packet + ?Sized>(p: &P) -> Option<(u16, usize)> {
    let ethertype = be16(p.load::<2>(12)?);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let inner = p.load::<2>(ETH_HLEN + 2)?;
        return Some((be16(inner), ETH_HLEN + VLAN_HLEN));
    }
    Some((ethertype, ETH_HLEN))
}

/// Reads Ethernet (with at most one 802.1Q/802.1ad tag) and, for IPv4, the IP header.
#[inline(always)]
pub fn parse_l3<P: Packet + ?Sized>(p: &P) -> L3 {
    let Some((ethertype, l3_off)) = ethernet(p) else { return L3::Malformed };
    match ethertype {
        ETH_P_IP => {}
        ETH_P_ARP => return L3::Arp,
        ETH_P_IPV6 => return L3::Ipv6,
        _ => return L3::Other,
    }
    let fields = p.with_header::<IPV4_MIN_HLEN, _>(l3_off, |ip| (ip[0], be16([ip[6], ip[7]]), ip[9]));
    let Some((ver_ihl, frag, proto)) = fields else { return L3::Malformed };
    // Whole words: one load each in the XDP program (the header is known to be there).
    let (Some(src), Some(dst)) = (p.load_u32(l3_off + 12), p.load_u32(l3_off + 16)) else { return L3::Malformed };
    let version = ver_ihl >> 4;
    // Masked to 4 bits and shifted, so the verifier sees an offset of at most 60.
    let ihl = ((ver_ihl & 0x0f) as usize) << 2;
    if version != 4 || ihl < IPV4_MIN_HLEN {
        return L3::Malformed;
    }
    L3::Ipv4(Ipv4Info {
        src4: src,
        dst4: dst,
        proto,
        // 0x3fff: the MF bit and the 13-bit fragment offset.
        fragment: frag & 0x3fff != 0,
        l4_off: l3_off + ihl,
    })
}

/// Reads the TCP or UDP header at `l4_off`; `None` if the whole header is not there.
#[inline(always)]
pub fn parse_l4<P: Packet + ?Sized>(p: &P, l4_off: usize, proto: u8) -> Option<L4Info> {
    // The whole header must be there, although only the ports and the flags are read.
    let tcp_flags = if proto == IPPROTO_TCP {
        p.with_header::<TCP_MIN_HLEN, _>(l4_off, |tcp| tcp[13])?
    } else if proto == IPPROTO_UDP {
        p.with_header::<UDP_HLEN, _>(l4_off, |_| 0)?
    } else {
        return None;
    };
    // Both ports in one load: bytes [s0, s1, d0, d1] read little-endian.
    let ports = p.load_u32(l4_off)?;
    Some(L4Info { sport: (ports as u16).swap_bytes(), dport: ((ports >> 16) as u16).swap_bytes(), tcp_flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::from([0xaa; 12]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn short_frames_are_malformed_not_panics() {
        for len in 0..14 {
            assert_eq!(parse_l3(&[0u8; 64][..len]), L3::Malformed);
        }
    }

    #[test]
    fn arp_and_ipv6_are_recognised() {
        assert_eq!(parse_l3(frame(ETH_P_ARP, &[0; 28]).as_slice()), L3::Arp);
        assert_eq!(parse_l3(frame(ETH_P_IPV6, &[0; 40]).as_slice()), L3::Ipv6);
        assert_eq!(parse_l3(frame(0x88cc, &[0; 40]).as_slice()), L3::Other);
    }

    #[test]
    fn ihl_below_five_is_malformed() {
        let mut ip = [0u8; 20];
        ip[0] = 0x44;
        assert_eq!(parse_l3(frame(ETH_P_IP, &ip).as_slice()), L3::Malformed);
    }
}
