//! drlb's schedulers and connection states against a plain model of IPVS, written the way
//! the kernel sources are (a list walked with "least so far" pointers, the input-only state
//! table applied with the INACTIVE flag), for random weights, counters and packet sequences.

use std::collections::BTreeMap;

use lb_common::addr::v4_mapped;
use lb_common::conn::{tcp, ConnKey, Timeouts};
use lb_common::dataplane::process;
use lb_common::host::HostTables;
use lb_common::maps::{Scheduler, Backend, Service, ServiceKey, Vip, BACKEND_F_PRESENT, IPPROTO_TCP};
use lb_common::sched::{self, DestInfo, Dests};
use lb_common::verdict::Verdict;
use proptest::prelude::*;

use lb_common::host::ipvs::{self, Dest};

struct List(Vec<Dest>);

impl Dests for List {
    fn len(&self) -> u32 {
        self.0.len() as u32
    }
    fn get(&self, i: u32) -> DestInfo {
        let d = &self.0[i as usize];
        DestInfo { weight: d.weight as u32, active: d.active as u32, inactive: d.inactive as u32, available: !d.overloaded }
    }
}

fn dest_strategy() -> impl Strategy<Value = Dest> {
    (prop_oneof![Just(0), 1..5i32, 1..100i32, Just(65535)], 0..2000i32, 0..5000i32, prop::bool::weighted(0.1))
        .prop_map(|(weight, active, inactive, overloaded)| Dest { weight, active, inactive, overloaded })
}

proptest! {
    #[test]
    fn wlc_lc_sed_nq_match_ipvs(list in prop::collection::vec(dest_strategy(), 0..40)) {
        let l = List(list.clone());
        prop_assert_eq!(sched::wlc(&l).map(|i| i as usize), ipvs::wlc(&list));
        prop_assert_eq!(sched::sed(&l).map(|i| i as usize), ipvs::sed(&list));
        prop_assert_eq!(sched::lc(&l).map(|i| i as usize), ipvs::lc(&list));
        prop_assert_eq!(sched::nq(&l).map(|i| i as usize), ipvs::nq(&list));
    }

    /// fo's choice, which the controller writes for the dataplane (ovf and twos are checked
    /// end to end, from the config, in lb-userspace's `control::tables`).
    #[test]
    fn fo_matches_ipvs(list in prop::collection::vec(dest_strategy(), 0..40)) {
        let l = List(list.clone());
        prop_assert_eq!(sched::fo(&l).map(|i| i as usize), ipvs::fo(&list));
    }

    #[test]
    fn rr_sequences_match_ipvs(list in prop::collection::vec(dest_strategy(), 0..12), steps in 1..50usize) {
        let l = List(list.clone());
        let (mut pos, mut model_pos) = (sched::RR_HEAD, None);
        for _ in 0..steps {
            prop_assert_eq!(sched::rr(&l, &mut pos).map(|i| i as usize), ipvs::rr(&list, &mut model_pos));
        }
    }
}

/// The choice sequences the issue names, from the IPVS sources by hand: weights in
/// configuration order, servers numbered from 1 in configuration order.
#[test]
fn known_sequences() {
    // rr 1:1:1 starts at the last configured server.
    let l = List((0..3).map(|_| Dest { weight: 1, active: 0, inactive: 0, overloaded: false }).collect());
    let mut pos = sched::RR_HEAD;
    let seq: Vec<u32> = (0..6).map(|_| 3 - sched::rr(&l, &mut pos).unwrap()).collect();
    assert_eq!(seq, [3, 2, 1, 3, 2, 1]);

    // wrr 1:2:3 after keepalived's one-by-one adds (cw ends at 1, not at the max).
    let weights = [1u32, 2, 3];
    let mut mark = sched::wrr_mark_after_adds(&weights);
    assert_eq!((mark.cw, mark.mw, mark.di), (1, 3, 1));
    let list = List(weights.iter().rev().map(|&w| Dest { weight: w as i32, active: 0, inactive: 0, overloaded: false }).collect());
    let seq: Vec<u32> = (0..12).map(|_| 3 - sched::wrr_schedule(&list, &mut mark).unwrap()).collect();
    assert_eq!(seq, [3, 2, 1, 3, 3, 2, 3, 2, 1, 3, 3, 2]);
}

// ---- connection state: set_tcp_state() with the INACTIVE flag and dest counters ----

#[derive(Default, Clone, Copy, Debug)]
struct ModelConn {
    state: u8,
    inactive: bool,
}

const VIP: [u8; 4] = [198, 18, 0, 100];

fn one_server(sloppy: bool) -> HostTables {
    let mut t = HostTables::default();
    t.vips.insert(v4_mapped(VIP), Vip { flags: 0 });
    t.service_ids.insert(ServiceKey::new(v4_mapped(VIP), 80, IPPROTO_TCP), 0);
    t.services.insert(
        0,
        Service {
            members_offset: 0,
            member_count: 1,
            scheduler: Scheduler::Wlc.code(),
            flags: if sloppy { lb_common::maps::SVC_F_SLOPPY_TCP } else { 0 },
            timeouts: Timeouts::default(),
            ticks_per_sec: 1000,
            ..Default::default()
        },
    );
    t.backends.insert(0, Backend::new([0; 16], [2, 0, 0, 0, 0, 1], [0; 6], 1, BACKEND_F_PRESENT));
    t.now.set(1_000_000_000);
    t
}

fn segment(client_port: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0xaa; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 10]);
    f.extend_from_slice(&VIP);
    f.extend_from_slice(&client_port.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

fn flags_strategy() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(tcp::FLAG_SYN),
        Just(tcp::FLAG_ACK),
        Just(tcp::FLAG_ACK | 0x08),
        Just(tcp::FLAG_FIN | tcp::FLAG_ACK),
        Just(tcp::FLAG_RST),
        Just(tcp::FLAG_RST | tcp::FLAG_ACK),
        Just(0u8),
    ]
}

proptest! {
    /// Random segments over a few client ports: every connection's state and the server's
    /// ActiveConn/InActConn equal IPVS's after each packet.
    #[test]
    fn states_and_counts_match_ipvs(sloppy in any::<bool>(), packets in prop::collection::vec((0..3u16, flags_strategy()), 1..60)) {
        let t = one_server(sloppy);
        let mut model: BTreeMap<u16, ModelConn> = BTreeMap::new();
        let (mut m_active, mut m_inactive) = (0i64, 0i64);
        for (port, flags) in packets {
            let cport = 40000 + port;
            let mut frame = segment(cport, flags);
            let stat = process(frame.as_mut_slice(), &t);

            // The model: ip_vs_in() → conn lookup, reuse check, schedule, set_tcp_state().
            let syn = flags & tcp::FLAG_SYN != 0;
            let rst = flags & tcp::FLAG_RST != 0;
            let mut existing = model.get(&cport).copied();
            if let Some(c) = existing {
                if syn && (c.state == tcp::TIME_WAIT || c.state == tcp::CLOSE) {
                    if c.inactive { m_inactive -= 1 } else { m_active -= 1 }
                    model.remove(&cport);
                    existing = None;
                }
            }
            let mut c = match existing {
                Some(c) => c,
                None => {
                    if !(syn || (sloppy && !rst)) {
                        prop_assert_eq!(stat, Verdict::DropNoConnection);
                        continue;
                    }
                    m_inactive += 1;
                    prop_assert_eq!(stat, Verdict::TxScheduled);
                    ModelConn { state: tcp::NONE, inactive: true }
                }
            };
            if existing.is_some() {
                prop_assert_eq!(stat, Verdict::TxForwarded);
            }
            let new = tcp::next_state(c.state, flags);
            if new != c.state {
                if !c.inactive && new != tcp::ESTABLISHED {
                    m_active -= 1; m_inactive += 1; c.inactive = true;
                } else if c.inactive && new == tcp::ESTABLISHED {
                    m_active += 1; m_inactive -= 1; c.inactive = false;
                }
            }
            c.state = new;
            model.insert(cport, c);

            let counts = t.conn_counts_of(0);
            prop_assert_eq!((counts.active as i64, counts.inactive as i64), (m_active, m_inactive));
            let key = ConnKey { client: v4_mapped([198, 18, 0, 10]), vip: v4_mapped(VIP), cport, vport: 80, proto: 6, _pad: [0; 3] };
            let conn = t.connection(&key).unwrap();
            prop_assert_eq!(conn.state, c.state);
            prop_assert_eq!(conn.is_inactive(), c.inactive);
            prop_assert_eq!(conn.timeout, Timeouts::default().tcp(c.state) * 1000);
        }
    }
}

trait CountsOf {
    fn conn_counts_of(&self, slot: u32) -> lb_common::maps::ConnCounts;
}

impl CountsOf for HostTables {
    fn conn_counts_of(&self, slot: u32) -> lb_common::maps::ConnCounts {
        lb_common::dataplane::Tables::conn_counts(self, slot)
    }
}

proptest::proptest! {
    /// wrr: the transcription of the kernel's loop (`sched::wrr_schedule`, what the
    /// dataplane's tables are built from) and the algorithm as the LVS documentation states
    /// it (`ipvs::Wrr`) choose the same servers, from the state keepalived's additions leave.
    #[test]
    fn wrr_transcription_equals_the_documented_algorithm(weights in proptest::collection::vec(1u32..12, 1..7)) {
        let mut model = lb_common::host::ipvs::Wrr::after_adds(&weights);
        let mut mark = lb_common::sched::wrr_mark_after_adds(&weights);
        let dests = ListDests(weights.iter().rev().map(|&w| lb_common::sched::DestInfo { weight: w, available: true, ..Default::default() }).collect());
        for step in 0..200 {
            let a = lb_common::sched::wrr_schedule(&dests, &mut mark).map(|i| i as usize);
            let b = model.next();
            proptest::prop_assert_eq!(a, b, "step {} for weights {:?}", step, weights);
        }
    }

    /// sh: drlb's bucket table and bucket hash against `ip_vs_sh` written from the kernel.
    #[test]
    fn sh_equals_the_kernels(weights in proptest::collection::vec(1u32..5, 1..6), client in proptest::prelude::any::<[u8; 4]>()) {
        let list = lb_common::host::ipvs::list_for(&weights);
        let list_weights: Vec<u32> = weights.iter().rev().copied().collect();
        let table = lb_common::sched::sh_table(&list_weights);
        let drlb = table[lb_common::sched::sh_bucket(client) as usize] as usize;
        proptest::prop_assert_eq!(Some(drlb), lb_common::host::ipvs::sh(&list, client));
    }
}

/// A `Dests` over a list, for the wrr comparison.
struct ListDests(Vec<lb_common::sched::DestInfo>);

impl lb_common::sched::Dests for ListDests {
    fn len(&self) -> u32 {
        self.0.len() as u32
    }
    fn get(&self, i: u32) -> lb_common::sched::DestInfo {
        self.0[i as usize]
    }
}
