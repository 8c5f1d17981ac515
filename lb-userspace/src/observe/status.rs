//! `drlb status`: what `ipvsadm -Ln` shows, read from the pinned maps — so it works while
//! `drlb run` runs and after it died. Names come from the config file when it has them.

use std::collections::BTreeMap;

use crate::observe::state::ControllerState;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use lb_common::maps::{
    BACKEND_F_DRAINING, BACKEND_F_HEALTH_DOWN,
    SVC_F_PERSISTENT, SVC_F_SLOPPY_TCP,
};
use lb_common::events::Event;
use lb_common::verdict::{Verdict, VERDICT_COUNT};
use serde::Serialize;

use crate::control::config::Config;
use crate::kernel::mac::format_mac;
use crate::kernel::bpf::pinned_layout;
use crate::kernel::maps::{self, Pinned};
use lb_common::addr::to_ip as ip_of;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RealServerStatus {
    pub address: String,
    pub port: u16,
    pub mac: String,
    pub weight: u32,
    /// up, down (health check), unresolved (no ARP reply), draining (removed, connections finishing)
    pub health: String,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub conns: u64,
    pub in_pkts: u64,
    pub in_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Default)]
pub struct Rate {
    pub cps: f64,
    pub in_pps: f64,
    pub in_bps: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceStatus {
    pub name: Option<String>,
    pub protocol: String,
    pub vip: String,
    pub port: u16,
    pub scheduler: String,
    pub persistence_timeout_s: Option<u32>,
    pub sloppy_tcp: bool,
    /// The other VIP:ports of a group service (`group:`), which share its state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
    pub conns: u64,
    pub in_pkts: u64,
    pub in_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    pub real_servers: Vec<RealServerStatus>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub pin_dir: String,
    pub layout: Vec<u32>,
    pub services: Vec<ServiceStatus>,
    /// Packets per verdict reason since the dataplane was created.
    pub reasons: BTreeMap<String, u64>,
    /// Connection events (`lb_common::events`) since the dataplane was created.
    pub events: BTreeMap<String, u64>,
    /// What the running controller reports (VIPs held, connection sync); none when no
    /// controller runs.
    pub controller: Option<ControllerState>,
}


/// A service's scheduler name, from the code its map value holds.
pub fn scheduler_name(code: u32) -> &'static str {
    lb_common::maps::Scheduler::from_code(code).map_or("?", |s| s.name())
}

/// `address:port` as ipvsadm writes it, an IPv6 address in brackets.
fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// Reads the dataplane pinned at `dir`; `config` supplies names.
pub fn read(dir: &Path, config: Option<&Config>) -> Result<Status> {
    let Some(layout) = pinned_layout(dir)? else {
        bail!("no drlb dataplane is pinned at {} (is `drlb run` running for this interface?)", dir.display());
    };
    let maps = Pinned::open(dir)?;
    let mut keys = maps::service_ids(&maps)?;
    keys.sort_by_key(|(k, _)| (k.vip, k.port, k.proto));
    // Once, not per service: with thousands of services a search per service is quadratic,
    // and the controller reads this every second for its metrics.
    let by_key: std::collections::HashMap<lb_common::maps::ServiceKey, &crate::control::config::Service> =
        config.map(|c| c.services.iter().map(|s| (s.identity(), s)).collect()).unwrap_or_default();
    // A group's keys all lead to one id: it is listed once, under its least key (its
    // identity), with the others as `also`.
    let mut also: std::collections::HashMap<u32, Vec<String>> = std::collections::HashMap::new();
    let mut listed = std::collections::HashSet::new();
    keys.retain(|(key, id)| {
        if listed.insert(*id) {
            return true;
        }
        let vip = ip_of(&key.vip).map(|a: IpAddr| a.to_string()).unwrap_or_default();
        also.entry(*id).or_default().push(endpoint(&vip, key.port));
        false
    });
    let mut out = Vec::new();
    for (key, id) in keys {
        let svc = maps::service(&maps, id)?;
        let vip_ip = ip_of(&key.vip);
        let vip = vip_ip.map(|a: IpAddr| a.to_string()).unwrap_or_default();
        let cfg = by_key.get(&key).copied();
        let mut real_servers = Vec::new();
        for (_, slot) in maps::members(&maps, &svc)? {
            let b = maps::backend(&maps, slot)?;
            let c = maps::backend_counters(&maps, slot)?;
            let (conns, pkts, bytes) = (c.conns, c.packets, c.bytes);
            let health = if b.flags & BACKEND_F_DRAINING != 0 {
                "draining"
            } else if b.flags & BACKEND_F_HEALTH_DOWN != 0 {
                "down"
            } else if !b.is_present() {
                "unresolved"
            } else {
                "up"
            };
            real_servers.push(RealServerStatus {
                address: ip_of(&b.addr).map(|a: IpAddr| a.to_string()).unwrap_or_default(),
                port: key.port,
                mac: if b.is_present() { format_mac(&b.mac()) } else { "-".into() },
                weight: b.weight,
                health: health.into(),
                active_conns: c.active,
                inactive_conns: c.inactive,
                conns,
                in_pkts: pkts,
                in_bytes: bytes,
                rate: None,
            });
        }
        out.push(ServiceStatus {
            name: cfg.map(|s| s.name.clone()),
            protocol: if key.proto == 6 { "TCP".into() } else { "UDP".into() },
            vip,
            port: key.port,
            scheduler: scheduler_name(svc.scheduler).into(),
            persistence_timeout_s: (svc.flags & SVC_F_PERSISTENT != 0).then_some(svc.persist_timeout_s),
            sloppy_tcp: svc.flags & SVC_F_SLOPPY_TCP != 0,
            also: also.remove(&id).unwrap_or_default(),
            conns: real_servers.iter().map(|r| r.conns).sum(),
            in_pkts: real_servers.iter().map(|r| r.in_pkts).sum(),
            in_bytes: real_servers.iter().map(|r| r.in_bytes).sum(),
            rate: None,
            real_servers,
        });
    }
    let counters = maps::counters(&maps)?;
    let reason_counts: BTreeMap<String, u64> = Verdict::ALL.iter().map(|s| (s.name().to_string(), counters[s.index() as usize])).collect();
    debug_assert_eq!(reason_counts.len(), VERDICT_COUNT as usize);
    let events = maps::events(&maps)?;
    let events = Event::ALL.iter().map(|e| (e.name().to_string(), events[e.index() as usize])).collect();
    Ok(Status {
        pin_dir: dir.display().to_string(),
        layout: layout.to_vec(),
        services: out,
        reasons: reason_counts,
        events,
        controller: ControllerState::read(dir),
    })
}

/// Two readings `interval` apart, with per-second rates filled in from their difference.
pub fn read_with_rates(dir: &Path, config: Option<&Config>, interval: Duration) -> Result<Status> {
    let a = read(dir, config)?;
    std::thread::sleep(interval);
    let mut b = read(dir, config)?;
    let secs = interval.as_secs_f64();
    let rate = |c0: u64, c1: u64, p0: u64, p1: u64, b0: u64, b1: u64| Rate {
        cps: c1.saturating_sub(c0) as f64 / secs,
        in_pps: p1.saturating_sub(p0) as f64 / secs,
        in_bps: b1.saturating_sub(b0) as f64 * 8.0 / secs,
    };
    for sb in &mut b.services {
        let Some(sa) = a.services.iter().find(|s| s.vip == sb.vip && s.port == sb.port && s.protocol == sb.protocol) else { continue };
        sb.rate = Some(rate(sa.conns, sb.conns, sa.in_pkts, sb.in_pkts, sa.in_bytes, sb.in_bytes));
        for rb in &mut sb.real_servers {
            if let Some(ra) = sa.real_servers.iter().find(|r| r.address == rb.address) {
                rb.rate = Some(rate(ra.conns, rb.conns, ra.in_pkts, rb.in_pkts, ra.in_bytes, rb.in_bytes));
            }
        }
    }
    Ok(b)
}

/// What to show.
#[derive(Debug, Clone, Copy, Default)]
pub struct View {
    pub stats: bool,
    pub rate: bool,
    pub reasons: bool,
}

/// `ipvsadm -Ln`'s layout, with drlb's MAC and health columns.
pub fn render(s: &Status, view: View) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "drlb Direct-Routing load balancer (dataplane pinned at {}, layout {})", s.pin_dir, s.layout[0]);
    if view.stats {
        let _ = writeln!(o, "Prot LocalAddress:Port               Conns   InPkts  InBytes");
        let _ = writeln!(o, "  -> RemoteAddress:Port");
    } else if view.rate {
        let _ = writeln!(o, "Prot LocalAddress:Port                 CPS    InPPS    InBPS");
        let _ = writeln!(o, "  -> RemoteAddress:Port");
    } else {
        let _ = writeln!(o, "Prot LocalAddress:Port Scheduler Flags");
        let _ = writeln!(o, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn MAC               Health");
    }
    for svc in &s.services {
        let local = endpoint(&svc.vip, svc.port);
        if view.stats {
            let _ = writeln!(o, "{:<4} {:<28} {:>8} {:>8} {:>8}", svc.protocol, local, svc.conns, svc.in_pkts, svc.in_bytes);
        } else if view.rate {
            let r = svc.rate.unwrap_or_default();
            let _ = writeln!(o, "{:<4} {:<28} {:>8.0} {:>8.0} {:>8.0}", svc.protocol, local, r.cps, r.in_pps, r.in_bps);
        } else {
            let mut flags = String::new();
            if let Some(p) = svc.persistence_timeout_s {
                flags += &format!("persistent {p}");
            }
            if svc.sloppy_tcp {
                flags += if flags.is_empty() { "sloppy" } else { " sloppy" };
            }
            let name = svc.name.as_deref().map(|n| format!("  ({n})")).unwrap_or_default();
            let _ = writeln!(o, "{:<4} {} {} {}{}", svc.protocol, local, svc.scheduler, flags, name);
            if !svc.also.is_empty() {
                let _ = writeln!(o, "     also {}", svc.also.join(", "));
            }
        }
        for rs in &svc.real_servers {
            let remote = endpoint(&rs.address, rs.port);
            if view.stats {
                let _ = writeln!(o, "  -> {:<28} {:>8} {:>8} {:>8}", remote, rs.conns, rs.in_pkts, rs.in_bytes);
            } else if view.rate {
                let r = rs.rate.unwrap_or_default();
                let _ = writeln!(o, "  -> {:<28} {:>8.0} {:>8.0} {:>8.0}", remote, r.cps, r.in_pps, r.in_bps);
            } else {
                let _ = writeln!(
                    o,
                    "  -> {:<28} Route   {:<6} {:<10} {:<9} {:<17} {}",
                    remote, rs.weight, rs.active_conns, rs.inactive_conns, rs.mac, rs.health
                );
            }
        }
    }
    if let Some(c) = &s.controller {
        render_controller(&mut o, c, view);
    }
    if view.reasons {
        let _ = writeln!(o, "Packets by verdict reason:");
        for (k, v) in &s.reasons {
            let _ = writeln!(o, "  {k:<24} {v}");
        }
        let _ = writeln!(o, "Connection events:");
        for e in Event::ALL {
            let _ = writeln!(o, "  {:<24} {:<12} {}", e.name(), s.events.get(e.name()).copied().unwrap_or(0), e.meaning());
        }
        if let Some(sync) = s.controller.as_ref().and_then(|c| c.sync.as_ref()) {
            let _ = writeln!(o, "Sync problems, by reason (input refused, records left out, sends failed, events lost):");
            let rejected: Vec<_> = crate::sync::Counter::ALL.iter().filter(|c| c.is_rejection()).collect();
            for c in rejected {
                let _ = writeln!(o, "  {:<24} {}", c.name(), sync.counters.get(c.name()).copied().unwrap_or(0));
            }
        }
    }
    o
}

/// "12s", "5m3s", "2h1m", "3d4h": how long ago `since` (Unix seconds) was.
fn ago(since: u64) -> String {
    let secs = crate::observe::state::unix_now().saturating_sub(since);
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn render_controller(o: &mut String, c: &ControllerState, view: View) {
    for v in &c.vips {
        let held = if v.owned { "held by this director" } else { "not held here" };
        let _ = writeln!(o, "VIP {:<24} {held} for {}", v.vip, ago(v.since));
    }
    for (service, fingerprint) in &c.table_fingerprints {
        let _ = writeln!(o, "Scheduler table of {service}: fingerprint {fingerprint} (the same on every director: flows keep their real server when they move)");
    }
    if let Some(a) = &c.announce {
        for v in &a.vips {
            let what = if v.announced { "announced to the routers".to_string() } else { format!("withdrawn ({})", v.reason) };
            let _ = writeln!(o, "VIP {:<24} {what} for {} (table {})", v.vip, ago(v.since), a.table);
        }
    }
    if let Some(sync) = &c.sync {
        let n = |k: &str| sync.counters.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "Sync: {}: sent {} connection(s) in {} datagram(s); received {} in {}; installed {} new, {} updated, {} moved, {} template(s)",
            sync.description,
            n("records_sent"),
            n("messages_sent"),
            n("records_received"),
            n("messages_received"),
            n("installed"),
            n("updated"),
            n("moved"),
            n("templates")
        );
        for (peer, seen) in &sync.peers_seen {
            let _ = writeln!(o, "  peer {peer}: last heard {} ago", ago(*seen));
        }
        let refused: u64 =
            crate::sync::Counter::ALL.iter().filter(|k| k.is_rejection()).map(|k| n(k.name())).sum();
        if refused > 0 && !view.reasons {
            let _ = writeln!(o, "  {refused} sync problem(s): refused or left-out input, failed sends, lost events (`drlb status --reasons` says which)");
        }
    }
}
