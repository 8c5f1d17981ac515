//! Scheduler tables the dataplane indexes instead of computing: wrr's choice sequence,
//! sh's 256 buckets, mh's Maglev lookup table. All depend on weights and availability
//! only, so they are rebuilt when those change.

use std::collections::HashMap;

use lb_common::sched::{self, DestInfo, Dests, NO_DEST};

/// Longest wrr sequence (prefix + one cycle) drlb stores per service.
pub const MAX_WRR_SEQUENCE: usize = 65536;
/// The sizes IPVS mh's table can have (`primes[]` in ip_vs_mh.c), one per
/// `CONFIG_IP_VS_MH_TAB_INDEX` from 8 to 17.
pub const MH_TABLE_SIZES: [usize; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];
/// The kernel's default (`CONFIG_IP_VS_MH_TAB_INDEX` 12, Debian's and most distributions').
pub const MH_TABLE_SIZE: usize = 4093;

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

/// ovf's table: the servers of non-zero weight in the order fo would pick them — highest
/// weight first, list order among equals — for the dataplane to take the first whose
/// active connections do not exceed its weight (`ip_vs_ovf.c`'s loop, without the search).
pub fn ovf_order(list: &ListDests) -> Vec<u16> {
    let mut order: Vec<u16> = (0..list.0.len() as u16).filter(|&i| list.0[i as usize].weight > 0).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(list.0[i as usize].weight));
    order
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

/// One server as IPVS mh's table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MhDest {
    /// IPv4 address, host order (`ntohl(addr)`).
    pub addr: u32,
    /// The destination port (the service's, in DR).
    pub port: u16,
    /// IPVS's `last_weight`: the last non-zero weight it had (a server inhibited to weight 0
    /// keeps its entries but takes nothing; one configured with 0 gets none).
    pub last_weight: u32,
}

/// IPVS mh's lookup table, as `ip_vs_mh_permutate()` and `ip_vs_mh_populate()` build it,
/// over `list` in IPVS list order (list indices; NO_DEST where no server is): each
/// server's offset and skip come from hsiphash of its address and port; it claims
/// `(last_weight / gcd) >> rshift` entries in a row before the next server's turn.
pub fn mh_table(list: &[MhDest], size: usize) -> Vec<u16> {
    use lb_common::hash::{mh_hashkey, MH_KEY1, MH_KEY2};
    let mut table = vec![NO_DEST; size];
    let g = list.iter().map(|d| d.last_weight).filter(|w| *w > 0).fold(0, gcd);
    if g == 0 || list.len() > size {
        return table;
    }
    // ip_vs_mh_shift_weight: keep weight/gcd within the table's bits.
    let table_bits = MH_TABLE_SIZES.iter().position(|&m| m == size).map_or(6, |i| (i as u32 + 8) / 2);
    let max = list.iter().map(|d| d.last_weight).max().unwrap_or(0) / g;
    let fls = u32::BITS - max.leading_zeros();
    let rshift = fls.saturating_sub(table_bits);
    let m = size as u32;
    let mut perm: Vec<u32> = list.iter().map(|d| mh_hashkey(MH_KEY1, d.addr, d.port, 0) % m).collect();
    let skip: Vec<u32> = list.iter().map(|d| mh_hashkey(MH_KEY2, d.addr, d.port, 0) % (m - 1) + 1).collect();
    let turns: Vec<u32> = list.iter().map(|d| match (d.last_weight / g) >> rshift {
        0 => u32::from(d.last_weight != 0),
        t => t,
    }).collect();
    let mut used = vec![false; size];
    let mut filled = 0;
    loop {
        for i in 0..list.len() {
            for _ in 0..turns[i] {
                while used[perm[i] as usize] {
                    perm[i] = (perm[i] + skip[i]) % m;
                }
                used[perm[i] as usize] = true;
                table[perm[i] as usize] = i as u16;
                filled += 1;
                if filled == size {
                    return table;
                }
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn mh_list(weights: &[u32]) -> Vec<MhDest> {
        // IPVS list order: the last configured first.
        (0..weights.len()).rev().map(|i| MhDest { addr: u32::from_be_bytes([198, 18, 0, 11 + i as u8]), port: 80, last_weight: weights[i] }).collect()
    }

    /// The builder against the kernel's loops transliterated apart
    /// (`lb_common::host::ipvs::mh_kernel_table`), with weights that need a shift.
    #[test]
    fn maglev_table_equals_the_kernels_population() {
        for (weights, size) in [(vec![2, 4, 2, 6], MH_TABLE_SIZE), (vec![1, 100, 3000], 251), (vec![5, 0, 5], 4093), (vec![7], 65521)] {
            let list = mh_list(&weights);
            let want: Vec<u16> = lb_common::host::ipvs::mh_kernel_table(&list.iter().map(|d| (d.addr, d.port, d.last_weight)).collect::<Vec<_>>(), size)
                .into_iter()
                .map(|e| e.map_or(NO_DEST, |i| i as u16))
                .collect();
            assert_eq!(mh_table(&list, size), want, "weights {weights:?}, size {size}");
        }
    }

    #[test]
    fn maglev_honours_weights_and_disrupts_little() {
        let t = mh_table(&mh_list(&[1, 1, 1, 1, 2]), MH_TABLE_SIZE);
        let mut counts = [0usize; 5];
        for &e in &t {
            counts[e as usize] += 1;
        }
        // List index 0 is the last configured server, weight 2: about twice the others.
        assert!((counts[0] as f64 / counts[4] as f64 - 2.0).abs() < 0.15, "{counts:?}");

        // Taking a server out moves (about) only its own entries.
        let mut without = mh_list(&[1, 1, 1, 1, 2]);
        let gone = without.remove(2);
        let t2 = mh_table(&without, MH_TABLE_SIZE);
        let before: Vec<u32> = t.iter().map(|&e| mh_list(&[1, 1, 1, 1, 2])[e as usize].addr).collect();
        let after: Vec<u32> = t2.iter().map(|&e| without[e as usize].addr).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b && **a != gone.addr).count();
        assert!(moved < MH_TABLE_SIZE / 20, "{moved} entries of other servers moved");
    }
}
