//! The program's maps. Names, sizes and types all come from `lb_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use lb_common::{
    dataplane::Tables,
    maps::{Backend, Service, ServiceKey, Vip, VipKey, MAX_BACKENDS, MAX_SERVICES, MAX_VIPS},
    stats::{Stat, STAT_COUNT},
};

#[map(name = "DRLB_VIPS")]
static VIPS: HashMap<VipKey, Vip> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "DRLB_SERVICES")]
static SERVICES: HashMap<ServiceKey, Service> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_BACKENDS")]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "DRLB_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// The dataplane's view of the maps.
pub struct BpfTables;

impl Tables for BpfTables {
    #[inline(always)]
    fn vip(&self, key: &VipKey) -> Option<Vip> {
        // SAFETY: the value is copied out before the map can change under us.
        unsafe { VIPS.get(key).copied() }
    }

    #[inline(always)]
    fn service(&self, key: &ServiceKey) -> Option<Service> {
        unsafe { SERVICES.get(key).copied() }
    }

    #[inline(always)]
    fn backend(&self, slot: u32) -> Option<Backend> {
        BACKENDS.get(slot).copied()
    }
}

/// Bumps the CPU-local counter for `stat` (no atomics needed: per-CPU slot).
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        unsafe { *counter += 1 };
    }
}
