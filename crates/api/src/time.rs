//! Datetimes as dstack writes them: RFC 3339 in UTC with `Z`, microseconds only when non-zero
//! (`2026-11-23T08:24:50.913087Z`, `2026-11-24T03:00:00Z`).

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a timestamp, truncated to microseconds.
pub fn format(ts: Timestamp) -> String {
    let micros = ts.as_microsecond();
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let whole = Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH);
    let base = whole.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if frac == 0 { format!("{base}Z") } else { format!("{base}.{frac:06}Z") }
}

/// `#[serde(with = "dstack_api::time::rfc3339")]` for `Timestamp` fields.
pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "dstack_api::time::rfc3339_opt")]` for `Option<Timestamp>` fields.
pub mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&format(*ts)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => parse(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Parses RFC 3339; a datetime without an offset is taken as UTC (Python clients may send
/// naive datetimes).
pub fn parse(text: &str) -> Result<Timestamp, String> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| format!("invalid datetime {text:?}: expected RFC 3339"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_dstack() {
        let ts: Timestamp = "2026-11-23T08:24:50.913087Z".parse().unwrap();
        assert_eq!(format(ts), "2026-11-23T08:24:50.913087Z");
        let ts: Timestamp = "2026-11-24T03:00:00Z".parse().unwrap();
        assert_eq!(format(ts), "2026-11-24T03:00:00Z");
        let ts: Timestamp = "2026-11-24T03:00:00.5Z".parse().unwrap();
        assert_eq!(format(ts), "2026-11-24T03:00:00.500000Z");
        let ts: Timestamp = "2026-11-24T03:00:00.000000999Z".parse().unwrap();
        assert_eq!(format(ts), "2026-11-24T03:00:00Z");
    }

    #[test]
    fn parses_offsets_and_naive_times() {
        assert_eq!(format(parse("2026-11-24T04:00:00+01:00").unwrap()), "2026-11-24T03:00:00Z");
        assert_eq!(format(parse("2026-11-24T03:00:00.25").unwrap()), "2026-11-24T03:00:00.250000Z");
        assert!(parse("yesterday").is_err());
    }
}
