//! The race plan of a day (API72_2): which races exist and when they start. Collection asks it
//! first and never assumes a fixed number of races (domain.md §6, pitfall 2).

use jiff::civil::Date;
#[cfg(test)]
use jiff::civil::Time;

use crate::crd::Meet;
use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::{PlannedRace, RaceKey};

/// The races planned for one day and racecourse, by number. Rows of other days or courses are
/// ignored; gaps in the numbering are kept as they are.
pub fn planned_races(date: Date, meet: Meet, rows: &[Row]) -> Vec<PlannedRace> {
    let mut races: Vec<PlannedRace> = rows
        .iter()
        .filter(|row| normalize::date(row.get("rcDate")).is_none_or(|d| d == date))
        .filter(|row| normalize::meet(row.get("meet")).is_none_or(|m| m == meet))
        .filter_map(|row| {
            let number = normalize::int(row.get("rcNo")).filter(|n| *n > 0)?;
            Some(PlannedRace {
                key: RaceKey { date, meet, number },
                start: normalize::start_time(row.get("schStTime")),
                distance: normalize::int(row.get("rcDist")),
            })
        })
        .collect();
    races.sort_by_key(|r| r.key.number);
    races.dedup_by_key(|r| r.key.number);
    races
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_decides_which_races_exist() {
        let day = Date::new(2025, 12, 26).unwrap();
        let rows: Vec<Row> = [
            json!({"rcDate": 20251226, "meet": "부경", "rcNo": 7, "schStTime": 1620, "rcDist": 1400}),
            json!({"rcDate": 20251226, "meet": "부경", "rcNo": 1, "schStTime": 1035, "rcDist": 1000}),
            json!({"rcDate": "20251226", "meet": "3", "rcNo": "5", "schStTime": "1450"}),
            json!({"rcDate": 20251226, "meet": "부경", "rcNo": 1, "schStTime": 1035}),
            json!({"rcDate": 20251227, "meet": "부경", "rcNo": 2}),
            json!({"rcDate": 20251226, "meet": "서울", "rcNo": 3}),
        ]
        .iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let races = planned_races(day, Meet::Busan, &rows);
        let numbers: Vec<i64> = races.iter().map(|r| r.key.number).collect();
        assert_eq!(numbers, [1, 5, 7], "a gap (race 6 missing) is kept, no 1..15 is assumed");
        assert_eq!(races[0].key.race_id(), "20251226_3_1");
        assert_eq!(races[0].start, Some(Time::new(10, 35, 0, 0).unwrap()));
        assert!(planned_races(day, Meet::Jeju, &rows).is_empty(), "no races is not an error");
    }
}
