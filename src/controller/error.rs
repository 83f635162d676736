//! One error type for the reconcile steps. Each variant names the step that failed and the
//! object it concerns; `category()` is the bounded label used in metrics.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {what} for {object}: {source}")]
    Read { what: &'static str, object: String, source: kube::Error },
    #[error("failed to create Job {job} for {object}: {source}")]
    CreateJob { job: String, object: String, source: kube::Error },
    #[error("failed to adopt Job {job} for {object}: a Job of that name exists and belongs to something else")]
    ForeignJob { job: String, object: String },
    #[error("failed to set suspend of Job {job} for {object}: {source}")]
    SuspendJob { job: String, object: String, source: kube::Error },
    #[error("failed to delete finished Job {job} for {object}: {source}")]
    DeleteJob { job: String, object: String, source: kube::Error },
    #[error("failed to create the scheduled run {run} of {object}: {source}")]
    CreateRun { run: String, object: String, source: kube::Error },
    #[error(
        "failed to adopt the scheduled run {run} of {object}: a KraJob of that name exists and belongs to something else"
    )]
    ForeignRun { run: String, object: String },
    #[error("failed to delete the scheduled run {run} of {object}: {source}")]
    DeleteRun { run: String, object: String, source: kube::Error },
    #[error("failed to write status of {object}: {source}")]
    WriteStatus { object: String, source: kube::Error },
    #[error("failed to reconcile {object}: metadata.{field} is missing")]
    MissingMetadata { object: String, field: &'static str },
}

impl Error {
    /// A fixed, bounded category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::CreateJob { .. } => "create_job",
            Error::ForeignJob { .. } => "foreign_job",
            Error::SuspendJob { .. } => "suspend_job",
            Error::DeleteJob { .. } => "delete_job",
            Error::CreateRun { .. } => "create_run",
            Error::ForeignRun { .. } => "foreign_run",
            Error::DeleteRun { .. } => "delete_run",
            Error::WriteStatus { source, .. } if is_conflict(source) => "status_conflict",
            Error::WriteStatus { .. } => "write_status",
            Error::MissingMetadata { .. } => "missing_metadata",
        }
    }

    /// The stall reason of an error no retry can fix: a child of the run's name that belongs to
    /// something else, metadata that is missing. The run stalls with a condition naming it and is
    /// looked at again at the next resync or change, instead of retrying with backoff forever.
    pub fn stall_reason(&self) -> Option<&'static str> {
        match self {
            Error::ForeignJob { .. } | Error::ForeignRun { .. } => Some(super::reasons::FOREIGN_CHILD),
            Error::MissingMetadata { .. } => Some(super::reasons::MISSING_METADATA),
            _ => None,
        }
    }

    /// How long to wait before retrying after this error, given how many times in a row the
    /// object failed. Conflicts retry soon; everything else backs off exponentially to 5 min.
    pub fn retry_after(&self, consecutive_failures: u32) -> Duration {
        let base: u64 = match self {
            Error::WriteStatus { source, .. } if is_conflict(source) => 1,
            _ => 2,
        };
        let secs = base.saturating_mul(1u64 << consecutive_failures.min(8));
        Duration::from_secs(secs.min(300))
    }
}

pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
