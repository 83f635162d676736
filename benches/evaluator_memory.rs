//! Evaluator memory benchmark (not a test): the peak RSS of `kra-evaluator evaluate --baseline
//! rating` (release build, default 10,000 bootstrap resamples) over N races stored in SQLite,
//! each with a pre-race card of 7-14 runners carrying every field the collector keeps, and its
//! result. Reported per run size: the median peak RSS of several runs (from `/usr/bin/time`), the
//! peak per race, and the marginal memory per race between the smallest and largest size (what
//! one more race costs, the process's fixed part taken out).
//!
//! Run: `cargo bench --bench evaluator_memory` (needs `/usr/bin/time`). `KRA_BENCH_RACES`
//! (default `1000,5000`) sets the sizes, `KRA_BENCH_RUNS` (default 3) the runs per size and
//! `KRA_BENCH_RESAMPLES` (default 10,000) the bootstrap resamples. Storing the races takes about
//! 10 ms each (one transaction per row), so 100,000 take over 15 minutes: with
//! `KRA_BENCH_DATA_DIR` set, each size's database is kept there (`races-N.sqlite3`) and re-used
//! by the next run (the races are the same: the generator is seeded).

use std::process::Command;
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kra_operator::crd::Meet;
use kra_operator::evaluator::metrics::SplitMix64;
use kra_operator::race::{PlannedRace, RaceKey};
use kra_operator::store::Store;
use serde_json::{Value, json};

/// One runner as the collector stores it on a pre-race card (`PreRaceEntry`).
fn runner(rng: &mut SplitMix64, chul_no: i64) -> Value {
    let sex = ["수", "암", "거"][rng.below(3)];
    json!({
        "chul_no": chul_no,
        "hr_no": format!("{:07}", rng.below(9_999_999)),
        "hr_name": format!("말이름{}", rng.below(100_000)),
        "age": 2 + rng.below(6) as i64,
        "sex": sex,
        "country": "한",
        "class_rank": format!("국{}등급", 1 + rng.below(6)),
        "rating": 20 + rng.below(60) as i64,
        "wg_budam": 52.0 + rng.below(8) as f64,
        "wg_budam_bigo": "-",
        "body_weight": 420 + rng.below(100) as i64,
        "body_weight_delta": rng.below(11) as i64 - 5,
        "jockey_weight": 52.0,
        "days_since_last_race": 14 + rng.below(60) as i64,
        "equipment": "-",
        "jk_no": format!("{:06}", rng.below(999_999)),
        "jk_name": format!("기수{}", rng.below(300)),
        "tr_no": format!("{:06}", rng.below(999_999)),
        "tr_name": format!("조교사{}", rng.below(200)),
        "ow_no": format!("{:06}", rng.below(999_999)),
        "ow_name": format!("마주{}", rng.below(2_000)),
        "scratched": false,
        "flags": [],
    })
}

/// The first and last day of `races` races stored 12 a day from 2000-01-01.
fn days(races: usize) -> (Date, Date) {
    let first = Date::new(2000, 1, 1).unwrap();
    let last = first.checked_add(jiff::Span::new().days(races.saturating_sub(1) as i64 / 12)).unwrap();
    (first, last)
}

/// `races` races, 12 a day from 2000-01-01, each with its card and result. The first and last day.
async fn store_races(url: &str, races: usize) -> (Date, Date) {
    let store = Store::open(url).await.unwrap();
    let mut rng = SplitMix64::new(17);
    let first = Date::new(2000, 1, 1).unwrap();
    let at: Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
    let mut day = first;
    for i in 0..races {
        let number = 1 + (i % 12) as i64;
        if i > 0 && number == 1 {
            day = day.tomorrow().unwrap();
        }
        let key = RaceKey { date: day, meet: Meet::Seoul, number };
        let race = PlannedRace { key, start: Some(Time::new(23, 0, 0, 0).unwrap()), distance: Some(1200) };
        store.upsert_race(&race, at).await.unwrap();
        let n = 7 + rng.below(8) as i64;
        let entries: Vec<Value> = (1..=n).map(|c| runner(&mut rng, c)).collect();
        let content = json!({"card": {"schema": "kra-prerace-card-v1", "race_name": "일반", "distance": 1200,
                                      "class_condition": "국6등급", "weight_rule": "별정A", "age_condition": "연령오픈",
                                      "entries": entries}, "track": null});
        store.add_prerace_snapshot(&key.race_id(), "kra-prerace-v1", &content, &json!({}), at, false).await.unwrap();
        let placed: Vec<i64> = vec![1, 2, 3];
        let finishers: Vec<Value> = (1..=n).map(|c| json!({"position": c, "chul_no": c})).collect();
        let result = json!({"placed": placed, "finishers": finishers, "top3": placed, "dead_heats": []});
        store.add_result(&key.race_id(), &result, at).await.unwrap();
    }
    assert_eq!((first, day), days(races));
    (first, day)
}

/// One evaluator run under `/usr/bin/time`: (seconds, peak RSS in KiB).
fn measured(url: &str, from: Date, to: Date, output: &std::path::Path) -> (f64, f64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kb %M"])
        .arg(env!("CARGO_BIN_EXE_kra-evaluator"))
        .args(["evaluate", "--baseline", "rating", "--run-name", "memory", "--resamples", &resamples()])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .args(["--database-url", url, "--output-dir", output.to_str().unwrap()])
        .env("KRA_LOG_FORMAT", "json")
        .output()
        .expect("run /usr/bin/time kra-evaluator");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let kb = stderr.lines().find_map(|l| l.strip_prefix("peak-rss-kb ")).and_then(|v| v.trim().parse().ok());
    (seconds, kb.expect("/usr/bin/time reports the peak RSS"))
}

/// Bootstrap resamples (`KRA_BENCH_RESAMPLES`, default the evaluator's 10,000).
fn resamples() -> String {
    std::env::var("KRA_BENCH_RESAMPLES").unwrap_or_else(|_| "10000".into())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KRA_BENCH_RACES")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("KRA_BENCH_RACES: comma-separated race counts"))
        .collect();
    let runs: usize = std::env::var("KRA_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("## Evaluator peak memory (SQLite, rating baseline, {} resamples, median of {runs})\n", resamples());
    println!("| races | seconds | peak RSS | per race |");
    println!("|---|---|---|---|");
    let mut figures = Vec::new();
    for &races in &sizes {
        let dir = std::env::temp_dir().join(format!("kra-bench-memory-{}-{races}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kept = std::env::var_os("KRA_BENCH_DATA_DIR").map(std::path::PathBuf::from);
        let database = match &kept {
            Some(data) => {
                std::fs::create_dir_all(data).unwrap();
                data.join(format!("races-{races}.sqlite3"))
            }
            None => dir.join("kra.sqlite3"),
        };
        let url = format!("sqlite://{}", database.display());
        // A kept database is complete once its marker is written (a stopped run stores again).
        let done = database.with_extension("done");
        let (from, to) = if kept.is_some() && done.exists() {
            eprintln!("re-using the {races} races stored in {}", database.display());
            days(races)
        } else {
            let stored = Instant::now();
            for stale in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{stale}", database.display()));
            }
            let days = runtime.block_on(store_races(&url, races));
            std::fs::write(&done, b"").unwrap();
            eprintln!("stored {races} races in {:.0} s", stored.elapsed().as_secs_f64());
            days
        };
        let (seconds, kb): (Vec<f64>, Vec<f64>) =
            (0..runs).map(|run| measured(&url, from, to, &dir.join(format!("runs-{run}")))).unzip();
        let (seconds, kb) = (median(seconds), median(kb));
        println!("| {races} | {seconds:.1} | {:.0} MiB | {:.1} KB |", kb / 1024.0, kb * 1.024 / races as f64);
        figures.push((races, kb));
        let _ = std::fs::remove_dir_all(dir);
    }
    if let (Some(&(small, small_kb)), Some(&(large, large_kb))) = (figures.first(), figures.last())
        && large > small
    {
        let marginal = (large_kb - small_kb) * 1.024 / (large - small) as f64;
        println!("\nMarginal memory per race from {small} to {large} races: {marginal:.1} KB");
        println!(
            "Peak at {large} races against {small}: {:.2}x for {:.0}x the races",
            large_kb / small_kb,
            large as f64 / small as f64
        );
    }
}
