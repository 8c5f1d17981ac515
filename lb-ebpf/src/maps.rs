//! The balancer's maps. Names, sizes and types all come from `lb_common::maps`.
//!
//! Map values are memory other CPUs (and the controller, through the bpf() syscall) write
//! while this program runs. They are never borrowed as Rust references: values are read
//! and written through raw pointers (copied in and out), counters shared between CPUs are
//! changed with atomic adds, and per-CPU values are written only by this CPU's program.
//! Multi-word values the controller rewrites are versioned (`ServiceSlot`, `Backend::l2`):
//! the program reads the one word that selects a version first, then that version.

use core::intrinsics::{atomic_xadd, AtomicOrdering};
use core::ptr::{addr_of, read_volatile, write_volatile};

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_jiffies64},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lb_common::{
    addr::Addr16,
    conn::{Conn, ConnKey},
    dataplane::{NewConn, Outcome, Tables},
    events::{Event, EVENT_COUNT},
    flowcache::{FlowCacheEntry, FLOW_CACHE_SIZE},
    halfopen::{HalfOpen, HALF_OPEN_SIZE},
    packet::Ipv6Chain,
    maps::{
        addr_hash, vip_filter_index, Backend, BackendStats, ConnCounts, ConnEvent, CONN_EVENTS_RING_BYTES, Locality, LocalityKey, LOCALITY_TABLE_SIZE, Persist, SchedState, Scheduler, Service, ServiceKey, ServiceSlot,
        NO_SLOT, TraceEvent, Vip, VipKey, DEFAULT_CONN_TABLE_SIZE, L2, MAX_BACKENDS, MAX_SERVICES, MAX_VIPS, MEMBERS_SIZE, META_SIZE,
        PERSIST_TABLE_SIZE, SCHED_TABLE_SIZE, TRACE_RING_BYTES, VIP_FILTER_SIZE, JUMP_SLOTS,
    },
    sched::{DestInfo, NO_DEST},
    verdict::{Verdict, VERDICT_COUNT},
};

/// `lb_common::maps::GLOBAL_OWN_MAC`: this director's MAC, written into the object's
/// read-only data by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static DRLB_OWN_MAC: [u32; 2] = [0; 2];

#[map(name = "DRLB_VIP_FILTER")]
static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SIZE, 0);

#[map(name = "DRLB_VIPS")]
static VIPS: HashMap<VipKey, Vip> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "DRLB_SVC_IDS")]
static SERVICE_IDS: HashMap<ServiceKey, u32> = HashMap::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_SERVICES")]
static SERVICES: Array<ServiceSlot> = Array::with_max_entries(MAX_SERVICES, 0);

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

#[map(name = "DRLB_HALF_OPEN")]
static HALF_OPEN: Array<HalfOpen> = Array::with_max_entries(HALF_OPEN_SIZE, 0);

#[map(name = "DRLB_SWEPT_AT")]
static SWEPT_AT: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_EVENTS")]
static EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_COUNT, 0);

#[map(name = "DRLB_PERSIST")]
static PERSIST: LruHashMap<ConnKey, Persist> = LruHashMap::with_max_entries(PERSIST_TABLE_SIZE, 0);

#[map(name = "DRLB_SCHED")]
static SCHED_STATE: Array<SchedState> = Array::with_max_entries(MAX_SERVICES, 0);

#[map(name = "DRLB_SCHED_TAB")]
static SCHED_TABLE: Array<u16> = Array::with_max_entries(SCHED_TABLE_SIZE, 0);

#[map(name = "DRLB_LOCALITY")]
static LOCALITY: LruHashMap<LocalityKey, Locality> = LruHashMap::with_max_entries(LOCALITY_TABLE_SIZE, 0);

/// This CPU's working copy of a `DRLB_LOCALITY` entry (`Tables::with_locality`). Not pinned.
#[map(name = "DRLB_LOCALITY_SCRATCH")]
static LOCALITY_SCRATCH: PerCpuArray<Locality> = PerCpuArray::with_max_entries(1, 0);

/// Written by the controller only; the program never reads it.
#[map(name = "DRLB_META")]
static META: Array<u32> = Array::with_max_entries(META_SIZE, 0);

#[map(name = "DRLB_FLOW_CACHE")]
static FLOW_CACHE: PerCpuArray<FlowCacheEntry> = PerCpuArray::with_max_entries(FLOW_CACHE_SIZE, 0);

#[map(name = "DRLB_CONN_GEN")]
static CONN_GEN: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(VERDICT_COUNT, 0);

/// The word at `p`, read once: the compiler may not read it again later and see a newer
/// value another CPU wrote meanwhile (a version selector, a flags word, a counter).
#[inline(always)]
fn read<T: Copy>(p: *const T) -> T {
    // SAFETY: callers pass pointers to map values, valid while the program runs.
    unsafe { read_volatile(p) }
}

/// A copy of the value at `p`. Not volatile: a volatile copy of a struct with byte arrays
/// loads every byte, used or not (measured: +140 byte loads on a SYN's path). Only for
/// values none of whose fields indexes memory the verifier must bound (services,
/// backends); the others are taken with [`read`].
#[inline(always)]
fn copy<T: Copy>(p: *const T) -> T {
    // SAFETY: callers pass pointers to map values, valid while the program runs.
    unsafe { core::ptr::read(p) }
}

/// The dataplane's view of the maps.
pub struct BpfTables;

/// The tables, for the functions and programs that use them.
pub const TABLES: BpfTables = BpfTables;

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
        matches!(VIP_FILTER.get_ptr(vip_filter_index(addr)), Some(n) if read(n) != 0)
    }

    #[inline(always)]
    fn own_mac(&self) -> [u32; 2] {
        // SAFETY: a static of the object's read-only data, valid for the program's life;
        // read volatile so that the compiler does not fold in the all-zero default the
        // loader replaces.
        unsafe { read_volatile(addr_of!(DRLB_OWN_MAC)) }
    }

    #[inline(always)]
    fn vip(&self, key: &VipKey) -> Option<Vip> {
        VIPS.get_ptr(key).map(copy)
    }

    #[inline(always)]
    fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        SERVICE_IDS.get_ptr(key).map(read)
    }

    #[inline(always)]
    fn service(&self, id: u32) -> Option<Service> {
        let slot = SERVICES.get_ptr(id)?;
        // SAFETY: a valid array value; the selector is read once, then the version it
        // names, which the controller leaves alone while it is current.
        unsafe {
            let current = read(addr_of!((*slot).current)) & 1;
            Some(copy(addr_of!((*slot).versions).cast::<Service>().add(current as usize)))
        }
    }

    #[inline(always)]
    fn backend(&self, slot: u32) -> Option<Backend> {
        BACKENDS.get_ptr(slot).map(copy)
    }

    #[inline(always)]
    fn backend_l2(&self, slot: u32) -> Option<(u32, [u32; 3])> {
        let b = BACKENDS.get_ptr(slot)?;
        // SAFETY: a valid array value. `flags` is read once and names the current `l2`
        // entry, which the controller leaves alone while it is current; each entry is 12
        // bytes at a 4-aligned offset of a value the map aligns to 8, so the words are
        // aligned.
        unsafe {
            let flags = read(addr_of!((*b).flags));
            let words = addr_of!((*b).l2).cast::<L2>().add(Backend::l2_index(flags)).cast::<u32>();
            Some((flags, [read(words), read(words.add(1)), read(words.add(2))]))
        }
    }

    #[inline(always)]
    fn member(&self, index: u32) -> u32 {
        match MEMBERS.get_ptr(index) {
            Some(m) => read(m),
            None => u32::MAX,
        }
    }

    #[inline(always)]
    fn dest_info(&self, slot: u32) -> DestInfo {
        let (Some(b), Some(c)) = (BACKENDS.get_ptr(slot), CONN_COUNTS.get_ptr(slot)) else { return DestInfo::default() };
        // SAFETY: valid array values; single words, each read once.
        unsafe {
            let accepts = Backend::flags_accept_new(read(addr_of!((*b).flags)));
            DestInfo {
                weight: read(addr_of!((*b).weight)),
                active: read(addr_of!((*c).active)),
                inactive: read(addr_of!((*c).inactive)),
                available: accepts,
            }
        }
    }

    #[inline(always)]
    fn conn_counts(&self, slot: u32) -> ConnCounts {
        CONN_COUNTS.get_ptr(slot).map(copy).unwrap_or_default()
    }

    #[inline(always)]
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32) {
        if let Some(c) = CONN_COUNTS.get_ptr_mut(slot) {
            // SAFETY: `c` is a valid pointer to the slot's value; no reference is formed.
            unsafe {
                atomic_add(&raw mut (*c).active, active);
                atomic_add(&raw mut (*c).inactive, inactive);
            }
        }
    }

    #[inline(always)]
    fn account(&self, slot: u32, bytes: u64, new_conn: bool) {
        if let Some(s) = BACKEND_STATS.get_ptr_mut(slot) {
            // SAFETY: this CPU's slot: only this program on this CPU writes it.
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
    fn conn(&self, key: &ConnKey) -> Option<Conn> {
        CONNS.get_ptr(key).map(read)
    }

    #[inline(always)]
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R {
        match CONNS.get_ptr_mut(key) {
            Some(p) => {
                // Other CPUs forward packets of the same connection: work on a copy and
                // write it back, rather than hold a `&mut` to shared memory.
                // Read once (volatile): the state indexes the transition table, and a plain
                // copy lets the compiler load it again after the bounds check, which the
                // 5.10 verifier rejects.
                let mut c = read(p);
                let r = f(Some(&mut c));
                // SAFETY: the entry stays valid for the program's run (RCU).
                unsafe { write_volatile(p, c) };
                r
            }
            None => f(None),
        }
    }

    #[inline(always)]
    fn with_flow_cache<R>(&self, index: u32, f: impl FnOnce(&mut FlowCacheEntry) -> R) -> Option<R> {
        let e = FLOW_CACHE.get_ptr_mut(index)?;
        // SAFETY: this CPU's entry: only this program on this CPU uses it (XDP does not
        // nest on a CPU), and the controller never writes the cache.
        Some(f(unsafe { &mut *e }))
    }

    #[inline(always)]
    fn conn_generation(&self) -> u32 {
        match CONN_GEN.get_ptr(0) {
            Some(g) => read(g),
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
    fn insert_new_conn(&self, key: &ConnKey, conn: &Conn) -> NewConn {
        /// `BPF_NOEXIST`, and the error it gives for a key that exists.
        const NOEXIST: u64 = 1;
        const EEXIST: i32 = 17;
        match CONNS.insert(key, conn, NOEXIST) {
            Ok(()) => NewConn::Inserted,
            Err(e) if e == -EEXIST => NewConn::Exists,
            Err(_) => NewConn::NoRoom,
        }
    }

    #[inline(always)]
    fn half_open(&self, slot: u32) -> Option<HalfOpen> {
        let p = HALF_OPEN.get_ptr(slot)?.cast::<[u64; 8]>();
        // Any CPU writes any slot: read each word once, as a word (a volatile copy of the
        // struct would load its byte arrays byte by byte). Two CPUs writing one slot at the
        // same instant can leave words of both; a key whose five words all match then
        // names the backend of another SYN of that slot — a window of nanoseconds.
        let mut w = [0u64; 8];
        for (i, word) in w.iter_mut().enumerate() {
            // SAFETY: `p` points to a 64-byte array value, 8-aligned; `i` < 8.
            *word = read(unsafe { p.cast::<u64>().add(i) });
        }
        // SAFETY: 64 bytes either way, and every bit pattern is a valid HalfOpen.
        Some(unsafe { core::mem::transmute::<[u64; 8], HalfOpen>(w) })
    }

    #[inline(always)]
    fn set_half_open(&self, slot: u32, entry: &HalfOpen) {
        let Some(p) = HALF_OPEN.get_ptr_mut(slot) else { return };
        // SAFETY: 64 bytes, 8-aligned, no implicit padding: its words are plain data.
        let w = unsafe { &*(entry as *const HalfOpen as *const [u64; 8]) };
        for (i, word) in w.iter().enumerate() {
            // SAFETY: `p` points to a 64-byte array value, 8-aligned; `i` < 8.
            unsafe { write_volatile(p.cast::<u64>().add(i), *word) };
        }
    }

    #[inline(always)]
    fn touch_half_open(&self, slot: u32, now: u64) {
        let Some(p) = HALF_OPEN.get_ptr_mut(slot) else { return };
        // SAFETY: a valid array value; one aligned word, `conn.last_seen`.
        unsafe { write_volatile(&raw mut (*p).conn.last_seen, now) };
    }

    #[inline(always)]
    fn count_event(&self, event: Event) {
        if let Some(counter) = EVENTS.get_ptr_mut(event.index()) {
            // SAFETY: this CPU's counter: only this program on this CPU writes it.
            unsafe { *counter += 1 };
        }
    }

    #[inline(always)]
    fn swept_at(&self) -> u64 {
        match SWEPT_AT.get_ptr(0) {
            Some(t) => read(t),
            None => 0,
        }
    }

    #[inline(always)]
    fn remove_conn(&self, key: &ConnKey) {
        let _ = CONNS.remove(key);
    }

    #[inline(always)]
    fn with_sched_state<R>(&self, service: u32, f: impl FnOnce(&mut SchedState) -> R) -> Option<R> {
        let p = SCHED_STATE.get_ptr_mut(service)?;
        // Concurrent CPUs may race on the position, as IPVS without its lock would; a copy
        // keeps that a lost update, never a `&mut` alias.
        let mut s = read(p);
        let r = f(&mut s);
        // SAFETY: a valid array value.
        unsafe { write_volatile(p, s) };
        Some(r)
    }

    #[inline(always)]
    fn sched_table(&self, index: u32) -> u16 {
        match SCHED_TABLE.get_ptr(index) {
            Some(e) => read(e),
            None => NO_DEST,
        }
    }

    #[inline(always)]
    fn persist(&self, key: &ConnKey) -> Option<Persist> {
        PERSIST.get_ptr(key).map(read)
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
    fn schedule(&self, id: u32, svc: &Service, client: &Addr16, cport: u16, vip: &Addr16) -> Option<u32> {
        // Called from here, not from within `drlb_schedule`: the BPF stack limit (512 bytes)
        // counts the whole chain of calls, and the main program already takes most of it.
        let client_hash = addr_hash(svc.flags, client);
        let slot = if lb_common::dataplane::is_locality(svc) {
            let w = |i: usize| u32::from_le_bytes([vip[i], vip[i + 1], vip[i + 2], vip[i + 3]]);
            drlb_schedule_locality(id, w(0), w(4), w(8), w(12))
        } else if lb_common::dataplane::loops_of_their_own(svc) {
            drlb_schedule_more(id, client_hash, cport as u32)
        } else {
            drlb_schedule(id, client_hash, cport as u32, addr_hash(svc.flags, vip), svc.scheduler)
        };
        if slot == NO_SLOT { None } else { Some(slot) }
    }

    #[inline(always)]
    fn with_locality<R>(&self, key: &LocalityKey, f: impl FnOnce(&mut Locality, bool) -> R) -> Option<R> {
        let scratch = LOCALITY_SCRATCH.get_ptr_mut(0)?;
        // Copied map value to map value: through the stack, 56 bytes would not fit.
        let found = match LOCALITY.get_ptr(key) {
            // SAFETY: both are valid map values of one `Locality`; the scratch value is this
            // CPU's alone.
            Some(p) => unsafe {
                core::ptr::copy_nonoverlapping(p, scratch, 1);
                true
            },
            // SAFETY: as above.
            None => unsafe {
                core::ptr::write_bytes(scratch, 0, 1);
                false
            },
        };
        // SAFETY: this CPU's scratch value: only this program on this CPU uses it (XDP does
        // not nest on a CPU), and the controller never reads or writes it.
        Some(f(unsafe { &mut *scratch }, found))
    }

    #[inline(always)]
    fn set_locality(&self, key: &LocalityKey, value: &Locality) {
        // Concurrent CPUs may race on one destination's entry, as IPVS's lblc readers do
        // (it updates `lastuse` without a lock): the last write wins.
        let _ = LOCALITY.insert(key, value, 0);
    }

    #[inline(always)]
    fn least_connection(&self, id: u32, _svc: &Service) -> Option<u32> {
        let slot = drlb_schedule(id, 0, 0, 0, Scheduler::Wlc.code());
        if slot == NO_SLOT { None } else { Some(slot) }
    }

    #[inline(always)]
    fn locality_overloaded(&self, id: u32, _svc: &Service, slot: u32) -> bool {
        drlb_locality_overloaded(id, slot) != 0
    }

    #[inline(always)]
    fn locality_least(&self, _e: &Locality) -> Option<u32> {
        // `_e` is this CPU's scratch value (`with_locality`), which the function reads.
        let slot = drlb_locality_least();
        if slot == NO_SLOT { None } else { Some(slot) }
    }

    #[inline(always)]
    fn locality_most(&self, _e: &Locality) -> Option<usize> {
        let at = drlb_locality_most();
        if at == NO_SLOT { None } else { Some(at as usize) }
    }

    #[inline(always)]
    fn random(&self) -> u32 {
        // SAFETY: helper without preconditions.
        unsafe { bpf_get_prandom_u32() }
    }
}

/// The schedulers, as a global BPF function: the verifier checks a global function once,
/// on its own, instead of once per path that reaches it — the bounded loops over up to
/// 256 real servers would otherwise exceed its budget. Arguments are plain scalars, as
/// global functions require. `scheduler` is the service's, or wlc for lblc's and lblcr's
/// fallback. Returns `NO_SLOT` for "no real server".
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_schedule(id: u32, client_hash: u32, cport: u32, vip_hash: u32, scheduler: u32) -> u32 {
    let Some(svc) = TABLES.service(id) else { return NO_SLOT };
    lb_common::dataplane::schedule_as(&TABLES, id, &svc, scheduler, client_hash, cport as u16, vip_hash).unwrap_or(NO_SLOT)
}

/// [`lb_common::dataplane::schedule_more`] (ovf, twos, the sh and mh fallbacks) as a global BPF function of its own, like `drlb_schedule`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_schedule_more(id: u32, client_hash: u32, cport: u32) -> u32 {
    let Some(svc) = TABLES.service(id) else { return NO_SLOT };
    lb_common::dataplane::schedule_more(&TABLES, &svc, client_hash, cport as u16).unwrap_or(NO_SLOT)
}

/// lblc and lblcr ([`lb_common::dataplane::schedule_locality`]), a global function called
/// from the program. Its loops are global functions of their own too (below): each is
/// verified once, and its result comes back as one state, so the paths through one loop
/// do not multiply the work of verifying the next.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_schedule_locality(id: u32, w0: u32, w1: u32, w2: u32, w3: u32) -> u32 {
    let Some(svc) = TABLES.service(id) else { return NO_SLOT };
    // The VIP (IPv4-mapped or IPv6) as its four little-endian words: global functions take
    // scalars only, five at most.
    let vip = lb_common::packet::addr6(&[w0, w1, w2, w3]);
    lb_common::dataplane::schedule_locality(&TABLES, id, &svc, &vip).unwrap_or(NO_SLOT)
}

/// lblc's and lblcr's `is_overloaded()` of the server in `slot` of service `id`: 1 or 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_locality_overloaded(id: u32, slot: u32) -> u32 {
    let Some(svc) = TABLES.service(id) else { return 0 };
    lb_common::dataplane::locality_overloaded(&TABLES, &svc, slot) as u32
}

/// `ip_vs_dest_set_min()` over this CPU's scratch entry: a slot, or `NO_SLOT`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_locality_least() -> u32 {
    let Some(e) = LOCALITY_SCRATCH.get_ptr(0) else { return NO_SLOT };
    // SAFETY: this CPU's scratch value, which only this program on this CPU uses.
    lb_common::dataplane::set_least(&TABLES, unsafe { &*e }).unwrap_or(NO_SLOT)
}

/// `ip_vs_dest_set_max()` over this CPU's scratch entry: a position, or `NO_SLOT`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn drlb_locality_most() -> u32 {
    let Some(e) = LOCALITY_SCRATCH.get_ptr(0) else { return NO_SLOT };
    // SAFETY: as in `drlb_locality_least`.
    lb_common::dataplane::set_most(&TABLES, unsafe { &*e }).map_or(NO_SLOT, |at| at as u32)
}

#[map(name = "DRLB_JUMP")]
static JUMP: ProgramArray = ProgramArray::with_max_entries(JUMP_SLOTS, 0);

#[map(name = "DRLB_IPV6_CHAIN")]
static IPV6_CHAIN: PerCpuArray<Ipv6Chain> = PerCpuArray::with_max_entries(1, 0);

/// Jumps to the program in `DRLB_JUMP` slot `SLOT`; returns only if there is none.
///
/// The helper call is written out, with the slot an immediate in the instruction stream:
/// through `ProgramArray::tail_call` LLVM merges the dispatcher's three calls into one
/// whose slot arrives in a register from three paths, which the verifier cannot record as
/// a constant key, and the x86-64 JIT then emits an indirect jump (a retpoline) instead of
/// a direct one.
#[inline(always)]
pub fn jump<const SLOT: u32>(ctx: &aya_ebpf::programs::XdpContext) {
    use aya_ebpf::EbpfContext as _;
    /// `BPF_FUNC_tail_call`.
    const TAIL_CALL: u32 = 12;
    // SAFETY: r1 is the running program's own context and r2 the DRLB_JUMP map (the static
    // is the map definition itself, `ProgramArray` being transparent over it), as
    // bpf_tail_call() requires; the helper clobbers r0 to r5 when it returns (no program in
    // the slot), and success does not return. Every program in DRLB_JUMP is an XDP program
    // of this object.
    unsafe {
        core::arch::asm!(
            "r3 = {slot}",
            "call {helper}",
            slot = const SLOT,
            helper = const TAIL_CALL,
            inout("r1") ctx.as_ptr() => _,
            inout("r2") addr_of!(JUMP) => _,
            lateout("r0") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
        )
    }
}

/// Leaves the dispatcher's walk of an IPv6 packet for the program it jumps to (this CPU's
/// entry: the jump stays on this CPU, and XDP does not nest on a CPU).
#[inline(always)]
pub fn set_ipv6_chain(chain: &Ipv6Chain) {
    if let Some(p) = IPV6_CHAIN.get_ptr_mut(0) {
        // SAFETY: this CPU's value, which only the programs on this CPU use.
        unsafe { write_volatile(p, *chain) };
    }
}

/// What the dispatcher left in [`set_ipv6_chain`] for this packet.
#[inline(always)]
pub fn ipv6_chain() -> Ipv6Chain {
    match IPV6_CHAIN.get_ptr(0) {
        Some(p) => read(p),
        None => Ipv6Chain { status: Ipv6Chain::TRUNCATED, ..Ipv6Chain::default() },
    }
}

/// Bumps the CPU-local counter for `stat`.
#[inline(always)]
pub fn count(stat: Verdict) {
    if let Some(counter) = STATS.get_ptr_mut(stat.index()) {
        // SAFETY: this CPU's counter: only this program on this CPU writes it.
        unsafe { *counter += 1 };
    }
}

#[map(name = "DRLB_TRACE_ON")]
static TRACE_ON: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_TRACE")]
static TRACE: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

/// Reports a VIP-bound packet's decision if `drlb trace` is listening.
#[inline(always)]
pub fn trace(out: &Outcome, stat: Verdict) {
    if !matches!(TRACE_ON.get_ptr(0), Some(on) if read(on) != 0) {
        return;
    }
    // Written straight into the ring: an event built on the stack would not fit the
    // program's 512-byte stack next to the rest.
    let Some(mut entry) = TRACE.reserve::<TraceEvent>(0) else { return };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points to a reserved, writable TraceEvent in the ring that only this
    // program holds until it submits it.
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

#[map(name = "DRLB_SYNC_ON")]
static SYNC_ON: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "DRLB_CONN_EVENTS")]
static CONN_EVENTS: RingBuf = RingBuf::with_byte_size(CONN_EVENTS_RING_BYTES, 0);

/// Reports a new connection or a state change for connection sync, if sync runs. Only
/// packets that made or changed a connection come here. A BPF subprogram of its own, not
/// inlined: the established path's code stays as compact as without sync.
#[inline(never)]
pub fn report_conn(out: &Outcome) {
    if !matches!(SYNC_ON.get_ptr(0), Some(on) if read(on) != 0) {
        return;
    }
    let (Some(slot), Some(service)) = (out.slot, out.service) else { return };
    // A full ring (the controller is behind) loses the event: the sweep's re-announcement
    // sends the connection later.
    let Some(mut entry) = CONN_EVENTS.reserve::<ConnEvent>(0) else { return };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points to a reserved, writable ConnEvent in the ring that only this
    // program holds until it submits it.
    unsafe {
        (*p).key = out.key;
        (*p).backend = slot;
        (*p).service = service;
        (*p).state = out.state;
        (*p).flags = out.conn_flags;
        (*p).new_conn = out.entered_table as u8;
        (*p)._pad = [0; 5];
    }
    // No wakeup: the controller reads the ring on a timer (it batches for 20 ms anyway),
    // and waking a reader costs a SYN more than the report itself.
    entry.submit(aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64);
}

/// The dataplane clock as `drlb_clock` last read it, for the controller.
#[map(name = "DRLB_CLOCK")]
static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

/// Records the dataplane clock where the controller can read it.
#[inline(always)]
pub fn publish_clock() {
    if let Some(c) = CLOCK.get_ptr_mut(0) {
        // SAFETY: valid array value; helper without preconditions.
        unsafe { write_volatile(c, bpf_jiffies64()) };
    }
}
