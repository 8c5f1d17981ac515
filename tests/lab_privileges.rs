//! Least privilege, proven: `drlb run` as a user that is not root, through `setpriv`, with
//! exactly the capabilities of `lb_userspace::kernel::privileges::RUN` and no other,
//! forwards real TCP through the VIP and health-checks its real servers; without any one
//! of them it does not start, and says which capability it lacks. Needs root (to build the
//! lab and hand the capabilities out) and setpriv (util-linux).

mod support;

use std::path::Path;
use std::time::Duration;

use drlb_lab::{Lab, Launch, capability_mask};
use lb_userspace::control::config::XdpMode;
use lb_userspace::kernel::privileges::{self, Capability};

/// A user and group id no account has here: the controller owns nothing else.
const UNPRIVILEGED_ID: u32 = 64_123;

/// The lab's mask of `caps`, by name: it must agree with drlb's own bit numbers.
fn mask(caps: &[Capability]) -> u64 {
    let by_name = capability_mask(&privileges::names_of(caps));
    assert_eq!(by_name, privileges::mask_of(caps), "lb_userspace::kernel::privileges numbers a capability wrongly");
    by_name
}

#[test]
fn drlb_runs_with_exactly_its_capabilities_and_names_a_missing_one() {
    if support::skip_unless_root() {
        return;
    }
    if std::process::Command::new("setpriv").arg("--version").output().is_err() {
        support::skip("needs setpriv (util-linux)");
        return;
    }
    let drlb = Path::new(env!("CARGO_BIN_EXE_drlb"));
    let mut lab = Lab::build(XdpMode::Native).expect("build the lab (needs root, iproute2, nginx, ethtool)");
    let config = lab.with_pin_root(&lab.drlb_config_with_check("type: tcp, port: 80, interval: 300ms"));

    // Exactly the set: it starts, forwards and its health checks see both real servers.
    let launch = Launch::Setpriv { uid: UNPRIVILEGED_ID, caps: mask(&privileges::RUN) };
    lab.start_drlb_as(drlb, &config, launch, &[]).expect("drlb run with exactly its capabilities");
    let pid = lab.drlb_pid().expect("drlb runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        let hex = status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
    assert!(uid_line.split_whitespace().skip(1).all(|u| u == UNPRIVILEGED_ID.to_string()), "drlb is not running as {UNPRIVILEGED_ID}: {uid_line}");
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(set), mask(&privileges::RUN), "{set} of the running drlb");
    }
    std::thread::sleep(Duration::from_secs(1));
    let tally = lab.http_requests(100, Duration::from_secs(3)).unwrap();
    println!("with {:?} as uid {UNPRIVILEGED_ID}: {tally:?}", privileges::names_of(&privileges::RUN));
    assert_eq!(tally.ok, 100, "{tally:?}");
    assert!(tally.per_server.iter().take(2).all(|&n| n > 0), "both real servers answer: {tally:?}");
    let log = lab.stop_drlb().unwrap();
    assert!(!log.contains("ERROR"), "drlb logged an error with its capabilities:\n{log}");
    assert!(log.contains("detached"), "a stop by SIGTERM detaches, also unprivileged:\n{log}");

    // Without any one of them: no start, and the message names it.
    for missing in privileges::RUN {
        let rest: Vec<Capability> = privileges::RUN.into_iter().filter(|c| *c != missing).collect();
        let launch = Launch::Setpriv { uid: UNPRIVILEGED_ID, caps: mask(&rest) };
        let err = match lab.start_drlb_as(drlb, &config, launch, &[]) {
            Ok(()) => {
                let _ = lab.stop_drlb();
                panic!("drlb started without {}", missing.name);
            }
            Err(e) => format!("{e:#}"),
        };
        let first = err.lines().find(|l| l.contains("ERROR")).unwrap_or("");
        println!("without {}: {}", missing.name, first.chars().take(240).collect::<String>());
        assert!(first.contains(&format!("lacks {}", missing.name)), "without {}, the error does not name it:\n{err}", missing.name);
        // A failed start leaves nothing pinned that the next start would trip over.
        // (maps.debug and progs.debug are the kernel's own, in every bpffs root.)
        let leftover: Vec<_> =
            std::fs::read_dir(lab.pin_root()).unwrap().flatten().map(|e| e.file_name()).filter(|n| !n.to_string_lossy().ends_with(".debug")).collect();
        assert!(leftover.is_empty(), "without {}: left pinned {leftover:?}", missing.name);
    }
}
