//! A plain model of IPVS's schedulers, written the way the kernel sources are (a list
//! walked with "least so far" pointers), against which drlb's schedulers are tested: by
//! property tests on random inputs, and in the lab against real connections.

use std::vec;
use std::vec::Vec;

/// A real server as IPVS holds it (`struct ip_vs_dest`), in list order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub weight: i32,
    pub active: i32,
    pub inactive: i32,
    pub overloaded: bool,
}

fn overhead(d: &Dest) -> i32 {
    (d.active << 8) + d.inactive
}

/// `ip_vs_wlc_schedule()` (and, with `oh` = active + 1, `ip_vs_sed_schedule()`).
pub fn wlc_with(list: &[Dest], oh: fn(&Dest) -> i32) -> Option<usize> {
    let mut it = list.iter().enumerate();
    let (mut least, mut loh) = loop {
        let (i, d) = it.next()?;
        if !d.overloaded && d.weight > 0 {
            break (i, oh(d));
        }
    };
    for (i, d) in it {
        if d.overloaded {
            continue;
        }
        let doh = oh(d);
        if (loh as i64) * (d.weight as i64) > (doh as i64) * (list[least].weight as i64) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

pub fn wlc(list: &[Dest]) -> Option<usize> {
    wlc_with(list, overhead)
}

pub fn sed(list: &[Dest]) -> Option<usize> {
    wlc_with(list, |d| d.active + 1)
}

/// `ip_vs_lc_schedule()`.
pub fn lc(list: &[Dest]) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut loh = 0u32;
    for (i, d) in list.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = overhead(d) as u32;
        if least.is_none() || doh < loh {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// `ip_vs_nq_schedule()`.
pub fn nq(list: &[Dest]) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut loh = 0u32;
    for (i, d) in list.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = d.active as u32 + 1;
        if d.active == 0 {
            return Some(i);
        }
        if least.is_none() || loh.wrapping_mul(d.weight as u32) > doh.wrapping_mul(list[least.unwrap()].weight as u32) {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// `ip_vs_rr_schedule()`; `sched_data` points into the list, or at the head (None).
pub fn rr(list: &[Dest], sched_data: &mut Option<usize>) -> Option<usize> {
    let n = list.len();
    let order: Vec<usize> = match *sched_data {
        None => (0..n).collect(),
        Some(l) => (l + 1..n).chain(0..=l).collect(),
    };
    for i in order {
        let d = &list[i];
        if !d.overloaded && d.weight > 0 {
            *sched_data = Some(i);
            return Some(i);
        }
    }
    None
}

/// The servers in IPVS list order for weights given in configuration order (keepalived
/// adds real servers in configuration order; IPVS puts each new one at the head).
pub fn list_for(weights_in_config_order: &[u32]) -> Vec<Dest> {
    weights_in_config_order
        .iter()
        .rev()
        .map(|&w| Dest { weight: w as i32, active: 0, inactive: 0, overloaded: false })
        .collect()
}

/// Config index (0-based) of the server at list index `i` among `n` servers.
pub fn config_index(n: usize, list_index: usize) -> usize {
    n - 1 - list_index
}

/// IPVS wrr as the LVS documentation states the algorithm, over servers that are all
/// available: walk the list; each time the walk wraps to the head, lower the current weight
/// by the weights' gcd (back to the maximum below 1); take a server whose weight reaches the
/// current weight. The state after keepalived's one-by-one additions comes from
/// `ip_vs_wrr_dest_changed()` applied once per addition. Written apart from
/// `sched::wrr_schedule` (a transcription of the kernel's loop) to check it.
#[derive(Clone, Debug)]
pub struct Wrr {
    weights_in_list_order: Vec<i64>,
    /// List index of the last choice (None: the head).
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Wrr {
    pub fn after_adds(weights_in_config_order: &[u32]) -> Wrr {
        let mut cw = 0i64;
        let (mut mw, mut di) = (0, 1);
        for k in 1..=weights_in_config_order.len() {
            let added: Vec<i64> = weights_in_config_order[..k].iter().map(|&w| w as i64).collect();
            di = added.iter().copied().filter(|w| *w > 0).fold(0, gcd).max(1);
            mw = added.iter().copied().max().unwrap_or(0) - (di - 1);
            if cw > mw || cw == 0 {
                cw = mw;
            } else if di > 1 {
                cw = (cw / di) * di + 1;
            }
        }
        let weights_in_list_order = weights_in_config_order.iter().rev().map(|&w| w as i64).collect();
        Wrr { weights_in_list_order, cl: None, cw, mw, di }
    }

    /// The next choice, as a list index.
    pub fn next(&mut self) -> Option<usize> {
        let n = self.weights_in_list_order.len();
        if self.mw <= 0 || n == 0 {
            return None;
        }
        for _ in 0..n * (self.mw as usize / self.di as usize + 2) {
            let i = match self.cl {
                Some(c) if c + 1 < n => c + 1,
                Some(_) => {
                    self.cw -= self.di;
                    if self.cw <= 0 {
                        self.cw = self.mw;
                    }
                    0
                }
                None => 0,
            };
            self.cl = Some(i);
            if self.weights_in_list_order[i] >= self.cw && self.weights_in_list_order[i] > 0 {
                return Some(i);
            }
        }
        None
    }
}

/// `ip_vs_sh_reassign()` and `ip_vs_sh_get()` for an IPv4 client (no port hashing, no
/// fallback), written from the kernel's source: buckets handed out walking the list, each
/// server taking `weight` consecutive buckets; the client's bucket is `hash_32(addr, 8)`.
/// Returns the list index, or None when that server takes no connections.
pub fn sh(list: &[Dest], client_v4: [u8; 4]) -> Option<usize> {
    sh_with(list, client_v4, 0, false)
}

/// `ip_vs_sh_schedule()` with its flags: `port` is the client's source port with sh-port
/// (0 without), `fallback` is sh-fallback (`ip_vs_sh_get_fallback()`).
pub fn sh_with(list: &[Dest], client_v4: [u8; 4], port: u16, fallback: bool) -> Option<usize> {
    const TAB_BITS: u32 = 8;
    const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
    if list.is_empty() {
        return None;
    }
    let mut buckets = [0usize; 1 << TAB_BITS];
    let (mut p, mut d_count) = (0usize, 0i32);
    for b in buckets.iter_mut() {
        *b = p;
        d_count += 1;
        if d_count >= list[p].weight {
            p = (p + 1) % list.len();
            d_count = 0;
        }
    }
    const TAB_SIZE: u32 = 1 << TAB_BITS;
    // ip_vs_sh_hashkey(): (offset + hash_32(ntohs(port) + ntohl(addr), 8)) % size
    let hashkey = |offset: u32| {
        (offset + ((port as u32).wrapping_add(u32::from_be_bytes(client_v4)).wrapping_mul(GOLDEN_RATIO_32) >> (32 - TAB_BITS))) % TAB_SIZE
    };
    let is_unavailable = |d: usize| list[d].weight <= 0 || list[d].overloaded;
    let ihash = hashkey(0);
    let d = buckets[ihash as usize];
    if !is_unavailable(d) {
        return Some(d);
    }
    if !fallback {
        return None;
    }
    for offset in 0..TAB_SIZE {
        let roffset = (offset + ihash) % TAB_SIZE;
        let d = buckets[hashkey(roffset) as usize];
        if !is_unavailable(d) {
            return Some(d);
        }
    }
    None
}

/// ip_vs_mh.c's `ip_vs_mh_gcd_weight()`, `ip_vs_mh_shift_weight()`,
/// `ip_vs_mh_permutate()` and `ip_vs_mh_populate()`, transliterated loop for loop (kept
/// apart from drlb's builder to check it) over `(addr, port, last_weight)` in IPVS list
/// order; a table of `size` (a prime of `primes[]`). Entries are list indices.
pub fn mh_kernel_table(list: &[(u32, u16, u32)], size: usize) -> Vec<Option<usize>> {
    use crate::hash::{mh_hashkey, MH_KEY1, MH_KEY2};
    const PRIMES: [usize; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];
    let mut lookup: Vec<Option<usize>> = vec![None; size];
    // gcd of the last weights above 0.
    let mut g: i64 = 0;
    for &(_, _, w) in list {
        let w = w as i64;
        if w > 0 {
            g = if g > 0 { gcd(w, g) } else { w };
        }
    }
    if g < 1 || list.len() > size {
        return lookup;
    }
    // rshift: fls(max weight / gcd) - IP_VS_MH_TAB_BITS, at least 0.
    let tab_bits = (PRIMES.iter().position(|&p| p == size).expect("a prime of primes[]") as i64 + 8) / 2;
    let mw = list.iter().map(|d| d.2 as i64).max().unwrap_or(0) / g;
    let fls = 64 - mw.leading_zeros() as i64;
    let rshift = (fls - tab_bits).max(0);
    // dest_setup
    let m = size as u32;
    struct Setup {
        perm: u32,
        skip: u32,
        turns: i64,
    }
    let mut ds: Vec<Setup> = list
        .iter()
        .map(|&(addr, port, lw)| {
            let offset = mh_hashkey(MH_KEY1, addr, port, 0) % m;
            let skip = mh_hashkey(MH_KEY2, addr, port, 0) % (m - 1) + 1;
            let t = (lw as i64 / g) >> rshift;
            Setup { perm: offset, skip, turns: if t != 0 { t } else { (lw != 0) as i64 } }
        })
        .collect();
    let mut table = vec![false; size];
    let (mut n, mut dt_count) = (0usize, 0i64);
    // `p` walks the list; list.len() stands for the list head.
    let mut p = list.len();
    while n < size {
        if p == list.len() {
            p = 0;
        }
        while p != list.len() {
            if ds[p].turns < 1 {
                p += 1;
                continue;
            }
            let mut c = ds[p].perm;
            while table[c as usize] {
                ds[p].perm += ds[p].skip;
                if ds[p].perm >= m {
                    ds[p].perm -= m;
                }
                c = ds[p].perm;
            }
            table[c as usize] = true;
            lookup[c as usize] = Some(p);
            n += 1;
            if n == size {
                return lookup;
            }
            dt_count += 1;
            if dt_count >= ds[p].turns {
                dt_count = 0;
                p += 1;
            }
        }
    }
    lookup
}

/// `ip_vs_mh_get()`: the client's entry (no port hashing, no fallback).
pub fn mh_kernel_get(lookup: &[Option<usize>], client_v4: [u8; 4]) -> Option<usize> {
    let hash = crate::hash::mh_hashkey(crate::hash::MH_KEY1, u32::from_be_bytes(client_v4), 0, 0) % lookup.len() as u32;
    lookup[hash as usize]
}

/// `ip_vs_mh_schedule()` with its flags: `port` is the client's source port with mh-port
/// (0 without); `fallback` is mh-fallback (`ip_vs_mh_get_fallback()`, over the whole
/// table). `list` says which entries are unavailable (weight 0, overloaded).
pub fn mh_kernel_schedule(lookup: &[Option<usize>], list: &[Dest], client_v4: [u8; 4], port: u16, fallback: bool) -> Option<usize> {
    let size = lookup.len() as u32;
    let hashkey = |offset: u32| crate::hash::mh_hashkey(crate::hash::MH_KEY1, u32::from_be_bytes(client_v4), port, offset) % size;
    let is_unavailable = |d: usize| list[d].weight <= 0 || list[d].overloaded;
    let ihash = hashkey(0);
    let d = lookup[ihash as usize]?;
    if !is_unavailable(d) {
        return Some(d);
    }
    if !fallback {
        return None;
    }
    for offset in 0..size {
        let roffset = (offset + ihash) % size;
        let d = lookup[hashkey(roffset) as usize]?;
        if !is_unavailable(d) {
            return Some(d);
        }
    }
    None
}

/// `ip_vs_fo_schedule()`.
pub fn fo(list: &[Dest]) -> Option<usize> {
    let (mut hweight, mut hw) = (None, 0);
    for (i, d) in list.iter().enumerate() {
        if !d.overloaded && d.weight > hw {
            hweight = Some(i);
            hw = d.weight;
        }
    }
    hweight
}

/// `ip_vs_ovf_schedule()`.
pub fn ovf(list: &[Dest]) -> Option<usize> {
    let (mut h, mut hw): (Option<usize>, i32) = (None, 0);
    for (i, d) in list.iter().enumerate() {
        let w = d.weight;
        if d.overloaded || d.active > w || w == 0 {
            continue;
        }
        if h.is_none() || w > hw {
            h = Some(i);
            hw = w;
        }
    }
    h
}

/// `ip_vs_twos_schedule()` of kernel 6.1 with its two random numbers given.
pub fn twos(list: &[Dest], r1: u32, r2: u32) -> Option<usize> {
    let mut total_weight: i32 = 0;
    for d in list {
        if !d.overloaded && d.weight > 0 {
            total_weight += d.weight;
        }
    }
    if total_weight == 0 {
        return None;
    }
    total_weight += 1;
    // prandom_u32_max(ep_ro) = ((u64)get_random_u32() * ep_ro) >> 32
    let mut rweight1 = ((r1 as u64 * total_weight as u64) >> 32) as i32;
    let mut rweight2 = ((r2 as u64 * total_weight as u64) >> 32) as i32;
    let (mut choice1, mut choice2): (Option<usize>, Option<usize>) = (None, None);
    let (mut weight1, mut weight2, mut overhead1, mut overhead2) = (0i32, 0i32, 0i32, 0i32);
    for (i, d) in list.iter().enumerate() {
        if d.overloaded || d.weight <= 0 {
            continue;
        }
        let weight = d.weight;
        rweight1 -= weight;
        rweight2 -= weight;
        if choice1.is_none() && rweight1 <= 0 {
            weight1 = weight;
            overhead1 = overhead(d);
            choice1 = Some(i);
        }
        if choice2.is_none() && rweight2 <= 0 {
            weight2 = weight;
            overhead2 = overhead(d);
            choice2 = Some(i);
        }
        if choice1.is_some() && choice2.is_some() {
            break;
        }
    }
    if choice2.is_some() && weight2.wrapping_mul(overhead1) > weight1.wrapping_mul(overhead2) {
        choice1 = choice2;
    }
    choice1
}

/// `is_overloaded()` of ip_vs_lblc.c and ip_vs_lblcr.c.
fn locality_overloaded(list: &[Dest], d: usize) -> bool {
    list[d].active > list[d].weight && list.iter().any(|x| x.active * 2 < x.weight)
}

/// An `ip_vs_lblc_entry`: the server for one destination address, and its last use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LblcEntry {
    pub dest: usize,
    pub lastuse: u64,
}

/// `ip_vs_lblc_schedule()` for one destination address whose entry is `entry`, at time
/// `now`; an entry unused for `expiration` is gone (the collector's full check). `overloaded`
/// stands for "not AVAILABLE" here as in the other loops.
pub fn lblc(list: &[Dest], entry: &mut Option<LblcEntry>, now: u64, expiration: u64) -> Option<usize> {
    if entry.as_ref().is_some_and(|en| en.lastuse + expiration <= now) {
        *entry = None;
    }
    if let Some(en) = entry.as_mut() {
        en.lastuse = now;
        let dest = en.dest;
        if !list[dest].overloaded && list[dest].weight > 0 && !locality_overloaded(list, dest) {
            return Some(dest);
        }
    }
    let dest = wlc(list)?;
    // ip_vs_lblc_new()
    match entry {
        Some(en) if en.dest == dest => {}
        _ => *entry = Some(LblcEntry { dest, lastuse: now }),
    }
    Some(dest)
}

/// An `ip_vs_lblcr_entry`: its set of servers (the newest first: `list_add_rcu` adds at the
/// head), when the set last changed, and the entry's last use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LblcrEntry {
    pub set: Vec<usize>,
    pub lastmod: u64,
    pub lastuse: u64,
}

/// `ip_vs_lblcr_schedule()` for one destination address whose entry is `entry`.
pub fn lblcr(list: &[Dest], entry: &mut Option<LblcrEntry>, now: u64, expiration: u64) -> Option<usize> {
    if entry.as_ref().is_some_and(|en| en.lastuse + expiration <= now) {
        *entry = None;
    }
    let Some(en) = entry.as_mut() else {
        let dest = wlc(list)?;
        *entry = Some(LblcrEntry { set: vec![dest], lastmod: now, lastuse: now });
        return Some(dest);
    };
    en.lastuse = now;
    let dest = dest_set_min(list, &en.set);
    if en.set.len() > 1 && now > en.lastmod + expiration {
        if let Some(m) = dest_set_max(list, &en.set) {
            en.set.retain(|d| *d != m);
            en.lastmod = now;
        }
    }
    if let Some(d) = dest
        && !locality_overloaded(list, d)
    {
        return Some(d);
    }
    let dest = wlc(list)?;
    if !en.set.contains(&dest) {
        en.set.insert(0, dest);
        en.lastmod = now;
    }
    Some(dest)
}

/// `ip_vs_dest_set_min()`.
fn dest_set_min(list: &[Dest], set: &[usize]) -> Option<usize> {
    let mut it = set.iter().copied();
    let (mut least, mut loh) = loop {
        let d = it.next()?;
        if list[d].overloaded {
            continue;
        }
        if list[d].weight > 0 {
            break (d, overhead(&list[d]) as i64);
        }
    };
    for d in it {
        if list[d].overloaded {
            continue;
        }
        let doh = overhead(&list[d]) as i64;
        if loh * list[d].weight as i64 > doh * list[least].weight as i64 {
            least = d;
            loh = doh;
        }
    }
    Some(least)
}

/// `ip_vs_dest_set_max()`.
fn dest_set_max(list: &[Dest], set: &[usize]) -> Option<usize> {
    let mut it = set.iter().copied();
    let (mut most, mut moh) = loop {
        let d = it.next()?;
        if list[d].weight > 0 {
            break (d, overhead(&list[d]) as i64);
        }
    };
    for d in it {
        let doh = overhead(&list[d]) as i64;
        if moh * (list[d].weight as i64) < doh * list[most].weight as i64 && list[d].weight > 0 {
            most = d;
            moh = doh;
        }
    }
    Some(most)
}
