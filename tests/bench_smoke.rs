//! `drlb bench --quick`: the benchmark runs end to end (replay with checked verdicts,
//! floors, live veth pair) and reports what `--json` promises. Figures from a quick run
//! mean nothing; the real ones come from `cargo xtask bench`. Needs root.

mod support;

use std::process::Command;

#[test]
fn quick_bench_reports_every_ratio() {
    if support::skip_unless_root() {
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("drlb-bench-smoke-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_drlb"))
        .args(["bench", "--quick", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run drlb bench");
    assert!(out.status.success(), "drlb bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["established", "syn_wlc16", "non_vip", "live", "syn_insert_floor", "syn_record_floor", "live_syn_flood"] {
        let r = json["ratios"][key].as_f64().unwrap_or_else(|| panic!("ratio {key} missing: {json:#}"));
        assert!(r > 0.0 && r.is_finite(), "{key} = {r}");
    }
    assert!(json["machine"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let written: Vec<String> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for ext in ["md", "svg", "json"] {
        assert!(written.iter().any(|f| f.ends_with(ext)), "no .{ext} written: {written:?}");
    }
    std::fs::remove_dir_all(&out_dir).ok();
    // The live mode's namespaces are gone.
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&format!("drlb{}-b", std::process::id())));
}

/// `drlb bench --controller --quick`: a real `drlb run` in the self-contained lab with
/// checked real servers, connections written into its table, timed verdicts and a reload
/// under keep-alive traffic. The figures of a quick run are not the report's; what must
/// hold at any size does: the sweep read every connection, verdicts and the reload reached
/// the maps (the bench fails otherwise), the reload applied every service, no keep-alive
/// request failed or moved, the reload kept the table, and nothing
/// is left behind (the lab's namespaces go with their descriptors; the bpffs, pid and
/// state files, and the ARP-table sysctls it raised are restored).
#[test]
fn quick_controller_bench_measures_and_disturbs_nothing() {
    if support::skip_unless_root() {
        return;
    }
    let thresh = || std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3").unwrap();
    let before = thresh();
    let out_dir = std::env::temp_dir().join(format!("drlb-bench-controller-smoke-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_drlb"))
        .args(["bench", "--controller", "--quick", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("run drlb bench --controller");
    assert!(out.status.success(), "drlb bench --controller failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r:#}"));
    assert!(num("sweep_entries") >= num("connections"), "{r:#}");
    // CPU read from /proc moved (an unreadable or misparsed stat reads 0); no figure is
    // held to its target here: a quick run on a busy machine means nothing.
    for k in ["cpu_checks", "cpu_checks_floor", "cpu_with_connections"] {
        assert!(num(k) > 0.0 && num(k).is_finite(), "{k}: {r:#}");
    }
    // The controller times its reload from the signal's arrival, the bench from sending it.
    assert!(num("reload_ms") <= num("reload_seen_ms"), "{r:#}");
    assert!(num("reload_requests") > 0.0, "{r:#}");
    assert_eq!(num("reload_failures"), 0.0, "keep-alive requests failed across the reload: {r:#}");
    assert!(num("table_after_reload") >= num("table_before_reload"), "the reload lost connections: {r:#}");
    let quick = lb_userspace::bench::controller::ControllerOptions::quick();
    assert_eq!(num("reload_services"), quick.reload_services as f64, "the reload applied every service: {r:#}");
    assert!(std::fs::read_dir(&out_dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with("-controller.md")));
    std::fs::remove_dir_all(&out_dir).ok();
    assert_eq!(thresh(), before, "the ARP table's gc_thresh3 was not restored");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains("drlb-bench-controller"), "the bench's bpffs is still mounted: {mounts}");
}
