//! What the maps should hold for a config and the real servers' MACs: a pure function, so
//! it is tested without a kernel and doubles as the host model of the dataplane.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use lb_common::addr::{v4_mapped, Addr16};
use lb_common::dataplane;
use lb_common::maps::{
    Backend, Service, ServiceKey, Vip, VipKey, BACKEND_F_PRESENT, MAX_BACKENDS,
    MAX_BACKENDS_PER_SERVICE, VIP_F_WILDCARD_TCP, VIP_F_WILDCARD_UDP,
};

use crate::config::{self, Config, Protocol};

pub type Mac = [u8; 6];

/// The complete desired content of the dataplane's maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    pub vips: BTreeMap<[u8; 16], Vip>,
    pub services: Vec<(ServiceKey, Service)>,
    /// Slot → backend; slots not listed are cleared.
    pub backends: BTreeMap<u32, Backend>,
}

/// Stores an address in the maps' 16-byte form.
pub fn addr16(ip: IpAddr) -> Addr16 {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Whether a configured real server may take traffic now, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    Usable,
    QuiescentWeightZero,
    MacUnresolved,
}

pub fn usability(rs: &config::RealServer, macs: &HashMap<IpAddr, Mac>) -> Usability {
    if rs.weight == 0 {
        Usability::QuiescentWeightZero
    } else if !macs.contains_key(&rs.address) {
        Usability::MacUnresolved
    } else {
        Usability::Usable
    }
}

impl Tables {
    /// Service `i` owns slots `[i * MAX_BACKENDS_PER_SERVICE, (i + 1) * ...)`; its usable real
    /// servers fill the front of that range in configuration order.
    pub fn build(config: &Config, macs: &HashMap<IpAddr, Mac>, director_mac: Mac) -> Tables {
        let mut t = Tables::default();
        for (i, svc) in config.services.iter().enumerate() {
            let vip = addr16(svc.vip);
            let flags = t.vips.entry(vip).or_default();
            if svc.port == 0 {
                flags.flags |= match svc.protocol {
                    Protocol::Tcp => VIP_F_WILDCARD_TCP,
                    Protocol::Udp => VIP_F_WILDCARD_UDP,
                };
            }
            let first = i as u32 * MAX_BACKENDS_PER_SERVICE;
            let mut count = 0;
            for rs in &svc.real_servers {
                if usability(rs, macs) != Usability::Usable || count == MAX_BACKENDS_PER_SERVICE {
                    continue;
                }
                t.backends.insert(
                    first + count,
                    Backend {
                        addr: addr16(rs.address),
                        mac: macs[&rs.address],
                        src_mac: director_mac,
                        weight: rs.weight,
                        flags: BACKEND_F_PRESENT,
                    },
                );
                count += 1;
            }
            t.services.push((
                ServiceKey::new(vip, svc.port, svc.protocol.number()),
                Service { id: i as u32, first_backend: first, backend_count: count, flags: 0 },
            ));
        }
        debug_assert!(t.backends.keys().all(|s| *s < MAX_BACKENDS));
        t
    }
}

/// The tables as the shared dataplane logic sees them: runs `lb_common::dataplane::process`
/// on the host, the reference the BPF object is checked against.
impl dataplane::Tables for Tables {
    fn vip(&self, key: &VipKey) -> Option<Vip> {
        self.vips.get(&key.addr).copied()
    }

    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.iter().find(|(k, _)| k == key).map(|(_, s)| *s)
    }

    fn backend(&self, slot: u32) -> Option<Backend> {
        Some(self.backends.get(&slot).copied().unwrap_or_default())
    }
}
