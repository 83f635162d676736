//! Prometheus metrics: one registry, bounded labels (kind, outcome, a fixed error category,
//! phase). Never an object name or an error's text as a label.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{Meet, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcome {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// The outcomes `kra_operator_events_total` counts.
pub mod event_outcome {
    pub const PUBLISHED: &str = "published";
    /// The API server refused it.
    pub const FAILED: &str = "failed";
    /// Not sent: the queue of Events was full, or the operator stopping.
    pub const DROPPED: &str = "dropped";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindCategory {
    pub kind: &'static str,
    pub category: &'static str,
}

/// A KRA API key reference (`namespace/secret/key`): as many values as Secrets in use.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeetLabel {
    meet: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindPhase {
    kind: &'static str,
    phase: &'static str,
}

/// What the run gauges report, read from the watch caches at each scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunsSnapshot {
    /// Runs by kind (`krajob`, `evaluationrun`) and phase; empty while no controller runs.
    pub phases: Vec<(&'static str, Phase, i64)>,
    /// Per racecourse, the Unix time of the newest race day whose results were collected.
    pub results_through: Vec<(Meet, i64)>,
    /// Per KRA API key: (key, requests counted today, collector Jobs holding a share).
    pub budgets: Vec<(String, i64, i64)>,
    /// Whether each run watch (`krajobs`, `evaluationruns`) has completed its initial list.
    pub watches: Vec<(&'static str, bool)>,
}

/// Where the run gauges come from (the controller's watch caches); metrics know nothing else of
/// the controller.
pub trait RunsSource: Send + Sync + std::fmt::Debug {
    fn runs_snapshot(&self) -> RunsSnapshot;
}

#[derive(Debug)]
struct RunsCollector {
    source: Arc<dyn RunsSource>,
    max_key_series: usize,
}

/// At most `max` keys keep a series of their own (those with the most requests today, then by
/// name); the rest are summed under the key `other`, so the number of series stays bounded
/// whatever the KraJobs name.
pub fn cap_key_series(mut budgets: Vec<(String, i64, i64)>, max: usize) -> Vec<(String, i64, i64)> {
    if budgets.len() <= max {
        return budgets;
    }
    budgets.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest = budgets.split_off(max);
    let (requests, jobs) = rest.iter().fold((0, 0), |(r, j), (_, requests, jobs)| (r + requests, j + jobs));
    budgets.push((OTHER_KEY.to_string(), requests, jobs));
    budgets
}

/// The key label of the keys beyond the series limit.
pub const OTHER_KEY: &str = "other";

impl prometheus_client::collector::Collector for RunsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let RunsSnapshot { phases: counts, results_through: through, budgets, watches } = self.source.runs_snapshot();
        let budgets = cap_key_series(budgets, self.max_key_series);
        if !watches.is_empty() {
            let mut synced = encoder.encode_descriptor(
                "watch_synced",
                "1 once the leader's watch of a resource (krajobs, evaluationruns) has completed its initial list.",
                None,
                MetricType::Gauge,
            )?;
            for (resource, ready) in &watches {
                ConstGauge::new(i64::from(*ready)).encode(synced.encode_family(&ResourceLabel { resource })?)?;
            }
        }
        if counts.is_empty() {
            return Ok(());
        }
        if !budgets.is_empty() {
            let mut used = encoder.encode_descriptor(
                "kra_api_requests_used",
                "KRA API requests counted against today's quota (Asia/Seoul day), by key (namespace/secret/key).",
                None,
                MetricType::Gauge,
            )?;
            for (key, requests, _) in &budgets {
                ConstGauge::new(*requests).encode(used.encode_family(&KeyLabel { key: key.clone() })?)?;
            }
            let mut active = encoder.encode_descriptor(
                "kra_api_jobs_active",
                "Collector Jobs holding a share of a KRA API key's budget, by key.",
                None,
                MetricType::Gauge,
            )?;
            for (key, _, jobs) in &budgets {
                ConstGauge::new(*jobs).encode(active.encode_family(&KeyLabel { key: key.clone() })?)?;
            }
        }
        if !through.is_empty() {
            let mut metric = encoder.encode_descriptor(
                "results_collected_through_timestamp_seconds",
                "Midnight (Asia/Seoul) of the newest race day whose results a succeeded KraJob collected, by meet.",
                None,
                MetricType::Gauge,
            )?;
            for (meet, seconds) in through {
                ConstGauge::new(seconds).encode(metric.encode_family(&MeetLabel { meet: meet.as_str() })?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "runs",
            "Runs known to the operator, by kind and phase (leader only).",
            None,
            MetricType::Gauge,
        )?;
        for (kind, phase, count) in counts {
            let labels = KindPhase { kind, phase: phase.as_str() };
            ConstGauge::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<KindOutcome, Counter>,
    pub reconcile_errors: Family<KindCategory, Counter>,
    pub reconcile_duration: Family<KindLabel, Histogram>,
    /// How long a woken run waited in the work queue before its reconcile started.
    pub queue_wait: Family<KindLabel, Histogram>,
    pub attempts: Family<KindOutcome, Counter>,
    pub leader: Gauge,
    /// The configured daily quota of one KRA API key (requests per KRA day).
    pub kra_api_daily_quota: Gauge,
    pub undecodable_objects: Family<KindLabel, Counter>,
    /// Events by outcome: published, failed (the API server refused it), dropped (not sent).
    pub events: Family<OutcomeLabel, Counter>,
    /// Objects the watches delivered, by resource (`krajobs`, `jobs`, `pods`, ...): each change
    /// seen on a watch, and each object of a list read when a watch starts or lists again.
    pub watch_events: Family<ResourceLabel, Counter>,
}

impl Metrics {
    /// Register every metric family, the run gauges read from `runs` at each scrape, with at
    /// most `max_key_series` KRA API keys labelled by name (the rest as `other`).
    pub fn new(registry: &mut Registry, runs: Arc<dyn RunsSource>, max_key_series: usize) -> Arc<Self> {
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            queue_wait: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            attempts: Family::default(),
            leader: Gauge::default(),
            kra_api_daily_quota: Gauge::default(),
            undecodable_objects: Family::default(),
            events: Family::default(),
            watch_events: Family::default(),
        };
        let registry = registry.sub_registry_with_prefix("kra_operator");
        registry.register("reconciles", "Reconciles by kind and outcome (success, error).", metrics.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by kind and error category.",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile, by kind.",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time a woken run waited in its controller's work queue before its reconcile started (from its first wake), by kind.",
            metrics.queue_wait.clone(),
        );
        registry.register(
            "attempts",
            "Attempt transitions by kind and outcome (started, succeeded, failed).",
            metrics.attempts.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader Lease.", metrics.leader.clone());
        registry.register(
            "kra_api_daily_quota_requests",
            "The configured quota of one KRA API key, in requests per KRA day (Asia/Seoul).",
            metrics.kra_api_daily_quota.clone(),
        );
        registry.register(
            "undecodable_objects",
            "Watched objects skipped because they could not be decoded, by kind (see the operator's warnings).",
            metrics.undecodable_objects.clone(),
        );
        registry.register(
            "events",
            "Kubernetes Events by outcome: published, failed (the API server refused it), dropped (the queue of Events to send was full).",
            metrics.events.clone(),
        );
        registry.register(
            "watch_events",
            "Objects the leader's watches delivered, by resource: each change seen on a watch, and each object of a list read when a watch starts or lists again (bookmarks not counted).",
            metrics.watch_events.clone(),
        );
        registry.register_collector(Box::new(RunsCollector { source: runs, max_key_series }));
        // Served at 0 from the start, so that "none yet" is a series (an alert or a dashboard's
        // increase() sees the first one) rather than an absent metric.
        for kind in ["krajob", "evaluationrun"] {
            drop(metrics.undecodable_objects.get_or_create(&KindLabel { kind }));
        }
        for outcome in [event_outcome::PUBLISHED, event_outcome::FAILED, event_outcome::DROPPED] {
            drop(metrics.events.get_or_create(&OutcomeLabel { outcome }));
        }
        Arc::new(metrics)
    }

    pub fn observe_queue_wait(&self, kind: &'static str, waited: Duration) {
        self.queue_wait.get_or_create(&KindLabel { kind }).observe(waited.as_secs_f64());
    }

    pub fn observe_reconcile(&self, kind: &'static str, elapsed: Duration, error_category: Option<&'static str>) {
        self.reconcile_duration.get_or_create(&KindLabel { kind }).observe(elapsed.as_secs_f64());
        let outcome = if error_category.is_some() { "error" } else { "success" };
        self.reconciles.get_or_create(&KindOutcome { kind, outcome }).inc();
        if let Some(category) = error_category {
            self.reconcile_errors.get_or_create(&KindCategory { kind, category }).inc();
        }
    }

    pub fn undecodable(&self, kind: &'static str) {
        self.undecodable_objects.get_or_create(&KindLabel { kind }).inc();
    }

    /// One Event published, failed or dropped (`controller::events`).
    pub fn event(&self, outcome: &'static str) {
        self.events.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn attempt(&self, kind: &'static str, outcome: &'static str) {
        self.attempts.get_or_create(&KindOutcome { kind, outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_beyond_the_limit_are_summed_under_other() {
        let budgets: Vec<(String, i64, i64)> = (0..50).map(|i| (format!("ns/secret-{i:02}/key"), i, 1)).collect();
        let capped = cap_key_series(budgets.clone(), 20);
        assert_eq!(capped.len(), 21, "20 keys and other");
        assert_eq!(capped[0], ("ns/secret-49/key".to_string(), 49, 1), "the busiest keys keep their series");
        let other = capped.last().unwrap();
        assert_eq!(other.0, OTHER_KEY);
        assert_eq!(other.1, (0..30).sum::<i64>(), "the rest's requests add up");
        assert_eq!(other.2, 30);
        assert_eq!(cap_key_series(budgets[..5].to_vec(), 20).len(), 5, "under the limit nothing changes");
    }
}
