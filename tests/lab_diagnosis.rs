//! Diagnosis in the netns lab: each scenario has one deliberate fault, and `drlb doctor`,
//! `drlb realserver check` or `drlb trace` names it (and the fix); a healthy lab reports
//! every check OK. Needs root.

mod support;

use std::io::Read as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use lb_userspace::control::config::XdpMode;
use drlb_lab::{Lab, CLIENT, DIRECTOR, VIP};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

fn doctor(lab: &Lab) -> (bool, String) {
    let cfg = lab.dir.join("drlb.yaml");
    lab.run_in("director", drlb(), &["doctor", "--sample", "1s", "--config", &cfg.to_string_lossy()]).unwrap()
}

#[test]
fn healthy_lab_is_all_ok_and_realserver_faults_are_named() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");
    assert_eq!(lab.http_requests(5, Duration::from_secs(2)).unwrap().ok, 5);
    let (all_ok, report) = doctor(&lab);
    println!("{report}");
    assert!(all_ok && !report.contains("FAIL"), "a healthy lab must pass every check:\n{report}");
    for line in ["xdp", "vip", "real-server", "ipvs", "pins"] {
        assert!(report.lines().any(|l| l.starts_with("OK") && l.contains(line)), "no OK line for {line}:\n{report}");
    }

    let vip = VIP.to_string();
    let (ok, text) = lab.run_in("rs1", drlb(), &["realserver", "check", "--vip", &vip, "--uplink", "eth0"]).unwrap();
    assert!(ok, "a correctly set up real server passes:\n{text}");

    // Fault 1: the VIP is not on lo.
    drlb_lab::sh("ip", &["-n", &lab.ns("rs1"), "addr", "del", &format!("{VIP}/32"), "dev", "lo"]).unwrap();
    let (ok, text) = lab.run_in("rs1", drlb(), &["realserver", "check", "--vip", &vip, "--uplink", "eth0"]).unwrap();
    assert!(!ok && text.contains(&format!("VIP {vip} missing on lo: this server drops packets forwarded for the VIP")), "{text}");
    // `setup` repairs it.
    let (ok, text) = lab.run_in("rs1", drlb(), &["realserver", "setup", "--vip", &vip, "--uplink", "eth0"]).unwrap();
    assert!(ok && text.contains("added"), "{text}");

    // Fault 2: arp_ignore=0 on the uplink (and on all).
    for key in ["net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.eth0.arp_ignore=0"] {
        drlb_lab::sh("ip", &["netns", "exec", &lab.ns("rs2"), "sysctl", "-qw", key]).unwrap();
    }
    let (ok, text) = lab.run_in("rs2", drlb(), &["realserver", "check", "--vip", &vip, "--uplink", "eth0"]).unwrap();
    assert!(!ok && text.contains("arp_ignore=0 on eth0: this server answers ARP for the VIP and steals traffic from the director"), "{text}");
    lab.stop_drlb().unwrap();
}

#[test]
fn off_link_server_all_down_and_detached_xdp_are_named() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let config = lab.drlb_config_with_check("type: tcp, port: 80, interval: 300ms, timeout: 1s, retries: 0");
    lab.start_drlb_with(drlb(), &config).expect("start drlb");

    // A config naming a real server in another subnet.
    let off = lab.with_pin_root(&config.replace("198.18.0.12", "198.19.7.7"));
    let off_path = lab.dir.join("offlink.yaml");
    std::fs::write(&off_path, off).unwrap();
    let (ok, report) = lab.run_in("director", drlb(), &["doctor", "--sample", "1s", "--config", &off_path.to_string_lossy()]).unwrap();
    assert!(!ok && report.contains("198.19.7.7: not on-link on eth0"), "{report}");

    // All real servers down: doctor says so, trace shows the SYN dropped.
    let from = lab.log_len();
    lab.stop_nginx("rs1").unwrap();
    lab.stop_nginx("rs2").unwrap();
    lab.wait_for_log("198.18.0.11:80 DOWN", from, Duration::from_secs(5)).unwrap();
    lab.wait_for_log("198.18.0.12:80 DOWN", from, Duration::from_secs(5)).unwrap();
    let (ok, report) = doctor(&lab);
    assert!(!ok && report.contains("no real server takes new connections"), "{report}");
    let cfg = lab.dir.join("drlb.yaml").to_string_lossy().into_owned();
    let mut trace = lab.spawn_in("director", drlb(), &["trace", "--count", "2", "--duration", "10s", "--config", &cfg]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = lab.http_requests(1, Duration::from_millis(500));
    // A non-SYN segment with no connection, sent raw from the client.
    let mut ack = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT.mac, DIRECTOR.mac)
        .ipv4(CLIENT.addr.octets(), VIP.octets(), 64)
        .tcp(40999, 80, 1, 1024)
        .ack(1)
        .write(&mut ack, b"")
        .unwrap();
    lab.send_raw("client", &ack).unwrap();
    let status = trace.wait().unwrap();
    let mut out = String::new();
    trace.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    println!("{out}");
    assert!(status.success(), "drlb trace failed");
    assert!(out.lines().any(|l| l.starts_with("SYN ") && l.contains("-> 198.18.0.100:80 tcp => DROP no usable real server")), "{out}");
    assert!(out.contains("ACK 198.18.0.10:40999 -> 198.18.0.100:80 tcp => DROP no connection (non-SYN)"), "{out}");

    // XDP removed behind drlb's back: the controller dies and its link pin is removed.
    lab.kill_drlb().unwrap();
    std::fs::remove_file(lab.pin_root().join("eth0").join("link")).unwrap();
    let (ok, report) = doctor(&lab);
    assert!(!ok && report.contains("no XDP program on eth0"), "{report}");
    lab.drlb_cli(drlb(), &["stop"]).unwrap();
}

#[test]
fn trace_shows_forwarding_decisions() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    let config = lab.drlb_config().replace("      - { address: 198.18.0.11, weight: 1 }", "      - { name: rs1, address: 198.18.0.11, weight: 1 }");
    lab.start_drlb_with(drlb(), &config).expect("start drlb");
    let cfg = lab.dir.join("drlb.yaml").to_string_lossy().into_owned();
    let mut trace = lab.spawn_in("director", drlb(), &["trace", "--count", "6", "--duration", "10s", "--config", &cfg]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.http_requests(2, Duration::from_secs(2)).unwrap().ok, 2);
    trace.wait().unwrap();
    let mut out = String::new();
    trace.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    println!("{out}");
    assert!(
        out.lines().any(|l| l.starts_with("SYN 198.18.0.10:") && l.contains("-> 198.18.0.100:80 tcp => rs") && l.contains("XDP_TX (new, wlc)")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("XDP_TX (established)")), "{out}");
    assert!(out.contains("02:d1:00:00:00:1"), "{out}");
    lab.stop_drlb().unwrap();
}
