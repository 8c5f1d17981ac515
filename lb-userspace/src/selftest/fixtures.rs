//! The dataplane fixture table: real packets through the real BPF object with
//! BPF_PROG_TEST_RUN. Run by `tests/dataplane_fixtures.rs` and by `drlb selftest` (so inside
//! the VM tests' guests too).
//!
//! One table, run in order against one loaded object (rows build on the connections
//! earlier rows made). Each row: description, optional setup, input frame built layer by
//! layer, expected verdict and reason, expected output frame (forwarded to which real
//! server), and the connection state and counts it must leave. Every row also runs through
//! the host model (`lb_common::dataplane` over the same tables) and both must agree on
//! verdict, bytes, connection entry and every server's ActiveConn/InActConn. Needs root.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use aya::programs::{TestRun, TestRunOptions};
use etherparse::{IpHeaders, Ipv4Extensions, Ipv4Header, Ipv4Options, IpNumber, PacketBuilder};
use lb_common::addr::v4_mapped;
use lb_common::conn::{tcp, Conn, ConnKey, CONN_F_INACTIVE};
use lb_common::dataplane::Tables as _;
use lb_common::host::HostTables;
use lb_common::maps::ConnCounts;
use lb_common::packet::{parse_l3, parse_l4, L3};
use lb_common::verdict::{Verdict, XDP_DROP, XDP_PASS, XDP_TX};
use crate::control::config::Config;
use crate::kernel::bpf::{monotonic_ns, Dataplane, PROGRAM_LB};
use crate::kernel::content::MapContent;
use crate::kernel::mac::Mac;

pub const DIRECTOR_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const RS1: Mac = [0x02, 0, 0, 0, 0, 0x11];
pub const RS2: Mac = [0x02, 0, 0, 0, 0, 0x12];
pub const RS3: Mac = [0x02, 0, 0, 0, 0, 0x13];
pub const RS4: Mac = [0x02, 0, 0, 0, 0, 0x14];

pub const CLIENT: [u8; 4] = [198, 18, 0, 10];
pub const CLIENT_SAME_NET: [u8; 4] = [198, 18, 0, 77];
pub const CLIENT_OTHER_NET: [u8; 4] = [198, 18, 9, 10];
pub const DIRECTOR: [u8; 4] = [198, 18, 0, 2];

pub fn vip(last: u8) -> [u8; 4] {
    [198, 18, 0, last]
}
pub const WEB: u8 = 100;
pub const DNS: u8 = 101;
pub const EMPTY: u8 = 102;
pub const ALL_PORTS: u8 = 103;
pub const SLOPPY: u8 = 104;
pub const STICKY: u8 = 105;
pub const QUIESCE: u8 = 106;
pub const RR3: u8 = 107;
pub const WRR: u8 = 108;
pub const SH: u8 = 109;
pub const MH: u8 = 110;
pub const SHORT: u8 = 111;
pub const FLOOD: u8 = 112;
pub const DH: u8 = 115;
pub const GROUP: u8 = 120;
pub const GROUP_RANGE: u8 = 121;
pub const FO: u8 = 123;
pub const OVF: u8 = 124;
pub const TWOS: u8 = 125;
pub const SH_QUIESCED: u8 = 126;
pub const SH_FALLBACK: u8 = 127;
pub const SH_PORT: u8 = 128;
pub const MH_PORT: u8 = 129;
pub const OPS: u8 = 130;
pub const LBLC: u8 = 131;
pub const LBLCR: u8 = 132;

pub const CONFIG: &str = r#"
director: { interface: eth0, xdp_mode: native, conn_table_size: 65536 }
services:
  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: wlc,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: dns, vip: 198.18.0.101, port: 53, protocol: udp, real_servers: [ { address: 198.18.0.13 } ] }
  - { name: empty, vip: 198.18.0.102, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.11, weight: 0 } ] }
  - { name: all-ports, vip: 198.18.0.103, port: 0, protocol: tcp, real_servers: [ { address: 198.18.0.14 } ] }
  - { name: sloppy, vip: 198.18.0.104, port: 80, protocol: tcp, sloppy_tcp: true, real_servers: [ { address: 198.18.0.11 } ] }
  - { name: sticky, vip: 198.18.0.105, port: 80, protocol: tcp, scheduler: rr, persistence_timeout: 60s,
      persistence_granularity: 24, real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: quiesce, vip: 198.18.0.106, port: 80, protocol: tcp,
      real_servers: [ { address: 198.18.0.11, weight: 1 }, { address: 198.18.0.12, weight: 0 } ] }
  - { name: rr3, vip: 198.18.0.107, port: 80, protocol: tcp, scheduler: rr,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 }, { address: 198.18.0.13 } ] }
  - { name: wrr, vip: 198.18.0.108, port: 80, protocol: tcp, scheduler: wrr,
      real_servers: [ { address: 198.18.0.11, weight: 1 }, { address: 198.18.0.12, weight: 2 }, { address: 198.18.0.13, weight: 3 } ] }
  - { name: sh, vip: 198.18.0.109, port: 80, protocol: tcp, scheduler: sh,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: mh, vip: 198.18.0.110, port: 80, protocol: tcp, scheduler: mh,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 }, { address: 198.18.0.13 } ] }
  - { name: short, vip: 198.18.0.111, port: 80, protocol: tcp, timeouts: { tcp: 5s, tcp_fin: 3s },
      real_servers: [ { address: 198.18.0.11 } ] }
  - { name: flood, vip: 198.18.0.112, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.11 } ] }
  - { name: dh, vip: 198.18.0.115, port: 80, protocol: tcp, scheduler: dh,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 }, { address: 198.18.0.13 } ] }
  - { name: group, vip: 198.18.0.120, port: 80, protocol: tcp, scheduler: rr, persistence_timeout: 60s,
      group: [ { vip: 198.18.0.120, port: 443 }, { vip: 198.18.0.121-122 } ],
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: fo, vip: 198.18.0.123, port: 80, protocol: tcp, scheduler: fo,
      real_servers: [ { address: 198.18.0.11, weight: 1 }, { address: 198.18.0.12, weight: 3 }, { address: 198.18.0.13, weight: 3 } ] }
  - { name: ovf, vip: 198.18.0.124, port: 80, protocol: tcp, scheduler: ovf,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: twos, vip: 198.18.0.125, port: 80, protocol: tcp, scheduler: twos,
      real_servers: [ { address: 198.18.0.11, weight: 2 }, { address: 198.18.0.12, weight: 0 } ] }
  - { name: sh-quiesced, vip: 198.18.0.126, port: 80, protocol: tcp, scheduler: sh,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12, weight: 0 } ] }
  - { name: sh-fallback, vip: 198.18.0.127, port: 80, protocol: tcp, scheduler: sh, scheduler_flags: [sh-fallback],
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12, weight: 0 } ] }
  - { name: sh-port, vip: 198.18.0.128, port: 80, protocol: tcp, scheduler: sh, scheduler_flags: [sh-port],
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: mh-port, vip: 198.18.0.129, port: 80, protocol: tcp, scheduler: mh, scheduler_flags: [mh-port],
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 }, { address: 198.18.0.13 } ] }
  - { name: ops, vip: 198.18.0.130, port: 53, protocol: udp, scheduler: rr, one_packet: true,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: lblc, vip: 198.18.0.131, port: 80, protocol: tcp, scheduler: lblc,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: lblcr, vip: 198.18.0.132, port: 80, protocol: tcp, scheduler: lblcr,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }
  - { name: icmp, vip: 198.18.0.133, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.12 } ] }
  - { name: web6, vip: "2001:db8::100", port: 80, protocol: tcp, scheduler: wlc,
      real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" } ] }
  - { name: dns6, vip: "2001:db8::101", port: 53, protocol: udp, real_servers: [ { address: "2001:db8::13" } ] }
  - { name: all-ports6, vip: "2001:db8::103", port: 0, protocol: tcp, real_servers: [ { address: "2001:db8::11" } ] }
  - { name: sloppy6, vip: "2001:db8::104", port: 80, protocol: tcp, sloppy_tcp: true, real_servers: [ { address: "2001:db8::11" } ] }
  - { name: sticky6, vip: "2001:db8::105", port: 80, protocol: tcp, scheduler: rr, persistence_timeout: 60s,
      persistence_granularity: 64, real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" } ] }
  - { name: sh6, vip: "2001:db8::109", port: 80, protocol: tcp, scheduler: sh,
      real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" } ] }
  - { name: mh6, vip: "2001:db8::110", port: 80, protocol: tcp, scheduler: mh,
      real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" }, { address: "2001:db8::13" } ] }
  - { name: dh6, vip: "2001:db8::115", port: 80, protocol: tcp, scheduler: dh,
      real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" }, { address: "2001:db8::13" } ] }
  - { name: lblc6, vip: "2001:db8::131", port: 80, protocol: tcp, scheduler: lblc,
      real_servers: [ { address: "2001:db8::11" }, { address: "2001:db8::12" } ] }
"#;

/// Backend slots, in configuration order over all services.
pub mod slot {
    pub const WEB_RS1: u32 = 0;
    pub const WEB_RS2: u32 = 1;
    pub const DNS_RS3: u32 = 2;
    pub const SLOPPY_RS1: u32 = 5;
    pub const QUIESCE_RS2: u32 = 9;
    pub const SHORT_RS1: u32 = 21;
    pub const FLOOD_RS1: u32 = 22;
}

pub fn config() -> Config {
    Config::parse(Path::new("fixture.yaml"), CONFIG).expect("fixture config is valid")
}

pub fn macs() -> HashMap<IpAddr, Mac> {
    [
        ("198.18.0.11", RS1),
        ("198.18.0.12", RS2),
        ("198.18.0.13", RS3),
        ("198.18.0.14", RS4),
        ("2001:db8::11", RS1),
        ("2001:db8::12", RS2),
        ("2001:db8::13", RS3),
    ]
        .into_iter()
        .map(|(ip, mac)| (ip.parse().unwrap(), mac))
        .collect()
}

/// The position of the fixture service `name` in the config.
fn services_index(name: &str) -> usize {
    config().services.iter().position(|s| s.name == name).expect("a fixture service")
}

pub fn tables() -> MapContent {
    crate::control::tables::build(&config(), &macs(), DIRECTOR_MAC).expect("the fixture config fits the maps")
}

pub fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
}

/// A TCP segment with exactly the given flags (tcp::FLAG_*).
pub fn tcp_from(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut out = Vec::new();
    eth().ipv4(src, dst, 64).tcp(sport, dport, 1000, 64240).write(&mut out, b"").unwrap();
    out[14 + 20 + 13] = flags;
    out
}

pub fn tcp_to(dst: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp_from(CLIENT, dst, sport, dport, flags)
}

pub const SYN: u8 = tcp::FLAG_SYN;
pub const ACK: u8 = tcp::FLAG_ACK;
pub const PSH_ACK: u8 = tcp::FLAG_ACK | 0x08;
pub const FIN_ACK: u8 = tcp::FLAG_FIN | tcp::FLAG_ACK;
pub const RST: u8 = tcp::FLAG_RST;

pub fn udp_to(dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    eth().ipv4(CLIENT, dst, 64).udp(sport, dport).write(&mut out, b"query").unwrap();
    out
}

pub fn with_ipv4_header(h: Ipv4Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    eth().ip(IpHeaders::Ipv4(h, Ipv4Extensions::default())).tcp(40100, 8443, 1, 1024).syn().write(&mut out, payload).unwrap();
    out
}

pub fn arp_request_for(target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// The input with its MACs rewritten as DR forwarding does.
pub fn forwarded(input: &[u8], to: Mac) -> Vec<u8> {
    let mut out = input.to_vec();
    out[..6].copy_from_slice(&to);
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

/// The connection key of a frame, if it has one.
pub fn conn_key(frame: &[u8]) -> Option<ConnKey> {
    match parse_l3(frame) {
        L3::Ipv4(ip) => {
            let l4 = parse_l4(frame, ip.l4_off, ip.proto)?;
            Some(ConnKey { client: ip.src(), vip: ip.dst(), cport: l4.sport, vport: l4.dport, proto: ip.proto, _pad: [0; 3] })
        }
        L3::Ipv6 => {
            let (_, l3) = lb_common::packet::ethernet(frame)?;
            let chain = lb_common::packet::ipv6_chain(frame, l3);
            if chain.status != lb_common::packet::Ipv6Chain::OK {
                return None;
            }
            let l4 = parse_l4(frame, chain.l4_off as usize, chain.proto)?;
            let client: [u8; 16] = frame.get(l3 + 8..l3 + 24)?.try_into().ok()?;
            let vip: [u8; 16] = frame.get(l3 + 24..l3 + 40)?.try_into().ok()?;
            Some(ConnKey { client, vip, cport: l4.sport, vport: l4.dport, proto: chain.proto, _pad: [0; 3] })
        }
        _ => None,
    }
}

// --- IPv6 and ICMP frames, built byte by byte where etherparse has no builder (extension
// headers in any order, fragments, ICMP errors quoting a reply) ---

pub const CLIENT6: [u8; 16] = addr6(0, 0x10);
pub const CLIENT6_SAME_NET: [u8; 16] = addr6(0, 0x77);
pub const CLIENT6_OTHER_NET: [u8; 16] = addr6(9, 0x10);
/// The router between clients and the director, which sends ICMP errors.
pub const ROUTER: [u8; 4] = [198, 18, 0, 1];
pub const ROUTER6: [u8; 16] = addr6(0, 1);

/// 2001:db8:`net`::`low`.
pub const fn addr6(net: u16, low: u16) -> [u8; 16] {
    let (n, l) = (net.to_be_bytes(), low.to_be_bytes());
    [0x20, 0x01, 0x0d, 0xb8, n[0], n[1], 0, 0, 0, 0, 0, 0, 0, 0, l[0], l[1]]
}

/// The fixture's IPv6 VIPs: 2001:db8::`low` (hex, as the config writes them).
pub fn vip6(low: u16) -> [u8; 16] {
    addr6(0, low)
}
pub const WEB6: u16 = 0x100;
pub const DNS6: u16 = 0x101;
pub const ALL_PORTS6: u16 = 0x103;
pub const SLOPPY6: u16 = 0x104;
pub const STICKY6: u16 = 0x105;
pub const SH6: u16 = 0x109;
pub const MH6: u16 = 0x110;
pub const DH6: u16 = 0x115;
pub const LBLC6: u16 = 0x131;
pub const ICMP4: u8 = 133;

fn ether(ethertype: u16) -> Vec<u8> {
    let mut f = DIRECTOR_MAC.to_vec();
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 packet (header without options, checksum left 0: the dataplane never reads it).
pub fn ipv4_packet(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An IPv6 packet whose Next Header is `next`.
pub fn ipv6_packet(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// A TCP header with exactly `flags`, or the first 8 bytes of one (all an ICMP error quotes).
pub fn tcp_header(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    h
}

pub fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

pub fn tcp6_from(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = ether(0x86dd);
    f.extend(ipv6_packet(src, dst, 6, &tcp_header(sport, dport, flags)));
    f
}

/// Another director on the segment (a frame for it reaches this one when a switch floods).
pub const OTHER_DIRECTOR_MAC: Mac = [0x02, 0, 0, 0, 0, 0x03];

/// `frame` with its Ethernet destination replaced.
pub fn to_mac(dst: Mac, mut frame: Vec<u8>) -> Vec<u8> {
    frame[..6].copy_from_slice(&dst);
    frame
}

pub fn tcp6_to(dst: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp6_from(CLIENT6, dst, sport, dport, flags)
}

pub fn udp6_to(dst: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = ether(0x86dd);
    f.extend(ipv6_packet(CLIENT6, dst, 17, &udp_header(sport, dport, b"query")));
    f
}

/// An IPv6 extension header of type `kind` announcing `next`: 8 bytes (AH: 12; a fragment
/// header carries `frag`, the offset-and-M field).
pub fn ext_header(kind: u8, next: u8, frag: u16) -> Vec<u8> {
    match kind {
        lb_common::packet::IPV6_FRAGMENT => {
            let f = frag.to_be_bytes();
            vec![next, 0, f[0], f[1], 0, 0, 0x12, 0x34]
        }
        lb_common::packet::IPV6_AUTH => vec![next, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        // Hop-by-hop and destination options: a PadN option; routing: type 4, nothing left.
        lb_common::packet::IPV6_ROUTING => vec![next, 0, 4, 0, 0, 0, 0, 0],
        _ => vec![next, 0, 1, 4, 0, 0, 0, 0],
    }
}

/// A SYN to `dst`:80 from CLIENT6:`sport` behind the extension headers `chain` (in order;
/// fragment headers carry `frag`).
pub fn tcp6_behind(dst: [u8; 16], sport: u16, chain: &[u8], frag: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    for (i, kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(6);
        payload.extend(ext_header(*kind, next, frag));
    }
    payload.extend(tcp_header(sport, 80, SYN));
    let mut f = ether(0x86dd);
    f.extend(ipv6_packet(CLIENT6, dst, chain.first().copied().unwrap_or(6), &payload));
    f
}

/// An ICMPv4 error from the router to `vip` quoting the reply (`vip`:`vport` to
/// CLIENT:`cport`, `proto`) it could not deliver.
pub fn icmp4_error(kind: u8, code: u8, vip: [u8; 4], vport: u16, cport: u16, proto: u8) -> Vec<u8> {
    let l4 = if proto == 6 { tcp_header(vport, cport, ACK)[..8].to_vec() } else { udp_header(vport, cport, b"")[..8].to_vec() };
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend(ipv4_packet(vip, CLIENT, proto, &l4));
    let mut f = ether(0x0800);
    f.extend(ipv4_packet(ROUTER, vip, 1, &icmp));
    f
}

/// An ICMPv6 error from the router to `vip` quoting the reply to CLIENT6, as
/// [`icmp4_error`], behind the outer extension headers `chain`.
pub fn icmp6_error(kind: u8, code: u8, vip: [u8; 16], vport: u16, cport: u16, proto: u8, chain: &[u8]) -> Vec<u8> {
    let l4 = if proto == 6 { tcp_header(vport, cport, ACK)[..8].to_vec() } else { udp_header(vport, cport, b"")[..8].to_vec() };
    let mut payload = Vec::new();
    for (i, kind) in chain.iter().enumerate() {
        payload.extend(ext_header(*kind, chain.get(i + 1).copied().unwrap_or(58), 0));
    }
    payload.extend([kind, code, 0, 0, 0, 0, 0x05, 0x00]);
    payload.extend(ipv6_packet(vip, CLIENT6, proto, &l4));
    let mut f = ether(0x86dd);
    f.extend(ipv6_packet(ROUTER6, vip, chain.first().copied().unwrap_or(58), &payload));
    f
}

/// An ICMPv6 message that is not an error (`kind` ≥ 128: neighbour discovery, echo) from
/// CLIENT6 to `dst`.
pub fn icmp6_info(kind: u8, dst: [u8; 16], body: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(body);
    let mut f = ether(0x86dd);
    f.extend(ipv6_packet(CLIENT6, dst, 58, &icmp));
    f
}

pub enum Expect {
    /// Passed or dropped untouched, for this reason.
    Untouched(Verdict),
    /// Forwarded to this real server, for this reason (TxScheduled / TxForwarded).
    To(Verdict, Mac),
}

pub enum Setup {
    None,
    /// A controller sweep ran now: record its time (from now on a half-open entry that
    /// expired before it no longer counts), and the counts it wrote for this backend
    /// slot (active, inactive).
    Swept(u32, u32, u32),
    /// Make the frame's connection look idle for this many seconds.
    Age(u64),
    /// Insert an ESTABLISHED connection for the frame to this backend slot.
    Established(u32),
    /// Install the frame's connection as a peer director reported it (connection sync):
    /// to the real server at this address, in this state, active or not.
    Synced([u8; 4], u8, bool),
    /// Install a persistence template for the frame's client as a peer reported it.
    SyncedTemplate([u8; 4]),
}

pub struct Row {
    description: &'static str,
    setup: Setup,
    frame: Vec<u8>,
    expect: Expect,
    /// The frame's connection afterwards: (state, inactive), or None for no entry.
    conn_after: Option<Option<(u8, bool)>>,
    /// A backend's (active, inactive) afterwards.
    counts_after: Option<(u32, u32, u32)>,
    /// Where the frame's connection is afterwards: true for the half-open table, false for
    /// the connection table.
    half_open_after: Option<bool>,
}

pub fn row(description: &'static str, frame: Vec<u8>, expect: Expect) -> Row {
    Row { description, setup: Setup::None, frame, expect, conn_after: None, counts_after: None, half_open_after: None }
}

impl Row {
    /// The row's input frame.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    pub fn setup(mut self, s: Setup) -> Self {
        self.setup = s;
        self
    }
    fn conn(mut self, state: u8, inactive: bool) -> Self {
        self.conn_after = Some(Some((state, inactive)));
        self
    }
    fn no_conn(mut self) -> Self {
        self.conn_after = Some(None);
        self
    }
    /// The connection waits in the half-open table.
    fn half_open(mut self) -> Self {
        self.half_open_after = Some(true);
        self
    }
    /// The connection is in the connection table.
    fn in_table(mut self) -> Self {
        self.half_open_after = Some(false);
        self
    }
    fn counts(mut self, slot: u32, active: u32, inactive: u32) -> Self {
        self.counts_after = Some((slot, active, inactive));
        self
    }
}

pub fn rows() -> Vec<Row> {
    use Expect::*;
    use Verdict::*;
    let web = vip(WEB);
    let mut v = vec![
        // --- TCP state as IPVS tracks it, input-only (wlc: ties go to the last configured) ---
        row("SYN to web: new connection, wlc tie goes to the last configured server (rs2); it waits in the half-open table", tcp_to(web, 40000, 80, SYN), To(TxScheduled, RS2))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS2, 0, 1).half_open(),
        row("retransmitted SYN stays on rs2 in SYN_RECV, still half-open", tcp_to(web, 40000, 80, SYN), To(TxForwarded, RS2))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS2, 0, 1).half_open(),
        row("ACK completes the handshake: promoted into the connection table, ESTABLISHED, active", tcp_to(web, 40000, 80, ACK), To(TxForwarded, RS2))
            .conn(tcp::ESTABLISHED, false).counts(slot::WEB_RS2, 1, 0).in_table(),
        row("second client port: wlc picks the idle rs1", tcp_to(web, 40001, 80, SYN), To(TxScheduled, RS1))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS1, 0, 1),
        row("data (PSH|ACK) on an established connection", tcp_to(web, 40000, 80, PSH_ACK), To(TxForwarded, RS2))
            .conn(tcp::ESTABLISHED, false),
        row("client FIN: FIN_WAIT, inactive", tcp_to(web, 40000, 80, FIN_ACK), To(TxForwarded, RS2))
            .conn(tcp::FIN_WAIT, true).counts(slot::WEB_RS2, 0, 1),
        row("last ACK keeps FIN_WAIT", tcp_to(web, 40000, 80, ACK), To(TxForwarded, RS2)).conn(tcp::FIN_WAIT, true),
        row("SYN on a FIN_WAIT entry reuses it (conn_reuse_mode 1), in the connection table", tcp_to(web, 40000, 80, SYN), To(TxForwarded, RS2))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS2, 0, 1).in_table(),
        row("RST in SYN_RECV keeps SYN_RECV (IPVS input-only table), still half-open", tcp_to(web, 40001, 80, RST), To(TxForwarded, RS1))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS1, 0, 1).half_open(),
        row("ACK establishes rs1's connection", tcp_to(web, 40001, 80, ACK), To(TxForwarded, RS1))
            .conn(tcp::ESTABLISHED, false).counts(slot::WEB_RS1, 1, 0),
        row("RST|ACK on ESTABLISHED: CLOSE, inactive", tcp_to(web, 40001, 80, RST | ACK), To(TxForwarded, RS1))
            .conn(tcp::CLOSE, true).counts(slot::WEB_RS1, 0, 1),
        row("SYN on a CLOSE entry is a new connection, scheduled afresh: the old entry goes, the new one is half-open", tcp_to(web, 40001, 80, SYN), To(TxScheduled, RS1))
            .conn(tcp::SYN_RECV, true).counts(slot::WEB_RS1, 0, 1).half_open(),
        row("ACK without a connection is dropped (non-sloppy)", tcp_to(web, 40002, 80, ACK), Untouched(DropNoConnection)).no_conn(),
        row("RST without a connection is dropped", tcp_to(web, 40002, 80, RST), Untouched(DropNoConnection)).no_conn(),
        row("segment without SYN/FIN/ACK/RST moves an entry to CLOSE", tcp_to(web, 40000, 80, 0x08), To(TxForwarded, RS2))
            .conn(tcp::CLOSE, true),
        row("sloppy_tcp: ACK without a connection is scheduled, straight to ESTABLISHED in the connection table", tcp_to(vip(SLOPPY), 40003, 80, ACK), To(TxScheduled, RS1))
            .conn(tcp::ESTABLISHED, false).counts(slot::SLOPPY_RS1, 1, 0).in_table(),
        row("sloppy_tcp still drops a RST without a connection", tcp_to(vip(SLOPPY), 40004, 80, RST), Untouched(DropNoConnection)).no_conn(),
        // --- UDP ---
        row("UDP to a UDP VIP: new connection, inactive (UDP is never active)", udp_to(vip(DNS), 5353, 53), To(TxScheduled, RS3))
            .conn(tcp::NONE, true).counts(slot::DNS_RS3, 0, 1),
        row("UDP again on the same 5-tuple: same connection", udp_to(vip(DNS), 5353, 53), To(TxForwarded, RS3)).counts(slot::DNS_RS3, 0, 1),
        row("TCP to a UDP-only VIP:port is passed (no such service)", tcp_to(vip(DNS), 40000, 53, SYN), Untouched(PassVipNoService)),
    ];
    let mut vlan = Vec::new();
    eth().single_vlan(42.try_into().unwrap()).ipv4(CLIENT, vip(DNS), 64).udp(5354, 53).write(&mut vlan, b"q").unwrap();
    v.push(row("802.1Q-tagged UDP to the VIP is forwarded with its tag kept", vlan, To(TxScheduled, RS3)));
    let mut opts = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, vip(ALL_PORTS)).unwrap();
    opts.options = Ipv4Options::try_from(&[0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0x00, 0x00][..]).unwrap();
    v.push(row("IPv4 with options (IHL 7) is parsed past the options and forwarded", with_ipv4_header(opts, b""), To(TxScheduled, RS4)));
    v.push(row("port-0 service takes any port (22)", tcp_to(vip(ALL_PORTS), 40005, 22, SYN), To(TxScheduled, RS4)));
    v.push(row("VIP whose only real server has weight 0: dropped", tcp_to(vip(EMPTY), 40000, 80, SYN), Untouched(DropNoRealServer)).no_conn());
    // --- what is not ours ---
    v.push(row("TCP to the director's own address is passed", tcp_to(DIRECTOR, 40000, 22, SYN), Untouched(PassNotVip)));
    // A switch floods a frame for a MAC it has forgotten to every port: the other directors
    // of an ECMP group, or a VRRP backup, must not forward a flow that is not theirs.
    v.push(row("SYN to the VIP in a frame for another director's MAC is passed, not scheduled", to_mac(OTHER_DIRECTOR_MAC, tcp_to(web, 40010, 80, SYN)), Untouched(PassOtherHost)).no_conn());
    v.push(row("TCP to the director's own address in a frame for another MAC is passed as not for a VIP", to_mac(OTHER_DIRECTOR_MAC, tcp_to(DIRECTOR, 40000, 22, SYN)), Untouched(PassNotVip)));
    v.push(row("SYN to the VIP in a broadcast frame is scheduled, as the kernel's stack takes it", to_mac([0xff; 6], tcp_to(vip(ALL_PORTS), 40012, 22, SYN)), To(TxScheduled, RS4)));
    v.push(row("TCP to the VIP on a port with no service is passed to the director", tcp_to(web, 40000, 22, SYN), Untouched(PassVipNoService)));
    let mut icmp = Vec::new();
    eth().ipv4(CLIENT, web, 64).icmpv4_echo_request(1, 1).write(&mut icmp, b"ping").unwrap();
    v.push(row("ICMP echo to the VIP is passed (the director answers pings)", icmp, Untouched(PassVipNoService)));
    v.push(row("ARP request for the VIP is passed", arp_request_for(web), Untouched(PassArp)));
    let mut v6 = Vec::new();
    eth().ipv6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64], 64)
        .tcp(40000, 80, 1, 1024)
        .syn()
        .write(&mut v6, b"")
        .unwrap();
    v.push(row("IPv6 not to a VIP is passed", v6, Untouched(PassNotVip)));
    let mut trunc_vlan = tcp_to(web, 40000, 80, SYN)[..12].to_vec();
    trunc_vlan.extend_from_slice(&0x8100u16.to_be_bytes());
    v.push(row("truncated Ethernet (802.1Q type, no tag) is passed", trunc_vlan, Untouched(PassMalformed)));
    v.push(row("truncated IPv4 header (10 of 20 bytes) is passed", tcp_to(web, 40000, 80, SYN)[..24].to_vec(), Untouched(PassMalformed)));
    v.push(row("truncated TCP header to the VIP (8 of 20 bytes) is dropped", tcp_to(web, 40000, 80, SYN)[..42].to_vec(), Untouched(DropTruncatedL4)));
    let mut frag = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, web).unwrap();
    frag.more_fragments = true;
    v.push(row("first IPv4 fragment to the VIP is dropped (not reassembled)", with_ipv4_header(frag, &[0; 64]), Untouched(DropFragment)));
    let mut bad_ihl = tcp_to(web, 40000, 80, SYN);
    bad_ihl[14] = 0x44;
    v.push(row("IPv4 with IHL 4 is passed as malformed", bad_ihl, Untouched(PassMalformed)));
    // --- persistence (rr underneath: first choice is the last configured, rs2) ---
    let sticky = vip(STICKY);
    v.push(row("persistent service: first client connection scheduled (rr → rs2)", tcp_to(sticky, 41000, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("persistent: the client's next connection is pinned to rs2 (rr alone would give rs1)", tcp_to(sticky, 41001, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("persistent /24: a neighbour in the same /24 is pinned too", tcp_from(CLIENT_SAME_NET, sticky, 41000, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("persistent /24: a client in another /24 is scheduled (rr → rs1)", tcp_from(CLIENT_OTHER_NET, sticky, 41000, 80, SYN), To(TxScheduled, RS1)));
    // --- weight 0 is quiescent ---
    v.push(row("weight-0 rs2 gets no new connection", tcp_to(vip(QUIESCE), 42000, 80, SYN), To(TxScheduled, RS1)));
    v.push(row("weight-0 rs2 keeps its established connection", tcp_to(vip(QUIESCE), 42001, 80, PSH_ACK), To(TxForwarded, RS2))
        .setup(Setup::Established(slot::QUIESCE_RS2)).conn(tcp::ESTABLISHED, false).counts(slot::QUIESCE_RS2, 1, 0));
    // --- rr 1:1:1 and wrr 1:2:3, as ipvsadm would choose ---
    for (i, to) in [RS3, RS2, RS1, RS3].into_iter().enumerate() {
        v.push(row("rr 1:1:1 walks the list from the last configured server", tcp_to(vip(RR3), 43000 + i as u16, 80, SYN), To(TxScheduled, to)));
    }
    for (i, to) in [RS3, RS2, RS1, RS3, RS3, RS2, RS3, RS2, RS1].into_iter().enumerate() {
        v.push(row("wrr 1:2:3 after keepalived's one-by-one adds", tcp_to(vip(WRR), 44000 + i as u16, 80, SYN), To(TxScheduled, to)));
    }
    // --- sh and mh: one client, one server; the expected server comes from models written
    // apart from the code under test (IPVS's sh from the kernel source, Maglev from the paper) ---
    let sh_list = lb_common::host::ipvs::list_for(&[1, 1]);
    let sh_to = [RS2, RS1][lb_common::host::ipvs::sh(&sh_list, CLIENT).expect("sh picks a server")];
    v.push(row("sh: a client goes to its bucket's server", tcp_to(vip(SH), 45000, 80, SYN), To(TxScheduled, sh_to)));
    v.push(row("sh: the same client on another port goes there too", tcp_to(vip(SH), 45001, 80, SYN), To(TxScheduled, sh_to)));
    let mh_to = [RS1, RS2, RS3][maglev_choice(&[([198, 18, 0, 11], 1), ([198, 18, 0, 12], 1), ([198, 18, 0, 13], 1)], CLIENT)];
    v.push(row("mh: a client goes to its Maglev entry's server", tcp_to(vip(MH), 45100, 80, SYN), To(TxScheduled, mh_to)));
    v.push(row("mh: the same client on another port goes there too", tcp_to(vip(MH), 45101, 80, SYN), To(TxScheduled, mh_to)));
    // --- dh (ip_vs_dh.c) ---
    let dh_list_index = lb_common::sched::dh_bucket(u32::from_be_bytes([198, 18, 0, DH])) as usize % 3;
    let dh_to = [RS3, RS2, RS1][dh_list_index];
    v.push(row("dh: the VIP's bucket (ip_vs_dh_hashkey of the destination) names the server", tcp_to(vip(DH), 45400, 80, SYN), To(TxScheduled, dh_to)));
    v.push(row("dh: every client of the VIP goes there", tcp_from(CLIENT_OTHER_NET, vip(DH), 45401, 80, SYN), To(TxScheduled, dh_to)));

    // --- a group (keepalived's virtual_server_group): one service over several VIP:ports,
    // with one rr position and one persistence template per client across all of them ---
    let group = vip(GROUP);
    v.push(row("group: a client's first connection, to :80 (rr → rs2)", tcp_to(group, 45500, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("group: its connection to :443 follows the template of :80 (rr alone → rs1)", tcp_to(group, 45501, 443, SYN), To(TxScheduled, RS2)));
    v.push(row("group: and its connection to another address of the range", tcp_to(vip(GROUP_RANGE), 45502, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("group: another client continues the shared rr position (rs1)", tcp_from(CLIENT_OTHER_NET, vip(GROUP_RANGE + 1), 45503, 80, SYN), To(TxScheduled, RS1)));
    v.push(row("group: a port the group does not list is not the service's", tcp_to(vip(GROUP_RANGE), 45504, 443, SYN), Untouched(PassVipNoService)));

    // --- fo, ovf, twos, sh's and mh's flags, one-packet scheduling; expected servers from
    // IPVS's loops transcribed apart (`lb_common::host::ipvs`) ---
    v.push(row("fo: the highest weight, the first in list order among equals (rs3 of 1:3:3)", tcp_to(vip(FO), 45600, 80, SYN), To(TxScheduled, RS3)));
    v.push(row("fo: every new connection goes there while it is up", tcp_from(CLIENT_OTHER_NET, vip(FO), 45601, 80, SYN), To(TxScheduled, RS3)));
    let ovf = vip(OVF);
    v.push(row("ovf 1:1: the first in list order (rs2) while its active connections do not exceed its weight", tcp_to(ovf, 45610, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("ovf: its handshake completes (rs2: 1 active)", tcp_to(ovf, 45610, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("ovf: 1 active of weight 1 is not over it: rs2 again", tcp_to(ovf, 45611, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("ovf: rs2 now has 2 active", tcp_to(ovf, 45611, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("ovf: rs2 overflows (2 > 1): rs1", tcp_to(ovf, 45612, 80, SYN), To(TxScheduled, RS1)));
    v.push(row("twos: both draws land on the only server of non-zero weight", tcp_to(vip(TWOS), 45620, 80, SYN), To(TxScheduled, RS1)));
    // sh over rs1 (weight 1) and rs2 (weight 0, quiesced): IPVS list order is rs2, rs1.
    let quiesced = lb_common::host::ipvs::list_for(&[1, 0]);
    let sh_client = (0..=255u8)
        .map(|b| [198, 18, 7, b])
        .find(|c| lb_common::host::ipvs::sh_with(&quiesced, *c, 0, false).is_none())
        .expect("some client hashes to the quiesced server's bucket");
    assert_eq!(lb_common::host::ipvs::sh_with(&quiesced, sh_client, 0, true), Some(1), "IPVS falls back to rs1");
    v.push(row("sh: a client whose bucket's server has weight 0 is dropped", tcp_from(sh_client, vip(SH_QUIESCED), 45630, 80, SYN), Untouched(DropNoRealServer)).no_conn());
    v.push(row("sh-fallback: that client is hashed on to a usable server", tcp_from(sh_client, vip(SH_FALLBACK), 45630, 80, SYN), To(TxScheduled, RS1)));
    let pair = lb_common::host::ipvs::list_for(&[1, 1]);
    let sh_port_to = |port: u16| [RS2, RS1][lb_common::host::ipvs::sh_with(&pair, CLIENT, port, false).expect("both usable")];
    let other_port = (45641..46000u16).find(|p| sh_port_to(*p) != sh_port_to(45640)).expect("ports hash apart");
    v.push(row("sh-port: the client's source port is hashed too", tcp_to(vip(SH_PORT), 45640, 80, SYN), To(TxScheduled, sh_port_to(45640))));
    v.push(row("sh-port: the same client from another port may go elsewhere", tcp_to(vip(SH_PORT), other_port, 80, SYN), To(TxScheduled, sh_port_to(other_port))));
    let three: Vec<(u32, u16, u32)> = [13u8, 12, 11].iter().map(|b| (u32::from_be_bytes([198, 18, 0, *b]), 80, 1)).collect();
    let lookup = lb_common::host::ipvs::mh_kernel_table(&three, crate::control::sched_tables::MH_TABLE_SIZE);
    let trio = lb_common::host::ipvs::list_for(&[1, 1, 1]);
    let mh_port_to = |port: u16| [RS3, RS2, RS1][lb_common::host::ipvs::mh_kernel_schedule(&lookup, &trio, CLIENT, port, false).expect("all usable")];
    let other_port = (46001..47000u16).find(|p| mh_port_to(*p) != mh_port_to(46000)).expect("ports hash apart");
    v.push(row("mh-port: the client's source port is hashed too", tcp_to(vip(MH_PORT), 46000, 80, SYN), To(TxScheduled, mh_port_to(46000))));
    v.push(row("mh-port: the same client from another port may go elsewhere", tcp_to(vip(MH_PORT), other_port, 80, SYN), To(TxScheduled, mh_port_to(other_port))));
    let ops_slots = &tables().slots[services_index("ops")];
    v.push(row("one-packet (UDP): a datagram is scheduled (rr → rs2) and leaves no connection", udp_to(vip(OPS), 5400, 53), To(TxScheduled, RS2))
        .no_conn().counts(ops_slots[1], 0, 0));
    v.push(row("one-packet: the next datagram of the same flow is scheduled afresh (rs1)", udp_to(vip(OPS), 5400, 53), To(TxScheduled, RS1))
        .no_conn().counts(ops_slots[0], 0, 0));

    // --- lblc and lblcr: the VIP (the packet's destination) keeps its server(s) ---
    let lblc = vip(LBLC);
    v.push(row("lblc: the VIP's first connection: wlc (rs2), remembered for the VIP", tcp_to(lblc, 45700, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("lblc: its handshake completes (rs2: 1 active)", tcp_to(lblc, 45700, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("lblc: the VIP's next connection stays on rs2 (wlc alone: the idle rs1)", tcp_from(CLIENT_OTHER_NET, lblc, 45701, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("lblc: rs2 now has 2 active", tcp_from(CLIENT_OTHER_NET, lblc, 45701, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("lblc: rs2 overloaded (2 active > weight 1, rs1 below half its weight): wlc picks rs1", tcp_to(lblc, 45702, 80, SYN), To(TxScheduled, RS1)));
    let lblcr = vip(LBLCR);
    v.push(row("lblcr: the VIP's first connection: wlc (rs2), the VIP's set is {rs2}", tcp_to(lblcr, 45710, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("lblcr: its handshake completes", tcp_to(lblcr, 45710, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("lblcr: the least loaded of the set, rs2, while not overloaded", tcp_to(lblcr, 45711, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("lblcr: rs2 now has 2 active", tcp_to(lblcr, 45711, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("lblcr: rs2 overloaded: wlc picks rs1, added to the set", tcp_to(lblcr, 45712, 80, SYN), To(TxScheduled, RS1)));
    v.push(row("lblcr: rs1's handshake completes (1 active)", tcp_to(lblcr, 45712, 80, ACK), To(TxForwarded, RS1)));
    v.push(row("lblcr: the set's least loaded is now rs1", tcp_from(CLIENT_OTHER_NET, lblcr, 45713, 80, SYN), To(TxScheduled, RS1)));

    // --- expiry (service `short`: tcp 5s) ---
    let short = vip(SHORT);
    v.push(row("short-timeout service: SYN", tcp_to(short, 46000, 80, SYN), To(TxScheduled, RS1)).conn(tcp::SYN_RECV, true).counts(slot::SHORT_RS1, 0, 1));
    v.push(row("short-timeout service: ACK → ESTABLISHED (5 s timeout)", tcp_to(short, 46000, 80, ACK), To(TxForwarded, RS1)).conn(tcp::ESTABLISHED, false).counts(slot::SHORT_RS1, 1, 0));
    v.push(row("after 10 s idle the entry is expired: ACK dropped, the count released, the entry removed", tcp_to(short, 46000, 80, ACK), Untouched(DropNoConnection))
        .setup(Setup::Age(10)).no_conn().counts(slot::SHORT_RS1, 0, 0));
    v.push(row("a SYN afterwards is a fresh connection", tcp_to(short, 46000, 80, SYN), To(TxScheduled, RS1)).conn(tcp::SYN_RECV, true).counts(slot::SHORT_RS1, 0, 1));
    v.push(row("a SYN on its expired half-open entry replaces it (old count released: no sweep recounted since)", tcp_to(short, 46000, 80, SYN), To(TxScheduled, RS1))
        .setup(Setup::Age(100)).conn(tcp::SYN_RECV, true).counts(slot::SHORT_RS1, 0, 1).half_open());
    // --- connections installed by sync (what a peer director reported) ---
    let (rs1, rs2) = ([198, 18, 0, 11], [198, 18, 0, 12]);
    v.push(row("synced ESTABLISHED connection to rs1: its ACK is forwarded there, not dropped as without an entry", tcp_to(web, 47000, 80, ACK), To(TxForwarded, RS1))
        .setup(Setup::Synced(rs1, tcp::ESTABLISHED, false)).conn(tcp::ESTABLISHED, false));
    v.push(row("its FIN: FIN_WAIT here as on the peer, inactive", tcp_to(web, 47000, 80, FIN_ACK), To(TxForwarded, RS1)).conn(tcp::FIN_WAIT, true));
    v.push(row("synced half-open (SYN_RECV, inactive) connection to rs2: the ACK completes it here", tcp_to(web, 47001, 80, ACK), To(TxForwarded, RS2))
        .setup(Setup::Synced(rs2, tcp::SYN_RECV, true)).conn(tcp::ESTABLISHED, false));
    v.push(row("a peer's report moves a connection to its real server (the peer's entry wins, as in IPVS)", tcp_to(web, 47001, 80, ACK), To(TxForwarded, RS1))
        .setup(Setup::Synced(rs1, tcp::ESTABLISHED, false)).conn(tcp::ESTABLISHED, false));
    v.push(row("synced connection of a real server this director lacks: not installed, the ACK is dropped", tcp_to(web, 47002, 80, ACK), Untouched(DropNoConnection))
        .setup(Setup::Synced([198, 18, 0, 99], tcp::ESTABLISHED, false)).no_conn());
    let sticky = vip(STICKY);
    v.push(row("synced persistence template (sticky, /24) to rs2: a new client of that /24 goes to rs2", tcp_from(CLIENT_SAME_NET, sticky, 47003, 80, SYN), To(TxScheduled, RS2))
        .setup(Setup::SyncedTemplate(rs2)).conn(tcp::SYN_RECV, true));
    half_open_rows(&mut v);
    ipv6_rows(&mut v);
    icmp_rows(&mut v);
    v
}

/// IPv6: the same phases as IPv4 behind the dispatcher's walk of the extension headers.
fn ipv6_rows(v: &mut Vec<Row>) {
    use lb_common::packet::{IPV6_AUTH, IPV6_DEST_OPTS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_ROUTING};
    use Expect::*;
    use Verdict::*;
    let web6 = vip6(WEB6);
    let web = vip(WEB);
    v.push(row("IPv6 SYN to web6 in a frame for another director's MAC is passed", to_mac(OTHER_DIRECTOR_MAC, tcp6_to(web6, 50009, 80, SYN)), Untouched(PassOtherHost)).no_conn());
    v.push(row("IPv6 SYN to web6: new connection, wlc tie to the last configured (rs2), half-open", tcp6_to(web6, 50000, 80, SYN), To(TxScheduled, RS2))
        .conn(tcp::SYN_RECV, true).half_open());
    v.push(row("IPv6 ACK completes the handshake: ESTABLISHED, in the connection table", tcp6_to(web6, 50000, 80, ACK), To(TxForwarded, RS2))
        .conn(tcp::ESTABLISHED, false).in_table());
    v.push(row("IPv6 second client port: wlc picks the idle rs1", tcp6_to(web6, 50001, 80, SYN), To(TxScheduled, RS1)).conn(tcp::SYN_RECV, true));
    v.push(row("IPv6 data on the established connection", tcp6_to(web6, 50000, 80, PSH_ACK), To(TxForwarded, RS2)).conn(tcp::ESTABLISHED, false));
    v.push(row("IPv6 client FIN: FIN_WAIT, inactive", tcp6_to(web6, 50000, 80, FIN_ACK), To(TxForwarded, RS2)).conn(tcp::FIN_WAIT, true));
    v.push(row("IPv6 ACK without a connection is dropped (non-sloppy)", tcp6_to(web6, 50002, 80, ACK), Untouched(DropNoConnection)).no_conn());
    v.push(row("IPv6 UDP to dns6: new connection, inactive", udp6_to(vip6(DNS6), 5353, 53), To(TxScheduled, RS3)).conn(tcp::NONE, true));
    v.push(row("IPv6 UDP again on the same 5-tuple", udp6_to(vip6(DNS6), 5353, 53), To(TxForwarded, RS3)));
    v.push(row("IPv6 TCP to the VIP on a port with no service is passed", tcp6_to(web6, 50003, 22, SYN), Untouched(PassVipNoService)));
    v.push(row("IPv6 port-0 service takes any port (2222)", tcp6_to(vip6(ALL_PORTS6), 50004, 2222, SYN), To(TxScheduled, RS1)));
    v.push(row("IPv6 sloppy_tcp: ACK without a connection is scheduled, ESTABLISHED", tcp6_to(vip6(SLOPPY6), 50005, 80, ACK), To(TxScheduled, RS1))
        .conn(tcp::ESTABLISHED, false));
    let sticky6 = vip6(STICKY6);
    v.push(row("IPv6 persistence: the first connection is scheduled (rr → rs2)", tcp6_to(sticky6, 50010, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("IPv6 persistence /64: a neighbour in the same /64 is pinned to rs2", tcp6_from(CLIENT6_SAME_NET, sticky6, 50011, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("IPv6 persistence /64: a client in another /64 is scheduled (rr → rs1)", tcp6_from(CLIENT6_OTHER_NET, sticky6, 50012, 80, SYN), To(TxScheduled, RS1)));
    // sh, mh and dh hash an IPv6 address folded (the XOR of its words), as IPVS does.
    let fold = |a: &[u8; 16]| lb_common::maps::addr_hash(lb_common::maps::SVC_F_IPV6, a).to_be_bytes();
    let sh_to = [RS2, RS1][lb_common::host::ipvs::sh(&lb_common::host::ipvs::list_for(&[1, 1]), fold(&CLIENT6)).expect("sh picks a server")];
    v.push(row("IPv6 sh: the client's folded address names its bucket's server", tcp6_to(vip6(SH6), 50020, 80, SYN), To(TxScheduled, sh_to)));
    v.push(row("IPv6 sh: the same client on another port goes there too", tcp6_to(vip6(SH6), 50021, 80, SYN), To(TxScheduled, sh_to)));
    let dests: Vec<(u32, u16, u32)> = [0x13u16, 0x12, 0x11].iter().map(|low| (u32::from_be_bytes(fold(&addr6(0, *low))), 80, 1)).collect();
    let lookup = lb_common::host::ipvs::mh_kernel_table(&dests, crate::control::sched_tables::MH_TABLE_SIZE);
    let mh_to = |client: &[u8; 16]| [RS3, RS2, RS1][lb_common::host::ipvs::mh_kernel_get(&lookup, fold(client)).expect("all usable")];
    v.push(row("IPv6 mh: the Maglev table of folded server addresses, looked up with the folded client", tcp6_to(vip6(MH6), 50030, 80, SYN), To(TxScheduled, mh_to(&CLIENT6))));
    v.push(row("IPv6 mh: another client", tcp6_from(CLIENT6_OTHER_NET, vip6(MH6), 50031, 80, SYN), To(TxScheduled, mh_to(&CLIENT6_OTHER_NET))));
    let dh_to = [RS3, RS2, RS1][lb_common::sched::dh_bucket(u32::from_be_bytes(fold(&vip6(DH6)))) as usize % 3];
    v.push(row("IPv6 dh: the folded VIP's bucket names the server", tcp6_to(vip6(DH6), 50040, 80, SYN), To(TxScheduled, dh_to)));
    let lblc6 = vip6(LBLC6);
    v.push(row("IPv6 lblc: the VIP's first connection: wlc (rs2), remembered for the 16-byte VIP", tcp6_to(lblc6, 50050, 80, SYN), To(TxScheduled, RS2)));
    v.push(row("IPv6 lblc: its handshake completes", tcp6_to(lblc6, 50050, 80, ACK), To(TxForwarded, RS2)));
    v.push(row("IPv6 lblc: the VIP's next connection stays on rs2 (wlc alone: the idle rs1)", tcp6_from(CLIENT6_OTHER_NET, lblc6, 50051, 80, SYN), To(TxScheduled, RS2)));
    // Extension headers: walked, counted, never misread.
    v.push(row("IPv6 hop-by-hop, destination options, routing, then TCP: walked to the SYN and scheduled",
        tcp6_behind(web6, 50060, &[IPV6_HOP_BY_HOP, IPV6_DEST_OPTS, IPV6_ROUTING], 0), To(TxScheduled, RS2)).conn(tcp::SYN_RECV, true));
    v.push(row("IPv6 authentication header (4-byte units) before TCP is walked too",
        tcp6_behind(web6, 50061, &[IPV6_AUTH], 0), To(TxScheduled, RS1)).conn(tcp::SYN_RECV, true));
    v.push(row("IPv6 six extension headers (RFC 8200's full chain) are walked",
        tcp6_behind(web6, 50062, &[IPV6_HOP_BY_HOP, IPV6_DEST_OPTS, IPV6_ROUTING, IPV6_AUTH, IPV6_DEST_OPTS, IPV6_DEST_OPTS], 0), To(TxScheduled, RS2)));
    v.push(row("IPv6 seven extension headers to a VIP: dropped by their own reason, not misread",
        tcp6_behind(web6, 50063, &[IPV6_DEST_OPTS; 7], 0), Untouched(DropExtHeaders)).no_conn());
    let mut cut = tcp6_behind(web6, 50064, &[IPV6_HOP_BY_HOP], 0);
    cut.truncate(14 + 40 + 4);
    v.push(row("IPv6 frame ending inside an extension header: dropped as truncated", cut, Untouched(DropTruncatedL4)));
    v.push(row("IPv6 first fragment (M set) to a VIP: dropped as a fragment (IPVS reassembles; XDP cannot)",
        tcp6_behind(web6, 50065, &[IPV6_FRAGMENT], 1), Untouched(DropFragment)).no_conn());
    v.push(row("IPv6 later fragment (offset 185) to a VIP: dropped as a fragment",
        tcp6_behind(web6, 50066, &[IPV6_FRAGMENT], 185 << 3), Untouched(DropFragment)).no_conn());
    v.push(row("IPv6 atomic fragment (offset 0, no M; RFC 6946) is a whole packet: scheduled",
        tcp6_behind(web6, 50067, &[IPV6_FRAGMENT], 0), To(TxScheduled, RS1)));
    let mut esp = ether(0x86dd);
    esp.extend(ipv6_packet(CLIENT6, web6, 50, &[0; 24]));
    v.push(row("IPv6 ESP to a VIP is the director's own (no ports to balance on)", esp, Untouched(PassVipNoService)));
    let mut none = ether(0x86dd);
    none.extend(ipv6_packet(CLIENT6, web6, 59, &[]));
    v.push(row("IPv6 No Next Header to a VIP is passed", none, Untouched(PassVipNoService)));
    v.push(row("IPv6 truncated TCP header to a VIP is dropped", tcp6_to(web6, 50068, 80, SYN)[..14 + 40 + 10].to_vec(), Untouched(DropTruncatedL4)));
    v.push(row("IPv6 truncated fixed header is passed as malformed", tcp6_to(web6, 50068, 80, SYN)[..14 + 30].to_vec(), Untouched(PassMalformed)));
    let mut ns_target = vec![0, 0, 0, 0];
    ns_target.extend_from_slice(&web6);
    let mut ns = ether(0x86dd);
    let solicited = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, web6[13], web6[14], web6[15]];
    ns.extend(ipv6_packet(CLIENT6, solicited, 58, &[&[135u8, 0, 0, 0][..], &ns_target].concat()));
    v.push(row("IPv6 neighbour solicitation for the VIP (to its solicited-node group) is passed", ns, Untouched(PassNotVip)));
    let mut ra = ether(0x86dd);
    ra.extend(ipv6_packet(ROUTER6, [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 58, &[134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    v.push(row("IPv6 router advertisement to all nodes is passed", ra, Untouched(PassNotVip)));
    v.push(row("IPv6 unicast neighbour solicitation to the VIP (reachability check) is the director's own", icmp6_info(135, web6, &ns_target), Untouched(PassVipNoService)));
    v.push(row("IPv6 echo request to the VIP is the director's own", icmp6_info(128, web6, &[0, 1, 0, 1]), Untouched(PassVipNoService)));
    v.push(row("IPv6 to an address that is not a VIP is passed", tcp6_to(addr6(0, 2), 50069, 22, SYN), Untouched(PassNotVip)));
    let mapped = |v4: [u8; 4]| lb_common::addr::v4_mapped(v4);
    v.push(row("IPv6 to an IPv4-mapped VIP (::ffff:198.18.0.100) is never the IPv4 service's: passed as malformed (Linux drops it)",
        tcp6_to(mapped(web), 50070, 80, SYN), Untouched(PassMalformed)).no_conn());
    v.push(row("IPv6 from an IPv4-mapped source to an IPv6 VIP is passed as malformed, never recorded as an IPv4 client",
        tcp6_from(mapped(CLIENT), web6, 50071, 80, SYN), Untouched(PassMalformed)).no_conn());
    let mut vlan = Vec::new();
    vlan.extend_from_slice(&DIRECTOR_MAC);
    vlan.extend_from_slice(&CLIENT_MAC);
    vlan.extend_from_slice(&[0x81, 0x00, 0, 42, 0x86, 0xdd]);
    vlan.extend(ipv6_packet(CLIENT6, vip6(DNS6), 17, &udp_header(5354, 53, b"q")));
    v.push(row("IPv6 802.1Q-tagged UDP to the VIP is forwarded with its tag kept", vlan, To(TxScheduled, RS3)));
}

/// ICMP errors about a VIP's connections go to the connection's real server (IPVS's
/// `ip_vs_in_icmp()` / `ip_vs_in_icmp_v6()`): path MTU discovery through the director.
fn icmp_rows(v: &mut Vec<Row>) {
    use lb_common::packet::IPV6_FRAGMENT;
    use Expect::*;
    use Verdict::*;
    let icmp = vip(ICMP4);
    v.push(row("ICMP service: a SYN (half-open, rs2)", tcp_to(icmp, 51000, 80, SYN), To(TxScheduled, RS2)).half_open());
    v.push(row("ICMPv4 fragmentation needed about the half-open connection's reply goes to its real server",
        icmp4_error(3, 4, icmp, 80, 51000, 6), To(TxIcmpForwarded, RS2)));
    v.push(row("ICMP service: the ACK establishes it", tcp_to(icmp, 51000, 80, ACK), To(TxForwarded, RS2)).conn(tcp::ESTABLISHED, false));
    v.push(row("ICMPv4 fragmentation needed about an established connection goes to its real server, its state untouched",
        icmp4_error(3, 4, icmp, 80, 51000, 6), To(TxIcmpForwarded, RS2)));
    v.push(row("ICMPv4 time exceeded about it too", icmp4_error(11, 0, icmp, 80, 51000, 6), To(TxIcmpForwarded, RS2)));
    v.push(row("ICMPv4 port unreachable about a UDP connection (dns) goes to its server", icmp4_error(3, 3, vip(DNS), 53, 5353, 17), To(TxIcmpForwarded, RS3)));
    v.push(row("ICMPv4 fragmentation needed about no known connection is passed and counted", icmp4_error(3, 4, icmp, 80, 51001, 6), Untouched(PassIcmpUnknown)));
    let mut later = icmp4_error(3, 4, icmp, 80, 51000, 6);
    later[14 + 20 + 8 + 7] = 0x10; // the quoted header's fragment offset
    v.push(row("ICMPv4 error quoting a later fragment (no ports) is passed as unknown", later, Untouched(PassIcmpUnknown)));
    let mut to_director = icmp4_error(3, 4, icmp, 80, 51000, 6);
    to_director[14 + 16..14 + 20].copy_from_slice(&DIRECTOR);
    v.push(row("ICMPv4 error to the director's own address is passed", to_director, Untouched(PassNotVip)));
    let web6 = vip6(WEB6);
    v.push(row("ICMPv6 packet too big about an IPv6 connection goes to its real server (rs2)",
        icmp6_error(2, 0, web6, 80, 50000, 6, &[]), To(TxIcmpForwarded, RS2)));
    v.push(row("ICMPv6 destination unreachable about the IPv6 UDP connection (dns6 → rs3)", icmp6_error(1, 4, vip6(DNS6), 53, 5353, 17, &[]), To(TxIcmpForwarded, RS3)));
    v.push(row("ICMPv6 time exceeded about the half-open IPv6 connection (rs1)", icmp6_error(3, 0, web6, 80, 50001, 6, &[]), To(TxIcmpForwarded, RS1)));
    v.push(row("ICMPv6 packet too big about no known connection is passed and counted", icmp6_error(2, 0, web6, 80, 50099, 6, &[]), Untouched(PassIcmpUnknown)));
    v.push(row("ICMPv6 packet too big behind a fragment header is dropped, as IPVS drops it",
        icmp6_error(2, 0, web6, 80, 50000, 6, &[IPV6_FRAGMENT]), Untouched(DropFragment)));
    v.push(row("ICMPv6 error quoting an ICMPv6 packet (no ports) is passed as unknown", icmp6_error(1, 0, web6, 80, 50000, 58, &[]), Untouched(PassIcmpUnknown)));
    let mut quoting_mapped = icmp6_error(2, 0, web6, 80, 50000, 6, &[]);
    quoting_mapped[14 + 40 + 8 + 24..14 + 40 + 8 + 40].copy_from_slice(&lb_common::addr::v4_mapped(CLIENT));
    v.push(row("ICMPv6 error quoting a reply to an IPv4-mapped client is passed as unknown, never matched to an IPv4 connection", quoting_mapped, Untouched(PassIcmpUnknown)));
    let mut echo_behind_fragment = ether(0x86dd);
    let mut payload = ext_header(IPV6_FRAGMENT, 58, 0);
    payload.extend([128, 0, 0, 0, 0, 1, 0, 1]);
    echo_behind_fragment.extend(ipv6_packet(CLIENT6, web6, IPV6_FRAGMENT, &payload));
    v.push(row("ICMPv6 echo behind an atomic fragment header is the director's own (IPVS reads the type before the fragment rule)",
        echo_behind_fragment, Untouched(PassVipNoService)));
}

/// Clients (address in 198.18.0.0/15, port) whose connections to the flood VIP fall in
/// the half-open bucket of `CLIENT`'s from `port` (other keys, same bucket).
pub fn half_open_neighbours(port: u16) -> impl Iterator<Item = ([u8; 4], u16)> {
    let key_of = |c: [u8; 4], p: u16| conn_key(&tcp_from(c, vip(FLOOD), p, 80, SYN)).expect("a TCP frame has a key");
    let target = lb_common::halfopen::bucket(&key_of(CLIENT, port));
    (1..u32::from(u16::MAX) * 2)
        .map(|n| [198, 18 + (n >> 16) as u8, (n >> 8) as u8, n as u8])
        .filter(move |c| *c != CLIENT && lb_common::halfopen::bucket(&key_of(*c, port)) == target)
        .map(move |c| (c, port))
}

/// The half-open table (service `flood`, one real server): a bucket filling up,
/// displacement of the oldest, expiry, promotion.
fn half_open_rows(v: &mut Vec<Row>) {
    use Expect::*;
    use Verdict::*;
    let flood = vip(FLOOD);
    let n: Vec<([u8; 4], u16)> = half_open_neighbours(48000).take(5).collect();
    assert_eq!(n.len(), 5, "five neighbours in 198.18.0.0/15");
    let s = slot::FLOOD_RS1;
    v.push(row("half-open: a client's SYN is scheduled and waits, counted inactive", tcp_to(flood, 48000, 80, SYN), To(TxScheduled, RS1))
        .conn(tcp::SYN_RECV, true).counts(s, 0, 1).half_open());
    for (i, (addr, port)) in n[..3].iter().enumerate() {
        v.push(row("another client's SYN in the same bucket takes a free way", tcp_from(*addr, flood, *port, 80, SYN), To(TxScheduled, RS1))
            .conn(tcp::SYN_RECV, true).counts(s, 0, 2 + i as u32).half_open());
    }
    let (fifth, fport) = n[3];
    v.push(row("a fifth SYN in the full bucket displaces the oldest (the first client's): four counted, not five", tcp_from(fifth, flood, fport, 80, SYN), To(TxScheduled, RS1))
        .conn(tcp::SYN_RECV, true).counts(s, 0, 4).half_open());
    v.push(row("the displaced client's ACK finds no connection: dropped, as if its SYN had been lost", tcp_to(flood, 48000, 80, ACK), Untouched(DropNoConnection))
        .no_conn().counts(s, 0, 4));
    v.push(row("the fifth client's ACK promotes its connection: ESTABLISHED, active, in the connection table", tcp_from(fifth, flood, fport, 80, ACK), To(TxForwarded, RS1))
        .conn(tcp::ESTABLISHED, false).counts(s, 1, 3).in_table());
    v.push(row("a data segment of the promoted connection is forwarded from the connection table", tcp_from(fifth, flood, fport, 80, PSH_ACK), To(TxForwarded, RS1))
        .conn(tcp::ESTABLISHED, false).counts(s, 1, 3).in_table());
    v.push(row("the first client's retried SYN takes the way the promotion emptied", tcp_to(flood, 48000, 80, SYN), To(TxScheduled, RS1))
        .conn(tcp::SYN_RECV, true).counts(s, 1, 4).half_open());
    v.push(row("its ACK after the half-open entry expired (60 s SYN_RECV timeout): dropped; the count waits for the sweep", tcp_to(flood, 48000, 80, ACK), Untouched(DropNoConnection))
        .setup(Setup::Age(61)).counts(s, 1, 4));
    let (last, lport) = n[4];
    v.push(row("a sweep since the expiry recounted without it (1 active, 3 inactive): a SYN taking the expired way releases nothing more", tcp_from(last, flood, lport, 80, SYN), To(TxScheduled, RS1))
        .setup(Setup::Swept(s, 1, 3)).conn(tcp::SYN_RECV, true).counts(s, 1, 4).half_open());
    v.push(row("FIN as the first packet after a SYN (no ACK): leaves SYN_RECV, promoted in TIME_WAIT as IPVS has it", tcp_from(last, flood, lport, 80, tcp::FLAG_FIN), To(TxForwarded, RS1))
        .conn(tcp::TIME_WAIT, true).counts(s, 1, 4).in_table());
    // A peer reports, as ESTABLISHED on rs1, a connection that is half-open here on rs2
    // (the VIP moved during its handshake).
    let web = vip(WEB);
    v.push(row("half-open on web: the SYN goes to rs2", tcp_to(web, 47010, 80, SYN), To(TxScheduled, RS2)).conn(tcp::SYN_RECV, true).half_open());
    v.push(row("a peer's report puts it in the table on rs1; its ACK follows the table, and the half-open twin and its count go", tcp_to(web, 47010, 80, ACK), To(TxForwarded, RS1))
        .setup(Setup::Synced([198, 18, 0, 11], tcp::ESTABLISHED, false)).conn(tcp::ESTABLISHED, false).in_table());
}

/// The server (index into `servers`, given in configuration order as (address, weight))
/// that IPVS mh — its table built by the kernel's loops, transliterated apart from drlb's
/// builder, for a service on port 80 — gives `client`.
pub fn maglev_choice(servers: &[([u8; 4], u32)], client: [u8; 4]) -> usize {
    // IPVS list order: the last configured first.
    let list: Vec<(u32, u16, u32)> = servers.iter().rev().map(|(addr, w)| (u32::from_be_bytes(*addr), 80, *w)).collect();
    let table = lb_common::host::ipvs::mh_kernel_table(&list, crate::control::sched_tables::MH_TABLE_SIZE);
    let list_index = lb_common::host::ipvs::mh_kernel_get(&table, client).expect("a server with weight takes every entry");
    servers.len() - 1 - list_index
}

/// The host model's clock: milliseconds (its services' `ticks_per_sec` is 1000), counted
/// from a day before boot, so that ageing an entry by more than the machine's uptime (a
/// freshly booted test guest) never goes below zero.
pub fn model_now() -> u64 {
    const DAY_MS: u64 = 86_400_000;
    monotonic_ns() / 1_000_000 + DAY_MS
}

pub struct Harness {
    pub dp: Dataplane,
    pub model: HostTables,
    pub slots: Vec<u32>,
}

impl Harness {
    pub fn new() -> Harness {
        Self::with_tables(&tables()).expect("load the dataplane (run as root)")
    }

    /// A dataplane loaded with `tables`, and the host model over the same tables.
    pub fn with_tables(tables: &MapContent) -> anyhow::Result<Harness> {
        // The director's MAC is set in both, so that frames for another host are checked.
        let mut dp = Dataplane::load_for(65536, DIRECTOR_MAC)?;
        dp.apply(tables)?;
        let slots = tables.backends.keys().copied().collect();
        let mut model = tables.host_model();
        model.own_mac = lb_common::maps::own_mac_words(DIRECTOR_MAC);
        Ok(Harness { dp, model, slots })
    }

    /// Runs a frame through the kernel and the model; they must agree. Returns the
    /// kernel's verdict and output.
    pub fn run(&self, frame: &[u8], what: &str) -> (u32, Vec<u8>, Verdict) {
        let prog = self.dp.program(PROGRAM_LB).unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let result = prog
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() })
            .unwrap_or_else(|e| panic!("{what}: BPF_PROG_TEST_RUN failed: {e}"));
        out.truncate(result.data_size_out as usize);
        // The model's clock counts milliseconds (its services' ticks_per_sec is 1000).
        self.model.now.set(model_now());
        let mut model_out = frame.to_vec();
        let model_stat = lb_common::dataplane::process(model_out.as_mut_slice(), &self.model);
        assert_eq!(result.return_value, model_stat.xdp_action(), "{what}: kernel and host model disagree on the verdict");
        assert_eq!(out, model_out, "{what}: kernel and host model disagree on the output");
        (result.return_value, out, model_stat)
    }

    pub fn setup(&mut self, setup: &Setup, key: Option<ConnKey>) {
        match setup {
            Setup::None => {}
            Setup::Swept(slot, active, inactive) => {
                self.dp.record_sweep(self.dp.now().unwrap()).unwrap();
                self.model.swept_at.set(model_now());
                let counts = ConnCounts { active: *active, inactive: *inactive };
                self.dp.set_conn_counts(*slot, counts).unwrap();
                self.model.counts.borrow_mut().insert(*slot, counts);
            }
            Setup::Age(secs) => {
                let key = key.unwrap();
                if let Some(mut c) = self.dp.table_connection(&key).unwrap() {
                    c.last_seen -= secs * self.dp.hz() as u64;
                    self.dp.insert_connection(&key, &c).unwrap();
                    self.model.conns.borrow_mut().get_mut(&key).unwrap().last_seen -= secs * 1000;
                    self.model.bump_conn_generation();
                } else {
                    let (slot, mut e) = self.dp.half_open(&key).unwrap().expect("a connection to age");
                    e.conn.last_seen -= secs * self.dp.hz() as u64;
                    self.dp.set_half_open(slot, &e).unwrap();
                    self.model.half_open.borrow_mut().get_mut(&slot).unwrap().conn.last_seen -= secs * 1000;
                }
            }
            Setup::Established(slot) => {
                let key = key.unwrap();
                let mut c = Conn {
                    last_seen: self.dp.now().unwrap(),
                    backend: *slot,
                    service: self
                        .model
                        .services
                        .iter()
                        .find(|(_, s)| (s.members_offset..s.members_offset + s.member_count).any(|i| self.model.members.get(&i) == Some(slot)))
                        .map(|(id, _)| *id)
                        .unwrap(),
                    timeout: 900 * self.dp.hz(),
                    state: tcp::ESTABLISHED,
                    flags: 0,
                    order: 0,
                };
                self.dp.insert_connection(&key, &c).unwrap();
                c.last_seen = model_now();
                c.timeout = 900 * 1000;
                self.model.insert_conn(&key, &c);
                self.model.bump_conn_generation();
                let counts = self.model.conn_counts(*slot);
                let counts = ConnCounts { active: counts.active + 1, inactive: counts.inactive };
                self.dp.set_conn_counts(*slot, counts).unwrap();
                self.model.counts.borrow_mut().insert(*slot, counts);
            }
            Setup::Synced(server, state, inactive) => self.install(key.unwrap(), *server, *state, *inactive, false),
            Setup::SyncedTemplate(server) => {
                let key = ConnKey { cport: 0, ..key.unwrap() };
                self.install(key, *server, 0, false, true)
            }
        }
    }

    /// Installs one synced record into the kernel's maps and the model; both must take it
    /// alike.
    fn install(&mut self, key: ConnKey, server: [u8; 4], state: u8, inactive: bool, template: bool) {
        let rec = lb_common::sync::SyncedConn { key, server: v4_mapped(server), server_port: key.vport, state, inactive, template, timeout_s: 0 };
        let kernel = self.dp.install_synced(&[rec], self.dp.now().unwrap());
        let model = lb_common::sync::install(&self.model, &rec, model_now());
        assert_eq!(kernel, vec![model], "kernel maps and host model install {rec:?} differently");
    }

    pub fn kernel_counts(&self, slot: u32) -> ConnCounts {
        let c = self.dp.backend_counters(slot).unwrap();
        ConnCounts { active: c.active, inactive: c.inactive }
    }
}

/// Runs the whole fixture table against a freshly loaded dataplane; panics on the first
/// row whose verdict, output, connection or counts differ from the expectation or from the
/// host model. Returns the number of rows.
pub fn run_table() -> usize {
    let mut h = Harness::new();
    for (program, count) in h.dp.verified_instructions() {
        match count {
            Some(n) => println!("selftest: the verifier processed {n} instructions of {program} (its budget: 1000000)"),
            None => println!("selftest: this kernel does not report the verifier's instruction count of {program} (5.16+ does)"),
        }
    }
    let rows = rows();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    let mut before = h.dp.counters().unwrap();
    for (n, r) in rows.iter().enumerate() {
        let what = format!("row {n}: {}", r.description);
        let key = conn_key(&r.frame);
        h.setup(&r.setup, key);
        let (verdict, out, _) = h.run(&r.frame, &what);

        let after = h.dp.counters().unwrap();
        let bumped: Vec<Verdict> = Verdict::ALL.iter().copied().filter(|s| after[s.index() as usize] != before[s.index() as usize]).collect();
        before = after;
        match r.expect {
            Expect::Untouched(stat) => {
                let want = if stat.xdp_action() == XDP_DROP { XDP_DROP } else { XDP_PASS };
                assert_eq!(verdict, want, "{what}: verdict");
                assert_eq!(out, r.frame, "{what}: frame must be untouched");
                assert_eq!(bumped, vec![stat], "{what}: reason");
            }
            Expect::To(stat, mac) => {
                assert_eq!(verdict, XDP_TX, "{what}: verdict");
                assert_eq!(out, forwarded(&r.frame, mac), "{what}: forwarded to {:02x?}", &out[..6]);
                assert_eq!(bumped, vec![stat], "{what}: reason");
            }
        }
        if let Some(expect) = r.conn_after {
            // A frame without a key (a fragment, an unwalkable chain) can have no connection.
            let got = match key {
                Some(key) => h.dp.connection(&key).unwrap().map(|c| (c.state, c.flags & CONN_F_INACTIVE != 0)),
                None => None,
            };
            assert_eq!(got, expect, "{what}: connection state (state, inactive)");
        }
        if let Some(half_open) = r.half_open_after {
            let key = key.unwrap();
            let place = |in_table: bool, held: bool| match (in_table, held) {
                (true, false) => Some(false),
                (false, true) => Some(true),
                _ => None,
            };
            let kernel = place(h.dp.table_connection(&key).unwrap().is_some(), h.dp.half_open(&key).unwrap().is_some());
            let model = place(h.model.conns.borrow().contains_key(&key), h.model.connection(&key).is_some() && !h.model.conns.borrow().contains_key(&key));
            assert_eq!(kernel, Some(half_open), "{what}: kernel: in the half-open table (true) or the connection table (false), one only");
            assert_eq!(model, Some(half_open), "{what}: model: in the half-open table (true) or the connection table (false), one only");
        }
        if let Some((slot, active, inactive)) = r.counts_after {
            assert_eq!(h.kernel_counts(slot), ConnCounts { active, inactive }, "{what}: counts of slot {slot}");
        }
        // The kernel's state equals the model's, entry and counts.
        if let Some(key) = key {
            // Timeouts compared in seconds: the kernel counts jiffies, the model milliseconds.
            let hz = h.dp.hz();
            let k = h.dp.connection(&key).unwrap().map(|c| (c.backend, c.state, c.flags, c.service, c.timeout / hz));
            let m = h.model.connection(&key).map(|c| (c.backend, c.state, c.flags, c.service, c.timeout / 1000));
            assert_eq!(k, m, "{what}: kernel and model connection entries differ");
        }
        assert_eq!(h.dp.events().unwrap(), *h.model.events.borrow(), "{what}: kernel and model event counts differ");
        for &slot in &h.slots {
            assert_eq!(h.kernel_counts(slot), h.model.conn_counts(slot), "{what}: kernel and model counts differ for slot {slot}");
        }
        println!("ok: {what}");
    }
    rows.len()
}

