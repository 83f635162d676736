//! The read step for a run's Jobs: take them from the controller's Job cache (checking on the API
//! server any running attempt the cache does not hold, since it may lag behind), map each to a
//! [`JobState`], and read the worker's result summary from the pod's termination message once a
//! Job has finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Api;
use kube::api::ListParams;
use serde::de::DeserializeOwned;

use super::build::{LABEL_ATTEMPT, LABEL_GENERATION, LABEL_JOB, LABEL_OWNER_UID};
use super::decode::{CachedJob, WorkerPod};
use super::error::Error;
use super::plan::{JobState, ObservedJob};
use crate::crd::{AttemptOutcome, RunStatus};

/// Largest termination message the kubelet keeps; anything longer was cut and is not JSON.
const MAX_SUMMARY_BYTES: usize = 4096;

/// The state of a Job from its spec and status. Only the terminal `Complete` and `Failed`
/// conditions count (the cache keeps the first that is `True`): `SuccessCriteriaMet` and
/// `FailureTarget` come before the pods are gone.
pub fn job_state(job: &CachedJob) -> JobState {
    if let Some(finished) = &job.finished {
        let at = finished.at.or(job.completion_time).unwrap_or_else(Timestamp::now);
        return match finished.succeeded {
            true => JobState::Succeeded { at },
            false => JobState::Failed {
                at,
                reason: finished.reason.clone().unwrap_or_else(|| "JobFailed".into()),
                message: finished.message.clone().unwrap_or_default(),
            },
        };
    }
    if job.suspended { JobState::Suspended } else { JobState::Active }
}

/// Parse a worker's termination message into its result summary.
pub fn parse_summary<R: DeserializeOwned>(message: &str) -> Option<Result<R, String>> {
    let message = message.trim();
    if message.is_empty() {
        return None;
    }
    if message.len() >= MAX_SUMMARY_BYTES {
        return Some(Err(format!("termination message of {} bytes was truncated", message.len())));
    }
    // The text may be a log tail (FallbackToLogsOnError): never copy it into status.
    Some(serde_json::from_str(message).map_err(|e| {
        format!("termination message ({} bytes) is not a JSON result summary: {}", message.len(), e.classify_name())
    }))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "io error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected fields or types",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// How long a finished Job waits for the Pod watch to show its worker terminated before its Pods
/// are listed on the API server (the Pod was deleted, or the watch is far behind).
pub const POD_WATCH_GRACE: Duration = Duration::from_secs(5);

/// How soon a finished Job whose worker the Pod cache does not show terminated yet is looked at again.
pub const POD_WATCH_RECHECK: Duration = Duration::from_millis(500);

/// What a reconcile found missing from a watch cache and waits for, and since when (the
/// operator's monotonic clock: no skew with the API server's can stretch a wait): a finished
/// Job's terminated worker Pod (by Job uid), a just-created attempt's Job (by owner and name).
#[derive(Default)]
pub struct CacheWaits(Mutex<HashMap<String, Instant>>);

impl CacheWaits {
    /// How long the Job has waited for its Pod, counting from the first time it was asked.
    fn waited(&self, job_uid: &str, now: Instant) -> Duration {
        let mut waits = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // A Job deleted while it waited leaves an entry: forget those long past the grace.
        waits.retain(|_, since| now.duration_since(*since) < POD_WATCH_GRACE * 60);
        now.duration_since(*waits.entry(job_uid.to_string()).or_insert(now))
    }

    fn done(&self, job_uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(job_uid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Where observations come from: the API (for what a cache does not hold yet) and the worker
/// Pod cache.
pub struct Sources<'a> {
    pub jobs: &'a Api<CachedJob>,
    pub pods: &'a Api<WorkerPod>,
    pub pod_cache: &'a super::stores::OwnedCache<WorkerPod>,
    pub cache_waits: &'a CacheWaits,
}

/// The run's Jobs as observed, and when to look again if a finished Job's worker Pod is not in
/// the Pod cache yet (that Job is reported still active until then).
pub struct Observation<R> {
    pub jobs: Vec<ObservedJob<R>>,
    pub recheck_after: Option<Duration>,
}

/// What the termination of a finished Job's worker says, or that the Pod cache does not show it yet.
enum Summary<R> {
    Read { exit_code: Option<i32>, summary: Option<Result<R, String>> },
    NotInCacheYet,
}

/// The exit code and termination message of a Job's newest worker Pod, if its container has
/// terminated.
pub(super) fn termination<'p>(pods: impl Iterator<Item = &'p WorkerPod>) -> Option<(i32, String)> {
    let newest = pods.max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let terminated = newest.terminated.as_ref()?;
    Some((terminated.exit_code, terminated.message.clone().unwrap_or_default()))
}

/// The exit code and result summary of a finished Job: from the Pod cache when it shows the
/// worker terminated. The Pod watch may lag behind the Job's: for up to [`POD_WATCH_GRACE`] the
/// answer is to look again; after that the Job's Pods are listed on the API server once.
async fn read_summary<R: DeserializeOwned>(
    sources: &Sources<'_>,
    job: &str,
    job_uid: &str,
    object: &str,
) -> Result<Summary<R>, Error> {
    let cached = sources.pod_cache.labelled(&[(LABEL_JOB, job)]);
    let terminated = match termination(cached.iter().map(|pod| pod.as_ref())) {
        Some(terminated) => Some(terminated),
        None if sources.cache_waits.waited(job_uid, Instant::now()) < POD_WATCH_GRACE => {
            return Ok(Summary::NotInCacheYet);
        }
        None => {
            tracing::debug!(object, job, "the pod watch shows no terminated worker: listing the job's pods");
            let list = sources
                .pods
                .list(&ListParams::default().labels(&format!("{LABEL_JOB}={job}")))
                .await
                .map_err(|source| Error::Read { what: "worker pods", object: object.to_string(), source })?;
            termination(list.items.iter())
        }
    };
    sources.cache_waits.done(job_uid);
    let exit_code = terminated.as_ref().map(|(code, _)| *code);
    let summary = terminated.map(|(_, m)| m).filter(|m| !m.is_empty()).and_then(|m| parse_summary(&m));
    Ok(Summary::Read { exit_code, summary })
}

/// Look up the Jobs of running attempts that the cache does not hold (adding those found to
/// `items`), except those that may just not be in it yet: a Job created by the last reconcile is
/// taken as active (its creation event wakes the run) for up to the grace, and only then looked
/// up. Returns the attempts still waiting.
async fn running_jobs_missing_from_cache(
    sources: &Sources<'_>,
    items: &mut Vec<CachedJob>,
    running: &[i32],
    owner_uid: &str,
    job_name: &(dyn Fn(i32) -> String + Sync),
    object: &str,
) -> Result<Vec<i32>, Error> {
    let mut not_in_cache_yet = Vec::new();
    for &number in running {
        let name = job_name(number);
        let key = format!("job:{owner_uid}/{name}");
        if items.iter().any(|job| job.metadata.name.as_deref() == Some(name.as_str())) {
            sources.cache_waits.done(&key);
            continue;
        }
        if sources.cache_waits.waited(&key, Instant::now()) < POD_WATCH_GRACE {
            not_in_cache_yet.push(number);
            continue;
        }
        sources.cache_waits.done(&key);
        let found = sources.jobs.get_opt(&name).await.map_err(|source| Error::Read {
            what: "a Job missing from the cache",
            object: object.to_string(),
            source,
        })?;
        // A Job of that name that is not this run's (no owner label of ours) is not its attempt.
        items.extend(found.filter(|job| job.labels.get(LABEL_OWNER_UID) == Some(owner_uid)));
    }
    Ok(not_in_cache_yet)
}

/// Observe every Job of one run, from the controller's Job cache (`cached`, the Jobs of the run
/// as the watch last saw them). The cache may lag behind a Job just created or deleted: an
/// attempt that status records as running but the cache does not hold is looked up once on the
/// API server, and only a Job the server does not have either comes back as
/// [`JobState::Missing`]. So a stale cache can delay an observation, never invent a deletion.
pub async fn observe<R: DeserializeOwned>(
    sources: &Sources<'_>,
    cached: Vec<Arc<CachedJob>>,
    owner_uid: &str,
    status: Option<&RunStatus<R>>,
    job_name: &(dyn Fn(i32) -> String + Sync),
    object: &str,
) -> Result<Observation<R>, Error> {
    let mut items: Vec<CachedJob> = cached.iter().map(|job| CachedJob::clone(job)).collect();
    let running: Vec<i32> = status
        .map(|s| s.attempts.iter().filter(|a| a.outcome == AttemptOutcome::Running).map(|a| a.number).collect())
        .unwrap_or_default();
    let not_in_cache_yet =
        running_jobs_missing_from_cache(sources, &mut items, &running, owner_uid, job_name, object).await?;
    let recorded_running = |number: i32| {
        status.is_some_and(|s| s.attempts.iter().any(|a| a.number == number && a.outcome == AttemptOutcome::Running))
    };
    let recorded = |number: i32| status.is_some_and(|s| s.attempts.iter().any(|a| a.number == number));

    let mut observed = Vec::new();
    let mut recheck_after = None;
    for job in &items {
        let number = job.labels.get(LABEL_ATTEMPT).and_then(|v| v.parse::<i32>().ok());
        let generation = job.labels.get(LABEL_GENERATION).and_then(|v| v.parse::<i64>().ok());
        let (Some(attempt), Some(generation), Some(name)) = (number, generation, job.metadata.name.clone()) else {
            tracing::warn!(object, job = ?job.metadata.name, "ignoring a Job without attempt and generation labels");
            continue;
        };
        let mut state = job_state(job);
        let finished = matches!(state, JobState::Succeeded { .. } | JobState::Failed { .. });
        // Read the summary once: when the outcome is about to be recorded.
        let (mut exit_code, mut summary) = (None, None);
        if finished && (recorded_running(attempt) || !recorded(attempt)) {
            let uid = job.metadata.uid.as_deref().unwrap_or(&name);
            match read_summary(sources, &name, uid, object).await? {
                Summary::Read { exit_code: code, summary: read } => (exit_code, summary) = (code, read),
                // Not recorded without its summary: still active until the Pod watch catches up.
                Summary::NotInCacheYet => {
                    state = JobState::Active;
                    recheck_after = Some(POD_WATCH_RECHECK);
                }
            }
        }
        observed.push(ObservedJob {
            name,
            attempt,
            generation,
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            state,
            summary,
            exit_code,
            request_budget: job.request_budget.as_deref().and_then(|text| serde_json::from_str(text).ok()),
        });
    }
    if let Some(status) = status {
        for attempt in status.attempts.iter().filter(|a| a.outcome == AttemptOutcome::Running) {
            if !observed.iter().any(|j| j.attempt == attempt.number) {
                let waiting = not_in_cache_yet.contains(&attempt.number);
                if waiting {
                    recheck_after = Some(POD_WATCH_RECHECK);
                }
                observed.push(ObservedJob {
                    name: attempt.job_name.clone(),
                    attempt: attempt.number,
                    generation: attempt.generation,
                    created: None,
                    state: if waiting { JobState::Active } else { JobState::Missing },
                    summary: None,
                    request_budget: None,
                    exit_code: None,
                });
            }
        }
    }
    Ok(Observation { jobs: observed, recheck_after })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CollectionSummary;
    use serde_json::json;

    fn job(value: serde_json::Value) -> CachedJob {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_wait_counts_from_its_first_ask_and_ends_when_done() {
        let waits = CacheWaits::default();
        let start = Instant::now();
        assert_eq!(waits.waited("job-a", start), Duration::ZERO);
        assert_eq!(waits.waited("job-a", start + Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(waits.waited("job-b", start + Duration::from_secs(3)), Duration::ZERO, "each Job waits on its own");
        waits.done("job-a");
        assert_eq!(waits.waited("job-a", start + Duration::from_secs(4)), Duration::ZERO, "a done wait starts over");
        // A Job that never came back (deleted while it waited) is forgotten long after the grace.
        waits.done("job-a");
        waits.waited("job-c", start + POD_WATCH_GRACE * 61);
        assert_eq!(waits.len(), 1, "only the new wait is kept");
    }

    #[test]
    fn only_terminal_conditions_finish_a_job() {
        let pending = job(json!({"status": {"conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2025-05-24T01:00:00Z"}]}}));
        assert_eq!(job_state(&pending), JobState::Active);
        let complete = job(json!({"status": {"conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": "2025-05-24T01:00:00Z"}]}}));
        assert_eq!(job_state(&complete), JobState::Succeeded { at: "2025-05-24T01:00:00Z".parse().unwrap() });
        let failed = job(json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline",
             "lastTransitionTime": "2025-05-24T02:00:00Z"}]}}));
        assert!(matches!(job_state(&failed), JobState::Failed { reason, .. } if reason == "DeadlineExceeded"));
        let suspended = job(json!({"spec": {"suspend": true, "template": {}}}));
        assert_eq!(job_state(&suspended), JobState::Suspended);
    }

    #[test]
    fn summaries_parse_or_explain_without_echoing_the_text() {
        let ok: Option<Result<CollectionSummary, String>> = parse_summary(r#"{"racesFound": 9, "apiCalls": 40}"#);
        assert_eq!(ok.unwrap().unwrap().races_found, Some(9));
        assert!(parse_summary::<CollectionSummary>("  ").is_none());
        let secret_log_line = "error: request to https://apis.data.go.kr/...?serviceKey=abc failed";
        let err = parse_summary::<CollectionSummary>(secret_log_line).unwrap().unwrap_err();
        assert!(err.contains("not a JSON result summary") && !err.contains("serviceKey"), "{err}");
        let wrong_type = parse_summary::<CollectionSummary>(r#"{"racesFound": "nine"}"#).unwrap().unwrap_err();
        assert!(wrong_type.contains("unexpected fields or types"), "{wrong_type}");
        let huge = format!("{{\"message\": \"{}\"}}", "x".repeat(5000));
        assert!(parse_summary::<CollectionSummary>(&huge).unwrap().unwrap_err().contains("truncated"));
    }
}
