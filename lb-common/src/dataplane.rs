//! The forwarding decision: one function, run by the XDP program and by host tests.
//!
//! Per packet, in order of cost: one array lookup rejects addresses that are not VIPs; this
//! CPU's flow cache (an array) or else one hash lookup finds an existing connection, whose
//! real server is one array lookup away.
//! Only a packet without a connection pays for the service lookup and the scheduler; a
//! SYN's connection then waits in the half-open table ([`crate::halfopen`]) until its
//! handshake completes, and only then enters the connection table.
//!
//! Phases, in order: parse L3/L4; flow cache; connection table; half-open table; service
//! and scheduler (or persistence template); record the connection; rewrite the MACs.

use crate::addr::Addr16;
use crate::conn::{tcp, Conn, ConnKey, CONN_F_INACTIVE, CONN_F_SYNCED};
use crate::events::Event;
use crate::flowcache::{self, FlowCacheEntry};
use crate::halfopen::{self, HalfOpen};
use crate::maps::{
    addr_hash, Scheduler, Backend, ConnCounts, Locality, LocalityKey, Persist, LOCALITY_EXPIRATION_S, LOCALITY_SET_MAX, BACKEND_F_PRESENT, SchedState, Service, ServiceKey, Vip, VipKey, IPPROTO_TCP,
    IPPROTO_UDP, MAX_BACKENDS_PER_SERVICE, SVC_F_ONE_PACKET, SVC_F_PERSISTENT, SVC_F_SCHED_FALLBACK, SVC_F_SCHED_PORT,
    SVC_F_SLOPPY_TCP,
};
use crate::packet::{
    addr6, ethernet, ipv6_chain, load_addr6, parse_l3, parse_l4, Ipv6Chain, L4Info, Packet, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMP_HLEN,
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_MIN_HLEN, IPV6_HLEN, L3,
};
use crate::sched::{self, DestInfo, Dests, NO_DEST};
use crate::verdict::Verdict;

/// Access to the maps, implemented over BPF maps in the program and over ordinary
/// collections on the host. Methods take `&self`: the BPF maps are shared memory.
pub trait Tables {
    /// `DRLB_VIP_FILTER`: false means "certainly not a VIP".
    fn vip_filter(&self, addr: &Addr16) -> bool;
    /// This director's MAC as [`crate::maps::own_mac_words`] ([`crate::maps::GLOBAL_OWN_MAC`]);
    /// all zero: frames for any MAC are taken.
    fn own_mac(&self) -> [u32; 2];
    fn vip(&self, key: &VipKey) -> Option<Vip>;
    fn service_id(&self, key: &ServiceKey) -> Option<u32>;
    fn service(&self, id: u32) -> Option<Service>;
    fn backend(&self, slot: u32) -> Option<Backend>;
    /// What forwarding to `slot` needs of its backend: flags and [`Backend::l2_words`].
    /// The XDP program reads just these words in place.
    #[inline(always)]
    fn backend_l2(&self, slot: u32) -> Option<(u32, [u32; 3])>
    where
        Self: Sized,
    {
        self.backend(slot).map(|b| (b.flags, b.l2_words()))
    }
    /// Entry `index` of `DRLB_MEMBERS`: a backend slot.
    fn member(&self, index: u32) -> u32;
    fn conn_counts(&self, slot: u32) -> ConnCounts;
    /// What a scheduler needs of the backend in `slot`. The XDP program reads just these
    /// fields in place rather than copying whole entries 256 times in a scheduling loop.
    #[inline(always)]
    fn dest_info(&self, slot: u32) -> DestInfo
    where
        Self: Sized,
    {
        match self.backend(slot) {
            Some(b) => {
                let c = self.conn_counts(slot);
                DestInfo { weight: b.weight, active: c.active, inactive: c.inactive, available: b.accepts_new() }
            }
            None => DestInfo::default(),
        }
    }
    /// Adds the deltas to a backend's ActiveConn/InActConn (atomically in BPF).
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32);
    /// Counts one packet (and maybe a new connection) for a backend.
    fn account(&self, slot: u32, bytes: u64, new_conn: bool);
    /// Runs `f` on the connection entry for `key`, if there is one, in place.
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R;
    /// A copy of the connection entry for `key`, which is left as it is.
    fn conn(&self, key: &ConnKey) -> Option<Conn>;
    /// Runs `f` on this CPU's flow-cache entry `index` ([`crate::flowcache`]).
    fn with_flow_cache<R>(&self, index: u32, f: impl FnOnce(&mut FlowCacheEntry) -> R) -> Option<R>;
    /// `DRLB_CONN_GEN`.
    fn conn_generation(&self) -> u32;
    /// Moves `DRLB_CONN_GEN` on: a connection was removed or replaced.
    fn bump_conn_generation(&self);
    /// Records a connection; `false` if the table had no room.
    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool;
    /// Records a connection only if its key has none (`BPF_NOEXIST`).
    fn insert_new_conn(&self, key: &ConnKey, conn: &Conn) -> NewConn;
    /// Entry `slot` of `DRLB_HALF_OPEN`, copied.
    fn half_open(&self, slot: u32) -> Option<HalfOpen>;
    fn set_half_open(&self, slot: u32, entry: &HalfOpen);
    /// Moves entry `slot`'s idle timer to `now`, and nothing else: a slot another CPU just
    /// emptied stays empty.
    fn touch_half_open(&self, slot: u32, now: u64);
    /// Counts one [`Event`] on this CPU.
    fn count_event(&self, event: Event);
    /// `DRLB_SWEPT_AT`: when the controller last recounted ([`HalfOpen::counted`]).
    fn swept_at(&self) -> u64;
    fn remove_conn(&self, key: &ConnKey);
    fn with_sched_state<R>(&self, service: u32, f: impl FnOnce(&mut SchedState) -> R) -> Option<R>;
    /// Entry `index` of `DRLB_SCHED_TAB` (`NO_DEST` if out of range).
    fn sched_table(&self, index: u32) -> u16;
    fn persist(&self, key: &ConnKey) -> Option<Persist>;
    fn insert_persist(&self, key: &ConnKey, value: &Persist);
    /// Clock ticks (`bpf_jiffies64()`: a variable read, where reading a clock source costs
    /// tens of nanoseconds per packet).
    fn now(&self) -> u64;
    /// Picks a real server slot for a new connection of service `id` from `client` (source
    /// port `cport`) to `vip` ([`schedule`]). The XDP program routes this through a separately
    /// verified BPF function.
    /// The schedulers with loops of their own ([`loops_of_their_own`]) go to
    /// [`schedule_more`], another separately verified function.
    #[inline(always)]
    fn schedule(&self, id: u32, svc: &Service, client: &Addr16, cport: u16, vip: &Addr16) -> Option<u32>
    where
        Self: Sized,
    {
        if is_locality(svc) {
            schedule_locality(self, id, svc, vip)
        } else if loops_of_their_own(svc) {
            schedule_more(self, svc, addr_hash(svc.flags, client), cport)
        } else {
            schedule(self, id, svc, addr_hash(svc.flags, client), cport, addr_hash(svc.flags, vip))
        }
    }
    /// Weighted least-connection over service `id` (`svc`): a backend slot. lblc and lblcr
    /// fall back on it; the XDP program runs it through `drlb_schedule`, whose loop is
    /// verified once and whose result reaches the caller as one state.
    #[inline(always)]
    fn least_connection(&self, id: u32, svc: &Service) -> Option<u32>
    where
        Self: Sized,
    {
        schedule_as(self, id, svc, Scheduler::Wlc.code(), 0, 0, 0)
    }
    /// lblc's and lblcr's `is_overloaded()` for the server in `slot` (a global function in
    /// the XDP program, as `least_connection`).
    #[inline(always)]
    fn locality_overloaded(&self, _id: u32, svc: &Service, slot: u32) -> bool
    where
        Self: Sized,
    {
        locality_overloaded(self, svc, slot)
    }
    /// `ip_vs_dest_set_min()` over `e`, a slot (a global function in the XDP program, which
    /// reads `e` from this CPU's scratch value, where `with_locality` put it).
    #[inline(always)]
    fn locality_least(&self, e: &Locality) -> Option<u32>
    where
        Self: Sized,
    {
        set_least(self, e)
    }
    /// `ip_vs_dest_set_max()` over `e`, a position in the set (as `locality_least`).
    #[inline(always)]
    fn locality_most(&self, e: &Locality) -> Option<usize>
    where
        Self: Sized,
    {
        set_most(self, e)
    }
    /// A random number (`bpf_get_prandom_u32()`), for twos.
    fn random(&self) -> u32;
    /// Runs `f` on a copy of lblc's and lblcr's entry for `key` ([`crate::maps::MAP_LOCALITY`];
    /// zeroed, with `false`, when there is none). The XDP program copies it into this CPU's
    /// scratch map value rather than its stack: the set is indexed by a variable, which
    /// Debian 5.10's verifier allows in map values only.
    fn with_locality<R>(&self, key: &LocalityKey, f: impl FnOnce(&mut Locality, bool) -> R) -> Option<R>;
    /// Writes `key`'s entry.
    fn set_locality(&self, key: &LocalityKey, value: &Locality);
}

/// A service's real servers in IPVS list order (the reverse of configuration order).
struct ServiceDests<'a, T: Tables> {
    tables: &'a T,
    members_offset: u32,
    count: u32,
}

impl<T: Tables> ServiceDests<'_, T> {
    #[inline(always)]
    fn slot(&self, list_index: u32) -> u32 {
        self.tables.member(self.members_offset + (self.count - 1 - list_index))
    }
}

impl<T: Tables> Dests for ServiceDests<'_, T> {
    #[inline(always)]
    fn len(&self) -> u32 {
        self.count
    }

    #[inline(always)]
    fn get(&self, list_index: u32) -> DestInfo {
        self.tables.dest_info(self.slot(list_index))
    }
}

/// Picks a real server slot for a new connection of service `id` from a client (source
/// port `cport`) to a VIP, each address given as the hashing schedulers take it
/// ([`addr_hash`]).
#[inline(always)]
pub fn schedule<T: Tables>(t: &T, id: u32, svc: &Service, client_hash: u32, cport: u16, vip_hash: u32) -> Option<u32> {
    schedule_as(t, id, svc, svc.scheduler, client_hash, cport, vip_hash)
}

/// [`schedule`] with the scheduler of code `scheduler` rather than the service's (lblc and
/// lblcr fall back on wlc).
#[inline(always)]
pub fn schedule_as<T: Tables>(t: &T, id: u32, svc: &Service, scheduler: u32, client_hash: u32, cport: u16, vip_hash: u32) -> Option<u32> {
    let dests = ServiceDests { tables: t, members_offset: svc.members_offset, count: svc.member_count };
    if svc.member_count == 0 {
        return None;
    }
    let scheduler = Scheduler::from_code(scheduler)?;
    let fallback = svc.flags & SVC_F_SCHED_FALLBACK != 0;
    let list_index = match scheduler {
        Scheduler::Wlc => sched::wlc(&dests),
        Scheduler::Lc => sched::lc(&dests),
        Scheduler::Sed => sched::sed(&dests),
        Scheduler::Nq => sched::nq(&dests),
        Scheduler::Rr => t.with_sched_state(id, |s| sched::rr(&dests, &mut s.rr_pos)).flatten(),
        Scheduler::Wrr => {
            let index = t.with_sched_state(id, |s| {
                let mut i = s.seq_pos;
                if i >= svc.table_len {
                    i = svc.table_cycle_start;
                }
                s.seq_pos = i + 1;
                i
            })?;
            table_choice(t, svc, index)
        }
        Scheduler::Sh | Scheduler::Mh if fallback => None,
        Scheduler::Sh => table_choice(t, svc, sched::sh_hashkey(client_hash, hashed_port(svc, cport), 0)),
        Scheduler::Mh => {
            if svc.table_len == 0 {
                return None;
            }
            table_choice(t, svc, mh_hash(client_hash, hashed_port(svc, cport), 0) % svc.table_len)
        }
        // The controller wrote fo's one choice: without IPVS's connection thresholds no
        // server is ever overloaded, so it depends on weights and availability alone.
        Scheduler::Fo => table_choice(t, svc, 0),
        // `schedule_more`'s.
        Scheduler::Ovf | Scheduler::Twos | Scheduler::Lblc | Scheduler::Lblcr => None,
        // dh hashes the packet's destination: the VIP.
        Scheduler::Dh => table_choice(t, svc, sched::dh_bucket(vip_hash)),
    }?;
    let slot = dests.slot(list_index);
    // Table-driven choices are checked now as IPVS checks them (`is_unavailable()`: weight
    // 0), and for a MAC to send to. Not for being retired or failed: a reload or a verdict
    // may have retired the chosen server after this packet read the service's table, and,
    // as under IPVS (the old table's destination stays valid while it is read), the SYN
    // still goes there — it keeps its MAC while it drains. The loop schedulers chose among
    // servers they read as available, and are not asked again for the same reason.
    if matches!(scheduler, Scheduler::Wrr | Scheduler::Sh | Scheduler::Mh | Scheduler::Dh | Scheduler::Fo) && !table_usable(t, slot) {
        return None;
    }
    Some(slot)
}

/// Whether `svc`'s scheduler is one of [`schedule_more`]'s.
#[inline(always)]
pub fn loops_of_their_own(svc: &Service) -> bool {
    match Scheduler::from_code(svc.scheduler) {
        Some(Scheduler::Ovf | Scheduler::Twos) => true,
        Some(Scheduler::Sh | Scheduler::Mh) => svc.flags & SVC_F_SCHED_FALLBACK != 0,
        _ => false,
    }
}

/// [`Tables::locality_overloaded`].
#[inline(always)]
pub fn locality_overloaded<T: Tables>(t: &T, svc: &Service, slot: u32) -> bool {
    overloaded(&ServiceDests { tables: t, members_offset: svc.members_offset, count: svc.member_count }, &t.dest_info(slot))
}

/// Whether `svc`'s scheduler is lblc or lblcr ([`schedule_locality`]'s).
#[inline(always)]
pub fn is_locality(svc: &Service) -> bool {
    matches!(Scheduler::from_code(svc.scheduler), Some(Scheduler::Lblc | Scheduler::Lblcr))
}

/// lblc and lblcr: a backend slot for a new connection of service `id` to `vip`.
#[inline(always)]
pub fn schedule_locality<T: Tables>(t: &T, id: u32, svc: &Service, vip: &Addr16) -> Option<u32> {
    if svc.member_count == 0 {
        return None;
    }
    match Scheduler::from_code(svc.scheduler)? {
        Scheduler::Lblc => lblc(t, id, svc, vip),
        Scheduler::Lblcr => lblcr(t, id, svc, vip),
        _ => None,
    }
}

/// The schedulers whose loops [`schedule`] leaves to a BPF function of their own: ovf,
/// twos, and sh's and mh's fallbacks. A backend slot.
#[inline(always)]
pub fn schedule_more<T: Tables>(t: &T, svc: &Service, client_hash: u32, cport: u16) -> Option<u32> {
    let dests = ServiceDests { tables: t, members_offset: svc.members_offset, count: svc.member_count };
    if svc.member_count == 0 {
        return None;
    }
    let list_index = match Scheduler::from_code(svc.scheduler)? {
        Scheduler::Ovf => ovf(t, svc, &dests),
        Scheduler::Twos => twos(t, svc, &dests),
        Scheduler::Sh => sh_fallback(t, svc, &dests, client_hash, hashed_port(svc, cport)),
        Scheduler::Mh => mh_fallback(t, svc, &dests, client_hash, hashed_port(svc, cport)),
        _ => None,
    }?;
    Some(dests.slot(list_index))
}

/// The source port sh and mh hash: with sh-port / mh-port, else 0.
#[inline(always)]
fn hashed_port(svc: &Service, cport: u16) -> u16 {
    if svc.flags & SVC_F_SCHED_PORT != 0 { cport } else { 0 }
}

/// What a table-driven scheduler asks of the server its table names (IPVS's
/// `is_unavailable()`: weight 0), and a MAC to send to.
#[inline(always)]
fn table_usable<T: Tables>(t: &T, slot: u32) -> bool {
    matches!(t.backend(slot), Some(b) if b.is_present() && b.weight > 0)
}

/// Weighted overflow (`ip_vs_ovf.c`): the controller wrote the usable servers in the order
/// fo would pick them (highest weight first, list order among equals); the first whose
/// active connections do not exceed its weight is ovf's choice.
#[inline(always)]
fn ovf<T: Tables>(t: &T, svc: &Service, dests: &ServiceDests<'_, T>) -> Option<u32> {
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= svc.table_len {
            break;
        }
        let index = t.sched_table(svc.table_offset + i) as u32;
        if index < svc.member_count {
            let d = dests.get(index);
            if d.available && d.weight > 0 && d.active <= d.weight {
                return Some(index);
            }
        }
        i += 1;
    }
    None
}

/// lblc (`ip_vs_lblc.c`): the server this destination (the VIP) last went to, while it is
/// available and not overloaded; else weighted least-connection, remembered. A backend slot.
#[inline(always)]
fn lblc<T: Tables>(t: &T, id: u32, svc: &Service, vip: &Addr16) -> Option<u32> {
    let key = LocalityKey { daddr: *vip, service: id };
    let now = t.now();
    t.with_locality(&key, |e, found| {
        let live = found && live_locality(svc, e, now);
        if live {
            e.last_use = now;
            let slot = e.set[0];
            let d = t.dest_info(slot);
            if d.available && d.weight > 0 && !t.locality_overloaded(id, svc, slot) {
                t.set_locality(&key, e);
                return Some(slot);
            }
        }
        let Some(slot) = t.least_connection(id, svc) else {
            if live {
                t.set_locality(&key, e);
            }
            return None;
        };
        fresh_locality(e, slot, now);
        t.set_locality(&key, e);
        Some(slot)
    })
    .flatten()
}

/// lblcr (`ip_vs_lblcr.c`): the least loaded of the servers this destination goes to, while
/// it is not overloaded; else weighted least-connection, added to the set. A set unchanged
/// for [`LOCALITY_EXPIRATION_S`] sheds its most loaded server. A backend slot.
#[inline(always)]
fn lblcr<T: Tables>(t: &T, id: u32, svc: &Service, vip: &Addr16) -> Option<u32> {
    let key = LocalityKey { daddr: *vip, service: id };
    let now = t.now();
    t.with_locality(&key, |e, found| {
        if !(found && live_locality(svc, e, now)) {
            let slot = t.least_connection(id, svc)?;
            fresh_locality(e, slot, now);
            t.set_locality(&key, e);
            return Some(slot);
        }
        e.last_use = now;
        let min = t.locality_least(e);
        if e.count > 1 && now > e.last_mod + svc.ticks(LOCALITY_EXPIRATION_S) as u64 {
            if let Some(k) = t.locality_most(e) {
                set_erase(e, k);
                e.last_mod = now;
            }
        }
        if let Some(slot) = min
            && !t.locality_overloaded(id, svc, slot)
        {
            t.set_locality(&key, e);
            return Some(slot);
        }
        let Some(slot) = t.least_connection(id, svc) else {
            t.set_locality(&key, e);
            return None;
        };
        set_insert(e, slot, now);
        t.set_locality(&key, e);
        Some(slot)
    })
    .flatten()
}

/// A new entry holding `slot` alone. Field by field: the XDP program's `e` is a map value,
/// and a whole new value would be built on its small stack first.
#[inline(always)]
fn fresh_locality(e: &mut Locality, slot: u32, now: u64) {
    e.last_use = now;
    e.last_mod = now;
    e.count = 1;
    e.set[0] = slot;
}

/// Whether a destination's entry is in use: [`LOCALITY_EXPIRATION_S`] did not pass since its
/// last use (IPVS's collector would have removed it).
#[inline(always)]
fn live_locality(svc: &Service, e: &Locality, now: u64) -> bool {
    e.count >= 1 && e.count as usize <= LOCALITY_SET_MAX && now < e.last_use + svc.ticks(LOCALITY_EXPIRATION_S) as u64
}

/// `is_overloaded()` of lblc and lblcr: more active connections than its weight while some
/// server of the service has less than half its weight.
#[inline(always)]
fn overloaded<T: Tables>(dests: &ServiceDests<'_, T>, d: &DestInfo) -> bool {
    if d.active <= d.weight {
        return false;
    }
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= dests.count {
            break;
        }
        let other = dests.get(i);
        if other.active.wrapping_mul(2) < other.weight {
            return true;
        }
        i += 1;
    }
    false
}

/// `ip_vs_dest_set_min()`: newest member first; the first available one of non-zero
/// weight, then any available one less loaded per weight. A backend slot.
#[inline(always)]
pub fn set_least<T: Tables>(t: &T, e: &Locality) -> Option<u32> {
    let (mut found, mut least, mut least_weight, mut least_overhead) = (false, 0u32, 0u64, 0u64);
    let mut k = LOCALITY_SET_MAX;
    while k > 0 {
        k -= 1;
        // `get`, not indexing: a bounds check the compiler cannot drop would leave a call to
        // a panic, which the verifier refuses.
        let Some(&slot) = e.set.get(k) else { continue };
        if k >= e.count as usize {
            continue;
        }
        let d = t.dest_info(slot);
        let overhead = sched::conn_overhead(&d) as u64;
        if !found {
            if d.weight > 0 && d.available {
                (found, least, least_weight, least_overhead) = (true, slot, d.weight as u64, overhead);
            }
        } else if least_overhead * d.weight as u64 > overhead * least_weight && d.available {
            (least, least_weight, least_overhead) = (slot, d.weight as u64, overhead);
        }
    }
    if found { Some(least) } else { None }
}

/// `ip_vs_dest_set_max()`: newest member first; the first of non-zero weight, then any of
/// non-zero weight more loaded per weight. Its position in the set.
#[inline(always)]
pub fn set_most<T: Tables>(t: &T, e: &Locality) -> Option<usize> {
    let (mut found, mut most, mut most_weight, mut most_overhead) = (false, 0usize, 0u64, 0u64);
    let mut at = LOCALITY_SET_MAX;
    while at > 0 {
        at -= 1;
        let Some(&slot) = e.set.get(at) else { continue };
        if at >= e.count as usize {
            continue;
        }
        let d = t.dest_info(slot);
        let overhead = sched::conn_overhead(&d) as u64;
        if !found {
            if d.weight > 0 {
                (found, most, most_weight, most_overhead) = (true, at, d.weight as u64, overhead);
            }
        } else if most_overhead * (d.weight as u64) < overhead * most_weight && d.weight > 0 {
            (most, most_weight, most_overhead) = (at, d.weight as u64, overhead);
        }
    }
    if found { Some(most) } else { None }
}

/// Removes the member at `at`, keeping the others' order.
#[inline(always)]
fn set_erase(e: &mut Locality, at: usize) {
    let mut k = 0;
    while k + 1 < LOCALITY_SET_MAX {
        if k >= at && k + 1 < e.count as usize {
            e.set[k] = e.set[k + 1];
        }
        k += 1;
    }
    e.count -= 1;
}

/// `ip_vs_dest_set_insert()`: a server not yet a member becomes the newest (a full set drops
/// its oldest first), and the set counts as changed.
#[inline(always)]
fn set_insert(e: &mut Locality, slot: u32, now: u64) {
    let mut k = 0;
    while k < LOCALITY_SET_MAX {
        if k < e.count as usize && e.set[k] == slot {
            return;
        }
        k += 1;
    }
    if e.count as usize == LOCALITY_SET_MAX {
        set_erase(e, 0);
    }
    // Below LOCALITY_SET_MAX now. The compiler knows it and would drop a check; the
    // verifier does not, so the count is read afresh (volatile: the compiler forgets what it
    // knew) and masked.
    // SAFETY: a read of a field through a valid reference.
    let n = unsafe { core::ptr::read_volatile(&e.count) } as usize & (LOCALITY_SET_MAX - 1);
    e.set[n] = slot;
    e.count = n as u32 + 1;
    e.last_mod = now;
}

/// Weighted random twos choice (`ip_vs_twos.c`): two draws by weight over the controller's
/// table ([`sched::twos_table`]), the less loaded relative to weight wins, the first on a tie.
#[inline(always)]
fn twos<T: Tables>(t: &T, svc: &Service, dests: &ServiceDests<'_, T>) -> Option<u32> {
    if svc.table_len < 3 {
        return None;
    }
    let total = twos_sum(t, svc, svc.table_len / 3 - 1);
    let first = twos_pick(t, svc, sched::twos_draw(t.random(), total))?;
    let second = twos_pick(t, svc, sched::twos_draw(t.random(), total))?;
    if sched::twos_prefers_second(&dests.get(first), &dests.get(second)) { Some(second) } else { Some(first) }
}

/// The sum of the weights through the k-th server of twos's table.
#[inline(always)]
fn twos_sum<T: Tables>(t: &T, svc: &Service, k: u32) -> u32 {
    let at = svc.table_offset + 3 * k;
    ((t.sched_table(at + 1) as u32) << 16) | t.sched_table(at + 2) as u32
}

/// The list index a twos draw lands on: the first server whose sum of weights reaches it,
/// found by bisection (the sums only grow): 9 steps cover 256 servers, where a scan would
/// cost the verifier a step per server.
#[inline(always)]
fn twos_pick<T: Tables>(t: &T, svc: &Service, draw: u32) -> Option<u32> {
    let (mut lo, mut hi) = (0u32, svc.table_len / 3 - 1);
    let mut step = 0;
    while step < 9 {
        if lo >= hi {
            break;
        }
        let mid = (lo + hi) / 2;
        if twos_sum(t, svc, mid) >= draw {
            hi = mid;
        } else {
            lo = mid + 1;
        }
        step += 1;
    }
    let index = t.sched_table(svc.table_offset + 3 * lo) as u32;
    if index < svc.member_count { Some(index) } else { None }
}

/// `ip_vs_sh_get_fallback()`: the client's bucket, or if its server is unavailable the
/// buckets `(2 * bucket + k) % 256` in turn, until one's server is usable or a bucket is
/// empty.
#[inline(always)]
fn sh_fallback<T: Tables>(t: &T, svc: &Service, dests: &ServiceDests<'_, T>, addr: u32, port: u16) -> Option<u32> {
    let ihash = sched::sh_hashkey(addr, port, 0);
    let first = table_choice(t, svc, ihash)?;
    if table_usable(t, dests.slot(first)) {
        return Some(first);
    }
    let mut k = 0;
    while k < sched::SH_TABLE_SIZE as u32 {
        let index = table_choice(t, svc, sched::sh_hashkey(addr, port, (k + ihash) % sched::SH_TABLE_SIZE as u32))?;
        if table_usable(t, dests.slot(index)) {
            return Some(index);
        }
        k += 1;
    }
    None
}

/// Entries `mh_fallback` probes. The kernel goes on for the whole table (4093 by default);
/// the verifier cannot follow that many hashes within Debian 5.10's budget. 64 probes miss
/// a usable server only when nearly all entries are unavailable: with half of them
/// unavailable, once in 2^64 clients; with 9 in 10, once in 850.
pub const MH_FALLBACK_PROBES: u32 = 64;

/// `ip_vs_mh_get_fallback()`: the client's entry, or if its server is unavailable the
/// entries the client hashes to with offsets `(k + entry) % size` in turn (up to
/// [`MH_FALLBACK_PROBES`]), until one's server is usable.
#[inline(always)]
fn mh_fallback<T: Tables>(t: &T, svc: &Service, dests: &ServiceDests<'_, T>, client: u32, port: u16) -> Option<u32> {
    if svc.table_len == 0 {
        return None;
    }
    let ihash = mh_hash(client, port, 0) % svc.table_len;
    let first = table_choice(t, svc, ihash)?;
    if table_usable(t, dests.slot(first)) {
        return Some(first);
    }
    let mut k = 0;
    while k < MH_FALLBACK_PROBES {
        let offset = (k + ihash) % svc.table_len;
        let index = table_choice(t, svc, mh_hash(client, port, offset) % svc.table_len)?;
        if table_usable(t, dests.slot(index)) {
            return Some(index);
        }
        k += 1;
    }
    None
}

#[inline(always)]
fn table_choice<T: Tables>(t: &T, svc: &Service, index: u32) -> Option<u32> {
    if index >= svc.table_len {
        return None;
    }
    let v = t.sched_table(svc.table_offset + index);
    if v == NO_DEST || v as u32 >= svc.member_count { None } else { Some(v as u32) }
}

/// The client hash mh looks up its Maglev table with: IPVS's `ip_vs_mh_hashkey()` (hsiphash
/// of the client address ([`addr_hash`]) plus the port with mh-port, plus the offset when
/// falling back).
#[inline(always)]
pub fn mh_hash(client_hash: u32, port: u16, offset: u32) -> u32 {
    crate::hash::mh_hashkey(crate::hash::MH_KEY1, client_hash, port, offset)
}

/// What [`insert_new_conn`](Tables::insert_new_conn) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewConn {
    Inserted,
    /// The key already had a connection (another CPU recorded it a moment ago).
    Exists,
    NoRoom,
}

/// One TCP segment applied to a connection (`set_tcp_state()`) without touching the
/// counts: the connection after it, and how its backend's (active, inactive) counts move
/// as IPVS moves them between ActiveConn and InActConn.
#[inline(always)]
fn tcp_next<T: Tables>(t: &T, c: &Conn, flags: u8) -> (Conn, i32, i32) {
    let new = tcp::next_state(c.state, flags);
    let mut n = *c;
    if new == c.state {
        return (n, 0, 0);
    }
    let mut delta = (0, 0);
    if !c.is_inactive() && new != tcp::ESTABLISHED {
        delta = (-1, 1);
        n.flags |= CONN_F_INACTIVE;
    } else if c.is_inactive() && new == tcp::ESTABLISHED {
        delta = (1, -1);
        n.flags &= !CONN_F_INACTIVE;
    }
    n.state = new;
    n.timeout = match t.service(c.service) {
        Some(s) => s.ticks(s.timeouts.tcp(new)),
        None => 0,
    };
    (n, delta.0, delta.1)
}

/// Applies one TCP segment to a connection ([`tcp_next`]) and its backend's counts. True
/// when the state changed.
#[inline(always)]
fn tcp_transition<T: Tables>(t: &T, c: &mut Conn, flags: u8) -> bool {
    let (n, active, inactive) = tcp_next(t, c, flags);
    let changed = n.state != c.state;
    if active != 0 || inactive != 0 {
        t.adjust_conn_counts(c.backend, active, inactive);
    }
    *c = n;
    changed
}

/// What the half-open table said about a TCP packet without a connection entry.
enum HalfOpenStep {
    /// The connection is half-open (or was, and this packet promoted it): its backend slot.
    Forward(u32),
    /// No half-open connection for this key: the packet may start one.
    NotHeld,
    /// Promotion found no room in the connection table.
    Drop(Verdict),
}

/// Looks `key` up in the half-open table and applies the packet: a retransmitted SYN or a
/// RST leaves the connection half-open; anything that takes it out of SYN_RECV (the
/// handshake's ACK) moves it into the connection table.
#[inline(always)]
fn half_open_step<T: Tables>(t: &T, slot: u32, flags: u8, now: u64, cache_index: u32, out: &mut Outcome) -> HalfOpenStep {
    let Some(e) = t.half_open(slot) else { return HalfOpenStep::NotHeld };
    if !e.holds(&out.key, now) {
        return HalfOpenStep::NotHeld;
    }
    let c = e.conn;
    let syn = flags & tcp::FLAG_SYN != 0;
    if syn && !matches!(t.backend(c.backend), Some(b) if b.accepts_new()) {
        // As for a connection entry: a SYN whose server takes no new connections starts
        // afresh.
        release(t, &c);
        t.set_half_open(slot, &HalfOpen::EMPTY);
        return HalfOpenStep::NotHeld;
    }
    out.service = Some(c.service);
    let (mut next, active, inactive) = tcp_next(t, &c, flags);
    next.last_seen = now;
    if next.state == tcp::SYN_RECV {
        // A retransmitted SYN or a RST: only the idle timer moves. Writing the whole entry
        // back could bring back one that another CPU's promotion just emptied.
        t.touch_half_open(slot, now);
        return HalfOpenStep::Forward(c.backend);
    }
    next.order = 0;
    match t.insert_new_conn(&out.key, &next) {
        NewConn::Inserted => {
            if active != 0 || inactive != 0 {
                t.adjust_conn_counts(c.backend, active, inactive);
            }
            t.set_half_open(slot, &HalfOpen::EMPTY);
            // A cache entry of an earlier connection of this 5-tuple must not serve this one.
            t.with_flow_cache(cache_index, |e| e.clear());
            t.count_event(Event::HalfOpenPromoted);
            out.conn_changed = true;
            out.entered_table = true;
            out.state = next.state;
            out.conn_flags = next.flags;
            HalfOpenStep::Forward(c.backend)
        }
        // Another CPU promoted it a moment ago (and emptied the slot), or a peer's sync
        // installed it: the table's entry stands, with its server. A half-open entry still
        // here is the sync's twin, whose count goes with it.
        NewConn::Exists => {
            if let Some(still) = t.half_open(slot)
                && still.holds(&out.key, now)
            {
                release(t, &still.conn);
                t.set_half_open(slot, &HalfOpen::EMPTY);
            }
            HalfOpenStep::Forward(t.with_conn(&out.key, |e| e.map(|c| c.backend)).unwrap_or(c.backend))
        }
        NewConn::NoRoom => HalfOpenStep::Drop(Verdict::DropConnTableFull),
    }
}

/// Takes a dead connection out of its backend's counts.
#[inline(always)]
fn release<T: Tables>(t: &T, c: &Conn) {
    if c.is_inactive() {
        t.adjust_conn_counts(c.backend, 0, -1);
    } else {
        t.adjust_conn_counts(c.backend, -1, 0);
    }
}

/// What the flow cache or the connection table said about a packet.
enum Lookup {
    /// Live connection: its backend slot.
    Hit(u32),
    /// Served by this CPU's flow cache: the backend slot.
    Cached(u32),
    /// An entry that is over (expired, or closed and now a new SYN): released, to remove.
    Dead,
    Miss,
}


/// What `process_traced` learnt about a VIP-bound packet, for `drlb trace`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Set once the packet is known to be for a VIP with a TCP/UDP header.
    pub vip_bound: bool,
    pub key: ConnKey,
    pub tcp_flags: u8,
    pub new_conn: bool,
    /// Backend slot, when one was chosen.
    pub slot: Option<u32>,
    pub service: Option<u32>,
    /// The packet made a connection-table entry or changed one's state: what connection
    /// sync reports (with `state`, `conn_flags`, `slot` and `service`). Half-open
    /// connections are not reported: a peer learns of a connection once it is in the table.
    pub conn_changed: bool,
    /// The packet put its connection into the connection table: new, or promoted from the
    /// half-open table.
    pub entered_table: bool,
    /// The connection's state and flags after the packet.
    pub state: u8,
    pub conn_flags: u8,
}

/// Decides what happens to one frame and, when it is forwarded, rewrites its MACs.
/// The returned reason names the verdict (`Verdict::xdp_action`) and the counter to bump.
#[inline(always)]
pub fn process<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T) -> Verdict {
    process_traced(pkt, t, &mut Outcome::default())
}

/// [`process`], also filling `out` for tracing: the whole pipeline as the XDP dataplane
/// runs it, the dispatcher's [`route`] and then the program it jumps to.
#[inline(always)]
pub fn process_traced<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome) -> Verdict {
    let mut chain = Ipv6Chain::default();
    match route(pkt, t, &mut chain) {
        Route::V4 => process_v4(pkt, t, out),
        Route::V6 => process_v6(pkt, t, out, &chain),
        Route::Icmp => process_icmp(pkt, t, out, &chain),
        Route::Done(v) => v,
    }
}

/// Where the dispatcher (`drlb_xdp`) sends a frame ([`route`]): each kind of packet is
/// handled by a program of its own, which the kernel verifies with a budget of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// IPv4 other than ICMP: [`process_v4`] (the program at `JUMP_V4`).
    V4,
    /// IPv6 to a possible VIP, other than ICMPv6: [`process_v6`] (`JUMP_V6`).
    V6,
    /// ICMP, and ICMPv6 to a possible VIP: [`process_icmp`] (`JUMP_ICMP`).
    Icmp,
    /// Settled by the dispatcher itself.
    Done(Verdict),
}

/// The dispatcher's phase: which program a frame goes to, from its Ethernet type and IP
/// protocol. IPv6 not to a VIP is settled here; for IPv6 to a possible VIP the extension
/// headers are walked into `chain`, which the program jumped to reads.
#[inline(always)]
pub fn route<P: Packet + ?Sized, T: Tables>(pkt: &P, t: &T, chain: &mut Ipv6Chain) -> Route {
    let Some((ethertype, l3_off)) = ethernet(pkt) else { return Route::Done(Verdict::PassMalformed) };
    match ethertype {
        // IPv4 not to a VIP (most of what a director's own stack gets) stops here too: a
        // tail call costs as much as the rest of its path.
        ETH_P_IP => {
            let ip = match parse_l3(pkt) {
                L3::Ipv4(ip) => ip,
                _ => return Route::Done(Verdict::PassMalformed),
            };
            if !t.vip_filter(&ip.dst()) {
                return Route::Done(Verdict::PassNotVip);
            }
            if !addressed_here(pkt, t) {
                return Route::Done(Verdict::PassOtherHost);
            }
            if ip.proto == IPPROTO_ICMP { Route::Icmp } else { Route::V4 }
        }
        ETH_P_IPV6 => {
            let (Some(version), Some(src), Some(dst)) =
                (pkt.with_header::<IPV6_HLEN, _>(l3_off, |ip| ip[0]), load_addr6(pkt, l3_off + 8), load_addr6(pkt, l3_off + 24))
            else {
                return Route::Done(Verdict::PassMalformed);
            };
            // An IPv4-mapped address is never on the wire (RFC 4291 §2.5.5.2; Linux drops
            // such a packet), and in the maps it is an IPv4 address: an IPv6 packet with
            // one must never reach an IPv4 service or connection.
            if version >> 4 != 6 || v4_mapped_words(&src) || v4_mapped_words(&dst) {
                return Route::Done(Verdict::PassMalformed);
            }
            // Neighbour discovery, router advertisements and the director's own traffic
            // stop here, without walking any header.
            if !t.vip_filter(&addr6(&dst)) {
                return Route::Done(Verdict::PassNotVip);
            }
            if !addressed_here(pkt, t) {
                return Route::Done(Verdict::PassOtherHost);
            }
            *chain = ipv6_chain(pkt, l3_off);
            if chain.status == Ipv6Chain::OK && chain.proto == IPPROTO_ICMPV6 { Route::Icmp } else { Route::V6 }
        }
        ETH_P_ARP => Route::Done(Verdict::PassArp),
        _ => Route::Done(Verdict::PassOtherL3),
    }
}

/// Whether a frame to a VIP is this director's to forward: addressed to its MAC, or to a
/// group address (broadcast, multicast), as the kernel's stack (and so IPVS) accepts them.
/// Only VIP-bound frames are asked: the director's own traffic never pays for it.
#[inline(always)]
fn addressed_here<P: Packet + ?Sized, T: Tables>(pkt: &P, t: &T) -> bool {
    let own = t.own_mac();
    if own[0] | own[1] == 0 {
        return true;
    }
    // The destination and the source's first two bytes, in two loads (`ethernet` has
    // checked the 14-byte header). The group bit is the first byte's lowest.
    let Some(w) = pkt.load_u32s::<2>(0) else { return false };
    w[0] & 1 != 0 || (w[0] == own[0] && w[1] & 0xffff == own[1])
}

/// Whether an IPv6 address, as its four loaded words, is IPv4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
fn v4_mapped_words(w: &crate::packet::Words6) -> bool {
    // Bytes 10 and 11 are 0xff: the third word's upper half, loaded little-endian.
    w[0] == 0 && w[1] == 0 && w[2] == 0xffff_0000
}

/// The IPv4 program: parse L3 and L4, then [`process_flow`]. The dispatcher sends only
/// well-formed IPv4 that passed the VIP pre-filter ([`route`]).
#[inline(always)]
pub fn process_v4<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome) -> Verdict {
    let ip = match parse_l3(pkt) {
        L3::Ipv4(ip) => ip,
        // Not IPv4: not what the dispatcher sends here.
        _ => return Verdict::PassMalformed,
    };
    let is_vip = || t.vip(&VipKey { addr: ip.dst() }).is_some();
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return if is_vip() { Verdict::PassVipNoService } else { Verdict::PassNotVip };
    }
    if ip.fragment {
        return if is_vip() { Verdict::DropFragment } else { Verdict::PassNotVip };
    }
    let Some(l4) = parse_l4(pkt, ip.l4_off, ip.proto) else {
        return if is_vip() { Verdict::DropTruncatedL4 } else { Verdict::PassNotVip };
    };
    // Built in place in `out`: the BPF stack (512 bytes) has no room for a second copy.
    out.key = ConnKey::v4(ip.src4, ip.dst4, l4.sport, l4.dport, ip.proto);
    process_flow(pkt, t, out, l4, &ip)
}

/// The IPv6 program: the fixed header and `chain` (the dispatcher's walk of the extension
/// headers), L4, then [`process_flow`] as for IPv4.
#[inline(always)]
pub fn process_v6<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome, chain: &Ipv6Chain) -> Verdict {
    let Some((_, l3_off)) = ethernet(pkt) else { return Verdict::PassMalformed };
    let (Some(src), Some(dst)) = (load_addr6(pkt, l3_off + 8), load_addr6(pkt, l3_off + 24)) else {
        return Verdict::PassMalformed;
    };
    let is_vip = || t.vip(&VipKey { addr: addr6(&dst) }).is_some();
    let vip_or_pass = |v: Verdict| if is_vip() { v } else { Verdict::PassNotVip };
    match chain.status {
        Ipv6Chain::OK | Ipv6Chain::FRAGMENT => {}
        Ipv6Chain::TOO_LONG => return vip_or_pass(Verdict::DropExtHeaders),
        _ => return vip_or_pass(Verdict::DropTruncatedL4),
    }
    // As for IPv4: what is not TCP or UDP (ICMPv6 in fragments, ESP, No Next Header, ...)
    // is the director's own business; a fragment has no ports to schedule on.
    if chain.proto != IPPROTO_TCP && chain.proto != IPPROTO_UDP {
        return vip_or_pass(Verdict::PassVipNoService);
    }
    if chain.status == Ipv6Chain::FRAGMENT {
        return vip_or_pass(Verdict::DropFragment);
    }
    let Some(l4) = parse_l4(pkt, chain.l4_offset(), chain.proto) else {
        return vip_or_pass(Verdict::DropTruncatedL4);
    };
    out.key = ConnKey::v6(&src, &dst, l4.sport, l4.dport, chain.proto);
    process_flow(pkt, t, out, l4, &FromKey)
}

/// The ICMP program: an ICMP or ICMPv6 error to a VIP about one of its connections goes to
/// that connection's real server ([`icmp_forward`]); anything else to a VIP is the
/// director's own (echo, neighbour discovery to the VIP).
#[inline(always)]
pub fn process_icmp<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome, chain: &Ipv6Chain) -> Verdict {
    let Some((ethertype, l3_off)) = ethernet(pkt) else { return Verdict::PassMalformed };
    let key = if ethertype == ETH_P_IPV6 {
        let Some(dst) = load_addr6(pkt, l3_off + 24) else { return Verdict::PassMalformed };
        if t.vip(&VipKey { addr: addr6(&dst) }).is_none() {
            return Verdict::PassNotVip;
        }
        icmp6_error_key(pkt, chain)
    } else {
        let L3::Ipv4(ip) = parse_l3(pkt) else { return Verdict::PassMalformed };
        if !t.vip_filter(&ip.dst()) || t.vip(&VipKey { addr: ip.dst() }).is_none() {
            return Verdict::PassNotVip;
        }
        if ip.proto != IPPROTO_ICMP || ip.fragment {
            // Not what the dispatcher sends here, or a fragment, which the director's
            // stack reassembles (errors are at most 576 bytes: in practice never one).
            return Verdict::PassVipNoService;
        }
        icmp4_error_key(pkt, ip.l4_off)
    };
    match key {
        Ok(key) => icmp_forward(pkt, t, out, key),
        Err(v) => v,
    }
}

/// The connection an ICMPv4 error at `l4_off` is about: destination unreachable (any
/// code, fragmentation needed among them), source quench and time exceeded, as IPVS's
/// `ip_vs_in_icmp()` takes them. The quoted packet is the connection's reply (VIP:port to
/// the client), so the key is its reverse. The checksum is not verified (IPVS does; the
/// real server's stack does too, and drops a bad one).
#[inline(always)]
fn icmp4_error_key<P: Packet + ?Sized>(pkt: &P, l4_off: usize) -> Result<ConnKey, Verdict> {
    const DEST_UNREACH: u8 = 3;
    const SOURCE_QUENCH: u8 = 4;
    const TIME_EXCEEDED: u8 = 11;
    // Whole headers, never single bytes at a variable offset: LLVM turns `ptr + 1 > end`
    // into `ptr >= end`, from which the verifier learns no readable range.
    let Some(kind) = pkt.with_header::<ICMP_HLEN, _>(l4_off, |h| h[0]) else { return Err(Verdict::PassVipNoService) };
    if !matches!(kind, DEST_UNREACH | SOURCE_QUENCH | TIME_EXCEEDED) {
        return Err(Verdict::PassVipNoService);
    }
    let inner = l4_off + ICMP_HLEN;
    // The quoted header's five words: version and IHL (byte 0), fragment field (bytes 6-7),
    // protocol (byte 9), source, destination.
    let Some(ip) = pkt.load_u32s::<{ IPV4_MIN_HLEN / 4 }>(inner) else { return Err(Verdict::PassIcmpUnknown) };
    let (ver_ihl, frag, proto, src, dst) = (ip[0] as u8, ((ip[1] >> 16) as u16).swap_bytes(), (ip[2] >> 8) as u8, ip[3], ip[4]);
    let ihl = ((ver_ihl & 0x0f) as usize) << 2;
    // A quoted later fragment has no ports (IPVS would read payload as ports and miss).
    if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN || frag & 0x1fff != 0 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return Err(Verdict::PassIcmpUnknown);
    }
    // Errors quote at least 8 bytes of L4: the ports are all that is read.
    let Some(ports) = pkt.load_u32(inner + ihl) else { return Err(Verdict::PassIcmpUnknown) };
    let (sport, dport) = ((ports as u16).swap_bytes(), ((ports >> 16) as u16).swap_bytes());
    Ok(ConnKey::v4(dst, src, dport, sport, proto))
}

/// The connection an ICMPv6 error is about (types below 128: destination unreachable,
/// packet too big, time exceeded, parameter problem, as `ip_vs_in_icmp_v6()` takes them),
/// as [`icmp4_error_key`]. The quoted packet's fixed header must be followed by TCP or UDP:
/// a reply with extension headers is passed as unknown.
#[inline(always)]
fn icmp6_error_key<P: Packet + ?Sized>(pkt: &P, chain: &Ipv6Chain) -> Result<ConnKey, Verdict> {
    let off = chain.l4_offset();
    let Some(kind) = pkt.with_header::<ICMP_HLEN, _>(off, |h| h[0]) else { return Err(Verdict::PassVipNoService) };
    // ICMPV6_INFOMSG_MASK: echo, neighbour discovery, MLD... are not errors.
    if kind & 0x80 != 0 {
        return Err(Verdict::PassVipNoService);
    }
    // IPVS, after the type: "ICMP errors can't be fragmented" — it drops one behind a
    // fragment header.
    if chain.had_fragment_header != 0 {
        return Err(Verdict::DropFragment);
    }
    let inner = off + ICMP_HLEN;
    // The quoted fixed header and the ports after it, as words: Next Header is byte 6.
    let Some(ip) = pkt.load_u32s::<{ IPV6_HLEN / 4 + 1 }>(inner) else { return Err(Verdict::PassIcmpUnknown) };
    let proto = (ip[1] >> 16) as u8;
    let (src, dst) = ([ip[2], ip[3], ip[4], ip[5]], [ip[6], ip[7], ip[8], ip[9]]);
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP || v4_mapped_words(&src) || v4_mapped_words(&dst) {
        return Err(Verdict::PassIcmpUnknown);
    }
    let ports = ip[10];
    let (sport, dport) = ((ports as u16).swap_bytes(), ((ports >> 16) as u16).swap_bytes());
    Ok(ConnKey::v6(&dst, &src, dport, sport, proto))
}

/// Sends an ICMP error about connection `key` to its real server, by the MAC rewrite its
/// packets get (IPVS: `ip_vs_icmp_xmit()` → the connection's `dr_xmit`). The connection is
/// looked up in the connection table, then (TCP) the half-open table, as IPVS's one table
/// holds both. Its state, timer and counts stay as they are: the error is not the client's.
#[inline(always)]
fn icmp_forward<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome, key: ConnKey) -> Verdict {
    out.key = key;
    out.vip_bound = true;
    let now = t.now();
    let mut found = match t.conn(&out.key) {
        Some(c) if !c.expired(now) => Some((c.backend, c.service)),
        _ => None,
    };
    if found.is_none() && out.key.proto == IPPROTO_TCP {
        let scan = halfopen::scan(&out.key, now, |slot| t.half_open(slot));
        if scan.held != halfopen::NO_SLOT
            && let Some(e) = t.half_open(scan.held)
        {
            found = Some((e.conn.backend, e.conn.service));
        }
    }
    let Some((slot, service)) = found else { return Verdict::PassIcmpUnknown };
    out.service = Some(service);
    let bytes = pkt.len() as u64;
    forward(pkt, t, slot, bytes, Verdict::TxIcmpForwarded, out)
}

/// The keys a packet's addresses go into, built where they are needed: for IPv4 from the
/// two words the parser holds in registers, which keeps the IPv4 program's stack and
/// instructions as they were before IPv6; for IPv6 from the connection key's words, the
/// one copy of the addresses the stack has room for (a 16-byte address copied as bytes
/// takes 16 spilled registers on BPF).
trait Addresses {
    fn service_key(&self, key: &ConnKey, port: u16) -> ServiceKey;
    fn vip_key(&self, key: &ConnKey) -> VipKey;
    /// [`Service::template_key`] of the packet.
    fn template_key(&self, svc: &Service, key: &ConnKey) -> ConnKey;
    /// [`Tables::schedule`] for the packet.
    fn schedule<T: Tables>(&self, t: &T, id: u32, svc: &Service, key: &ConnKey) -> Option<u32>;
}

impl Addresses for crate::packet::Ipv4Info {
    #[inline(always)]
    fn service_key(&self, key: &ConnKey, port: u16) -> ServiceKey {
        ServiceKey::new(self.dst(), port, key.proto)
    }

    #[inline(always)]
    fn vip_key(&self, _: &ConnKey) -> VipKey {
        VipKey { addr: self.dst() }
    }

    #[inline(always)]
    fn template_key(&self, svc: &Service, key: &ConnKey) -> ConnKey {
        svc.template_key(&self.src(), &self.dst(), key.vport, key.proto)
    }

    #[inline(always)]
    fn schedule<T: Tables>(&self, t: &T, id: u32, svc: &Service, key: &ConnKey) -> Option<u32> {
        t.schedule(id, svc, &self.src(), key.cport, &self.dst())
    }
}

/// IPv6: the addresses are the key's.
struct FromKey;

impl Addresses for FromKey {
    #[inline(always)]
    fn service_key(&self, key: &ConnKey, port: u16) -> ServiceKey {
        let w = key.words();
        ServiceKey::from_words([w[2] as u32, (w[2] >> 32) as u32, w[3] as u32, (w[3] >> 32) as u32], port, key.proto)
    }

    #[inline(always)]
    fn vip_key(&self, key: &ConnKey) -> VipKey {
        let w = key.words();
        VipKey { addr: crate::addr::from_words([w[2], w[3]]) }
    }

    #[inline(always)]
    fn template_key(&self, svc: &Service, key: &ConnKey) -> ConnKey {
        svc.template_key_of(key)
    }

    #[inline(always)]
    fn schedule<T: Tables>(&self, t: &T, id: u32, svc: &Service, key: &ConnKey) -> Option<u32> {
        t.schedule(id, svc, &key.client, key.cport, &key.vip)
    }
}

/// The phases every TCP or UDP packet to a VIP goes through once its key is in `out.key`,
/// whatever its family: flow cache, connection table, half-open table, service and
/// scheduler (or persistence template), recording the connection, rewriting the MACs.
#[inline(always)]
fn process_flow<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, out: &mut Outcome, l4: L4Info, ip: &impl Addresses) -> Verdict {
    let proto = out.key.proto;
    let is_tcp = proto == IPPROTO_TCP;
    let syn = is_tcp && l4.tcp_flags & tcp::FLAG_SYN != 0;
    let key = &out.key;
    let now = t.now();
    let bytes = pkt.len() as u64;
    out.vip_bound = true;
    out.tcp_flags = l4.tcp_flags;

    // Most packets are ACKs or data of established connections: try this CPU's flow cache
    // before the connection table's hash lookup.
    let cacheable = flowcache::packet_cacheable(if is_tcp { Some(l4.tcp_flags) } else { None });
    let cache_index = flowcache::index(key);
    // Read only where the cache is used: each map a packet touches is one more page, and a
    // TLB miss when traffic spreads over many flows.
    let generation = if cacheable { t.conn_generation() } else { 0 };
    let cached = if cacheable { t.with_flow_cache(cache_index, |e| e.lookup(key, now, generation)).flatten() } else { None };

    let lookup = match cached {
        Some(slot) => Lookup::Cached(slot),
        None => t.with_conn(key, |entry| match entry {
            None => Lookup::Miss,
            Some(c) => {
                // A SYN also starts afresh when its entry's server went away (health check
                // failed, or removed by a reload): it is a new connection (or a retry of one
                // that server refused), and the server takes no new connections.
                let server_gone = syn && !matches!(t.backend(c.backend), Some(b) if b.accepts_new());
                if c.expired(now) || (syn && tcp::syn_starts_new_connection(c.state)) || server_gone {
                    release(t, c);
                    Lookup::Dead
                } else {
                    if is_tcp && tcp_transition(t, c, l4.tcp_flags) {
                        out.conn_changed = true;
                        out.state = c.state;
                        out.service = Some(c.service);
                    }
                    // A packet reached this director: the connection is now its own to
                    // announce, wherever it was made.
                    c.flags &= !CONN_F_SYNCED;
                    out.conn_flags = c.flags;
                    c.last_seen = now;
                    let keep = cacheable && flowcache::conn_cacheable(c, is_tcp);
                    t.with_flow_cache(cache_index, |e| if keep { e.fill(key, c, now, generation) } else { e.clear() });
                    Lookup::Hit(c.backend)
                }
            }
        }),
    };
    let (slot, stat) = match lookup {
        Lookup::Hit(slot) | Lookup::Cached(slot) => (slot, Verdict::TxForwarded),
        Lookup::Dead | Lookup::Miss => {
            if let Lookup::Dead = lookup {
                t.remove_conn(key);
                // Other CPUs may cache the connection this one replaces.
                t.bump_conn_generation();
            }
            let (mut half_open_slot, mut half_open_order) = (halfopen::NO_SLOT, 0);
            if is_tcp {
                let scan = halfopen::scan(key, now, |slot| t.half_open(slot));
                (half_open_slot, half_open_order) = (scan.free, scan.order);
                if scan.held != halfopen::NO_SLOT {
                    match half_open_step(t, scan.held, l4.tcp_flags, now, cache_index, out) {
                        HalfOpenStep::Forward(slot) => return forward(pkt, t, slot, bytes, Verdict::TxForwarded, out),
                        HalfOpenStep::Drop(v) => return v,
                        // Released: a new connection of this key takes its way.
                        HalfOpenStep::NotHeld => half_open_slot = scan.held,
                    }
                }
            }
            let key = &out.key;
            let id = match t.service_id(&ip.service_key(&out.key, l4.dport)) {
                Some(id) => id,
                None => match t.service_id(&ip.service_key(&out.key, 0)) {
                    Some(id) => id,
                    None => return if t.vip(&ip.vip_key(&out.key)).is_some() { Verdict::PassVipNoService } else { Verdict::PassNotVip },
                },
            };
            out.service = Some(id);
            let Some(svc) = t.service(id) else { return Verdict::DropNoRealServer };
            if is_tcp {
                let rst = l4.tcp_flags & tcp::FLAG_RST != 0;
                // tcp_conn_schedule(): a SYN, or with sloppy_tcp anything but a RST.
                if !(syn || (svc.flags & SVC_F_SLOPPY_TCP != 0 && !rst)) {
                    return Verdict::DropNoConnection;
                }
            }
            let slot = if svc.flags & SVC_F_PERSISTENT != 0 {
                let pkey = ip.template_key(&svc, &out.key);
                let pinned = match t.persist(&pkey) {
                    Some(p) if now.saturating_sub(p.last_used) <= svc.ticks(svc.persist_timeout_s) as u64 => {
                        match t.backend(p.backend) {
                            Some(b) if b.accepts_persistent() => Some(p.backend),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let slot = match pinned {
                    Some(s) => s,
                    None => match ip.schedule(t, id, &svc, &out.key) {
                        Some(s) => s,
                        None => return Verdict::DropNoRealServer,
                    },
                };
                t.insert_persist(&pkey, &Persist { last_used: now, backend: slot, _pad: 0 });
                slot
            } else {
                match ip.schedule(t, id, &svc, &out.key) {
                    Some(s) => s,
                    None => return Verdict::DropNoRealServer,
                }
            };
            if !is_tcp && svc.flags & SVC_F_ONE_PACKET != 0 {
                // One-packet scheduling: IPVS makes the connection, sends the datagram and
                // frees it at once, so the counts end where they were and nothing is synced.
                out.new_conn = true;
                return forward(pkt, t, slot, bytes, Verdict::TxScheduled, out);
            }
            // ip_vs_conn_new(): a new connection starts inactive, then takes this packet's
            // state transition.
            let mut c = Conn {
                last_seen: now,
                backend: slot,
                service: id,
                timeout: svc.ticks(svc.timeouts.udp),
                state: tcp::NONE,
                flags: CONN_F_INACTIVE,
                order: 0,
            };
            t.adjust_conn_counts(slot, 0, 1);
            if is_tcp {
                c.timeout = svc.ticks(svc.timeouts.tcp(tcp::NONE));
                tcp_transition(t, &mut c, l4.tcp_flags);
            }
            out.new_conn = true;
            out.state = c.state;
            out.conn_flags = c.flags;
            if c.state == tcp::SYN_RECV {
                // Half-open until the handshake completes. A live entry in the way is the
                // oldest of a full bucket, another connection's; its count goes, as does an
                // expired one's that the last sweep still counted.
                if let Some(old) = t.half_open(half_open_slot) {
                    if old.occupied() && old.counted(t.swept_at()) {
                        release(t, &old.conn);
                    }
                    if old.live(now) {
                        t.count_event(Event::HalfOpenDisplaced);
                    }
                }
                c.order = half_open_order;
                t.set_half_open(half_open_slot, &HalfOpen { key: *key, conn: c });
            } else {
                if !t.insert_conn(key, &c) {
                    t.adjust_conn_counts(slot, 0, -1);
                    return Verdict::DropConnTableFull;
                }
                // An entry the LRU evicted leaves no trace but a cache entry of this key may
                // remain here: it must not outlive the connection that replaces it.
                t.with_flow_cache(cache_index, |e| e.clear());
                out.conn_changed = true;
                out.entered_table = true;
            }
            (slot, Verdict::TxScheduled)
        }
    };
    forward(pkt, t, slot, bytes, stat, out)
}

/// Rewrites the MACs toward backend `slot` and accounts the packet; `stat` is the verdict
/// the decision came to.
#[inline(always)]
fn forward<P: Packet + ?Sized, T: Tables>(pkt: &mut P, t: &T, slot: u32, bytes: u64, stat: Verdict, out: &mut Outcome) -> Verdict {
    out.slot = Some(slot);
    let Some((flags, l2)) = t.backend_l2(slot) else { return Verdict::DropBackendMissing };
    if flags & BACKEND_F_PRESENT == 0 {
        return Verdict::DropBackendMissing;
    }
    t.account(slot, bytes, stat == Verdict::TxScheduled);
    // DR: only layer 2 changes; IP header and checksums stay as the client sent them.
    if !(pkt.store_u32(0, l2[0]) && pkt.store_u32(4, l2[1]) && pkt.store_u32(8, l2[2])) {
        return Verdict::PassMalformed;
    }
    stat
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::v4_mapped;
    use crate::host::HostTables;
    use proptest::prelude::*;
    use std::vec::Vec;

    const VIP: [u8; 4] = [198, 18, 0, 100];
    const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
    const DIR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x02];

    /// One VIP with a TCP port-80 service over one backend.
    fn one_service() -> HostTables {
        let mut t = HostTables::default();
        t.vips.insert(v4_mapped(VIP), Vip { flags: 0 });
        t.service_ids.insert(ServiceKey::new(v4_mapped(VIP), 80, IPPROTO_TCP), 0);
        t.services.insert(0, Service { members_offset: 0, member_count: 1, ..Default::default() });
        t.backends.insert(
            0,
            Backend::new(v4_mapped([198, 18, 0, 11]), RS_MAC, DIR_MAC, 1, BACKEND_F_PRESENT),
        );
        t
    }

    fn syn_to_vip(ihl_words: u8) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xaa; 12]);
        f.extend_from_slice(&[0x08, 0x00]);
        let ihl = ihl_words as usize * 4;
        let mut ip = std::vec![0u8; ihl];
        ip[0] = 0x40 | ihl_words;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&[198, 18, 0, 10]);
        ip[16..20].copy_from_slice(&VIP);
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x02;
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn every_ihl_is_parsed_past_its_options() {
        for words in 5..=15 {
            let t = one_service();
            let mut f = syn_to_vip(words);
            assert_eq!(process(f.as_mut_slice(), &t), Verdict::TxScheduled, "IHL {words}");
            assert_eq!(&f[..6], &RS_MAC);
            assert_eq!(&f[6..12], &DIR_MAC);
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and a frame that is not forwarded is never modified.
        #[test]
        fn arbitrary_frames_are_safe(mut frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = one_service();
            let original = frame.clone();
            let stat = process(frame.as_mut_slice(), &t);
            if stat.xdp_action() == crate::verdict::XDP_TX {
                prop_assert_eq!(&frame[12..], &original[12..]);
            } else {
                prop_assert_eq!(frame, original);
            }
        }

        /// Cutting a frame anywhere inside its headers never forwards it, and a cut inside
        /// the TCP header of a VIP-bound frame is dropped as truncated.
        #[test]
        fn truncated_vip_frames_are_never_forwarded(ihl in 5u8..=15, cut in 0usize..100) {
            let t = one_service();
            let full = syn_to_vip(ihl);
            let l4 = 14 + ihl as usize * 4;
            let cut = cut % (l4 + 20);
            let mut frame = full[..cut].to_vec();
            let stat = process(frame.as_mut_slice(), &t);
            prop_assert_ne!(stat.xdp_action(), crate::verdict::XDP_TX);
            if cut >= 34 && cut < l4 + 20 {
                prop_assert_eq!(stat, Verdict::DropTruncatedL4);
            }
        }
    }
}
