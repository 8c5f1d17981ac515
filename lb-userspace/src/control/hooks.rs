//! keepalived's notify scripts: commands run on a state change (a real server up or down,
//! a service's quorum gained or lost), not waited for — a slow script never holds up the
//! maps — and logged when they fail.

use tracing::{info, warn};

/// Runs `command` with `sh -c` and `env`, in the background; `what` names it in the log.
pub fn run(command: &str, env: Vec<(&'static str, String)>, what: String) {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command).envs(env).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    crate::kernel::privileges::without_capabilities(&mut cmd);
    match cmd.spawn() {
        Ok(mut child) => {
            info!("{what}: running `{command}`");
            let command = command.to_string();
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if status.success() => {}
                    Ok(status) => warn!("{what}: `{command}` exited with {status}"),
                    Err(e) => warn!("{what}: waiting for `{command}`: {e}"),
                }
            });
        }
        Err(e) => warn!("{what}: cannot run `{command}`: {e}"),
    }
}

/// Runs `command` as [`run`] does, but waits for it, at most `limit` (then kills it): for
/// scripts run as drlb stops, which would otherwise be cut off (keepalived gives them 1 s).
pub async fn run_and_wait(command: &str, env: Vec<(&'static str, String)>, what: String, limit: std::time::Duration) {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command).envs(env).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).kill_on_drop(true);
    crate::kernel::privileges::without_capabilities(&mut cmd);
    match cmd.spawn() {
        Ok(mut child) => {
            info!("{what}: running `{command}`");
            match tokio::time::timeout(limit, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => warn!("{what}: `{command}` exited with {status}"),
                Ok(Err(e)) => warn!("{what}: waiting for `{command}`: {e}"),
                Err(_) => warn!("{what}: `{command}` still running after {limit:?}; killed"),
            }
        }
        Err(e) => warn!("{what}: cannot run `{command}`: {e}"),
    }
}
