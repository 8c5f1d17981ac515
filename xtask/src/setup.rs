//! `cargo xtask setup`: installs what drlb's build, tests and lab need, only when missing.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{describe, run_cmd};

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22 for building bpf-linker"),
    ("libpolly-22-dev", "LLVM 22's Polly, linked by bpf-linker"),
    ("libzstd-dev", "zstd, linked by bpf-linker"),
    ("bpftool", "inspecting programs and maps"),
    ("iproute2", "the netns lab"),
    ("ethtool", "the lab's veth offload settings"),
    ("nginx-light", "the lab's real servers"),
    ("tcpdump", "the lab's proof that replies bypass the director"),
    ("iputils-ping", "the lab's ping of the director"),
    ("keepalived", "VRRP between the lab's two directors (keepalived --vrrp)"),
    ("bird2", "BGP between the ECMP lab's router and directors (BIRD 2)"),
    ("prometheus", "promtool, which checks configs/prometheus/drlb-rules.yml"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Extra things a command needs.
#[derive(Default)]
pub struct Needs {
    /// A cross-compilation target (adds its rustup target and C linker).
    pub cross_target: Option<String>,
    /// QEMU and what the VM tests' initramfs is made of.
    pub vm: bool,
    /// cargo-deb, cargo-generate-rpm and rpm (`cargo xtask package`).
    pub packaging: bool,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("setup: {}", msg.as_ref());
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {}", describe(cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn deb_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn install_debs(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = wanted.iter().filter(|(p, _)| !deb_installed(p)).collect();
    if missing.is_empty() {
        say(format!("Debian packages present: {}", wanted.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(" ")));
        return Ok(());
    }
    for (p, why) in &missing {
        say(format!("installing {p} ({why})"));
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    run_cmd(Command::new("apt-get").arg("update").arg("-qq"))
        .context("apt-get update failed (setup needs root and the Debian mirror)")?;
    run_cmd(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_toolchain(needs: &Needs) -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).context("rustup is required")?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain (builds the BPF object with -Z build-std)");
        run_cmd(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let components = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        say("nightly rust-src present");
    } else {
        say("adding rust-src to nightly (core is rebuilt for bpfel-unknown-none)");
        run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    if components.lines().any(|l| l.starts_with("clippy")) {
        say("nightly clippy present");
    } else {
        say("adding clippy to nightly (checks that every unsafe block in the BPF crate says why it is sound)");
        run_cmd(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    if let Some(target) = &needs.cross_target {
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
        if installed.lines().any(|l| l.trim() == target) {
            say(format!("rust target {target} present"));
        } else {
            say(format!("adding rust target {target}"));
            run_cmd(Command::new("rustup").args(["target", "add", target]))?;
        }
        if target.starts_with("aarch64-") && target.contains("linux-gnu") {
            install_debs(&[
                ("gcc-aarch64-linux-gnu", "linker for aarch64-unknown-linux-gnu"),
                ("libc6-dev-arm64-cross", "arm64 C runtime for linking"),
            ])?;
        }
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        say(format!("bpf-linker {BPF_LINKER_VERSION} present"));
        return Ok(());
    }
    say(format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"));
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run_cmd(Command::new("cargo").args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION]).env("PATH", path))
}

/// True when a BPF filesystem is mounted at /sys/fs/bpf.
pub fn bpffs_mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("bpf") && l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
}

fn bpffs() -> Result<()> {
    if bpffs_mounted() {
        say("bpffs mounted on /sys/fs/bpf");
        return Ok(());
    }
    say("mounting bpffs on /sys/fs/bpf");
    if !succeeds(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"])) {
        bail!("could not mount bpffs on /sys/fs/bpf (needs root)");
    }
    Ok(())
}

/// Idempotent: each step checks first and only acts on what is missing.
pub fn ensure(needs: &Needs) -> Result<()> {
    install_debs(PACKAGES)?;
    if needs.vm {
        install_debs(&[
            ("qemu-system-x86", "the VM tests boot Debian kernels"),
            ("qemu-system-arm", "the VM tests boot arm64 kernels (Kunpeng)"),
            ("busybox-static", "the VM tests' initramfs"),
            ("cpio", "packing the initramfs"),
        ])?;
    }
    if needs.packaging {
        install_debs(&[("rpm", "querying the .rpm (rpm -qip, -qlp)")])?;
        crate::package::ensure_tools()?;
    }
    rust_toolchain(needs)?;
    bpf_linker()?;
    bpffs()?;
    Ok(())
}
