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
pub const IPV6_HLEN: usize = 40;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMP and ICMPv6 headers before the quoted packet: type, code, checksum, and four bytes
/// (unused, or the next hop's MTU).
pub const ICMP_HLEN: usize = 8;
/// IPv6 extension headers (RFC 8200 §4) the dataplane walks past.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;
/// Extension headers walked at most: one of each RFC 8200 §4.1 lists, destination options
/// twice. A longer chain to a VIP is dropped ([`crate::verdict::Verdict::DropExtHeaders`]),
/// never misread or delivered to the director.
pub const IPV6_MAX_EXT_HEADERS: usize = 6;
/// Offset from the frame's start past which the upper-layer header is not looked for (a
/// chain reaching further is dropped as [`IPV6_MAX_EXT_HEADERS`] says). It keeps the offset
/// small enough for the verifier to bound every access made with it.
pub const IPV6_MAX_L4_OFF: usize = 1024;

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
    /// The `N` words at `off` as [`Packet::load_u32`] reads each, after one bounds check:
    /// every word is then read from the one checked pointer, where separate checks would
    /// let the compiler drop some and address the rest from another pointer, whose range the
    /// verifier does not know.
    #[inline(always)]
    fn load_u32s<const N: usize>(&self, off: usize) -> Option<[u32; N]> {
        let mut out = [0u32; N];
        let mut i = 0;
        while i < N {
            out[i] = self.load_u32(off + 4 * i)?;
            i += 1;
        }
        Some(out)
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

/// What walking an IPv6 packet's extension headers found ([`ipv6_chain`]). The
/// dispatcher walks the chain and hands this to the IPv6 or ICMP program through a per-CPU
/// map, so it is plain data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Chain {
    /// Offset of the upper-layer header from the start of the frame (at most
    /// [`IPV6_MAX_L4_OFF`]).
    pub l4_off: u32,
    /// The upper-layer protocol (the last Next Header).
    pub proto: u8,
    /// [`Ipv6Chain::OK`], [`Ipv6Chain::FRAGMENT`], [`Ipv6Chain::TOO_LONG`] or
    /// [`Ipv6Chain::TRUNCATED`].
    pub status: u8,
    /// The chain held a fragment header, even one of a whole packet (an atomic fragment,
    /// RFC 6946): an ICMPv6 error behind one is dropped, as IPVS drops it.
    pub had_fragment_header: u8,
    pub _pad: u8,
}

impl Ipv6Chain {
    /// The upper-layer header was found at `l4_off`.
    pub const OK: u8 = 0;
    /// A fragment of a larger datagram (offset or More Fragments set): no dependable ports.
    pub const FRAGMENT: u8 = 1;
    /// More extension headers than the dataplane walks.
    pub const TOO_LONG: u8 = 2;
    /// The frame ends inside the fixed header or an extension header.
    pub const TRUNCATED: u8 = 3;

    /// `l4_off` as an offset the verifier can bound (a value read back from a map is
    /// otherwise unbounded to it); the mask keeps every offset [`ipv6_chain`] gives.
    #[inline(always)]
    pub fn l4_offset(&self) -> usize {
        self.l4_off as usize & (2 * IPV6_MAX_L4_OFF - 1)
    }
}

/// Walks the extension headers of the IPv6 packet whose fixed header is at `l3_off`:
/// hop-by-hop, routing, fragment, authentication and destination options, at most
/// [`IPV6_MAX_EXT_HEADERS`] of them. Any other Next Header (TCP, UDP, ICMPv6, ESP, No Next
/// Header...) ends the walk as the upper-layer protocol.
#[inline(always)]
pub fn ipv6_chain<P: Packet + ?Sized>(p: &P, l3_off: usize) -> Ipv6Chain {
    let mut chain = Ipv6Chain::default();
    let Some(first) = p.with_header::<IPV6_HLEN, _>(l3_off, |ip| ip[6]) else {
        chain.status = Ipv6Chain::TRUNCATED;
        return chain;
    };
    let mut next = first;
    let mut off = l3_off + IPV6_HLEN;
    let mut walked = 0;
    while walked <= IPV6_MAX_EXT_HEADERS {
        let is_ext = matches!(next, IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_FRAGMENT | IPV6_AUTH | IPV6_DEST_OPTS);
        if !is_ext {
            break;
        }
        if walked == IPV6_MAX_EXT_HEADERS {
            chain.status = Ipv6Chain::TOO_LONG;
            break;
        }
        // Every extension header starts with Next Header and a length byte.
        let Some([following, len]) = p.load::<2>(off) else {
            chain.status = Ipv6Chain::TRUNCATED;
            break;
        };
        let size = if next == IPV6_FRAGMENT {
            let Some(frag) = p.load::<2>(off + 2) else {
                chain.status = Ipv6Chain::TRUNCATED;
                break;
            };
            chain.had_fragment_header = 1;
            // The 13-bit offset and the M flag; an atomic fragment has neither.
            if be16(frag) & 0xfff9 != 0 {
                chain.status = Ipv6Chain::FRAGMENT;
                chain.proto = following;
                break;
            }
            8
        } else if next == IPV6_AUTH {
            (len as usize + 2) * 4
        } else {
            (len as usize + 1) * 8
        };
        off += size;
        if off > IPV6_MAX_L4_OFF {
            chain.status = Ipv6Chain::TOO_LONG;
            break;
        }
        next = following;
        walked += 1;
    }
    chain.proto = if chain.status == Ipv6Chain::FRAGMENT { chain.proto } else { next };
    chain.l4_off = off as u32;
    chain
}

/// An IPv6 address's four words as loaded (little-endian, as [`Ipv4Info`] holds IPv4's).
pub type Words6 = [u32; 4];

/// The 16 bytes at `off` as four words, one load each in the XDP program.
#[inline(always)]
pub fn load_addr6<P: Packet + ?Sized>(p: &P, off: usize) -> Option<Words6> {
    Some([p.load_u32(off)?, p.load_u32(off + 4)?, p.load_u32(off + 8)?, p.load_u32(off + 12)?])
}

/// [`Words6`] in the maps' 16-byte form.
#[inline(always)]
pub fn addr6(w: &Words6) -> Addr16 {
    // SAFETY: 16 bytes either way; on drlb's little-endian targets the bytes in memory
    // order (word by word: built byte by byte, BPF would spill every byte).
    unsafe { core::mem::transmute::<Words6, Addr16>(*w) }
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
pub(crate) fn be16(b: [u8; 2]) -> u16 {
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
