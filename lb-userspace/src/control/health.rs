//! Health checks with keepalived's meaning (the probes themselves, one per checker kind, are
//! in [`crate::control::probes`]), each run against a real server's own address or the
//! check's `address`.
//!
//! A checker task per (service, real server) probes every `interval`; one round tries up
//! to `retries + 1` times, `retry_delay` apart, each attempt bounded by `timeout`. Rounds
//! are reported to the controller, which applies `rise`/`fall` ([`Tracker`]) and changes
//! the dataplane. Worst case from failure to DOWN with fall 1: interval + timeout ×
//! (retries + 1) + retry_delay × retries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::control::config::{Config, HealthCheck};
pub use crate::control::probes::probe;

/// What one checker probes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub service: String,
    pub vip: IpAddr,
    /// The real server's display name (its `name`, else its address).
    pub name: String,
    /// The real server's address (what the verdict is about).
    pub address: IpAddr,
    /// Where the probe goes: the check's `address`, else the real server's.
    pub probe: SocketAddr,
    /// Which of the real server's checks this is (it is up while all of them pass).
    pub index: usize,
    /// The real server's configured weight (a dynamic script's exit code replaces it).
    pub weight: u32,
    pub check: HealthCheck,
}

impl Target {
    /// `web rs1 198.18.0.11:80`, and the check's type when it probes elsewhere or is one of several.
    pub fn label(&self) -> String {
        if self.index == 0 && self.probe.ip() == self.address {
            format!("{} {} {}", self.service, self.name, self.probe)
        } else {
            format!("{} {} {} ({} check {})", self.service, self.name, self.address, self.check.kind.name(), self.probe)
        }
    }
}

/// The outcome of one round.
#[derive(Debug, Clone)]
pub struct Round {
    /// Shared with the checker: a thousand checks a second copy no strings.
    pub target: std::sync::Arc<Target>,
    pub ok: bool,
    /// What a passing dynamic check adds to the server's weight (keepalived's `cur_weight`).
    pub weight: Option<i64>,
    /// Why the last attempt failed.
    pub reason: String,
    pub failed_attempts: u32,
    pub attempts: u32,
    /// Duration of the last attempt.
    pub latency: Duration,
    /// When the round ended: how long its verdict takes to reach the maps is measured from here.
    pub finished: Instant,
}

/// Every checker a config asks for: per real server, its own checks or the service's.
pub fn targets(config: &Config) -> Vec<Target> {
    let mut out = Vec::new();
    for svc in &config.services {
        for rs in &svc.real_servers {
            for (index, check) in rs.checks(svc).iter().enumerate() {
                out.push(Target {
                    service: svc.name.clone(),
                    vip: svc.vip,
                    name: rs.name.clone().unwrap_or_else(|| rs.address.to_string()),
                    address: rs.address,
                    probe: SocketAddr::new(check.address.unwrap_or(rs.address), check.port.unwrap_or(svc.port)),
                    index,
                    weight: rs.weight,
                    check: check.clone(),
                });
            }
        }
    }
    out
}

/// One round: up to `retries + 1` attempts, `retry_delay` apart, stopping at the first success.
pub async fn round(t: &std::sync::Arc<Target>) -> Round {
    let attempts = t.check.retries + 1;
    let mut failed = 0;
    let mut reason = String::new();
    let mut latency = Duration::ZERO;
    for attempt in 0..attempts {
        let start = Instant::now();
        let r = probe(t).await;
        latency = start.elapsed();
        match r {
            Ok(weight) => return Round { target: t.clone(), ok: true, weight, reason, failed_attempts: failed, attempts, latency, finished: Instant::now() },
            Err(e) => {
                failed += 1;
                reason = e;
            }
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(t.check.retry_delay).await;
        }
    }
    Round { target: t.clone(), ok: false, weight: None, reason, failed_attempts: failed, attempts, latency, finished: Instant::now() }
}

/// Up or down, per check and per real server, with keepalived's default of one success to
/// come up and `rise`/`fall` consecutive rounds when configured. A real server is up while
/// every one of its checks is (keepalived: all checkers of a real_server must pass).
#[derive(Debug, Default)]
pub struct Tracker {
    /// (service, real server, check index) → (up, consecutive successes, consecutive failures).
    checks: HashMap<(String, IpAddr, usize), (bool, u32, u32)>,
    /// What dynamic checks add to their server's weight (keepalived's `cur_weight`), by
    /// (service, real server, check index); absent: nothing.
    added: HashMap<(String, IpAddr, usize), i64>,
}

impl Tracker {
    /// Applies a round; returns the real server's new state and the log line when it changes.
    pub fn apply(&mut self, r: &Round) -> Option<(bool, String)> {
        let t = &r.target;
        // A round of a check a reload removed (its checker was aborted after sending it)
        // is not this configuration's.
        let (up, oks, fails) = self.checks.get_mut(&(t.service.clone(), t.address, t.index))?;
        let line = if r.ok {
            *oks += 1;
            *fails = 0;
            (!*up && *oks >= t.check.rise).then(|| format!("{} UP: check succeeded ({}/{} successes)", t.label(), oks, t.check.rise))
        } else {
            *fails += 1;
            *oks = 0;
            (*up && *fails >= t.check.fall).then(|| format!("{} DOWN: {} ({}/{} failures)", t.label(), r.reason, r.failed_attempts, r.attempts))
        }?;
        *up = !*up;
        let check_up = *up;
        // Only a flip looks at the server's other checks: the server changes with this one
        // only if all the others are up.
        let others_up =
            self.checks.iter().all(|((s, a, i), (up, _, _))| *up || *i == t.index || s != &t.service || *a != t.address);
        if !others_up {
            tracing::info!("{line} (real server stays down: another of its checks fails)");
            return None;
        }
        Some((check_up, line))
    }

    /// Records what a round of a dynamic check adds to its server's weight: what it read
    /// while the check is up, nothing once it is down (keepalived takes `cur_weight` away
    /// when a checker fails). True when that changed.
    pub fn apply_weight(&mut self, r: &Round) -> bool {
        let t = &r.target;
        let key = (t.service.clone(), t.address, t.index);
        let Some((up, _, _)) = self.checks.get(&key) else { return false };
        let before = self.added.get(&key).copied();
        // Called after `apply`: `up` is the check's state after this round. A failed round
        // that did not take it down (fall) leaves the weight as it was.
        let after = if !*up {
            None
        } else if r.ok {
            r.weight.filter(|a| *a != 0)
        } else {
            before
        };
        match after {
            Some(a) => self.added.insert(key, a),
            None => self.added.remove(&key),
        };
        before != after
    }

    /// The weights dynamic checks give real servers: (service, address) → the configured
    /// weight plus what each of its checks adds, within 0 and `MAX_WEIGHT`.
    pub fn weights(&self, config: &Config) -> HashMap<(String, IpAddr), u32> {
        let mut out = HashMap::new();
        for ((service, address, _), added) in &self.added {
            let Some(rs) = config.services.iter().find(|s| &s.name == service).and_then(|s| s.real_servers.iter().find(|r| r.address == *address)) else {
                continue;
            };
            let w = out.entry((service.clone(), *address)).or_insert(i64::from(rs.weight));
            *w += added;
        }
        out.into_iter().map(|(k, w)| (k, w.clamp(0, i64::from(crate::control::config::MAX_WEIGHT)) as u32)).collect()
    }

    /// Follows a (re)started set of checks: forgets those a reload removed, and starts new
    /// ones up — or down with `alpha`. Returns the real servers that start down.
    pub fn track(&mut self, targets: &[Target]) -> Vec<(String, IpAddr)> {
        let keys: std::collections::HashSet<(&str, IpAddr, usize)> = targets.iter().map(|t| (t.service.as_str(), t.address, t.index)).collect();
        self.checks.retain(|(s, a, i), _| keys.contains(&(s.as_str(), *a, *i)));
        self.added.retain(|(s, a, i), _| keys.contains(&(s.as_str(), *a, *i)));
        let mut starting_down = Vec::new();
        for t in targets {
            if let std::collections::hash_map::Entry::Vacant(e) = self.checks.entry((t.service.clone(), t.address, t.index)) {
                e.insert((!t.check.alpha, 0, 0));
                if t.check.alpha {
                    starting_down.push((t.service.clone(), t.address));
                }
            }
        }
        starting_down
    }

    /// Forgets checks a reload removed.
    pub fn retain(&mut self, targets: &[Target]) {
        self.track(targets);
    }

    /// The real servers one of whose checks is down: (service, address).
    pub fn down_servers(&self) -> std::collections::HashSet<(String, IpAddr)> {
        self.checks.iter().filter(|(_, (up, _, _))| !*up).map(|((s, a, _), _)| (s.clone(), *a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ok: bool, rise: u32, fall: u32) -> Round {
        let config = crate::control::config::Config::parse(
            std::path::Path::new("t.yaml"),
            &format!(
                "director: {{ interface: eth0 }}\nservices:\n  - {{ name: web, vip: 198.18.0.100, port: 80, protocol: tcp, \
                 health_check: {{ type: tcp, rise: {rise}, fall: {fall} }}, real_servers: [ {{ address: 198.18.0.11, name: rs1 }} ] }}\n"
            ),
        )
        .unwrap();
        let target = targets(&config).remove(0);
        Round { target: std::sync::Arc::new(target), ok, weight: None, reason: "connect failed".into(), failed_attempts: if ok { 0 } else { 2 }, attempts: 2, latency: Duration::ZERO, finished: Instant::now() }
    }

    /// keepalived's meaning: a server starts up; `fall` failed rounds in a row take it down,
    /// `rise` good rounds in a row bring it back; a round of the other kind restarts the count.
    #[test]
    fn rise_and_fall_count_consecutive_rounds() {
        let mut t = Tracker::default();
        t.track(&[(*round(true, 2, 3).target).clone()]);
        let seq = [(false, None), (true, None), (false, None), (false, None), (false, Some(false)), (false, None), (true, None), (true, Some(true)), (true, None)];
        for (i, (ok, change)) in seq.into_iter().enumerate() {
            let got = t.apply(&round(ok, 2, 3)).map(|(up, _)| up);
            assert_eq!(got, change, "round {i} ({})", if ok { "ok" } else { "failed" });
        }
        let mut fresh = Tracker::default();
        fresh.track(&[(*round(false, 1, 1).target).clone()]);
        let (_, line) = fresh.apply(&round(false, 1, 1)).unwrap();
        assert_eq!(line, "web rs1 198.18.0.11:80 DOWN: connect failed (2/2 failures)");
    }

    /// keepalived's several checkers on one real_server: it is up while all pass.
    #[test]
    fn a_server_with_two_checks_is_up_only_while_both_pass() {
        let config = crate::control::config::Config::parse(
            std::path::Path::new("t.yaml"),
            "director: { interface: eth0 }\nservices:\n  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, real_servers: [ { address: 198.18.0.11, \
             health_checks: [ { type: tcp }, { type: http, path: /health, port: 8080, address: 198.18.0.12 } ] } ] }\n",
        )
        .unwrap();
        let targets: Vec<std::sync::Arc<Target>> = targets(&config).into_iter().map(std::sync::Arc::new).collect();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1].probe, "198.18.0.12:8080".parse().unwrap());
        let round = |i: usize, ok: bool| Round {
            target: targets[i].clone(),
            ok,
            weight: None,
            reason: "refused".into(),
            failed_attempts: 1,
            attempts: 1,
            latency: Duration::ZERO,
            finished: Instant::now(),
        };
        let mut t = Tracker::default();
        t.track(&targets.iter().map(|t| (**t).clone()).collect::<Vec<_>>());
        let steps = [(0, false, Some(false)), (1, false, None), (0, true, None), (1, true, Some(true)), (1, false, Some(false))];
        for (n, (i, ok, want)) in steps.into_iter().enumerate() {
            assert_eq!(t.apply(&round(i, ok)).map(|(up, _)| up), want, "step {n}");
        }
    }

    /// keepalived's alpha: a new check starts down and the server with it; one passing
    /// round brings it up. A check already tracked keeps its state across a reload.
    #[test]
    fn alpha_checks_start_down() {
        let config = crate::control::config::Config::parse(
            std::path::Path::new("t.yaml"),
            "director: { interface: eth0 }\nservices:\n  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, \
             health_check: { type: tcp, alpha: true }, real_servers: [ { address: 198.18.0.11, name: rs1 } ] }\n",
        )
        .unwrap();
        let targets = targets(&config);
        let mut t = Tracker::default();
        assert_eq!(t.track(&targets), vec![("web".to_string(), "198.18.0.11".parse().unwrap())]);
        assert_eq!(t.track(&targets), vec![], "already tracked: not started again");
        let up = Round { target: std::sync::Arc::new(targets[0].clone()), ok: true, weight: None, reason: String::new(), failed_attempts: 0, attempts: 1, latency: Duration::ZERO, finished: Instant::now() };
        assert_eq!(t.apply(&up).map(|(up, _)| up), Some(true));
    }

    /// Dynamic checks' weights: what a passing round read, kept through failed rounds
    /// that do not take the check down, gone when it is down; summed onto the configured
    /// weight and kept within IPVS's range.
    #[test]
    fn dynamic_weights_follow_rounds() {
        let config = crate::control::config::Config::parse(
            std::path::Path::new("t.yaml"),
            "director: { interface: eth0 }\nservices:\n  - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, \
             health_check: { type: script, command: 'true', dynamic: true, fall: 2 }, real_servers: [ { address: 198.18.0.11, weight: 3 } ] }\n",
        )
        .unwrap();
        let target = std::sync::Arc::new(targets(&config).remove(0));
        let round = |ok: bool, weight: Option<i64>| Round { target: target.clone(), ok, weight, reason: "exit 1".into(), failed_attempts: 0, attempts: 1, latency: Duration::ZERO, finished: Instant::now() };
        let key = ("web".to_string(), "198.18.0.11".parse().unwrap());
        let mut t = Tracker::default();
        t.track(&[(*target).clone()]);
        let mut step = |r: Round| {
            t.apply(&r);
            let changed = t.apply_weight(&r);
            (changed, t.weights(&config).get(&key).copied())
        };
        assert_eq!(step(round(true, Some(7 - 3))), (true, Some(7)), "exit 9: weight 7");
        assert_eq!(step(round(true, Some(7 - 3))), (false, Some(7)), "unchanged");
        assert_eq!(step(round(false, None)), (false, Some(7)), "one failure of fall 2: kept");
        assert_eq!(step(round(false, None)), (true, None), "down: the configured weight again (and the server down)");
        assert_eq!(step(round(true, Some(-100))), (true, Some(0)), "never below 0");
    }

    #[test]
    fn a_reload_forgets_removed_targets() {
        let mut t = Tracker::default();
        let target = (*round(false, 1, 1).target).clone();
        t.track(std::slice::from_ref(&target));
        assert!(t.apply(&round(false, 1, 1)).is_some());
        t.retain(&[]);
        // Forgotten: a late round of its aborted checker changes nothing.
        assert!(t.apply(&round(false, 1, 1)).is_none());
        assert!(t.down_servers().is_empty());
        // Checked again, it starts up, so a failed round takes it down anew.
        t.track(&[target]);
        assert!(t.apply(&round(false, 1, 1)).is_some());
    }
}
