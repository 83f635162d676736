//! Wiring of the `kra-operator run` command: HTTP endpoints, leader election, the two
//! controllers, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::controller::policy::Policy;
use crate::controller::resources::ResourceList;
use crate::controller::stores::Stores;
use crate::controller::validate::{DefaultMlflow, WorkerDefaults};
use crate::controller::{self, Context, Scope};
use crate::crd::{EvaluationRun, KraJob, SecretKeyRef};
use crate::health::{self, Health, Leadership};
use crate::leader::{Elector, LeaseSettings, Round};
use crate::metrics::Metrics;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Options of `kra-operator run`. Every option can also be set by its environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Watch only these namespaces (repeat the option or separate them by commas); all
    /// namespaces when absent.
    #[arg(long = "namespace", env = "KRA_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "KRA_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Image of the worker Jobs (holds kra-collector and kra-evaluator).
    #[arg(long, env = "KRA_WORKER_IMAGE", default_value = concat!("ghcr.io/kra-dev/kra-operator:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// Image pull policy of the worker Jobs.
    #[arg(long, env = "KRA_WORKER_IMAGE_PULL_POLICY")]
    pub worker_image_pull_policy: Option<String>,
    /// MLflow tracking server of evaluation runs that name none.
    #[arg(long, env = "KRA_DEFAULT_MLFLOW_TRACKING_URI")]
    pub default_mlflow_tracking_uri: Option<String>,
    /// MLflow experiment used with `--default-mlflow-tracking-uri`.
    #[arg(long, env = "KRA_DEFAULT_MLFLOW_EXPERIMENT", default_value = crate::crd::evaluationrun::DEFAULT_MLFLOW_EXPERIMENT)]
    pub default_mlflow_experiment: String,
    /// Base URL of the KRA API for collector Jobs (a mirror or an egress proxy); the
    /// collector's default (https://apis.data.go.kr/B551015) when absent.
    #[arg(long, env = "KRA_WORKER_KRA_API_BASE_URL")]
    pub kra_api_base_url: Option<String>,
    /// Resource requests of worker containers, as `<resource>=<quantity>` pairs separated by
    /// commas; a resource's `podOverrides.resources` win name by name. Empty: none.
    #[arg(long, env = "KRA_WORKER_REQUESTS", default_value = controller::resources::DEFAULT_REQUESTS, value_parser = controller::resources::parse_list)]
    pub worker_requests: ResourceList,
    /// Resource limits of worker containers, in the same form. A request of a resource's own
    /// above a default limit raises that limit to it. Empty: none.
    #[arg(long, env = "KRA_WORKER_LIMITS", default_value = controller::resources::DEFAULT_LIMITS, value_parser = controller::resources::parse_list)]
    pub worker_limits: ResourceList,
    /// Secrets of each run's namespace that worker pods pull their image with (comma-separated).
    #[arg(long = "worker-image-pull-secret", env = "KRA_WORKER_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub worker_image_pull_secrets: Vec<String>,
    /// Where worker pods export their traces (OTLP over HTTP, as `OTEL_EXPORTER_OTLP_ENDPOINT`).
    /// Default: the operator's own `OTEL_EXPORTER_OTLP_ENDPOINT`; workers trace nothing without one.
    #[arg(long, env = "KRA_WORKER_OTLP_ENDPOINT")]
    pub worker_otlp_endpoint: Option<String>,
    /// Service account of worker pods when a resource names none.
    #[arg(long, env = "KRA_WORKER_SERVICE_ACCOUNT")]
    pub worker_service_account: Option<String>,
    /// Images a resource's `podOverrides.image` may name besides --worker-image: exact names or
    /// prefixes ending in `*` (comma-separated). None by default.
    #[arg(long, env = "KRA_ALLOWED_WORKER_IMAGES", value_delimiter = ',')]
    pub allowed_worker_images: Vec<String>,
    /// Service accounts a resource's `podOverrides.serviceAccountName` may name (comma-separated).
    /// None by default: worker pods run as --worker-service-account.
    #[arg(long, env = "KRA_ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub allowed_service_accounts: Vec<String>,
    /// Allow plain-http LLM endpoints (the run's API key travels unencrypted). https only by default.
    #[arg(long, env = "KRA_ALLOW_HTTP_LLM_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_http_llm_endpoints: bool,
    /// Hosts an LLM endpoint may name: exact names or `*.domain` (comma-separated). Any host
    /// when empty.
    #[arg(long, env = "KRA_ALLOWED_LLM_HOSTS", value_delimiter = ',')]
    pub allowed_llm_hosts: Vec<String>,
    /// Database used when a resource names none, as `<secret>/<key>` of a Secret holding the URL
    /// (looked up in the resource's namespace).
    #[arg(long, env = "KRA_DEFAULT_DATABASE_SECRET", value_parser = parse_secret_key)]
    pub default_database_secret: Option<SecretKeyRef>,
    /// Elect a leader through a Lease, so only one replica reconciles.
    #[arg(long, env = "KRA_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kra-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "KRA_LEASE_NAME", default_value = "kra-operator-leader")]
    pub lease_name: String,
    /// Identity of this replica in the Lease (normally the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "KRA_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds between Lease renewals by the leader.
    #[arg(long, env = "KRA_LEASE_RENEW_SECONDS", default_value_t = 5)]
    pub lease_renew_seconds: u64,
    /// Seconds between a standby's attempts to acquire the Lease: a failover takes at most the
    /// lease duration and this.
    #[arg(long, env = "KRA_LEASE_RETRY_SECONDS", default_value_t = 2)]
    pub lease_retry_seconds: u64,
    /// Set `spec.managedBy` of worker Jobs, handing them to another Job controller (for example
    /// Kueue MultiKueue). The controller tests use it on real clusters to drive Job status themselves.
    #[arg(long, env = "KRA_JOB_MANAGED_BY")]
    pub job_managed_by: Option<String>,
    /// Quota of one KRA API key (shared by every KraJob naming the same Secret key): requests
    /// per second, all its Jobs together.
    #[arg(long, env = "KRA_API_REQUESTS_PER_SECOND", default_value_t = 5.0)]
    pub kra_api_requests_per_second: f64,
    /// Quota of one KRA API key: requests per KRA day (midnight to midnight, Asia/Seoul).
    #[arg(long, env = "KRA_API_REQUESTS_PER_DAY", default_value_t = 10_000)]
    pub kra_api_requests_per_day: i64,
    /// The most requests one attempt is granted.
    #[arg(long, env = "KRA_API_MAX_REQUESTS_PER_RUN", default_value_t = 5_000)]
    pub kra_api_max_requests_per_run: i64,
    /// The most collector Jobs of one key that run at once (each gets an equal share of the rate).
    #[arg(long, env = "KRA_API_MAX_CONCURRENT_JOBS", default_value_t = 2)]
    pub kra_api_max_concurrent_jobs: usize,
    /// The most KRA API keys that get metric series of their own (the busiest); the others are
    /// summed under the key `other`.
    #[arg(long, env = "KRA_METRICS_MAX_API_KEYS", default_value_t = 20)]
    pub metrics_max_api_keys: usize,
    /// Read the time from this file (an RFC 3339 timestamp, read on every use) instead of the
    /// system clock. For tests of schedules only.
    #[arg(long, hide = true, env = "KRA_TEST_CLOCK_FILE")]
    pub clock_file: Option<std::path::PathBuf>,
    /// Seconds after which an idle run is looked at again without any watch event.
    #[arg(long, env = "KRA_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// The most reconciles each controller (a kind in a watched namespace) runs at once; 0
    /// for no bound. One run is never reconciled twice at once.
    #[arg(long, env = "KRA_MAX_CONCURRENT_RECONCILES", default_value_t = controller::context::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    pub max_concurrent_reconciles: u16,
    /// Where to offer the API server HTTP/2: `off` (kube's HTTP/1.1 stack: a connection per
    /// request in flight), `requests` (every request but the watches shares one HTTP/2
    /// connection; the watches keep a connection each over HTTP/1.1) or `all` (watches too;
    /// at 10,000 runs its watches restarted far more often: docs/benchmarks.md).
    #[arg(long, env = "KRA_API_HTTP2", value_enum, default_value = "off")]
    pub api_http2: crate::api_client::Protocols,
    /// Microseconds the operator's thread pauses when it has run out of work, before it waits
    /// for the network: what arrives meanwhile (watch events, answers) is then read in one wake
    /// instead of one wake each: less CPU under a burst, a little more at a steady rate
    /// (docs/benchmarks.md, step 26). Adds at most this much latency per step of a reconcile;
    /// 0 (the default) waits at once. At most 1000000 (a second: a longer pause would delay
    /// the leader's Lease renewals).
    #[arg(long, env = "KRA_IO_COALESCE_MICROS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub io_coalesce_micros: u64,
}

/// The operator's runtime: one thread (its work is short reconciles waiting on the API server;
/// worker threads only added wakes across threads for every event the watches read, measured at
/// half the CPU per run lifecycle: docs/benchmarks.md), which pauses `--io-coalesce-micros`
/// before each wait for the network.
pub fn runtime(args: &RunArgs) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if args.io_coalesce_micros > 0 {
        let pause = std::time::Duration::from_micros(args.io_coalesce_micros);
        builder.on_thread_park(move || std::thread::sleep(pause));
    }
    builder.build()
}

fn parse_secret_key(value: &str) -> Result<SecretKeyRef, String> {
    match value.split_once('/') {
        Some((name, key)) if !name.is_empty() && !key.is_empty() => {
            Ok(SecretKeyRef { name: name.to_string(), key: key.to_string() })
        }
        _ => Err(format!("expected <secret>/<key>, got {value:?}")),
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "kra-operator" } else { &host }, std::process::id())
}

/// Resolves once shutdown was requested. Written out (not `async fn`) because the controller's
/// `graceful_shutdown_on` needs the future to be `Sync`.
#[allow(clippy::manual_async_fn)]
fn shutdown_signal(mut rx: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

pub async fn run(args: RunArgs, client: Client) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kra_api_requests_per_second > 0.0
            && args.kra_api_requests_per_day > 0
            && args.kra_api_max_requests_per_run > 0,
        "--kra-api-requests-per-second, --kra-api-requests-per-day and --kra-api-max-requests-per-run must be positive"
    );
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut registry = Registry::default();
    let stores: Arc<RwLock<Stores>> = Arc::default();
    let metrics = Metrics::new(&mut registry, stores.clone(), args.metrics_max_api_keys);
    metrics.kra_api_daily_quota.set(args.kra_api_requests_per_day);
    let health = Health::new(
        client.clone(),
        registry,
        stores.clone(),
        VERSION,
        Leadership {
            enabled: args.leader_election,
            identity: identity.clone(),
            lease: format!("{}/{}", args.lease_namespace, args.lease_name),
            ..Default::default()
        },
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("failed to bind the HTTP endpoints to {}", args.http_addr))?;
    tracing::info!(addr = %args.http_addr, "serving /metrics, /livez, /readyz, /health/detailed");
    let router = health::router(health.clone());
    let server_stop = shutdown_signal(stop_rx.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(server_stop).await });
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let elector = args.leader_election.then(|| {
        Elector::new(
            Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
            LeaseSettings {
                name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(args.lease_duration_seconds),
                renew_interval: Duration::from_secs(args.lease_renew_seconds),
                retry_interval: Duration::from_secs(args.lease_retry_seconds.max(1)),
            },
        )
    });

    let shared = Shared { client: client.clone(), metrics: metrics.clone(), stores, identity: identity.clone() };
    let result = match &elector {
        Some(elector) => lead_when_elected(elector, &args, &shared, &health, stop_rx.clone()).await,
        None => {
            health.beat();
            health.became_leader(&identity);
            run_controllers(&args, &shared, shutdown_signal(stop_rx.clone()), None).await;
            Ok(())
        }
    };
    if let Some(elector) = &elector
        && let Err(error) = elector.release().await
    {
        tracing::warn!("{error}");
    }
    server.abort();
    tracing::info!("stopped");
    result
}

/// Campaign until elected (or told to stop), then run the controllers while renewing the Lease.
/// Losing the Lease stops the controllers and ends the process with an error, so the
/// replica restarts as a clean standby.
async fn lead_when_elected(
    elector: &Elector,
    args: &RunArgs,
    shared: &Shared,
    health: &Arc<Health>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (metrics, identity) = (&shared.metrics, shared.identity.as_str());
    let (renew, retry) = (elector.settings().renew_interval, elector.settings().retry_interval);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let round = elector.round().await;
        health.beat();
        match round {
            Ok(Round::Leader) => break,
            Ok(Round::Follower { holder }) => health.following(holder),
            Err(error) => {
                tracing::warn!("{error}");
                health.lease_error(error.to_string());
            }
        }
        let mut stop = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(retry) => {},
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
    tracing::info!(identity, "acquired the leader Lease");
    metrics.leader.set(1);
    health.became_leader(identity);

    // The controllers stop when shutdown is requested or the Lease is lost.
    let (lost_tx, lost_rx) = watch::channel(false);
    let stop_controllers = {
        let mut stop = stop.clone();
        let mut lost = lost_rx.clone();
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {},
                _ = lost.wait_for(|l| *l) => {},
            }
        }
    };
    let renewals = async {
        let lease_duration = elector.settings().lease_duration;
        let mut last_renewed = tokio::time::Instant::now();
        let mut stop = stop.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(renew) => {},
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            let round = elector.round().await;
            health.beat();
            match round {
                Ok(Round::Leader) => last_renewed = tokio::time::Instant::now(),
                Ok(Round::Follower { holder }) => {
                    let _ = lost_tx.send(true);
                    return Err(anyhow::anyhow!(
                        "lost the leader Lease to {}",
                        holder.unwrap_or_else(|| "another replica".into())
                    ));
                }
                Err(error) => {
                    tracing::warn!("{error}");
                    if last_renewed.elapsed() >= lease_duration {
                        let _ = lost_tx.send(true);
                        return Err(anyhow::anyhow!("failed to renew the leader Lease within its duration: {error}"));
                    }
                }
            }
        }
    };
    let controllers = run_controllers(args, shared, stop_controllers, Some(lost_rx));
    let (renewed, ()) = tokio::join!(renewals, controllers);
    metrics.leader.set(0);
    health.stopped_leading();
    renewed
}

/// What the operator's tasks share: the API client, the metrics, the watch caches of the running
/// controllers, and this replica's identity.
struct Shared {
    client: Client,
    metrics: Arc<Metrics>,
    stores: Arc<RwLock<Stores>>,
    identity: String,
}

async fn run_controllers(
    args: &RunArgs,
    shared: &Shared,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    lost: Option<watch::Receiver<bool>>,
) {
    let (client, identity) = (&shared.client, shared.identity.as_str());
    let (recorder, event_sender) = controller::events::Recorder::new(
        client.clone(),
        "kra-operator",
        identity,
        shared.metrics.clone(),
        controller::events::QUEUE_CAPACITY,
    );
    // The Events reconciles queue are sent until the controllers have stopped, then the rest.
    let (close_events, events_closed) = tokio::sync::oneshot::channel::<()>();
    let events = tokio::spawn(event_sender.run(async move {
        let _ = events_closed.await;
    }));
    let (ctx, reports) = context(args, shared, recorder);
    let ctx = Arc::new(ctx);
    // Both controllers stop on the same signal.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    // One pair of controllers per watched namespace (or one pair for the whole cluster).
    let mut drivers = Vec::new();
    let mut stores = Stores { undecodable: Some(ctx.undecodable.clone()), ..Stores::default() };
    drivers.push(controller::undecodable::reporter(ctx.clone(), reports, shutdown_signal(stop_rx.clone())).boxed());
    for scope in Scope::for_namespaces(&args.namespaces) {
        let (krajobs, driver) =
            controller::controller::<KraJob>(ctx.clone(), scope.clone(), shutdown_signal(stop_rx.clone()));
        stores.krajobs.push(krajobs);
        drivers.push(driver.boxed());
        let (runs, driver) =
            controller::controller::<EvaluationRun>(ctx.clone(), scope, shutdown_signal(stop_rx.clone()));
        stores.evaluation_runs.push(runs);
        drivers.push(driver.boxed());
    }
    stores.watches = ctx.watches.lock().map(|w| w.clone()).unwrap_or_default();
    let watches = stores.clone();
    if let Ok(mut current) = shared.stores.write() {
        *current = stores;
    }
    let drivers = futures::future::join_all(drivers);
    tokio::pin!(drivers);
    let mut stopping = stop_rx.clone();
    tokio::select! {
        biased;
        _ = stopping.wait_for(|s| *s) => {
            // A controller stopped before its watches synced has started no reconcile: it
            // ends at once. Otherwise the reconciles in flight are let finish.
            if !watches.synced().iter().all(|(_, ready)| *ready) {
                tracing::info!("stopping before the watches synced");
            }
            drivers.await;
        }
        _ = &mut drivers => {}
    }
    let _ = close_events.send(());
    if tokio::time::timeout(EVENTS_FLUSH, events).await.is_err() {
        tracing::warn!("stopped before every queued Event was sent");
    }
    if lost.is_some_and(|l| *l.borrow()) {
        tracing::error!("controllers stopped: leadership lost");
    }
    if let Ok(mut stores) = shared.stores.write() {
        *stores = Default::default();
    }
}

/// The reconcilers' shared state, from the options; and where undecodable objects are reported.
fn context(
    args: &RunArgs,
    shared: &Shared,
    recorder: controller::events::Recorder,
) -> (Context, tokio::sync::mpsc::UnboundedReceiver<controller::undecodable::Report>) {
    let mut ctx = Context::new(
        shared.client.clone(),
        WorkerDefaults {
            image: args.worker_image.clone(),
            image_pull_policy: args.worker_image_pull_policy.clone(),
            database_secret: args.default_database_secret.clone(),
            service_account_name: args.worker_service_account.clone(),
            job_managed_by: args.job_managed_by.clone(),
            resources: controller::resources::defaults(&args.worker_requests, &args.worker_limits),
            image_pull_secrets: args.worker_image_pull_secrets.iter().filter(|s| !s.is_empty()).cloned().collect(),
            otlp_endpoint: worker_otlp_endpoint(args),
            mlflow: args.default_mlflow_tracking_uri.as_ref().map(|uri| DefaultMlflow {
                tracking_uri: uri.clone(),
                experiment: args.default_mlflow_experiment.clone(),
            }),
            kra_api_base_url: args.kra_api_base_url.clone(),
            policy: Policy {
                allowed_images: args.allowed_worker_images.clone(),
                allowed_service_accounts: args.allowed_service_accounts.clone(),
                allow_http_llm_endpoints: args.allow_http_llm_endpoints,
                allowed_llm_hosts: args.allowed_llm_hosts.clone(),
            },
        },
        shared.metrics.clone(),
        shared.stores.clone(),
        recorder,
        Duration::from_secs(args.resync_seconds),
    );
    ctx.budgets = controller::budget::Budgets::new(controller::budget::Quota {
        requests_per_second: args.kra_api_requests_per_second,
        requests_per_day: args.kra_api_requests_per_day,
        max_requests_per_run: args.kra_api_max_requests_per_run,
        max_concurrent_jobs: args.kra_api_max_concurrent_jobs.max(1),
    });
    ctx.max_concurrent_reconciles = args.max_concurrent_reconciles;
    if let Some(path) = &args.clock_file {
        ctx.clock = controller::Clock::File(path.clone());
    }
    let (undecodable, reports) = controller::undecodable::Undecodable::new();
    ctx.undecodable = Arc::new(undecodable);
    (ctx, reports)
}

/// How long a stopping operator waits at most for its queued Events to be sent.
const EVENTS_FLUSH: Duration = Duration::from_secs(5);

/// Where workers send traces: the option, else the operator's own endpoint while it traces.
fn worker_otlp_endpoint(args: &RunArgs) -> Option<String> {
    let own = || {
        crate::telemetry::tracing_requested(|name| std::env::var(name).ok())
            .then(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .flatten()
    };
    args.worker_otlp_endpoint.clone().filter(|e| !e.trim().is_empty()).or_else(own)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::RunArgs;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        Command::try_parse_from(std::iter::once("run").chain(args.iter().copied()))
            .map(|c| c.run)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn worker_resources_and_pull_secrets_are_options_with_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.worker_requests["cpu"].0, "100m");
        assert_eq!(args.worker_requests["memory"].0, "256Mi");
        assert_eq!(args.worker_limits["memory"].0, "1Gi");
        assert!(args.worker_image_pull_secrets.is_empty());

        let args =
            parse(&["--worker-requests", "", "--worker-limits", "cpu=2", "--worker-image-pull-secret", "a,b"]).unwrap();
        assert!(args.worker_requests.is_empty(), "an empty value turns the defaults off");
        assert_eq!(args.worker_limits["cpu"].0, "2");
        assert_eq!(args.worker_image_pull_secrets, ["a", "b"]);

        let error = parse(&["--worker-requests", "memory=lots"]).unwrap_err();
        assert!(error.contains("--worker-requests") && error.contains("\"lots\" (of memory)"), "{error}");
    }

    #[test]
    fn a_pause_longer_than_a_second_is_refused_by_name() {
        assert_eq!(parse(&["--io-coalesce-micros", "1000000"]).unwrap().io_coalesce_micros, 1_000_000);
        let error = parse(&["--io-coalesce-micros", "1000001"]).unwrap_err();
        assert!(error.contains("--io-coalesce-micros") && error.contains("1000001"), "{error}");
    }

    /// With `--io-coalesce-micros`, what arrives while the runtime pauses is read in one wake.
    /// The writer sends its second part (ten bytes, a millisecond apart) 20 ms into the
    /// reader's 300 ms pause; without the pause each byte would be a read of its own.
    #[test]
    fn what_arrives_during_the_pause_is_read_in_one_wake() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;

        let runtime = super::runtime(&parse(&["--io-coalesce-micros", "300000"]).unwrap()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let (first_read, after_first_read) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.set_nodelay(true).unwrap();
            socket.write_all(b"a").unwrap();
            after_first_read.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            for _ in 0..10 {
                socket.write_all(b"b").unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let reads = runtime.block_on(async move {
            let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
            let (mut reads, mut total, mut buffer) = (Vec::new(), 0, [0u8; 64]);
            while total < 11 {
                let n = socket.read(&mut buffer).await.unwrap();
                assert!(n > 0, "the writer closed early");
                if reads.is_empty() {
                    first_read.send(()).unwrap();
                }
                reads.push(n);
                total += n;
            }
            reads
        });
        writer.join().unwrap();
        assert_eq!(reads, [1, 10], "bytes per read");
    }
}
