//! Schedule benchmark (not a test): what the scheduler costs per reconcile.
//! 1. cron evaluation: fire times per second of a weekend schedule in Asia/Seoul and of an
//!    hourly one in a daylight-saving zone;
//! 2. one planner call for a scheduled KraJob in steady state (nothing due);
//! 3. one planner call after a year of downtime of an hourly schedule (8,760 due times, of which
//!    at most `maxCatchUp` start) — the worst case the operator meets on its return.
//!
//! Run: `cargo bench --bench schedule`.

use std::time::Instant;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use kra_operator::controller::scheduler::{self, Input};
use kra_operator::crd::Schedule;
use kra_operator::cron::Cron;

fn schedule(cron: &str, zone: &str) -> Schedule {
    serde_json::from_value(serde_json::json!({"cron": cron, "timeZone": zone, "concurrencyPolicy": "Allow"})).unwrap()
}

fn fire_times_per_second(cron: &str, zone: &str, count: usize) -> f64 {
    let parsed: Cron = cron.parse().unwrap();
    let tz = TimeZone::get(zone).unwrap();
    let mut at: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    let started = Instant::now();
    for _ in 0..count {
        at = parsed.next_after(at, &tz).unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn plan_once(schedule: &Schedule, created: &str, now: &str) -> (f64, usize, usize) {
    let cron: Cron = schedule.cron.parse().unwrap();
    let tz = TimeZone::get(&schedule.time_zone).unwrap();
    let started = Instant::now();
    let plan = scheduler::plan(Input {
        parent: "bench",
        schedule,
        timing: scheduler::Timing::Cron { cron: &cron, tz: &tz },
        suspended: false,
        status: None,
        children: &[],
        created: created.parse().unwrap(),
        run_now: None,
        now: now.parse().unwrap(),
    });
    (started.elapsed().as_secs_f64() * 1000.0, plan.actions.len(), plan.newly_skipped.len() + plan.unlisted)
}

fn main() {
    println!(
        "cron, weekend 22:00 Asia/Seoul: {:.0} fire times/s",
        fire_times_per_second("0 22 * * SAT,SUN", "Asia/Seoul", 20_000)
    );
    println!(
        "cron, hourly America/New_York: {:.0} fire times/s",
        fire_times_per_second("0 * * * *", "America/New_York", 50_000)
    );

    let weekend = schedule("0 22 * * SAT,SUN", "Asia/Seoul");
    let runs = 1000;
    let started = Instant::now();
    for _ in 0..runs {
        plan_once(&weekend, "2025-05-19T00:00:00Z", "2025-05-20T00:00:00Z");
    }
    println!(
        "plan, steady state (nothing due): {:.1} µs per call",
        started.elapsed().as_secs_f64() * 1e6 / runs as f64
    );

    let hourly = schedule("0 * * * *", "America/New_York");
    let (ms, started_runs, skipped) = plan_once(&hourly, "2024-05-20T00:00:00Z", "2025-05-20T00:00:00Z");
    println!(
        "plan, one year of an hourly schedule due at once: {ms:.1} ms; {started_runs} runs started, {skipped} skipped or unlisted"
    );
}
