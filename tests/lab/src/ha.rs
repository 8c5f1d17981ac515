//! Two directors on the lab bridge, keepalived (VRRP only, from Debian) in each one's
//! namespace placing the VIP, and drlb on both with connection sync:
//!
//! ```text
//!   client 198.18.0.10 ─────┐
//!   director  198.18.0.2 ───┤ br0     VIP 198.18.0.100 on whichever is VRRP master
//!   director2 198.18.0.3 ───┤         (keepalived with configs/keepalived-vrrp.conf)
//!   rs1, rs2 ───────────────┘
//! ```

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::*;

/// The directors of a pair, by role.
pub const DIRECTORS: [&str; 2] = ["director", "director2"];

/// What one request on a held connection got after a failover, and when.
#[derive(Debug)]
pub struct Answer {
    /// Index into ALL_REAL_SERVERS, or the error.
    pub result: Result<usize, String>,
    /// When the answer came (or the error), from when the requests were sent.
    pub after: Duration,
}

impl Lab {
    /// Two directors (`director`, `director2`) and two real servers; no VIP placed: that is
    /// keepalived's job ([`Lab::start_keepalived`]).
    pub fn build_pair(mode: XdpMode) -> Result<Lab> {
        Self::build_inner(mode, 2, 2)
    }

    fn config_path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.yaml"))
    }

    pub fn director_log(&self, role: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{role}.log"))).unwrap_or_default()
    }

    /// The pair's drlb config for `role`: the lab's service, with connection sync (IPVS's
    /// defaults: 224.0.0.81:8848, syncid 7) unless `sync` is false.
    pub fn pair_config(&self, role: &str, sync: bool) -> String {
        let base = self.drlb_config().replace(&self.pin_root().display().to_string(), &self.director_pin_root(role).display().to_string());
        let sync = if sync { "  sync: { interface: eth0, syncid: 7 }\n" } else { "" };
        // Metrics on the namespace's own loopback (each director has one).
        base.replacen("director:\n", &format!("director:\n{sync}  metrics_listen: 127.0.0.1:9469\n"), 1)
    }

    /// Starts `drlb run` in `role`'s namespace; returns once it is ready.
    pub fn start_director(&mut self, role: &str, drlb: &Path, config_text: &str) -> Result<()> {
        let config = self.config_path(role);
        fs::write(&config, config_text)?;
        let log = self.dir.join(format!("{role}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .arg(drlb)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", drlb.display()))?;
        self.children.push((format!("drlb {role}"), child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.director_log(role);
            if text.contains("ready:") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("drlb on {role} not ready after 20 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends `drlb` on `role`: SIGKILL (a crash: pins stay) or SIGTERM (it detaches).
    pub fn stop_director(&mut self, role: &str, kill: bool) -> Result<()> {
        let mut child = self.take_child(&format!("drlb {role}"))?;
        if kill {
            child.kill()?;
            child.wait()?;
            Ok(())
        } else {
            stop_child(child, Duration::from_secs(10))
        }
    }

    /// `drlb ARGS --config <role's config>` in `role`'s namespace: its stdout.
    pub fn director_cli(&self, role: &str, drlb: &Path, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .arg(drlb)
            .args(args)
            .arg("--config")
            .arg(self.config_path(role))
            .output()?;
        if !out.status.success() {
            bail!("drlb {} on {role} failed: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `role`'s Prometheus metrics.
    pub fn director_metrics(&self, role: &str) -> Result<String> {
        self.fetch(role, "127.0.0.1:9469".parse()?, "/metrics")
    }

    /// `drlb doctor` on `role`: whether every line is OK, and the report.
    pub fn director_doctor(&self, role: &str, drlb: &Path) -> Result<(bool, String)> {
        let cfg = self.config_path(role);
        self.run_in(role, drlb, &["doctor", "--sample", "1s", "--config", &cfg.to_string_lossy()])
    }

    /// configs/keepalived-vrrp.conf for `role`: the lab's interface and VIP, `drlb ready`
    /// from this build with this role's config; `director` as MASTER (priority 100),
    /// `director2` as BACKUP (90).
    pub fn keepalived_config(&self, role: &str, drlb: &Path) -> Result<String> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/keepalived-vrrp.conf");
        let text = fs::read_to_string(&shipped).with_context(|| format!("reading {}", shipped.display()))?;
        let ready = format!("{} ready --config {}", drlb.display(), self.config_path(role).display());
        let mut text = text
            .replace("enahisic2i0", "eth0")
            .replace("192.168.1.9/24", &format!("{VIP}/32"))
            .replace("/usr/sbin/drlb ready --config /etc/drlb/drlb.yaml", &ready)
            .replace("router_id drlb_director", &format!("router_id drlb_{role}"));
        if role != "director" {
            text = text.replace("state MASTER", "state BACKUP").replace("priority 100", "priority 90");
        }
        Ok(text)
    }

    /// Starts keepalived (VRRP only) in `role`'s namespace.
    pub fn start_keepalived(&mut self, role: &str, drlb: &Path) -> Result<()> {
        let conf = self.dir.join(format!("{role}-keepalived.conf"));
        fs::write(&conf, self.keepalived_config(role, drlb)?)?;
        let pid = |what: &str| self.dir.join(format!("{role}-{what}.pid")).to_string_lossy().into_owned();
        let log = File::create(self.dir.join(format!("{role}-keepalived.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), "keepalived", "--vrrp", "-n", "-l", "-D", "-f"])
            .arg(&conf)
            .args(["-p", &pid("keepalived"), "-r", &pid("vrrp")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (`cargo xtask setup` installs it)")?;
        self.children.push((format!("keepalived {role}"), child));
        Ok(())
    }

    /// Stops keepalived on `role` gracefully (SIGTERM: it sends priority 0 and removes the VIP).
    pub fn stop_keepalived(&mut self, role: &str) -> Result<()> {
        let child = self.take_child(&format!("keepalived {role}"))?;
        stop_child(child, Duration::from_secs(10))
    }

    pub fn keepalived_log(&self, role: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{role}-keepalived.log"))).unwrap_or_default()
    }

    /// Whether `role`'s eth0 holds the VIP now.
    pub fn holds_vip(&self, role: &str) -> bool {
        sh("ip", &["-n", &self.ns(role), "-4", "addr", "show", "dev", "eth0"]).is_ok_and(|out| out.contains(&format!("{VIP}/")))
    }

    /// Waits until `role` holds the VIP and the other director does not; how long it took.
    pub fn wait_for_vip(&self, role: &str, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let other_holds = DIRECTORS.iter().filter(|d| **d != role).any(|d| self.holds_vip(d));
            if self.holds_vip(role) && !other_holds {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "{role} did not take the VIP within {limit:?}; keepalived said:\n{}\n---\n{}",
                    self.keepalived_log("director"),
                    self.keepalived_log("director2")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Takes `role`'s link down or up (its bridge port: the director sees no carrier).
    pub fn set_link(&self, role: &str, up: bool) -> Result<()> {
        sh("ip", &["-n", &self.ns("br"), "link", "set", &format!("v{role}"), if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Waits until `role`'s sync has installed at least `n` connections from its peer.
    pub fn wait_for_synced(&self, role: &str, n: u64, limit: Duration) -> Result<u64> {
        let start = Instant::now();
        let state = lb_userspace::observe::state::path(&self.director_pin_root(role).join("eth0"));
        loop {
            let installed = fs::read(&state)
                .ok()
                .and_then(|t| serde_json::from_slice::<lb_userspace::observe::state::ControllerState>(&t).ok())
                .and_then(|s| s.sync)
                .map(|s| ["installed", "updated", "moved"].iter().map(|k| s.counters.get(*k).copied().unwrap_or(0)).sum::<u64>())
                .unwrap_or(0);
            if installed >= n {
                return Ok(installed);
            }
            if start.elapsed() > limit {
                bail!("{role} installed {installed} synced connection(s), not {n}, within {limit:?}:\n{}", self.director_log(role));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One request on each held connection, sent while the VIP moves to `to`: the answers,
    /// and how long the move took.
    pub fn requests_during_failover(&self, held: &mut [TcpStream], to: &str, limit: Duration) -> Result<(Vec<Answer>, Duration)> {
        std::thread::scope(|s| {
            let requests = s.spawn(|| self.requests_concurrently(held, Duration::from_secs(30)));
            let failover = self.wait_for_vip(to, limit);
            let answers = requests.join().map_err(|_| anyhow!("the request thread panicked"))?;
            Ok((answers, failover?))
        })
    }

    /// One request on each held connection, all at once; each answer with its time.
    pub fn requests_concurrently(&self, held: &mut [TcpStream], timeout: Duration) -> Vec<Answer> {
        let start = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = held
                .iter_mut()
                .map(|conn| {
                    s.spawn(move || {
                        let _ = conn.set_read_timeout(Some(timeout));
                        let result = keepalive_request(conn).map_err(|e| format!("{e:#}")).and_then(|body| {
                            ALL_REAL_SERVERS.iter().position(|rs| body.trim() == rs.role).ok_or_else(|| format!("unexpected body {body:?}"))
                        });
                        Answer { result, after: start.elapsed() }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Answer { result: Err("panicked".into()), after: start.elapsed() })).collect()
        })
    }
}
