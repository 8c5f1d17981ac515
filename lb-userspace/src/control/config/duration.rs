//! Durations as operators write them: `7s`, `500ms`, `1m30s` (humantime), or a bare
//! number of seconds as in keepalived.conf.

use std::time::Duration;

use serde::{de, Deserializer};

/// A visitor rather than an untagged enum: untagged enums buffer the value and lose its
/// position, and every error here must point at the offending line and column.
struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as 7s, 500ms or 1m, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v).map(Duration::from_secs).map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
    }

    fn visit_str<E: de::Error>(self, t: &str) -> Result<Duration, E> {
        humantime::parse_duration(t.trim())
            .map_err(|e| E::custom(format!("invalid duration `{t}` ({e}); write e.g. 7s, 500ms or 1m")))
    }
}

fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

pub mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(d)
    }
}

/// `warmup:` — a duration, or `true` for "up to the interval" (keepalived's meaning) and
/// `false` for none.
pub mod warmup {
    use super::*;
    use crate::control::config::Warmup;

    struct WarmupVisitor;

    impl de::Visitor<'_> for WarmupVisitor {
        type Value = Option<Warmup>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("true, false, or a duration such as 3s")
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Warmup>, E> {
            Ok(v.then_some(Warmup::UpToInterval))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Warmup>, E> {
            DurationVisitor.visit_u64(v).map(|d| Some(Warmup::UpTo(d)))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Warmup>, E> {
            DurationVisitor.visit_i64(v).map(|d| Some(Warmup::UpTo(d)))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Warmup>, E> {
            DurationVisitor.visit_str(v).map(|d| Some(Warmup::UpTo(d)))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Warmup>, D::Error> {
        d.deserialize_any(WarmupVisitor)
    }
}

pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        parse(d).map(Some)
    }
}

/// keepalived defaults: delay_loop 60 s is too slow for a default; use its
/// connect_timeout (5 s) and a 6 s interval like most keepalived examples.
pub fn default_interval() -> Duration {
    Duration::from_secs(6)
}

pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

pub fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}

/// IPVS's TCP ESTABLISHED timeout (the dataplane's default, `lb_common::conn::Timeouts`).
pub fn default_tcp() -> Duration {
    Duration::from_secs(lb_common::conn::Timeouts::default().tcp_established.into())
}

/// IPVS's TCP FIN_WAIT timeout.
pub fn default_tcp_fin() -> Duration {
    Duration::from_secs(lb_common::conn::Timeouts::default().tcp_fin_wait.into())
}

/// IPVS's UDP timeout.
pub fn default_udp() -> Duration {
    Duration::from_secs(lb_common::conn::Timeouts::default().udp.into())
}
