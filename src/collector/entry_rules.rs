//! The entry rules of a reconstructed pre-race card (`prerace-entry-preprocessing-rules-v1`, the
//! contract of domain.md §2.3 (b)): a runner is dropped for a duplicate start number, an invalid
//! age, an assigned weight outside 40-65 kg or a missing core field; every other problem nulls
//! the field and flags it; sex is bucketed into 수/암/거/기타. Pure: race-card rows in, a card and
//! its audit out. Only allow-listed entry-card fields are read (the same allowlist as live
//! cards), so nothing known only after the race can reach the card.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::prerace;
use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::{PreRaceCard, PreRaceEntry};

pub const RULE_SCHEMA_VERSION: &str = "prerace-entry-preprocessing-rules-v1";

/// Assigned weight (kg) a runner may carry; outside it the entry is dropped.
pub const BURDEN_RANGE: std::ops::RangeInclusive<f64> = 40.0..=65.0;
const RATING_MAX: i64 = 140;
const BODY_WEIGHT_RANGE: std::ops::RangeInclusive<i64> = 200..=650;
const WEIGHT_DELTA_RANGE: std::ops::RangeInclusive<i64> = -40..=40;

/// A runner the rules dropped, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedEntry {
    pub chul_no: Option<i64>,
    pub hr_no: Option<String>,
    pub reasons: Vec<String>,
}

/// What the rules did to a race's entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessingAudit {
    pub rule_schema_version: String,
    pub excluded_entries: Vec<ExcludedEntry>,
    pub excluded_horses: usize,
    /// Drop reasons and flags, each with the number of runners it applied to.
    pub reason_counts: BTreeMap<String, usize>,
}

/// The sex bucket of a raw value (Korean or English codes); `None` when it is missing.
pub fn sex_bucket(raw: &str) -> &'static str {
    match raw.trim().to_lowercase().as_str() {
        "수" | "수말" | "m" | "male" | "colt" | "horse" | "stallion" => "수",
        "암" | "암말" | "f" | "female" | "filly" | "mare" => "암",
        "거" | "거세" | "거세마" | "g" | "gelding" => "거",
        _ => "기타",
    }
}

fn present<'a>(row: &'a Row, key: &str) -> Option<&'a Value> {
    row.get(key).filter(|v| normalize::text(Some(v)).is_some())
}

/// One row through the drop rules: the entry with its flags, or the drop reasons.
fn entry(row: &Row, scratched: &BTreeSet<i64>) -> Result<PreRaceEntry, ExcludedEntry> {
    let get = |k: &str| row.get(k);
    let mut reasons: Vec<&'static str> = Vec::new();
    let chul_no = normalize::int(get("chulNo")).filter(|n| *n >= 1);
    let hr_no = normalize::id(get("hrNo"));
    let ids = [hr_no.clone(), normalize::id(get("jkNo")), normalize::id(get("trNo")), normalize::id(get("owNo"))];
    let texts = ["hrName", "jkName", "trName", "owName", "sex", "name", "rank"].map(|k| normalize::text(get(k)));
    if chul_no.is_none() || ids.iter().any(Option::is_none) || texts.iter().any(Option::is_none) {
        reasons.push("core_missing");
    }
    let age = match present(row, "age") {
        None => {
            reasons.push("core_missing");
            None
        }
        Some(value) => {
            let age = normalize::int(Some(value)).filter(|a| *a >= 1);
            if age.is_none() {
                reasons.push("age_invalid");
            }
            age
        }
    };
    let wg_budam = match present(row, "wgBudam") {
        None => {
            reasons.push("core_missing");
            None
        }
        Some(value) => match normalize::float(Some(value)) {
            None => {
                reasons.push("wg_budam_invalid");
                None
            }
            Some(kg) if !BURDEN_RANGE.contains(&kg) => {
                reasons.push("wg_budam_outlier");
                None
            }
            Some(kg) => Some(kg),
        },
    };
    if !reasons.is_empty() {
        reasons.dedup();
        let mut reasons: Vec<String> = reasons.into_iter().map(String::from).collect();
        reasons.sort();
        reasons.dedup();
        return Err(ExcludedEntry { chul_no, hr_no, reasons });
    }
    let chul_no = chul_no.unwrap_or_default();
    let mut flags: Vec<&'static str> = Vec::new();
    let [hr_name, jk_name, tr_name, ow_name, sex, country, class_rank] = texts;
    let [_, jk_no, tr_no, ow_no] = ids;
    let sex = sex.map(|raw| {
        let bucket = sex_bucket(&raw);
        if bucket != raw {
            flags.push("sex_bucketed");
        }
        bucket.to_string()
    });
    let rating = rating(row, &mut flags);
    let wg_budam_bigo = normalize::text(get("wgBudamBigo"));
    if wg_budam_bigo.is_none() {
        flags.push("budam_note_missing");
    }
    let (body_weight, body_weight_delta) = body_weight(get("wgHr"), &mut flags);
    let days_since_last_race = days_since_last_race(row, &mut flags);
    let equipment = normalize::text(get("hrTool"));
    if equipment.is_none() {
        flags.push("hr_tool_missing");
    }
    let win_odds = normalize::float(get("winOdds"));
    Ok(PreRaceEntry {
        chul_no,
        hr_no,
        hr_name,
        age,
        sex,
        country,
        class_rank,
        rating,
        wg_budam,
        wg_budam_bigo,
        body_weight,
        body_weight_delta,
        jockey_weight: normalize::float(get("wgJk")),
        days_since_last_race,
        equipment,
        jk_no,
        jk_name,
        tr_no,
        tr_name,
        ow_no,
        ow_name,
        // `winOdds == 0` is read as a scratch signal only; the odds themselves never enter the card.
        scratched: scratched.contains(&chul_no) || win_odds == Some(0.0),
        flags: flags.into_iter().map(String::from).collect(),
    })
}

/// The rating, 0..=140; 0 is kept (an unknown rating, not a missing one) and flagged.
fn rating(row: &Row, flags: &mut Vec<&'static str>) -> Option<i64> {
    match present(row, "rating") {
        None => {
            flags.push("rating_known_false");
            None
        }
        Some(value) => match normalize::int(Some(value)) {
            None => {
                flags.push("rating_parse_failed");
                None
            }
            Some(r) if !(0..=RATING_MAX).contains(&r) => {
                flags.push("rating_outlier");
                None
            }
            Some(0) => {
                flags.push("rating_known_false");
                Some(0)
            }
            Some(r) => Some(r),
        },
    }
}

/// Days since the horse's last race (`ilsu`), an integer ≥ 0.
fn days_since_last_race(row: &Row, flags: &mut Vec<&'static str>) -> Option<i64> {
    let value = present(row, "ilsu");
    let days = normalize::int(value).filter(|d| *d >= 0);
    match (value, days) {
        (None, _) => flags.push("ilsu_missing"),
        (Some(_), None) => flags.push("ilsu_parse_failed"),
        _ => {}
    }
    days
}

/// Body weight and its change from `"511(+2)"`, each nulled and flagged when missing, unreadable
/// or out of range.
fn body_weight(value: Option<&Value>, flags: &mut Vec<&'static str>) -> (Option<i64>, Option<i64>) {
    let Some(raw) = normalize::text(value) else {
        flags.extend(["weight_missing", "weight_delta_missing"]);
        return (None, None);
    };
    let (weight_text, rest) = match raw.split_once('(') {
        Some((weight, rest)) => (weight.trim(), Some(rest.trim_end_matches(')').trim())),
        None => (raw.trim(), None),
    };
    let weight = match weight_text.parse::<i64>() {
        Err(_) => {
            flags.extend(["wg_hr_parse_failed", "weight_missing"]);
            None
        }
        Ok(w) if !BODY_WEIGHT_RANGE.contains(&w) => {
            flags.push("weight_outlier");
            None
        }
        Ok(w) => Some(w),
    };
    let delta = match rest {
        None => {
            flags.push("weight_delta_missing");
            None
        }
        Some(text) => match text.trim_start_matches('+').parse::<i64>() {
            Err(_) => {
                flags.push("weight_delta_parse_failed");
                None
            }
            Ok(d) if !WEIGHT_DELTA_RANGE.contains(&d) => {
                flags.push("weight_delta_outlier");
                None
            }
            Ok(d) => Some(d),
        },
    };
    (weight, delta)
}

/// The reconstructed card of one race from its race-card rows (API214_1, read after the race)
/// and the start numbers the scratch list names, with the audit of what the rules did.
/// Entries are sorted by start number; a start number that two rows share drops both (which
/// one is right cannot be known).
pub fn reconstruct(rows: &[Row], scratched: &BTreeSet<i64>) -> (PreRaceCard, PreprocessingAudit) {
    let mut kept: Vec<PreRaceEntry> = Vec::new();
    let mut excluded: Vec<ExcludedEntry> = Vec::new();
    for row in rows {
        match entry(row, scratched) {
            Ok(entry) => kept.push(entry),
            Err(dropped) => excluded.push(dropped),
        }
    }
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for number in rows.iter().filter_map(|r| normalize::int(r.get("chulNo")).filter(|n| *n >= 1)) {
        *seen.entry(number).or_default() += 1;
    }
    let duplicated = |n: i64| seen.get(&n).copied().unwrap_or(0) > 1;
    let (duplicates, mut entries): (Vec<PreRaceEntry>, Vec<PreRaceEntry>) =
        kept.into_iter().partition(|e| duplicated(e.chul_no));
    excluded.extend(duplicates.into_iter().map(|e| ExcludedEntry {
        chul_no: Some(e.chul_no),
        hr_no: e.hr_no,
        reasons: vec!["chul_no_duplicate".into()],
    }));
    for entry in excluded.iter_mut().filter(|e| e.chul_no.is_some_and(duplicated)) {
        if !entry.reasons.iter().any(|r| r == "chul_no_duplicate") {
            entry.reasons.push("chul_no_duplicate".into());
            entry.reasons.sort();
        }
    }
    excluded.sort_by(|a, b| (a.chul_no, &a.hr_no, &a.reasons).cmp(&(b.chul_no, &b.hr_no, &b.reasons)));
    entries.sort_by_key(|e| e.chul_no);
    let mut reason_counts: BTreeMap<String, usize> = BTreeMap::new();
    for reason in excluded.iter().flat_map(|e| &e.reasons).chain(entries.iter().flat_map(|e| &e.flags)) {
        *reason_counts.entry(reason.clone()).or_default() += 1;
    }
    let audit = PreprocessingAudit {
        rule_schema_version: RULE_SCHEMA_VERSION.into(),
        excluded_horses: excluded.len(),
        excluded_entries: excluded,
        reason_counts,
    };
    (PreRaceCard { entries, ..prerace::race_fields(rows) }, audit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(chul_no: i64) -> Row {
        json!({
            "rcDate": 20250523, "rcNo": 4, "rcName": "일반", "rcDist": 1400, "rank": "국5등급",
            "chulNo": chul_no, "hrNo": format!("0030{chul_no:03}"), "hrName": format!("말{chul_no}"), "age": 4,
            "sex": "거", "name": "한국", "rating": 61, "wgBudam": 55.5, "wgBudamBigo": "-", "wgHr": "470(+4)",
            "wgJk": 55, "ilsu": 21, "hrTool": "망사", "jkNo": "083001", "jkName": "기수", "trNo": "073001",
            "trName": "조교사", "owNo": 113001, "owName": "마주",
            // Post-race values of the same row: never read.
            "ord": chul_no, "rcTime": 85.3, "buG1fOrd": 2, "jeG3fTime": 40.1, "bu_4_2fTime": 24.4, "winOdds": 4.2,
            "plcOdds": 1.6, "sjG1fOrd": 3
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn with(mut row: Row, key: &str, value: Value) -> Row {
        row.insert(key.into(), value);
        row
    }

    #[test]
    fn the_four_drop_rules_name_each_dropped_runner() {
        let mut no_jockey = row(5);
        no_jockey.remove("jkName");
        let rows = vec![
            row(1),
            with(row(2), "age", json!(0)),
            with(row(3), "wgBudam", json!(66.5)),
            with(row(4), "wgBudam", json!(39)),
            no_jockey,
            row(6),
            with(row(6), "hrNo", json!("0030999")),
            with(row(7), "age", json!("세살")),
            row(8),
        ];
        let (card, audit) = reconstruct(&rows, &BTreeSet::new());
        assert_eq!(card.entries.iter().map(|e| e.chul_no).collect::<Vec<_>>(), [1, 8]);
        let reasons: Vec<(Option<i64>, Vec<String>)> =
            audit.excluded_entries.iter().map(|e| (e.chul_no, e.reasons.clone())).collect();
        let named = |n: i64, r: &str| (Some(n), vec![r.to_string()]);
        assert_eq!(
            reasons,
            [
                named(2, "age_invalid"),
                named(3, "wg_budam_outlier"),
                named(4, "wg_budam_outlier"),
                named(5, "core_missing"),
                named(6, "chul_no_duplicate"),
                named(6, "chul_no_duplicate"),
                named(7, "age_invalid"),
            ]
        );
        assert_eq!(audit.excluded_horses, 7);
        assert_eq!(audit.reason_counts["chul_no_duplicate"], 2);
        assert_eq!(audit.reason_counts["wg_budam_outlier"], 2);
        assert_eq!(audit.rule_schema_version, RULE_SCHEMA_VERSION);
    }

    #[test]
    fn out_of_range_values_are_nulled_and_flagged_and_the_runner_kept() {
        let rows = vec![
            with(with(row(1), "rating", json!(141)), "wgHr", json!("700(+2)")),
            with(with(row(2), "rating", json!(0)), "wgHr", json!("480(+45)")),
            with(with(row(3), "rating", json!("n/a")), "wgHr", json!("480")),
            with(with(row(4), "ilsu", json!("-")), "hrTool", json!(" ")),
            with(row(5), "wgHr", json!("-")),
        ];
        let (card, audit) = reconstruct(&rows, &BTreeSet::new());
        assert_eq!(card.entries.len(), 5, "no flag drops a runner");
        let e = &card.entries;
        assert_eq!((e[0].rating, e[0].body_weight, e[0].body_weight_delta), (None, None, Some(2)));
        assert!(e[0].flags.contains(&"rating_outlier".into()) && e[0].flags.contains(&"weight_outlier".into()));
        assert_eq!((e[1].rating, e[1].body_weight, e[1].body_weight_delta), (Some(0), Some(480), None));
        assert!(e[1].flags.contains(&"rating_known_false".into()));
        assert!(e[1].flags.contains(&"weight_delta_outlier".into()));
        assert_eq!((e[2].rating, e[2].body_weight_delta), (None, None));
        assert!(e[2].flags.contains(&"rating_parse_failed".into()));
        assert!(e[2].flags.contains(&"weight_delta_missing".into()));
        assert_eq!((e[3].days_since_last_race, e[3].equipment.as_deref()), (None, None));
        assert!(e[3].flags.contains(&"ilsu_missing".into()) && e[3].flags.contains(&"hr_tool_missing".into()));
        assert_eq!((e[4].body_weight, e[4].body_weight_delta), (None, None));
        assert!(e.iter().all(|e| e.flags.contains(&"budam_note_missing".into())), "`-` is no note");
        assert_eq!(audit.excluded_horses, 0);
        assert_eq!(audit.reason_counts["budam_note_missing"], 5);
    }

    #[test]
    fn sex_is_bucketed_from_korean_or_english_codes() {
        let rows: Vec<Row> = ["수", "암말", "G", "mare", "?"]
            .iter()
            .enumerate()
            .map(|(i, s)| with(row(i as i64 + 1), "sex", json!(s)))
            .collect();
        let (card, _) = reconstruct(&rows, &BTreeSet::new());
        let buckets: Vec<&str> = card.entries.iter().map(|e| e.sex.as_deref().unwrap()).collect();
        assert_eq!(buckets, ["수", "암", "거", "암", "기타"]);
        assert!(!card.entries[0].flags.contains(&"sex_bucketed".into()));
        assert!(card.entries[1].flags.contains(&"sex_bucketed".into()));
    }

    #[test]
    fn nothing_post_race_reaches_a_reconstructed_card_and_scratches_are_marked() {
        let rows = vec![row(1), row(2), with(row(3), "winOdds", json!(0))];
        let (card, _) = reconstruct(&rows, &BTreeSet::from([2]));
        let text = serde_json::to_string(&card).unwrap();
        for leaked in ["85.3", "40.1", "24.4", "4.2", "1.6", "ord", "Odds", "Time", "rcTime"] {
            assert!(!text.contains(leaked), "{leaked} leaked into {text}");
        }
        assert_eq!(card.entries.iter().map(|e| e.scratched).collect::<Vec<_>>(), [false, true, true]);
        assert_eq!((card.distance, card.class_condition.as_deref()), (Some(1400), Some("국5등급")));
    }
}
