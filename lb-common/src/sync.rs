//! Connections installed by sync: what a peer director reports (decoded from IPVS's sync
//! protocol) becomes an entry of this director's connection table or persistence
//! templates, mapped onto this director's own services and real-server slots.
//!
//! Written once, like the forwarding decision: the controller installs through the BPF
//! maps and the host model through its collections, and the fixture tables check that the
//! packets that follow an install are forwarded alike.

use crate::addr::Addr16;
use crate::conn::{tcp, Conn, ConnKey, CONN_F_INACTIVE, CONN_F_SYNCED};
use crate::dataplane::Tables;
use crate::halfopen::HalfOpen;
use crate::maps::{
    Backend, Persist, Service, ServiceKey, IPPROTO_TCP, IPPROTO_UDP, MAX_BACKENDS_PER_SERVICE, SVC_F_PERSISTENT,
};

/// One connection (or persistence template) as a peer reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyncedConn {
    /// Client, VIP, ports and protocol. A template has client port 0 and the client
    /// address as the peer masked it.
    pub key: ConnKey,
    /// The real server's address and port.
    pub server: Addr16,
    pub server_port: u16,
    /// IPVS state (TCP: [`tcp`]; UDP: 0).
    pub state: u8,
    /// Counted in the real server's InActConn (IPVS `IP_VS_CONN_F_INACTIVE`).
    pub inactive: bool,
    /// A persistence template, not a connection.
    pub template: bool,
    /// The peer's timeout for the entry's state, seconds (0: this director's own).
    pub timeout_s: u32,
}

/// Why a reported connection was not installed. Never guessed: a connection for a service
/// or real server this director does not have is left alone and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No service here for the VIP, port and protocol (or a template for a service that is
    /// not persistent here).
    NoService,
    /// The service here has no real server with that address and port.
    NoRealServer,
    /// A protocol drlb does not balance, or a state outside IPVS's table for it.
    BadState,
    /// The connection table had no room.
    TableFull,
    /// An inactive report for another real server than this director's entry has: the
    /// expiry of a connection already replaced here (IPVS ignores it too).
    Stale,
}

/// What an install did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// A new entry.
    New,
    /// The entry existed with the same real server: its state and timer were updated.
    Updated,
    /// The entry existed with another real server and the report is active: replaced by
    /// the peer's (IPVS expires its own entry and takes the synced one).
    Moved,
    /// A persistence template was written.
    Template,
}

/// What installing needs of the maps: a subset of [`Tables`], which every [`Tables`] has.
pub trait SyncTables {
    fn service_id(&self, key: &ServiceKey) -> Option<u32>;
    fn service(&self, id: u32) -> Option<Service>;
    fn member(&self, index: u32) -> u32;
    fn backend(&self, slot: u32) -> Option<Backend>;
    /// The slot of service `id`'s real server at `addr`, among all it has configured —
    /// also those that take no new connections now (health check failed, draining, MAC
    /// not yet resolved), whose existing connections go on. The default searches the
    /// member list, which is what the host model has.
    fn server_slot(&self, _id: u32, svc: &Service, addr: &Addr16) -> Option<u32> {
        let count = if svc.member_count < MAX_BACKENDS_PER_SERVICE { svc.member_count } else { MAX_BACKENDS_PER_SERVICE };
        (0..count).map(|i| self.member(svc.members_offset + i)).find(|&slot| matches!(self.backend(slot), Some(b) if b.addr == *addr))
    }
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R;
    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool;
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32);
    fn bump_conn_generation(&self);
    fn insert_persist(&self, key: &ConnKey, value: &Persist);
    /// Entry `slot` of the half-open table ([`crate::halfopen`]).
    fn half_open(&self, slot: u32) -> Option<HalfOpen>;
    fn set_half_open(&self, slot: u32, entry: &HalfOpen);
}

impl<T: Tables> SyncTables for T {
    fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        Tables::service_id(self, key)
    }
    fn service(&self, id: u32) -> Option<Service> {
        Tables::service(self, id)
    }
    fn member(&self, index: u32) -> u32 {
        Tables::member(self, index)
    }
    fn backend(&self, slot: u32) -> Option<Backend> {
        Tables::backend(self, slot)
    }
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R {
        Tables::with_conn(self, key, f)
    }
    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool {
        Tables::insert_conn(self, key, conn)
    }
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32) {
        Tables::adjust_conn_counts(self, slot, active, inactive)
    }
    fn bump_conn_generation(&self) {
        Tables::bump_conn_generation(self)
    }
    fn insert_persist(&self, key: &ConnKey, value: &Persist) {
        Tables::insert_persist(self, key, value)
    }
    fn half_open(&self, slot: u32) -> Option<HalfOpen> {
        Tables::half_open(self, slot)
    }
    fn set_half_open(&self, slot: u32, entry: &HalfOpen) {
        Tables::set_half_open(self, slot, entry)
    }
}

/// ActiveConn/InActConn deltas of one entry.
fn counts(inactive: bool) -> (i32, i32) {
    if inactive { (0, 1) } else { (1, 0) }
}

/// Installs what a peer reported, at dataplane time `now` (ticks), as IPVS's backup does
/// (`ip_vs_proc_conn()`): found by VIP, port and protocol; bound to the real server with
/// the reported address; counted in its ActiveConn or InActConn by the reported flag;
/// timed out after the reported timeout, or this director's own for the state.
pub fn install<T: SyncTables>(t: &T, rec: &SyncedConn, now: u64) -> Result<Installed, Skip> {
    let k = &rec.key;
    if !rec.template {
        let valid = match k.proto {
            IPPROTO_TCP => (rec.state as usize) < tcp::COUNT,
            IPPROTO_UDP => rec.state == 0,
            _ => false,
        };
        if !valid {
            return Err(Skip::BadState);
        }
    }
    let id = match t.service_id(&ServiceKey::new(k.vip, k.vport, k.proto)) {
        Some(id) => id,
        None => t.service_id(&ServiceKey::new(k.vip, 0, k.proto)).ok_or(Skip::NoService)?,
    };
    let svc = t.service(id).ok_or(Skip::NoService)?;
    // DR cannot change the port: the real server listens on the service's.
    if rec.server_port != k.vport && k.vport != 0 {
        return Err(Skip::NoRealServer);
    }
    let slot = t.server_slot(id, &svc, &rec.server).ok_or(Skip::NoRealServer)?;
    if rec.template {
        if svc.flags & SVC_F_PERSISTENT == 0 {
            return Err(Skip::NoService);
        }
        let tkey = svc.template_key(&k.client, &k.vip, k.vport, k.proto);
        t.insert_persist(&tkey, &Persist { last_used: now, backend: slot, _pad: 0 });
        return Ok(Installed::Template);
    }
    let secs = if rec.timeout_s > 0 {
        rec.timeout_s
    } else if k.proto == IPPROTO_TCP {
        svc.timeouts.tcp(rec.state)
    } else {
        svc.timeouts.udp
    };
    let flags = CONN_F_SYNCED | if rec.inactive { CONN_F_INACTIVE } else { 0 };
    let fresh = Conn { last_seen: now, backend: slot, service: id, timeout: svc.ticks(secs), state: rec.state, flags, order: 0 };
    let done = t.with_conn(k, |entry| match entry {
        Some(c) if c.backend == slot => {
            if c.is_inactive() != rec.inactive {
                let (a0, i0) = counts(c.is_inactive());
                let (a1, i1) = counts(rec.inactive);
                t.adjust_conn_counts(slot, a1 - a0, i1 - i0);
            }
            c.state = fresh.state;
            c.timeout = fresh.timeout;
            c.service = id;
            c.flags = fresh.flags;
            c.last_seen = c.last_seen.max(now);
            Some(Ok(Installed::Updated))
        }
        // `ip_vs_proc_conn()`: an inactive report for another server is the expiry of a
        // connection this director already replaced.
        Some(_) if rec.inactive => Some(Err(Skip::Stale)),
        Some(c) => {
            let (a0, i0) = counts(c.is_inactive());
            t.adjust_conn_counts(c.backend, -a0, -i0);
            let (a1, i1) = counts(rec.inactive);
            t.adjust_conn_counts(slot, a1, i1);
            *c = fresh;
            Some(Ok(Installed::Moved))
        }
        None => None,
    });
    let installed = match done {
        Some(Ok(Installed::Moved)) => {
            // CPUs may cache the entry with its old real server.
            t.bump_conn_generation();
            Installed::Moved
        }
        Some(done) => done?,
        None => {
            let (a, i) = counts(rec.inactive);
            t.adjust_conn_counts(slot, a, i);
            if !t.insert_conn(k, &fresh) {
                t.adjust_conn_counts(slot, -a, -i);
                return Err(Skip::TableFull);
            }
            Installed::New
        }
    };
    // The connection may be half-open here too (the VIP moved during its handshake): the
    // table's entry now stands, and the packets that find it never look at the half-open
    // table, so the twin goes now, with its count.
    if k.proto == IPPROTO_TCP {
        let held = crate::halfopen::scan(k, now, |s| t.half_open(s)).held;
        if held != crate::halfopen::NO_SLOT
            && let Some(twin) = t.half_open(held)
        {
            let (a, i) = counts(twin.conn.is_inactive());
            t.adjust_conn_counts(twin.conn.backend, -a, -i);
            t.set_half_open(held, &HalfOpen::EMPTY);
        }
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::v4_mapped;
    use crate::dataplane::process;
    use crate::host::HostTables;
    use crate::maps::{Vip, BACKEND_F_PRESENT};
    use crate::verdict::Verdict;
    use std::vec::Vec;

    const VIP: [u8; 4] = [198, 18, 0, 100];
    const RS: [[u8; 4]; 2] = [[198, 18, 0, 11], [198, 18, 0, 12]];
    const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0x11], [2, 0, 0, 0, 0, 0x12]];

    /// One VIP, TCP port 80, two real servers in slots 0 and 1.
    fn tables(flags: u32) -> HostTables {
        let mut t = HostTables::default();
        t.vips.insert(v4_mapped(VIP), Vip { flags: 0 });
        t.service_ids.insert(ServiceKey::new(v4_mapped(VIP), 80, IPPROTO_TCP), 0);
        t.services.insert(
            0,
            Service { members_offset: 0, member_count: 2, flags, persist_timeout_s: 300, persist_mask: [0xff; 16], ticks_per_sec: 1000, ..Default::default() },
        );
        t.members.extend([(0, 0), (1, 1)]);
        for i in 0..2 {
            t.backends.insert(i as u32, Backend::new(v4_mapped(RS[i]), MACS[i], [2, 0, 0, 0, 0, 2], 1, BACKEND_F_PRESENT));
        }
        t
    }

    fn key(cport: u16) -> ConnKey {
        ConnKey { client: v4_mapped([198, 18, 0, 10]), vip: v4_mapped(VIP), cport, vport: 80, proto: IPPROTO_TCP, _pad: [0; 3] }
    }

    fn rec(cport: u16, rs: usize, state: u8) -> SyncedConn {
        SyncedConn { key: key(cport), server: v4_mapped(RS[rs]), server_port: 80, state, inactive: state != tcp::ESTABLISHED, template: false, timeout_s: 0 }
    }

    fn ack(cport: u16) -> Vec<u8> {
        let mut f = std::vec![0xaau8; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0, 198, 18, 0, 10]);
        f.extend_from_slice(&VIP);
        f.extend_from_slice(&cport.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, tcp::FLAG_ACK, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn a_synced_connection_carries_its_packets_to_the_reported_server() {
        let t = tables(0);
        t.now.set(5);
        assert_eq!(install(&t, &rec(40000, 1, tcp::ESTABLISHED), 5), Ok(Installed::New));
        assert_eq!(t.counts.borrow()[&1], crate::maps::ConnCounts { active: 1, inactive: 0 });
        let c = t.conns.borrow()[&key(40000)];
        assert_eq!((c.backend, c.state, c.flags & CONN_F_SYNCED != 0, c.timeout), (1, tcp::ESTABLISHED, true, 900 * 1000));
        // Without the entry this ACK would be dropped as drop_no_connection.
        let mut f = ack(40000);
        assert_eq!(process(f.as_mut_slice(), &t), Verdict::TxForwarded);
        assert_eq!(&f[..6], &MACS[1]);
        assert_eq!(t.conns.borrow()[&key(40000)].flags & CONN_F_SYNCED, 0, "a packet here makes it this director's own");
        let mut f = ack(40001);
        assert_eq!(process(f.as_mut_slice(), &t), Verdict::DropNoConnection);
    }

    #[test]
    fn updates_move_counts_and_other_servers_replace_the_entry() {
        let t = tables(0);
        install(&t, &rec(40000, 0, tcp::SYN_RECV), 1).unwrap();
        assert_eq!(t.counts.borrow()[&0], crate::maps::ConnCounts { active: 0, inactive: 1 });
        assert_eq!(install(&t, &rec(40000, 0, tcp::ESTABLISHED), 2), Ok(Installed::Updated));
        assert_eq!(t.counts.borrow()[&0], crate::maps::ConnCounts { active: 1, inactive: 0 });
        let generation = t.conn_generation.get();
        assert_eq!(install(&t, &rec(40000, 1, tcp::FIN_WAIT), 3), Err(Skip::Stale), "an inactive report for another server is an old expiry");
        assert_eq!(install(&t, &rec(40000, 1, tcp::ESTABLISHED), 3), Ok(Installed::Moved));
        assert_eq!(t.counts.borrow()[&0], crate::maps::ConnCounts { active: 0, inactive: 0 });
        assert_eq!(t.counts.borrow()[&1], crate::maps::ConnCounts { active: 1, inactive: 0 });
        assert_ne!(t.conn_generation.get(), generation, "flow caches holding the old server are invalidated");
    }

    #[test]
    fn unknown_services_servers_and_states_are_skipped_not_guessed() {
        let t = tables(0);
        let mut r = rec(1, 0, tcp::ESTABLISHED);
        r.key.vport = 443;
        assert_eq!(install(&t, &r, 1), Err(Skip::NoService));
        let mut r = rec(1, 0, tcp::ESTABLISHED);
        r.server = v4_mapped([198, 18, 0, 99]);
        assert_eq!(install(&t, &r, 1), Err(Skip::NoRealServer));
        let mut r = rec(1, 0, tcp::ESTABLISHED);
        r.server_port = 8080;
        assert_eq!(install(&t, &r, 1), Err(Skip::NoRealServer));
        assert_eq!(install(&t, &rec(1, 0, tcp::COUNT as u8), 1), Err(Skip::BadState));
        let mut r = rec(1, 0, 0);
        r.key.proto = 132;
        assert_eq!(install(&t, &r, 1), Err(Skip::BadState));
        let mut r = rec(1, 0, 0);
        r.template = true;
        assert_eq!(install(&t, &r, 1), Err(Skip::NoService), "a template for a service not persistent here");
        assert!(t.conns.borrow().is_empty() && t.persist.borrow().is_empty());
    }

    #[test]
    fn a_synced_template_pins_new_connections_of_the_client() {
        let t = tables(SVC_F_PERSISTENT);
        let mut r = rec(0, 1, 0);
        r.template = true;
        t.now.set(1);
        assert_eq!(install(&t, &r, 1), Ok(Installed::Template));
        // A SYN from the same client goes where the template says, whatever wlc would pick.
        let mut f = ack(40002);
        f[47] = tcp::FLAG_SYN;
        assert_eq!(process(f.as_mut_slice(), &t), Verdict::TxScheduled);
        assert_eq!(&f[..6], &MACS[1]);
    }
}
