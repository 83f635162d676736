//! Evaluator benchmark (not a test):
//! 1. scoring throughput — races per second — on a large synthetic dataset, without and with the
//!    bootstrap intervals;
//! 2. the end-to-end time of a baseline run (`kra-evaluator evaluate --baseline rating`, release
//!    build) over a season of races stored in SQLite.
//!
//! Run: `cargo bench --bench evaluator`.

use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kra_operator::crd::Meet;
use kra_operator::evaluator::dataset::{Dataset, DatasetRace};
use kra_operator::evaluator::metrics::SplitMix64;
use kra_operator::evaluator::predictors::Predictor;
use kra_operator::evaluator::results as run;
use kra_operator::evaluator::scoring::Actual;
use kra_operator::race::{PlannedRace, RaceKey};
use kra_operator::store::Store;
use serde_json::json;

fn runners(rng: &mut SplitMix64) -> Vec<serde_json::Value> {
    let n = 7 + rng.below(8) as i64;
    (1..=n).map(|c| json!({"chul_no": c, "rating": 20 + rng.below(60) as i64, "hr_name": format!("h{c}")})).collect()
}

fn synthetic(races: usize) -> Dataset {
    let mut rng = SplitMix64::new(7);
    let races = (0..races)
        .map(|i| {
            let runners = runners(&mut rng);
            let n = runners.len() as i64;
            let a = 1 + rng.below(n as usize) as i64;
            let b = 1 + (a % n);
            let c = 1 + (b % n);
            DatasetRace {
                race_id: format!("2025{:04}_1_{}", 101 + (i / 12) % 1200, 1 + i % 12),
                date: format!("2025-{:02}-{:02}", 1 + (i / 400) % 12, 1 + (i / 12) % 28),
                meet: ["seoul", "busan", "jeju"][i % 3].into(),
                race_number: 1 + (i % 12) as i64,
                distance: Some(1000 + 200 * (i % 6) as i64),
                input: json!({"raceId": i, "runners": runners}).into(),
                actual: Actual { placed: vec![a, b, c], winners: vec![a], positions: vec![1, 2, 3] },
                field_size: n as usize,
                snapshot_sha256: String::new(),
                result_sha256: String::new(),
                reconstructed: false,
                enrichment_sha256: None,
            }
        })
        .collect();
    Dataset {
        snapshot_id: "ds-bench".into(),
        races,
        excluded: vec![],
        snapshot_policy: Default::default(),
        features: Default::default(),
        enrichment_version: None,
        winner_odds: Default::default(),
    }
}

/// A season like 2025's: 148 race days, 1,758 races of 7–14 runners, with snapshots and results.
async fn season(url: &str) -> usize {
    let store = Store::open(url).await.unwrap();
    let mut rng = SplitMix64::new(11);
    let mut day = Date::new(2025, 1, 3).unwrap();
    let mut count = 0;
    let at: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    while count < 1758 {
        for number in 1..=12 {
            if count >= 1758 {
                break;
            }
            let key = RaceKey { date: day, meet: if count % 5 < 3 { Meet::Seoul } else { Meet::Busan }, number };
            let race = PlannedRace { key, start: Some(Time::new(11, 0, 0, 0).unwrap()), distance: Some(1200) };
            store.upsert_race(&race, at).await.unwrap();
            let entries: Vec<_> = runners(&mut rng)
                .into_iter()
                .map(|mut r| {
                    r["scratched"] = json!(false);
                    r
                })
                .collect();
            let content = json!({"card": {"entries": entries, "distance": 1200}, "track": null});
            store
                .add_prerace_snapshot(&key.race_id(), "kra-prerace-v1", &content, &json!({}), at, false)
                .await
                .unwrap();
            let result = json!({"placed": [1, 2, 3], "finishers": [{"position": 1, "chul_no": 1}], "top3": [1, 2, 3], "dead_heats": []});
            store.add_result(&key.race_id(), &result, at).await.unwrap();
            count += 1;
        }
        day = day.checked_add(jiff::Span::new().days(2)).unwrap();
    }
    count
}

fn main() {
    println!("## Scoring throughput (synthetic, rating baseline)\n");
    println!("| races | bootstrap resamples | seconds | races/s |");
    println!("|---|---|---|---|");
    for (races, resamples) in [(100_000, 0), (100_000, 2_000), (100_000, 10_000)] {
        let dataset = synthetic(races);
        let started = Instant::now();
        let results = run::evaluate(&dataset, &Predictor::Rating, resamples, None);
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(results.metrics.races, races);
        println!("| {races} | {resamples} | {seconds:.2} | {:.0} |", races as f64 / seconds);
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("kra-bench-season-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
    let count = runtime.block_on(season(&url));
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kra-evaluator"))
        .args([
            "evaluate",
            "--baseline",
            "rating",
            "--from",
            "2025-01-01",
            "--to",
            "2025-12-31",
            "--run-name",
            "season",
        ])
        .args(["--database-url", &url, "--output-dir", dir.join("runs").to_str().unwrap()])
        .env("KRA_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    println!("\n## A baseline run over a season (SQLite, release build)\n");
    println!("| races stored | end to end |");
    println!("|---|---|");
    println!("| {count} | {seconds:.2} s |");
    let _ = std::fs::remove_dir_all(dir);
}
