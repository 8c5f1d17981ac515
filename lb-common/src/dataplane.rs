//! The forwarding decision: one function, run by the XDP program and by host tests.

use crate::hash::flow_hash;
use crate::maps::{Backend, Service, ServiceKey, Vip, VipKey, IPPROTO_TCP, IPPROTO_UDP};
use crate::packet::{parse_l3, parse_l4, Packet, L3};
use crate::stats::Stat;

/// Read access to the maps, implemented over BPF maps in the program and over
/// ordinary collections in tests.
pub trait Tables {
    fn vip(&self, key: &VipKey) -> Option<Vip>;
    fn service(&self, key: &ServiceKey) -> Option<Service>;
    fn backend(&self, slot: u32) -> Option<Backend>;
}

/// Decides what happens to one frame and, when it is forwarded, rewrites its MACs.
/// The returned reason names the verdict (`Stat::xdp_action`) and the counter to bump.
#[inline(always)]
pub fn process<P: Packet + ?Sized, T: Tables>(pkt: &mut P, tables: &T) -> Stat {
    let ip = match parse_l3(pkt) {
        L3::Ipv4(ip) => ip,
        L3::Arp => return Stat::PassArp,
        L3::Ipv6 => return Stat::PassIpv6,
        L3::Other => return Stat::PassOtherL3,
        L3::Malformed => return Stat::PassMalformed,
    };
    // One lookup settles every packet that is not for a VIP.
    let Some(vip) = tables.vip(&VipKey { addr: ip.dst }) else { return Stat::PassNotVip };
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Stat::PassVipNoService;
    }
    if ip.fragment {
        return Stat::DropFragment;
    }
    let Some(l4) = parse_l4(pkt, ip.l4_off, ip.proto) else { return Stat::DropTruncatedL4 };

    let service = match tables.service(&ServiceKey::new(ip.dst, l4.dport, ip.proto)) {
        Some(s) => s,
        None if vip.has_wildcard(ip.proto) => {
            match tables.service(&ServiceKey::new(ip.dst, 0, ip.proto)) {
                Some(s) => s,
                None => return Stat::PassVipNoService,
            }
        }
        None => return Stat::PassVipNoService,
    };
    if service.backend_count == 0 {
        return Stat::DropNoRealServer;
    }
    let pick = flow_hash(&ip.src, &ip.dst, l4.sport, l4.dport, ip.proto) % service.backend_count;
    let Some(backend) = tables.backend(service.first_backend.wrapping_add(pick)) else {
        return Stat::DropBackendMissing;
    };
    if !backend.is_present() {
        return Stat::DropBackendMissing;
    }
    // DR: only layer 2 changes; IP header and checksums stay as the client sent them.
    let mut macs = [0u8; 12];
    let mut i = 0;
    while i < 6 {
        macs[i] = backend.mac[i];
        macs[i + 6] = backend.src_mac[i];
        i += 1;
    }
    if !pkt.store(0, &macs) {
        return Stat::PassMalformed;
    }
    Stat::TxForwarded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::v4_mapped;
    use crate::maps::BACKEND_F_PRESENT;
    use proptest::prelude::*;
    use std::vec::Vec;

    const VIP: [u8; 4] = [198, 18, 0, 100];
    const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
    const DIR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];

    /// One VIP with a TCP port-80 service over one backend.
    struct OneService;

    impl Tables for OneService {
        fn vip(&self, key: &VipKey) -> Option<Vip> {
            (key.addr == v4_mapped(VIP)).then_some(Vip { flags: 0 })
        }
        fn service(&self, key: &ServiceKey) -> Option<Service> {
            (*key == ServiceKey::new(v4_mapped(VIP), 80, IPPROTO_TCP))
                .then_some(Service { id: 0, first_backend: 0, backend_count: 1, flags: 0 })
        }
        fn backend(&self, slot: u32) -> Option<Backend> {
            (slot == 0).then_some(Backend {
                addr: v4_mapped([198, 18, 0, 11]),
                mac: RS_MAC,
                src_mac: DIR_MAC,
                weight: 1,
                flags: BACKEND_F_PRESENT,
            })
        }
    }

    fn syn_to_vip(ihl_words: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xaa; 12]);
        f.extend_from_slice(&[0x08, 0x00]);
        let ihl = ihl_words as usize * 4;
        let mut ip = std::vec![0u8; ihl];
        ip[0] = 0x40 | ihl_words;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&[198, 18, 0, 10]);
        ip[16..20].copy_from_slice(&VIP);
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn every_ihl_is_parsed_past_its_options() {
        for words in 5..=15 {
            let mut f = syn_to_vip(words);
            assert_eq!(process(f.as_mut_slice(), &OneService), Stat::TxForwarded, "IHL {words}");
            assert_eq!(&f[..6], &RS_MAC);
            assert_eq!(&f[6..12], &DIR_MAC);
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and a frame that is not forwarded is never modified.
        #[test]
        fn arbitrary_frames_are_safe(mut frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let original = frame.clone();
            let stat = process(frame.as_mut_slice(), &OneService);
            if stat == Stat::TxForwarded {
                prop_assert_eq!(&frame[12..], &original[12..]);
            } else {
                prop_assert_eq!(frame, original);
            }
        }

        /// Cutting a forwarded frame anywhere inside its headers never forwards it, and a
        /// cut inside the TCP header of a VIP-bound frame is dropped as truncated.
        #[test]
        fn truncated_vip_frames_are_never_forwarded(ihl in 5u8..=15, cut in 0usize..100) {
            let full = syn_to_vip(ihl);
            let l4 = 14 + ihl as usize * 4;
            let cut = cut % (l4 + 20);
            let mut frame = full[..cut].to_vec();
            let stat = process(frame.as_mut_slice(), &OneService);
            prop_assert_ne!(stat, Stat::TxForwarded);
            if cut >= 34 && cut < l4 + 20 {
                prop_assert_eq!(stat, Stat::DropTruncatedL4);
            }
        }
    }
}
