//! Scheduling checked with real TCP in the netns lab: drlb's choices, connection by
//! connection, against the sequence IPVS's sources give (`lb_common::host::ipvs`, a plain
//! transcription), and the splits and stickiness operators rely on. Needs root.

mod support;

use std::path::Path;
use std::sync::Mutex;

use lb_common::host::ipvs::{self, Dest};
use lb_userspace::control::config::XdpMode;
use drlb_lab::{Lab, ALL_REAL_SERVERS, CLIENT2_ADDR, CLIENT_ADDR, VIP, VIP6, v6_of};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

/// A one-service config over the first `weights.len()` lab servers.
fn config(scheduler: &str, weights: &[u32], extra: &str) -> String {
    config_of(false, scheduler, weights, extra)
}

/// [`config`], on the IPv6 VIP over the servers' IPv6 addresses with `ipv6`.
fn config_of(ipv6: bool, scheduler: &str, weights: &[u32], extra: &str) -> String {
    let mut servers = String::new();
    for (rs, w) in ALL_REAL_SERVERS.iter().zip(weights) {
        let addr = if ipv6 { v6_of(rs.addr).to_string() } else { rs.addr.to_string() };
        servers += &format!("      - {{ address: \"{addr}\", weight: {w} }}\n");
    }
    let vip = if ipv6 { VIP6.to_string() } else { VIP.to_string() };
    format!(
        "director:\n  interface: eth0\n  xdp_mode: generic\n  conn_table_size: 65536\nservices:\n  - name: web\n    vip: \"{vip}\"\n    \
         port: 80\n    protocol: tcp\n    scheduler: {scheduler}\n{extra}    real_servers:\n{servers}"
    )
}

/// The servers (config indices) IPVS picks for `n` connections opened one at a time, each
/// either held open (ESTABLISHED: active) or closed by the client (FIN: inactive) before
/// the next.
fn ipvs_sequence(scheduler: &str, weights: &[u32], n: usize, hold: bool) -> Vec<usize> {
    let mut list: Vec<Dest> = ipvs::list_for(weights);
    let mut rr_pos = None;
    let mut wrr = ipvs::Wrr::after_adds(weights);
    (0..n)
        .map(|_| {
            let i = match scheduler {
                "wlc" => ipvs::wlc(&list),
                "lc" => ipvs::lc(&list),
                "sed" => ipvs::sed(&list),
                "nq" => ipvs::nq(&list),
                "rr" => ipvs::rr(&list, &mut rr_pos),
                "wrr" => wrr.next(),
                other => panic!("no model for {other}"),
            }
            .expect("a server");
            if hold {
                list[i].active += 1;
            } else {
                list[i].inactive += 1;
            }
            ipvs::config_index(weights.len(), i)
        })
        .collect()
}

#[test]
fn choice_sequences_match_ipvs() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Generic, 3).expect("build the lab");
    let mut cases: Vec<(&str, Vec<u32>)> = Vec::new();
    for s in ["wlc", "lc", "sed", "nq"] {
        for w in [vec![1, 3], vec![1, 1, 2], vec![2, 1], vec![1, 0, 2]] {
            cases.push((s, w));
        }
    }
    cases.push(("rr", vec![1, 1, 1]));
    cases.push(("wrr", vec![1, 2, 3]));
    // The same sequences for an IPv6 VIP: one case of each scheduler.
    let ipv6_cases = [("wlc", vec![1, 3]), ("lc", vec![1, 1, 2]), ("sed", vec![2, 1]), ("nq", vec![1, 0, 2]), ("rr", vec![1, 1, 1]), ("wrr", vec![1, 2, 3])];
    let all: Vec<(bool, &str, Vec<u32>)> =
        cases.iter().map(|(s, w)| (false, *s, w.clone())).chain(ipv6_cases.iter().map(|(s, w)| (true, *s, w.clone()))).collect();
    const N: usize = 12;
    let mut checked = 0;
    for (ipv6, scheduler, weights) in &all {
        let (scheduler, weights) = (*scheduler, weights.as_slice());
        let source: std::net::IpAddr = if *ipv6 { v6_of(CLIENT_ADDR).into() } else { CLIENT_ADDR.into() };
        for hold in [true, false] {
            lab.start_drlb_with(drlb(), &config_of(*ipv6, scheduler, weights, "")).expect("start drlb");
            let (got, held) = lab.connections(N, source, hold).expect("connections");
            drop(held);
            lab.stop_drlb().unwrap();
            let want = ipvs_sequence(scheduler, weights, N, hold);
            let names = |v: &[usize]| v.iter().map(|i| ALL_REAL_SERVERS[*i].role).collect::<Vec<_>>().join(" ");
            let family = if *ipv6 { "IPv6" } else { "IPv4" };
            println!("{family} {scheduler} {weights:?} {}: {}", if hold { "held" } else { "closed" }, names(&got));
            assert_eq!(
                names(&got),
                names(&want),
                "{family} {scheduler} weights {weights:?}, connections {}",
                if hold { "held open" } else { "closed one by one" }
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36 + 12);
}

#[test]
fn wlc_1_to_3_splits_400_concurrent_connections_25_75() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Native, 2).expect("build the lab");
    lab.start_drlb_with(drlb(), &config("wlc", &[1, 3], "")).expect("start drlb");
    let (got, held) = lab.connections(400, CLIENT_ADDR, true).expect("400 connections");
    let rs1 = got.iter().filter(|&&i| i == 0).count();
    let share = rs1 as f64 / 400.0 * 100.0;
    println!("wlc 1:3 over 400 held connections: rs1 {rs1} ({share:.1} %), rs2 {}", 400 - rs1);
    assert!((20.0..=30.0).contains(&share), "rs1 got {share:.1} % (want 25 ± 5)");
    let log = lab.stop_drlb().unwrap();
    drop(held);
    assert!(log.contains("active=") , "drlb logs per-server counts at exit:\n{log}");
}

#[test]
fn persistence_pins_a_client_and_plain_rr_spreads() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Generic, 2).expect("build the lab");

    lab.start_drlb_with(drlb(), &config("rr", &[1, 1], "    persistence_timeout: 60s\n")).expect("start drlb");
    let (a, _) = lab.connections(50, CLIENT_ADDR, false).expect("client A");
    let (b, _) = lab.connections(50, CLIENT2_ADDR, false).expect("client B");
    lab.stop_drlb().unwrap();
    assert!(a.iter().all(|&i| i == a[0]), "client A spread over {a:?} despite persistence");
    assert!(b.iter().all(|&i| i == b[0]), "client B spread over {b:?} despite persistence");
    // rr: the first client took the first server, so the second client got the other.
    assert_ne!(a[0], b[0], "rr should have sent the second client to the other server");

    lab.start_drlb_with(drlb(), &config("rr", &[1, 1], "")).expect("start drlb");
    let (c, _) = lab.connections(50, CLIENT2_ADDR, false).expect("client B without persistence");
    lab.stop_drlb().unwrap();
    let rs1 = c.iter().filter(|&&i| i == 0).count();
    assert_eq!(rs1, 25, "without persistence rr alternates: {c:?}");
}

/// Weight 0 is quiescent: set live by `drlb reload`, the server keeps its open connections
/// and gets no new ones. A file that does not validate is refused and nothing changes.
#[test]
fn weight_zero_by_reload_keeps_open_connections_and_takes_no_new_ones() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Native, 2).expect("build the lab");
    lab.start_drlb_with(drlb(), &config("wlc", &[1, 1], "")).expect("start drlb");
    let (first, mut held) = lab.connections(10, CLIENT_ADDR, true).expect("10 held connections");
    assert_eq!(first.iter().filter(|&&i| i == 1).count(), 5, "wlc 1:1 alternates: {first:?}");

    let broken = config("wlc", &[1, 1], "").replace("protocol: tcp", "protocol: tcpp");
    let out = lab.reload_drlb(drlb(), &broken);
    assert!(out.is_err(), "drlb reload must refuse a file that does not validate");

    let out = lab.reload_drlb(drlb(), &config("wlc", &[1, 0], "")).expect("reload");
    assert!(out.contains("reloaded"), "{out}");
    // The open connections to rs2 still work.
    let again = lab.requests_on(&mut held).expect("requests on the held connections");
    assert_eq!(again, first, "open connections must stay on their servers");
    // New connections avoid rs2.
    let (new, _more) = lab.connections(10, CLIENT_ADDR, true).expect("new connections");
    assert!(new.iter().all(|&i| i == 0), "weight-0 rs2 got new connections: {new:?}");
    drop(held);
    lab.stop_drlb().unwrap();
}
