//! The pure decision step of a reconcile: from what was recorded (status) and what was observed
//! (the run's Jobs), work out the status the run should have and the actions to take.
//!
//! Every timestamp written here is either copied from an observation or is `now` at the moment
//! of a transition, truncated to whole seconds, so planning the same inputs twice gives the same
//! status and an idle operator writes nothing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::ConditionSet;
use super::reasons;
use crate::crd::{Attempt, AttemptOutcome, Phase, RetryPolicy, RunStatus};

/// The spec fields every run kind shares, borrowed from the resource.
#[derive(Clone, Copy, Debug)]
pub struct RunControls<'a> {
    pub retry_policy: &'a RetryPolicy,
    pub suspend: bool,
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The state of one of the run's Jobs, as read from the API.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Active,
    Suspended,
    Succeeded { at: Timestamp },
    Failed { at: Timestamp, reason: String, message: String },
    /// The attempt's Job does not exist (deleted before its outcome was recorded).
    Missing,
}

/// One of the run's Jobs, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob<R> {
    pub name: String,
    pub attempt: i32,
    pub generation: i64,
    pub created: Option<Timestamp>,
    pub state: JobState,
    /// The worker's result summary, read once the Job has finished: `Err` holds why the
    /// termination message could not be read as a summary.
    pub summary: Option<Result<R, String>>,
}

/// Something the apply step must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateJob { attempt: i32 },
    SuspendJob { name: String, suspend: bool },
    DeleteJob { name: String },
}

/// A transition worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub reason: &'static str,
    pub warning: bool,
    pub note: String,
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan<R> {
    pub status: RunStatus<R>,
    pub actions: Vec<Action>,
    pub transitions: Vec<Transition>,
    /// When the run next needs attention without any watch event (backoff end, TTL expiry).
    pub requeue_after: Option<Duration>,
}

/// Inputs of [`plan`].
pub struct PlanInput<'a, R> {
    pub generation: i64,
    pub controls: RunControls<'a>,
    /// `Err` holds the validation problems of the spec.
    pub validity: Result<(), String>,
    pub status: Option<&'a RunStatus<R>>,
    pub jobs: &'a [ObservedJob<R>],
    pub job_name: &'a dyn Fn(i32) -> String,
    pub now: Timestamp,
}

/// The wait before retry `retry` (1-based): `min(initial * factor^(retry-1), max)`.
pub fn backoff_delay(policy: &RetryPolicy, retry: u32) -> SignedDuration {
    let backoff = &policy.backoff;
    let exponent = retry.saturating_sub(1).min(64) as i32;
    let seconds = (backoff.initial_seconds as f64) * backoff.factor.powi(exponent);
    let capped = seconds.min(backoff.max_seconds as f64).max(0.0);
    SignedDuration::from_secs(capped.round() as i64)
}

fn earliest(slot: &mut Option<Duration>, wait: Duration) {
    *slot = Some(slot.map_or(wait, |current| current.min(wait)));
}

fn whole_seconds(ts: Timestamp) -> Timestamp {
    Timestamp::from_second(ts.as_second()).unwrap_or(ts)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let wait = at.duration_since(now);
    Duration::from_secs(wait.as_secs().max(0) as u64 + 1)
}

/// Decide the status and actions of a run.
pub fn plan<R: Clone + PartialEq>(input: PlanInput<'_, R>) -> Plan<R> {
    let now = whole_seconds(input.now);
    let previous = input.status.cloned().unwrap_or_default();
    let mut status = previous.clone();
    let mut transitions = Vec::new();
    let mut actions = Vec::new();
    let mut requeue: Option<Duration> = None;

    merge_observations(&mut status, input.jobs, now, &mut transitions);

    let generation = input.generation;
    status.observed_generation = Some(generation);
    let mut conds = ConditionSet::new(&previous.conditions, generation, now);

    if let Err(problems) = &input.validity {
        status.phase = Some(Phase::Invalid);
        status.next_attempt_at = None;
        conds.invalid(problems);
        if previous.phase != Some(Phase::Invalid) {
            transitions.push(Transition {
                reason: reasons::INVALID_SPEC,
                warning: true,
                note: problems.clone(),
            });
        }
        status.conditions = conds.finish();
        return Plan { status, actions, transitions, requeue_after: requeue };
    }

    let controls = input.controls;
    let current: Vec<&Attempt> = status.attempts.iter().filter(|a| a.generation == generation).collect();
    let active = status.attempts.iter().find(|a| a.outcome == AttemptOutcome::Running).cloned();
    let next_number = status.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
    status.start_time = current.first().and_then(|a| a.start_time.clone());
    status.completion_time = None;
    status.next_attempt_at = None;

    let phase = if let Some(active) = active {
        let job_suspended = input
            .jobs
            .iter()
            .any(|job| job.name == active.job_name && job.state == JobState::Suspended);
        if controls.suspend != job_suspended {
            actions.push(Action::SuspendJob { name: active.job_name.clone(), suspend: controls.suspend });
        }
        if controls.suspend {
            conds.suspended(&format!("attempt {} (Job {}) is suspended", active.number, active.job_name));
            Phase::Suspended
        } else if active.generation != generation {
            conds.running(&format!(
                "attempt {} (Job {}) runs generation {}; generation {} starts when it finishes",
                active.number, active.job_name, active.generation, generation
            ));
            Phase::Running
        } else {
            conds.running(&format!("attempt {} (Job {}) is running", active.number, active.job_name));
            Phase::Running
        }
    } else {
        match current.last().map(|a| (*a).clone()) {
            Some(last) if last.outcome == AttemptOutcome::Succeeded => {
                status.completion_time = last.end_time.clone();
                conds.succeeded(&format!("attempt {} (Job {}) succeeded", last.number, last.job_name));
                Phase::Succeeded
            }
            Some(last) => {
                let failures = current.len() as i32;
                let why = format!(
                    "attempt {} (Job {}) failed: {}",
                    last.number,
                    last.job_name,
                    last.reason.as_deref().unwrap_or("unknown reason")
                );
                if failures > controls.retry_policy.limit {
                    status.completion_time = last.end_time.clone();
                    let message = format!("{why}; retry limit of {} reached", controls.retry_policy.limit);
                    conds.failed(reasons::RETRY_LIMIT_EXCEEDED, &message);
                    if previous.phase != Some(Phase::Failed) {
                        transitions.push(Transition {
                            reason: reasons::RETRY_LIMIT_EXCEEDED,
                            warning: true,
                            note: message,
                        });
                    }
                    Phase::Failed
                } else if controls.suspend {
                    conds.suspended("suspended between attempts");
                    Phase::Suspended
                } else {
                    let ended = last.end_time.as_ref().map(|t| t.0).unwrap_or(now);
                    let next_at = ended + backoff_delay(controls.retry_policy, failures as u32);
                    if now >= next_at {
                        start_attempt(&mut status, &mut actions, &mut conds, next_number, generation, now, input.job_name);
                        Phase::Running
                    } else {
                        status.next_attempt_at = Some(Time(next_at));
                        conds.backing_off(&format!("{why}; attempt {next_number} starts at {next_at}"));
                        if previous.phase != Some(Phase::BackingOff) {
                            transitions.push(Transition {
                                reason: reasons::BACKING_OFF,
                                warning: false,
                                note: format!("{why}; retrying at {next_at}"),
                            });
                        }
                        earliest(&mut requeue, until(now, next_at));
                        Phase::BackingOff
                    }
                }
            }
            None if controls.suspend => {
                conds.suspended("suspended before the first attempt");
                Phase::Suspended
            }
            None => {
                start_attempt(&mut status, &mut actions, &mut conds, next_number, generation, now, input.job_name);
                Phase::Running
            }
        }
    };

    if phase == Phase::Suspended && previous.phase != Some(Phase::Suspended) {
        transitions.push(Transition { reason: reasons::SUSPENDED, warning: false, note: "run suspended".into() });
    }
    if previous.phase == Some(Phase::Suspended) && phase != Phase::Suspended {
        transitions.push(Transition { reason: reasons::RESUMED, warning: false, note: "run resumed".into() });
    }
    status.phase = Some(phase);
    status.start_time = status
        .attempts
        .iter()
        .find(|a| a.generation == generation)
        .and_then(|a| a.start_time.clone());
    status.conditions = conds.finish();

    if let Some(ttl) = controls.ttl_seconds_after_finished {
        for attempt in status.attempts.iter().filter(|a| a.outcome != AttemptOutcome::Running) {
            let exists = input
                .jobs
                .iter()
                .any(|job| job.name == attempt.job_name && job.state != JobState::Missing);
            let Some(ended) = attempt.end_time.as_ref().map(|t| t.0) else { continue };
            if !exists {
                continue;
            }
            let expires = ended + SignedDuration::from_secs(i64::from(ttl));
            if now >= expires {
                actions.push(Action::DeleteJob { name: attempt.job_name.clone() });
            } else {
                earliest(&mut requeue, until(now, expires));
            }
        }
    }

    Plan { status, actions, transitions, requeue_after: requeue }
}

fn start_attempt<R>(
    status: &mut RunStatus<R>,
    actions: &mut Vec<Action>,
    conds: &mut ConditionSet,
    number: i32,
    generation: i64,
    now: Timestamp,
    job_name: &dyn Fn(i32) -> String,
) {
    let name = job_name(number);
    conds.running(&format!("attempt {number} (Job {name}) is starting"));
    status.attempts.push(Attempt {
        number,
        job_name: name,
        generation,
        start_time: Some(Time(now)),
        end_time: None,
        outcome: AttemptOutcome::Running,
        reason: None,
        message: None,
    });
    actions.push(Action::CreateJob { attempt: number });
}

/// Fold what was observed of the Jobs into the recorded attempts: adopt Jobs that status does
/// not know yet, and record the outcome of Jobs that finished or vanished.
fn merge_observations<R: Clone>(
    status: &mut RunStatus<R>,
    jobs: &[ObservedJob<R>],
    now: Timestamp,
    transitions: &mut Vec<Transition>,
) {
    for job in jobs {
        if job.state == JobState::Missing {
            continue;
        }
        if !status.attempts.iter().any(|a| a.number == job.attempt) {
            status.attempts.push(Attempt {
                number: job.attempt,
                job_name: job.name.clone(),
                generation: job.generation,
                start_time: job.created.map(|t| Time(whole_seconds(t))),
                end_time: None,
                outcome: AttemptOutcome::Running,
                reason: None,
                message: None,
            });
            transitions.push(Transition {
                reason: reasons::JOB_ADOPTED,
                warning: false,
                note: format!("adopted Job {} of attempt {}", job.name, job.attempt),
            });
        }
    }
    status.attempts.sort_by_key(|a| a.number);

    for attempt in status.attempts.iter_mut().filter(|a| a.outcome == AttemptOutcome::Running) {
        let Some(job) = jobs.iter().find(|j| j.attempt == attempt.number) else { continue };
        match &job.state {
            JobState::Active | JobState::Suspended => continue,
            JobState::Succeeded { at } => {
                attempt.outcome = AttemptOutcome::Succeeded;
                attempt.end_time = Some(Time(whole_seconds(*at)));
                transitions.push(Transition {
                    reason: reasons::ATTEMPT_SUCCEEDED,
                    warning: false,
                    note: format!("attempt {} (Job {}) succeeded", attempt.number, attempt.job_name),
                });
            }
            JobState::Failed { at, reason, message } => {
                attempt.outcome = AttemptOutcome::Failed;
                attempt.end_time = Some(Time(whole_seconds(*at)));
                attempt.reason = Some(reason.clone());
                attempt.message = Some(message.clone());
                transitions.push(Transition {
                    reason: reasons::ATTEMPT_FAILED,
                    warning: true,
                    note: format!("attempt {} (Job {}) failed: {reason}: {message}", attempt.number, attempt.job_name),
                });
            }
            JobState::Missing => {
                attempt.outcome = AttemptOutcome::Failed;
                // The real end is unknown; the moment it was noticed is the honest upper bound.
                attempt.end_time = Some(Time(now));
                attempt.reason = Some(reasons::JOB_DELETED.to_string());
                attempt.message = Some("the Job was deleted before its outcome was observed".to_string());
                transitions.push(Transition {
                    reason: reasons::JOB_DELETED,
                    warning: true,
                    note: format!("Job {} of attempt {} disappeared before it finished", attempt.job_name, attempt.number),
                });
            }
        }
        match &job.summary {
            Some(Ok(summary)) => status.result = Some(summary.clone()),
            Some(Err(problem)) => {
                let note = format!("result summary unreadable: {problem}");
                attempt.message = Some(match attempt.message.take() {
                    Some(existing) => format!("{existing}; {note}"),
                    None => note,
                });
            }
            None => {}
        }
    }
}
