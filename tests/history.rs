//! Evaluating on history without leakage (issue #17): a synthetic season collected entirely after
//! the fact is refused as it is, then `kra-collector preprocess` reconstructs its pre-race
//! snapshots from the stored raw cards (nothing post-race in them, byte-identical when derived
//! again, written once), `kra-collector enrich` stores each runner's form as of the cutoff, and
//! `kra-evaluator evaluate --snapshot-policy reconstructed --features card+form --baseline form`
//! produces a report that says what it stands on. On SQLite and on a real PostgreSQL.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use jiff::civil::Date;
use kra_operator::collector::history;
use kra_operator::crd::Meet;
use kra_operator::race::card::{HELD_FIELDS, is_post_race_field};
use kra_operator::store::Store;
use serde_json::Value;
use sqlx::Row;
use support::fake_kra::FakeKra;
use support::output_text as text;
use support::season::Season;

async fn collector(kra: &FakeKra, url: &str, args: &[&str], with_key: bool) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kra-collector"));
    command
        .args(args)
        .args(["--database-url", url, "--api-base-url", &kra.base_url])
        .env("KRA_LOG_FORMAT", "json")
        .env("KRA_REQUESTS_PER_SECOND", "1000")
        .env_remove("KRA_API_KEY");
    if with_key {
        command.env("KRA_API_KEY", "HistoryTestKey");
    }
    command.output().await.expect("run kra-collector")
}

fn summary(output: &Output) -> Value {
    assert!(output.status.success(), "{}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(output)))
}

fn read(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Five weeks of Seoul racing that ended yesterday, served by the fake KRA API: the first and
/// last race day, and the number of race days.
async fn season_in_the_past() -> (FakeKra, Date, Date, usize) {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").unwrap()).date();
    let season = Arc::new(Season::generate(17, today, 5, 0));
    let days: Vec<Date> = season.race_days(support::season::Meet::Seoul).into_iter().filter(|d| *d < today).collect();
    let kra = FakeKra::start().await;
    kra.source(season);
    (kra, days[0], *days.last().unwrap(), days.len())
}

/// Every key of a JSON value, at any depth.
fn keys(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                out.push(key.clone());
                keys(child, out);
            }
        }
        Value::Array(list) => list.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

async fn the_season_is_evaluated_after_the_fact(url: &str, dir: &Path) {
    let (kra, from, to, race_days) = season_in_the_past().await;
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let range = ["--meet", "seoul", "--from", from_text.as_str(), "--to", to_text.as_str()];
    let collected = summary(&collector(&kra, url, &[&["pipeline"], &range[..]].concat(), true).await);
    let races = collected["racesCollected"].as_i64().unwrap();
    assert!(races >= 60, "five weeks of Seoul racing: {collected}");
    assert_eq!(collected["enrichment"]["racesWritten"].as_i64(), Some(races), "the pipeline ends with enrich");
    // A backfill: one race-card call per race gives card and result, no detail, track or
    // training call, and the day's plan and scratch list once each.
    let (days, race_days) = (collected["daysDone"].as_i64().unwrap(), race_days as i64);
    assert_eq!(collected["days"].as_i64(), Some(days), "every day done");
    let calls = &collected["apiCallsByEndpoint"];
    assert_eq!((calls["API214_1"].as_i64(), calls["API160_1"].as_i64()), (Some(races), Some(races)), "{calls}");
    assert_eq!((calls["API72_2"].as_i64(), calls["API9_1"].as_i64()), (Some(days), Some(race_days)), "{calls}");
    for endpoint in ["API8_2", "API12_1", "API11_1", "API19_1", "API14_1", "API189_1", "API329"] {
        assert_eq!(calls[endpoint], Value::Null, "{endpoint} is not called for races past their cutoff");
    }
    assert_eq!(collected["apiCalls"].as_i64(), Some(2 * races + days + race_days));
    // Run again: everything is stored, not a single call.
    let again = summary(&collector(&kra, url, &[&["pipeline"], &range[..]].concat(), true).await);
    assert_eq!((again["apiCalls"].as_i64(), again["racesSkipped"].as_i64()), (Some(0), Some(races)), "{again}");
    let evaluate = |extra: &'static [&'static str]| {
        let mut args: Vec<String> = ["evaluate", "--meet", "seoul", "--from", &from_text, "--to", &to_text]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let (dir, url) = (dir.join("runs"), url.to_string());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            support::run_evaluator(&dir, &url, &args, &[]).await
        }
    };

    // Collected after the fact: every card is after its cutoff, and refused with the way out.
    let refused = evaluate(&["--baseline", "rating", "--run-name", "live-before"]).await;
    assert_eq!(refused.status.code(), Some(5), "{}", text(&refused));
    let message = text(&refused);
    assert!(message.contains(&format!("{races} race(s) late_snapshot_unusable")), "{message}");
    assert!(message.contains("kra-collector preprocess"), "{message}");

    // Preprocess needs no key and calls no API; twice writes once.
    let calls_before = kra.requests().len();
    let first = summary(&collector(&kra, url, &[&["preprocess"], &range[..]].concat(), false).await);
    assert_eq!(kra.requests().len(), calls_before, "preprocess calls no API");
    let written = first["racesWritten"].as_i64().unwrap();
    let excluded = first["excluded"].as_array().unwrap().len() as i64;
    assert_eq!(written + excluded, races, "{first}");
    assert!(written >= races - 2, "{first}");
    for exclusion in first["excluded"].as_array().unwrap() {
        assert!(exclusion["reason"].as_str().is_some_and(|r| !r.is_empty()), "{exclusion}");
    }
    assert!(first["entryReasonCounts"]["budam_note_missing"].as_i64() > Some(0), "the entry rules ran: {first}");
    let store = Store::open(url).await.unwrap();
    let snapshots = store.count("prerace_snapshots").await.unwrap();
    let again = summary(&collector(&kra, url, &[&["preprocess"], &range[..]].concat(), false).await);
    assert_eq!((again["racesWritten"].as_i64(), again["racesUnchanged"].as_i64()), (Some(0), Some(written)));
    assert_eq!(store.count("prerace_snapshots").await.unwrap(), snapshots, "nothing written the second time");

    // Nothing post-race in any reconstructed snapshot, and each derives again byte for byte.
    let stored = reconstructed_rows(&store).await;
    assert_eq!(stored.len() as i64, written);
    let cards = store.raw_responses("API214_1", Meet::Seoul, from, to).await.unwrap();
    let scratches = store.raw_responses("API9_1", Meet::Seoul, from, to).await.unwrap();
    for (race_id, sha, content, derivation) in &stored {
        let content: Value = serde_json::from_str(content).unwrap();
        let mut names = Vec::new();
        keys(&content, &mut names);
        let leaked: Vec<&String> =
            names.iter().filter(|k| is_post_race_field(k) || HELD_FIELDS.contains(&k.as_str())).collect();
        assert!(leaked.is_empty(), "{race_id}: post-race fields {leaked:?}");
        assert_eq!(content["details"], serde_json::json!({}), "{race_id}: no detail fetched after the race");
        assert_eq!((content["track"].clone(), content["training"].clone()), (Value::Null, serde_json::json!({})));
        let derivation: Value = serde_json::from_str(derivation).unwrap();
        let pick = |list: &[kra_operator::store::RawResponse], key: &str| -> Vec<_> {
            let wanted: Vec<&str> = derivation[key].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            wanted.iter().map(|sha| list.iter().find(|r| r.sha256 == *sha).unwrap().clone()).collect()
        };
        let number: i64 = race_id.rsplit('_').next().unwrap().parse().unwrap();
        let (again, _) =
            history::derive_snapshot(&pick(&cards, "card"), &pick(&scratches, "cancelled"), number, None).unwrap();
        let (_, again_sha) = kra_operator::store::content_hash(&again).unwrap();
        assert_eq!(&again_sha, sha, "{race_id} derives again byte for byte");
    }

    // The live policy still refuses them, and names the policy that would use them.
    let live = evaluate(&["--baseline", "rating", "--run-name", "live-after"]).await;
    assert_eq!(live.status.code(), Some(5), "{}", text(&live));
    assert!(text(&live).contains(&format!("{written} race(s) reconstructed_snapshot_only")), "{}", text(&live));
    assert!(text(&live).contains("--snapshot-policy reconstructed"), "{}", text(&live));

    // Enrich: form from earlier days only; twice writes once.
    let enriched = summary(&collector(&kra, url, &[&["enrich"], &range[..]].concat(), false).await);
    assert_eq!(enriched["racesWritten"].as_i64(), Some(written), "{enriched}");
    let again = summary(&collector(&kra, url, &[&["enrich"], &range[..]].concat(), false).await);
    assert_eq!(again["racesWritten"].as_i64(), Some(0), "{again}");
    assert_eq!(kra.requests().len(), calls_before, "enrich calls no API");

    // The form baseline on reconstructed inputs: a report that says so.
    let run = evaluate(&[
        "--snapshot-policy",
        "reconstructed",
        "--features",
        "card+form",
        "--baseline",
        "form",
        "--run-name",
        "form",
    ])
    .await;
    assert!(run.status.success(), "{}", text(&run));
    let results = read(dir.join("runs/form/results.json"));
    assert_eq!(results["metrics"]["races"].as_i64(), Some(written));
    assert_eq!(results["inputs"]["reconstructedRaces"].as_i64(), Some(written));
    assert_eq!(results["inputs"]["enrichmentVersion"], "kra-form-v1");
    assert_eq!(results["predictor"]["name"], "form");
    let metadata = read(dir.join("runs/form/metadata.json"));
    assert_eq!(
        (metadata["snapshotPolicy"].as_str(), metadata["features"].as_str()),
        (Some("reconstructed"), Some("card+form"))
    );
    let report = std::fs::read_to_string(dir.join("runs/form/report.html")).unwrap();
    assert!(report.contains(&format!("<strong>Reconstructed inputs:</strong> {written} of {written} races")));
    // Later races know their runners' earlier starts; the first day's know none.
    let stored = store.enrichments_between(Some(Meet::Seoul), from, to).await.unwrap();
    let with_history = stored.values().flat_map(|e| e.features.runners.values()).filter(|f| f.recent_race_count > 0);
    assert!(with_history.count() > 100, "runners with recent starts");
    let first_races = stored.iter().filter(|(id, _)| id.starts_with(&from.strftime("%Y%m%d").to_string()));
    for (id, enrichment) in first_races {
        assert!(enrichment.features.runners.values().all(|f| f.recent_race_count == 0), "{id}: nothing before day one");
    }
}

/// Every reconstructed snapshot: race id, content hash, content and derivation.
async fn reconstructed_rows(store: &Store) -> Vec<(String, String, String, String)> {
    sqlx::query(
        "SELECT race_id, content_sha256, CAST(card AS TEXT), CAST(derivation AS TEXT) FROM prerace_snapshots \
         WHERE snapshot_class = 'reconstructed'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
    .collect()
}

#[tokio::test]
async fn a_season_collected_after_the_fact_is_evaluated_on_sqlite() {
    let dir = support::Scratch::new("kra-history");
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    the_season_is_evaluated_after_the_fact(&url, &dir).await;
}

#[tokio::test]
async fn a_season_collected_after_the_fact_is_evaluated_on_postgres() {
    let postgres = support::postgres::Postgres::start();
    let url = postgres.database().await;
    let dir = support::Scratch::new("kra-history-pg");
    the_season_is_evaluated_after_the_fact(&url, &dir).await;
}

#[tokio::test]
async fn a_backfill_stopped_by_the_daily_quota_resumes_where_it_stopped() {
    let (kra, from, to, _) = season_in_the_past().await;
    let dir = support::Scratch::new("kra-resume");
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    let (from_text, to_text) = (from.to_string(), to.to_string());
    let args = ["pipeline", "--meet", "seoul", "--from", from_text.as_str(), "--to", to_text.as_str()];
    // The quota runs out at the third race day's plan.
    let mut faults = vec![support::fake_kra::Fault::Delay(std::time::Duration::ZERO); 2];
    faults.push(support::fake_kra::Fault::Body(support::fake_kra::business_error(
        "22",
        "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR",
    )));
    kra.faults(support::season::PLAN, faults);
    let summary_file = dir.join("termination-log");
    let mut with_summary = args.to_vec();
    with_summary.extend(["--summary-file", summary_file.to_str().unwrap()]);
    let stopped = collector(&kra, &url, &with_summary, true).await;
    assert_eq!(stopped.status.code(), Some(6), "{}", text(&stopped));
    let first: Value = serde_json::from_slice(&stopped.stdout).unwrap();
    let days = first["days"].as_i64().unwrap();
    assert_eq!(first["daysDone"].as_i64(), Some(days - first["daysLeft"].as_i64().unwrap()));
    let compact: kra_operator::crd::CollectionSummary =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    assert_eq!(compact.days_left, first["daysLeft"].as_i64(), "the KraJob status shows the progress");
    let last = first["lastCompleteDay"].as_str().expect("two race days were done").to_string();
    let plans_before = kra.requests_to(support::season::PLAN);

    // After the reset: the next attempt starts after the last complete day.
    let resumed = summary(&collector(&kra, &url, &args, true).await);
    assert_eq!(resumed["daysLeft"].as_i64(), Some(0), "{resumed}");
    let asked: Vec<String> = kra.requests()[..]
        .iter()
        .filter(|r| r.path == support::season::PLAN)
        .skip(plans_before)
        .map(|r| r.param("rc_date").unwrap().to_string())
        .collect();
    let last_compact = last.replace('-', "");
    assert!(asked.iter().all(|day| *day > last_compact), "no plan asked again for a done day: {asked:?} after {last}");
    assert_eq!(
        resumed["racesSkipped"].as_i64(),
        first["racesCollected"].as_i64(),
        "what was stored is not fetched again"
    );
}

/// Calls per race of a live collection (cards before the cutoff, results and odds after) against
/// a backfill of days long past; the figures in docs/collector.md come from this test's output
/// (`cargo nextest run --test history --no-capture -E 'test(fraction)'`).
#[tokio::test]
async fn a_backfill_costs_a_fraction_of_a_live_collection() {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").unwrap()).date();
    let season = Arc::new(Season::generate(23, today, 0, 2));
    let ahead = season.race_days(support::season::Meet::Seoul).into_iter().find(|d| *d > today).unwrap();
    let kra = FakeKra::start().await;
    kra.source(season.clone());
    let dir = support::Scratch::new("kra-cost");
    let url = format!("sqlite://{}", dir.join("live.sqlite3").display());
    let day = ahead.to_string();
    let live_args = |command: &'static str| [command, "--meet", "seoul", "--date", day.as_str()];
    let cards = summary(&collector(&kra, &url, &live_args("collect"), true).await);
    season.run_through(ahead);
    let results = summary(&collector(&kra, &url, &live_args("results"), true).await);
    let odds = summary(&collector(&kra, &url, &live_args("odds"), true).await);
    let live_races = cards["racesCollected"].as_i64().unwrap();
    let live_calls: i64 = [&cards, &results, &odds].iter().map(|s| s["apiCalls"].as_i64().unwrap()).sum();

    let (kra, from, to, race_days) = season_in_the_past().await;
    let url = format!("sqlite://{}", dir.join("backfill.sqlite3").display());
    let (from, to) = (from.to_string(), to.to_string());
    let backfill =
        summary(&collector(&kra, &url, &["pipeline", "--meet", "seoul", "--from", &from, "--to", &to], true).await);
    let races = backfill["racesCollected"].as_i64().unwrap();
    let calls = backfill["apiCalls"].as_i64().unwrap();
    let (live_per_race, backfill_per_race) = (live_calls as f64 / live_races as f64, calls as f64 / races as f64);
    println!(
        "live: {live_calls} calls for {live_races} races ({live_per_race:.1} per race, one race day); \
         backfill: {calls} calls for {races} races on {race_days} race days, {} calendar days \
         ({backfill_per_race:.2} per race, {:.1} per race day)",
        backfill["days"],
        calls as f64 / race_days as f64
    );
    assert!(backfill_per_race * 5.0 < live_per_race, "a backfill costs a fraction of a live collection");
}
