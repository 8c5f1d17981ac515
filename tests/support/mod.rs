//! What every integration test shares that is not drlb itself: saying "skipped" out loud.
//!
//! libtest has no "skipped" outcome, so a test that cannot run here returns early after
//! calling [`skip`]: the reason goes straight to the terminal (past libtest's output capture)
//! and into a record `cargo xtask test` counts in its closing line, so a skip is never
//! mistaken for a pass.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;

/// Where skipped tests are recorded, one line each: `test name: reason`.
pub fn skip_record() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt")
}

/// Reports the calling test as skipped, and why.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("a test");
    let line = format!("{name}: {reason}");
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {line}");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(skip_record()) {
        let _ = writeln!(f, "{line}");
    }
}

/// True (after reporting the skip) when the test cannot run because this is not root:
/// BPF programs and network namespaces need it.
pub fn skip_unless_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    skip("needs root (loads BPF programs, builds network namespaces): run `sudo cargo xtask test`");
    true
}

/// `../shared/<rel>` beside the checkout, if it is there: the shared material CI has and a
/// newcomer's clone does not. Absent, the caller skips what needs it with a printed note.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel);
    path.is_file().then_some(path)
}

/// `../shared/<rel>` as a directory, like [`shared_file`].
pub fn shared_dir(rel: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel);
    path.is_dir().then_some(path)
}
