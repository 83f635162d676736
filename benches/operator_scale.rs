//! Scale benchmark: N KraJobs created at once against the Kubernetes API emulator.
//!
//! For each N it measures the time from a KraJob's create request to the arrival of the watch
//! event of its first Job (p50, p99, max), the operator's peak RSS and CPU seconds, and the
//! emulator's CPU seconds. A second run has the benchmark create each Job itself right after
//! its KraJob, with no operator: that is the emulator's own ceiling to compare against.
//!
//! Run: `cargo bench --bench operator_scale` (N defaults to 100 and 1000; set KRA_BENCH_N=100,500).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::batch::v1::Job;
use kra_operator::crd::KraJob;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;
use support::{Cluster, Operator};

const IN_FLIGHT: usize = 32;

fn krajob(i: usize) -> KraJob {
    serde_json::from_value(json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": format!("bench-{i}")},
        "spec": {"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
                 "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
    }))
    .unwrap()
}

fn clock_ticks() -> f64 {
    // Linux reports CPU times in USER_HZ, 100 on every common configuration.
    100.0
}

/// (CPU seconds, peak RSS in MiB) of a process, from /proc.
fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let cpu = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu / clock_ticks(), hwm_kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Outcome {
    latencies: Vec<Duration>,
    wall: Duration,
    emulator_cpu: f64,
    operator: Option<(f64, f64)>,
}

async fn run(n: usize, with_operator: bool) -> Outcome {
    let cluster = Cluster::start().await;
    // Every KraJob names the same API key: lift that key's budget (at most 2 Jobs at once by
    // default) so the benchmark measures reconciling, while every grant still scans the ledger.
    let unlimited = ["--kra-api-max-concurrent-jobs", "1000000", "--kra-api-requests-per-day", "1000000000000"];
    let operator =
        if with_operator { Some(Operator::start_with(&cluster, "operator-a", &unlimited).await) } else { None };
    let emulator_pid = cluster.emulator_pid().expect("the benchmark runs on the emulator");
    let (emulator_cpu_before, _) = process_usage(emulator_pid);
    let operator_cpu_before = operator.as_ref().and_then(|o| o.pid()).map(|pid| process_usage(pid).0).unwrap_or(0.0);

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let jobs = cluster.api::<Job>();
    let watch_seen = seen.clone();
    let watch = tokio::spawn(async move {
        let mut events = watcher(jobs, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = events.try_next().await {
            if let watcher::Event::Apply(job) | watcher::Event::InitApply(job) = event {
                let name = job.metadata.name.unwrap_or_default();
                watch_seen.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let krajobs = cluster.api::<KraJob>();
    let job_api = cluster.api::<Job>();
    let started = Instant::now();
    let sent: Vec<(usize, Instant)> = stream::iter(0..n)
        .map(|i| {
            let krajobs = krajobs.clone();
            let job_api = job_api.clone();
            async move {
                let at = Instant::now();
                let created = krajobs.create(&PostParams::default(), &krajob(i)).await.expect("create KraJob");
                if !with_operator {
                    let job: Job = serde_json::from_value(json!({
                        "metadata": {"name": format!("bench-{i}-1"), "ownerReferences": [{
                            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "name": format!("bench-{i}"),
                            "uid": created.metadata.uid, "controller": true}]},
                        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                            "containers": [{"name": "worker", "image": "kra-test/worker:0"}]}}},
                    }))
                    .unwrap();
                    job_api.create(&PostParams::default(), &job).await.expect("create Job");
                }
                (i, at)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if seen.lock().unwrap().len() >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    watch.abort();
    let seen = seen.lock().unwrap();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(i, at)| seen.get(&format!("bench-{i}-1")).map(|job_at| job_at.saturating_duration_since(*at)))
        .collect();
    assert_eq!(latencies.len(), n, "not every KraJob got its Job within 10 minutes");
    latencies.sort();
    let emulator_cpu = process_usage(emulator_pid).0 - emulator_cpu_before;
    let operator_usage = operator.as_ref().and_then(|o| o.pid()).map(|pid| {
        let (cpu, rss) = process_usage(pid);
        (cpu - operator_cpu_before, rss)
    });
    Outcome { latencies, wall, emulator_cpu, operator: operator_usage }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KRA_BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000]);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!(
        "| N | mode | create→Job p50 | p99 | max | all Jobs after | operator CPU s | operator peak RSS | emulator CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        for with_operator in [true, false] {
            let outcome = runtime.block_on(run(n, with_operator));
            let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
            let (cpu, rss) = match outcome.operator {
                Some((cpu, rss)) => (format!("{cpu:.2}"), format!("{rss:.1} MiB")),
                None => ("–".into(), "–".into()),
            };
            println!(
                "| {n} | {} | {} | {} | {} | {:.2} s | {cpu} | {rss} | {:.2} |",
                if with_operator { "operator" } else { "harness creates Jobs (ceiling)" },
                ms(percentile(&outcome.latencies, 0.5)),
                ms(percentile(&outcome.latencies, 0.99)),
                ms(*outcome.latencies.last().unwrap()),
                outcome.wall.as_secs_f64(),
                outcome.emulator_cpu,
            );
        }
    }
}
