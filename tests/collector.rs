//! The collection pipeline against the fake KRA API and a real store (SQLite, and PostgreSQL
//! started by the test): the pitfalls of domain.md §6 that concern collection, each by name.

mod support;

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::civil::Date;
use kra_operator::collector::run::{Collector, RunRequest, RunSummary, Stage};
use kra_operator::crd::Meet;
use kra_operator::kra::budget::{Budget, BudgetLimits};
use kra_operator::kra::client::{ClientSettings, KraClient, RetrySettings, ServiceKey};
use kra_operator::store::Store;
use serde_json::{Value, json};
use support::fake_kra::{FakeKra, Fault, business_error, gateway_error};
use support::kra_day::{self, Day};
use support::postgres::Postgres;

const KEY: &str = "KraTestServiceKey0123456789%2Fabc%3D%3D";

/// 09:00 in Seoul on the race day: before every cutoff.
fn morning() -> Timestamp {
    "2025-05-24T00:00:00Z".parse().unwrap()
}

/// 21:00 in Seoul: after every race.
fn evening() -> Timestamp {
    "2025-05-24T12:00:00Z".parse().unwrap()
}

struct Harness {
    kra: FakeKra,
    store: Store,
    _dir: Option<support::Scratch>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let kra = FakeKra::start().await;
        let dir = support::Scratch::new("kra-collect");
        let store = Store::open(&format!("sqlite://{}", dir.join("kra.sqlite3").display())).await.unwrap();
        Harness { kra, store, _dir: Some(dir) }
    }

    fn run_request(&self, stages: &[Stage], races: Option<Vec<i64>>) -> RunRequest {
        RunRequest {
            meet: Meet::Seoul,
            from: Date::new(2025, 5, 24).unwrap(),
            to: Date::new(2025, 5, 24).unwrap(),
            races,
            stages: stages.to_vec(),
            details: true,
            odds_batch: 100,
            odds_backfill: false,
            refresh: false,
        }
    }

    async fn run(&self, stages: &[Stage], races: Option<Vec<i64>>, now: Timestamp) -> RunSummary {
        self.run_with(stages, races, now, 10_000).await
    }

    async fn run_with(&self, stages: &[Stage], races: Option<Vec<i64>>, now: Timestamp, budget: u64) -> RunSummary {
        self.run_request_with(&self.run_request(stages, races), now, budget).await
    }

    async fn run_request_at(&self, request: &RunRequest, now: Timestamp) -> RunSummary {
        self.run_request_with(request, now, 10_000).await
    }

    async fn run_request_with(&self, request: &RunRequest, now: Timestamp, budget: u64) -> RunSummary {
        kra_operator::telemetry::install_crypto_provider();
        let settings = ClientSettings {
            base_url: self.kra.base_url.clone(),
            retry: RetrySettings {
                attempts: 2,
                initial_backoff: std::time::Duration::from_millis(5),
                max_backoff: std::time::Duration::from_millis(20),
            },
            ..Default::default()
        };
        let budget = Arc::new(Budget::new(BudgetLimits { per_second: 10_000.0, burst: 10_000, per_run: budget }));
        let client = KraClient::new(&settings, ServiceKey::new(KEY), budget).unwrap();
        let lines: Mutex<Vec<String>> = Mutex::default();
        let progress = |line: &str| lines.lock().unwrap().push(line.to_string());
        Collector::new(&client, &self.store, Arc::new(move || now), &progress).run(request).await
    }
}

#[tokio::test]
async fn a_day_collects_the_races_the_plan_lists_never_a_fixed_fifteen() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    let summary = h.run(&[Stage::Cards], None, morning()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    assert_eq!((summary.races_found, summary.races_collected, summary.races_failed), (4, 4, 0));
    let asked: Vec<String> = h
        .kra
        .requests()
        .iter()
        .filter(|r| r.path == kra_day::CARD)
        .map(|r| r.param("rc_no").unwrap().to_string())
        .collect();
    assert_eq!(asked, ["1", "2", "3", "5"], "race 4 does not exist and 6..15 are never asked for");
    assert_eq!(h.store.count("prerace_snapshots").await.unwrap(), 4);
    assert_eq!(h.store.count("races").await.unwrap(), 4);
}

#[tokio::test]
async fn a_day_whose_plan_is_unavailable_fails_without_counting_races_it_never_found() {
    let h = Harness::sqlite().await;
    h.kra.faults(kra_day::PLAN, vec![Fault::Status { code: 500, retry_after: None }; 2]);
    let summary = h.run(&[Stage::Cards], None, morning()).await;
    assert!(!summary.succeeded(), "{summary:#?}");
    assert_eq!((summary.races_found, summary.races_collected, summary.races_failed), (0, 0, 1), "{summary:#?}");
    assert!(summary.message.contains("0 collected"), "{}", summary.message);
    assert_eq!(summary.failures[0].race_id, "20250524_1_*", "the failure names the day");
}

#[tokio::test]
async fn a_card_whose_pages_repeat_rows_fails_its_race_as_malformed_and_stores_no_partial_card() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    // Pages of 3 rows, and a server that answers page 2 with page 1 (for a while).
    h.kra.cap_page_size(3);
    h.kra.repeat_page_one(usize::MAX);
    let summary = h.run(&[Stage::Cards], Some(vec![1]), morning()).await;
    assert!(!summary.succeeded(), "{summary:#?}");
    assert_eq!((summary.races_collected, summary.races_failed), (0, 1), "{summary:#?}");
    assert_eq!(summary.failures[0].class, "malformed", "{summary:#?}");
    assert!(summary.failures[0].message.contains("totalCount"), "{}", summary.failures[0].message);
    assert_eq!(h.store.count("prerace_snapshots").await.unwrap(), 0, "no card missing a runner");
}

#[tokio::test]
async fn raw_responses_record_the_page_and_its_size() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    h.kra.cap_page_size(3);
    let summary = h.run(&[Stage::Cards], Some(vec![1]), morning()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    let rows =
        sqlx::query("SELECT params FROM raw_responses WHERE api = 'API214_1'").fetch_all(h.store.pool()).await.unwrap();
    let mut pages: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            let params: serde_json::Value = serde_json::from_str(&sqlx::Row::get::<String, _>(row, 0)).unwrap();
            (params["pageNo"].to_string(), params["numOfRows"].to_string())
        })
        .collect();
    pages.sort();
    assert!(pages.len() >= 2, "a card of more than 3 runners takes several pages: {pages:?}");
    assert_eq!(pages[..2], [("1".into(), "50".into()), ("2".into(), "50".into())], "{pages:?}");
}

#[tokio::test]
async fn collecting_the_same_day_twice_changes_nothing() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    let first = h.run(&[Stage::Cards], None, morning()).await;
    assert_eq!(first.rows_written, 8, "4 races and 4 snapshots");
    let raw = h.store.count("raw_responses").await.unwrap();
    let second = h.run(&[Stage::Cards], None, morning()).await;
    assert_eq!(second.rows_written, 0, "{second:#?}");
    assert_eq!(h.store.count("prerace_snapshots").await.unwrap(), 4);
    assert_eq!(h.store.count("raw_responses").await.unwrap(), raw, "identical responses are stored once");
}

#[tokio::test]
async fn a_late_jockey_change_becomes_a_new_revision_and_the_frozen_snapshot_stays() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    h.run(&[Stage::Cards], Some(vec![1]), morning()).await;

    // The jockey of chulNo 2 changes after the cutoff; re-collecting must not overwrite.
    let rows: Vec<Value> = (1..=day.runners)
        .map(|chul| {
            let jockey = if chul == 2 { "080999".to_string() } else { kra_day::jockey_no(chul) };
            kra_day::card_row(&day, 1, chul, 0, &jockey)
        })
        .collect();
    h.kra.replace_rows(kra_day::CARD, &[("rc_date", day.date), ("rc_no", "1")], rows);
    let summary = h.run(&[Stage::Cards], Some(vec![1]), evening()).await;
    assert!(summary.succeeded(), "{summary:#?}");

    let snapshots = h.store.prerace_snapshots("20250524_1_1").await.unwrap();
    assert_eq!(snapshots.len(), 2);
    let jockey = |card: &Value| card["card"]["entries"][1]["jk_no"].clone();
    assert_eq!(jockey(&snapshots[0].card), json!("080102"), "the frozen pre-race snapshot keeps the original jockey");
    assert_eq!(jockey(&snapshots[1].card), json!("080999"));
    assert_eq!(
        (snapshots[0].after_cutoff, snapshots[1].after_cutoff),
        (false, true),
        "the later revision is marked after the cutoff"
    );
}

#[tokio::test]
async fn nothing_post_race_is_stored_as_pre_race_state_even_when_collected_after_the_race() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    kra_day::serve_after(&h.kra, &day);
    h.run(&[Stage::Cards], Some(vec![3]), evening()).await;
    let snapshot = &h.store.prerace_snapshots("20250524_1_3").await.unwrap()[0].card;
    let card = serde_json::to_string(&snapshot["card"]).unwrap();
    for leaked in ["\"ord\"", "rcTime", "AccTime", "fOrd", "Odds", "73.5"] {
        assert!(!card.contains(leaked), "{leaked} leaked into the pre-race card: {card}");
    }
}

#[tokio::test]
async fn results_are_read_fresh_after_the_card_and_odds_follow() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    h.run(&[Stage::Cards], None, morning()).await;
    kra_day::serve_after(&h.kra, &day);
    let summary = h.run(&[Stage::Results, Stage::Odds], None, evening()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    assert_eq!(h.store.count("race_results").await.unwrap(), 4, "no result came from a stale card");
    assert_eq!(h.store.count("race_odds").await.unwrap(), 4 * 9);
}

#[tokio::test]
async fn backfilled_odds_are_kept_apart_from_live_odds() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    kra_day::serve_after(&h.kra, &day);
    h.kra.rows(
        "API301/Dividend_rate_total",
        &[("rc_no", "1")],
        vec![json!({"pool": "삼복승식", "chulNo": 8, "chulNo2": 7, "chulNo3": 6, "odds": 30.9, "rcNo": 1})],
    );
    h.run(&[Stage::Odds], Some(vec![1]), evening()).await;
    let mut request_backfill = h.run_request(&[Stage::Odds], Some(vec![1]));
    request_backfill.odds_backfill = true;
    let summary = h.run_request_at(&request_backfill, evening()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    assert_eq!(
        h.store.count("race_odds").await.unwrap(),
        9 + 1,
        "both sources are stored, neither overwrites the other"
    );
}

#[tokio::test]
async fn a_result_collected_before_the_race_ran_is_a_failure_not_a_result() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    let summary = h.run(&[Stage::Results], Some(vec![1]), morning()).await;
    assert_eq!(summary.races_failed, 1);
    assert_eq!(summary.failures[0].class, "result_not_available");
    assert_eq!(h.store.count("race_results").await.unwrap(), 0);
}

#[tokio::test]
async fn soft_sources_degrade_to_flags_without_failing_races() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    h.kra.faults(kra_day::TRACK, vec![Fault::Status { code: 503, retry_after: None }; 2]);
    h.kra.faults(kra_day::CANCELLED, vec![Fault::Truncate; 2]);
    let summary = h.run(&[Stage::Cards], Some(vec![2]), morning()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    let snapshot = &h.store.prerace_snapshots("20250524_1_2").await.unwrap()[0].card;
    assert_eq!(snapshot["track"], Value::Null);
    // Without the scratch list, chulNo 3 is not marked scratched: the flag says why.
    assert_eq!(snapshot["card"]["entries"][2]["scratched"], false);
}

#[tokio::test]
async fn scratches_are_marked_and_details_are_fetched_once_per_run() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    h.run(&[Stage::Cards], None, morning()).await;
    let snapshot = &h.store.prerace_snapshots("20250524_1_2").await.unwrap()[0].card;
    assert_eq!(snapshot["card"]["entries"][2]["scratched"], true);
    assert_eq!(snapshot["details"]["1"]["jkDetail"]["jkNo"], "080101");
    // 8 jockeys ride in 4 races: each is fetched once.
    assert_eq!(h.kra.requests_to(kra_day::JOCKEY), 8);
    assert_eq!(h.kra.requests_to(kra_day::TRAINER), 4);
    assert_eq!(h.kra.requests_to(kra_day::HORSE), 4 * 8 - 1, "the scratched horse is skipped");
}

#[tokio::test]
async fn a_race_fails_when_half_its_horses_details_fail() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    // Every horse record of race 1 fails (twice: the client retries once).
    h.kra.faults(kra_day::HORSE, vec![Fault::Status { code: 500, retry_after: None }; 16]);
    let summary = h.run(&[Stage::Cards], Some(vec![1, 2]), morning()).await;
    assert_eq!(summary.races_failed, 1, "{summary:#?}");
    assert_eq!(summary.failures[0].race_id, "20250524_1_1");
    assert_eq!(summary.failures[0].class, "details_failed");
    assert_eq!(summary.races_collected, 1);
}

#[tokio::test]
async fn a_few_failed_horses_degrade_to_empty_blocks() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    h.kra.faults(kra_day::HORSE, vec![Fault::Status { code: 500, retry_after: None }; 2]);
    let summary = h.run(&[Stage::Cards], Some(vec![1]), morning()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    let snapshot = &h.store.prerace_snapshots("20250524_1_1").await.unwrap()[0].card;
    assert_eq!(snapshot["details"]["1"]["hrDetail"], json!({}));
    assert_eq!(snapshot["details"]["2"]["hrDetail"]["hrNo"], "0040102");
}

#[tokio::test]
async fn an_auth_failure_stops_the_run_at_once() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    h.kra.faults(kra_day::CARD, vec![Fault::Body(gateway_error("30", "SERVICE_KEY_IS_NOT_REGISTERED_ERROR"))]);
    let summary = h.run(&[Stage::Cards], None, morning()).await;
    assert_eq!(summary.stop_class, Some("auth"));
    assert_eq!(h.kra.requests_to(kra_day::CARD), 1, "no race after an auth failure");
}

#[tokio::test]
async fn a_run_stopped_by_the_quota_counts_only_the_races_it_stored() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    // Race 1's card arrives; the quota runs out on race 2's.
    let quota = Fault::Body(business_error("22", "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"));
    h.kra.faults(kra_day::CARD, vec![Fault::Delay(std::time::Duration::ZERO), quota]);
    let summary = h.run(&[Stage::Cards], None, morning()).await;
    assert_eq!(summary.stop_class, Some("quota_exhausted"), "{summary:#?}");
    assert_eq!((summary.races_found, summary.races_collected, summary.races_failed), (4, 1, 0), "{summary:#?}");
    assert_eq!(h.store.count("prerace_snapshots").await.unwrap(), 1, "one card stored, one counted");
    assert!(summary.message.contains("3 not finished"), "{}", summary.message);
}

#[tokio::test]
async fn the_runs_budget_caps_every_call_including_details() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    let summary = h.run_with(&[Stage::Cards], None, morning(), 20).await;
    assert_eq!(summary.stop_class, Some("budget_exhausted"));
    assert_eq!(h.kra.requests().len(), 20);
    assert_eq!(summary.api_calls, 20);
}

/// The operator sizes each attempt's request grant from the action, its days and races
/// (`CollectorTask::calls_needed`, plus a quarter for retries). On the largest day the rule allows
/// for (20 races of 16 runners, every horse new), each action's fault-free run stays within the
/// calls the rule counts for it.
#[tokio::test]
async fn every_action_stays_within_the_calls_its_grant_is_sized_from() {
    use kra_operator::crd::krajob::KraAction;
    use kra_operator::worker::CollectorTask;
    let day = Day { date: "20250524", races: (1..=20).collect(), runners: 16 };
    let sized = |action| {
        CollectorTask {
            action,
            meet: Meet::Seoul,
            from: Date::new(2025, 5, 24).unwrap(),
            to: Date::new(2025, 5, 24).unwrap(),
            races: None,
            api_key: Some(kra_operator::crd::SecretKeyRef { name: "kra-api".into(), key: "serviceKey".into() }),
            database: kra_operator::crd::SecretKeyRef { name: "kra-db".into(), key: "url".into() },
            kra_api_base_url: None,
        }
        .calls_needed()
    };
    let runs: [(KraAction, &[Stage], Timestamp); 4] = [
        (KraAction::CollectRaceCards, &[Stage::Cards], morning()),
        (KraAction::CollectResults, &[Stage::Results], evening()),
        (KraAction::CollectOdds, &[Stage::Odds], evening()),
        (KraAction::FullPipeline, &[Stage::Cards, Stage::Results, Stage::Odds], evening()),
    ];
    for (action, stages, now) in runs {
        let h = Harness::sqlite().await;
        kra_day::serve_before(&h.kra, &day);
        if now == evening() {
            kra_day::serve_after(&h.kra, &day);
        }
        let summary = h.run(stages, None, now).await;
        assert!(summary.succeeded(), "{action:?}: {summary:#?}");
        assert_eq!(summary.races_found, 20, "{action:?}");
        let made = h.kra.requests().len() as i64;
        assert_eq!(made, summary.api_calls, "{action:?}: every request is counted");
        println!("{action:?}: {made} requests made, {} counted by the sizing rule", sized(action));
        assert!(made <= sized(action), "{action:?}: {made} requests, the grant is sized for {}", sized(action));
    }
}

#[tokio::test]
async fn a_requested_race_the_plan_does_not_list_is_reported() {
    let h = Harness::sqlite().await;
    kra_day::serve_before(&h.kra, &Day::default());
    let summary = h.run(&[Stage::Cards], Some(vec![1, 4]), morning()).await;
    assert_eq!((summary.races_found, summary.races_collected, summary.races_failed), (2, 1, 1));
    assert_eq!(summary.failures[0].class, "not_scheduled");
}

#[tokio::test]
async fn training_joined_by_name_only_when_the_name_is_unambiguous() {
    let h = Harness::sqlite().await;
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    // Two runners of race 1 named alike: neither may get the (single) training row.
    let rows: Vec<Value> = (1..=day.runners)
        .map(|chul| {
            let mut row = kra_day::card_row(&day, 1, chul, 0, &kra_day::jockey_no(chul));
            if chul == 2 {
                row["hrName"] = json!("말11");
            }
            row
        })
        .collect();
    h.kra.replace_rows(kra_day::CARD, &[("rc_date", day.date), ("rc_no", "1")], rows);
    h.run(&[Stage::Cards], Some(vec![1]), morning()).await;
    let snapshot = &h.store.prerace_snapshots("20250524_1_1").await.unwrap()[0].card;
    assert_eq!(snapshot["training"], json!({}), "an ambiguous name gives no training block, never a wrong one");
}

#[tokio::test]
async fn the_pipeline_runs_on_postgres() {
    let postgres = Postgres::start();
    let kra = FakeKra::start().await;
    let store = Store::open(&postgres.database().await).await.unwrap();
    let h = Harness { kra, store, _dir: None };
    let day = Day::default();
    kra_day::serve_before(&h.kra, &day);
    h.run(&[Stage::Cards], None, morning()).await;
    kra_day::serve_after(&h.kra, &day);
    let summary = h.run(&[Stage::Results, Stage::Odds], None, evening()).await;
    assert!(summary.succeeded(), "{summary:#?}");
    assert_eq!(h.store.count("prerace_snapshots").await.unwrap(), 4);
    assert_eq!(h.store.count("race_results").await.unwrap(), 4);
    let again = h.run(&[Stage::Cards, Stage::Results, Stage::Odds], None, evening()).await;
    // The cards collected now (after the race) carry finishing positions the pre-race card ignores:
    // the card content is the same, so nothing is written.
    assert_eq!(again.rows_written, 0, "{again:#?}");
}
