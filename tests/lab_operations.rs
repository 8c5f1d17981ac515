//! Operating drlb under load in the netns lab: hitless restart, reload, `drlb stop`.
//! A bounded load generator in the client namespace makes short HTTP requests for a fixed
//! time and counts failures. Needs root.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use lb_userspace::control::config::XdpMode;
use drlb_lab::{Lab, Launch};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

use drlb_lab::counter;

/// SIGKILL the controller mid-load: forwarding goes on from the pinned dataplane with no
/// failed request, the restarted controller adopts it and the counters continue; `drlb
/// stop` then removes it on purpose.
#[test]
fn sigkill_mid_load_is_hitless_and_restart_adopts() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");

    let load = lab.start_load(Duration::from_secs(6), 2);
    std::thread::sleep(Duration::from_secs(1));
    lab.kill_drlb().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let config = lab.drlb_config();
    lab.start_drlb_with(drlb(), &config).expect("restart drlb");
    let report = load.finish().unwrap();
    println!("load: {} ok, {} failed, per server {:?}", report.ok, report.failures.len(), report.per_server);
    assert!(report.ok > 100, "too little load to mean anything: {}", report.ok);
    assert!(report.failures.is_empty(), "failed requests: {:?}", &report.failures[..report.failures.len().min(5)]);
    // Requests kept being answered while no controller ran.
    assert!(report.answers.iter().any(|(t, _)| *t > Duration::from_millis(1500) && *t < Duration::from_millis(2800)));

    let log = lab.stop_drlb().unwrap();
    assert!(log.contains("adopting the dataplane pinned at"), "the restarted controller did not adopt:\n{log}");
    // The counters the second controller reports include the first one's traffic.
    let forwarded = counter(&log, "tx_forwarded") + counter(&log, "tx_scheduled");
    assert!(forwarded as usize >= 3 * report.ok, "counters restarted: {forwarded} packets for {} requests", report.ok);

    // SIGTERM removed the dataplane: the VIP no longer answers.
    let after = lab.http_requests(2, Duration::from_secs(1)).unwrap();
    assert_eq!(after.ok, 0, "forwarding continued after a clean stop");
}

/// `drlb stop` removes a dataplane whose controller is gone.
#[test]
fn drlb_stop_removes_an_orphaned_dataplane() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");
    lab.kill_drlb().unwrap();
    assert_eq!(lab.http_requests(5, Duration::from_secs(2)).unwrap().ok, 5, "forwarding stops when the controller dies");
    let out = lab.drlb_cli(drlb(), &["stop"]).expect("drlb stop");
    assert!(out.contains("removed the pinned dataplane"), "{out}");
    assert_eq!(lab.http_requests(2, Duration::from_secs(1)).unwrap().ok, 0, "still forwarding after drlb stop");
    assert!(!lab.pin_root().join("eth0").exists());
}

/// `drlb status` shows ActiveConn/InActConn for a known set of open and closed
/// connections, with MACs and health; `--stats`, `--json`; and it still works from the
/// pins after the controller was killed.
#[test]
fn status_shows_active_and_inactive_connections() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");
    // wlc over two servers: 4 held open (2 each), then 3 closed by the client.
    let (_, held) = lab.connections(4, drlb_lab::CLIENT_ADDR, true).unwrap();
    let (_, _) = lab.connections(3, drlb_lab::CLIENT_ADDR, false).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let text = lab.drlb_cli(drlb(), &["status"]).expect("drlb status");
    println!("{text}");
    assert!(text.contains("TCP  198.18.0.100:80 wlc"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&lab.drlb_cli(drlb(), &["status", "--json"]).unwrap()).unwrap();
    let rs = json["services"][0]["real_servers"].as_array().unwrap().clone();
    let active: u64 = rs.iter().map(|r| r["active_conns"].as_u64().unwrap()).sum();
    let inactive: u64 = rs.iter().map(|r| r["inactive_conns"].as_u64().unwrap()).sum();
    assert_eq!((active, inactive), (4, 3), "{json:#}");
    assert!(rs.iter().all(|r| r["health"] == "up" && r["mac"].as_str().unwrap().starts_with("02:d1")), "{json:#}");
    assert_eq!(json["services"][0]["conns"].as_u64(), Some(7));

    let stats = lab.drlb_cli(drlb(), &["status", "--stats"]).unwrap();
    assert!(stats.contains("Conns") && stats.contains("InPkts"), "{stats}");

    lab.kill_drlb().unwrap();
    let after = lab.drlb_cli(drlb(), &["status"]).expect("status from the pins after the controller died");
    assert!(after.contains("198.18.0.11:80") && after.contains("198.18.0.12:80"), "{after}");
    drop(held);
    lab.drlb_cli(drlb(), &["stop"]).unwrap();
}

/// Prometheus metrics on the director's loopback: reasons, per-server gauges and counters,
/// health-check latency, XDP mode.
#[test]
fn metrics_are_served_on_loopback() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    let config = lab.drlb_config_with_check("type: tcp, port: 80, interval: 300ms, timeout: 1s");
    lab.start_drlb_with(drlb(), &config).expect("start drlb");
    let (_, held) = lab.connections(3, drlb_lab::CLIENT_ADDR, true).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let text = lab.fetch("director", "127.0.0.1:9469".parse().unwrap(), "/metrics").expect("GET /metrics");
    for needle in [
        "drlb_xdp_attached{mode=\"native\"} 1",
        "drlb_packets_total{reason=\"tx_scheduled\"} 3",
        "drlb_real_server_active_connections{service=\"web\"",
        "drlb_service_connections_total{service=\"web\",vip=\"198.18.0.100\",port=\"80\",protocol=\"TCP\"} 3",
        "drlb_health_check_duration_seconds_bucket{",
        "drlb_real_server_up{",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    let active: u64 = text
        .lines()
        .filter(|l| l.starts_with("drlb_real_server_active_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(active, 3, "{text}");
    drop(held);
    lab.stop_drlb().unwrap();
}

/// A pinned dataplane of another layout is not adopted silently: `drlb run` explains and
/// refuses; `--replace-dataplane` replaces it on purpose.
#[test]
fn layout_mismatch_is_explained_and_replaced_only_on_request() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");
    // What a package upgrade asks before handing over (exit 0: SIGUSR2; 3: restart): yes
    // while a controller runs a dataplane of this layout...
    let handover = |lab: &Lab| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("director")])
            .arg(drlb())
            .args(["check", "--handover", "--config"])
            .arg(lab.dir().join("drlb.yaml"))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(handover(&lab).0, Some(0), "{}", handover(&lab).1);
    lab.kill_drlb().unwrap();
    // Pretend an older drlb pinned this dataplane.
    let meta = lab.pin_root().join("eth0").join(lb_common::maps::MAP_META);
    let out = std::process::Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&meta)
        .args(["key", "0", "0", "0", "0", "value", "0", "0", "0", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let config = lab.drlb_config();
    let err = lab.start_drlb_with(drlb(), &config).expect_err("a dataplane of another layout must not be adopted");
    let text = format!("{err:#}");
    assert!(text.contains("cannot take it over") && text.contains("drlb stop"), "{text}");
    // ... and no for another layout: the package restarts drlb instead.
    let (code, said) = handover(&lab);
    assert_eq!(code, Some(3), "{said}");
    assert!(said.contains("cannot take it over"), "{said}");
    // Forwarding by the old dataplane went on meanwhile.
    assert_eq!(lab.http_requests(3, Duration::from_secs(2)).unwrap().ok, 3);
    let replaced = lab.drlb_cli(drlb(), &["stop"]).unwrap();
    assert!(replaced.contains("removed the pinned dataplane"), "{replaced}");
    lab.start_drlb(drlb()).expect("a fresh start after drlb stop");
    assert_eq!(lab.http_requests(3, Duration::from_secs(2)).unwrap().ok, 3);
    let rate = lab.drlb_cli(drlb(), &["status", "--rate"]).unwrap();
    assert!(rate.contains("CPS") && rate.contains("InPPS"), "{rate}");
    lab.stop_drlb().unwrap();
    // No controller of this config's dataplane: nothing to hand over either.
    let (code, said) = handover(&lab);
    assert_eq!(code, Some(3), "{said}");
    assert!(said.contains("no `drlb run` runs"), "{said}");
}

/// systemd's readiness protocol: READY=1 once the dataplane is attached and the maps are
/// filled, RELOADING=1 / READY=1 around a reload, STOPPING=1 on the way out.
#[test]
fn systemd_notifications_follow_the_lifecycle() {
    if support::skip_unless_root() {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let path = lab.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let config = lab.drlb_config();
    lab.start_drlb_env(drlb(), &config, &[("NOTIFY_SOCKET", &path.to_string_lossy())]).expect("start drlb");
    let mut buf = [0u8; 256];
    // A datagram is newline-separated assignments (as systemd reads it); the state comes first.
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(next(), "READY=1");
    // Forwarding works by the time READY=1 arrives.
    assert_eq!(lab.http_requests(3, Duration::from_secs(2)).unwrap().ok, 3);
    lab.reload_drlb(drlb(), &config).expect("reload");
    assert_eq!((next(), next()), ("RELOADING=1".to_string(), "READY=1".to_string()));
    lab.stop_drlb().unwrap();
    assert_eq!(next(), "STOPPING=1");
}

/// A fresh director: the default pin_root under an empty, freshly mounted bpffs (nothing
/// pinned, no /sys/fs/bpf/drlb yet), and under a /sys/fs/bpf where nothing is mounted
/// (drlb mounts bpffs there and says so). Both forward.
#[test]
fn fresh_director_pins_under_the_default_root() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    let config: String = lab.drlb_config().lines().filter(|l| !l.contains("pin_root:")).map(|l| format!("{l}\n")).collect();
    for launch in [Launch::FreshBpffs, Launch::NetnsExec] {
        lab.start_drlb_as(drlb(), &config, launch, &[]).unwrap_or_else(|e| panic!("{launch:?}: {e:#}"));
        let tally = lab.http_requests(20, Duration::from_secs(2)).unwrap();
        // Read-only commands need no config file: they find the pinned dataplane (run in
        // drlb's own mount namespace, where its bpffs is; no /etc/drlb/drlb.yaml here).
        assert!(!Path::new("/etc/drlb/drlb.yaml").exists());
        let pid = lab.drlb_pid().unwrap().to_string();
        for args in [&["status"][..], &["doctor", "--sample", "1s"][..]] {
            let out = std::process::Command::new("nsenter").args(["-t", &pid, "-m", "-n"]).arg(drlb()).args(args).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            println!("{launch:?} drlb {}:\n{text}", args.join(" "));
            assert!(text.contains("/sys/fs/bpf/drlb/eth0"), "{launch:?} {args:?}: {text}");
            assert!(text.contains("198.18.0.100"), "{launch:?} {args:?}: {text}");
        }
        let log = lab.stop_drlb().unwrap();
        println!("{launch:?}: {}/20 ok\n{log}", tally.ok);
        assert_eq!(tally.ok, 20, "{launch:?}: {:?}\n{log}", tally.first_error);
        assert!(log.contains("ready:"), "{log}");
        if launch == Launch::NetnsExec {
            assert!(log.contains("mounted a BPF filesystem at /sys/fs/bpf"), "{log}");
        }
    }
}

/// Two directors in two network namespaces, both with an `eth0`, pinning under one bpffs:
/// the second neither adopts the first one's dataplane nor removes it with `drlb stop`.
#[test]
fn a_dataplane_of_another_namespace_is_neither_adopted_nor_stopped() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    lab.start_drlb(drlb()).expect("start drlb");
    let config = lab.dir().join("drlb.yaml");
    let config = config.to_str().unwrap();
    // The client's namespace also has an eth0 on the lab's subnet.
    let (ok, out) = lab.run_in("client", drlb(), &["run", "--config", config]).unwrap();
    assert!(!ok, "a second drlb adopted another namespace's dataplane:\n{out}");
    assert!(out.contains("another director pins there"), "{out}");
    let (ok, out) = lab.run_in("client", drlb(), &["stop", "--config", config]).unwrap();
    assert!(!ok && out.contains("another director pins there"), "{out}");
    let tally = lab.http_requests(10, Duration::from_secs(2)).unwrap();
    assert_eq!(tally.ok, 10, "the first director stopped forwarding: {:?}", tally.first_error);
    lab.stop_drlb().unwrap();
}

/// The controller's failure policy (docs/operations.md), one fault of each kind it can meet
/// here: a reload that does not fit the maps is rejected while the old configuration
/// serves; a map write the kernel refuses (the backends map frozen with BPF_MAP_FREEZE)
/// after a health change keeps the previous tables, is logged, counted and shown — and the
/// controller keeps running.
#[test]
fn controller_failures_keep_forwarding_and_are_visible() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let config = lab.drlb_config_with_check("type: tcp, port: 80, interval: 300ms, timeout: 1s");
    lab.start_drlb_with(drlb(), &config).expect("start drlb");
    let metrics = |lab: &Lab| lab.fetch("director", "127.0.0.1:9469".parse().unwrap(), "/metrics").expect("GET /metrics");

    // 1. A reload with 17 mh services of 65,521 entries: the scheduler tables would not fit.
    let mut big = config.replacen("director:\n", "director:\n  mh_table_size: 65521\n", 1);
    for i in 0..17 {
        big += &format!(
            "  - {{ name: mh{i}, vip: 198.18.1.{}, port: 80, protocol: tcp, scheduler: mh, real_servers: [ {{ address: 198.18.0.11 }} ] }}\n",
            i + 1
        );
    }
    let text = lab.with_pin_root(&big);
    std::fs::write(lab.dir().join("drlb.yaml"), &text).unwrap();
    let out = std::process::Command::new(drlb()).args(["reload", "--config"]).arg(lab.dir().join("drlb.yaml")).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && said.contains("service `mh16`: its scheduler table needs 65521 entries"), "{said}");
    std::fs::write(lab.dir().join("drlb.yaml"), lab.with_pin_root(&config)).unwrap();
    assert_eq!(lab.http_requests(10, Duration::from_secs(2)).unwrap().ok, 10, "the old configuration serves");

    // 2. The kernel refuses map writes; a health change needs one.
    let backends = lab.pin_root().join("eth0").join(lb_common::maps::MAP_BACKENDS);
    let out = std::process::Command::new("bpftool").args(["map", "freeze", "pinned"]).arg(&backends).output().unwrap();
    assert!(out.status.success(), "bpftool map freeze: {}", String::from_utf8_lossy(&out.stderr));
    let from = lab.log_len();
    lab.stop_nginx("rs1").unwrap();
    lab.wait_for_log("the dataplane keeps its previous tables", from, Duration::from_secs(10)).expect("the failure is logged");
    std::thread::sleep(Duration::from_millis(1500));
    let text = metrics(&lab);
    assert!(text.contains("drlb_maps_current 0"), "{text}");
    assert!(text.contains("drlb_controller_errors_total{operation=\"map_write\"}"), "{text}");
    // Still running, still answering (rs2 serves; rs1's share fails until the maps take it out).
    assert!(lab.drlb_cli(drlb(), &["status"]).unwrap().contains("198.18.0.12"));
    let tally = lab.http_requests(10, Duration::from_secs(1)).unwrap();
    assert!(tally.ok >= 4, "{tally:?}");

    // 3. Counts that drifted (rs2's ActiveConn set to 99 behind the controller's back) and
    // cannot be corrected (their map frozen too): the sweep's failure is warned and counted.
    let counts = lab.pin_root().join("eth0").join(lb_common::maps::MAP_CONN_COUNTS);
    let bpftool = |args: &[&str]| {
        let out = std::process::Command::new("bpftool").args(args).output().unwrap();
        assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let counts = counts.to_str().unwrap();
    bpftool(&["map", "update", "pinned", counts, "key", "1", "0", "0", "0", "value", "99", "0", "0", "0", "0", "0", "0", "0"]);
    bpftool(&["map", "freeze", "pinned", counts]);
    let from = lab.log_len();
    lab.wait_for_log("sweeping the connection table", from, Duration::from_secs(10)).expect("the sweep failure is logged");
    std::thread::sleep(Duration::from_millis(1200));
    let text = metrics(&lab);
    assert!(text.contains("drlb_controller_errors_total{operation=\"sweep\"}"), "{text}");
    let log = lab.stop_drlb().unwrap();
    assert!(log.contains("retrying every second"), "{log}");
}

/// Every metric name configs/grafana/drlb.json and configs/prometheus/drlb-rules.yml use
/// is served by a live drlb (one with connection sync, one announcing to routers: the
/// families only those have), and promtool accepts the rules.
#[test]
fn dashboard_and_alert_rules_use_only_served_metrics() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard = std::fs::read_to_string(root.join("configs/grafana/drlb.json")).unwrap();
    let rules = root.join("configs/prometheus/drlb-rules.yml");
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("configs/grafana/drlb.json is JSON");

    // What a live drlb serves: each family's sample names (counters end in _total,
    // histograms have _bucket, _sum and _count), with and without samples.
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    let check = "type: http, path: /health, interval: 300ms, timeout: 1s, retries: 0";
    let base = lab.drlb_config_with_check(check).replace("director:\n", "director:\n  metrics_listen: 127.0.0.1:9469\n");
    let mut served = std::collections::BTreeSet::new();
    for extra in ["  sync: { interface: eth0, syncid: 7 }\n", "  announce: { table: 100, warmup: 0s, drain_timeout: 2s }\n"] {
        let config = base.replacen("director:\n", &format!("director:\n{extra}"), 1);
        lab.start_drlb_with(drlb(), &config).expect("start drlb");
        // A health change, so the transition and quorum families have samples too.
        lab.set_unhealthy("rs1", true).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        lab.set_unhealthy("rs1", false).unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let text = lab.fetch("director", "127.0.0.1:9469".parse().unwrap(), "/metrics").expect("GET /metrics");
        lab.stop_drlb().unwrap();
        for needle in ["drlb_service_quorum{service=\"web\"} 1\n", "drlb_xdp_attached{mode=\"native\"} 1\n"] {
            assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
        }
        let downs = format!("drlb_health_transitions_total{{service=\"web\",server=\"{}\",to=\"down\"}} ", drlb_lab::REAL_SERVERS[0].addr);
        let count: u64 = text.lines().find_map(|l| l.strip_prefix(&downs)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        assert!(count >= 1, "no down transition of rs1 counted:\n{text}");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
                match kind {
                    "counter" => {
                        served.insert(format!("{name}_total"));
                    }
                    "histogram" => {
                        for suffix in ["_bucket", "_sum", "_count"] {
                            served.insert(format!("{name}{suffix}"));
                        }
                    }
                    _ => {
                        served.insert(name.to_string());
                    }
                }
            } else if !line.starts_with('#') {
                if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                    served.insert(name.to_string());
                }
            }
        }
    }
    let _ = std::process::Command::new("ip").args(["netns", "exec", &lab.ns("director"), "ip", "route", "flush", "table", "100"]).status();

    for (file, text) in [("configs/grafana/drlb.json", &dashboard), ("configs/prometheus/drlb-rules.yml", &rules_text)] {
        let used: std::collections::BTreeSet<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("drlb_") && w.len() > "drlb_".len())
            .map(str::to_string)
            .collect();
        let unknown: Vec<&String> = used.iter().filter(|n| !served.contains(*n)).collect();
        println!("{file}: {} metric names, all served: {}", used.len(), unknown.is_empty());
        assert!(unknown.is_empty(), "{file} uses metrics drlb does not serve: {unknown:?}\nserved: {served:?}");
        assert!(used.len() >= 10, "{file} uses only {used:?}");
    }

    match std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules).output() {
        Ok(out) => {
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            println!("promtool: {}", said.trim());
            assert!(out.status.success() && said.contains("SUCCESS"), "promtool check rules failed:\n{said}");
        }
        Err(_) => support::skip("promtool (Debian's prometheus package; `cargo xtask setup` installs it) is not installed: the rules were not checked by it"),
    }
}

/// `DRLB_LOG_FORMAT=json`: one JSON object per line, with the stable fields of the events
/// operators alert on; under journald (JOURNAL_STREAM naming stderr) each line starts with
/// its syslog priority.
#[test]
fn json_logs_carry_stable_event_fields_and_journald_priorities() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    let config = lab.drlb_config_with_check("type: http, path: /health, interval: 300ms, timeout: 1s, retries: 0");
    // The log file drlb's stderr goes to, made now so its device and inode can be named as
    // journald's stream (the launcher truncates it in place).
    let log = lab.dir().join("drlb.log");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", std::os::unix::fs::MetadataExt::dev(&meta), std::os::unix::fs::MetadataExt::ino(&meta));
    lab.start_drlb_env(drlb(), &config, &[("DRLB_LOG_FORMAT", "json"), ("JOURNAL_STREAM", &stream)]).expect("start drlb");
    lab.set_unhealthy("rs1", true).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    lab.set_unhealthy("rs1", false).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    lab.reload_drlb(drlb(), &config).unwrap();
    let text = lab.stop_drlb().unwrap();

    let mut events: Vec<serde_json::Value> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (priority, json) = line.split_at(line.find('{').unwrap_or_else(|| panic!("not a JSON line: {line}")));
        let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let level = value["level"].as_str().unwrap_or_default();
        let expected = match level {
            "ERROR" => "<3>",
            "WARN" => "<4>",
            "INFO" => "<6>",
            _ => "<7>",
        };
        assert_eq!(priority, expected, "{line}");
        assert!(value["timestamp"].is_string() && value["message"].is_string(), "{line}");
        if value.get("event").is_some() {
            events.push(value);
        }
    }
    let find = |event: &str, field: &str, value: &str| {
        events.iter().find(|e| e["event"] == event && e[field] == value).unwrap_or_else(|| panic!("no {event} event with {field}={value} in:\n{text}"))
    };
    let attach = find("attach", "interface", "eth0");
    assert_eq!(attach["mode"], "native", "{attach}");
    let down = find("health", "state", "down");
    assert_eq!(down["service"], "web");
    assert_eq!(down["real_server"], drlb_lab::REAL_SERVERS[0].addr.to_string());
    assert_eq!(down["check"], "http");
    assert!(down["reason"].is_string(), "{down}");
    assert_eq!(down["level"], "WARN");
    let up = find("health", "state", "up");
    assert_eq!(up["real_server"], drlb_lab::REAL_SERVERS[0].addr.to_string());
    let reload = find("reload", "outcome", "ok");
    assert_eq!(reload["services"], 1);
    find("detach", "dataplane", "detached");
    println!("{} lines, all JSON with journald priorities; events: {:?}", text.lines().count(), events.iter().map(|e| e["event"].as_str().unwrap_or("")).collect::<Vec<_>>());
}
