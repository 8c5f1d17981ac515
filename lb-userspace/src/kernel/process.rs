//! Finding running controllers: `drlb reload` signals the `drlb run` that uses a config.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The config path a process's command line runs `drlb run` with, if it does.
fn run_config(cmdline: &[u8]) -> Option<PathBuf> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
    let exe = Path::new(std::str::from_utf8(args.first()?).ok()?);
    if exe.file_name()? != "drlb" || !args.iter().any(|a| *a == b"run") {
        return None;
    }
    let mut config = None;
    for (i, a) in args.iter().enumerate() {
        let a = std::str::from_utf8(a).ok()?;
        if a == "--config" || a == "-c" {
            config = args.get(i + 1).and_then(|v| std::str::from_utf8(v).ok()).map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(v));
        }
    }
    Some(config.unwrap_or_else(|| PathBuf::from("/etc/drlb/drlb.yaml")))
}

/// Sends `signal` to every `drlb run` whose config is `config`; returns their pids.
pub fn signal_controllers(config: &Path, signal: Signal) -> Result<Vec<i32>> {
    let want = config.canonicalize().with_context(|| format!("{}", config.display()))?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let Some(cfg) = run_config(&cmdline) else { continue };
        // Relative paths are relative to that process's working directory.
        let cfg = if cfg.is_relative() {
            match std::fs::read_link(entry.path().join("cwd")) {
                Ok(cwd) => cwd.join(cfg),
                Err(_) => continue,
            }
        } else {
            cfg
        };
        if cfg.canonicalize().ok().as_deref() == Some(want.as_path()) {
            kill(Pid::from_raw(pid), signal).with_context(|| format!("signalling {pid}"))?;
            pids.push(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_drlb_run_command_lines() {
        assert_eq!(run_config(b"/usr/sbin/drlb\0run\0--config\0/etc/x.yaml\0"), Some(PathBuf::from("/etc/x.yaml")));
        assert_eq!(run_config(b"drlb\0run\0"), Some(PathBuf::from("/etc/drlb/drlb.yaml")));
        assert_eq!(run_config(b"drlb\0check\0--config\0x\0"), None);
        assert_eq!(run_config(b"/bin/bash\0run\0"), None);
    }
}

/// `drlb stop`: SIGTERM to the controller using `config` (it removes the dataplane itself),
/// then removes whatever is still pinned (a controller that died leaves its pins).
pub fn stop(config: &Path) -> Result<String> {
    let cfg = crate::control::config::Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut report = Vec::new();
    let dir = cfg.director.pin_dir();
    // Refuses a dataplane another network namespace's drlb pinned at the same path.
    crate::kernel::pins::check_owner(&dir, &cfg.director.interface)?;
    let pids = signal_controllers(config, Signal::SIGTERM)?;
    for pid in &pids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        report.push(format!("stopped controller {pid}"));
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
