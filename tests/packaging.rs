//! The shipped systemd unit (configs/drlb.service, installed by the .deb and the .rpm):
//! it grants exactly the capabilities `drlb run` needs (lb_userspace::kernel::privileges,
//! proven by tests/lab_privileges.rs), runs as the drlb user, and systemd's own offline
//! security analysis rates it "OK" or better.

mod support;

use std::path::{Path, PathBuf};

use lb_userspace::kernel::privileges;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/drlb.service")
}

/// The values of `key=` in the unit, every line of it, words split.
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_string))
        .collect()
}

#[test]
fn the_unit_grants_exactly_the_capabilities_drlb_run_needs_to_the_drlb_user() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let mut needed: Vec<String> = privileges::names_of(&privileges::RUN).into_iter().map(str::to_string).collect();
    needed.sort();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut granted = values(&unit, key);
        granted.sort();
        assert_eq!(granted, needed, "{key}= in configs/drlb.service");
    }
    assert_eq!(values(&unit, "User"), ["drlb"]);
    assert_eq!(values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(values(&unit, "ExecStart")[0], "/usr/sbin/drlb", "the packages install /usr/sbin/drlb");
}

#[test]
fn systemd_rates_the_unit_ok_or_better() {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        support::skip("systemd-analyze is not installed");
        return;
    }
    // Offline analysis reads the unit by its file name.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unit-analysis");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(unit_path(), dir.join("drlb.service")).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "drlb.service"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no overall level:\n{text}"));
    println!("{}", overall.trim());
    // "→ Overall exposure level for drlb.service: 1.9 OK 🙂"
    let mut words = overall.rsplit(':').next().unwrap_or("").split_whitespace();
    let score: f64 = words.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no score in {overall}"));
    let level = words.next().unwrap_or("");
    assert!(["OK", "SAFE", "PERFECT"].contains(&level), "systemd rates drlb.service {score} {level}:\n{text}");
}
