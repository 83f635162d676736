//! This project's own KRA fixtures: a race day built in code, in the field layout the real API
//! uses (integer dates in JSON, IDs with leading zeros, Korean meet names, `-` sentinels, the
//! post-race result and sectional fields zeroed before the race).

#![allow(dead_code)]

use serde_json::{Value, json};

use super::fake_kra::FakeKra;

pub const PLAN: &str = "API72_2/racePlan_2";
pub const CARD: &str = "API214_1/RaceDetailResult_1";
pub const TRACK: &str = "API189_1/Track_1";
pub const CANCELLED: &str = "API9_1/raceHorseCancelInfo_1";
pub const HORSE: &str = "API8_2/raceHorseInfo_2";
pub const JOCKEY: &str = "API12_1/jockeyInfo_1";
pub const TRAINER: &str = "API19_1/trainerInfo_1";
pub const JOCKEY_STATS: &str = "API11_1/jockeyResult_1";
pub const OWNER: &str = "API14_1/horseOwnerInfo_1";
pub const TRAINING: &str = "API329/textDataSeGtscol";
pub const ODDS: &str = "API160_1/integratedInfo_1";

/// A Seoul race day: 2025-05-24, races 1, 2, 3 and 5 (no race 4), `runners` horses each.
pub struct Day {
    pub date: &'static str,
    pub races: Vec<i64>,
    pub runners: i64,
}

impl Default for Day {
    fn default() -> Self {
        Day { date: "20250524", races: vec![1, 2, 3, 5], runners: 8 }
    }
}

pub fn horse_no(race: i64, chul: i64) -> String {
    format!("00{:05}", 40000 + race * 100 + chul)
}

pub fn jockey_no(chul: i64) -> String {
    // Jockeys ride in several races of the day: one per start number.
    format!("0801{chul:02}")
}

pub fn trainer_no(chul: i64) -> String {
    format!("0701{:02}", chul % 4)
}

/// A card row of API214_1. `finish` is the finishing position after the race (0 before).
pub fn card_row(day: &Day, race: i64, chul: i64, finish: i64, jockey: &str) -> Value {
    let entry = json!({
        "rcDate": day.date.parse::<i64>().unwrap(), "rcNo": race, "rcName": "일반", "rcDist": 1200 + race * 100,
        "meet": "서울", "track": "건조 (4%)", "weather": "맑음", "budam": "핸디캡", "ageCond": "연령오픈",
        "prizeCond": "R0~40", "rank": "국6등급", "chaksun1": 22000000, "chaksun2": 9000000, "chulNo": chul,
        "hrNo": horse_no(race, chul), "hrName": format!("말{race}{chul}"), "age": 3, "sex": "수", "name": "한국",
        "rating": 40 + chul, "wgBudam": 54.0, "wgBudamBigo": "-", "wgHr": format!("{}(+1)", 470 + chul),
        "wgJk": 54, "ilsu": 21, "hrTool": "-", "jkNo": jockey, "jkName": format!("기수{chul}"),
        "trNo": trainer_no(chul), "trName": "조교사", "owNo": 118000 + chul, "owName": "마주"
    });
    let after = finish > 0;
    let result = json!({
        "winOdds": 2.0 + chul as f64, "plcOdds": 1.1,
        "ord": finish, "ordBigo": "-", "rcTime": if after { 72.5 + finish as f64 } else { 0.0 },
        "diffUnit": "-", "rankRise": 0,
        "seG1fAccTime": if after { 13.2 } else { 0.0 }, "sjG1fOrd": if after { finish } else { 0 },
        "se_4cAccTime": if after { 48.1 } else { 0.0 }, "sj_4cOrd": if after { finish } else { 0 },
        "buS1fTime": 0, "jeG1fTime": 0
    });
    let mut row = entry.as_object().unwrap().clone();
    row.extend(result.as_object().unwrap().clone());
    Value::Object(row)
}

/// A detail record served for the query parameter `param` (`hr_no`), carrying `field` (`hrNo`).
fn detail_rows(kra: &FakeKra, path: &str, (param, field): (&str, &str), id: &str, extra: Value) {
    let mut row = serde_json::Map::new();
    row.insert(field.to_string(), json!(id));
    row.insert("rcCntT".into(), json!(12));
    row.insert("ord1CntT".into(), json!(2));
    row.extend(extra.as_object().unwrap().clone());
    kra.rows(path, &[(param, id)], vec![Value::Object(row)]);
}

/// Serve the day before its races: plan, cards, scratches, track, training and details.
pub fn serve_before(kra: &FakeKra, day: &Day) {
    let plan: Vec<Value> = day
        .races
        .iter()
        .map(|r| json!({"rcDate": day.date.parse::<i64>().unwrap(), "meet": "서울", "rcNo": r, "schStTime": 1000 + r * 100, "rcDist": 1200}))
        .collect();
    kra.rows(PLAN, &[("rc_date", day.date)], plan);
    let mut owners = std::collections::BTreeSet::new();
    for race in &day.races {
        let rows: Vec<Value> = (1..=day.runners).map(|chul| card_row(day, *race, chul, 0, &jockey_no(chul))).collect();
        kra.rows(CARD, &[("rc_date", day.date), ("rc_no", &race.to_string())], rows);
        for chul in 1..=day.runners {
            detail_rows(
                kra,
                HORSE,
                ("hr_no", "hrNo"),
                &horse_no(*race, chul),
                json!({"hrName": format!("말{race}{chul}")}),
            );
            owners.insert(118000 + chul);
        }
    }
    for chul in 1..=day.runners {
        detail_rows(
            kra,
            JOCKEY,
            ("jk_no", "jkNo"),
            &jockey_no(chul),
            json!({"jkName": format!("기수{chul}"), "spDate": "-"}),
        );
        detail_rows(kra, JOCKEY_STATS, ("jk_no", "jkNo"), &jockey_no(chul), json!({"winRateT": 8.5}));
        detail_rows(kra, TRAINER, ("tr_no", "trNo"), &trainer_no(chul), json!({"trName": "조교사"}));
    }
    for owner in owners {
        kra.rows(OWNER, &[("ow_no", &owner.to_string())], vec![json!({"owNo": owner, "owName": "마주"})]);
    }
    kra.rows(
        CANCELLED,
        &[("rc_date", day.date)],
        vec![json!({"rcDate": day.date, "rcNo": 2, "chulNo": 3, "meet": "서울"})],
    );
    kra.rows(
        TRACK,
        &[("rc_date_fr", day.date)],
        day.races
            .iter()
            .map(|r| json!({"rcNo": r, "weather": "맑음", "track": "건조", "waterPercent": 4, "rcDate": day.date}))
            .collect(),
    );
    kra.rows(TRAINING, &[("trng_dt", day.date)], vec![json!({"hrnm": "말11", "trngDt": day.date, "remkTxt": "양호"})]);
}

/// Serve the results and odds of every race (the card rows now carry finishing positions).
pub fn serve_after(kra: &FakeKra, day: &Day) {
    for race in &day.races {
        let rows: Vec<Value> = (1..=day.runners)
            .map(|chul| card_row(day, *race, chul, (day.runners + 1 - chul).max(1), &jockey_no(chul)))
            .collect();
        kra.replace_rows(CARD, &[("rc_date", day.date), ("rc_no", &race.to_string())], rows);
        let odds: Vec<Value> = (1..=day.runners)
            .map(|chul| json!({"pool": "단승식", "chulNo": chul, "odds": 2.0 + chul as f64, "rcNo": race, "rcDate": day.date}))
            .chain(std::iter::once(json!({"pool": "TLA", "chulNo": 8, "chulNo2": 7, "chulNo3": 6, "odds": 31.4, "rcNo": race})))
            .collect();
        kra.rows(ODDS, &[("rc_date", day.date), ("rc_no", &race.to_string())], odds);
    }
}

/// Fill the store at `url` with one collected day (4 races: cards in the morning, results in
/// the evening), through the real collector against a fake KRA API.
pub async fn collected_store(url: &str) {
    use std::sync::Arc;

    use jiff::Timestamp;
    use jiff::civil::Date;
    use kra_operator::collector::run::{Collector, RunRequest, Stage};
    use kra_operator::crd::Meet;
    use kra_operator::kra::budget::{Budget, BudgetLimits};
    use kra_operator::kra::client::{ClientSettings, KraClient, ServiceKey};
    use kra_operator::store::Store;

    let store = Store::open(url).await.unwrap();
    let kra = FakeKra::start().await;
    let day = Day::default();
    serve_before(&kra, &day);
    kra_operator::telemetry::install_crypto_provider();
    let budget = Arc::new(Budget::new(BudgetLimits { per_second: 10_000.0, burst: 10_000, per_run: 10_000 }));
    let settings = ClientSettings { base_url: kra.base_url.clone(), ..Default::default() };
    let client = KraClient::new(&settings, ServiceKey::new("k"), budget).unwrap();
    let request = |stages: Vec<Stage>| RunRequest {
        meet: Meet::Seoul,
        from: Date::new(2025, 5, 24).unwrap(),
        to: Date::new(2025, 5, 24).unwrap(),
        races: None,
        stages,
        details: false,
        odds_batch: 100,
        odds_backfill: false,
        refresh: false,
    };
    let quiet = |_: &str| {};
    let morning: Timestamp = "2025-05-24T00:00:00Z".parse().unwrap();
    let evening: Timestamp = "2025-05-24T12:00:00Z".parse().unwrap();
    let cards =
        Collector::new(&client, &store, Arc::new(move || morning), &quiet).run(&request(vec![Stage::Cards])).await;
    assert!(cards.succeeded(), "{cards:?}");
    serve_after(&kra, &day);
    let results =
        Collector::new(&client, &store, Arc::new(move || evening), &quiet).run(&request(vec![Stage::Results])).await;
    assert!(results.succeeded(), "{results:?}");
}
