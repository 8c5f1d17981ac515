//! IPVS's schedulers, transcribed from `net/netfilter/ipvs/ip_vs_{wlc,lc,sed,nq,rr,wrr,sh}.c`.
//!
//! Everything works in IPVS *list order*: IPVS inserts each new real server at the head of
//! the service's list, so the list is the reverse of the order of addition, and keepalived
//! adds real servers in configuration order. List index 0 is therefore the *last*
//! configured real server; ties and round-robin starts fall to it first.
//!
//! The per-packet schedulers (wlc, lc, sed, nq, rr) run in the XDP program with loops
//! bounded by [`crate::maps::MAX_BACKENDS_PER_SERVICE`]. wrr and sh depend on weights only,
//! so userspace precomputes their choices into tables (the wrr sequence from
//! [`wrr_schedule`], [`sh_table`], and mh's Maglev table) that the program indexes.

use crate::maps::MAX_BACKENDS_PER_SERVICE;

/// What a scheduler needs to know about one real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestInfo {
    pub weight: u32,
    pub active: u32,
    pub inactive: u32,
    /// Can take traffic at all (MAC known). IPVS's analogue is "not overloaded".
    pub available: bool,
}

/// A service's real servers, by IPVS list index.
pub trait Dests {
    fn len(&self) -> u32;
    fn get(&self, list_index: u32) -> DestInfo;
}

/// "No destination" in tables of list indices.
pub const NO_DEST: u16 = u16::MAX;
/// `rr` position meaning "the list head" (nothing chosen yet).
pub const RR_HEAD: u32 = u32::MAX;

#[inline(always)]
fn bounded_len<D: Dests + ?Sized>(d: &D) -> u32 {
    let n = d.len();
    if n > MAX_BACKENDS_PER_SERVICE { MAX_BACKENDS_PER_SERVICE } else { n }
}

/// `ip_vs_dest_conn_overhead()`: active connections weigh 256 times an inactive one.
#[inline(always)]
pub fn conn_overhead(d: &DestInfo) -> u32 {
    (d.active << 8).wrapping_add(d.inactive)
}

// Verifier note: every loop below counts a constant up to MAX_BACKENDS_PER_SERVICE and
// leaves as soon as the counter reaches the service's size, and no branch inside a loop
// compares against that size. A branch that compared the (unknown) size with a loop value
// and continued on both sides would split the size's range on every iteration and
// multiply the states the verifier must explore past its limit.

/// wlc and sed share their shape: the first usable server, then anyone strictly less
/// loaded relative to weight (compared by cross-multiplication).
#[inline(always)]
fn weighted_least<D: Dests + ?Sized>(d: &D, overhead: impl Fn(&DestInfo) -> u32) -> Option<u32> {
    let n = bounded_len(d);
    let mut found = false;
    let mut least = 0;
    let mut loh: i64 = 0;
    let mut lw: i64 = 0;
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= n {
            break;
        }
        let dest = d.get(i);
        if !found {
            if dest.available && dest.weight > 0 {
                found = true;
                least = i;
                loh = overhead(&dest) as i32 as i64;
                lw = dest.weight as i64;
            }
        } else if dest.available {
            let doh = overhead(&dest) as i32 as i64;
            if loh * dest.weight as i64 > doh * lw {
                least = i;
                loh = doh;
                lw = dest.weight as i64;
            }
        }
        i += 1;
    }
    if found { Some(least) } else { None }
}

/// Weighted least-connection (`ip_vs_wlc.c`), IPVS's and keepalived's default.
#[inline(always)]
pub fn wlc<D: Dests + ?Sized>(d: &D) -> Option<u32> {
    weighted_least(d, conn_overhead)
}

/// Shortest expected delay (`ip_vs_sed.c`): overhead = active + 1.
#[inline(always)]
pub fn sed<D: Dests + ?Sized>(d: &D) -> Option<u32> {
    weighted_least(d, |x| x.active.wrapping_add(1))
}

/// Least-connection (`ip_vs_lc.c`): weights only exclude (0), never scale.
#[inline(always)]
pub fn lc<D: Dests + ?Sized>(d: &D) -> Option<u32> {
    let n = bounded_len(d);
    let mut found = false;
    let mut least = 0;
    let mut loh = 0u32;
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= n {
            break;
        }
        let dest = d.get(i);
        if dest.available && dest.weight > 0 {
            let doh = conn_overhead(&dest);
            if !found || doh < loh {
                found = true;
                least = i;
                loh = doh;
            }
        }
        i += 1;
    }
    if found { Some(least) } else { None }
}

/// Never queue (`ip_vs_nq.c`): an idle server wins at once, else sed's rule.
#[inline(always)]
pub fn nq<D: Dests + ?Sized>(d: &D) -> Option<u32> {
    let n = bounded_len(d);
    let mut found = false;
    let mut least = 0;
    let mut loh = 0u32;
    let mut lw = 0u32;
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= n {
            break;
        }
        let dest = d.get(i);
        if dest.available && dest.weight > 0 {
            let doh = dest.active.wrapping_add(1);
            if dest.active == 0 {
                return Some(i);
            }
            // IPVS multiplies in unsigned int: keep its wrap-around.
            if !found || loh.wrapping_mul(dest.weight) > doh.wrapping_mul(lw) {
                found = true;
                least = i;
                loh = doh;
                lw = dest.weight;
            }
        }
        i += 1;
    }
    if found { Some(least) } else { None }
}

/// Round-robin (`ip_vs_rr.c`): the next usable server after `*pos`, wrapping round so
/// that the previous choice is checked last. Updates `*pos`.
#[inline(always)]
pub fn rr<D: Dests + ?Sized>(d: &D, pos: &mut u32) -> Option<u32> {
    let n = bounded_len(d);
    // From the head IPVS makes one pass over the list; from a server, the servers after it
    // and then, wrapping, those up to and including it.
    let start = if *pos == RR_HEAD || *pos >= n { 0 } else { *pos + 1 };
    let mut k = 0;
    while k < MAX_BACKENDS_PER_SERVICE {
        let i = start + k;
        if i >= n {
            break;
        }
        let dest = d.get(i);
        if dest.available && dest.weight > 0 {
            *pos = i;
            return Some(i);
        }
        k += 1;
    }
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= start {
            break;
        }
        let dest = d.get(i);
        if dest.available && dest.weight > 0 {
            *pos = i;
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Weighted failover (`ip_vs_fo.c`): the usable server of highest weight; a tie goes to the
/// first in list order (the comparison is strict). Connection counts play no part.
#[inline(always)]
pub fn fo<D: Dests + ?Sized>(d: &D) -> Option<u32> {
    highest_weight(d, |x| x.available && x.weight > 0)
}

/// The first server of the highest weight among those `eligible` (fo's loop).
#[inline(always)]
fn highest_weight<D: Dests + ?Sized>(d: &D, eligible: impl Fn(&DestInfo) -> bool) -> Option<u32> {
    let n = bounded_len(d);
    // Plain scalars rather than an Option: what the verifier tracks best through a loop.
    let mut found = false;
    let mut best = 0u32;
    let mut hw = 0u32;
    let mut i = 0;
    while i < MAX_BACKENDS_PER_SERVICE {
        if i >= n {
            break;
        }
        let dest = d.get(i);
        if eligible(&dest) && (!found || dest.weight > hw) {
            found = true;
            best = i;
            hw = dest.weight;
        }
        i += 1;
    }
    if found { Some(best) } else { None }
}

/// twos's draw table, which the controller writes for the dataplane (`ip_vs_twos.c`,
/// kernel 5.12+): which servers a draw may land on depends on weights and availability
/// alone. Entry `3k` is the list index of the k-th server of non-zero weight (list order),
/// entries `3k+1`, `3k+2` the high and low halves of the sum of the weights up to and
/// including it. A draw `r` in `0..=total` lands on the first server whose sum reaches `r`
/// (the kernel subtracts weights from `r` until it is 0 or below).
pub fn twos_table<D: Dests + ?Sized>(d: &D) -> ([u16; 3 * MAX_BACKENDS_PER_SERVICE as usize], usize) {
    let mut t = [NO_DEST; 3 * MAX_BACKENDS_PER_SERVICE as usize];
    let (mut n, mut sum) = (0usize, 0u32);
    let mut i = 0;
    while i < bounded_len(d) {
        let dest = d.get(i);
        if dest.available && dest.weight > 0 {
            sum = sum.wrapping_add(dest.weight);
            t[3 * n] = i as u16;
            t[3 * n + 1] = (sum >> 16) as u16;
            t[3 * n + 2] = sum as u16;
            n += 1;
        }
        i += 1;
    }
    (t, 3 * n)
}

/// `prandom_u32_max(total + 1)` of kernel 6.1: a draw in `0..=total` from a random `r`.
#[inline(always)]
pub fn twos_draw(r: u32, total: u32) -> u32 {
    ((r as u64 * (total as u64 + 1)) >> 32) as u32
}

/// twos's final comparison: the second draw wins only if it is less loaded relative to
/// its weight (`weight2 * overhead1 > weight1 * overhead2`, in IPVS's `int`).
#[inline(always)]
pub fn twos_prefers_second(d1: &DestInfo, d2: &DestInfo) -> bool {
    let (weight1, weight2) = (d1.weight as i32, d2.weight as i32);
    let (overhead1, overhead2) = (conn_overhead(d1) as i32, conn_overhead(d2) as i32);
    weight2.wrapping_mul(overhead1) > weight1.wrapping_mul(overhead2)
}

/// dh's bucket for an IPv4 destination (`ip_vs_dh_hashkey()`).
#[inline(always)]
pub fn dh_bucket(dest_hash: u32) -> u32 {
    dest_hash.wrapping_mul(2_654_435_761) & (DH_TABLE_SIZE as u32 - 1)
}

/// `IP_VS_DH_TAB_SIZE` (`CONFIG_IP_VS_DH_TAB_BITS` 8).
pub const DH_TABLE_SIZE: usize = 256;

/// `ip_vs_dh_reassign()`: bucket i gets the list's (i mod n)-th server; weights play no part.
pub fn dh_table(servers: usize) -> [u16; DH_TABLE_SIZE] {
    let mut t = [NO_DEST; DH_TABLE_SIZE];
    if servers == 0 {
        return t;
    }
    for (i, bucket) in t.iter_mut().enumerate() {
        *bucket = (i % servers) as u16;
    }
    t
}

/// Source hashing's bucket for an IPv4 client (`ip_vs_sh_hashkey()` without the port):
/// `hash_32(ntohl(addr), 8)`.
#[inline(always)]
pub fn sh_bucket(client_v4: [u8; 4]) -> u32 {
    sh_hashkey(u32::from_be_bytes(client_v4), 0, 0)
}

/// `ip_vs_sh_hashkey()`: `(offset + hash_32(port + addr, 8)) % 256`, the port (host order)
/// only with sh-port, the offset only when falling back.
#[inline(always)]
pub fn sh_hashkey(addr_v4: u32, port: u16, offset: u32) -> u32 {
    offset.wrapping_add((port as u32).wrapping_add(addr_v4).wrapping_mul(0x61C8_8647) >> (32 - SH_TABLE_BITS)) % SH_TABLE_SIZE as u32
}

pub const SH_TABLE_BITS: u32 = 8;
/// `IP_VS_SH_TAB_SIZE`.
pub const SH_TABLE_SIZE: usize = 1 << SH_TABLE_BITS;

/// `ip_vs_sh_reassign()`: buckets filled in list order, each server taking `weight`
/// consecutive buckets (at least one), cycling until all 256 are assigned.
pub fn sh_table(weights_in_list_order: &[u32]) -> [u16; SH_TABLE_SIZE] {
    let mut t = [NO_DEST; SH_TABLE_SIZE];
    if weights_in_list_order.is_empty() {
        return t;
    }
    let (mut p, mut d_count) = (0usize, 0u32);
    for bucket in t.iter_mut() {
        *bucket = p as u16;
        d_count += 1;
        if d_count >= weights_in_list_order[p] {
            p = (p + 1) % weights_in_list_order.len();
            d_count = 0;
        }
    }
    t
}

/// IPVS wrr's state (`struct ip_vs_wrr_mark`): current list index (None = head), current
/// weight, maximum weight, decreasing interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WrrMark {
    pub cl: Option<u32>,
    pub cw: i64,
    pub mw: i64,
    pub di: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn wrr_gcd_max(weights: &[u32]) -> (i64, i64) {
    let mut g = 0i64;
    let mut m = 0i64;
    for &w in weights {
        let w = w as i64;
        if w > 0 {
            g = if g > 0 { gcd(w, g) } else { w };
        }
        m = m.max(w);
    }
    (if g > 0 { g } else { 1 }, m)
}

/// The mark after the service was created empty and its real servers were added one by
/// one in configuration order (`ip_vs_wrr_init_svc()` then `ip_vs_wrr_dest_changed()` per
/// addition), which is what keepalived does.
pub fn wrr_mark_after_adds(weights_in_config_order: &[u32]) -> WrrMark {
    let mut mark = WrrMark { cl: None, cw: 0, mw: 0, di: 1 };
    for k in 1..=weights_in_config_order.len() {
        let (di, max) = wrr_gcd_max(&weights_in_config_order[..k]);
        mark.cl = None;
        mark.di = di;
        mark.mw = max - (di - 1);
        if mark.cw > mark.mw || mark.cw == 0 {
            mark.cw = mark.mw;
        } else if mark.di > 1 {
            mark.cw = (mark.cw / mark.di) * mark.di + 1;
        }
    }
    mark
}

/// One `ip_vs_wrr_schedule()` call over `dests` (list order). Userspace only: its loops
/// are bounded by the weights, not by the verifier.
pub fn wrr_schedule<D: Dests + ?Sized>(d: &D, mark: &mut WrrMark) -> Option<u32> {
    let n = d.len();
    if mark.mw == 0 {
        return None;
    }
    let last = mark.cl;
    let mut stop: Option<Option<u32>> = None;
    let (mut last_pass, mut restarted) = (false, false);
    let mut dest = mark.cl;
    loop {
        // list_for_each_entry_continue: from the element after `dest` to the end.
        let mut i = match dest {
            None => 0,
            Some(x) => x + 1,
        };
        while i < n {
            let info = d.get(i);
            if info.available && info.weight as i64 >= mark.cw {
                mark.cl = Some(i);
                return Some(i);
            }
            if stop == Some(Some(i)) {
                mark.cl = Some(i);
                return None;
            }
            i += 1;
        }
        dest = None;
        mark.cw -= mark.di;
        if mark.cw <= 0 {
            mark.cw = mark.mw;
            if last_pass || last.is_none() {
                mark.cl = None;
                return None;
            }
            restarted = true;
        }
        last_pass = mark.cw <= mark.di;
        if last_pass && restarted && last.is_some() {
            stop = Some(last);
        }
    }
}
