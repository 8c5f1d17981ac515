//! `drlb`: a Direct-Routing L4 load balancer whose dataplane is an XDP program.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lb_userspace::control::config::Config;

#[derive(Parser)]
#[command(name = "drlb", version, about = "Direct-Routing L4 load balancer (XDP dataplane)")]
struct Cli {
    /// How log lines are written to standard error: text, or one JSON object per line with
    /// stable field names (docs/operations.md).
    #[arg(long, global = true, value_enum, env = "DRLB_LOG_FORMAT", default_value = "text")]
    log_format: lb_userspace::observe::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/drlb/drlb.yaml";

/// `drlb check --handover`'s status when the config is valid but its dataplane cannot be
/// handed over (configs/package scripts restart drlb then; on 1 they leave it running).
const EXIT_NO_HANDOVER: u8 = 3;

#[derive(Subcommand)]
enum Command {
    /// Load the dataplane, attach it to the director interface and keep the maps current.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// If a dataplane with another layout is pinned for this interface, remove it (its
        /// connections are dropped) instead of refusing to start.
        #[arg(long)]
        replace_dataplane: bool,
    },
    /// Show services and real servers as `ipvsadm -Ln` does, from the pinned dataplane
    /// (works while `drlb run` runs and after it died).
    Status {
        /// The config file (names, the interface); without one, /etc/drlb/drlb.yaml if it
        /// exists, else every dataplane pinned under /sys/fs/bpf/drlb.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Conns, InPkts, InBytes since the dataplane was created.
        #[arg(long)]
        stats: bool,
        /// CPS, InPPS, InBPS over one second.
        #[arg(long)]
        rate: bool,
        /// Packets by verdict reason.
        #[arg(long)]
        reasons: bool,
        /// Everything as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when this director's controller runs, is responsive and its dataplane is
    /// attached; otherwise say why and exit 1. For keepalived's `vrrp_script`, so a director
    /// whose drlb is not serving gives its VIPs away (configs/keepalived-vrrp.conf).
    Ready {
        /// As for `status`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Benchmark the dataplane: BPF_PROG_TEST_RUN replay against floors measured in the
    /// same run, and live forwarding through a veth pair. Writes a Markdown report, an SVG
    /// chart and JSON to --out.
    Bench {
        /// Runs per figure (min / median / max over them; at least 5).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Small packet counts (a smoke run, not for figures).
        #[arg(long)]
        quick: bool,
        /// Skip the live veth measurement.
        #[arg(long)]
        no_live: bool,
        /// Also replay a capture.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Rewrite the capture's IPv4 destinations to the bench VIP.
        #[arg(long)]
        rewrite_vip: bool,
        /// Real servers behind the bench VIP (wlc).
        #[arg(long, default_value_t = 16)]
        real_servers: u32,
        /// With connection sync's reports on (the ring read as the controller would).
        #[arg(long)]
        sync: bool,
        /// Measure the controller instead of the dataplane: a real `drlb run` in a lab with
        /// a thousand health-checked real servers, a million connections in its table, a
        /// reload to 4,096 services and timed health verdicts (report `<date>-<arch>-controller`).
        #[arg(long)]
        controller: bool,
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Print one JSON object instead of the Markdown report.
        #[arg(long)]
        json: bool,
    },
    /// Check the director end to end: one line per check, OK or FAIL with the fix.
    Doctor {
        /// The config file (names, the interface); without one, /etc/drlb/drlb.yaml if it
        /// exists, else every dataplane pinned under /sys/fs/bpf/drlb.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// How long to watch the counters.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        sample: std::time::Duration,
    },
    /// Show the dataplane's decision for each VIP-bound packet, live.
    Trace {
        /// The config file (names, the interface); without one, /etc/drlb/drlb.yaml if it
        /// exists, else every dataplane pinned under /sys/fs/bpf/drlb.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only packets for this VIP.
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// Stop after this many packets.
        #[arg(long)]
        count: Option<usize>,
        /// Stop after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Load the dataplane into this kernel and run the fixture table through it
    /// (BPF_PROG_TEST_RUN; touches no interface). What the VM tests run in each guest.
    Selftest {
        /// Also build a throwaway lab of network namespaces (needs veth and bridge) and
        /// send real TCP through the VIP with the balancer attached, in native and generic
        /// mode. Needs no tool besides this binary.
        #[arg(long)]
        lab: bool,
        /// Also send this many random and mutated frames through the program and the host
        /// model, which must agree on every one (verdict, output, connection, counts).
        #[arg(long, value_name = "FRAMES")]
        fuzz: Option<u64>,
        /// The fuzz run's random seed (a failure names the seed that reproduces it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also exchange connections with the kernel's IPVS over its sync protocol, both
        /// ways, with real TCP (needs the ip_vs modules and ipvsadm; the VM tests run it).
        #[arg(long)]
        ipvs_sync: bool,
        /// Also check that the kernel's IPVS and drlb send the same clients to the same real
        /// servers under sh and mh (needs the ip_vs_sh and ip_vs_mh modules and ipvsadm).
        #[arg(long)]
        ipvs_choices: bool,
        /// Run the fixture table as this user (name or uid) with only the capabilities
        /// drlb.service grants (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): proves this kernel
        /// loads and runs the dataplane unprivileged. Started as root; not with the others.
        #[arg(long, value_name = "USER", conflicts_with_all = ["lab", "fuzz", "ipvs_sync", "ipvs_choices"])]
        as_user: Option<String>,
        /// With --as-user: leave this one of those capabilities out too (e.g. CAP_PERFMON),
        /// to see the kernel refuse and drlb name it.
        #[arg(long, value_name = "CAP", requires = "as_user")]
        without: Vec<String>,
    },
    /// The real-server side of Direct Routing.
    Realserver {
        #[command(subcommand)]
        command: RealserverCommand,
    },
    /// Remove the dataplane on purpose: stop the controller if one runs, detach XDP and
    /// remove the pins.
    Stop {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Take this director out of service behind ECMP routers (`director.announce`): withdraw
    /// every VIP, forward until the routers have moved its flows to the other directors
    /// (at most `drain_timeout`), then detach and stop.
    Drain {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file; prints FILE:LINE:COLUMN: message per problem.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also check a `drlb run` of this config runs and this binary can take its
        /// dataplane over (SIGUSR2 keeps connections only then): what package upgrades ask
        /// before signalling the running controller. Exit 0: hand over; 3: it cannot (a
        /// restart is what applies this config); 1: the config does not validate.
        #[arg(long)]
        handover: bool,
    },
    /// Translate a keepalived.conf, read as keepalived reads it (includes, $VARs, @id lines,
    /// ~SEQ), into drlb YAML; with --vrrp-out also write the rest of it (VRRP) for
    /// `keepalived --vrrp`. Reports `FILE:LINE: keyword: why (what drlb does instead)` on
    /// stderr for everything not translated one to one.
    ImportKeepalived {
        /// The keepalived.conf to import.
        file: PathBuf,
        /// Where to write drlb's YAML (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the VRRP-only keepalived.conf.
        #[arg(long)]
        vrrp_out: Option<PathBuf>,
        /// keepalived's config id for `@id` lines (keepalived's -i; default: the short host name).
        #[arg(long)]
        config_id: Option<String>,
        /// Exit non-zero if anything is reported.
        #[arg(long)]
        strict: bool,
    },
    /// Print a completion script for `shell` to standard output (the packages install
    /// bash's, zsh's and fish's).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (drlb(8) and one per command, drlb-run(8) ...) into DIR: how
    /// `cargo xtask package` makes them.
    #[command(hide = true)]
    Manpages {
        #[arg(long)]
        out: PathBuf,
    },
    /// Make the `drlb run` using this config re-read it (same as SIGHUP). The file is
    /// validated first; a running controller also keeps serving if it finds it invalid.
    Reload {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum RealserverCommand {
    /// Put each VIP on lo, set arp_ignore=1 / arp_announce=2 on all, lo and the uplink,
    /// relax a strict rp_filter; with --persist also a sysctl.d file and a systemd unit.
    Setup {
        #[arg(long = "vip", required = true)]
        vips: Vec<std::net::IpAddr>,
        /// The interface clients' packets arrive on (default: the default route's).
        #[arg(long)]
        uplink: Option<String>,
        #[arg(long)]
        persist: bool,
    },
    /// Report every setting that breaks DR on this server, with its consequence.
    Check {
        #[arg(long = "vip", required = true)]
        vips: Vec<std::net::IpAddr>,
        #[arg(long)]
        uplink: Option<String>,
    },
}

/// Sets `flag` on SIGINT or SIGTERM, through tokio's signal handling like `drlb run`'s.
fn stop_on_signal(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else { return };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    });
}

/// The dataplanes a read-only command looks at, with the config that names their parts:
/// the file given, else /etc/drlb/drlb.yaml if it exists, else every dataplane pinned
/// under the default pin root (no names then).
fn targets(config: Option<PathBuf>) -> Result<Vec<(Option<Config>, PathBuf)>, String> {
    let path = config.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    if let Some(path) = path {
        let cfg = Config::load(&path).map_err(|e| e.to_string())?;
        let dir = cfg.director.pin_dir();
        return Ok(vec![(Some(cfg), dir)]);
    }
    let root = std::path::Path::new(lb_userspace::kernel::pins::DEFAULT_PIN_ROOT);
    let found = lb_userspace::kernel::pins::discover(root);
    if found.is_empty() {
        return Err(format!(
            "no config file ({DEFAULT_CONFIG} does not exist) and no drlb dataplane pinned under {}: is `drlb run` running?",
            root.display()
        ));
    }
    Ok(found.into_iter().map(|d| (None, d)).collect())
}

fn main() -> ExitCode {
    // Logs go through tracing; `log` records (ours, aya's) are forwarded to it.
    let cli = Cli::parse();
    lb_userspace::observe::logging::init(cli.log_format);
    match cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "drlb", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            ExitCode::SUCCESS
        }
        Command::Manpages { out } => match write_manpages(&out) {
            Ok(n) => {
                println!("drlb manpages: {n} page(s) written to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("drlb manpages: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config, handover } => match Config::load(&config) {
            Ok(c) => {
                if handover {
                    let dir = c.director.pin_dir();
                    let runs = match lb_userspace::kernel::process::running_controller(&dir) {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(anyhow::anyhow!(
                            "no `drlb run` runs the dataplane of this config ({}): nothing to hand over (a director \
                             section changed since it started?); a restart applies this config",
                            dir.display()
                        )),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = lb_userspace::kernel::bpf::can_adopt(&dir).and(runs) {
                        eprintln!("drlb check --handover: {e:#}");
                        return ExitCode::from(EXIT_NO_HANDOVER);
                    }
                }
                let servers: usize = c.services.iter().map(|s| s.real_servers.len()).sum();
                println!("{}: OK ({} service(s), {servers} real server(s))", config.display(), c.services.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::ImportKeepalived { file, out, vrrp_out, config_id, strict } => import_keepalived(&file, out.as_deref(), vrrp_out.as_deref(), config_id, strict),
        Command::Reload { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("drlb reload: not reloading: the file does not validate");
                    return ExitCode::FAILURE;
                }
            };
            match lb_userspace::kernel::process::signal_controller(&cfg.director.pin_dir(), nix::sys::signal::Signal::SIGHUP) {
                Ok(None) => {
                    eprintln!("drlb reload: no `drlb run` runs the dataplane of {} ({})", config.display(), cfg.director.pin_dir().display());
                    ExitCode::FAILURE
                }
                Ok(Some(pid)) => {
                    println!("drlb reload: sent SIGHUP to {pid}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("drlb reload: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ready { config } => {
            let targets = match targets(config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drlb ready: not ready: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for (_, dir) in &targets {
                if let Err(why) = lb_userspace::observe::state::ready(dir) {
                    eprintln!("drlb ready: not ready: {why}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Status { config, stats, rate, reasons, json } => {
            let targets = match targets(config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drlb status: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut code = ExitCode::SUCCESS;
            for (cfg, dir) in &targets {
                let status = if rate || json {
                    lb_userspace::observe::status::read_with_rates(dir, cfg.as_ref(), std::time::Duration::from_secs(1))
                } else {
                    lb_userspace::observe::status::read(dir, cfg.as_ref())
                };
                match status {
                    Ok(s) if json => println!("{}", serde_json::to_string_pretty(&s).expect("status serialises")),
                    Ok(s) => print!("{}", lb_userspace::observe::status::render(&s, lb_userspace::observe::status::View { stats, rate, reasons })),
                    Err(e) => {
                        eprintln!("drlb status: {e:#}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
            code
        }
        Command::Bench { controller: true, quick, out, json, .. } => {
            let opts = if quick { lb_userspace::bench::controller::ControllerOptions::quick() } else { lb_userspace::bench::controller::ControllerOptions::full() };
            let machine = lb_userspace::bench::report::Machine::probe();
            let progress = |what: &str| if !json { eprintln!("drlb bench --controller: {what}") };
            match lb_userspace::bench::controller::run(&opts, &progress) {
                Ok(result) => {
                    let path = lb_userspace::bench::report::write_controller(&out, &machine, &result);
                    if json {
                        println!("{}", serde_json::to_string(&result).expect("result serialises"));
                    } else {
                        print!("{}", lb_userspace::bench::controller::markdown(&result));
                    }
                    match path {
                        Ok(p) => eprintln!("drlb bench: report written to {}", p.display()),
                        Err(e) => eprintln!("drlb bench: could not write the report: {e:#}"),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("drlb bench --controller: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { runs, quick, no_live, pcap, rewrite_vip, real_servers, sync, out, json, controller: false } => {
            let mut opts = if quick { lb_userspace::bench::Options::quick() } else { lb_userspace::bench::Options::full() };
            opts.runs = runs.max(5);
            opts.live = !no_live;
            opts.pcap = pcap;
            opts.pcap_rewrite_vip = rewrite_vip;
            opts.real_servers = real_servers.clamp(1, 256);
            opts.sync = sync;
            opts.progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let machine = lb_userspace::bench::report::Machine::probe();
            match lb_userspace::bench::run(&opts) {
                Ok(results) => {
                    let path = lb_userspace::bench::report::write(&out, &machine, &results);
                    if json {
                        let report = lb_userspace::bench::report::Report {
                            machine: &machine,
                            ratios: &results.ratios,
                            targets: &results.targets,
                            results: &results,
                        };
                        println!("{}", serde_json::to_string(&report).expect("report serialises"));
                    } else {
                        print!("{}", lb_userspace::bench::report::markdown(&machine, &results));
                    }
                    match path {
                        Ok(p) => eprintln!("drlb bench: report written to {}", p.display()),
                        Err(e) => eprintln!("drlb bench: could not write the report: {e:#}"),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("drlb bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor { config, sample } => {
            let targets = match targets(config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drlb doctor: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let mut all_ok = true;
            for (cfg, dir) in &targets {
                if targets.len() > 1 {
                    println!("== {}", dir.display());
                }
                match rt.block_on(lb_userspace::observe::doctor::run(cfg.as_ref(), dir, sample)) {
                    Ok(checks) => {
                        for c in &checks {
                            println!("{c}");
                        }
                        all_ok &= checks.iter().all(|c| c.ok);
                    }
                    Err(e) => {
                        eprintln!("drlb doctor: {e:#}");
                        all_ok = false;
                    }
                }
            }
            if all_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Trace { config, vip, count, duration } => {
            let mut targets = match targets(config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("drlb trace: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if targets.len() > 1 {
                let dirs: Vec<String> = targets.iter().map(|(_, d)| d.display().to_string()).collect();
                eprintln!("drlb trace: several dataplanes are pinned ({}): name one with --config", dirs.join(", "));
                return ExitCode::FAILURE;
            }
            let (cfg, dir) = targets.remove(0);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            stop_on_signal(stop.clone());
            match lb_userspace::observe::trace::run(&dir, cfg, vip, count, duration, stop) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("drlb trace: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Selftest { lab, fuzz, seed, ipvs_sync, ipvs_choices, as_user, without } => {
            if let Some(user) = as_user {
                use lb_userspace::kernel::privileges::{self, RUN};
                let unknown: Vec<&String> = without.iter().filter(|w| !RUN.iter().any(|c| c.name.eq_ignore_ascii_case(w))).collect();
                if !unknown.is_empty() {
                    eprintln!("selftest --without: {unknown:?} is not one of {}", privileges::names_of(&RUN).join(" "));
                    return ExitCode::FAILURE;
                }
                let caps: Vec<privileges::Capability> = RUN.into_iter().filter(|c| !without.iter().any(|w| c.name.eq_ignore_ascii_case(w))).collect();
                let ids = privileges::ids_of(&user).ok_or_else(|| format!("no user {user} (in /etc/passwd)"));
                if let Err(e) = ids.map_err(anyhow::Error::msg).and_then(|(uid, gid)| privileges::become_user(uid, gid, &caps).map(|()| uid)).map(|uid| {
                    println!("selftest: as uid {uid} with only {} (and LimitMEMLOCK=infinity, as drlb.service)", privileges::names_of(&caps).join(" "));
                }) {
                    eprintln!("selftest --as-user: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
            match std::panic::catch_unwind(lb_userspace::selftest::fixtures::run_table) {
                Ok(rows) => println!("selftest: {rows} fixture rows passed"),
                Err(_) => {
                    eprintln!("selftest: FAILED (see the message above)");
                    return ExitCode::FAILURE;
                }
            }
            if let Some(frames) = fuzz {
                match lb_userspace::selftest::fuzz::run(frames, seed) {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        eprintln!("selftest fuzz: FAILED: {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if ipvs_choices {
                match lb_userspace::selftest::ipvs_choices::run() {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        eprintln!("selftest ipvs-choices: FAILED: {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if ipvs_sync {
                match lb_userspace::selftest::ipvs_sync::run() {
                    Ok(report) => println!("{report}"),
                    Err(e) => {
                        eprintln!("selftest ipvs-sync: FAILED: {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if lab {
                match lb_userspace::selftest::lab::run(&[lb_userspace::control::config::XdpMode::Native, lb_userspace::control::config::XdpMode::Generic]) {
                    Ok(results) => println!("{}", lb_userspace::selftest::lab::summary(&results)),
                    Err(e) => {
                        eprintln!("selftest lab: FAILED: {e:#}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Command::Realserver { command } => {
            let (vips, uplink) = match &command {
                RealserverCommand::Setup { vips, uplink, .. } | RealserverCommand::Check { vips, uplink } => (vips.clone(), uplink.clone()),
            };
            let uplink = match uplink.map(Ok).unwrap_or_else(lb_userspace::realserver::uplink) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("drlb realserver: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            match command {
                RealserverCommand::Setup { persist, .. } => match lb_userspace::realserver::setup(&vips, &uplink, persist) {
                    Ok(did) => {
                        if did.is_empty() {
                            println!("already set up: nothing to change");
                        }
                        for d in did {
                            println!("{d}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("drlb realserver setup: {e:#}");
                        ExitCode::FAILURE
                    }
                },
                RealserverCommand::Check { .. } => match lb_userspace::realserver::check(&vips, &uplink) {
                    Ok(findings) => {
                        for f in &findings {
                            println!("{} {}", if f.ok { "OK  " } else { "FAIL" }, f.text);
                        }
                        if findings.iter().all(|f| f.ok) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                    }
                    Err(e) => {
                        eprintln!("drlb realserver check: {e:#}");
                        ExitCode::FAILURE
                    }
                },
            }
        }
        Command::Drain { config } => match lb_userspace::kernel::process::drain(&config) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("drlb drain: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Stop { config } => match lb_userspace::kernel::process::stop(&config) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("drlb stop: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, replace_dataplane } => {
            // One thread for the event loop, the health checkers, sync and metrics: nothing
            // there blocks for long (the sweep has a thread of its own), and a thousand checks
            // a second cost far less without waking other threads for every result.
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("drlb: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(lb_userspace::control::controller::run(&config, replace_dataplane)) {
                Ok(lb_userspace::control::controller::RunEnd::Stopped) => ExitCode::SUCCESS,
                Ok(lb_userspace::control::controller::RunEnd::Drained) => ExitCode::from(lb_userspace::control::controller::EXIT_DRAINED),
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// drlb(8) and drlb-COMMAND(8) for every command an operator sees, from the clap
/// definitions above (so a page never disagrees with `--help`).
fn write_manpages(out: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(out)?;
    let drlb = <Cli as clap::CommandFactory>::command().name("drlb");
    let mut pages = vec![drlb.clone()];
    pages.extend(drlb.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help").map(|c| {
        let name = format!("drlb-{}", c.get_name());
        let usage = format!("drlb {}", c.get_name());
        c.clone().name(name).bin_name(usage).version(drlb.get_version().unwrap_or_default().to_string())
    }));
    for page in &pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page.clone()).section("8").render(&mut text)?;
        std::fs::write(out.join(format!("{}.8", page.get_name())), text)?;
    }
    Ok(pages.len())
}

/// `drlb import-keepalived`.
fn import_keepalived(file: &std::path::Path, out: Option<&std::path::Path>, vrrp_out: Option<&std::path::Path>, config_id: Option<String>, strict: bool) -> ExitCode {
    use lb_userspace::migrate::keepalived;
    let config_id = config_id.unwrap_or_else(keepalived::lexer::default_config_id);
    let import = keepalived::import(file, &config_id);
    for r in &import.reports {
        eprintln!("{r}");
    }
    if import.fatal() {
        eprintln!("drlb import-keepalived: nothing written: {} cannot be imported as it is (see the fatal reports above)", file.display());
        return ExitCode::FAILURE;
    }
    // What is written must be what `drlb check` accepts.
    if let Err(errors) = Config::parse(out.unwrap_or(std::path::Path::new("<import>")), &import.yaml) {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("drlb import-keepalived: bug: the translation does not pass drlb check; nothing written");
        return ExitCode::FAILURE;
    }
    let written = match out {
        Some(path) => std::fs::write(path, &import.yaml).map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => {
            print!("{}", import.yaml);
            Ok(())
        }
    };
    let written = written.and_then(|()| match vrrp_out {
        Some(path) => std::fs::write(path, &import.vrrp).map_err(|e| format!("cannot write {}: {e}", path.display())),
        None => Ok(()),
    });
    if let Err(e) = written {
        eprintln!("drlb import-keepalived: {e}");
        return ExitCode::FAILURE;
    }
    let counts = |s| import.reports.iter().filter(|r| r.severity == s).count();
    eprintln!(
        "drlb import-keepalived: {} file(s) read; {} error(s) keepalived itself makes, {} warning(s), {} note(s)",
        import.files.len(),
        counts(keepalived::Severity::Error),
        counts(keepalived::Severity::Warning),
        counts(keepalived::Severity::Note)
    );
    if strict && !import.reports.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
