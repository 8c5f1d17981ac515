//! The real-server side of Direct Routing: `drlb realserver setup` and `check`.
//!
//! A DR real server must accept packets addressed to the VIP (VIP on `lo`) without ever
//! answering ARP for it (arp_ignore=1, arp_announce=2 on all, lo and the uplink), and its
//! reverse-path filter must not drop them.

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
    // The kernel uses the larger of `all` and the interface's own value.
    for iface in [uplink_iface, "lo"] {
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
        let exe = std::env::current_exe().unwrap_or_else(|_| Path::new("/usr/local/sbin/drlb").to_owned());
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
