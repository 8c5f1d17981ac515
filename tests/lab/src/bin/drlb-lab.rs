//! `drlb-lab demo`: the netns lab end to end — what `cargo xtask demo` runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lb_userspace::control::config::XdpMode;
use lb_userspace::kernel::mac::format_mac;
use drlb_lab::{self as lab, Lab, REAL_SERVERS};

#[derive(Parser)]
#[command(name = "drlb-lab", about = "drlb's network-namespace lab")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Native,
    Generic,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab, run drlb on the director, send HTTP requests to the VIP, tear down.
    Demo {
        /// The drlb binary to run on the director.
        #[arg(long)]
        drlb: PathBuf,
        #[arg(long, value_enum, default_value = "native")]
        mode: Mode,
        #[arg(long, default_value_t = 100)]
        requests: usize,
        /// Two directors with keepalived (VRRP) and connection sync; the master's link goes
        /// down mid-connection.
        #[arg(long)]
        ha: bool,
        /// Three directors behind an ECMP router, each announcing the VIP over BGP (BIRD);
        /// one is drained and comes back mid-connection.
        #[arg(long, conflicts_with = "ha")]
        ecmp: bool,
    },
    /// Record the client's side of a lab session (ARP, IPv6 neighbour discovery, TCP through
    /// the VIP, ping, UDP answered by ICMP) into a pcap: how tests/data/lab-client.pcap,
    /// which the dataplane tests replay, was made.
    Record {
        #[arg(long)]
        drlb: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

fn record(drlb: PathBuf, out: PathBuf) -> Result<String> {
    let mut lab = Lab::build(XdpMode::Native)?;
    // Started after drlb: starting it turns the client's tx offloads off, which restarts
    // the capture's interface.
    lab.start_drlb(&drlb)?;
    let capture = lab.capture_pcap("client", &std::path::absolute(&out)?)?;
    // The client asks for the VIP's MAC afresh, so the capture starts with ARP.
    lab::sh("ip", &["netns", "exec", &lab.ns("client"), "ip", "neigh", "flush", "dev", "eth0"])?;
    let tally = lab.http_requests(10, Duration::from_secs(2))?;
    lab.ping_director()?;
    // No service for UDP: the director's kernel answers with ICMP port unreachable.
    lab::in_netns(&lab.ns("client"), || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"drlb-lab", (lab::VIP, 53))?;
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    })?;
    capture.finish()?;
    lab.stop_drlb()?;
    Ok(format!("record: {} written ({} of 10 requests ok)", out.display(), tally.ok))
}

fn demo(drlb: PathBuf, mode: Mode, requests: usize, interrupted: Arc<AtomicBool>) -> Result<String> {
    let mode = match mode {
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    println!("demo: building the lab (client, director, rs1, rs2 on a bridge; XDP {mode:?} mode)");
    let mut lab = Lab::build(mode)?;
    println!("  client   {}  {}", lab::CLIENT.addr, format_mac(&lab::CLIENT.mac));
    println!("  director {}  {}  VIP {}", lab::DIRECTOR.addr, format_mac(&lab::DIRECTOR.mac), lab::VIP);
    for rs in REAL_SERVERS {
        println!("  {}      {}  {}  (nginx; VIP on lo, arp_ignore=1 arp_announce=2)", rs.role, rs.addr, format_mac(&rs.mac));
    }
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    println!("demo: starting drlb on the director");
    lab.start_drlb(&drlb)?;
    println!("demo: sending {requests} HTTP requests from the client to http://{}/", lab::VIP);
    let mut tally = lab::Tally::default();
    for _ in 0..requests {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let one = lab.http_requests(1, Duration::from_secs(2))?;
        tally.ok += one.ok;
        tally.failed += one.failed;
        for i in 0..2 {
            tally.per_server[i] += one.per_server[i];
        }
        if tally.first_error.is_none() {
            tally.first_error = one.first_error;
        }
    }
    for (rs, n) in REAL_SERVERS.iter().zip(tally.per_server) {
        println!("  {} answered {n}", rs.role);
    }
    if let Some(e) = &tally.first_error {
        println!("  first failure: {e}");
    }
    let log = lab.stop_drlb()?;
    println!("demo: drlb's log:");
    for line in log.lines() {
        println!("  | {line}");
    }
    drop(lab);
    Ok(format!(
        "demo: {}/{requests} requests ok; rs1={} rs2={}",
        tally.ok, tally.per_server[0], tally.per_server[1]
    ))
}

/// Two directors, keepalived placing the VIP, drlb with connection sync on both; 32
/// connections held through the master; the master's link goes down; one more request on
/// every connection. Returns the closing line and whether every connection went on.
fn demo_ha(drlb: PathBuf, mode: Mode) -> Result<(String, bool)> {
    const HELD: usize = 32;
    let mode = match mode {
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    println!("demo --ha: building the lab: client, two directors, rs1, rs2 on a bridge (XDP {mode:?} mode)");
    let mut lab = Lab::build_pair(mode)?;
    println!("  director  {}  director2 {}  VIP {} (placed by keepalived)", lab::DIRECTOR.addr, lab::DIRECTOR2.addr, lab::VIP);
    for role in lab::ha::DIRECTORS {
        println!("demo --ha: starting drlb on {role} (sync: syncid 7 via 224.0.0.81:8848)");
        let config = lab.pair_config(role, true);
        lab.start_director(role, &drlb, &config)?;
    }
    println!("demo --ha: starting keepalived --vrrp on both (configs/keepalived-vrrp.conf: director MASTER 100, director2 BACKUP 90)");
    lab.start_keepalived("director", &drlb)?;
    let took = lab.wait_for_vip("director", Duration::from_secs(10))?;
    println!("  director holds the VIP after {took:.1?}");
    lab.start_keepalived("director2", &drlb)?;
    std::thread::sleep(Duration::from_secs(2));
    println!("demo --ha: opening {HELD} keep-alive HTTP connections through the master (wlc)");
    let (who, mut held) = lab.connections(HELD, lab::CLIENT_ADDR, true)?;
    println!("  rs1 has {}, rs2 has {}", who.iter().filter(|w| **w == 0).count(), who.iter().filter(|w| **w == 1).count());
    let synced = lab.wait_for_synced("director2", HELD as u64, Duration::from_secs(5))?;
    println!("  director2 installed {synced} connection entries from director's sync");
    println!("demo --ha: taking director's link down; one more request on every connection");
    lab.set_link("director", false)?;
    let (answers, failover) = lab.requests_during_failover(&mut held, "director2", Duration::from_secs(10))?;
    let kept = answers.iter().filter(|a| a.result.is_ok()).count();
    let slowest = answers.iter().map(|a| a.after).max().unwrap_or_default();
    println!("  director2 holds the VIP after {failover:.1?}; slowest answer after {slowest:.1?}");
    let fresh = lab.http_requests(10, Duration::from_secs(3))?;
    for line in lab.director_cli("director2", &drlb, &["status"])?.lines() {
        println!("  | {line}");
    }
    drop(lab);
    let all_ok = kept == HELD && fresh.ok == 10;
    Ok((
        format!(
            "demo --ha: {kept}/{HELD} connections kept across failover (VIP moved in {failover:.1?}); {}/10 new connections ok",
            fresh.ok
        ),
        all_ok,
    ))
}

fn demo_ecmp(drlb: PathBuf, mode: Mode) -> Result<(String, bool)> {
    use lab::ecmp::{EcmpSetup, LAB_REFRESH};
    const HELD: usize = 60;
    const NEW: usize = 600;
    let mode = match mode {
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    let setup = EcmpSetup { scheduler: "wlc", sync: true, sloppy_tcp: false };
    println!("demo --ecmp: building the lab: far client, a router, three directors, rs1, rs2 (XDP {mode:?} mode)");
    let mut lab = Lab::build_ecmp(mode, 3)?;
    println!("  router {} (BIRD, AS {}, merge paths: one ECMP route, 5-tuple hash)", lab::ROUTER_ADDR, lab::ecmp::ROUTER_AS);
    let roles: Vec<&str> = lab.directors().iter().map(|d| d.role).collect();
    for d in lab.directors() {
        println!("  {:<10} {} (BIRD with configs/bird-director.conf, AS {})", d.role, d.addr, lab::ecmp::DIRECTOR_AS);
    }
    for role in &roles {
        lab.start_ecmp_director(role, &drlb, setup)?;
    }
    println!(
        "demo --ecmp: drlb runs on all three (wlc, sync with the other two); each announces {} once warmed up ({LAB_REFRESH:?})",
        lab::VIP
    );
    let took = lab.wait_for_next_hops(&roles, Duration::from_secs(30))?;
    println!("  the router's route after {took:.1?}:");
    for line in lab::sh("ip", &["-n", &lab.ns("router"), "route", "show", &lab::VIP.to_string()])?.lines() {
        println!("  | {}", line.trim_end());
    }
    let before: Vec<u64> = roles.iter().map(|r| lab.director_new_connections(r)).collect::<Result<_>>()?;
    let tally = lab.far_requests(NEW, Duration::from_secs(3))?;
    let per: Vec<u64> = roles.iter().zip(&before).map(|(r, b)| lab.director_new_connections(r).map(|n| n - b)).collect::<Result<_>>()?;
    println!("demo --ecmp: {NEW} new connections from the far client: {} answered; per director {per:?}", tally.ok);
    println!("demo --ecmp: opening {HELD} keep-alive connections; then director3 is drained (`drlb drain`)");
    let (first, mut held) = lab.far_connections(HELD)?;
    std::thread::sleep(Duration::from_secs(1));
    let mut drained = String::new();
    let bad = lab.rounds_while(&first, &mut held, "  requests while director3 drains", || {
        drained = lab.director_cli("director3", &drlb, &["drain"]).unwrap_or_else(|e| format!("{e:#}"));
    });
    for line in drained.lines() {
        println!("  | {line}");
    }
    lab.reap_director("director3")?;
    for line in lab.director_cli("director", &drlb, &["status"])?.lines().filter(|l| l.starts_with("VIP") || l.starts_with("Sync")) {
        println!("  | {line}");
    }
    println!("demo --ecmp: director3 starts again: it learns the connections from sync, then announces");
    lab.start_ecmp_director("director3", &drlb, setup)?;
    let back = lab.rounds_while(&first, &mut held, "  requests while director3 returns", || {
        let _ = lab.wait_for_next_hops(&roles, Duration::from_secs(30));
    });
    let spread_ok = per.iter().all(|n| *n as usize >= NEW / 5);
    let all_ok = tally.ok == NEW && bad.is_empty() && back.is_empty() && spread_ok;
    Ok((
        format!(
            "demo --ecmp: {NEW}/{NEW} new connections spread {per:?}; {}/{HELD} long-lived connections kept through a drain and {}/{HELD} through the return",
            HELD - bad.len().min(HELD),
            HELD - back.len().min(HELD)
        )
        .replace(&format!("{NEW}/{NEW}"), &format!("{}/{NEW}", tally.ok)),
        all_ok,
    ))
}

fn main() -> ExitCode {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    // The lab is torn down by Drop when demo() returns early on Ctrl-C.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    match Cli::parse().command {
        Cmd::Record { drlb, out } => match record(drlb, out) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("record failed: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Demo { drlb, mode, ecmp: true, .. } => match demo_ecmp(drlb, mode) {
            Ok((summary, all_ok)) => {
                println!("{summary}");
                if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("demo --ecmp failed: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Demo { drlb, mode, ha: true, .. } => match demo_ha(drlb, mode) {
            Ok((summary, all_ok)) => {
                println!("{summary}");
                if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("demo --ha failed: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Demo { drlb, mode, requests, ha: false, ecmp: false } => match demo(drlb, mode, requests, interrupted) {
            Ok(summary) => {
                let all_ok = summary.contains(&format!(" {requests}/{requests} "));
                println!("{summary}");
                if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("demo failed: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
