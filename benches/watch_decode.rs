//! What one watch event costs the operator to decode, by kind: a Job, its worker Pod and its
//! KraJob as they are at the end of a lifecycle, each decoded as the operator's watches decode
//! it (the line copied into a string, as kube's line reader does, then decoded into the cache's
//! own type: `CachedJob`, `WorkerPod`, `Lenient<KraJob>`) and, as the baseline in the same run,
//! into the whole API type (`Job`, `Pod`, `KraJob`).
//!
//! It starts a control plane of its own (`scripts/control-plane`, as the scale benchmark does)
//! and the operator, creates one KraJob, completes its Job as the Job controller and kubelet
//! would report it, and waits for the run to succeed, so each object carries what it carries
//! then (a Job's Pod template, every manager's managed fields, the conditions, the run's
//! status). Then it reads each object's watch event from the API server and decodes it 20,000
//! times, seven runs; it prints the medians.
//!
//! Run: `cargo bench --bench watch_decode`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kra_operator::controller::decode::{CachedJob, Lenient, WorkerPod};
use kra_operator::crd::{KraJob, Phase};
use kube::api::WatchEvent;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::{Cluster, Operator, PrivateControlPlane, WAIT, wait_until};

const DECODES: usize = 20_000;
const RUNS: usize = 7;

/// The first event of a JSON watch of `path` from version 0: the object that exists, `ADDED`.
async fn first_event(cluster: &Cluster, path: &str) -> Vec<u8> {
    let request = http::Request::get(format!("{path}?watch=true&resourceVersion=0&timeoutSeconds=1"))
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let response = cluster.client.send(request).await.expect("a watch");
    let body = http_body_util::BodyExt::collect(response.into_body()).await.expect("the watch's events").to_bytes();
    body.split(|b| *b == b'\n').next().unwrap().to_vec()
}

/// Microseconds per decode of `line` as a watch event of `K`, median of `RUNS` runs.
fn median_us<K: DeserializeOwned + Clone>(line: &[u8]) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..DECODES {
                let text = String::from_utf8(std::hint::black_box(line).to_vec()).expect("UTF-8");
                let event: WatchEvent<K> = serde_json::from_str(&text).expect("a watch event");
                std::hint::black_box(event);
            }
            started.elapsed().as_secs_f64() * 1e6 / DECODES as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn measure<Lean: DeserializeOwned + Clone, Whole: DeserializeOwned + Clone>(what: &str, line: &[u8]) {
    let lean = median_us::<Lean>(line);
    let whole = median_us::<Whole>(line);
    println!("| {what} | {} | {lean:.1} µs | {whole:.1} µs | {:.2} |", line.len(), lean / whole);
}

/// A KraJob run to success: created, its Job completed as the Job controller and kubelet would.
async fn one_lifecycle(cluster: &Cluster) {
    let _: KraJob = cluster
        .create(json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": "bench"},
            "spec": {"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}}}))
        .await;
    wait_until("the KraJob's Job", WAIT, || async { cluster.job_exists("bench-1").await.then_some(()) }).await;
    let summary = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;
    cluster.finish_job("bench-1", true, Some(summary)).await;
    wait_until("the KraJob's success", WAIT, || async {
        let run = cluster.api::<KraJob>().get("bench").await.ok()?;
        (run.status?.run.phase == Some(Phase::Succeeded)).then_some(())
    })
    .await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let plane = PrivateControlPlane::start();
        let cluster = Cluster::start_on(plane.kubeconfig.clone()).await;
        let mut operator = Operator::start(&cluster).await;
        one_lifecycle(&cluster).await;
        operator.stop().await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        let ns = &cluster.namespace;
        let job = first_event(&cluster, &format!("/apis/batch/v1/namespaces/{ns}/jobs")).await;
        let pod = first_event(&cluster, &format!("/api/v1/namespaces/{ns}/pods")).await;
        let run = first_event(&cluster, &format!("/apis/kra.dev/v1alpha1/namespaces/{ns}/krajobs")).await;
        println!("| watch event | bytes | the operator's decode, per event | the whole API type | ratio |");
        println!("|---|---|---|---|---|");
        measure::<CachedJob, Job>("a completed Job (`CachedJob`)", &job);
        measure::<WorkerPod, Pod>("its terminated worker Pod (`WorkerPod`)", &pod);
        measure::<Lenient<KraJob>, KraJob>("the succeeded KraJob (`Lenient<KraJob>`)", &run);
    });
}
