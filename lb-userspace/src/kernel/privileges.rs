//! The capabilities `drlb run` needs instead of root, defined once: drlb.service grants
//! exactly these, the lab test runs `drlb run` with exactly these through `setpriv`, and a
//! step the kernel refuses names the one this process lacks.
//!
//! Measured (tests/lab_privileges.rs on 6.x; the same kernel checks exist since 5.8, the
//! first kernel with CAP_BPF and CAP_PERFMON): nothing `drlb run` does needs CAP_SYS_ADMIN.
//! bpffs must be mounted already (systemd does at boot; mounting it is what would need
//! CAP_SYS_ADMIN), and on kernels before 5.11, which charge BPF maps to RLIMIT_MEMLOCK,
//! the memlock limit must be raised (`LimitMEMLOCK=infinity` in the unit; no capability).

/// A capability, its number (bit in /proc/PID/status) and why drlb needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// As capabilities(7) spells it: `CAP_BPF`.
    pub name: &'static str,
    pub bit: u32,
    /// What drlb does with it, for the message when it is missing.
    pub why: &'static str,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "loading XDP programs (a networking program type) and attaching them, changing addresses, routes and offloads",
};
pub const CAP_NET_RAW: Capability = Capability {
    name: "CAP_NET_RAW",
    bit: 13,
    why: "ICMP echo health checks when net.ipv4.ping_group_range does not include drlb's group",
};
pub const CAP_PERFMON: Capability = Capability {
    name: "CAP_PERFMON",
    bit: 38,
    why: "the verifier accepts the dataplane's packet-pointer arithmetic only with it (without it: \
          \"pointer arithmetic with it prohibited for !root\")",
};
pub const CAP_BPF: Capability = Capability { name: "CAP_BPF", bit: 39, why: "creating the dataplane's maps and loading its programs" };

/// What `drlb run` needs, on 5.10 and on 6.x alike: no more, no fewer.
pub const RUN: [Capability; 3] = [CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON];

/// This process's effective capabilities (bit N = capability N), from /proc/self/status;
/// None if that cannot be read (then nothing is said about capabilities).
pub fn effective() -> Option<u64> {
    effective_from(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn effective_from(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Which of `needed` this process lacks.
pub fn lacking(needed: &[Capability]) -> Vec<Capability> {
    match effective() {
        Some(eff) => needed.iter().copied().filter(|c| eff & (1u64 << c.bit) == 0).collect(),
        None => Vec::new(),
    }
}

/// For the error of a step the kernel refused: the capabilities of `needed` this process
/// lacks, and what to do, or None if it has them all (then the cause is elsewhere).
pub fn explain(needed: &[Capability]) -> Option<String> {
    let missing = lacking(needed);
    if missing.is_empty() {
        return None;
    }
    let names: Vec<&str> = missing.iter().map(|c| c.name).collect();
    let whys: Vec<String> = missing.iter().map(|c| format!("{}: {}", c.name, c.why)).collect();
    Some(format!(
        "this process lacks {} ({}). Run drlb as root, or grant it {} (drlb.service: AmbientCapabilities= and \
         CapabilityBoundingSet=)",
        names.join(" and "),
        whys.join("; "),
        names_of(&RUN).join(" ")
    ))
}

/// The names of `caps`, in order.
pub fn names_of(caps: &[Capability]) -> Vec<&'static str> {
    caps.iter().map(|c| c.name).collect()
}

/// Adds [`explain`]'s capability hint to a failed step's error, when this process lacks
/// one of the capabilities the step needs.
pub fn with_hint<T>(result: anyhow::Result<T>, needed: &[Capability]) -> anyhow::Result<T> {
    result.map_err(|e| match explain(needed) {
        Some(hint) => e.context(hint),
        None => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_proc_status() {
        let status = "Name:\tdrlb\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\nCapBnd:\t000001ffffffffff\n";
        let eff = effective_from(status).unwrap();
        for c in RUN {
            assert_ne!(eff & (1 << c.bit), 0, "{}", c.name);
        }
        assert_eq!(eff & (1 << CAP_NET_RAW.bit), 0);
    }
}
