//! When a scheduled run fires next: APScheduler 3's `CronTrigger.from_crontab` (what dstack
//! 0.22.5 uses for `schedule: {cron: [...]}`), in UTC.
//!
//! The five fields are minute, hour, day of month, month and day of week. As in APScheduler
//! 3 (and unlike crontab), day of week 0 is **Monday** (`mon`..`sun` are 0..6), there is no
//! 7, and when both day of month and day of week are restricted a time must match **both**
//! (Vixie cron matches either). Day of month also takes `last` (the month's last day).
//! Steps count from the start of their range (`5/10` is 5, 15, .., 55; `*/2` in day of
//! month is 1, 3, ..). Names may carry trailing text that APScheduler ignores (`jan/2` is
//! `jan`), as [`dstack_model::profile::validate_cron`] accepts them.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// APScheduler's last year.
const MAX_YEAR: i16 = 9999;

/// One comma-separated part of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expr {
    /// `*` or `*/step`: steps from the field's minimum.
    All { step: Option<i64> },
    /// `first`, `first-last`, `first/step`, `first-last/step`, or names: steps from `first`;
    /// `last: None` is the field's maximum.
    Range { first: i64, last: Option<i64>, step: Option<i64> },
    /// `last` in day of month.
    LastDay,
}

impl Expr {
    /// Whether `v` matches, in a field whose values run from `min` to `max`.
    fn matches(self, v: i64, min: i64, max: i64) -> bool {
        let (lo, hi, step) = match self {
            Expr::All { step } => (min, max, step),
            Expr::Range { first, last, step } => (min.max(first), last.map_or(max, |l| l.min(max)), step),
            Expr::LastDay => return v == max,
        };
        v >= lo && v <= hi && step.is_none_or(|s| (v - lo) % s == 0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field(Vec<Expr>);

impl Field {
    fn matches(&self, v: i64, min: i64, max: i64) -> bool {
        self.0.iter().any(|e| e.matches(v, min, max))
    }
}

/// A parsed crontab line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    day_of_week: Field,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Day,
    Month,
    DayOfWeek,
}

fn number(s: &str) -> Option<(i64, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    let digits = s[..end].trim_start_matches('0');
    let value = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some((value, &s[end..]))
}

fn word(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().take_while(u8::is_ascii_alphabetic).count();
    (end > 0).then(|| s.split_at(end))
}

/// `""` (no step) or `/n`; `None` if `rest` is neither.
fn step_of(rest: &str) -> Option<Option<i64>> {
    if rest.is_empty() {
        return Some(None);
    }
    match number(rest.strip_prefix('/')?) {
        Some((n, "")) if n > 0 => Some(Some(n)),
        _ => None,
    }
}

/// One part, tried with APScheduler's expression kinds in its order.
fn expr(part: &str, kind: Kind) -> Option<Expr> {
    if let Some(rest) = part.strip_prefix('*')
        && let Some(step) = step_of(rest)
    {
        return Some(Expr::All { step });
    }
    if let Some((first, rest)) = number(part) {
        let (last, rest) = match rest.strip_prefix('-').and_then(number) {
            Some((last, rest)) => (Some(last), rest),
            None => (None, rest),
        };
        if let Some(step) = step_of(rest) {
            let last = if last.is_none() && step.is_none() { Some(first) } else { last };
            return Some(Expr::Range { first, last, step });
        }
    }
    let names: Option<(&[&str], i64)> = match kind {
        Kind::Month => Some((&MONTHS, 1)),
        Kind::DayOfWeek => Some((&WEEKDAYS, 0)),
        Kind::Plain | Kind::Day => None,
    };
    if let Some((names, base)) = names
        && let Some((first, rest)) = word(part)
    {
        let index = |w: &str| {
            let lower = w.to_ascii_lowercase();
            names.iter().position(|n| *n == lower).map(|i| i as i64 + base)
        };
        let first = index(first)?;
        let last = match rest.strip_prefix('-').and_then(word) {
            Some((w, _)) => index(w)?,
            None => first,
        };
        return Some(Expr::Range { first, last: Some(last), step: None });
    }
    if kind == Kind::Day && part.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("last")) {
        return Some(Expr::LastDay);
    }
    None
}

fn field(text: &str, kind: Kind) -> Option<Field> {
    text.split(',').map(|p| expr(p, kind)).collect::<Option<Vec<_>>>().map(Field)
}

impl Cron {
    /// Parses a crontab line that [`dstack_model::profile::validate_cron`] accepts; `None`
    /// for one it refuses.
    pub fn parse(expr: &str) -> Option<Cron> {
        dstack_model::profile::validate_cron(expr).ok()?;
        let f: Vec<&str> = expr
            .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
            .filter(|f| !f.is_empty())
            .collect();
        Some(Cron {
            minute: field(f[0], Kind::Plain)?,
            hour: field(f[1], Kind::Plain)?,
            day: field(f[2], Kind::Day)?,
            month: field(f[3], Kind::Month)?,
            day_of_week: field(f[4], Kind::DayOfWeek)?,
        })
    }

    fn date_matches(&self, date: Date) -> bool {
        let weekday = i64::from(date.weekday().to_monday_zero_offset());
        self.day.matches(i64::from(date.day()), 1, i64::from(date.days_in_month()))
            && self.day_of_week.matches(weekday, 0, 6)
    }

    /// The first matching minute of the day at or after minute-of-day `from`.
    fn time_at_or_after(&self, from: i64) -> Option<(i8, i8)> {
        (from..24 * 60).find_map(|m| {
            let (hour, minute) = (m / 60, m % 60);
            (self.hour.matches(hour, 0, 23) && self.minute.matches(minute, 0, 59))
                .then_some((hour as i8, minute as i8))
        })
    }

    /// The earliest fire time at or after `after` (rounded up to a whole second), as
    /// APScheduler's `get_next_fire_time(None, after)` in UTC; `None` if there is none up
    /// to the end of year 9999.
    pub fn next_fire(&self, after: Timestamp) -> Option<Timestamp> {
        let mut start = after;
        if start.subsec_nanosecond() != 0 {
            start = Timestamp::from_second(start.as_second()).ok()? + SignedDuration::from_secs(1);
        }
        let start = start.to_zoned(TimeZone::UTC).datetime();
        // Minute of the start day from which a whole-minute fire time is not before `start`.
        let first_minute =
            i64::from(start.hour()) * 60 + i64::from(start.minute()) + i64::from(start.second() > 0);
        // The Gregorian calendar repeats every 400 years (a whole number of weeks): nothing
        // in the next 400 means never.
        let last_year = start.year().saturating_add(400).min(MAX_YEAR);
        for year in start.year()..=last_year {
            let first_month = if year == start.year() { start.month() } else { 1 };
            for month in first_month..=12 {
                if !self.month.matches(i64::from(month), 1, 12) {
                    continue;
                }
                let first_of_month = Date::new(year, month, 1).ok()?;
                let first_day = if (year, month) == (start.year(), start.month()) { start.day() } else { 1 };
                for day in first_day..=first_of_month.days_in_month() {
                    let date = Date::new(year, month, day).ok()?;
                    if !self.date_matches(date) {
                        continue;
                    }
                    let from = if date == start.date() { first_minute } else { 0 };
                    if let Some((hour, minute)) = self.time_at_or_after(from) {
                        let at = DateTime::new(year, month, day, hour, minute, 0, 0).ok()?;
                        return at.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
                    }
                }
            }
        }
        None
    }
}

/// The earliest fire time of `expr` at or after `after` (see [`Cron::next_fire`]); `None`
/// for an expression `validate_cron` refuses or one that never fires.
pub fn next_fire(expr: &str, after: Timestamp) -> Option<Timestamp> {
    Cron::parse(expr)?.next_fire(after)
}

/// dstack's `_get_next_triggered_at`: the earliest next fire time over a run's cron
/// expressions. Expressions that never fire are skipped.
pub fn next_trigger<S: AsRef<str>>(crons: &[S], after: Timestamp) -> Option<Timestamp> {
    crons.iter().filter_map(|c| next_fire(c.as_ref(), after)).min()
}

#[cfg(test)]
mod tests;
