//! `drlb run`: loads the dataplane, resolves real servers, programs the maps, attaches XDP,
//! follows neighbour changes, announces VIPs to ECMP routers (`director.announce`), and
//! detaches on SIGINT/SIGTERM (draining first, when announcing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tracing::{debug, error, info, warn};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, interval, sleep_until};

use crate::control::config::Config;
use crate::control::tables::BuildError;
use crate::kernel::bpf::{Dataplane, Origin, log_counters};
use crate::kernel::netlink::{self, Interface, NeighbourEvent, NeighbourWatch};
use crate::control::health::{self, Tracker};
use crate::control::hooks;
use crate::observe::logging;
use crate::observe::metrics::{Failure, Metrics};
use crate::kernel::notify;
use crate::observe::status;
use std::sync::Arc;
use crate::control::slots::Slots;
use crate::control::tables::{Down, Usability, usability};
use crate::kernel::content::MapContent;
use crate::kernel::mac::{format_mac, Mac};
use tokio::sync::mpsc;
use crate::control::vips::VipTracker;
use crate::control::announce::Announcer;
use crate::observe::state::{ControllerState, ControllerTimings, ReloadTiming, SweepTiming, SyncState, VerdictTiming};
use crate::sync::{Counter, Names, Sync, due_for_refresh};
use crate::control::sweeper::{Sweeper, SweepDone, SweepRequest};
use crate::kernel::sweep::SweepInputs;

/// How long start-up waits for real servers' ARP replies before attaching anyway.
const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(3);
/// A drain ends once no packet was forwarded for this long: the routers have moved.
const DRAIN_SETTLE: Duration = Duration::from_secs(1);
/// ... and not before this long after the withdrawal, however quiet: the time a BGP
/// UPDATE takes to reach the routers' forwarding tables.
const DRAIN_MIN: Duration = Duration::from_secs(2);
pub use crate::control::sweeper::SWEEP_INTERVAL;
/// How often every real server's neighbour entry is re-confirmed (keeps it from being
/// garbage-collected, since the director never sends IP traffic to real servers itself).
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Refuses real servers that are not on-link: DR delivers frames at layer 2 only.
pub fn check_on_link(config: &Config, iface: &Interface) -> Result<()> {
    for svc in &config.services {
        let addrs = svc.real_servers.iter().map(|r| r.address).chain(svc.sorry_server.as_ref().map(|x| x.address));
        for address in addrs {
            if !iface.on_link(address) {
                bail!(
                    "real server {} of service `{}` is not on-link on {} ({}): Direct Routing forwards \
                     frames at layer 2, so every real server must be in a subnet of the director's interface",
                    address,
                    svc.name,
                    iface.name,
                    iface.describe_subnets()
                );
            }
        }
    }
    Ok(())
}

fn real_server_addrs(config: &Config) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = config
        .services
        .iter()
        .flat_map(|s| s.real_servers.iter().map(|r| r.address).chain(s.sorry_server.as_ref().map(|x| x.address)))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn log_usability(config: &Config, macs: &HashMap<IpAddr, Mac>) {
    for svc in &config.services {
        for rs in &svc.real_servers {
            match usability(rs, macs) {
                Usability::Usable => {}
                Usability::QuiescentWeightZero => info!("{} {}: weight 0, gets no new connections", svc.name, rs.address),
                Usability::MacUnresolved => warn!(
                    "{} {}: no {} reply yet, so it gets no traffic until it answers (is it up and on this segment?)",
                    svc.name,
                    rs.address,
                    crate::kernel::netlink::resolution_name(rs.address)
                ),
            }
        }
    }
}

/// Why the maps could not be brought up to date.
#[derive(Debug)]
enum ApplyError {
    /// The tables do not fit the maps: nothing was changed.
    Build(BuildError),
    /// A map write failed part way: the maps hold a mix until the retry.
    Write(anyhow::Error),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Build(e) => write!(f, "{e}"),
            ApplyError::Write(e) => write!(f, "{e:#}"),
        }
    }
}

/// The running controller's state: everything the maps are computed from.
struct Controller {
    config_path: PathBuf,
    config: Config,
    iface: Interface,
    handle: rtnetlink::Handle,
    macs: HashMap<IpAddr, Mac>,
    slots: Slots,
    tables: MapContent,
    dp: Dataplane,
    health: Tracker,
    down: Down,
    /// Each service's quorum: lost or not (keepalived's quorum state, with hysteresis).
    quorum: HashMap<String, bool>,
    checkers: Vec<tokio::task::JoinHandle<()>>,
    rounds_tx: mpsc::Sender<health::Round>,
    metrics: Arc<Metrics>,
    /// A rebuild failed; retried once a second.
    retry_pending: bool,
    /// Tables were decided but their write did not complete.
    maps_stale: bool,
    /// Connection sync, when `director.sync` is set.
    sync: Option<Sync>,
    /// Which VIPs the interface holds.
    vips: VipTracker,
    /// What this director announces to ECMP routers, with `director.announce`.
    announcer: Option<Announcer>,
    /// Health checks that reported at least once: (service, real server, check index).
    reported: std::collections::HashSet<(String, IpAddr, usize)>,
    /// Dataplane time of the previous sweep (sync re-announces what fell due since).
    last_sweep: Option<u64>,
    sweeper: Sweeper,
    /// Backend slots draining when the running sweep was asked for.
    draining_at_sweep: std::collections::BTreeSet<u32>,
    /// How long sweeps, reloads and verdicts took (the state file shows the last of each).
    timings: ControllerTimings,
    pin_dir: PathBuf,
    /// The last state-file write failed (said once, and again when writes work again).
    state_write_failing: std::cell::Cell<bool>,
    /// The last listing of the interface's addresses failed (said once).
    addresses_failing: bool,
}

impl Controller {
    fn wanted(&self) -> Vec<IpAddr> {
        real_server_addrs(&self.config)
    }

    /// Recomputes the tables for `config` and the live state and writes what changed. A
    /// build that does not fit changes nothing (identities and maps stay as they were); a
    /// failed map write is retried whole by [`Controller::retry_if_stale`].
    fn apply_config(&mut self, config: &Config) -> Result<(), ApplyError> {
        let (quorum, down, changes) = self.plan_quorums(config);
        let mut slots = self.slots.clone();
        // Placed against what the maps hold (after a failed write, the last complete content).
        let tables = crate::control::tables::build_with(config, &self.macs, self.iface.mac, &mut slots, &down, self.dp.applied())
            .map_err(ApplyError::Build)?;
        self.commit_quorums(config, quorum, down, changes);
        self.slots = slots;
        self.tables = tables;
        self.maps_stale = true;
        if let Some(sync) = &self.sync {
            sync.set_names(Names::new(&self.tables));
        }
        self.dp.apply(&self.tables).context("updating the maps").map_err(ApplyError::Write)?;
        self.maps_stale = false;
        self.metrics.set_maps_current(true);
        Ok(())
    }

    /// After a health, neighbour or drain event: rebuilds from the running configuration.
    /// A failure keeps the dataplane forwarding with what it has, is logged with what
    /// failed, counted (`drlb_controller_errors_total`), shown (`drlb_maps_current` 0) and
    /// retried every second.
    fn rebuild(&mut self, why: &str) {
        let config = self.config.clone();
        if let Err(e) = self.apply_config(&config) {
            self.on_apply_error(why, &e);
        }
    }

    fn on_apply_error(&mut self, why: &str, e: &ApplyError) {
        let operation = match e {
            ApplyError::Build(_) => Failure::Tables,
            ApplyError::Write(_) => Failure::MapWrite,
        };
        error!("{why}: the dataplane keeps its previous tables: {e}; retrying every second");
        self.metrics.controller_error(operation);
        self.metrics.set_maps_current(false);
        notify::status(&format!("degraded: the dataplane keeps its previous tables ({why}: {e})"));
        self.retry_pending = true;
    }

    /// Retries a rebuild that failed (once a second).
    fn retry_if_stale(&mut self) {
        if self.retry_pending || self.maps_stale {
            self.retry_pending = false;
            let config = self.config.clone();
            match self.apply_config(&config) {
                Ok(()) => {
                    info!("the dataplane's tables are current again");
                    notify::status("forwarding; the dataplane's tables are current");
                }
                Err(e) => {
                    self.metrics.controller_error(match e {
                        ApplyError::Build(_) => Failure::Tables,
                        ApplyError::Write(_) => Failure::MapWrite,
                    });
                    self.retry_pending = true;
                    debug!("retry failed: {e}");
                }
            }
        }
    }

    /// SIGHUP / `drlb reload`: validate the file, refuse what cannot change live, apply
    /// the rest as map updates. On any error the running configuration keeps serving.
    async fn reload(&mut self) {
        let started = std::time::Instant::now();
        notify::reloading();
        let ok = self.reload_inner().await;
        notify::ready();
        let count = self.timings.reload.as_ref().map_or(0, |r| r.count) + 1;
        let took = started.elapsed();
        self.metrics.observe_reload(took);
        self.timings.reload = Some(ReloadTiming { count, ok, services: self.config.services.len(), took_ms: took.as_secs_f64() * 1e3 });
        info!("reload took {:.1} ms", took.as_secs_f64() * 1e3);
        // Status, metrics and `drlb bench --controller` see it now, not a second later.
        self.write_state();
    }

    async fn reload_inner(&mut self) -> bool {
        let ok = self.try_reload().await;
        self.metrics.set_reload_ok(ok);
        if !ok {
            self.metrics.controller_error(Failure::Reload);
        }
        ok
    }

    /// Applies the file, or rejects it with the reason while the running configuration
    /// keeps serving; true when applied.
    async fn try_reload(&mut self) -> bool {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                error!(event = logging::EVENT_RELOAD, outcome = "rejected", "reload rejected; still serving the previous configuration:\n{errors}");
                return false;
            }
        };
        if new.director != self.config.director {
            error!(
                event = logging::EVENT_RELOAD,
                outcome = "rejected",
                "reload rejected: the director section changed (interface, xdp_mode or conn_table_size); \
                 that needs a restart (`systemctl restart drlb`); still serving the previous configuration"
            );
            return false;
        }
        if let Err(e) = check_on_link(&new, &self.iface) {
            error!(event = logging::EVENT_RELOAD, outcome = "rejected", "reload rejected: {e:#}; still serving the previous configuration");
            return false;
        }
        let before = self.wanted();
        match self.apply_config(&new) {
            Err(ApplyError::Build(e)) => {
                error!(event = logging::EVENT_RELOAD, outcome = "rejected", "reload rejected: {e}; still serving the previous configuration");
                return false;
            }
            // The new tables are decided; the retry writes them.
            Err(e) => self.on_apply_error("reload", &e),
            Ok(()) => {}
        }
        self.config = new;
        self.set_metrics_source();
        self.follow_addresses().await;
        for addr in self.wanted().into_iter().filter(|a| !before.contains(a) && !self.macs.contains_key(a)) {
            if let Err(e) = netlink::trigger_resolution(&self.handle, self.iface.index, addr).await {
                warn!("{e:#}");
            }
        }
        self.start_checkers();
        info!(event = logging::EVENT_RELOAD, outcome = "ok", services = self.config.services.len(), "reloaded {}: {} service(s)", self.config_path.display(), self.config.services.len());
        log_usability(&self.config, &self.macs);
        true
    }

    /// (Re)starts one checker per real server with a health check; rounds arrive on the
    /// controller's channel.
    fn start_checkers(&mut self) {
        for h in self.checkers.drain(..) {
            h.abort();
        }
        let targets = health::targets(&self.config);
        // Said once here, not as every ping check's failure reason only.
        let pinged: Vec<IpAddr> = targets.iter().filter(|t| t.check.kind == crate::control::config::CheckType::Ping).map(|t| t.probe.ip()).collect();
        for family in [pinged.iter().find(|a| a.is_ipv4()), pinged.iter().find(|a| a.is_ipv6())].into_iter().flatten() {
            if let Err(why) = crate::control::probes::can_ping(*family) {
                error!("ping health checks cannot run: {why}");
            }
        }
        self.health.track(&targets);
        // Down is what the tracker says now: alpha checks start down, and a server whose
        // failing check a reload removed (or that lost its checks) is up again.
        let now_down = self.health.down_servers();
        let weights = self.health.weights(&self.config);
        if self.down.servers() != &now_down || self.down.weights != weights {
            self.down.set_servers(now_down);
            self.down.weights = weights;
            self.rebuild("health checks (re)started");
        }
        for t in targets {
            let tx = self.rounds_tx.clone();
            let latency = self.metrics.check_histograms(&t.service, &t.name, t.check.kind.name());
            let t = Arc::new(t);
            self.checkers.push(tokio::spawn(async move {
                if let Some(w) = t.check.warmup {
                    tokio::time::sleep(w.limit(t.check.interval).mul_f64(fastrand::f64())).await;
                }
                loop {
                    let r = health::round(&t).await;
                    latency[r.ok as usize].observe(r.latency.as_secs_f64());
                    if tx.send(r).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(t.check.interval).await;
                }
            }));
        }
    }

    /// Health-check rounds — `first` and every other one already waiting, so a burst of
    /// verdicts (a rack failing) becomes one update of the maps, not one each: rise/fall,
    /// and on a change the log line and the maps.
    fn on_rounds(&mut self, first: health::Round, rounds: &mut mpsc::Receiver<health::Round>) {
        let mut verdicts = Vec::new();
        let mut reweighted: Vec<String> = Vec::new();
        let mut next = Some(first);
        // Bounded: a checker sends at most one round per interval; this takes what waits.
        for _ in 0..1024 {
            let Some(r) = next.take() else { break };
            self.reported.insert((r.target.service.clone(), r.target.address, r.target.index));
            if self.suspended(&r.target.service) {
                next = rounds.try_recv().ok();
                continue;
            }
            let flipped = self.health.apply(&r);
            if self.health.apply_weight(&r) {
                self.down.weights = self.health.weights(&self.config);
                info!("{}: weight {} (dynamic check)", r.target.label(), self.down.weights.get(&(r.target.service.clone(), r.target.address)).copied().unwrap_or(r.target.weight));
                reweighted.push(r.target.service.clone());
            }
            if let Some((up, line)) = flipped {
                let key = (r.target.service.clone(), r.target.address);
                let (service, server, check) = (&r.target.service, r.target.address, r.target.check.kind.name());
                self.metrics.health_transition(service, &server.to_string(), up);
                if up {
                    info!(event = logging::EVENT_HEALTH, service = %service, real_server = %server, state = "up", check, "{line}");
                    self.down.remove(&key);
                } else {
                    warn!(event = logging::EVENT_HEALTH, service = %service, real_server = %server, state = "down", check, reason = %r.reason, "{line}");
                    self.down.insert(key);
                }
                self.notify(&r.target, up);
                verdicts.push((r, up));
            }
            next = rounds.try_recv().ok();
        }
        if verdicts.is_empty() && reweighted.is_empty() {
            return;
        }
        let config = self.config.clone();
        let (quorum, down, changes) = self.plan_quorums(&config);
        self.commit_quorums(&config, quorum, down, changes);
        let mut which: Vec<usize> = Vec::new();
        let mut unknown = false;
        for service in verdicts.iter().map(|(r, _)| &r.target.service).chain(&reweighted) {
            match self.config.services.iter().position(|s| &s.name == service) {
                Some(i) if !which.contains(&i) => which.push(i),
                Some(_) => {}
                None => unknown = true,
            }
        }
        if unknown {
            self.rebuild("health change");
        } else {
            self.update_services(&which, "health change");
        }
        for (r, up) in verdicts {
            let applied = r.finished.elapsed();
            self.metrics.observe_verdict(applied);
            let count = self.timings.verdict.as_ref().map_or(0, |v| v.count) + 1;
            self.timings.verdict = Some(VerdictTiming { count, target: r.target.label(), up, applied_ms: applied.as_secs_f64() * 1e3 });
        }
    }

    /// keepalived's omega, as drlb stops: notify_down for every server that is up and
    /// quorum_down, of each service with `omega`; each script gets a second, as keepalived's.
    async fn omega_notifies(&self) {
        for svc in self.config.services.iter().filter(|s| s.omega) {
            let mut scripts = Vec::new();
            for rs in &svc.real_servers {
                if let Some(command) = rs.notify_down.as_ref().filter(|_| !self.down.contains(&(svc.name.clone(), rs.address))) {
                    let env = vec![
                        ("DRLB_SERVICE", svc.name.clone()),
                        ("DRLB_VIP", svc.vip.to_string()),
                        ("DRLB_RS_ADDRESS", rs.address.to_string()),
                        ("DRLB_STATE", "down".to_string()),
                    ];
                    scripts.push((command.clone(), env, format!("{} {} notify_down (stopping)", svc.name, rs.address)));
                }
            }
            if let Some(command) = &svc.quorum_down {
                let env = vec![("DRLB_SERVICE", svc.name.clone()), ("DRLB_VIP", svc.vip.to_string()), ("DRLB_STATE", "down".to_string())];
                scripts.push((command.clone(), env, format!("{} quorum_down (stopping)", svc.name)));
            }
            // All at once, each for at most a second (keepalived starts each with a timer of
            // its own): a hundred slow scripts must not hold the stop past systemd's timeout.
            let mut running = tokio::task::JoinSet::new();
            for (command, env, what) in scripts {
                running.spawn(async move { hooks::run_and_wait(&command, env, what, Duration::from_secs(1)).await });
            }
            while running.join_next().await.is_some() {}
        }
    }

    /// Whether `service`'s checks stand still: it has `ha_suspend` and the director's
    /// interface holds none of its addresses (keepalived's ha_suspend).
    fn suspended(&self, service: &str) -> bool {
        // Behind ECMP routers checks always run: they decide whether the VIP is announced.
        self.announcer.is_none()
            && self.config.services.iter().find(|s| s.name == service).is_some_and(|s| s.ha_suspend && !s.addresses().iter().any(|a| self.holds(*a)))
    }

    /// Whether this director is where `vip`'s new flows go: the VIP is on its interface
    /// (keepalived's VRRP), or, behind ECMP routers, announced.
    fn holds(&self, vip: IpAddr) -> bool {
        match &self.announcer {
            Some(a) => a.announces(vip),
            None => self.vips.owns(vip),
        }
    }

    /// Brings the announcement routes to what this director can serve now.
    async fn follow_announcements(&mut self) {
        if self.announcer.is_none() {
            return;
        }
        let pending = health::targets(&self.config).iter().filter(|t| !self.reported.contains(&(t.service.clone(), t.address, t.index))).count();
        let carrier = netlink::carrier(&self.handle, self.iface.index).await;
        let Some(a) = self.announcer.as_mut() else { return };
        a.set_checks_pending(pending);
        match carrier {
            Ok(up) => a.set_carrier(up),
            // The interface is gone (and the XDP link with it): nothing here can serve.
            Err(e) => {
                debug!("{e:#}");
                a.set_carrier(false);
            }
        }
        if a.reconcile(&self.config, &self.quorum).await {
            // Status, metrics and `drlb ready` see it now, not a second later.
            self.write_state();
        }
    }

    /// Packets sent on to a real server so far (every verdict that transmits): flat once
    /// the routers send nothing here.
    fn forwarded_packets(&self) -> u64 {
        let Ok(c) = self.dp.counters() else { return 0 };
        lb_common::verdict::Verdict::ALL.iter().filter(|v| v.xdp_action() == lb_common::verdict::XDP_TX).map(|v| c[v.index() as usize]).sum()
    }

    /// `drlb drain` / SIGTERM behind ECMP routers: withdraw every VIP, keep forwarding
    /// (and syncing) while the routers move the flows to the other directors, and return
    /// once no packet came for [`DRAIN_SETTLE`] or `drain_timeout` passed.
    async fn drain(&mut self) {
        let Some(timeout) = self.config.director.announce.as_ref().map(|a| a.drain_timeout) else { return };
        if let Some(a) = self.announcer.as_mut() {
            a.drain();
        }
        self.follow_announcements().await;
        info!("draining: every VIP withdrawn; forwarding until the routers send nothing here (at most {})", humantime::format_duration(timeout));
        let start = Instant::now();
        let (mut last, mut quiet_since) = (self.forwarded_packets(), start);
        let mut tick = interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now = self.forwarded_packets();
            if now != last {
                (last, quiet_since) = (now, Instant::now());
            }
            if quiet_since.elapsed() >= DRAIN_SETTLE && start.elapsed() >= DRAIN_MIN {
                info!("drained: no packet for {DRAIN_SETTLE:?}, {:.1} s after the withdrawal", start.elapsed().as_secs_f64());
                return;
            }
            if start.elapsed() >= timeout {
                warn!("drain_timeout ({}) passed with packets still arriving: detaching anyway; the routers still send flows here", humantime::format_duration(timeout));
                return;
            }
            // Status and metrics show the drain, and `drlb ready` stays true meanwhile; a
            // withdrawal that failed is tried again.
            if quiet_since.elapsed().as_millis() % 1000 < 100 {
                self.follow_announcements().await;
            }
            self.write_state();
        }
    }

    /// keepalived's notify_up / notify_down for a real server a verdict changed.
    fn notify(&self, t: &health::Target, up: bool) {
        let Some(svc) = self.config.services.iter().find(|s| s.name == t.service) else { return };
        let Some(rs) = svc.real_servers.iter().find(|r| r.address == t.address) else { return };
        let command = if up { &rs.notify_up } else { &rs.notify_down };
        if let Some(command) = command {
            let env = vec![
                ("DRLB_SERVICE", svc.name.clone()),
                ("DRLB_VIP", svc.vip.to_string()),
                ("DRLB_RS_ADDRESS", rs.address.to_string()),
                ("DRLB_STATE", if up { "up" } else { "down" }.to_string()),
            ];
            hooks::run(command, env, format!("{} {} notify_{}", svc.name, t.name, if up { "up" } else { "down" }));
        }
    }

    /// keepalived's quorum per service for `config`: follows the weights of up servers with
    /// the service's hysteresis. Returns the quorum states and the health state the tables
    /// are built from, and the changes (service index, lost); nothing is committed, so a
    /// configuration that is refused changes no state and runs no script.
    fn plan_quorums(&self, config: &Config) -> (HashMap<String, bool>, Down, Vec<(usize, bool, u64)>) {
        let mut quorum: HashMap<String, bool> =
            self.quorum.iter().filter(|(name, _)| config.services.iter().any(|s| &s.name == *name)).map(|(n, l)| (n.clone(), *l)).collect();
        let mut down = self.down.clone();
        down.quorum_lost.retain(|name| config.services.iter().any(|s| &s.name == name));
        let mut changes = Vec::new();
        for (i, svc) in config.services.iter().enumerate() {
            let weight = crate::control::tables::up_weight(svc, &down);
            let was = quorum.get(&svc.name).copied();
            let lost = crate::control::tables::next_quorum_lost(svc, weight, was);
            if was == Some(lost) {
                continue;
            }
            quorum.insert(svc.name.clone(), lost);
            if lost {
                down.quorum_lost.insert(svc.name.clone());
            } else {
                down.quorum_lost.remove(&svc.name);
            }
            changes.push((i, lost, weight));
        }
        (quorum, down, changes)
    }

    /// Commits what [`Controller::plan_quorums`] planned once the tables built from it are
    /// in place: logs each change and runs quorum_up / quorum_down (at start, for the state
    /// each service starts in, as keepalived).
    fn commit_quorums(&mut self, config: &Config, quorum: HashMap<String, bool>, down: Down, changes: Vec<(usize, bool, u64)>) {
        let was_known: std::collections::HashSet<String> = self.quorum.keys().cloned().collect();
        self.quorum = quorum;
        self.down = down;
        self.metrics.set_quorums(&self.quorum);
        for (i, lost, weight) in changes {
            let svc = &config.services[i];
            if was_known.contains(&svc.name) || lost {
                let line = format!(
                    "{}: quorum {} (up weight {weight}, quorum {} ± {})",
                    svc.name,
                    if lost { "lost" } else { "gained" },
                    svc.quorum,
                    svc.quorum_hysteresis
                );
                let state = if lost { "lost" } else { "gained" };
                if lost {
                    warn!(event = logging::EVENT_QUORUM, service = %svc.name, state, "{line}")
                } else {
                    info!(event = logging::EVENT_QUORUM, service = %svc.name, state, "{line}")
                }
            }
            let command = if lost { &svc.quorum_down } else { &svc.quorum_up };
            if let Some(command) = command {
                let env = vec![("DRLB_SERVICE", svc.name.clone()), ("DRLB_VIP", svc.vip.to_string()), ("DRLB_STATE", if lost { "down" } else { "up" }.to_string())];
                hooks::run(command, env, format!("{} quorum_{}", svc.name, if lost { "down" } else { "up" }));
            }
        }
    }

    /// Notifications were lost: the real servers' MACs are read from the kernel's table, as
    /// at start, and each applied as if just resolved.
    async fn reread_neighbours(&mut self) {
        warn!("the kernel dropped neighbour-table notifications: reading the table again");
        match netlink::neighbours(&self.handle, self.iface.index).await {
            Ok(known) => {
                let ifindex = self.iface.index;
                for (addr, mac) in known {
                    self.on_neighbour(NeighbourEvent::Resolved { ifindex, addr, mac });
                }
            }
            Err(e) => warn!("{e:#}"),
        }
    }

    fn on_neighbour(&mut self, ev: NeighbourEvent) {
        let wanted = self.wanted();
        let index = self.iface.index;
        let changed = match ev {
            NeighbourEvent::Resolved { ifindex, addr, mac } if ifindex == index && wanted.contains(&addr) => {
                let old = self.macs.insert(addr, mac);
                if old != Some(mac) {
                    info!("real server {addr} is at {}", format_mac(&mac));
                }
                (old != Some(mac)).then_some(addr)
            }
            NeighbourEvent::Failed { ifindex, addr } if ifindex == index && wanted.contains(&addr) => {
                warn!("real server {addr} stopped answering {}; it gets no traffic until it answers again", crate::kernel::netlink::resolution_name(addr));
                self.macs.remove(&addr).is_some().then_some(addr)
            }
            _ => None,
        };
        if let Some(addr) = changed {
            let which: Vec<usize> = self
                .config
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.real_servers.iter().any(|r| r.address == addr) || s.sorry_server.as_ref().is_some_and(|x| x.address == addr))
                .map(|(i, _)| i)
                .collect();
            self.update_services(&which, "neighbour change");
        }
    }

    /// After a health verdict or a neighbour change that concerns the services `which`
    /// only: recomputes and writes those alone (`tables::update_services`,
    /// `Dataplane::apply_only`); a full rebuild where that cannot be done.
    fn update_services(&mut self, which: &[usize], why: &str) {
        if !self.maps_stale && !self.retry_pending {
            let changes = crate::control::tables::update_services(
                &mut self.tables,
                &self.config,
                &self.macs,
                self.iface.mac,
                &mut self.slots,
                &self.down,
                which,
            );
            if let Some(ch) = changes {
                match self.dp.apply_only(&self.tables, &ch.services, &ch.slots) {
                    Ok(()) => return,
                    Err(e) => debug!("{why}: writing the changed services alone failed ({e:#}); rewriting everything"),
                }
            }
        }
        self.rebuild(why);
    }

    /// Sync: which connections the sweep at `now` picks for re-announcement — those whose
    /// refresh fell due since the last sweep, only for VIPs this director holds: after the
    /// VIP moved, the new holder's entries are the current ones, and this director's
    /// (older) must not overwrite them.
    fn refresh_pick(&mut self, now: u64) -> Option<Box<crate::kernel::sweep::Pick>> {
        let (Some(_), Some(cfg)) = (&self.sync, &self.config.director.sync) else { return None };
        // Advanced when a sweep succeeds: a failed one's window is covered by the next.
        let prev = self.last_sweep.unwrap_or(now);
        let period = cfg.refresh_period.as_secs() * self.dp.hz() as u64;
        let held: std::collections::HashSet<lb_common::addr::Addr16> =
            self.config.services.iter().flat_map(|s| s.addresses()).filter(|v| self.holds(*v)).map(lb_common::addr::from_ip).collect();
        Some(Box::new(move |k, c| held.contains(&k.vip) && due_for_refresh(k, c, prev, now, period)))
    }

    /// Sync: sends the connections a sweep picked ([`Controller::refresh_pick`]); a
    /// persistent service's templates go with them, once each.
    fn reannounce(&mut self, entries: &[(lb_common::conn::ConnKey, lb_common::conn::Conn)]) {
        let Some(sync) = &self.sync else { return };
        let names = Names::new(&self.tables);
        let mut templates = std::collections::HashSet::new();
        let mut records = Vec::new();
        for (k, c) in entries {
            let with_template = self.tables.services.get(&c.service).is_some_and(|s| {
                s.flags & lb_common::maps::SVC_F_PERSISTENT != 0 && templates.insert(s.template_key(&k.client, &k.vip, k.vport, k.proto))
            });
            records.extend(names.records(k, c.backend, c.service, c.state, c.flags, with_template));
        }
        sync.announce(records);
    }

    /// Installs one datagram's connections from a peer.
    fn install_synced(&mut self, records: Vec<lb_common::sync::SyncedConn>) {
        let Some(sync) = &self.sync else { return };
        let now = match self.dp.now() {
            Ok(n) => n,
            Err(e) => {
                debug!("reading the dataplane clock: {e:#}");
                return;
            }
        };
        for r in self.dp.install_synced(&records, now) {
            sync.counters.add(Counter::of_install(r), 1);
        }
    }

    /// Scrapes of the metrics read the dataplane with this configuration's names.
    fn set_metrics_source(&self) {
        let (dir, config) = (self.pin_dir.clone(), Arc::new(self.config.clone()));
        self.metrics.set_source(Arc::new(move || status::read(&dir, Some(&config))));
    }

    /// What `drlb status` and doctor read of this controller (VIPs held, sync).
    fn write_state(&self) {
        let state = ControllerState {
            written: crate::observe::state::unix_now(),
            // Behind ECMP routers no director holds the VIPs: announcements say it all.
            vips: if self.announcer.is_some() { Vec::new() } else { self.vips.snapshot() },
            announce: self.announcer.as_ref().map(Announcer::snapshot),
            table_fingerprints: self
                .config
                .services
                .iter()
                .zip(&self.tables.service_id_of)
                .filter_map(|(svc, id)| Some((svc.name.clone(), self.tables.table_fingerprint(*id)?)))
                .collect(),
            sync: self.sync.as_ref().map(|s| SyncState {
                description: s.description.clone(),
                counters: s.counters.snapshot(),
                peers_seen: s.counters.peers_seen(),
            }),
            timings: self.timings.clone(),
        };
        // A state file that stops being written makes `drlb ready` fail within 5 s, and
        // keepalived move the VIP away: the operator must learn why, once.
        match state.write(&self.pin_dir) {
            Err(e) if !self.state_write_failing.replace(true) => warn!("{e:#}: `drlb ready` fails until it can be written"),
            Err(e) => debug!("{e:#}"),
            Ok(()) if self.state_write_failing.replace(false) => info!("the state file is written again"),
            Ok(()) => {}
        }
    }

    /// The interface's addresses changed (or the configured VIPs did).
    async fn follow_addresses(&mut self) {
        match netlink::addresses(&self.handle, self.iface.index).await {
            Ok(addrs) => {
                if std::mem::take(&mut self.addresses_failing) {
                    info!("the interface's addresses are listed again");
                }
                let changes = self.vips.update(&self.config, &addrs);
                if !changes.is_empty() {
                    // Status, metrics and `drlb ready` see the move now, not a second later.
                    self.write_state();
                }
                for (vip, owned) in changes {
                    if owned {
                        info!(event = logging::EVENT_VIP, vip = %vip, state = "held", "VIP {vip} is on {} now: this director receives its traffic", self.iface.name);
                    } else {
                        info!(event = logging::EVENT_VIP, vip = %vip, state = "released", "VIP {vip} left {}: another director (or none) receives its traffic", self.iface.name);
                    }
                }
            }
            // Said once: the listing is repeated every second.
            Err(e) if !self.addresses_failing => {
                self.addresses_failing = true;
                warn!("{e:#}: VIP ownership may be stale until the interface's addresses can be listed");
            }
            Err(e) => debug!("{e:#}"),
        }
    }

    /// Asks the sweeper for a sweep, unless one runs or the last one's CPU budget is not
    /// spent yet.
    fn start_sweep(&mut self) {
        if !self.sweeper.ready() {
            return;
        }
        let now = match self.dp.now() {
            Ok(n) => n,
            Err(e) => {
                warn!("reading the dataplane clock: {e:#}; next sweep in {SWEEP_INTERVAL:?}");
                self.metrics.controller_error(Failure::Sweep);
                return;
            }
        };
        let pick = self.refresh_pick(now);
        // Only slots draining before the sweep reads the table can be found unused by it: a
        // server removed while it reads may have had connections in what it already read.
        self.draining_at_sweep = self.slots.draining().keys().copied().collect();
        let sent = self.sweeper.request(SweepRequest { now, inputs: std::sync::Arc::new(SweepInputs::of(&self.tables)), pick });
        if !sent {
            error!("the sweeper thread has ended: connections no longer expire and counts are not corrected; restart drlb");
            self.metrics.controller_error(Failure::Sweep);
        }
    }

    fn on_sweep(&mut self, done: SweepDone) {
        match done.report {
            Ok(r) => {
                self.sweeper.finished(r.cpu);
                self.reannounce(&r.picked);
                for (slot, had, now) in &r.corrected {
                    debug!(
                        "backend slot {slot}: counts corrected from {}/{} to {}/{} active/inactive",
                        had.active, had.inactive, now.active, now.inactive
                    );
                }
                if r.expired_removed > 0 {
                    debug!("swept {} expired connection(s); {} live, {} half-open", r.expired_removed, r.live, r.half_open);
                }
                self.metrics.observe_sweep(r.read, r.took, r.cpu);
                self.timings.sweep = Some(SweepTiming {
                    entries: r.read,
                    took_ms: r.took.as_secs_f64() * 1e3,
                    cpu_ms: r.cpu.as_secs_f64() * 1e3,
                    spacing_ms: self.sweeper.spacing().as_secs_f64() * 1e3,
                });
                self.last_sweep = Some(done.now);
                let was_draining = std::mem::take(&mut self.draining_at_sweep);
                let freed = self.slots.release_drained(|slot| r.in_use.contains(&slot) || !was_draining.contains(&slot));
                if !freed.is_empty() {
                    debug!("{} removed real server(s) drained", freed.len());
                    if let Err(e) = self.dp.forget_locality(&freed) {
                        warn!("removing lblc/lblcr entries of freed real-server slots: {e:#}");
                    }
                    self.rebuild("drained servers freed");
                }
            }
            Err(e) => {
                self.sweeper.finished(Duration::ZERO);
                warn!("sweeping the connection table (dataplane time {}): {e:#}; next sweep in {SWEEP_INTERVAL:?}", done.now);
                self.metrics.controller_error(Failure::Sweep);
            }
        }
    }
}

/// How `drlb run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Stopped (SIGINT, SIGTERM), or left running for the next controller (SIGUSR2).
    Stopped,
    /// Drained for maintenance (`drlb drain`, SIGUSR1): exits with [`EXIT_DRAINED`], which
    /// drlb.service does not restart.
    Drained,
}

/// `drlb run`'s exit status after `drlb drain` (EX_TEMPFAIL): configs/drlb.service lists it
/// in RestartPreventExitStatus=, so systemd leaves a drained director stopped.
pub const EXIT_DRAINED: u8 = 75;

/// Runs until SIGINT or SIGTERM (which remove the dataplane), SIGUSR1 (`drlb drain`) or
/// SIGUSR2 (which leaves it forwarding, pinned, for the next controller to adopt); SIGHUP
/// reloads the configuration.
pub async fn run(config_path: &Path, replace_dataplane: bool) -> Result<RunEnd> {
    // First of all: a signal that came before its handler would end the process as the
    // default action does, and with VIPs already announced, leave them announced.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut sigusr2 = signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let handle = netlink::connect()?;
    let iface = netlink::interface(&handle, &config.director.interface).await?;
    check_on_link(&config, &iface)?;

    let mut watch = NeighbourWatch::subscribe()?;
    let wanted = real_server_addrs(&config);
    let mut macs: HashMap<IpAddr, Mac> = netlink::neighbours(&handle, iface.index)
        .await?
        .into_iter()
        .filter(|(a, _)| wanted.contains(a))
        .collect();
    for addr in wanted.iter().filter(|a| !macs.contains_key(a)) {
        netlink::trigger_resolution(&handle, iface.index, *addr).await?;
    }
    let deadline = Instant::now() + INITIAL_RESOLUTION_WAIT;
    while wanted.iter().any(|a| !macs.contains_key(a)) {
        tokio::select! {
            _ = sleep_until(deadline) => break,
            ev = watch.next() => match ev {
                Some(NeighbourEvent::Resolved { ifindex, addr, mac }) if ifindex == iface.index && wanted.contains(&addr) => {
                    macs.insert(addr, mac);
                }
                Some(_) => {}
                None => bail!("the neighbour-table subscription ended"),
            },
        }
    }
    log_usability(&config, &macs);

    let pin_dir = config.director.pin_dir();
    if let Some(owner) = crate::kernel::pins::check_owner(&pin_dir, &iface.name)?
        && owner.ifindex != iface.index
    {
        // Same namespace, but the interface was deleted and made again: the old link went
        // with it. Keep the maps (connections, counters), attach afresh.
        warn!(
            "the dataplane pinned at {} was attached to interface index {}, which {} no longer is (now {}): attaching anew",
            pin_dir.display(),
            owner.ifindex,
            iface.name,
            iface.index
        );
        let link = pin_dir.join(crate::kernel::bpf::LINK_PIN);
        std::fs::remove_file(&link).with_context(|| format!("removing the stale link pin {}", link.display()))?;
    }
    // One controller per dataplane: `drlb reload` and `drlb stop` find it by this file.
    let _pidfile = crate::kernel::process::Pidfile::take(&pin_dir)?;
    let (mut dp, origin) = Dataplane::open(config.director.conn_table_size, Some(iface.mac), Some(&pin_dir), replace_dataplane)?;
    let adopted = matches!(origin, Origin::Adopted);
    let (tables, slots) = match origin {
        Origin::Created => (MapContent::default(), Slots::default()),
        Origin::Adopted => {
            let t = dp.adopt_tables().context("reading the pinned dataplane's maps")?;
            let slots = Slots::recover(&t);
            info!(
                "adopting the dataplane pinned at {} ({} service(s)): its connections and counters continue",
                pin_dir.display(),
                t.services.len()
            );
            (t, slots)
        }
    };
    let (rounds_tx, mut rounds) = mpsc::channel(1024);
    let (sweeper, mut sweeps) = Sweeper::start(&pin_dir)?;
    let mut c = Controller {
        config_path: config_path.to_owned(),
        config,
        iface,
        handle,
        macs,
        slots,
        tables,
        dp,
        health: Tracker::default(),
        down: Down::default(),
        quorum: HashMap::new(),
        checkers: Vec::new(),
        rounds_tx,
        metrics: Arc::new(Metrics::new()),
        retry_pending: false,
        maps_stale: false,
        sync: None,
        vips: VipTracker::default(),
        announcer: None,
        reported: Default::default(),
        last_sweep: None,
        sweeper,
        draining_at_sweep: Default::default(),
        timings: ControllerTimings::default(),
        pin_dir: pin_dir.clone(),
        state_write_failing: std::cell::Cell::new(false),
        addresses_failing: false,
    };
    let mut addresses = netlink::AddressWatch::subscribe()?;
    c.follow_addresses().await;
    if let Some(cfg) = c.config.director.sync.clone() {
        let on = netlink::interface(&c.handle, &cfg.interface).await.context("director.sync.interface")?;
        let own = netlink::addresses(&c.handle, on.index).await?;
        let ring = c.dp.take_conn_events()?;
        let sync = Sync::start(&cfg, on.index, on.mtu, own, ring, Names::new(&c.tables))?;
        c.dp.set_conn_events(true)?;
        info!("connection sync: {}", sync.description);
        c.sync = Some(sync);
    }
    let mut sync_inbox = c.sync.as_mut().map(|s| std::mem::replace(&mut s.inbox, mpsc::channel(1).1));
    // At start nothing forwards yet: a config that does not fit is fatal here.
    let config = c.config.clone();
    c.apply_config(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let attached = c.dp.attach_balancer(&c.iface.name, c.config.director.xdp_mode)?;
    let mode = match attached {
        Some(m) => format!("{m} mode"),
        None => "the mode it had (taken over from the pinned link)".to_string(),
    };
    let usable = c
        .config
        .services
        .iter()
        .flat_map(|s| &s.real_servers)
        .filter(|rs| usability(rs, &c.macs) == Usability::Usable)
        .count();
    let xdp_mode = match attached {
        Some(m) => m.to_string(),
        None => "adopted".to_string(),
    };
    c.metrics.set_attachment(&xdp_mode, Some(c.pin_dir.join(crate::kernel::bpf::LINK_PIN)));
    c.set_metrics_source();
    let metrics_task = match c.config.director.metrics_listen {
        Some(addr) => {
            let task = c.metrics.clone().serve(addr).await?;
            info!("metrics on http://{addr}/metrics");
            Some(task)
        }
        None => None,
    };
    info!(
        event = logging::EVENT_ATTACH,
        interface = %c.iface.name,
        mode = %xdp_mode,
        "ready: XDP attached to {} in {mode}; {} service(s), {usable} usable real server(s)",
        c.iface.name,
        c.config.services.len()
    );
    if let Some(a) = &c.config.director.announce {
        // An adopted dataplane kept its connections: nothing to learn before announcing.
        let warmup = c.config.director.announce_warmup();
        let first = if adopted { Duration::ZERO } else { warmup };
        info!("announcing VIPs through routing table {} after {} of connection sync", a.table, humantime::format_duration(first));
        c.announcer = Some(Announcer::new(a.table, warmup, adopted)?);
        c.follow_announcements().await;
    }
    notify::ready();

    c.start_checkers();
    let mut leave = false;
    let mut end = RunEnd::Stopped;
    let mut refresh = interval(REFRESH_INTERVAL);
    refresh.tick().await;
    let mut sweep = interval(SWEEP_INTERVAL);
    sweep.tick().await;
    let mut observe = interval(Duration::from_secs(1));
    // A tick that came late (a slow netlink reply) is not made up with a burst of ticks.
    observe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: detaching"); break; }
            _ = sigterm.recv() => {
                if c.announcer.is_some() {
                    info!("SIGTERM: draining, then detaching");
                    c.drain().await;
                } else {
                    info!("SIGTERM: detaching");
                }
                break;
            }
            _ = sigusr1.recv() => {
                if c.announcer.is_some() {
                    info!("SIGUSR1 (drlb drain): draining for maintenance, then detaching");
                    c.drain().await;
                    end = RunEnd::Drained;
                    break;
                }
                warn!("SIGUSR1 (drlb drain) ignored: without director.announce the routers' choice of director is not drlb's");
            }
            _ = sigusr2.recv() => { info!("SIGUSR2: exiting, leaving the dataplane forwarding for the next controller"); leave = true; break; }
            _ = sighup.recv() => { info!("SIGHUP: reloading {}", c.config_path.display()); c.reload().await; }
            _ = sweep.tick() => c.start_sweep(),
            Some(done) = sweeps.recv() => c.on_sweep(done),
            _ = observe.tick() => {
                c.retry_if_stale();
                // Written first: nothing below may keep `drlb ready` from seeing a fresh file.
                c.write_state();
                // Listed again every second, not only on a notification: a notification
                // the kernel dropped would leave VIP ownership wrong in status, metrics,
                // `drlb ready` and sync until the next move.
                c.follow_addresses().await;
                c.follow_announcements().await;
                // Real servers without a MAC are asked for again every second, not only at
                // the 30 s refresh: after the director's link flaps (the kernel fails every
                // neighbour entry when carrier goes), forwarding resumes within a second.
                for addr in c.wanted().into_iter().filter(|a| !c.macs.contains_key(a)) {
                    if let Err(e) = netlink::trigger_resolution(&c.handle, c.iface.index, addr).await {
                        debug!("{e:#}");
                    }
                }
            }
            Some(r) = rounds.recv() => c.on_rounds(r, &mut rounds),
            Some(records) = next_synced(&mut sync_inbox) => c.install_synced(records),
            change = addresses.next() => {
                let Some(change) = change else { bail!("the address-change subscription ended") };
                if change.concerns(c.iface.index) {
                    c.follow_addresses().await;
                }
            }
            _ = refresh.tick() => {
                for addr in c.wanted() {
                    if let Err(e) = netlink::trigger_resolution(&c.handle, c.iface.index, addr).await {
                        warn!("{e:#}");
                    }
                }
            }
            ev = watch.next() => {
                let Some(ev) = ev else { bail!("the neighbour-table subscription ended") };
                match ev {
                    NeighbourEvent::Removed { ifindex, addr } => {
                        if ifindex == c.iface.index && c.wanted().contains(&addr) {
                            // Keep forwarding to the MAC we know and ask the kernel to confirm it.
                            netlink::trigger_resolution(&c.handle, c.iface.index, addr).await.ok();
                        }
                    }
                    NeighbourEvent::Lost => c.reread_neighbours().await,
                    ev => c.on_neighbour(ev),
                }
            }
        }
    }
    notify::stopping();
    if !leave {
        // Detaching: the routers must not keep sending here (SIGTERM has drained already).
        if let Some(a) = c.announcer.as_mut() {
            a.drain();
        }
        c.follow_announcements().await;
        c.omega_notifies().await;
    }
    if let Some(mut s) = c.sync.take() {
        s.stop();
        let _ = c.dp.set_conn_events(false);
    }
    ControllerState::remove(&pin_dir);
    if let Some(t) = metrics_task {
        t.abort();
    }
    for h in c.checkers.drain(..) {
        h.abort();
    }
    if let Ok(counters) = c.dp.counters() {
        log_counters(&counters);
    }
    log_backend_counters(&c.config, &c.tables, &c.dp);
    if leave {
        c.dp.leave_running();
        info!(event = logging::EVENT_DETACH, interface = %c.iface.name, dataplane = "left", "left the dataplane pinned at {}", pin_dir.display());
    } else {
        c.dp.shut_down()?;
        info!(event = logging::EVENT_DETACH, interface = %c.iface.name, dataplane = "detached", "detached from {}", c.iface.name);
    }
    Ok(end)
}

/// The next datagram of synced connections; never, without sync.
async fn next_synced(inbox: &mut Option<mpsc::Receiver<Vec<lb_common::sync::SyncedConn>>>) -> Option<Vec<lb_common::sync::SyncedConn>> {
    match inbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One line per real server: `rs web 198.18.0.11: active=.. inactive=.. conns=.. packets=.. bytes=..`.
/// One line per service (the sum of its servers: in DR every packet of a service goes to
/// one of them) and one per real server: active, inactive, conns, packets, bytes.
pub fn log_backend_counters(config: &Config, tables: &MapContent, dp: &Dataplane) {
    for (svc, slots) in config.services.iter().zip(&tables.slots) {
        let per_rs: Vec<_> = svc.real_servers.iter().zip(slots).map(|(rs, slot)| (rs, dp.backend_counters(*slot).unwrap_or_default())).collect();
        let sum = |f: fn(&crate::kernel::bpf::BackendCounters) -> u64| per_rs.iter().map(|(_, c)| f(c)).sum::<u64>();
        info!(
            "service {} {}:{}/{}: active={} inactive={} conns={} packets={} bytes={}",
            svc.name,
            svc.vip,
            svc.port,
            svc.protocol,
            sum(|c| c.active as u64),
            sum(|c| c.inactive as u64),
            sum(|c| c.conns),
            sum(|c| c.packets),
            sum(|c| c.bytes)
        );
        for (rs, c) in &per_rs {
            info!(
                "rs {} {}: active={} inactive={} conns={} packets={} bytes={}",
                svc.name, rs.address, c.active, c.inactive, c.conns, c.packets, c.bytes
            );
        }
    }
}
