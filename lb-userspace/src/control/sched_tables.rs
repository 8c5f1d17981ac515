//! Scheduler tables the dataplane indexes instead of computing: wrr's choice sequence,
//! sh's 256 buckets, mh's Maglev lookup table. All depend on weights and availability
//! only, so they are rebuilt when those change.

use std::collections::HashMap;

use lb_common::addr::Addr16;
use lb_common::hash::flow_hash;
use lb_common::sched::{self, DestInfo, Dests, NO_DEST};

/// Longest wrr sequence (prefix + one cycle) drlb stores per service.
pub const MAX_WRR_SEQUENCE: usize = 65536;
/// IPVS mh's default table size (`CONFIG_IP_VS_MH_TAB_INDEX` 12): a prime.
pub const MH_TABLE_SIZE: usize = 65521;

/// A service's servers in IPVS list order, as the table builders see them.
pub struct ListDests(pub Vec<DestInfo>);

impl Dests for ListDests {
    fn len(&self) -> u32 {
        self.0.len() as u32
    }
    fn get(&self, i: u32) -> DestInfo {
        self.0[i as usize]
    }
}

/// wrr's choices from the state keepalived's additions leave, as list indices: the
/// sequence up to the first repeated scheduler state, and where the repetition starts.
/// Empty when no server is usable; `None` if longer than [`MAX_WRR_SEQUENCE`].
pub fn wrr_sequence(dests: &ListDests, weights_in_config_order: &[u32]) -> Option<(Vec<u16>, usize)> {
    let mut mark = sched::wrr_mark_after_adds(weights_in_config_order);
    let mut seen: HashMap<(Option<u32>, i64), usize> = HashMap::new();
    let mut out = Vec::new();
    loop {
        if let Some(&start) = seen.get(&(mark.cl, mark.cw)) {
            return Some((out, start));
        }
        if out.len() == MAX_WRR_SEQUENCE {
            return None;
        }
        seen.insert((mark.cl, mark.cw), out.len());
        match sched::wrr_schedule(dests, &mut mark) {
            Some(i) => out.push(i as u16),
            None => return Some((Vec::new(), 0)),
        }
    }
}

/// Length of the wrr table for these weights with every server usable (for `drlb check`).
pub fn wrr_cycle_len(weights_in_config_order: &[u32]) -> usize {
    let dests = ListDests(
        weights_in_config_order.iter().rev().map(|&w| DestInfo { weight: w, available: true, ..Default::default() }).collect(),
    );
    match wrr_sequence(&dests, weights_in_config_order) {
        Some((seq, _)) => seq.len(),
        None => usize::MAX,
    }
}

/// sh's bucket table (list indices).
pub fn sh_table(dests: &ListDests) -> Vec<u16> {
    let weights: Vec<u32> = dests.0.iter().map(|d| d.weight).collect();
    sched::sh_table(&weights).to_vec()
}

/// Maglev's lookup table (Eisenbud et al., NSDI 2016) over usable servers with weight > 0;
/// each server takes `weight / gcd` turns per round, as IPVS mh does. Servers are placed by
/// their own address, so adding or removing one moves only about its share of entries.
pub fn mh_table(dests: &ListDests, addrs: &[Addr16], size: usize) -> Vec<u16> {
    let mut table = vec![NO_DEST; size];
    let members: Vec<usize> = (0..dests.0.len()).filter(|&i| dests.0[i].available && dests.0[i].weight > 0).collect();
    if members.is_empty() {
        return table;
    }
    let g = members.iter().map(|&i| dests.0[i].weight).fold(0, gcd);
    let m = size as u64;
    let perm: Vec<(u64, u64)> = members
        .iter()
        .map(|&i| {
            let offset = flow_hash(&addrs[i], &[0; 16], 0, 0, 1) as u64 % m;
            let skip = flow_hash(&addrs[i], &[0; 16], 0, 0, 2) as u64 % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let turns: Vec<u32> = members.iter().map(|&i| dests.0[i].weight / g).collect();
    let mut next = vec![0u64; members.len()];
    let mut filled = 0;
    'fill: loop {
        for (k, &i) in members.iter().enumerate() {
            for _ in 0..turns[k] {
                let (offset, skip) = perm[k];
                let mut c = (offset + next[k] * skip) % m;
                while table[c as usize] != NO_DEST {
                    next[k] += 1;
                    c = (offset + next[k] * skip) % m;
                }
                table[c as usize] = i as u16;
                next[k] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
    }
    table
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::addr::v4_mapped;

    fn dests(weights: &[u32]) -> ListDests {
        ListDests(weights.iter().map(|&w| DestInfo { weight: w, available: true, ..Default::default() }).collect())
    }

    #[test]
    fn wrr_1_2_3_repeats_after_a_prefix() {
        // Config order 1:2:3 → list order 3,2,1.
        let (seq, start) = wrr_sequence(&dests(&[3, 2, 1]), &[1, 2, 3]).unwrap();
        let names: Vec<u16> = seq.iter().map(|i| 3 - i).collect();
        assert_eq!(&names[..6], &[3, 2, 1, 3, 3, 2]);
        // One cycle serves each server in proportion to its weight.
        let cycle = &seq[start..];
        let mut counts = [0; 3];
        for &i in cycle {
            counts[i as usize] += 1;
        }
        assert_eq!(counts, [3, 2, 1]);
    }

    /// The builder against Maglev's population as the paper writes it
    /// (`lb_common::host::ipvs::maglev_populate`), with weights.
    #[test]
    fn maglev_table_equals_the_papers_population() {
        let addrs: Vec<Addr16> = (0..4).map(|i| v4_mapped([198, 18, 0, 11 + i])).collect();
        let weights = [2, 4, 2, 6];
        let m = MH_TABLE_SIZE as u64;
        let servers: Vec<(u64, u64, u32)> = addrs
            .iter()
            .zip(weights)
            .map(|(a, w)| (flow_hash(a, &[0; 16], 0, 0, 1) as u64 % m, flow_hash(a, &[0; 16], 0, 0, 2) as u64 % (m - 1) + 1, w / 2))
            .collect();
        let want: Vec<u16> = lb_common::host::ipvs::maglev_populate(&servers, MH_TABLE_SIZE).into_iter().map(|i| i as u16).collect();
        assert_eq!(mh_table(&dests(&weights), &addrs, MH_TABLE_SIZE), want);
    }

    #[test]
    fn maglev_honours_weights_and_disrupts_little() {
        let addrs: Vec<Addr16> = (0..5).map(|i| v4_mapped([198, 18, 0, 11 + i])).collect();
        let t = mh_table(&dests(&[1, 1, 1, 1, 2]), &addrs, MH_TABLE_SIZE);
        let mut counts = [0usize; 5];
        for &e in &t {
            counts[e as usize] += 1;
        }
        // Weight 2 gets about twice the entries of weight 1 (shares 1/6 and 2/6).
        assert!((counts[4] as f64 / counts[0] as f64 - 2.0).abs() < 0.1, "{counts:?}");

        // Taking server 2 out moves (about) only its own entries.
        let mut without = dests(&[1, 1, 1, 1, 2]);
        without.0[2].available = false;
        let t2 = mh_table(&without, &addrs, MH_TABLE_SIZE);
        let moved = t.iter().zip(&t2).filter(|(a, b)| a != b && **a != 2).count();
        assert!(moved < MH_TABLE_SIZE / 50, "{moved} entries of other servers moved");
    }
}
