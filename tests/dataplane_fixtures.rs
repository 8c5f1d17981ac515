//! Dataplane fixtures: real packets through the real BPF object with BPF_PROG_TEST_RUN.
//!
//! Each row: description, input frame built layer by layer, expected verdict, expected
//! output frame. Every row is also run through the host model (`lb_common::dataplane`
//! over the same tables) and both must agree byte for byte. Needs root.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use aya::programs::{TestRun, TestRunOptions};
use etherparse::{IpHeaders, Ipv4Extensions, Ipv4Header, Ipv4Options, IpNumber, PacketBuilder};
use lb_common::stats::{Stat, XDP_DROP, XDP_PASS, XDP_TX};
use lb_userspace::config::Config;
use lb_userspace::dataplane::{Dataplane, PROGRAM_LB};
use lb_userspace::tables::{Mac, Tables};

const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];
const DIRECTOR_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
const RS1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x11];
const RS2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x12];
const RS3_MAC: Mac = [0x02, 0, 0, 0, 0, 0x13];
const RS4_MAC: Mac = [0x02, 0, 0, 0, 0, 0x14];

const CLIENT: [u8; 4] = [198, 18, 0, 10];
const DIRECTOR: [u8; 4] = [198, 18, 0, 2];
const VIP_WEB: [u8; 4] = [198, 18, 0, 100];
const VIP_DNS: [u8; 4] = [198, 18, 0, 101];
const VIP_EMPTY: [u8; 4] = [198, 18, 0, 102];
const VIP_ALLPORTS: [u8; 4] = [198, 18, 0, 103];

const CONFIG: &str = r#"
director: { interface: eth0, xdp_mode: native }
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    protocol: tcp
    real_servers:
      - { address: 198.18.0.11, weight: 1 }
      - { address: 198.18.0.12, weight: 1 }
  - name: dns
    vip: 198.18.0.101
    port: 53
    protocol: udp
    real_servers:
      - { address: 198.18.0.13 }
  - name: empty
    vip: 198.18.0.102
    port: 80
    protocol: tcp
    real_servers:
      - { address: 198.18.0.11, weight: 0 }
  - name: all-ports
    vip: 198.18.0.103
    port: 0
    protocol: tcp
    real_servers:
      - { address: 198.18.0.14 }
"#;

fn tables() -> Tables {
    let config = Config::parse(Path::new("fixture.yaml"), CONFIG).expect("fixture config is valid");
    let macs: HashMap<IpAddr, Mac> = [
        ("198.18.0.11", RS1_MAC),
        ("198.18.0.12", RS2_MAC),
        ("198.18.0.13", RS3_MAC),
        ("198.18.0.14", RS4_MAC),
    ]
    .into_iter()
    .map(|(ip, mac)| (ip.parse().unwrap(), mac))
    .collect();
    Tables::build(&config, &macs, DIRECTOR_MAC)
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
}

fn tcp_to(dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let b = eth().ipv4(CLIENT, dst, 64).tcp(sport, dport, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(2000) };
    let mut out = Vec::new();
    b.write(&mut out, b"").unwrap();
    out
}

fn with_ipv4_header(h: Ipv4Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    eth().ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()))
        .tcp(40000, 80, 1, 1024)
        .syn()
        .write(&mut out, payload)
        .unwrap();
    out
}

fn arp_request_for(target: [u8; 4]) -> Vec<u8> {
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
fn forwarded(input: &[u8], to: Mac) -> Vec<u8> {
    let mut out = input.to_vec();
    out[..6].copy_from_slice(&to);
    out[6..12].copy_from_slice(&DIRECTOR_MAC);
    out
}

enum Expect {
    Unchanged(u32, Stat),
    Forwarded(Mac),
    /// Forwarded to one of these (the flow hash picks which).
    ForwardedToOneOf(&'static [Mac]),
}

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    expect: Expect,
}

fn fixtures() -> Vec<Fixture> {
    let mut v = Vec::new();
    let mut add = |description, input, expect| v.push(Fixture { description, input, expect });

    add("TCP SYN to the web VIP is forwarded to a real server", tcp_to(VIP_WEB, 40000, 80, true), Expect::ForwardedToOneOf(&[RS1_MAC, RS2_MAC]));
    add("TCP ACK to the web VIP is forwarded to a real server", tcp_to(VIP_WEB, 40000, 80, false), Expect::ForwardedToOneOf(&[RS1_MAC, RS2_MAC]));
    let mut udp = Vec::new();
    eth().ipv4(CLIENT, VIP_DNS, 64).udp(5353, 53).write(&mut udp, b"query").unwrap();
    add("UDP to a UDP VIP is forwarded to its only real server", udp, Expect::Forwarded(RS3_MAC));
    let mut tcp_to_udp_vip = Vec::new();
    eth().ipv4(CLIENT, VIP_DNS, 64).tcp(40000, 53, 1, 1024).syn().write(&mut tcp_to_udp_vip, b"").unwrap();
    add("TCP to a UDP-only VIP:port is passed (no such service)", tcp_to_udp_vip, Expect::Unchanged(XDP_PASS, Stat::PassVipNoService));
    let mut vlan = Vec::new();
    eth().single_vlan(42.try_into().unwrap()).ipv4(CLIENT, VIP_DNS, 64).udp(5353, 53).write(&mut vlan, b"q").unwrap();
    add("802.1Q-tagged UDP to the VIP is forwarded with its tag kept", vlan, Expect::Forwarded(RS3_MAC));
    let mut opts = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP_ALLPORTS).unwrap();
    opts.options = Ipv4Options::try_from(&[0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0x00, 0x00][..]).unwrap();
    add("IPv4 with options (IHL 7) is parsed past the options and forwarded", with_ipv4_header(opts, b""), Expect::Forwarded(RS4_MAC));
    add("TCP to a port-0 service on any port is forwarded", tcp_to(VIP_ALLPORTS, 40001, 8443, true), Expect::Forwarded(RS4_MAC));
    add("TCP to a non-VIP address (the director's own) is passed", tcp_to(DIRECTOR, 40000, 22, true), Expect::Unchanged(XDP_PASS, Stat::PassNotVip));
    add("TCP to the VIP on a port with no service is passed to the director", tcp_to(VIP_WEB, 40000, 22, true), Expect::Unchanged(XDP_PASS, Stat::PassVipNoService));
    let mut icmp = Vec::new();
    eth().ipv4(CLIENT, VIP_WEB, 64).icmpv4_echo_request(1, 1).write(&mut icmp, b"ping").unwrap();
    add("ICMP echo to the VIP is passed (the director answers pings)", icmp, Expect::Unchanged(XDP_PASS, Stat::PassVipNoService));
    add("ARP request for the VIP is passed", arp_request_for(VIP_WEB), Expect::Unchanged(XDP_PASS, Stat::PassArp));
    let mut v6 = Vec::new();
    eth().ipv6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a], [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64], 64)
        .tcp(40000, 80, 1, 1024)
        .syn()
        .write(&mut v6, b"")
        .unwrap();
    add("IPv6 is passed (not balanced yet)", v6, Expect::Unchanged(XDP_PASS, Stat::PassIpv6));
    add("VIP whose only real server has weight 0: dropped", tcp_to(VIP_EMPTY, 40000, 80, true), Expect::Unchanged(XDP_DROP, Stat::DropNoRealServer));
    let mut trunc_vlan = tcp_to(VIP_WEB, 40000, 80, true)[..12].to_vec();
    trunc_vlan.extend_from_slice(&0x8100u16.to_be_bytes());
    add("truncated Ethernet (802.1Q type, no tag) is passed", trunc_vlan, Expect::Unchanged(XDP_PASS, Stat::PassMalformed));
    add("truncated IPv4 header (10 of 20 bytes) is passed", tcp_to(VIP_WEB, 40000, 80, true)[..24].to_vec(), Expect::Unchanged(XDP_PASS, Stat::PassMalformed));
    add("truncated TCP header to the VIP (8 of 20 bytes) is dropped", tcp_to(VIP_WEB, 40000, 80, true)[..42].to_vec(), Expect::Unchanged(XDP_DROP, Stat::DropTruncatedL4));
    let mut frag = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT, VIP_WEB).unwrap();
    frag.more_fragments = true;
    add("first IPv4 fragment to the VIP is dropped (not reassembled)", with_ipv4_header(frag, &[0; 64]), Expect::Unchanged(XDP_DROP, Stat::DropFragment));
    let mut bad_ihl = tcp_to(VIP_WEB, 40000, 80, true);
    bad_ihl[14] = 0x44;
    add("IPv4 with IHL 4 is passed as malformed", bad_ihl, Expect::Unchanged(XDP_PASS, Stat::PassMalformed));
    v
}

#[test]
fn fixtures_through_bpf_prog_test_run() {
    let tables = tables();
    let mut dp = Dataplane::load().expect("load the dataplane (run as root)");
    dp.apply(&tables).unwrap();
    let prog = dp.program(PROGRAM_LB).unwrap();

    let fixtures = fixtures();
    assert!(fixtures.len() >= 12);
    let mut before = dp.counters().unwrap();
    for f in &fixtures {
        let mut out = vec![0u8; f.input.len() + 256];
        let result = prog
            .test_run(TestRunOptions { data_in: Some(&f.input), data_out: Some(&mut out), ..TestRunOptions::new() })
            .unwrap_or_else(|e| panic!("{}: BPF_PROG_TEST_RUN failed: {e}", f.description));
        out.truncate(result.data_size_out as usize);

        // The host model over the same tables must agree on verdict and bytes.
        let mut model = f.input.clone();
        let model_stat = lb_common::dataplane::process(model.as_mut_slice(), &tables);
        assert_eq!(result.return_value, model_stat.xdp_action(), "{}: kernel and host model disagree on the verdict", f.description);
        assert_eq!(out, model, "{}: kernel and host model disagree on the output", f.description);

        let after = dp.counters().unwrap();
        let bumped: Vec<Stat> = Stat::ALL.iter().copied().filter(|s| after[s.index() as usize] != before[s.index() as usize]).collect();
        before = after;

        match f.expect {
            Expect::Unchanged(verdict, stat) => {
                assert_eq!(result.return_value, verdict, "{}: verdict", f.description);
                assert_eq!(out, f.input, "{}: frame must be untouched", f.description);
                assert_eq!(bumped, vec![stat], "{}: counter", f.description);
            }
            Expect::Forwarded(mac) => {
                assert_eq!(result.return_value, XDP_TX, "{}: verdict", f.description);
                assert_eq!(out, forwarded(&f.input, mac), "{}: output frame", f.description);
                assert_eq!(bumped, vec![Stat::TxForwarded], "{}: counter", f.description);
            }
            Expect::ForwardedToOneOf(macs) => {
                assert_eq!(result.return_value, XDP_TX, "{}: verdict", f.description);
                let to: Mac = out[..6].try_into().unwrap();
                assert!(macs.contains(&to), "{}: forwarded to {to:02x?}", f.description);
                assert_eq!(out, forwarded(&f.input, to), "{}: output frame", f.description);
                assert_eq!(bumped, vec![Stat::TxForwarded], "{}: counter", f.description);
            }
        }
        println!("ok: {}", f.description);
    }
}

/// Many flows to the two-server web VIP: both servers get a fair share, and every packet
/// of one flow goes to the same server.
#[test]
fn flows_spread_over_real_servers_and_stick() {
    let mut dp = Dataplane::load().expect("load the dataplane (run as root)");
    dp.apply(&tables()).unwrap();
    let prog = dp.program(PROGRAM_LB).unwrap();
    let run = |frame: &[u8]| -> Mac {
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() }).unwrap();
        assert_eq!(r.return_value, XDP_TX);
        out[..6].try_into().unwrap()
    };
    let mut rs1 = 0;
    for sport in 30000..31000u16 {
        let syn_to = run(&tcp_to(VIP_WEB, sport, 80, true));
        assert_eq!(run(&tcp_to(VIP_WEB, sport, 80, false)), syn_to, "flow {sport} changed server");
        if syn_to == RS1_MAC {
            rs1 += 1;
        }
    }
    assert!((400..600).contains(&rs1), "rs1 got {rs1} of 1000 flows");
}

/// Every frame of a real capture (TCP, UDP, ICMP, IGMP, EIGRP, MPLS, IPv6, ARP, 802.3) gets
/// the same verdict and bytes from the kernel as from the host model — as captured, and
/// with every IPv4 destination rewritten to the all-ports TCP VIP, where each unfragmented
/// TCP frame must be forwarded and nothing else may be.
#[test]
fn real_capture_frames_get_sensible_verdicts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps/mixed-179.pcap");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e} (shared/ must sit beside the checkout)", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        frames.push(pkt.unwrap().data.into_owned());
    }
    assert_eq!(frames.len(), 179);

    let tables = tables();
    let mut dp = Dataplane::load().expect("load the dataplane (run as root)");
    dp.apply(&tables).unwrap();
    let prog = dp.program(PROGRAM_LB).unwrap();
    let run = |frame: &[u8]| -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() }).unwrap();
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    };

    let (mut forwarded_count, mut tcp_to_vip) = (0, 0);
    for (i, original) in frames.iter().enumerate() {
        if original.len() < 14 {
            continue; // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        }
        let (verdict, out) = run(original);
        assert_eq!(verdict, XDP_PASS, "frame {i}: nothing in the capture is for a lab VIP");
        assert_eq!(&out, original, "frame {i} was modified");

        let l3 = match u16::from_be_bytes([original[12], original[13]]) {
            0x0800 => 14,
            0x8100 if original.len() > 18 && original[16..18] == [0x08, 0x00] => 18,
            _ => continue,
        };
        if original.len() < l3 + 20 {
            continue;
        }
        let mut aimed = original.clone();
        aimed[l3 + 16..l3 + 20].copy_from_slice(&VIP_ALLPORTS);
        let (verdict, out) = run(&aimed);
        let mut model = aimed.clone();
        let stat = lb_common::dataplane::process(model.as_mut_slice(), &tables);
        assert_eq!((verdict, &out), (stat.xdp_action(), &model), "frame {i}: kernel and host model disagree");
        let is_tcp = aimed[l3 + 9] == 6;
        let fragmented = u16::from_be_bytes([aimed[l3 + 6], aimed[l3 + 7]]) & 0x3fff != 0;
        if is_tcp && !fragmented {
            tcp_to_vip += 1;
            assert_eq!(verdict, XDP_TX, "frame {i}: TCP to the all-ports VIP must be forwarded ({stat:?})");
            assert_eq!(out, forwarded(&aimed, RS4_MAC), "frame {i}");
        } else {
            assert_ne!(verdict, XDP_TX, "frame {i}: only TCP may be forwarded to a TCP service ({stat:?})");
        }
        forwarded_count += (verdict == XDP_TX) as usize;
    }
    println!("capture: {} frames, {tcp_to_vip} TCP frames aimed at the VIP, {forwarded_count} forwarded", frames.len());
    assert!(tcp_to_vip > 10, "the capture should hold TCP frames");
}
