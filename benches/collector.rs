//! Collector benchmark (not a test):
//! 1. rows per second for a day's worth of odds into PostgreSQL, batch upsert against row by row;
//! 2. API calls for one race day against the minimum the data needs.
//!
//! Run: `cargo bench --bench collector` (needs the PostgreSQL server binaries, as the tests do).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use kra_operator::collector::run::{Collector, RunRequest, Stage};
use kra_operator::crd::Meet;
use kra_operator::kra::budget::{Budget, BudgetLimits};
use kra_operator::kra::client::{ClientSettings, KraClient, ServiceKey};
use kra_operator::race::{OddsRow, Pool};
use kra_operator::race::{PlannedRace, RaceKey};
use kra_operator::store::Store;
use support::fake_kra::FakeKra;
use support::kra_day::{self, Day};
use support::postgres::Postgres;

const RACES: i64 = 11;
const RUNNERS: i64 = 12;

/// Every pool of one race with `RUNNERS` horses: 1,828 rows, as API160_1 reports them.
fn race_odds(race: i64) -> Vec<OddsRow> {
    let mut rows = Vec::new();
    let n = RUNNERS;
    let row = |pool, a, b, c| OddsRow {
        race_number: race,
        pool,
        chul_no: a,
        chul_no2: b,
        chul_no3: c,
        odds: 1.0 + (a * 7 + b * 3 + c) as f64 / 10.0,
    };
    for a in 1..=n {
        rows.push(row(Pool::Win, a, 0, 0));
        rows.push(row(Pool::Place, a, 0, 0));
        for b in 1..=n {
            if a == b {
                continue;
            }
            rows.push(row(Pool::Exacta, a, b, 0));
            if a < b {
                rows.push(row(Pool::Quinella, a, b, 0));
                rows.push(row(Pool::QuinellaPlace, a, b, 0));
            }
            for c in 1..=n {
                if c == a || c == b {
                    continue;
                }
                rows.push(row(Pool::Trifecta, a, b, c));
                if a < b && b < c {
                    rows.push(row(Pool::Trio, a, b, c));
                }
            }
        }
    }
    rows
}

async fn odds_rate(postgres: &Postgres, batch: usize) -> (usize, f64) {
    let store = Store::open(&postgres.database().await).await.unwrap();
    let at = Timestamp::now();
    let date = Date::new(2025, 5, 24).unwrap();
    let mut total = 0;
    for race in 1..=RACES {
        let planned = PlannedRace {
            key: RaceKey { date, meet: Meet::Seoul, number: race },
            start: Some(Time::new(11, 0, 0, 0).unwrap()),
            distance: Some(1200),
        };
        store.upsert_race(&planned, at).await.unwrap();
    }
    let started = Instant::now();
    for race in 1..=RACES {
        let rows = race_odds(race);
        total += rows.len();
        store.upsert_odds(&format!("20250524_1_{race}"), "API160_1", &rows, at, batch).await.unwrap();
    }
    (total, total as f64 / started.elapsed().as_secs_f64())
}

async fn calls_per_day() -> (u64, u64, std::collections::BTreeMap<&'static str, u64>) {
    let kra = FakeKra::start().await;
    let day = Day { date: "20250524", races: (1..=RACES).collect(), runners: RUNNERS };
    kra_day::serve_before(&kra, &day);
    kra_day::serve_after(&kra, &day);
    let dir = std::env::temp_dir().join(format!("kra-bench-{}", support::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("kra.sqlite3").display())).await.unwrap();
    kra_operator::telemetry::install_crypto_provider();
    let budget = Arc::new(Budget::new(BudgetLimits { per_second: 100_000.0, burst: 100_000, per_run: 100_000 }));
    let client = KraClient::new(
        &ClientSettings { base_url: kra.base_url.clone(), ..Default::default() },
        ServiceKey::new("bench"),
        budget,
    )
    .unwrap();
    let request = RunRequest {
        meet: Meet::Seoul,
        from: Date::new(2025, 5, 24).unwrap(),
        to: Date::new(2025, 5, 24).unwrap(),
        races: None,
        stages: vec![Stage::Cards, Stage::Results, Stage::Odds],
        details: true,
        odds_batch: 500,
        odds_backfill: false,
        refresh: false,
    };
    let progress = |_: &str| {};
    let summary = Collector::new(&client, &store, Arc::new(Timestamp::now), &progress).run(&request).await;
    assert!(summary.succeeded(), "{summary:?}");
    // The minimum: 4 day-level calls (plan, scratches, track, training), per race a card, a
    // result and the odds, and each distinct horse, jockey (record and stats), trainer and owner once.
    let jockeys = RUNNERS as u64;
    let trainers = (1..=RUNNERS).map(|c| c % 4).collect::<std::collections::BTreeSet<_>>().len() as u64;
    let owners = RUNNERS as u64;
    let horses = (RACES * RUNNERS) as u64 - 1; // one scratched horse (race 2) needs no details
    let minimum = 4 + 3 * RACES as u64 + horses + 2 * jockeys + trainers + owners;
    let _ = std::fs::remove_dir_all(dir);
    (summary.api_calls as u64, minimum, summary.api_calls_by_endpoint)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let postgres = Postgres::start();
        println!("## Odds into PostgreSQL ({RACES} races x {RUNNERS} runners, every pool)\n");
        println!("| statement size | rows | rows/s |");
        println!("|---|---|---|");
        for batch in [1usize, 100, 500] {
            let (rows, rate) = odds_rate(&postgres, batch).await;
            println!(
                "| {} | {rows} | {rate:.0} |",
                if batch == 1 { "1 (row by row)".to_string() } else { batch.to_string() }
            );
        }
        let (calls, minimum, by_endpoint) = calls_per_day().await;
        println!(
            "\n## API calls for one race day ({RACES} races x {RUNNERS} runners: cards, details, results, odds)\n"
        );
        println!("| made | minimum needed |");
        println!("|---|---|");
        println!("| {calls} | {minimum} |");
        println!("\nby endpoint: {by_endpoint:?}");
    });
}
