//! Builds lb-ebpf for the BPF target with nightly (via aya-build) and leaves the object in
//! OUT_DIR, where `include_bytes_aligned!` embeds it into `drlb`.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("lb-userspace has no parent directory"))?
        .join("lb-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    // The commit benchmark reports name, for binaries run where there is no git.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DRLB_COMMIT={commit}");
    // Rebuild when HEAD moves, or reports would name the commit of an older build. Only
    // files that exist: cargo reruns a script on every build for a missing one.
    let git_dir = std::path::Path::new(&manifest_dir).join("../.git");
    let head = git_dir.join("HEAD");
    let reference = std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref: ").map(|r| git_dir.join(r.trim())));
    for path in [Some(head), reference, Some(git_dir.join("packed-refs"))].into_iter().flatten() {
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
