//! What drlb's maps should hold: the plain content the control layer computes and the
//! kernel layer writes (`bpf::Dataplane::apply`), and the host model over it.

use std::collections::BTreeMap;

use lb_common::addr::Addr16;
use lb_common::host::HostTables;
use lb_common::maps::{Backend, SchedState, Service, ServiceKey, Vip};

/// The static content of the dataplane's maps (everything the controller writes; the
/// connection table, counters and scheduler positions are the dataplane's own).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapContent {
    pub vip_filter: BTreeMap<u32, u32>,
    pub vips: BTreeMap<Addr16, Vip>,
    pub service_ids: BTreeMap<ServiceKey, u32>,
    pub services: BTreeMap<u32, Service>,
    /// Slot → backend; every configured real server has a slot, usable or not, and so do
    /// removed ones still draining.
    pub backends: BTreeMap<u32, Backend>,
    /// `DRLB_MEMBERS` entries: index → backend slot.
    pub members: BTreeMap<u32, u32>,
    /// Backend slot of each configured real server: `[service][real server]`.
    pub slots: Vec<Vec<u32>>,
    /// Service id of each configured service.
    pub service_id_of: Vec<u32>,
    /// Regions of `DRLB_SCHED_TAB`: (offset, entries).
    pub sched_regions: BTreeMap<u32, Vec<u16>>,
}

impl MapContent {
    /// What the scheduler of service `id` decides from: scheduler, members in order with
    /// their weights and availability, and its table. When this changes, the scheduler's
    /// position restarts (as IPVS resets wrr when a destination changes).
    pub fn scheduler_input(&self, id: u32) -> Option<(u32, Vec<(u32, u32, bool)>, Option<&Vec<u16>>)> {
        let svc = self.services.get(&id)?;
        let members = (svc.members_offset..svc.members_offset + svc.member_count)
            .map(|i| {
                let slot = self.members.get(&i).copied().unwrap_or(u32::MAX);
                let b = self.backends.get(&slot).copied().unwrap_or_default();
                (slot, b.weight, b.is_present())
            })
            .collect();
        Some((svc.scheduler, members, self.table(svc)))
    }

    /// Service `svc`'s member list: backend slots in configuration order.
    pub fn member_list(&self, svc: &Service) -> Vec<u32> {
        (svc.members_offset..svc.members_offset + svc.member_count).map(|i| self.members.get(&i).copied().unwrap_or(u32::MAX)).collect()
    }

    /// Service `svc`'s scheduler table, if it has one.
    pub fn table(&self, svc: &Service) -> Option<&Vec<u16>> {
        if svc.table_len > 0 { self.sched_regions.get(&svc.table_offset) } else { None }
    }

    /// A fingerprint of service `id`'s scheduler table as the real servers it names (not
    /// this director's slot numbers): directors behind ECMP routers whose `mh` tables have
    /// the same fingerprint send every flow to the same real server.
    pub fn table_fingerprint(&self, id: u32) -> Option<String> {
        let svc = self.services.get(&id)?;
        let table = self.table(svc)?;
        let members = self.member_list(svc);
        // FNV-1a, 64 bits: stable across builds and machines (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for entry in table {
            let addr = members.get(*entry as usize).and_then(|slot| self.backends.get(slot)).map_or([0xff; 16], |b| b.addr);
            for byte in addr {
                h = (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Some(format!("{h:016x}"))
    }

    /// The scheduler positions a service starts from.
    pub fn initial_sched_state() -> SchedState {
        SchedState::default()
    }

    /// The host model of the dataplane over these tables, with empty connection state.
    pub fn host_model(&self) -> HostTables {
        let mut h = HostTables {
            vips: self.vips.clone(),
            service_ids: self.service_ids.clone(),
            services: self.services.clone(),
            backends: self.backends.clone(),
            members: self.members.clone(),
            ..Default::default()
        };
        for (offset, entries) in &self.sched_regions {
            for (k, e) in entries.iter().enumerate() {
                h.sched_table.insert(offset + k as u32, *e);
            }
        }
        for id in self.services.keys() {
            h.sched_state.borrow_mut().insert(*id, Self::initial_sched_state());
        }
        h
    }
}
