//! Prometheus metrics: one registry, bounded labels (kind, outcome, a fixed error category,
//! phase). Never an object name or an error's text as a label.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{EvaluationRun, KraAction, KraJob, Meet, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcome {
    pub kind: &'static str,
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
struct KindPhase {
    kind: &'static str,
    phase: &'static str,
}

/// The watched resources, once the controllers run (only on the leader): one store per watched
/// namespace, or one for the whole cluster.
#[derive(Clone, Debug, Default)]
pub struct Stores {
    pub krajobs: Vec<Store<KraJob>>,
    pub evaluation_runs: Vec<Store<EvaluationRun>>,
}

impl Stores {
    /// Whether each watch has completed its initial list, by resource plural. Empty when the
    /// controllers are not running (a standby replica).
    pub fn synced(&self) -> Vec<(&'static str, bool)> {
        use futures::FutureExt;
        // Polled once, never awaited: the store's readiness signal wakes only one waiter, the controller.
        fn ready<K: kube::Resource + Clone>(store: &Store<K>) -> bool
        where
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
        }
        let mut out = Vec::new();
        if !self.krajobs.is_empty() {
            out.push(("krajobs", self.krajobs.iter().all(ready)));
        }
        if !self.evaluation_runs.is_empty() {
            out.push(("evaluationruns", self.evaluation_runs.iter().all(ready)));
        }
        out
    }

    /// Every watched KraJob.
    pub fn krajob_list(&self) -> Vec<Arc<KraJob>> {
        self.krajobs.iter().flat_map(|s| s.state()).collect()
    }

    /// Count runs by kind and phase from the watch caches.
    pub fn phase_counts(&self) -> Vec<(&'static str, Phase, i64)> {
        let mut out = Vec::new();
        if !self.krajobs.is_empty() {
            let phases: Vec<_> =
                self.krajob_list().iter().map(|o| o.status.as_ref().and_then(|s| s.run.phase)).collect();
            push_counts(&mut out, "krajob", &phases);
        }
        if !self.evaluation_runs.is_empty() {
            let phases: Vec<_> = self
                .evaluation_runs
                .iter()
                .flat_map(|s| s.state())
                .map(|o| o.status.as_ref().and_then(|s| s.phase))
                .collect();
            push_counts(&mut out, "evaluationrun", &phases);
        }
        out
    }
}

/// The newest race day, per racecourse, whose results a succeeded `KraJob` collected, as the Unix
/// time of that day's midnight in Asia/Seoul (UTC+9, no daylight saving). The data-freshness SLI.
pub fn results_collected_through(jobs: &[Arc<KraJob>]) -> Vec<(Meet, i64)> {
    let mut latest: std::collections::BTreeMap<Meet, jiff::civil::Date> = Default::default();
    for job in jobs {
        let succeeded = job.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Succeeded);
        let collects_results = matches!(job.spec.action, KraAction::CollectResults | KraAction::FullPipeline);
        let last_day = job.spec.date.as_deref().or(job.spec.date_range.as_ref().map(|r| r.to.as_str()));
        let Some(day) = last_day.and_then(|d| d.parse::<jiff::civil::Date>().ok()) else { continue };
        if succeeded && collects_results {
            let entry = latest.entry(job.spec.meet).or_insert(day);
            *entry = (*entry).max(day);
        }
    }
    latest
        .into_iter()
        .filter_map(|(meet, day)| {
            let midnight = day.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9))).ok()?;
            Some((meet, midnight.timestamp().as_second()))
        })
        .collect()
}

/// Today's use of every KRA API key the watched KraJobs name.
pub fn budget_use(jobs: &[Arc<KraJob>], now: Timestamp) -> Vec<(String, crate::controller::budget::Usage)> {
    use crate::controller::budget;
    let keys: std::collections::BTreeSet<String> =
        jobs.iter().filter(|j| j.spec.schedule.is_none()).map(|j| budget::key_of(j)).collect();
    let day = budget::kra_day(now);
    keys.into_iter()
        .map(|key| {
            let (usage, _) = budget::usage(jobs, &key, day);
            (key, usage)
        })
        .collect()
}

fn push_counts(out: &mut Vec<(&'static str, Phase, i64)>, kind: &'static str, phases: &[Option<Phase>]) {
    for phase in Phase::ALL {
        // A run without status yet is about to start: count it as Pending.
        let count = phases.iter().filter(|p| p.unwrap_or(Phase::Pending) == phase).count();
        out.push((kind, phase, count as i64));
    }
}

#[derive(Debug)]
struct RunsCollector {
    stores: Arc<RwLock<Stores>>,
}

impl prometheus_client::collector::Collector for RunsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counts, through) = self
            .stores
            .read()
            .map(|s| (s.phase_counts(), results_collected_through(&s.krajob_list())))
            .unwrap_or_default();
        if counts.is_empty() {
            return Ok(());
        }
        let budgets = self.stores.read().map(|s| budget_use(&s.krajob_list(), Timestamp::now())).unwrap_or_default();
        if !budgets.is_empty() {
            let mut used = encoder.encode_descriptor(
                "kra_api_requests_used",
                "KRA API requests counted against today's quota (Asia/Seoul day), by key (namespace/secret/key).",
                None,
                MetricType::Gauge,
            )?;
            for (key, usage) in &budgets {
                ConstGauge::new(usage.requests).encode(used.encode_family(&KeyLabel { key: key.clone() })?)?;
            }
            let mut active = encoder.encode_descriptor(
                "kra_api_jobs_active",
                "Collector Jobs holding a share of a KRA API key's budget, by key.",
                None,
                MetricType::Gauge,
            )?;
            for (key, usage) in &budgets {
                ConstGauge::new(usage.active_jobs as i64)
                    .encode(active.encode_family(&KeyLabel { key: key.clone() })?)?;
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
    pub attempts: Family<KindOutcome, Counter>,
    pub leader: Gauge,
    /// The configured daily quota of one KRA API key (requests per KRA day).
    pub kra_api_daily_quota: Gauge,
    pub stores: Arc<RwLock<Stores>>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            attempts: Family::default(),
            leader: Gauge::default(),
            kra_api_daily_quota: Gauge::default(),
            stores: Arc::default(),
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
        registry.register_collector(Box::new(RunsCollector { stores: metrics.stores.clone() }));
        Arc::new(metrics)
    }

    pub fn observe_reconcile(&self, kind: &'static str, elapsed: Duration, error_category: Option<&'static str>) {
        self.reconcile_duration.get_or_create(&KindLabel { kind }).observe(elapsed.as_secs_f64());
        let outcome = if error_category.is_some() { "error" } else { "success" };
        self.reconciles.get_or_create(&KindOutcome { kind, outcome }).inc();
        if let Some(category) = error_category {
            self.reconcile_errors.get_or_create(&KindCategory { kind, category }).inc();
        }
    }

    pub fn attempt(&self, kind: &'static str, outcome: &'static str) {
        self.attempts.get_or_create(&KindOutcome { kind, outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(action: &str, meet: &str, day: serde_json::Value, phase: &str) -> Arc<KraJob> {
        let mut object = serde_json::json!({
            "apiVersion": "kra.dev/v1alpha1",
            "kind": "KraJob",
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"action": action, "meet": meet, "apiKeySecretRef": {"name": "k", "key": "v"}},
            "status": {"phase": phase},
        });
        let spec = object["spec"].as_object_mut().unwrap();
        match day {
            serde_json::Value::String(_) => spec.insert("date".into(), day),
            range => spec.insert("dateRange".into(), range),
        };
        Arc::new(serde_json::from_value(object).unwrap())
    }

    #[test]
    fn freshness_counts_only_succeeded_result_collections_and_takes_the_newest_day() {
        let jobs = vec![
            job("CollectResults", "seoul", "2025-05-24".into(), "Succeeded"),
            job("FullPipeline", "seoul", serde_json::json!({"from": "2025-05-30", "to": "2025-05-31"}), "Succeeded"),
            // Newer, but not results, or not succeeded: ignored.
            job("CollectOdds", "seoul", "2025-06-07".into(), "Succeeded"),
            job("CollectResults", "seoul", "2025-06-08".into(), "Failed"),
            job("CollectResults", "busan", "2025-05-23".into(), "Succeeded"),
            job("CollectRaceCards", "jeju", "2025-05-23".into(), "Succeeded"),
        ];
        let through = results_collected_through(&jobs);
        // 2025-05-31T00:00+09:00 and 2025-05-23T00:00+09:00.
        assert_eq!(through, vec![(Meet::Seoul, 1_748_617_200), (Meet::Busan, 1_747_926_000)]);
    }
}
