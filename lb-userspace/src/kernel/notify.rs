//! systemd's readiness protocol (`Type=notify`), through the sd-notify crate: nothing
//! happens when drlb does not run under systemd (no `$NOTIFY_SOCKET`).

use sd_notify::NotifyState;

fn send(state: &[NotifyState]) {
    let _ = sd_notify::notify(false, state);
}

/// Forwarding works and the maps are filled.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload started; [`ready`] follows when it is over.
pub fn reloading() {
    send(&[NotifyState::Reloading]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A line `systemctl status` shows: what is wrong, or that all is well again.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}
