//! drlb's log: text (as before) or one JSON object per line (`--log-format json`,
//! `DRLB_LOG_FORMAT=json`), on standard error. Under systemd each line starts with the
//! syslog priority (`<3>` for errors ... `<7>` for debug), which journald reads as the
//! entry's PRIORITY and strips, so `journalctl -p warning` shows warnings and errors.
//!
//! The events operators alert on carry an `event` field with a stable name (below) and
//! stable fields beside the message, in both formats; the message text may change, these
//! do not. docs/operations.md lists them.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// A real server's health changed: `service`, `real_server`, `state` (`up`/`down`),
/// `check`, `reason` (down only).
pub const EVENT_HEALTH: &str = "health";
/// A service lost or regained quorum: `service`, `state` (`lost`/`gained`).
pub const EVENT_QUORUM: &str = "quorum";
/// A reload finished: `outcome` (`ok`/`rejected`), `services`.
pub const EVENT_RELOAD: &str = "reload";
/// The dataplane is attached and the controller ready: `interface`, `mode`.
pub const EVENT_ATTACH: &str = "attach";
/// The controller ends: `interface`, `dataplane` (`detached`: removed; `left`: left
/// forwarding for the next controller).
pub const EVENT_DETACH: &str = "detach";
/// A VIP arrived on or left the interface (VRRP): `vip`, `state` (`held`/`released`).
pub const EVENT_VIP: &str = "vip";
/// A VIP was announced to or withdrawn from the routers (ECMP): `vip`, `state`
/// (`announced`/`withdrawn`), `reason` (withdrawn only).
pub const EVENT_ANNOUNCE: &str = "announce";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (timestamps left to journald under systemd).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, and the event's fields.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `format` writes.
pub fn init(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let journal = stderr_is_journal();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && !journal;
            let text = tracing_subscriber::fmt::format().with_target(false).with_ansi(ansi);
            let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
            if journal {
                base.event_format(Priority { inner: text.without_time(), journal }).boxed()
            } else {
                base.event_format(Priority { inner: text, journal }).boxed()
            }
        }
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().flatten_event(true).with_current_span(false).with_span_list(false);
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(Priority { inner: json, journal })
                .boxed()
        }
    };
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
}

/// True when standard error is journald's stream: systemd says so in `JOURNAL_STREAM`
/// (`DEVICE:INODE` of the stream it connected), which must be stderr itself, not a file
/// a child of the service redirected it to.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = stream.split_once(':') else { return false };
    let Ok(meta) = nix::sys::stat::fstat(libc::STDERR_FILENO) else { return false };
    dev.parse::<u64>().ok() == Some(meta.st_dev as u64) && ino.parse::<u64>().ok() == Some(meta.st_ino as u64)
}

/// sd-daemon(3)'s priority prefix for `level`.
fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The inner format, after `<N>` when writing to journald.
struct Priority<F> {
    inner: F,
    journal: bool,
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if !self.journal {
            return self.inner.format_event(ctx, writer, event);
        }
        // journald makes an entry of each line: every line carries the priority, so the
        // reasons under "reload rejected" are errors too.
        let mut text = String::new();
        self.inner.format_event(ctx, Writer::new(&mut text), event)?;
        let priority = syslog_priority(event.metadata().level());
        for line in text.split_inclusive('\n') {
            write!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
    }
}
