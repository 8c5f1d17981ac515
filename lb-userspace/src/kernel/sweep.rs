//! The sweep of the connection tables: expired connections removed, every real server's
//! ActiveConn/InActConn recounted from the live ones (correcting drift: LRU evictions,
//! entries that expired without another packet), persistence templates kept alive while
//! their connections live, and the connections sync must re-announce picked out.
//!
//! It reads the tables in batches and streams them (one batch of 4,096 entries in memory,
//! not a copy of a million-entry table), and works on any handle to the maps: the
//! controller runs it on a thread of its own over the pinned maps ([`Pinned`]), so the
//! event loop that applies health verdicts and reloads never waits for it; tests run it on
//! the [`super::bpf::Dataplane`] they loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use lb_common::conn::{Conn, ConnKey};
use lb_common::halfopen::HalfOpen;
use lb_common::maps::{ConnCounts, Persist, Service, MAP_CONNS, MAP_CONN_COUNTS, MAP_CONN_GEN, MAP_HALF_OPEN, MAP_PERSIST, MAP_SWEPT_AT, SVC_F_PERSISTENT};

use super::maps::{MapSource, Pinned};

/// Maps a sweep can write as well as read.
pub trait MapsMut: MapSource {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map>;
}

impl MapsMut for Pinned {
    fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        Pinned::map_mut(self, name)
    }
}

/// What a sweep needs to know of the controller's tables.
#[derive(Debug, Clone, Default)]
pub struct SweepInputs {
    /// Backend slots whose counts the sweep keeps (every configured or draining real server).
    pub slots: Vec<u32>,
    /// Persistent services by id: their templates live while their connections do.
    pub persistent: BTreeMap<u32, Service>,
}

impl SweepInputs {
    pub fn of(tables: &super::content::MapContent) -> SweepInputs {
        SweepInputs {
            slots: tables.backends.keys().copied().collect(),
            persistent: tables.services.iter().filter(|(_, s)| s.flags & SVC_F_PERSISTENT != 0).map(|(id, s)| (*id, *s)).collect(),
        }
    }
}

/// Which live connections the caller wants back (sync: those whose refresh fell due).
pub type Pick = dyn Fn(&ConnKey, &Conn) -> bool + Send + Sync;

/// What a sweep of the connection table found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Entries of the connection table read (live or not).
    pub read: usize,
    pub live: usize,
    /// Live half-open connections.
    pub half_open: usize,
    pub expired_removed: usize,
    /// Backends whose counts were corrected (drift found), with the old counts.
    pub corrected: Vec<(u32, ConnCounts, ConnCounts)>,
    /// Backend slots that live connections use.
    pub in_use: BTreeSet<u32>,
    /// The live connections `pick` chose.
    pub picked: Vec<(ConnKey, Conn)>,
    /// Wall time the sweep took, and CPU time of the thread that ran it.
    pub took: Duration,
    pub cpu: Duration,
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Live connections per backend slot, indexed by slot (slots are dense, from 0).
#[derive(Default)]
struct Tally {
    counts: Vec<ConnCounts>,
}

impl Tally {
    fn add(&mut self, slot: u32, inactive: bool) {
        let i = slot as usize;
        if slot >= lb_common::maps::MAX_BACKENDS {
            // No backend has such a slot: nothing to count it for.
            return;
        }
        if i >= self.counts.len() {
            self.counts.resize(i + 1, ConnCounts::default());
        }
        let c = &mut self.counts[i];
        if inactive {
            c.inactive += 1;
        } else {
            c.active += 1;
        }
    }

    fn get(&self, slot: u32) -> ConnCounts {
        self.counts.get(slot as usize).copied().unwrap_or_default()
    }

    fn in_use(&self) -> BTreeSet<u32> {
        self.counts.iter().enumerate().filter(|(_, c)| c.active + c.inactive > 0).map(|(i, _)| i as u32).collect()
    }
}

/// Sweeps at dataplane time `now` (read before the tables). Expired half-open entries stay
/// where they are (only the program writes that table) and count no more; `now` is recorded
/// in `DRLB_SWEPT_AT` before the counts are written, so that the program releases an
/// expired entry it overwrites only if this sweep counted it
/// (`lb_common::halfopen::HalfOpen::counted`).
pub fn sweep(maps: &mut impl MapsMut, inputs: &SweepInputs, now: u64, pick: Option<&Pick>) -> Result<SweepReport> {
    let (started, cpu0) = (Instant::now(), thread_cpu_time());
    let mut report = SweepReport::default();
    let mut tally = Tally::default();
    for e in half_open_entries(maps)? {
        if e.live(now) {
            report.half_open += 1;
            tally.add(e.conn.backend, true);
        }
    }
    let mut expired = Vec::new();
    // Newest packet of the live connections of each persistent template.
    let mut newest: BTreeMap<ConnKey, u64> = BTreeMap::new();
    for_each_connection(maps, |k, c| {
        report.read += 1;
        if c.expired(now) {
            expired.push(*k);
            return;
        }
        report.live += 1;
        tally.add(c.backend, c.is_inactive());
        if let Some(svc) = inputs.persistent.get(&c.service) {
            let e = newest.entry(svc.template_key(&k.client, &k.vip, k.vport, k.proto)).or_default();
            *e = (*e).max(c.last_seen);
        }
        if pick.is_some_and(|p| p(k, c)) {
            report.picked.push((*k, *c));
        }
    })?;
    report.expired_removed = remove_expired(maps, &expired, now)?;
    if report.expired_removed > 0 {
        invalidate_flow_caches(maps)?;
    }
    refresh_templates(maps, newest)?;
    record_sweep(maps, now)?;
    let mut m: Array<&mut MapData, ConnCounts> = Array::try_from(maps.map_mut(MAP_CONN_COUNTS)?)?;
    for &slot in &inputs.slots {
        let want = tally.get(slot);
        let have = m.get(&slot, 0)?;
        if have != want {
            m.set(slot, want, 0).with_context(|| format!("correcting the counts of backend slot {slot}"))?;
            report.corrected.push((slot, have, want));
        }
    }
    report.in_use = tally.in_use();
    report.took = started.elapsed();
    report.cpu = thread_cpu_time().saturating_sub(cpu0);
    Ok(report)
}

/// Calls `f` with every entry of the connection table: in batches (BPF_MAP_LOOKUP_BATCH),
/// or two system calls per entry where the kernel refuses batches.
pub fn for_each_connection(maps: &impl MapSource, mut f: impl FnMut(&ConnKey, &Conn)) -> Result<()> {
    let map = maps.map(MAP_CONNS)?;
    if let Map::LruHashMap(data) = map {
        let mut passed = 0usize;
        match super::batch::for_each::<ConnKey, Conn>(data, |k, c| {
            passed += 1;
            f(k, c)
        }) {
            Ok(()) => return Ok(()),
            // Refused at the first call (a kernel without batches): read entry by entry.
            Err(e) if passed == 0 => tracing::debug!("batch lookup of {MAP_CONNS} refused ({e}); reading it entry by entry"),
            // Failed part way: reading again would pass entries twice.
            Err(e) => return Err(e).context("reading the connection table in batches"),
        }
    }
    let conns: BpfHashMap<&MapData, ConnKey, Conn> = BpfHashMap::try_from(map)?;
    for (k, c) in conns.iter().filter_map(|r| r.ok()) {
        f(&k, &c);
    }
    Ok(())
}

/// Every occupied entry of the half-open table (live or expired), read in batches.
pub fn half_open_entries(maps: &impl MapSource) -> Result<Vec<HalfOpen>> {
    let map = maps.map(MAP_HALF_OPEN)?;
    if let Map::Array(data) = map {
        let mut out = Vec::new();
        match super::batch::for_each::<u32, HalfOpen>(data, |_, e| {
            if e.occupied() {
                out.push(*e)
            }
        }) {
            Ok(()) => return Ok(out),
            Err(e) => tracing::debug!("batch lookup of {MAP_HALF_OPEN} refused ({e}); reading it entry by entry"),
        }
    }
    let m: Array<&MapData, HalfOpen> = Array::try_from(map)?;
    Ok(m.iter().filter_map(|r| r.ok()).filter(HalfOpen::occupied).collect())
}

/// Removes the entries of `keys` still expired at `now` (a packet may have refreshed one
/// since it was read); how many went.
fn remove_expired(maps: &mut impl MapsMut, keys: &[ConnKey], now: u64) -> Result<usize> {
    let mut conns: BpfHashMap<&mut MapData, ConnKey, Conn> = BpfHashMap::try_from(maps.map_mut(MAP_CONNS)?)?;
    let mut removed = 0;
    for k in keys {
        if let Ok(c) = conns.get(k, 0)
            && c.expired(now)
        {
            // Gone meanwhile (the LRU, the program's own reuse) is as good as removed.
            if conns.remove(k).is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Empties every CPU's flow cache (`lb_common::flowcache`): call after changing or
/// removing connections. The program adds 1 when it replaces one; adding 2^16 to what
/// was read keeps a concurrent add of the program's from cancelling this change.
pub fn invalidate_flow_caches(maps: &mut impl MapsMut) -> Result<()> {
    let mut m: Array<&mut MapData, u32> = Array::try_from(maps.map_mut(MAP_CONN_GEN)?)?;
    let g = m.get(&0, 0)?;
    m.set(0, g.wrapping_add(1 << 16), 0)?;
    Ok(())
}

/// A persistence template lives while connections made through it do (IPVS keeps a
/// template while it controls connections): each sweep moves a template's last use up to
/// the newest packet of its live connections.
fn refresh_templates(maps: &mut impl MapsMut, newest: BTreeMap<ConnKey, u64>) -> Result<()> {
    if newest.is_empty() {
        return Ok(());
    }
    let mut m: BpfHashMap<&mut MapData, ConnKey, Persist> = BpfHashMap::try_from(maps.map_mut(MAP_PERSIST)?)?;
    for (k, seen) in newest {
        if let Ok(mut p) = m.get(&k, 0)
            && p.last_used < seen
        {
            p.last_used = seen;
            m.insert(k, p, 0)?;
        }
    }
    Ok(())
}

/// Records in `DRLB_SWEPT_AT` that a sweep at `now` recounted the connections: half-open
/// entries that expired before it count no more.
pub fn record_sweep(maps: &mut impl MapsMut, now: u64) -> Result<()> {
    let mut m: Array<&mut MapData, u64> = Array::try_from(maps.map_mut(MAP_SWEPT_AT)?)?;
    m.set(0, now, 0).context("recording the sweep's time")?;
    Ok(())
}
