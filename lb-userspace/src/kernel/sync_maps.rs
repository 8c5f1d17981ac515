//! Installing what peer directors sync, through the maps: `lb_common::sync::install` over
//! this director's tables. Services, members and real servers are read from what the
//! controller last wrote (no system call); connections, counts and templates from the maps.

use std::cell::RefCell;

use anyhow::{Context as _, Result, bail};
use aya::Ebpf;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use lb_common::conn::{Conn, ConnKey};
use lb_common::halfopen::HalfOpen;
use lb_common::maps::{
    Backend, ConnCounts, Persist, Service, ServiceKey, MAP_CONNS, MAP_CONN_COUNTS, MAP_CONN_EVENTS, MAP_CONN_GEN, MAP_HALF_OPEN,
    MAP_PERSIST, MAP_SYNC_ON,
};
use lb_common::sync::{install, Installed, Skip, SyncTables, SyncedConn};

use crate::kernel::bpf::Dataplane;
use crate::kernel::content::MapContent;

struct Installer<'a> {
    content: &'a MapContent,
    ebpf: RefCell<&'a mut Ebpf>,
}

impl Installer<'_> {
    fn with_map<R>(&self, name: &str, f: impl FnOnce(&mut aya::maps::Map) -> R) -> Option<R> {
        let mut ebpf = self.ebpf.borrow_mut();
        ebpf.map_mut(name).map(f)
    }
}

impl SyncTables for Installer<'_> {
    fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        self.content.service_ids.get(key).copied()
    }
    fn service(&self, id: u32) -> Option<Service> {
        self.content.services.get(&id).copied()
    }
    fn member(&self, index: u32) -> u32 {
        self.content.members.get(&index).copied().unwrap_or(u32::MAX)
    }
    fn backend(&self, slot: u32) -> Option<Backend> {
        self.content.backends.get(&slot).copied()
    }
    fn server_slot(&self, id: u32, _svc: &Service, addr: &lb_common::addr::Addr16) -> Option<u32> {
        // Every configured real server of the service, members or not: a connection to
        // one whose health check failed goes on, on the peer and here.
        let index = self.content.service_id_of.iter().position(|s| *s == id)?;
        self.content.slots.get(index)?.iter().copied().find(|slot| matches!(self.content.backends.get(slot), Some(b) if b.addr == *addr))
    }
    fn with_conn<R>(&self, key: &ConnKey, f: impl FnOnce(Option<&mut Conn>) -> R) -> R {
        let found = self
            .with_map(MAP_CONNS, |m| BpfHashMap::<_, ConnKey, Conn>::try_from(m).ok().and_then(|h| h.get(key, 0).ok()))
            .flatten();
        match found {
            Some(mut c) => {
                // `f` may adjust counts: the map is not borrowed while it runs.
                let r = f(Some(&mut c));
                // A packet may have changed the entry meanwhile; like the sweep, the last
                // writer wins, and the next packet or sweep puts counts right.
                self.insert_conn(key, &c);
                r
            }
            None => f(None),
        }
    }
    fn insert_conn(&self, key: &ConnKey, conn: &Conn) -> bool {
        self.with_map(MAP_CONNS, |m| {
            BpfHashMap::<_, ConnKey, Conn>::try_from(m).map(|mut h| h.insert(key, conn, 0).is_ok()).unwrap_or(false)
        })
        .unwrap_or(false)
    }
    fn adjust_conn_counts(&self, slot: u32, active: i32, inactive: i32) {
        // Not atomic with the program's adds: a packet changing the same server's counts in
        // this instant is lost until the next sweep recounts (within 2 s).
        self.with_map(MAP_CONN_COUNTS, |m| {
            if let Ok(mut a) = Array::<_, ConnCounts>::try_from(m)
                && let Ok(mut c) = a.get(&slot, 0)
            {
                c.active = c.active.saturating_add_signed(active);
                c.inactive = c.inactive.saturating_add_signed(inactive);
                let _ = a.set(slot, c, 0);
            }
        });
    }
    fn bump_conn_generation(&self) {
        self.with_map(MAP_CONN_GEN, |m| {
            if let Ok(mut a) = Array::<_, u32>::try_from(m)
                && let Ok(g) = a.get(&0, 0)
            {
                let _ = a.set(0, g.wrapping_add(1 << 16), 0);
            }
        });
    }
    fn half_open(&self, slot: u32) -> Option<HalfOpen> {
        self.with_map(MAP_HALF_OPEN, |m| Array::<_, HalfOpen>::try_from(m).ok().and_then(|a| a.get(&slot, 0).ok())).flatten()
    }
    fn set_half_open(&self, slot: u32, entry: &HalfOpen) {
        // Not atomic with the program's writes: a SYN taking this way in the same instant
        // is overwritten (its connection then fails as if the SYN were lost).
        self.with_map(MAP_HALF_OPEN, |m| {
            if let Ok(mut a) = Array::<_, HalfOpen>::try_from(m) {
                let _ = a.set(slot, *entry, 0);
            }
        });
    }
    fn insert_persist(&self, key: &ConnKey, value: &Persist) {
        self.with_map(MAP_PERSIST, |m| {
            if let Ok(mut h) = BpfHashMap::<_, ConnKey, Persist>::try_from(m) {
                let _ = h.insert(key, value, 0);
            }
        });
    }
}

impl Dataplane {
    /// Installs connections a peer reported, at dataplane time `now`: one result each.
    pub fn install_synced(&mut self, records: &[SyncedConn], now: u64) -> Vec<Result<Installed, Skip>> {
        let Dataplane { ebpf, applied, .. } = self;
        let installer = Installer { content: applied, ebpf: RefCell::new(ebpf) };
        records.iter().map(|r| install(&installer, r, now)).collect()
    }

    /// Switches the program's connection reports (for sync) on or off.
    pub fn set_conn_events(&mut self, on: bool) -> Result<()> {
        let m = match self.ebpf.map_mut(MAP_SYNC_ON) {
            Some(m) => m,
            None => bail!("map {MAP_SYNC_ON} missing from the object"),
        };
        let mut a: Array<&mut MapData, u32> = Array::try_from(m)?;
        a.set(0, on as u32, 0).context("switching connection reports")
    }

    /// The ring the program reports connections to; taken once, by sync.
    pub fn take_conn_events(&mut self) -> Result<RingBuf<MapData>> {
        let m = self.ebpf.take_map(MAP_CONN_EVENTS).with_context(|| format!("map {MAP_CONN_EVENTS} missing (taken already?)"))?;
        Ok(RingBuf::try_from(m)?)
    }
}
