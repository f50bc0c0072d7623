use jiff::Timestamp;

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Every row of `oracle.tsv` (APScheduler's own answers, written by `oracle.py`).
#[test]
fn matches_apscheduler() {
    let table = include_str!("oracle.tsv");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in table.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [expr, start, want] = cols[..] else { panic!("bad oracle line {line:?}") };
        let want = (want != "none").then(|| ts(want));
        let got = next_fire(expr, ts(start));
        if got != want {
            wrong.push(format!("{expr:?} from {start}: got {got:?}, APScheduler {want:?}"));
        }
        checked += 1;
    }
    assert!(checked >= 300, "only {checked} oracle rows");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn day_of_week_zero_is_monday() {
    // 2025-06-15 is a Sunday.
    let sunday = ts("2025-06-15T10:00:00Z");
    assert_eq!(next_fire("0 9 * * 0", sunday), Some(ts("2025-06-16T09:00:00Z")));
    assert_eq!(next_fire("0 9 * * 6", sunday), Some(ts("2025-06-22T09:00:00Z")));
    assert_eq!(next_fire("0 9 * * sun", sunday), Some(ts("2025-06-22T09:00:00Z")));
}

#[test]
fn at_or_after_rounds_up_to_the_second() {
    assert_eq!(next_fire("0 * * * *", ts("2025-01-01T10:00:00Z")), Some(ts("2025-01-01T10:00:00Z")));
    assert_eq!(next_fire("0 * * * *", ts("2025-01-01T10:00:00.001Z")), Some(ts("2025-01-01T11:00:00Z")));
    assert_eq!(next_fire("* * * * *", ts("2025-01-01T10:00:59.5Z")), Some(ts("2025-01-01T10:01:00Z")));
}

#[test]
fn never_and_invalid() {
    assert_eq!(next_fire("0 0 31 2 *", ts("2025-01-01T00:00:00Z")), None);
    assert_eq!(next_fire("0 0 * * 7", ts("2025-01-01T00:00:00Z")), None);
    assert_eq!(next_fire("0 0 * *", ts("2025-01-01T00:00:00Z")), None);
}

#[test]
fn earliest_over_expressions() {
    let from = ts("2025-01-01T10:30:00Z");
    assert_eq!(next_trigger(&["0 12 * * *", "45 10 * * *"], from), Some(ts("2025-01-01T10:45:00Z")));
    assert_eq!(next_trigger(&["0 0 31 2 *", "0 12 * * *"], from), Some(ts("2025-01-01T12:00:00Z")));
    assert_eq!(next_trigger::<&str>(&[], from), None);
}
