//! Map names, sizes and the `#[repr(C)]` key/value types of every map.
//!
//! All padding is explicit and zeroed so userspace and BPF hash identical key bytes.

use crate::addr::Addr16;

/// `Array<u32>`: a one-lookup pre-filter on destination addresses. Non-zero where some
/// VIP hashes ([`vip_filter_index`]); a zero settles a packet as not for a VIP before any
/// hash-map lookup.
pub const MAP_VIP_FILTER: &str = "DRLB_VIP_FILTER";
/// `HashMap<VipKey, Vip>`: every address drlb balances (rare paths: fragments, truncated
/// headers, protocols without a service).
pub const MAP_VIPS: &str = "DRLB_VIPS";
/// `HashMap<ServiceKey, u32>`: (VIP, port, protocol) → service id. Port 0 = every port.
pub const MAP_SERVICE_IDS: &str = "DRLB_SVC_IDS";
/// `Array<ServiceSlot>`: service id → the service, in two versions (see [`ServiceSlot`]).
pub const MAP_SERVICES: &str = "DRLB_SERVICES";
/// `Array<Backend>`: real servers, by slot. A real server keeps its slot for as long as it
/// is configured (and after removal, while connections may still use it).
pub const MAP_BACKENDS: &str = "DRLB_BACKENDS";
/// `Array<u32>`: each service's members (backend slots) in configuration order, at
/// `Service::members_offset`. Double-buffered: each update writes the half not in use.
pub const MAP_MEMBERS: &str = "DRLB_MEMBERS";
/// `Array<ConnCounts>`: ActiveConn/InActConn per backend slot, updated atomically.
pub const MAP_CONN_COUNTS: &str = "DRLB_CONN_COUNT";
/// `PerCpuArray<BackendStats>`: connections, packets and bytes per backend slot.
pub const MAP_BACKEND_STATS: &str = "DRLB_RS_STATS";
/// `LruHashMap<ConnKey, Conn>`: the connection table.
pub const MAP_CONNS: &str = "DRLB_CONNS";
/// `Array<HalfOpen>`: TCP connections between SYN and handshake ([`crate::halfopen`]),
/// direct-mapped by key. Pinned: handshakes in flight survive a controller restart.
pub const MAP_HALF_OPEN: &str = "DRLB_HALF_OPEN";
/// `Array<u64>` of one: the dataplane time (`now`) of the controller's last sweep, written
/// before the sweep writes the counts it computed. A half-open entry that expired before
/// it is no longer in its server's InActConn (the sweep left it out); one that expired
/// since still is, and the program releases it when a SYN takes its slot.
pub const MAP_SWEPT_AT: &str = "DRLB_SWEPT_AT";
/// `PerCpuArray<u64>`: one counter per [`crate::events::Event`].
pub const MAP_EVENTS: &str = "DRLB_EVENTS";
/// `LruHashMap<ConnKey, Persist>`: persistence templates (client network → real server).
pub const MAP_PERSIST: &str = "DRLB_PERSIST";
/// `Array<SchedState>`: per-service scheduler position (rr, wrr).
pub const MAP_SCHED_STATE: &str = "DRLB_SCHED";
/// `Array<u16>`: precomputed scheduler tables (wrr sequences, sh buckets, mh lookup).
pub const MAP_SCHED_TABLE: &str = "DRLB_SCHED_TAB";
/// `LruHashMap<LocalityKey, Locality>`: lblc's and lblcr's servers per destination address.
pub const MAP_LOCALITY: &str = "DRLB_LOCALITY";
/// Capacity of `DRLB_LOCALITY` over all services (IPVS: 16384 per service, above which
/// entries idle for 6 minutes are collected; here the least recently used makes room).
pub const LOCALITY_TABLE_SIZE: u32 = 65536;
/// `lblc_expiration` and `lblcr_expiration` (sysctl defaults, seconds): an entry unused
/// this long is gone; an lblcr set unchanged this long sheds its most loaded server.
pub const LOCALITY_EXPIRATION_S: u32 = 24 * 60 * 60;
/// Servers an lblcr set holds (IPVS: no bound; a set grows only while each of its servers
/// is overloaded). A full set makes room by dropping its oldest. A power of two (the
/// dataplane masks positions with it).
pub const LOCALITY_SET_MAX: usize = 8;
const _: () = assert!(LOCALITY_SET_MAX.is_power_of_two());

/// Key of `DRLB_LOCALITY`: the packet's destination (the VIP) in a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct LocalityKey {
    pub daddr: Addr16,
    pub service: u32,
}

/// Value of `DRLB_LOCALITY`: the backend slots a destination goes to (lblc: one), oldest
/// first, and when the entry was last used and the set last changed (clock ticks).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Locality {
    pub last_use: u64,
    pub last_mod: u64,
    pub set: [u32; LOCALITY_SET_MAX],
    pub count: u32,
    pub _pad: u32,
}
/// `PerCpuArray<u64>`: one counter per [`crate::verdict::Verdict`].
pub const MAP_STATS: &str = "DRLB_STATS";
/// `Array<u32>`: the layout a pinned dataplane was created with ([`layout`]), so a restarted
/// controller adopts only a dataplane whose maps it understands.
pub const MAP_META: &str = "DRLB_META";

/// `PerCpuArray<FlowCacheEntry>`: the per-CPU flow cache in front of `DRLB_CONNS`
/// ([`crate::flowcache`]). Not pinned: a new program starts with an empty one.
pub const MAP_FLOW_CACHE: &str = "DRLB_FLOW_CACHE";
/// `Array<u32>` of one: the connection table's generation. Whoever removes or replaces
/// connections adds one, which invalidates every CPU's flow cache. Not pinned (it belongs
/// with the cache).
pub const MAP_CONN_GEN: &str = "DRLB_CONN_GEN";

/// `LruHashMap<ConnKey, Conn>`: benchmark floor (c)'s connection table (`drlb bench` only).
pub const MAP_FLOOR_CONNS: &str = "DRLB_FLOOR_CONNS";

/// `Array<u32>`: 1 while `drlb trace` runs; the program then reports each VIP packet's
/// decision to `DRLB_TRACE`. Only VIP-bound packets read it.
pub const MAP_TRACE_ON: &str = "DRLB_TRACE_ON";
/// `RingBuf` of [`TraceEvent`]s.
pub const MAP_TRACE: &str = "DRLB_TRACE";
/// Size of `DRLB_TRACE` in bytes.
pub const TRACE_RING_BYTES: u32 = 1 << 18;

/// One traced decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceEvent {
    pub client: Addr16,
    pub vip: Addr16,
    pub cport: u16,
    pub vport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// The [`crate::verdict::Verdict`] index.
    pub stat: u8,
    /// 1 when the packet started a new connection.
    pub new_conn: u8,
    /// Backend slot forwarded to (u32::MAX: none).
    pub slot: u32,
    /// Service id (u32::MAX: none).
    pub service: u32,
}

/// `Array<u32>`: 1 while connection sync runs; the program then reports every new
/// connection and every state change to `DRLB_CONN_EVENTS`. Read only by packets that make
/// or change a connection, never by established ones. Not pinned: each program has its own.
pub const MAP_SYNC_ON: &str = "DRLB_SYNC_ON";
/// `RingBuf` of [`ConnEvent`]s, for connection sync. Not pinned.
pub const MAP_CONN_EVENTS: &str = "DRLB_CONN_EVENTS";
/// Size of `DRLB_CONN_EVENTS` in bytes: 64 Ki events of 56 bytes (with the ring's 8-byte
/// headers), a second of 64k new connections a second between two reads.
pub const CONN_EVENTS_RING_BYTES: u32 = 1 << 22;

/// A connection made or changed by a packet, as the program reports it for sync.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnEvent {
    pub key: crate::conn::ConnKey,
    /// Backend slot.
    pub backend: u32,
    /// Service id.
    pub service: u32,
    /// IPVS state (TCP: `conn::tcp`; UDP: 0).
    pub state: u8,
    /// `Conn::flags` after the packet.
    pub flags: u8,
    /// 1 when the packet put the connection into the connection table (new, or promoted
    /// from the half-open table).
    pub new_conn: u8,
    pub _pad: [u8; 5],
}

/// `Array<u64>`: the dataplane clock, written by the `drlb_clock` program (never pinned).
pub const MAP_CLOCK: &str = "DRLB_CLOCK";
/// `PerCpuArray<u64>`: frames counted by the benchmark's sink program (never pinned), by
/// kind: [`BENCH_RX_OTHER`], [`BENCH_RX_SYN`].
pub const MAP_BENCH_RX: &str = "DRLB_BENCH_RX";
/// `DRLB_BENCH_RX` index of frames other than SYNs.
pub const BENCH_RX_OTHER: u32 = 0;
/// `DRLB_BENCH_RX` index of SYNs.
pub const BENCH_RX_SYN: u32 = 1;

/// `ProgramArray`: the programs the attached dispatcher (`drlb_xdp`) tail-calls, at
/// [`JUMP_V4`], [`JUMP_V6`] and [`JUMP_ICMP`]. Pinned: the kernel empties a program array
/// once no process or pin holds it, and the dispatcher would then pass every packet.
pub const MAP_JUMP: &str = "DRLB_JUMP";
/// `DRLB_JUMP` slot of the IPv4 program (TCP, UDP and everything but ICMP).
pub const JUMP_V4: u32 = 0;
/// `DRLB_JUMP` slot of the IPv6 program (everything but ICMPv6).
pub const JUMP_V6: u32 = 1;
/// `DRLB_JUMP` slot of the ICMP and ICMPv6 program.
pub const JUMP_ICMP: u32 = 2;
/// Slots of `DRLB_JUMP`.
pub const JUMP_SLOTS: u32 = 3;
/// `PerCpuArray<Ipv6Chain>` (1 entry): where the dispatcher leaves the extension-header walk
/// of the IPv6 packet it hands on (`crate::packet::Ipv6Chain`). Pinned, so that during a
/// hitless restart the running dispatcher and the new programs it jumps to share it.
pub const MAP_IPV6_CHAIN: &str = "DRLB_IPV6_CHAIN";

/// The balancer's read-only global: this director's MAC as [`own_mac_words`], set when the
/// object is loaded. The dispatcher passes VIP-bound frames addressed to another unicast
/// MAC ([`crate::verdict::Verdict::PassOtherHost`]); all zero (a test harness that loads
/// the object for no interface) checks nothing.
pub const GLOBAL_OWN_MAC: &str = "DRLB_OWN_MAC";

/// A MAC as the dispatcher compares it with a frame's first 8 bytes loaded as two
/// little-endian words: bytes 0–3, then bytes 4–5 in the low half.
pub const fn own_mac_words(mac: [u8; 6]) -> [u32; 2] {
    [u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]), u32::from_le_bytes([mac[4], mac[5], 0, 0])]
}

/// Every map the balancer uses, for pinning.
pub const ALL_MAPS: [&str; 22] = [
    MAP_VIP_FILTER, MAP_VIPS, MAP_SERVICE_IDS, MAP_SERVICES, MAP_BACKENDS, MAP_MEMBERS, MAP_CONN_COUNTS,
    MAP_BACKEND_STATS, MAP_CONNS, MAP_HALF_OPEN, MAP_SWEPT_AT, MAP_PERSIST, MAP_SCHED_STATE, MAP_SCHED_TABLE, MAP_STATS,
    MAP_EVENTS, MAP_META, MAP_TRACE_ON, MAP_TRACE, MAP_LOCALITY, MAP_JUMP, MAP_IPV6_CHAIN,
];

/// Bump when any map's meaning changes; sizes are checked too (see [`layout`]).
pub const LAYOUT_VERSION: u32 = 7;
/// Entries of `DRLB_META`: the layout, then who the dataplane belongs to.
pub const META_SIZE: u32 = 12;
/// Entries of `DRLB_META` that record the [`layout`].
pub const META_LAYOUT_ENTRIES: usize = 8;
/// `DRLB_META` index of the low and high halves of the network namespace's inode number the
/// XDP link was attached in, and of the interface's index there: a second drlb in another
/// namespace, whose interface has the same name, must not take this dataplane over.
pub const META_OWNER_NETNS_LO: u32 = 8;
pub const META_OWNER_NETNS_HI: u32 = 9;
pub const META_OWNER_IFINDEX: u32 = 10;

/// What `DRLB_META` holds first: the layout version and the sizes of the types in the maps.
pub fn layout() -> [u32; META_LAYOUT_ENTRIES] {
    use core::mem::size_of;
    [
        LAYOUT_VERSION,
        size_of::<Service>() as u32,
        size_of::<Backend>() as u32,
        size_of::<crate::conn::Conn>() as u32,
        size_of::<crate::conn::ConnKey>() as u32,
        size_of::<ServiceKey>() as u32,
        // The counters, and what the dispatcher hands the programs it jumps to.
        crate::verdict::VERDICT_COUNT | JUMP_SLOTS << 8 | (size_of::<crate::packet::Ipv6Chain>() as u32) << 16,
        MAX_BACKENDS,
    ]
}

/// Capacity of `DRLB_VIP_FILTER` (a power of two).
pub const VIP_FILTER_SIZE: u32 = 4096;
/// Capacity of `DRLB_VIPS`.
pub const MAX_VIPS: u32 = 1024;
/// Capacity of `DRLB_SVC_IDS` and `DRLB_SERVICES`.
pub const MAX_SERVICES: u32 = 4096;
/// Real servers one service may have (bounds the schedulers' loops).
pub const MAX_BACKENDS_PER_SERVICE: u32 = 256;
/// Capacity of `DRLB_BACKENDS`: real servers over all services.
pub const MAX_BACKENDS: u32 = 65536;
/// Capacity of `DRLB_MEMBERS`: two regions of [`MAX_BACKENDS_PER_SERVICE`] per service id
/// ([`member_region`]).
pub const MEMBERS_SIZE: u32 = MAX_SERVICES * 2 * MAX_BACKENDS_PER_SERVICE;

/// Where service `id`'s member list starts in `DRLB_MEMBERS`, in its region `which` (0 or 1).
/// Each service has two regions of its own: a changed list is written to the one packets do
/// not read, then the service is pointed at it; an unchanged list is never rewritten.
pub const fn member_region(id: u32, which: u32) -> u32 {
    (id * 2 + which) * MAX_BACKENDS_PER_SERVICE
}
/// Default capacity of `DRLB_CONNS` (`director.conn_table_size`).
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 1 << 20;
/// Capacity of `DRLB_PERSIST`.
pub const PERSIST_TABLE_SIZE: u32 = 1 << 18;
/// Capacity of `DRLB_SCHED_TAB`: two halves; changed scheduler tables are written to the
/// half no service reads.
pub const SCHED_TABLE_SIZE: u32 = 1 << 21;
/// One half of `DRLB_SCHED_TAB`: room for every scheduler table of a configuration.
pub const SCHED_TABLE_HALF: u32 = SCHED_TABLE_SIZE / 2;

/// Slot of `DRLB_VIP_FILTER` for a destination address.
#[inline(always)]
pub fn vip_filter_index(addr: &Addr16) -> u32 {
    let w = u32::from_le_bytes([addr[12], addr[13], addr[14], addr[15]])
        ^ u32::from_le_bytes([addr[8], addr[9], addr[10], addr[11]]).rotate_left(7)
        ^ u32::from_le_bytes([addr[0], addr[1], addr[2], addr[3]]).rotate_left(13)
        ^ u32::from_le_bytes([addr[4], addr[5], addr[6], addr[7]]).rotate_left(19);
    w.wrapping_mul(0x9E37_79B1) >> 20 & (VIP_FILTER_SIZE - 1)
}

/// IP protocol numbers drlb balances.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Key of `DRLB_VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VipKey {
    pub addr: Addr16,
}

/// `Vip::flags`: a port-0 (all ports) TCP service exists on this VIP.
pub const VIP_F_WILDCARD_TCP: u32 = 1 << 0;
/// `Vip::flags`: a port-0 (all ports) UDP service exists on this VIP.
pub const VIP_F_WILDCARD_UDP: u32 = 1 << 1;

/// Value of `DRLB_VIPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vip {
    pub flags: u32,
}

impl Vip {
    /// Whether a port-0 service for `proto` exists, i.e. whether a second lookup can hit.
    #[inline(always)]
    pub fn has_wildcard(&self, proto: u8) -> bool {
        let bit = if proto == IPPROTO_TCP { VIP_F_WILDCARD_TCP } else { VIP_F_WILDCARD_UDP };
        self.flags & bit != 0
    }
}

/// Key of `DRLB_SVC_IDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ServiceKey {
    pub vip: Addr16,
    /// Destination port in host byte order; 0 matches every port.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl ServiceKey {
    pub const fn new(vip: Addr16, port: u16, proto: u8) -> Self {
        Self { vip, port, proto, _pad: 0 }
    }

    /// The key of `vip` given as its little-endian words, built in whole words.
    #[inline(always)]
    pub fn from_words(vip: [u32; 4], port: u16, proto: u8) -> Self {
        let words = [vip[0], vip[1], vip[2], vip[3], port as u32 | (proto as u32) << 16];
        // SAFETY: 20 bytes either way (vip, port, proto, pad; no implicit padding), every bit
        // pattern is valid, and the bytes are in memory order on little-endian targets.
        unsafe { core::mem::transmute::<[u32; 5], ServiceKey>(words) }
    }
}

/// The schedulers, by their `ipvsadm -s` names; `Service::scheduler` holds [`Scheduler::code`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Scheduler {
    #[default]
    Wlc = 0,
    Rr = 1,
    Wrr = 2,
    Lc = 3,
    Sh = 4,
    Mh = 5,
    Sed = 6,
    Nq = 7,
    Fo = 8,
    Ovf = 9,
    Dh = 10,
    Twos = 11,
    /// Locality-based least-connection (`ip_vs_lblc.c`).
    Lblc = 12,
    /// Locality-based least-connection with replication (`ip_vs_lblcr.c`).
    Lblcr = 13,
}

impl Scheduler {
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Wlc,
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Sh,
        Scheduler::Mh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Dh,
        Scheduler::Twos,
        Scheduler::Lblc,
        Scheduler::Lblcr,
    ];

    /// What `Service::scheduler` holds.
    #[inline(always)]
    pub const fn code(self) -> u32 {
        self as u32
    }

    #[inline(always)]
    pub fn from_code(code: u32) -> Option<Scheduler> {
        match code {
            0 => Some(Scheduler::Wlc),
            1 => Some(Scheduler::Rr),
            2 => Some(Scheduler::Wrr),
            3 => Some(Scheduler::Lc),
            4 => Some(Scheduler::Sh),
            5 => Some(Scheduler::Mh),
            6 => Some(Scheduler::Sed),
            7 => Some(Scheduler::Nq),
            8 => Some(Scheduler::Fo),
            9 => Some(Scheduler::Ovf),
            10 => Some(Scheduler::Dh),
            11 => Some(Scheduler::Twos),
            12 => Some(Scheduler::Lblc),
            13 => Some(Scheduler::Lblcr),
            _ => None,
        }
    }

    /// The names `ipvsadm -s` and drlb's config use, by code.
    pub const NAMES: [&'static str; 14] = ["wlc", "rr", "wrr", "lc", "sh", "mh", "sed", "nq", "fo", "ovf", "dh", "twos", "lblc", "lblcr"];

    pub const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether the scheduler has IPVS's fallback and port flags (`sh-fallback`,
    /// `sh-port`; `mh-fallback`, `mh-port`).
    pub const fn has_flags(self) -> bool {
        matches!(self, Scheduler::Sh | Scheduler::Mh)
    }

    pub fn from_name(name: &str) -> Option<Scheduler> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// `Service::flags`: clients are pinned by persistence templates.
pub const SVC_F_PERSISTENT: u32 = 1 << 0;
/// `Service::flags`: TCP packets without a connection are scheduled, not dropped.
pub const SVC_F_SLOPPY_TCP: u32 = 1 << 1;
/// `Service::flags`: a port-0 service (templates and connections keep the real port).
pub const SVC_F_WILDCARD: u32 = 1 << 2;
/// `Service::flags`: a service of several addresses or ports (`group:` in the config,
/// keepalived's virtual_server_group): its persistence templates are keyed by the service,
/// as IPVS keys a fwmark service's by the mark, so a client keeps its real server across
/// all of them.
pub const SVC_F_GROUP: u32 = 1 << 3;
/// `Service::flags`: sh-fallback / mh-fallback (`IP_VS_SVC_F_SCHED1`): a client whose
/// server is unavailable is hashed on to another instead of dropped.
pub const SVC_F_SCHED_FALLBACK: u32 = 1 << 4;
/// `Service::flags`: sh-port / mh-port (`IP_VS_SVC_F_SCHED2`): the client's source port is
/// hashed with its address.
pub const SVC_F_SCHED_PORT: u32 = 1 << 5;
/// `Service::flags`: one-packet scheduling (`ipvsadm -o`, keepalived's `ops`; UDP only):
/// every datagram is scheduled on its own and leaves no connection entry.
pub const SVC_F_ONE_PACKET: u32 = 1 << 6;
/// `Service::flags`: an IPv6 service. sh, mh, dh, lblc and lblcr hash its addresses folded
/// to one word ([`addr_hash`]), as IPVS does for an AF_INET6 service.
pub const SVC_F_IPV6: u32 = 1 << 7;

/// An address as IPVS's hashing schedulers take it (`ip_vs_sh_hashkey()`, `ip_vs_mh_hashkey()`,
/// `ip_vs_dh_hashkey()`, lblc's and lblcr's): an IPv4 address in host order; an IPv6 one
/// folded, the XOR of its four 32-bit words in host order. Which form follows the
/// service's family, never the address (an IPv4-mapped address of an IPv6 service is
/// folded).
#[inline(always)]
pub fn addr_hash(svc_flags: u32, a: &Addr16) -> u32 {
    let w = |i: usize| u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    if svc_flags & SVC_F_IPV6 != 0 { w(0) ^ w(4) ^ w(8) ^ w(12) } else { w(12) }
}

/// What a group's persistence templates have in place of a VIP: `::ID`, the service id in
/// an IPv4-compatible address, which no VIP is (they are deprecated, and neither v4-mapped
/// nor routable IPv6) — IPVS likewise puts a fwmark service's mark in the template's vaddr.
#[inline(always)]
pub const fn group_template_vip(service_id: u32) -> Addr16 {
    let id = service_id.to_be_bytes();
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, id[0], id[1], id[2], id[3]]
}

/// Value of `DRLB_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    /// Where this service's member list starts in `DRLB_MEMBERS` (configuration order;
    /// IPVS list order is the reverse).
    pub members_offset: u32,
    /// Number of configured real servers (usable or not).
    pub member_count: u32,
    pub flags: u32,
    pub scheduler: u32,
    /// This service's region of `DRLB_SCHED_TAB` (wrr, sh, mh).
    pub table_offset: u32,
    pub table_len: u32,
    /// wrr: index in the region where the sequence starts repeating.
    pub table_cycle_start: u32,
    pub persist_timeout_s: u32,
    /// Applied to the client address to form the persistence template key.
    pub persist_mask: Addr16,
    pub timeouts: crate::conn::Timeouts,
    /// Ticks per second of the dataplane's clock (jiffies: the kernel's HZ), set by the
    /// controller; timeouts are converted with it when a connection changes state.
    pub ticks_per_sec: u32,
    /// The service's own id (its key in `DRLB_SERVICES`), which a group's persistence
    /// templates are keyed by ([`SVC_F_GROUP`]).
    pub id: u32,
}

/// Value of `DRLB_SERVICES`: two versions of a service and, in one word, which is current.
///
/// A service is several words the program reads together (member list offset and count,
/// table region), and a map update is a plain copy another CPU may read halfway. So the
/// controller writes the version not in use, then flips `current` ([`ServiceSlot::staged`]):
/// each write changes only bytes no reader looks at, or the one word that says which to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceSlot {
    /// Index of the current version (bit 0).
    pub current: u32,
    pub _pad: u32,
    pub versions: [Service; 2],
}

impl ServiceSlot {
    /// A slot holding only `svc` (for an id no packet can reach yet).
    pub fn new(svc: Service) -> Self {
        ServiceSlot { current: 0, _pad: 0, versions: [svc, svc] }
    }

    #[inline(always)]
    pub fn service(&self) -> &Service {
        &self.versions[(self.current & 1) as usize]
    }

    /// The values to write, in order, to make `svc` current while readers see either the
    /// old version or the new one whole: the new version into the unused half, then the
    /// flip. One write when nothing changes.
    pub fn staged(&self, svc: &Service) -> ([ServiceSlot; 2], usize) {
        if self.service() == svc {
            return ([*self, *self], 0);
        }
        let next = (self.current & 1) ^ 1;
        let mut prepared = *self;
        prepared.versions[next as usize] = *svc;
        let mut flipped = prepared;
        flipped.current = next;
        ([prepared, flipped], 2)
    }
}

impl Service {
    /// The persistence template key for a connection of this service from `client` to
    /// `vip`:`vport`: the client's address masked to the persistence granularity, the VIP,
    /// the port (0 for a port-0 service, whose templates cover every port), the protocol.
    /// A group's templates have [`group_template_vip`] and port 0: one per client network
    /// for all the group's addresses and ports.
    #[inline(always)]
    pub fn template_key(&self, client: &Addr16, vip: &Addr16, vport: u16, proto: u8) -> crate::conn::ConnKey {
        let group = self.flags & SVC_F_GROUP != 0;
        let mut k = crate::conn::ConnKey {
            client: *client,
            vip: if group { group_template_vip(self.id) } else { *vip },
            cport: 0,
            vport: if group || self.flags & SVC_F_WILDCARD != 0 { 0 } else { vport },
            proto,
            _pad: [0; 3],
        };
        let mut i = 0;
        while i < 16 {
            k.client[i] &= self.persist_mask[i];
            i += 1;
        }
        k
    }

    /// [`Service::template_key`] of a connection key, in whole words: the key itself with
    /// the client masked, no client port, and the VIP and port as a template has them.
    #[inline(always)]
    pub fn template_key_of(&self, key: &crate::conn::ConnKey) -> crate::conn::ConnKey {
        let group = self.flags & SVC_F_GROUP != 0;
        let mut k = *key;
        if group {
            k.vip = group_template_vip(self.id);
        }
        k.cport = 0;
        if group || self.flags & SVC_F_WILDCARD != 0 {
            k.vport = 0;
        }
        let mut i = 0;
        while i < 16 {
            k.client[i] &= self.persist_mask[i];
            i += 1;
        }
        k
    }

    /// `secs` in the dataplane's clock ticks.
    #[inline(always)]
    pub fn ticks(&self, secs: u32) -> u32 {
        secs.saturating_mul(self.ticks_per_sec)
    }
}

/// `Backend::flags`: slot holds a real server whose MAC is known.
pub const BACKEND_F_PRESENT: u32 = 1 << 0;
/// `Backend::flags`: removed from the configuration; its existing connections continue,
/// but persistence templates no longer lead to it.
pub const BACKEND_F_DRAINING: u32 = 1 << 1;
/// `Backend::flags`: its health check failed. It takes no new connections; persistence
/// templates no longer lead to it (IPVS removes such a destination).
pub const BACKEND_F_HEALTH_DOWN: u32 = 1 << 2;
/// `Backend::flags`: `l2[1]` is the current link-layer header, not `l2[0]`.
pub const BACKEND_F_L2_ALT: u32 = 1 << 3;

/// The 12 bytes a forwarded frame starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct L2 {
    /// Destination MAC: the real server's.
    pub mac: [u8; 6],
    /// Source MAC: the director interface's. Kept with the backend rather than in a
    /// config map so a forwarded packet costs no extra lookup.
    pub src_mac: [u8; 6],
}

/// Value of `DRLB_BACKENDS`.
///
/// The MACs are double-buffered like [`ServiceSlot`]: a new MAC goes into the `l2` entry
/// not in use, then `flags` (one word) switches to it ([`Backend::staged`]), so no frame
/// leaves with half of an old MAC and half of a new one. `weight` and `flags` are single
/// words the program reads on their own.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// The real server's own address (for status and tracing; DR never rewrites L3).
    pub addr: Addr16,
    pub l2: [L2; 2],
    pub weight: u32,
    pub flags: u32,
}

// The XDP program reads each `l2` entry as three aligned words (`l2_words`).
const _: () = assert!(core::mem::offset_of!(Backend, l2) % 4 == 0 && core::mem::size_of::<L2>() == 12);

impl Backend {
    /// A backend whose current link-layer header is (`mac`, `src_mac`).
    pub fn new(addr: Addr16, mac: [u8; 6], src_mac: [u8; 6], weight: u32, flags: u32) -> Self {
        let l2 = L2 { mac, src_mac };
        Backend { addr, l2: [l2, l2], weight, flags: flags & !BACKEND_F_L2_ALT }
    }

    /// Index of the current `l2` entry.
    #[inline(always)]
    pub fn l2_index(flags: u32) -> usize {
        (flags & BACKEND_F_L2_ALT != 0) as usize
    }

    /// The current link-layer header.
    #[inline(always)]
    pub fn current_l2(&self) -> &L2 {
        &self.l2[Self::l2_index(self.flags)]
    }

    /// The real server's MAC in use.
    pub fn mac(&self) -> [u8; 6] {
        self.current_l2().mac
    }

    /// The same backend with its current header in `l2[0]` and no alternate flag: what the
    /// controller computes, whatever half the map happens to use.
    pub fn normalized(&self) -> Backend {
        let l2 = *self.current_l2();
        Backend { addr: self.addr, l2: [l2, l2], weight: self.weight, flags: self.flags & !BACKEND_F_L2_ALT }
    }

    /// The values to write, in order, to turn this map value into `want` (a normalized
    /// backend) while readers see a whole old or a whole new header: a changed header goes
    /// into the unused entry first, then one write switches `flags` (and sets `weight`).
    pub fn staged(&self, want: &Backend) -> ([Backend; 2], usize) {
        let at = Self::l2_index(self.flags);
        let mut next = *self;
        next.addr = want.addr;
        next.weight = want.weight;
        if self.l2[at] == want.l2[0] {
            next.flags = (want.flags & !BACKEND_F_L2_ALT) | (self.flags & BACKEND_F_L2_ALT);
            return if next == *self { ([next, next], 0) } else { ([next, next], 1) };
        }
        let mut prepared = *self;
        prepared.l2[at ^ 1] = want.l2[0];
        next.l2 = prepared.l2;
        next.flags = (want.flags & !BACKEND_F_L2_ALT) | if at == 0 { BACKEND_F_L2_ALT } else { 0 };
        ([prepared, next], 2)
    }

    /// The current header's 12 bytes — destination MAC (the real server's), then source
    /// MAC (the director's) — as three little-endian words.
    #[inline(always)]
    pub fn l2_words(&self) -> [u32; 3] {
        let L2 { mac: d, src_mac: s } = *self.current_l2();
        [
            u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
            u32::from_le_bytes([d[4], d[5], s[0], s[1]]),
            u32::from_le_bytes([s[2], s[3], s[4], s[5]]),
        ]
    }

    #[inline(always)]
    pub fn is_present(&self) -> bool {
        self.flags & BACKEND_F_PRESENT != 0
    }

    #[inline(always)]
    pub fn is_draining(&self) -> bool {
        self.flags & BACKEND_F_DRAINING != 0
    }

    /// Whether a new connection may go here: known MAC, still configured, healthy.
    #[inline(always)]
    pub fn accepts_new(&self) -> bool {
        self.accepts_persistent()
    }

    /// Whether a persistence template may still send a client here: known MAC, still
    /// configured, and not failed its health check.
    #[inline(always)]
    pub fn accepts_persistent(&self) -> bool {
        Self::flags_accept_new(self.flags)
    }

    /// [`Backend::accepts_new`] from the flags word alone.
    #[inline(always)]
    pub fn flags_accept_new(flags: u32) -> bool {
        flags & (BACKEND_F_PRESENT | BACKEND_F_DRAINING | BACKEND_F_HEALTH_DOWN) == BACKEND_F_PRESENT
    }
}

/// Value of `DRLB_CONN_COUNT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnCounts {
    pub active: u32,
    pub inactive: u32,
}

/// Value of `DRLB_RS_STATS` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BackendStats {
    pub conns: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Value of `DRLB_PERSIST`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Persist {
    /// Clock ticks of the last connection made through the template.
    pub last_used: u64,
    pub backend: u32,
    pub _pad: u32,
}

/// Value of `DRLB_SCHED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedState {
    /// rr: list index of the last choice (`sched::RR_HEAD`: none yet).
    pub rr_pos: u32,
    /// wrr: next index into the service's sequence.
    pub seq_pos: u32,
}

/// "No backend slot".
pub const NO_SLOT: u32 = u32::MAX;

impl Default for SchedState {
    fn default() -> Self {
        SchedState { rr_pos: crate::sched::RR_HEAD, seq_pos: 0 }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers with explicit padding.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::LocalityKey {}
    unsafe impl aya::Pod for super::Locality {}
    unsafe impl aya::Pod for super::Vip {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::ConnCounts {}
    unsafe impl aya::Pod for super::BackendStats {}
    unsafe impl aya::Pod for super::Persist {}
    unsafe impl aya::Pod for super::SchedState {}
    unsafe impl aya::Pod for super::TraceEvent {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for crate::conn::ConnKey {}
    unsafe impl aya::Pod for crate::conn::Conn {}
    unsafe impl aya::Pod for crate::halfopen::HalfOpen {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 16);
        assert_eq!(size_of::<Vip>(), 4);
        assert_eq!(size_of::<ServiceKey>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<Service>(), 8 * 4 + 16 + 3 * 4 + 4 + 4);
        assert_eq!(size_of::<crate::conn::ConnKey>(), 16 + 16 + 2 + 2 + 1 + 3);
        assert_eq!(size_of::<crate::conn::Conn>(), 8 + 4 * 3 + 4);
        assert_eq!(size_of::<Persist>(), 16);
        assert_eq!(size_of::<Backend>(), 16 + 2 * 12 + 4 + 4);
        assert_eq!(size_of::<ServiceSlot>(), 8 + 2 * size_of::<Service>());
        assert_eq!(size_of::<ConnEvent>(), 40 + 4 + 4 + 3 + 5);
        assert_eq!(size_of::<LocalityKey>(), 16 + 4);
        assert_eq!(size_of::<Locality>(), 8 + 8 + 4 * LOCALITY_SET_MAX + 4 + 4);
    }

    fn svc(count: u32) -> Service {
        Service { members_offset: 7, member_count: count, ..Default::default() }
    }

    /// Each staged write changes either bytes of the version not current, or only the word
    /// that selects it: a reader between two writes sees one whole version.
    #[test]
    fn service_updates_touch_only_the_unused_version_then_the_selector() {
        let slot = ServiceSlot::new(svc(2));
        let (writes, n) = slot.staged(&svc(4));
        assert_eq!(n, 2);
        assert_eq!(writes[0].service(), &svc(2), "the first write leaves the current version as it was");
        assert_eq!(writes[0].current, slot.current);
        assert_eq!(writes[1].versions, writes[0].versions, "the second write flips only the selector");
        assert_eq!(writes[1].service(), &svc(4));
        let (again, n) = writes[1].staged(&svc(3));
        assert_eq!((n, again[0].service(), again[1].service()), (2, &svc(4), &svc(3)));
        assert_eq!(writes[1].staged(&svc(4)).1, 0);
    }

    #[test]
    fn mac_changes_go_through_the_unused_half() {
        let a = Backend::new([1; 16], [0xa; 6], [2; 6], 1, BACKEND_F_PRESENT);
        let b = Backend::new([1; 16], [0xb; 6], [2; 6], 3, BACKEND_F_PRESENT | BACKEND_F_HEALTH_DOWN);
        let (w, n) = a.staged(&b);
        assert_eq!(n, 2);
        assert_eq!((w[0].current_l2(), w[0].flags, w[0].weight), (a.current_l2(), a.flags, a.weight), "prepared, not switched");
        assert_eq!(w[1].l2, w[0].l2, "the switch writes the flags word (and weight) only");
        assert_eq!(w[1].normalized(), b);
        // Back again uses the other half.
        let (w2, n) = w[1].staged(&a);
        assert_eq!((n, w2[1].normalized()), (2, a));
        assert_eq!(Backend::l2_index(w2[1].flags), 0);
        // A weight or flag change alone is one write of single words.
        let mut c = b;
        c.weight = 9;
        let (w3, n) = w[1].staged(&c);
        assert_eq!((n, w3[0].l2, w3[0].normalized()), (1, w[1].l2, c));
    }
}
