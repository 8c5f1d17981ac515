//! keepalived's LVS configuration ([`Lvs`]) as drlb YAML.
//!
//! Every decision that is not a one-to-one translation is reported: a virtual server drlb
//! leaves out (NAT, TUN, fwmark, SCTP), a value keepalived would read differently from
//! what the file seems to say, an option drlb has no equivalent for. The YAML keeps the
//! file's order and names each service after its line.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::lvs::{Checker, CheckerKind, GroupEntry, Lvs, Method, Proto, RealServer, Timing, VirtualServer, VsAddress};
use super::report::{Location, Reports, Severity};
use super::values::yaml_duration;

/// keepalived's defaults where neither checker, real server nor virtual server sets one.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `persistence_timeout` written without a value, and keepalived's forced persistence.
const DEFAULT_PERSISTENCE: u32 = 360;

/// One drlb service, ready to be written.
struct Service {
    comment: String,
    name: String,
    vip: IpAddr,
    port: u16,
    protocol: &'static str,
    /// A virtual_server_group's other addresses and ports: (address or range, port).
    group: Vec<(String, u16)>,
    scheduler: String,
    /// `scheduler_flags` (sh-port, mh-fallback, ...).
    scheduler_flags: Vec<&'static str>,
    one_packet: bool,
    persistence_timeout: Option<u32>,
    persistence_granularity: Option<String>,
    timeouts: Option<(Option<u32>, Option<u32>, Option<u32>)>,
    /// Every real server's checks, when they are the same for all (at most one).
    health_check: Option<Check>,
    inhibit_on_failure: bool,
    /// The sorry server, and whether it is inhibited (sorry_server_inhibit).
    sorry_server: Option<(IpAddr, bool)>,
    quorum: Option<u32>,
    omega: bool,
    ha_suspend: bool,
    /// Address, weight, and the server's own checks when they differ between servers.
    real_servers: Vec<(IpAddr, u32, Option<Vec<Check>>)>,
    /// notify_up / notify_down commands per real server (same order).
    notify: Vec<(Option<String>, Option<String>)>,
    quorum_hysteresis: u32,
    quorum_up: Option<String>,
    quorum_down: Option<String>,
}

/// A drlb `health_check`, in the YAML's terms.
#[derive(Debug, Clone, PartialEq)]
struct Check {
    kind: &'static str,
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    /// None: no warmup; Some(None): up to the interval (keepalived's default).
    warmup: Option<Option<Duration>>,
    path: Option<String>,
    host: Option<String>,
    status: Vec<(u16, u16)>,
    regex: Option<String>,
    command: Option<String>,
    address: Option<IpAddr>,
    source: Option<IpAddr>,
    source_port: Option<u16>,
    alpha: bool,
    digest: Option<String>,
    sni: Option<String>,
    helo: Option<String>,
    query_type: Option<String>,
    query_name: Option<String>,
    payload: Option<String>,
    /// `Some(None)`: any answer; `Some(Some(hex))`: one matching the pattern.
    reply: Option<Option<String>>,
    /// script: misc_dynamic.
    dynamic: bool,
    /// file: the file, its weight and reverse.
    file: Option<String>,
    weight: Option<i64>,
    reverse: bool,
}

/// The YAML for `lvs`; `source` names the imported file in the header.
pub fn to_yaml(lvs: &Lvs, source: &str, reports: &mut Reports) -> String {
    let services = services(lvs, reports);
    let mut y = String::new();
    let _ = writeln!(y, "# Imported by `drlb import-keepalived` from {source}.");
    let _ = writeln!(y, "# Each service names the keepalived.conf line it came from; `drlb check` validates this file.");
    let _ = writeln!(y, "director:");
    let (interface, why) = interface(lvs);
    let _ = writeln!(y, "  interface: {}  # {why}", scalar(&interface));
    if let Some(sd) = &lvs.sync_daemon {
        let syncid = sd.syncid.or_else(|| {
            sd.instance.as_ref().and_then(|i| lvs.vrrp_instances.iter().find(|v| &v.name == i)).and_then(|v| v.virtual_router_id)
        });
        let _ = writeln!(y, "  sync:  # lvs_sync_daemon at {}", sd.at);
        let _ = writeln!(y, "    interface: {}", scalar(&sd.interface));
        let _ = writeln!(y, "    syncid: {}", syncid.unwrap_or(0));
        match sd.group {
            Some(IpAddr::V4(g)) => {
                let _ = writeln!(y, "    group: {g}");
            }
            Some(g) => reports.add(Severity::Warning, &sd.at, "lvs_sync_daemon", format!("group {g}: drlb's sync runs over IPv4"), "the default group 224.0.0.81"),
            None => {}
        }
        for what in &sd.unsupported {
            reports.add(Severity::Warning, &sd.at, "lvs_sync_daemon", format!("`{what}`: drlb's sync has no such setting"), "ignored: drlb batches within 25 ms in datagrams under the interface MTU");
        }
        if let Some(p) = sd.port {
            let _ = writeln!(y, "    port: {p}");
        }
    }
    if services.is_empty() {
        let _ = writeln!(y, "services: []");
        return y;
    }
    let _ = writeln!(y, "services:");
    for s in &services {
        let _ = writeln!(y, "  # {}", s.comment);
        let _ = writeln!(y, "  - name: {}", scalar(&s.name));
        let _ = writeln!(y, "    vip: {}", s.vip);
        let _ = writeln!(y, "    port: {}", s.port);
        let _ = writeln!(y, "    protocol: {}", s.protocol);
        if !s.group.is_empty() {
            let _ = writeln!(y, "    group:");
            for (vip, port) in &s.group {
                let _ = writeln!(y, "      - {{ vip: {vip}, port: {port} }}");
            }
        }
        let _ = writeln!(y, "    scheduler: {}", s.scheduler);
        if !s.scheduler_flags.is_empty() {
            let _ = writeln!(y, "    scheduler_flags: [{}]", s.scheduler_flags.join(", "));
        }
        if s.one_packet {
            let _ = writeln!(y, "    one_packet: true");
        }
        if let Some(p) = s.persistence_timeout {
            let _ = writeln!(y, "    persistence_timeout: {p}s");
        }
        if let Some(g) = &s.persistence_granularity {
            let _ = writeln!(y, "    persistence_granularity: {}", scalar(g));
        }
        if let Some((tcp, fin, udp)) = s.timeouts {
            let mut parts = Vec::new();
            for (name, v) in [("tcp", tcp), ("tcp_fin", fin), ("udp", udp)] {
                if let Some(v) = v {
                    parts.push(format!("{name}: {v}s"));
                }
            }
            let _ = writeln!(y, "    timeouts: {{ {} }}", parts.join(", "));
        }
        if let Some(c) = &s.health_check {
            let _ = writeln!(y, "    health_check:");
            write_check(&mut y, "      ", "      ", c);
        }
        if s.inhibit_on_failure {
            let _ = writeln!(y, "    inhibit_on_failure: true");
        }
        match s.sorry_server {
            Some((a, false)) => {
                let _ = writeln!(y, "    sorry_server: {{ address: {a} }}");
            }
            Some((a, true)) => {
                let _ = writeln!(y, "    sorry_server: {{ address: {a}, inhibit: true }}");
            }
            None => {}
        }
        for (field, on) in [("omega", s.omega), ("ha_suspend", s.ha_suspend)] {
            if on {
                let _ = writeln!(y, "    {field}: true");
            }
        }
        if let Some(q) = s.quorum {
            let _ = writeln!(y, "    quorum: {q}");
        }
        if s.quorum_hysteresis > 0 {
            let _ = writeln!(y, "    quorum_hysteresis: {}", s.quorum_hysteresis);
        }
        for (field, value) in [("quorum_up", &s.quorum_up), ("quorum_down", &s.quorum_down)] {
            if let Some(v) = value {
                let _ = writeln!(y, "    {field}: {}", scalar(v));
            }
        }
        let _ = writeln!(y, "    real_servers:");
        for ((address, weight, checks), (up, down)) in s.real_servers.iter().zip(&s.notify) {
            if up.is_some() || down.is_some() {
                let _ = writeln!(y, "      - address: {address}\n        weight: {weight}");
                for (field, value) in [("notify_up", up), ("notify_down", down)] {
                    if let Some(v) = value {
                        let _ = writeln!(y, "        {field}: {}", scalar(v));
                    }
                }
                match checks {
                    None => {}
                    Some(checks) if checks.is_empty() => {
                        let _ = writeln!(y, "        health_checks: []");
                    }
                    Some(checks) => {
                        let _ = writeln!(y, "        health_checks:");
                        for c in checks {
                            write_check(&mut y, "          - ", "            ", c);
                        }
                    }
                }
                continue;
            }
            match checks {
                None => {
                    let _ = writeln!(y, "      - {{ address: {address}, weight: {weight} }}");
                }
                Some(checks) if checks.is_empty() => {
                    let _ = writeln!(y, "      - {{ address: {address}, weight: {weight}, health_checks: [] }}");
                }
                Some(checks) => {
                    let _ = writeln!(y, "      - address: {address}\n        weight: {weight}\n        health_checks:");
                    for c in checks {
                        write_check(&mut y, "          - ", "            ", c);
                    }
                }
            }
        }
    }
    y
}

/// One check's fields: the first line after `first`, the others after `rest`.
fn write_check(y: &mut String, first: &str, rest: &str, c: &Check) {
    let mut lines = vec![format!("type: {}", c.kind)];
    if let Some(p) = c.port {
        lines.push(format!("port: {p}"));
    }
    for (field, value) in [("address", c.address), ("source", c.source)] {
        if let Some(v) = value {
            lines.push(format!("{field}: {v}"));
        }
    }
    if let Some(p) = c.source_port {
        lines.push(format!("source_port: {p}"));
    }
    lines.push(format!("interval: {}", yaml_duration(c.interval)));
    lines.push(format!("timeout: {}", yaml_duration(c.timeout)));
    lines.push(format!("retries: {}", c.retries));
    lines.push(format!("retry_delay: {}", yaml_duration(c.retry_delay)));
    if c.alpha {
        lines.push("alpha: true".into());
    }
    match c.warmup {
        Some(None) => lines.push("warmup: true".into()),
        Some(Some(d)) => lines.push(format!("warmup: {}", yaml_duration(d))),
        None => {}
    }
    for (field, value) in [
        ("path", &c.path),
        ("host", &c.host),
        ("regex", &c.regex),
        ("digest", &c.digest),
        ("sni", &c.sni),
        ("command", &c.command),
        ("helo", &c.helo),
        ("query_type", &c.query_type),
        ("query_name", &c.query_name),
    ] {
        if let Some(v) = value {
            lines.push(format!("{field}: {}", scalar(v)));
        }
    }
    // Hex strings stay strings ("01" is not the number 1).
    if let Some(p) = &c.payload {
        lines.push(format!("payload: \"{p}\""));
    }
    match &c.reply {
        Some(None) => lines.push("reply: true".into()),
        Some(Some(p)) => lines.push(format!("reply: \"{p}\"")),
        None => {}
    }
    if c.dynamic {
        lines.push("dynamic: true".into());
    }
    if let Some(f) = &c.file {
        lines.push(format!("file: {}", scalar(f)));
    }
    if let Some(w) = c.weight {
        lines.push(format!("weight: {w}"));
    }
    if c.reverse {
        lines.push("reverse: true".into());
    }
    if !c.status.is_empty() {
        let list: Vec<String> = c.status.iter().map(|(lo, hi)| if lo == hi { format!("\"{lo}\"") } else { format!("\"{lo}-{hi}\"") }).collect();
        lines.push(format!("status: [{}]", list.join(", ")));
    }
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(y, "{}{line}", if i == 0 { first } else { rest });
    }
}

/// FILE_CHECK with its top-level `track_file` block: the file, and the weight and reverse
/// of the FILE_CHECK, else of the track_file (default 1). None when keepalived ignores it.
fn file_check(ck: &Checker, track_files: &TrackFiles, c: &mut Check, reports: &mut Reports) -> Option<()> {
    let Some(name) = &ck.track_file else {
        reports.add(Severity::Error, &ck.at, "FILE_CHECK", "no track_file: keepalived ignores the check (\"FILE_CHECK has no track_file specified\")", "left out");
        return None;
    };
    let Some(node) = track_files.get(name) else {
        reports.add(Severity::Error, &ck.at, "track_file", format!("`{name}` is not a track_file block: keepalived ignores the check"), "left out");
        return None;
    };
    let (mut file, mut weight, mut reverse, mut init) = (None, 1i64, false, None);
    for line in node.children() {
        match (line.keyword.as_str(), line.args.first()) {
            ("file", Some(f)) => file = Some(f.clone()),
            ("weight", Some(w)) => {
                if let Ok(w) = super::values::number(w, -254, 254) {
                    weight = w;
                    reverse = line.args.get(1).is_some_and(|a| a == "reverse");
                }
            }
            ("init_file", v) => init = Some(v.cloned().unwrap_or_else(|| "0".into())),
            _ => {}
        }
    }
    if let Some((w, r)) = ck.file_weight {
        (weight, reverse) = (w, r);
    }
    let Some(file) = file else {
        reports.add(Severity::Error, &node.at, "track_file", format!("`{name}` names no file: keepalived drops it"), "the FILE_CHECK left out");
        return None;
    };
    if let Some(v) = init {
        reports.add(
            Severity::Warning,
            &node.at,
            "init_file",
            format!("keepalived writes {v} into {file} at start when it is missing; drlb writes nothing and reads a missing file as 0"),
            format!("create it before drlb starts (echo {v} > {file}) if the server must start as keepalived starts it"),
        );
    }
    c.kind = "file";
    c.port = None;
    c.file = Some(file);
    c.weight = Some(weight);
    c.reverse = reverse;
    // keepalived reads the file when inotify says it changed; drlb reads it every second.
    c.interval = Duration::from_secs(1);
    c.retries = 0;
    c.retry_delay = Duration::from_secs(1);
    c.warmup = None;
    c.alpha = false;
    c.address = None;
    c.source = None;
    c.source_port = None;
    Some(())
}

/// A YAML scalar, quoted when it must be.
fn scalar(s: &str) -> String {
    serde_yaml::to_string(s).map(|t| t.trim_end().to_string()).unwrap_or_else(|_| format!("{s:?}"))
}

/// The director's interface: the VRRP instance that holds the first VIP, else the sync
/// daemon's, else the first VRRP instance's.
fn interface(lvs: &Lvs) -> (String, String) {
    let vips: Vec<IpAddr> = lvs
        .virtual_servers
        .iter()
        .filter_map(|v| match &v.address {
            VsAddress::Address { ip, .. } => Some(*ip),
            _ => None,
        })
        .collect();
    for v in &lvs.vrrp_instances {
        if let Some(i) = &v.interface
            && v.addresses.iter().any(|a| vips.contains(a))
        {
            return (i.clone(), format!("vrrp_instance {} holds the VIPs there", v.name));
        }
    }
    if let Some(sd) = &lvs.sync_daemon {
        return (sd.interface.clone(), "lvs_sync_daemon's interface".into());
    }
    if let Some((v, i)) = lvs.vrrp_instances.iter().find_map(|v| v.interface.as_ref().map(|i| (v, i))) {
        return (i.clone(), format!("vrrp_instance {}'s interface", v.name));
    }
    ("eth0".into(), "CHANGE ME: keepalived.conf names no interface; the one that receives VIP traffic".into())
}

fn services(lvs: &Lvs, reports: &mut Reports) -> Vec<Service> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for vs in &lvs.virtual_servers {
        let Some(members) = members(vs, lvs, reports) else { continue };
        let Some(mut s) = service(vs, lvs, reports) else { continue };
        let (vip, port, _) = members[0];
        (s.vip, s.port) = (vip, port);
        if let Some((_, _, at)) = members.iter().find(|m| m.1 == 0)
            && s.persistence_timeout.is_none()
        {
            // keepalived makes a port-0 service (or one with a port-0 group entry) persistent.
            reports.add(
                Severity::Error,
                at.as_ref().unwrap_or(&vs.at),
                "virtual_server",
                "port 0 without persistence: keepalived makes it persistent for 360 s",
                "persistence_timeout: 360s, as keepalived",
            );
            s.persistence_timeout = Some(DEFAULT_PERSISTENCE);
        }
        let base = match &vs.address {
            VsAddress::Group(name) => {
                s.group = group_ranges(&members[1..]);
                if members.len() > 1 {
                    reports.add(
                        Severity::Note,
                        &vs.at,
                        "virtual_server",
                        format!(
                            "group `{name}`: keepalived makes one IPVS service of each of its {} addresses and ports, each with its own \
                             scheduler state, counts and persistence",
                            members.len()
                        ),
                        "one drlb service with `group:`: one scheduler state and one persistence across them all (a client keeps \
                         its real server on every address and port, as with a fwmark service); checks and quorum run once, as keepalived's",
                    );
                }
                name.clone()
            }
            _ => format!("{vip}:{port}/{}", s.protocol),
        };
        s.name = if names.insert(base.clone()) { base } else { format!("{base}#{}", out.len() + 1) };
        s.comment = format!("virtual_server at {}", vs.at);
        out.push(s);
    }
    out
}

/// A group's (address, port) pairs as `group:` entries: runs of consecutive addresses on
/// one port become ranges (of at most `VipRange`'s 256).
fn group_ranges(members: &[(IpAddr, u16, Option<Location>)]) -> Vec<(String, u16)> {
    let as_u128 = |a: IpAddr| match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    let limit = crate::control::config::group::MAX_RANGE_ADDRESSES as usize;
    let mut out: Vec<(String, u16)> = Vec::new();
    let mut run: Vec<IpAddr> = Vec::new();
    let mut run_port = 0;
    let mut flush = |run: &mut Vec<IpAddr>, port: u16| {
        match run.as_slice() {
            [] => {}
            [one] => out.push((one.to_string(), port)),
            [first, .., last] => out.push((format!("{first}-{last}"), port)),
        }
        run.clear();
    };
    for (a, port, _) in members {
        let follows = run.last().is_some_and(|l| {
            *port == run_port && l.is_ipv4() == a.is_ipv4() && as_u128(*l).checked_add(1) == Some(as_u128(*a))
        });
        if !follows || run.len() == limit {
            flush(&mut run, run_port);
            run_port = *port;
        }
        run.push(*a);
    }
    flush(&mut run, run_port);
    out
}

/// The (VIP, port) pairs a virtual server stands for, or None if drlb cannot see it.
fn members(vs: &VirtualServer, lvs: &Lvs, reports: &mut Reports) -> Option<Vec<(IpAddr, u16, Option<Location>)>> {
    match &vs.address {
        VsAddress::Address { ip, port } => Some(vec![(*ip, port.unwrap_or(0), None)]),
        VsAddress::Fwmark(mark) => {
            reports.add(
                Severity::Warning,
                &vs.at,
                "virtual_server",
                format!("fwmark {mark}: netfilter sets marks after XDP has seen the packet, so drlb cannot match on them"),
                "left out; if the iptables rules mark a list of VIP:port, write one drlb service with `group:` listing them (port 0 for all of an address's ports): one scheduler and persistence across them, as the fwmark service had",
            );
            None
        }
        VsAddress::Group(name) => {
            let Some(group) = lvs.groups.get(name) else {
                reports.add(Severity::Error, &vs.at, "virtual_server", format!("group `{name}` is not defined; keepalived drops this virtual server"), "left out");
                return None;
            };
            // Every address and port of the group: one drlb service with `group:` (see
            // `services`: keepalived makes one IPVS service of each, sharing checks and quorum).
            let mut out = Vec::new();
            for e in &group.entries {
                match e {
                    GroupEntry::Addresses { at, addresses, port, .. } => out.extend(addresses.iter().map(|a| (*a, port.unwrap_or(0), Some(at.clone())))),
                    GroupEntry::Fwmark { at, mark } => reports.add(
                        Severity::Warning,
                        at,
                        "fwmark",
                        format!("group `{name}`'s fwmark {mark}: drlb cannot match marks (netfilter sets them after XDP)"),
                        "this entry left out; list the VIP:ports the iptables rules mark in the service's `group:` (port 0 for all ports)",
                    ),
                }
            }
            (!out.is_empty()).then_some(out)
        }
    }
}

fn unsupported(list: &[(String, Location)], reports: &mut Reports, context: &str) {
    for (k, at) in list {
        let (why, instead) = match k.as_str() {
            "smtp_alert" => ("drlb sends no mail", "ignored; alert on drlb's metrics (drlb_real_server_up) instead"),
            "snmp_name" => ("drlb has no SNMP agent", "ignored; drlb serves Prometheus metrics"),
            "persistence_engine" => ("drlb has no persistence engines (SIP Call-ID)", "ignored: persistence by client address only"),
            "ip_family" => ("only meaningful for tunnelled fwmark services", "ignored"),
            "fast_recovery" => ("drlb checks one url", "ignored"),
            "tls_compliant" => ("drlb has no SSL_GET yet", "ignored"),
            "regex_options" | "regex_min_offset" | "regex_max_offset" | "regex_stack" => ("drlb's regex has no PCRE options or offsets", "ignored: the regex is matched anywhere in the body"),
            "host" => ("SMTP_CHECK's deprecated `host` blocks are not translated", "ignored"),
            "min_reply_length" | "max_reply_length" => ("drlb has no UDP_CHECK yet", "ignored"),
            "user" => ("drlb runs scripts as its own user", "ignored"),
            _ => ("drlb has no equivalent yet", "ignored"),
        };
        reports.add(Severity::Warning, at, k, format!("{why} ({context})"), instead);
    }
}

fn service(vs: &VirtualServer, lvs: &Lvs, reports: &mut Reports) -> Option<Service> {
    // A group's members have ports of their own: the checks against the port are per member.
    let port = match &vs.address {
        VsAddress::Address { port, .. } => Some(port.unwrap_or(0)),
        _ => None,
    };
    let v6 = match &vs.address {
        VsAddress::Address { ip, .. } => ip.is_ipv6(),
        _ => vs.real_servers.first().is_some_and(|r| r.ip.is_ipv6()),
    };
    // Forwarding method: keepalived's default is NAT; drlb is DR only.
    match vs.method {
        Some(Method::Dr) => {}
        Some(m) => {
            reports.add(
                Severity::Warning,
                &vs.at,
                "lvs_method",
                format!("{}: drlb forwards by Direct Routing only", m.name()),
                "virtual server left out (converting it would forward differently)",
            );
            return None;
        }
        None => {
            reports.add(
                Severity::Error,
                &vs.at,
                "lvs_method",
                "no lvs_method/lb_kind: keepalived forwards this virtual server with NAT (\"no forwarding method set, setting default NAT\")",
                "left out; write `lb_kind DR` if DR is what you run",
            );
            return None;
        }
    }
    let protocol = match vs.protocol {
        Some(Proto::Tcp) => "tcp",
        Some(Proto::Udp) => "udp",
        Some(Proto::Sctp) => {
            reports.add(Severity::Warning, &vs.at, "protocol", "SCTP: drlb balances TCP and UDP", "virtual server left out");
            return None;
        }
        None => {
            reports.add(
                Severity::Error,
                &vs.at,
                "protocol",
                "no protocol: keepalived balances this virtual server as UDP (\"no protocol set - defaulting to UDP\")",
                "imported as udp, as keepalived; write `protocol TCP` if that is what you meant",
            );
            "udp"
        }
    };
    let scheduler = match vs.scheduler.as_deref() {
        // lvs.rs keeps only names of IPVS's schedulers, which are drlb's.
        Some(s) => s.to_string(),
        None => {
            reports.add(Severity::Note, &vs.at, "lvs_sched", "no scheduler set; keepalived uses wlc", "wlc, as keepalived");
            "wlc".to_string()
        }
    };
    // keepalived passes the flag bits as written: flag-1 is the fallback bit and flag-2 the
    // port bit of sh and mh (IP_VS_SVC_F_SCHED1, SCHED2); other schedulers read none of them.
    let mut scheduler_flags: Vec<&'static str> = Vec::new();
    for (flag, at) in &vs.sched_flags {
        let bit = match flag.as_str() {
            "sh-fallback" | "mh-fallback" | "flag-1" => Some("fallback"),
            "sh-port" | "mh-port" | "flag-2" => Some("port"),
            _ => None,
        };
        let name = match (scheduler.as_str(), bit) {
            ("sh", Some("fallback")) => Some("sh-fallback"),
            ("sh", Some("port")) => Some("sh-port"),
            ("mh", Some("fallback")) => Some("mh-fallback"),
            ("mh", Some("port")) => Some("mh-port"),
            _ => None,
        };
        match name {
            Some(n) if !scheduler_flags.contains(&n) => scheduler_flags.push(n),
            Some(_) => {}
            None => reports.add(
                Severity::Warning,
                at,
                flag,
                format!("IPVS's {scheduler} scheduler reads no such flag"),
                "ignored, as IPVS ignores it",
            ),
        }
    }
    let one_packet = vs.ops && protocol == "udp";
    if vs.ops && !one_packet {
        reports.add(Severity::Error, &vs.at, "ops", "one-packet scheduling needs UDP: keepalived resets it (\"one packet scheduling requires UDP - resetting\")", "ignored, as keepalived");
    }
    let mut persistence_timeout = vs.persistence_timeout;
    // keepalived reads an IPv4 granularity as an address (`24` is 0.0.0.24) and an IPv6 one
    // as a prefix length; one it cannot read is ignored, persistence included.
    let mut persistence_granularity = None;
    if let Some(g) = &vs.persistence_granularity {
        let (accepted, usable) = if v6 {
            let ok = g.parse::<u8>().is_ok_and(|l| (1..=128).contains(&l));
            (ok, ok)
        } else {
            match g.parse::<std::net::Ipv4Addr>().ok().or_else(|| g.parse::<u32>().ok().map(std::net::Ipv4Addr::from)) {
                Some(mask) => (true, u32::from(mask).leading_ones() + u32::from(mask).trailing_zeros() == 32),
                None => (false, false),
            }
        };
        if !accepted {
            reports.add(Severity::Error, &vs.at, "persistence_granularity", format!("`{g}` is not a netmask (IPv4) or prefix length (IPv6); keepalived ignores the line"), "no granularity, as keepalived");
        } else if !usable {
            reports.add(
                Severity::Warning,
                &vs.at,
                "persistence_granularity",
                format!("keepalived reads `{g}` as a non-contiguous netmask; drlb groups clients by prefix"),
                "left out: clients are grouped per address (/32)",
            );
        } else {
            persistence_granularity = Some(g.clone());
        }
        if accepted && persistence_timeout.is_none() {
            reports.add(Severity::Note, &vs.at, "persistence_granularity", "without persistence_timeout keepalived makes the service persistent for 360 s", "persistence_timeout: 360s, as keepalived");
            persistence_timeout = Some(DEFAULT_PERSISTENCE);
        }
    }
    unsupported(&vs.unsupported, reports, "virtual_server");
    let mut sorry_server = None;
    if let Some(s) = &vs.sorry_server {
        if s.method.is_some_and(|m| m != Method::Dr) {
            reports.add(Severity::Warning, &s.at, "sorry_server_lvs_method", "the sorry server is not DR; drlb forwards by DR only", "sorry server left out");
        } else {
            if port.is_some_and(|port| s.port.is_some_and(|p| p != 0 && p != port)) {
                reports.add(Severity::Warning, &s.at, "sorry_server", "a DR sorry server's port must be the service port; keepalived resets it", "the service port, as keepalived");
            }
            if vs.real_servers.iter().any(|r| r.ip == s.ip) {
                reports.add(Severity::Warning, &s.at, "sorry_server", "the sorry server is also a real server; drlb needs it apart", "sorry server left out");
            } else {
                sorry_server = Some((s.ip, s.inhibit));
            }
        }
    }
    let mut real_servers = Vec::new();
    let mut notifies = Vec::new();
    let mut checks: Vec<Vec<Check>> = Vec::new();
    let mut inhibit = Vec::new();
    for rs in &vs.real_servers {
        if let Some((m, at)) = &rs.method
            && *m != Method::Dr
        {
            reports.add(Severity::Warning, at, "lvs_method", format!("real server {} is forwarded by {}; drlb forwards by DR only", rs.ip, m.name()), "real server left out");
            continue;
        }
        if let VsAddress::Address { ip, .. } = &vs.address
            && ip.is_ipv4() != rs.ip.is_ipv4()
        {
            reports.add(Severity::Error, &rs.at, "real_server", "not the virtual server's address family; keepalived drops it", "left out");
            continue;
        }
        if let (Some(p), Some(port)) = (rs.port, port)
            && p != 0
            && port != 0
            && p != port
        {
            reports.add(
                Severity::Warning,
                &rs.at,
                "real_server",
                format!("port {p} differs from the virtual server's {port}: Direct Routing cannot change the destination port (keepalived resets it with a warning)"),
                format!("clients reach the real server on port {port}; its checks still probe {p} as keepalived's do"),
            );
        }
        if rs.uthreshold != 0 || rs.lthreshold != 0 {
            reports.add(Severity::Warning, &rs.at, "uthreshold", "drlb has no connection thresholds yet", "ignored: no limit");
        }
        let notify = (script_command(&rs.notify_up, reports), script_command(&rs.notify_down, reports));
        unsupported(&rs.unsupported, reports, "real_server");
        let mut weight = rs.weight.or(vs.weight).unwrap_or(1);
        if weight > crate::control::config::MAX_WEIGHT {
            reports.add(
                Severity::Warning,
                &rs.at,
                "weight",
                format!("{weight} is above IPVS's (and drlb's) maximum {}; keepalived passes it on and the kernel refuses it", crate::control::config::MAX_WEIGHT),
                format!("{}; scale the weights down to keep their ratios", crate::control::config::MAX_WEIGHT),
            );
            weight = crate::control::config::MAX_WEIGHT;
        }
        real_servers.push((rs.ip, weight, None));
        notifies.push(notify);
        inhibit.push((rs.inhibit_on_failure.unwrap_or(vs.inhibit_on_failure), rs.at.clone()));
        checks.push(checks_for(vs, rs, &lvs.track_files, port.unwrap_or(0), reports));
    }
    if real_servers.is_empty() {
        reports.add(Severity::Warning, &vs.at, "virtual_server", "no real server left that drlb can forward to", "left out");
        return None;
    }
    // One check shared by every server is the service's; otherwise each server lists its own.
    let shared = checks.iter().all(|c| c.len() <= 1 && *c == checks[0]);
    let health_check = if shared { checks[0].first().cloned() } else { None };
    if !shared {
        for (rs, own) in real_servers.iter_mut().zip(checks) {
            rs.2 = Some(own);
        }
    }
    let inhibit_on_failure = inhibit[0].0;
    for (i, at) in &inhibit[1..] {
        if *i != inhibit_on_failure {
            reports.add(Severity::Warning, at, "inhibit_on_failure", "differs from the first real server's; drlb sets it per service", "as the first real server");
        }
    }
    let quorum = vs.quorum.map(|q| {
        let total: u64 = real_servers.iter().map(|r| u64::from(r.1)).sum();
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        if q > total {
            reports.add(Severity::Note, &vs.at, "quorum", format!("{q} is above the real servers' total weight {total}; keepalived lowers it"), format!("quorum: {total}, as keepalived"));
            total.max(1)
        } else {
            q
        }
    });
    let timeouts = lvs.timeouts.as_ref().map(|(_, t, f, u)| (*t, *f, *u));
    let mut quorum_hysteresis = vs.hysteresis.unwrap_or(0);
    let effective_quorum = quorum.unwrap_or(1);
    if quorum_hysteresis >= effective_quorum {
        reports.add(
            Severity::Note,
            &vs.at,
            "hysteresis",
            format!("{quorum_hysteresis} is not below the quorum {effective_quorum}; keepalived lowers it"),
            format!("quorum_hysteresis: {}, as keepalived", effective_quorum - 1),
        );
        quorum_hysteresis = effective_quorum - 1;
    }
    let quorum_up = script_command(&vs.quorum_up, reports);
    let quorum_down = script_command(&vs.quorum_down, reports);
    if vs.ha_suspend && matches!(vs.address, VsAddress::Group(_)) {
        // check_api.c: a group's addresses never match, so its checks never ran.
        reports.add(
            Severity::Warning,
            &vs.at,
            "ha_suspend",
            "on a virtual_server_group keepalived never finds the group's address held and never runs its checks (servers stay as they start)",
            "ha_suspend: true, as written: drlb runs the checks while the interface holds one of the group's addresses",
        );
    }
    Some(Service {
        comment: String::new(),
        name: String::new(),
        vip: IpAddr::from([0, 0, 0, 0]),
        port: port.unwrap_or(0),
        protocol,
        group: Vec::new(),
        scheduler,
        scheduler_flags,
        one_packet,
        persistence_timeout,
        persistence_granularity,
        timeouts,
        health_check,
        inhibit_on_failure,
        sorry_server,
        quorum,
        omega: vs.omega,
        ha_suspend: vs.ha_suspend,
        real_servers,
        notify: notifies,
        quorum_hysteresis,
        quorum_up,
        quorum_down,
    })
}

/// A notify or quorum script as a `sh -c` command that runs what keepalived runs; a user
/// or group after it is reported (drlb runs scripts as its own user).
fn script_command(script: &Option<super::lvs::Script>, reports: &mut Reports) -> Option<String> {
    let s = script.as_ref()?;
    if !s.rest.is_empty() {
        reports.add(Severity::Warning, &s.at, "script", format!("runs as `{}` under keepalived; drlb runs scripts as its own user", s.rest.join(" ")), "run as drlb's user");
    }
    Some(s.shell_command())
}

/// The drlb checks for one real server's checkers (none: always up, as keepalived with no
/// checker); the server is up while all pass, as in keepalived.
fn checks_for(vs: &VirtualServer, rs: &RealServer, track_files: &TrackFiles, vs_port: u16, reports: &mut Reports) -> Vec<Check> {
    let inherited = rs.timing.under(&vs.timing);
    rs.checkers.iter().filter_map(|ck| check(vs, rs, ck, &inherited, track_files, vs_port, reports)).collect()
}

/// The top-level `track_file NAME { ... }` blocks, by name.
type TrackFiles = std::collections::BTreeMap<String, super::tree::Node>;

fn check(vs: &VirtualServer, rs: &RealServer, ck: &Checker, inherited: &Timing, track_files: &TrackFiles, vs_port: u16, reports: &mut Reports) -> Option<Check> {
    let t = ck.timing.under(inherited);
    let delay_loop = t.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
    let retries = t.retry.unwrap_or(ck.kind.default_retry());
    if let Some((n, at)) = &ck.ignored_nb_get_retry
        && *n != retries
    {
        reports.add(
            Severity::Error,
            at,
            "nb_get_retry",
            format!("unknown in {}: keepalived logs \"Unknown keyword\" and keeps retry at {retries}", ck.kind.keyword()),
            format!("retries: {retries}, as keepalived; write `retry {n}` if you meant it"),
        );
    }
    unsupported(&ck.unsupported, reports, ck.kind.keyword());
    for (what, present) in [("bind_if", ck.bind_if.is_some()), ("fwmark", ck.fwmark.is_some())] {
        if present {
            reports.add(Severity::Warning, &ck.at, what, format!("drlb's checks have no `{what}` yet"), "the check leaves by the route to its address, unmarked");
        }
    }
    let family_ok = |a: &IpAddr| a.is_ipv4() == ck.connect_ip.unwrap_or(rs.ip).is_ipv4();
    let mut source = ck.bindto;
    if let Some(b) = ck.bindto.filter(|b| !family_ok(b)) {
        reports.add(Severity::Error, &ck.at, "bindto", format!("{b} is not the family of the address probed; keepalived ignores it"), "probes from the director's own address, as keepalived");
        source = None;
    }
    let port = if ck.kind == CheckerKind::Ping { None } else { ck.connect_port.or(rs.port.filter(|p| *p != 0)) };
    let port = match port {
        Some(p) => Some(p),
        None if matches!(ck.kind, CheckerKind::Misc | CheckerKind::File | CheckerKind::Bfd | CheckerKind::Ping) => None,
        None if vs_port != 0 => {
            reports.add(
                Severity::Warning,
                &ck.at,
                ck.kind.keyword(),
                "no connect_port and no port on the real_server line: keepalived probes port 0",
                format!("probes the service port {vs_port}"),
            );
            Some(vs_port)
        }
        None => {
            reports.add(Severity::Error, &ck.at, ck.kind.keyword(), "no port to probe (port-0 service, no connect_port, no real server port)", "check left out; the real server counts as up");
            return None;
        }
    };
    let mut c = Check {
        kind: "tcp",
        port,
        interval: delay_loop,
        timeout: t.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        retries,
        retry_delay: t.delay_before_retry.or(ck.kind.default_delay_before_retry()).unwrap_or(delay_loop),
        warmup: match t.warmup {
            None => Some(None),
            Some(d) if d.is_zero() => None,
            Some(d) if d == delay_loop => Some(None),
            Some(d) => Some(Some(d)),
        },
        path: None,
        host: None,
        status: Vec::new(),
        regex: None,
        command: None,
        address: ck.connect_ip.filter(|ip| *ip != rs.ip),
        source,
        source_port: ck.bind_port,
        alpha: t.alpha == Some(true),
        digest: None,
        sni: None,
        helo: None,
        query_type: None,
        query_name: None,
        payload: None,
        reply: None,
        dynamic: false,
        file: None,
        weight: None,
        reverse: false,
    };
    match ck.kind {
        CheckerKind::Tcp => {}
        CheckerKind::Http | CheckerKind::Ssl => {
            let url = ck.urls.first()?;
            if ck.urls.len() > 1 {
                reports.add(Severity::Warning, &ck.at, "url", "several urls (keepalived needs every one to pass, one per delay_loop in turn); drlb's check fetches one", "only the first url is checked");
            }
            c.kind = if ck.kind == CheckerKind::Ssl { "https" } else { "http" };
            c.path = url.path.clone();
            c.host = url.virtualhost.clone().or(ck.virtualhost.clone()).or(rs.virtualhost.clone()).or(vs.virtualhost.clone());
            c.status = url.status_codes.clone();
            c.regex = url.regex.clone().filter(|r| {
                let ok = regex::Regex::new(r).is_ok();
                if !ok {
                    reports.add(
                        Severity::Warning,
                        url.at.as_ref().unwrap_or(&ck.at),
                        "regex",
                        format!("`{r}` is PCRE that drlb's regex engine does not take (no look-around or back-references)"),
                        "left out: only the status is checked",
                    );
                }
                ok
            });
            c.digest = url.digest.clone();
            if ck.kind == CheckerKind::Ssl && ck.enable_sni {
                // keepalived's SNI: sni_name, else the url's, the checker's or the virtual
                // server's virtualhost (not the real server's).
                c.sni = ck.sni_name.clone().or(url.virtualhost.clone()).or(ck.virtualhost.clone()).or(vs.virtualhost.clone());
            }
            if url.regex_no_match {
                reports.add(Severity::Warning, url.at.as_ref().unwrap_or(&ck.at), "regex_no_match", "drlb's regex must match", "ignored: the regex must match");
            }
            unsupported(&url.unsupported, reports, "url");
        }
        CheckerKind::Misc => {
            let script = ck.misc.as_ref()?;
            c.kind = "script";
            c.command = Some(script.shell_command());
            c.timeout = match ck.misc_timeout {
                Some(s) if s > 0 => Duration::from_secs(s.into()),
                // keepalived: the virtual server's delay_loop, not the checker's.
                _ => vs.timing.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP),
            };
            c.dynamic = ck.misc_dynamic;
            if script.user.is_some() {
                reports.add(Severity::Warning, &ck.at, "user", "drlb runs scripts as its own user", "ignored");
            }
        }
        CheckerKind::Smtp => {
            c.kind = "smtp";
            c.helo = ck.helo_name.clone();
        }
        CheckerKind::Dns => {
            c.kind = "dns";
            c.query_type = ck.dns_type.clone();
            c.query_name = ck.dns_name.clone();
            if let Some(t) = &ck.dns_type
                && !["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", "RRSIG", "DNSKEY"].contains(&t.as_str())
            {
                reports.add(Severity::Error, &ck.at, "type", format!("`{t}` is not a DNS type keepalived knows; it keeps SOA"), "SOA, as keepalived");
                c.query_type = None;
            }
        }
        CheckerKind::Udp => {
            c.kind = "udp";
            c.payload = ck.udp_payload.clone();
            c.reply = ck.udp_require_reply.clone();
            for hex in [&c.payload, &c.reply.clone().flatten()].into_iter().flatten() {
                if crate::control::config::HexBytes::parse(hex).is_err() {
                    reports.add(Severity::Error, &ck.at, "payload", format!("`{hex}` is not hex"), "check left out");
                    return None;
                }
            }
        }
        CheckerKind::Ping => c.kind = "ping",
        CheckerKind::File => file_check(ck, track_files, &mut c, reports)?,
        CheckerKind::Bfd => {
            reports.add(Severity::Warning, &ck.at, ck.kind.keyword(), "drlb has no such checker yet", "left out: the real server counts as up unless another check fails");
            return None;
        }
    }
    Some(c)
}
