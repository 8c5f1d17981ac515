//! `drlb selftest --lab` on this machine's kernel: the tool-free lab the VM guests run
//! (namespaces by unshare, links by netlink, in-process real servers) forwards real TCP
//! through the VIP in native and generic mode and leaves nothing behind. Needs root.

mod support;

use std::process::Command;

fn links() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["-o", "link"]).output().expect("ip link").stdout)
        .lines()
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn selftest_lab_forwards_real_tcp_in_both_modes() {
    if support::skip_unless_root() {
        return;
    }
    let before = links();
    let out = Command::new(env!("CARGO_BIN_EXE_drlb")).args(["selftest", "--lab"]).output().expect("run drlb selftest --lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "selftest --lab failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for mode in ["native", "generic"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("selftest lab: {mode} mode: "))).expect("a line per mode");
        assert!(line.contains(" 40/40 HTTP requests"), "{line}");
        assert!(line.contains("IPv6: 40/40 through VIP 2001:db8::100"), "{line}");
        println!("{line}");
    }
    // The namespaces went with their last descriptor, and their veths with them.
    assert_eq!(links(), before, "links left behind");
}
