//! `drlb run`: loads the dataplane, resolves real servers, programs the maps, attaches XDP,
//! follows neighbour changes, and detaches on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use log::{debug, info, warn};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, interval, sleep_until};

use crate::config::Config;
use crate::dataplane::{Dataplane, PROGRAM_LB, log_counters, monotonic_ns};
use crate::netlink::{self, Interface, NeighbourEvent, NeighbourWatch};
use crate::tables::{Mac, Tables, Usability, usability};

/// How long start-up waits for real servers' ARP replies before attaching anyway.
const INITIAL_RESOLUTION_WAIT: Duration = Duration::from_secs(3);
/// How often the connection table is swept: expired entries removed, and every real
/// server's ActiveConn/InActConn recomputed from the live entries. Between sweeps the
/// counts are kept exact by the dataplane itself; they can drift only by entries that
/// expire without another packet or are evicted by the LRU (fixed at the next sweep, so
/// at most this late), and by state changes racing a sweep's write (fixed at the next).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// How often every real server's neighbour entry is re-confirmed (keeps it from being
/// garbage-collected, since the director never sends IP traffic to real servers itself).
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Refuses real servers that are not on-link: DR delivers frames at layer 2 only.
pub fn check_on_link(config: &Config, iface: &Interface) -> Result<()> {
    for svc in &config.services {
        for rs in &svc.real_servers {
            if !iface.on_link(rs.address) {
                bail!(
                    "real server {} of service `{}` is not on-link on {} ({}): Direct Routing forwards \
                     frames at layer 2, so every real server must be in a subnet of the director's interface",
                    rs.address,
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
    let mut v: Vec<IpAddr> = config.services.iter().flat_map(|s| s.real_servers.iter().map(|r| r.address)).collect();
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
                    "{} {}: no ARP reply yet, so it gets no traffic until it answers (is it up and on this segment?)",
                    svc.name, rs.address
                ),
            }
        }
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> Result<()> {
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

    let mut dp = Dataplane::load_with(config.director.conn_table_size)?;
    dp.apply(&Tables::build(&config, &macs, iface.mac))?;
    let (link, mode) = dp.attach(PROGRAM_LB, &iface.name, config.director.xdp_mode)?;
    let usable = config
        .services
        .iter()
        .flat_map(|s| &s.real_servers)
        .filter(|rs| usability(rs, &macs) == Usability::Usable)
        .count();
    info!(
        "ready: XDP attached to {} in {mode} mode; {} service(s), {usable} usable real server(s)",
        iface.name,
        config.services.len()
    );

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut refresh = interval(REFRESH_INTERVAL);
    refresh.tick().await;
    let mut sweep = interval(SWEEP_INTERVAL);
    sweep.tick().await;
    loop {
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: detaching"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: detaching"); break; }
            _ = sweep.tick() => {
                match dp.sweep(monotonic_ns()) {
                    Ok(r) => {
                        for (slot, had, now) in &r.corrected {
                            debug!("backend slot {slot}: counts corrected from {}/{} to {}/{} active/inactive", had.active, had.inactive, now.active, now.inactive);
                        }
                        if r.expired_removed > 0 {
                            debug!("swept {} expired connection(s); {} live", r.expired_removed, r.live);
                        }
                    }
                    Err(e) => warn!("sweeping the connection table: {e:#}"),
                }
            }
            _ = refresh.tick() => {
                for addr in &wanted {
                    if let Err(e) = netlink::trigger_resolution(&handle, iface.index, *addr).await {
                        warn!("{e:#}");
                    }
                }
            }
            ev = watch.next() => {
                let Some(ev) = ev else { bail!("the neighbour-table subscription ended") };
                let changed = match ev {
                    NeighbourEvent::Resolved { ifindex, addr, mac } if ifindex == iface.index && wanted.contains(&addr) => {
                        let old = macs.insert(addr, mac);
                        if old != Some(mac) {
                            info!("real server {addr} is at {}", format_mac(&mac));
                        }
                        old != Some(mac)
                    }
                    NeighbourEvent::Failed { ifindex, addr } if ifindex == iface.index && wanted.contains(&addr) => {
                        warn!("real server {addr} stopped answering ARP; it gets no traffic until it answers again");
                        macs.remove(&addr).is_some()
                    }
                    NeighbourEvent::Removed { ifindex, addr } if ifindex == iface.index && wanted.contains(&addr) => {
                        // Keep forwarding to the MAC we know and ask the kernel to confirm it.
                        netlink::trigger_resolution(&handle, iface.index, addr).await.ok();
                        false
                    }
                    _ => false,
                };
                if changed {
                    dp.apply(&Tables::build(&config, &macs, iface.mac)).context("updating the maps")?;
                }
            }
        }
    }
    if let Ok(c) = dp.counters() {
        log_counters(&c);
    }
    log_backend_counters(&config, &dp);
    dp.detach(PROGRAM_LB, link)?;
    info!("detached from {}", iface.name);
    Ok(())
}

pub fn format_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// One line per real server: `rs web 198.18.0.11: active=.. inactive=.. conns=.. packets=.. bytes=..`.
pub fn log_backend_counters(config: &Config, dp: &Dataplane) {
    let mut slot = 0u32;
    for svc in &config.services {
        for rs in &svc.real_servers {
            if let Ok(c) = dp.backend_counters(slot) {
                info!(
                    "rs {} {}: active={} inactive={} conns={} packets={} bytes={}",
                    svc.name, rs.address, c.active, c.inactive, c.conns, c.packets, c.bytes
                );
            }
            slot += 1;
        }
    }
}
