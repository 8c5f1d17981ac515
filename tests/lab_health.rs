//! Health checks and reloads under load in the netns lab: a bounded load generator in the
//! client namespace makes short HTTP requests for a fixed time and counts failures.
//! Needs root.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lb_userspace::control::config::XdpMode;
use drlb_lab::{Lab, LoadReport, ALL_REAL_SERVERS, VIP};

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

/// A web service over the given lab servers (index, weight) with a health check.
fn config(lab: &Lab, servers: &[(usize, u32)], check: &str) -> String {
    let mode = if lab.mode == XdpMode::Native { "native" } else { "generic" };
    let mut rs = String::new();
    for (i, w) in servers {
        let h = ALL_REAL_SERVERS[*i];
        rs += &format!("      - {{ name: {}, address: {}, weight: {w} }}\n", h.role, h.addr);
    }
    format!(
        "director:\n  interface: eth0\n  xdp_mode: {mode}\n  conn_table_size: 65536\nservices:\n  - name: web\n    vip: {VIP}\n    \
         port: 80\n    protocol: tcp\n    scheduler: wlc\n    health_check: {check}\n    real_servers:\n{rs}"
    )
}

const TCP_CHECK: &str = "{ type: tcp, port: 80, interval: 1s, timeout: 1s, retries: 1, retry_delay: 500ms }";
/// interval + timeout × (retries + 1) + retry_delay × retries.
const DOWN_BOUND: Duration = Duration::from_millis(1000 + 1000 * 2 + 500);

/// Answers per server in [from, to) of the load's time.
fn answered(r: &LoadReport, from: Duration, to: Duration) -> [usize; 3] {
    let mut n = [0; 3];
    for (t, i) in &r.answers {
        if *t >= from && *t < to {
            n[*i] += 1;
        }
    }
    n
}

#[test]
fn stopped_server_goes_down_within_the_bound_and_comes_back() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab");
    lab.start_drlb_with(drlb(), &config(&lab, &[(0, 1), (1, 1)], TCP_CHECK)).expect("start drlb");

    let load = lab.start_load(Duration::from_secs(12), 2);
    let t0 = load.started;
    std::thread::sleep(Duration::from_secs(2));
    let from = lab.log_len();
    let stopped = Instant::now();
    lab.stop_nginx("rs1").unwrap();
    let down_at = lab.wait_for_log("web rs1 198.18.0.11:80 DOWN:", from, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let from = lab.log_len();
    lab.restart_nginx("rs1").unwrap();
    let up_at = lab.wait_for_log("web rs1 198.18.0.11:80 UP:", from, Duration::from_secs(10)).unwrap();
    let report = load.finish().unwrap();
    let log = lab.stop_drlb().unwrap();

    let detection = down_at - stopped;
    let (stop_t, down_t, up_t) = (stopped - t0, down_at - t0, up_at - t0);
    println!("{}", log.lines().filter(|l| l.contains(" DOWN: ") || l.contains(" UP: ")).collect::<Vec<_>>().join("\n"));
    println!("DOWN {detection:?} after the stop (bound {DOWN_BOUND:?}); {} ok, {} failed, all before DOWN", report.ok, report.failures.len());
    assert!(detection <= DOWN_BOUND + Duration::from_millis(300), "DOWN after {detection:?}, bound {DOWN_BOUND:?}");
    // Failures only while rs1 was down and not yet detected (requests sent to it); none
    // before the stop, none after DOWN (a request in flight at the moment may finish).
    let late = report.failures_after(down_t + Duration::from_millis(100));
    assert!(late.is_empty(), "failed after DOWN: {late:?}");
    assert!(report.failures.iter().all(|(t, _)| *t >= stop_t), "failed before rs1 stopped: {:?}", report.failures);
    // rs2 answered all along, in every half second.
    let mut t = Duration::ZERO;
    while t + Duration::from_millis(500) < Duration::from_secs(12) {
        assert!(answered(&report, t, t + Duration::from_millis(500))[1] > 0, "rs2 stopped answering at {t:?}");
        t += Duration::from_millis(500);
    }
    // rs1 served nothing while down, and serves again after UP. (`up_t` is when the test
    // saw the UP line, up to one poll after drlb acted on it: leave that margin out.)
    assert_eq!(answered(&report, down_t + Duration::from_millis(100), up_t - Duration::from_millis(100))[0], 0);
    assert!(answered(&report, up_t + Duration::from_millis(100), Duration::from_secs(12))[0] > 0, "rs1 did not come back");
}

/// Checks that see what a TCP check cannot: an HTTP check of /health answering 503, and a
/// script reporting maintenance; port 80 stays open all along.
#[test]
fn http_and_script_checks_catch_what_tcp_misses() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    for (kind, check) in [
        ("http", "{ type: http, path: /health, status: [\"200\"], regex: \"ok\", interval: 500ms, timeout: 1s, retries: 0 }".to_string()),
        (
            "script",
            format!("{{ type: script, command: \"test ! -e {}/maint-$DRLB_RS_ADDRESS\", interval: 500ms, timeout: 1s, retries: 0 }}", lab.dir.display()),
        ),
    ] {
        lab.start_drlb_with(drlb(), &config(&lab, &[(0, 1), (1, 1)], &check)).expect("start drlb");
        let from = lab.log_len();
        match kind {
            "http" => lab.set_unhealthy("rs1", true).unwrap(),
            _ => std::fs::write(lab.dir.join("maint-198.18.0.11"), "").unwrap(),
        }
        lab.wait_for_log("web rs1 198.18.0.11:80 DOWN:", from, Duration::from_secs(5)).expect(kind);
        let t = lab.http_requests(20, Duration::from_secs(2)).unwrap();
        assert_eq!((t.ok, t.per_server[0]), (20, 0), "{kind}: rs1 still got requests: {t:?}");
        let from = lab.log_len();
        match kind {
            "http" => lab.set_unhealthy("rs1", false).unwrap(),
            _ => std::fs::remove_file(lab.dir.join("maint-198.18.0.11")).unwrap(),
        }
        lab.wait_for_log("web rs1 198.18.0.11:80 UP:", from, Duration::from_secs(5)).expect(kind);
        let log = lab.stop_drlb().unwrap();
        println!("{kind}: {}", log.lines().filter(|l| l.contains(" DOWN: ")).collect::<Vec<_>>().join("\n"));
    }
}

/// Reloads under load: a weight change, an added and a removed server in one SIGHUP, then
/// a file that does not parse — no request fails.
#[test]
fn reloads_under_load_fail_no_request() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Native, 3).expect("build the lab");
    lab.start_drlb_with(drlb(), &config(&lab, &[(0, 1), (1, 1)], TCP_CHECK)).expect("start drlb");
    let load = lab.start_load(Duration::from_secs(8), 2);
    let t0 = load.started;
    std::thread::sleep(Duration::from_secs(2));
    let from = lab.log_len();
    lab.sighup_drlb(&config(&lab, &[(0, 3), (2, 1)], TCP_CHECK)).unwrap();
    let reloaded = lab.wait_for_log("reloaded ", from, Duration::from_secs(5)).unwrap() - t0;
    std::thread::sleep(Duration::from_secs(2));
    let from = lab.log_len();
    lab.sighup_drlb(&config(&lab, &[(0, 3), (2, 1)], TCP_CHECK).replace("protocol: tcp", "protocol: [tcp")).unwrap();
    lab.wait_for_log("reload rejected", from, Duration::from_secs(5)).unwrap();
    let report = load.finish().unwrap();
    let log = lab.stop_drlb().unwrap();
    println!("{} ok, {} failed; per server {:?}", report.ok, report.failures.len(), report.per_server);
    assert!(report.failures.is_empty(), "failed requests: {:?}", &report.failures[..report.failures.len().min(5)]);
    let rejected = log.lines().find(|l| l.contains("reload rejected")).unwrap_or_default().to_string()
        + log.lines().skip_while(|l| !l.contains("reload rejected")).nth(1).unwrap_or_default();
    assert!(rejected.contains("drlb.yaml:"), "the rejection names FILE:LINE:COLUMN: {rejected}");
    let after = answered(&report, reloaded + Duration::from_millis(200), Duration::from_secs(8));
    assert_eq!(after[1], 0, "removed rs2 got new requests after the reload: {after:?}");
    assert!(after[2] > 0, "added rs3 got nothing: {after:?}");
    let share = after[0] as f64 / (after[0] + after[2]) as f64;
    assert!((0.65..0.85).contains(&share), "rs1 (weight 3) share {share:.2}, want about 0.75: {after:?}");
}


/// With every real server down the sorry server takes new connections; with quorum 2 it
/// does as soon as one of two weight-1 servers is down.
#[test]
fn sorry_server_takes_over_when_the_quorum_is_lost() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Generic, 3).expect("build the lab");
    let check = "{ type: tcp, port: 80, interval: 300ms, timeout: 1s, retries: 0 }";
    let sorry = format!("    sorry_server: {{ address: {} }}\n    quorum: 2\n", ALL_REAL_SERVERS[2].addr);
    let cfg = config(&lab, &[(0, 1), (1, 1)], check).replace("    real_servers:\n", &format!("{sorry}    real_servers:\n"));
    lab.start_drlb_with(drlb(), &cfg).expect("start drlb");
    let t = lab.http_requests(10, Duration::from_secs(2)).unwrap();
    assert_eq!((t.ok, t.per_server[2]), (10, 0), "the sorry server answered while the quorum held: {t:?}");
    let from = lab.log_len();
    lab.stop_nginx("rs1").unwrap();
    lab.wait_for_log("web rs1 198.18.0.11:80 DOWN:", from, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = lab.http_requests(10, Duration::from_secs(2)).unwrap();
    assert_eq!((t.ok, t.per_server[2]), (10, 10), "quorum 2 lost with one server down: the sorry server should answer: {t:?}");
    let from = lab.log_len();
    lab.restart_nginx("rs1").unwrap();
    lab.wait_for_log("web rs1 198.18.0.11:80 UP:", from, Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = lab.http_requests(10, Duration::from_secs(2)).unwrap();
    assert_eq!((t.ok, t.per_server[2]), (10, 0), "quorum back: the real servers answer again: {t:?}");
    lab.stop_drlb().unwrap();
}

/// A keepalived.conf as operators write it, imported and run: rs1 carries two checkers
/// (TCP_CHECK and HTTP_GET of /health), so it goes down when /health fails although port 80
/// stays open — keepalived's "every checker must pass" — and comes back when it passes.
#[test]
fn an_imported_keepalived_conf_with_two_checkers_on_a_server_needs_both() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build(XdpMode::Generic).expect("build the lab");
    let (rs1, rs2) = (ALL_REAL_SERVERS[0].addr, ALL_REAL_SERVERS[1].addr);
    let keepalived = format!(
        "vrrp_instance VI_1 {{\n  interface eth0\n  virtual_router_id 7\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n\
         virtual_server {VIP} 80 {{\n  delay_loop 0.5\n  lb_algo wlc\n  lb_kind DR\n  protocol TCP\n\
           real_server {rs1} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 0\n    }}\n\
             HTTP_GET {{\n      url {{\n        path /health\n        status_code 200\n      }}\n      connect_timeout 1\n      retry 0\n    }}\n  }}\n\
           real_server {rs2} 80 {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n      retry 0\n    }}\n  }}\n}}\n"
    );
    let imported = lb_userspace::migrate::keepalived::import_text(&lab.dir.join("keepalived.conf"), &keepalived, "lab");
    assert!(imported.reports.is_empty(), "{:?}", imported.reports.iter().map(ToString::to_string).collect::<Vec<_>>());
    let yaml = imported.yaml.replace("  interface: eth0", &format!("  interface: eth0\n  xdp_mode: generic\n  conn_table_size: 65536"));
    lab.start_drlb_with(drlb(), &yaml).expect("start drlb with the imported config");
    let t = lab.http_requests(20, Duration::from_secs(2)).unwrap();
    assert_eq!(t.ok, 20, "{t:?}");
    assert!(t.per_server[0] > 0 && t.per_server[1] > 0, "both servers up at first: {t:?}");
    let from = lab.log_len();
    lab.set_unhealthy("rs1", true).unwrap();
    lab.wait_for_log(&format!("(http check {rs1}:80) DOWN:"), from, Duration::from_secs(5)).expect("rs1's HTTP_GET fails");
    std::thread::sleep(Duration::from_millis(100));
    let t = lab.http_requests(20, Duration::from_secs(2)).unwrap();
    assert_eq!((t.ok, t.per_server[0]), (20, 0), "rs1's TCP_CHECK passes but its HTTP_GET fails: it must get nothing: {t:?}");
    let from = lab.log_len();
    lab.set_unhealthy("rs1", false).unwrap();
    lab.wait_for_log(&format!("(http check {rs1}:80) UP:"), from, Duration::from_secs(5)).expect("rs1's HTTP_GET passes again");
    std::thread::sleep(Duration::from_millis(100));
    let t = lab.http_requests(20, Duration::from_secs(2)).unwrap();
    assert!(t.ok == 20 && t.per_server[0] > 0, "rs1 back: {t:?}");
    lab.stop_drlb().unwrap();
}

/// keepalived's quorum hysteresis and notify scripts: weights 2 + 2, quorum 3, hysteresis 1.
/// One server down leaves weight 2, which keeps the quorum (lost only below 3 - 1), so the
/// sorry server stays out; both down lose it (quorum_down runs, the sorry server answers);
/// one back (2) does not regain it (that needs 3 + 1); both back do (quorum_up runs).
/// notify_down / notify_up run for each server that changes.
#[test]
fn quorum_hysteresis_and_notify_scripts_act_as_keepalived() {
    if support::skip_unless_root() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::build_with(XdpMode::Generic, 3).expect("build the lab");
    let events = lab.dir.join("events");
    let record = |what: &str| format!("\"echo {what} $DRLB_SERVICE $DRLB_RS_ADDRESS >> {}\"", events.display());
    let check = "{ type: tcp, port: 80, interval: 300ms, timeout: 1s, retries: 0 }";
    let mut cfg = config(&lab, &[(0, 2), (1, 2)], check).replace(
        "    real_servers:\n",
        &format!(
            "    sorry_server: {{ address: {} }}\n    quorum: 3\n    quorum_hysteresis: 1\n    quorum_up: {}\n    quorum_down: {}\n    real_servers:\n",
            ALL_REAL_SERVERS[2].addr,
            record("quorum_up"),
            record("quorum_down")
        ),
    );
    for h in &ALL_REAL_SERVERS[..2] {
        cfg = cfg.replace(
            &format!("address: {}, weight: 2 }}", h.addr),
            &format!("address: {}, weight: 2, notify_up: {}, notify_down: {} }}", h.addr, record("notify_up"), record("notify_down")),
        );
    }
    let read_events = || std::fs::read_to_string(&events).unwrap_or_default();
    let wait_for_event = |line: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !read_events().lines().any(|l| l.trim() == line) {
            assert!(Instant::now() < deadline, "no `{line}` in the events: {}", read_events());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let sorry_share = |lab: &Lab| {
        let t = lab.http_requests(10, Duration::from_secs(2)).unwrap();
        assert_eq!(t.ok, 10, "{t:?}");
        t.per_server[2]
    };
    lab.start_drlb_with(drlb(), &cfg).expect("start drlb");
    wait_for_event("quorum_up web");
    assert_eq!(sorry_share(&lab), 0);

    let from = lab.log_len();
    lab.stop_nginx("rs1").unwrap();
    lab.wait_for_log("web rs1 198.18.0.11:80 DOWN:", from, Duration::from_secs(5)).unwrap();
    wait_for_event("notify_down web 198.18.0.11");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sorry_share(&lab), 0, "weight 2 is not below quorum 3 - hysteresis 1: the quorum holds");

    lab.stop_nginx("rs2").unwrap();
    wait_for_event("quorum_down web");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sorry_share(&lab), 10, "no server up: the sorry server answers");

    let from = lab.log_len();
    lab.restart_nginx("rs1").unwrap();
    lab.wait_for_log("web rs1 198.18.0.11:80 UP:", from, Duration::from_secs(5)).unwrap();
    wait_for_event("notify_up web 198.18.0.11");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sorry_share(&lab), 10, "weight 2 is below quorum 3 + hysteresis 1: the quorum stays lost");

    lab.restart_nginx("rs2").unwrap();
    let ups = || read_events().lines().filter(|l| l.trim() == "quorum_up web").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ups() < 2 {
        assert!(Instant::now() < deadline, "the quorum did not come back: {}", read_events());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sorry_share(&lab), 0, "weight 4: quorum regained, the real servers answer");
    let log = lab.stop_drlb().unwrap();
    println!("{}\n{}", read_events(), log.lines().filter(|l| l.contains("quorum")).collect::<Vec<_>>().join("\n"));
}
