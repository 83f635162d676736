//! The test suite's fake KRA API as a standalone server, for trying the project without a
//! data.go.kr key (`scripts/demo` and the kind end-to-end job of .github/workflows/ci.yml use it).
//! Any service key is accepted.
//!
//! - `--season`: a generated season (tests/support/season.rs): the race days of the three meets
//!   from two weeks before today to two weeks after it, 8-14 runners a race, scratches, the odd
//!   dead heat, odds. A race has run once its start is past, or once
//!   `GET /_fake/run?through=YYYYMMDD` has run every race up to that day; `GET /_fake/season`
//!   lists the race days.
//! - without it: one Seoul race day, 2025-05-24 (races 1, 2, 3 and 5), after the races.
//!
//!   cargo run --example fake_kra_api -- --season 127.0.0.1:8089
//!
//! Then point the collectors at it: `kra-collector --api-base-url http://127.0.0.1:8089/B551015`,
//! or `kra-operator run --kra-api-base-url …` (chart value `worker.kraApiBaseUrl`).

#[path = "../tests/support/fake_kra.rs"]
mod fake_kra;
#[path = "../tests/support/kra_day.rs"]
mod kra_day;
#[path = "../tests/support/season.rs"]
mod season;

use std::sync::Arc;

use clap::Parser;

/// A fake KRA (data.go.kr B551015) API.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:8089")]
    addr: String,
    /// Serve a generated season around today instead of the single 2025-05-24 Seoul day.
    #[arg(long)]
    season: bool,
    /// Seed of the generated season.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let kra = fake_kra::FakeKra::start_on(&args.addr).await;
    if args.season {
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Seoul").unwrap()).date();
        kra.source(Arc::new(season::Season::generate(args.seed, today, 2, 2)));
        eprintln!("fake KRA API serving a season around {today} (seed {}) at {}", args.seed, kra.base_url);
    } else {
        let day = kra_day::Day::default();
        kra_day::serve_before(&kra, &day);
        kra_day::serve_after(&kra, &day);
        eprintln!("fake KRA API serving Seoul 2025-05-24 at {}", kra.base_url);
    }
    let _ = tokio::signal::ctrl_c().await;
}
