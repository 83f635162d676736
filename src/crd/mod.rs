//! The custom resources, declared once as Rust types. The CRD YAML under `crds/` is generated
//! from these types (`kra-operator crd`) and a test fails when it is stale.

/// The command-line spelling of a CRD enum value: the worker CLIs parse these enums with clap,
/// so the operator writes their arguments from the same definition.
pub fn arg_value<T: clap::ValueEnum>(value: T) -> String {
    value.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
}

pub mod common;
pub mod condition;
// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated keys as duplicates.
#[allow(clippy::duplicated_attributes)]
pub mod evaluationrun;
#[allow(clippy::duplicated_attributes)]
pub mod krajob;
pub mod reference;
pub mod schedule;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{
    Attempt, AttemptOutcome, Backoff, DateRange, Meet, Phase, PodOverrides, QueueRef, RequestGrant, RetryPolicy,
    RunControls, RunStatus, SecretKeyRef,
};
pub use condition::{RunCondition, SharedText};
pub use evaluationrun::{
    EvaluationRun, EvaluationRunSpec, EvaluationRunStatus, EvaluationSummary, PromotionDecision, Trigger,
};
pub use krajob::{CollectionSummary, KraAction, KraJob, KraJobSpec, KraJobStatus};
pub use schedule::{CatchUp, ConcurrencyPolicy, Schedule, ScheduleStatus, ScheduledRun, SkippedRun, Window};

/// The API group of both kinds.
pub const GROUP: &str = "kra.dev";

/// Every CRD this operator serves, in a fixed order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![KraJob::crd(), EvaluationRun::crd()]
}

/// One CRD as YAML, exactly as committed under `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// The file name of a CRD under `crds/`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Every CRD as one multi-document YAML stream (what `kra-operator crd` prints).
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
