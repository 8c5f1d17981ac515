//! A lab that needs nothing but the `drlb` binary and a kernel with veth and bridge
//! support: `drlb selftest --lab`. Namespaces are made with unshare(2) and held by file
//! descriptors, links and addresses are set over netlink, the real servers are HTTP
//! servers inside this process. The VM tests run it in every guest kernel (no iproute2,
//! no nginx there), and an operator can run it on a Kunpeng director before installing.
//!
//! Same topology and addresses as [`crate::selftest::netns`]: client, director and two real servers
//! joined by a bridge in its own namespace; the VIP on the director's eth0 and on the real
//! servers' lo (arp_ignore=1, arp_announce=2). Real TCP goes from the client to the VIP,
//! through drlb's XDP program on the director, and back from the real servers directly.
//! Everything disappears with the namespaces when the last descriptor closes, also when a
//! step fails.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpListener};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use nix::sched::{CloneFlags, setns, unshare};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

use crate::control::config::{Config, XdpMode};
use crate::kernel::bpf::{Dataplane, Tools, PROGRAM_LB, PROGRAM_PASS};
use crate::selftest::netns::{CLIENT, DIRECTOR, Host, PREFIX, PREFIX6, REAL_SERVERS, VIP, VIP6, http_get, tx_checksum_off, v6_of};
use crate::kernel::mac::Mac;
use lb_common::verdict::Verdict;

/// HTTP requests per XDP mode.
pub const REQUESTS: usize = 40;

/// A network namespace, alive while this descriptor (or a socket in it) is open.
pub(crate) struct Netns {
    role: &'static str,
    pub(crate) fd: File,
}

impl Netns {
    pub(crate) fn new(role: &'static str) -> Result<Netns> {
        let fd = std::thread::spawn(move || -> Result<File> {
            // A thread's network namespace is its own: unsharing here leaves the rest of
            // the process where it was.
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET) (needs root)")?;
            File::open("/proc/thread-self/ns/net").context("opening /proc/thread-self/ns/net (is /proc mounted?)")
        })
        .join()
        .map_err(|_| anyhow!("namespace thread panicked"))??;
        Ok(Netns { role, fd })
    }

    /// Runs `f` on a thread inside this namespace.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering the {} namespace", self.role))?;
                f()
            })
            .join()
            .map_err(|_| anyhow!("thread in the {} namespace panicked", self.role))?
        })
        .with_context(|| format!("in the {} namespace", self.role))
    }

    /// A command that runs `program` inside this namespace (network only: its /sys and
    /// mounts stay this process's, so pins made here are seen there).
    pub(crate) fn command(&self, program: &std::path::Path) -> std::process::Command {
        use std::os::unix::process::CommandExt as _;
        let fd = self.fd.as_raw_fd();
        let mut cmd = std::process::Command::new(program);
        // SAFETY: setns(2) is async-signal-safe; `fd` stays open until the child has exec'd
        // (the Netns outlives the command).
        unsafe {
            cmd.pre_exec(move || if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
        cmd
    }

    /// Runs netlink requests inside this namespace.
    pub(crate) fn netlink<T: Send, F: Future<Output = Result<T>>>(&self, f: impl FnOnce(Handle) -> F + Send) -> Result<T> {
        self.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
                tokio::spawn(conn);
                f(handle).await
            })
        })
    }
}

/// Index of `name` in the calling thread's namespace.
pub(crate) fn ifindex(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).with_context(|| format!("no interface {name}"))
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value} to {path}"))
}

/// A TCP server in a namespace of the lab: accepts on its listener and hands each
/// connection to its handler, until dropped (then the port refuses connections).
pub(crate) struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A real server's HTTP server: port 80 of every address of `ns` (the VIP on lo
    /// included), answering every request with its role.
    fn start(ns: &Netns, role: &'static str) -> Result<Server> {
        // One thread per connection: keep-alive connections stay open while others come and go.
        // `[::]` takes IPv4 too (as IPv4-mapped peers): one listener for both VIPs.
        Self::listen(ns, "[::]:80".parse().expect("an address"), move |s| {
            std::thread::spawn(move || serve(s, role));
        })
    }

    /// Listens on `addr` inside `ns` and gives every accepted connection to `handle`.
    pub(crate) fn listen(ns: &Netns, addr: std::net::SocketAddr, handle: impl Fn(std::net::TcpStream) + Send + 'static) -> Result<Server> {
        let listener = ns.run(|| {
            let l = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => handle(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Server { stop, thread: Some(thread) })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers requests on one connection with `role`: HTTP/1.0 requests once (then closes),
/// HTTP/1.1 ones for as long as the client keeps the connection.
fn serve(mut s: std::net::TcpStream, role: &'static str) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    loop {
        let mut buf = [0u8; 1024];
        let mut got = 0;
        while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf[got..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let body = format!("{role}\n");
        let keep = !buf[..got].windows(8).any(|w| w == b"HTTP/1.0");
        let head = if keep { "HTTP/1.1 200 OK" } else { "HTTP/1.0 200 OK\r\nConnection: close" };
        if write!(s, "{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).is_err() || !keep {
            return;
        }
    }
}

/// The namespaces and servers of one lab.
pub(crate) struct SelfLab {
    pub(crate) bridge: Netns,
    pub(crate) client: Netns,
    pub(crate) director: Netns,
    /// More directors on the bridge (`build_with`).
    pub(crate) others: Vec<(Host, Netns)>,
    pub(crate) servers: Vec<(Host, Netns)>,
    http: Vec<Server>,
}

impl SelfLab {
    fn build() -> Result<SelfLab> {
        Self::build_with(&[], true)
    }

    /// The lab with `others` on the bridge too, and the VIP on the director's eth0 unless
    /// `vip_on_director` is false.
    pub(crate) fn build_with(others: &[Host], vip_on_director: bool) -> Result<SelfLab> {
        let mut lab = SelfLab {
            bridge: Netns::new("bridge")?,
            client: Netns::new("client")?,
            director: Netns::new("director")?,
            others: Vec::new(),
            servers: Vec::new(),
            http: Vec::new(),
        };
        for h in others {
            lab.others.push((*h, Netns::new(h.role)?));
        }
        for rs in REAL_SERVERS {
            lab.servers.push((rs, Netns::new(rs.role)?));
        }
        lab.bridge
            .netlink(|h| async move {
                h.link().add(LinkBridge::new("br0").up().build()).execute().await.context("creating bridge br0 (is the bridge module loaded?)")?;
                Ok(())
            })?;
        let hosts: Vec<(Host, &Netns)> = [(CLIENT, &lab.client), (DIRECTOR, &lab.director)]
            .into_iter()
            .chain(lab.others.iter().map(|(h, n)| (*h, n)))
            .chain(lab.servers.iter().map(|(h, n)| (*h, n)))
            .collect();
        for (host, ns) in &hosts {
            // One message makes the pair: v<role> on the bridge, eth0 (with the host's MAC)
            // already inside the host's namespace.
            let peer = LinkUnspec::new_with_name("eth0").address(host.mac.to_vec()).setns_by_fd(ns.fd.as_raw_fd()).build();
            let outer = format!("v{}", host.role);
            lab.bridge.netlink(|h| async move {
                let msg = LinkVeth::new(&outer, "eth0").set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build();
                h.link().add(msg).execute().await.with_context(|| format!("creating veth {outer} (is the veth module loaded?)"))?;
                let br = ifindex("br0")?;
                let index = ifindex(&outer)?;
                h.link().set(LinkUnspec::new_with_index(index).controller(br).up().build()).execute().await?;
                Ok(())
            })?;
            let addr = host.addr;
            // No duplicate address detection: the lab's addresses are unique, and DAD would
            // hold each IPv6 address back for a second or more.
            ns.run(|| write_sysctl("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0"))?;
            ns.netlink(|h| async move {
                for name in ["lo", "eth0"] {
                    h.link().set(LinkUnspec::new_with_index(ifindex(name)?).up().build()).execute().await?;
                }
                h.address().add(ifindex("eth0")?, IpAddr::V4(addr), PREFIX).execute().await?;
                h.address().add(ifindex("eth0")?, IpAddr::V6(v6_of(addr)), PREFIX6).execute().await?;
                Ok(())
            })?;
        }
        if vip_on_director {
            lab.director.netlink(|h| async move {
                h.address().add(ifindex("eth0")?, IpAddr::V4(VIP), 32).execute().await?;
                h.address().add(ifindex("eth0")?, IpAddr::V6(VIP6), 128).execute().await?;
                Ok(())
            })?;
        }
        for (_, ns) in &lab.servers {
            ns.netlink(|h| async move {
                h.address().add(ifindex("lo")?, IpAddr::V4(VIP), 32).execute().await?;
                // IPv6 needs no counterpart of arp_ignore: a solicitation is answered only for
                // addresses of the interface it arrives on.
                h.address().add(ifindex("lo")?, IpAddr::V6(VIP6), 128).execute().await?;
                Ok(())
            })?;
            ns.run(|| {
                for conf in ["all", "eth0"] {
                    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{conf}/arp_ignore"), "1")?;
                    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{conf}/arp_announce"), "2")?;
                }
                Ok(())
            })?;
        }
        for (host, ns) in &lab.servers {
            let server = Server::start(ns, host.role)?;
            lab.http.push(server);
        }
        Ok(lab)
    }

    /// `n` HTTP/1.0 requests from the client to VIP:80; answers per real server.
    fn requests(&self, n: usize) -> Result<(usize, Vec<usize>, Option<String>)> {
        self.requests_to(VIP.into(), n)
    }

    /// [`SelfLab::requests`] to `vip` (the IPv6 VIP).
    fn requests_to(&self, vip: IpAddr, n: usize) -> Result<(usize, Vec<usize>, Option<String>)> {
        self.client.run(|| {
            let mut ok = 0;
            let mut per_server = vec![0; REAL_SERVERS.len()];
            let mut first_error = None;
            for _ in 0..n {
                match http_get(vip, Duration::from_secs(2)) {
                    Ok(body) => match REAL_SERVERS.iter().position(|rs| body.trim() == rs.role) {
                        Some(i) => {
                            ok += 1;
                            per_server[i] += 1;
                        }
                        None => {
                            first_error.get_or_insert(format!("unexpected answer {body:?}"));
                        }
                    },
                    Err(e) => {
                        first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            Ok((ok, per_server, first_error))
        })
    }
}

impl Drop for SelfLab {
    fn drop(&mut self) {
        self.http.clear();
    }
}

/// The service the lab balances: VIP:80/tcp, wlc over both real servers.
fn lab_config() -> Result<(Config, HashMap<IpAddr, Mac>)> {
    let mut text = format!(
        "director: {{ interface: eth0 }}\nservices:\n  - name: selftest\n    vip: {VIP}\n    port: 80\n    protocol: tcp\n    \
         scheduler: wlc\n    real_servers:\n"
    );
    let mut macs = HashMap::new();
    for rs in REAL_SERVERS {
        text += &format!("      - {{ address: {} }}\n", rs.addr);
        macs.insert(IpAddr::V4(rs.addr), rs.mac);
    }
    text += &format!("  - name: selftest6\n    vip: \"{VIP6}\"\n    port: 80\n    protocol: tcp\n    scheduler: wlc\n    real_servers:\n");
    for rs in REAL_SERVERS {
        text += &format!("      - {{ address: \"{}\" }}\n", v6_of(rs.addr));
        macs.insert(IpAddr::V6(v6_of(rs.addr)), rs.mac);
    }
    let config = Config::parse(std::path::Path::new("selftest.yaml"), &text).map_err(|e| anyhow!("selftest config: {e}"))?;
    Ok((config, macs))
}

/// What one XDP mode did.
#[derive(Debug)]
pub struct ModeResult {
    pub mode: XdpMode,
    pub ok: usize,
    pub per_server: Vec<usize>,
    /// The same over IPv6.
    pub ok6: usize,
    pub per_server6: Vec<usize>,
    pub scheduled: u64,
    pub forwarded: u64,
}

/// Builds the lab, checks that the VIP does not answer without drlb, then for each mode
/// attaches the balancer, sends [`REQUESTS`] requests through the VIP and requires every
/// one answered, every real server used and the XDP program's counters to show the
/// traffic. The lab is removed before returning, whatever happened.
pub fn run(modes: &[XdpMode]) -> Result<Vec<ModeResult>> {
    let started = Instant::now();
    let lab = SelfLab::build().context("building the self-contained lab")?;
    let (ok, _, _) = lab.requests(1)?;
    ensure!(ok == 0, "the VIP answered before drlb was attached: the lab is not isolated");

    let (config, macs) = lab_config()?;
    let mut dp = Dataplane::load_for(65_536, DIRECTOR.mac).context("loading the dataplane")?;
    dp.apply(&crate::control::tables::build(&config, &macs, DIRECTOR.mac)?)?;
    let mut tools = Tools::load(1).context("loading the XDP_PASS program for the veth peer")?;
    let mut results = Vec::new();
    for &mode in modes {
        let before = dp.counters()?;
        // Native XDP_TX on a veth needs an XDP program on the peer, and the client's
        // checksums finished in software.
        let peer = if mode == XdpMode::Native {
            lab.client.run(|| tx_checksum_off("eth0"))?;
            Some(lab.bridge.run(|| tools.attach(PROGRAM_PASS, "vdirector", XdpMode::Native))?.0)
        } else {
            None
        };
        let link = lab.director.run(|| dp.attach(PROGRAM_LB, "eth0", mode))?.0;
        let (ok, per_server, first_error) = lab.requests(REQUESTS)?;
        let (ok6, per_server6, first_error6) = lab.requests_to(VIP6.into(), REQUESTS)?;
        let after = dp.counters()?;
        lab.director.run(|| dp.detach(PROGRAM_LB, link))?;
        if let Some(peer) = peer {
            lab.bridge.run(|| tools.detach(PROGRAM_PASS, peer))?;
        }
        let delta = |s: Verdict| after[s.index() as usize] - before[s.index() as usize];
        let r = ModeResult { mode, ok, per_server, ok6, per_server6, scheduled: delta(Verdict::TxScheduled), forwarded: delta(Verdict::TxForwarded) };
        if ok != REQUESTS {
            bail!(
                "{mode:?} mode: {ok}/{REQUESTS} requests through VIP {VIP} answered (first error: {}); counters: {} scheduled, {} forwarded",
                first_error.unwrap_or_default(),
                r.scheduled,
                r.forwarded
            );
        }
        ensure!(r.per_server.iter().all(|&n| n > 0), "{mode:?} mode: not every real server answered: {:?}", r.per_server);
        ensure!(
            ok6 == REQUESTS,
            "{mode:?} mode: {ok6}/{REQUESTS} requests through VIP {VIP6} answered (first error: {})",
            first_error6.unwrap_or_default()
        );
        ensure!(r.per_server6.iter().all(|&n| n > 0), "{mode:?} mode: not every real server answered over IPv6: {:?}", r.per_server6);
        ensure!(
            r.scheduled >= 2 * REQUESTS as u64 && r.forwarded > 0,
            "{mode:?} mode: answers came, but drlb's counters saw {} new connections and {} forwarded packets",
            r.scheduled,
            r.forwarded
        );
        results.push(r);
    }
    drop(dp);
    drop(lab);
    tracing::debug!("selftest lab took {:?}", started.elapsed());
    Ok(results)
}

/// One line per mode for `drlb selftest --lab`.
pub fn summary(results: &[ModeResult]) -> String {
    results
        .iter()
        .map(|r| {
            let shares: Vec<String> =
                REAL_SERVERS.iter().zip(&r.per_server).map(|(h, n)| format!("{}={n}", h.role)).collect();
            format!(
                "selftest lab: {} mode: {}/{REQUESTS} HTTP requests through VIP {VIP} answered ({}); IPv6: {}/{REQUESTS} through VIP {VIP6} ({}); {} connections scheduled, {} packets forwarded by XDP",
                format!("{:?}", r.mode).to_lowercase(),
                r.ok,
                shares.join(" "),
                r.ok6,
                REAL_SERVERS.iter().zip(&r.per_server6).map(|(h, n)| format!("{}={n}", h.role)).collect::<Vec<_>>().join(" "),
                r.scheduled,
                r.forwarded
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
