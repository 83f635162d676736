//! Condition types and the reasons used in conditions and Kubernetes Events. Stable strings:
//! dashboards, alerts and Argo CD health checks match on them.

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
/// Set on an EvaluationRun compared with a baseline run: whether it beats it (the champion gate).
pub const PROMOTED: &str = "Promoted";

pub const INVALID_SPEC: &str = "InvalidSpec";
pub const JOB_CREATED: &str = "JobCreated";
pub const JOB_ADOPTED: &str = "JobAdopted";
pub const JOB_DELETED: &str = "JobDeleted";
pub const JOB_CLEANED_UP: &str = "JobCleanedUp";
pub const ATTEMPT_SUCCEEDED: &str = "AttemptSucceeded";
pub const ATTEMPT_FAILED: &str = "AttemptFailed";
pub const BACKING_OFF: &str = "BackingOff";
pub const RETRY_LIMIT_EXCEEDED: &str = "RetryLimitExceeded";
/// An attempt failed with an exit code no retry can change: the run fails without retrying.
pub const PERMANENT_FAILURE: &str = "PermanentFailure";
/// An attempt stopped because the KRA API key's daily quota is spent: the next attempt waits for
/// the reset (00:00 Asia/Seoul), and the stop does not count against the retry limit.
pub const QUOTA_EXHAUSTED: &str = "QuotaExhausted";
pub const SUSPENDED: &str = "Suspended";
pub const RESUMED: &str = "Resumed";
pub const ATTEMPT_RUNNING: &str = "AttemptRunning";

// Scheduled KraJobs.
pub const SCHEDULED: &str = "Scheduled";
pub const RUN_ACTIVE: &str = "RunActive";
pub const LAST_RUN_FAILED: &str = "LastRunFailed";
pub const RUN_CREATED: &str = "RunCreated";
pub const RUN_SKIPPED: &str = "RunSkipped";
pub const RUN_REPLACED: &str = "RunReplaced";
pub const RUN_PRUNED: &str = "RunPruned";
pub const RUNS_WAITING: &str = "RunsWaiting";
/// A child (Job or scheduled run) of the run's name exists and is not the run's own.
pub const FOREIGN_CHILD: &str = "ForeignChild";
/// The object lacks metadata every reconcile needs (name, namespace or uid).
pub const MISSING_METADATA: &str = "MissingMetadata";
/// The object does not decode as this build's type (`undecodable.rs`).
pub const UNDECODABLE_OBJECT: &str = "UndecodableObject";
