//! Types shared by both custom resources: run controls (retry, deadline, suspend,
//! pod overrides), secret references, and the run status with its attempts.

use std::collections::BTreeMap;

use clap::ValueEnum;
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::RunCondition;

/// A reference to one key of a Secret in the resource's namespace. The operator never reads
/// the Secret: the value reaches the worker container through `secretKeyRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Exponential backoff between attempts: the wait before retry `n` (1-based) is
/// `min(initialSeconds * factor^(n-1), maxSeconds)`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxSeconds >= self.initialSeconds").message("backoff.maxSeconds must be at least backoff.initialSeconds"))]
pub struct Backoff {
    /// Wait before the first retry, in seconds.
    #[serde(default = "default_backoff_initial")]
    #[schemars(range(min = 1, max = 86400))]
    pub initial_seconds: i64,
    /// Multiplier applied to the wait after each failed attempt.
    #[serde(default = "default_backoff_factor")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub factor: f64,
    /// Upper bound of the wait, in seconds.
    #[serde(default = "default_backoff_max")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_seconds: i64,
}

fn default_backoff_initial() -> i64 {
    30
}
fn default_backoff_factor() -> f64 {
    2.0
}
fn default_backoff_max() -> i64 {
    900
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_seconds: default_backoff_initial(),
            factor: default_backoff_factor(),
            max_seconds: default_backoff_max(),
        }
    }
}

/// How failed attempts are retried. Each attempt is its own Job; the operator, not the Job
/// controller, decides when to retry, so the wait is recorded in status and survives restarts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt; `0` means one attempt only.
    #[serde(default = "default_retry_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub limit: i32,
    /// Wait between attempts.
    #[serde(default)]
    pub backoff: Backoff,
}

fn default_retry_limit() -> i32 {
    3
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { limit: default_retry_limit(), backoff: Backoff::default() }
    }
}

/// Overrides applied to the worker pod of every attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Container image; defaults to the operator's configured worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// Compute resources of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the worker pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Service account the worker pod runs as. It needs no Kubernetes API access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra labels on the Job and its pod. Keys under `kra.dev/` are reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the Job and its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// How a run is executed; the same fields in both kinds' specs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunControls {
    /// Retries of failed attempts.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Wall-clock limit of each attempt's Job, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after an attempt finishes (and its outcome is recorded in status) before the
    /// operator deletes its Job and pods. The resource and its status stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Suspends the run: no new attempt starts, and an active Job is suspended.
    #[serde(default)]
    pub suspend: bool,
    /// Overrides for the worker pod.
    // Boxed, as the other large parts of a run that are seldom set (a schedule, its status, the
    // result): the operator's cache holds every run, and an absent box takes 8 bytes where these
    // took 88 to 256 in place (about 640 of a KraJob's 1,520 bytes before any field is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_overrides: Option<Box<PodOverrides>>,
    /// Admit each attempt's Job through a Kueue queue. The Job is created suspended with the
    /// queue's labels and Kueue decides when it runs; the operator then never changes the Job's
    /// `suspend` (with `suspend: true` it only stops starting new attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueRef>,
}

/// A Kueue `LocalQueue` in the run's namespace, and optionally a `WorkloadPriorityClass`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueRef {
    /// Name of the LocalQueue (label `kueue.x-k8s.io/queue-name`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Name of the WorkloadPriorityClass (label `kueue.x-k8s.io/priority-class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub priority_class: Option<String>,
}

/// An inclusive range of calendar dates (`YYYY-MM-DD`, Asia/Seoul race days).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.to >= self.from").message("dateRange.to must not be before dateRange.from"))]
pub struct DateRange {
    /// First race day, `YYYY-MM-DD`.
    // The length bound is what the API server's CEL cost estimate needs: without it, the range
    // rule inside the status's unbounded lists exceeds the CRD's validation budget.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), length(max = 10))]
    pub from: String,
    /// Last race day, `YYYY-MM-DD`, inclusive.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), length(max = 10))]
    pub to: String,
}

impl DateRange {
    /// `from..to`, or the one date when the range is a single day.
    pub fn label(&self) -> String {
        if self.from == self.to { self.from.clone() } else { format!("{}..{}", self.from, self.to) }
    }
}

/// A racecourse of the Korea Racing Authority. The KRA API codes are 1, 2 and 3.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Meet {
    /// Seoul (API code 1).
    Seoul,
    /// Jeju (API code 2).
    Jeju,
    /// Busan-Gyeongnam (API code 3).
    Busan,
}

impl Meet {
    /// The code the KRA API uses for this racecourse.
    pub fn api_code(self) -> u8 {
        match self {
            Meet::Seoul => 1,
            Meet::Jeju => 2,
            Meet::Busan => 3,
        }
    }

    /// The racecourse of a KRA API code.
    pub fn from_api_code(code: i64) -> Option<Meet> {
        match code {
            1 => Some(Meet::Seoul),
            2 => Some(Meet::Jeju),
            3 => Some(Meet::Busan),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Meet::Seoul => "seoul",
            Meet::Jeju => "jeju",
            Meet::Busan => "busan",
        }
    }
}

/// Where a run is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted; the first attempt's Job is about to be created.
    Pending,
    /// An attempt's Job is active.
    Running,
    /// The last attempt failed; the next starts at `status.nextAttemptAt`.
    BackingOff,
    /// An attempt succeeded.
    Succeeded,
    /// Every allowed attempt failed, or the run cannot proceed.
    Failed,
    /// `spec.suspend` is set: no attempt runs.
    Suspended,
    /// The spec is invalid; nothing runs until it changes.
    Invalid,
    /// A scheduled `KraJob` between runs: none of its child runs is active.
    Scheduled,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Running,
        Phase::BackingOff,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Suspended,
        Phase::Invalid,
        Phase::Scheduled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::BackingOff => "BackingOff",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Suspended => "Suspended",
            Phase::Invalid => "Invalid",
            Phase::Scheduled => "Scheduled",
        }
    }

    /// A terminal phase ends the run for the current generation.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// How one attempt ended, or that it has not yet.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AttemptOutcome {
    /// The Job is active (or suspended).
    Running,
    /// The Job completed.
    Succeeded,
    /// The Job failed, or disappeared before its outcome was seen.
    Failed,
}

/// One attempt: one Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1-based attempt number over the life of the resource; part of the Job name.
    pub number: i32,
    /// Name of the attempt's Job.
    pub job_name: String,
    /// `metadata.generation` of the spec the attempt runs.
    pub generation: i64,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// How the attempt ended.
    pub outcome: AttemptOutcome,
    /// Machine-readable cause of a failure (for example `BackoffLimitExceeded`, `DeadlineExceeded`, `JobDeleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Exit code of the worker container, once it terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The share of the KRA API key's quota granted to this attempt (KraJobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_budget: Option<RequestGrant>,
}

/// KRA API requests granted to one attempt from its key's shared quota.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestGrant {
    /// The KRA day (Asia/Seoul) the requests count against, `YYYY-MM-DD`.
    pub day: String,
    /// Requests the attempt may make.
    pub requests: i64,
    /// Requests per second the attempt may make.
    pub requests_per_second: f64,
    /// Requests the attempt reported making (its summary's `apiCalls`), once it finished: only
    /// these count against the day; the rest of the grant went back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<i64>,
}

/// Observed state of a run: phase, conditions, attempts and the worker's result summary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus<R> {
    /// Where the run is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `Reconciling`, `Stalled` (read by kstatus, Argo CD and Flux),
    /// and `Running`, `Succeeded`, `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "super::condition::shared_conditions")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<RunCondition>,
    /// The attempts, oldest first: every attempt of the current generation, and the newest of
    /// earlier generations (at most 25 in all; see `olderAttempts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "exactly_sized")]
    pub attempts: Vec<Attempt>,
    /// How many attempts of earlier generations were dropped from `attempts` (the oldest first,
    /// only once their Jobs were gone), so the status stays small whatever the spec's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_attempts: Option<i32>,
    /// When the next attempt starts, while backing off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    /// When the first attempt of the current generation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run of the current generation reached `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Summary the worker reported through its container termination message.
    // Boxed: see `RunControls::pod_overrides`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<R>>,
    /// The race days the run covers, as `kubectl get` shows them: `YYYY-MM-DD` or
    /// `YYYY-MM-DD..YYYY-MM-DD` (a `KraJob`'s date or range, on a schedule its newest run's window;
    /// an `EvaluationRun`'s dataset range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 22))]
    pub dates: Option<String>,
}

/// A list decoded without room to spare. JSON does not say how long a list is, so a decoded
/// `Vec` grows by doubling: six conditions would take eight places, one attempt four (about
/// 900 bytes spare per run, kept for as long as the run is in the operator's cache).
pub(crate) fn exactly_sized<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let mut list = Vec::<T>::deserialize(deserializer)?;
    list.shrink_to_fit();
    Ok(list)
}

// Written out so that `R` needs no `Default`.
impl<R> Default for RunStatus<R> {
    fn default() -> Self {
        Self {
            phase: None,
            observed_generation: None,
            conditions: Vec::new(),
            attempts: Vec::new(),
            older_attempts: None,
            next_attempt_at: None,
            start_time: None,
            completion_time: None,
            result: None,
            dates: None,
        }
    }
}
