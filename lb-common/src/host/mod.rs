//! The dataplane's maps as ordinary collections: `dataplane::process` over these runs on
//! the host exactly as the XDP program runs over BPF maps. Used as the reference the
//! kernel's output is compared with, and to test scheduling and state without a kernel.

pub mod ipvs;

use core::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::addr::Addr16;
use crate::conn::{Conn, ConnKey};
use crate::dataplane::{NewConn, Tables};
use crate::events::{Event, EVENT_COUNT};
use crate::flowcache::FlowCacheEntry;
use crate::halfopen::HalfOpen;
use crate::maps::{
    vip_filter_index, Backend, BackendStats, ConnCounts, Locality, LocalityKey, Persist, SchedState, Service, ServiceKey, Vip, VipKey,
};
use crate::sched::NO_DEST;

#[derive(Debug, Default, Clone)]
pub struct HostTables {
    pub vips: BTreeMap<Addr16, Vip>,
    pub service_ids: BTreeMap<ServiceKey, u32>,
    pub services: BTreeMap<u32, Service>,
    pub backends: BTreeMap<u32, Backend>,
    pub members: BTreeMap<u32, u32>,
    pub sched_table: BTreeMap<u32, u16>,
    pub sched_state: RefCell<BTreeMap<u32, SchedState>>,
    pub counts: RefCell<BTreeMap<u32, ConnCounts>>,
    pub stats: RefCell<BTreeMap<u32, BackendStats>>,
    pub conns: RefCell<BTreeMap<ConnKey, Conn>>,
    /// The half-open table, by slot (absent: empty).
    pub half_open: RefCell<BTreeMap<u32, HalfOpen>>,
    pub events: RefCell<[u64; EVENT_COUNT as usize]>,
    pub swept_at: Cell<u64>,
    pub persist: RefCell<BTreeMap<ConnKey, Persist>>,
    /// The flow cache of the model's single CPU.
    pub flow_cache: RefCell<BTreeMap<u32, FlowCacheEntry>>,
    pub conn_generation: Cell<u32>,
    pub now: Cell<u64>,
    /// The model's random numbers (xorshift64; 0 is read as a fixed seed).
    pub rng: Cell<u64>,
    pub locality: RefCell<BTreeMap<LocalityKey, Locality>>,
    /// [`crate::maps::GLOBAL_OWN_MAC`] (all zero: no check).
    pub own_mac: [u32; 2],
}

impl HostTables {
    /// The connection for `key`: its connection-table entry, or else the half-open entry
    /// that holds it (live or expired), as `Dataplane::connection` reads the kernel's.
    pub fn connection(&self, key: &ConnKey) -> Option<Conn> {
        if let Some(c) = self.conns.borrow().get(key) {
            return Some(*c);
        }
        let first = crate::halfopen::bucket(key);
        let ways = self.half_open.borrow();
        (first..first + crate::halfopen::HALF_OPEN_WAYS).filter_map(|s| ways.get(&s)).find(|e| e.occupied() && e.key == *key).map(|e| e.conn)
    }
}

impl Tables for HostTables {
    fn vip_filter(&self, addr: &Addr16) -> bool {
        let i = vip_filter_index(addr);
        self.vips.keys().any(|v| vip_filter_index(v) == i)
    }

    fn own_mac(&self) -> [u32; 2] {
        self.own_mac
    }

    fn vip(&self, key: &VipKey) -> Option<Vip> {
        self.vips.get(&key.addr).copied()
    }

    fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        self.service_ids.get(key).copied()
    }

    fn service(&self, id: u32) -> Option<Service> {
        // An array map: every index below its size reads (zeroed if never written).
        Some(self.services.get(&id).copied().unwrap_or_default())
    }

    fn backend(&self, slot: u32) -> Option<Backend> {
        Some(self.backends.get(&slot).copied().unwrap_or_default())
    }

    fn member(&self, index: u32) -> u32 {
        self.members.get(&index).copied().unwrap_or(0)
    }

    fn conn_counts(&self, slot: u32) -> ConnCounts {
        self.counts.borrow().get(&slot).copied().unwrap_or_default()
    }

    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32) {
        let mut counts = self.counts.borrow_mut();
        let c = counts.entry(slot).or_default();
        c.active = c.active.wrapping_add(active as u32);
        c.inactive = c.inactive.wrapping_add(inactive as u32);
    }

    fn account(&self, slot: u32, bytes: u64, new_conn: bool) {
        let mut stats = self.stats.borrow_mut();
        let s = stats.entry(slot).or_default();
        s.packets += 1;
        s.bytes += bytes;
        s.conns += new_conn as u64;
    }

    fn conn(&self, key: &ConnKey) -> Option<Conn> {
        self.conns.borrow().get(key).copied()
    }

    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R {
        // Copy out and back so `f` may use the other tables meanwhile.
        let current = self.conns.borrow().get(key).copied();
        match current {
            None => f(None),
            Some(mut c) => {
                let r = f(Some(&mut c));
                self.conns.borrow_mut().insert(*key, c);
                r
            }
        }
    }

    fn with_flow_cache<R>(&self, index: u32, f: impl FnOnce(&mut FlowCacheEntry) -> R) -> Option<R> {
        Some(f(self.flow_cache.borrow_mut().entry(index).or_default()))
    }

    fn conn_generation(&self) -> u32 {
        self.conn_generation.get()
    }

    fn bump_conn_generation(&self) {
        self.conn_generation.set(self.conn_generation.get().wrapping_add(1));
    }

    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool {
        self.conns.borrow_mut().insert(*key, *conn);
        true
    }

    fn insert_new_conn(&self, key: &ConnKey, conn: &Conn) -> NewConn {
        let mut conns = self.conns.borrow_mut();
        if conns.contains_key(key) {
            return NewConn::Exists;
        }
        conns.insert(*key, *conn);
        NewConn::Inserted
    }

    fn half_open(&self, slot: u32) -> Option<HalfOpen> {
        Some(self.half_open.borrow().get(&slot).copied().unwrap_or(HalfOpen::EMPTY))
    }

    fn set_half_open(&self, slot: u32, entry: &HalfOpen) {
        self.half_open.borrow_mut().insert(slot, *entry);
    }

    fn touch_half_open(&self, slot: u32, now: u64) {
        if let Some(e) = self.half_open.borrow_mut().get_mut(&slot) {
            e.conn.last_seen = now;
        }
    }

    fn count_event(&self, event: Event) {
        self.events.borrow_mut()[event.index() as usize] += 1;
    }

    fn swept_at(&self) -> u64 {
        self.swept_at.get()
    }

    fn remove_conn(&self, key: &ConnKey) {
        self.conns.borrow_mut().remove(key);
    }

    fn with_sched_state<R>(&self, service: u32, f: impl FnOnce(&mut SchedState) -> R) -> Option<R> {
        let mut states = self.sched_state.borrow_mut();
        Some(f(states.entry(service).or_default()))
    }

    fn sched_table(&self, index: u32) -> u16 {
        self.sched_table.get(&index).copied().unwrap_or(NO_DEST)
    }

    fn persist(&self, key: &ConnKey) -> Option<Persist> {
        self.persist.borrow().get(key).copied()
    }

    fn insert_persist(&self, key: &ConnKey, value: &Persist) {
        self.persist.borrow_mut().insert(*key, *value);
    }

    fn now(&self) -> u64 {
        self.now.get()
    }

    fn with_locality<R>(&self, key: &LocalityKey, f: impl FnOnce(&mut Locality, bool) -> R) -> Option<R> {
        let found = self.locality.borrow().get(key).copied();
        let mut e = found.unwrap_or_default();
        Some(f(&mut e, found.is_some()))
    }

    fn set_locality(&self, key: &LocalityKey, value: &Locality) {
        self.locality.borrow_mut().insert(*key, *value);
    }

    fn random(&self) -> u32 {
        let mut x = match self.rng.get() {
            0 => 0x9e37_79b9_7f4a_7c15,
            x => x,
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 32) as u32
    }

}
