//! `drlb bench --controller`: what the controller costs at scale, measured on a real
//! `drlb run` in the self-contained lab ([`crate::selftest::lab`]): its CPU while it
//! health-checks a thousand real servers every second, its CPU with a million connections
//! in its table, how long a health verdict takes to reach the maps, and how long a reload
//! to 4,096 services takes while keep-alive connections talk through the VIP.
//!
//! The controller is this binary's own `drlb run`, started in the lab's director namespace
//! with its pins on a bpffs of the bench's own; its CPU is read from /proc (every thread),
//! its timings from the state file it writes (`crate::observe::state::ControllerTimings`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use lb_common::addr::v4_mapped;
use lb_common::conn::{Conn, ConnKey, tcp};
use lb_common::maps::{MAP_CONNS, ServiceKey};
use serde::Serialize;

use crate::kernel::maps::{MapSource as _, Pinned};
use crate::observe::state::{ControllerState, ControllerTimings};
use crate::selftest::lab::{SelfLab, Server};
use crate::selftest::netns::{keepalive_request, REAL_SERVERS, VIP};

/// How much to measure.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Connections written into the controller's table.
    pub connections: u32,
    /// Real servers health-checked every second (besides the lab's two).
    pub checked_servers: u32,
    /// Services after the reload.
    pub reload_services: u32,
    /// Keep-alive connections talking through the VIP during the reload.
    pub talkers: usize,
    /// How long each CPU figure is measured over.
    pub measure: Duration,
}

impl ControllerOptions {
    pub fn full() -> ControllerOptions {
        ControllerOptions { connections: 1_000_000, checked_servers: 1000, reload_services: 4096, talkers: 20, measure: Duration::from_secs(10) }
    }

    /// Small enough for a test run.
    pub fn quick() -> ControllerOptions {
        ControllerOptions { connections: 50_000, checked_servers: 100, reload_services: 512, talkers: 8, measure: Duration::from_secs(3) }
    }
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerResult {
    pub connections: u32,
    pub checked_servers: u32,
    /// Share of one core the whole controller used with only the health checks.
    pub cpu_checks: f64,
    /// Floor: the same connections from a bare prober ([`check_floor`]).
    pub cpu_checks_floor: f64,
    /// The same with `connections` connections in the table as well.
    pub cpu_with_connections: f64,
    /// The last sweep at the end of that measurement.
    pub sweep_entries: usize,
    pub sweep_ms: f64,
    pub sweep_cpu_ms: f64,
    pub sweep_spacing_ms: f64,
    /// From a check round's end to the maps written: a server going down, then up.
    pub verdict_down_ms: f64,
    pub verdict_up_ms: f64,
    /// The same with the reloaded configuration's services.
    pub verdict_down_after_reload_ms: f64,
    pub verdict_up_after_reload_ms: f64,
    pub reload_services: usize,
    /// From SIGHUP to the maps written, as the controller measured it; and as seen from
    /// outside (SIGHUP sent to the state file showing it).
    pub reload_ms: f64,
    pub reload_seen_ms: f64,
    /// Requests over keep-alive connections during the reload, and how many failed or
    /// were answered by another real server than before.
    pub reload_requests: u64,
    pub reload_failures: u64,
    /// Connections in the table before and after the reload.
    pub table_before_reload: usize,
    pub table_after_reload: usize,
}

/// Targets, by figure.
pub const TARGETS: [(&str, &str); 4] = [
    ("cpu_with_connections", "< 5 % of a core at 1,000,000 connections"),
    ("cpu_checks", "< 5 % of a core for 1,000 servers checked every second"),
    ("reload_ms", "< 1,000 ms for 4,096 services, no connection disturbed"),
    ("verdict_ms", "< 10 ms from verdict to map"),
];

/// The lab's extra real servers: 198.18.4.0/22, on-link through a second address of the
/// director's.
const POOL_DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 2);
const POOL_PREFIX: u8 = 22;
/// The real server whose verdicts are timed: port 81 of this address, on rs2.
const VERDICT_RS: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 9);
const VERDICT_PORT: u16 = 81;

/// Checked pool servers per service.
const POOL_PER_SERVICE: u32 = 100;

fn pool_addr(i: u32) -> Ipv4Addr {
    let n = u32::from(Ipv4Addr::new(198, 18, 4, 10)) + i;
    Ipv4Addr::from(n)
}

/// The configuration (checks spread over the interval by keepalived's `warmup`, as a
/// thousand checks started at once overflow the real servers' accept queues): `web`
/// (VIP:80 over the lab's two HTTP servers) and `verdict` (VIP:81, one server), both checked every second, the checked pool in services of 100,
/// and `extra` more services of the two HTTP servers, unchecked.
fn config_text(pin_root: &Path, opts: &ControllerOptions, extra: u32) -> String {
    let mut t = format!(
        "director:\n  interface: eth0\n  xdp_mode: generic\n  pin_root: {}\n  conn_table_size: {}\n  metrics_listen: \"{}:9100\"\n\
         services:\n",
        pin_root.display(),
        (2 * opts.connections).next_power_of_two().max(1 << 16),
        crate::selftest::netns::DIRECTOR_ADDR
    );
    let check = |port: u16| format!("health_check: {{ type: tcp, port: {port}, interval: 1s, timeout: 2s, retries: 0, warmup: true }}");
    t += &format!("  - name: web\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    scheduler: wlc\n    {}\n    real_servers:\n", check(80));
    for rs in REAL_SERVERS {
        t += &format!("      - {{ address: {}, name: {} }}\n", rs.addr, rs.role);
    }
    t += &format!(
        "  - name: verdict\n    vip: {VIP}\n    port: {VERDICT_PORT}\n    protocol: tcp\n    {}\n    real_servers:\n      - {{ address: {VERDICT_RS} }}\n",
        check(VERDICT_PORT)
    );
    let per_service = POOL_PER_SERVICE;
    for s in 0..opts.checked_servers.div_ceil(per_service) {
        t += &format!("  - name: pool{s}\n    vip: {VIP}\n    port: {}\n    protocol: tcp\n    {}\n    real_servers:\n", 8000 + s, check(80));
        for i in s * per_service..((s + 1) * per_service).min(opts.checked_servers) {
            t += &format!("      - {{ address: {} }}\n", pool_addr(i));
        }
    }
    for s in 0..extra {
        t += &format!("  - name: extra{s}\n    vip: {VIP}\n    port: {}\n    protocol: tcp\n    real_servers:\n", 10_000 + s);
        for rs in REAL_SERVERS {
            t += &format!("      - {{ address: {} }}\n", rs.addr);
        }
    }
    t
}

/// Services the first configuration has.
fn base_services(opts: &ControllerOptions) -> u32 {
    2 + opts.checked_servers.div_ceil(POOL_PER_SERVICE)
}

/// `drlb run` in the director's namespace, stopped (SIGTERM, then SIGKILL) when dropped.
struct Controller {
    child: Child,
    pin_dir: PathBuf,
    log: PathBuf,
}

impl Controller {
    fn start(lab: &SelfLab, config: &Path, pin_root: &Path, log: &Path) -> Result<Controller> {
        let exe = std::env::current_exe().context("finding this drlb binary")?;
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = lab.director.command(&exe);
        cmd.args(["run", "--config"]).arg(config).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // SAFETY: between fork and exec only prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // If the bench dies (Ctrl-C, a panic), the controller goes too and detaches.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting drlb run")?;
        Ok(Controller { child, pin_dir: pin_root.join("eth0"), log: log.to_owned() })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until `done` holds of the controller's state file, or fails with its log.
    fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&ControllerState) -> bool) -> Result<ControllerState> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("drlb run exited ({status}) while waiting for {what}; its log ends:\n{}", self.log_tail());
            }
            if let Some(s) = ControllerState::read(&self.pin_dir)
                && done(&s)
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("no {what} within {limit:?}; drlb run's log ends:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn timings(&self) -> ControllerTimings {
        ControllerState::read(&self.pin_dir).map(|s| s.timings).unwrap_or_default()
    }

    /// CPU seconds the process (all its threads) used so far.
    fn cpu(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("unreadable /proc stat"))?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks / hz)
    }

    /// Share of one core used over `span`.
    fn cpu_share(&self, span: Duration) -> Result<f64> {
        let (c0, t0) = (self.cpu()?, Instant::now());
        std::thread::sleep(span);
        Ok((self.cpu()? - c0) / t0.elapsed().as_secs_f64())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bpffs of the bench's own, unmounted and removed (with the controller's pid and state
/// files) when dropped; with `DRLB_BENCH_KEEP` set the directory stays, with the
/// configuration and drlb run's log.
struct Bpffs {
    root: PathBuf,
}

impl Bpffs {
    fn mount() -> Result<Bpffs> {
        let root = std::env::temp_dir().join(format!("drlb-bench-controller-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bpffs"))?;
        nix::mount::mount(Some("bpf"), &root.join("bpffs"), Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .context("mounting a bpffs for the bench")?;
        Ok(Bpffs { root })
    }

    fn pins(&self) -> PathBuf {
        self.root.join("bpffs")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let pin_dir = self.pins().join("eth0");
        let _ = std::fs::remove_file(crate::kernel::process::pidfile_path(&pin_dir));
        let _ = std::fs::remove_file(crate::observe::state::path(&pin_dir));
        let _ = nix::mount::umount(&self.pins());
        if std::env::var_os("DRLB_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Room in the kernel's ARP table for the pool, restored when dropped. The table is shared
/// by every namespace, and above `gc_thresh2` entries (512 by default) the kernel collects
/// entries older than 5 s: a thousand real servers' entries would churn, and a real
/// director with that many on-link real servers needs the same (docs/operations.md).
struct NeighbourRoom {
    saved: Vec<(String, String)>,
}

impl NeighbourRoom {
    fn make(servers: u32) -> Result<NeighbourRoom> {
        // Built as it goes: if a later write fails, dropping it restores the earlier ones.
        let mut room = NeighbourRoom { saved: Vec::new() };
        let [t1, t2, t3] = crate::observe::doctor::neighbour_thresholds(servers as usize);
        for (name, want) in [("gc_thresh3", t3), ("gc_thresh2", t2), ("gc_thresh1", t1)] {
            let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
            let old = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?.trim().to_string();
            if old.parse::<usize>().unwrap_or(0) < want {
                std::fs::write(&path, want.to_string()).with_context(|| format!("writing {path}"))?;
                room.saved.push((path, old));
            }
        }
        Ok(room)
    }
}

impl Drop for NeighbourRoom {
    fn drop(&mut self) {
        // Lowest first, as they were raised highest first.
        for (path, old) in self.saved.iter().rev() {
            let _ = std::fs::write(path, old);
        }
    }
}

/// The verdict server: a listener on rs2 that accepts and closes, until dropped (then the
/// port refuses connections and its checks fail).
fn verdict_server(lab: &SelfLab) -> Result<Server> {
    Server::listen(&lab.servers[1].1, SocketAddr::new(IpAddr::V4(VERDICT_RS), VERDICT_PORT), drop)
}

/// Adds the pool's addresses: the director's second subnet, half the pool on each real server.
fn add_pool(lab: &SelfLab, opts: &ControllerOptions) -> Result<()> {
    use crate::selftest::lab::ifindex;
    lab.director.netlink(|h| async move {
        h.address().add(ifindex("eth0")?, IpAddr::V4(POOL_DIRECTOR_ADDR), POOL_PREFIX).execute().await?;
        Ok(())
    })?;
    for (which, (_, ns)) in lab.servers.iter().enumerate() {
        let addrs: Vec<Ipv4Addr> = (0..opts.checked_servers)
            .filter(|i| *i as usize % lab.servers.len() == which)
            .map(pool_addr)
            .chain((which == 1).then_some(VERDICT_RS))
            .collect();
        ns.netlink(|h| async move {
            let eth0 = ifindex("eth0")?;
            for a in addrs {
                h.address().add(eth0, IpAddr::V4(a), POOL_PREFIX).execute().await.with_context(|| format!("adding {a}"))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes `n` ESTABLISHED connections of service `web` into the pinned table, alternating
/// its two real servers; clients from 198.19.0.0/16, so nothing real answers them.
fn write_connections(pin_dir: &Path, n: u32) -> Result<()> {
    let maps = Pinned::open(pin_dir)?;
    let key = ServiceKey::new(v4_mapped(VIP.octets()), 80, 6);
    let id = crate::kernel::maps::service_ids(&maps)?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, id)| id)
        .ok_or_else(|| anyhow!("service web not in the maps"))?;
    let svc = crate::kernel::maps::service(&maps, id)?;
    let slots: Vec<u32> = crate::kernel::maps::members(&maps, &svc)?.into_iter().map(|(_, s)| s).collect();
    ensure!(!slots.is_empty(), "service web has no members");
    let dp = crate::kernel::bpf::Dataplane::load_with(1024).context("loading a dataplane to read the clock")?;
    let (now, hz) = (dp.now()?, dp.hz());
    let entries: Vec<(ConnKey, Conn)> = (0..n)
        .map(|i| {
            let client = [198, 19, (i >> 8) as u8, i as u8];
            let k = ConnKey { client: v4_mapped(client), vip: v4_mapped(VIP.octets()), cport: 1024 + (i >> 16) as u16, vport: 80, proto: 6, _pad: [0; 3] };
            let c = Conn {
                last_seen: now,
                backend: slots[i as usize % slots.len()],
                service: id,
                timeout: 3600 * hz,
                state: tcp::ESTABLISHED,
                flags: 0,
                order: 0,
            };
            (k, c)
        })
        .collect();
    let aya::maps::Map::LruHashMap(data) = maps.map(MAP_CONNS)? else { bail!("{MAP_CONNS} is not an LRU hash") };
    crate::kernel::batch::update_all(data, &entries).context("writing connections in batches")?;
    Ok(())
}

fn table_entries(pin_dir: &Path) -> Result<usize> {
    let maps = Pinned::open(pin_dir)?;
    let mut n = 0;
    crate::kernel::sweep::for_each_connection(&maps, |_, _| n += 1)?;
    Ok(n)
}

/// Keep-alive HTTP connections from the client to VIP:80, each asked again and again until
/// stopped: requests made, failures (an error, or an answer from another real server
/// than the connection's first).
struct Talkers {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}


impl Talkers {
    fn start(lab: &SelfLab, n: usize) -> Result<Talkers> {
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut s = lab.client.run(|| {
                let s = TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(VIP), 80), Duration::from_secs(2)).context("connecting to the VIP")?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                Ok(s)
            })?;
            let first = keepalive_request(&mut s).context("first request over a keep-alive connection")?;
            conns.push((s, first));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = conns
            .into_iter()
            .map(|(mut s, first)| {
                let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if keepalive_request(&mut s).map_or(true, |who| who != first) {
                            failures.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Ok(Talkers { stop, requests, failures, threads })
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.requests.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }
}

/// Takes the verdict server down (its listener closed: connections refused) and up again;
/// the time each verdict took from its check round to the maps, and the new listener.
fn time_verdicts(ctl: &mut Controller, lab: &SelfLab, listener: Server) -> Result<(f64, f64, Server)> {
    // The verdict server's own verdicts, not a pool server's that happened meanwhile.
    let server = SocketAddr::new(IpAddr::V4(VERDICT_RS), VERDICT_PORT).to_string();
    let count = ctl.timings().verdict.map_or(0, |v| v.count);
    drop(listener);
    let down = ctl.wait_for("the verdict server going down", Duration::from_secs(15), |s| {
        s.timings.verdict.as_ref().is_some_and(|v| v.count > count && !v.up && v.target.ends_with(&server))
    })?;
    let listener = verdict_server(lab)?;
    let count = down.timings.verdict.as_ref().map_or(0, |v| v.count);
    let up = ctl.wait_for("the verdict server coming up", Duration::from_secs(15), |s| {
        s.timings.verdict.as_ref().is_some_and(|v| v.count > count && v.up && v.target.ends_with(&server))
    })?;
    let ms = |s: &ControllerState| s.timings.verdict.as_ref().map_or(f64::NAN, |v| v.applied_ms);
    Ok((ms(&down), ms(&up), listener))
}

/// Floor for the health checks: what the same TCP connections cost a bare prober (a
/// one-thread tokio runtime connecting and closing, every target once a second, spread
/// over the second), measured in the director's namespace before drlb starts. In this lab
/// both ends of every handshake run on this machine, in the connecting thread (veth hands
/// a frame to the peer's stack in the sender's context), so most of a check's cost is the
/// kernel's, and the floor shows how much.
fn check_floor(lab: &SelfLab, targets: Vec<SocketAddr>, span: Duration) -> Result<f64> {
    lab.director.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (t0, cpu0) = (Instant::now(), crate::kernel::sweep::thread_cpu_time());
        rt.block_on(async move {
            let end = tokio::time::Instant::now() + span;
            let tasks: Vec<_> = targets
                .into_iter()
                .map(|a| {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(1).mul_f64(fastrand::f64())).await;
                        while tokio::time::Instant::now() < end {
                            let _ = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(a)).await;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
        Ok((crate::kernel::sweep::thread_cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64())
    })
}

/// Builds the lab, starts `drlb run`, measures, and removes everything.
pub fn run(opts: &ControllerOptions, progress: &dyn Fn(&str)) -> Result<ControllerResult> {
    let fs = Bpffs::mount()?;
    let _room = NeighbourRoom::make(opts.checked_servers + 3)?;
    let lab = SelfLab::build_with(&[], true).context("building the lab")?;
    add_pool(&lab, opts)?;
    let verdict_listener = verdict_server(&lab)?;
    progress("floor: the same TCP connections from a bare prober");
    let mut targets: Vec<SocketAddr> = (0..opts.checked_servers).map(|i| SocketAddr::new(IpAddr::V4(pool_addr(i)), 80)).collect();
    targets.extend(REAL_SERVERS.iter().map(|rs| SocketAddr::new(IpAddr::V4(rs.addr), 80)));
    targets.push(SocketAddr::new(IpAddr::V4(VERDICT_RS), VERDICT_PORT));
    let cpu_checks_floor = check_floor(&lab, targets, opts.measure)?;
    let config = fs.root.join("drlb.yaml");
    std::fs::write(&config, config_text(&fs.pins(), opts, 0))?;
    progress("starting drlb run");
    let mut ctl = Controller::start(&lab, &config, &fs.pins(), &fs.root.join("drlb.log"))?;
    ctl.wait_for("the controller's state file", Duration::from_secs(60), |_| true)?;
    // Every checked server up: the web and verdict servers and the pool were checked at least once.
    std::thread::sleep(Duration::from_secs(3));

    progress("CPU with health checks");
    let cpu_checks = ctl.cpu_share(opts.measure)?;
    progress("writing connections");
    write_connections(&ctl.pin_dir, opts.connections)?;
    let want = opts.connections as usize * 9 / 10;
    ctl.wait_for("a sweep that read the connections", Duration::from_secs(60), |s| s.timings.sweep.as_ref().is_some_and(|w| w.entries >= want))?;
    progress("CPU with connections");
    // Over at least one whole sweep period, which the sweeps' CPU budget stretches.
    let spacing = Duration::from_secs_f64(ctl.timings().sweep.map_or(0.0, |w| w.spacing_ms) / 1e3);
    let cpu_with_connections = ctl.cpu_share(opts.measure.max(spacing + Duration::from_secs(1)))?;
    let sweep = ctl.timings().sweep.unwrap_or_default();

    progress("health verdicts");
    let (verdict_down_ms, verdict_up_ms, verdict_listener) = time_verdicts(&mut ctl, &lab, verdict_listener)?;

    progress("reload");
    let table_before_reload = table_entries(&ctl.pin_dir)?;
    let talkers = Talkers::start(&lab, opts.talkers)?;
    std::thread::sleep(Duration::from_millis(300));
    let extra = opts.reload_services.saturating_sub(base_services(opts));
    std::fs::write(&config, config_text(&fs.pins(), opts, extra))?;
    let reloads = ctl.timings().reload.map_or(0, |r| r.count);
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(ctl.child.id() as i32, libc::SIGHUP) };
    let after = ctl.wait_for("the reload", Duration::from_secs(60), |s| s.timings.reload.as_ref().is_some_and(|r| r.count > reloads))?;
    let reload_seen_ms = sent.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_secs(1));
    let (reload_requests, reload_failures) = talkers.finish();
    let table_after_reload = table_entries(&ctl.pin_dir)?;
    let reload = after.timings.reload.unwrap_or_default();
    ensure!(reload.ok, "the reload to {} services was rejected; drlb run's log ends:\n{}", opts.reload_services, ctl.log_tail());
    progress("health verdicts after the reload");
    let (verdict_down_after_reload_ms, verdict_up_after_reload_ms, _verdict_listener) = time_verdicts(&mut ctl, &lab, verdict_listener)?;

    drop(ctl);
    drop(lab);
    drop(fs);
    Ok(ControllerResult {
        connections: opts.connections,
        checked_servers: opts.checked_servers + 3,
        cpu_checks,
        cpu_checks_floor,
        cpu_with_connections,
        sweep_entries: sweep.entries,
        sweep_ms: sweep.took_ms,
        sweep_cpu_ms: sweep.cpu_ms,
        sweep_spacing_ms: sweep.spacing_ms,
        verdict_down_ms,
        verdict_up_ms,
        verdict_down_after_reload_ms,
        verdict_up_after_reload_ms,
        reload_services: reload.services,
        reload_ms: reload.took_ms,
        reload_seen_ms,
        reload_requests,
        reload_failures,
        table_before_reload,
        table_after_reload,
    })
}

/// The report's section.
pub fn markdown(r: &ControllerResult) -> String {
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    let mut o = String::from("## The controller at scale\n\n");
    o += "A real `drlb run` in the self-contained lab (generic XDP), its CPU read from /proc over all its threads, \
          its timings from its state file.\n\n| figure | measured | target |\n| --- | --- | --- |\n";
    o += &format!(
        "| CPU, {} real servers checked every second (TCP) | {} of a core; the same connections from a bare prober: {}; drlb above that: {} | < 5 % |\n",
        r.checked_servers,
        pct(r.cpu_checks),
        pct(r.cpu_checks_floor),
        pct(r.cpu_checks - r.cpu_checks_floor)
    );
    o += &format!(
        "| CPU, the same plus {} connections in the table | {} of a core ({} above the checks alone) | < 5 % |\n",
        r.connections,
        pct(r.cpu_with_connections),
        pct(r.cpu_with_connections - r.cpu_checks)
    );
    o += &format!(
        "| one sweep of {} entries | {:.0} ms wall, {:.0} ms CPU, next no sooner than {:.1} s: {} of a core on average | |\n",
        r.sweep_entries,
        r.sweep_ms,
        r.sweep_cpu_ms,
        r.sweep_spacing_ms / 1e3,
        pct(r.sweep_cpu_ms / r.sweep_spacing_ms.max(1.0))
    );
    o += &format!(
        "| health verdict to map (down / up), first config | {:.2} / {:.2} ms | < 10 ms |\n",
        r.verdict_down_ms, r.verdict_up_ms
    );
    o += &format!(
        "| the same after the reload to {} services | {:.2} / {:.2} ms | < 10 ms |\n",
        r.reload_services, r.verdict_down_after_reload_ms, r.verdict_up_after_reload_ms
    );
    o += &format!(
        "| reload to {} services | {:.0} ms (seen from outside: {:.0} ms) | < 1,000 ms |\n",
        r.reload_services, r.reload_ms, r.reload_seen_ms
    );
    o += &format!(
        "| keep-alive requests through the VIP during the reload | {} made, {} failed or moved | 0 |\n",
        r.reload_requests, r.reload_failures
    );
    o += &format!("| connections in the table before / after the reload | {} / {} | equal |\n", r.table_before_reload, r.table_after_reload);
    o
}
