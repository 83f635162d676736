//! History benchmark (not a test): `kra-collector preprocess` and `enrich` end to end on a
//! synthetic season of 1,800 races with 12 runners, collected after the fact (raw race cards and
//! results stored, no live snapshot), with a year of history before it (1,800 more races with
//! snapshots and results), on SQLite and on PostgreSQL: seconds, runners per second and the
//! process's peak RSS (from `/usr/bin/time`), the median of several runs (the derived rows are
//! deleted between runs, so each run does the whole work).
//!
//! Run: `cargo bench --bench history` (needs `/usr/bin/time` and the PostgreSQL server binaries,
//! as the tests do). `KRA_BENCH_RUNS` (default 3) sets the runs per measurement.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kra_operator::collector::{prerace, results};
use kra_operator::crd::Meet;
use kra_operator::race::{PRERACE_SCHEMA, PlannedRace, PreRaceSnapshot, RaceKey};
use kra_operator::store::Store;
use serde_json::{Value, json};
use support::postgres::Postgres;
use support::season::Rng;

const RACES_PER_YEAR: usize = 1_800;
const RACES_PER_DAY: usize = 10;
const RUNNERS: i64 = 12;
const HORSES: u64 = 1_500;

fn envelope(rows: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({"response": {
        "header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE."},
        "body": {"items": {"item": rows}, "numOfRows": rows.len(), "pageNo": 1, "totalCount": rows.len()}
    }}))
    .unwrap()
}

/// The API214_1 rows of a race after it ran: card fields and the result.
fn race_rows(rng: &mut Rng, day: Date, number: i64) -> Vec<Value> {
    let mut horses: Vec<u64> = Vec::new();
    while horses.len() < RUNNERS as usize {
        let horse = rng.below(HORSES);
        if !horses.contains(&horse) {
            horses.push(horse);
        }
    }
    let mut order: Vec<i64> = (1..=RUNNERS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    horses
        .iter()
        .enumerate()
        .map(|(i, horse)| {
            json!({
                "rcDate": day.strftime("%Y%m%d").to_string().parse::<i64>().unwrap(), "rcNo": number,
                "rcName": "일반", "rcDist": 1200, "meet": "서울", "rank": "국5등급", "budam": "핸디캡",
                "chulNo": i + 1, "hrNo": format!("001{horse:04}"), "hrName": format!("말{horse}"), "age": 4,
                "sex": "거", "name": "한국", "rating": 40 + horse % 50, "wgBudam": 55, "wgBudamBigo": "-",
                "wgHr": "470(+2)", "wgJk": 55, "ilsu": 21, "hrTool": "-",
                "jkNo": format!("081{:03}", rng.below(40)), "jkName": "기수",
                "trNo": format!("071{:03}", horse % 30), "trName": "조교사",
                "owNo": 110_000 + horse % 200, "owName": "마주",
                "ord": order[i], "rcTime": 72.5 + order[i] as f64 * 0.3, "winOdds": 3.5, "plcOdds": 1.4,
                "sjG1fOrd": order[i], "seG3fAccTime": 37.0
            })
        })
        .collect()
}

/// A year of history with snapshots and results, then a season with raw cards and results only.
async fn fill(store: &Store, first: Date) {
    let mut rng = Rng(2026);
    let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    for i in 0..2 * RACES_PER_YEAR {
        let day = first.checked_add(jiff::Span::new().days((i / RACES_PER_DAY) as i64)).unwrap();
        let number = (i % RACES_PER_DAY) as i64 + 1;
        let key = RaceKey { date: day, meet: Meet::Seoul, number };
        let race = PlannedRace { key, start: Time::new(11, 0, 0, 0).ok(), distance: Some(1200) };
        store.upsert_race(&race, at).await.unwrap();
        let rows = race_rows(&mut rng, day, number);
        let params = json!({"meet": "1", "rc_date": day.strftime("%Y%m%d").to_string(),
                            "rc_no": number.to_string(), "pageNo": 1, "numOfRows": rows.len()});
        store.put_raw("API214_1", &params, &envelope(&rows), at).await.unwrap();
        let rows: Vec<_> = rows.into_iter().map(|r| r.as_object().unwrap().clone()).collect();
        let result = results::result(&rows).unwrap();
        store.add_result(&key.race_id(), &result, at).await.unwrap();
        if i < RACES_PER_YEAR {
            let card = prerace::card(&rows, &BTreeSet::new());
            let snapshot = PreRaceSnapshot { card, details: json!({}), track: None, training: json!({}) };
            store.add_prerace_snapshot(&key.race_id(), PRERACE_SCHEMA, &snapshot, &json!({}), at, false).await.unwrap();
        }
    }
}

/// One `kra-collector` run under `/usr/bin/time`: (seconds, peak RSS in MiB).
fn timed(url: &str, args: &[&str]) -> (f64, f64) {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kb %M"])
        .arg(env!("CARGO_BIN_EXE_kra-collector"))
        .args(args)
        .args(["--database-url", url])
        .env("KRA_LOG_FORMAT", "json")
        .output()
        .expect("run /usr/bin/time kra-collector");
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
    let kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kb "))
        .and_then(|v| v.trim().parse().ok())
        .expect("/usr/bin/time reports the peak RSS");
    (seconds, kb / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn measure(label: &str, url: &str, runs: usize) {
    let store = Store::open(url).await.unwrap();
    let first: Date = "2024-01-01".parse().unwrap();
    let started = Instant::now();
    fill(&store, first).await;
    eprintln!("{label}: filled {} races in {:.1} s", 2 * RACES_PER_YEAR, started.elapsed().as_secs_f64());
    let season_first = first.checked_add(jiff::Span::new().days((RACES_PER_YEAR / RACES_PER_DAY) as i64)).unwrap();
    let season_last =
        season_first.checked_add(jiff::Span::new().days((RACES_PER_YEAR / RACES_PER_DAY) as i64 - 1)).unwrap();
    let (from, to) = (season_first.to_string(), season_last.to_string());
    let range = ["--meet", "seoul", "--from", from.as_str(), "--to", to.as_str()];
    let runners = (RACES_PER_YEAR as i64 * RUNNERS) as f64;
    for step in ["preprocess", "enrich"] {
        let mut seconds = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..runs {
            // Each run does the whole work: what the step derived is deleted first.
            let cleanup = match step {
                "preprocess" => "DELETE FROM prerace_snapshots WHERE snapshot_class = 'reconstructed'",
                _ => "DELETE FROM race_enrichments",
            };
            sqlx::query(cleanup).execute(store.pool()).await.unwrap();
            if step == "enrich" && store.count("prerace_snapshots").await.unwrap() < 2 * RACES_PER_YEAR as i64 {
                timed(url, &[&["preprocess"], &range[..]].concat());
            }
            let (s, m) = timed(url, &[&[step], &range[..]].concat());
            seconds.push(s);
            rss.push(m);
        }
        let s = median(seconds.clone());
        println!(
            "| {label} | {step} | {RACES_PER_YEAR} races, {runners} runners | {s:.2} s | {:.0} runners/s | {:.0} MiB | {} |",
            runners / s,
            median(rss),
            seconds.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
        );
    }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("KRA_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("| database | step | season | median wall time | rate | median peak RSS | runs (s) |");
    println!("|---|---|---|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("kra-bench-history-{}", support::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    measure("SQLite", &format!("sqlite://{}", dir.join("kra.sqlite3").display()), runs).await;
    let postgres = Postgres::start();
    let url = postgres.database().await;
    measure("PostgreSQL", &url, runs).await;
}
