//! The running controller of a dataplane, found through its pidfile: `drlb run` holds an
//! exclusive lock on `/run/drlb/<pin dir>.pid` for as long as it runs (the kernel drops the
//! lock when the process dies, however it dies), so `drlb reload` and `drlb stop` signal
//! exactly the controller of that dataplane, and a second `drlb run` for it is refused.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where pidfiles live.
pub const RUN_DIR: &str = "/run/drlb";

/// The pidfile of the controller of the dataplane pinned at `pin_dir`.
pub fn pidfile_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir.to_string_lossy().trim_start_matches('/').replace('/', "_");
    Path::new(RUN_DIR).join(format!("{name}.pid"))
}

/// A pidfile held (locked) by the running controller; removed when dropped.
pub struct Pidfile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Pidfile {
    /// Takes the pidfile of `pin_dir`'s controller, or fails naming the one that runs.
    pub fn take(pin_dir: &Path) -> Result<Pidfile> {
        let path = pidfile_path(pin_dir);
        std::fs::create_dir_all(RUN_DIR).with_context(|| format!("creating {RUN_DIR}"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "another `drlb run` (pid {}) runs the dataplane pinned at {} ({} is locked): stop it first, or give this one \
                     its own director.pin_root",
                    pid.trim(),
                    pin_dir.display(),
                    path.display()
                );
            }
        };
        lock.set_len(0)?;
        lock.rewind()?;
        write!(lock, "{}", std::process::id())?;
        lock.flush()?;
        Ok(Pidfile { path, _lock: lock })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid of the controller running `pin_dir`'s dataplane, if one runs.
pub fn running_controller(pin_dir: &Path) -> Result<Option<i32>> {
    let path = pidfile_path(pin_dir);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut pid = String::new();
    file.read_to_string(&mut pid).with_context(|| format!("reading {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: the controller that wrote it is gone.
        Ok(_) => Ok(None),
        Err(_) => Ok(pid.trim().parse().ok()),
    }
}

/// Sends `signal` to the controller of `pin_dir`'s dataplane; its pid, or None if none runs.
pub fn signal_controller(pin_dir: &Path, signal: Signal) -> Result<Option<i32>> {
    let Some(pid) = running_controller(pin_dir)? else { return Ok(None) };
    kill(Pid::from_raw(pid), signal).with_context(|| format!("signalling {pid}"))?;
    Ok(Some(pid))
}

/// `drlb stop`: SIGTERM to the controller using `config` (it removes the dataplane itself),
/// then removes whatever is still pinned (a controller that died leaves its pins).
pub fn stop(config: &Path) -> Result<String> {
    let cfg = crate::control::config::Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut report = Vec::new();
    let dir = cfg.director.pin_dir();
    // Refuses a dataplane another network namespace's drlb pinned at the same path.
    crate::kernel::pins::check_owner(&dir, &cfg.director.interface)?;
    if let Some(pid) = signal_controller(&dir, Signal::SIGTERM)? {
        // Behind ECMP routers the controller drains first (`director.announce.drain_timeout`).
        let drain = cfg.director.announce.as_ref().map_or(std::time::Duration::ZERO, |a| a.drain_timeout);
        let deadline = std::time::Instant::now() + drain + std::time::Duration::from_secs(15);
        while running_controller(&dir)?.is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        report.push(format!("stopped controller {pid}"));
    }
    // Behind ECMP routers: a controller that died left its VIPs announced; with the
    // dataplane gone they must not draw flows any more.
    if let Some(withdrawn) = withdraw_announcements(&cfg)?.filter(|w| !w.is_empty()) {
        report.push(format!("withdrew {} from routing table {}", withdrawn.join(", "), cfg.director.announce.as_ref().map_or(0, |a| a.table)));
    }
    let removed = crate::kernel::bpf::remove_pins(&dir)?;
    if !removed.is_empty() {
        report.push(format!("removed the pinned dataplane at {} ({} pins; XDP detached)", dir.display(), removed.len()));
    }
    if report.is_empty() {
        report.push(format!("nothing to stop: no controller for {} and nothing pinned at {}", config.display(), dir.display()));
    }
    Ok(report.join("\n"))
}

/// Removes the announcement routes of `cfg`'s VIPs that are still in the table; which were
/// (None without `director.announce`).
fn withdraw_announcements(cfg: &crate::control::config::Config) -> Result<Option<Vec<String>>> {
    let Some(announce) = &cfg.director.announce else { return Ok(None) };
    let vips: std::collections::BTreeSet<std::net::IpAddr> = cfg.services.iter().flat_map(|s| s.addresses()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime for rtnetlink")?;
    rt.block_on(async {
        let handle = crate::kernel::routes::connect()?;
        let present = crate::kernel::routes::announced(&handle, announce.table).await?;
        let mut withdrawn = Vec::new();
        for vip in vips.iter().filter(|v| present.contains(v)) {
            crate::kernel::routes::withdraw(&handle, announce.table, *vip).await?;
            withdrawn.push(vip.to_string());
        }
        Ok(Some(withdrawn))
    })
}

/// `drlb drain`: takes a director behind ECMP routers out of service for maintenance. Its
/// controller (SIGUSR1) withdraws every VIP, forwards until the routers have moved the
/// flows, detaches and exits with a status drlb.service does not restart; this waits for it.
pub fn drain(config: &Path) -> Result<String> {
    let cfg = crate::control::config::Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(announce) = &cfg.director.announce else {
        anyhow::bail!(
            "{} has no director.announce: without it the routers' choice of director is not drlb's (with keepalived, lower the \
             priority to move the VIP); `drlb stop` stops this director",
            config.display()
        );
    };
    let dir = cfg.director.pin_dir();
    crate::kernel::pins::check_owner(&dir, &cfg.director.interface)?;
    let started = std::time::Instant::now();
    let Some(pid) = signal_controller(&dir, Signal::SIGUSR1)? else {
        anyhow::bail!("no `drlb run` runs the dataplane of {} ({}): nothing to drain", config.display(), dir.display());
    };
    let deadline = started + announce.drain_timeout + std::time::Duration::from_secs(15);
    while running_controller(&dir)?.is_some() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("controller {pid} still runs {:.0} s after the drain began: see its log", started.elapsed().as_secs_f64());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // It withdrew everything before detaching, unless it was killed meanwhile.
    if let Some(left) = withdraw_announcements(&cfg)?.filter(|w| !w.is_empty()) {
        anyhow::bail!(
            "controller {pid} ended without withdrawing {} (killed during the drain?): withdrawn now; its flows were not drained",
            left.join(", ")
        );
    }
    Ok(format!(
        "drained controller {pid}: VIPs withdrawn, the routers moved its flows, dataplane detached ({:.1} s); `systemctl start drlb` (or `drlb run`) brings it back",
        started.elapsed().as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock, not the file, says whether a controller runs.
    #[test]
    fn the_pidfile_names_the_running_controller_until_it_is_gone() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // /run/drlb needs root; said out loud (past libtest's capture), not passed silently.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "SKIPPED the_pidfile_names_the_running_controller_until_it_is_gone: needs root");
            return;
        }
        let dir = Path::new("/sys/fs/bpf/drlb-pidfile-test").join(std::process::id().to_string());
        let held = Pidfile::take(&dir).unwrap();
        assert_eq!(running_controller(&dir).unwrap(), Some(std::process::id() as i32));
        let second = Pidfile::take(&dir).err().expect("a second controller is refused").to_string();
        assert!(second.contains("another `drlb run`"), "{second}");
        drop(held);
        assert_eq!(running_controller(&dir).unwrap(), None);
        // A file left by a killed controller (no lock) is stale.
        std::fs::write(pidfile_path(&dir), "999999").unwrap();
        assert_eq!(running_controller(&dir).unwrap(), None);
        let _ = std::fs::remove_file(pidfile_path(&dir));
    }
}
