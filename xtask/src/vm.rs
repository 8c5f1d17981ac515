//! `cargo xtask vm-test`: boots a Debian kernel under QEMU (TCG) with an initramfs holding
//! busybox and the release `drlb`, which loads its dataplane there (the kernel's verifier
//! must accept it) and replays traffic through it with every verdict checked
//! (`drlb bench --quick --no-live`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

/// The user the guest runs the fixture table as a second time, with only drlb.service's
/// capabilities (`drlb selftest --as-user`).
const UNPRIVILEGED_UID: u32 = 64_123;

/// How long a guest may take for all of `drlb selftest`.
const GUEST_LIMIT_S: u64 = 900;

use crate::{describe, workspace_root};

/// Why a VM test could not run (as opposed to failing).
#[derive(Debug)]
pub struct CannotRun(pub String);

impl std::fmt::Display for CannotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CannotRun {}

fn cannot(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CannotRun(msg.into()))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {}", describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed: {}", describe(cmd), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian's name for an architecture.
fn deb_arch(arch: &str) -> &'static str {
    if arch == "aarch64" { "arm64" } else { "amd64" }
}

/// apt options that read a private sources list (a suite and architecture of our choice)
/// without touching the machine's.
fn apt_side_list(dir: &Path, suite: &str, arch: &str) -> Result<Vec<String>> {
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))?;
    let sources = dir.join("sources.list");
    let a = deb_arch(arch);
    std::fs::write(&sources, format!("deb [arch={a}] http://deb.debian.org/debian {suite} main\n"))?;
    // An empty dpkg status: what this machine has installed must not decide the version
    // (apt would ask the suite for the host's own version of a library).
    let status = dir.join("status");
    std::fs::write(&status, "")?;
    let opts = vec![
        format!("-oDir::State::status={}", status.display()),
        format!("-oDir::Etc::sourcelist={}", sources.display()),
        "-oDir::Etc::sourceparts=-".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
        format!("-oAPT::Architecture={a}"),
        format!("-oAPT::Architectures={a}"),
    ];
    output(Command::new("apt-get").arg("-qq").args(&opts).arg("update")).map_err(|e| cannot(format!("apt-get update for {suite}: {e:#}")))?;
    Ok(opts)
}

/// Downloads and unpacks a Debian package of `arch` from `suite` into `dest`.
fn fetch_deb(cache: &Path, suite: &str, arch: &str, name: &str, dest: &Path) -> Result<()> {
    let opts = apt_side_list(&cache.join(format!("apt-{suite}-{arch}")), suite, arch)?;
    // One directory per suite: a file name does not say which suite it came from.
    let debs = cache.join(format!("debs-{suite}"));
    std::fs::create_dir_all(&debs)?;
    eprintln!("vm-test: downloading {name} ({}) from Debian {suite}", deb_arch(arch));
    output(Command::new("apt-get").current_dir(&debs).arg("-qq").args(&opts).args(["download", name]))
        .map_err(|e| cannot(format!("downloading {name}: {e:#}")))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(&format!("_{}.deb", deb_arch(arch))))
        })
        .ok_or_else(|| cannot(format!("{name} was not downloaded")))?;
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest))?;
    Ok(())
}

/// Downloads and unpacks the newest Debian `linux-image-<series>-*-<arch>`; returns vmlinuz.
fn kernel(cache: &Path, series: &str, arch: &str) -> Result<PathBuf> {
    let suite = match series {
        "5.10" => "bullseye",
        "6.1" => "bookworm",
        other => bail!("no Debian kernel series {other} (5.10 or 6.1)"),
    };
    let dir = cache.join(format!("kernel-{series}-{arch}"));
    if let Some(v) = std::fs::read_dir(dir.join("boot")).ok().and_then(|mut d| d.find_map(|e| {
        let p = e.ok()?.path();
        p.file_name()?.to_str()?.starts_with("vmlinuz-").then_some(p)
    })) {
        return Ok(v);
    }
    let opts = apt_side_list(&cache.join(format!("apt-{suite}-{arch}")), suite, arch)?;
    let pattern = format!("^linux-image-{}.0-[0-9]+-{}$", series, deb_arch(arch));
    let found = output(Command::new("apt-cache").args(&opts).args(["search", "--names-only", &pattern]))?;
    let mut names: Vec<&str> = found.lines().filter_map(|l| l.split_whitespace().next()).collect();
    names.sort_by_key(|n| n.split('-').nth(3).and_then(|x| x.parse::<u32>().ok()).unwrap_or(0));
    let name = names.last().ok_or_else(|| cannot(format!("no {pattern} in Debian {suite}")))?.to_string();
    fetch_deb(cache, suite, arch, &name, &dir)?;
    kernel(cache, series, arch)
}

/// The kernel modules the guest lab needs, in load order (Debian builds them as modules).
const LAB_MODULES: [&str; 4] = ["net/llc/llc.ko", "net/802/stp.ko", "net/bridge/bridge.ko", "drivers/net/veth.ko"];

/// IPVS and the scheduler the interop test uses; their dependencies come from modules.dep.
const IPVS_MODULES: [&str; 5] = [
    // libcrc32c asks the crypto API for "crc32c" when loaded (a softdep, not a depends).
    "crypto/crc32c_generic.ko",
    "net/netfilter/ipvs/ip_vs.ko",
    "net/netfilter/ipvs/ip_vs_wlc.ko",
    // `drlb selftest --ipvs-choices` compares drlb's sh and mh with the kernel's.
    "net/netfilter/ipvs/ip_vs_sh.ko",
    "net/netfilter/ipvs/ip_vs_mh.ko",
];

/// Debian packages (and what they need to run: the guest has no C library otherwise) for
/// `drlb selftest --ipvs-sync`: the kernel's IPVS driven by Debian's own ipvsadm.
const IPVSADM_DEBS: [&str; 5] = ["ipvsadm", "libnl-3-200", "libnl-genl-3-200", "libpopt0", "libc6"];

/// Every module file under `dir`, by module name (`-` and `_` are the same in names).
fn module_index(dir: &Path, out: &mut std::collections::HashMap<String, PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            module_index(&p, out);
        } else if let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
            out.insert(name.replace('-', "_"), p);
        }
    }
}

/// The `depends=` of a module file's .modinfo (the package has no modules.dep: depmod
/// makes it at install).
fn module_depends(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let needle = b"depends=";
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| {
            let rest = &bytes[i + needle.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end]).split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")).collect()
        })
        .unwrap_or_default()
}

/// The module file `path`, after every module it depends on.
fn with_dependencies(index: &std::collections::HashMap<String, PathBuf>, path: &Path, out: &mut Vec<PathBuf>) {
    if out.iter().any(|p| p == path) {
        return;
    }
    for d in module_depends(path) {
        if let Some(p) = index.get(&d) {
            with_dependencies(index, p, out);
        }
    }
    out.push(path.to_path_buf());
}

/// An initramfs with busybox, the statically linked `drlb`, the lab's and IPVS's modules
/// from the kernel package unpacked in `kernel_dir`, and Debian `suite`'s ipvsadm.
fn initramfs(cache: &Path, drlb: &Path, arch: &str, kernel_dir: &Path, suite: &str) -> Result<PathBuf> {
    let root = cache.join(format!("initramfs-{arch}"));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "tmp", "dev", "modules"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(drlb, root.join("drlb"))?;
    let release = std::fs::read_dir(kernel_dir.join("lib/modules"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path())
        .ok_or_else(|| cannot(format!("no lib/modules in {}", kernel_dir.display())))?;
    let mut insmods = String::new();
    let mut index = std::collections::HashMap::new();
    module_index(&release.join("kernel"), &mut index);
    let mut modules: Vec<PathBuf> = LAB_MODULES.iter().map(|m| release.join("kernel").join(m)).collect();
    for m in IPVS_MODULES {
        with_dependencies(&index, &release.join("kernel").join(m), &mut modules);
    }
    for m in &modules {
        let name = m.file_name().expect("a file name").to_string_lossy().to_string();
        std::fs::copy(m, root.join("modules").join(&name)).with_context(|| format!("copying module {}", m.display()))?;
        insmods += &format!("insmod /modules/{name}\n");
    }
    for deb in IPVSADM_DEBS {
        fetch_deb(cache, suite, arch, deb, &root)?;
    }
    // `drlb` is statically linked: busybox is the only other program in the image.
    let busybox = if arch == "aarch64" {
        let bb = cache.join("busybox-arm64");
        if !bb.join("bin/busybox").exists() {
            fetch_deb(cache, "bookworm", arch, "busybox-static", &bb)?;
        }
        bb.join("bin/busybox")
    } else {
        PathBuf::from("/bin/busybox")
    };
    std::fs::copy(&busybox, root.join("bin/busybox")).map_err(|e| cannot(format!("{} (busybox-static): {e}", busybox.display())))?;
    let linkage = output(Command::new("file").arg("-L").arg(drlb)).unwrap_or_default();
    if linkage.contains("dynamically linked") {
        bail!("{} is dynamically linked; the guest has no C library", drlb.display());
    }
    let init = root.join("init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         mount -t bpf bpf /sys/fs/bpf\nmount -t tmpfs tmp /tmp\nmount -t devtmpfs dev /dev\n\
         echo \"drlb-vm: kernel $(uname -r) $(uname -m)\"\n\
         {insmods}\
         mkdir -p /run\n\
         /drlb selftest --lab --fuzz 20000 > /tmp/out 2>&1 && /drlb bench --quick --no-live --runs 5 --out /tmp/b >> /tmp/out 2>&1 \
         && /drlb selftest --ipvs-sync --ipvs-choices >> /tmp/out 2>&1 \
         && /drlb selftest --as-user {UNPRIVILEGED_UID} >> /tmp/out 2>&1\nrc=$?\n\
         for c in CAP_BPF CAP_NET_ADMIN CAP_PERFMON; do /drlb selftest --as-user {UNPRIVILEGED_UID} --without $c > /tmp/w 2>&1; \
         r=$?; [ $r -ne 0 ] && grep -q \"lacks $c\" /tmp/w && echo \"drlb-vm: without $c: refused, naming it\"; done\n\
         grep -E 'selftest|fuzz|misses|meets|Error|error|panicked' /tmp/out\n\
         [ $rc -ne 0 ] && echo 'drlb-vm: the output ends:' && tail -n 40 /tmp/out | grep -v '^ok: row'\n\
         echo \"drlb-vm: exit $rc\"\npoweroff -f\n"),
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let image = cache.join(format!("initramfs-{arch}.cpio.gz"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc 2>/dev/null | gzip -1 > {}", root.display(), image.display()))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(image)
}

/// Boots `series` on `arch` (x86_64, or aarch64 for Kunpeng) and runs `drlb` — built for
/// that architecture — there. `Err(CannotRun)` when the machine cannot do it (download,
/// QEMU, boot time-out); any other `Err` is a failure of drlb's.
pub fn run(series: &str, arch: &str, drlb: &Path) -> Result<String> {
    let (qemu, machine, console): (&str, &[&str], &str) = match arch {
        "x86_64" => ("qemu-system-x86_64", &[], "ttyS0"),
        "aarch64" => ("qemu-system-aarch64", &["-M", "virt", "-cpu", "cortex-a57"], "ttyAMA0"),
        other => bail!("no VM test for {other} (x86_64 or aarch64)"),
    };
    if Command::new(qemu).arg("--version").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
        return Err(cannot(format!("{qemu} is not installed (cargo xtask vm-test installs it)")));
    }
    let cache = workspace_root().join("target/vm");
    std::fs::create_dir_all(&cache)?;
    let vmlinuz = kernel(&cache, series, arch)?;
    let kernel_dir = vmlinuz.parent().and_then(Path::parent).expect("vmlinuz in <dir>/boot");
    let suite = if series == "5.10" { "bullseye" } else { "bookworm" };
    let image = initramfs(&cache, drlb, arch, kernel_dir, suite)?;
    eprintln!("vm-test: booting {} under QEMU (TCG)", vmlinuz.display());
    let mut child = Command::new(qemu)
        .args(machine)
        .args(["-m", "1024", "-smp", "1", "-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&image)
        .args(["-append", &format!("console={console} panic=-1 quiet")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| cannot(format!("starting QEMU: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut s);
        s
    });
    // Each load of the dataplane verifies four programs, two near a million instructions:
    // tens of seconds under TCG, and the guest loads it for the fixtures, the fuzzing, the
    // lab, sync and the choices.
    let deadline = std::time::Instant::now() + Duration::from_secs(GUEST_LIMIT_S);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // Not "cannot run": a guest that ran out of time ran, and failed.
            bail!("the guest did not finish within {GUEST_LIMIT_S} s; console so far is lost with it");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = reader.join().unwrap_or_default();
    let Some(rc) = console.lines().find_map(|l| l.trim().strip_prefix("drlb-vm: exit ")) else {
        return Err(cannot(format!("the guest never ran drlb; console:\n{console}")));
    };
    let banner = console
        .lines()
        .find_map(|l| l.find("drlb-vm: kernel").map(|i| l[i + "drlb-vm: ".len()..].trim().to_string()))
        .unwrap_or_default();
    // The lab's line per mode: "selftest lab: native mode: 40/40 HTTP requests ...".
    let lab: Vec<String> = ["native", "generic"]
        .iter()
        .filter_map(|mode| {
            let marker = format!("selftest lab: {mode} mode: ");
            console.lines().find_map(|l| {
                let i = l.find(&marker)?;
                let rest = &l[i + marker.len()..];
                let v6 = rest.find("IPv6: ").map(|j| rest[j + "IPv6: ".len()..].split(' ').next().unwrap_or("")).unwrap_or("?");
                Some(format!("{mode} {} (IPv6 {v6})", rest.split(' ').next().unwrap_or("")))
            })
        })
        .collect();
    let fuzz = console.lines().find_map(|l| l.find("fuzz: ").map(|i| l[i + "fuzz: ".len()..].split(" frames").next().unwrap_or("").to_string()));
    let ipvs: Vec<&str> = console.lines().filter_map(|l| l.find("selftest ipvs-sync: ").map(|i| &l[i + "selftest ipvs-sync: ".len()..])).collect();
    let choices: Vec<&str> = console.lines().filter_map(|l| l.find("selftest ipvs-choices: ").map(|i| &l[i + "selftest ipvs-choices: ".len()..])).collect();
    let unprivileged = console.lines().find_map(|l| l.find("selftest: as uid ").map(|i| l[i + "selftest: as ".len()..].trim().to_string()));
    // Each of drlb.service's capabilities left out in turn: the kernel refuses, drlb names it.
    let refused = console.lines().filter(|l| l.contains("drlb-vm: without CAP_") && l.contains("refused, naming it")).count();
    if rc.trim() != "0" || !console.contains("fixture rows passed") || unprivileged.is_none() || refused != 3 || lab.len() != 2 || fuzz.is_none() || ipvs.len() != 2 || choices.len() != 14 /* selftest::ipvs_choices::ROUND_COUNT */ {
        bail!("drlb failed on {series} ({banner}):\n{console}");
    }
    // One line per program the verifier checked, then the row count.
    let rows = console
        .lines()
        .filter_map(|l| l.find("selftest: ").map(|i| l[i + "selftest: ".len()..].trim().to_string()))
        .filter(|l| !l.starts_with("as uid"))
        .fold(Vec::<String>::new(), |mut seen, l| {
            // `drlb selftest` runs the table more than once: report each line once.
            if !seen.contains(&l) {
                seen.push(l);
            }
            seen
        })
        .join("; ");
    Ok(format!(
        "{banner}; {rows}; the table passed again {}, and without each of them the kernel refused and drlb named it; {} fuzzed frames identical in kernel and model; lab forwarded real TCP: {}; IPVS sync interop: {}; IPVS's choices: {}",
        unprivileged.unwrap_or_default(),
        fuzz.unwrap_or_default(),
        lab.join(", "),
        ipvs.join("; "),
        choices.join("; ")
    ))
}
