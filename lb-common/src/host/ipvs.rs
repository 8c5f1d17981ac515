//! A plain model of IPVS's schedulers, written the way the kernel sources are (a list
//! walked with "least so far" pointers), against which drlb's schedulers are tested: by
//! property tests on random inputs, and in the lab against real connections.

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
