//! The pre-race state of a race: the entry card, built field by field from an allowlist. Results,
//! sectional times and odds cannot reach it: there is no field for them (domain.md §2.3).

use std::collections::BTreeSet;

use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::card::{ALLOWED_FIELDS, HELD_FIELDS, PRERACE_SCHEMA, PreRaceCard, PreRaceEntry};

/// Fields of raw rows that are neither allowed nor held: what the card leaves out.
pub fn excluded_fields(rows: &[Row]) -> BTreeSet<String> {
    rows.iter()
        .flat_map(|row| row.keys())
        .filter(|k| !ALLOWED_FIELDS.contains(&k.as_str()) && !HELD_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn entry(row: &Row, cancelled: &BTreeSet<i64>) -> Option<PreRaceEntry> {
    let get = |k: &str| row.get(k);
    let chul_no = normalize::int(get("chulNo"))?;
    let (body_weight, body_weight_delta) = normalize::body_weight(get("wgHr"));
    let win_odds = normalize::float(get("winOdds"));
    let mut entry = PreRaceEntry {
        chul_no,
        hr_no: normalize::id(get("hrNo")),
        hr_name: normalize::text(get("hrName")),
        age: normalize::int(get("age")),
        sex: normalize::text(get("sex")),
        country: normalize::text(get("name")),
        class_rank: normalize::text(get("rank")),
        rating: normalize::int(get("rating")),
        wg_budam: normalize::float(get("wgBudam")),
        wg_budam_bigo: normalize::text(get("wgBudamBigo")),
        body_weight,
        body_weight_delta,
        jockey_weight: normalize::float(get("wgJk")),
        days_since_last_race: normalize::int(get("ilsu")),
        equipment: normalize::text(get("hrTool")),
        jk_no: normalize::id(get("jkNo")),
        jk_name: normalize::text(get("jkName")),
        tr_no: normalize::id(get("trNo")),
        tr_name: normalize::text(get("trName")),
        ow_no: normalize::id(get("owNo")),
        ow_name: normalize::text(get("owName")),
        scratched: cancelled.contains(&chul_no) || win_odds == Some(0.0),
        flags: Vec::new(),
    };
    for (name, missing) in
        [("hr_no", entry.hr_no.is_none()), ("jk_no", entry.jk_no.is_none()), ("tr_no", entry.tr_no.is_none())]
    {
        if missing {
            entry.flags.push(format!("{name}_missing"));
        }
    }
    // A rating of 0 means "no rating", not a rating of zero.
    if entry.rating == Some(0) {
        entry.rating = None;
        entry.flags.push("rating_unrated".into());
    }
    if let Some(weight) = entry.wg_budam
        && !(40.0..=65.0).contains(&weight)
    {
        entry.flags.push("wg_budam_out_of_range".into());
    }
    if let Some(weight) = entry.body_weight
        && !(200..=650).contains(&weight)
    {
        entry.body_weight = None;
        entry.flags.push("body_weight_out_of_range".into());
    }
    Some(entry)
}

/// Build the pre-race card from the race-card rows of one race (API214_1) and the chulNos the
/// scratch list (API9_1) names. Rows without a usable `chulNo` are dropped; duplicates keep the
/// first row. Entries are sorted by `chulNo`.
pub fn card(rows: &[Row], cancelled: &BTreeSet<i64>) -> PreRaceCard {
    let mut entries: Vec<PreRaceEntry> = Vec::new();
    for row in rows {
        if let Some(entry) = entry(row, cancelled)
            && !entries.iter().any(|e| e.chul_no == entry.chul_no)
        {
            entries.push(entry);
        }
    }
    entries.sort_by_key(|e| e.chul_no);
    PreRaceCard { entries, ..race_fields(rows) }
}

/// The race-level fields of a card (from its first row), without entries.
pub fn race_fields(rows: &[Row]) -> PreRaceCard {
    let first = rows.first();
    let get = |k: &str| first.and_then(|r| r.get(k));
    let prizes = (1..=5).filter_map(|i| normalize::int(get(&format!("chaksun{i}")))).collect();
    PreRaceCard {
        schema: PRERACE_SCHEMA.to_string(),
        race_name: normalize::text(get("rcName")),
        distance: normalize::int(get("rcDist")),
        class_condition: normalize::text(get("rank")),
        weight_rule: normalize::text(get("budam")),
        age_condition: normalize::text(get("ageCond")),
        prize_condition: normalize::text(get("prizeCond")),
        track: normalize::text(get("track")),
        weather: normalize::text(get("weather")),
        prizes,
        entries: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::race::card::is_post_race_field;
    use serde_json::json;

    /// A post-race row of a Busan race as API214_1 returns it after the race (this project's own
    /// fixture, written in the real field layout).
    fn post_race_row(chul_no: i64, ord: i64) -> Row {
        let card = json!({
            "rcDate": 20250523, "rcNo": 3, "rcName": "일반", "rcDist": 1200, "meet": "부경", "track": "건조 (3%)",
            "weather": "맑음", "budam": "별정A", "ageCond": "연령오픈", "prizeCond": "R0~0", "rank": "국6등급",
            "chaksun1": 16500000, "chaksun2": 6600000, "chulNo": chul_no, "hrNo": format!("00{}", 51200 + chul_no),
            "hrName": "바람", "age": 3, "sex": "거", "name": "한국", "rating": 0, "wgBudam": 54.0, "wgBudamBigo": "-",
            "wgHr": "488(-3)", "wgJk": 54, "ilsu": 28, "hrTool": "망사", "jkNo": "080565", "jkName": "기수",
            "trNo": "070180", "trName": "조교사", "owNo": 118011, "owName": "마주"
        });
        let post_race = json!({
            "winOdds": 3.4, "plcOdds": 1.2,
            "ord": ord, "ordBigo": "-", "rcTime": 73.9, "diffUnit": "1", "rankRise": 0,
            "sjG1fOrd": 2, "seG3fAccTime": 37.1, "buG1fOrd": ord, "buG1fAccTime": 62.4, "buS1fTime": 14.1,
            "bu_1fGTime": 13.0, "bu_4_2fTime": 24.5, "bu_10_8fTime": 0, "jeG1fTime": 0, "je_3cTime": 0,
            "se_1cAccTime": 0, "sj_4cOrd": 0, "g1fTime": 0, "s1fTime": 0
        });
        let mut row = card.as_object().unwrap().clone();
        row.extend(post_race.as_object().unwrap().clone());
        row
    }

    #[test]
    fn nothing_known_only_after_the_race_reaches_the_card() {
        let rows = vec![post_race_row(2, 1), post_race_row(1, 3)];
        let card = card(&rows, &BTreeSet::new());
        let serialized = serde_json::to_string(&card).unwrap();
        for leaked in
            ["73.9", "62.4", "14.1", "24.5", "3.4", "1.2", "ord", "Odds", "rcTime", "AccTime", "GTime", "fOrd"]
        {
            assert!(!serialized.contains(leaked), "{leaked:?} leaked into {serialized}");
        }
        assert_eq!(card.entries.iter().map(|e| e.chul_no).collect::<Vec<_>>(), [1, 2], "sorted by chulNo");
        assert_eq!(card.entries[0].class_rank.as_deref(), Some("국6등급"), "rank is the class, renamed");
        assert_eq!(card.entries[0].hr_no.as_deref(), Some("0051201"));
        assert_eq!(card.entries[0].ow_no.as_deref(), Some("118011"));
        assert_eq!((card.entries[0].body_weight, card.entries[0].body_weight_delta), (Some(488), Some(-3)));
        assert_eq!(card.entries[0].rating, None);
        assert!(card.entries[0].flags.contains(&"rating_unrated".to_string()));
        assert_eq!(card.distance, Some(1200));
        assert_eq!(card.prizes, [16500000, 6600000]);
    }

    #[test]
    fn every_post_race_family_is_named_including_those_the_predecessor_missed() {
        for field in [
            "ord",
            "ordBigo",
            "rcTime",
            "diffUnit",
            "rankRise",
            "finalBit",
            "noraceFlag",
            "sjG1fOrd",
            "sj_4cOrd",
            "seG3fAccTime",
            "se_1cAccTime",
            "seS1fAccTime",
            "buG1fOrd",
            "buG8fAccTime",
            "buS1fTime",
            "bu_1fGTime",
            "bu_4_2fTime",
            "bu_6_4fTime",
            "bu_8_6fTime",
            "bu_10_8fTime",
            "jeG1fTime",
            "jeG3fTime",
            "jeS1fTime",
            "je_1cTime",
            "je_4cTime",
            "g1fTime",
            "s4fTime",
        ] {
            assert!(is_post_race_field(field), "{field} not recognised as post-race");
        }
        for field in ["chulNo", "hrName", "rank", "rating", "wgBudam", "sex", "jkName", "rcDist", "meet", "budam"] {
            assert!(!is_post_race_field(field), "{field} wrongly flagged");
        }
        let excluded = excluded_fields(&[post_race_row(1, 1)]);
        assert!(excluded.iter().all(|f| is_post_race_field(f)), "unexpected exclusions: {excluded:?}");
        assert!(excluded.contains("buS1fTime") && excluded.contains("je_3cTime") && excluded.contains("ordBigo"));
    }

    #[test]
    fn no_allowed_field_is_post_race() {
        for field in ALLOWED_FIELDS {
            assert!(!is_post_race_field(field), "{field} is allowed but post-race");
        }
    }

    #[test]
    fn scratches_come_from_the_scratch_list_or_zero_odds() {
        let mut zero_odds = post_race_row(3, 0);
        zero_odds.insert("winOdds".into(), json!(0));
        let card = card(&[post_race_row(1, 0), post_race_row(2, 0), zero_odds], &BTreeSet::from([2]));
        let scratched: Vec<bool> = card.entries.iter().map(|e| e.scratched).collect();
        assert_eq!(scratched, [false, true, true]);
    }

    #[test]
    fn rows_without_a_start_number_or_duplicated_are_dropped() {
        let mut no_number = post_race_row(1, 0);
        no_number.insert("chulNo".into(), json!("-"));
        let card = card(&[no_number, post_race_row(4, 0), post_race_row(4, 0)], &BTreeSet::new());
        assert_eq!(card.entries.len(), 1);
    }
}
