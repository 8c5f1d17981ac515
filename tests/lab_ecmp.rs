//! Scale-out: three directors behind a router doing ECMP, each announcing the VIP over BGP
//! (BIRD, configs/bird-director.conf) while drlb says it can serve
//! (`director.announce`). Flows moved between directors keep their real server — through
//! connection sync among all directors for `wlc`, by construction for `mh` — and the
//! control runs show the tests can fail. Needs root and BIRD (`cargo xtask setup`
//! installs bird2).

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drlb_lab::ecmp::{EcmpSetup, LAB_REFRESH, broken};
use drlb_lab::{ALL_REAL_SERVERS, Lab, STICKY_PORT};
use lb_userspace::control::config::XdpMode;

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const DIRECTORS: [&str; 3] = ["director", "director2", "director3"];
const HELD: usize = 60;
/// BGP sessions come up within a few seconds (`connect delay time 1`), then a director
/// announces after its warm-up ([`LAB_REFRESH`]).
const CONVERGE: Duration = Duration::from_secs(30);
/// A director whose link died leaves the router at the hold timer (3 s) plus slack.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

fn skip_unless_ready() -> bool {
    if support::skip_unless_root() {
        return true;
    }
    if std::process::Command::new("bird").arg("--version").output().is_err() {
        support::skip("BIRD is not installed (`cargo xtask setup` installs bird2)");
        return true;
    }
    false
}

const WLC_SYNC: EcmpSetup = EcmpSetup { scheduler: "wlc", sync: true, sloppy_tcp: false };

/// Three directors up with drlb (`setup`) and announced: the router has all three as next
/// hops for the VIP.
fn three_directors(setup: EcmpSetup) -> Lab {
    let mut lab = Lab::build_ecmp(XdpMode::Native, 3).expect("build the ECMP lab");
    for role in DIRECTORS {
        lab.start_ecmp_director(role, drlb(), setup).expect("start drlb");
    }
    let took = lab.wait_for_next_hops(&DIRECTORS, CONVERGE).expect("the router reaches the VIP through all three directors");
    println!("the router has three next hops for the VIP {took:?} after the last drlb was ready");
    lab
}

/// (a) the router spreads new connections over all three directors; (b) 60 long-lived
/// connections all keep working when a director is drained, when a director's link dies
/// (hold timer), when each comes back, and when drlb crashes and restarts (the announcement
/// outlives it); status, metrics and doctor show the announcements.
#[test]
fn wlc_with_sync_keeps_every_flow_when_directors_come_and_go() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = three_directors(WLC_SYNC);

    // (a) 1,000 new connections: Binomial(1000, 1/3) per director, mean 333, sd 15.
    let before: Vec<u64> = DIRECTORS.iter().map(|d| lab.director_new_connections(d).unwrap()).collect();
    let tally = lab.far_requests(1000, Duration::from_secs(3)).unwrap();
    assert_eq!(tally.ok, 1000, "new connections through the router: {:?}", tally.first_error);
    let per: Vec<u64> = DIRECTORS.iter().zip(&before).map(|(d, b)| lab.director_new_connections(d).unwrap() - b).collect();
    println!("1000 new connections: per director {per:?}, per real server {:?}", &tally.per_server[..2]);
    assert_eq!(per.iter().sum::<u64>(), 1000, "every connection was scheduled by exactly one director: {per:?}");
    assert!(per.iter().all(|n| *n >= 250), "ECMP spreads new connections over all directors: {per:?}");

    // Persistence across directors: the first connection's template reaches every
    // director, so the client's later connections, whichever director the router picks,
    // go to the same real server.
    let sticky_rs = sticky_server(&lab, 1, None);
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = DIRECTORS.iter().map(|d| lab.director_new_connections(d).unwrap()).collect();
    sticky_server(&lab, 60, Some(sticky_rs));
    let per: Vec<u64> = DIRECTORS.iter().zip(&before).map(|(d, b)| lab.director_new_connections(d).unwrap() - b).collect();
    println!("60 connections to the persistent service: all to {}, scheduled by the directors {per:?}", ALL_REAL_SERVERS[sticky_rs].role);
    assert!(per.iter().all(|n| *n > 0), "every director scheduled some of them: {per:?}");

    let (first, mut held) = lab.far_connections(HELD).unwrap();
    assert!(first.contains(&0) && first.contains(&1), "wlc uses both real servers: {first:?}");
    // Every director learns every connection from the one that scheduled it.
    std::thread::sleep(Duration::from_secs(1));
    let status = lab.director_cli("director", drlb(), &["status"]).unwrap();
    assert!(status.contains("announced to the routers"), "{status}");
    let metrics = lab.director_metrics("director2").unwrap();
    assert!(metrics.contains("drlb_vip_announced{vip=\"198.18.0.100\"} 1"), "{metrics}");
    let (_, report) = lab.director_doctor("director2", drlb()).unwrap();
    assert!(report.contains("announced: its route is in table 100") && report.contains("a BGP speaker runs (bird)"), "{report}");

    // (b1) Drained for maintenance: withdraw, wait for the router, detach.
    let mut drained = String::new();
    let bad = lab.rounds_while(&first, &mut held, "director3 drained", || {
        drained = lab.director_cli("director3", drlb(), &["drain"]).expect("drlb drain");
    });
    assert!(bad.is_empty(), "draining director3 broke {} connection(s): {bad:?}", bad.len());
    println!("drlb drain: {drained}");
    lab.wait_for_next_hops(&["director", "director2"], Duration::from_secs(1)).expect("director3 is gone from the router once drained");
    let log = lab.director_log("director3");
    assert!(log.contains("drained: no packet for"), "{log}");

    // (b2) director2's link dies: the router drops it at the hold timer. Meanwhile the
    // bridge, which forgot director2's port, floods the frames the router still sends it to
    // every port: director must leave them alone (the flows it would take over are
    // director2's until the router says otherwise).
    let flooded_before = lab.director_reason("director", "pass_other_host");
    lab.set_link("director2", false).unwrap();
    let started = Instant::now();
    let bad = lab.rounds_while(&first, &mut held, "director2's link down", || {
        lab.wait_for_next_hops(&["director"], HOLD_LIMIT).expect("the hold timer removes director2");
    });
    let left = started.elapsed();
    println!("director2 left the router {left:?} after its link went down");
    assert!(bad.is_empty(), "director2's link going down broke {} connection(s): {bad:?}", bad.len());
    let flooded = lab.director_reason("director", "pass_other_host") - flooded_before;
    println!("director passed {flooded} flooded frame(s) addressed to director2");
    assert!(flooded > 0, "the bridge floods frames for director2's MAC once its port is down; director saw none");

    // (b3) Both come back: director2's link (its drlb ran on, and warms up again: it missed
    // sync while cut off), director3 restarted afresh. Each announces after its warm-up,
    // once sync has brought it the active connections.
    assert_eq!(lab.reap_director("director3").unwrap().code(), Some(75), "drlb run exits 75 once drained");
    lab.set_link("director2", true).unwrap();
    lab.start_ecmp_director("director3", drlb(), WLC_SYNC).expect("restart drlb on director3");
    let bad = lab.rounds_while(&first, &mut held, "director2 and director3 back", || {
        lab.wait_for_next_hops(&DIRECTORS, CONVERGE).expect("all three directors are next hops again");
    });
    assert!(bad.is_empty(), "directors coming back broke {} connection(s): {bad:?}", bad.len());
    let bad = lab.round(&first, &mut held, "all three back");
    assert!(bad.is_empty(), "{bad:?}");
    // The persistence template outlived the moves: the restarted director3 learnt it.
    sticky_server(&lab, 30, Some(sticky_rs));
    let log = lab.director_log("director3");
    assert!(log.contains(&format!("after {} of connection sync", humantime_secs(LAB_REFRESH))), "{log}");
    let log = lab.director_log("director2");
    assert!(log.contains("withdrawn: no carrier"), "{log}");

    // (b4) drlb on director2 crashes and is started again (systemd's Restart=always): its
    // route stays in the table while the pinned dataplane goes on forwarding, and the new
    // controller adopts both and announces at once. The router never loses director2.
    let watching = std::sync::atomic::AtomicBool::new(true);
    let router = lab.ns("router");
    let lost = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut lost = 0;
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                lost += (drlb_lab::ecmp::next_hops(&router).len() != DIRECTORS.len()) as u32;
                std::thread::sleep(Duration::from_millis(20));
            }
            lost
        });
        let result = (|| -> anyhow::Result<()> {
            lab.stop_director("director2", true)?;
            let (_, report) = lab.director_doctor("director2", drlb())?;
            anyhow::ensure!(report.contains("but no controller runs"), "doctor with no controller:\n{report}");
            lab.start_ecmp_director("director2", drlb(), WLC_SYNC)?;
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        })();
        watching.store(false, std::sync::atomic::Ordering::SeqCst);
        result.expect("restart director2's drlb");
        watcher.join().unwrap()
    });
    assert_eq!(lost, 0, "the router lost director2 while its drlb restarted");
    let log = lab.director_log("director2");
    assert!(log.contains("adopting the dataplane") && log.contains("after 0s of connection sync"), "{log}");
    let bad = lab.round(&first, &mut held, "after director2's drlb restarted");
    assert!(bad.is_empty(), "{bad:?}");
}

/// `n` connections to the persistent service from the far client: the one real server
/// that answered them all (`want`, if given).
fn sticky_server(lab: &Lab, n: usize, want: Option<usize>) -> usize {
    let tally = lab.far_requests_to(STICKY_PORT, n, Duration::from_secs(3)).unwrap();
    assert_eq!(tally.ok, n, "connections to the persistent service: {:?}", tally.first_error);
    let used: Vec<usize> = (0..ALL_REAL_SERVERS.len()).filter(|i| tally.per_server[*i] > 0).collect();
    assert_eq!(used.len(), 1, "persistence sends one client to one real server: {:?}", tally.per_server);
    if let Some(w) = want {
        assert_eq!(used[0], w, "persistence kept its real server across directors: {:?}", tally.per_server);
    }
    used[0]
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// (c) A director whose real servers are all down (here: its own health checks cannot
/// reach them) withdraws the VIP and takes no new flows; its flows go on through the
/// others; once the servers are back it announces again.
#[test]
fn a_director_that_loses_its_real_servers_withdraws() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = three_directors(WLC_SYNC);
    let (first, mut held) = lab.far_connections(HELD).unwrap();
    std::thread::sleep(Duration::from_secs(1));

    lab.cut_health_checks("director", true).unwrap();
    let bad = lab.rounds_while(&first, &mut held, "director's real servers unreachable", || {
        lab.wait_for_next_hops(&["director2", "director3"], Duration::from_secs(10)).expect("director withdraws");
    });
    assert!(bad.is_empty(), "the withdrawal broke {} connection(s): {bad:?}", bad.len());
    let status = lab.director_cli("director", drlb(), &["status"]).unwrap();
    assert!(status.contains("withdrawn (quorum lost: web, sticky)"), "{status}");
    let metrics = lab.director_metrics("director").unwrap();
    assert!(metrics.contains("drlb_vip_announced{vip=\"198.18.0.100\"} 0"), "{metrics}");
    let (healthy, report) = lab.director_doctor("director", drlb()).unwrap();
    assert!(!healthy && report.contains("withdrawn (quorum lost: web, sticky)"), "{report}");
    let before = lab.director_new_connections("director").unwrap();
    let tally = lab.far_requests(300, Duration::from_secs(3)).unwrap();
    assert_eq!(tally.ok, 300, "new connections while director is withdrawn: {:?}", tally.first_error);
    assert_eq!(lab.director_new_connections("director").unwrap(), before, "a withdrawn director takes no new flows");

    lab.cut_health_checks("director", false).unwrap();
    let bad = lab.rounds_while(&first, &mut held, "director's real servers back", || {
        lab.wait_for_next_hops(&DIRECTORS, Duration::from_secs(10)).expect("director announces again");
    });
    assert!(bad.is_empty(), "announcing again broke {} connection(s): {bad:?}", bad.len());
    let log = lab.director_log("director");
    assert!(log.contains("VIP 198.18.0.100 withdrawn: quorum lost: web"), "{log}");
}

/// (d) The control run: without sync, `wlc` directors do not know each other's flows, so
/// the flows a drained director leaves behind are dropped by the others (and sloppy
/// handling would send them to another real server). Shows the other tests can fail.
#[test]
fn without_sync_wlc_breaks_the_flows_of_a_drained_director() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = three_directors(EcmpSetup { scheduler: "wlc", sync: false, sloppy_tcp: false });
    let (first, mut held) = lab.far_connections(HELD).unwrap();
    let through: Vec<u64> = DIRECTORS.iter().map(|d| lab.director_packets(d)).collect();
    lab.director_cli("director3", drlb(), &["drain"]).expect("drlb drain");
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(4));
    let bad = broken(&first, &answers);
    println!("without sync: draining director3 broke {} of {HELD} connections (packets per director before: {through:?})", bad.len());
    assert!(!bad.is_empty(), "without sync every flow survived: the router moved none, and the sync tests prove nothing");
}

/// `mh` (with `sloppy_tcp`) needs no sync: every director has the same Maglev table
/// (checked through the fingerprint each reports), so a flow that moves reaches the real
/// server it had, through a drain and a return.
#[test]
fn mh_keeps_every_flow_without_sync() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let setup = EcmpSetup { scheduler: "mh", sync: false, sloppy_tcp: true };
    let mut lab = three_directors(setup);
    // The controllers report once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let prints: Vec<String> =
        DIRECTORS.iter().map(|d| lab.director_state(d).unwrap().table_fingerprints.get("web").cloned().expect("mh has a table")).collect();
    assert!(prints.iter().all(|p| *p == prints[0]), "the directors' Maglev tables differ: {prints:?}");
    println!("Maglev table fingerprint on all three directors: {}", prints[0]);
    let status = lab.director_cli("director2", drlb(), &["status"]).unwrap();
    assert!(status.contains(&format!("Scheduler table of web: fingerprint {}", prints[0])), "{status}");

    let (first, mut held) = lab.far_connections(HELD).unwrap();
    let bad = lab.rounds_while(&first, &mut held, "mh: director3 drained", || {
        lab.director_cli("director3", drlb(), &["drain"]).expect("drlb drain");
    });
    assert!(bad.is_empty(), "mh without sync: draining broke {} connection(s): {bad:?}", bad.len());
    assert_eq!(lab.reap_director("director3").unwrap().code(), Some(75), "drlb run exits 75 once drained");
    lab.start_ecmp_director("director3", drlb(), setup).unwrap();
    let bad = lab.rounds_while(&first, &mut held, "mh: director3 back", || {
        lab.wait_for_next_hops(&DIRECTORS, CONVERGE).expect("director3 announces again");
    });
    assert!(bad.is_empty(), "mh without sync: the return broke {} connection(s): {bad:?}", bad.len());
    let bad = lab.round(&first, &mut held, "mh: all three back");
    assert!(bad.is_empty(), "{bad:?}");
}

/// What connection sync costs per new connection as directors are added (N = 2, 3, 4):
/// every director sends each of its connections' records to every other, so the records
/// on the wire per new connection grow with N − 1 and each director installs (N − 1)/N of
/// all connections. Prints the figures docs/scale-out.md quotes.
#[test]
fn sync_cost_per_new_connection_grows_with_the_directors() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const NEW: u64 = 500;
    let mut rows = Vec::new();
    for n in 2..=4usize {
        let mut lab = Lab::build_ecmp(XdpMode::Native, n).expect("build the ECMP lab");
        let roles: Vec<&str> = lab.directors().iter().map(|d| d.role).collect();
        for role in &roles {
            lab.start_ecmp_director(role, drlb(), WLC_SYNC).expect("start drlb");
        }
        lab.wait_for_next_hops(&roles, CONVERGE).unwrap();
        let counters = |lab: &Lab| -> Vec<std::collections::BTreeMap<String, u64>> {
            roles.iter().map(|r| lab.director_state(r).ok().and_then(|s| s.sync).map(|s| s.counters).unwrap_or_default()).collect()
        };
        // The controllers write their counters once a second.
        std::thread::sleep(Duration::from_millis(1500));
        let before = counters(&lab);
        let tally = lab.far_requests(NEW as usize, Duration::from_secs(3)).unwrap();
        assert_eq!(tally.ok as u64, NEW, "{:?}", tally.first_error);
        // Sync flushes within a few tens of milliseconds; the state file follows within a second.
        std::thread::sleep(Duration::from_millis(2500));
        let after = counters(&lab);
        let delta = |key: &str| -> Vec<u64> {
            after.iter().zip(&before).map(|(a, b)| a.get(key).copied().unwrap_or(0) - b.get(key).copied().unwrap_or(0)).collect()
        };
        let (records, datagrams, received) = (delta("records_sent"), delta("messages_sent"), delta("records_received"));
        let per = |v: &[u64]| v.iter().sum::<u64>() as f64 / NEW as f64;
        let received_per_director = per(&received) / n as f64;
        println!(
            "N={n}: per new connection: {:.2} records and {:.2} datagrams sent in all, {:.2} records received per director \
             (records sent per director {records:?})",
            per(&records),
            per(&datagrams),
            received_per_director
        );
        rows.push((n, per(&records), per(&datagrams), received_per_director));
    }
    // Records on the wire grow with N − 1 (unicast to every peer) ...
    let per_peer: Vec<f64> = rows.iter().map(|(n, r, _, _)| r / (*n as f64 - 1.0)).collect();
    assert!(rows.windows(2).all(|w| w[1].1 > w[0].1), "records per connection grow with N: {rows:?}");
    assert!(per_peer.iter().all(|p| *p >= 1.0 && *p <= 12.0), "each connection costs a few records per peer: {per_peer:?}");
    // ... and each director installs a growing share of all connections.
    assert!(rows.windows(2).all(|w| w[1].3 > w[0].3 * 0.95), "received per director grows with N: {rows:?}");
}
