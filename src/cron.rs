//! Five-field cron expressions (minute hour day-of-month month day-of-week) in an IANA time zone,
//! read and evaluated exactly as Kubernetes CronJob reads them: the API server validates a
//! schedule with robfig/cron v3's standard parser, and the CronJob controller computes fire times
//! with that library's `Next` in the job's time zone. This module is a port of both, and
//! `tests/cron_reference.rs` runs the library itself (tools/cron) against it.
//!
//! - `*` or `?`, `a`, `a-b`, `*/n`, `a-b/n`, `a/n` (from a to the end) and comma lists; month
//!   names `JAN`..`DEC` and weekday names `SUN`..`SAT` in any case; weekdays are 0-6 (Sunday is
//!   0; 7 is refused, as Kubernetes refuses it); the descriptors `@yearly`, `@annually`,
//!   `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.
//! - Day-of-month and day-of-week: when either field is a star (`*` or `?`, with no step above
//!   1), a day must match both; when both are restricted, it matches either (so `*/2` restricts).
//! - `TZ=` and `CRON_TZ=` are refused, as the API server refuses them: the zone is its own field.
//!   `@every <duration>`, which Kubernetes accepts, is refused here: a schedule's windows need
//!   calendar fire times.
//! - Daylight saving, as the CronJob controller: a wall-clock time skipped by a spring-forward gap
//!   does not fire that day, and a time repeated by a fall-back fold fires twice.
//! - An expression that selects no time (`0 0 30 2 *`, or an empty list) never fires.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// The most fire times `between` looks at.
const MAX_SCAN: usize = 20_000;
/// Bit 63 of a field: the field was a star (`*` or `?`), as in robfig/cron.
const STAR: u64 = 1 << 63;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { name: "hour", min: 0, max: 23, names: &[] };
const DAY_OF_MONTH: Bounds = Bounds { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DAY_OF_WEEK: Bounds =
    Bounds { name: "day-of-week", min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl std::str::FromStr for Cron {
    type Err = CronError;

    fn from_str(expression: &str) -> Result<Self, CronError> {
        if expression.is_empty() {
            return Err(CronError("the expression is empty".into()));
        }
        if expression.contains("TZ") {
            return Err(CronError(format!(
                "{expression:?}: TZ= and CRON_TZ= are not allowed in the expression (set the time zone field instead)"
            )));
        }
        if expression.starts_with('@') {
            return descriptor(expression);
        }
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {} in {expression:?}",
                fields.len()
            )));
        }
        Ok(Cron {
            minutes: parse_field(fields[0], &MINUTE)?,
            hours: parse_field(fields[1], &HOUR)?,
            days_of_month: parse_field(fields[2], &DAY_OF_MONTH)?,
            months: parse_field(fields[3], &MONTH)?,
            days_of_week: parse_field(fields[4], &DAY_OF_WEEK)?,
        })
    }
}

/// The descriptors of robfig/cron's standard parser (matched exactly, as it matches them).
fn descriptor(expression: &str) -> Result<Cron, CronError> {
    let every = |bounds: &Bounds| bits(bounds.min.into(), bounds.max.into(), 1) | STAR;
    let (minutes, hours) = (1, 1);
    let (days_of_month, months, days_of_week) = match expression {
        "@yearly" | "@annually" => (1 << 1, 1 << 1, every(&DAY_OF_WEEK)),
        "@monthly" => (1 << 1, every(&MONTH), every(&DAY_OF_WEEK)),
        "@weekly" => (every(&DAY_OF_MONTH), every(&MONTH), 1),
        "@daily" | "@midnight" => (every(&DAY_OF_MONTH), every(&MONTH), every(&DAY_OF_WEEK)),
        "@hourly" => {
            return Ok(Cron {
                minutes: 1,
                hours: every(&HOUR),
                days_of_month: every(&DAY_OF_MONTH),
                months: every(&MONTH),
                days_of_week: every(&DAY_OF_WEEK),
            });
        }
        other if other.starts_with("@every") => {
            return Err(CronError(format!(
                "{other:?}: @every is not supported (a schedule needs calendar fire times: write the fields)"
            )));
        }
        other => return Err(CronError(format!("unknown descriptor {other:?}"))),
    };
    Ok(Cron { minutes, hours, days_of_month, months, days_of_week })
}

fn bits(low: u64, high: u64, step: u64) -> u64 {
    let step = usize::try_from(step).unwrap_or(usize::MAX);
    (low..=high).step_by(step).fold(0, |bits, value| bits | 1 << value)
}

/// A number as Go's `strconv.Atoi` reads it (an optional sign, decimal digits, within 64 bits),
/// not negative.
fn number(text: &str, bounds: &Bounds) -> Result<u64, CronError> {
    let value: i64 = text.parse().map_err(|_| CronError(format!("{}: {text:?} is not a number", bounds.name)))?;
    u64::try_from(value).map_err(|_| CronError(format!("{}: {text:?} is negative", bounds.name)))
}

fn number_or_name(text: &str, bounds: &Bounds) -> Result<u64, CronError> {
    let lower = text.to_ascii_lowercase();
    match bounds.names.iter().position(|name| *name == lower) {
        // Month names count from 1 (the field's minimum), weekday names from 0.
        Some(index) => Ok(index as u64 + u64::from(bounds.min)),
        None => number(text, bounds),
    }
}

/// One comma-separated part of a field, as robfig/cron's `getRange`.
fn parse_range(part: &str, bounds: &Bounds) -> Result<u64, CronError> {
    let field = bounds.name;
    let range_and_step: Vec<&str> = part.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let (min, max) = (u64::from(bounds.min), u64::from(bounds.max));
    let (mut low, mut high, mut star) = (min, max, true);
    // A star ignores anything after a hyphen, as the library does.
    if low_and_high[0] != "*" && low_and_high[0] != "?" {
        star = false;
        low = number_or_name(low_and_high[0], bounds)?;
        high = match low_and_high[..] {
            [_] => low,
            [_, high] => number_or_name(high, bounds)?,
            _ => return Err(CronError(format!("{field}: {part:?} has more than one hyphen"))),
        };
    }
    let step = match range_and_step[..] {
        [_] => 1,
        [_, step] => {
            let step = number(step, bounds)?;
            // `a/n` means from a to the end in steps of n.
            if low_and_high.len() == 1 {
                high = max;
            }
            star &= step <= 1;
            step
        }
        _ => return Err(CronError(format!("{field}: {part:?} has more than one slash"))),
    };
    if low < min || high > max {
        let value = if low < min { low } else { high };
        return Err(CronError(format!("{field}: {value} is outside {min}-{max}")));
    }
    if low > high {
        return Err(CronError(format!("{field}: range {part:?} runs backwards")));
    }
    if step == 0 {
        return Err(CronError(format!("{field}: a step of 0 never advances")));
    }
    Ok(bits(low, high, step) | if star { STAR } else { 0 })
}

/// A field: its comma-separated parts, empty parts skipped (as the library skips them).
fn parse_field(text: &str, bounds: &Bounds) -> Result<u64, CronError> {
    text.split(',').filter(|part| !part.is_empty()).try_fold(0, |bits, part| Ok(bits | parse_range(part, bounds)?))
}

fn has(bits: u64, value: impl Into<i64>) -> bool {
    bits & (1 << value.into()) != 0
}

/// Go's `time.Date(year, month, day, hour, minute, second, 0, tz)` as unix seconds: the month and
/// day may overflow (Go normalises them), and a wall-clock time in a gap or a fold resolves as Go
/// resolves it (the offset at the instant the wall clock would be in the offset found for it read
/// as UTC).
fn go_date(tz: &TimeZone, year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<i64> {
    let months = year * 12 + (month - 1);
    let first = Date::new(i16::try_from(months.div_euclid(12)).ok()?, (months.rem_euclid(12) + 1) as i8, 1).ok()?;
    let midnight = first.checked_add((day - 1).days()).ok()?.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second();
    let local = midnight + hour * 3600 + minute * 60 + second;
    let offset_at = |unix: i64| Some(i64::from(tz.to_offset(Timestamp::from_second(unix).ok()?).seconds()));
    let guess = offset_at(local)?;
    Some(local - offset_at(local - guess)?)
}

impl Cron {
    fn day_matches(&self, date: Date) -> bool {
        let dom = has(self.days_of_month, date.day());
        let dow = has(self.days_of_week, date.weekday().to_sunday_zero_offset());
        if (self.days_of_month | self.days_of_week) & STAR != 0 { dom && dow } else { dom || dow }
    }

    /// The first time after `after` (strictly) at which the expression fires in `tz`, as the
    /// CronJob controller computes it (robfig/cron v3's `SpecSchedule.Next`, step for step: whole
    /// units are added to the instant, so daylight saving skips or repeats wall-clock times), or
    /// None when it does not fire within five years (for example `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let civil = |t: i64| Some(tz.to_datetime(Timestamp::from_second(t).ok()?));
        // The upcoming whole second.
        let mut t = after.as_second() - i64::from(after.subsec_nanosecond() < 0) + 1;
        let mut added = false;
        let year_limit = civil(t)?.year() + 5;
        'wrap: loop {
            let mut c = civil(t)?;
            if c.year() > year_limit {
                return None;
            }
            let (year, month) = (i64::from(c.year()), i64::from(c.month()));
            while !has(self.months, c.month()) {
                if !added {
                    added = true;
                    t = go_date(tz, year, month, 1, 0, 0, 0)?;
                    c = civil(t)?;
                }
                t = go_date(
                    tz,
                    c.year().into(),
                    i64::from(c.month()) + 1,
                    c.day().into(),
                    c.hour().into(),
                    c.minute().into(),
                    c.second().into(),
                )?;
                c = civil(t)?;
                if c.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(c.date()) {
                if !added {
                    added = true;
                    t = go_date(tz, c.year().into(), c.month().into(), c.day().into(), 0, 0, 0)?;
                    c = civil(t)?;
                }
                t = go_date(
                    tz,
                    c.year().into(),
                    c.month().into(),
                    i64::from(c.day()) + 1,
                    c.hour().into(),
                    c.minute().into(),
                    c.second().into(),
                )?;
                c = civil(t)?;
                // Back to midnight when daylight saving moved the wall clock.
                if c.hour() != 0 {
                    let hour = i64::from(c.hour());
                    t += if hour > 12 { (24 - hour) * 3600 } else { -hour * 3600 };
                    c = civil(t)?;
                }
                if c.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(self.hours, c.hour()) {
                if !added {
                    added = true;
                    t = go_date(tz, c.year().into(), c.month().into(), c.day().into(), c.hour().into(), 0, 0)?;
                }
                t += 3600;
                c = civil(t)?;
                if c.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minutes, c.minute()) {
                if !added {
                    added = true;
                    t -= t.rem_euclid(60);
                }
                t += 60;
                c = civil(t)?;
                if c.minute() == 0 {
                    continue 'wrap;
                }
            }
            // Second 0: the library steps a second at a time to the next minute; every zone's
            // offset is whole minutes since 1972, so jump there at once.
            if c.second() != 0 {
                added = true;
                t += 60 - i64::from(c.second());
                continue 'wrap;
            }
            return Timestamp::from_second(t).ok();
        }
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
    fn daylight_saving_as_the_cronjob_controller_skips_gaps_and_repeats_folds() {
        let new_york = zone("America/New_York");
        // 2025-03-09: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist and does not fire.
        let daily = cron("30 2 * * *");
        let (times, _) = daily.between(at("2025-03-08T00:00:00Z"), at("2025-03-11T00:00:00Z"), &new_york, 10);
        assert_eq!(times, ["2025-03-08T07:30:00Z", "2025-03-10T06:30:00Z"].map(at));
        // 2025-11-02: 01:30 happens twice (EDT, then EST); it fires both times.
        let fold = cron("30 1 * * *");
        let (times, _) = fold.between(at("2025-11-01T12:00:00Z"), at("2025-11-03T12:00:00Z"), &new_york, 10);
        assert_eq!(times, ["2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-03T06:30:00Z"].map(at));
        // Hourly across the fold: every instant on the hour, 01:00 twice.
        let (hourly, _) =
            cron("0 * * * *").between(at("2025-11-02T03:30:00Z"), at("2025-11-02T08:30:00Z"), &new_york, 10);
        let expected = [
            "2025-11-02T04:00:00Z",
            "2025-11-02T05:00:00Z",
            "2025-11-02T06:00:00Z",
            "2025-11-02T07:00:00Z",
            "2025-11-02T08:00:00Z",
        ];
        assert_eq!(hourly, expected.map(at));
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
        // A step above 1 restricts: odd days of the month or Mondays (2025-06-02 is a Monday).
        let (odd_or_monday, _) =
            cron("0 0 */2 * MON").between(at("2025-05-31T00:00:00Z"), at("2025-06-06T00:00:00Z"), &TimeZone::UTC, 10);
        let expected = ["2025-06-01T00:00:00Z", "2025-06-02T00:00:00Z", "2025-06-03T00:00:00Z", "2025-06-05T00:00:00Z"];
        assert_eq!(odd_or_monday, expected.map(at));
        // `?` is a star: Mondays only.
        let (mondays, _) =
            cron("0 0 ? * MON").between(at("2025-05-31T00:00:00Z"), at("2025-06-10T00:00:00Z"), &TimeZone::UTC, 10);
        assert_eq!(mondays, ["2025-06-02T00:00:00Z", "2025-06-09T00:00:00Z"].map(at));
    }

    #[test]
    fn steps_ranges_names_and_descriptors() {
        assert_eq!(cron("*/15 * * * *").minutes, (1 << 0) | (1 << 15) | (1 << 30) | (1 << 45));
        assert_eq!(cron("10-20/5 * * * *").minutes, (1 << 10) | (1 << 15) | (1 << 20));
        assert_eq!(cron("50/5 * * * *").minutes, (1 << 50) | (1 << 55));
        assert_eq!(cron("0 0 * jan-Mar *").months, (1 << 1) | (1 << 2) | (1 << 3));
        assert_eq!(cron("0 0 * * sun").days_of_week, 1);
        assert_eq!(cron("1,,2 * * * *").minutes, 0b110, "empty list parts are skipped");
        assert_eq!(cron("@daily"), cron("0 0 * * *"));
        assert_eq!(cron("@weekly"), cron("0 0 * * SUN"));
        assert_eq!(cron("@hourly"), cron("0 * * * *"));
        assert_eq!(cron("@monthly"), cron("0 0 1 * *"));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("0 22 * *", "expected 5 fields"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("0 24 * * *", "hour: 24 is outside 0-23"),
            ("0 0 0 * *", "day-of-month: 0 is outside 1-31"),
            ("0 0 * 13 *", "month: 13 is outside 1-12"),
            ("0 0 * * 7", "day-of-week: 7 is outside 0-6"),
            ("0 0 * * FUNDAY", "day-of-week: \"FUNDAY\" is not a number"),
            ("*/0 * * * *", "minute: a step of 0 never advances"),
            ("0 20-10 * * *", "hour: range \"20-10\" runs backwards"),
            ("1-2-3 * * * *", "more than one hyphen"),
            ("TZ=Asia/Seoul 0 0 * * *", "TZ= and CRON_TZ= are not allowed"),
            ("CRON_TZ=UTC 0 0 * * *", "TZ= and CRON_TZ= are not allowed"),
            ("@every 1h", "@every is not supported"),
            ("@sometimes", "unknown descriptor"),
        ];
        for (expression, expected) in cases {
            let error = expression.parse::<Cron>().unwrap_err().to_string();
            assert!(error.contains(expected), "{expression}: {error}");
        }
    }

    #[test]
    fn an_impossible_date_never_fires_and_a_long_gap_keeps_the_newest() {
        assert_eq!(cron("0 0 30 2 *").next_after(at("2025-01-01T00:00:00Z"), &TimeZone::UTC), None);
        let (times, dropped) =
            cron("0 * * * *").between(at("2025-01-01T00:00:00Z"), at("2025-01-02T00:00:00Z"), &TimeZone::UTC, 3);
        assert_eq!(times, ["2025-01-01T22:00:00Z", "2025-01-01T23:00:00Z", "2025-01-02T00:00:00Z"].map(at));
        assert_eq!(dropped, 21);
    }
}
