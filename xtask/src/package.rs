//! `cargo xtask package [--target T]`: drlb's .deb (cargo-deb) and .rpm (cargo-generate-rpm)
//! from the metadata in lb-userspace/Cargo.toml, with a statically linked binary (one
//! package runs on any glibc: openEuler 22.03's 2.34, Debian's), man pages and shell
//! completions generated from the clap definitions. And what `cargo xtask test` checks of
//! them: their contents, scripts, dependencies and architecture, and on this machine an
//! install of the .deb, the installed `drlb` at work, and a purge that leaves nothing but
//! what policy keeps.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::{describe, run_cmd, workspace_root};

/// The packaging tools, at the versions the metadata was written for.
pub const TOOLS: [(&str, &str); 2] = [("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];

/// Where the packages are written.
pub fn out_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// A target's names in each packaging world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub triple: &'static str,
    pub deb: &'static str,
    pub rpm: &'static str,
    /// ELF e_machine of its binaries.
    pub elf_machine: u16,
}

pub const X86_64: Arch = Arch { triple: "x86_64-unknown-linux-gnu", deb: "amd64", rpm: "x86_64", elf_machine: 0x3e };
pub const AARCH64: Arch = Arch { triple: "aarch64-unknown-linux-gnu", deb: "arm64", rpm: "aarch64", elf_machine: 0xb7 };

impl Arch {
    pub fn from_triple(triple: Option<&str>) -> Result<Arch> {
        match triple {
            None => Ok(Arch::host()),
            Some(t) => [X86_64, AARCH64].into_iter().find(|a| a.triple == t).with_context(|| {
                format!("no packages for {t}: x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu")
            }),
        }
    }

    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") { AARCH64 } else { X86_64 }
    }
}

/// The two packages of one architecture.
#[derive(Debug)]
pub struct Packages {
    pub arch: Arch,
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

/// Files both packages must install (the unit's directory differs: checked apart).
const FILES: &[&str] = &[
    "/usr/sbin/drlb",
    "/etc/drlb/drlb.yaml",
    "/usr/lib/sysusers.d/drlb.conf",
    "/usr/lib/tmpfiles.d/drlb.conf",
    "/usr/share/doc/drlb/examples/keepalived-vrrp.conf",
    "/usr/share/doc/drlb/examples/bird-director.conf",
    "/usr/share/drlb/grafana/drlb.json",
    "/usr/share/drlb/prometheus/drlb-rules.yml",
    "/usr/share/man/man8/drlb.8",
    "/usr/share/man/man8/drlb-run.8",
    "/usr/share/bash-completion/completions/drlb",
    "/usr/share/fish/vendor_completions.d/drlb.fish",
];

/// Installs the packaging tools that are missing (`cargo install --locked`, printed).
pub fn ensure_tools() -> Result<()> {
    for (tool, version) in TOOLS {
        let sub = tool.trim_start_matches("cargo-");
        let have = Command::new("cargo").args([sub, "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
        if have {
            eprintln!("setup: {tool} present");
            continue;
        }
        eprintln!("setup: installing {tool} {version} (builds the packages; a few minutes)");
        run_cmd(Command::new("cargo").args(["install", "--locked", tool, "--version", version]))?;
    }
    Ok(())
}

/// Builds the .deb and the .rpm for `arch` into [`out_dir`].
pub fn build(arch: Arch) -> Result<Packages> {
    ensure_tools()?;
    let release = crate::build_static(arch.triple)?;
    // Man pages and completions come from the clap definitions: a binary that runs here
    // writes them (the same definitions whatever the target).
    let host_drlb = if arch == Arch::host() { release.join("drlb") } else { crate::build(false, None)?.join("drlb") };
    generate_docs(&host_drlb, &release.join("generated"))?;
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    let version = env!("CARGO_PKG_VERSION");
    for old in std::fs::read_dir(&out)?.flatten() {
        let name = old.file_name().to_string_lossy().into_owned();
        if name.contains(arch.deb) || name.contains(arch.rpm) {
            std::fs::remove_file(old.path())?;
        }
    }
    run_cmd(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["deb", "-p", "lb-userspace", "--no-build", "--no-strip", "--target", arch.triple, "--output"])
            .arg(&out),
    )?;
    run_cmd(
        Command::new("cargo")
            .current_dir(workspace_root())
            .args(["generate-rpm", "-p", "lb-userspace", "--target", arch.triple, "-o"])
            .arg(&out),
    )?;
    let find = |ext: &str, tag: &str| -> Result<PathBuf> {
        std::fs::read_dir(&out)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                n.ends_with(ext) && n.contains(tag) && n.contains(version)
            })
            .with_context(|| format!("no {ext} for {tag} in {}", out.display()))
    };
    let packages = Packages { arch, deb: find(".deb", arch.deb)?, rpm: find(".rpm", arch.rpm)? };
    println!("package: {}\npackage: {}", packages.deb.display(), packages.rpm.display());
    Ok(packages)
}

/// `drlb manpages` and `drlb completions` into `dir`/man and `dir`/completions.
fn generate_docs(drlb: &Path, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    run_cmd(Command::new(drlb).arg("manpages").arg("--out").arg(dir.join("man")))?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [("bash", "drlb.bash"), ("zsh", "_drlb"), ("fish", "drlb.fish")] {
        let out = Command::new(drlb).args(["completions", shell]).output()?;
        ensure!(out.status.success() && !out.stdout.is_empty(), "drlb completions {shell} failed");
        std::fs::write(completions.join(file), out.stdout)?;
    }
    Ok(())
}

fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {}", describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", describe(cmd), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the packages hold and declare: files, config files, scripts, dependencies,
/// architecture (also of the binary inside). Returns one line per package.
pub fn check(p: &Packages) -> Result<Vec<String>> {
    let mut report = Vec::new();

    // The .rpm, with rpm's own queries.
    let rpm = |args: &[&str]| stdout_of(Command::new("rpm").args(args).arg(&p.rpm));
    let info = rpm(&["-qip"])?;
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches([' ', ':']).trim().to_string()));
    ensure!(field("Name").as_deref() == Some("drlb"), "rpm Name: {info}");
    ensure!(field("Architecture").as_deref() == Some(p.arch.rpm), "rpm Architecture is not {}: {info}", p.arch.rpm);
    let files = rpm(&["-qlp"])?;
    let rpm_files: Vec<&str> = files.lines().collect();
    for f in FILES.iter().chain(&["/usr/lib/systemd/system/drlb.service", "/usr/share/zsh/site-functions/_drlb"]) {
        ensure!(rpm_files.contains(f), "the .rpm lacks {f}; it has:\n{files}");
    }
    let config = rpm(&["-qcp"])?;
    ensure!(config.lines().any(|l| l == "/etc/drlb/drlb.yaml"), "the .rpm does not mark /etc/drlb/drlb.yaml as config: {config}");
    let noreplace = stdout_of(Command::new("rpm").args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"]).arg(&p.rpm))?;
    ensure!(
        noreplace.lines().any(|l| l.starts_with("/etc/drlb/drlb.yaml ") && l.contains('n')),
        "/etc/drlb/drlb.yaml is not %config(noreplace): {noreplace}"
    );
    let scripts = rpm(&["-qp", "--scripts"])?;
    for (needle, why) in [
        ("useradd --system", "preinstall creates the drlb user"),
        ("systemd-tmpfiles --create drlb.conf", "postinstall makes the pin directory drlb's"),
        ("kill -USR2", "an upgrade hands the running dataplane over"),
        ("check --handover", "an upgrade checks the new binary can take the dataplane over"),
        ("disable --now drlb.service", "an erase stops the service"),
        ("drlb stop --config", "an erase removes a dataplane no controller runs"),
        ("rm -rf /run/drlb", "an erase removes the run-time state"),
    ] {
        ensure!(scripts.contains(needle), "the .rpm's scripts lack `{needle}` ({why}):\n{scripts}");
    }
    let requires = rpm(&["-qpR"])?;
    // rpm adds rpmlib() features, the config files' own provide and /bin/sh per script.
    let mut needs: Vec<&str> = requires.lines().map(str::trim).filter(|r| !r.starts_with("rpmlib(") && !r.starts_with("config(drlb)")).collect();
    needs.sort();
    needs.dedup();
    ensure!(needs == ["/bin/sh", "/usr/sbin/useradd"], "unexpected .rpm requirements: {needs:?}");
    report.push(format!(
        "{}: {} {}, {} files, config /etc/drlb/drlb.yaml (noreplace), requires {}, scripts: user, tmpfiles, upgrade hand-over, stop on erase",
        p.rpm.file_name().unwrap_or_default().to_string_lossy(),
        field("Name").unwrap_or_default(),
        field("Architecture").unwrap_or_default(),
        rpm_files.len(),
        needs.join(", ")
    ));

    // The .deb, with dpkg-deb.
    let deb = |args: &[&str]| stdout_of(Command::new("dpkg-deb").args(args).arg(&p.deb));
    let arch = stdout_of(Command::new("dpkg-deb").arg("-f").arg(&p.deb).arg("Architecture"))?;
    ensure!(arch.trim() == p.arch.deb, "the .deb's Architecture is {arch:?}, not {}", p.arch.deb);
    // No shared library (the binary is static); systemd-sysusers for the user.
    let depends = stdout_of(Command::new("dpkg-deb").arg("-f").arg(&p.deb).arg("Depends"))?;
    ensure!(depends.trim() == "systemd | systemd-sysusers | systemd-standalone-sysusers", "the .deb depends on {depends:?}");
    let contents = deb(&["-c"])?;
    let deb_files: Vec<String> = contents.lines().filter_map(|l| l.split_whitespace().nth(5)).map(|p| p.trim_start_matches('.').to_string()).collect();
    let unit = deb_files.iter().find(|f| f.ends_with("/systemd/system/drlb.service")).with_context(|| format!("the .deb has no drlb.service:\n{contents}"))?;
    for f in FILES.iter().chain(&["/usr/share/zsh/vendor-completions/_drlb"]) {
        let gz = format!("{f}.gz");
        ensure!(deb_files.iter().any(|d| d == f || *d == gz), "the .deb lacks {f}; it has:\n{contents}");
    }
    let conffiles = stdout_of(Command::new("dpkg-deb").arg("-I").arg(&p.deb).arg("conffiles"))?;
    ensure!(conffiles.lines().any(|l| l.trim() == "/etc/drlb/drlb.yaml"), "/etc/drlb/drlb.yaml is not a conffile: {conffiles}");
    let postinst = stdout_of(Command::new("dpkg-deb").arg("-I").arg(&p.deb).arg("postinst"))?;
    for needle in ["useradd --system", "systemd-tmpfiles --create drlb.conf", "daemon-reload", "check --handover", "kill -USR2", "deb-systemd-helper"] {
        ensure!(postinst.contains(needle), "the .deb's postinst lacks `{needle}`:\n{postinst}");
    }
    let prerm = stdout_of(Command::new("dpkg-deb").arg("-I").arg(&p.deb).arg("prerm"))?;
    for needle in ["deb-systemd-invoke stop drlb.service", "drlb stop --config"] {
        ensure!(prerm.contains(needle), "the .deb's prerm lacks `{needle}`:\n{prerm}");
    }
    // Both packages install the same files (the .deb adds its copyright file and puts
    // zsh's completion where Debian's zsh looks).
    let deb_set: std::collections::BTreeSet<String> = deb_files
        .iter()
        .filter(|f| !f.ends_with('/') && *f != "/usr/share/doc/drlb/copyright")
        .map(|f| f.trim_end_matches(".gz").replace("/usr/share/zsh/vendor-completions/", "/usr/share/zsh/site-functions/"))
        .collect();
    let rpm_set: std::collections::BTreeSet<String> = rpm_files.iter().map(|f| f.trim_end_matches(".gz").to_string()).collect();
    ensure!(deb_set == rpm_set, "the .deb and the .rpm install different files: only in the .deb {:?}, only in the .rpm {:?}", deb_set.difference(&rpm_set).collect::<Vec<_>>(), rpm_set.difference(&deb_set).collect::<Vec<_>>());
    // The binary inside is for the package's architecture, and static.
    let scratch = out_dir().join(format!("check-{}", p.arch.deb));
    let _ = std::fs::remove_dir_all(&scratch);
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&p.deb).arg(&scratch))?;
    let elf = std::fs::read(scratch.join("usr/sbin/drlb"))?;
    let _ = std::fs::remove_dir_all(&scratch);
    ensure!(elf.len() > 64 && &elf[..4] == b"\x7fELF", "usr/sbin/drlb is not an ELF file");
    let machine = u16::from_le_bytes([elf[18], elf[19]]);
    ensure!(machine == p.arch.elf_machine, "usr/sbin/drlb is for ELF machine {machine:#x}, not {:#x}", p.arch.elf_machine);
    ensure!(!has_interpreter(&elf), "usr/sbin/drlb asks for a dynamic loader (PT_INTERP): not static");
    report.push(format!(
        "{}: {}, {} entries, unit {unit}, conffile /etc/drlb/drlb.yaml, depends on {}, static {} binary",
        p.deb.file_name().unwrap_or_default().to_string_lossy(),
        p.arch.deb,
        deb_files.len(),
        depends.trim(),
        p.arch.rpm
    ));
    Ok(report)
}

/// True when a 64-bit little-endian ELF file has a PT_INTERP program header (a dynamic
/// loader to run it).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]])) as usize;
    let Some(phoff) = elf.get(0x20..0x28).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return false };
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| elf.get(phoff + i * size..phoff + i * size + 4) == Some(&3u32.to_le_bytes()[..]))
}

/// Installs the .deb here with apt, runs the installed drlb (`check` on the shipped config,
/// `selftest --lab`), and purges it: every file it installed must be gone, and
/// /etc/drlb and /run/drlb with them; the drlb user stays (Debian policy). Needs root.
pub fn install_test(p: &Packages) -> Result<Vec<String>> {
    ensure!(p.arch == Arch::host(), "the .deb for {} cannot be installed on this machine", p.arch.deb);
    let mut report = Vec::new();
    let status = |pkg: &str| stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg])).unwrap_or_default();
    let installed = |pkg: &str| status(pkg).contains("ok installed");
    // Anything dpkg knows of (installed, half-configured, config files left): purged first.
    let known = status("drlb");
    if !known.is_empty() && !known.contains("not-installed") {
        println!("package: drlb is known to dpkg already ({known}; a previous run?): purging it first");
        run_cmd(Command::new("apt-get").args(["purge", "-y", "-qq", "drlb"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let deb = std::fs::canonicalize(&p.deb)?;
    let files: Vec<String> = stdout_of(Command::new("dpkg-deb").arg("-c").arg(&deb))?
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    // What was here before the package is not the package's to remove.
    let before: Vec<&str> = ["/etc/drlb", "/run/drlb", "/sys/fs/bpf/drlb"].into_iter().filter(|d| Path::new(d).exists()).collect();
    let result = (|| -> Result<()> {
        run_cmd(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).arg(&deb).env("DEBIAN_FRONTEND", "noninteractive"))?;
        ensure!(installed("drlb"), "apt-get install succeeded but dpkg does not list drlb as installed");
        let user = stdout_of(Command::new("getent").args(["passwd", "drlb"]))?;
        ensure!(user.contains("/usr/sbin/nologin"), "the drlb user is not a nologin system user: {user}");
        let uid: u32 = user.split(':').nth(2).unwrap_or("").parse().context("drlb's uid")?;
        ensure!(uid < 1000, "the drlb user is not a system user (uid {uid})");
        report.push(format!("installed: user drlb (uid {uid}), {}", stdout_of(Command::new("/usr/sbin/drlb").arg("--version"))?.trim()));
        let check = stdout_of(Command::new("/usr/sbin/drlb").args(["check", "--config", "/etc/drlb/drlb.yaml"]))?;
        report.push(format!("installed drlb check: {}", check.trim()));
        let selftest = stdout_of(Command::new("/usr/sbin/drlb").args(["selftest", "--lab"]))?;
        for line in selftest.lines().filter(|l| l.starts_with("selftest")) {
            report.push(format!("installed drlb {line}"));
        }
        ensure!(Path::new("/usr/share/man/man8/drlb.8.gz").exists() || Path::new("/usr/share/man/man8/drlb.8").exists(), "no man page installed");
        // An upgrade (here: the same version again) keeps the operator's config.
        let config = Path::new("/etc/drlb/drlb.yaml");
        let edited = format!("{}# edited by the operator\n", std::fs::read_to_string(config)?);
        std::fs::write(config, &edited)?;
        run_cmd(Command::new("apt-get").args(["install", "--reinstall", "-y", "-qq"]).arg(&deb).env("DEBIAN_FRONTEND", "noninteractive"))?;
        ensure!(std::fs::read_to_string(config)? == edited, "reinstalling replaced the edited {}", config.display());
        report.push(format!("reinstalled: the edited {} was kept", config.display()));
        // The pin directory is drlb's (tmpfiles.d), where systemd-tmpfiles and bpffs are.
        let pins = Path::new("/sys/fs/bpf/drlb");
        if Command::new("systemd-tmpfiles").arg("--version").output().is_ok() && crate::setup::bpffs_mounted() {
            use std::os::unix::fs::MetadataExt as _;
            let owner = std::fs::metadata(pins).with_context(|| format!("{} was not made on install", pins.display()))?.uid();
            ensure!(owner == uid, "{} belongs to uid {owner}, not drlb ({uid})", pins.display());
            report.push(format!("installed: {} is drlb's (tmpfiles.d)", pins.display()));
        }
        Ok(())
    })();
    // Purged whatever happened above: the machine is left as it was.
    let purged = run_cmd(Command::new("apt-get").args(["purge", "-y", "-qq", "drlb"]).env("DEBIAN_FRONTEND", "noninteractive"));
    match (result, purged) {
        (Err(e), Err(p)) => bail!("{e:#}; and then the purge failed too: {p:#}"),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(())) => {}
    }
    ensure!(!installed("drlb"), "drlb is still installed after apt-get purge");
    let left: Vec<&String> = files.iter().filter(|f| Path::new(f).exists()).collect();
    ensure!(left.is_empty(), "apt-get purge left installed files: {left:?}");
    for dir in ["/etc/drlb", "/run/drlb", "/sys/fs/bpf/drlb"].into_iter().filter(|d| !before.contains(d)) {
        ensure!(!Path::new(dir).exists(), "apt-get purge left {dir}");
    }
    let user_kept = Command::new("getent").args(["passwd", "drlb"]).output().map(|o| o.status.success()).unwrap_or(false);
    report.push(format!(
        "purged: none of its {} files left, nor /etc/drlb, /run/drlb or /sys/fs/bpf/drlb; the drlb user {} (Debian policy keeps system users)",
        files.len(),
        if user_kept { "stays" } else { "is gone" }
    ));
    Ok(report)
}
