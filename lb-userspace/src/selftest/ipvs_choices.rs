//! `drlb selftest --ipvs-choices`: the kernel's IPVS and drlb choose the same real server
//! for the same clients. For `sh` and `mh`, with equal weights and with 1:2:3, and with
//! IPVS's flags sh-port, sh-fallback and mh-port, IPVS
//! (`ipvsadm -A -s ...`, real servers added in configuration order as keepalived adds them)
//! schedules a SYN from each of 16 client addresses and 2 source ports; `ipvsadm -Lnc` says
//! where each went; drlb's tables, built for the same configuration, and its forwarding
//! decision (`lb_common::dataplane::schedule`, in the host model) must say the same. Needs
//! the ip_vs modules and `ipvsadm`: the VM tests run it in Debian's 5.10 and 6.1 kernels.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, ensure};

use crate::control::config::Config;
use crate::selftest::ipvs_sync::{find_ipvsadm, run_in, set_vip, IPVS};
use crate::selftest::lab::{ifindex, SelfLab};
use crate::selftest::netns::{VIP, VIP6};

/// Client addresses per family: 198.18.0.40 to .55, 2001:db8::40 to ::4f.
const CLIENTS: u8 = 16;
/// Scheduler, weights in configuration order, IPVS scheduler flag (`ipvsadm -b`). With
/// sh-fallback a server has weight 0, so the clients hashed to it fall back.
const ROUNDS: [(&str, [u32; 3], Option<&str>); 7] = [
    ("sh", [1, 1, 1], None),
    ("sh", [1, 2, 3], None),
    ("mh", [1, 1, 1], None),
    ("mh", [1, 2, 3], None),
    ("sh", [1, 2, 3], Some("sh-port")),
    ("sh", [1, 0, 3], Some("sh-fallback")),
    ("mh", [1, 2, 3], Some("mh-port")),
];
/// Lines `run` reports: one per round and family (IPv4, then IPv6, whose addresses sh and
/// mh hash folded).
pub const ROUND_COUNT: usize = 2 * ROUNDS.len();

/// One address family's VIP, real servers (IPVS schedules to them; they need not answer:
/// the choice is made on the SYN) and clients.
struct Family {
    vip: IpAddr,
    servers: [IpAddr; 3],
    clients: Vec<IpAddr>,
}

fn families() -> [Family; 2] {
    let v4 = |b: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 0, b));
    let v6 = |low: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, low));
    [
        Family { vip: VIP.into(), servers: [v4(31), v4(32), v4(33)], clients: (0..CLIENTS).map(|i| v4(40 + i)).collect() },
        Family { vip: VIP6.into(), servers: [v6(0x31), v6(0x32), v6(0x33)], clients: (0..CLIENTS).map(|i| v6(0x40 + u16::from(i))).collect() },
    ]
}

pub fn run() -> Result<String> {
    let ipvsadm = find_ipvsadm().ok_or_else(|| anyhow!("ipvsadm is not installed"))?;
    let lab = SelfLab::build_with(&[IPVS], false).context("building the lab")?;
    let ipvs = &lab.others[0].1;
    let families = families();
    let clients: Vec<IpAddr> = families.iter().flat_map(|f| f.clients.clone()).collect();
    lab.client.netlink(|h| async move {
        let index = ifindex("eth0")?;
        for c in clients {
            let prefix = if c.is_ipv4() { 24 } else { 64 };
            h.address().add(index, c, prefix).execute().await.context("adding a client address")?;
        }
        Ok(())
    })?;
    set_vip(ipvs, true)?;
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for (f, family) in families.iter().enumerate() {
        for (round, (scheduler, weights, flag)) in ROUNDS.into_iter().enumerate() {
            let ipvs_cmd = |args: &[&str]| run_in(ipvs, &ipvsadm, args);
            let vs = SocketAddr::new(family.vip, 80).to_string();
            ipvs_cmd(&["-C"])?;
            let mut add = vec!["-A", "-t", &vs, "-s", scheduler];
            // ipvsadm takes every version's name of the bits: flag-1 is sh-/mh-fallback,
            // flag-2 sh-/mh-port (IP_VS_SVC_F_SCHED1, SCHED2).
            if let Some(flag) = flag {
                add.extend(["-b", if flag.ends_with("-fallback") { "flag-1" } else { "flag-2" }]);
            }
            ipvs_cmd(&add).with_context(|| format!("is the ip_vs_{scheduler} module loaded?"))?;
            for (addr, w) in family.servers.iter().zip(weights) {
                ipvs_cmd(&["-a", "-t", &vs, "-r", &SocketAddr::new(*addr, 80).to_string(), "-g", "-w", &w.to_string()])?;
            }
            // Source ports of this round only: entries of earlier rounds are still listed.
            let base = 41000 + 2 * (f * ROUNDS.len() + round) as u16;
            let ports = [base, base + 1];
            lab.client.run(|| {
                for c in &family.clients {
                    for port in ports {
                        syn_from(SocketAddr::new(*c, port), family.vip)?;
                    }
                }
                Ok(())
            })?;
            std::thread::sleep(Duration::from_millis(300));
            let listed = ipvs_cmd(&["-Lnc"])?;
            let ipvs_choice = parse_connections(&listed);
            let drlb_choice = drlb_choices(family, scheduler, &weights, flag, &ports)?;
            let (mut same, mut total) = (0, 0);
            for client in &family.clients {
                for port in ports {
                    total += 1;
                    let theirs = ipvs_choice.get(&(*client, port)).copied();
                    let ours = drlb_choice.get(&(*client, port)).copied();
                    // Where both drop the SYN (no usable server: weight 0 without fallback), they agree.
                    if theirs == ours {
                        same += 1;
                    } else {
                        failures.push(format!("{scheduler} {weights:?} {flag:?}: {client}:{port}: IPVS chose {theirs:?}, drlb {ours:?}"));
                    }
                }
            }
            let flag = flag.map(|f| format!(" {f}")).unwrap_or_default();
            let v6 = if family.vip.is_ipv6() { " IPv6" } else { "" };
            lines.push(format!(
                "selftest ipvs-choices:{v6} {scheduler}{flag} weights {}: {same}/{total} clients sent where IPVS sends them",
                weights.map(|w| w.to_string()).join(":")
            ));
        }
    }
    let _ = run_in(ipvs, &ipvsadm, &["-C"]);
    ensure!(failures.is_empty(), "drlb and IPVS chose differently:\n{}\n{}", failures.join("\n"), lines.join("\n"));
    Ok(lines.join("\n"))
}

/// Sends one SYN from `from` to `vip`:80 and leaves (the connection need not complete).
fn syn_from(from: SocketAddr, vip: IpAddr) -> Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(if from.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 }, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&from.into()).with_context(|| format!("binding {from}"))?;
    s.set_nonblocking(true)?;
    match s.connect(&SocketAddr::new(vip, 80).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e).with_context(|| format!("connecting from {from}")),
    }
    // Long enough for the SYN to leave before the socket closes.
    std::thread::sleep(Duration::from_millis(5));
    Ok(())
}

/// `ipvsadm -Lnc` lines: `TCP 00:59 SYN_RECV 198.18.0.40:41000 198.18.0.100:80 198.18.0.31:80`
/// (IPv6 addresses in brackets).
fn parse_connections(listed: &str) -> HashMap<(IpAddr, u16), IpAddr> {
    let mut out = HashMap::new();
    for line in listed.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0] != "TCP" {
            continue;
        }
        let (Ok(client), Ok(server)) = (f[3].parse::<SocketAddr>(), f[5].parse::<SocketAddr>()) else { continue };
        out.insert((client.ip(), client.port()), server.ip());
    }
    out
}

/// drlb's choice for each client: its tables for the same service, and its forwarding
/// decision in the host model.
fn drlb_choices(family: &Family, scheduler: &str, weights: &[u32; 3], flag: Option<&str>, ports: &[u16]) -> Result<HashMap<(IpAddr, u16), IpAddr>> {
    let servers: Vec<String> = family.servers.iter().zip(weights).map(|(a, w)| format!("{{ address: \"{a}\", weight: {w} }}")).collect();
    let yaml = format!(
        "director: {{ interface: eth0 }}\nservices:\n  - {{ name: web, vip: \"{}\", port: 80, protocol: tcp, scheduler: {scheduler}, scheduler_flags: [{}], real_servers: [ {} ] }}\n",
        family.vip,
        flag.unwrap_or(""),
        servers.join(", ")
    );
    let config = Config::parse(Path::new("ipvs-choices.yaml"), &yaml).map_err(|e| anyhow!("{e}"))?;
    let macs = family.servers.iter().enumerate().map(|(i, a)| (*a, [2, 0, 0, 0, 0, 0x31 + i as u8])).collect();
    let content = crate::control::tables::build(&config, &macs, [2, 0, 0, 0, 0, 2]).map_err(|e| anyhow!("{e}"))?;
    let model = content.host_model();
    let vip = lb_common::addr::from_ip(family.vip);
    let key = lb_common::maps::ServiceKey::new(vip, 80, lb_common::maps::IPPROTO_TCP);
    let id = *model.service_ids.get(&key).ok_or_else(|| anyhow!("no service id"))?;
    let svc = *model.services.get(&id).ok_or_else(|| anyhow!("no service"))?;
    let mut out = HashMap::new();
    for client in &family.clients {
        for &port in ports {
            if let Some(slot) = lb_common::dataplane::Tables::schedule(&model, id, &svc, &lb_common::addr::from_ip(*client), port, &vip) {
                let b = model.backends.get(&slot).ok_or_else(|| anyhow!("no backend {slot}"))?;
                let a = lb_common::addr::to_ip(&b.addr).ok_or_else(|| anyhow!("backend {slot} has no address"))?;
                out.insert((*client, port), a);
            }
        }
    }
    Ok(out)
}
