//! Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in an IANA
//! time zone with jiff, the way Kubernetes CronJob reads them:
//!
//! - `*`, `a`, `a-b`, `*/n`, `a-b/n`, `a/n` and lists; month names `JAN`..`DEC` and weekday names
//!   `SUN`..`SAT`; Sunday is 0 or 7; the macros `@yearly`, `@monthly`, `@weekly`, `@daily`,
//!   `@hourly`.
//! - When both day-of-month and day-of-week are restricted, a day matches either (Vixie cron).
//! - Daylight saving: a wall-clock time skipped by a spring-forward gap fires once, at the same
//!   instant shifted forward by the gap; a time repeated by a fall-back fold fires once, at its
//!   first occurrence.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Disambiguation, TimeZone};
use jiff::{Timestamp, ToSpan};

/// How far ahead a search goes before deciding the expression never fires (covers Feb 29 on a
/// given weekday, which recurs every 28 years at most).
const SEARCH_DAYS: i64 = 366 * 29;
/// The most fire times `between` looks at.
const MAX_SCAN: usize = 20_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_restricted: bool,
    dow_restricted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(expression: &str) -> Result<Self, CronError> {
        let expanded = match expression.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(CronError(format!("unknown macro {other:?}"))),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {} in {expression:?}",
                fields.len()
            )));
        }
        let minutes = parse_field(fields[0], "minute", 0, 59, &[])?;
        let hours = parse_field(fields[1], "hour", 0, 23, &[])?;
        let days_of_month = parse_field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = parse_field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut days_of_week = parse_field(fields[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days_of_month: days_of_month as u32,
            months: months as u16,
            days_of_week: days_of_week as u8,
            dom_restricted: !fields[2].starts_with('*'),
            dow_restricted: !fields[4].starts_with('*'),
        })
    }
}

fn parse_value(text: &str, field: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, CronError> {
    let upper = text.to_ascii_uppercase();
    if let Some(index) = names.iter().position(|n| *n == upper) {
        // Month names count from 1 (the field's minimum), weekday names from 0.
        return Ok(index as u32 + min);
    }
    let value: u32 = text.parse().map_err(|_| CronError(format!("{field}: {text:?} is not a number")))?;
    if value < min || value > max {
        return Err(CronError(format!("{field}: {value} is outside {min}-{max}")));
    }
    Ok(value)
}

fn parse_field(text: &str, field: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 =
                    step.parse().map_err(|_| CronError(format!("{field}: step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(CronError(format!("{field}: a step of 0 never advances")));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (parse_value(low, field, min, max, names)?, parse_value(high, field, min, max, names)?);
            if low > high {
                return Err(CronError(format!("{field}: range {range:?} runs backwards")));
            }
            (low, high)
        } else {
            let value = parse_value(range, field, min, max, names)?;
            // `a/n` means from a to the end in steps of n.
            (value, if part.contains('/') { max } else { value })
        };
        let mut value = low;
        while value <= high {
            bits |= 1 << value;
            value += step;
        }
    }
    if bits == 0 {
        return Err(CronError(format!("{field}: {text:?} selects nothing")));
    }
    Ok(bits)
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        match (self.dom_restricted, self.dow_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first time after `after` (strictly) at which the expression fires in `tz`, or None
    /// when it never fires (for example `0 0 31 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Start a day early: a fire time shifted forward by a DST gap can land after `after`
        // although its wall-clock time is before it.
        let start = after.to_zoned(tz.clone()).date().checked_sub(1.day()).ok()?;
        for offset in 0..SEARCH_DAYS {
            let Ok(date) = start.checked_add(offset.days()) else { return None };
            if !self.day_matches(date) {
                continue;
            }
            // Wall-clock order is instant order except around a DST gap, where a shifted time can
            // pass a later wall-clock one; so keep looking for three hours after the first hit.
            let mut best: Option<(Timestamp, DateTime)> = None;
            'day: for hour in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                for minute in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                    let civil = DateTime::from_parts(date, Time::constant(hour as i8, minute as i8, 0, 0));
                    if let Some((_, first)) = best
                        && civil.duration_since(first).as_secs() > 3 * 3600
                    {
                        break 'day;
                    }
                    let Ok(instant) = tz.to_ambiguous_timestamp(civil).disambiguate(Disambiguation::Compatible) else {
                        continue;
                    };
                    if instant > after && best.is_none_or(|(b, _)| instant < b) {
                        best = Some((instant, best.map_or(civil, |(_, first)| first)));
                    }
                }
            }
            if let Some((instant, _)) = best {
                return Some(instant);
            }
        }
        None
    }

    /// Every fire time in `(after, until]`, oldest first, at most `limit` of them (the newest
    /// `limit` when there are more), and how many were left out.
    pub fn between(&self, after: Timestamp, until: Timestamp, tz: &TimeZone, limit: usize) -> (Vec<Timestamp>, usize) {
        let mut kept = std::collections::VecDeque::new();
        let mut dropped = 0;
        let mut cursor = after;
        // A bound on the work after a very long downtime of a very frequent schedule: beyond it
        // the count of left-out times is a lower bound.
        let mut scanned = 0;
        while scanned < MAX_SCAN
            && let Some(next) = self.next_after(cursor, tz)
        {
            scanned += 1;
            if next > until {
                break;
            }
            kept.push_back(next);
            if kept.len() > limit {
                kept.pop_front();
                dropped += 1;
            }
            cursor = next;
        }
        (kept.into(), dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn cron(text: &str) -> Cron {
        text.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    #[test]
    fn seoul_weekend_evenings() {
        // 22:00 on Saturdays and Sundays in Seoul (UTC+9): 13:00 UTC.
        let schedule = cron("0 22 * * SAT,SUN");
        let seoul = zone("Asia/Seoul");
        let (times, dropped) = schedule.between(at("2025-05-23T00:00:00Z"), at("2025-06-02T00:00:00Z"), &seoul, 10);
        let expected = ["2025-05-24T13:00:00Z", "2025-05-25T13:00:00Z", "2025-05-31T13:00:00Z", "2025-06-01T13:00:00Z"];
        assert_eq!(times, expected.map(at));
        assert_eq!(dropped, 0);
    }

    #[test]
    fn across_a_month_and_a_year_boundary() {
        let schedule = cron("30 6 1 * *");
        let seoul = zone("Asia/Seoul");
        assert_eq!(schedule.next_after(at("2025-05-31T23:00:00Z"), &seoul), Some(at("2025-06-30T21:30:00Z")));
        assert_eq!(schedule.next_after(at("2025-12-01T00:00:00Z"), &seoul), Some(at("2025-12-31T21:30:00Z")));
        // The last day of February in a leap year, via day-of-month 29.
        assert_eq!(
            cron("0 0 29 2 *").next_after(at("2025-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_gaps_fire_once_shifted_and_folds_fire_once() {
        let new_york = zone("America/New_York");
        // 2025-03-09: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist: it fires at 03:30 EDT.
        let daily = cron("30 2 * * *");
        let (times, _) = daily.between(at("2025-03-08T00:00:00Z"), at("2025-03-11T00:00:00Z"), &new_york, 10);
        assert_eq!(times, ["2025-03-08T07:30:00Z", "2025-03-09T07:30:00Z", "2025-03-10T06:30:00Z"].map(at));
        // 2025-11-02: 01:30 happens twice (EDT, then EST); it fires once, the first time.
        let fold = cron("30 1 * * *");
        let (times, _) = fold.between(at("2025-11-01T12:00:00Z"), at("2025-11-03T12:00:00Z"), &new_york, 10);
        assert_eq!(times, ["2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"].map(at));
        // Hourly across the fold: every hour exactly once, 01:00 included only the first time.
        let (hourly, _) =
            cron("0 * * * *").between(at("2025-11-02T03:30:00Z"), at("2025-11-02T08:30:00Z"), &new_york, 10);
        assert_eq!(
            hourly,
            ["2025-11-02T04:00:00Z", "2025-11-02T05:00:00Z", "2025-11-02T07:00:00Z", "2025-11-02T08:00:00Z"].map(at)
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_are_ored_when_both_are_restricted() {
        // The 1st of the month or any Friday.
        let schedule = cron("0 0 1 * FRI");
        let (times, _) = schedule.between(at("2025-05-28T00:00:00Z"), at("2025-06-10T00:00:00Z"), &TimeZone::UTC, 10);
        assert_eq!(times, ["2025-05-30T00:00:00Z", "2025-06-01T00:00:00Z", "2025-06-06T00:00:00Z"].map(at));
        // Only weekdays restricted: plain weekdays.
        let (fridays, _) =
            cron("0 0 * * 5").between(at("2025-05-28T00:00:00Z"), at("2025-06-10T00:00:00Z"), &TimeZone::UTC, 10);
        assert_eq!(fridays, ["2025-05-30T00:00:00Z", "2025-06-06T00:00:00Z"].map(at));
    }

    #[test]
    fn steps_ranges_names_sunday_seven_and_macros() {
        assert_eq!(cron("*/15 * * * *").minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(cron("10-20/5 * * * *").minutes, (1 << 10) | (1 << 15) | (1 << 20));
        assert_eq!(cron("50/5 * * * *").minutes, (1 << 50) | (1 << 55));
        assert_eq!(cron("0 0 * jan-mar *").months, (1 << 1) | (1 << 2) | (1 << 3));
        assert_eq!(cron("0 0 * * 7").days_of_week, 1, "7 is Sunday");
        assert_eq!(cron("@daily"), cron("0 0 * * *"));
        assert_eq!(cron("@weekly"), cron("0 0 * * SUN"));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let cases = [
            ("0 22 * *", "expected 5 fields"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("0 24 * * *", "hour: 24 is outside 0-23"),
            ("0 0 0 * *", "day-of-month: 0 is outside 1-31"),
            ("0 0 * 13 *", "month: 13 is outside 1-12"),
            ("0 0 * * FUNDAY", "day-of-week: \"FUNDAY\" is not a number"),
            ("*/0 * * * *", "minute: a step of 0 never advances"),
            ("0 20-10 * * *", "hour: range \"20-10\" runs backwards"),
            ("@sometimes", "unknown macro"),
        ];
        for (expression, expected) in cases {
            let error = expression.parse::<Cron>().unwrap_err().to_string();
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }

    #[test]
    fn an_impossible_date_never_fires_and_a_long_gap_keeps_the_newest() {
        assert_eq!(cron("0 0 31 2 *").next_after(at("2025-01-01T00:00:00Z"), &TimeZone::UTC), None);
        let (times, dropped) =
            cron("0 * * * *").between(at("2025-01-01T00:00:00Z"), at("2025-01-02T00:00:00Z"), &TimeZone::UTC, 3);
        assert_eq!(times, ["2025-01-01T22:00:00Z", "2025-01-01T23:00:00Z", "2025-01-02T00:00:00Z"].map(at));
        assert_eq!(dropped, 21);
    }
}
