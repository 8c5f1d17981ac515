//! Scale-out behind ECMP routers (`director.announce`): which VIPs this director announces
//! to the routers, and why. A VIP is announced while this director can serve it — the
//! controller runs with the dataplane attached, its interface has carrier, a fresh start
//! (or a return of carrier, which sync missed too) has listened to sync for the warm-up,
//! it is not draining, and every service of the VIP has quorum — and withdrawn otherwise. The announcement itself is a route in the kernel ([`crate::kernel::routes`]):
//! the decision is made here, once a second, and the table is brought to it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use tracing::{info, warn};

use crate::control::config::Config;
use crate::kernel::routes;
use crate::observe::logging::EVENT_ANNOUNCE;
use crate::observe::state::{Announcement, AnnounceState, unix_now};

/// Why a VIP is withdrawn (announced: `Ok`).
pub type Decision = Result<(), String>;

/// What this director can do now, beside each service's quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Serving,
    /// The interface has no carrier (named).
    NoCarrier,
    /// Health checks that have not reported once since the start (or the reload).
    ChecksPending(usize),
    /// What remains of the warm-up.
    WarmingUp(Duration),
    Draining,
}

/// What the VIPs of `config` should be: announced, or withdrawn and why. `quorum_lost`
/// holds each service's quorum state (true: lost).
pub fn decide(config: &Config, quorum_lost: &HashMap<String, bool>, readiness: Readiness) -> BTreeMap<IpAddr, Decision> {
    let mut lost: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for svc in &config.services {
        for vip in svc.addresses() {
            let names = lost.entry(vip).or_default();
            if quorum_lost.get(&svc.name).copied().unwrap_or(false) {
                names.push(&svc.name);
            }
        }
    }
    lost.into_iter()
        .map(|(vip, lost)| {
            let decision = match readiness {
                Readiness::Draining => Err("draining".to_string()),
                Readiness::NoCarrier => Err(format!("no carrier on {}", config.director.interface)),
                Readiness::ChecksPending(n) => Err(format!("waiting for the first result of {n} health check(s)")),
                Readiness::WarmingUp(left) => Err(format!("warming up: {} s more of connection sync", left.as_secs_f64().ceil() as u64)),
                Readiness::Serving => Ok(()),
            };
            let decision = if decision.is_err() {
                decision
            } else if !lost.is_empty() {
                // One service without quorum withdraws its VIP everywhere it is lost: the
                // routers can only steer whole addresses.
                Err(format!("quorum lost: {}", lost.join(", ")))
            } else {
                Ok(())
            };
            (vip, decision)
        })
        .collect()
}

/// The announcements of a running controller.
#[derive(Debug)]
pub struct Announcer {
    /// A connection of its own ([`routes::connect`]).
    handle: rtnetlink::Handle,
    table: u32,
    warmup: Duration,
    warm_until: Instant,
    /// The interface's carrier, as last seen.
    carrier: bool,
    /// Health checks yet to report once.
    checks_pending: usize,
    draining: bool,
    /// VIP → what was last made true in the table.
    state: BTreeMap<IpAddr, Announcement>,
    /// The last reconciliation failed (said once).
    failing: bool,
}

impl Announcer {
    /// `adopted`: the dataplane (with its connections) was taken over from a previous
    /// controller, so there is nothing to learn before announcing.
    pub fn new(table: u32, warmup: Duration, adopted: bool) -> Result<Announcer> {
        let warm_until = Instant::now() + if adopted { Duration::ZERO } else { warmup };
        let handle = routes::connect()?;
        Ok(Announcer { handle, table, warmup, warm_until, carrier: true, checks_pending: 0, draining: false, state: BTreeMap::new(), failing: false })
    }

    /// How many health checks have not reported since the start: a restarted controller
    /// does not know yet whether its real servers are up.
    pub fn set_checks_pending(&mut self, n: usize) {
        self.checks_pending = n;
    }

    /// The interface's carrier now. When it comes back the warm-up starts again: sync's
    /// datagrams were lost with it.
    pub fn set_carrier(&mut self, up: bool) {
        if up && !self.carrier {
            self.warm_until = Instant::now() + self.warmup;
        }
        self.carrier = up;
    }

    fn readiness(&self) -> Readiness {
        let warm_left = self.warm_until.saturating_duration_since(Instant::now());
        if self.draining {
            Readiness::Draining
        } else if !self.carrier {
            Readiness::NoCarrier
        } else if self.checks_pending > 0 {
            Readiness::ChecksPending(self.checks_pending)
        } else if !warm_left.is_zero() {
            Readiness::WarmingUp(warm_left)
        } else {
            Readiness::Serving
        }
    }

    /// Whether this director announces `vip` now.
    pub fn announces(&self, vip: IpAddr) -> bool {
        self.state.get(&vip).is_some_and(|a| a.announced)
    }

    /// From now on every VIP is withdrawn (`drlb drain`, SIGTERM).
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn snapshot(&self) -> AnnounceState {
        AnnounceState { table: self.table, draining: self.draining, vips: self.state.values().cloned().collect() }
    }

    /// Brings the table to what [`decide`] says, and also removes the routes of VIPs no
    /// longer configured (a previous drlb's). Returns whether anything changed.
    pub async fn reconcile(&mut self, config: &Config, quorum_lost: &HashMap<String, bool>) -> bool {
        let readiness = self.readiness();
        let wanted = decide(config, quorum_lost, readiness);
        // Until the checks report, a route already there (a previous controller's, which
        // had its checks) stays and an absent one stays absent: a restart does not flap.
        let keep_present = matches!(readiness, Readiness::ChecksPending(_));
        let handle = self.handle.clone();
        match self.try_reconcile(&handle, &wanted, keep_present).await {
            Ok(changed) => {
                if std::mem::take(&mut self.failing) {
                    info!("announcement routes in table {} are current again", self.table);
                }
                changed
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    warn!("{e:#}: the routers may see a stale announcement; retrying every second");
                }
                false
            }
        }
    }

    async fn try_reconcile(&mut self, handle: &rtnetlink::Handle, wanted: &BTreeMap<IpAddr, Decision>, keep_present: bool) -> Result<bool> {
        let present = routes::announced(handle, self.table).await?;
        let kept: BTreeMap<IpAddr, Decision>;
        let wanted = if keep_present {
            kept = wanted.iter().map(|(v, d)| (*v, if present.contains(v) { Ok(()) } else { d.clone() })).collect();
            &kept
        } else {
            wanted
        };
        for vip in present.iter().filter(|v| !wanted.contains_key(v)) {
            routes::withdraw(handle, self.table, *vip).await?;
            info!(event = EVENT_ANNOUNCE, vip = %vip, state = "withdrawn", reason = "no longer configured", "VIP {vip} withdrawn: no longer configured (its route stayed in table {})", self.table);
        }
        let mut changed = false;
        self.state.retain(|vip, _| wanted.contains_key(vip));
        for (vip, decision) in wanted {
            let announce = decision.is_ok();
            if announce && !present.contains(vip) {
                routes::announce(handle, self.table, *vip).await?;
            } else if !announce && present.contains(vip) {
                routes::withdraw(handle, self.table, *vip).await?;
            }
            let reason = match decision {
                Ok(()) => "serving".to_string(),
                Err(why) => why.clone(),
            };
            let was = self.state.get(vip).map(|a| a.announced);
            if was != Some(announce) {
                changed = true;
                match (announce, was.is_none() && present.contains(vip)) {
                    (true, true) => info!(event = EVENT_ANNOUNCE, vip = %vip, state = "announced", "VIP {vip} announced (its route was in table {} already)", self.table),
                    (true, false) => info!(event = EVENT_ANNOUNCE, vip = %vip, state = "announced", "VIP {vip} announced: the routers may send its flows here"),
                    (false, _) => info!(event = EVENT_ANNOUNCE, vip = %vip, state = "withdrawn", reason = %reason, "VIP {vip} withdrawn: {reason}"),
                }
                self.state.insert(*vip, Announcement { vip: *vip, announced: announce, since: unix_now(), reason });
            } else if let Some(a) = self.state.get_mut(vip) {
                changed |= a.reason != reason;
                a.reason = reason;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "director: { interface: eth0 }\nservices:\n\
            - { name: web, vip: 198.18.0.100, port: 80, protocol: tcp, scheduler: mh, real_servers: [ { address: 198.18.0.11 } ] }\n\
            - { name: tls, vip: 198.18.0.100, port: 443, protocol: tcp, scheduler: mh, real_servers: [ { address: 198.18.0.11 } ] }\n\
            - { name: dns, vip: 198.18.0.101, port: 53, protocol: udp, scheduler: rr, real_servers: [ { address: 198.18.0.12 } ] }\n";
        Config::parse(std::path::Path::new("test.yaml"), text).expect("valid")
    }

    fn vip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_vip_is_announced_only_while_every_service_of_it_has_quorum() {
        let c = config();
        let all_up: HashMap<String, bool> = [("web", false), ("tls", false), ("dns", false)].map(|(n, l)| (n.to_string(), l)).into();
        let d = decide(&c, &all_up, Readiness::Serving);
        assert_eq!(d[&vip("198.18.0.100")], Ok(()));
        assert_eq!(d[&vip("198.18.0.101")], Ok(()));
        let tls_lost: HashMap<String, bool> = [("web", false), ("tls", true), ("dns", false)].map(|(n, l)| (n.to_string(), l)).into();
        let d = decide(&c, &tls_lost, Readiness::Serving);
        assert_eq!(d[&vip("198.18.0.100")], Err("quorum lost: tls".into()));
        assert_eq!(d[&vip("198.18.0.101")], Ok(()));
    }

    #[test]
    fn warm_up_carrier_and_drain_withdraw_every_vip() {
        let c = config();
        let d = decide(&c, &HashMap::new(), Readiness::WarmingUp(Duration::from_millis(2500)));
        assert_eq!(d[&vip("198.18.0.100")], Err("warming up: 3 s more of connection sync".into()));
        let d = decide(&c, &HashMap::new(), Readiness::NoCarrier);
        assert_eq!(d[&vip("198.18.0.101")], Err("no carrier on eth0".into()));
        let d = decide(&c, &HashMap::new(), Readiness::Draining);
        assert!(d.values().all(|x| *x == Err("draining".to_string())));
    }

    #[tokio::test]
    async fn carrier_coming_back_restarts_the_warm_up() {
        let mut a = Announcer::new(100, Duration::from_secs(30), true).unwrap();
        a.set_checks_pending(2);
        assert_eq!(a.readiness(), Readiness::ChecksPending(2));
        a.set_checks_pending(0);
        assert_eq!(a.readiness(), Readiness::Serving);
        a.set_carrier(false);
        assert_eq!(a.readiness(), Readiness::NoCarrier);
        a.set_carrier(true);
        assert!(matches!(a.readiness(), Readiness::WarmingUp(left) if left > Duration::from_secs(29)));
    }
}
