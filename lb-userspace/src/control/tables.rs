//! What the maps should hold for a config and the real servers' MACs: a pure function, so
//! it is tested without a kernel, and the source of the host model of the dataplane.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use lb_common::addr::Addr16;
use lb_common::conn::Timeouts;
use lb_common::maps::{
    vip_filter_index, Backend, Service, ServiceKey, BACKEND_F_HEALTH_DOWN, BACKEND_F_PRESENT,
    member_region, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE, MAX_SERVICES, MAX_VIPS, SCHED_TABLE_HALF, SVC_F_PERSISTENT, SVC_F_GROUP, SVC_F_SLOPPY_TCP, SVC_F_WILDCARD, VIP_F_WILDCARD_TCP, VIP_F_WILDCARD_UDP,
};
use lb_common::sched::{DestInfo, SH_TABLE_SIZE};

use crate::control::config::{self, Config, Protocol, Scheduler};
use crate::control::sched_tables::{self, ListDests, MAX_WRR_SEQUENCE, MH_TABLE_SIZE};
use crate::control::slots::Slots;
use crate::kernel::content::MapContent;
use crate::kernel::mac::Mac;
use lb_common::addr::from_ip;


/// What health checks decided, which the tables follow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Down {
    /// Real servers a check took down: (service name, address).
    servers: std::collections::HashSet<(String, IpAddr)>,
    /// Services whose quorum is lost: their sorry server takes new connections. Kept by
    /// the controller ([`next_quorum_lost`]) because with a hysteresis it depends on the past.
    pub quorum_lost: std::collections::HashSet<String>,
    /// Weights dynamic checks set (keepalived's misc_dynamic and FILE_CHECK), in place of
    /// the configured ones: (service name, address) → weight.
    pub weights: HashMap<(String, IpAddr), u32>,
}

impl Down {
    /// The weight real server `address` of `service` has now: a dynamic check's, else the
    /// configured one.
    pub fn weight(&self, service: &str, rs: &config::RealServer) -> u32 {
        if self.weights.is_empty() {
            return rs.weight;
        }
        self.weights.get(&(service.to_string(), rs.address)).copied().unwrap_or(rs.weight)
    }

    pub fn insert(&mut self, key: (String, IpAddr)) -> bool {
        self.servers.insert(key)
    }

    pub fn remove(&mut self, key: &(String, IpAddr)) -> bool {
        self.servers.remove(key)
    }

    pub fn contains(&self, key: &(String, IpAddr)) -> bool {
        self.servers.contains(key)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn retain(&mut self, keep: impl FnMut(&(String, IpAddr)) -> bool) {
        self.servers.retain(keep)
    }

    /// The real servers a check took down.
    pub fn servers(&self) -> &std::collections::HashSet<(String, IpAddr)> {
        &self.servers
    }

    pub fn set_servers(&mut self, servers: std::collections::HashSet<(String, IpAddr)>) {
        self.servers = servers;
    }

    fn is_down(&self, service: &str, address: IpAddr) -> bool {
        !self.servers.is_empty() && self.servers.contains(&(service.to_string(), address))
    }
}

/// keepalived's weight_sum: the weights of a service's real servers its checks hold up
/// (whether their MAC is known yet is the dataplane's concern, not the quorum's).
pub fn up_weight(svc: &config::Service, down: &Down) -> u64 {
    // The weights they have now: a dynamic check's, else the configured (keepalived sums
    // `real_weight(effective_weight)` of alive servers).
    svc.real_servers
        .iter()
        .filter(|rs| !down.is_down(&svc.name, rs.address))
        .map(|rs| u64::from(down.weight(&svc.name, rs)))
        .sum()
}

/// keepalived's quorum with hysteresis: gained at `quorum + hysteresis`, lost below
/// `quorum - hysteresis` (or at 0); at start (`was_lost` None) held iff at `quorum + hysteresis`.
pub fn next_quorum_lost(svc: &config::Service, up_weight: u64, was_lost: Option<bool>) -> bool {
    let (quorum, hysteresis) = (u64::from(svc.quorum), u64::from(svc.quorum_hysteresis));
    match was_lost {
        None | Some(true) => up_weight < quorum + hysteresis,
        Some(false) => up_weight < quorum.saturating_sub(hysteresis) || up_weight == 0,
    }
}

/// Why a configuration's tables do not fit the dataplane's maps. `drlb check` finds these
/// ahead ([`check_budget`]); a build can still meet them when live state (servers still
/// draining, a health change that lengthens a wrr cycle) takes room the file did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    ServiceIds,
    BackendSlots { service: String },
    Members { service: String },
    WrrTooLong { service: String },
    SchedTable { service: String, needed: usize, free: usize },
    /// A failed write left services pointing at tables in both halves of `DRLB_SCHED_TAB`.
    TablesInUse,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::ServiceIds => write!(f, "more than {MAX_SERVICES} services"),
            BuildError::TablesInUse => write!(
                f,
                "a failed map write left scheduler tables in use in both halves of the table map, so none can be \
                 rewritten safely; the dataplane keeps forwarding with them (fix: `drlb stop`, then `drlb run`)"
            ),
            BuildError::BackendSlots { service } => write!(
                f,
                "service `{service}`: no backend slot left ({MAX_BACKENDS} real servers, sorry servers and removed servers \
                 still draining, over all services)"
            ),
            BuildError::Members { service } => {
                write!(f, "service `{service}`: more than {MAX_BACKENDS_PER_SERVICE} members")
            }
            BuildError::WrrTooLong { service } => write!(
                f,
                "service `{service}`: its wrr cycle is longer than {MAX_WRR_SEQUENCE} choices; divide the weights by a common factor"
            ),
            BuildError::SchedTable { service, needed, free } => write!(
                f,
                "service `{service}`: its scheduler table needs {needed} entries and {free} of the dataplane's {} are left \
                 (an mh service takes director.mh_table_size, {MH_TABLE_SIZE} by default; sh {SH_TABLE_SIZE}; wrr one per choice of its cycle)",
                SCHED_TABLE_HALF
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Entries of `DRLB_SCHED_TAB` a service takes with every server usable (`None`: a wrr cycle
/// too long to store).
pub fn sched_table_entries(svc: &config::Service, mh_table_size: usize) -> Option<usize> {
    match svc.scheduler {
        Scheduler::Mh => Some(mh_table_size),
        Scheduler::Sh => Some(SH_TABLE_SIZE),
        Scheduler::Dh => Some(lb_common::sched::DH_TABLE_SIZE),
        Scheduler::Fo => Some(1),
        Scheduler::Ovf => Some(svc.real_servers.len()),
        Scheduler::Twos => Some(3 * svc.real_servers.len()),
        Scheduler::Wrr => {
            let weights: Vec<u32> = svc.real_servers.iter().map(|r| r.weight).collect();
            Some(sched_tables::wrr_cycle_len(&weights)).filter(|n| *n <= MAX_WRR_SEQUENCE)
        }
        _ => Some(0),
    }
}

/// Every limit of the dataplane's maps a config must fit, as (config path, message) for
/// `drlb check`: VIPs, services, backend slots, member lists, scheduler tables.
pub fn check_budget(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let vips: BTreeSet<IpAddr> = config.services.iter().flat_map(|s| s.addresses()).collect();
    if vips.len() > MAX_VIPS as usize {
        problems.push(("services".into(), format!("{} distinct VIPs; the dataplane holds at most {MAX_VIPS}", vips.len())));
    }
    if config.services.len() > MAX_SERVICES as usize {
        problems.push(("services".into(), format!("{} services; the dataplane holds at most {MAX_SERVICES}", config.services.len())));
    }
    let endpoints: usize = config.services.iter().map(|s| s.endpoints().len()).sum();
    if endpoints > MAX_SERVICES as usize {
        problems.push((
            "services".into(),
            format!("{endpoints} VIP:port pairs over all services and their groups; the dataplane holds at most {MAX_SERVICES}"),
        ));
    }
    // Member lists need no budget: every service has regions of its own, as long as any
    // list may be (the config's own check: MAX_BACKENDS_PER_SERVICE real servers).
    let (mut slots, mut table) = (0usize, 0usize);
    for (i, svc) in config.services.iter().enumerate() {
        slots += svc.real_servers.len() + svc.sorry_server.is_some() as usize;
        if slots > MAX_BACKENDS as usize {
            problems.push((format!("services[{i}].real_servers"), BuildError::BackendSlots { service: svc.name.clone() }.to_string()));
            break;
        }
        let Some(needed) = sched_table_entries(svc, config.director.mh_table_size as usize) else {
            problems.push((format!("services[{i}].scheduler"), BuildError::WrrTooLong { service: svc.name.clone() }.to_string()));
            continue;
        };
        let free = SCHED_TABLE_HALF as usize - table;
        if needed > free {
            problems.push((format!("services[{i}].scheduler"), BuildError::SchedTable { service: svc.name.clone(), needed, free }.to_string()));
            continue;
        }
        table += needed;
    }
    problems
}

/// Whether a configured real server may take new connections now, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    Usable,
    QuiescentWeightZero,
    MacUnresolved,
}

pub fn usability(rs: &config::RealServer, macs: &HashMap<IpAddr, Mac>) -> Usability {
    if !macs.contains_key(&rs.address) {
        Usability::MacUnresolved
    } else if rs.weight == 0 {
        Usability::QuiescentWeightZero
    } else {
        Usability::Usable
    }
}


/// The mask of a service's persistence granularity over the maps' 16-byte addresses:
/// an IPv4 prefix (default /32) covers the last four bytes of the IPv4-mapped form, an IPv6
/// one (default /128, as IPVS's) the whole address.
fn persist_mask(svc: &crate::control::config::Service) -> Addr16 {
    let granularity = svc.persistence_granularity.map(|g| g.0);
    if svc.vip.is_ipv6() {
        let len = granularity.unwrap_or(128).min(128);
        let bits = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        return bits.to_be_bytes();
    }
    let len = granularity.unwrap_or(32).min(32);
    let bits = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    let mut m = [0xff; 16];
    m[12..].copy_from_slice(&bits.to_be_bytes());
    m
}

/// [`lb_common::maps::SVC_F_IPV6`] for an IPv6 service: the hashing schedulers fold its
/// addresses.
fn family_flag(svc: &crate::control::config::Service) -> u32 {
    if svc.vip.is_ipv6() { lb_common::maps::SVC_F_IPV6 } else { 0 }
}

fn secs(d: std::time::Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// The map content for `config` with fresh identities and every server healthy.
pub fn build(config: &Config, macs: &HashMap<IpAddr, Mac>, director_mac: Mac) -> Result<MapContent, BuildError> {
    build_with(config, macs, director_mac, &mut Slots::default(), &Down::default(), &MapContent::default())
}

/// One service's part of the tables, before it is placed in the member and scheduler arrays.
struct ServicePart {
    /// The service's name, for errors.
    name: String,
    id: u32,
    /// The service's identity ([`config::Service::identity`]).
    key: ServiceKey,
    /// Every key that leads to the service: its own and its group's.
    keys: Vec<ServiceKey>,
    /// Backend slots of the member list, in configuration order.
    members: Vec<u32>,
    table: Vec<u16>,
    cycle_start: usize,
    service: Service,
}

/// The map content for `config`, keeping the service ids and backend slots `slots` already
/// gave out. What packets may be reading — `prev`, the content last written — is never
/// rewritten in place:
/// - a service's member list lives in one of two regions of its own
///   ([`lb_common::maps::member_region`]); an unchanged list stays where it is, a changed
///   one is written to the service's other region before the service points at it;
/// - scheduler tables (wrr, sh, mh) stay where they are while none changes; when one does,
///   all are written to the half of `DRLB_SCHED_TAB` not in use.
/// So a health verdict or a neighbour change writes only what it changes, however many
/// services there are. On an error `slots` may have changed: build with a copy and keep it
/// on success.
pub fn build_with(
    config: &Config,
    macs: &HashMap<IpAddr, Mac>,
    director_mac: Mac,
    slots: &mut Slots,
    down: &Down,
    prev: &MapContent,
) -> Result<MapContent, BuildError> {
    let mut t = MapContent::default();
    let keep: BTreeSet<(ServiceKey, IpAddr)> = config
        .services
        .iter()
        .flat_map(|s| {
            let key = s.identity();
            s.real_servers.iter().map(|r| r.address).chain(s.sorry_server.as_ref().map(|x| x.address)).map(move |a| (key, a))
        })
        .collect();
    let mut parts = Vec::with_capacity(config.services.len());
    for svc in &config.services {
        parts.push(service_part(svc, config.director.mh_table_size as usize, macs, director_mac, slots, down, &mut t)?);
    }
    place_tables(&mut parts, prev)?;
    for (svc, mut p) in config.services.iter().zip(parts) {
        // A service id given to another service since `prev` starts afresh.
        let old = prev.services.get(&p.id).filter(|_| prev.service_ids.get(&p.key) == Some(&p.id));
        let offset = members_offset(prev, old, &p);
        if p.members.len() as u32 > MAX_BACKENDS_PER_SERVICE {
            return Err(BuildError::Members { service: svc.name.clone() });
        }
        for (i, slot) in p.members.iter().enumerate() {
            t.members.insert(offset + i as u32, *slot);
        }
        p.service.members_offset = offset;
        p.service.member_count = p.members.len() as u32;
        p.service.table_cycle_start = p.cycle_start as u32;
        if !p.table.is_empty() {
            t.sched_regions.insert(p.service.table_offset, p.table);
        }
        for key in &p.keys {
            t.service_ids.insert(*key, p.id);
        }
        t.services.insert(p.id, p.service);
    }
    // Removed real servers drain: their connections keep their slot and MAC.
    slots.retire(&keep);
    for (slot, b) in slots.draining() {
        t.backends.entry(*slot).or_insert(*b);
    }
    slots.remember(&t.backends);
    Ok(t)
}

/// What [`update_services`] changed: service ids and backend slots to write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub services: Vec<u32>,
    pub slots: Vec<u32>,
}

/// Brings `t` — built by [`build_with`] from this same `config` — up to date after a health
/// verdict or a neighbour change that concerns only the services `which` (indices into
/// `config.services`), recomputing those alone: a verdict costs the same with four services
/// or four thousand. Member lists move as [`build_with`] moves them. `None` (and `t`
/// unchanged) when the change needs a full build: a scheduler table changed (they move
/// all at once), the service has a sorry server, or a service is not where `t` has it.
pub fn update_services(
    t: &mut MapContent,
    config: &Config,
    macs: &HashMap<IpAddr, Mac>,
    director_mac: Mac,
    slots: &mut Slots,
    down: &Down,
    which: &[usize],
) -> Option<Changes> {
    let mut patches = Vec::new();
    for &i in which {
        let svc = config.services.get(i)?;
        if svc.sorry_server.is_some() {
            // Its sorry server comes and goes with quorum, and a full build is what takes
            // its backend entry away when it goes.
            return None;
        }
        let key = svc.identity();
        if !svc.real_servers.iter().all(|r| slots.has_backend(key, r.address)) {
            return None;
        }
        let mut scratch = MapContent::default();
        let p = service_part(svc, config.director.mh_table_size as usize, macs, director_mac, slots, down, &mut scratch).ok()?;
        let old = *t.services.get(&p.id)?;
        if t.service_ids.get(&p.key) != Some(&p.id) || t.table(&old).map_or(!p.table.is_empty(), |tab| *tab != p.table) {
            return None;
        }
        let offset = members_offset(t, Some(&old), &p);
        let mut service = p.service;
        (service.members_offset, service.member_count) = (offset, p.members.len() as u32);
        (service.table_offset, service.table_len, service.table_cycle_start) = (old.table_offset, old.table_len, p.cycle_start as u32);
        patches.push((p.id, old, service, p.members, scratch.backends));
    }
    let mut changes = Changes::default();
    for (id, old, service, members, backends) in patches {
        for i in old.members_offset..old.members_offset + old.member_count {
            t.members.remove(&i);
        }
        for (k, slot) in members.iter().enumerate() {
            t.members.insert(service.members_offset + k as u32, *slot);
        }
        for (slot, b) in backends {
            if t.backends.get(&slot) != Some(&b) {
                t.backends.insert(slot, b);
                slots.remember_one(slot, b);
                changes.slots.push(slot);
            }
        }
        if service != old {
            t.services.insert(id, service);
        }
        changes.services.push(id);
    }
    Some(changes)
}

/// Where `p`'s member list goes, given the service's entry `old` in `prev` (what packets
/// may read): where it is if unchanged, else the service's other region.
fn members_offset(prev: &MapContent, old: Option<&Service>, p: &ServicePart) -> u32 {
    match old {
        Some(o) if prev.member_list(o) == p.members => o.members_offset,
        Some(o) if o.members_offset == member_region(p.id, 0) => member_region(p.id, 1),
        _ => member_region(p.id, 0),
    }
}

/// Places the scheduler tables: at their offsets in `prev` if every service's table is the
/// same as there, else packed into the half of `DRLB_SCHED_TAB` not in use.
fn place_tables(parts: &mut [ServicePart], prev: &MapContent) -> Result<(), BuildError> {
    let unchanged = parts.iter().all(|p| {
        let old = prev.services.get(&p.id);
        match old {
            Some(old) if old.table_len > 0 => prev.table(old).is_some_and(|t| *t == p.table),
            _ => p.table.is_empty(),
        }
    });
    if unchanged {
        for p in parts.iter_mut().filter(|p| !p.table.is_empty()) {
            let old = &prev.services[&p.id];
            (p.service.table_offset, p.service.table_len) = (old.table_offset, old.table_len);
        }
        return Ok(());
    }
    // The half no service's table is in: after a failed write, services may point at either.
    let in_half = |h: u32| prev.services.values().any(|s| s.table_len > 0 && s.table_offset / SCHED_TABLE_HALF == h);
    let half = match (in_half(0), in_half(1)) {
        (true, false) => 1,
        (false, true) => 0,
        // Nothing reads either: the first half.
        (false, false) => 0,
        (true, true) => return Err(BuildError::TablesInUse),
    };
    let mut next = half * SCHED_TABLE_HALF;
    let end = next + SCHED_TABLE_HALF;
    for p in parts.iter_mut().filter(|p| !p.table.is_empty()) {
        if next + p.table.len() as u32 > end {
            return Err(BuildError::SchedTable { service: p.name.clone(), needed: p.table.len(), free: (end - next) as usize });
        }
        (p.service.table_offset, p.service.table_len) = (next, p.table.len() as u32);
        next += p.table.len() as u32;
    }
    Ok(())
}

/// A service's backends (into `t`), member list, scheduler table and service entry, not yet
/// placed; its VIP and VIP-filter entries go into `t` too.
fn service_part(
    svc: &config::Service,
    mh_table_size: usize,
    macs: &HashMap<IpAddr, Mac>,
    director_mac: Mac,
    slots: &mut Slots,
    down: &Down,
    t: &mut MapContent,
) -> Result<ServicePart, BuildError> {
    let key = svc.identity();
    let id = slots.service_id(key).ok_or(BuildError::ServiceIds)?;
    let no_slot = || BuildError::BackendSlots { service: svc.name.clone() };
    let endpoints = svc.endpoints();
    let mut keys = Vec::with_capacity(endpoints.len());
    for (address, port) in endpoints {
        let vip = from_ip(address);
        let flags = t.vips.entry(vip).or_default();
        if port == 0 {
            flags.flags |= match svc.protocol {
                Protocol::Tcp => VIP_F_WILDCARD_TCP,
                Protocol::Udp => VIP_F_WILDCARD_UDP,
            };
        }
        *t.vip_filter.entry(vip_filter_index(&vip)).or_default() = 1;
        keys.push(ServiceKey::new(vip, port, svc.protocol.number()));
    }

    // Every configured server keeps a backend entry (its connections continue);
    // health decides membership: a failed server leaves the member list, or with
    // inhibit_on_failure stays with weight 0.
    let mut svc_slots = Vec::new();
    let mut members: Vec<(u32, IpAddr, u32)> = Vec::new();
    for rs in &svc.real_servers {
        let slot = slots.backend_slot(key, rs.address).ok_or_else(no_slot)?;
        let mac = macs.get(&rs.address).copied();
        let is_down = down.is_down(&svc.name, rs.address);
        let mut flags = if mac.is_some() { BACKEND_F_PRESENT } else { 0 };
        let mut weight = down.weight(&svc.name, rs);
        if is_down {
            flags |= BACKEND_F_HEALTH_DOWN;
            if svc.expire_nodest_conn {
                flags &= !BACKEND_F_PRESENT;
            }
            if svc.inhibit_on_failure {
                weight = 0;
            }
        }
        t.backends.insert(slot, Backend::new(from_ip(rs.address), mac.unwrap_or_default(), director_mac, weight, flags));
        svc_slots.push(slot);
        if !is_down || svc.inhibit_on_failure {
            members.push((slot, rs.address, weight));
        }
    }
    let up_weight: u64 = members
        .iter()
        .filter(|(slot, _, w)| *w > 0 && t.backends[slot].flags & BACKEND_F_HEALTH_DOWN == 0 && t.backends[slot].is_present())
        .map(|(_, _, w)| *w as u64)
        .sum();
    // Without a hysteresis the quorum follows the weights alone; with one, the controller's
    // state decides (it depends on which way the weights last crossed).
    // (Here weights count only where a MAC is known: a server nobody can reach takes nothing.)
    let quorum_lost = if svc.quorum_hysteresis == 0 { up_weight < svc.quorum as u64 } else { down.quorum_lost.contains(&svc.name) || up_weight == 0 };
    if quorum_lost
        && let Some(sorry) = &svc.sorry_server
    {
        let slot = slots.backend_slot(key, sorry.address).ok_or_else(no_slot)?;
        let mac = macs.get(&sorry.address).copied();
        let flags = if mac.is_some() { BACKEND_F_PRESENT } else { 0 };
        t.backends.insert(slot, Backend::new(from_ip(sorry.address), mac.unwrap_or_default(), director_mac, 1, flags));
        members = vec![(slot, sorry.address, 1)];
    } else if let Some(sorry) = svc.sorry_server.as_ref().filter(|s| s.inhibit) {
        // keepalived adds an inhibited sorry server with weight 0 after the real servers
        // (`init_service_vs`): the head of IPVS's list.
        let slot = slots.backend_slot(key, sorry.address).ok_or_else(no_slot)?;
        let mac = macs.get(&sorry.address).copied();
        let flags = if mac.is_some() { BACKEND_F_PRESENT } else { 0 };
        t.backends.insert(slot, Backend::new(from_ip(sorry.address), mac.unwrap_or_default(), director_mac, 0, flags));
        members.push((slot, sorry.address, 0));
    }

    // IPVS list order: last configured first.
    let list = ListDests(
        members
            .iter()
            .rev()
            .map(|(slot, _, w)| DestInfo { weight: *w, available: t.backends[slot].is_present(), ..Default::default() })
            .collect(),
    );
    let (table, cycle_start) = match svc.scheduler {
        Scheduler::Wrr => {
            let weights: Vec<u32> = members.iter().map(|m| m.2).collect();
            match sched_tables::wrr_sequence(&list, &weights) {
                Some(seq) => seq,
                // Dynamic weights (drlb check budgets the configured ones) can make a cycle
                // too long to store: the configured weights' cycle then, rather than no
                // update for any service.
                None if !down.weights.is_empty() => {
                    let configured: Vec<u32> = members
                        .iter()
                        .map(|m| svc.real_servers.iter().find(|r| r.address == m.1).map_or(m.2, |r| if m.2 == 0 { 0 } else { r.weight }))
                        .collect();
                    let list = ListDests(list.0.iter().zip(configured.iter().rev()).map(|(d, w)| DestInfo { weight: *w, ..*d }).collect());
                    sched_tables::wrr_sequence(&list, &configured).ok_or_else(|| BuildError::WrrTooLong { service: svc.name.clone() })?
                }
                None => return Err(BuildError::WrrTooLong { service: svc.name.clone() }),
            }
        }
        Scheduler::Sh => (sched_tables::sh_table(&list), 0),
        Scheduler::Dh => (lb_common::sched::dh_table(list.0.len()).to_vec(), 0),
        Scheduler::Fo => (vec![lb_common::sched::fo(&list).map_or(lb_common::sched::NO_DEST, |i| i as u16)], 0),
        Scheduler::Ovf => (sched_tables::ovf_order(&list), 0),
        Scheduler::Twos => {
            let (table, len) = lb_common::sched::twos_table(&list);
            (table[..len].to_vec(), 0)
        }
        Scheduler::Mh => {
            // IPVS list order, with each server's last non-zero weight: an inhibited server
            // keeps its entries (and takes nothing while its weight is 0).
            let list: Vec<sched_tables::MhDest> = members
                .iter()
                .rev()
                .map(|m| sched_tables::MhDest {
                    // ip_vs_mh hashes each destination's address as it hashes clients'.
                    addr: lb_common::maps::addr_hash(family_flag(svc), &lb_common::addr::from_ip(m.1)),
                    port: svc.port,
                    last_weight: if m.2 > 0 { m.2 } else { svc.real_servers.iter().find(|r| r.address == m.1).map_or(0, |r| r.weight) },
                })
                .collect();
            (sched_tables::mh_table(&list, mh_table_size), 0)
        }
        _ => (Vec::new(), 0),
    };

    let mut svc_flags = family_flag(svc);
    if svc.persistence_timeout.is_some() {
        svc_flags |= SVC_F_PERSISTENT;
    }
    if svc.sloppy_tcp {
        svc_flags |= SVC_F_SLOPPY_TCP;
    }
    if svc.port == 0 {
        svc_flags |= SVC_F_WILDCARD;
    }
    if keys.len() > 1 {
        svc_flags |= SVC_F_GROUP;
    }
    for flag in &svc.scheduler_flags {
        svc_flags |= flag.service_flag();
    }
    if svc.one_packet {
        svc_flags |= lb_common::maps::SVC_F_ONE_PACKET;
    }
    t.service_id_of.push(id);
    t.slots.push(svc_slots);
    let service = Service {
        members_offset: 0,
        member_count: 0,
        flags: svc_flags,
        scheduler: svc.scheduler.code(),
        table_offset: 0,
        table_len: 0,
        table_cycle_start: 0,
        persist_timeout_s: svc.persistence_timeout.map(secs).unwrap_or(0),
        persist_mask: persist_mask(svc),
        timeouts: Timeouts {
            tcp_established: secs(svc.timeouts.tcp),
            tcp_fin_wait: secs(svc.timeouts.tcp_fin),
            udp: secs(svc.timeouts.udp),
        },
        // Set by `Dataplane::apply` to the kernel's clock; the host model counts ms.
        ticks_per_sec: 1000,
        id,
    };
    Ok(ServicePart { name: svc.name.clone(), id, key, keys, members: members.iter().map(|m| m.0).collect(), table, cycle_start, service })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::maps::BACKEND_F_DRAINING;

    const DIRECTOR: Mac = [2, 0, 0, 0, 0, 2];

    fn config(text: &str) -> Config {
        Config::parse(std::path::Path::new("t.yaml"), &format!("director: {{ interface: eth0 }}\nservices:\n{text}")).unwrap()
    }

    fn macs(addrs: &[&str]) -> HashMap<IpAddr, Mac> {
        addrs.iter().enumerate().map(|(i, a)| (a.parse().unwrap(), [2, 0, 0, 0, 1, i as u8])).collect()
    }

    const TWO: &str = "  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.11 }, { address: 198.18.0.12 } ] }\n";
    const ONE: &str = "  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.12 } ] }\n";

    /// Rebuilds keep each real server's slot; a changed member list goes to the service's
    /// other region, an unchanged one stays; a removed server keeps its slot, draining,
    /// until no connection uses it.
    #[test]
    fn identities_are_stable_and_removed_servers_drain() {
        let m = macs(&["198.18.0.11", "198.18.0.12"]);
        let mut slots = Slots::default();
        let a = build_with(&config(TWO), &m, DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap();
        let b = build_with(&config(ONE), &m, DIRECTOR, &mut slots, &Down::default(), &a).unwrap();
        assert_eq!(a.slots, vec![vec![0, 1]]);
        assert_eq!(b.slots, vec![vec![1]], "rs2 keeps its slot");
        let (sa, sb) = (a.services[&0], b.services[&0]);
        assert_eq!((sa.members_offset, sb.members_offset), (member_region(0, 0), member_region(0, 1)), "a changed list moves");
        let b2 = build_with(&config(ONE), &m, DIRECTOR, &mut slots, &Down::default(), &b).unwrap();
        assert_eq!(b2.services[&0].members_offset, sb.members_offset, "an unchanged list stays");
        assert_eq!(b2.members, b.members);
        assert_eq!(b.backends[&0].flags & BACKEND_F_DRAINING, BACKEND_F_DRAINING, "rs1 drains");
        assert_eq!(b.backends[&0].mac(), m[&"198.18.0.11".parse().unwrap()], "with the MAC its connections use");
        assert_eq!(slots.release_drained(|s| s == 0), Vec::<u32>::new(), "still in use");
        assert_eq!(slots.release_drained(|_| false), vec![0]);
        let c = build_with(&config(TWO), &m, DIRECTOR, &mut slots, &Down::default(), &b2).unwrap();
        assert_eq!(c.slots, vec![vec![0, 1]], "a freed slot is given out again");
    }

    /// Reproducible numbers below `n` (xorshift64 from `seed`), for the randomised tests.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// fo, ovf, twos, and sh and mh with their flags, end to end — the config, the tables
    /// the controller builds, the dataplane's choice over them (host model) — against
    /// IPVS's own loops transcribed in `lb_common::host::ipvs`, over many random services:
    /// weights (0 included), servers without a MAC (IPVS: unavailable), connection counts,
    /// clients and ports.
    #[test]
    fn table_and_loop_schedulers_choose_as_ipvs() {
        use lb_common::dataplane::Tables as _;
        use lb_common::host::ipvs;
        let mut next = numbers(0x2545_f491_4f6c_dd1d);
        for case in 0..1000 {
            let scheduler = ["fo", "ovf", "twos", "sh", "mh"][case % 5];
            let n = 1 + next(6) as usize;
            let weights: Vec<u32> = (0..n).map(|_| next(4) as u32).collect();
            let present: Vec<bool> = (0..n).map(|_| next(5) != 0).collect();
            let (port_flag, fallback) = (next(2) == 1, next(2) == 1);
            let mut flags = Vec::new();
            if matches!(scheduler, "sh" | "mh") {
                if port_flag {
                    flags.push(format!("{scheduler}-port"));
                }
                if fallback {
                    flags.push(format!("{scheduler}-fallback"));
                }
            }
            let servers: Vec<String> = weights.iter().enumerate().map(|(i, w)| format!("{{ address: 198.18.1.{}, weight: {w} }}", i + 1)).collect();
            let cfg = config(&format!(
                "  - {{ name: s, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: {scheduler}, scheduler_flags: [{}], real_servers: [ {} ] }}\n",
                flags.join(", "),
                servers.join(", ")
            ));
            let addrs: Vec<String> = (0..n).filter(|i| present[*i]).map(|i| format!("198.18.1.{}", i + 1)).collect();
            let m = macs(&addrs.iter().map(String::as_str).collect::<Vec<_>>());
            let t = build(&cfg, &m, DIRECTOR).unwrap();
            let model = t.host_model();
            let counts: Vec<(u32, u32)> = (0..n).map(|_| (next(4) as u32, next(4) as u32)).collect();
            for (i, slot) in t.slots[0].iter().enumerate() {
                model.adjust_conn_counts(*slot, counts[i].0 as i32, counts[i].1 as i32);
            }
            let client = [198, 18, next(256) as u8, next(256) as u8];
            let cport = next(65536) as u16;
            // IPVS list order: the last configured first.
            let list: Vec<ipvs::Dest> = (0..n)
                .rev()
                .map(|i| ipvs::Dest { weight: weights[i] as i32, active: counts[i].0 as i32, inactive: counts[i].1 as i32, overloaded: !present[i] })
                .collect();
            let port = if port_flag { cport } else { 0 };
            let want = match scheduler {
                "fo" => ipvs::fo(&list),
                "ovf" => ipvs::ovf(&list),
                "twos" => {
                    let rng = model.clone();
                    let (r1, r2) = (rng.random(), rng.random());
                    ipvs::twos(&list, r1, r2)
                }
                "sh" => ipvs::sh_with(&list, client, port, fallback),
                _ => {
                    let mh: Vec<(u32, u16, u32)> = (0..n).rev().map(|i| (u32::from_be_bytes([198, 18, 1, i as u8 + 1]), 80, weights[i])).collect();
                    let lookup = ipvs::mh_kernel_table(&mh, MH_TABLE_SIZE);
                    ipvs::mh_kernel_schedule(&lookup, &list, client, port, fallback)
                }
            };
            let svc = t.services[&0];
            let got = model
                .schedule(0, &svc, &lb_common::addr::v4_mapped(client), cport, &lb_common::addr::v4_mapped([198, 18, 0, 100]))
                .map(|slot| n - 1 - t.slots[0].iter().position(|s| *s == slot).unwrap());
            assert_eq!(got, want, "case {case}: {scheduler} {flags:?} weights {weights:?} present {present:?} counts {counts:?} client {client:?}:{cport}");
        }
    }

    /// lblc and lblcr, end to end, over sequences of new connections to one VIP while the
    /// servers' counts change and time passes (past the expiration too), against
    /// `ip_vs_lblc_schedule()` / `ip_vs_lblcr_schedule()` transcribed in `host::ipvs`.
    #[test]
    fn locality_schedulers_follow_ipvs_over_time() {
        use lb_common::dataplane::Tables as _;
        use lb_common::host::ipvs;
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        let expiration = u64::from(lb_common::maps::LOCALITY_EXPIRATION_S) * 1000;
        for case in 0..300 {
            let scheduler = ["lblc", "lblcr"][case % 2];
            let n = 1 + next(6) as usize;
            let weights: Vec<u32> = (0..n).map(|_| next(4) as u32).collect();
            let present: Vec<bool> = (0..n).map(|_| next(6) != 0).collect();
            let servers: Vec<String> = weights.iter().enumerate().map(|(i, w)| format!("{{ address: 198.18.1.{}, weight: {w} }}", i + 1)).collect();
            let cfg = config(&format!(
                "  - {{ name: s, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: {scheduler}, real_servers: [ {} ] }}\n",
                servers.join(", ")
            ));
            let addrs: Vec<String> = (0..n).filter(|i| present[*i]).map(|i| format!("198.18.1.{}", i + 1)).collect();
            let m = macs(&addrs.iter().map(String::as_str).collect::<Vec<_>>());
            let t = build(&cfg, &m, DIRECTOR).unwrap();
            let model = t.host_model();
            let svc = t.services[&0];
            let (mut lblc, mut lblcr) = (None, None);
            let mut now = 1_000_000u64;
            let mut counts = vec![(0u32, 0u32); n];
            for step in 0..16 {
                now += [1, 1000, expiration / 2, expiration + 1][next(4) as usize];
                model.now.set(now);
                for (i, slot) in t.slots[0].iter().enumerate() {
                    let c = (next(5) as u32, next(3) as u32);
                    model.adjust_conn_counts(*slot, c.0 as i32 - counts[i].0 as i32, c.1 as i32 - counts[i].1 as i32);
                    counts[i] = c;
                }
                let list: Vec<ipvs::Dest> = (0..n)
                    .rev()
                    .map(|i| ipvs::Dest { weight: weights[i] as i32, active: counts[i].0 as i32, inactive: counts[i].1 as i32, overloaded: !present[i] })
                    .collect();
                let want = if scheduler == "lblc" { ipvs::lblc(&list, &mut lblc, now, expiration) } else { ipvs::lblcr(&list, &mut lblcr, now, expiration) };
                let got = model
                    .schedule(0, &svc, &lb_common::addr::v4_mapped([198, 18, 0, 7]), 1000, &lb_common::addr::v4_mapped([198, 18, 0, 100]))
                    .map(|slot| n - 1 - t.slots[0].iter().position(|s| *s == slot).unwrap());
                assert_eq!(got, want, "case {case} step {step}: {scheduler} weights {weights:?} present {present:?} counts {counts:?}");
            }
        }
    }

    /// A group's keys all lead to one service, flagged as a group, known by its least key;
    /// every address is a VIP; a restarted controller finds the same identity again.
    #[test]
    fn a_group_is_one_service_under_every_key() {
        let cfg = config(&TWO.replace("protocol: tcp,", "protocol: tcp, group: [ { vip: 198.18.0.99, port: 443 }, { vip: 198.18.0.101-102 } ],"));
        let m = macs(&["198.18.0.11", "198.18.0.12"]);
        let t = build(&cfg, &m, DIRECTOR).unwrap();
        let key = |a: &str, p: u16| ServiceKey::new(from_ip(a.parse().unwrap()), p, 6);
        let keys = [key("198.18.0.100", 80), key("198.18.0.99", 443), key("198.18.0.101", 80), key("198.18.0.102", 80)];
        assert_eq!(t.service_ids.keys().copied().collect::<BTreeSet<_>>(), keys.into_iter().collect());
        assert!(t.service_ids.values().all(|id| *id == 0));
        assert_eq!(cfg.services[0].identity(), key("198.18.0.99", 443));
        assert_eq!(t.services[&0].flags & SVC_F_GROUP, SVC_F_GROUP);
        assert_eq!(t.vips.len(), 4);
        let recovered = Slots::recover(&t);
        let mut slots = recovered.clone();
        let again = build_with(&cfg, &m, DIRECTOR, &mut slots, &Down::default(), &t).unwrap();
        assert_eq!((&again.service_ids, &again.services, &again.backends), (&t.service_ids, &t.services, &t.backends), "same ids and slots");
        assert!(slots.draining().is_empty(), "nothing retired");
    }

    /// A verdict applied to its service alone gives what a full build gives, touching only
    /// that service's entry, list and backend; one that changes a scheduler table (mh here)
    /// is left to a full build.
    #[test]
    fn a_targeted_update_equals_a_full_build() {
        let text = format!("{TWO}{}", TWO.replace("name: web", "name: api").replace("port: 80", "port: 443"));
        let cfg = config(&text);
        let m = macs(&["198.18.0.11", "198.18.0.12"]);
        let mut slots = Slots::default();
        let t0 = build_with(&cfg, &m, DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap();
        let mut down = Down::default();
        down.insert(("api".into(), "198.18.0.12".parse().unwrap()));
        let mut targeted = t0.clone();
        let mut s1 = slots.clone();
        let changes = update_services(&mut targeted, &cfg, &m, DIRECTOR, &mut s1, &down, &[1]).expect("a wlc verdict is targeted");
        let full = build_with(&cfg, &m, DIRECTOR, &mut slots.clone(), &down, &t0).unwrap();
        assert_eq!((&targeted.services, &targeted.members, &targeted.backends), (&full.services, &full.members, &full.backends));
        let api = t0.service_ids[&ServiceKey::new(from_ip("198.18.0.100".parse().unwrap()), 443, 6)];
        assert_eq!(changes.services, vec![api]);
        assert_eq!(changes.slots, vec![t0.slots[1][1]], "only the server that went down");
        assert_ne!(targeted.services[&api].members_offset, t0.services[&api].members_offset, "its list moved");

        let mh = config(&text.replace("protocol: tcp, real_servers", "protocol: tcp, scheduler: mh, real_servers"));
        let mut slots = Slots::default();
        let mut t = build_with(&mh, &m, DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap();
        let before = t.clone();
        assert_eq!(update_services(&mut t, &mh, &m, DIRECTOR, &mut slots, &down, &[1]), None);
        assert_eq!((&t.services, &t.members, &t.backends), (&before.services, &before.members, &before.backends), "left as it was");

        // A sorry server comes and goes with quorum: a full build's job.
        let sorry = config(&text.replace("protocol: tcp, real_servers", "protocol: tcp, sorry_server: { address: 198.18.0.13 }, real_servers"));
        let mut slots = Slots::default();
        let mut t = build_with(&sorry, &m, DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap();
        assert_eq!(update_services(&mut t, &sorry, &m, DIRECTOR, &mut slots, &down, &[1]), None);
    }

    /// keepalived's quorum with hysteresis 1 around quorum 3: held at start with 4, kept
    /// down to 2, lost at 1 (below 3 - 1), and back only at 4 (3 + 1).
    #[test]
    fn the_quorum_follows_keepalived_hysteresis() {
        let cfg = Config::parse(
            std::path::Path::new("t.yaml"),
            "director: { interface: eth0 }\nservices:\n  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, quorum: 3, quorum_hysteresis: 1, \
             real_servers: [ { address: 198.18.0.11 } ] }\n",
        )
        .unwrap();
        let svc = &cfg.services[0];
        let mut lost = None;
        let mut seen = Vec::new();
        for weight in [4, 3, 2, 1, 2, 3, 4, 2] {
            let next = next_quorum_lost(svc, weight, lost);
            seen.push(next);
            lost = Some(next);
        }
        assert_eq!(seen, [false, false, false, true, true, true, false, false]);
        assert!(next_quorum_lost(svc, 3, None), "at start, held only at quorum + hysteresis");
    }

    /// A health-down server leaves the member list (or, with inhibit_on_failure, stays with
    /// weight 0); an unresolved one stays a member but is not present.
    #[test]
    fn health_and_resolution_shape_membership() {
        let m = macs(&["198.18.0.12"]);
        let mut down = Down::default();
        down.insert(("web".into(), "198.18.0.12".parse().unwrap()));
        let t = build_with(&config(TWO), &m, DIRECTOR, &mut Slots::default(), &down, &MapContent::default()).unwrap();
        assert_eq!(t.services[&0].member_count, 1);
        assert!(!t.backends[&0].is_present(), "198.18.0.11 has no MAC");
        assert_eq!(t.backends[&1].flags & BACKEND_F_HEALTH_DOWN, BACKEND_F_HEALTH_DOWN);
        let inhibit = TWO.replace("protocol: tcp,", "protocol: tcp, inhibit_on_failure: true,");
        let t = build_with(&config(&inhibit), &m, DIRECTOR, &mut Slots::default(), &down, &MapContent::default()).unwrap();
        assert_eq!((t.services[&0].member_count, t.backends[&1].weight), (2, 0));
    }

    /// Live state can take room the file did not: removed servers still draining hold
    /// slots, and a build that needs more fails with the service named, changing nothing.
    #[test]
    fn a_build_that_does_not_fit_is_an_error() {
        let mut text = String::new();
        for s in 0..256 {
            let servers: Vec<String> = (0..256).map(|r| format!("{{ address: 198.19.{}.{} }}", r, s % 250 + 1)).collect();
            text += &format!("  - {{ name: s{s}, vip: 198.18.{}.{}, port: 80, protocol: tcp, real_servers: [ {} ] }}\n", s / 250, s % 250 + 1, servers.join(", "));
        }
        let full = config(&text);
        let mut slots = Slots::default();
        build_with(&full, &HashMap::new(), DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap();
        // Every slot in use; replacing one server means a new slot while the old drains.
        let changed = config(&text.replacen("198.19.0.1 }", "198.19.255.254 }", 1));
        let err = build_with(&changed, &HashMap::new(), DIRECTOR, &mut slots, &Down::default(), &MapContent::default()).unwrap_err();
        assert_eq!(err, BuildError::BackendSlots { service: "s0".into() });
        assert!(err.to_string().contains("no backend slot left"), "{err}");
    }

    #[test]
    fn check_budget_names_the_service_that_does_not_fit() {
        let mut text = String::new();
        for s in 0..17 {
            text += &format!("  - {{ name: m{s}, vip: 198.18.1.{}, port: 80, protocol: tcp, scheduler: mh, real_servers: [ {{ address: 198.18.0.11 }} ] }}\n", s + 1);
        }
        // Tables of the largest common size: 16 fit the scheduler tables' budget.
        let c: Config = serde_yaml::from_str(&format!("director: {{ interface: eth0, mh_table_size: 65521 }}\nservices:\n{text}")).unwrap();
        let problems = check_budget(&c);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "services[16].scheduler");
        assert!(problems[0].1.contains("service `m16`"), "{}", problems[0].1);
    }
}
