//! What only the running controller knows — which VIPs this director holds and since when,
//! and connection sync's counters — written to `/run/drlb/<pin dir>.state.json` once a
//! second, so `drlb status`, `drlb doctor` and the metrics show it like the maps.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// One VIP of the configuration, as this director's interface has it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipOwnership {
    pub vip: IpAddr,
    /// The address is on the director's interface now.
    pub owned: bool,
    /// When it was last added or removed (Unix seconds), as the controller saw it.
    pub since: u64,
}

/// One VIP's announcement to the routers (`director.announce`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announcement {
    pub vip: IpAddr,
    /// Its route is in the announcement table: the BGP speaker announces it.
    pub announced: bool,
    /// When it was last announced or withdrawn (Unix seconds).
    pub since: u64,
    /// "serving", or why it is withdrawn ("quorum lost: web", "draining", "warming up: ...").
    pub reason: String,
}

/// The announcements of a director behind ECMP routers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnnounceState {
    /// The routing table the BGP speaker exports.
    pub table: u32,
    /// `drlb drain` or SIGTERM: everything withdrawn, waiting for the routers.
    pub draining: bool,
    pub vips: Vec<Announcement>,
}

/// Connection sync, as the controller last counted it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SyncState {
    /// "syncid 7 on eth0 via 224.0.0.81:8848".
    pub description: String,
    /// Non-zero counters by name (`crate::sync::Counter`).
    pub counters: BTreeMap<String, u64>,
    /// Peers heard from, with the Unix second of their last good datagram.
    pub peers_seen: BTreeMap<IpAddr, u64>,
}

/// The last sweep of the connection tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SweepTiming {
    /// Connection-table entries read.
    pub entries: usize,
    pub took_ms: f64,
    /// CPU time of the sweeper thread.
    pub cpu_ms: f64,
    /// Time from this sweep's start to the earliest next (the CPU budget stretches it).
    pub spacing_ms: f64,
}

/// The last reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadTiming {
    /// Reloads since the controller started (applied or rejected).
    pub count: u64,
    pub ok: bool,
    pub services: usize,
    /// From the signal to the maps written.
    pub took_ms: f64,
}

/// The last health verdict that changed a real server's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VerdictTiming {
    /// Verdicts since the controller started.
    pub count: u64,
    /// "web rs1 198.18.0.11:80".
    pub target: String,
    pub up: bool,
    /// From the end of the check round that decided it to the maps written.
    pub applied_ms: f64,
}

/// How long the controller's own work takes: what `drlb bench --controller` reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControllerTimings {
    pub sweep: Option<SweepTiming>,
    pub reload: Option<ReloadTiming>,
    pub verdict: Option<VerdictTiming>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControllerState {
    /// When written (Unix seconds): a stale file belongs to a controller that stopped.
    pub written: u64,
    pub vips: Vec<VipOwnership>,
    pub sync: Option<SyncState>,
    /// With `director.announce`.
    #[serde(default)]
    pub announce: Option<AnnounceState>,
    /// Each service with a scheduler table (`mh`): a fingerprint of the table as real
    /// servers. Equal on every director behind ECMP routers, or flows moved between
    /// directors change real server.
    #[serde(default)]
    pub table_fingerprints: BTreeMap<String, String>,
    #[serde(default)]
    pub timings: ControllerTimings,
}

/// The state file of the controller of the dataplane pinned at `pin_dir`.
pub fn path(pin_dir: &Path) -> PathBuf {
    crate::kernel::process::pidfile_path(pin_dir).with_extension("state.json")
}

impl ControllerState {
    /// Replaces the file atomically (written beside it, then renamed).
    pub fn write(&self, pin_dir: &Path) -> Result<()> {
        let p = path(pin_dir);
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))
    }

    /// The state the running controller of `pin_dir` wrote, if one runs.
    pub fn read(pin_dir: &Path) -> Option<ControllerState> {
        crate::kernel::process::running_controller(pin_dir).ok().flatten()?;
        let text = std::fs::read(path(pin_dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn remove(pin_dir: &Path) {
        let _ = std::fs::remove_file(path(pin_dir));
    }
}

/// The longest the controller may go without writing its state before it counts as stuck.
pub const STALE_AFTER_S: u64 = 5;

/// Whether the controller of the dataplane pinned at `pin_dir` serves: it runs, wrote its
/// state within [`STALE_AFTER_S`], and the dataplane's XDP link is pinned.
pub fn ready(pin_dir: &Path) -> Result<(), String> {
    match crate::kernel::process::running_controller(pin_dir) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("no `drlb run` runs for the dataplane at {}", pin_dir.display())),
        Err(e) => return Err(format!("{e:#}")),
    }
    let state = std::fs::read(path(pin_dir))
        .ok()
        .and_then(|t| serde_json::from_slice::<ControllerState>(&t).ok())
        .ok_or_else(|| format!("the controller has not reported yet ({})", path(pin_dir).display()))?;
    let age = unix_now().saturating_sub(state.written);
    if age > STALE_AFTER_S {
        return Err(format!("the controller last reported {age} s ago: it is stuck"));
    }
    let link = pin_dir.join(crate::kernel::bpf::LINK_PIN);
    if !link.exists() {
        return Err(format!("no XDP link is pinned at {}: the dataplane is not attached", link.display()));
    }
    Ok(())
}
