//! Connection sync between directors, in IPVS's protocol ([`wire`]).
//!
//! Every director runs both roles at once (IPVS runs master or backup, or two daemons):
//! - **Sending.** The XDP program reports each new connection and each state change to a
//!   ring buffer (`DRLB_CONN_EVENTS`; established packets never touch it). A task turns
//!   them into records — with the persistence template first, for a persistent service —
//!   and sends them batched, at most [`RING_POLL`] + [`FLUSH_AFTER`] after the packet. Each
//!   connection this director forwards is also re-announced once per `refresh_period`
//!   while it has packets ([`due_for_refresh`]), so a peer's copy never expires first.
//! - **Receiving.** A task decodes datagrams whole (a bad one installs nothing and is
//!   counted by reason), and hands records to the controller, which installs them with
//!   `lb_common::sync::install`, mapping each real server by address to its own slot.
//!
//! Sync, like IPVS's, is unauthenticated: it belongs on a trusted segment, and `peers`
//! limits whose datagrams are read.

pub mod wire;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use lb_common::addr::{from_ip, to_ip, Addr16};
use lb_common::conn::{ConnKey, CONN_F_INACTIVE, CONN_F_SYNCED, Conn};
use lb_common::maps::{ConnEvent, Service, IPPROTO_TCP, SVC_F_PERSISTENT};
use lb_common::sync::{Installed, Skip, SyncedConn};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::control::config::SyncConfig;
use crate::kernel::content::MapContent;
use wire::{DecodeError, Record};

/// The longest a record waits for others to share its datagram.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// Decoded datagrams waiting for the controller; more are dropped (and counted) rather
/// than queued, so a flood never grows memory or stalls the controller.
const INBOX_MESSAGES: usize = 256;
/// Records waiting to be sent.
const OUTBOX_BATCHES: usize = 4096;
/// Peers remembered for status (the most recently heard).
const MAX_PEERS_SHOWN: usize = 16;
/// The largest datagram sent, whatever the MTU: what the kernel's IPVS sends and the
/// least its backup reads (1500 − IP and UDP headers).
const MAX_DATAGRAM: usize = 1472;

/// What sync counts. One list: metrics, `drlb status` and the state file use these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    MessagesSent,
    RecordsSent,
    SendErrors,
    MessagesReceived,
    RecordsReceived,
    Installed,
    Updated,
    Moved,
    Templates,
    /// Ring events the sender could not queue (it was behind).
    EventsLost,
    // Datagrams refused whole.
    ShortHeader,
    BadSize,
    BadVersion,
    WrongSyncid,
    Truncated,
    NotAPeer,
    Overload,
    // Records not installed.
    NoService,
    NoRealServer,
    BadState,
    TableFull,
    Stale,
    /// Records skipped inside an otherwise good datagram (an unknown mandatory option, a
    /// malformed option, an unknown address type), as the kernel skips them.
    BadRecord,
}

impl Counter {
    pub const ALL: [Counter; 23] = [
        Counter::MessagesSent,
        Counter::RecordsSent,
        Counter::SendErrors,
        Counter::MessagesReceived,
        Counter::RecordsReceived,
        Counter::Installed,
        Counter::Updated,
        Counter::Moved,
        Counter::Templates,
        Counter::EventsLost,
        Counter::ShortHeader,
        Counter::BadSize,
        Counter::BadVersion,
        Counter::WrongSyncid,
        Counter::Truncated,
        Counter::NotAPeer,
        Counter::Overload,
        Counter::NoService,
        Counter::NoRealServer,
        Counter::BadState,
        Counter::TableFull,
        Counter::Stale,
        Counter::BadRecord,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::MessagesSent => "messages_sent",
            Counter::RecordsSent => "records_sent",
            Counter::SendErrors => "send_errors",
            Counter::MessagesReceived => "messages_received",
            Counter::RecordsReceived => "records_received",
            Counter::Installed => "installed",
            Counter::Updated => "updated",
            Counter::Moved => "moved",
            Counter::Templates => "templates",
            Counter::EventsLost => "events_lost",
            Counter::ShortHeader => DecodeError::ShortHeader.name(),
            Counter::BadSize => DecodeError::BadSize.name(),
            Counter::BadVersion => DecodeError::BadVersion.name(),
            Counter::WrongSyncid => DecodeError::WrongSyncid.name(),
            Counter::Truncated => DecodeError::Truncated.name(),
            Counter::NotAPeer => "not_a_peer",
            Counter::Overload => "overload",
            Counter::NoService => "no_service",
            Counter::NoRealServer => "no_real_server",
            Counter::BadState => "bad_state",
            Counter::TableFull => "table_full",
            Counter::Stale => "stale",
            Counter::BadRecord => "bad_record",
        }
    }

    /// Whether it counts a problem — input refused, records left out, a failed send, a
    /// lost event (`drlb status --reasons`, `drlb_sync_rejected_total`) — rather than
    /// normal work (`drlb_sync_total`).
    pub fn is_rejection(self) -> bool {
        !matches!(
            self,
            Counter::MessagesSent
                | Counter::RecordsSent
                | Counter::MessagesReceived
                | Counter::RecordsReceived
                | Counter::Installed
                | Counter::Updated
                | Counter::Moved
                | Counter::Templates
        )
    }

    fn of_decode(e: DecodeError) -> Counter {
        match e {
            DecodeError::ShortHeader => Counter::ShortHeader,
            DecodeError::BadSize => Counter::BadSize,
            DecodeError::BadVersion => Counter::BadVersion,
            DecodeError::WrongSyncid => Counter::WrongSyncid,
            DecodeError::Truncated => Counter::Truncated,
        }
    }

    pub fn of_install(r: Result<Installed, Skip>) -> Counter {
        match r {
            Ok(Installed::New) => Counter::Installed,
            Ok(Installed::Updated) => Counter::Updated,
            Ok(Installed::Moved) => Counter::Moved,
            Ok(Installed::Template) => Counter::Templates,
            Err(Skip::NoService) => Counter::NoService,
            Err(Skip::NoRealServer) => Counter::NoRealServer,
            Err(Skip::BadState) => Counter::BadState,
            Err(Skip::TableFull) => Counter::TableFull,
            Err(Skip::Stale) => Counter::Stale,
        }
    }
}

/// Sync's counters, shared by its tasks and the controller.
#[derive(Debug, Default)]
pub struct Counters {
    values: [AtomicU64; Counter::ALL.len()],
    /// When each peer's last good datagram came (Unix seconds).
    peers_seen: Mutex<BTreeMap<IpAddr, u64>>,
}

impl Counters {
    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Non-zero counters by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        Counter::ALL.iter().filter(|c| self.get(**c) > 0).map(|c| (c.name().to_string(), self.get(*c))).collect()
    }

    pub fn peers_seen(&self) -> BTreeMap<IpAddr, u64> {
        self.peers_seen.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn saw_peer(&self, peer: IpAddr) {
        if let Ok(mut m) = self.peers_seen.lock() {
            // Bounded: anyone may send a valid datagram (sync is unauthenticated).
            if !m.contains_key(&peer) && m.len() >= MAX_PEERS_SHOWN {
                if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                    m.remove(&oldest);
                }
            }
            m.insert(peer, crate::observe::state::unix_now());
        }
    }
}

/// What naming a connection for a peer needs of the tables: each service and each real
/// server's address, by the ids the dataplane reports.
#[derive(Debug, Clone, Default)]
pub struct Names {
    services: BTreeMap<u32, Service>,
    servers: BTreeMap<u32, Addr16>,
}

impl Names {
    pub fn new(content: &MapContent) -> Names {
        Names {
            services: content.services.clone(),
            servers: content.backends.iter().map(|(slot, b)| (*slot, b.addr)).collect(),
        }
    }

    /// The records announcing a connection: its persistence template first when the
    /// service is persistent and `with_template` (as IPVS sends a connection's control
    /// template before it), then the connection. Empty for ids these tables do not have.
    pub fn records(&self, key: &ConnKey, backend: u32, service: u32, state: u8, flags: u8, with_template: bool) -> Vec<Record> {
        let (Some(svc), Some(server)) = (self.services.get(&service), self.servers.get(&backend)) else { return Vec::new() };
        let (Some(caddr), Some(vaddr), Some(daddr)) = (to_ip(&key.client), to_ip(&key.vip), to_ip(server)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        if with_template && svc.flags & SVC_F_PERSISTENT != 0 {
            let t = svc.template_key(&key.client, &key.vip, key.vport, key.proto);
            // A group's template is the service's, not the VIP's: it goes out under the
            // connection's own VIP and port, which the peer maps to the same service and
            // from there to the same template.
            let vport = if svc.flags & lb_common::maps::SVC_F_GROUP != 0 { key.vport } else { t.vport };
            if let Some(tclient) = to_ip(&t.client) {
                out.push(Record {
                    protocol: key.proto,
                    flags: wire::flags::TEMPLATE | wire::flags::DROUTE,
                    state: 0,
                    cport: 0,
                    vport,
                    dport: vport,
                    fwmark: 0,
                    timeout: svc.persist_timeout_s,
                    caddr: tclient,
                    vaddr,
                    daddr,
                });
            }
        }
        let timeout = if key.proto == IPPROTO_TCP { svc.timeouts.tcp(state) } else { svc.timeouts.udp };
        out.push(Record {
            protocol: key.proto,
            flags: wire::flags::DROUTE | if flags & CONN_F_INACTIVE != 0 { wire::flags::INACTIVE } else { 0 },
            state: state as u16,
            cport: key.cport,
            vport: key.vport,
            dport: key.vport,
            fwmark: 0,
            timeout,
            caddr,
            vaddr,
            daddr,
        });
        out
    }

    pub fn of_event(&self, ev: &ConnEvent) -> Vec<Record> {
        self.records(&ev.key, ev.backend, ev.service, ev.state, ev.flags, ev.new_conn != 0)
    }
}

/// A record as `lb_common::sync::install` takes it. States beyond a byte are passed as
/// 255, which every protocol's check refuses.
pub fn synced(r: &Record) -> SyncedConn {
    let template = r.flags & wire::flags::TEMPLATE != 0;
    SyncedConn {
        key: ConnKey {
            client: from_ip(r.caddr),
            vip: from_ip(r.vaddr),
            cport: r.cport,
            vport: r.vport,
            proto: r.protocol,
            _pad: [0; 3],
        },
        server: from_ip(r.daddr),
        server_port: r.dport,
        state: u8::try_from(r.state).unwrap_or(u8::MAX),
        inactive: r.flags & wire::flags::INACTIVE != 0,
        template,
        timeout_s: r.timeout,
    }
}

/// Whether the sweep at `now` (ticks; the previous one at `prev`) re-announces `conn`: a
/// connection this director forwards (not one a peer installed that saw no packet here),
/// that had a packet within the last period, whose turn — a fixed point of the period
/// taken from its key, so announcements spread evenly — fell since the previous sweep.
pub fn due_for_refresh(key: &ConnKey, conn: &Conn, prev: u64, now: u64, period: u64) -> bool {
    // Packets within the last period and this sweep's window: a packet just after the
    // previous turn is still announced at this one, however late in the window it falls.
    let recent = now.saturating_sub(conn.last_seen) <= period + now.saturating_sub(prev);
    if conn.flags & CONN_F_SYNCED != 0 || period == 0 || !recent || conn.expired(now) {
        return false;
    }
    if now.saturating_sub(prev) >= period {
        return true;
    }
    let w = key.words();
    let turn = (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[4]).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let (turn, a, b) = (turn % period, prev % period, now % period);
    if a <= b { turn > a && turn <= b } else { turn > a || turn <= b }
}

/// The running sync: its tasks, and what the controller talks to them through.
pub struct Sync {
    pub counters: Arc<Counters>,
    /// Decoded records from peers, one datagram per item, for the controller to install.
    pub inbox: mpsc::Receiver<Vec<SyncedConn>>,
    outbox: mpsc::Sender<Vec<Record>>,
    names: watch::Sender<Arc<Names>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub description: String,
}

/// Where sync sends: the multicast group, or each unicast peer.
fn destinations(cfg: &SyncConfig) -> Vec<SocketAddr> {
    if cfg.peers.is_empty() {
        vec![SocketAddr::V4(SocketAddrV4::new(cfg.group, cfg.port))]
    } else {
        cfg.peers.iter().map(|p| SocketAddr::new(*p, cfg.port)).collect()
    }
}

/// The UDP socket: bound to the sync interface and port, in the group unless unicast.
fn socket(cfg: &SyncConfig, ifindex: u32, local: Option<Ipv4Addr>) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).context("creating the sync socket")?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(cfg.interface.as_bytes()))
        .with_context(|| format!("binding the sync socket to {}", cfg.interface))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, cfg.port)).into())
        .with_context(|| format!("binding the sync socket to UDP port {} (is an IPVS sync daemon running here?)", cfg.port))?;
    if cfg.peers.is_empty() {
        s.join_multicast_v4_n(&cfg.group, &socket2::InterfaceIndexOrAddress::Index(ifindex))
            .with_context(|| format!("joining {} on {}", cfg.group, cfg.interface))?;
        if let Some(a) = local {
            s.set_multicast_if_v4(&a)?;
        }
        s.set_multicast_loop_v4(false)?;
        // IPVS's default (sync_mcast_ttl 1): sync stays on the segment.
        s.set_multicast_ttl_v4(1)?;
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into()).context("registering the sync socket")
}

impl Sync {
    /// Starts sync on `cfg.interface` (index `ifindex`, MTU `mtu`, addresses `own`),
    /// reading connection events from `ring`.
    pub fn start(cfg: &SyncConfig, ifindex: u32, mtu: u32, own: Vec<IpAddr>, ring: RingBuf<MapData>, names: Names) -> Result<Sync> {
        let local = own.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        });
        let sock = Arc::new(socket(cfg, ifindex, local)?);
        let counters = Arc::new(Counters::default());
        let (names_tx, names_rx) = watch::channel(Arc::new(names));
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX_BATCHES);
        let (inbox_tx, inbox) = mpsc::channel(INBOX_MESSAGES);
        // IP and UDP headers.
        let max_len = (mtu as usize).saturating_sub(28).min(MAX_DATAGRAM);
        let tasks = vec![
            tokio::spawn(read_events(ring, names_rx, outbox.clone(), counters.clone())),
            tokio::spawn(send(sock.clone(), outbox_rx, destinations(cfg), cfg.syncid, max_len, counters.clone())),
            tokio::spawn(receive(sock, cfg.syncid, cfg.peers.clone(), own, inbox_tx, counters.clone())),
        ];
        let description = if cfg.peers.is_empty() {
            format!("syncid {} on {} via {}:{}", cfg.syncid, cfg.interface, cfg.group, cfg.port)
        } else {
            let peers: Vec<String> = cfg.peers.iter().map(|p| p.to_string()).collect();
            format!("syncid {} on {} with peers {} port {}", cfg.syncid, cfg.interface, peers.join(", "), cfg.port)
        };
        Ok(Sync { counters, inbox, outbox, names: names_tx, tasks, description })
    }

    /// The tables changed: new slots and services to name connections by.
    pub fn set_names(&self, names: Names) {
        self.names.send_replace(Arc::new(names));
    }

    /// Queues records (re-announcements) for sending; counted as lost if the sender is
    /// behind.
    pub fn announce(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        if self.outbox.try_send(records).is_err() {
            self.counters.add(Counter::EventsLost, n);
        }
    }

    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Sync {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How often the event ring is read. The program submits without waking anyone (a wakeup
/// would cost every new connection more than its report), so the reader polls.
pub const RING_POLL: Duration = Duration::from_millis(5);

/// Ring events → records for the sender.
async fn read_events(
    mut ring: RingBuf<MapData>,
    names: watch::Receiver<Arc<Names>>,
    outbox: mpsc::Sender<Vec<Record>>,
    counters: Arc<Counters>,
) {
    let mut tick = tokio::time::interval(RING_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let names = names.borrow().clone();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<ConnEvent>() {
                continue;
            }
            // SAFETY: the program writes whole ConnEvents; read_unaligned copies one out.
            let ev: ConnEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ConnEvent) };
            batch.extend(names.of_event(&ev));
            if batch.len() >= wire::MAX_RECORDS {
                queue(&outbox, std::mem::take(&mut batch), &counters);
            }
        }
        queue(&outbox, batch, &counters);
    }
}

fn queue(outbox: &mpsc::Sender<Vec<Record>>, batch: Vec<Record>, counters: &Counters) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    if outbox.try_send(batch).is_err() {
        counters.add(Counter::EventsLost, n);
    }
}

/// Batches records into datagrams: sent when one is full or [`FLUSH_AFTER`] after the
/// first record of a batch.
async fn send(
    sock: Arc<UdpSocket>,
    mut outbox: mpsc::Receiver<Vec<Record>>,
    to: Vec<SocketAddr>,
    syncid: u8,
    max_len: usize,
    counters: Arc<Counters>,
) {
    let mut pending: Vec<Record> = Vec::new();
    let per_message = ((max_len.saturating_sub(wire::HEADER_LEN)) / wire::V4_LEN).clamp(1, wire::MAX_RECORDS);
    // When the oldest pending record must be sent: FLUSH_AFTER after it came, however
    // many come after it.
    let mut deadline = tokio::time::Instant::now();
    loop {
        let got = if pending.is_empty() {
            outbox.recv().await
        } else {
            tokio::select! {
                r = outbox.recv() => r,
                _ = tokio::time::sleep_until(deadline) => {
                    flush(&sock, &mut pending, &to, syncid, max_len, &counters).await;
                    continue;
                }
            }
        };
        let Some(records) = got else { return };
        if pending.is_empty() {
            deadline = tokio::time::Instant::now() + FLUSH_AFTER;
        }
        pending.extend(records);
        if pending.len() >= per_message {
            flush(&sock, &mut pending, &to, syncid, max_len, &counters).await;
        }
    }
}

async fn flush(sock: &UdpSocket, pending: &mut Vec<Record>, to: &[SocketAddr], syncid: u8, max_len: usize, counters: &Counters) {
    for msg in wire::encode(pending, syncid, max_len) {
        for dest in to {
            match sock.send_to(&msg, dest).await {
                Ok(_) => {
                    counters.add(Counter::MessagesSent, 1);
                    counters.add(Counter::RecordsSent, msg[4] as u64);
                }
                Err(e) => {
                    counters.add(Counter::SendErrors, 1);
                    debug!("connection sync: sending to {dest}: {e}");
                }
            }
        }
    }
    pending.clear();
}

/// Datagrams from peers → decoded records for the controller.
async fn receive(
    sock: Arc<UdpSocket>,
    syncid: u8,
    peers: Vec<IpAddr>,
    own: Vec<IpAddr>,
    inbox: mpsc::Sender<Vec<SyncedConn>>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                warn!("connection sync: receiving: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let src = from.ip();
        if own.contains(&src) {
            continue;
        }
        if !peers.is_empty() && !peers.contains(&src) {
            counters.add(Counter::NotAPeer, 1);
            continue;
        }
        match wire::decode(&buf[..n], syncid) {
            Err(e) => counters.add(Counter::of_decode(e), 1),
            Ok(wire::Decoded { records, skipped }) => {
                counters.add(Counter::MessagesReceived, 1);
                counters.add(Counter::RecordsReceived, records.len() as u64);
                counters.add(Counter::BadRecord, skipped as u64);
                counters.saw_peer(src);
                if inbox.try_send(records.iter().map(synced).collect()).is_err() {
                    counters.add(Counter::Overload, 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::addr::v4_mapped;
    use lb_common::conn::tcp;

    #[test]
    fn a_connection_and_its_template_round_trip_to_what_install_takes() {
        let mut content = MapContent::default();
        content.services.insert(
            3,
            Service { flags: SVC_F_PERSISTENT, persist_timeout_s: 300, persist_mask: { let mut m = [0xff; 16]; m[15] = 0; m }, ..Default::default() },
        );
        content.backends.insert(9, lb_common::maps::Backend::new(v4_mapped([198, 18, 0, 11]), [0; 6], [0; 6], 1, 1));
        let names = Names::new(&content);
        let key = ConnKey { client: v4_mapped([198, 18, 0, 10]), vip: v4_mapped([198, 18, 0, 100]), cport: 40000, vport: 80, proto: 6, _pad: [0; 3] };
        let records = names.records(&key, 9, 3, tcp::ESTABLISHED, 0, true);
        assert_eq!(records.len(), 2);
        let msgs = wire::encode(&records, 7, 1472);
        let back: Vec<SyncedConn> = wire::decode(&msgs[0], 7).unwrap().records.iter().map(synced).collect();
        assert!(back[0].template && back[0].key.client == v4_mapped([198, 18, 0, 0]) && back[0].key.cport == 0);
        assert_eq!((back[1].key, back[1].server, back[1].state, back[1].inactive, back[1].timeout_s), (key, v4_mapped([198, 18, 0, 11]), tcp::ESTABLISHED, false, 900));
        assert!(names.records(&key, 8, 3, 1, 0, false).is_empty(), "unknown slots are not named");
    }

    #[test]
    fn each_active_connection_is_refreshed_once_per_period() {
        let period = 1000;
        let mut hits = 0;
        for cport in 0..500u16 {
            let key = ConnKey { cport, ..Default::default() };
            let conn = Conn { last_seen: 4000, timeout: 100_000, ..Default::default() };
            let times = (0..50).filter(|i| due_for_refresh(&key, &conn, 4000 + i * 20, 4000 + (i + 1) * 20, period)).count();
            assert_eq!(times, 1, "cport {cport}");
            hits += times;
            let idle = Conn { last_seen: 100, ..conn };
            assert!(!due_for_refresh(&key, &idle, 4000, 6000, period), "idle connections are not re-announced");
            let synced = Conn { flags: CONN_F_SYNCED, ..conn };
            assert!(!due_for_refresh(&key, &synced, 4000, 6000, period), "a peer's entries are the peer's to announce");
        }
        assert_eq!(hits, 500);
    }
}
