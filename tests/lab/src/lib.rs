//! The test lab: client, director and two nginx real servers joined by a bridge in its
//! own namespace, all addresses in 198.18.0.0/15. Used by `cargo xtask demo` (the
//! `drlb-lab` binary) and the integration tests; not part of what operators install. Everything it creates is removed on drop, and labs left behind by a
//! killed run are removed by the next one.
//!
//! ```text
//!   client 198.18.0.10 ─┐
//!   director 198.18.0.2 ├─ br0 (bridge namespace)
//!     + VIP 198.18.0.100│
//!   rs1 198.18.0.11 ────┤   real servers: VIP on lo,
//!   rs2 198.18.0.12 ────┘   arp_ignore=1, arp_announce=2
//! ```

use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::xdp::XdpLinkId;

use lb_userspace::control::config::XdpMode;

pub mod flood;
pub mod ecmp;
pub mod ha;
use lb_userspace::kernel::bpf::{Tools, PROGRAM_PASS};
pub use lb_userspace::selftest::netns::*;
/// The reason counter `name` in the last `counters:` line of drlb's log (0 if absent).
pub fn counter(log: &str, name: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("counters:"))
        .last()
        .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A second port the real servers answer on (the ECMP lab's persistent service).
pub const STICKY_PORT: u16 = 8080;

/// Bytes of the real servers' `/big` response.
pub const BIG_RESPONSE: usize = 256 * 1024;
/// The router of [`Lab::add_far_client`] on the lab's segment.
pub const ROUTER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The far client of [`Lab::add_far_client`].
pub const FAR_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const FAR_CLIENT_ADDR6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);

/// What a batch of HTTP requests to the VIP got.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    /// Answers per real server role, in ALL_REAL_SERVERS order.
    pub per_server: [usize; 3],
    pub first_error: Option<String>,
}

/// What a load run saw.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: usize,
    pub per_server: [usize; 3],
    /// (time since the load started, which server answered), per success.
    pub answers: Vec<(Duration, usize)>,
    /// (time since the load started when the request failed, error), per failed request.
    pub failures: Vec<(Duration, String)>,
}

impl LoadReport {
    /// Failures at or after `t` (since the load started).
    pub fn failures_after(&self, t: Duration) -> Vec<&(Duration, String)> {
        self.failures.iter().filter(|(at, _)| *at >= t).collect()
    }
}

/// A load in progress.
pub struct Load {
    pub started: Instant,
    handles: Vec<std::thread::JoinHandle<Result<LoadReport>>>,
}

impl Load {
    /// Waits for the load's end and merges what every worker saw.
    pub fn finish(self) -> Result<LoadReport> {
        let mut all = LoadReport::default();
        for h in self.handles {
            let r = h.join().map_err(|_| anyhow!("a load worker panicked"))??;
            all.ok += r.ok;
            for i in 0..3 {
                all.per_server[i] += r.per_server[i];
            }
            all.answers.extend(r.answers);
            all.failures.extend(r.failures);
        }
        all.answers.sort_by_key(|a| a.0);
        all.failures.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}

/// A running lab; dropping it tears everything down.
pub struct Lab {
    tag: String,
    pub dir: PathBuf,
    pub mode: XdpMode,
    rs_count: usize,
    bpffs_mounted: bool,
    children: Vec<(String, Child)>,
    drlb: Option<Child>,
    /// Holds the XDP_PASS program on the directors' bridge-side veths (native mode).
    peer_pass: Option<(Tools, Vec<XdpLinkId>)>,
    /// How many directors (ALL_DIRECTORS' first ones). With more than one the VIP is not
    /// the lab's to place: keepalived's (`build_pair`) or the routers' (`build_ecmp`).
    directors: usize,
    namespaces: Vec<String>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.tag)
    }

    /// Builds the topology with two real servers and starts nginx on them. `mode` decides
    /// the native-mode extras (XDP_PASS on the peer veth, client tx checksum offload off).
    pub fn build(mode: XdpMode) -> Result<Lab> {
        Self::build_with(mode, 2)
    }

    /// [`Lab::build`] with 1 to 3 real servers.
    pub fn build_with(mode: XdpMode, real_servers: usize) -> Result<Lab> {
        Self::build_inner(mode, real_servers, 1)
    }

    fn build_inner(mode: XdpMode, real_servers: usize, directors: usize) -> Result<Lab> {
        assert!((1..=ALL_DIRECTORS.len()).contains(&directors));
        assert!((1..=ALL_REAL_SERVERS.len()).contains(&real_servers));
        remove_stale_labs();
        let tag = format!("{NS_PREFIX}{}-{}", std::process::id(), LAB_COUNTER.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(&tag);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            tag,
            dir,
            mode,
            rs_count: real_servers,
            bpffs_mounted: false,
            children: Vec::new(),
            drlb: None,
            peer_pass: None,
            directors,
            namespaces: Vec::new(),
        };
        // drlb pins its dataplane here: `ip netns exec` remounts /sys, so /sys/fs/bpf is not
        // shared with the namespace view; a bpffs of the lab's own is, and goes with the lab.
        for root in lab.pin_roots() {
            fs::create_dir_all(&root)?;
            sh("mount", &["-t", "bpf", "bpf", &root.to_string_lossy()])?;
            lab.bpffs_mounted = true;
        }
        lab.create_topology()?;
        for rs in lab.real_servers().to_vec() {
            lab.start_nginx(&rs)?;
        }
        for rs in lab.real_servers().to_vec() {
            lab.wait_for_tcp(rs.addr, 80, Duration::from_secs(10))
                .with_context(|| format!("nginx on {} did not come up; see {}", rs.role, lab.dir.join(rs.role).display()))?;
        }
        Ok(lab)
    }

    /// The running `drlb run`'s process id (its launcher execs it: the same process).
    pub fn drlb_pid(&self) -> Option<u32> {
        self.drlb.as_ref().map(|c| c.id())
    }

    /// The lab's working directory (configs, logs, captures).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lab's own bpffs, used as drlb's `director.pin_root`.
    pub fn pin_root(&self) -> PathBuf {
        self.director_pin_root("director")
    }

    /// Every director's pin root (each director has a bpffs of its own).
    pub fn pin_roots(&self) -> Vec<PathBuf> {
        self.directors().iter().map(|d| self.director_pin_root(d.role)).collect()
    }

    /// `role`'s pin root: `bpffs` for `director`, `bpffsK` for `directorK`.
    pub fn director_pin_root(&self, role: &str) -> PathBuf {
        self.dir.join(format!("bpffs{}", role.strip_prefix("director").unwrap_or(role)))
    }

    /// This lab's directors.
    pub fn directors(&self) -> &'static [Host] {
        &ALL_DIRECTORS[..self.directors]
    }

    /// This lab's real servers.
    pub fn real_servers(&self) -> &'static [Host] {
        &ALL_REAL_SERVERS[..self.rs_count]
    }

    fn add_ns(&mut self, role: &str) -> Result<String> {
        let ns = self.ns(role);
        sh("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn create_topology(&mut self) -> Result<()> {
        let br = self.add_ns("br")?;
        sh("ip", &["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        let directors = self.directors();
        let hosts: Vec<Host> = [CLIENT].iter().chain(directors).chain(self.real_servers()).copied().collect();
        for host in &hosts {
            let ns = self.add_ns(host.role)?;
            let peer = format!("v{}", host.role);
            sh("ip", &["-n", &br, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            sh("ip", &["-n", &br, "link", "set", &peer, "master", "br0", "up"])?;
            let mac = lb_userspace::kernel::mac::format_mac(&host.mac);
            sh("ip", &["-n", &ns, "link", "set", "eth0", "address", &mac])?;
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/{PREFIX}", host.addr), "dev", "eth0"])?;
            // IPv6 beside IPv4, without duplicate address detection: the lab's addresses are
            // unique by construction, and DAD would hold each for a second or more.
            sh("ip", &["-n", &ns, "addr", "add", &format!("{}/{PREFIX6}", v6_of(host.addr)), "dev", "eth0", "nodad"])?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        sh("ip", &["-n", &self.ns("client"), "addr", "add", &format!("{CLIENT2_ADDR}/{PREFIX}"), "dev", "eth0"])?;
        // The director owns the VIP, as keepalived would configure it.
        if self.directors == 1 {
            sh("ip", &["-n", &self.ns("director"), "addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
            sh("ip", &["-n", &self.ns("director"), "addr", "add", &format!("{VIP6}/128"), "dev", "eth0", "nodad"])?;
        }
        for rs in self.real_servers() {
            let ns = self.ns(rs.role);
            sh("ip", &["-n", &ns, "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            // IPv6 needs no arp_ignore: Linux answers neighbour solicitations only for
            // addresses of the interface they arrive on, and the VIP is on lo.
            sh("ip", &["-n", &ns, "addr", "add", &format!("{VIP6}/128"), "dev", "lo"])?;
            for (key, value) in [
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.lo.arp_ignore", "1"),
                ("net.ipv4.conf.lo.arp_announce", "2"),
                ("net.ipv4.conf.eth0.arp_ignore", "1"),
                ("net.ipv4.conf.eth0.arp_announce", "2"),
            ] {
                sh("ip", &["netns", "exec", &ns, "sysctl", "-qw", &format!("{key}={value}")])?;
            }
        }
        if self.mode == XdpMode::Native {
            // veth checksum offload leaves TCP checksums to be finished by the receiver's
            // stack, which XDP_TX bypasses: compute them at the client instead.
            in_netns(&self.ns("client"), || tx_checksum_off("eth0"))?;
            // Native XDP_TX on a veth needs an XDP program on its peer.
            let mut tools = Tools::load(1)?;
            let mut links = Vec::new();
            for d in directors {
                let peer = format!("v{}", d.role);
                links.push(in_netns(&br, || Ok(tools.attach(PROGRAM_PASS, &peer, XdpMode::Native)?.0))?);
            }
            self.peer_pass = Some((tools, links));
        }
        Ok(())
    }

    /// Stops a real server's nginx (the server itself stays up: ARP, ping).
    pub fn stop_nginx(&mut self, role: &str) -> Result<()> {
        let child = self.take_child(&format!("nginx {role}"))?;
        stop_child(child, Duration::from_secs(5))
    }

    /// The running child process the lab named `name` ("nginx rs1", "keepalived director"),
    /// no longer the lab's to stop.
    pub(crate) fn take_child(&mut self, name: &str) -> Result<Child> {
        let i = self.children.iter().position(|(n, _)| *n == name).ok_or_else(|| anyhow!("no {name} running"))?;
        Ok(self.children.remove(i).1)
    }

    /// Starts a real server's nginx again and waits until it accepts connections.
    pub fn restart_nginx(&mut self, role: &str) -> Result<()> {
        let rs = *ALL_REAL_SERVERS.iter().find(|h| h.role == role).ok_or_else(|| anyhow!("no real server {role}"))?;
        self.start_nginx(&rs)?;
        self.wait_for_tcp(rs.addr, 80, Duration::from_secs(10))
    }

    /// Makes a real server's `/health` answer 503 (or 200 again), port 80 staying open.
    pub fn set_unhealthy(&self, role: &str, unhealthy: bool) -> Result<()> {
        let flag = self.dir.join(role).join("unhealthy");
        if unhealthy {
            fs::write(&flag, "")?;
        } else if flag.exists() {
            fs::remove_file(&flag)?;
        }
        Ok(())
    }

    /// Sends SIGHUP to the running drlb (a reload without `drlb reload`'s validation).
    pub fn sighup_drlb(&self, config_text: &str) -> Result<()> {
        fs::write(self.dir.join("drlb.yaml"), self.with_pin_root(config_text))?;
        let child = self.drlb.as_ref().ok_or_else(|| anyhow!("drlb is not running"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGHUP)?;
        Ok(())
    }

    /// Waits until drlb's log contains `needle` after byte `from`; returns when it appeared.
    pub fn wait_for_log(&self, needle: &str, from: usize, limit: Duration) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let text = fs::read_to_string(self.dir.join("drlb.log")).unwrap_or_default();
            if text.get(from..).is_some_and(|t| t.contains(needle)) {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("`{needle}` not in drlb's log within {limit:?}:\n{}", text.get(from..).unwrap_or(""));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Current length of drlb's log, to wait for what comes after.
    pub fn log_len(&self) -> usize {
        fs::read_to_string(self.dir.join("drlb.log")).map(|t| t.len()).unwrap_or(0)
    }

    fn start_nginx(&mut self, rs: &Host) -> Result<()> {
        let dir = self.dir.join(rs.role);
        fs::create_dir_all(&dir)?;
        // A response far larger than any MTU, for path MTU discovery through the director.
        fs::write(dir.join("big"), vec![b'x'; BIG_RESPONSE])?;
        let conf = dir.join("nginx.conf");
        fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nworker_rlimit_nofile 4096;\nevents {{ worker_connections 2048; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d};\n  default_type text/plain;\n\
                 keepalive_timeout 300s;\n  keepalive_requests 100000;\n\
                 server {{ listen 80; listen [::]:80; listen {STICKY_PORT};\n    location /health {{ if (-f {d}/unhealthy) {{ return 503 \"sick\\n\"; }} return 200 \"ok\\n\"; }}\n\
                 location = /big {{ root {d}; }}\n\
                 location / {{ return 200 \"{role}\\n\"; }} }}\n}}\n",
                d = dir.display(),
                role = rs.role,
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(rs.role), "nginx", "-e", &dir.join("error.log").to_string_lossy()])
            .args(["-c", &conf.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("starting nginx (is it installed? `cargo xtask setup` installs it)")?;
        self.children.push((format!("nginx {}", rs.role), child));
        Ok(())
    }

    fn wait_for_tcp(&self, addr: Ipv4Addr, port: u16, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        in_netns(&self.ns("client"), || loop {
            match TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => bail!("{addr}:{port} not reachable: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        })
    }

    /// The drlb config for this lab: service `web` on VIP:80/tcp over both real servers.
    pub fn drlb_config(&self) -> String {
        let mode = match self.mode {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
            XdpMode::Auto => "auto",
        };
        let mut servers = String::new();
        for rs in self.real_servers() {
            servers += &format!("      - {{ address: {}, weight: 1 }}\n", rs.addr);
        }
        format!(
            "director:\n  interface: eth0\n  xdp_mode: {mode}\n  pin_root: {}\nservices:\n  - name: web\n    vip: {VIP}\n    port: 80\n    \
             protocol: tcp\n    scheduler: wlc\n    real_servers:\n{servers}",
            self.pin_root().display()
        )
    }

    /// [`Lab::drlb_config`] with a second service, `web6`: the IPv6 VIP on port 80 over the
    /// real servers' IPv6 addresses.
    pub fn drlb_config_dual(&self) -> String {
        let mut servers = String::new();
        for rs in self.real_servers() {
            servers += &format!("      - {{ address: \"{}\", weight: 1 }}\n", v6_of(rs.addr));
        }
        format!(
            "{}  - name: web6\n    vip: \"{VIP6}\"\n    port: 80\n    protocol: tcp\n    scheduler: wlc\n    real_servers:\n{servers}",
            self.drlb_config()
        )
    }

    /// [`Lab::drlb_config`] with `health_check: {check}` on the service (`check` is the
    /// flow mapping's content, e.g. `type: tcp, port: 80, interval: 300ms`).
    pub fn drlb_config_with_check(&self, check: &str) -> String {
        self.drlb_config().replace("    scheduler: wlc\n", &format!("    scheduler: wlc\n    health_check: {{ {check} }}\n"))
    }

    /// Starts `drlb run` with [`Lab::drlb_config`] in the director namespace; returns once
    /// it logs that it is ready.
    pub fn start_drlb(&mut self, drlb: &Path) -> Result<()> {
        let config = self.drlb_config();
        self.start_drlb_with(drlb, &config)
    }

    /// Starts `drlb run` with the given config text; returns once it is ready, or fails
    /// with its log if it exits first.
    pub fn start_drlb_with(&mut self, drlb: &Path, config_text: &str) -> Result<()> {
        self.start_drlb_env(drlb, config_text, &[])
    }

    /// [`Lab::start_drlb_with`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_drlb_env(&mut self, drlb: &Path, config_text: &str, env: &[(&str, &str)]) -> Result<()> {
        let text = self.with_pin_root(config_text);
        self.start_drlb_as(drlb, &text, Launch::NetnsExec, env)
    }

    /// Starts `drlb run` with `config_text` exactly as given (no lab pin root added),
    /// launched as `launch` says.
    pub fn start_drlb_as(&mut self, drlb: &Path, config_text: &str, launch: Launch, env: &[(&str, &str)]) -> Result<()> {
        let config = self.dir.join("drlb.yaml");
        fs::write(&config, config_text)?;
        let log = self.dir.join("drlb.log");
        let ns_path = format!("/run/netns/{}", self.ns("director"));
        let mut cmd = match launch {
            Launch::NetnsExec => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns("director")]).arg(drlb);
                c
            }
            Launch::FreshBpffs => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount -t bpf bpf /sys/fs/bpf && exec nsenter --net="$1" "$2" run --config "$3""#)
                    .args(["sh", &ns_path])
                    .arg(drlb);
                c
            }
            Launch::Setpriv { uid, caps } => {
                for path in [self.pin_root(), self.dir.clone()] {
                    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).with_context(|| format!("chown {}", path.display()))?;
                }
                fs::create_dir_all("/run/drlb")?;
                let list = setpriv_caps(caps);
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns("director"), "sh", "-c"])
                    .arg(format!(
                        "mount -t tmpfs -o mode=0755,uid={uid},gid={uid} drlb-run /run/drlb && exec setpriv --reuid={uid} --regid={uid} \
                         --clear-groups --inh-caps={list} --ambient-caps={list} --bounding-set={list} -- \"$0\" run --config \"$1\""
                    ))
                    .arg(drlb);
                c
            }
        };
        if launch == Launch::NetnsExec {
            cmd.args(["run", "--config"]);
        }
        let child = cmd
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(self.dir.join("drlb.stdout"))?)
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", drlb.display()))?;
        self.drlb = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            if text.contains("ready:") {
                return Ok(());
            }
            if let Some(status) = self.drlb.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.drlb = None;
                bail!("drlb exited ({status}) before it was ready:\n{text}");
            }
            if Instant::now() > deadline {
                bail!("drlb not ready after 20 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rewrites drlb's config and runs `drlb reload`; returns once drlb logs the outcome
    /// (`reloaded` or `reload rejected`), with the log lines since the reload.
    pub fn reload_drlb(&mut self, drlb: &Path, config_text: &str) -> Result<String> {
        let log = self.dir.join("drlb.log");
        let before = fs::read_to_string(&log).unwrap_or_default().len();
        fs::write(self.dir.join("drlb.yaml"), self.with_pin_root(config_text))?;
        let out = Command::new(drlb).args(["reload", "--config"]).arg(self.dir.join("drlb.yaml")).output()?;
        if !out.status.success() {
            bail!("drlb reload failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let new = text.get(before..).unwrap_or("").to_string();
            if new.contains("reloaded ") || new.contains("reload rejected") || new.contains("reload failed") {
                return Ok(new);
            }
            if Instant::now() > deadline {
                bail!("drlb did not report the reload within 10 s:\n{new}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Adds `pin_root: <the lab's bpffs>` to a block-style `director:` section without one.
    pub fn with_pin_root(&self, config_text: &str) -> String {
        if config_text.contains("pin_root:") {
            return config_text.to_string();
        }
        config_text.replacen("director:\n", &format!("director:\n  pin_root: {}\n", self.pin_root().display()), 1)
    }

    /// Makes one more request on each of `held` connections; returns who answered.
    pub fn requests_on(&self, held: &mut [TcpStream]) -> Result<Vec<usize>> {
        held.iter_mut()
            .map(|s| {
                let body = keepalive_request(s)?;
                ALL_REAL_SERVERS.iter().position(|rs| body.trim() == rs.role).ok_or_else(|| anyhow!("unexpected body {body:?}"))
            })
            .collect()
    }

    /// Kills drlb with SIGKILL, as a crash would: nothing of it runs any more, but what it
    /// pinned stays.
    pub fn kill_drlb(&mut self) -> Result<String> {
        if let Some(mut child) = self.drlb.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(fs::read_to_string(self.dir.join("drlb.log")).unwrap_or_default())
    }

    /// Runs `drlb` with `args` and this lab's config in the director namespace (status,
    /// stop...), returning its stdout; fails with its stderr.
    pub fn drlb_cli(&self, drlb: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("director")])
            .arg(drlb)
            .args(args)
            .arg("--config")
            .arg(self.dir.join("drlb.yaml"))
            .output()?;
        if !out.status.success() {
            bail!("drlb {} failed: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a bounded load: `workers` threads in the client namespace making short HTTP
    /// requests to the VIP (a new connection each) for `duration`, each worker pausing 2 ms
    /// between requests. The pause keeps a run from cycling through the client's ephemeral
    /// ports: a reused 4-tuple would meet the real server's TIME_WAIT from the previous
    /// connection, a failure of the test's making rather than the balancer's.
    pub fn start_load(&self, duration: Duration, workers: usize) -> Load {
        let ns = self.ns("client");
        let started = Instant::now();
        let handles = (0..workers)
            .map(|_| {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    in_netns(&ns, || {
                        let mut r = LoadReport::default();
                        while started.elapsed() < duration {
                            let at = started.elapsed();
                            match http_get(VIP, Duration::from_secs(2)) {
                                Ok(body) => match ALL_REAL_SERVERS.iter().position(|rs| body.trim() == rs.role) {
                                    Some(i) => {
                                        r.ok += 1;
                                        r.per_server[i] += 1;
                                        r.answers.push((at, i));
                                    }
                                    None => r.failures.push((started.elapsed(), format!("unexpected body {body:?}"))),
                                },
                                // When it failed: a request in flight when a server stops
                                // fails after the stop, though it was sent before.
                                Err(e) => r.failures.push((started.elapsed(), format!("{e:#}"))),
                            }
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Ok(r)
                    })
                })
            })
            .collect();
        Load { started, handles }
    }

    /// Stops drlb with SIGTERM (it detaches and logs its counters) and returns its log.
    pub fn stop_drlb(&mut self) -> Result<String> {
        if let Some(child) = self.drlb.take() {
            stop_child(child, Duration::from_secs(10))?;
        }
        Ok(fs::read_to_string(self.dir.join("drlb.log")).unwrap_or_default())
    }

    /// `n` sequential HTTP/1.0 GETs to the VIP from the client, each on a new connection.
    pub fn http_requests(&self, n: usize, timeout: Duration) -> Result<Tally> {
        self.http_requests_to(VIP.into(), n, timeout)
    }

    /// [`Lab::http_requests`] to another address (the IPv6 VIP).
    pub fn http_requests_to(&self, vip: std::net::IpAddr, n: usize, timeout: Duration) -> Result<Tally> {
        self.http_requests_from("client", SocketAddr::new(vip, 80), n, timeout)
    }

    /// `n` sequential HTTP/1.0 GETs to `to` from `role`'s namespace, each on a new connection.
    pub fn http_requests_from(&self, role: &str, to: SocketAddr, n: usize, timeout: Duration) -> Result<Tally> {
        in_netns(&self.ns(role), || {
            let mut t = Tally::default();
            for _ in 0..n {
                match http_get_at(to, timeout) {
                    Ok(body) => match ALL_REAL_SERVERS.iter().position(|rs| body.trim() == rs.role) {
                        Some(i) => {
                            t.ok += 1;
                            t.per_server[i] += 1;
                        }
                        None => {
                            t.failed += 1;
                            t.first_error.get_or_insert(format!("unexpected body {body:?}"));
                        }
                    },
                    Err(e) => {
                        t.failed += 1;
                        t.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            Ok(t)
        })
    }

    /// Opens `n` connections to VIP:80 one after the other from `source`, each making one
    /// keep-alive HTTP request; returns which real server (index into ALL_REAL_SERVERS)
    /// answered each. With `hold` the connections stay open (ESTABLISHED: active at the
    /// director) and are returned; otherwise each is closed by the client before the next
    /// opens (its FIN makes it inactive).
    pub fn connections(&self, n: usize, source: impl Into<std::net::IpAddr>, hold: bool) -> Result<(Vec<usize>, Vec<TcpStream>)> {
        self.connections_from("client", n, source, hold)
    }

    /// [`Lab::connections`] from `role`'s namespace (the far client of an ECMP lab).
    pub fn connections_from(&self, role: &str, n: usize, source: impl Into<std::net::IpAddr>, hold: bool) -> Result<(Vec<usize>, Vec<TcpStream>)> {
        let source = source.into();
        // To the VIP of the source's family.
        let vip: std::net::IpAddr = if source.is_ipv4() { VIP.into() } else { VIP6.into() };
        in_netns(&self.ns(role), || {
            let mut answered = Vec::with_capacity(n);
            let mut held = Vec::new();
            for k in 0..n {
                let mut s = connect_from(source, SocketAddr::new(vip, 80), Duration::from_secs(3))
                    .with_context(|| format!("connection {k} of {n} from {source}"))?;
                let body = keepalive_request(&mut s).with_context(|| format!("request on connection {k} of {n}"))?;
                let rs = ALL_REAL_SERVERS
                    .iter()
                    .position(|rs| body.trim() == rs.role)
                    .ok_or_else(|| anyhow!("unexpected body {body:?}"))?;
                answered.push(rs);
                if hold {
                    held.push(s);
                } else {
                    s.shutdown(std::net::Shutdown::Both).ok();
                    drop(s);
                    // Let the FIN reach the director before the next SYN is sent.
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok((answered, held))
        })
    }

    /// Runs a program in `role`'s namespace; returns (success, stdout + stderr).
    pub fn run_in(&self, role: &str, program: &Path, args: &[&str]) -> Result<(bool, String)> {
        let out = Command::new("ip").args(["netns", "exec", &self.ns(role)]).arg(program).args(args).output()?;
        Ok((out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))))
    }

    /// Starts a program in `role`'s namespace with piped stdout and stderr.
    pub fn spawn_in(&self, role: &str, program: &Path, args: &[&str]) -> Result<Child> {
        Ok(Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// Sends one raw Ethernet frame out of `role`'s eth0.
    pub fn send_raw(&self, role: &str, frame: &[u8]) -> Result<()> {
        in_netns(&self.ns(role), || {
            // SAFETY: plain socket calls with valid buffers; the fd is closed below.
            unsafe {
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
                if fd < 0 {
                    bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                }
                let ifindex = libc::if_nametoindex(c"eth0".as_ptr());
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = ifindex as i32;
                addr.sll_halen = 6;
                let n = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                libc::close(fd);
                if n < 0 {
                    bail!("sending a raw frame: {}", std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }

    /// `GET path` from inside `role`'s namespace (e.g. the director's metrics on loopback).
    pub fn fetch(&self, role: &str, addr: SocketAddr, path: &str) -> Result<String> {
        in_netns(&self.ns(role), || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connect {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", addr.ip()).as_bytes())?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            let (_, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no HTTP response"))?;
            Ok(body.to_string())
        })
    }

    /// Adds a client behind a router, whose link toward that client has a smaller MTU
    /// (`mtu4` for IPv4, `mtu6` for IPv6 traffic, on two links), as a client behind a VPN or
    /// a PPPoE line is:
    ///
    /// ```text
    ///   far 198.18.1.10 / 2001:db8:1::10 (MTU 1500) ── router (MTU mtu4/mtu6 toward far) ── br0
    ///       router on br0: 198.18.0.1 / 2001:db8::1
    /// ```
    ///
    /// The far client's MSS says 1460, so a real server sends full-size segments; the
    /// router cannot forward them and sends "fragmentation needed" / "packet too big" to
    /// their source, the VIP, which is the director. Only if the director passes that on to
    /// the real server does the download finish.
    pub fn add_far_client(&mut self, mtu4: u32, mtu6: u32) -> Result<()> {
        let router = self.add_ns("router")?;
        let far = self.add_ns("far")?;
        let br = self.ns("br");
        sh("ip", &["-n", &br, "link", "add", "vrouter", "type", "veth", "peer", "name", "eth0", "netns", &router])?;
        sh("ip", &["-n", &br, "link", "set", "vrouter", "master", "br0", "up"])?;
        sh("ip", &["-n", &router, "addr", "add", &format!("{ROUTER_ADDR}/{PREFIX}"), "dev", "eth0"])?;
        sh("ip", &["-n", &router, "addr", "add", &format!("{}/{PREFIX6}", v6_of(ROUTER_ADDR)), "dev", "eth0", "nodad"])?;
        sh("ip", &["-n", &router, "link", "set", "eth0", "up"])?;
        // Two links to the far client: one carries its IPv4, the other its IPv6, each with its
        // own MTU on the router's side.
        for (link, mtu, v4, v6) in [("eth1", mtu4, true, false), ("eth2", mtu6, false, true)] {
            sh("ip", &["-n", &router, "link", "add", link, "type", "veth", "peer", "name", link, "netns", &far])?;
            sh("ip", &["-n", &router, "link", "set", link, "mtu", &mtu.to_string(), "up"])?;
            sh("ip", &["-n", &far, "link", "set", link, "up"])?;
            if v4 {
                sh("ip", &["-n", &router, "addr", "add", "198.18.1.1/24", "dev", link])?;
                sh("ip", &["-n", &far, "addr", "add", &format!("{FAR_CLIENT_ADDR}/24"), "dev", link])?;
                sh("ip", &["-n", &far, "route", "add", "default", "via", "198.18.1.1"])?;
            }
            if v6 {
                sh("ip", &["-n", &router, "addr", "add", "2001:db8:1::1/64", "dev", link, "nodad"])?;
                sh("ip", &["-n", &far, "addr", "add", &format!("{FAR_CLIENT_ADDR6}/64"), "dev", link, "nodad"])?;
                sh("ip", &["-n", &far, "-6", "route", "add", "default", "via", "2001:db8:1::1"])?;
            }
            // The far client computes its checksums (see `create_topology`).
            in_netns(&far, || tx_checksum_off(link))?;
        }
        for (key, value) in [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")] {
            sh("ip", &["netns", "exec", &router, "sysctl", "-qw", &format!("{key}={value}")])?;
        }
        for rs in self.real_servers() {
            let ns = self.ns(rs.role);
            sh("ip", &["-n", &ns, "route", "add", "198.18.1.0/24", "via", &ROUTER_ADDR.to_string()])?;
            sh("ip", &["-n", &ns, "-6", "route", "add", "2001:db8:1::/64", "via", &v6_of(ROUTER_ADDR).to_string()])?;
        }
        Ok(())
    }

    /// Pings the director's own address from the client.
    pub fn ping_director(&self) -> Result<()> {
        sh("ip", &["netns", "exec", &self.ns("client"), "ping", "-c", "1", "-W", "2", &DIRECTOR_ADDR.to_string()])
            .map(|_| ())
    }

    /// Starts a capture of every frame on `role`'s eth0 into a pcap file at `out`; stop it
    /// with [`PcapCapture::finish`].
    pub fn capture_pcap(&self, role: &str, out: &Path) -> Result<PcapCapture> {
        PcapCapture::start(&self.ns(role), out)
    }

    /// Starts a capture in `role`'s namespace; stop it with [`Capture::finish`].
    pub fn capture(&self, role: &str, filter: &str) -> Result<Capture> {
        Capture::start(&self.ns(role), &self.dir.join(format!("capture-{role}.txt")), filter)
    }

    fn teardown(&mut self) {
        if let Some(child) = self.drlb.take() {
            let _ = stop_child(child, Duration::from_secs(5));
        }
        for (_, child) in self.children.drain(..) {
            let _ = stop_child(child, Duration::from_secs(5));
        }
        self.peer_pass = None;
        for ns in self.namespaces.drain(..).rev() {
            delete_namespace(&ns);
        }
        // A controller killed on purpose (hitless-restart tests) leaves its pidfile.
        for root in self.pin_roots() {
            let _ = fs::remove_file(lb_userspace::kernel::process::pidfile_path(&root.join("eth0")));
            let _ = fs::remove_file(lb_userspace::observe::state::path(&root.join("eth0")));
            if self.bpffs_mounted {
                // Unmounting drops every pin, and with them anything drlb left attached.
                let _ = sh("umount", &[&root.to_string_lossy()]);
            }
        }
        self.bpffs_mounted = false;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A TCP connection from a chosen local address (the second lab client).
pub fn connect_from(source: impl Into<std::net::IpAddr>, to: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let source = source.into();
    let s = Socket::new(if source.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 }, Type::STREAM, Some(Protocol::TCP))?;
    s.bind(&SocketAddr::from((source, 0)).into()).with_context(|| format!("binding to {source}"))?;
    s.connect_timeout(&to.into(), timeout).context("connect")?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// SIGTERM, then SIGKILL after `grace`.
pub(crate) fn stop_child(mut child: Child, grace: Duration) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait()?;
    Ok(())
}

/// Kills whatever still runs in `ns`, then deletes it (its veths go with it).
fn delete_namespace(ns: &str) {
    if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = sh("ip", &["netns", "delete", ns]);
}

/// Removes namespaces of labs whose creating process is gone (e.g. it was SIGKILLed).
fn remove_stale_labs() {
    let Ok(list) = sh("ip", &["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
            // `drlbPID-N-role` → the lab directory `drlbPID-N`.
            let lab_dir = std::env::temp_dir().join(name.rsplit_once('-').map(|(t, _)| t).unwrap_or(name));
            for root in ALL_DIRECTORS.map(|d| format!("bpffs{}", d.role.strip_prefix("director").unwrap_or(d.role))) {
                let _ = sh("umount", &[&lab_dir.join(&root).to_string_lossy()]);
                let _ = fs::remove_file(lb_userspace::kernel::process::pidfile_path(&lab_dir.join(&root).join("eth0")));
                let _ = fs::remove_file(lb_userspace::observe::state::path(&lab_dir.join(&root).join("eth0")));
            }
            let _ = fs::remove_dir_all(lab_dir);
        }
    }
}

/// How the lab starts `drlb run` in the director's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `ip netns exec`: a mount namespace of its own with a fresh /sys, where nothing is
    /// mounted at /sys/fs/bpf (drlb mounts bpffs there itself).
    NetnsExec,
    /// A mount namespace of its own with an empty BPF filesystem freshly mounted at
    /// /sys/fs/bpf, as a new director has: nothing pinned, no /sys/fs/bpf/drlb yet.
    FreshBpffs,
    /// Through `setpriv` as user and group `uid` (not root) with exactly the capabilities
    /// in the bit mask `caps` (bit N is capability N, as in /proc/PID/status) permitted,
    /// effective, inheritable, ambient and bounding, and nothing else; /run/drlb is a
    /// tmpfs of that user's in a mount namespace of its own, as systemd's
    /// `RuntimeDirectory=drlb` gives the service. The lab's pin root is chowned to it.
    Setpriv { uid: u32, caps: u64 },
}

/// Capability names as setpriv and capabilities(7) spell them (without `cap_`), by number.
pub const CAPABILITY_NAMES: [(u32, &str); 41] = [
    (0, "chown"), (1, "dac_override"), (2, "dac_read_search"), (3, "fowner"), (4, "fsetid"), (5, "kill"), (6, "setgid"),
    (7, "setuid"), (8, "setpcap"), (9, "linux_immutable"), (10, "net_bind_service"), (11, "net_broadcast"),
    (12, "net_admin"), (13, "net_raw"), (14, "ipc_lock"), (15, "ipc_owner"), (16, "sys_module"), (17, "sys_rawio"),
    (18, "sys_chroot"), (19, "sys_ptrace"), (20, "sys_pacct"), (21, "sys_admin"), (22, "sys_boot"), (23, "sys_nice"),
    (24, "sys_resource"), (25, "sys_time"), (26, "sys_tty_config"), (27, "mknod"), (28, "lease"), (29, "audit_write"),
    (30, "audit_control"), (31, "setfcap"), (32, "mac_override"), (33, "mac_admin"), (34, "syslog"), (35, "wake_alarm"),
    (36, "block_suspend"), (37, "audit_read"), (38, "perfmon"), (39, "bpf"), (40, "checkpoint_restore"),
];

/// The bit mask of the named capabilities (`"net_admin"`, or `"CAP_NET_ADMIN"`).
pub fn capability_mask(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            let n = n.to_ascii_lowercase();
            let n = n.strip_prefix("cap_").unwrap_or(&n);
            let bit = CAPABILITY_NAMES.iter().find(|(_, name)| *name == n).unwrap_or_else(|| panic!("unknown capability {n}")).0;
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// setpriv's capability list for `mask`: `-all,+bpf,+net_admin`.
fn setpriv_caps(mask: u64) -> String {
    let mut list = String::from("-all");
    for (bit, name) in CAPABILITY_NAMES {
        if mask & (1 << bit) != 0 {
            list += &format!(",+{name}");
        }
    }
    list
}

/// A tcpdump in a namespace writing whole frames to a pcap file.
pub struct PcapCapture {
    child: Child,
}

impl PcapCapture {
    fn start(ns: &str, out: &Path) -> Result<PcapCapture> {
        let args = ["-s", "0", "--immediate-mode", "-U", "-w", &out.to_string_lossy()];
        let child = start_tcpdump(ns, &args, Stdio::null(), &out.with_extension("err"))?;
        Ok(PcapCapture { child })
    }

    /// Stops the capture; the file is complete when this returns.
    pub fn finish(self) -> Result<()> {
        stop_tcpdump(self.child)
    }
}

/// Starts tcpdump on `ns`'s eth0 with `args`; returns once it listens. Its stderr goes to
/// `err_path`, removed once it started.
fn start_tcpdump(ns: &str, args: &[&str], stdout: Stdio, err_path: &Path) -> Result<Child> {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "tcpdump", "-i", "eth0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(File::create(err_path)?)
        .spawn()
        .context("starting tcpdump (`cargo xtask setup` installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(err_path).unwrap_or_default().contains("listening on") {
        if Instant::now() > deadline {
            bail!("tcpdump did not start: {}", fs::read_to_string(err_path).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(err_path);
    Ok(child)
}

/// Lets tcpdump write what it has, then stops it.
fn stop_tcpdump(child: Child) -> Result<()> {
    std::thread::sleep(Duration::from_millis(300));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
    stop_child(child, Duration::from_secs(5))
}

/// A tcpdump running in a namespace, printing link-level headers.
pub struct Capture {
    child: Child,
    out: PathBuf,
}

impl Capture {
    fn start(ns: &str, out: &Path, filter: &str) -> Result<Capture> {
        let child = start_tcpdump(ns, &["-nn", "-e", "-l", "-U", filter], Stdio::from(File::create(out)?), &out.with_extension("err"))?;
        Ok(Capture { child, out: out.to_owned() })
    }

    /// Stops the capture and returns the source MAC of every captured frame.
    pub fn finish(self) -> Result<Vec<String>> {
        stop_tcpdump(self.child)?;
        let text = fs::read_to_string(&self.out)?;
        // "HH:MM:SS.ffffff SRC_MAC > DST_MAC, ethertype IPv4 ..."
        Ok(text.lines().filter_map(|l| l.split_whitespace().nth(1).map(str::to_string)).collect())
    }
}
