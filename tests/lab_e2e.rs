//! End to end in the netns lab: real TCP from a client through drlb's XDP program on the
//! director to nginx real servers, in native and in generic XDP mode. Needs root.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use lb_userspace::control::config::XdpMode;
use lb_userspace::kernel::mac::format_mac;
use drlb_lab::{counter, BIG_RESPONSE, DIRECTOR, FAR_CLIENT_ADDR, FAR_CLIENT_ADDR6, Lab, REAL_SERVERS, VIP, VIP6};

/// Labs run one at a time: they are cheap, and timing-sensitive assertions (like "no
/// reply crossed the director") are clearer without a second lab competing for the CPUs.
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const REQUESTS: usize = 100;

fn end_to_end(mode: XdpMode) {
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(mode).expect("build the lab (needs root, iproute2, nginx, ethtool)");

    // Without drlb the director owns the VIP and nothing listens on port 80: refused.
    let before = lab.http_requests(3, Duration::from_secs(2)).unwrap();
    assert_eq!(before.ok, 0, "{mode:?}: a request to the VIP succeeded without drlb: {before:?}");

    // Both families at once: an IPv4 and an IPv6 service on the same real servers.
    let config = lab.drlb_config_dual();
    lab.start_drlb_with(drlb, &config).expect("start drlb");
    let replies = format!("tcp and (src host {VIP} or src host {VIP6})");
    let on_director = lab.capture("director", &replies).unwrap();
    let on_client = lab.capture("client", &replies).unwrap();

    let tally = lab.http_requests(REQUESTS, Duration::from_secs(3)).unwrap();
    let tally6 = lab.http_requests_to(VIP6.into(), REQUESTS, Duration::from_secs(3)).unwrap();
    let replies_at_director = on_director.finish().unwrap();
    let replies_at_client = on_client.finish().unwrap();
    println!(
        "{mode:?}: IPv4 {tally:?}; IPv6 {tally6:?}; replies seen at client {}, at director {}",
        replies_at_client.len(),
        replies_at_director.len()
    );

    for (family, t) in [("IPv4", &tally), ("IPv6", &tally6)] {
        assert_eq!(t.ok, REQUESTS, "{mode:?} {family}: {} failed, first: {:?}", t.failed, t.first_error);
        for (rs, n) in REAL_SERVERS.iter().zip(t.per_server) {
            assert!(n > 0, "{mode:?} {family}: {} answered none of {REQUESTS}", rs.role);
        }
    }
    // Direct Routing: replies go from the real servers straight to the client. The client
    // sees every reply frame come from a real server's MAC, and the director sees none.
    assert!(replies_at_client.len() >= 2 * REQUESTS, "{mode:?}: client captured {} reply frames", replies_at_client.len());
    let rs_macs: Vec<String> = REAL_SERVERS.iter().map(|rs| format_mac(&rs.mac)).collect();
    for mac in &replies_at_client {
        assert!(rs_macs.contains(mac), "{mode:?}: a reply came from {mac}, not from a real server (director is {})", format_mac(&DIRECTOR.mac));
    }
    assert!(replies_at_director.is_empty(), "{mode:?}: {} reply frames reached the director", replies_at_director.len());

    // The director's own address still answers.
    if let Err(e) = lab.ping_director() {
        panic!("{mode:?}: the director's own address stopped answering ping: {e:#}");
    }

    let log = lab.stop_drlb().unwrap();
    let counters = log.lines().find(|l| l.contains("counters:")).unwrap_or_else(|| panic!("no counters in drlb's log:\n{log}"));
    let forwarded = counter(&log, "tx_forwarded");
    // Each request is at least SYN, ACK+request and FIN/ACK from the client.
    assert!(forwarded >= 2 * 3 * REQUESTS as u64, "{mode:?}: only {forwarded} packets forwarded: {counters}");
    let mode_name = if mode == XdpMode::Native { "native" } else { "generic" };
    assert!(log.contains(&format!("in {mode_name} mode")), "{mode:?}: drlb attached in another mode:\n{log}");
    assert!(log.contains("detached from eth0"), "{mode:?}: drlb did not detach cleanly:\n{log}");
}

#[test]
fn native_mode_forwards_real_tcp_in_dr() {
    if support::skip_unless_root() {
        return;
    }
    end_to_end(XdpMode::Native);
}

#[test]
fn generic_mode_forwards_real_tcp_in_dr() {
    if support::skip_unless_root() {
        return;
    }
    end_to_end(XdpMode::Generic);
}

/// A real server outside the director interface's subnets is refused with a message that
/// says so, and nothing is attached.
#[test]
fn real_server_not_on_link_is_refused() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let config = lab.drlb_config().replace(&REAL_SERVERS[1].addr.to_string(), "198.19.7.7");
    let err = lab.start_drlb_with(drlb, &config).expect_err("drlb must refuse an off-link real server");
    let text = format!("{err:#}");
    assert!(text.contains("198.19.7.7") && text.contains("not on-link on eth0"), "unexpected error: {text}");
}

/// drlb follows the kernel's neighbour table: when rs2's entry changes to a wrong MAC, rs2's
/// share of requests fails (the frames go to a MAC nobody has); when it changes back,
/// every request succeeds again — all without restarting drlb.
#[test]
fn neighbour_changes_are_followed() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    lab.start_drlb(drlb).expect("start drlb");
    let director = lab.ns("director");
    let rs2 = REAL_SERVERS[1];
    let set_rs2_mac = |mac: &str| {
        drlb_lab::sh("ip", &["-n", &director, "neigh", "replace", &rs2.addr.to_string(), "lladdr", mac, "dev", "eth0", "nud", "permanent"])
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    };

    set_rs2_mac("02:d1:00:00:00:99");
    let broken = lab.http_requests(30, Duration::from_millis(700)).unwrap();
    println!("rs2 at a wrong MAC: {broken:?}");
    assert!(broken.failed > 0, "requests to rs2 should fail while its MAC is wrong: {broken:?}");
    assert_eq!(broken.per_server[1], 0, "rs2 answered although its frames went elsewhere: {broken:?}");
    assert!(broken.per_server[0] > 0, "rs1 must keep serving: {broken:?}");

    set_rs2_mac(&format_mac(&rs2.mac));
    let healed = lab.http_requests(30, Duration::from_secs(2)).unwrap();
    println!("rs2 at its MAC again: {healed:?}");
    assert_eq!(healed.ok, 30, "{healed:?}");
    assert!(healed.per_server[1] > 0, "{healed:?}");

    let log = lab.stop_drlb().unwrap();
    assert!(log.contains(&format!("real server {} is at 02:d1:00:00:00:99", rs2.addr)), "drlb did not log the change:\n{log}");
}

/// `xdp_mode: auto` on an interface whose driver has no native XDP (a bridge device) falls back to
/// generic mode and logs why.
#[test]
fn auto_mode_falls_back_to_generic_with_a_reason() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let director = lab.ns("director");
    for args in [
        vec!["-n", &director, "link", "add", "nox0", "type", "bridge"],
        vec!["-n", &director, "addr", "add", "198.18.5.2/24", "dev", "nox0"],
        vec!["-n", &director, "link", "set", "nox0", "up"],
    ] {
        drlb_lab::sh("ip", &args).unwrap();
    }
    let config = "director:\n  interface: nox0\n  xdp_mode: auto\nservices:\n  - name: web\n    vip: 198.18.5.100\n    port: 80\n    protocol: tcp\n    real_servers:\n      - { address: 198.18.5.11 }\n";
    lab.start_drlb_with(drlb, config).expect("drlb starts in generic mode");
    let log = lab.stop_drlb().unwrap();
    assert!(log.contains("native XDP is not available on nox0"), "no fallback reason logged:\n{log}");
    assert!(log.contains("XDP attached to nox0 in generic mode"), "{log}");
    assert!(log.contains("no ARP reply yet"), "the unresolved real server should be reported:\n{log}");
}

/// Path MTU discovery through the director, both families: a client behind a link with a
/// smaller MTU downloads 256 KiB from a real server through the VIP. The router's
/// "fragmentation needed" / "packet too big" goes to the VIP, that is to the director, which
/// must pass it to the real server that sent the segment; without that the download stalls.
#[test]
fn path_mtu_discovery_works_through_the_director() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    lab.add_far_client(1400, 1280).expect("add the router and the far client");
    let config = lab.drlb_config_dual();
    lab.start_drlb_with(drlb, &config).expect("start drlb");
    for (vip, from) in [(std::net::IpAddr::from(VIP), std::net::IpAddr::from(FAR_CLIENT_ADDR)), (VIP6.into(), FAR_CLIENT_ADDR6.into())] {
        let body = lab.fetch("far", std::net::SocketAddr::new(vip, 80), "/big").unwrap_or_else(|e| panic!("download from {from} via {vip}: {e:#}"));
        assert_eq!(body.len(), BIG_RESPONSE, "download from {from} via {vip} ended early");
        println!("{from} downloaded {} bytes through {vip}", body.len());
    }
    let log = lab.stop_drlb().unwrap();
    let counters = log.lines().find(|l| l.contains("counters:")).unwrap_or_else(|| panic!("no counters in drlb's log:\n{log}"));
    let icmp = counter(&log, "tx_icmp_forwarded");
    println!("{counters}");
    assert!(icmp >= 2, "the director forwarded {icmp} ICMP errors (one per family at least): {counters}");
}
