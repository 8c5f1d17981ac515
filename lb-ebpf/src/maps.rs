//! The program's maps. Names, sizes and types all come from `lb_common::maps`.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_jiffies64,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use lb_common::{
    addr::Addr16,
    conn::{Conn, ConnKey},
    dataplane::{Outcome, Tables},
    flowcache::{FlowCacheEntry, FLOW_CACHE_SIZE},
    maps::{
        vip_filter_index, Backend, BackendStats, ConnCounts, Persist, SchedState, Service, ServiceKey, TraceEvent, Vip,
        VipKey, TRACE_RING_BYTES,
        DEFAULT_CONN_TABLE_SIZE, MAX_BACKENDS, MAX_SERVICES, MEMBERS_SIZE, META_SIZE, MAX_VIPS, PERSIST_TABLE_SIZE, SCHED_TABLE_SIZE,
        VIP_FILTER_SIZE,
    },
    sched::{DestInfo, NO_DEST},
    stats::{Stat, STAT_COUNT},
};

#[map(name = "DRLB_VIP_FILTER")]
static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SIZE, 0);

#[map(name = "DRLB_VIPS")]
static VIPS: HashMap<VipKey, Vip> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "DRLB_SVC_IDS")]
static SERVICE_IDS: HashMap<ServiceKey, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_SERVICES")]
static SERVICES: Array<Service> = Array::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_BACKENDS")]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "DRLB_MEMBERS")]
static MEMBERS: Array<u32> = Array::with_max_entries(MEMBERS_SIZE, 0);

#[map(name = "DRLB_CONN_COUNT")]
static CONN_COUNTS: Array<ConnCounts> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "DRLB_RS_STATS")]
static BACKEND_STATS: PerCpuArray<BackendStats> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Resized at load time from `director.conn_table_size`.
#[map(name = "DRLB_CONNS")]
static CONNS: LruHashMap<ConnKey, Conn> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

#[map(name = "DRLB_PERSIST")]
static PERSIST: LruHashMap<ConnKey, Persist> = LruHashMap::with_max_entries(PERSIST_TABLE_SIZE, 0);

#[map(name = "DRLB_SCHED")]
static SCHED_STATE: Array<SchedState> = Array::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_SCHED_TAB")]
static SCHED_TABLE: Array<u16> = Array::with_max_entries(SCHED_TABLE_SIZE, 0);

/// Written by the controller only; the program never reads it.
#[map(name = "DRLB_META")]
static META: Array<u32> = Array::with_max_entries(META_SIZE, 0);

#[map(name = "DRLB_FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<FlowCacheEntry> = PerCpuArray::with_max_entries(FLOW_CACHE_SIZE, 0);

#[map(name = "DRLB_CONN_GEN")]
static CONN_GEN: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// The dataplane's view of the maps.
pub struct BpfTables;

/// Adds `delta` (two's complement for negative) without needing the old value, so it
/// compiles to BPF's plain atomic add, which every supported kernel has.
#[inline(always)]
fn atomic_add(ptr: *mut u32, delta: i32) {
    if delta != 0 {
        // The BPF target has no core::sync::atomic types; the intrinsic lowers to BPF_XADD
        // when its result is unused.
        // SAFETY: `ptr` points into an array map value, which lives as long as the map.
        unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(ptr, delta as u32) };
    }
}

impl Tables for BpfTables {
    #[inline(always)]
    fn vip_filter(&self, addr: &Addr16) -> bool {
        matches!(VIP_FILTER.get(vip_filter_index(addr)), Some(n) if *n != 0)
    }

    #[inline(always)]
    fn vip(&self, key: &VipKey) -> Option<Vip> {
        // SAFETY: the value is copied out before the map can change under us.
        unsafe { VIPS.get(key).copied() }
    }

    #[inline(always)]
    fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        unsafe { SERVICE_IDS.get(key).copied() }
    }

    #[inline(always)]
    fn service(&self, id: u32) -> Option<Service> {
        SERVICES.get(id).copied()
    }

    #[inline(always)]
    fn backend(&self, slot: u32) -> Option<Backend> {
        BACKENDS.get(slot).copied()
    }

    #[inline(always)]
    fn backend_l2(&self, slot: u32) -> Option<(u32, [u32; 3])> {
        let b = BACKENDS.get_ptr(slot)?;
        // SAFETY: a valid array value; `mac` and `src_mac` are the 12 bytes at offset 16 of
        // an 8-aligned value, so the three words are aligned.
        unsafe {
            let words = (b as *const u8).add(core::mem::offset_of!(Backend, mac)) as *const u32;
            Some(((*b).flags, [words.read(), words.add(1).read(), words.add(2).read()]))
        }
    }

    #[inline(always)]
    fn member(&self, index: u32) -> u32 {
        MEMBERS.get(index).copied().unwrap_or(u32::MAX)
    }

    #[inline(always)]
    fn dest_info(&self, slot: u32) -> DestInfo {
        let (Some(b), Some(c)) = (BACKENDS.get(slot), CONN_COUNTS.get(slot)) else { return DestInfo::default() };
        DestInfo { weight: b.weight, active: c.active, inactive: c.inactive, available: b.accepts_new() }
    }

    #[inline(always)]
    fn conn_counts(&self, slot: u32) -> ConnCounts {
        CONN_COUNTS.get(slot).copied().unwrap_or_default()
    }

    #[inline(always)]
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32) {
        if let Some(c) = CONN_COUNTS.get_ptr_mut(slot) {
            // SAFETY: `c` is a valid pointer to the slot's value.
            unsafe {
                atomic_add(&raw mut (*c).active, active);
                atomic_add(&raw mut (*c).inactive, inactive);
            }
        }
    }

    #[inline(always)]
    fn account(&self, slot: u32, bytes: u64, new_conn: bool) {
        if let Some(s) = BACKEND_STATS.get_ptr_mut(slot) {
            // SAFETY: per-CPU slot: no other writer.
            unsafe {
                (*s).packets += 1;
                (*s).bytes += bytes;
                if new_conn {
                    (*s).conns += 1;
                }
            }
        }
    }

    #[inline(always)]
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R {
        match CONNS.get_ptr_mut(key) {
            // SAFETY: the entry stays valid for the program's run (RCU).
            Some(c) => f(Some(unsafe { &mut *c })),
            None => f(None),
        }
    }

    #[inline(always)]
    fn with_flow_cache<R>(&self, index: u32, f: impl FnOnce(&mut FlowCacheEntry) -> R) -> Option<R> {
        let e = FLOW_CACHE.get_ptr_mut(index)?;
        // SAFETY: this CPU's entry; nothing else writes it while the program runs here.
        Some(f(unsafe { &mut *e }))
    }

    #[inline(always)]
    fn conn_generation(&self) -> u32 {
        match CONN_GEN.get(0) {
            Some(g) => *g,
            None => 0,
        }
    }

    #[inline(always)]
    fn bump_conn_generation(&self) {
        if let Some(g) = CONN_GEN.get_ptr_mut(0) {
            atomic_add(g, 1);
        }
    }

    #[inline(always)]
    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool {
        CONNS.insert(key, conn, 0).is_ok()
    }

    #[inline(always)]
    fn remove_conn(&self, key: &ConnKey) {
        let _ = CONNS.remove(key);
    }

    #[inline(always)]
    fn with_sched_state<R>(&self, service: u32, f: impl FnOnce(&mut SchedState) -> R) -> Option<R> {
        let s = SCHED_STATE.get_ptr_mut(service)?;
        // SAFETY: valid array value; concurrent CPUs may race, as IPVS without its lock would.
        Some(f(unsafe { &mut *s }))
    }

    #[inline(always)]
    fn sched_table(&self, index: u32) -> u16 {
        SCHED_TABLE.get(index).copied().unwrap_or(NO_DEST)
    }

    #[inline(always)]
    fn persist(&self, key: &ConnKey) -> Option<Persist> {
        unsafe { PERSIST.get(key).copied() }
    }

    #[inline(always)]
    fn insert_persist(&self, key: &ConnKey, value: &Persist) {
        let _ = PERSIST.insert(key, value, 0);
    }

    #[inline(always)]
    fn now(&self) -> u64 {
        // SAFETY: helper without preconditions.
        unsafe { bpf_jiffies64() }
    }

    #[inline(always)]
    fn schedule(&self, id: u32, _svc: &Service, client: &Addr16) -> Option<u32> {
        let slot = drlb_schedule(id, u32::from_be_bytes([client[12], client[13], client[14], client[15]]));
        if slot == NO_SLOT { None } else { Some(slot) }
    }
}

/// `drlb_schedule`'s "no real server".
const NO_SLOT: u32 = u32::MAX;

/// The schedulers, as a global BPF function: the verifier checks a global function once,
/// on its own, instead of once per path that reaches it — the bounded loops over up to
/// 256 real servers would otherwise exceed its budget. Arguments are plain scalars, as
/// global functions require.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_schedule(id: u32, client_v4: u32) -> u32 {
    let Some(svc) = SERVICES.get(id).copied() else { return NO_SLOT };
    let client = lb_common::addr::v4_mapped(client_v4.to_be_bytes());
    lb_common::dataplane::schedule(&BpfTables, id, &svc, &client).unwrap_or(NO_SLOT)
}

/// Bumps the CPU-local counter for `stat` (no atomics needed: per-CPU slot).
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        unsafe { *counter += 1 };
    }
}

#[map(name = "DRLB_TRACE_ON")]
static TRACE_ON: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_TRACE")]
static TRACE: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// Reports a VIP-bound packet's decision if `drlb trace` is listening.
#[inline(always)]
pub fn trace(out: &Outcome, stat: Stat) {
    if !matches!(TRACE_ON.get(0), Some(on) if *on != 0) {
        return;
    }
    // Written straight into the ring: an event built on the stack would not fit the
    // program's 512-byte stack next to the rest.
    let Some(mut entry) = TRACE.reserve::<TraceEvent>(0) else { return };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points to a reserved, writable TraceEvent in the ring.
    unsafe {
        (*p).client = out.key.client;
        (*p).vip = out.key.vip;
        (*p).cport = out.key.cport;
        (*p).vport = out.key.vport;
        (*p).proto = out.key.proto;
        (*p).tcp_flags = out.tcp_flags;
        (*p).stat = stat.index() as u8;
        (*p).new_conn = out.new_conn as u8;
        (*p).slot = match out.slot {
            Some(s) => s,
            None => u32::MAX,
        };
        (*p).service = match out.service {
            Some(s) => s,
            None => u32::MAX,
        };
    }
    entry.submit(0);
}

/// The dataplane clock as `drlb_clock` last read it, for the controller.
#[map(name = "DRLB_CLOCK")]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Records the dataplane clock where the controller can read it.
#[inline(always)]
pub fn publish_clock() {
    if let Some(c) = CLOCK.get_ptr_mut(0) {
        // SAFETY: valid array value; helper without preconditions.
        unsafe { *c = bpf_jiffies64() };
    }
}

/// Frames seen by `drlb_bench_sink`.
#[map(name = "DRLB_BENCH_RX")]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count_bench_frame() {
    if let Some(c) = BENCH_RX.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
}

/// Benchmark floor (c)'s connection table. One entry unless the benchmark sizes it like
/// `DRLB_CONNS`; `drlb run` never uses it.
#[map(name = "DRLB_FLOOR_CONNS")]
static FLOOR_CONNS: LruHashMap<ConnKey, Conn> = LruHashMap::with_max_entries(1, 0);

/// Records a new flow as a connection table would: a lookup (expected to miss), an insert.
#[inline(always)]
pub fn floor_record_conn(key: &ConnKey) {
    // SAFETY: only checks presence.
    if unsafe { FLOOR_CONNS.get(key) }.is_none() {
        let _ = FLOOR_CONNS.insert(key, &Conn::default(), 0);
    }
}
