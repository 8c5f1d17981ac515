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
    let hash = u32::from_be_bytes(client_v4).wrapping_mul(GOLDEN_RATIO_32) >> (32 - TAB_BITS);
    let d = buckets[hash as usize];
    (!list[d].overloaded && list[d].weight > 0).then_some(d)
}

/// Maglev's lookup table as the paper gives it (Eisenbud et al., NSDI 2016, pseudocode 1),
/// for servers with `(offset, skip, turns)` — turns per round being weight / gcd, as IPVS
/// mh does. Written apart from drlb's builder to check it. Entries are server indices.
pub fn maglev_populate(servers: &[(u64, u64, u32)], size: usize) -> Vec<usize> {
    let mut entry: Vec<Option<usize>> = vec![None; size];
    let mut next = vec![0u64; servers.len()];
    let mut n = 0;
    if servers.is_empty() {
        return Vec::new();
    }
    loop {
        for (i, &(offset, skip, turns)) in servers.iter().enumerate() {
            for _ in 0..turns {
                let mut c = (offset + next[i] * skip) % size as u64;
                while entry[c as usize].is_some() {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % size as u64;
                }
                entry[c as usize] = Some(i);
                next[i] += 1;
                n += 1;
                if n == size {
                    return entry.into_iter().map(|e| e.expect("filled")).collect();
                }
            }
        }
    }
}
