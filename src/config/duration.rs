//! Durations in the config file, in humantime's syntax (`10s`, `500ms`, `5m`, `1h 30m`).
//!
//! Guards against a bare number whose unit the reader has to guess: `header_timeout = "10"` and
//! `header_timeout = 10` are refused with an error that names the units, never read as seconds.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// What an invalid duration is told it should have been. No double quotes: the config loader
/// strips quoted text from errors so that values never reach a log.
const EXPECTED: &str =
    "a duration with its unit, such as 10s, 500ms, 5m or 1h (units: ms, s, m, h, d)";

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        humantime::parse_duration(value).map_err(|_| E::custom(format_args!("expected {EXPECTED}")))
    }
}

/// Deserializes a required duration.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// Optional durations: `#[serde(default, with = "duration::option")]`.
pub mod option {
    use super::*;

    /// Deserializes a duration that may be absent.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Settings {
        #[serde(default, with = "super::option")]
        timeout: Option<std::time::Duration>,
    }

    fn parse(source: &str) -> Result<Settings, String> {
        toml::from_str(source).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn durations_read_with_their_units() {
        let s = parse("timeout = \"1m 30s\"").map(|s| s.timeout);
        assert_eq!(s, Ok(Some(std::time::Duration::from_secs(90))));
        assert_eq!(parse("").map(|s| s.timeout), Ok(None));
    }

    #[test]
    fn a_number_without_unit_is_told_the_units() {
        for source in [
            "timeout = \"10\"",
            "timeout = 10",
            "timeout = \"ten seconds\"",
        ] {
            let error = parse(source).err().unwrap_or_default();
            assert!(error.contains("such as 10s, 500ms"), "{source}: {error}");
        }
    }
}
