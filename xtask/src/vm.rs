//! `cargo xtask vm-test`: boots a Debian kernel under QEMU (TCG) with an initramfs holding
//! busybox and the release `drlb`, which loads its dataplane there (the kernel's verifier
//! must accept it) and replays traffic through it with every verdict checked
//! (`drlb bench --quick --no-live`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

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

/// apt options that read a private sources list (bullseye for 5.10) without touching the
/// machine's.
fn apt_side_list(dir: &Path, suite: &str) -> Result<Vec<String>> {
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial"))?;
    let sources = dir.join("sources.list");
    std::fs::write(&sources, format!("deb http://deb.debian.org/debian {suite} main\n"))?;
    let opts = vec![
        format!("-oDir::Etc::sourcelist={}", sources.display()),
        "-oDir::Etc::sourceparts=-".to_string(),
        format!("-oDir::State::Lists={}", lists.display()),
    ];
    output(Command::new("apt-get").arg("-qq").args(&opts).arg("update")).map_err(|e| cannot(format!("apt-get update for {suite}: {e:#}")))?;
    Ok(opts)
}

/// Downloads and unpacks the newest Debian `linux-image-<series>-*-amd64`; returns vmlinuz.
fn kernel(cache: &Path, series: &str) -> Result<PathBuf> {
    let suite = match series {
        "5.10" => "bullseye",
        "6.1" => "bookworm",
        other => bail!("no Debian kernel series {other} (5.10 or 6.1)"),
    };
    let dir = cache.join(format!("kernel-{series}"));
    if let Some(v) = std::fs::read_dir(dir.join("boot")).ok().and_then(|mut d| d.find_map(|e| {
        let p = e.ok()?.path();
        p.file_name()?.to_str()?.starts_with("vmlinuz-").then_some(p)
    })) {
        return Ok(v);
    }
    let opts = apt_side_list(&cache.join(format!("apt-{suite}")), suite)?;
    let pattern = format!("^linux-image-{}.0-[0-9]+-amd64$", series);
    let found = output(Command::new("apt-cache").args(&opts).args(["search", "--names-only", &pattern]))?;
    let mut names: Vec<&str> = found.lines().filter_map(|l| l.split_whitespace().next()).collect();
    names.sort_by_key(|n| n.split('-').nth(3).and_then(|x| x.parse::<u32>().ok()).unwrap_or(0));
    let name = names.last().ok_or_else(|| cannot(format!("no {pattern} in Debian {suite}")))?.to_string();
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    eprintln!("vm-test: downloading {name} from Debian {suite}");
    output(Command::new("apt-get").current_dir(&debs).arg("-qq").args(&opts).args(["download", &name]))
        .map_err(|e| cannot(format!("downloading {name}: {e:#}")))?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{name}_"))))
        .ok_or_else(|| cannot(format!("{name} was not downloaded")))?;
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    kernel(cache, series)
}

/// An initramfs with busybox, `drlb` and the libraries it links.
fn initramfs(cache: &Path, drlb: &Path) -> Result<PathBuf> {
    let root = cache.join("initramfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "tmp", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| cannot(format!("/bin/busybox (busybox-static): {e}")))?;
    std::fs::copy(drlb, root.join("drlb"))?;
    for lib in output(Command::new("ldd").arg(drlb))?.split_whitespace().filter(|w| w.starts_with('/')) {
        let dst = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().expect("a parent"))?;
        std::fs::copy(lib, &dst).with_context(|| format!("copying {lib}"))?;
    }
    let init = root.join("init");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         mount -t bpf bpf /sys/fs/bpf\nmount -t tmpfs tmp /tmp\nmount -t devtmpfs dev /dev\n\
         echo \"drlb-vm: kernel $(uname -r) $(uname -m)\"\n\
         /drlb bench --quick --no-live --runs 5 --out /tmp/b > /tmp/out 2>&1\nrc=$?\ncat /tmp/out\n\
         echo \"drlb-vm: exit $rc\"\npoweroff -f\n",
    )?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let image = cache.join("initramfs.cpio.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && find . | cpio -o -H newc 2>/dev/null | gzip -1 > {}", root.display(), image.display()))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }
    Ok(image)
}

/// Boots `series` (x86_64) and runs drlb there. `Err(CannotRun)` when the machine cannot
/// do it (download, QEMU, boot time-out); any other `Err` is a failure of drlb's.
pub fn run(series: &str, arch: &str, drlb: &Path) -> Result<String> {
    if arch != "x86_64" {
        return Err(cannot(format!(
            "{arch} guests are not wired up yet: the aarch64 binary builds (cargo xtask build --release --target aarch64-unknown-linux-gnu) but booting it needs qemu-system-aarch64 with an arm64 kernel"
        )));
    }
    if Command::new("qemu-system-x86_64").arg("--version").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
        return Err(cannot("qemu-system-x86_64 is not installed (cargo xtask setup installs it)"));
    }
    let cache = workspace_root().join("target/vm");
    std::fs::create_dir_all(&cache)?;
    let vmlinuz = kernel(&cache, series)?;
    let image = initramfs(&cache, drlb)?;
    eprintln!("vm-test: booting {} under QEMU (TCG)", vmlinuz.display());
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-m", "1024", "-smp", "1", "-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
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
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(cannot("the guest did not finish within 300 s"));
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
    if rc.trim() != "0" {
        bail!("drlb failed on {series} ({banner}):\n{console}");
    }
    Ok(banner)
}
