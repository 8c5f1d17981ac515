//! drlb's YAML configuration: types, parsing and validation.
//!
//! Every problem is reported as `FILE:LINE:COLUMN: message`. serde_yaml locates type and
//! syntax errors; checks across fields (duplicates, a real server equal to its VIP, ...) run
//! after deserialisation and are located through [`positions::Positions`].

mod duration;
pub mod group;
pub mod positions;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use group::{GroupEntry, VipRange};
use positions::{Position, Positions};

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub director: Director,
    #[serde(default)]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Director {
    /// The interface that receives VIP traffic and sends it on to the real servers.
    pub interface: String,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Connection-table capacity (LRU: the least recently used entry makes room).
    #[serde(default = "default_conn_table_size")]
    pub conn_table_size: u32,
    /// bpffs directory under which the dataplane is pinned, as `<pin_root>/<interface>/`.
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    /// Where Prometheus metrics are served (`null`: not at all). Loopback by default:
    /// exposing them on other interfaces is a deliberate choice.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Connection sync with the other directors of the pair (IPVS's sync protocol).
    #[serde(default)]
    pub sync: Option<SyncConfig>,
    /// Scale-out behind ECMP routers: announce each VIP through a BGP speaker (BIRD,
    /// FRR) while this director can serve it (docs/scale-out.md).
    #[serde(default)]
    pub announce: Option<AnnounceConfig>,
    /// Entries of each mh service's Maglev table: the kernel's, so a migration (or a mixed
    /// pair) sends every client where IPVS does. 4093 is `CONFIG_IP_VS_MH_TAB_INDEX` 12, the
    /// default of the kernel and of Debian, openEuler and RHEL; a kernel built with another
    /// index uses another of 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071.
    #[serde(default = "default_mh_table_size")]
    pub mh_table_size: u32,
}

fn default_mh_table_size() -> u32 {
    crate::control::sched_tables::MH_TABLE_SIZE as u32
}

/// `director.sync`: what IPVS's `ipvsadm --start-daemon` (keepalived's `lvs_sync_daemon`)
/// is told, under the same defaults.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Where sync datagrams are sent and received (`--mcast-interface`).
    pub interface: String,
    /// Identifies the pair (`--syncid`): datagrams of other syncids are ignored; 0 takes
    /// every syncid, as an IPVS backup does.
    pub syncid: u8,
    #[serde(default = "default_sync_group")]
    pub group: std::net::Ipv4Addr,
    #[serde(default = "default_sync_port")]
    pub port: u16,
    /// Unicast instead of multicast: the peers' addresses. Datagrams from anyone else are
    /// then ignored (and counted as `not_a_peer`).
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// How often a connection with traffic is re-announced, so a peer's copy never expires
    /// before this director's (IPVS's sync_refresh_period). Below every service's UDP
    /// and TCP timeout.
    #[serde(default = "default_sync_refresh", with = "duration::required")]
    pub refresh_period: Duration,
}

/// `director.announce`: the VIPs go to the routers as blackhole host routes in a routing
/// table of drlb's own, which the director's BGP speaker exports
/// (configs/bird-director.conf); a VIP's route is there while this director is ready, not
/// draining and every service of the VIP has quorum.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The routing table (BIRD's `kernel table`, FRR's `ip import-table`). drlb owns every
    /// blackhole host route in it; no `ip rule` should point at it.
    #[serde(default = "default_announce_table")]
    pub table: u32,
    /// After a start with an empty connection table, how long to listen to the other
    /// directors' sync before announcing, so flows moved here are known. Default: sync's
    /// `refresh_period` (every peer re-announces its active connections within it), 0
    /// without sync.
    #[serde(default, with = "duration::option")]
    pub warmup: Option<Duration>,
    /// On `drlb drain` / SIGTERM: the longest wait, after withdrawing, for the routers to
    /// send the traffic elsewhere before detaching.
    #[serde(default = "default_drain_timeout", with = "duration::required")]
    pub drain_timeout: Duration,
}

fn default_announce_table() -> u32 {
    100
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Director {
    /// How long a fresh start waits before announcing (see [`AnnounceConfig::warmup`]).
    pub fn announce_warmup(&self) -> Duration {
        let announce = self.announce.as_ref();
        announce.and_then(|a| a.warmup).unwrap_or_else(|| match (announce, &self.sync) {
            (Some(_), Some(sync)) => sync.refresh_period,
            _ => Duration::ZERO,
        })
    }
}

fn default_sync_group() -> std::net::Ipv4Addr {
    crate::sync::wire::DEFAULT_GROUP
}

fn default_sync_port() -> u16 {
    crate::sync::wire::DEFAULT_PORT
}

fn default_sync_refresh() -> Duration {
    Duration::from_secs(30)
}

fn default_metrics_listen() -> Option<std::net::SocketAddr> {
    Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9469)))
}

fn default_pin_root() -> PathBuf {
    PathBuf::from(crate::kernel::pins::DEFAULT_PIN_ROOT)
}

impl Director {
    /// Where this director's dataplane is pinned.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.interface)
    }
}

fn default_conn_table_size() -> u32 {
    lb_common::maps::DEFAULT_CONN_TABLE_SIZE
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::maps::IPPROTO_TCP,
            Protocol::Udp => lb_common::maps::IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// IPVS's schedulers (`ipvsadm -s` names), as the dataplane knows them.
pub use lb_common::maps::Scheduler;

/// `scheduler:` — one of [`Scheduler`]'s names.
fn scheduler_by_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Scheduler, D::Error> {
    // A visitor, so an unknown name is reported at the value's line and column.
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Scheduler;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a scheduler name")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Scheduler, E> {
            Scheduler::from_name(name).ok_or_else(|| E::unknown_variant(name, &Scheduler::NAMES))
        }
    }
    d.deserialize_str(V)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    /// 0 balances every port of the VIP.
    pub port: u16,
    pub protocol: Protocol,
    /// More addresses (and ranges) and ports that are this same service: one scheduler,
    /// one set of counts, and persistence across all of them (keepalived's
    /// virtual_server_group; IPVS's fwmark services).
    #[serde(default)]
    pub group: Vec<GroupEntry>,
    #[serde(default, deserialize_with = "scheduler_by_name")]
    pub scheduler: Scheduler,
    /// IPVS's flags of sh and mh (`ipvsadm -b`, keepalived's `sh-port` ...): `sh-fallback`
    /// / `mh-fallback` hash a client whose server is unavailable on to another;
    /// `sh-port` / `mh-port` hash the client's source port too.
    #[serde(default)]
    pub scheduler_flags: Vec<SchedulerFlag>,
    /// One-packet scheduling (UDP; `ipvsadm -o`, keepalived's `ops`): every datagram is
    /// scheduled on its own and leaves no connection behind.
    #[serde(default)]
    pub one_packet: bool,
    #[serde(default, with = "duration::option")]
    pub persistence_timeout: Option<Duration>,
    /// Prefix length (or dotted netmask) that groups clients for persistence; default 32.
    #[serde(default)]
    pub persistence_granularity: Option<Granularity>,
    /// Schedule TCP packets that have no connection instead of dropping them.
    #[serde(default)]
    pub sloppy_tcp: bool,
    /// Idle timeouts, like `ipvsadm --set tcp tcpfin udp`.
    #[serde(default)]
    pub timeouts: ServiceTimeouts,
    pub health_check: Option<HealthCheck>,
    /// On a failed health check set the server's weight to 0 instead of removing it.
    #[serde(default)]
    pub inhibit_on_failure: bool,
    /// On a failed health check also drop the server's existing connections.
    #[serde(default)]
    pub expire_nodest_conn: bool,
    /// Takes new connections while no real server is up (or the quorum is lost).
    pub sorry_server: Option<SorryServer>,
    /// Minimum sum of the weights of up servers below which the service counts as down.
    #[serde(default = "default_quorum")]
    pub quorum: u32,
    /// keepalived's hysteresis: the quorum is lost below `quorum - hysteresis` and gained
    /// again at `quorum + hysteresis`, so a flapping server does not flip it.
    #[serde(default)]
    pub quorum_hysteresis: u32,
    /// Commands (`sh -c`) run when the quorum is gained or lost, and at start for the state
    /// it starts in (keepalived's quorum_up / quorum_down).
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// When drlb stops (SIGINT/SIGTERM), run notify_down for every server that is up and
    /// quorum_down (keepalived's omega).
    #[serde(default)]
    pub omega: bool,
    /// Health checks count only while the director's interface holds one of the service's
    /// addresses; a backup director's verdicts stand still (keepalived's ha_suspend).
    #[serde(default)]
    pub ha_suspend: bool,
    #[serde(default)]
    pub real_servers: Vec<RealServer>,
}

fn default_quorum() -> u32 {
    1
}

/// `scheduler_flags:` entries, by `ipvsadm -b`'s names.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SchedulerFlag {
    #[serde(rename = "sh-fallback")]
    ShFallback,
    #[serde(rename = "sh-port")]
    ShPort,
    #[serde(rename = "mh-fallback")]
    MhFallback,
    #[serde(rename = "mh-port")]
    MhPort,
}

impl SchedulerFlag {
    pub fn name(self) -> &'static str {
        match self {
            SchedulerFlag::ShFallback => "sh-fallback",
            SchedulerFlag::ShPort => "sh-port",
            SchedulerFlag::MhFallback => "mh-fallback",
            SchedulerFlag::MhPort => "mh-port",
        }
    }

    /// The scheduler it belongs to.
    pub fn scheduler(self) -> Scheduler {
        match self {
            SchedulerFlag::ShFallback | SchedulerFlag::ShPort => Scheduler::Sh,
            SchedulerFlag::MhFallback | SchedulerFlag::MhPort => Scheduler::Mh,
        }
    }

    /// Its bit of `lb_common::maps::Service::flags`.
    pub fn service_flag(self) -> u32 {
        match self {
            SchedulerFlag::ShFallback | SchedulerFlag::MhFallback => lb_common::maps::SVC_F_SCHED_FALLBACK,
            SchedulerFlag::ShPort | SchedulerFlag::MhPort => lb_common::maps::SVC_F_SCHED_PORT,
        }
    }
}

impl Service {
    /// Every (VIP, port) this service answers on: its own first, then its group's in order.
    pub fn endpoints(&self) -> Vec<(IpAddr, u16)> {
        let mut out = vec![(self.vip, self.port)];
        for entry in &self.group {
            let port = entry.port.unwrap_or(self.port);
            out.extend(entry.vip.addresses().into_iter().map(|a| (a, port)));
        }
        out
    }

    /// Every address this service answers on, once each, in order.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for (a, _) in self.endpoints() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// The key the service is known by across reloads and restarts: the least of its
    /// endpoints' (which a restarted controller finds again in the service-id map).
    pub fn identity(&self) -> lb_common::maps::ServiceKey {
        let proto = self.protocol.number();
        self.endpoints()
            .into_iter()
            .map(|(a, p)| lb_common::maps::ServiceKey::new(lb_common::addr::from_ip(a), p, proto))
            .min()
            .expect("a service has its own endpoint")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SorryServer {
    pub address: IpAddr,
    /// Keep it in the service with weight 0 while the quorum holds, rather than out of it
    /// (keepalived's sorry_server_inhibit): schedulers that hash (sh, mh, dh) then give it
    /// its share of buckets, which take nothing, as IPVS does.
    #[serde(default)]
    pub inhibit: bool,
}

/// `timeouts:` of a service.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceTimeouts {
    #[serde(default = "duration::default_tcp", with = "duration::required")]
    pub tcp: Duration,
    #[serde(default = "duration::default_tcp_fin", with = "duration::required")]
    pub tcp_fin: Duration,
    #[serde(default = "duration::default_udp", with = "duration::required")]
    pub udp: Duration,
}

impl Default for ServiceTimeouts {
    fn default() -> Self {
        ServiceTimeouts {
            tcp: duration::default_tcp(),
            tcp_fin: duration::default_tcp_fin(),
            udp: duration::default_udp(),
        }
    }
}

/// Persistence granularity: `24`, `/24` or `255.255.255.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granularity(pub u8);

impl<'de> Deserialize<'de> for Granularity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Granularity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a prefix length (0-32 for IPv4, 0-128 for IPv6; e.g. 24 or /24) or a netmask such as 255.255.255.0")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Granularity, E> {
                // The VIP's family bounds it further (validate()).
                if v <= 128 { Ok(Granularity(v as u8)) } else { Err(E::custom(format!("prefix length {v} is above 128"))) }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Granularity, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("prefix length {v} is negative"))).and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Granularity, E> {
                let s = s.trim();
                if let Some(p) = s.strip_prefix('/') {
                    return p.parse::<u64>().map_err(|_| E::custom(format!("`{s}` is not a prefix length"))).and_then(|v| self.visit_u64(v));
                }
                if let Ok(v) = s.parse::<u64>() {
                    return self.visit_u64(v);
                }
                let mask: std::net::Ipv4Addr = s.parse().map_err(|_| E::custom(format!("`{s}` is neither a prefix length nor a netmask")))?;
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(E::custom(format!("netmask {s} is not contiguous")));
                }
                Ok(Granularity(bits.leading_ones() as u8))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub address: IpAddr,
    /// A name for logs and status (`rs1`); the address when absent.
    pub name: Option<String>,
    /// IPVS weight: 0 keeps the server configured but gives it no new connections.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Optional, for keepalived users (`real_server ADDR PORT`): DR cannot rewrite the
    /// port, so it must equal the service port.
    pub port: Option<u16>,
    /// Commands (`sh -c`) run when health checks bring this server up or take it down
    /// (keepalived's notify_up / notify_down).
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    /// This server's own checks, instead of the service's `health_check`: it is up only
    /// while every one passes (keepalived's several checkers on one real_server); `[]`:
    /// none, always up.
    pub health_checks: Option<Vec<HealthCheck>>,
}

impl RealServer {
    /// The checks that decide whether this server is up: its own, else the service's.
    pub fn checks<'a>(&'a self, service: &'a Service) -> &'a [HealthCheck] {
        match (&self.health_checks, &service.health_check) {
            (Some(own), _) => own,
            (None, Some(shared)) => std::slice::from_ref(shared),
            (None, None) => &[],
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// Attempts a check may repeat within one round (a round lasts up to this many timeouts).
pub const MAX_RETRIES: u32 = 1000;

/// IPVS caps weights at 65535 (`ipvsadm -w`).
pub const MAX_WEIGHT: u32 = 65535;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// A TCP connection (TCP_CHECK).
    Tcp,
    /// GET `path` (HTTP_GET).
    Http,
    /// GET `path` over TLS (SSL_GET): the certificate is not verified, as keepalived's.
    Https,
    /// A command's exit status (MISC_CHECK).
    Script,
    /// 220 greeting, 250 to HELO, 221 to QUIT (SMTP_CHECK).
    Smtp,
    /// A UDP DNS query answered with no error (DNS_CHECK).
    Dns,
    /// A UDP datagram not refused, or answered as `reply` says (UDP_CHECK).
    Udp,
    /// An ICMP echo answered (PING_CHECK).
    Ping,
    /// A number in a file (FILE_CHECK with its track_file): with `weight` 0, 0 is up and
    /// anything else down (`reverse`: the other way round); otherwise the number times
    /// `weight` is added to the server's weight.
    File,
}

impl CheckType {
    /// Its name in the file (and in metrics' `type` label).
    pub fn name(self) -> &'static str {
        match self {
            CheckType::Tcp => "tcp",
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Script => "script",
            CheckType::Smtp => "smtp",
            CheckType::Dns => "dns",
            CheckType::Udp => "udp",
            CheckType::Ping => "ping",
            CheckType::File => "file",
        }
    }

    /// Whether it probes a port (a script, a ping and a file do not).
    pub fn uses_port(self) -> bool {
        !matches!(self, CheckType::Script | CheckType::Ping | CheckType::File)
    }

    /// Whether it connects to anything (`address`, `source` apply).
    pub fn connects(self) -> bool {
        !matches!(self, CheckType::Script | CheckType::File)
    }
}

/// keepalived's checker settings under drlb's names (implemented by the health-check issue).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: CheckType,
    pub port: Option<u16>,
    #[serde(default = "duration::default_interval", with = "duration::required")]
    pub interval: Duration,
    #[serde(default = "duration::default_timeout", with = "duration::required")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "duration::default_retry_delay", with = "duration::required")]
    pub retry_delay: Duration,
    /// Random delay before the first check: up to this long, or with `true` up to the
    /// interval (keepalived's warmup).
    #[serde(default, with = "duration::warmup")]
    pub warmup: Option<Warmup>,
    #[serde(default = "default_one")]
    pub rise: u32,
    #[serde(default = "default_one")]
    pub fall: u32,
    /// http: request path, host header, accepted status codes ("200", "200-299"), body regex.
    pub path: Option<String>,
    pub host: Option<String>,
    pub status: Option<Vec<StatusRange>>,
    pub regex: Option<BodyRegex>,
    /// script: the command to run.
    pub command: Option<String>,
    /// script: exit codes 2 to 255 also mean up and set the server's weight to the code
    /// minus 2 (keepalived's misc_dynamic).
    #[serde(default)]
    pub dynamic: bool,
    /// file: the file holding the number (keepalived's track_file `file`).
    pub file: Option<PathBuf>,
    /// file: what the number is multiplied by before it is added to the server's weight;
    /// 0 makes the file a plain up/down switch (default 1).
    pub weight: Option<i32>,
    /// file: the number counts negatively (with weight 0: 0 means down).
    #[serde(default)]
    pub reverse: bool,
    /// http/https: the MD5 of the body, 32 hex digits (keepalived's `digest`).
    pub digest: Option<Md5Digest>,
    /// https: the server name sent in the TLS handshake (none: no SNI, as keepalived
    /// without `enable_sni`).
    pub sni: Option<String>,
    /// smtp: the name given in HELO.
    pub helo: Option<String>,
    /// dns: the query's type (A, NS, CNAME, SOA, MX, TXT, AAAA, RRSIG, DNSKEY; default SOA) and name
    /// (default the root).
    pub query_type: Option<DnsType>,
    pub query_name: Option<String>,
    /// udp: the datagram sent, in hex (default: 8 random bytes).
    pub payload: Option<HexBytes>,
    /// udp: `true` needs any answer; a hex pattern (`x` for any nibble) needs an answer that
    /// starts like it. Absent: success unless the port is refused (ICMP).
    pub reply: Option<UdpReply>,
    /// The server starts down and needs a passing check to come up (keepalived's alpha);
    /// without it a server starts up and the first failed round takes it down.
    #[serde(default)]
    pub alpha: bool,
    /// Probe this address instead of the real server's own (keepalived's `connect_ip`).
    pub address: Option<IpAddr>,
    /// Send probes from this address and port (keepalived's `bindto`, `bind_port`).
    pub source: Option<IpAddr>,
    pub source_port: Option<u16>,
}

/// An MD5 digest written as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Md5Digest(pub [u8; 16]);

impl<'de> Deserialize<'de> for Md5Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = HexBytes::parse(&text).ok().filter(|b| b.0.len() == 16 && b.1.iter().all(|m| *m == 0));
        bytes
            .map(|b| Md5Digest(b.0.try_into().expect("16 bytes")))
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an MD5 digest (32 hex digits)")))
    }
}

/// Bytes written in hex, with `x` for "any nibble" where a pattern allows it: the bytes and
/// a mask of the nibbles that match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>, pub Vec<u8>);

impl HexBytes {
    pub fn parse(text: &str) -> Result<HexBytes, String> {
        let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.is_empty() || digits.len() % 2 != 0 {
            return Err(format!("`{text}` is not an even number of hex digits"));
        }
        let mut bytes = Vec::new();
        let mut mask = Vec::new();
        for pair in digits.chunks(2) {
            let (mut b, mut m) = (0u8, 0u8);
            for (shift, c) in [(4, pair[0]), (0, pair[1])] {
                match c {
                    'x' | 'X' => m |= 0xf << shift,
                    c => b |= (c.to_digit(16).ok_or_else(|| format!("`{c}` in `{text}` is not a hex digit"))? as u8) << shift,
                }
            }
            bytes.push(b);
            mask.push(m);
        }
        Ok(HexBytes(bytes, mask))
    }

    /// Whether `data` starts as this pattern says (`x` nibbles match anything); like
    /// keepalived, only the shorter of the two is compared.
    pub fn matches(&self, data: &[u8]) -> bool {
        self.0.iter().zip(&self.1).zip(data).all(|((want, any), got)| (want ^ got) & !any == 0)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HexBytes::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `reply:` of a udp check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpReply {
    Any,
    Matching(HexBytes),
}

impl<'de> Deserialize<'de> for UdpReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(true) => Ok(UdpReply::Any),
            serde_yaml::Value::String(s) => HexBytes::parse(&s).map(UdpReply::Matching).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other:?}: write `true` (any answer) or a hex pattern such as \"0102xx\""))),
        }
    }
}

/// DNS query types keepalived's DNS_CHECK sends.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum DnsType {
    A,
    Ns,
    Cname,
    Soa,
    Mx,
    Txt,
    Aaaa,
    Rrsig,
    Dnskey,
}

impl DnsType {
    /// Its number on the wire (RFC 1035, 3596).
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
            DnsType::Rrsig => 46,
            DnsType::Dnskey => 48,
        }
    }
}

/// keepalived's `warmup`: the first check waits a random time up to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// `true`: up to the check interval.
    UpToInterval,
    UpTo(Duration),
}

impl Warmup {
    /// The longest the first check waits for a check run every `interval`.
    pub fn limit(self, interval: Duration) -> Duration {
        match self {
            Warmup::UpToInterval => interval,
            Warmup::UpTo(d) => d,
        }
    }
}

/// An accepted HTTP status code or range: `200` or `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    /// What an http check accepts when `status` is not given.
    pub const DEFAULT: StatusRange = StatusRange { lo: 200, hi: 299 };

    pub fn contains(&self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi { write!(f, "{}", self.lo) } else { write!(f, "{}-{}", self.lo, self.hi) }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A YAML scalar: 200 arrives as a number, 200-299 as a string.
        let text = match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::String(s) => s,
            other => return Err(serde::de::Error::custom(format!("{other:?} is not a status code or range such as 200 or 200-299"))),
        };
        parse_status_range(&text)
            .map(|(lo, hi)| StatusRange { lo, hi })
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a status code or range such as 200 or 200-299 (100 to 599)")))
    }
}

/// A regular expression the body of an http check's answer must match, compiled when the
/// file is read: a pattern that does not compile is a config error, not a failing check.
#[derive(Debug, Clone)]
pub struct BodyRegex(pub regex::Regex);

impl PartialEq for BodyRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for BodyRegex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        regex::Regex::new(&pattern)
            .map(BodyRegex)
            .map_err(|e| serde::de::Error::custom(format!("regex `{pattern}` does not compile: {e}")))
    }
}

fn default_retries() -> u32 {
    1
}

fn default_one() -> u32 {
    1
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub position: Position,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.position.line,
            self.position.column,
            self.message
        )
    }
}

/// All problems found in one file; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                position: Position { line: 1, column: 1 },
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`; `file` only names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| {
            let position = e
                .location()
                .map(|l| Position { line: l.line(), column: l.column() })
                .unwrap_or(Position { line: 1, column: 1 });
            ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                position,
                message: strip_location(&e.to_string()),
            }])
        })?;
        let positions = Positions::index(text);
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(
                problems
                    .into_iter()
                    .map(|(path, message)| ConfigError {
                        file: file.to_owned(),
                        position: positions.find(&path),
                        message,
                    })
                    .collect(),
            ))
        }
    }

    /// Checks that span fields; returns (path, message) for each problem.
    fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let iface = &self.director.interface;
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            problems.push((
                "director.interface".into(),
                format!("`{iface}` is not a valid interface name (1 to 15 characters, no '/' or spaces)"),
            ));
        }
        if !crate::control::sched_tables::MH_TABLE_SIZES.contains(&(self.director.mh_table_size as usize)) {
            problems.push((
                "director.mh_table_size".into(),
                format!(
                    "mh_table_size {} is not one of IPVS's table sizes ({})",
                    self.director.mh_table_size,
                    crate::control::sched_tables::MH_TABLE_SIZES.map(|s| s.to_string()).join(", ")
                ),
            ));
        }
        let size = self.director.conn_table_size;
        if !(1024..=1 << 26).contains(&size) {
            problems.push((
                "director.conn_table_size".into(),
                format!("conn_table_size {size} is outside 1024..=67108864"),
            ));
        }
        if let Some(sync) = &self.director.sync {
            let shortest = self.services.iter().flat_map(|s| [s.timeouts.tcp, s.timeouts.udp]).min();
            if sync.refresh_period < Duration::from_secs(1) {
                problems.push(("director.sync.refresh_period".into(), "refresh_period must be at least 1s".into()));
            } else if let Some(t) = shortest.filter(|t| sync.refresh_period >= *t) {
                problems.push((
                    "director.sync.refresh_period".into(),
                    format!(
                        "refresh_period {} is not below the shortest service timeout ({}): a peer's copy of a busy \
                         connection would expire",
                        humantime::format_duration(sync.refresh_period),
                        humantime::format_duration(t)
                    ),
                ));
            }
            if !sync.group.is_multicast() {
                problems.push(("director.sync.group".into(), format!("{} is not a multicast group", sync.group)));
            }
            // Sync runs over IPv4, as IPVS's default daemon does; it carries IPv6
            // connections too (IPVS's v1 records have an IPv6 form).
            for (j, peer) in sync.peers.iter().enumerate() {
                if peer.is_ipv6() {
                    problems.push((format!("director.sync.peers[{j}]"), format!("{peer}: sync peers are IPv4 addresses (sync itself carries IPv6 connections)")));
                }
            }
            let iface = &sync.interface;
            if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
                problems.push(("director.sync.interface".into(), format!("`{iface}` is not a valid interface name")));
            }
        }
        if let Some(announce) = &self.director.announce {
            if !crate::kernel::routes::usable_table(announce.table) {
                problems.push((
                    "director.announce.table".into(),
                    format!(
                        "table {} is one the kernel forwards with (0 unspec, 253 default, 254 main, 255 local): use a table of drlb's own, e.g. 100",
                        announce.table
                    ),
                ));
            }
            if announce.drain_timeout > Duration::from_secs(80) {
                problems.push((
                    "director.announce.drain_timeout".into(),
                    "drain_timeout must stay below systemd's 90 s stop timeout (at most 80s)".into(),
                ));
            }
        }
        problems.extend(crate::control::tables::check_budget(self));
        let mut names = HashSet::new();
        let mut endpoints = HashSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            let at = |field: &str| format!("services[{i}].{field}");
            if svc.name.is_empty() {
                problems.push((at("name"), "service name must not be empty".into()));
            } else if !names.insert(svc.name.as_str()) {
                problems.push((at("name"), format!("duplicate service name `{}`", svc.name)));
            }
            if !endpoints.insert((svc.vip, svc.port, svc.protocol)) {
                problems.push((
                    at("vip"),
                    format!(
                        "duplicate service: {} {}:{} is already defined by an earlier service",
                        svc.protocol, svc.vip, svc.port
                    ),
                ));
            }
            for (j, entry) in svc.group.iter().enumerate() {
                let port = entry.port.unwrap_or(svc.port);
                for a in entry.vip.addresses() {
                    if a.is_ipv4() != svc.vip.is_ipv4() {
                        problems.push((format!("services[{i}].group[{j}].vip"), format!("{a} is not the family of the service's VIP {}", svc.vip)));
                        break;
                    }
                    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                        problems.push((format!("services[{i}].group[{j}].vip"), format!("{a} cannot be a VIP")));
                        break;
                    }
                    if !endpoints.insert((a, port, svc.protocol)) {
                        problems.push((
                            format!("services[{i}].group[{j}].vip"),
                            format!("{} {a}:{port} is already served (by this service or an earlier one)", svc.protocol),
                        ));
                        break;
                    }
                }
            }
            for flag in &svc.scheduler_flags {
                if flag.scheduler() != svc.scheduler {
                    problems.push((
                        at("scheduler_flags"),
                        format!("`{}` is a flag of {}, and this service's scheduler is {}", flag.name(), flag.scheduler().name(), svc.scheduler.name()),
                    ));
                }
            }
            if svc.one_packet && svc.protocol != Protocol::Udp {
                problems.push((at("one_packet"), "one_packet applies to UDP services only (as IPVS's)".into()));
            }
            // The maps hold IPv4 as IPv4-mapped IPv6: such an address would be read as IPv4
            // (and one of a group's would be the IPv4 VIP's key).
            let mapped = |a: &IpAddr| match a {
                IpAddr::V6(v6) => v6.to_ipv4_mapped(),
                IpAddr::V4(_) => None,
            };
            let mapped_problem = |a: &IpAddr, v4: std::net::Ipv4Addr| format!("{a} is an IPv4-mapped IPv6 address: write the IPv4 address {v4}");
            for a in svc.addresses() {
                if let Some(v4) = mapped(&a) {
                    problems.push((at(if a == svc.vip { "vip" } else { "group" }), mapped_problem(&a, v4)));
                }
            }
            for (j, rs) in svc.real_servers.iter().enumerate() {
                if let Some(v4) = mapped(&rs.address) {
                    problems.push((format!("services[{i}].real_servers[{j}].address"), mapped_problem(&rs.address, v4)));
                }
            }
            if let Some(sorry) = &svc.sorry_server {
                if sorry.address.is_ipv4() != svc.vip.is_ipv4() {
                    problems.push((at("sorry_server.address"), format!("{} is not of the VIP's family ({}): Direct Routing forwards packets unchanged", sorry.address, svc.vip)));
                } else if let Some(v4) = mapped(&sorry.address) {
                    problems.push((at("sorry_server.address"), mapped_problem(&sorry.address, v4)));
                }
            }
            if svc.vip.is_unspecified() || svc.vip.is_multicast() || svc.vip.is_loopback() {
                problems.push((at("vip"), format!("{} cannot be a VIP", svc.vip)));
            }
            if let Some(hc) = &svc.health_check {
                problems.extend(hc.validate(svc.port).into_iter().map(|(f, m)| (at(&format!("health_check.{f}")), m)));
            }
            for (j, rs) in svc.real_servers.iter().enumerate() {
                for (k, hc) in rs.checks(svc).iter().enumerate() {
                    if let Some(src) = hc.source
                        && hc.address.is_none()
                        && src.is_ipv4() != rs.address.is_ipv4()
                    {
                        problems.push((
                            format!("services[{i}].real_servers[{j}].address"),
                            format!("a check's source {src} is not the family of the real server {}", rs.address),
                        ));
                    }
                    if rs.health_checks.is_none() {
                        continue;
                    }
                    problems.extend(
                        hc.validate(svc.port).into_iter().map(|(f, m)| (format!("services[{i}].real_servers[{j}].health_checks[{k}].{f}"), m)),
                    );
                }
            }
            if svc.real_servers.len() > lb_common::maps::MAX_BACKENDS_PER_SERVICE as usize {
                problems.push((
                    at("real_servers"),
                    format!(
                        "{} real servers; a service may have at most {} (the dataplane's scheduler loops are bounded by it)",
                        svc.real_servers.len(),
                        lb_common::maps::MAX_BACKENDS_PER_SERVICE
                    ),
                ));
            }
            for (field, value) in [("tcp", svc.timeouts.tcp), ("tcp_fin", svc.timeouts.tcp_fin), ("udp", svc.timeouts.udp)] {
                if value.as_secs() == 0 || value.as_secs() > u32::MAX as u64 {
                    problems.push((at(&format!("timeouts.{field}")), format!("timeout must be between 1s and {}s", u32::MAX)));
                }
            }
            if let Some(p) = svc.persistence_timeout
                && (p.as_secs() == 0 || p.as_secs() > u32::MAX as u64)
            {
                problems.push((at("persistence_timeout"), "persistence_timeout must be at least 1s".into()));
            }
            if let Some(Granularity(len)) = svc.persistence_granularity
                && svc.vip.is_ipv4()
                && len > 32
            {
                problems.push((at("persistence_granularity"), format!("prefix length {len} is above 32 (the VIP is IPv4)")));
            }
            if let Some(Granularity(0)) = svc.persistence_granularity
                && svc.vip.is_ipv6()
            {
                // IPVS takes an IPv6 netmask as a prefix length of 1 to 128.
                problems.push((at("persistence_granularity"), "an IPv6 prefix length is 1 to 128 (IPVS's range)".into()));
            }
            if svc.persistence_granularity.is_some() && svc.persistence_timeout.is_none() {
                problems.push((at("persistence_granularity"), "persistence_granularity needs persistence_timeout".into()));
            }
            if svc.quorum == 0 {
                problems.push((at("quorum"), "quorum must be at least 1 (keepalived's minimum)".into()));
            } else if svc.quorum_hysteresis >= svc.quorum {
                problems.push((
                    at("quorum_hysteresis"),
                    format!("quorum_hysteresis {} must be below the quorum {}", svc.quorum_hysteresis, svc.quorum),
                ));
            }
            if let Some(sorry) = &svc.sorry_server {
                if svc.addresses().contains(&sorry.address) || svc.real_servers.iter().any(|r| r.address == sorry.address) {
                    problems.push((at("sorry_server.address"), "the sorry server must differ from the VIPs and from every real server".into()));
                }
            }
            let mut seen = HashSet::new();
            for (j, rs) in svc.real_servers.iter().enumerate() {
                let rs_at = |field: &str| format!("services[{i}].real_servers[{j}].{field}");
                if rs.address == svc.vip || (!svc.group.is_empty() && svc.addresses().contains(&rs.address)) {
                    problems.push((
                        rs_at("address"),
                        format!("real server {} is the VIP itself; in DR mode it must be the server's own address", rs.address),
                    ));
                }
                if rs.address.is_ipv4() != svc.vip.is_ipv4() {
                    problems.push((rs_at("address"), "real server and VIP must be the same address family".into()));
                }
                if !seen.insert(rs.address) {
                    problems.push((rs_at("address"), format!("duplicate real server {} in service `{}`", rs.address, svc.name)));
                }
                if rs.weight > MAX_WEIGHT {
                    problems.push((rs_at("weight"), format!("weight {} is above the maximum {MAX_WEIGHT}", rs.weight)));
                }
                if let Some(port) = rs.port
                    && port != svc.port
                {
                    problems.push((
                        rs_at("port"),
                        format!("real server port {port} differs from service port {}: DR mode cannot change the destination port", svc.port),
                    ));
                }
            }
        }
        problems
    }
}

impl HealthCheck {
    fn validate(&self, service_port: u16) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.kind.uses_port() && self.port.is_none() && service_port == 0 {
            problems.push(("port", "a port-0 service needs an explicit health_check port".into()));
        }
        if let (Some(a), Some(s)) = (self.address, self.source)
            && a.is_ipv4() != s.is_ipv4()
        {
            problems.push(("source", format!("source {s} and address {a} are not the same address family")));
        }
        if !self.kind.connects() && (self.address.is_some() || self.source.is_some() || self.source_port.is_some()) {
            problems.push(("type", format!("a {} check makes no connection: `address`, `source` and `source_port` do not apply", self.kind.name())));
        }
        for (field, value) in [("interval", self.interval), ("timeout", self.timeout)] {
            if value.is_zero() {
                problems.push((field, format!("{field} must be greater than 0s")));
            }
        }
        if self.retries > MAX_RETRIES {
            problems.push(("retries", format!("retries {} is above {MAX_RETRIES}", self.retries)));
        }
        for (field, value) in [("rise", self.rise), ("fall", self.fall)] {
            if value == 0 {
                problems.push((field, format!("{field} must be at least 1")));
            }
        }
        let only = |field: &'static str, present: bool, kinds: &[CheckType]| (present && !kinds.contains(&self.kind)).then_some(field);
        for field in [
            only("path", self.path.is_some(), &[CheckType::Http, CheckType::Https]),
            only("host", self.host.is_some(), &[CheckType::Http, CheckType::Https]),
            only("status", self.status.is_some(), &[CheckType::Http, CheckType::Https]),
            only("regex", self.regex.is_some(), &[CheckType::Http, CheckType::Https]),
            only("digest", self.digest.is_some(), &[CheckType::Http, CheckType::Https]),
            only("sni", self.sni.is_some(), &[CheckType::Https]),
            only("command", self.command.is_some(), &[CheckType::Script]),
            only("dynamic", self.dynamic, &[CheckType::Script]),
            only("file", self.file.is_some(), &[CheckType::File]),
            only("weight", self.weight.is_some(), &[CheckType::File]),
            only("reverse", self.reverse, &[CheckType::File]),
            only("helo", self.helo.is_some(), &[CheckType::Smtp]),
            only("query_type", self.query_type.is_some(), &[CheckType::Dns]),
            only("query_name", self.query_name.is_some(), &[CheckType::Dns]),
            only("payload", self.payload.is_some(), &[CheckType::Udp]),
            only("reply", self.reply.is_some(), &[CheckType::Udp]),
            only("port", self.port.is_some(), &[CheckType::Tcp, CheckType::Http, CheckType::Https, CheckType::Script, CheckType::Smtp, CheckType::Dns, CheckType::Udp]),
            only("source_port", self.source_port.is_some(), &[CheckType::Tcp, CheckType::Http, CheckType::Https, CheckType::Smtp, CheckType::Dns, CheckType::Udp]),
        ]
        .into_iter()
        .flatten()
        {
            problems.push((field, format!("`{field}` does not apply to a {} check", self.kind.name())));
        }
        if let Some(name) = &self.query_name
            && name.split('.').filter(|l| !l.is_empty()).any(|l| l.len() > 63)
        {
            problems.push(("query_name", format!("`{name}` has a label longer than 63 bytes")));
        }
        match self.kind {
            CheckType::Http | CheckType::Https if self.path.is_none() => {
                problems.push(("type", format!("an {} check needs `path`", self.kind.name())))
            }
            CheckType::Script if self.command.is_none() => {
                problems.push(("type", "a script check needs `command`".into()))
            }
            CheckType::File if self.file.is_none() => problems.push(("type", "a file check needs `file`".into())),
            _ => {}
        }
        problems
    }
}

/// "200" or "200-299" → inclusive range.
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

/// serde_yaml appends " at line L column C"; we print the location in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
