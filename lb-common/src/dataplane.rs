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
