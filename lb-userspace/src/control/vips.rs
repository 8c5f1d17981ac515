//! Which of the configured VIPs this director's interface holds, and since when. drlb
//! forwards whatever reaches it either way (a backup simply receives nothing); this is
//! for operators: `drlb status`, `drlb_vip_owned`, `drlb doctor`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::control::config::Config;
use crate::observe::state::{unix_now, VipOwnership};

#[derive(Debug, Default)]
pub struct VipTracker {
    /// VIP → (held now, since when).
    vips: BTreeMap<IpAddr, (bool, u64)>,
}

impl VipTracker {
    /// Takes the configured VIPs and the interface's addresses now; returns the VIPs whose
    /// ownership changed, with whether they are held now.
    pub fn update(&mut self, config: &Config, addrs: &[IpAddr]) -> Vec<(IpAddr, bool)> {
        let now = unix_now();
        let mut wanted: Vec<IpAddr> = config.services.iter().flat_map(|s| s.addresses()).collect();
        wanted.sort();
        wanted.dedup();
        self.vips.retain(|v, _| wanted.contains(v));
        let mut changed = Vec::new();
        for vip in wanted {
            let owned = addrs.contains(&vip);
            match self.vips.get(&vip) {
                Some((was, _)) if *was == owned => {}
                Some(_) => {
                    self.vips.insert(vip, (owned, now));
                    changed.push((vip, owned));
                }
                None => {
                    self.vips.insert(vip, (owned, now));
                    if owned {
                        changed.push((vip, owned));
                    }
                }
            }
        }
        changed
    }

    /// Whether the interface holds `vip` now.
    pub fn owns(&self, vip: IpAddr) -> bool {
        matches!(self.vips.get(&vip), Some((true, _)))
    }

    pub fn snapshot(&self) -> Vec<VipOwnership> {
        self.vips.iter().map(|(vip, (owned, since))| VipOwnership { vip: *vip, owned: *owned, since: *since }).collect()
    }
}
