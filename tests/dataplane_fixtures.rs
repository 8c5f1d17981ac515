//! Dataplane fixtures: the table (`lb_userspace::selftest::fixtures`) and the tests that build on its
//! harness, all through BPF_PROG_TEST_RUN on the real object. Needs root.

mod support;

use std::collections::HashMap;
use std::path::Path;

use aya::programs::{TestRun, TestRunOptions};
use lb_common::verdict::{XDP_PASS, XDP_TX};
use lb_userspace::control::config::Config;
use lb_userspace::kernel::bpf::{Dataplane, Tools, PROGRAM_FLOOR_INSERT, PROGRAM_FLOOR_RECORD, PROGRAM_FLOOR_SWAP, PROGRAM_LB};
use lb_userspace::selftest::fixtures::*;
use lb_userspace::kernel::mac::Mac;
use lb_common::maps::ConnCounts;

#[test]
fn fixture_table_through_bpf_prog_test_run() {
    if support::skip_unless_root() {
        return;
    }
    let rows = run_table();
    assert!(rows >= 40, "{rows} rows");
}

/// Many flows to the two-server web VIP, each held open: wlc alternates, so both get half,
/// and every packet of one flow stays on its server.
#[test]
fn flows_spread_over_real_servers_and_stick() {
    if support::skip_unless_root() {
        return;
    }
    let h = Harness::new();
    let mut rs1 = 0;
    for sport in 30000..31000u16 {
        let (_, syn_out, _) = h.run(&tcp_to(vip(WEB), sport, 80, SYN), "syn");
        let (_, ack_out, _) = h.run(&tcp_to(vip(WEB), sport, 80, ACK), "ack");
        assert_eq!(syn_out[..6], ack_out[..6], "flow {sport} changed server");
        if syn_out[..6] == RS1 {
            rs1 += 1;
        }
    }
    assert_eq!(rs1, 500, "wlc over two equal servers with held connections alternates");
    let c1 = h.kernel_counts(slot::WEB_RS1);
    let c2 = h.kernel_counts(slot::WEB_RS2);
    assert_eq!((c1.active, c2.active), (500, 500));
}

/// The connection table read in batches (what the sweep uses) holds exactly what reading
/// it entry by entry does, in far fewer system calls.
#[test]
fn connection_table_batch_read_equals_entry_by_entry() {
    if support::skip_unless_root() {
        return;
    }
    let mut dp = Dataplane::load_with(65_536).expect("load the dataplane");
    let n = 20_000u32;
    for i in 0..n {
        let key = lb_common::conn::ConnKey::v4(u32::from_le_bytes([198, 19, (i >> 8) as u8, i as u8]), u32::from_le_bytes([198, 18, 0, 100]), 40000 + (i % 1000) as u16, 80, 6);
        let conn = lb_common::conn::Conn { last_seen: i as u64, backend: i % 7, service: 0, timeout: 900, state: 1, flags: 0, order: 0 };
        dp.insert_connection(&key, &conn).unwrap();
    }
    let t0 = std::time::Instant::now();
    let mut batched = dp.connections().unwrap();
    let t1 = std::time::Instant::now();
    let mut single = dp.connections_one_by_one().unwrap();
    let t2 = std::time::Instant::now();
    batched.sort_by_key(|(k, _)| *k);
    single.sort_by_key(|(k, _)| *k);
    assert_eq!(batched.len(), n as usize);
    assert_eq!(batched, single);
    println!("{n} connections: batches {:?}, entry by entry {:?}", t1 - t0, t2 - t1);
}

/// The sweep removes expired entries and recomputes counts that drifted.
#[test]
fn sweep_removes_expired_and_corrects_drift() {
    if support::skip_unless_root() {
        return;
    }
    let mut h = Harness::new();
    for port in 0..10u16 {
        h.run(&tcp_to(vip(SHORT), 47000 + port, 80, SYN), "syn");
        h.run(&tcp_to(vip(SHORT), 47000 + port, 80, ACK), "ack");
    }
    assert_eq!(h.kernel_counts(slot::SHORT_RS1), ConnCounts { active: 10, inactive: 0 });
    // Age four of them past the 5 s timeout, and corrupt the counts as an LRU eviction would.
    for port in 0..4u16 {
        h.setup(&Setup::Age(30), conn_key(&tcp_to(vip(SHORT), 47000 + port, 80, ACK)));
    }
    h.dp.set_conn_counts(slot::SHORT_RS1, ConnCounts { active: 17, inactive: 3 }).unwrap();
    let report = h.dp.sweep(h.dp.now().unwrap()).unwrap();
    assert_eq!(report.expired_removed, 4);
    assert_eq!(report.live, 6);
    assert_eq!(h.kernel_counts(slot::SHORT_RS1), ConnCounts { active: 6, inactive: 0 });
    assert_eq!(h.dp.connections().unwrap().len(), 6);
}

/// Every frame of a real capture gets the same verdict and bytes from the kernel as from the
/// host model — as captured, and with every IPv4 destination rewritten to the all-ports TCP
/// VIP, where every TCP SYN must be forwarded and nothing but TCP may be. The project's own
/// capture (`tests/data/lab-client.pcap`, recorded from the lab's kernel traffic by
/// `drlb-lab record`: ARP, IPv6 neighbour discovery, TCP through the VIP, ICMP) always runs.
#[test]
fn lab_capture_frames_get_sensible_verdicts() {
    if support::skip_unless_root() {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/lab-client.pcap");
    let frames = read_pcap(&path);
    assert!(frames.len() >= 100, "{}: {} frames", path.display(), frames.len());
    replay_capture(&frames);
}

/// The same over a capture from elsewhere (TCP, UDP, ICMP, IGMP, EIGRP, MPLS, IPv6, ARP,
/// 802.3), when `../shared/pcaps/` sits beside the checkout.
#[test]
fn shared_capture_frames_get_sensible_verdicts() {
    if support::skip_unless_root() {
        return;
    }
    let Some(path) = support::shared_file("pcaps/mixed-179.pcap") else {
        support::skip("../shared/pcaps/mixed-179.pcap is not beside this checkout (lab-client.pcap still ran)");
        return;
    };
    let frames = read_pcap(&path);
    assert_eq!(frames.len(), 179);
    let h = Harness::new();
    for (i, original) in frames.iter().enumerate().filter(|(_, f)| f.len() >= 14) {
        let (verdict, out, _) = h.run(original, &format!("frame {i}"));
        assert_eq!(verdict, XDP_PASS, "frame {i}: nothing in this capture is for a lab VIP");
        assert_eq!(&out, original, "frame {i} was modified");
    }
    replay_capture(&frames);
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        frames.push(pkt.unwrap().data.into_owned());
    }
    frames
}

/// Each frame as captured, then aimed at the all-ports TCP VIP through this director (`Harness::run` compares the
/// kernel with the host model every time).
fn replay_capture(frames: &[Vec<u8>]) {
    let h = Harness::new();
    let (mut forwarded_count, mut syns) = (0, 0);
    for (i, original) in frames.iter().enumerate() {
        if original.len() < 14 {
            continue; // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        }
        let (verdict, out, _) = h.run(original, &format!("frame {i}"));
        if verdict != XDP_TX {
            assert_eq!(&out, original, "frame {i} was modified but not forwarded");
        }

        let Some((lb_common::packet::ETH_P_IP, l3)) = lb_common::packet::ethernet(original.as_slice()) else { continue };
        if original.len() < l3 + 20 {
            continue;
        }
        let mut aimed = original.clone();
        aimed[l3 + 16..l3 + 20].copy_from_slice(&vip(ALL_PORTS));
        // And to this director's MAC, as a router sends a frame for the VIP.
        aimed[..6].copy_from_slice(&lb_userspace::selftest::fixtures::DIRECTOR_MAC);
        let (verdict, out, stat) = h.run(&aimed, &format!("frame {i} aimed at the VIP"));
        let is_tcp = aimed[l3 + 9] == 6;
        let fragmented = u16::from_be_bytes([aimed[l3 + 6], aimed[l3 + 7]]) & 0x3fff != 0;
        let ihl = (aimed[l3] & 0x0f) as usize * 4;
        let flags = aimed.get(l3 + ihl + 13).copied().unwrap_or(0);
        if is_tcp && !fragmented && flags & SYN != 0 && flags & RST == 0 && aimed.len() >= l3 + ihl + 20 {
            syns += 1;
            assert_eq!(verdict, XDP_TX, "frame {i}: a SYN to the all-ports VIP must be forwarded ({stat:?})");
            assert_eq!(out, forwarded(&aimed, RS4), "frame {i}");
        }
        if !is_tcp {
            assert_ne!(verdict, XDP_TX, "frame {i}: only TCP may be forwarded to a TCP service ({stat:?})");
        }
        forwarded_count += (verdict == XDP_TX) as usize;
    }
    println!("capture: {} frames, {syns} TCP SYNs aimed at the VIP, {forwarded_count} frames forwarded", frames.len());
    assert!(syns > 0 && forwarded_count >= syns, "the capture should hold TCP connections");
}

/// mh after a director failover: two directors loaded with the same config (two separate
/// objects, separate maps) send every flow to the same server, and with sloppy_tcp the
/// second one picks up a connection it never saw the SYN of on the server it runs on.
#[test]
fn mh_two_directors_agree_and_take_over_mid_flow() {
    if support::skip_unless_root() {
        return;
    }
    let config = r#"
director: { interface: eth0, conn_table_size: 65536 }
services:
  - { name: mh, vip: 198.18.0.110, port: 80, protocol: tcp, scheduler: mh, sloppy_tcp: true,
      real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 }, { address: 198.18.0.13, weight: 2 } ] }
"#;
    let config = Config::parse(Path::new("mh.yaml"), config).unwrap();
    let tables = lb_userspace::control::tables::build(&config, &macs(), DIRECTOR_MAC).unwrap();
    let mut a = Dataplane::load_with(65536).expect("load director A");
    let mut b = Dataplane::load_with(65536).expect("load director B");
    a.apply(&tables).unwrap();
    b.apply(&tables).unwrap();
    let run = |dp: &Dataplane, frame: &[u8]| -> (u32, Mac) {
        let mut out = vec![0u8; frame.len() + 256];
        let r = dp
            .program(PROGRAM_LB)
            .unwrap()
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::new() })
            .unwrap();
        (r.return_value, out[..6].try_into().unwrap())
    };
    let mut per_server: HashMap<Mac, usize> = HashMap::new();
    for n in 0..600u32 {
        let client = [198, 18, (n / 250) as u8 + 1, (n % 250) as u8 + 1];
        let syn = tcp_from(client, vip(MH), 40000 + (n % 1000) as u16, 80, SYN);
        let (va, to_a) = run(&a, &syn);
        assert_eq!(va, XDP_TX);
        // Director B never saw the SYN: the next segment arrives there after a failover.
        let ack = tcp_from(client, vip(MH), 40000 + (n % 1000) as u16, 80, ACK);
        let (vb, to_b) = run(&b, &ack);
        assert_eq!(vb, XDP_TX, "sloppy_tcp schedules the mid-flow ACK on director B");
        assert_eq!(to_a, to_b, "client {client:?}: director A chose {to_a:02x?}, B {to_b:02x?}");
        *per_server.entry(to_a).or_default() += 1;
    }
    // Weights 1:1:2 → about 150/150/300.
    let share = |m: Mac| per_server.get(&m).copied().unwrap_or(0);
    println!("mh over 600 clients: rs1 {} rs2 {} rs3 {}", share(RS1), share(RS2), share(RS3));
    assert!((100..200).contains(&share(RS1)) && (100..200).contains(&share(RS2)) && (240..360).contains(&share(RS3)));
}

/// A persistence template outlives its timeout while a connection made through it is
/// alive: the sweep keeps it, so the client's next connection still lands on its server.
#[test]
fn persistence_template_lives_while_its_connection_does() {
    if support::skip_unless_root() {
        return;
    }
    let mut h = Harness::new();
    let sticky = vip(STICKY);
    let (_, first, _) = h.run(&tcp_to(sticky, 48000, 80, SYN), "syn");
    h.run(&tcp_to(sticky, 48000, 80, ACK), "ack");
    // Make the template look 2 minutes old (timeout 60 s); the connection is fresh.
    let (tkey, mut t) = h.dp.templates().unwrap().into_iter().next().expect("a template");
    let hz = h.dp.hz() as u64;
    t.last_used -= 120 * hz;
    h.dp.insert_template(&tkey, &t).unwrap();
    h.dp.sweep(h.dp.now().unwrap()).unwrap();
    let refreshed = h.dp.templates().unwrap().into_iter().find(|(k, _)| *k == tkey).unwrap().1;
    assert!(h.dp.now().unwrap() - refreshed.last_used < 10 * hz, "the sweep did not refresh the template");
    // rr alone would now pick the other server; the template keeps the client where it was.
    let mut out = vec![0u8; 200];
    let frame = tcp_to(sticky, 48001, 80, SYN);
    let r = h.dp.program(PROGRAM_LB).unwrap()
        .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() })
        .unwrap();
    assert_eq!(r.return_value, XDP_TX);
    assert_eq!(out[..6], first[..6], "the client's next connection moved although its first is alive");
}

/// Pins the calling thread to `cpu`: BPF_PROG_TEST_RUN runs the program on the caller's CPU,
/// so this chooses whose per-CPU flow cache a packet meets.
fn run_on_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

/// The flow cache across CPUs: CPU A forwards an established connection from its cache; on
/// CPU B the client resets it and opens the same 5-tuple again, which the scheduler now puts
/// on the other server. A's next data segment must follow the new connection (the program
/// moved the connection generation when it replaced the entry), not A's cached server.
#[test]
fn flow_cache_follows_a_connection_replaced_on_another_cpu() {
    if support::skip_unless_root() {
        return;
    }
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count()).filter(|c| allowed.is_set(*c).unwrap_or(false)).collect();
    if cpus.len() < 2 {
        support::skip(&format!("needs two CPUs to put two flow caches against each other; this machine allows {}", cpus.len()));
        return;
    }
    let (a, b) = (cpus[0], cpus[1]);
    let config = |rs2_weight: u32| {
        let text = format!(
            "director: {{ interface: eth0 }}\nservices:\n  - {{ name: web, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: wlc,\n      \
             real_servers: [ {{ address: 198.18.0.11 }}, {{ address: 198.18.0.12, weight: {rs2_weight} }} ] }}\n"
        );
        lb_userspace::control::tables::build(&Config::parse(Path::new("cpus.yaml"), &text).unwrap(), &macs(), DIRECTOR_MAC).unwrap()
    };
    let mut dp = Dataplane::load_with(65536).expect("load the dataplane");
    dp.apply(&config(1)).unwrap();
    let run = |dp: &Dataplane, flags: u8| -> (u32, Vec<u8>) {
        let frame = tcp_to(vip(WEB), 45000, 80, flags);
        let mut out = vec![0u8; frame.len() + 256];
        let r = dp
            .program(PROGRAM_LB)
            .unwrap()
            .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() })
            .unwrap();
        out.truncate(r.data_size_out as usize);
        assert_eq!(out[6..], forwarded(&frame, RS1)[6..], "only the destination MAC may change");
        (r.return_value, out[..6].to_vec())
    };

    run_on_cpu(a);
    assert_eq!(run(&dp, SYN), (XDP_TX, RS2.to_vec()), "wlc tie: the last configured server");
    assert_eq!(run(&dp, ACK), (XDP_TX, RS2.to_vec()));
    assert_eq!(run(&dp, PSH_ACK), (XDP_TX, RS2.to_vec()), "established: now in CPU A's cache");
    assert_eq!(run(&dp, PSH_ACK), (XDP_TX, RS2.to_vec()), "served by CPU A's cache");

    // rs2 takes no new connections; the established one keeps it.
    dp.apply(&config(0)).unwrap();
    run_on_cpu(b);
    assert_eq!(run(&dp, RST | ACK), (XDP_TX, RS2.to_vec()), "RST: CLOSE, still to rs2");
    assert_eq!(run(&dp, SYN), (XDP_TX, RS1.to_vec()), "SYN on a CLOSE entry: a new connection, on rs1");
    assert_eq!(run(&dp, ACK), (XDP_TX, RS1.to_vec()));

    run_on_cpu(a);
    assert_eq!(run(&dp, PSH_ACK), (XDP_TX, RS1.to_vec()), "CPU A must not forward the new connection to the old server");
    let key = conn_key(&tcp_to(vip(WEB), 45000, 80, ACK)).unwrap();
    let c = dp.connection(&key).unwrap().expect("the connection");
    assert_eq!(c.state, lb_common::conn::tcp::ESTABLISHED);
}

/// lblc's entry for a VIP is the service's scheduler state: made by a SYN, and gone when a
/// reload gives the service another scheduler (IPVS frees a scheduler's data with it).
#[test]
fn locality_entries_go_with_their_scheduler() {
    if support::skip_unless_root() {
        return;
    }
    let config = |scheduler: &str| {
        let text = format!(
            "director: {{ interface: eth0 }}\nservices:\n  - {{ name: web, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: {scheduler},\n      \
             real_servers: [ {{ address: 198.18.0.11 }}, {{ address: 198.18.0.12 }} ] }}\n"
        );
        lb_userspace::control::tables::build(&Config::parse(Path::new("lblc.yaml"), &text).unwrap(), &macs(), DIRECTOR_MAC).unwrap()
    };
    let mut dp = Dataplane::load_with(65536).expect("load the dataplane");
    dp.apply(&config("lblc")).unwrap();
    let frame = tcp_to(vip(WEB), 45900, 80, SYN);
    let mut out = vec![0u8; frame.len() + 256];
    let r = dp.program(PROGRAM_LB).unwrap().test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() }).unwrap();
    assert_eq!(r.return_value, XDP_TX);
    let entries = dp.localities().unwrap();
    assert_eq!(entries.len(), 1, "the VIP's entry");
    assert_eq!(entries[0].0.daddr, lb_common::addr::v4_mapped(vip(WEB)));
    dp.apply(&config("lblc")).unwrap();
    assert_eq!(dp.localities().unwrap().len(), 1, "an unchanged service keeps it");
    dp.apply(&config("wlc")).unwrap();
    assert!(dp.localities().unwrap().is_empty(), "another scheduler: gone");
}

/// The benchmark's floors do what the report says they do: (b) swaps the MACs and sends the
/// frame back, unchanged otherwise; (c) does the same after recording the flow.
#[test]
fn benchmark_floors_swap_macs() {
    if support::skip_unless_root() {
        return;
    }
    let tools = Tools::load(1024).expect("load the tools object");
    let frame = tcp_to(vip(WEB), 45001, 80, SYN);
    let mut expected = frame.clone();
    expected[..6].copy_from_slice(&frame[6..12]);
    expected[6..12].copy_from_slice(&frame[..6]);
    assert_ne!(expected, frame);
    for program in [PROGRAM_FLOOR_SWAP, PROGRAM_FLOOR_INSERT, PROGRAM_FLOOR_RECORD] {
        let mut out = vec![0u8; frame.len() + 256];
        let r = tools
            .program(program)
            .unwrap()
            .test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() })
            .unwrap();
        out.truncate(r.data_size_out as usize);
        assert_eq!((r.return_value, &out), (XDP_TX, &expected), "{program}");
    }
}

/// Reloads hammered while traffic flows. One CPU sends SYNs to service `x` through the
/// balancer; another keeps switching the configuration — `x` between 2 and 4 real servers
/// (so its member list moves and its count changes, next to service `y`'s list) and every
/// server between two MACs. A packet that paired a new member offset with an old count, or
/// read half of an old MAC and half of a new one, would leave with a MAC that is not one of
/// `x`'s servers': there must be none.
#[test]
fn reloads_under_traffic_never_tear_a_service_or_a_mac() {
    hammer("wlc", Updates::Reloads);
}

/// The same with Maglev: every reload changes `x`'s 4,093-entry table, so all tables move
/// to the other half of the scheduler array while packets read the old one (from clients
/// all over it: Maglev hashes the client's address).
#[test]
fn reloads_under_traffic_never_tear_a_maglev_table() {
    hammer("mh", Updates::Reloads);
}

/// The same with the path health verdicts and neighbour changes take: `x` keeps its four
/// servers, two of them go down and up and every MAC changes, written by
/// `tables::update_services` and `Dataplane::apply_only` alone.
#[test]
fn verdicts_under_traffic_never_tear_a_service_or_a_mac() {
    hammer("wlc", Updates::Verdicts);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Updates {
    /// Full builds, `x` between 2 and 4 servers.
    Reloads,
    /// Targeted updates of `x` only.
    Verdicts,
}

fn hammer(scheduler: &str, updates: Updates) {
    if support::skip_unless_root() {
        return;
    }
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
    let cpus: Vec<usize> = (0..nix::sched::CpuSet::count()).filter(|c| allowed.is_set(*c).unwrap_or(false)).collect();
    if cpus.len() < 2 {
        support::skip(&format!("needs two CPUs so reloads and packets meet; this machine allows {}", cpus.len()));
        return;
    }
    use lb_userspace::control::slots::Slots;
    use lb_userspace::control::tables::Down;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    // Both handles share maps through pins in a private bpffs (gone with the unmount).
    let bpffs = std::env::temp_dir().join(format!("drlb-hammer-{scheduler}-{}-{}", updates as u8, std::process::id()));
    std::fs::create_dir_all(&bpffs).unwrap();
    nix::mount::mount(Some("bpf"), &bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount(&self.0);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _unmount = Unmount(bpffs.clone());
    let pins = bpffs.join("eth0");

    let config = |x_servers: &[u8]| {
        let x: Vec<String> = x_servers.iter().map(|i| format!("{{ address: 198.18.0.{i} }}")).collect();
        let text = format!(
            "director: {{ interface: eth0, conn_table_size: 65536 }}\nservices:\n  \
             - {{ name: x, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: {scheduler}, real_servers: [ {} ] }}\n  \
             - {{ name: y, vip: 198.18.0.101, port: 80, protocol: tcp, real_servers: [ {{ address: 198.18.0.31 }}, {{ address: 198.18.0.32 }} ] }}\n",
            x.join(", ")
        );
        Config::parse(Path::new("hammer.yaml"), &text).unwrap()
    };
    let mac_of = |last: u8, alt: bool| -> Mac { [0x02, if alt { 0xbb } else { 0xaa }, 0xcc, 0xdd, if alt { 0x55 } else { 0x44 }, last] };
    let macs = |alt: bool| -> HashMap<std::net::IpAddr, Mac> {
        [11u8, 12, 13, 14, 31, 32].iter().map(|&i| (format!("198.18.0.{i}").parse().unwrap(), mac_of(i, alt))).collect()
    };
    let x_macs: Vec<Mac> = [11u8, 12, 13, 14].iter().flat_map(|&i| [mac_of(i, false), mac_of(i, true)]).collect();
    let configs = [config(&[11, 12]), config(&[11, 12, 13, 14])];

    let (mut reloader, _) = Dataplane::open(65536, None, Some(&pins), false).expect("load the dataplane");
    let mut slots = Slots::default();
    let first = lb_userspace::control::tables::build_with(&configs[0], &macs(false), DIRECTOR_MAC, &mut slots, &Down::default(), &Default::default()).unwrap();
    reloader.apply(&first).unwrap();
    let (sender, _) = Dataplane::open(65536, None, Some(&pins), false).expect("adopt the pinned dataplane");

    let stop = AtomicBool::new(false);
    let (sent, outside, reloads) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut examples = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            run_on_cpu(cpus[1]);
            let mut n = 0usize;
            let mut tables = first.clone();
            let all = &configs[1];
            if updates == Updates::Verdicts {
                tables = lb_userspace::control::tables::build_with(all, &macs(false), DIRECTOR_MAC, &mut slots, &Down::default(), reloader.applied()).unwrap();
                reloader.apply(&tables).unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match updates {
                    Updates::Reloads => {
                        let t = lb_userspace::control::tables::build_with(&configs[n % 2], &macs(n % 4 >= 2), DIRECTOR_MAC, &mut slots, &Down::default(), reloader.applied()).unwrap();
                        reloader.apply(&t).unwrap();
                    }
                    Updates::Verdicts => {
                        // 12 and 13 down in turn, and every MAC switching, on `x` alone.
                        let mut down = Down::default();
                        for (bit, last) in [(1, 12u8), (2, 13)] {
                            if n & bit != 0 {
                                down.insert(("x".into(), format!("198.18.0.{last}").parse().unwrap()));
                            }
                        }
                        let changes = lb_userspace::control::tables::update_services(&mut tables, all, &macs(n & 4 != 0), DIRECTOR_MAC, &mut slots, &down, &[0])
                            .expect("a wlc service without a sorry server is updated alone");
                        reloader.apply_only(&tables, &changes.services, &changes.slots).unwrap();
                    }
                }
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        });
        run_on_cpu(cpus[0]);
        let started = std::time::Instant::now();
        let prog = sender.program(PROGRAM_LB).unwrap();
        let mut sport = 1024u16;
        while started.elapsed() < std::time::Duration::from_secs(3) {
            sport = if sport == u16::MAX { 1024 } else { sport + 1 };
            // A client per port: Maglev reads a table entry per client address.
            let frame = tcp_from([198, 19, (sport >> 8) as u8, sport as u8], vip(WEB), sport, 80, SYN);
            let mut out = vec![0u8; frame.len() + 256];
            let r = prog.test_run(TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() }).unwrap();
            sent.fetch_add(1, Ordering::Relaxed);
            let dst: Mac = out[..6].try_into().unwrap();
            if r.return_value != XDP_TX || !x_macs.contains(&dst) || out[6..12] != DIRECTOR_MAC {
                outside.fetch_add(1, Ordering::Relaxed);
                if examples.len() < 5 {
                    examples.push(format!("verdict {} dst {dst:02x?} src {:02x?}", r.return_value, &out[6..12]));
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (sent, outside, reloads) = (sent.into_inner(), outside.into_inner(), reloads.into_inner());
    let reasons = lb_userspace::kernel::bpf::format_counters(&sender.counters().unwrap());
    let what = if updates == Updates::Verdicts { "targeted updates" } else { "reloads" };
    println!("hammer ({scheduler}, {what}): {sent} SYNs, {reloads} reloads, {outside} sent outside service x ({reasons})");
    assert!(reloads >= 50 && sent >= 10_000, "too little happened to mean anything: {reloads} reloads, {sent} packets");
    assert_eq!(outside, 0, "packets not forwarded to service x's servers: {examples:?}; reasons: {reasons}");
}

/// A short differential fuzz (`drlb selftest --fuzz N` runs long ones): random and mutated
/// frames through the program and the host model, identical on every one.
#[test]
fn differential_fuzz_short_run() {
    if support::skip_unless_root() {
        return;
    }
    let report = lb_userspace::selftest::fuzz::run(100_000, 2026).unwrap_or_else(|e| panic!("{e:#}"));
    println!("{report}");
    assert!(report.reasons.get("tx_scheduled").copied().unwrap_or(0) > 1000, "the fuzz should schedule connections: {report}");
}
