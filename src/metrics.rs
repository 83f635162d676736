//! Prometheus metrics: one registry, bounded labels (kind, outcome, a fixed error category,
//! phase). Never an object name or an error's text as a label.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::runtime::reflector::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::crd::{EvaluationRun, KraJob, Phase};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindPhase {
    kind: &'static str,
    phase: &'static str,
}

/// The watched resources, once the controllers run (only on the leader).
#[derive(Clone, Debug, Default)]
pub struct Stores {
    pub krajobs: Option<Store<KraJob>>,
    pub evaluation_runs: Option<Store<EvaluationRun>>,
}

impl Stores {
    /// Whether each watch has completed its initial list, by resource plural. Empty when the
    /// controllers are not running (a standby replica).
    pub fn synced(&self) -> Vec<(&'static str, bool)> {
        use futures::FutureExt;
        let mut out = Vec::new();
        // Polled once, never awaited: the store's readiness signal wakes only one waiter, the controller.
        if let Some(store) = &self.krajobs {
            out.push(("krajobs", store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())));
        }
        if let Some(store) = &self.evaluation_runs {
            out.push(("evaluationruns", store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())));
        }
        out
    }

    /// Count runs by kind and phase from the watch caches.
    pub fn phase_counts(&self) -> Vec<(&'static str, Phase, i64)> {
        let mut out = Vec::new();
        if let Some(store) = &self.krajobs {
            let phases: Vec<_> = store.state().iter().map(|o| o.status.as_ref().and_then(|s| s.phase)).collect();
            push_counts(&mut out, "krajob", &phases);
        }
        if let Some(store) = &self.evaluation_runs {
            let phases: Vec<_> = store.state().iter().map(|o| o.status.as_ref().and_then(|s| s.phase)).collect();
            push_counts(&mut out, "evaluationrun", &phases);
        }
        out
    }
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
        let counts = self.stores.read().map(|s| s.phase_counts()).unwrap_or_default();
        if counts.is_empty() {
            return Ok(());
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
