//! What every lab of drlb's shares — `drlb selftest --lab`, the live benchmark and the
//! test lab under `tests/lab`: the lab's addresses (all in 198.18.0.0/15) and hosts, running
//! a command, entering a network namespace, switching a veth's checksum offload, and a
//! minimal HTTP client.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};

use crate::kernel::mac::Mac;

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const PREFIX: u8 = 24;
/// The lab's IPv6 VIP, beside [`VIP`].
pub const VIP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// The prefix length of the lab's IPv6 segment, 2001:db8::/64.
pub const PREFIX6: u8 = 64;

/// A lab host's IPv6 address: 2001:db8:: and its IPv4 address's last byte as written
/// (198.18.0.11 → 2001:db8::11), so both read alike in captures and logs.
pub fn v6_of(addr: Ipv4Addr) -> std::net::Ipv6Addr {
    format!("2001:db8::{}", addr.octets()[3]).parse().expect("a valid IPv6 address")
}

/// One host of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub role: &'static str,
    pub addr: Ipv4Addr,
    pub mac: Mac,
}

pub const CLIENT: Host = Host { role: "client", addr: CLIENT_ADDR, mac: [0x02, 0xd1, 0, 0, 0, 0x0a] };
pub const DIRECTOR: Host = Host { role: "director", addr: DIRECTOR_ADDR, mac: [0x02, 0xd1, 0, 0, 0, 0x02] };
/// The second director of a pair (`Lab::build_pair` in tests/lab).
pub const DIRECTOR2: Host = Host { role: "director2", addr: Ipv4Addr::new(198, 18, 0, 3), mac: [0x02, 0xd1, 0, 0, 0, 0x03] };
/// Every director a lab can have: one alone, a VRRP pair, or up to four behind an ECMP
/// router (`Lab::build_ecmp` in tests/lab).
pub const ALL_DIRECTORS: [Host; 4] = [
    DIRECTOR,
    DIRECTOR2,
    Host { role: "director3", addr: Ipv4Addr::new(198, 18, 0, 4), mac: [0x02, 0xd1, 0, 0, 0, 0x04] },
    Host { role: "director4", addr: Ipv4Addr::new(198, 18, 0, 5), mac: [0x02, 0xd1, 0, 0, 0, 0x05] },
];
/// Every real server a lab can have; a lab uses the first `real_servers` of them.
pub const ALL_REAL_SERVERS: [Host; 3] = [
    Host { role: "rs1", addr: Ipv4Addr::new(198, 18, 0, 11), mac: [0x02, 0xd1, 0, 0, 0, 0x11] },
    Host { role: "rs2", addr: Ipv4Addr::new(198, 18, 0, 12), mac: [0x02, 0xd1, 0, 0, 0, 0x12] },
    Host { role: "rs3", addr: Ipv4Addr::new(198, 18, 0, 13), mac: [0x02, 0xd1, 0, 0, 0, 0x13] },
];
/// The default lab's two real servers.
pub const REAL_SERVERS: [Host; 2] = [ALL_REAL_SERVERS[0], ALL_REAL_SERVERS[1]];
/// A second address on the client, to act as a second client.
pub const CLIENT2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);

/// Prefix of every namespace the lab creates: `drlbNNNNN-K-role` (NNNNN = creator pid).
pub const NS_PREFIX: &str = "drlb";

/// Runs a command, failing with its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup` installs it)"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {ns}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in namespace {ns} panicked"))?
    })
}

/// `ethtool -K IFACE tx off` in the calling thread's namespace: veth leaves TCP checksums
/// to an offload that XDP_TX skips.
pub use crate::kernel::ethtool::tx_checksum_off;

/// One HTTP/1.1 GET of `/` on a kept connection to the VIP: the real server's answer (its
/// role, trimmed).
pub fn keepalive_request(s: &mut TcpStream) -> Result<String> {
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {VIP}\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).context("reading the answer")?;
        anyhow::ensure!(n > 0, "the connection was closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
            if body.len() >= len {
                return Ok(body[..len].trim().to_string());
            }
        }
    }
}

/// One HTTP/1.0 GET of `/` on port 80 of `addr`; the body of a 200 answer.
pub fn http_get(addr: impl Into<std::net::IpAddr>, timeout: Duration) -> Result<String> {
    http_get_at(SocketAddr::from((addr.into(), 80)), timeout)
}

/// [`http_get`] on another port.
pub fn http_get_at(to: SocketAddr, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&to, timeout).context("connect")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {}\r\nUser-Agent: drlb-lab\r\n\r\n", to.to_string().trim_end_matches(":80")).as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response).context("read")?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no HTTP header in {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("status line {:?}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

