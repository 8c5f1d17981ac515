//! Scale-out: N directors (each with drlb and BIRD) behind a router (BIRD, Linux ECMP with
//! L4 hashing), the far client behind the router:
//!
//! ```text
//!   far 198.18.1.10 ── router ──┐ 198.18.0.1, BGP AS 65000, `merge paths on`,
//!                               │ 5-tuple multipath hash
//!   director  198.18.0.2 ───────┤ br0   drlb (`director.announce`) + BIRD AS 65010
//!   director2 198.18.0.3 ───────┤       (configs/bird-director.conf), connection sync
//!   director3 198.18.0.4 ───────┤       among all of them
//!   rs1, rs2 ───────────────────┘ VIP on lo, replies straight to the router
//! ```
//!
//! The router sends each flow to one director by hash; which VIPs a director announces is
//! drlb's decision, carried by a real BGP speaker to a real router.

use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::*;

/// The router's AS; every director has [`DIRECTOR_AS`] (equal AS paths: one ECMP route).
pub const ROUTER_AS: u32 = 65000;
pub const DIRECTOR_AS: u32 = 65010;
/// The announcement table of the lab's directors (`director.announce.table`).
pub const ANNOUNCE_TABLE: u32 = 100;
/// Sync's refresh period in the lab, and so the warm-up of a director that (re)starts.
pub const LAB_REFRESH: Duration = Duration::from_secs(2);

/// How the lab's directors choose real servers, and whether they sync connections.
#[derive(Debug, Clone, Copy)]
pub struct EcmpSetup {
    /// `wlc`, `mh`, ...
    pub scheduler: &'static str,
    pub sync: bool,
    /// IPVS's `sloppy_tcp`: a director takes up a flow it has no entry for (with `mh`, at
    /// the real server every director would choose).
    pub sloppy_tcp: bool,
}

impl Lab {
    /// `directors` (2 to 4) directors, two real servers, the router and the far client;
    /// BIRD running on the router and on every director. drlb is not started
    /// ([`Lab::start_ecmp_director`]).
    pub fn build_ecmp(mode: XdpMode, directors: usize) -> Result<Lab> {
        let mut lab = Self::build_inner(mode, 2, directors)?;
        lab.add_far_client(1500, 1500)?;
        let router = lab.ns("router");
        // L4 hashing (addresses, protocol, ports), so flows from one client spread over the
        // directors. Policy 1 would do on a router of its own; here the far client's
        // sockets share the kernel, and policy 1 takes the hash a socket put on its packets
        // (which TCP draws anew after a timeout) instead of the packet's 5-tuple. Policy 3
        // with these fields always hashes the 5-tuple, as a router elsewhere does.
        for family in ["ipv4", "ipv6"] {
            for (key, value) in [("fib_multipath_hash_policy", "3"), ("fib_multipath_hash_fields", "0x0037")] {
                sh("ip", &["netns", "exec", &router, "sysctl", "-qw", &format!("net.{family}.{key}={value}")])?;
            }
        }
        let conf = lab.router_bird_config();
        lab.start_bird("router", &conf)?;
        for d in lab.directors().to_vec() {
            let conf = lab.director_bird_config(&d)?;
            lab.start_bird(d.role, &conf)?;
        }
        Ok(lab)
    }

    /// configs/bird-director.conf for director `d`: its router id, the lab's router.
    pub fn director_bird_config(&self, d: &Host) -> Result<String> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/bird-director.conf");
        let text = fs::read_to_string(&shipped).with_context(|| format!("reading {}", shipped.display()))?;
        let text = text
            .replace("router id 192.0.2.11;", &format!("router id {};", d.addr))
            .replace("neighbor 192.0.2.1 as", &format!("neighbor {ROUTER_ADDR} as"))
            .replace("neighbor 2001:db8::1 as", &format!("neighbor {} as", v6_of(ROUTER_ADDR)))
            .replace("kernel table 100;", &format!("kernel table {ANNOUNCE_TABLE};"));
        for needle in [format!("router id {};", d.addr), format!("neighbor {ROUTER_ADDR} as {ROUTER_AS}"), format!("local as {DIRECTOR_AS}")] {
            if !text.contains(&needle) {
                bail!("configs/bird-director.conf changed: the lab no longer finds `{needle}` after its substitutions");
            }
        }
        Ok(text)
    }

    /// The router's BIRD: one BGP session per director and family, every route learnt
    /// installed in the kernel with equal paths merged into one multipath route.
    pub fn router_bird_config(&self) -> String {
        let mut text = format!(
            "router id {ROUTER_ADDR};\nprotocol device {{ }}\n\
             protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}\n\
             protocol kernel {{ merge paths on; ipv6 {{ import none; export all; }}; }}\n\
             template bgp director {{ local as {ROUTER_AS}; hold time 3; keepalive time 1; connect delay time 1; \
             connect retry time 2; error wait time 1, 5; graceful restart off; }}\n"
        );
        for d in self.directors() {
            let name = d.role.replace("director", "d");
            text += &format!(
                "protocol bgp {name}_v4 from director {{ neighbor {} as {DIRECTOR_AS}; ipv4 {{ import where net ~ [ {VIP}/32 ]; export none; }}; }}\n",
                d.addr
            );
            text += &format!(
                "protocol bgp {name}_v6 from director {{ neighbor {} as {DIRECTOR_AS}; ipv6 {{ import where net ~ [ {VIP6}/128 ]; export none; }}; }}\n",
                v6_of(d.addr)
            );
        }
        text
    }

    /// Starts BIRD in `role`'s namespace with `config` (logging to `<role>-bird.log`).
    pub fn start_bird(&mut self, role: &str, config: &str) -> Result<()> {
        let conf = self.dir.join(format!("{role}-bird.conf"));
        fs::write(&conf, format!("log stderr all;\n{config}"))?;
        let socket = self.dir.join(format!("{role}-bird.ctl"));
        let log = File::create(self.dir.join(format!("{role}-bird.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(self.dir.join(format!("{role}-bird.pid")))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting bird (`cargo xtask setup` installs bird2)")?;
        self.children.push((format!("bird {role}"), child));
        Ok(())
    }

    pub fn bird_log(&self, role: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{role}-bird.log"))).unwrap_or_default()
    }

    /// `birdc ARGS` against `role`'s BIRD.
    pub fn birdc(&self, role: &str, args: &[&str]) -> Result<String> {
        let socket = self.dir.join(format!("{role}-bird.ctl"));
        let mut all = vec!["-s", socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        sh("birdc", &all)
    }

    /// The drlb config of ECMP director `role`: the lab's service with `setup`'s scheduler,
    /// a TCP health check, announcements in [`ANNOUNCE_TABLE`], and (with `setup.sync`)
    /// unicast connection sync with every other director.
    pub fn ecmp_config(&self, role: &str, setup: EcmpSetup) -> String {
        let base = self.drlb_config().replace(&self.pin_root().display().to_string(), &self.director_pin_root(role).display().to_string());
        let mut director = format!(
            "director:\n  metrics_listen: 127.0.0.1:9469\n  announce: {{ table: {ANNOUNCE_TABLE}, drain_timeout: 10s }}\n"
        );
        if setup.sync {
            let peers: Vec<String> = self.directors().iter().filter(|d| d.role != role).map(|d| d.addr.to_string()).collect();
            director += &format!(
                "  sync: {{ interface: eth0, syncid: 7, peers: [{}], refresh_period: {}s }}\n",
                peers.join(", "),
                LAB_REFRESH.as_secs()
            );
        }
        let service = format!(
            "    scheduler: {}\n    sloppy_tcp: {}\n    health_check: {{ type: tcp, port: 80, interval: 300ms, timeout: 300ms }}\n",
            setup.scheduler, setup.sloppy_tcp
        );
        let mut config = base.replacen("director:\n", &director, 1).replace("    scheduler: wlc\n", &service);
        if setup.sync {
            // A persistent service beside it: its templates go through sync too.
            let web = config.find("  - name: web\n").expect("the lab's service");
            let sticky = config[web..]
                .replace("name: web", "name: sticky")
                .replace("    port: 80\n", &format!("    port: {STICKY_PORT}\n    persistence_timeout: 120s\n"));
            config.push_str(&sticky);
        }
        config
    }

    /// Starts drlb on ECMP director `role` (ready: attached; it announces after its warm-up).
    pub fn start_ecmp_director(&mut self, role: &str, drlb: &Path, setup: EcmpSetup) -> Result<()> {
        let config = self.ecmp_config(role, setup);
        self.start_director(role, drlb, &config)
    }

    /// Collects the exit of `role`'s drlb, which has ended (`drlb drain`, `drlb stop`).
    pub fn reap_director(&mut self, role: &str) -> Result<std::process::ExitStatus> {
        let mut child = self.take_child(&format!("drlb {role}"))?;
        Ok(child.wait()?)
    }

    /// The next hops the router's kernel has for the VIP now.
    pub fn router_next_hops(&self) -> Vec<Ipv4Addr> {
        next_hops(&self.ns("router"))
    }

    /// Waits until the router's route for the VIP goes through exactly `want`'s directors.
    pub fn wait_for_next_hops(&self, want: &[&str], limit: Duration) -> Result<Duration> {
        let mut wanted: Vec<Ipv4Addr> = self.directors().iter().filter(|d| want.contains(&d.role)).map(|d| d.addr).collect();
        wanted.sort();
        let start = Instant::now();
        loop {
            let now = self.router_next_hops();
            if now == wanted {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self.directors().iter().map(|d| format!("--- {}:\n{}", d.role, self.director_log(d.role))).collect();
                bail!(
                    "the router's next hops for {VIP} are {now:?}, not {wanted:?}, after {limit:?}\n--- router's BIRD:\n{}\n{}\n{}",
                    self.birdc("router", &["show", "protocols"]).unwrap_or_default(),
                    self.bird_log("router"),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// New connections `role`'s dataplane has scheduled (synced ones not counted).
    pub fn director_new_connections(&self, role: &str) -> Result<u64> {
        let status = lb_userspace::observe::status::read(&self.director_pin_root(role).join("eth0"), None)?;
        Ok(status.services.iter().map(|s| s.conns).sum())
    }

    /// Packets `role`'s dataplane has forwarded.
    pub fn director_packets(&self, role: &str) -> u64 {
        lb_userspace::observe::status::read(&self.director_pin_root(role).join("eth0"), None)
            .map(|s| s.services.iter().map(|s| s.in_pkts).sum())
            .unwrap_or(0)
    }

    /// Packets `role`'s dataplane counted under verdict reason `reason` (`pass_other_host`).
    pub fn director_reason(&self, role: &str, reason: &str) -> u64 {
        lb_userspace::observe::status::read(&self.director_pin_root(role).join("eth0"), None)
            .ok()
            .and_then(|s| s.reasons.get(reason).copied())
            .unwrap_or(0)
    }

    /// `role`'s controller state (announcements, sync, table fingerprints).
    pub fn director_state(&self, role: &str) -> Result<lb_userspace::observe::state::ControllerState> {
        let path = lb_userspace::observe::state::path(&self.director_pin_root(role).join("eth0"));
        let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// `n` HTTP/1.0 requests from the far client, each on a new connection.
    pub fn far_requests(&self, n: usize, timeout: Duration) -> Result<Tally> {
        self.far_requests_to(80, n, timeout)
    }

    /// [`Lab::far_requests`] to VIP:`port`.
    pub fn far_requests_to(&self, port: u16, n: usize, timeout: Duration) -> Result<Tally> {
        self.http_requests_from("far", std::net::SocketAddr::from((VIP, port)), n, timeout)
    }

    /// `n` long-lived connections from the far client, each with one request answered.
    pub fn far_connections(&self, n: usize) -> Result<(Vec<usize>, Vec<TcpStream>)> {
        self.connections_from("far", n, FAR_CLIENT_ADDR, true)
    }

    /// One request on every held connection, all at once; how many broke (failed, or answered
    /// by another real server than at first).
    pub fn round(&self, first: &[usize], held: &mut [TcpStream], what: &str) -> Vec<String> {
        let lab = self;
        let packets = |lab: &Lab| lab.directors().iter().map(|d| lab.director_packets(d.role)).collect::<Vec<u64>>();
        let before = packets(lab);
        let answers: Vec<ha::Answer> = lab.requests_concurrently(held, Duration::from_secs(20));
        let bad = broken(first, &answers);
        let slowest = answers.iter().map(|a| a.after).max().unwrap_or_default();
        let after = packets(lab);
        let through: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect();
        println!(
            "{what}: {} of {} connections answered by their real server (slowest {slowest:?}; packets through each director {through:?})",
            first.len() - bad.len(),
            first.len()
        );
        bad
    }

    /// Rounds of requests on every held connection until `done` is set, then one more.
    pub fn rounds_while(&self, first: &[usize], held: &mut [TcpStream], what: &str, work: impl FnOnce() + Send) -> Vec<String> {
        std::thread::scope(|s| {
            // Until the work ends, however it ends: a panic there (a failed expectation)
            // stops the rounds and is raised when the scope joins it.
            let work = s.spawn(work);
            let mut bad = Vec::new();
            let mut n = 0;
            while !work.is_finished() {
                bad.extend(self.round(first, held, &format!("{what}, round {n}")));
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            bad.extend(self.round(first, held, &format!("{what}, after")));
            bad
        })
    }

    /// Makes `role`'s real servers unreachable from the director itself (its health checks
    /// fail; its dataplane still has their MACs), or reachable again.
    pub fn cut_health_checks(&self, role: &str, cut: bool) -> Result<()> {
        for rs in self.real_servers() {
            let verb = if cut { "add" } else { "del" };
            sh("ip", &["-n", &self.ns(role), "route", verb, "prohibit", &format!("{}/32", rs.addr)])?;
        }
        Ok(())
    }
}

/// The next hops the kernel of namespace `router_ns` has for the VIP now.
pub fn next_hops(router_ns: &str) -> Vec<Ipv4Addr> {
    let out = sh("ip", &["-n", router_ns, "-4", "route", "show", &VIP.to_string()]).unwrap_or_default();
    let words: Vec<&str> = out.split_whitespace().collect();
    let mut hops: Vec<Ipv4Addr> = words.windows(2).filter(|w| w[0] == "via").filter_map(|w| w[1].parse().ok()).collect();
    hops.sort();
    hops
}

/// Connections of `held` whose request failed or was answered by another real server than
/// `first` says: broken by a move between directors.
pub fn broken(first: &[usize], answers: &[ha::Answer]) -> Vec<String> {
    first
        .iter()
        .zip(answers)
        .enumerate()
        .filter_map(|(i, (want, got))| match &got.result {
            Ok(rs) if rs == want => None,
            Ok(rs) => Some(format!("connection {i}: answered by {} instead of {}", ALL_REAL_SERVERS[*rs].role, ALL_REAL_SERVERS[*want].role)),
            Err(e) => Some(format!("connection {i}: {e}")),
        })
        .collect()
}
