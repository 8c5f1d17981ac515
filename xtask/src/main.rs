//! drlb's developer entry points. Every command that needs the toolchain or the lab's
//! tools runs `setup` first, which installs only what is missing and says what it does.

mod package;
mod setup;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "drlb developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker) and mount bpffs.
    Setup,
    /// Build `drlb` with the XDP dataplane embedded.
    Build {
        #[arg(long)]
        release: bool,
        /// e.g. aarch64-unknown-linux-gnu for Kunpeng directors.
        #[arg(long)]
        target: Option<String>,
    },
    /// Build and run `drlb` with the given arguments, e.g. `cargo xtask run -- run --config FILE`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, property, dataplane fixtures (BPF_PROG_TEST_RUN), config, netns lab.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the netns lab, send 100 HTTP requests through drlb, tear it down.
    Demo {
        /// native or generic XDP on the director.
        #[arg(long, default_value = "native")]
        mode: String,
        /// Two directors with keepalived and connection sync: the master fails, every
        /// connection goes on through the backup.
        #[arg(long)]
        ha: bool,
        /// Three directors behind a router doing ECMP, each announcing the VIP over BGP
        /// (BIRD); one is drained and comes back, every connection goes on.
        #[arg(long, conflicts_with = "ha")]
        ecmp: bool,
    },
    /// Clippy over the BPF crate for its target (every unsafe block says why it is sound).
    Lint,
    /// Boot Debian kernels under QEMU and check drlb's dataplane loads and decides there.
    VmTest {
        /// 5.10 or 6.1; all of them when not given.
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long, default_value = "x86_64")]
        arch: String,
    },
    /// Build drlb's .deb and .rpm into target/dist (static binary, unit, config, man pages,
    /// completions, examples, dashboard and alert rules) and check what they hold.
    Package {
        /// aarch64-unknown-linux-gnu for Kunpeng directors (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        /// Also install the .deb here, run the installed drlb and purge it (what
        /// `cargo xtask test` does; needs root).
        #[arg(long)]
        install: bool,
    },
    /// Packet-replay benchmark against floors measured in the same run (`drlb bench`).
    Bench {
        /// Arguments for `drlb bench` (e.g. --quick, --pcap FILE, --json).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd.current_dir(workspace_root()).status().with_context(|| format!("starting {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through; returns every test binary's results
/// summed (passed, failed). Fails if cargo test failed.
fn run_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: $ {}", describe(cmd));
    let mut child = cmd
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(kind)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) {
                    match kind {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("tests: {passed} passed, {failed} failed");
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok((passed, failed))
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds lb-userspace's binaries; returns the directory holding them.
fn build(release: bool, target: Option<&str>) -> Result<PathBuf> {
    build_with(release, target, cargo())
}

/// Builds statically linked release binaries for `target`, as the VM guests run them (no C
/// library in their initramfs). aarch64 is always static (.cargo/config.toml); for x86_64
/// an explicit `--target` keeps build scripts and proc macros dynamic.
fn build_static(target: &str) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.env(format!("CARGO_TARGET_{}_RUSTFLAGS", target.to_uppercase().replace('-', "_")), "-C target-feature=+crt-static");
    build_with(true, Some(target), cmd)
}

fn build_with(release: bool, target: Option<&str>, mut cmd: Command) -> Result<PathBuf> {
    // drlb, and the test lab's drlb-lab (the demo runs it).
    cmd.args(["build", "--package", "lb-userspace", "--bins"]);
    if target.is_none() {
        cmd.args(["--package", "drlb-lab"]);
    }
    if release {
        cmd.arg("--release");
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    run_cmd(&mut cmd)?;
    let mut dir = workspace_root().join("target");
    if let Some(t) = target {
        dir = dir.join(t);
    }
    Ok(dir.join(if release { "release" } else { "debug" }))
}

/// Runs the VM tests; a machine that cannot run one says so plainly and is not a failure.
/// Returns (passed, could not run).
fn vm_tests(kernels: &[&str], arch: &str) -> Result<(u64, u64)> {
    let cross = (arch == "aarch64").then(|| "aarch64-unknown-linux-gnu".to_string());
    setup::ensure(&setup::Needs { vm: true, cross_target: cross.clone(), ..Default::default() })?;
    let dir = build_static(cross.as_deref().unwrap_or("x86_64-unknown-linux-gnu"))?;
    let (mut passed, mut skipped) = (0, 0);
    for k in kernels {
        match vm::run(k, arch, &dir.join("drlb")) {
            Ok(banner) => {
                println!("vm-test {k} {arch}: PASS ({banner}; dataplane loaded, checked replay passed)");
                passed += 1;
            }
            Err(e) if e.downcast_ref::<vm::CannotRun>().is_some() => {
                println!("vm-test {k} {arch}: CANNOT RUN here: {e}");
                skipped += 1;
            }
            Err(e) => bail!("vm-test {k} {arch}: FAIL: {e:#}"),
        }
    }
    Ok((passed, skipped))
}

/// Clippy over the BPF crate for its target: every `unsafe` block there carries a
/// `// SAFETY:` line (`#![deny(clippy::undocumented_unsafe_blocks)]` in each program).
/// `cargo xtask lint`; `cargo xtask test` checks the same rule without clippy
/// (tests/bpf_safety_comments.rs).
fn lint_bpf_unsafe() -> Result<()> {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "clippy", "--quiet", "--target", "bpfel-unknown-none", "-Z", "build-std=core", "--bins", "--release"])
        .arg("--target-dir")
        .arg(workspace_root().join("target/clippy-ebpf"))
        .current_dir(workspace_root().join("lb-ebpf"))
        // A cargo of its own: nothing of the cargo that runs xtask (its CARGO_*, RUSTC*,
        // RUSTUP_TOOLCHAIN) may leak in and build host crates for the BPF target.
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| {
            k == "CARGO_HOME" || !(k.starts_with("CARGO") || k.starts_with("RUSTC") || k == "RUSTUP_TOOLCHAIN" || k == "RUSTFLAGS")
        }));
    run_cmd(&mut cmd).context("clippy over lb-ebpf (undocumented unsafe blocks are errors there)")?;
    println!("lint: lb-ebpf: every unsafe block has a SAFETY comment");
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (BPF, network namespaces): run it with sudo");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::ensure(&setup::Needs::default()),
        Cmd::Build { release, target } => {
            setup::ensure(&setup::Needs { cross_target: target.clone(), ..Default::default() })?;
            let dir = build(release, target.as_deref())?;
            println!("xtask: built {}", dir.join("drlb").display());
            Ok(())
        }
        Cmd::Run { release, args } => {
            setup::ensure(&setup::Needs::default())?;
            let dir = build(release, None)?;
            run_cmd(Command::new(dir.join("drlb")).args(&args))
        }
        Cmd::Test { args } => {
            require_root("cargo xtask test")?;
            setup::ensure(&setup::Needs::default())?;
            // Default members: lb-common, lb-userspace (with ../tests), xtask. lb-ebpf is
            // built for BPF by lb-userspace's build script and tested through it.
            let mut cmd = cargo();
            cmd.args(["test", "--workspace", "--exclude", "lb-ebpf"]).args(&args);
            // Integration tests that cannot run here record why (tests/support).
            let skip_record = workspace_root().join("target/tmp/skipped-tests.txt");
            let _ = std::fs::remove_file(&skip_record);
            let (mut passed, failed) = run_tests(&mut cmd)?;

            let skipped_tests: Vec<String> =
                std::fs::read_to_string(&skip_record).unwrap_or_default().lines().map(str::to_string).collect();
            for line in &skipped_tests {
                println!("skipped: {line}");
            }
            // A skipped test returned early and libtest counted it as passed.
            passed -= skipped_tests.len() as u64;
            let mut skipped = skipped_tests.len() as u64;
            if args.is_empty() {
                // The packages: what they hold, and the .deb installed, at work and purged.
                setup::ensure(&setup::Needs { packaging: true, ..Default::default() })?;
                let packages = package::build(package::Arch::host())?;
                for line in package::check(&packages)?.into_iter().chain(package::install_test(&packages)?) {
                    println!("package test: {line}");
                }
                passed += 1;
                let (p, s) = vm_tests(&["5.10", "6.1"], "x86_64")?;
                passed += p;
                skipped += s;
            }
            // The closing line counts every test binary's tests and the VM entries.
            println!("tests: {passed} passed, {failed} failed, {skipped} skipped");
            Ok(())
        }
        Cmd::Package { target, install } => {
            let arch = package::Arch::from_triple(target.as_deref())?;
            if install {
                require_root("cargo xtask package --install")?;
            }
            setup::ensure(&setup::Needs { cross_target: target.clone(), packaging: true, ..Default::default() })?;
            let packages = package::build(arch)?;
            for line in package::check(&packages)? {
                println!("package check: {line}");
            }
            if install {
                for line in package::install_test(&packages)? {
                    println!("package install: {line}");
                }
            }
            Ok(())
        }
        Cmd::Lint => {
            setup::ensure(&setup::Needs::default())?;
            lint_bpf_unsafe()
        }
        Cmd::VmTest { kernel, arch } => {
            require_root("cargo xtask vm-test")?;
            setup::ensure(&setup::Needs { vm: true, ..Default::default() })?;
            let kernels: Vec<&str> = match &kernel {
                Some(k) => vec![k.as_str()],
                None => vec!["5.10", "6.1"],
            };
            vm_tests(&kernels, &arch).map(|_| ())
        }
        Cmd::Demo { mode, ha, ecmp } => {
            require_root("cargo xtask demo")?;
            setup::ensure(&setup::Needs::default())?;
            let dir = build(false, None)?;
            let mut cmd = Command::new(dir.join("drlb-lab"));
            cmd.args(["demo", "--mode", &mode, "--drlb"]).arg(dir.join("drlb"));
            if ha {
                cmd.arg("--ha");
            }
            if ecmp {
                cmd.arg("--ecmp");
            }
            run_cmd(&mut cmd)
        }
        Cmd::Bench { args } => {
            require_root("cargo xtask bench")?;
            setup::ensure(&setup::Needs::default())?;
            let dir = build(true, None)?;
            run_cmd(Command::new(dir.join("drlb")).arg("bench").args(&args))
        }
    }
}
