//! The pure decision step of a reconcile: from what was recorded (status) and what was observed
//! (the run's Jobs), work out the status the run should have and the actions to take.
//!
//! Every timestamp written here is either copied from an observation or is `now` at the moment
//! of a transition, truncated to whole seconds, so planning the same inputs twice gives the same
//! status and an idle operator writes nothing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{ConditionSet, ResultConditions, bounded};
use super::reasons;
use crate::crd::{Attempt, AttemptOutcome, Phase, RequestGrant, RetryPolicy, RunControls, RunStatus};

/// The state of one of the run's Jobs, as read from the API.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    Active,
    Suspended,
    Succeeded {
        at: Timestamp,
    },
    Failed {
        at: Timestamp,
        reason: String,
        message: String,
    },
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
    /// The request grant the Job was created with (its `kra.dev/request-budget` annotation).
    pub request_budget: Option<RequestGrant>,
    /// Exit code of the worker container, read with the summary once the Job has finished.
    pub exit_code: Option<i32>,
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
    pub controls: &'a RunControls,
    /// `Err` holds the validation problems of the spec.
    pub validity: Result<(), String>,
    pub status: Option<&'a RunStatus<R>>,
    pub jobs: &'a [ObservedJob<R>],
    pub job_name: &'a dyn Fn(i32) -> String,
    /// Worker exit codes no retry can change, with their meaning (`RunKind::PERMANENT_EXIT_CODES`).
    pub permanent_exit_codes: &'a [(i32, &'static str)],
    /// Worker exit codes of a spent daily quota (`RunKind::QUOTA_EXIT_CODES`).
    pub quota_exit_codes: &'a [(i32, &'static str)],
    pub now: Timestamp,
    /// Whether a new attempt may start now: the shared request budget's answer (KraJobs), or
    /// always for kinds without one.
    pub permit: Permit,
}

/// The request budget's answer for a new attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Permit {
    /// Start, with this grant recorded in the attempt (None: the kind has no budget).
    Granted(Option<RequestGrant>),
    /// Wait: the budget has no room yet.
    Wait(super::budget::Wait),
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

/// Decide the status and actions of a run: fold in what was observed, then the phase (an
/// active attempt, or what follows the last one), the conditions, and the cleanup of finished
/// Jobs.
pub fn plan<R: Clone + PartialEq + ResultConditions>(input: PlanInput<'_, R>) -> Plan<R> {
    let now = whole_seconds(input.now);
    let previous = input.status.cloned().unwrap_or_default();
    let mut planner = Planner {
        status: previous.clone(),
        previous: &previous,
        conds: ConditionSet::new(&previous.conditions, input.generation, now),
        actions: Vec::new(),
        transitions: Vec::new(),
        requeue: None,
        now,
        input: &input,
    };
    let classes = ExitClasses { permanent: input.permanent_exit_codes, quota: input.quota_exit_codes };
    merge_observations(&mut planner.status, input.jobs, classes, now, &mut planner.transitions);
    planner.status.observed_generation = Some(input.generation);
    if let Err(problems) = &input.validity {
        planner.invalid(problems);
        return planner.finish();
    }
    planner.status.completion_time = None;
    planner.status.next_attempt_at = None;
    let phase = match planner.status.attempts.iter().find(|a| a.outcome == AttemptOutcome::Running).cloned() {
        Some(active) => planner.active(&active),
        None => planner.between_attempts(),
    };
    planner.enter(phase);
    planner.clean_up_finished_jobs();
    planner.drop_old_attempts();
    planner.finish()
}

/// The most attempts kept in status. A generation has at most `retryPolicy.limit + 1` (21)
/// failures, so the current generation always fits; older generations make room.
pub const MAX_ATTEMPTS_KEPT: usize = 25;

/// The state of one planning: the status being decided and what it makes to happen.
struct Planner<'a, 'p, R> {
    status: RunStatus<R>,
    previous: &'p RunStatus<R>,
    conds: ConditionSet<'p>,
    actions: Vec<Action>,
    transitions: Vec<Transition>,
    requeue: Option<Duration>,
    now: Timestamp,
    input: &'a PlanInput<'a, R>,
}

impl<R: Clone + PartialEq + ResultConditions> Planner<'_, '_, R> {
    fn finish(self) -> Plan<R> {
        let mut status = self.status;
        status.conditions = self.conds.finish();
        Plan { status, actions: self.actions, transitions: self.transitions, requeue_after: self.requeue }
    }

    fn transition(&mut self, reason: &'static str, warning: bool, note: String) {
        self.transitions.push(Transition { reason, warning, note });
    }

    fn invalid(&mut self, problems: &str) {
        self.status.phase = Some(Phase::Invalid);
        self.status.next_attempt_at = None;
        self.conds.invalid(problems);
        if self.previous.phase != Some(Phase::Invalid) {
            self.transition(reasons::INVALID_SPEC, true, problems.to_string());
        }
    }

    /// The phase while an attempt's Job exists: running, suspended, or waiting for Kueue.
    fn active(&mut self, active: &Attempt) -> Phase {
        let controls = self.input.controls;
        let generation = self.input.generation;
        let job_suspended =
            self.input.jobs.iter().any(|job| job.name == active.job_name && job.state == JobState::Suspended);
        // With a Kueue queue, the Job's suspend belongs to Kueue (admission, preemption).
        let kueue = controls.queue.as_ref();
        if kueue.is_none() && controls.suspend != job_suspended {
            self.actions.push(Action::SuspendJob { name: active.job_name.clone(), suspend: controls.suspend });
        }
        let attempt = format!("attempt {} (Job {})", active.number, active.job_name);
        if let Some(queue) = kueue.filter(|_| controls.suspend || job_suspended) {
            if controls.suspend {
                self.conds
                    .suspended(&format!("{attempt} is left to Kueue queue {}; no new attempt starts", queue.name));
                Phase::Suspended
            } else {
                self.conds.running(&format!("{attempt} waits for admission by Kueue queue {}", queue.name));
                Phase::Pending
            }
        } else if controls.suspend {
            self.conds.suspended(&format!("{attempt} is suspended"));
            Phase::Suspended
        } else if active.generation != generation {
            self.conds.running(&format!(
                "{attempt} runs generation {}; generation {generation} starts when it finishes",
                active.generation
            ));
            Phase::Running
        } else {
            self.conds.running(&format!("{attempt} is running"));
            Phase::Running
        }
    }

    /// The phase with no attempt running: succeeded, failed for good, suspended, backing off,
    /// or the next attempt starts.
    fn between_attempts(&mut self) -> Phase {
        let controls = self.input.controls;
        let generation = self.input.generation;
        let current: Vec<Attempt> =
            self.status.attempts.iter().filter(|a| a.generation == generation).cloned().collect();
        let Some(last) = current.last() else {
            if controls.suspend {
                self.conds.suspended("suspended before the first attempt");
                return Phase::Suspended;
            }
            return self.start_next();
        };
        let attempt = format!("attempt {} (Job {})", last.number, last.job_name);
        if last.outcome == AttemptOutcome::Succeeded {
            self.status.completion_time = last.end_time.clone();
            self.conds.succeeded(&format!("{attempt} succeeded"));
            return Phase::Succeeded;
        }
        // A stop for a spent daily quota is no failure of the work: it does not count.
        let quota_stop = |a: &Attempt| a.reason.as_deref() == Some(reasons::QUOTA_EXHAUSTED);
        let failures = current.iter().filter(|a| !quota_stop(a)).count() as i32;
        if quota_stop(last) {
            return self.wait_for_quota(last, &attempt);
        }
        let why = format!("{attempt} failed: {}", last.reason.as_deref().unwrap_or("unknown reason"));
        if last.reason.as_deref() == Some(reasons::PERMANENT_FAILURE) {
            let what = last.message.as_deref().unwrap_or("a permanent failure");
            let message = format!("{attempt} failed: {what}; not retried: no retry can change this outcome");
            return self.failed_for_good(last, reasons::PERMANENT_FAILURE, message);
        }
        if failures > controls.retry_policy.limit {
            let message = format!("{why}; retry limit of {} reached", controls.retry_policy.limit);
            return self.failed_for_good(last, reasons::RETRY_LIMIT_EXCEEDED, message);
        }
        if controls.suspend {
            self.conds.suspended("suspended between attempts");
            return Phase::Suspended;
        }
        let ended = last.end_time.as_ref().map(|t| t.0).unwrap_or(self.now);
        let next_at = ended + backoff_delay(&controls.retry_policy, failures as u32);
        if self.now >= next_at {
            return self.start_next();
        }
        self.back_off_until(next_at, reasons::BACKING_OFF, &why, &format!("at {next_at}"))
    }

    /// Back off until `next_at`: the condition says why and when, the transition (once) too.
    fn back_off_until(&mut self, next_at: Timestamp, reason: &'static str, why: &str, when: &str) -> Phase {
        let next_number = self.next_number();
        self.status.next_attempt_at = Some(Time(next_at));
        self.conds.backing_off(&format!("{why}; attempt {next_number} starts {when}"));
        if self.previous.phase != Some(Phase::BackingOff) {
            self.transition(reason, false, format!("{why}; retrying {when}"));
        }
        earliest(&mut self.requeue, until(self.now, next_at));
        Phase::BackingOff
    }

    /// The last attempt stopped because the key's daily quota is spent: the next one starts when
    /// it resets (00:00 Asia/Seoul), whatever the backoff says.
    fn wait_for_quota(&mut self, last: &Attempt, attempt: &str) -> Phase {
        let ended = last.end_time.as_ref().map(|t| t.0).unwrap_or(self.now);
        let next_at = super::budget::next_kra_midnight(ended);
        if self.input.controls.suspend {
            self.conds.suspended("suspended between attempts");
            return Phase::Suspended;
        }
        if self.now >= next_at {
            return self.start_next();
        }
        let when = format!("when it resets at {}", super::budget::reset_text(next_at, self.now));
        let why = format!("{attempt} stopped: the KRA API key's daily quota is spent");
        self.back_off_until(next_at, reasons::QUOTA_EXHAUSTED, &why, &when)
    }

    /// The run ends `Failed` with this reason: no attempt follows.
    fn failed_for_good(&mut self, last: &Attempt, reason: &'static str, message: String) -> Phase {
        self.status.completion_time = last.end_time.clone();
        self.conds.failed(reason, &message);
        if self.previous.phase != Some(Phase::Failed) {
            self.transition(reason, true, message);
        }
        Phase::Failed
    }

    fn next_number(&self) -> i32 {
        self.status.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1
    }

    fn start_next(&mut self) -> Phase {
        let start = Start {
            number: self.next_number(),
            generation: self.input.generation,
            now: self.now,
            job_name: self.input.job_name,
            permit: &self.input.permit,
        };
        start_attempt(&mut self.status, &mut self.actions, &mut self.conds, &mut self.requeue, start)
    }

    /// Record the phase, its suspend/resume Events, the start time and the result's conditions.
    fn enter(&mut self, phase: Phase) {
        if phase == Phase::Suspended && self.previous.phase != Some(Phase::Suspended) {
            self.transition(reasons::SUSPENDED, false, "run suspended".into());
        }
        if self.previous.phase == Some(Phase::Suspended) && phase != Phase::Suspended {
            self.transition(reasons::RESUMED, false, "run resumed".into());
        }
        let generation = self.input.generation;
        self.status.phase = Some(phase);
        self.status.start_time =
            self.status.attempts.iter().find(|a| a.generation == generation).and_then(|a| a.start_time.clone());
        if let Some(result) = &self.status.result {
            for (type_, value, reason, message) in result.result_conditions() {
                self.conds.extra(type_, value, &reason, &message);
            }
        }
    }

    /// Keep the attempt history bounded: beyond `MAX_ATTEMPTS_KEPT`, drop the oldest attempts of
    /// earlier generations that ended a day ago or more and whose Jobs are gone (a Job still there
    /// is evidence: its attempt stays until it is cleaned up), and count them in `olderAttempts`.
    fn drop_old_attempts(&mut self) {
        let (generation, jobs, now) = (self.input.generation, self.input.jobs, self.now);
        let mut excess = self.status.attempts.len().saturating_sub(MAX_ATTEMPTS_KEPT);
        if excess == 0 {
            return;
        }
        let mut dropped = 0;
        self.status.attempts.retain(|attempt| {
            let job_gone = !jobs.iter().any(|job| job.name == attempt.job_name && job.state != JobState::Missing);
            // A day old at least: the request budget counts the attempts of the KRA day.
            let day_old = attempt.end_time.as_ref().is_some_and(|end| now.duration_since(end.0).as_hours() >= 24);
            let droppable = excess > 0
                && attempt.generation != generation
                && attempt.outcome != AttemptOutcome::Running
                && job_gone
                && day_old;
            if droppable {
                excess -= 1;
                dropped += 1;
            }
            !droppable
        });
        if dropped > 0 {
            self.status.older_attempts = Some(self.status.older_attempts.unwrap_or(0) + dropped);
        }
    }

    /// Delete finished Jobs once their TTL has passed and their outcome is recorded.
    fn clean_up_finished_jobs(&mut self) {
        let Some(ttl) = self.input.controls.ttl_seconds_after_finished else { return };
        let now = self.now;
        for attempt in self.status.attempts.iter().filter(|a| a.outcome != AttemptOutcome::Running) {
            let exists =
                self.input.jobs.iter().any(|job| job.name == attempt.job_name && job.state != JobState::Missing);
            let Some(ended) = attempt.end_time.as_ref().map(|t| t.0) else { continue };
            if !exists {
                continue;
            }
            let expires = ended + SignedDuration::from_secs(i64::from(ttl));
            // Outcome before cleanup: a Job is evidence until the status that was read (so already
            // written) records its attempt's outcome. The reconcile that first sees the finished
            // Job only records it; the next one (the status write's own watch event, or the short
            // requeue) deletes. A crash or a failed write in between loses nothing, reruns nothing.
            let recorded = self
                .previous
                .attempts
                .iter()
                .any(|a| a.number == attempt.number && a.outcome == attempt.outcome && a.end_time.is_some());
            if now < expires {
                earliest(&mut self.requeue, until(now, expires));
            } else if recorded {
                self.actions.push(Action::DeleteJob { name: attempt.job_name.clone() });
            } else {
                earliest(&mut self.requeue, Duration::from_secs(1));
            }
        }
    }
}

struct Start<'a> {
    number: i32,
    generation: i64,
    now: Timestamp,
    job_name: &'a dyn Fn(i32) -> String,
    permit: &'a Permit,
}

/// Start the next attempt, or wait when the request budget has no room for it.
fn start_attempt<R>(
    status: &mut RunStatus<R>,
    actions: &mut Vec<Action>,
    conds: &mut ConditionSet,
    requeue: &mut Option<Duration>,
    start: Start<'_>,
) -> Phase {
    let Start { number, generation, now, job_name, permit } = start;
    let name = job_name(number);
    let grant = match permit {
        Permit::Granted(grant) => grant.clone(),
        Permit::Wait(wait) => {
            conds.waiting(wait.reason, &format!("attempt {number} is {}", wait.message));
            earliest(requeue, wait.retry_after);
            return Phase::Pending;
        }
    };
    conds.running(&format!("attempt {number} (Job {name}) is running"));
    status.attempts.push(Attempt {
        number,
        job_name: name,
        generation,
        start_time: Some(Time(now)),
        end_time: None,
        outcome: AttemptOutcome::Running,
        reason: None,
        message: None,
        exit_code: None,
        request_budget: grant,
    });
    actions.push(Action::CreateJob { attempt: number });
    Phase::Running
}

/// The worker exit codes that are not plain (retried) failures.
#[derive(Clone, Copy)]
struct ExitClasses<'a> {
    permanent: &'a [(i32, &'static str)],
    quota: &'a [(i32, &'static str)],
}

impl ExitClasses<'_> {
    /// The attempt reason of an exit code, the code and what it means; None for a plain failure.
    fn of(&self, exit_code: Option<i32>) -> Option<(&'static str, i32, &'static str)> {
        let code = exit_code?;
        let find = |table: &[(i32, &'static str)]| table.iter().find(|(c, _)| *c == code).map(|(_, why)| *why);
        find(self.permanent)
            .map(|why| (reasons::PERMANENT_FAILURE, code, why))
            .or_else(|| find(self.quota).map(|why| (reasons::QUOTA_EXHAUSTED, code, why)))
    }
}

/// Fold what was observed of the Jobs into the recorded attempts: adopt Jobs that status does
/// not know yet, and record the outcome of Jobs that finished or vanished.
fn merge_observations<R: Clone + ResultConditions>(
    status: &mut RunStatus<R>,
    jobs: &[ObservedJob<R>],
    classes: ExitClasses<'_>,
    now: Timestamp,
    transitions: &mut Vec<Transition>,
) {
    adopt_untracked_jobs(status, jobs, transitions);
    record_outcomes(status, jobs, classes, now, transitions);
}

/// An attempt for every observed Job the status does not know yet (created just before a crash).
fn adopt_untracked_jobs<R: Clone + ResultConditions>(
    status: &mut RunStatus<R>,
    jobs: &[ObservedJob<R>],
    transitions: &mut Vec<Transition>,
) {
    for job in jobs {
        if job.state == JobState::Missing {
            continue;
        }
        // A Job of an attempt dropped from the history (older than every kept one) is not new.
        let dropped = status.older_attempts.unwrap_or(0) > 0
            && status.attempts.first().is_some_and(|oldest| job.attempt < oldest.number);
        if !dropped && !status.attempts.iter().any(|a| a.number == job.attempt) {
            status.attempts.push(Attempt {
                number: job.attempt,
                job_name: job.name.clone(),
                generation: job.generation,
                start_time: job.created.map(|t| Time(whole_seconds(t))),
                end_time: None,
                outcome: AttemptOutcome::Running,
                reason: None,
                message: None,
                exit_code: None,
                request_budget: job.request_budget.clone(),
            });
            transitions.push(Transition {
                reason: reasons::JOB_ADOPTED,
                warning: false,
                note: format!("adopted Job {} of attempt {}", job.name, job.attempt),
            });
        }
    }
    status.attempts.sort_by_key(|a| a.number);
}

/// The outcome of every running attempt whose Job finished or disappeared, and its result summary.
fn record_outcomes<R: Clone + ResultConditions>(
    status: &mut RunStatus<R>,
    jobs: &[ObservedJob<R>],
    classes: ExitClasses<'_>,
    now: Timestamp,
    transitions: &mut Vec<Transition>,
) {
    for attempt in status.attempts.iter_mut().filter(|a| a.outcome == AttemptOutcome::Running) {
        let Some(job) = jobs.iter().find(|j| j.attempt == attempt.number) else { continue };
        match &job.state {
            JobState::Active | JobState::Suspended => continue,
            JobState::Succeeded { at } => {
                attempt.outcome = AttemptOutcome::Succeeded;
                attempt.end_time = Some(Time(whole_seconds(*at)));
                attempt.exit_code = job.exit_code;
                transitions.push(Transition {
                    reason: reasons::ATTEMPT_SUCCEEDED,
                    warning: false,
                    note: format!("attempt {} (Job {}) succeeded", attempt.number, attempt.job_name),
                });
            }
            JobState::Failed { at, reason, message } => {
                attempt.outcome = AttemptOutcome::Failed;
                attempt.end_time = Some(Time(whole_seconds(*at)));
                attempt.exit_code = job.exit_code;
                match classes.of(job.exit_code) {
                    Some((class, code, why)) => {
                        attempt.reason = Some(class.to_string());
                        attempt.message =
                            Some(bounded(&format!("the worker exited with code {code} ({why}): {message}")));
                    }
                    None => {
                        attempt.reason = Some(reason.clone());
                        attempt.message = Some(bounded(message));
                    }
                }
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
                    note: format!(
                        "Job {} of attempt {} disappeared before it finished",
                        attempt.job_name, attempt.number
                    ),
                });
            }
        }
        match &job.summary {
            Some(Ok(summary)) => {
                // What the attempt used of its grant: the rest goes back to its key's day.
                if let (Some(grant), Some(used)) = (attempt.request_budget.as_mut(), summary.requests_used()) {
                    grant.used = Some(used.clamp(0, grant.requests));
                }
                status.result = Some(Box::new(summary.clone()));
            }
            Some(Err(problem)) => {
                let note = format!("result summary unreadable: {problem}");
                attempt.message = Some(bounded(&match attempt.message.take() {
                    Some(existing) => format!("{existing}; {note}"),
                    None => note,
                }));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Backoff;

    type Summary = u32;

    /// A test summary is the number of KRA API requests the attempt reports.
    impl ResultConditions for u32 {
        fn requests_used(&self) -> Option<i64> {
            Some(i64::from(*self))
        }
    }

    fn ts(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + seconds).unwrap()
    }

    fn policy(limit: i32, initial: i64, factor: f64, max: i64) -> RetryPolicy {
        RetryPolicy { limit, backoff: Backoff { initial_seconds: initial, factor, max_seconds: max } }
    }

    fn name(attempt: i32) -> String {
        format!("run-{attempt}")
    }

    fn job(attempt: i32, generation: i64, state: JobState) -> ObservedJob<Summary> {
        ObservedJob {
            name: name(attempt),
            attempt,
            generation,
            created: Some(ts(0)),
            state,
            summary: None,
            request_budget: None,
            exit_code: None,
        }
    }

    /// What the tests treat as permanent: exit code 2.
    const PERMANENT: &[(i32, &str)] = &[(2, "a usage or configuration error")];
    /// What the tests treat as a spent daily quota: exit code 6.
    const QUOTA: &[(i32, &str)] = &[(6, "the KRA API key's daily quota is spent")];

    struct Case {
        generation: i64,
        policy: RetryPolicy,
        suspend: bool,
        ttl: Option<i32>,
        validity: Result<(), String>,
        queue: Option<crate::crd::QueueRef>,
        permit: Permit,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                generation: 1,
                policy: policy(2, 10, 2.0, 100),
                suspend: false,
                ttl: None,
                validity: Ok(()),
                queue: None,
                permit: Permit::Granted(None),
            }
        }
    }

    impl Case {
        fn plan(
            &self,
            status: Option<&RunStatus<Summary>>,
            jobs: &[ObservedJob<Summary>],
            now: Timestamp,
        ) -> Plan<Summary> {
            plan(PlanInput {
                generation: self.generation,
                controls: &RunControls {
                    retry_policy: self.policy.clone(),
                    suspend: self.suspend,
                    ttl_seconds_after_finished: self.ttl,
                    queue: self.queue.clone(),
                    ..Default::default()
                },
                validity: self.validity.clone(),
                status,
                jobs,
                job_name: &name,
                permanent_exit_codes: PERMANENT,
                quota_exit_codes: QUOTA,
                now,
                permit: self.permit.clone(),
            })
        }
    }

    fn condition<'a>(status: &'a RunStatus<Summary>, type_: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn backoff_grows_by_the_factor_and_stops_at_the_cap() {
        let p = policy(5, 10, 2.0, 60);
        let waits: Vec<i64> = (1..=5).map(|n| backoff_delay(&p, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert_eq!(backoff_delay(&policy(1, 7, 1.0, 7), 3).as_secs(), 7);
        assert_eq!(backoff_delay(&policy(30, 1, 10.0, 86400), 30).as_secs(), 86400, "no overflow");
    }

    #[test]
    fn a_new_run_starts_attempt_one() {
        let plan = Case::default().plan(None, &[], ts(5));
        assert_eq!(plan.actions, [Action::CreateJob { attempt: 1 }]);
        let status = &plan.status;
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(status.attempts[0].job_name, "run-1");
        assert_eq!(status.attempts[0].start_time, Some(Time(ts(5))));
        assert_eq!(status.start_time, Some(Time(ts(5))));
        assert_eq!(condition(status, "Reconciling"), ("True", reasons::ATTEMPT_RUNNING));
        assert_eq!(condition(status, "Ready").0, "False");
    }

    #[test]
    fn planning_is_idempotent_so_an_idle_run_writes_nothing() {
        let case = Case::default();
        let first = case.plan(None, &[], ts(5));
        let jobs = [job(1, 1, JobState::Active)];
        let second = case.plan(Some(&first.status), &jobs, ts(50));
        assert_eq!(second.status, first.status, "nothing changed, so the status must not either");
        assert!(second.actions.is_empty() && second.transitions.is_empty());
        let third = case.plan(Some(&second.status), &jobs, ts(500));
        assert_eq!(third.status, first.status);
    }

    #[test]
    fn a_job_unknown_to_status_is_adopted_instead_of_created_again() {
        let jobs = [job(1, 1, JobState::Active)];
        let plan = Case::default().plan(None, &jobs, ts(5));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert_eq!(plan.status.attempts.len(), 1);
        assert_eq!(plan.status.attempts[0].start_time, Some(Time(ts(0))), "start comes from the Job");
        assert!(plan.transitions.iter().any(|t| t.reason == reasons::JOB_ADOPTED));
    }

    #[test]
    fn a_failure_waits_for_the_backoff_from_its_end_time() {
        let case = Case::default();
        let running = case.plan(None, &[], ts(0)).status;
        let failed = [job(
            1,
            1,
            JobState::Failed { at: ts(100), reason: "DeadlineExceeded".into(), message: "too slow".into() },
        )];
        let plan = case.plan(Some(&running), &failed, ts(101));
        assert_eq!(plan.status.phase, Some(Phase::BackingOff));
        assert_eq!(plan.status.next_attempt_at, Some(Time(ts(110))));
        assert_eq!(plan.requeue_after, Some(Duration::from_secs(10)));
        assert!(plan.actions.is_empty());
        let attempt = &plan.status.attempts[0];
        assert_eq!((attempt.outcome, attempt.reason.as_deref()), (AttemptOutcome::Failed, Some("DeadlineExceeded")));
        assert_eq!(condition(&plan.status, "Reconciling"), ("True", reasons::BACKING_OFF));

        // Planned again later (say after a restart), the wait is the same, then the retry starts.
        let again = case.plan(Some(&plan.status), &failed, ts(105));
        assert_eq!(again.status.next_attempt_at, Some(Time(ts(110))));
        assert!(again.actions.is_empty());
        let due = case.plan(Some(&plan.status), &failed, ts(110));
        assert_eq!(due.actions, [Action::CreateJob { attempt: 2 }]);
        assert_eq!(due.status.next_attempt_at, None);
    }

    #[test]
    fn the_second_retry_waits_longer() {
        let case = Case::default();
        let mut status = case.plan(None, &[], ts(0)).status;
        let mut jobs = vec![job(
            1,
            1,
            JobState::Failed { at: ts(10), reason: "BackoffLimitExceeded".into(), message: String::new() },
        )];
        status = case.plan(Some(&status), &jobs, ts(20)).status;
        assert_eq!(status.attempts.len(), 2);
        jobs.push(job(
            2,
            1,
            JobState::Failed { at: ts(30), reason: "BackoffLimitExceeded".into(), message: String::new() },
        ));
        let plan = case.plan(Some(&status), &jobs, ts(31));
        assert_eq!(plan.status.next_attempt_at, Some(Time(ts(50))), "10 s then 20 s");
    }

    #[test]
    fn the_retry_limit_ends_in_failed_and_stalled() {
        let case = Case { policy: policy(1, 1, 1.0, 1), ..Default::default() };
        let mut status = case.plan(None, &[], ts(0)).status;
        let fail = |n, at| {
            job(n, 1, JobState::Failed { at: ts(at), reason: "BackoffLimitExceeded".into(), message: String::new() })
        };
        status = case.plan(Some(&status), &[fail(1, 1)], ts(5)).status;
        let plan = case.plan(Some(&status), &[fail(1, 1), fail(2, 6)], ts(7));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.phase, Some(Phase::Failed));
        assert_eq!(condition(&plan.status, "Stalled"), ("True", reasons::RETRY_LIMIT_EXCEEDED));
        assert_eq!(condition(&plan.status, "Failed"), ("True", reasons::RETRY_LIMIT_EXCEEDED));
        assert_eq!(condition(&plan.status, "Reconciling").0, "False");
        assert_eq!(plan.status.completion_time, Some(Time(ts(6))));
        assert!(plan.transitions.iter().any(|t| t.reason == reasons::RETRY_LIMIT_EXCEEDED && t.warning));
    }

    #[test]
    fn a_permanent_exit_code_fails_the_run_at_once_and_any_other_is_retried() {
        let case = Case { policy: policy(3, 1, 1.0, 1), ..Default::default() };
        let started = case.plan(None, &[], ts(0)).status;
        let failed = |code| {
            let mut job =
                job(1, 1, JobState::Failed { at: ts(1), reason: "BackoffLimitExceeded".into(), message: "x".into() });
            job.exit_code = Some(code);
            job
        };

        let plan = case.plan(Some(&started), &[failed(2)], ts(2));
        assert_eq!(plan.status.phase, Some(Phase::Failed), "three retries left, none taken");
        assert!(plan.actions.is_empty());
        assert_eq!(condition(&plan.status, "Failed"), ("True", reasons::PERMANENT_FAILURE));
        let attempt = &plan.status.attempts[0];
        assert_eq!((attempt.exit_code, attempt.reason.as_deref()), (Some(2), Some(reasons::PERMANENT_FAILURE)));
        assert!(attempt.message.as_deref().unwrap().contains("exited with code 2 (a usage or configuration error)"));
        assert!(plan.transitions.iter().any(|t| t.reason == reasons::PERMANENT_FAILURE && t.warning));
        let condition_failed = plan.status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
        assert!(condition_failed.message.contains("exited with code 2"), "{}", condition_failed.message);

        let plan = case.plan(Some(&started), &[failed(1)], ts(2));
        assert_eq!(plan.status.phase, Some(Phase::Running), "exit code 1 is retried: attempt 2 starts");
        assert_eq!(plan.status.attempts[0].exit_code, Some(1));
        assert_eq!(plan.status.attempts[0].reason.as_deref(), Some("BackoffLimitExceeded"));
    }

    #[test]
    fn a_spent_quota_waits_for_the_kra_midnight_and_does_not_count_against_the_limit() {
        // One retry allowed: were quota stops failures, the second would fail the run.
        let case = Case { policy: policy(1, 1, 1.0, 1), ..Default::default() };
        let quota_stop = |n: i32, at: i64| {
            let mut job =
                job(n, 1, JobState::Failed { at: ts(at), reason: "BackoffLimitExceeded".into(), message: "x".into() });
            job.exit_code = Some(6);
            job
        };
        // ts(0) is 2025-06-16 00:06:40 in Seoul: the quota resets at the next KRA midnight.
        let reset = Timestamp::from_second(1_750_086_000).unwrap();
        assert_eq!(reset.to_string(), "2025-06-16T15:00:00Z");
        let started = case.plan(None, &[], ts(0)).status;
        let waiting = case.plan(Some(&started), &[quota_stop(1, 1)], ts(2));
        assert_eq!(waiting.status.phase, Some(Phase::BackingOff));
        assert_eq!(waiting.status.next_attempt_at, Some(Time(reset)), "not the 1 s backoff");
        assert_eq!(waiting.status.attempts[0].reason.as_deref(), Some(reasons::QUOTA_EXHAUSTED));
        let reconciling = waiting.status.conditions.iter().find(|c| c.type_ == "Reconciling").unwrap();
        assert!(
            reconciling
                .message
                .contains("starts when it resets at 00:00 Asia/Seoul (2025-06-16T15:00:00Z), in 23 h 54 min"),
            "{}",
            reconciling.message
        );
        assert!(waiting.transitions.iter().any(|t| t.reason == reasons::QUOTA_EXHAUSTED));
        assert!(waiting.actions.is_empty());
        assert!(
            case.plan(Some(&waiting.status), &[quota_stop(1, 1)], ts(85_000)).actions.is_empty(),
            "still before the reset"
        );

        let next_day = case.plan(Some(&waiting.status), &[quota_stop(1, 1)], reset);
        assert_eq!(next_day.actions, [Action::CreateJob { attempt: 2 }]);
        let again = case.plan(
            Some(&next_day.status),
            &[quota_stop(1, 1), quota_stop(2, 86_400)],
            reset + SignedDuration::from_hours(1),
        );
        assert_eq!(again.status.phase, Some(Phase::BackingOff), "two quota stops, and the one retry is still unused");
        assert_eq!(again.status.next_attempt_at, Some(Time(reset + SignedDuration::from_hours(24))));
    }

    #[test]
    fn the_attempt_history_is_capped_by_dropping_old_generations_whose_jobs_are_gone() {
        // 30 finished attempts of earlier generations, more than a day ago (their Jobs gone, but
        // for attempt 3's), then a new generation starts its first attempt.
        let case = Case { generation: 31, ..Default::default() };
        let mut status = case.plan(None, &[], ts(0)).status;
        status.attempts = (1..=30)
            .map(|n| Attempt {
                number: n,
                job_name: name(n),
                generation: i64::from(n),
                start_time: Some(Time(ts(i64::from(n)))),
                end_time: Some(Time(ts(i64::from(n) + 1))),
                outcome: AttemptOutcome::Succeeded,
                reason: None,
                message: Some("x".repeat(1000)),
                exit_code: Some(0),
                request_budget: None,
            })
            .collect();
        let kept_job = job(3, 3, JobState::Succeeded { at: ts(4) });
        let same_day = case.plan(Some(&status), std::slice::from_ref(&kept_job), ts(100));
        assert_eq!(same_day.status.attempts.len(), 31, "the budget still counts today's attempts");
        let plan = case.plan(Some(&status), std::slice::from_ref(&kept_job), ts(100_000));
        assert_eq!(plan.actions, [Action::CreateJob { attempt: 31 }]);
        let numbers: Vec<i32> = plan.status.attempts.iter().map(|a| a.number).collect();
        assert_eq!(plan.status.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(numbers[..3], [3, 8, 9], "attempt 3's Job still exists; 1, 2 and 4-7 are dropped");
        assert_eq!(*numbers.last().unwrap(), 31);
        assert_eq!(plan.status.older_attempts, Some(6));
        // Planned again, nothing more is dropped and a dropped attempt's Job is not adopted again.
        let old_job = job(1, 1, JobState::Succeeded { at: ts(2) });
        let again = case.plan(Some(&plan.status), &[kept_job, old_job], ts(100_001));
        assert_eq!(again.status.attempts, plan.status.attempts);
        assert_eq!(again.status.older_attempts, Some(6));
        assert!(again.actions.is_empty());
    }

    #[test]
    fn success_records_the_summary_and_is_ready() {
        let case = Case::default();
        let status = case.plan(None, &[], ts(0)).status;
        let mut done = job(1, 1, JobState::Succeeded { at: ts(42) });
        done.summary = Some(Ok(7));
        let plan = case.plan(Some(&status), &[done], ts(43));
        assert_eq!(plan.status.phase, Some(Phase::Succeeded));
        assert_eq!(plan.status.result.as_deref(), Some(&7));
        assert_eq!(plan.status.completion_time, Some(Time(ts(42))));
        assert_eq!(condition(&plan.status, "Ready"), ("True", reasons::ATTEMPT_SUCCEEDED));
        assert_eq!(condition(&plan.status, "Stalled").0, "False");
    }

    #[test]
    fn an_unreadable_summary_is_noted_not_copied() {
        let case = Case::default();
        let status = case.plan(None, &[], ts(0)).status;
        let mut done = job(1, 1, JobState::Succeeded { at: ts(42) });
        done.summary = Some(Err("termination message (12 bytes) is not a JSON result summary".into()));
        let plan = case.plan(Some(&status), &[done], ts(43));
        assert_eq!(plan.status.phase, Some(Phase::Succeeded));
        assert_eq!(plan.status.result, None);
        assert!(plan.status.attempts[0].message.as_deref().unwrap().contains("not a JSON result summary"));
    }

    #[test]
    fn a_vanished_job_is_a_failed_attempt() {
        let case = Case::default();
        let status = case.plan(None, &[], ts(0)).status;
        let plan = case.plan(Some(&status), &[job(1, 1, JobState::Missing)], ts(9));
        let attempt = &plan.status.attempts[0];
        assert_eq!((attempt.outcome, attempt.reason.as_deref()), (AttemptOutcome::Failed, Some(reasons::JOB_DELETED)));
        assert_eq!(attempt.end_time, Some(Time(ts(9))));
        assert_eq!(plan.status.phase, Some(Phase::BackingOff));
    }

    #[test]
    fn an_invalid_spec_stalls_and_starts_nothing() {
        let case = Case { validity: Err("date: \"2025-02-30\" is not a calendar date".into()), ..Default::default() };
        let plan = case.plan(None, &[], ts(0));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.requeue_after, None);
        assert_eq!(plan.status.phase, Some(Phase::Invalid));
        assert_eq!(condition(&plan.status, "Stalled"), ("True", reasons::INVALID_SPEC));
        let stalled = plan.status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert!(stalled.message.contains("2025-02-30"));
        assert_eq!(stalled.observed_generation, Some(1));
        // Planned again: same status, and the event is not repeated.
        let again = case.plan(Some(&plan.status), &[], ts(60));
        assert_eq!(again.status, plan.status);
        assert!(again.transitions.is_empty());
    }

    #[test]
    fn a_new_generation_waits_for_the_running_attempt_then_runs() {
        let first = Case::default();
        let status = first.plan(None, &[], ts(0)).status;
        let edited = Case { generation: 2, ..Default::default() };
        let running = [job(1, 1, JobState::Active)];
        let plan = edited.plan(Some(&status), &running, ts(5));
        assert!(plan.actions.is_empty(), "a running Job is never replaced or mutated");
        assert_eq!(plan.status.observed_generation, Some(2));
        assert!(plan.status.conditions[0].message.contains("generation 2 starts when it finishes"));
        let finished = [job(1, 1, JobState::Succeeded { at: ts(8) })];
        let next = edited.plan(Some(&plan.status), &finished, ts(9));
        assert_eq!(next.actions, [Action::CreateJob { attempt: 2 }]);
        assert_eq!(next.status.attempts[1].generation, 2);
        assert_eq!(next.status.start_time, Some(Time(ts(9))), "the run of generation 2 starts now");
    }

    #[test]
    fn a_finished_generation_is_not_run_again() {
        let case = Case::default();
        let status = case.plan(None, &[], ts(0)).status;
        let done = [job(1, 1, JobState::Succeeded { at: ts(3) })];
        let finished = case.plan(Some(&status), &done, ts(4)).status;
        let later = case.plan(Some(&finished), &done, ts(4000));
        assert!(later.actions.is_empty());
        assert_eq!(later.status, finished);
    }

    #[test]
    fn suspend_holds_new_attempts_and_suspends_the_active_job() {
        let held = Case { suspend: true, ..Default::default() };
        let plan = held.plan(None, &[], ts(0));
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.phase, Some(Phase::Suspended));
        assert_eq!(condition(&plan.status, "Reconciling").0, "False");

        let running = Case::default().plan(None, &[], ts(0)).status;
        let plan = held.plan(Some(&running), &[job(1, 1, JobState::Active)], ts(1));
        assert_eq!(plan.actions, [Action::SuspendJob { name: "run-1".into(), suspend: true }]);
        let resumed = Case::default().plan(Some(&plan.status), &[job(1, 1, JobState::Suspended)], ts(2));
        assert_eq!(resumed.actions, [Action::SuspendJob { name: "run-1".into(), suspend: false }]);
        assert!(resumed.transitions.iter().any(|t| t.reason == reasons::RESUMED));
    }

    #[test]
    fn an_attempt_waits_for_the_request_budget_and_records_its_grant() {
        let wait = super::super::budget::Wait {
            reason: "BudgetConcurrency",
            message: "waiting for the KRA API budget of k".into(),
            retry_after: Duration::from_secs(10),
        };
        let waiting = Case { permit: Permit::Wait(wait), ..Default::default() }.plan(None, &[], ts(0));
        assert!(waiting.actions.is_empty());
        assert!(waiting.status.attempts.is_empty(), "no attempt is recorded before it starts");
        assert_eq!(waiting.status.phase, Some(Phase::Pending));
        assert_eq!(condition(&waiting.status, "Reconciling"), ("True", "BudgetConcurrency"));
        assert_eq!(waiting.requeue_after, Some(Duration::from_secs(10)));
        let grant = RequestGrant { day: "2025-05-24".into(), requests: 100, requests_per_second: 2.5, used: None };
        let granted = Case { permit: Permit::Granted(Some(grant.clone())), ..Default::default() };
        let plan = granted.plan(Some(&waiting.status), &[], ts(5));
        assert_eq!(plan.actions, [Action::CreateJob { attempt: 1 }]);
        assert_eq!(plan.status.attempts[0].request_budget, Some(grant.clone()));
        // Finished, it records what it used of the grant (at most the grant): the rest goes back.
        for (reported, recorded) in [(30, 30), (500, 100)] {
            let done = ObservedJob {
                summary: Some(Ok(reported)),
                exit_code: Some(0),
                ..job(1, 1, JobState::Succeeded { at: ts(20) })
            };
            let finished = granted.plan(Some(&plan.status), &[done], ts(21));
            let used = finished.status.attempts[0].request_budget.as_ref().and_then(|g| g.used);
            assert_eq!(used, Some(recorded));
        }
    }

    #[test]
    fn under_kueue_the_jobs_suspend_is_left_to_kueue() {
        let queue = Some(crate::crd::QueueRef { name: "team-a".into(), priority_class: None });
        let queued = Case { queue: queue.clone(), ..Default::default() };
        let created = queued.plan(None, &[], ts(0));
        assert_eq!(created.actions, [Action::CreateJob { attempt: 1 }]);
        // Created suspended, waiting for admission: pending, never unsuspended by the operator.
        let waiting = queued.plan(Some(&created.status), &[job(1, 1, JobState::Suspended)], ts(1));
        assert!(waiting.actions.is_empty(), "{:?}", waiting.actions);
        assert_eq!(waiting.status.phase, Some(Phase::Pending));
        assert!(condition(&waiting.status, "Reconciling").0 == "True");
        let admitted = queued.plan(Some(&waiting.status), &[job(1, 1, JobState::Active)], ts(2));
        assert_eq!(admitted.status.phase, Some(Phase::Running));
        // spec.suspend does not touch a Kueue-managed Job: it only holds new attempts.
        let held = Case { suspend: true, queue, ..Default::default() };
        let plan = held.plan(Some(&admitted.status), &[job(1, 1, JobState::Active)], ts(3));
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert_eq!(plan.status.phase, Some(Phase::Suspended));
        let preempted = held.plan(Some(&plan.status), &[job(1, 1, JobState::Suspended)], ts(4));
        assert!(preempted.actions.is_empty(), "{:?}", preempted.actions);
    }

    #[test]
    fn finished_jobs_are_deleted_after_their_ttl_only() {
        let case = Case { ttl: Some(60), ..Default::default() };
        let status = case.plan(None, &[], ts(0)).status;
        let done = [job(1, 1, JobState::Succeeded { at: ts(10) })];
        let early = case.plan(Some(&status), &done, ts(20));
        assert!(early.actions.is_empty());
        assert_eq!(early.requeue_after, Some(Duration::from_secs(51)));
        let due = case.plan(Some(&early.status), &done, ts(70));
        assert_eq!(due.actions, [Action::DeleteJob { name: "run-1".into() }]);
        // Once it is gone, nothing more to do and the record stays.
        let gone = case.plan(Some(&due.status), &[], ts(80));
        assert!(gone.actions.is_empty());
        assert_eq!(gone.status.phase, Some(Phase::Succeeded));
    }

    #[test]
    fn a_huge_invalid_value_is_echoed_in_bounded_messages_only() {
        let problem = format!("spec.endpoint {} is not a URL", "x".repeat(100_000));
        let case = Case { validity: Err(problem), ..Default::default() };
        let plan = case.plan(None, &[], ts(0));
        assert_eq!(plan.status.phase, Some(Phase::Invalid));
        for condition in &plan.status.conditions {
            assert!(condition.message.len() <= 1024, "{} is {} bytes", condition.type_, condition.message.len());
        }
        let stalled = plan.status.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert!(stalled.message.starts_with("spec.endpoint xxx") && stalled.message.contains("truncated"));
        let status_bytes = serde_json::to_vec(&plan.status).unwrap().len();
        assert!(status_bytes < 16 * 1024, "status of {status_bytes} bytes");
    }

    #[test]
    fn a_finished_job_is_deleted_only_after_a_written_status_records_its_outcome() {
        // TTL 0: due at once. The reconcile that sees the Job finish must not delete it.
        let case = Case { ttl: Some(0), ..Default::default() };
        let running = case.plan(None, &[], ts(0)).status;
        let done = [job(1, 1, JobState::Succeeded { at: ts(10) })];
        let seen = case.plan(Some(&running), &done, ts(10));
        assert!(seen.actions.is_empty(), "deleted before the outcome was written: {:?}", seen.actions);
        assert_eq!(seen.status.attempts[0].outcome, AttemptOutcome::Succeeded);
        assert_eq!(seen.requeue_after, Some(Duration::from_secs(1)), "cleanup comes right after the write");
        // The status write failed (or the operator died): the next reconcile reads the old status
        // again and again records before deleting; the Job is still there.
        let retried = case.plan(Some(&running), &done, ts(11));
        assert!(retried.actions.is_empty());
        // Once the recorded outcome is read back, the Job goes, and nothing is run again.
        let cleaned = case.plan(Some(&seen.status), &done, ts(12));
        assert_eq!(cleaned.actions, [Action::DeleteJob { name: "run-1".into() }]);
        let gone = case.plan(Some(&cleaned.status), &[], ts(13));
        assert!(gone.actions.is_empty(), "{:?}", gone.actions);
        assert_eq!(gone.status.attempts.len(), 1);
        assert_eq!(gone.status.attempts[0].outcome, AttemptOutcome::Succeeded);
    }

    #[test]
    fn condition_times_move_only_on_transitions() {
        let case = Case::default();
        let running = case.plan(None, &[], ts(0)).status;
        let failed = [job(1, 1, JobState::Failed { at: ts(5), reason: "X".into(), message: String::new() })];
        let backing_off = case.plan(Some(&running), &failed, ts(6)).status;
        let ready_before = running.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        let ready_after = backing_off.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready_before.last_transition_time, ready_after.last_transition_time, "Ready stayed False");
        let running_after = backing_off.conditions.iter().find(|c| c.type_ == "Running").unwrap();
        assert_eq!(running_after.last_transition_time, Time(ts(6)), "Running went True -> False");
    }

    /// A run's cluster for fault injection: its Jobs (attempt → generation, state, exit code),
    /// the status stored, and how many Jobs were created for each attempt.
    #[derive(Default)]
    struct Sim {
        jobs: std::collections::BTreeMap<i32, (i64, JobState, Option<i32>)>,
        status: Option<RunStatus<Summary>>,
        created: std::collections::BTreeMap<i32, u32>,
        now: i64,
    }

    impl Sim {
        /// The Job controller: every active Job finishes, attempt 1 failing (exit 1), later ones
        /// succeeding.
        fn tick(&mut self) {
            let now = ts(self.now);
            for (attempt, (_, state, exit)) in self.jobs.iter_mut().filter(|(_, j)| j.1 == JobState::Active) {
                (*state, *exit) = if *attempt == 1 {
                    (
                        JobState::Failed { at: now, reason: "BackoffLimitExceeded".into(), message: String::new() },
                        Some(1),
                    )
                } else {
                    (JobState::Succeeded { at: now }, Some(0))
                };
            }
        }

        /// What the reconcile reads, as `observe::observe_jobs` builds it.
        fn observe(&self) -> Vec<ObservedJob<Summary>> {
            let recorded = |n: i32| self.status.as_ref().and_then(|s| s.attempts.iter().find(|a| a.number == n));
            let mut observed: Vec<ObservedJob<Summary>> = self
                .jobs
                .iter()
                .map(|(&attempt, (generation, state, exit))| {
                    let finished = matches!(state, JobState::Succeeded { .. } | JobState::Failed { .. });
                    let unrecorded = recorded(attempt).is_none_or(|a| a.outcome == AttemptOutcome::Running);
                    let read = finished && unrecorded;
                    ObservedJob {
                        exit_code: exit.filter(|_| read),
                        summary: (read && *exit == Some(0)).then_some(Ok(7)),
                        ..job(attempt, *generation, state.clone())
                    }
                })
                .collect();
            for attempt in self.status.iter().flat_map(|s| &s.attempts) {
                if attempt.outcome == AttemptOutcome::Running && !self.jobs.contains_key(&attempt.number) {
                    observed.push(ObservedJob {
                        created: None,
                        ..job(attempt.number, attempt.generation, JobState::Missing)
                    });
                }
            }
            observed
        }

        /// One reconcile whose steps are its actions, then the status write; `crash_before`
        /// stops it before that step (a killed operator, or a failed write). Returns its steps.
        fn reconcile(&mut self, case: &Case, crash_before: Option<usize>) -> usize {
            let plan = case.plan(self.status.as_ref(), &self.observe(), ts(self.now));
            let steps = plan.actions.len() + 1;
            let done = crash_before.unwrap_or(steps).min(steps);
            for action in plan.actions.iter().take(done) {
                match action {
                    Action::CreateJob { attempt } if !self.jobs.contains_key(attempt) => {
                        self.jobs.insert(*attempt, (case.generation, JobState::Active, None));
                        *self.created.entry(*attempt).or_default() += 1;
                    }
                    Action::CreateJob { .. } => {} // 409: the existing Job is adopted
                    Action::DeleteJob { name: job } => self.jobs.retain(|n, _| name(*n) != *job),
                    Action::SuspendJob { .. } => {}
                }
            }
            if done == steps {
                self.status = Some(plan.status);
            }
            steps
        }
    }

    /// Run 30 reconciles, two seconds apart, each after the Job controller's tick; `crash`
    /// says where reconcile `i` stops, if anywhere. Returns the steps of each reconcile.
    fn drive(sim: &mut Sim, case: &Case, crash: &dyn Fn(usize) -> Option<usize>) -> Vec<usize> {
        (0..30)
            .map(|i| {
                sim.tick();
                let steps = sim.reconcile(case, crash(i));
                sim.now += 2;
                steps
            })
            .collect()
    }

    /// Attempt 1 failed, attempt 2 succeeded, each Job created once, both outcomes recorded.
    fn assert_nothing_lost_nothing_twice(sim: &Sim, ttl: Option<i32>, fault: &str) {
        assert_eq!(sim.created, [(1, 1), (2, 1)].into_iter().collect(), "Jobs created per attempt, {fault}");
        let status = sim.status.as_ref().unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{fault}");
        let outcomes: Vec<_> = status.attempts.iter().map(|a| (a.number, a.outcome, a.exit_code)).collect();
        assert_eq!(
            outcomes,
            [(1, AttemptOutcome::Failed, Some(1)), (2, AttemptOutcome::Succeeded, Some(0))],
            "recorded outcomes, {fault}"
        );
        assert!(status.attempts.iter().all(|a| a.reason.as_deref() != Some(reasons::JOB_DELETED)), "{fault}");
        assert_eq!(status.result.as_deref(), Some(&7), "{fault}");
        if ttl.is_some() {
            assert!(sim.jobs.is_empty(), "finished Jobs are cleaned up in the end, {fault}");
        }
    }

    #[test]
    fn a_kill_or_failed_write_between_any_two_steps_of_any_reconcile_loses_no_outcome_and_reruns_nothing() {
        for ttl in [Some(0), Some(1), None] {
            let case = Case { ttl, policy: policy(3, 1, 1.0, 1), ..Default::default() };
            let mut clean = Sim::default();
            let steps = drive(&mut clean, &case, &|_| None);
            assert_nothing_lost_nothing_twice(&clean, ttl, "without faults");
            let mut scenarios = 0;
            // One fault: reconcile `r` stops before its step `c`, for every r and c.
            for (r, &count) in steps.iter().enumerate() {
                for c in 0..count {
                    let mut sim = Sim::default();
                    drive(&mut sim, &case, &|i| (i == r).then_some(c));
                    let fault = format!("TTL {ttl:?}, reconcile {r} stopped before step {c}");
                    assert_nothing_lost_nothing_twice(&sim, ttl, &fault);
                    scenarios += 1;
                }
            }
            // A fault in every other reconcile, at the same step each time.
            for c in 0..3 {
                let mut sim = Sim::default();
                drive(&mut sim, &case, &|i| (i % 2 == 0).then_some(c));
                let fault = format!("TTL {ttl:?}, every other reconcile stopped before step {c}");
                assert_nothing_lost_nothing_twice(&sim, ttl, &fault);
            }
            assert!(scenarios >= 30, "TTL {ttl:?}: {scenarios} single-fault scenarios");
        }
    }
}
