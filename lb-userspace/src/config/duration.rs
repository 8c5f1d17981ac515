//! Durations as operators write them: `7s`, `500ms`, `1m30s` (humantime), or a bare
//! number of seconds as in keepalived.conf.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Seconds(u64),
    Text(String),
}

fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            de::Error::custom(format!("invalid duration `{t}` ({e}); write e.g. 7s, 500ms or 1m"))
        }),
    }
}

pub mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(d)
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
