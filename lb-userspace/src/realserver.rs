//! The real-server side of Direct Routing: `drlb realserver setup` and `check`.
//!
//! A DR real server must accept packets addressed to the VIP (VIP on `lo`) without ever
//! answering ARP for it (arp_ignore=1, arp_announce=2 on all, lo and the uplink), and its
//! reverse-path filter must not drop them. An IPv6 VIP needs IPv6 enabled on lo and the
//! uplink, and nothing against neighbour discovery: Linux answers a neighbour solicitation
//! only for addresses of the interface it arrives on (`ndisc_recv_ns()` looks the target up
//! on that device), so a VIP on lo is never claimed on the uplink, and lo runs no duplicate
//! address detection.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result, bail};

const SYSCTL_FILE: &str = "/etc/sysctl.d/90-drlb-realserver.conf";
const UNIT_FILE: &str = "/etc/systemd/system/drlb-realserver.service";

fn sysctl_path(iface: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{iface}/{key}")
}

fn read_sysctl(iface: &str, key: &str) -> Result<u32> {
    let p = sysctl_path(iface, key);
    std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?.trim().parse().with_context(|| format!("parsing {p}"))
}

/// `net.ipv6.conf.<iface>.disable_ipv6`; `None` where the kernel has no IPv6 at all.
fn ipv6_disabled(iface: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6")).ok().map(|v| v.trim() != "0")
}

fn write_sysctl(iface: &str, key: &str, value: u32) -> Result<()> {
    let p = sysctl_path(iface, key);
    std::fs::write(&p, value.to_string()).with_context(|| format!("writing {p} (needs root)"))
}

/// The interface of the IPv4 default route (from /proc/net/route), else the first non-lo.
pub fn uplink() -> Result<String> {
    let routes = std::fs::read_to_string("/proc/net/route").context("reading /proc/net/route")?;
    for line in routes.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            return Ok(f[0].to_string());
        }
    }
    for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !["all", "default", "lo"].contains(&name.as_str()) {
            return Ok(name);
        }
    }
    bail!("no uplink interface found; name it with --uplink")
}

/// The addresses on `lo` (from `ip -o addr show dev lo`).
fn lo_addresses() -> Result<Vec<IpAddr>> {
    let out = std::process::Command::new("ip").args(["-o", "addr", "show", "dev", "lo"]).output().context("running ip")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet" || x == "inet6")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// One finding of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

/// Everything that would make DR fail on this server, each with its consequence.
pub fn check(vips: &[IpAddr], uplink_iface: &str) -> Result<Vec<Finding>> {
    let mut f = Vec::new();
    let on_lo = lo_addresses()?;
    for v in vips {
        f.push(if on_lo.contains(v) {
            Finding { ok: true, text: format!("VIP {v} is on lo") }
        } else {
            Finding { ok: false, text: format!("VIP {v} missing on lo: this server drops packets forwarded for the VIP (fix: drlb realserver setup --vip {v})") }
        });
    }
    if vips.iter().any(|v| v.is_ipv6()) {
        for iface in ["lo", uplink_iface] {
            f.push(match ipv6_disabled(iface) {
                Some(false) => Finding { ok: true, text: format!("IPv6 enabled on {iface} (no sysctl needed against neighbour discovery: Linux answers solicitations only for addresses of the receiving interface)") },
                Some(true) => Finding {
                    ok: false,
                    text: format!("disable_ipv6=1 on {iface}: this server cannot hold or receive the IPv6 VIP (fix: sysctl net.ipv6.conf.{iface}.disable_ipv6=0, or drlb realserver setup)"),
                },
                None => Finding { ok: false, text: "this kernel has no IPv6 (ipv6.disable=1 at boot?): it cannot serve an IPv6 VIP".into() },
            });
        }
    }
    // ARP matters to IPv4 VIPs (and to a server whose VIPs were not named).
    let arp_applies = vips.is_empty() || vips.iter().any(|v| v.is_ipv4());
    // The kernel uses the larger of `all` and the interface's own value.
    for iface in [uplink_iface, "lo"].into_iter().filter(|_| arp_applies) {
        let ignore = read_sysctl("all", "arp_ignore")?.max(read_sysctl(iface, "arp_ignore")?);
        f.push(if ignore >= 1 {
            Finding { ok: true, text: format!("arp_ignore={ignore} on {iface}") }
        } else {
            Finding {
                ok: false,
                text: format!("arp_ignore={ignore} on {iface}: this server answers ARP for the VIP and steals traffic from the director (fix: arp_ignore=1)"),
            }
        });
        let announce = read_sysctl("all", "arp_announce")?.max(read_sysctl(iface, "arp_announce")?);
        f.push(if announce >= 2 {
            Finding { ok: true, text: format!("arp_announce={announce} on {iface}") }
        } else {
            Finding {
                ok: false,
                text: format!(
                    "arp_announce={announce} on {iface}: this server's ARP requests may carry the VIP as sender and point neighbours' caches at it (fix: arp_announce=2)"
                ),
            }
        });
    }
    let rp = read_sysctl("all", "rp_filter")?.max(read_sysctl(uplink_iface, "rp_filter")?);
    f.push(if rp == 1 {
        Finding {
            ok: false,
            text: format!("rp_filter=1 (strict) on {uplink_iface}: forwarded packets are dropped whenever the route back to the client is not via {uplink_iface} (fix: rp_filter=2)"),
        }
    } else {
        Finding { ok: true, text: format!("rp_filter={rp} on {uplink_iface}") }
    });
    Ok(f)
}

/// Adds each VIP to lo and sets the ARP and rp_filter sysctls; with `persist`, also writes a
/// sysctl.d file and a systemd unit that redoes it at boot. Returns what it did.
pub fn setup(vips: &[IpAddr], uplink_iface: &str, persist: bool) -> Result<Vec<String>> {
    let mut did = Vec::new();
    if vips.iter().any(|v| v.is_ipv6()) {
        for iface in ["lo", uplink_iface] {
            if ipv6_disabled(iface) == Some(true) {
                std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "0").with_context(|| format!("enabling IPv6 on {iface} (needs root)"))?;
                did.push(format!("set net.ipv6.conf.{iface}.disable_ipv6=0"));
            }
        }
    }
    let on_lo = lo_addresses()?;
    for v in vips {
        if !on_lo.contains(v) {
            let prefix = if v.is_ipv4() { 32 } else { 128 };
            let out = std::process::Command::new("ip")
                .args(["addr", "add", &format!("{v}/{prefix}"), "dev", "lo"])
                .output()
                .context("running ip")?;
            if !out.status.success() {
                bail!("adding {v} to lo: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            did.push(format!("added {v}/{prefix} to lo"));
        }
    }
    for iface in ["all", "lo", uplink_iface] {
        for (key, value) in [("arp_ignore", 1), ("arp_announce", 2)] {
            if read_sysctl(iface, key)? != value {
                write_sysctl(iface, key, value)?;
                did.push(format!("set net.ipv4.conf.{iface}.{key}={value}"));
            }
        }
    }
    for iface in ["all", uplink_iface] {
        if read_sysctl(iface, "rp_filter")? == 1 {
            write_sysctl(iface, "rp_filter", 2)?;
            did.push(format!("set net.ipv4.conf.{iface}.rp_filter=2 (loose)"));
        }
    }
    if persist {
        let mut conf = String::from("# Written by `drlb realserver setup --persist`: Direct Routing real server.\n");
        for iface in ["all", "lo", uplink_iface] {
            conf += &format!("net.ipv4.conf.{iface}.arp_ignore = 1\nnet.ipv4.conf.{iface}.arp_announce = 2\n");
        }
        conf += &format!("net.ipv4.conf.all.rp_filter = 2\nnet.ipv4.conf.{uplink_iface}.rp_filter = 2\n");
        std::fs::write(SYSCTL_FILE, conf).with_context(|| format!("writing {SYSCTL_FILE}"))?;
        did.push(format!("wrote {SYSCTL_FILE}"));
        let exe = std::env::current_exe().unwrap_or_else(|_| Path::new("/usr/sbin/drlb").to_owned());
        let args: Vec<String> = vips.iter().map(|v| format!("--vip {v}")).collect();
        let unit = format!(
            "[Unit]\nDescription=drlb Direct-Routing real server setup (VIPs on lo, ARP sysctls)\nAfter=network-pre.target\n\
             Before=network-online.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
             ExecStart={} realserver setup --uplink {uplink_iface} {}\n\n[Install]\nWantedBy=multi-user.target\n",
            exe.display(),
            args.join(" ")
        );
        std::fs::write(UNIT_FILE, unit).with_context(|| format!("writing {UNIT_FILE}"))?;
        did.push(format!("wrote {UNIT_FILE} (enable it: systemctl enable drlb-realserver)"));
    }
    Ok(did)
}
