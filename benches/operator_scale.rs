//! Scale benchmark: N KraJobs created at once against a real Kubernetes API server (a control
//! plane of the benchmark's own, started by `scripts/control-plane`).
//!
//! For each N it measures the time from a KraJob's create request to the arrival of the watch
//! event of its first Job (p50, p99, max), the operator's peak RSS, CPU seconds and open TCP
//! sockets (its connections to the API server and its own listener), the API server's CPU
//! seconds, and the requests the API server served by verb and resource (from its own
//! `/metrics`). Then it completes every Job as the Job controller and kubelet would report it
//! (a terminated worker pod with its summary, a `Complete` condition) and measures the time from
//! each Job's completion to its KraJob's `Succeeded` on a watch, the operator's CPU seconds for
//! it and its peak RSS over both phases, and, for both phases, the requests the operator itself
//! made (from the API server's audit log) and the objects its watches delivered (its
//! `kra_operator_watch_events_total`, by resource). A second run has the benchmark create each
//! Job itself right after its KraJob, with no operator: that is the API server's own ceiling to
//! compare against.
//!
//! Both runs also report kube-controller-manager's CPU seconds. Its Job controller (client-go's
//! informers, protobuf) follows every Job and Pod; the operator's Jobs name another manager in
//! `spec.managedBy` (as in the tests), so it leaves them alone, but the second run's Jobs are its
//! own: it gives each a Pod and a status. The second run waits until it has done so for every
//! Job and reports what that cost kube-controller-manager, and its CPU at rest for
//! `KRA_BENCH_IDLE_SECONDS` before the first KraJob and again after: a Go controller's cost for
//! a comparable lifecycle, measured beside the operator's on the same machine (`KRA_CONTROL_PLANE_CONTROLLERS=job-controller` runs that
//! controller alone).
//!
//! Run: `cargo bench --bench operator_scale` (N defaults to 100 and 1000; set KRA_BENCH_N=100,500).
//! `KRA_BENCH_APISERVER_PROFILE=<dir>` also writes the API server's CPU profile of each phase
//! there (one file per second; `go tool pprof -top <dir>/operator-1000-create-*.pb.gz`).
//! The KraJobs are created as fast as 32 requests in flight allow (a burst), or, with
//! `KRA_BENCH_RATE=100`, at a steady 100 per second (each at its slot; 32 in flight at most).
//! After the completion the operator is left idle for `KRA_BENCH_IDLE_SECONDS` (default 30)
//! with every run finished, and its CPU and requests in that time are reported; the operator
//! resyncs every run every `KRA_BENCH_RESYNC_SECONDS` (default 300, its own default).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kra_operator::crd::KraJob;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;
use support::{Cluster, Operator, PrivateControlPlane};

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

/// The TCP sockets a process holds open (its connections to the API server, and its own
/// listening socket for /metrics), from /proc.
fn tcp_sockets(pid: u32) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|table| {
            table.lines().skip(1).filter_map(|l| l.split_whitespace().nth(9).map(str::to_string)).collect::<Vec<_>>()
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Outcome {
    latencies: Vec<Duration>,
    wall: Duration,
    server_cpu: f64,
    /// kube-controller-manager's CPU seconds while the Jobs were created.
    controller_manager_cpu: f64,
    /// With the operator: its CPU seconds, peak RSS (MiB) and TCP sockets open, after creating.
    operator: Option<(f64, f64, usize)>,
    requests: Vec<(String, f64)>,
    jobs_at_end: usize,
    /// With the operator: the operator's own requests while the Jobs were created.
    operator_requests: Vec<(String, u64)>,
    /// With the operator: the reconciles it ran while the Jobs were created.
    reconciles: Reconciles,
    /// With the operator: the objects its watches delivered while the Jobs were created, by
    /// resource.
    watch_events: Vec<(String, f64)>,
    completion: Option<Completion>,
    /// Without the operator: the Job controller's work on the harness's Jobs.
    job_controller: Option<JobController>,
}

/// The ceiling run's Jobs are the Job controller's own: from the first KraJob created until it
/// had given every Job a Pod and a status.
struct JobController {
    /// From the last Job seen until every Job had a status.
    wall: Duration,
    /// kube-controller-manager's CPU seconds over both.
    cpu: f64,
    /// Its CPU seconds over `idle_seconds` (`KRA_BENCH_IDLE_SECONDS`) at rest before the first
    /// KraJob, and over as long once every Job had its status: what it spends whatever the Jobs
    /// (its loops, resyncs, the Go runtime), to subtract from `cpu` per second.
    at_rest: f64,
    after: f64,
    idle_seconds: u64,
    /// The requests served while it caught up (leases and the harness's own LISTs of Jobs left
    /// out).
    requests: Vec<(String, f64)>,
}

/// Wait (10 minutes at most) until the Job controller has given each of the `n` Jobs a status
/// (its `startTime`, set once the Job's Pod is created); kube-controller-manager's client is
/// rate-limited (20 requests per second by default), so this takes a while at 1,000.
async fn job_controller_settles(cluster: &Cluster, n: usize) -> Duration {
    let (jobs, started) = (cluster.api::<Job>(), Instant::now());
    let deadline = started + Duration::from_secs(600);
    loop {
        let list = jobs.list(&Default::default()).await.expect("list the Jobs");
        let with_status = list.items.iter().filter(|job| job.status.as_ref().is_some_and(|s| s.start_time.is_some()));
        if with_status.count() >= n || Instant::now() > deadline {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wait until the CRDs' `Established` condition is over 2 s old. kube-apiserver holds every create
/// of a custom resource for 2 s while its CRD was established less than 2 s ago (a guard for API
/// servers in HA, in apiextensions-apiserver's `crdHandler.serveResource`), and the harness has
/// just installed the CRDs on a new control plane: the first KraJobs created within that time
/// would measure that sleep, not the operator or the API server's capacity.
async fn crds_accept_creates(cluster: &Cluster) {
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(cluster.client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in ["krajobs.kra.dev", "evaluationruns.kra.dev"] {
        loop {
            assert!(Instant::now() < deadline, "CRD {name}: not Established within a minute of its installation");
            let crd = crds.get(name).await.expect("read a CRD");
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            let established = conditions.iter().find(|c| c.type_ == "Established" && c.status == "True");
            let since = established
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| jiff::Timestamp::now().duration_since(t.0));
            if since.is_some_and(|since| since >= jiff::SignedDuration::from_millis(2100)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The completion phase: every Job finished, every KraJob `Succeeded`.
struct Completion {
    latencies: Vec<Duration>,
    wall: Duration,
    operator_cpu: f64,
    operator_requests: Vec<(String, u64)>,
    reconciles: Reconciles,
    watch_events: Vec<(String, f64)>,
    controller_manager_cpu: f64,
    /// The operator's peak RSS (MiB) over the creation and the completion.
    peak_rss: f64,
    /// Then idle: (seconds, operator CPU seconds, the operator's requests, its reconciles).
    idle: (u64, f64, Vec<(String, u64)>, f64),
}

/// A whole-seconds setting of the benchmark from the environment.
fn seconds_setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}: whole seconds")))
}

/// When each object that `selects` first arrived on a watch of `api`, by name (the watch runs
/// until the handle is aborted).
fn first_seen<K>(
    api: kube::Api<K>,
    selects: impl Fn(&K) -> bool + Send + 'static,
) -> (Arc<Mutex<HashMap<String, Instant>>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let recorded = seen.clone();
    let watch = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = events.try_next().await {
            if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) = event
                && selects(&object)
            {
                let name = object.meta().name.clone().unwrap_or_default();
                recorded.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    (seen, watch)
}

const SUMMARY: &str = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;

/// Finish every Job (`IN_FLIGHT` at a time) and wait until every KraJob has succeeded: for each,
/// the time from its Job's completion to the watch event of its `Succeeded` status.
async fn complete_all(cluster: &Cluster, n: usize) -> (Vec<Duration>, Duration) {
    let (succeeded, watch) = first_seen(cluster.api::<KraJob>(), |kj: &KraJob| {
        kj.status.as_ref().and_then(|s| s.run.phase) == Some(kra_operator::crd::Phase::Succeeded)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let finished: Vec<(usize, Instant)> = stream::iter(0..n)
        .map(|i| async move {
            cluster.finish_job(&format!("bench-{i}-1"), true, Some(SUMMARY)).await;
            (i, Instant::now())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while succeeded.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    watch.abort();
    let succeeded = std::mem::take(&mut *succeeded.lock().unwrap());
    let mut latencies: Vec<Duration> = finished
        .iter()
        .filter_map(|(i, at)| succeeded.get(&format!("bench-{i}")).map(|done| done.saturating_duration_since(*at)))
        .collect();
    assert_eq!(latencies.len(), n, "not every KraJob succeeded within 10 minutes of its Job");
    latencies.sort();
    (latencies, wall)
}

/// Wait (a minute at most) until the operator has sent, or given up on, `events` Events in all:
/// a reconcile queues its Events and the operator sends them a moment later, and a phase's CPU
/// and requests include its own. An operator without `kra_operator_events_total` (a build
/// before the queue) sent them within the reconcile: no wait. It asks once a second, not more
/// often: each scrape costs the operator a pass over its runs and counts in the phase's CPU
/// (asked every 100 ms, the scrapes were about 3 % of the operator's CPU samples in a profile
/// of a 1,000-run benchmark; Prometheus asks every 15 to 60 s).
async fn events_sent(operator: &Operator, events: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = metric_total(&operator.metrics().await, "kra_operator_events_total");
        if sent.is_none_or(|sent| sent >= events) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The sum of a counter's samples over all its labels in a Prometheus text exposition, or `None`
/// when it has no sample.
fn metric_total(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{");
    let samples: Vec<f64> =
        text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse().ok()).collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// A counter's samples by the value of one label (`resource="jobs"` → `jobs`).
fn metric_by_label(text: &str, name: &str, label: &str) -> HashMap<String, f64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value, sample) = (rest.split('"').next()?, rest.rsplit(' ').next()?.parse().ok()?);
            Some((value.to_string(), sample))
        })
        .collect()
}

/// The objects the operator's watches have delivered so far, by resource.
async fn watch_events(operator: &Operator) -> HashMap<String, f64> {
    metric_by_label(&operator.metrics().await, "kra_operator_watch_events_total", "resource")
}

/// What each count grew by from `before` to `after`, the largest first, zeros left out.
fn grown(before: &HashMap<String, f64>, after: HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut grown: Vec<(String, f64)> = after
        .into_iter()
        .map(|(key, value)| {
            let delta = value - before.get(&key).copied().unwrap_or(0.0);
            (key, delta)
        })
        .filter(|(_, delta)| *delta > 0.0)
        .collect();
    grown.sort_by(|a, b| b.1.total_cmp(&a.1));
    grown
}

/// With `KRA_BENCH_APISERVER_PROFILE` set to a directory, the API server's CPU profile until the
/// handle is aborted: Go's `/debug/pprof/profile`, one second at a time (a profile cannot be cut
/// short), each second written there as `<name>-<k>.pb.gz`; `go tool pprof -top <name>-*.pb.gz`
/// merges them. A second the server refuses (the previous phase's last one still running) is
/// tried again; the first refusal of each phase is reported on stderr.
fn profile_server(cluster: &Cluster, name: String) -> Option<tokio::task::JoinHandle<()>> {
    let dir = std::path::PathBuf::from(std::env::var_os("KRA_BENCH_APISERVER_PROFILE")?);
    std::fs::create_dir_all(&dir).expect("create the directory of KRA_BENCH_APISERVER_PROFILE");
    let client = cluster.client.clone();
    Some(tokio::spawn(async move {
        let (mut k, mut reported) = (0, false);
        loop {
            let request = http::Request::get("/debug/pprof/profile?seconds=1").body(Vec::new()).unwrap();
            let mut bytes = Vec::new();
            let read = match client.request_stream(request).await {
                Ok(body) => futures::AsyncReadExt::read_to_end(&mut Box::pin(body), &mut bytes).await.map(drop),
                Err(error) => Err(std::io::Error::other(error)),
            };
            if let Err(error) = read {
                if !std::mem::replace(&mut reported, true) {
                    eprintln!(
                        "KRA_BENCH_APISERVER_PROFILE: the API server's profile for {name}: {error} (trying again)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            std::fs::write(dir.join(format!("{name}-{k:03}.pb.gz")), bytes).expect("write a profile");
            k += 1;
        }
    }))
}

/// The operator's reconciles so far, of every kind and outcome: how many ended, and the seconds
/// they spent in all waiting in its work queue (from their run's first wake) and reconciling.
#[derive(Clone, Copy, Default)]
struct Reconciles {
    ended: f64,
    started: f64,
    waiting: f64,
    reconciling: f64,
}

impl std::ops::Sub for Reconciles {
    type Output = Reconciles;
    fn sub(self, before: Reconciles) -> Reconciles {
        Reconciles {
            ended: self.ended - before.ended,
            started: self.started - before.started,
            waiting: self.waiting - before.waiting,
            reconciling: self.reconciling - before.reconciling,
        }
    }
}

impl std::fmt::Display for Reconciles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean_ms = |seconds: f64, count: f64| if count > 0.0 { seconds * 1000.0 / count } else { 0.0 };
        write!(
            f,
            "{:.0} (on average {:.0} ms in its work queue, {:.0} ms reconciling)",
            self.ended,
            mean_ms(self.waiting, self.started),
            mean_ms(self.reconciling, self.ended)
        )
    }
}

/// The operator's reconciles so far (a build without `kra_operator_queue_wait_seconds` shows no
/// wait).
async fn reconciles(operator: &Operator) -> Reconciles {
    let text = operator.metrics().await;
    let total = |name: &str| metric_total(&text, name).unwrap_or(0.0);
    Reconciles {
        ended: total("kra_operator_reconciles_total"),
        started: total("kra_operator_queue_wait_seconds_count"),
        waiting: total("kra_operator_queue_wait_seconds_sum"),
        reconciling: total("kra_operator_reconcile_duration_seconds_sum"),
    }
}

/// The API server's `apiserver_request_total`, summed by verb and resource (with subresource).
async fn request_counts(cluster: &Cluster) -> HashMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = cluster.client.request_text(request).await.expect("read the API server's /metrics");
    let mut counts = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\"")).map(|i| i + name.len() + 2)?;
            line[start..].split('"').next().map(str::to_string)
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else { continue };
        let resource = match label("subresource").filter(|s| !s.is_empty()) {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *counts.entry(format!("{verb} {resource}")).or_default() += value;
    }
    counts
}

async fn run(n: usize, with_operator: bool) -> Outcome {
    let plane = PrivateControlPlane::start();
    let server_pid = plane.pid("kube-apiserver");
    let controller_manager_pid = plane.pid("kube-controller-manager");
    let cluster = Cluster::start_on(plane.kubeconfig.clone()).await;
    crds_accept_creates(&cluster).await;
    // Every KraJob names the same API key: lift that key's budget (at most 2 Jobs at once by
    // default) so the benchmark measures reconciling, while every grant still scans the ledger.
    let resync = seconds_setting("KRA_BENCH_RESYNC_SECONDS", 300).to_string();
    let args = ["--kra-api-max-concurrent-jobs", "1000000", "--kra-api-requests-per-day", "1000000000000"];
    let args = [&args[..], &["--resync-seconds", &resync]].concat();
    let operator = if with_operator { Some(Operator::start_with(&cluster, "operator-a", &args).await) } else { None };
    let idle_seconds = seconds_setting("KRA_BENCH_IDLE_SECONDS", 30);
    let controller_manager_at_rest = if with_operator {
        0.0
    } else {
        let before = process_usage(controller_manager_pid).0;
        tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
        process_usage(controller_manager_pid).0 - before
    };
    let since = jiff::Timestamp::now();
    let (server_cpu_before, _) = process_usage(server_pid);
    let controller_manager_cpu_before = process_usage(controller_manager_pid).0;
    let requests_before = request_counts(&cluster).await;
    let operator_cpu_before = operator.as_ref().and_then(|o| o.pid()).map(|pid| process_usage(pid).0).unwrap_or(0.0);
    let (reconciles_before, watch_events_before) = match &operator {
        Some(operator) => (reconciles(operator).await, watch_events(operator).await),
        None => Default::default(),
    };

    let (seen, watch) = first_seen(cluster.api::<Job>(), |_: &Job| true);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let krajobs = cluster.api::<KraJob>();
    let job_api = cluster.api::<Job>();
    let who = if with_operator { "operator" } else { "ceiling" };
    let profile = profile_server(&cluster, format!("{who}-{n}-create"));
    let started = Instant::now();
    let rate = creation_rate();
    let sent: Vec<(usize, Instant)> = stream::iter(0..n)
        .map(|i| {
            let krajobs = krajobs.clone();
            let job_api = job_api.clone();
            async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
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
    profile.inspect(|p| p.abort());
    let (mut reconciled, mut watched) = (Reconciles::default(), Vec::new());
    if let Some(operator) = &operator {
        events_sent(operator, n as f64).await;
        reconciled = reconciles(operator).await - reconciles_before;
        watched = grown(&watch_events_before, watch_events(operator).await);
    }
    // Every attempt is one Job: more Jobs than KraJobs would be a run started twice.
    let jobs_at_end = cluster.api::<Job>().list(&Default::default()).await.expect("list the Jobs").items.len();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(i, at)| seen.get(&format!("bench-{i}-1")).map(|job_at| job_at.saturating_duration_since(*at)))
        .collect();
    assert_eq!(latencies.len(), n, "not every KraJob got its Job within 10 minutes");
    latencies.sort();
    let server_cpu = process_usage(server_pid).0 - server_cpu_before;
    let controller_manager_cpu = process_usage(controller_manager_pid).0 - controller_manager_cpu_before;
    let operator_usage = operator.as_ref().and_then(|o| o.pid()).map(|pid| {
        let (cpu, rss) = process_usage(pid);
        (cpu - operator_cpu_before, rss, tcp_sockets(pid))
    });
    let mut requests = grown(&requests_before, request_counts(&cluster).await);
    requests.retain(|(key, _)| !key.contains("leases"));
    let by_count = |counts: std::collections::BTreeMap<String, u64>| {
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts
    };
    let operator_requests = by_count(cluster.operator_requests_since(since).unwrap_or_default());
    let job_controller = if with_operator {
        None
    } else {
        let requests_before = request_counts(&cluster).await;
        let wall = job_controller_settles(&cluster, n).await;
        let cpu = process_usage(controller_manager_pid).0 - controller_manager_cpu_before;
        let mut requests = grown(&requests_before, request_counts(&cluster).await);
        requests.retain(|(key, _)| !key.contains("leases") && key != "LIST jobs");
        let idle_before = process_usage(controller_manager_pid).0;
        tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
        let after = process_usage(controller_manager_pid).0 - idle_before;
        Some(JobController { wall, cpu, at_rest: controller_manager_at_rest, after, idle_seconds, requests })
    };
    let completion = match &operator {
        Some(operator) => {
            let pid = operator.pid().expect("the operator runs");
            let cpu_before = process_usage(pid).0;
            let controller_manager_cpu_before = process_usage(controller_manager_pid).0;
            let reconciles_before = reconciles(operator).await;
            let watch_events_before = watch_events(operator).await;
            let since = jiff::Timestamp::now();
            let profile = profile_server(&cluster, format!("operator-{n}-complete"));
            let (latencies, wall) = complete_all(&cluster, n).await;
            profile.inspect(|p| p.abort());
            // Trailing reconciles (the status write's own watch event) settle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            events_sent(operator, 2.0 * n as f64).await;
            let (cpu_after, peak_rss) = process_usage(pid);
            let operator_cpu = cpu_after - cpu_before;
            let controller_manager_cpu = process_usage(controller_manager_pid).0 - controller_manager_cpu_before;
            let watch_events = grown(&watch_events_before, watch_events(operator).await);
            let operator_requests = by_count(cluster.operator_requests_since(since).unwrap_or_default());
            let idle_reconciles = reconciles(operator).await;
            let completion_reconciles = idle_reconciles - reconciles_before;
            let (idle_cpu, idle_since) = (process_usage(pid).0, jiff::Timestamp::now());
            tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
            let idle_requests = by_count(cluster.operator_requests_since(idle_since).unwrap_or_default());
            let idle = (
                idle_seconds,
                process_usage(pid).0 - idle_cpu,
                idle_requests,
                (reconciles(operator).await - idle_reconciles).ended,
            );
            Some(Completion {
                latencies,
                wall,
                operator_cpu,
                operator_requests,
                reconciles: completion_reconciles,
                watch_events,
                controller_manager_cpu,
                peak_rss,
                idle,
            })
        }
        None => None,
    };
    Outcome {
        latencies,
        wall,
        server_cpu,
        operator: operator_usage,
        requests,
        jobs_at_end,
        operator_requests,
        reconciles: reconciled,
        watch_events: watched,
        controller_manager_cpu,
        completion,
        job_controller,
    }
}

/// KraJobs created per second (`KRA_BENCH_RATE`), or `None` for a burst.
fn creation_rate() -> Option<f64> {
    std::env::var("KRA_BENCH_RATE").ok().map(|v| v.parse().expect("KRA_BENCH_RATE: KraJobs per second"))
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KRA_BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000]);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match creation_rate() {
        Some(rate) => println!("KraJobs created at a steady {rate} per second\n"),
        None => println!("KraJobs created in a burst (32 requests in flight)\n"),
    }
    println!(
        "| N | mode | create→Job p50 | p99 | max | all Jobs after | operator CPU s | operator peak RSS | API server CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        for with_operator in [true, false] {
            let outcome = runtime.block_on(run(n, with_operator));
            let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
            let (cpu, rss, sockets) = match outcome.operator {
                Some((cpu, rss, sockets)) => (format!("{cpu:.2}"), format!("{rss:.1} MiB"), Some(sockets)),
                None => ("–".into(), "–".into(), None),
            };
            println!(
                "| {n} | {} | {} | {} | {} | {:.2} s | {cpu} | {rss} | {:.2} |",
                if with_operator { "operator" } else { "harness creates Jobs (ceiling)" },
                ms(percentile(&outcome.latencies, 0.5)),
                ms(percentile(&outcome.latencies, 0.99)),
                ms(*outcome.latencies.last().unwrap()),
                outcome.wall.as_secs_f64(),
                outcome.server_cpu,
            );
            let requests: Vec<String> =
                outcome.requests.iter().map(|(key, count)| format!("{key} {count:.0}")).collect();
            println!("|   | requests served (verb resource count) | {} |", requests.join(", "));
            println!("|   | Jobs at the end | {} for {n} KraJobs |", outcome.jobs_at_end);
            println!("|   | kube-controller-manager CPU s while creating | {:.2} |", outcome.controller_manager_cpu);
            let counted = |counts: &[(String, f64)]| {
                counts.iter().map(|(key, count)| format!("{key} {count:.0}")).collect::<Vec<_>>().join(", ")
            };
            let listed = |requests: &[(String, u64)]| {
                requests.iter().map(|(key, count)| format!("{key} {count}")).collect::<Vec<_>>().join(", ")
            };
            if let Some(sockets) = sockets {
                println!("|   | the operator's requests while creating | {} |", listed(&outcome.operator_requests));
                println!("|   | the operator's TCP sockets open after creating | {sockets} |");
                println!("|   | the operator's reconciles while creating | {} |", outcome.reconciles);
                println!("|   | objects its watches delivered while creating | {} |", counted(&outcome.watch_events));
            }
            if let Some(JobController { wall, cpu, at_rest, after, idle_seconds, requests }) = &outcome.job_controller {
                println!(
                    "|   | the Job controller gave every Job a Pod and a status {:.1} s later: kube-controller-manager CPU {cpu:.2} s in all (over {idle_seconds} s at rest before: {at_rest:.2} s; after: {after:.2} s); requests served meanwhile | {} |",
                    wall.as_secs_f64(),
                    counted(requests)
                );
            }
            if let Some(done) = &outcome.completion {
                println!(
                    "|   | completion: Job complete→KraJob Succeeded p50 {} p99 {} max {}, all after {:.2} s, operator CPU {:.2} s, peak RSS {:.1} MiB |",
                    ms(percentile(&done.latencies, 0.5)),
                    ms(percentile(&done.latencies, 0.99)),
                    ms(*done.latencies.last().unwrap()),
                    done.wall.as_secs_f64(),
                    done.operator_cpu,
                    done.peak_rss,
                );
                println!("|   | the operator's requests while completing | {} |", listed(&done.operator_requests));
                println!("|   | the operator's reconciles while completing | {} |", done.reconciles);
                println!("|   | objects its watches delivered while completing | {} |", counted(&done.watch_events));
                println!("|   | kube-controller-manager CPU s while completing | {:.2} |", done.controller_manager_cpu);
                let (seconds, cpu, requests, reconciles) = &done.idle;
                println!(
                    "|   | then idle {seconds} s (resync every {} s): operator CPU {cpu:.2} s, {reconciles:.0} reconciles, its requests | {} |",
                    seconds_setting("KRA_BENCH_RESYNC_SECONDS", 300),
                    if requests.is_empty() { "none".to_string() } else { listed(requests) }
                );
            }
        }
    }
}
