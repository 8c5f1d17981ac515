//! The LVS part of keepalived.conf read as keepalived reads it (check_parser.c and the
//! checkers' keyword tables): `virtual_server`, `virtual_server_group`, the LVS globals,
//! and, for the director section, the VRRP instances' interfaces and addresses.
//!
//! Values keepalived rejects are reported and keepalived's default is kept, as keepalived
//! itself does; keywords it does not know are reported as it would ("Unknown keyword").
//! Nothing here decides what drlb does: that is [`super::translate`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::report::{Location, Reports, Severity};
use super::tree::Node;
use super::values;

/// keepalived's `virtual_server` header.
#[derive(Debug, Clone, PartialEq)]
pub enum VsAddress {
    Address { ip: IpAddr, port: Option<u16> },
    Fwmark(u32),
    Group(String),
}

/// `lvs_method` / `lb_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Nat,
    Dr,
    Tun,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Nat => "NAT",
            Method::Dr => "DR",
            Method::Tun => "TUN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

/// A script keyword's value (`quorum_up`, `notify_down`, `misc_path`): the command line as
/// written, and the user it runs as.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// What keepalived executes (no shell): the first word of the value, split again
    /// with quotes and escapes.
    pub argv: Vec<String>,
    /// What follows the first word (`user [group]` for notify scripts).
    pub rest: Vec<String>,
    pub user: Option<String>,
    pub at: Location,
}

impl Script {
    /// The command for `sh -c` that runs exactly what keepalived runs.
    pub fn shell_command(&self) -> String {
        self.argv.iter().map(|w| values::shell_quote(w)).collect::<Vec<_>>().join(" ")
    }
}

/// The timing options inherited VS → RS → checker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    pub delay_loop: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
    pub alpha: Option<bool>,
}

impl Timing {
    /// `self` with what it leaves unset taken from `outer`.
    pub fn under(&self, outer: &Timing) -> Timing {
        Timing {
            delay_loop: self.delay_loop.or(outer.delay_loop),
            connect_timeout: self.connect_timeout.or(outer.connect_timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            warmup: self.warmup.or(outer.warmup),
            alpha: self.alpha.or(outer.alpha),
        }
    }
}

/// keepalived's checker kinds, by their block names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckerKind {
    Tcp,
    Http,
    Ssl,
    Misc,
    Smtp,
    Dns,
    Udp,
    Ping,
    File,
    Bfd,
}

impl CheckerKind {
    pub fn from_keyword(k: &str) -> Option<CheckerKind> {
        Some(match k {
            "TCP_CHECK" => CheckerKind::Tcp,
            "HTTP_GET" => CheckerKind::Http,
            "SSL_GET" => CheckerKind::Ssl,
            "MISC_CHECK" => CheckerKind::Misc,
            "SMTP_CHECK" => CheckerKind::Smtp,
            "DNS_CHECK" => CheckerKind::Dns,
            "UDP_CHECK" => CheckerKind::Udp,
            "PING_CHECK" => CheckerKind::Ping,
            "FILE_CHECK" => CheckerKind::File,
            "BFD_CHECK" => CheckerKind::Bfd,
            _ => return None,
        })
    }

    pub fn keyword(self) -> &'static str {
        match self {
            CheckerKind::Tcp => "TCP_CHECK",
            CheckerKind::Http => "HTTP_GET",
            CheckerKind::Ssl => "SSL_GET",
            CheckerKind::Misc => "MISC_CHECK",
            CheckerKind::Smtp => "SMTP_CHECK",
            CheckerKind::Dns => "DNS_CHECK",
            CheckerKind::Udp => "UDP_CHECK",
            CheckerKind::Ping => "PING_CHECK",
            CheckerKind::File => "FILE_CHECK",
            CheckerKind::Bfd => "BFD_CHECK",
        }
    }

    /// keepalived's `retry` default when neither checker, RS nor VS sets one.
    pub fn default_retry(self) -> u32 {
        match self {
            CheckerKind::Misc => 0,
            CheckerKind::Dns => 3,
            _ => 1,
        }
    }

    /// keepalived's `delay_before_retry` default (`None`: the delay_loop).
    pub fn default_delay_before_retry(self) -> Option<Duration> {
        match self {
            CheckerKind::Http | CheckerKind::Ssl => Some(Duration::from_secs(3)),
            CheckerKind::Dns => None,
            _ => Some(Duration::from_secs(1)),
        }
    }
}

/// One `url { }` of HTTP_GET / SSL_GET.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Url {
    pub at: Option<Location>,
    pub path: Option<String>,
    pub digest: Option<String>,
    pub status_codes: Vec<(u16, u16)>,
    pub virtualhost: Option<String>,
    pub regex: Option<String>,
    pub regex_no_match: bool,
    /// Keywords drlb does not act on, for the report (`regex_options` ...).
    pub unsupported: Vec<(String, Location)>,
}

/// One checker block, with every option keepalived accepts in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checker {
    pub kind: CheckerKind,
    pub at: Location,
    pub timing: Timing,
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub bind_if: Option<String>,
    pub fwmark: Option<u32>,
    pub urls: Vec<Url>,
    pub virtualhost: Option<String>,
    pub http_protocol: Option<String>,
    pub enable_sni: bool,
    pub sni_name: Option<String>,
    pub misc: Option<Script>,
    pub misc_timeout: Option<u32>,
    pub misc_dynamic: bool,
    pub helo_name: Option<String>,
    pub dns_type: Option<String>,
    pub dns_name: Option<String>,
    pub udp_payload: Option<String>,
    pub udp_require_reply: Option<Option<String>>,
    pub track_file: Option<String>,
    pub file_weight: Option<(i64, bool)>,
    /// `nb_get_retry` where keepalived does not know it (TCP_CHECK ...): its value.
    pub ignored_nb_get_retry: Option<(u32, Location)>,
    /// Options drlb has no equivalent for yet, for the report.
    pub unsupported: Vec<(String, Location)>,
}

impl Checker {
    fn new(kind: CheckerKind, at: Location) -> Checker {
        Checker {
            kind,
            at,
            timing: Timing::default(),
            connect_ip: None,
            connect_port: None,
            bindto: None,
            bind_port: None,
            bind_if: None,
            fwmark: None,
            urls: Vec::new(),
            virtualhost: None,
            http_protocol: None,
            enable_sni: false,
            sni_name: None,
            misc: None,
            misc_timeout: None,
            misc_dynamic: false,
            helo_name: None,
            dns_type: None,
            dns_name: None,
            udp_payload: None,
            udp_require_reply: None,
            track_file: None,
            file_weight: None,
            ignored_nb_get_retry: None,
            unsupported: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RealServer {
    pub at: Location,
    pub ip: IpAddr,
    /// As written on the `real_server` line.
    pub port: Option<u16>,
    pub weight: Option<u32>,
    pub method: Option<(Method, Location)>,
    pub inhibit_on_failure: Option<bool>,
    pub timing: Timing,
    pub virtualhost: Option<String>,
    pub uthreshold: u32,
    pub lthreshold: u32,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub checkers: Vec<Checker>,
    pub unsupported: Vec<(String, Location)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SorryServer {
    pub at: Location,
    pub ip: IpAddr,
    pub port: Option<u16>,
    pub inhibit: bool,
    pub method: Option<Method>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServer {
    pub at: Location,
    pub address: VsAddress,
    pub protocol: Option<Proto>,
    pub scheduler: Option<String>,
    pub method: Option<Method>,
    /// Seconds; `persistence_timeout` with no value is 360.
    pub persistence_timeout: Option<u32>,
    /// The mask as written (`255.255.255.0`, or a v6 prefix length).
    pub persistence_granularity: Option<String>,
    pub ops: bool,
    /// `sh-port`, `mh-fallback`, `flag-1`...: IPVS scheduler flags, as written.
    pub sched_flags: Vec<(String, Location)>,
    pub timing: Timing,
    pub inhibit_on_failure: bool,
    pub omega: bool,
    pub quorum: Option<u32>,
    pub hysteresis: Option<u32>,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    /// The real servers' default weight.
    pub weight: Option<u32>,
    pub sorry_server: Option<SorryServer>,
    pub virtualhost: Option<String>,
    pub ha_suspend: bool,
    pub real_servers: Vec<RealServer>,
    pub unsupported: Vec<(String, Location)>,
}

/// One entry of a `virtual_server_group`.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEntry {
    Addresses { at: Location, written: String, addresses: Vec<IpAddr>, port: Option<u16> },
    Fwmark { at: Location, mark: u32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub at: Location,
    pub entries: Vec<GroupEntry>,
}

/// `lvs_sync_daemon IF [VRRP_INSTANCE] [id N] [port N] [group IP] ...` in global_defs.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncDaemon {
    pub at: Location,
    pub interface: String,
    pub instance: Option<String>,
    pub syncid: Option<u8>,
    pub port: Option<u16>,
    pub group: Option<IpAddr>,
    /// `maxlen`, `ttl`: accepted by keepalived, not by drlb.
    pub unsupported: Vec<String>,
}

/// A `vrrp_instance`: what the director section needs from it.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: Option<String>,
    pub virtual_router_id: Option<u8>,
    pub addresses: Vec<IpAddr>,
}

/// Everything LVS in one keepalived.conf.
#[derive(Debug, Default)]
pub struct Lvs {
    pub virtual_servers: Vec<VirtualServer>,
    pub groups: BTreeMap<String, Group>,
    /// `lvs_timeouts tcp N tcpfin N udp N`.
    pub timeouts: Option<(Location, Option<u32>, Option<u32>, Option<u32>)>,
    pub sync_daemon: Option<SyncDaemon>,
    pub vrrp_instances: Vec<VrrpInstance>,
    /// Top-level `track_file NAME { file PATH; weight N }`.
    pub track_files: BTreeMap<String, Node>,
}

/// Top-level blocks that belong to keepalived's VRRP process (or its parent): passed on to
/// `--vrrp-out`, not read here beyond what the director section needs.
pub const VRRP_BLOCKS: &[&str] = &[
    // keepalived 2.3.4's install_keyword_root() names, less the LVS ones.
    "bfd_instance",
    "child_wait_time",
    "garp_group",
    "global_defs",
    "instance",
    "interface_up_down_delays",
    "linkbeat_interfaces",
    "linkbeat_use_polling",
    "namespace_with_ipsets",
    "net_namespace",
    "net_namespace_ipvs",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_file",
    "track_group",
    "use_pid_dir",
    "vrrp_instance",
    "vrrp_script",
    "vrrp_sync_group",
    "vrrp_track_file",
    "vrrp_track_process",
];

/// The top-level blocks that are LVS only (left out of `--vrrp-out`).
pub const LVS_BLOCKS: &[&str] = &["virtual_server", "virtual_server_group", "SSL"];

/// global_defs keywords that configure IPVS (left out of `--vrrp-out`; drlb takes them over).
pub const LVS_GLOBALS: &[&str] = &[
    "lvs_timeouts",
    "lvs_sync_daemon",
    "lvs_flush",
    "lvs_flush_on_stop",
    "lvs_flush_onstop",
    "checker_log_all_failures",
    "smtp_alert_checker",
];

/// Reads the LVS part of a parsed file.
pub fn read(tree: &[Node], reports: &mut Reports) -> Lvs {
    let mut lvs = Lvs::default();
    for node in tree {
        match node.keyword.as_str() {
            "virtual_server" => {
                if let Some(vs) = virtual_server(node, reports) {
                    lvs.virtual_servers.push(vs);
                }
            }
            "virtual_server_group" => {
                if let Some(name) = node.args.first() {
                    lvs.groups.insert(name.clone(), group(node, reports));
                } else {
                    reports.add(Severity::Error, &node.at, "virtual_server_group", "has no name", "left out");
                }
            }
            "global_defs" => globals(node, &mut lvs, reports),
            "vrrp_instance" => lvs.vrrp_instances.push(vrrp_instance(node)),
            "track_file" | "vrrp_track_file" => {
                if let Some(name) = node.args.first() {
                    lvs.track_files.insert(name.clone(), node.clone());
                }
            }
            "SSL" => reports.add(
                Severity::Warning,
                &node.at,
                "SSL",
                "SSL_GET's TLS context (client certificate, key, CA): drlb's https check presents no client certificate and, as keepalived without `ca`, verifies no server certificate",
                "ignored; a server that requires a client certificate fails the check",
            ),
            k if VRRP_BLOCKS.contains(&k) || LVS_BLOCKS.contains(&k) => {}
            // A statement that only opened an ignored `{` (reported by the tree).
            "" => {}
            k => unknown(node, k, "at the top level", reports),
        }
    }
    lvs
}

/// Block keywords of a real_server: the checkers.
const CHECKER_BLOCKS: [&str; 10] = ["TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "BFD_CHECK"];

/// A `{` after a keyword that opens no block (`sorry_server ... {`): keepalived ignores the
/// `{` and reads the lines one level up, as for an unknown keyword. True if reported.
fn misplaced_block(node: &Node, blocks: &[&str], place: &str, reports: &mut Reports) -> bool {
    if node.block.is_none() || blocks.contains(&node.keyword.as_str()) || node.keyword.is_empty() {
        return false;
    }
    unknown(node, &node.keyword, &format!("{place} (`{}` opens no block)", node.keyword), reports);
    true
}

fn unknown(node: &Node, keyword: &str, place: &str, reports: &mut Reports) {
    let instead = match keyword {
        "weigth" => "ignored as keepalived does; did you mean `weight`?",
        "nat_mask" | "net_mask" => "ignored as keepalived does; it has had no meaning for years",
        "lvs_id" => "ignored as keepalived does; the keyword is now `router_id`",
        "nb_get_retry" => "ignored as keepalived does; `retry` is the keyword",
        _ => "ignored as keepalived does",
    };
    let Some(children) = &node.block else {
        reports.add(Severity::Error, &node.at, keyword, format!("unknown keyword {place}: keepalived logs \"Unknown keyword '{keyword}'\" and ignores the line"), instead);
        return;
    };
    // keepalived ignores the `{` too, reads the block's lines one level up and lets its
    // `}` close the enclosing block. At the top level that stays contained; deeper, the
    // rest of the file nests differently from how it is written, so it is refused.
    let top = place == "at the top level";
    let severity = if top { Severity::Error } else { Severity::Fatal };
    reports.add(
        severity,
        &node.at,
        keyword,
        format!("unknown keyword {place}: keepalived logs \"Unknown keyword '{keyword}'\" and \"Unexpected '{{'\", and reads the block's lines one level up"),
        if top { instead.to_string() } else { format!("not imported: keepalived would nest the rest of the file differently from how it is written; fix `{keyword}`") },
    );
    for c in children {
        reports.add(
            severity,
            &c.at,
            &c.keyword,
            format!("inside unknown `{keyword}`: keepalived reads this line one level up{}", if top { ", where it is unknown" } else { "" }),
            "ignored",
        );
    }
    if let Some(end) = &node.end {
        reports.add(
            severity,
            end,
            "}",
            format!("ends unknown `{keyword}`: keepalived takes this `}}` for the end of the enclosing block{}", if top { " (\"Unknown keyword '}'\" at the top level)" } else { "" }),
            "ignored",
        );
    }
}

/// Reports a bad value at `node` and returns None (keepalived keeps its default).
fn bad<T>(node: &Node, reports: &mut Reports, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(why) => {
            reports.add(Severity::Error, &node.at, &node.keyword, format!("{why}; keepalived ignores the line"), "keepalived's default applies");
            None
        }
    }
}

fn arg<'a>(node: &'a Node, reports: &mut Reports) -> Option<&'a str> {
    match node.args.first() {
        Some(a) => Some(a.as_str()),
        None => {
            reports.add(Severity::Error, &node.at, &node.keyword, "has no value; keepalived ignores the line", "keepalived's default applies");
            None
        }
    }
}

/// A script keyword's value, as keepalived's set_script_params_array reads it: the line is
/// split with quotes, its first word is split again with quotes and escapes into the argv
/// (run without a shell); the words after the first are the user and group.
fn script(node: &Node, reports: &mut Reports) -> Option<Script> {
    let raw = node.text.trim_start().strip_prefix(node.keyword.as_str()).unwrap_or("");
    let parsed = values::split_quoted(raw, false).and_then(|words| {
        let first = words.first().ok_or_else(|| "has no script".to_string())?;
        Ok((values::split_quoted(first, true)?, words[1..].to_vec()))
    });
    match parsed {
        Ok((argv, rest)) if !argv.is_empty() => Some(Script { argv, rest, user: None, at: node.at.clone() }),
        Ok(_) => {
            reports.add(Severity::Error, &node.at, &node.keyword, "has no script; keepalived ignores the line", "ignored as keepalived does");
            None
        }
        Err(why) => {
            reports.add(Severity::Error, &node.at, &node.keyword, format!("{why}; keepalived cannot parse the script"), "ignored as keepalived does");
            None
        }
    }
}

/// `delay_loop`, `connect_timeout`, `retry`, `delay_before_retry`, `warmup`, `alpha`:
/// returns false if `node` is none of them.
/// keepalived's timers go up to ULONG_MAX microseconds.
const MAX_TIMER: f64 = 18_446_744_073_709.0;

/// `min_retry`: 1 at virtual and real server level, 0 in a checker (keepalived's ranges).
fn timing_option(node: &Node, timing: &mut Timing, min_retry: i64, reports: &mut Reports) -> bool {
    match node.keyword.as_str() {
        "delay_loop" => {
            if let Some(a) = arg(node, reports) {
                timing.delay_loop = bad(node, reports, values::timer(a, 0.000001, MAX_TIMER)).or(timing.delay_loop);
            }
        }
        "connect_timeout" => {
            if let Some(a) = arg(node, reports) {
                timing.connect_timeout = bad(node, reports, values::timer(a, 0.000001, 4294.967295)).or(timing.connect_timeout);
            }
        }
        "retry" => {
            if let Some(a) = arg(node, reports) {
                timing.retry = bad(node, reports, values::number(a, min_retry, u32::MAX as i64)).map(|v| v as u32).or(timing.retry);
            }
        }
        "delay_before_retry" => {
            if let Some(a) = arg(node, reports) {
                timing.delay_before_retry = bad(node, reports, values::timer(a, 0.0, MAX_TIMER)).or(timing.delay_before_retry);
            }
        }
        "warmup" => {
            if let Some(a) = arg(node, reports) {
                timing.warmup = bad(node, reports, values::timer(a, 0.0, MAX_TIMER)).or(timing.warmup);
            }
        }
        "alpha" => timing.alpha = bad(node, reports, values::flag(&node.args)).or(timing.alpha),
        _ => return false,
    }
    true
}

fn method(node: &Node, reports: &mut Reports) -> Option<Method> {
    let a = arg(node, reports)?;
    match a {
        "NAT" => Some(Method::Nat),
        "DR" => Some(Method::Dr),
        "TUN" => Some(Method::Tun),
        other => {
            let hint = if ["nat", "dr", "tun"].contains(&other.to_ascii_lowercase().as_str()) {
                format!(" (keepalived's values are case-sensitive: `{}`)", other.to_ascii_uppercase())
            } else {
                String::new()
            };
            reports.add(
                Severity::Error,
                &node.at,
                &node.keyword,
                format!("unknown forwarding method `{other}`{hint}: keepalived ignores the line and forwards this virtual server with NAT"),
                "read as keepalived reads it: NAT, which drlb leaves out",
            );
            None
        }
    }
}

fn virtual_server(node: &Node, reports: &mut Reports) -> Option<VirtualServer> {
    let address = match node.args.as_slice() {
        [g, name, ..] if g == "group" => VsAddress::Group(name.clone()),
        [f, mark, ..] if f == "fwmark" => match values::number(mark, 0, u32::MAX as i64) {
            Ok(m) => VsAddress::Fwmark(m as u32),
            Err(why) => {
                reports.add(Severity::Error, &node.at, "virtual_server", format!("fwmark {why}; keepalived skips the whole block"), "left out");
                return None;
            }
        },
        [ip, rest @ ..] => match values::address(values::strip_range(ip)) {
            Ok(ip) => {
                let port = match rest.first() {
                    Some(p) => match values::port(p) {
                        Ok(p) => Some(p),
                        Err(why) => {
                            reports.add(Severity::Error, &node.at, "virtual_server", format!("port {why}; keepalived skips the whole block"), "left out");
                            return None;
                        }
                    },
                    None => None,
                };
                VsAddress::Address { ip, port }
            }
            Err(why) => {
                reports.add(Severity::Error, &node.at, "virtual_server", format!("{why}; keepalived skips the whole block"), "left out");
                return None;
            }
        },
        [] => {
            reports.add(Severity::Error, &node.at, "virtual_server", "has no address; keepalived skips the whole block", "left out");
            return None;
        }
    };
    let mut vs = VirtualServer {
        at: node.at.clone(),
        address,
        protocol: None,
        scheduler: None,
        method: None,
        persistence_timeout: None,
        persistence_granularity: None,
        ops: false,
        sched_flags: Vec::new(),
        timing: Timing::default(),
        inhibit_on_failure: false,
        omega: false,
        quorum: None,
        hysteresis: None,
        quorum_up: None,
        quorum_down: None,
        weight: None,
        sorry_server: None,
        virtualhost: None,
        ha_suspend: false,
        real_servers: Vec::new(),
        unsupported: Vec::new(),
    };
    for c in node.children() {
        if misplaced_block(c, &["real_server"], "in virtual_server", reports) {
            continue;
        }
        // At this level keepalived takes `alpha` and `inhibit_on_failure` as bare flags
        // and ignores any value after them (vs_alpha_handler, vs_inhibit_handler).
        if c.keyword == "alpha" {
            vs.timing.alpha = Some(true);
            continue;
        }
        if timing_option(c, &mut vs.timing, 1, reports) {
            continue;
        }
        let k = c.keyword.as_str();
        match k {
            "lvs_sched" | "lb_algo" => {
                if let Some(a) = arg(c, reports) {
                    // keepalived's lvs_schedulers[] are IPVS's, as drlb's are.
                    const KNOWN: [&str; 14] = crate::control::config::Scheduler::NAMES;
                    if KNOWN.contains(&a) {
                        vs.scheduler = Some(a.to_string());
                    } else {
                        reports.add(
                            Severity::Error,
                            &c.at,
                            k,
                            format!("unknown scheduler `{a}` (keepalived's names are case-sensitive: {}); keepalived ignores the line and uses wlc", KNOWN.join(", ")),
                            "wlc, as keepalived",
                        );
                    }
                }
            }
            "lvs_method" | "lb_kind" => vs.method = method(c, reports).or(vs.method),
            "protocol" => {
                if let Some(a) = arg(c, reports) {
                    vs.protocol = match a.to_ascii_uppercase().as_str() {
                        "TCP" => Some(Proto::Tcp),
                        "UDP" => Some(Proto::Udp),
                        "SCTP" => Some(Proto::Sctp),
                        _ => bad(c, reports, Err(format!("unknown protocol `{a}`"))),
                    }
                    .or(vs.protocol);
                }
            }
            "persistence_timeout" => match c.args.first() {
                None => vs.persistence_timeout = Some(360),
                Some(a) => vs.persistence_timeout = bad(c, reports, values::number(a, 1, 2_678_400)).map(|v| v as u32).or(vs.persistence_timeout),
            },
            "persistence_granularity" => {
                if let Some(a) = arg(c, reports) {
                    vs.persistence_granularity = Some(a.to_string());
                }
            }
            "ops" => vs.ops = true,
            "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
                let needs = &k[..2];
                if vs.scheduler.as_deref() == Some(needs) {
                    vs.sched_flags.push((k.to_string(), c.at.clone()));
                } else {
                    reports.add(
                        Severity::Error,
                        &c.at,
                        k,
                        format!("keepalived applies it only after `lvs_sched {needs}` in the same block, and ignores it here"),
                        "ignored as keepalived does",
                    );
                }
            }
            "flag-1" | "flag-2" | "flag-3" => vs.sched_flags.push((k.to_string(), c.at.clone())),
            "hashed" => vs.unsupported.push((k.to_string(), c.at.clone())),
            "inhibit_on_failure" => vs.inhibit_on_failure = true,
            "omega" => vs.omega = true,
            "quorum" => {
                if let Some(a) = arg(c, reports) {
                    vs.quorum = Some(values::number(a, 1, u32::MAX as i64).map(|v| v as u32).unwrap_or_else(|why| {
                        reports.add(Severity::Error, &c.at, k, format!("{why}; keepalived sets it to 1"), "quorum 1, as keepalived");
                        1
                    }));
                }
            }
            "hysteresis" => {
                if let Some(a) = arg(c, reports) {
                    vs.hysteresis = bad(c, reports, values::number(a, 0, u32::MAX as i64)).map(|v| v as u32).or(vs.hysteresis);
                }
            }
            "quorum_up" | "quorum_down" => {
                let slot = if k == "quorum_up" { &mut vs.quorum_up } else { &mut vs.quorum_down };
                if slot.is_some() {
                    reports.add(Severity::Error, &c.at, k, "given twice; keepalived keeps the first", "the first, as keepalived");
                } else {
                    *slot = script(c, reports);
                }
            }
            "weight" => {
                if let Some(a) = arg(c, reports) {
                    vs.weight = bad(c, reports, values::number(a, 1, i32::MAX as i64)).map(|v| v as u32).or(vs.weight);
                }
            }
            "sorry_server" => {
                let ip = c.args.first().map(|a| values::address(values::strip_range(a)));
                match ip {
                    Some(Ok(ip)) => {
                        let port = c.args.get(1).and_then(|p| bad(c, reports, values::port(p)));
                        vs.sorry_server = Some(SorryServer { at: c.at.clone(), ip, port, inhibit: false, method: None });
                    }
                    Some(Err(why)) => {
                        bad::<()>(c, reports, Err(why));
                    }
                    None => {
                        arg(c, reports);
                    }
                }
            }
            "sorry_server_inhibit" | "sorry_server_lvs_method" => match vs.sorry_server.as_mut() {
                Some(s) if k == "sorry_server_inhibit" => s.inhibit = true,
                Some(s) => s.method = method(c, reports),
                None => reports.add(Severity::Error, &c.at, k, "keepalived accepts it only after `sorry_server`, and ignores it here", "ignored as keepalived does"),
            },
            "virtualhost" => vs.virtualhost = c.args.first().cloned(),
            "ha_suspend" => vs.ha_suspend = true,
            "real_server" => {
                if let Some(rs) = real_server(c, reports) {
                    if vs.real_servers.iter().any(|r| r.ip == rs.ip && r.port == rs.port) {
                        reports.add(Severity::Error, &c.at, k, "the same real server twice; keepalived drops the second", "the first, as keepalived");
                    } else {
                        vs.real_servers.push(rs);
                    }
                }
            }
            "ip_family" | "persistence_engine" | "smtp_alert" | "snmp_name" => vs.unsupported.push((k.to_string(), c.at.clone())),
            "" => {}
            _ => unknown(c, k, "in virtual_server", reports),
        }
    }
    if vs.real_servers.is_empty() && !matches!(vs.address, VsAddress::Group(_)) || vs.real_servers.is_empty() {
        reports.add(Severity::Error, &vs.at, "virtual_server", "has no real_server; keepalived drops it (\"has no real servers - ignoring\")", "left out");
        return None;
    }
    Some(vs)
}

fn real_server(node: &Node, reports: &mut Reports) -> Option<RealServer> {
    let ip = match node.args.first().map(|a| values::address(values::strip_range(a))) {
        Some(Ok(ip)) => ip,
        Some(Err(why)) => {
            reports.add(Severity::Error, &node.at, "real_server", format!("{why}; keepalived skips the whole block"), "left out");
            return None;
        }
        None => {
            reports.add(Severity::Error, &node.at, "real_server", "has no address; keepalived skips the whole block", "left out");
            return None;
        }
    };
    let port = match node.args.get(1).map(|p| values::port(p)) {
        Some(Ok(p)) => Some(p),
        Some(Err(why)) => {
            reports.add(Severity::Error, &node.at, "real_server", format!("port {why}; keepalived skips the whole block"), "left out");
            return None;
        }
        None => None,
    };
    let mut rs = RealServer {
        at: node.at.clone(),
        ip,
        port,
        weight: None,
        method: None,
        inhibit_on_failure: None,
        timing: Timing::default(),
        virtualhost: None,
        uthreshold: 0,
        lthreshold: 0,
        notify_up: None,
        notify_down: None,
        checkers: Vec::new(),
        unsupported: Vec::new(),
    };
    for c in node.children() {
        if misplaced_block(c, &CHECKER_BLOCKS, "in real_server", reports) {
            continue;
        }
        if timing_option(c, &mut rs.timing, 1, reports) {
            continue;
        }
        let k = c.keyword.as_str();
        if let Some(kind) = CheckerKind::from_keyword(k) {
            rs.checkers.push(checker(kind, c, reports));
            continue;
        }
        match k {
            "weight" => {
                if let Some(a) = arg(c, reports) {
                    rs.weight = bad(c, reports, values::number(a, 0, i32::MAX as i64)).map(|v| v as u32).or(rs.weight);
                }
            }
            "lvs_method" => rs.method = method(c, reports).map(|m| (m, c.at.clone())).or(rs.method.clone()),
            "inhibit_on_failure" => rs.inhibit_on_failure = bad(c, reports, values::flag(&c.args)).or(rs.inhibit_on_failure),
            "uthreshold" | "lthreshold" => {
                if let Some(a) = arg(c, reports) {
                    if let Some(v) = bad(c, reports, values::number(a, 0, u32::MAX as i64)) {
                        if k == "uthreshold" { rs.uthreshold = v as u32 } else { rs.lthreshold = v as u32 }
                    }
                }
            }
            "notify_up" | "notify_down" => {
                let slot = if k == "notify_up" { &mut rs.notify_up } else { &mut rs.notify_down };
                if slot.is_some() {
                    reports.add(Severity::Error, &c.at, k, "given twice; keepalived keeps the first", "the first, as keepalived");
                } else {
                    *slot = script(c, reports);
                }
            }
            "virtualhost" => rs.virtualhost = c.args.first().cloned(),
            "smtp_alert" | "snmp_name" => rs.unsupported.push((k.to_string(), c.at.clone())),
            "" => {}
            _ => unknown(c, k, "in real_server", reports),
        }
    }
    Some(rs)
}

/// The options every checker but MISC, FILE and BFD takes for its connection.
fn connection_option(node: &Node, ck: &mut Checker, reports: &mut Reports) -> bool {
    match node.keyword.as_str() {
        "connect_ip" => ck.connect_ip = arg(node, reports).and_then(|a| bad(node, reports, values::address(a))),
        "connect_port" => ck.connect_port = arg(node, reports).and_then(|a| bad(node, reports, values::number(a, 1, 65535))).map(|p| p as u16),
        "bindto" => ck.bindto = arg(node, reports).and_then(|a| bad(node, reports, values::address(a))),
        "bind_port" => ck.bind_port = arg(node, reports).and_then(|a| bad(node, reports, values::number(a, 1, 65535))).map(|p| p as u16),
        "bind_if" => ck.bind_if = node.args.first().cloned(),
        "fwmark" => ck.fwmark = arg(node, reports).and_then(|a| bad(node, reports, values::number(a, 0, u32::MAX as i64))).map(|v| v as u32),
        _ => return false,
    }
    true
}

fn checker(kind: CheckerKind, node: &Node, reports: &mut Reports) -> Checker {
    let mut ck = Checker::new(kind, node.at.clone());
    let connects = !matches!(kind, CheckerKind::Misc | CheckerKind::File | CheckerKind::Bfd);
    let timed = !matches!(kind, CheckerKind::File | CheckerKind::Bfd);
    for c in node.children() {
        if misplaced_block(c, &["url", "host"], "in a checker", reports) {
            continue;
        }
        let k = c.keyword.as_str();
        if connects && connection_option(c, &mut ck, reports) {
            continue;
        }
        if timed && (k != "connect_timeout" || connects) && timing_option(c, &mut ck.timing, 0, reports) {
            continue;
        }
        match (kind, k) {
            (_, "log_all_failures") if timed => ck.unsupported.push((k.to_string(), c.at.clone())),
            (CheckerKind::Http | CheckerKind::Ssl, "url") => ck.urls.push(url(c, reports)),
            (CheckerKind::Http | CheckerKind::Ssl, "nb_get_retry") => {
                if let Some(a) = arg(c, reports) {
                    reports.add(Severity::Note, &c.at, k, "deprecated alias of `retry` (keepalived honours it here)", "read as `retry`");
                    ck.timing.retry = bad(c, reports, values::number(a, 0, u32::MAX as i64)).map(|v| v as u32).or(ck.timing.retry);
                }
            }
            (CheckerKind::Http | CheckerKind::Ssl, "virtualhost") => ck.virtualhost = c.args.first().cloned(),
            (CheckerKind::Http | CheckerKind::Ssl, "http_protocol") => {
                ck.http_protocol = c.args.first().cloned();
                ck.unsupported.push((k.to_string(), c.at.clone()));
            }
            (CheckerKind::Http | CheckerKind::Ssl, "enable_sni") => ck.enable_sni = bad(c, reports, values::flag(&c.args)).unwrap_or(ck.enable_sni),
            (CheckerKind::Http | CheckerKind::Ssl, "sni_name") => {
                ck.sni_name = c.args.first().cloned();
                ck.enable_sni = true;
            }
            (CheckerKind::Http | CheckerKind::Ssl, "fast_recovery" | "tls_compliant") => ck.unsupported.push((k.to_string(), c.at.clone())),
            (CheckerKind::Misc, "misc_path") => {
                ck.misc = script(c, reports);
                if let Some(s) = &ck.misc
                    && !s.rest.is_empty()
                {
                    reports.add(
                        Severity::Error,
                        &c.at,
                        "misc_path",
                        format!("keepalived runs only the first word `{}` and ignores `{}`", s.argv.join(" "), s.rest.join(" ")),
                        "the same: quote the whole command line to pass arguments",
                    );
                }
            }
            (CheckerKind::Misc, "misc_timeout") => {
                ck.misc_timeout = arg(c, reports).and_then(|a| bad(c, reports, values::number(a, 0, u32::MAX as i64))).map(|v| v as u32)
            }
            (CheckerKind::Misc, "misc_dynamic") => ck.misc_dynamic = true,
            (CheckerKind::Misc, "user") => {
                if let Some(s) = ck.misc.as_mut() {
                    s.user = Some(c.args.join(" "));
                } else {
                    ck.unsupported.push((k.to_string(), c.at.clone()));
                }
            }
            (CheckerKind::Smtp, "helo_name") => ck.helo_name = c.args.first().cloned(),
            (CheckerKind::Smtp, "host") => ck.unsupported.push(("host".to_string(), c.at.clone())),
            (CheckerKind::Dns, "type") => ck.dns_type = c.args.first().map(|t| t.to_ascii_uppercase()),
            (CheckerKind::Dns, "name") => ck.dns_name = c.args.first().cloned(),
            (CheckerKind::Udp, "payload") => ck.udp_payload = Some(hex_words(&c.args)),
            (CheckerKind::Udp, "require_reply") => ck.udp_require_reply = Some((!c.args.is_empty()).then(|| hex_words(&c.args))),
            (CheckerKind::Udp, "min_reply_length" | "max_reply_length") => ck.unsupported.push((k.to_string(), c.at.clone())),
            (CheckerKind::File, "track_file") => ck.track_file = c.args.first().cloned(),
            (CheckerKind::File, "weight") => {
                if let Some(a) = arg(c, reports) {
                    let reverse = c.args.get(1).map(String::as_str) == Some("reverse");
                    ck.file_weight = bad(c, reports, values::number(a, i32::MIN as i64 + 1, i32::MAX as i64)).map(|w| (w, reverse));
                }
            }
            (CheckerKind::Bfd, "name") | (CheckerKind::Bfd, "alpha") => ck.unsupported.push((k.to_string(), c.at.clone())),
            (_, "nb_get_retry") => {
                // keepalived does not know it here (only HTTP_GET/SSL_GET): it logs
                // "Unknown keyword" and retry keeps its value. The translation reports
                // it only where the author's number differs from what keepalived uses.
                if let Some(v) = c.args.first().and_then(|a| a.parse::<u32>().ok()) {
                    ck.ignored_nb_get_retry = Some((v, c.at.clone()));
                } else {
                    unknown(c, k, &format!("in {}", kind.keyword()), reports);
                }
            }
            (_, "") => {}
            _ => unknown(c, k, &format!("in {}", kind.keyword()), reports),
        }
    }
    if matches!(kind, CheckerKind::Http | CheckerKind::Ssl) {
        ck.urls.retain(|u| {
            if u.path.is_none() {
                reports.add(Severity::Error, u.at.as_ref().unwrap_or(&node.at), "url", "has no `path`; keepalived drops it", "left out");
            }
            u.path.is_some()
        });
        if ck.urls.is_empty() {
            reports.add(Severity::Error, &node.at, kind.keyword(), "has no `url` with a `path`; keepalived drops the checker", "left out (the real server counts as up, as keepalived)");
        }
    }
    if kind == CheckerKind::Misc && ck.misc.is_none() {
        reports.add(Severity::Error, &node.at, kind.keyword(), "has no `misc_path`; keepalived drops the checker", "left out (the real server counts as up, as keepalived)");
    }
    ck
}

fn url(node: &Node, reports: &mut Reports) -> Url {
    let mut u = Url { at: Some(node.at.clone()), ..Url::default() };
    for c in node.children() {
        if misplaced_block(c, &[], "in url", reports) {
            continue;
        }
        let k = c.keyword.as_str();
        match k {
            "path" => u.path = c.args.first().cloned(),
            "digest" => {
                if let Some(d) = arg(c, reports) {
                    if d.len() == 32 && d.chars().all(|ch| ch.is_ascii_hexdigit()) {
                        u.digest = Some(d.to_ascii_lowercase());
                    } else {
                        bad::<()>(c, reports, Err(format!("`{d}` is not 32 hex digits (an MD5 digest)")));
                    }
                }
            }
            "status_code" => {
                for a in &c.args {
                    let range = match a.split_once('-') {
                        Some((lo, hi)) => lo.parse().ok().zip(hi.parse().ok()),
                        None => a.parse().ok().map(|v| (v, v)),
                    };
                    match range {
                        Some((lo, hi)) if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => u.status_codes.push((lo, hi)),
                        _ => {
                            bad::<()>(c, reports, Err(format!("`{a}` is not a status code or range in 100-599")));
                        }
                    }
                }
            }
            "virtualhost" => u.virtualhost = c.args.first().cloned(),
            "regex" => {
                let raw = c.text.trim_start().strip_prefix("regex").unwrap_or("");
                match values::split_quoted(raw, true) {
                    Ok(words) if words.len() == 1 => u.regex = words.into_iter().next(),
                    Ok(words) => reports.add(Severity::Error, &c.at, k, format!("needs exactly one pattern, got {}; keepalived ignores the line", words.len()), "no regex, as keepalived"),
                    Err(why) => reports.add(Severity::Error, &c.at, k, format!("{why}; keepalived ignores the line"), "no regex, as keepalived"),
                }
            }
            "regex_no_match" => u.regex_no_match = true,
            "regex_options" | "regex_min_offset" | "regex_max_offset" | "regex_stack" | "tls_compliant" => {
                u.unsupported.push((k.to_string(), c.at.clone()))
            }
            "" => {}
            _ => unknown(c, k, "in url", reports),
        }
    }
    u
}

fn group(node: &Node, reports: &mut Reports) -> Group {
    let mut g = Group { at: node.at.clone(), entries: Vec::new() };
    for c in node.children() {
        if misplaced_block(c, &[], "in virtual_server_group", reports) {
            continue;
        }
        if c.keyword == "fwmark" {
            match c.args.first().map(|m| values::number(m, 0, u32::MAX as i64)) {
                Some(Ok(mark)) => g.entries.push(GroupEntry::Fwmark { at: c.at.clone(), mark: mark as u32 }),
                Some(Err(why)) => reports.add(Severity::Error, &c.at, "fwmark", format!("{why}; keepalived ignores the entry"), "left out"),
                None => reports.add(Severity::Error, &c.at, "fwmark", "has no mark; keepalived ignores the entry", "left out"),
            }
            continue;
        }
        match values::address_range(&c.keyword) {
            Ok(addresses) => {
                let port = match c.args.first().map(|p| values::port(p)) {
                    Some(Ok(p)) => Some(p),
                    Some(Err(why)) => {
                        reports.add(Severity::Error, &c.at, &c.keyword, format!("port {why}; keepalived ignores the entry"), "left out");
                        continue;
                    }
                    None => None,
                };
                g.entries.push(GroupEntry::Addresses { at: c.at.clone(), written: c.keyword.clone(), addresses, port });
            }
            Err(why) => reports.add(Severity::Error, &c.at, &c.keyword, format!("{why}; keepalived ignores the entry"), "left out"),
        }
    }
    g
}

fn globals(node: &Node, lvs: &mut Lvs, reports: &mut Reports) {
    for c in node.children() {
        match c.keyword.as_str() {
            "lvs_timeouts" => {
                let (mut tcp, mut fin, mut udp) = (None, None, None);
                let mut words = c.args.iter();
                while let Some(w) = words.next() {
                    let slot = match w.as_str() {
                        "tcp" => &mut tcp,
                        "tcpfin" => &mut fin,
                        "udp" => &mut udp,
                        other => {
                            reports.add(Severity::Error, &c.at, "lvs_timeouts", format!("unknown timeout `{other}`"), "ignored as keepalived does");
                            continue;
                        }
                    };
                    *slot = words.next().and_then(|v| bad(c, reports, values::number(v, 1, 86400 * 31))).map(|v| v as u32);
                }
                lvs.timeouts = Some((c.at.clone(), tcp, fin, udp));
            }
            // Its old name; keepalived no longer knows it (and --vrrp-out keeps it, so
            // keepalived --vrrp says so too).
            "lvs_id" => unknown(c, "lvs_id", "in global_defs", reports),
            "lvs_sync_daemon" => {
                let Some(interface) = c.args.first() else {
                    reports.add(Severity::Error, &c.at, "lvs_sync_daemon", "requires an interface", "ignored as keepalived does");
                    continue;
                };
                let mut sd = SyncDaemon { at: c.at.clone(), interface: interface.clone(), instance: None, syncid: None, port: None, group: None, unsupported: Vec::new() };
                // keepalived's lvs_syncd_handler: keywords anywhere, and the old positional
                // form `IF INSTANCE [SYNCID]` in the first two places after the interface.
                let mut i = 1;
                while i < c.args.len() {
                    let word = c.args[i].as_str();
                    let value = c.args.get(i + 1).map(String::as_str);
                    match (word, value) {
                        ("inst", Some(v)) => sd.instance = Some(v.to_string()),
                        ("id", Some(v)) => sd.syncid = bad(c, reports, values::number(v, 0, 255)).map(|v| v as u8).or(sd.syncid),
                        ("port", Some(v)) => sd.port = bad(c, reports, values::number(v, 1, 65535)).map(|v| v as u16).or(sd.port),
                        ("group", Some(v)) => sd.group = bad(c, reports, values::address(v)).or(sd.group),
                        ("maxlen" | "ttl", Some(_)) => sd.unsupported.push(word.to_string()),
                        ("inst" | "id" | "port" | "group" | "maxlen" | "ttl", None) => {
                            reports.add(Severity::Error, &c.at, "lvs_sync_daemon", format!("no value for `{word}`"), "ignored as keepalived does")
                        }
                        _ if i == 1 => {
                            sd.instance = Some(word.to_string());
                            i += 1;
                            continue;
                        }
                        _ if i == 2 => {
                            reports.add(Severity::Error, &c.at, "lvs_sync_daemon", "keepalived asks for the keyword `id` before the sync id", "read as the sync id, as keepalived");
                            sd.syncid = bad(c, reports, values::number(word, 0, 255)).map(|v| v as u8).or(sd.syncid);
                            i += 1;
                            continue;
                        }
                        _ => {
                            reports.add(Severity::Error, &c.at, "lvs_sync_daemon", format!("unknown option `{word}`"), "ignored as keepalived does");
                            i += 1;
                            continue;
                        }
                    }
                    i += 2;
                }
                lvs.sync_daemon = Some(sd);
            }
            _ => {}
        }
    }
}

fn vrrp_instance(node: &Node) -> VrrpInstance {
    let mut v = VrrpInstance {
        name: node.args.first().cloned().unwrap_or_default(),
        interface: None,
        virtual_router_id: None,
        addresses: Vec::new(),
    };
    for c in node.children() {
        match c.keyword.as_str() {
            "interface" => v.interface = c.args.first().cloned(),
            "virtual_router_id" => v.virtual_router_id = c.args.first().and_then(|a| a.parse().ok()),
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                for a in c.children() {
                    let addr = a.keyword.split('/').next().unwrap_or("");
                    if let Ok(ip) = addr.parse() {
                        v.addresses.push(ip);
                    }
                }
            }
            _ => {}
        }
    }
    v
}

/// keepalived's hex strings may be split over words (`01 02 0304`); a word of odd length
/// stands for its value with a leading 0.
fn hex_words(words: &[String]) -> String {
    words.iter().map(|w| if w.len() % 2 == 1 { format!("0{w}") } else { w.clone() }).collect()
}
