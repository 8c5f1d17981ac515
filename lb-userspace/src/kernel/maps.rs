//! Typed reads of a dataplane's maps, the same whether this process loaded them
//! ([`super::bpf::Dataplane`]) or another one pinned them ([`Pinned`]: `drlb status`,
//! `trace`, `doctor`, metrics). Versioned values are read as the program reads them: the
//! current version of a service, the current MACs of a backend.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use lb_common::maps::{
    Backend, BackendStats, ConnCounts, Service, ServiceKey, ServiceSlot, ALL_MAPS, MAP_BACKENDS, MAP_BACKEND_STATS, MAP_CONN_COUNTS,
    MAP_MEMBERS, MAP_SERVICES, MAP_SERVICE_IDS, MAP_STATS,
};
use lb_common::events::EVENT_COUNT;
use lb_common::maps::MAP_EVENTS;
use lb_common::verdict::VERDICT_COUNT;

/// Packets per verdict reason, summed over CPUs, indexed like `Verdict::ALL`.
pub type Counters = [u64; VERDICT_COUNT as usize];

/// A real server's counters as `ipvsadm -Ln --stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub active: u32,
    pub inactive: u32,
    pub conns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Where a dataplane's maps are found by name.
pub trait MapSource {
    fn map(&self, name: &str) -> Result<&Map>;
}

/// The maps of a dataplane pinned in a directory.
pub struct Pinned {
    maps: BTreeMap<&'static str, Map>,
}

impl Pinned {
    /// Opens every pinned map of the dataplane at `dir`.
    pub fn open(dir: &Path) -> Result<Pinned> {
        // Another layout's maps (an older or newer drlb's) would be misread, or be missing.
        if let Some(found) = crate::kernel::bpf::pinned_layout(dir)?
            && found != lb_common::maps::layout()
        {
            anyhow::bail!(
                "the dataplane pinned at {} has layout {:?}, this drlb {:?}: use the drlb that runs it, or restart with this one (`drlb stop`, then `drlb run`)",
                dir.display(),
                found,
                lb_common::maps::layout()
            );
        }
        let mut maps = BTreeMap::new();
        for name in ALL_MAPS {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
            maps.insert(name, Map::from_map_data(data).with_context(|| format!("reading {}", path.display()))?);
        }
        Ok(Pinned { maps })
    }

    /// The map, to write.
    pub fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.maps.get_mut(name).with_context(|| format!("map {name} is not pinned"))
    }

    /// The map, to own (e.g. a ring buffer to consume).
    pub fn take(&mut self, name: &str) -> Result<Map> {
        self.maps.remove(name).with_context(|| format!("map {name} is not pinned (or already taken)"))
    }
}

impl MapSource for Pinned {
    fn map(&self, name: &str) -> Result<&Map> {
        self.maps.get(name).with_context(|| format!("map {name} is not pinned"))
    }
}

pub fn counters(src: &impl MapSource) -> Result<Counters> {
    let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(src.map(MAP_STATS)?)?;
    let mut out = [0u64; VERDICT_COUNT as usize];
    for (i, total) in out.iter_mut().enumerate() {
        *total = stats.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// Per-event counts, indexed by `lb_common::events::Event`.
pub type EventCounters = [u64; EVENT_COUNT as usize];

/// Per-event counts, summed over CPUs.
pub fn events(src: &impl MapSource) -> Result<EventCounters> {
    let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(src.map(MAP_EVENTS)?)?;
    let mut out = [0u64; EVENT_COUNT as usize];
    for (i, total) in out.iter_mut().enumerate() {
        *total = m.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// ActiveConn, InActConn and traffic of the backend in `slot`.
pub fn backend_counters(src: &impl MapSource, slot: u32) -> Result<BackendCounters> {
    let counts: Array<&MapData, ConnCounts> = Array::try_from(src.map(MAP_CONN_COUNTS)?)?;
    let stats: PerCpuArray<&MapData, BackendStats> = PerCpuArray::try_from(src.map(MAP_BACKEND_STATS)?)?;
    let c = counts.get(&slot, 0)?;
    let mut out = BackendCounters { active: c.active, inactive: c.inactive, ..Default::default() };
    for s in stats.get(&slot, 0)?.iter() {
        out.conns += s.conns;
        out.packets += s.packets;
        out.bytes += s.bytes;
    }
    Ok(out)
}

/// Every (VIP, port, protocol) → service id.
pub fn service_ids(src: &impl MapSource) -> Result<Vec<(ServiceKey, u32)>> {
    let ids: BpfHashMap<&MapData, ServiceKey, u32> = BpfHashMap::try_from(src.map(MAP_SERVICE_IDS)?)?;
    Ok(ids.iter().filter_map(|r| r.ok()).collect())
}

/// The current version of service `id`.
pub fn service(src: &impl MapSource, id: u32) -> Result<Service> {
    let services: Array<&MapData, ServiceSlot> = Array::try_from(src.map(MAP_SERVICES)?)?;
    Ok(*services.get(&id, 0)?.service())
}

/// The backend in `slot`, with its current MACs first ([`Backend::normalized`]).
pub fn backend(src: &impl MapSource, slot: u32) -> Result<Backend> {
    let backends: Array<&MapData, Backend> = Array::try_from(src.map(MAP_BACKENDS)?)?;
    Ok(backends.get(&slot, 0)?.normalized())
}

/// The backend slots of service `svc`'s member list, in configuration order.
pub fn members(src: &impl MapSource, svc: &Service) -> Result<Vec<(u32, u32)>> {
    let members: Array<&MapData, u32> = Array::try_from(src.map(MAP_MEMBERS)?)?;
    (svc.members_offset..svc.members_offset + svc.member_count).map(|i| Ok((i, members.get(&i, 0)?))).collect()
}
