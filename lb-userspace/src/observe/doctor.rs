//! `drlb doctor`: answers "why is this SYN not forwarded?" on the director, one line per
//! check, each failure with its fix — the manual checks of the deployment drlb replaces
//! (capture, subnet, ARP, caches, rp_filter, kernel, a second balancer), in one command.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use crate::control::config::Config;
use crate::kernel::mac::format_mac;
use crate::kernel::bpf::pinned_layout;
use crate::kernel::netlink::{self, XdpAttachment};
use crate::observe::status;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub name: &'static str,
    pub text: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:<12} {}", if self.ok { "OK  " } else { "FAIL" }, self.name, self.text)
    }
}

fn ok(name: &'static str, text: impl Into<String>) -> Check {
    Check { ok: true, name, text: text.into() }
}

fn fail(name: &'static str, text: impl Into<String>) -> Check {
    Check { ok: false, name, text: text.into() }
}

/// The name of loaded BPF program `id`.
fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The program the XDP link pinned at `path` runs.
fn pinned_link_program(path: &std::path::Path) -> Option<u32> {
    let link = aya::programs::links::PinnedLink::from_pin(path).ok()?;
    aya::programs::links::FdLink::from(link).info().ok().map(|i| i.program_id())
}

/// The BGP speakers drlb's announcements can go through, by process name.
const BGP_SPEAKERS: [&str; 3] = ["bird", "bgpd", "gobgpd"];

/// Behind ECMP routers: each VIP's announcement as the controller decided it and as the
/// kernel table holds it, and whether a BGP speaker runs to carry it.
async fn announce_checks(handle: &rtnetlink::Handle, table: u32, vips: &[IpAddr], controller: Option<&crate::observe::state::ControllerState>) -> Vec<Check> {
    let mut out = Vec::new();
    let in_table = match crate::kernel::routes::announced(handle, table).await {
        Ok(v) => v,
        Err(e) => return vec![fail("announce", format!("{e:#}"))],
    };
    let decided = controller.and_then(|c| c.announce.as_ref());
    for vip in vips {
        let state = decided.and_then(|a| a.vips.iter().find(|v| v.vip == *vip));
        let routed = in_table.contains(vip);
        out.push(match (state, routed) {
            (Some(s), true) if s.announced => ok("announce", format!("VIP {vip} announced: its route is in table {table} for the BGP speaker to export")),
            (Some(s), false) if !s.announced => fail("announce", format!("VIP {vip} withdrawn ({}): the routers send its flows to the other directors", s.reason)),
            (Some(s), _) => fail("announce", format!("VIP {vip}: the controller decided {}, but table {table} {} its route (something else changes table {table}: it must be drlb's alone)", if s.announced { "to announce it" } else { "to withdraw it" }, if routed { "still holds" } else { "lacks" })),
            (None, true) => fail("announce", format!("VIP {vip} is announced (its route is in table {table}) but no controller runs to withdraw it when this director cannot serve (fix: `drlb run`, or `ip route del {vip} table {table}`)")),
            (None, false) => fail("announce", format!("VIP {vip} is not announced: no controller runs (fix: `drlb run`)")),
        });
    }
    let running: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| BGP_SPEAKERS.contains(&c.as_str()))
        .collect();
    out.push(match running.first() {
        Some(name) => ok("bgp", format!("a BGP speaker runs ({name}); it must export table {table} (configs/bird-director.conf)")),
        None => fail("bgp", format!("no BGP speaker runs ({}): the routes in table {table} reach no router (fix: `systemctl start bird` with configs/bird-director.conf)", BGP_SPEAKERS.join(", "))),
    });
    out
}

fn read_sysctl(iface: &str, key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/{key}")).ok()?.trim().parse().ok()
}

/// The MAC that answers ARP for `addr` on interface `ifindex` within a second, if any. The
/// kernel's entry is asked afresh: a STALE one only says something answered once.
async fn held_elsewhere(handle: &rtnetlink::Handle, ifindex: u32, addr: IpAddr) -> Option<crate::kernel::mac::Mac> {
    // Failing to forget (the entry went meanwhile, or no CAP_NET_ADMIN) is no verdict: the
    // segment is still asked, and only a fresh answer counts.
    if let Err(e) = netlink::forget_neighbour(handle, ifindex, addr).await {
        tracing::debug!("{e:#}");
    }
    netlink::trigger_resolution(handle, ifindex, addr).await.ok()?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Some(mac)) = netlink::answered_recently(handle, ifindex, addr).await {
            return Some(mac);
        }
    }
    None
}

/// What the doctor examines: from the config file, or, without one, from what the pinned
/// dataplane holds (as `ipvsadm -Ln` needs no file).
struct Subject {
    interface: String,
    pin_dir: std::path::PathBuf,
    vips: Vec<IpAddr>,
    /// `director.announce.table`: the VIPs go to ECMP routers over BGP, not onto the
    /// interface.
    announce_table: Option<u32>,
    /// (service label, VIP, port, real servers as (label, address)).
    services: Vec<(String, IpAddr, u16, Vec<(String, IpAddr)>)>,
}

impl Subject {
    fn from_config(config: &Config) -> Subject {
        let services = config
            .services
            .iter()
            .map(|svc| {
                let servers = svc
                    .real_servers
                    .iter()
                    .map(|rs| {
                        let label = match &rs.name {
                            Some(n) => format!("{} {n}", svc.name),
                            None => svc.name.clone(),
                        };
                        (label, rs.address)
                    })
                    .collect();
                (svc.name.clone(), svc.vip, svc.port, servers)
            })
            .collect();
        Subject {
            interface: config.director.interface.clone(),
            pin_dir: config.director.pin_dir(),
            vips: config.services.iter().flat_map(|s| s.addresses()).collect(),
            announce_table: config.director.announce.as_ref().map(|a| a.table),
            services,
        }
    }

    /// The pin directory is `<pin_root>/<interface>`.
    fn from_pins(dir: &std::path::Path) -> Subject {
        let interface = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut services = Vec::new();
        if let Ok(s) = status::read(dir, None) {
            for svc in &s.services {
                let Ok(vip) = svc.vip.parse::<IpAddr>() else { continue };
                let label = format!("{}:{}/{}", svc.vip, svc.port, svc.protocol.to_lowercase());
                let servers = svc.real_servers.iter().filter_map(|r| Some((label.clone(), r.address.parse().ok()?))).collect();
                services.push((label, vip, svc.port, servers));
            }
        }
        Subject { interface, pin_dir: dir.to_owned(), vips: services.iter().map(|s| s.1).collect(), announce_table: None, services }
    }
}

/// `gc_thresh1..3` that give `servers` real servers room in the kernel's ARP table (shared
/// by every namespace), with room for the other hosts of the segment: what doctor advises
/// and `drlb bench --controller` sets.
pub fn neighbour_thresholds(servers: usize) -> [usize; 3] {
    let want = servers + servers / 10 + 64;
    [want, 2 * want, 4 * want]
}

/// The ARP table's thresholds against `servers` real servers: above `gc_thresh2` the kernel
/// collects entries older than 5 s, and refuses new ones above `gc_thresh3`.
fn neighbour_room(servers: usize) -> Option<Check> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/neigh/default/{name}")).ok()?.trim().parse::<usize>().ok()
    };
    Some(neighbour_check(servers, read("gc_thresh2")?, read("gc_thresh3")?))
}

fn neighbour_check(servers: usize, t2: usize, t3: usize) -> Check {
    let [t1_want, t2_want, t3_want] = neighbour_thresholds(servers);
    if t1_want > t2 || t1_want > t3 {
        fail(
            "neighbours",
            format!(
                "{servers} real servers, but the kernel's ARP table collects entries above gc_thresh2 = {t2} and refuses them above \
                 gc_thresh3 = {t3}: real servers drop out of forwarding while re-resolved (fix: `sysctl -w \
                 net.ipv4.neigh.default.gc_thresh1={t1_want} net.ipv4.neigh.default.gc_thresh2={t2_want} \
                 net.ipv4.neigh.default.gc_thresh3={t3_want}`, and in /etc/sysctl.d/)"
            ),
        )
    } else {
        ok("neighbours", format!("{servers} real servers; the ARP table holds {t2} before collecting (gc_thresh2)"))
    }
}

/// Every check, in the order an operator would go through them; `config` when there is a
/// file, otherwise what the dataplane pinned at `pin_dir` holds.
pub async fn run(config: Option<&Config>, pin_dir: &std::path::Path, sample: Duration) -> Result<Vec<Check>> {
    let subject = match config {
        Some(c) => Subject::from_config(c),
        None => Subject::from_pins(pin_dir),
    };
    let mut out = Vec::new();
    let iface_name = &subject.interface;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    out.push(ok("kernel", format!("{kernel}, {}", std::env::consts::ARCH)));
    out.push(if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        ok("btf", "kernel BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        ok("btf", "no kernel BTF; drlb does not need it")
    });

    // The dataplane: pinned, ours, attached.
    let dir = subject.pin_dir.clone();
    match pinned_layout(&dir) {
        Ok(Some(l)) if l == lb_common::maps::layout() => out.push(ok("pins", format!("drlb dataplane pinned at {} (layout {})", dir.display(), l[0]))),
        Ok(Some(l)) => out.push(fail("pins", format!("the dataplane at {} has layout {}, this drlb {}: fix: `drlb stop`, then `drlb run`", dir.display(), l[0], lb_common::maps::LAYOUT_VERSION))),
        Ok(None) => out.push(fail("pins", format!("no drlb dataplane at {}: drlb is not running (fix: start it: `drlb run --config ...` or `systemctl start drlb`)", dir.display()))),
        Err(e) => out.push(fail("pins", format!("{e:#}"))),
    }
    // The interface, the VIPs, ARP.
    let handle = netlink::connect()?;
    let iface = match netlink::interface(&handle, iface_name).await {
        Ok(i) => i,
        Err(e) => {
            out.push(fail("interface", format!("{e:#}")));
            return Ok(out);
        }
    };
    out.push(ok("interface", format!("{iface_name} {} ({})", format_mac(&iface.mac), iface.describe_subnets())));
    // What runs on the interface: drlb's pinned program?
    match iface.xdp {
        Some(XdpAttachment { mode, program_id: id }) => {
            let name = program_name(id);
            let link = dir.join(crate::kernel::bpf::LINK_PIN);
            let pinned_prog = pinned_link_program(&link);
            if name != crate::kernel::bpf::PROGRAM_LB {
                out.push(fail("xdp", format!("{iface_name} runs XDP program `{name}` (id {id}), not drlb's: another XDP user took the interface (fix: remove it, then `drlb run`)")));
            } else if pinned_prog.is_some_and(|p| p != id) {
                out.push(fail("xdp", format!("{iface_name} runs a drlb program (id {id}) that is not the one pinned at {} (id {}): a second drlb replaced it (fix: `drlb stop`, then one `drlb run`)", link.display(), pinned_prog.unwrap_or(0))));
            } else if pinned_prog.is_none() {
                out.push(fail("xdp", format!("drlb's program is attached to {iface_name} but no link is pinned at {}: a restart cannot take it over (fix: `drlb stop`, then `drlb run`)", link.display())));
            } else if mode == "generic" {
                let why = if crate::kernel::ethtool::lro_on(iface_name) == Some(true) {
                    "large-receive-offload is on (fix: ethtool -K IFACE lro off)"
                } else {
                    "the driver has no native XDP, or xdp_mode is generic"
                };
                out.push(ok("xdp", format!("drlb attached to {iface_name} in generic mode (slower): {why}")));
            } else {
                out.push(ok("xdp", format!("drlb attached to {iface_name} in {mode} mode (program id {id})")));
            }
        }
        None => out.push(fail("xdp", format!("no XDP program on {iface_name}: nothing balances VIP traffic (it was detached, or drlb is not running; fix: `drlb stop`, then `drlb run`)"))),
    }
    let arp_ignore = read_sysctl("all", "arp_ignore").unwrap_or(0).max(read_sysctl(iface_name, "arp_ignore").unwrap_or(0));
    let mut vips = subject.vips.clone();
    vips.sort();
    vips.dedup();
    let controller = crate::observe::state::ControllerState::read(&dir);
    if let Some(table) = subject.announce_table {
        out.extend(announce_checks(&handle, table, &vips, controller.as_ref()).await);
    }
    for vip in vips.iter().filter(|_| subject.announce_table.is_none()) {
        let on_iface = iface.ipv4.iter().any(|(a, _)| IpAddr::V4(*a) == *vip) || iface.ipv6.iter().any(|(a, _)| IpAddr::V6(*a) == *vip);
        let unusable = iface.ipv6_unusable.iter().find(|(a, _)| IpAddr::V6(*a) == *vip).map(|(_, why)| *why);
        let since = controller
            .as_ref()
            .and_then(|c| c.vips.iter().find(|v| v.vip == *vip))
            .map(|v| format!(" since {}", humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(v.since))))
            .unwrap_or_default();
        out.push(if !on_iface {
            // A backup holds no VIP: fine while another director does. Ask the segment.
            match held_elsewhere(&handle, iface.index, *vip).await {
                Some(mac) => ok("vip", format!("VIP {vip} is not on {iface_name}{since}: another director holds it (it answers {} from {}); this one is a backup", netlink::resolution_name(*vip), format_mac(&mac))),
                None => fail("vip", format!("VIP {vip} is held by no director: not on {iface_name}, and nothing on the segment answers {} for it, so clients reach no balancer (fix: check keepalived on every director (`systemctl status keepalived`, `journalctl -u keepalived`); without VRRP: ip addr add {vip}/{} dev {iface_name}{})", netlink::resolution_name(*vip), if vip.is_ipv4() { 32 } else { 128 }, if vip.is_ipv4() { "" } else { " nodad" })),
            }
        } else if let Some(why) = unusable {
            fail("vip", format!(
                "VIP {vip} is on {iface_name} but {why}: {} (fix: add IPv6 VIPs with `nodad` (keepalived does), or set net.ipv6.conf.{iface_name}.accept_dad=0 on directors; then remove and re-add the address)",
                if why == "dadfailed" { "another host answered for it during duplicate address detection, so the kernel never uses it and answers no neighbour solicitation for it" } else { "duplicate address detection is still running, and until it ends the director answers no neighbour solicitation for it" }
            ))
        } else if vip.is_ipv6() {
            ok("vip", format!("VIP {vip} on {iface_name}{since}: this director receives its traffic (it answers neighbour solicitations for it)"))
        } else if arp_ignore > 1 {
            fail("vip", format!("VIP {vip} is on {iface_name} but arp_ignore={arp_ignore} there: the director may not answer ARP for it (fix: arp_ignore=0 on the director)"))
        } else {
            ok("vip", format!("VIP {vip} on {iface_name}{since}: this director receives its traffic (arp_ignore={arp_ignore})"))
        });
    }
    if let Some(sync) = controller.as_ref().and_then(|c| c.sync.as_ref()) {
        let heard: Vec<String> = sync.peers_seen.keys().map(|p| p.to_string()).collect();
        out.push(ok("sync", format!(
            "connection sync {}; peers heard from: {}",
            sync.description,
            if heard.is_empty() { "none yet (a peer sends only when it has connections)".to_string() } else { heard.join(", ") }
        )));
    }

    // Room for every real server in the kernel's ARP table (shared by all namespaces).
    let distinct: std::collections::BTreeSet<IpAddr> = subject.services.iter().flat_map(|(_, _, _, servers)| servers.iter().map(|(_, a)| *a)).collect();
    if let Some(check) = neighbour_room(distinct.len()) {
        out.push(check);
    }

    // Real servers: on-link, MAC, health.
    let neighbours = netlink::neighbour_states(&handle, iface.index).await.unwrap_or_default();
    let health = status::read(&dir, config).ok();
    for (name, vip, port, servers) in &subject.services {
        for (label, address) in servers {
            if !iface.on_link(*address) {
                out.push(fail("real-server", format!("{label} {address}: not on-link on {iface_name} ({}): DR forwards at layer 2, so it cannot reach it (fix: put it in the director's subnet)", iface.describe_subnets())));
                continue;
            }
            match neighbours.get(address) {
                Some((Some(mac), state)) => out.push(ok("real-server", format!("{label} {address} at {} ({state})", format_mac(mac)))),
                Some((None, state)) => out.push(fail("real-server", format!("{label} {address}: {} {state}: it does not answer {} (down, or not on this segment?)", table(address), netlink::resolution_name(*address)))),
                None => out.push(fail("real-server", format!("{label} {address}: no {} entry: drlb has not resolved it (is drlb running?)", table(address)))),
            }
            if let Some(s) = &health {
                let h = s
                    .services
                    .iter()
                    .flat_map(|x| &x.real_servers)
                    .find(|r| r.address == address.to_string())
                    .map(|r| r.health.clone());
                match h.as_deref() {
                    Some("up") | None => {}
                    Some(other) => out.push(fail("health", format!("{label} {address} is {other}: it gets no new connections (see `drlb status` and drlb's log for why)"))),
                }
            }
        }
        if let Some(s) = health.as_ref().and_then(|h| h.services.iter().find(|x| x.vip == vip.to_string() && x.port == *port)) {
            if !s.real_servers.iter().any(|r| r.health == "up" && r.weight > 0) {
                out.push(fail("service", format!("{name} {vip}:{port}: no real server takes new connections: every SYN is dropped (drop_no_real_server)")));
            }
        }
    }

    // Traffic: are VIP packets arriving, forwarded, dropped?
    if let Ok(before) = status::read(&dir, None) {
        tokio::time::sleep(sample).await;
        if let Ok(after) = status::read(&dir, None) {
            let delta = |k: &str| after.reasons.get(k).copied().unwrap_or(0) - before.reasons.get(k).copied().unwrap_or(0);
            let forwarded = delta("tx_forwarded") + delta("tx_scheduled") + delta("tx_icmp_forwarded");
            if delta("pass_no_program") > 0 {
                out.push(fail("dataplane", format!(
                    "in {:.0} s: {} packets passed because the dispatcher found no program to jump to (DRLB_JUMP empty: its pin was removed while the XDP link stayed?) (fix: `drlb stop`, then `drlb run`)",
                    sample.as_secs_f64(),
                    delta("pass_no_program")
                )));
            }
            let drops: Vec<String> = after
                .reasons
                .keys()
                .filter(|k| k.starts_with("drop_") && delta(k) > 0)
                .map(|k| format!("{k}={}", delta(k)))
                .collect();
            let secs = sample.as_secs_f64();
            let event = |e: lb_common::events::Event| {
                after.events.get(e.name()).copied().unwrap_or(0) - before.events.get(e.name()).copied().unwrap_or(0)
            };
            let displaced = event(lb_common::events::Event::HalfOpenDisplaced);
            let promoted = event(lb_common::events::Event::HalfOpenPromoted);
            // A busy site displaces a few half-open entries now and then (a full bucket); a
            // flood displaces more than handshakes complete.
            if displaced > 0 && displaced >= promoted {
                out.push(fail("syn-flood", format!(
                    "in {secs:.0} s: {} new connections scheduled, {promoted} handshakes completed, and {displaced} half-open connections displaced by later SYNs before their handshake completed: a SYN flood, most likely from spoofed sources. Established connections are not affected (they are in the connection table, which SYNs never enter); a real client whose half-open entry is displaced before its ACK arrives must connect again. (what to do: see where the SYNs come from with `drlb trace`, and filter them upstream; docs/operations.md, \"SYN floods\")",
                    delta("tx_scheduled")
                )));
            }
            if !drops.is_empty() && forwarded == 0 {
                out.push(fail("traffic", format!("in {secs:.0} s: VIP packets arrive but none is forwarded: {} (see `drlb trace`)", drops.join(" "))));
            } else if forwarded == 0 {
                out.push(ok("traffic", format!("in {secs:.0} s: no VIP traffic arrived (is the VIP's ARP answered by this director?)")));
            } else {
                out.push(ok("traffic", format!("in {secs:.0} s: {forwarded} VIP packets forwarded{}", if drops.is_empty() { String::new() } else { format!(", dropped: {}", drops.join(" ")) })));
            }
        }
    }

    // IPv6 forwarding on the director turns it into a router, which ignores router
    // advertisements (accept_ra=1): a director that learnt its default route from them loses
    // it. drlb forwards VIP traffic in XDP and needs no forwarding.
    if vips.iter().any(|v| v.is_ipv6()) && read_sysctl6("all", "forwarding") == Some(1) && read_sysctl6(iface_name, "accept_ra") == Some(1) {
        out.push(fail("ipv6", format!(
            "net.ipv6.conf.all.forwarding=1 with accept_ra=1 on {iface_name}: the kernel ignores router advertisements, and a default route learnt from them expires (fix: forwarding=0, which drlb does not need, or accept_ra=2)"
        )));
    }

    // A second balancer: the kernel's IPVS configured for the same VIP.
    let ipvs = std::fs::read_to_string("/proc/net/ip_vs").unwrap_or_default();
    let clash: Vec<String> = vips
        .iter()
        .filter_map(|v| match v {
            IpAddr::V4(a) => {
                let hex = format!("{:08X}", u32::from(*a));
                ipvs.contains(&hex).then(|| a.to_string())
            }
            // /proc/net/ip_vs writes IPv6 services as `[%pI6]`: eight groups of four digits.
            IpAddr::V6(a) => {
                let full: Vec<String> = a.segments().iter().map(|g| format!("{g:04x}")).collect();
                ipvs.contains(&format!("[{}]", full.join(":"))).then(|| a.to_string())
            }
        })
        .collect();
    out.push(if clash.is_empty() {
        ok("ipvs", if ipvs.is_empty() { "the kernel's IPVS is not loaded".to_string() } else { "the kernel's IPVS has no virtual server for drlb's VIPs".to_string() })
    } else {
        fail("ipvs", format!("the kernel's IPVS also balances {}: two balancers for one VIP (fix: ipvsadm -C, remove keepalived's virtual_server)", clash.join(", ")))
    });
    Ok(out)
}

/// The neighbour table's name for an address's family, for messages.
fn table(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "ARP" } else { "NDP" }
}

/// `net.ipv6.conf.<iface>.<key>`, if readable.
fn read_sysctl6(iface: &str, key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/{key}")).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    /// The kernel's defaults (512 / 1,024) hold a handful of real servers; a thousand need
    /// more, and the fix names values that would hold them.
    #[test]
    fn neighbour_check_names_the_sysctls_to_raise() {
        let small = super::neighbour_check(10, 512, 1024);
        assert!(small.ok, "{small}");
        let big = super::neighbour_check(1000, 512, 1024);
        assert!(!big.ok, "{big}");
        let [t1, t2, t3] = super::neighbour_thresholds(1000);
        assert!(big.text.contains(&format!("gc_thresh1={t1} net.ipv4.neigh.default.gc_thresh2={t2} net.ipv4.neigh.default.gc_thresh3={t3}")), "{big}");
        assert!(super::neighbour_check(1000, t2, t3).ok, "the advised values are enough");
    }
}
