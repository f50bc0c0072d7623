//! Datetimes as dstack writes them: RFC 3339 in UTC with `Z`, microseconds only when non-zero
//! (`2026-11-23T08:24:50.913087Z`, `2026-11-24T03:00:00Z`).

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a timestamp, truncated to microseconds.
pub fn format(ts: Timestamp) -> String {
    match Formatted::new(ts) {
        Some(f) => f.as_str().to_owned(),
        None => format_general(ts),
    }
}

/// [`format`] for any year jiff knows (`strftime`; a run list formats hundreds of timestamps,
/// so years 0 to 9999 take [`Formatted`] instead).
fn format_general(ts: Timestamp) -> String {
    let (whole, frac) = split_micros(ts);
    let base = whole.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    if frac == 0 { format!("{base}Z") } else { format!("{base}.{frac:06}Z") }
}

/// Whole seconds and the microseconds past them.
fn split_micros(ts: Timestamp) -> (Timestamp, i64) {
    let micros = ts.as_microsecond();
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    (Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH), frac)
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` written on the stack.
struct Formatted {
    buf: [u8; 27],
    len: usize,
}

impl Formatted {
    /// `None` for years outside 0 to 9999.
    fn new(ts: Timestamp) -> Option<Formatted> {
        let (whole, frac) = split_micros(ts);
        let dt = jiff::tz::Offset::UTC.to_datetime(whole);
        let year = u32::try_from(dt.year()).ok().filter(|y| *y <= 9999)?;
        let mut f = Formatted { buf: [0; 27], len: 0 };
        f.digits(year, 4);
        f.byte(b'-');
        f.digits(dt.month().unsigned_abs().into(), 2);
        f.byte(b'-');
        f.digits(dt.day().unsigned_abs().into(), 2);
        f.byte(b'T');
        f.digits(dt.hour().unsigned_abs().into(), 2);
        f.byte(b':');
        f.digits(dt.minute().unsigned_abs().into(), 2);
        f.byte(b':');
        f.digits(dt.second().unsigned_abs().into(), 2);
        if frac != 0 {
            f.byte(b'.');
            f.digits(u32::try_from(frac).unwrap_or(0), 6);
        }
        f.byte(b'Z');
        Some(f)
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `value`'s last `width` decimal digits, zero padded.
    fn digits(&mut self, mut value: u32, width: usize) {
        for i in (0..width).rev() {
            self.buf[self.len + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn serialize_timestamp<S: Serializer>(ts: Timestamp, s: S) -> Result<S::Ok, S::Error> {
    match Formatted::new(ts) {
        Some(f) => s.serialize_str(f.as_str()),
        None => s.serialize_str(&format_general(ts)),
    }
}

/// `#[serde(with = "dstack_api::time::rfc3339")]` for `Timestamp` fields.
pub mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        serialize_timestamp(*ts, s)
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
            Some(ts) => serialize_timestamp(*ts, s),
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
    fn the_fast_path_agrees_with_strftime() {
        let mut micros: i64 = -62_135_596_800_000_000; // 0001-01-01
        while micros < 253_402_300_799_000_000 {
            let ts = Timestamp::from_microsecond(micros).unwrap();
            assert_eq!(format(ts), format_general(ts), "{micros}");
            micros += 7_919_851_234_567;
        }
        let year_zero = "0000-03-01T00:00:00Z".parse::<Timestamp>().unwrap();
        assert_eq!(format(year_zero), "0000-03-01T00:00:00Z");
        let before = Timestamp::from_microsecond(-62_167_219_200_500_000).unwrap(); // 0000-01-01 - 0.5 s
        assert_eq!(format(before), format_general(before));
    }

    #[test]
    fn parses_offsets_and_naive_times() {
        assert_eq!(format(parse("2026-11-24T04:00:00+01:00").unwrap()), "2026-11-24T03:00:00Z");
        assert_eq!(format(parse("2026-11-24T03:00:00.25").unwrap()), "2026-11-24T03:00:00.250000Z");
        assert!(parse("yesterday").is_err());
    }
}
