//! The XDP object in the kernel: loading, attaching, programming its maps, reading counters.

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode as AyaXdpMode, xdp::XdpLinkId};
use aya::{Ebpf, EbpfLoader};
use std::collections::BTreeMap;

use lb_common::conn::{Conn, ConnKey};
use lb_common::maps::{
    Backend, BackendStats, ConnCounts, Persist, SchedState, Service, ServiceKey, Vip, VipKey, MAP_BACKENDS, MAP_MEMBERS,
    MAP_PERSIST, SVC_F_PERSISTENT, SVC_F_WILDCARD,
    MAP_BACKEND_STATS, MAP_CONNS, MAP_CONN_COUNTS, MAP_SCHED_STATE, MAP_SCHED_TABLE, MAP_SERVICES, MAP_SERVICE_IDS,
    MAP_STATS, MAP_VIPS, MAP_VIP_FILTER,
};
use lb_common::stats::{Stat, STAT_COUNT};
use log::{info, warn};

use crate::config::XdpMode;
use crate::tables::Tables;

/// The compiled dataplane, embedded so that `drlb` is one self-contained binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// The balancing program's name in the object.
pub const PROGRAM_LB: &str = "drlb_xdp";
/// An XDP_PASS-only program (for veth peers in the lab).
pub const PROGRAM_PASS: &str = "drlb_pass";

/// Attachment mode actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

/// Counters summed over CPUs, indexed like [`Stat::ALL`].
pub type Counters = [u64; STAT_COUNT as usize];

/// drlb's loaded dataplane.
pub struct Dataplane {
    ebpf: Ebpf,
    /// What the last `apply` wrote, so the next one writes only differences and clears
    /// what is gone.
    applied: Tables,
}

/// A real server's counters as `ipvsadm -Ln --stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub active: u32,
    pub inactive: u32,
    pub conns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// What a sweep of the connection table found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub live: usize,
    pub expired_removed: usize,
    /// Backends whose counts were corrected (drift found), with the old counts.
    pub corrected: Vec<(u32, ConnCounts, ConnCounts)>,
    /// Backend slots that live connections use.
    pub in_use: std::collections::BTreeSet<u32>,
}

/// Monotonic nanoseconds, the clock `bpf_ktime_get_ns()` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (verifier runs here), with the
    /// connection table sized `conn_table_size` entries.
    pub fn load_with(conn_table_size: u32) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_CONNS, conn_table_size)
            .load(EBPF_OBJECT)
            .context("loading drlb's BPF object (are you root, and is this kernel 5.10 or newer?)")?;
        for name in [PROGRAM_LB, PROGRAM_PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the object"))?
                .try_into()?;
            prog.load().with_context(|| format!("the kernel verifier rejected {name}"))?;
        }
        Ok(Dataplane { ebpf, applied: Tables::default() })
    }

    /// [`Dataplane::load_with`] the default connection-table size.
    pub fn load() -> Result<Self> {
        Self::load_with(lb_common::maps::DEFAULT_CONN_TABLE_SIZE)
    }

    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    fn program_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?)
    }

    /// Attaches `program` to `interface` in `mode`. `Auto` tries native first and falls
    /// back to generic, logging why.
    pub fn attach(&mut self, program: &str, interface: &str, mode: XdpMode) -> Result<(XdpLinkId, AttachedMode)> {
        let prog = self.program_mut(program)?;
        let native = |prog: &mut Xdp| {
            prog.attach(interface, AyaXdpMode::Driver)
                .with_context(|| format!("attaching XDP in native (driver) mode to {interface}"))
        };
        let generic = |prog: &mut Xdp| {
            prog.attach(interface, AyaXdpMode::Skb)
                .with_context(|| format!("attaching XDP in generic (SKB) mode to {interface}"))
        };
        match mode {
            XdpMode::Native => Ok((native(prog)?, AttachedMode::Native)),
            XdpMode::Generic => Ok((generic(prog)?, AttachedMode::Generic)),
            XdpMode::Auto => match native(prog) {
                Ok(link) => Ok((link, AttachedMode::Native)),
                Err(e) => {
                    warn!("native XDP is not available on {interface} ({e:#}); falling back to generic mode, which is slower");
                    Ok((generic(prog)?, AttachedMode::Generic))
                }
            },
        }
    }

    pub fn detach(&mut self, program: &str, link: XdpLinkId) -> Result<()> {
        self.program_mut(program)?.detach(link).context("detaching XDP")?;
        Ok(())
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        match self.ebpf.map_mut(name) {
            Some(m) => Ok(m),
            None => bail!("map {name} missing from the object"),
        }
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).with_context(|| format!("map {name} missing from the object"))
    }

    /// Makes the maps hold `tables`. Order matters for packets in flight: backends and
    /// scheduler tables first, then services, then the ids and VIPs that lead to them;
    /// removals last. A service whose scheduler input changed restarts its scheduler
    /// position (as IPVS does when a destination changes).
    pub fn apply(&mut self, tables: &Tables) -> Result<()> {
        let old = std::mem::take(&mut self.applied);
        {
            let mut m: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for (slot, b) in &tables.backends {
                if old.backends.get(slot) != Some(b) {
                    m.set(*slot, *b, 0).with_context(|| format!("writing backend slot {slot}"))?;
                }
            }
        }
        {
            let mut m: Array<&mut MapData, u16> = Array::try_from(self.map_mut(MAP_SCHED_TABLE)?)?;
            for (offset, entries) in &tables.sched_regions {
                if old.sched_regions.iter().any(|(o, e)| o == offset && e == entries) {
                    continue;
                }
                for (k, e) in entries.iter().enumerate() {
                    m.set(offset + k as u32, *e, 0).context("writing a scheduler table")?;
                }
            }
        }
        {
            // The half this build uses is not the one packets read now: no reader sees a
            // list being rewritten.
            let mut m: Array<&mut MapData, u32> = Array::try_from(self.map_mut(MAP_MEMBERS)?)?;
            for (i, slot) in &tables.members {
                if old.members.get(i) != Some(slot) {
                    m.set(*i, *slot, 0).context("writing a member list")?;
                }
            }
        }
        {
            let mut m: Array<&mut MapData, SchedState> = Array::try_from(self.map_mut(MAP_SCHED_STATE)?)?;
            for id in tables.services.keys() {
                if old.scheduler_input(*id) != tables.scheduler_input(*id) {
                    m.set(*id, Tables::initial_sched_state(), 0).context("writing scheduler state")?;
                }
            }
        }
        {
            let mut m: Array<&mut MapData, Service> = Array::try_from(self.map_mut(MAP_SERVICES)?)?;
            for (id, svc) in &tables.services {
                if old.services.get(id) != Some(svc) {
                    m.set(*id, *svc, 0).context("writing a service")?;
                }
            }
        }
        {
            let mut m: BpfHashMap<&mut MapData, ServiceKey, u32> = BpfHashMap::try_from(self.map_mut(MAP_SERVICE_IDS)?)?;
            for (k, id) in &tables.service_ids {
                m.insert(k, id, 0).context("writing a service id")?;
            }
            for k in old.service_ids.keys().filter(|k| !tables.service_ids.contains_key(k)) {
                m.remove(k)?;
            }
        }
        {
            let mut m: BpfHashMap<&mut MapData, VipKey, Vip> = BpfHashMap::try_from(self.map_mut(MAP_VIPS)?)?;
            for (addr, v) in &tables.vips {
                m.insert(VipKey { addr: *addr }, v, 0).context("writing a VIP")?;
            }
            for addr in old.vips.keys().filter(|a| !tables.vips.contains_key(*a)) {
                m.remove(&VipKey { addr: *addr })?;
            }
        }
        {
            let mut m: Array<&mut MapData, u32> = Array::try_from(self.map_mut(MAP_VIP_FILTER)?)?;
            for (i, v) in &tables.vip_filter {
                m.set(*i, *v, 0)?;
            }
            for i in old.vip_filter.keys().filter(|i| !tables.vip_filter.contains_key(i)) {
                m.set(*i, 0, 0)?;
            }
        }
        {
            let mut m: Array<&mut MapData, Backend> = Array::try_from(self.map_mut(MAP_BACKENDS)?)?;
            for slot in old.backends.keys().filter(|s| !tables.backends.contains_key(s)) {
                m.set(*slot, Backend::default(), 0)?;
            }
        }
        self.applied = tables.clone();
        Ok(())
    }

    /// Per-reason packet counts, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map(MAP_STATS)?)?;
        let mut out = [0u64; STAT_COUNT as usize];
        for (i, total) in out.iter_mut().enumerate() {
            *total = stats.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// ActiveConn, InActConn and traffic of the backend in `slot`.
    pub fn backend_counters(&self, slot: u32) -> Result<BackendCounters> {
        let counts: Array<&MapData, ConnCounts> = Array::try_from(self.map(MAP_CONN_COUNTS)?)?;
        let stats: PerCpuArray<&MapData, BackendStats> = PerCpuArray::try_from(self.map(MAP_BACKEND_STATS)?)?;
        let c = counts.get(&slot, 0)?;
        let mut out = BackendCounters { active: c.active, inactive: c.inactive, ..Default::default() };
        for s in stats.get(&slot, 0)?.iter() {
            out.conns += s.conns;
            out.packets += s.packets;
            out.bytes += s.bytes;
        }
        Ok(out)
    }

    /// The connection-table entry for `key`.
    pub fn connection(&self, key: &ConnKey) -> Result<Option<Conn>> {
        let conns: BpfHashMap<&MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map(MAP_CONNS)?)?;
        match conns.get(key, 0) {
            Ok(c) => Ok(Some(c)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a connection-table entry (tests and state transfer; the dataplane makes its own).
    pub fn insert_connection(&mut self, key: &ConnKey, conn: &Conn) -> Result<()> {
        let mut conns: BpfHashMap<&mut MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map_mut(MAP_CONNS)?)?;
        conns.insert(key, conn, 0).context("writing a connection")?;
        Ok(())
    }

    /// Overwrites a backend's ActiveConn/InActConn.
    pub fn set_conn_counts(&mut self, slot: u32, counts: ConnCounts) -> Result<()> {
        let mut m: Array<&mut MapData, ConnCounts> = Array::try_from(self.map_mut(MAP_CONN_COUNTS)?)?;
        m.set(slot, counts, 0)?;
        Ok(())
    }

    /// Every persistence template.
    pub fn templates(&self) -> Result<Vec<(ConnKey, Persist)>> {
        let m: BpfHashMap<&MapData, ConnKey, Persist> = BpfHashMap::try_from(self.map(MAP_PERSIST)?)?;
        Ok(m.iter().filter_map(|r| r.ok()).collect())
    }

    /// Writes a persistence template (tests and state transfer).
    pub fn insert_template(&mut self, key: &ConnKey, value: &Persist) -> Result<()> {
        let mut m: BpfHashMap<&mut MapData, ConnKey, Persist> = BpfHashMap::try_from(self.map_mut(MAP_PERSIST)?)?;
        m.insert(key, value, 0)?;
        Ok(())
    }

    /// Every live entry of the connection table.
    pub fn connections(&self) -> Result<Vec<(ConnKey, Conn)>> {
        let conns: BpfHashMap<&MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map(MAP_CONNS)?)?;
        Ok(conns.iter().filter_map(|r| r.ok()).collect())
    }

    /// A persistence template lives while connections made through it do (IPVS keeps a
    /// template while it controls connections): each sweep moves a template's last use up
    /// to the newest packet of its live connections.
    fn refresh_templates(&mut self, entries: &[(ConnKey, Conn)], now_ns: u64) -> Result<()> {
        let services = self.applied.services.clone();
        let mut newest: BTreeMap<ConnKey, u64> = BTreeMap::new();
        for (k, c) in entries {
            let Some(svc) = services.get(&c.service) else { continue };
            if svc.flags & SVC_F_PERSISTENT == 0 || c.expired(now_ns) {
                continue;
            }
            let mut client = k.client;
            for (b, m) in client.iter_mut().zip(svc.persist_mask) {
                *b &= m;
            }
            let vport = if svc.flags & SVC_F_WILDCARD != 0 { 0 } else { k.vport };
            let tkey = ConnKey { client, vip: k.vip, cport: 0, vport, proto: k.proto, _pad: [0; 3] };
            let e = newest.entry(tkey).or_default();
            *e = (*e).max(c.last_seen_ns);
        }
        if newest.is_empty() {
            return Ok(());
        }
        let mut m: BpfHashMap<&mut MapData, ConnKey, Persist> = BpfHashMap::try_from(self.map_mut(MAP_PERSIST)?)?;
        for (k, seen) in newest {
            if let Ok(mut p) = m.get(&k, 0)
                && p.last_used_ns < seen
            {
                p.last_used_ns = seen;
                m.insert(k, p, 0)?;
            }
        }
        Ok(())
    }

    /// Removes expired connections and recomputes every backend's ActiveConn/InActConn from
    /// the live ones, correcting drift (entries evicted by the LRU, or that expired without
    /// another packet); keeps persistence templates alive while their connections live.
    pub fn sweep(&mut self, now_ns: u64) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let entries = self.connections()?;
        let mut expired = Vec::new();
        let mut counts: BTreeMap<u32, ConnCounts> = BTreeMap::new();
        for (k, c) in &entries {
            if c.expired(now_ns) {
                expired.push(*k);
                continue;
            }
            report.live += 1;
            report.in_use.insert(c.backend);
            let e = counts.entry(c.backend).or_default();
            if c.is_inactive() {
                e.inactive += 1;
            } else {
                e.active += 1;
            }
        }
        {
            let mut conns: BpfHashMap<&mut MapData, ConnKey, Conn> = BpfHashMap::try_from(self.map_mut(MAP_CONNS)?)?;
            for k in &expired {
                // The entry may have been refreshed meanwhile; re-check before removing.
                if let Ok(c) = conns.get(k, 0)
                    && c.expired(now_ns)
                {
                    conns.remove(k)?;
                    report.expired_removed += 1;
                }
            }
        }
        self.refresh_templates(&entries, now_ns)?;
        let slots: Vec<u32> = self.applied.backends.keys().copied().collect();
        let mut m: Array<&mut MapData, ConnCounts> = Array::try_from(self.map_mut(MAP_CONN_COUNTS)?)?;
        for slot in slots {
            let want = counts.get(&slot).copied().unwrap_or_default();
            let have = m.get(&slot, 0)?;
            if have != want {
                m.set(slot, want, 0)?;
                report.corrected.push((slot, have, want));
            }
        }
        Ok(report)
    }
}

/// "tx_forwarded=12 pass_arp=3 ..." (non-zero counters only, or "no packets").
pub fn format_counters(c: &Counters) -> String {
    let parts: Vec<String> =
        Stat::ALL.iter().filter(|s| c[s.index() as usize] > 0).map(|s| format!("{}={}", s.name(), c[s.index() as usize])).collect();
    if parts.is_empty() { "no packets".into() } else { parts.join(" ") }
}

/// Logs the counters at info level.
pub fn log_counters(c: &Counters) {
    info!("counters: {}", format_counters(c));
}
