//! `drlb selftest --ipvs-sync`: drlb and the kernel's IPVS exchange connections over
//! IPVS's sync protocol, both ways, with real TCP — what moving a keepalived+IPVS pair to
//! drlb one director at a time relies on. Needs the ip_vs modules and `ipvsadm`; the VM
//! tests run it in Debian's 5.10 and 6.1 kernels (this lab's host kernel has no IPVS).
//!
//! The lab of [`crate::selftest::lab`] with a second director, `ipvs`, running the kernel's
//! IPVS (`ipvsadm -A/-a ... -g`, `--start-daemon master` and `backup`, syncid 7) beside
//! `drlb run` (sync on, syncid 7) on the first:
//!
//! 1. IPVS → drlb: a keep-alive HTTP connection through IPVS (which syncs it on its third
//!    packet); the VIP moves to drlb's director; the next request on the same connection is
//!    forwarded by drlb, from the entry IPVS's sync daemon sent.
//! 2. drlb → IPVS: a keep-alive connection through drlb; `ipvsadm -Lnc` lists it as
//!    ESTABLISHED; drlb stops and the VIP moves back; IPVS forwards the next request.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use futures::TryStreamExt as _;

use crate::observe::state::ControllerState;
use crate::selftest::lab::{ifindex, Netns, SelfLab};
use crate::selftest::netns::{keepalive_request, DIRECTOR2, Host, VIP};

/// The IPVS director: the lab's second director address.
pub(crate) const IPVS: Host = Host { role: "ipvs", ..DIRECTOR2 };
const SYNCID: &str = "7";

pub(crate) fn find_ipvsadm() -> Option<PathBuf> {
    ["/sbin/ipvsadm", "/usr/sbin/ipvsadm", "/bin/ipvsadm", "/usr/bin/ipvsadm"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs a program inside `ns`; its stdout, or its stderr as the error.
pub(crate) fn run_in(ns: &Netns, program: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = ns.command(program);
    cmd.args(args).stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!("`{} {}` failed: {}", program.display(), args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Puts the VIP on `ns`'s eth0, or takes it off.
pub(crate) fn set_vip(ns: &Netns, present: bool) -> Result<()> {
    ns.netlink(|h| async move {
        let index = ifindex("eth0")?;
        if present {
            h.address().add(index, IpAddr::V4(VIP), 32).execute().await.context("adding the VIP")?;
            h.address().add(index, IpAddr::V6(crate::selftest::netns::VIP6), 128).execute().await.context("adding the IPv6 VIP")?;
            return Ok(());
        }
        for vip in [IpAddr::V4(VIP), IpAddr::V6(crate::selftest::netns::VIP6)] {
            let mut dump = h.address().get().set_link_index_filter(index).set_address_filter(vip).execute();
            while let Some(msg) = dump.try_next().await? {
                h.address().del(msg).execute().await.context("removing the VIP")?;
            }
        }
        Ok(())
    })
}

/// Forgets the client's ARP entry for the VIP, as a gratuitous ARP would replace it.
fn forget_vip_mac(client: &Netns) -> Result<()> {
    client.netlink(|h| async move {
        use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
        let mut dump = h.neighbours().get().execute();
        let mut found = Vec::new();
        while let Some(msg) = dump.try_next().await? {
            if msg.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) if *a == VIP)) {
                found.push(msg);
            }
        }
        for msg in found {
            h.neighbours().del(msg).execute().await.context("deleting the client's ARP entry for the VIP")?;
        }
        Ok(())
    })
}


fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        ensure!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `drlb run` in the director's namespace, stopped (SIGTERM) when dropped.
struct Controller {
    child: Child,
    log: PathBuf,
    pin_dir: PathBuf,
}

impl Controller {
    fn start(ns: &Netns, work: &Path) -> Result<Controller> {
        let pin_root = PathBuf::from("/sys/fs/bpf/drlb-selftest-ipvs");
        let config = work.join("drlb.yaml");
        let mut text = format!(
            "director:\n  interface: eth0\n  xdp_mode: generic\n  pin_root: {}\n  metrics_listen: null\n  sync: {{ interface: eth0, syncid: {SYNCID} }}\n\
             services:\n  - {{ name: web, vip: {VIP}, port: 80, protocol: tcp, scheduler: wlc, real_servers: [",
            pin_root.display()
        );
        text += &crate::selftest::netns::REAL_SERVERS.iter().map(|r| format!("{{ address: {} }}", r.addr)).collect::<Vec<_>>().join(", ");
        text += "] }\n";
        std::fs::write(&config, text)?;
        let log = work.join("drlb.log");
        let mut cmd = ns.command(&std::env::current_exe()?);
        cmd.args(["run", "--replace-dataplane", "--config"]).arg(&config).env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().context("starting drlb run")?;
        let c = Controller { child, log, pin_dir: pin_root.join("eth0") };
        // Loading verifies four programs, two of them near a million instructions each: tens of
        // seconds in an emulated (TCG) guest.
        wait_for("drlb run ready", Duration::from_secs(120), || std::fs::read_to_string(&c.log).ok().filter(|l| l.contains("ready:"))).map_err(|e| {
            anyhow!("{e}; its log:\n{}", std::fs::read_to_string(&c.log).unwrap_or_default())
        })?;
        Ok(c)
    }

    fn synced(&self, counter: &str) -> u64 {
        std::fs::read(crate::observe::state::path(&self.pin_dir))
            .ok()
            .and_then(|t| serde_json::from_slice::<ControllerState>(&t).ok())
            .and_then(|s| s.sync)
            .and_then(|s| s.counters.get(counter).copied())
            .unwrap_or(0)
    }

    fn forwarded(&self) -> u64 {
        crate::observe::status::read(&self.pin_dir, None).map(|s| s.reasons.get("tx_forwarded").copied().unwrap_or(0)).unwrap_or(0)
    }

    fn stop(mut self) -> Result<String> {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        self.child.wait()?;
        Ok(std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// Runs both directions; one line per direction on success.
pub fn run() -> Result<String> {
    let ipvsadm = find_ipvsadm().ok_or_else(|| anyhow!("ipvsadm is not installed"))?;
    let work = std::env::temp_dir().join(format!("drlb-selftest-ipvs-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = run_lab(&ipvsadm, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_lab(ipvsadm: &Path, work: &Path) -> Result<String> {
    let lab = SelfLab::build_with(&[IPVS], false).context("building the lab")?;
    let ipvs = &lab.others[0].1;
    let vs = format!("{VIP}:80");
    let ipvs_cmd = |args: &[&str]| run_in(ipvs, ipvsadm, args);
    ipvs_cmd(&["-A", "-t", &vs, "-s", "wlc"]).context("is the ip_vs module loaded?")?;
    for rs in crate::selftest::netns::REAL_SERVERS {
        ipvs_cmd(&["-a", "-t", &vs, "-r", &format!("{}:80", rs.addr), "-g"])?;
    }
    for role in ["master", "backup"] {
        ipvs_cmd(&["--start-daemon", role, "--mcast-interface", "eth0", "--syncid", SYNCID])?;
    }
    set_vip(ipvs, true)?;
    let drlb = Controller::start(&lab.director, work)?;
    let connect = || -> Result<TcpStream> {
        lab.client.run(|| {
            let s = TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(3)).context("connecting to the VIP")?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(s)
        })
    };

    // 1. IPVS → drlb.
    let mut first = connect()?;
    let rs_first = keepalive_request(&mut first).context("request 1 through IPVS")?;
    // IPVS syncs an established connection on its third packet (sync_threshold 3).
    keepalive_request(&mut first).context("request 2 through IPVS")?;
    wait_for("drlb installs the connection IPVS's master daemon sent", Duration::from_secs(10), || (drlb.synced("installed") >= 1).then_some(()))
        .map_err(|e| anyhow!("{e}; drlb's log:\n{}", std::fs::read_to_string(&drlb.log).unwrap_or_default()))?;
    set_vip(ipvs, false)?;
    set_vip(&lab.director, true)?;
    forget_vip_mac(&lab.client)?;
    let before = drlb.forwarded();
    let rs_after = keepalive_request(&mut first).context("the same connection, now through drlb")?;
    ensure!(rs_after == rs_first, "the connection moved from {rs_first} to {rs_after}");
    ensure!(drlb.forwarded() > before, "the answer did not come through drlb's dataplane");
    let one = format!(
        "selftest ipvs-sync: IPVS -> drlb: a connection made through IPVS (ipvsadm --start-daemon master) continued through drlb to {rs_first}"
    );

    // 2. drlb → IPVS.
    let mut second = connect()?;
    let rs_second = keepalive_request(&mut second).context("request through drlb")?;
    let port = second.local_addr()?.port();
    let listed = wait_for("ipvsadm -Lnc lists drlb's connection as ESTABLISHED", Duration::from_secs(10), || {
        let out = ipvs_cmd(&["-Lnc"]).ok()?;
        out.lines().find(|l| l.contains("ESTABLISHED") && l.contains(&format!(":{port} "))).map(str::to_string)
    })?;
    drlb.stop()?;
    set_vip(&lab.director, false)?;
    set_vip(ipvs, true)?;
    forget_vip_mac(&lab.client)?;
    let rs_ipvs = keepalive_request(&mut second).context("the same connection, now through IPVS")?;
    ensure!(rs_ipvs == rs_second, "the connection moved from {rs_second} to {rs_ipvs}");
    let _ = ipvs_cmd(&["--stop-daemon", "master"]);
    let _ = ipvs_cmd(&["--stop-daemon", "backup"]);
    let _ = ipvs_cmd(&["-C"]);
    Ok(format!(
        "{one}\nselftest ipvs-sync: drlb -> IPVS: ipvsadm -Lnc listed drlb's connection ({}) and IPVS continued it to {rs_second} after drlb stopped",
        listed.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}
