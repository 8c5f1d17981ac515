//! Two directors, one VIP: keepalived (VRRP only, configs/keepalived-vrrp.conf) moves the
//! VIP, drlb's connection sync keeps every established connection through the move.
//! Each test holds 32 keep-alive HTTP connections through the master (wlc over two real
//! servers), moves the VIP, and makes one more request on every connection. Needs root and
//! keepalived (`cargo xtask setup` installs it).

mod support;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use drlb_lab::ha::Answer;
use drlb_lab::{Lab, CLIENT_ADDR};
use lb_userspace::control::config::XdpMode;

static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

const CONNECTIONS: usize = 32;
/// keepalived with advert_int 1 declares a master dead after 3 adverts and a skew: ~3.6 s.
const VRRP_LIMIT: Duration = Duration::from_secs(10);

fn drlb() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_drlb"))
}

fn skip_unless_ready() -> bool {
    if support::skip_unless_root() {
        return true;
    }
    if std::process::Command::new("keepalived").arg("--version").output().is_err() {
        support::skip("keepalived is not installed (`cargo xtask setup` installs it)");
        return true;
    }
    false
}

/// Both directors up with drlb (sync on or off) and keepalived; `director` holds the VIP;
/// `CONNECTIONS` connections held through it, each answered once.
fn pair_with_connections(sync: bool) -> (Lab, Vec<TcpStream>) {
    let mut lab = Lab::build_pair(XdpMode::Native).expect("build the two-director lab");
    for role in drlb_lab::ha::DIRECTORS {
        let config = lab.pair_config(role, sync);
        lab.start_director(role, drlb(), &config).expect("start drlb");
    }
    lab.start_keepalived("director", drlb()).unwrap();
    lab.wait_for_vip("director", VRRP_LIMIT).expect("the master takes the VIP");
    lab.start_keepalived("director2", drlb()).unwrap();
    // The backup has listened to a few adverts and stays backup.
    std::thread::sleep(Duration::from_secs(2));
    lab.wait_for_vip("director", VRRP_LIMIT).expect("the master keeps the VIP");
    let (who, held) = lab.connections(CONNECTIONS, CLIENT_ADDR, true).expect("connections through the master");
    assert_eq!(who.len(), CONNECTIONS);
    assert!(who.contains(&0) && who.contains(&1), "wlc uses both real servers: {who:?}");
    (lab, held)
}

/// Every request answered, none later than the VIP move plus one TCP retransmission:
/// with exponential backoff, a segment first sent at 0 is retransmitted by twice the time
/// that has passed, so an answer comes by 2 × (the failover) + slack.
fn assert_all_continued(answers: &[Answer], failover: Duration, what: &str) {
    let failed: Vec<_> = answers.iter().filter(|a| a.result.is_err()).collect();
    assert!(failed.is_empty(), "{what}: {} of {} connections broke: {:?}", failed.len(), answers.len(), failed.first());
    let limit = failover * 2 + Duration::from_millis(1500);
    let slowest = answers.iter().map(|a| a.after).max().unwrap_or_default();
    assert!(slowest <= limit, "{what}: the slowest connection stalled {slowest:?} (failover took {failover:?}; limit {limit:?})");
    println!("{what}: {} of {} connections continued; failover {failover:?}, slowest answer {slowest:?}", answers.len(), answers.len());
}

/// `drlb status` on `role` says it holds the VIP (its controller reports once a second).
fn assert_holds_per_status(lab: &Lab, role: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let status = lab.director_cli(role, drlb(), &["status"]).unwrap();
        if status.contains("held by this director") {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{role}'s status does not say it holds the VIP:\n{status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (a) The master's link goes down: the backup takes the VIP and every connection goes on
/// through it, new ones work; (c) the link comes back, the master takes the VIP back
/// (preemption) and every connection still goes on.
#[test]
fn link_down_failover_and_fail_back_keep_every_connection() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, mut held) = pair_with_connections(true);
    let synced = lab.wait_for_synced("director2", CONNECTIONS as u64, Duration::from_secs(5)).expect("the backup learns the connections");
    println!("the backup installed {synced} synced connection entries");

    lab.set_link("director", false).unwrap();
    let (answers, failover) = std::thread::scope(|s| {
        let requests = s.spawn(|| lab.requests_concurrently(&mut held, Duration::from_secs(30)));
        let failover = lab.wait_for_vip("director2", VRRP_LIMIT).expect("the backup takes the VIP");
        (requests.join().unwrap(), failover)
    });
    assert_all_continued(&answers, failover, "failover (master link down)");
    // And once the client follows the VIP's gratuitous ARP to the new master.
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(30));
    assert_all_continued(&answers, failover, "after the failover");
    let fresh = lab.http_requests(10, Duration::from_secs(3)).unwrap();
    assert_eq!(fresh.ok, 10, "new connections through the new master: {:?}", fresh.first_error);
    assert_holds_per_status(&lab, "director2");

    lab.set_link("director", true).unwrap();
    let failback = lab.wait_for_vip("director", Duration::from_secs(15)).expect("the master takes the VIP back");
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(30));
    assert_all_continued(&answers, failback, "fail-back");
    let fresh = lab.http_requests(10, Duration::from_secs(3)).unwrap();
    assert_eq!(fresh.ok, 10, "new connections after fail-back: {:?}", fresh.first_error);
}

/// (b) keepalived on the master stops gracefully (priority 0: the backup takes over at
/// once); then it starts again and takes the VIP back; (e) drlb on the master is killed:
/// `drlb ready` fails, keepalived gives the VIP away, and the connections go on.
#[test]
fn graceful_keepalived_stop_and_killed_drlb_keep_every_connection() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut lab, mut held) = pair_with_connections(true);
    lab.wait_for_synced("director2", CONNECTIONS as u64, Duration::from_secs(5)).expect("the backup learns the connections");

    lab.stop_keepalived("director").unwrap();
    let failover = lab.wait_for_vip("director2", VRRP_LIMIT).expect("the backup takes the VIP");
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(30));
    assert_all_continued(&answers, failover, "keepalived stopped on the master");

    lab.start_keepalived("director", drlb()).unwrap();
    let failback = lab.wait_for_vip("director", Duration::from_secs(15)).expect("the master takes the VIP back");
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(30));
    assert_all_continued(&answers, failback, "fail-back after keepalived restarted");

    lab.stop_director("director", true).unwrap();
    let (answers, failover) = std::thread::scope(|s| {
        let requests = s.spawn(|| lab.requests_concurrently(&mut held, Duration::from_secs(30)));
        let failover = lab.wait_for_vip("director2", VRRP_LIMIT).expect("keepalived gives the VIP away when drlb dies");
        (requests.join().unwrap(), failover)
    });
    assert!(lab.keepalived_log("director").contains("chk_drlb"), "keepalived's log names the failed check");
    assert_all_continued(&answers, failover, "drlb killed on the master");
    let fresh = lab.http_requests(10, Duration::from_secs(3)).unwrap();
    assert_eq!(fresh.ok, 10, "new connections: {:?}", fresh.first_error);
}

/// (d) The same failover without connection sync breaks connections: the new master has
/// no entry for them and drops their packets (drop_no_connection). This is what sync is for.
#[test]
fn without_sync_failover_breaks_connections() {
    if skip_unless_ready() {
        return;
    }
    let _serial = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, mut held) = pair_with_connections(false);
    lab.set_link("director", false).unwrap();
    lab.wait_for_vip("director2", VRRP_LIMIT).expect("the backup takes the VIP");
    let answers = lab.requests_concurrently(&mut held, Duration::from_secs(8));
    let broken = answers.iter().filter(|a| a.result.is_err()).count();
    println!("without sync: {broken} of {} connections broke", answers.len());
    assert_eq!(broken, answers.len(), "without sync every connection should break");
    let status = lab.director_cli("director2", drlb(), &["status", "--reasons"]).unwrap();
    let dropped: u64 = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("drop_no_connection").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    assert!(dropped > 0, "the new master dropped them as drop_no_connection:\n{status}");
}
