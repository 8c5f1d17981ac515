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
    // Per thread; /proc/self/status is the main thread's, /proc/thread-self this one's.
    effective_from(&std::fs::read_to_string("/proc/thread-self/status").ok()?)
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

/// Sets RLIMIT_MEMLOCK to infinity (soft and hard; raising the hard limit needs root or
/// CAP_SYS_RESOURCE).
fn raise_memlock_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads the struct, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// For a failed load: on kernels before 5.11, which charge BPF maps to RLIMIT_MEMLOCK, a
/// finite limit is the likely cause (what to set), else None.
pub fn memlock_hint() -> Option<String> {
    let release = nix::sys::utsname::uname().ok()?.release().to_string_lossy().into_owned();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next()?, parts.next()?);
    if (major, minor) >= (5, 11) {
        return None;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(format!(
        "kernel {release} charges BPF maps to RLIMIT_MEMLOCK, which is {} KiB here: raise it (drlb.service: \
         LimitMEMLOCK=infinity; `ulimit -l unlimited`) or run as root",
        limit.rlim_cur / 1024
    ))
}

/// Scripts drlb starts (checks, notify commands) get none of its capabilities: the ambient
/// set drlb.service gives drlb would otherwise pass to them through execve. (Run as root,
/// there is no ambient set and nothing changes.)
pub fn without_capabilities(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    // SAFETY: between fork and exec the closure only makes one prctl system call, which is
    // async-signal-safe, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The uid and group of `user`: a number (the group of the same number), or a name in
/// /etc/passwd with its primary group (read directly: the static binary cannot load
/// another C library's NSS modules).
pub fn ids_of(user: &str) -> Option<(u32, u32)> {
    if let Ok(id) = user.parse() {
        return Some((id, id));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.first() == Some(&user) && fields.len() > 3).then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?))).flatten()
    })
}

/// The bit mask of `caps` (bit N = capability N).
pub fn mask_of(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1u64 << c.bit)
}

/// capset(2)'s version 3 header and data (two 32-bit halves of each set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Makes this process the user `uid` in group `gid` (no supplementary groups) holding exactly
/// `caps`: permitted, effective, inheritable, ambient and bounding — what drlb.service
/// gives `drlb run`, and what `drlb selftest --as-user` checks this kernel accepts. Needs
/// root, and must run before any thread starts (capabilities belong to threads).
pub fn become_user(uid: u32, gid: u32, caps: &[Capability]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mask = mask_of(caps);
    // As the unit's LimitMEMLOCK=infinity: kernels before 5.11 charge maps to it, and
    // raising it later would need CAP_SYS_RESOURCE.
    // Best effort: where root itself lacks CAP_SYS_RESOURCE (containers) the limit stays,
    // which matters only before 5.11 — and then the load says so (`memlock_hint`).
    let _ = raise_memlock_limit();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(40);
    for bit in (0..=last).filter(|b| mask & (1u64 << b) == 0) {
        // SAFETY: prctl(PR_CAPBSET_DROP) takes a capability number and nothing else.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, bit as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("dropping capability {bit} from the bounding set (needs root)"));
        }
    }
    // Keep the permitted set across the change of user; set exactly below.
    // SAFETY: prctl(PR_SET_KEEPCAPS) takes a flag and nothing else.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_KEEPCAPS");
    }
    let (user, group) = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(gid));
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    nix::unistd::setresgid(group, group, group).with_context(|| format!("becoming group {gid}"))?;
    nix::unistd::setresuid(user, user, user).with_context(|| format!("becoming user {uid}"))?;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let half = |shift: u32| (mask >> shift) as u32;
    let data = [
        CapData { effective: half(0), permitted: half(0), inheritable: half(0) },
        CapData { effective: half(32), permitted: half(32), inheritable: half(32) },
    ];
    // SAFETY: the header and the two data structs are capset(2)'s version-3 layout, live
    // for the call; the kernel only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    for c in caps {
        // SAFETY: prctl(PR_CAP_AMBIENT_RAISE) takes a capability number and nothing else.
        if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, c.bit as libc::c_ulong, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("raising {} into the ambient set", c.name));
        }
    }
    let now = effective().context("reading /proc/self/status")?;
    anyhow::ensure!(now == mask, "after dropping privileges the effective set is {now:#x}, not {mask:#x}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_number_or_in_etc_passwd() {
        assert_eq!(ids_of("64123"), Some((64123, 64123)));
        assert_eq!(ids_of("root"), Some((0, 0)));
        assert_eq!(ids_of("no-such-user-here"), None);
    }

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
