//! Stable identities in the dataplane: service ids and backend slots stay the same across
//! reloads for as long as the service (VIP, port, protocol) and real server (address) stay
//! configured, so connections keep pointing at the right server. A removed real server's
//! slot drains: its connections continue until none is left, then the slot is freed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use lb_common::maps::{Backend, ServiceKey, BACKEND_F_DRAINING, MAX_BACKENDS, MAX_SERVICES};

#[derive(Debug, Default, Clone)]
pub struct Slots {
    services: HashMap<ServiceKey, u32>,
    free_services: BTreeSet<u32>,
    next_service: u32,
    backends: HashMap<(ServiceKey, IpAddr), u32>,
    free_backends: BTreeSet<u32>,
    next_backend: u32,
    /// Removed real servers whose connections may still be alive.
    draining: BTreeMap<u32, Backend>,
    /// The backend entries of the last build, to keep a removed server's MAC while it drains.
    last: BTreeMap<u32, Backend>,
}

impl Slots {
    /// The service's id; `None` when all [`MAX_SERVICES`] are in use.
    pub fn service_id(&mut self, key: ServiceKey) -> Option<u32> {
        if let Some(id) = self.services.get(&key) {
            return Some(*id);
        }
        let id = match self.free_services.pop_first() {
            Some(id) => id,
            None if self.next_service < MAX_SERVICES => {
                self.next_service += 1;
                self.next_service - 1
            }
            None => return None,
        };
        self.services.insert(key, id);
        Some(id)
    }

    /// The real server's backend slot; `None` when all [`MAX_BACKENDS`] are in use
    /// (draining ones included).
    pub fn backend_slot(&mut self, service: ServiceKey, addr: IpAddr) -> Option<u32> {
        if let Some(slot) = self.backends.get(&(service, addr)) {
            return Some(*slot);
        }
        let slot = match self.free_backends.pop_first() {
            Some(s) => s,
            None if self.next_backend < MAX_BACKENDS => {
                self.next_backend += 1;
                self.next_backend - 1
            }
            None => return None,
        };
        self.draining.remove(&slot);
        self.backends.insert((service, addr), slot);
        Some(slot)
    }

    /// Forgets services and real servers that are no longer configured. Removed real
    /// servers drain, keeping the backend entry they had in the last build.
    pub fn retire(&mut self, keep: &BTreeSet<(ServiceKey, IpAddr)>) {
        let gone: Vec<(ServiceKey, IpAddr)> = self.backends.keys().filter(|k| !keep.contains(k)).copied().collect();
        for k in gone {
            let slot = self.backends.remove(&k).expect("present");
            let mut b = self.last.get(&slot).copied().unwrap_or_default();
            // It keeps its weight: a SYN that read its service's scheduler table before the
            // reload still goes there (`lb_common::dataplane::schedule`); DRAINING keeps every
            // new connection that has not chosen it yet away.
            b.flags |= BACKEND_F_DRAINING;
            self.draining.insert(slot, b);
        }
        let services: BTreeSet<ServiceKey> = keep.iter().map(|(s, _)| *s).collect();
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !services.contains(k)).copied().collect();
        for k in gone {
            let id = self.services.remove(&k).expect("present");
            self.free_services.insert(id);
        }
    }

    /// Records what a build wrote, for the next `retire`.
    pub fn remember(&mut self, backends: &BTreeMap<u32, Backend>) {
        self.last = backends.clone();
    }

    /// Records one backend entry a targeted update wrote.
    pub fn remember_one(&mut self, slot: u32, backend: Backend) {
        self.last.insert(slot, backend);
    }

    /// Whether the real server already has a backend slot.
    pub fn has_backend(&self, service: ServiceKey, addr: IpAddr) -> bool {
        self.backends.contains_key(&(service, addr))
    }

    /// Backend entries of draining real servers, to keep in the dataplane.
    pub fn draining(&self) -> &BTreeMap<u32, Backend> {
        &self.draining
    }

    /// Frees draining slots that no connection uses any more.
    pub fn release_drained(&mut self, in_use: impl Fn(u32) -> bool) -> Vec<u32> {
        let idle: Vec<u32> = self.draining.keys().copied().filter(|s| !in_use(*s)).collect();
        for s in &idle {
            self.draining.remove(s);
            self.free_backends.insert(*s);
        }
        idle
    }

    /// The identities an adopted dataplane already uses, so a restarted controller keeps
    /// every connection pointing at the same server.
    pub fn recover(tables: &crate::kernel::content::MapContent) -> Slots {
        let mut s = Slots::default();
        let mut used_services = BTreeSet::new();
        let mut used_slots = BTreeSet::new();
        for (key, id) in &tables.service_ids {
            // A group's keys all lead to its id; the least is the service's identity
            // (`Service::identity`), and the map is in key order.
            if !used_services.insert(*id) {
                continue;
            }
            s.services.insert(*key, *id);
            let Some(svc) = tables.services.get(id) else { continue };
            for i in svc.members_offset..svc.members_offset + svc.member_count {
                let Some(slot) = tables.members.get(&i) else { continue };
                let Some(b) = tables.backends.get(slot) else { continue };
                if let Some(ip) = lb_common::addr::to_ip(&b.addr) {
                    s.backends.insert((*key, ip), *slot);
                }
                used_slots.insert(*slot);
            }
        }
        for (slot, b) in &tables.backends {
            if b.flags & BACKEND_F_DRAINING != 0 && !used_slots.contains(slot) {
                s.draining.insert(*slot, *b);
                used_slots.insert(*slot);
            }
        }
        s.next_service = used_services.iter().max().map_or(0, |m| m + 1);
        s.free_services = (0..s.next_service).filter(|i| !used_services.contains(i)).collect();
        s.next_backend = used_slots.iter().max().map_or(0, |m| m + 1);
        s.free_backends = (0..s.next_backend).filter(|i| !used_slots.contains(i)).collect();
        s.last = tables.backends.clone();
        s
    }
}
