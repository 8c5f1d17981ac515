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
    for key in ["established", "syn_wlc16", "non_vip", "live"] {
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
