//! Reconcile of a parent run: a scheduled `KraJob` or `EvaluationRun`, or an `EvaluationRun`
//! triggered by a scheduled `KraJob`'s runs (I/O at the edges, decisions in `scheduler`): read
//! the child runs -> validate -> plan -> create/delete children -> write status -> Events.
//!
//! Each run is a child of the parent's kind for one data window, owned by the parent (controller
//! owner reference) and labelled with its uid, so the attempt machinery (retries, backoff,
//! adoption, results) is the one every run has. Children carry none of the parent's own labels,
//! so a GitOps tool that tracks the parent by label does not take them for its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::queue::Action;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::apply::{self, CreateError, Note};
use super::conditions::ConditionSet;
use super::context::Context;
use super::error::Error;
use super::kind::{Recurrence, RunKind};
use super::scheduler::{self, Child, Timing};
use super::validate::Problems;
use super::{reasons, validate};
use crate::crd::{CatchUp, DateRange, KraJob, KraJobSpec, Phase, RunStatus, Schedule, ScheduleStatus, Trigger, Window};
use crate::cron::Cron;

/// Label on every child run: the uid of its schedule.
pub const LABEL_SCHEDULE_UID: &str = "kra.dev/schedule-uid";
/// Label on every child run: the name of its schedule (when it fits a label value).
pub const LABEL_SCHEDULE: &str = "kra.dev/schedule";
/// Annotation a user (or the Argo CD action `run-now`) sets on a schedule to run the window of
/// that time at once (RFC 3339); each new value starts one run.
pub const ANNOTATION_RUN_NOW: &str = "kra.dev/run-now";
/// Annotation on every child run: its scheduled time (RFC 3339).
pub const ANNOTATION_SCHEDULED_TIME: &str = "kra.dev/scheduled-time";

#[derive(Debug)]
/// A valid parent: the schedule settings its children follow, and where its due times come from.
pub enum Valid {
    Cron { schedule: Schedule, cron: Cron, tz: TimeZone },
    Trigger { settings: Schedule, trigger: Trigger },
}

/// Validate a parent's spec (pure): the CEL rules, the cron expression and time zone of a
/// schedule, and the spec of the children it would create.
pub fn validate_recurrence<K: RunKind>(parent: &K, defaults: &validate::WorkerDefaults) -> Result<Valid, Problems> {
    let mut problems = Problems::default();
    if let Err(message) = parent.check_declared() {
        problems.whole(message);
        return Err(problems);
    }
    let valid = match parent.recurrence() {
        None => {
            problems.field("schedule", "missing");
            return Err(problems);
        }
        Some(Recurrence::Trigger(trigger)) => {
            Some(Valid::Trigger { settings: trigger_settings(trigger), trigger: trigger.clone() })
        }
        Some(Recurrence::Schedule(schedule)) => {
            let cron = schedule.cron.parse::<Cron>().map_err(|e| problems.field("schedule.cron", e.to_string())).ok();
            let tz = TimeZone::get(&schedule.time_zone)
                .map_err(|_| {
                    problems.field("schedule.timeZone", format!("{:?} is not an IANA time zone", schedule.time_zone))
                })
                .ok();
            if let (Some(cron), Some(tz)) = (&cron, &tz)
                && cron.next_after(Timestamp::UNIX_EPOCH, tz).is_none()
            {
                problems.field("schedule.cron", format!("{:?} never fires", schedule.cron));
            }
            cron.zip(tz).map(|(cron, tz)| Valid::Cron { schedule: schedule.clone(), cron, tz })
        }
    };
    // Each child is this spec with one window: check it as such.
    let sample = parent.child_run(
        &format!("{}-20250101-0000", parent.name_any()),
        &DateRange { from: "2025-01-01".into(), to: "2025-01-01".into() },
        None,
    );
    if let Err(child_problems) = K::check_child(&sample, defaults) {
        problems.extend(child_problems);
    }
    match valid {
        Some(valid) if problems.is_empty() => Ok(valid),
        _ => Err(problems),
    }
}

/// A trigger's settings as a schedule's: every succeeded collection is due once (no deadline,
/// every missed one caught up), under the trigger's concurrency policy and history limits.
fn trigger_settings(trigger: &Trigger) -> Schedule {
    Schedule {
        cron: String::new(),
        time_zone: crate::crd::schedule::DEFAULT_TIME_ZONE.to_string(),
        window: Window::default(),
        concurrency_policy: trigger.concurrency_policy,
        starting_deadline_seconds: None,
        catch_up: CatchUp::All,
        max_catch_up: 100,
        successful_runs_history_limit: trigger.successful_runs_history_limit,
        failed_runs_history_limit: trigger.failed_runs_history_limit,
    }
}

/// The spec of one run of a scheduled `KraJob`: the schedule's spec for one data window.
pub fn child_spec(spec: &KraJobSpec, window: &DateRange) -> KraJobSpec {
    let mut child = spec.clone();
    child.schedule = None;
    child.date = None;
    child.date_range = Some(window.clone());
    child.run.suspend = false;
    child
}

/// The child run of one scheduled time (pure): the parent's spec for that window, owned by the
/// parent and labelled with its uid.
pub fn build_child<K: RunKind>(
    parent: &K,
    name: &str,
    scheduled: Timestamp,
    window: &DateRange,
    skip_key: Option<&str>,
) -> K {
    let parent_name = parent.name_any();
    let uid = parent.uid().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (super::build::LABEL_MANAGED_BY.to_string(), super::build::MANAGER.to_string()),
        (LABEL_SCHEDULE_UID.to_string(), uid.clone()),
    ]);
    if parent_name.len() <= 63 {
        labels.insert(LABEL_SCHEDULE.to_string(), parent_name.clone());
    }
    let mut child = parent.child_run(name, window, skip_key);
    *child.meta_mut() = ObjectMeta {
        name: Some(name.to_string()),
        namespace: parent.namespace(),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(ANNOTATION_SCHEDULED_TIME.to_string(), scheduled.to_string())])),
        owner_references: Some(vec![OwnerReference {
            api_version: K::api_version(&()).to_string(),
            kind: K::kind(&()).to_string(),
            name: parent_name,
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    };
    child
}

fn as_child<K: RunKind>(run: &K) -> Option<Child> {
    let scheduled_time = run.annotations().get(ANNOTATION_SCHEDULED_TIME)?.parse().ok()?;
    Some(Child {
        name: run.name_any(),
        scheduled_time,
        window: run.window()?,
        phase: run.run_status().and_then(|s| s.phase),
    })
}

/// The runs of a scheduled `KraJob` a trigger follows, as due times (pure): each succeeded run
/// scheduled since the trigger was created, with the window to evaluate after it, oldest first.
/// A run that succeeded after an older one still active waits for it, so no window is passed
/// over. Also the time zone of the child names, and what the trigger waits for, in words.
pub fn trigger_due(
    trigger: &Trigger,
    followed: Option<&KraJob>,
    collections: &[Arc<KraJob>],
    created: Timestamp,
) -> (Vec<(Timestamp, DateRange)>, TimeZone, String) {
    let default_tz = || TimeZone::get(crate::crd::schedule::DEFAULT_TIME_ZONE).unwrap_or(TimeZone::UTC);
    let Some(followed) = followed else {
        return (Vec::new(), default_tz(), format!("waiting for KraJob {} to exist", trigger.kra_job));
    };
    let Some(schedule) = followed.spec.schedule.as_ref() else {
        return (
            Vec::new(),
            default_tz(),
            format!("KraJob {} has no schedule: nothing triggers a run", trigger.kra_job),
        );
    };
    let tz = TimeZone::get(&schedule.time_zone).unwrap_or_else(|_| default_tz());
    let uid = followed.uid().unwrap_or_default();
    let runs: Vec<Child> = collections
        .iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true)))
        .filter_map(|c| as_child(c.as_ref()))
        .filter(|c| c.scheduled_time >= created)
        .collect();
    let oldest_active = runs.iter().filter(|c| c.active()).map(|c| c.scheduled_time).min();
    let mut due: Vec<(Timestamp, DateRange)> = runs
        .iter()
        .filter(|c| c.phase == Some(Phase::Succeeded) && oldest_active.is_none_or(|a| c.scheduled_time < a))
        .map(|c| (c.scheduled_time, evaluated_window(trigger, &c.window)))
        .collect();
    due.sort_by_key(|(at, _)| *at);
    (due, tz, format!("the next run after KraJob {}'s next successful run", trigger.kra_job))
}

/// The days a triggered run evaluates after a collection of `collected`: the trigger's `days`
/// up to the window's last day, or the window itself.
fn evaluated_window(trigger: &Trigger, collected: &DateRange) -> DateRange {
    let Some(days) = trigger.days else { return collected.clone() };
    let Ok(to) = collected.to.parse::<jiff::civil::Date>() else { return collected.clone() };
    let from = to.checked_sub(jiff::Span::new().days(i64::from(days.max(1) - 1))).unwrap_or(to);
    DateRange { from: from.to_string(), to: to.to_string() }
}

/// The KraJob a trigger follows and every child run of a schedule in its namespace, from the
/// KraJob controllers' watch caches.
fn followed_krajobs(ctx: &Context, namespace: &str, name: &str) -> (Option<KraJob>, Vec<Arc<KraJob>>) {
    let all = ctx.stores.read().map(|stores| stores.krajob_list()).unwrap_or_default();
    let in_namespace: Vec<Arc<KraJob>> =
        all.into_iter().filter(|job| job.namespace().as_deref() == Some(namespace)).collect();
    let followed = in_namespace.iter().find(|job| job.name_any() == name).map(|job| KraJob::clone(job));
    let children = in_namespace.into_iter().filter(|job| job.labels().contains_key(LABEL_SCHEDULE_UID)).collect();
    (followed, children)
}

pub async fn reconcile<K: RunKind>(parent: &K, ctx: &Context) -> Result<Action, Error> {
    let object = format!("{} {}/{}", K::kind(&()), parent.namespace().unwrap_or_default(), parent.name_any());
    let missing = |field| Error::MissingMetadata { object: object.clone(), field };
    let namespace = parent.namespace().ok_or_else(|| missing("namespace"))?;
    let name = parent.meta().name.clone().ok_or_else(|| missing("name"))?;
    let uid = parent.meta().uid.clone().ok_or_else(|| missing("uid"))?;
    // The cache has not shown this parent's last status write yet: wait for it (context.rs).
    let version = parent.meta().resource_version.clone().unwrap_or_default();
    if let Some(wait) = ctx.status_writes.pending(&uid, &version, std::time::Instant::now()) {
        return Ok(Action::requeue(wait.min(super::context::OWN_WRITE_RECHECK)));
    }
    let now = ctx.clock.now();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = serde_json::to_value(parent).ok().and_then(|mut v| v.get_mut("status").map(Value::take));

    let (status, notes, requeue) = match validate_recurrence(parent, &ctx.defaults) {
        Err(problems) => {
            let (status, notes) = invalid_status(parent, &problems.to_string(), now);
            (status, notes, ctx.resync)
        }
        Ok(valid) => {
            let children: Vec<K> = children(parent, ctx, &api, &uid, &object).await?;
            let created = parent.meta().creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            let (schedule, due, tz, next) = match &valid {
                Valid::Cron { schedule, tz, .. } => (schedule, Vec::new(), tz.clone(), None),
                Valid::Trigger { settings, trigger } => {
                    let (followed, collections) = followed_krajobs(ctx, &namespace, &trigger.kra_job);
                    let (due, tz, waiting) = trigger_due(trigger, followed.as_ref(), &collections, created);
                    (settings, due, tz, Some(waiting))
                }
            };
            let timing = match &valid {
                Valid::Cron { cron, .. } => Timing::Cron { cron, tz: &tz },
                Valid::Trigger { .. } => Timing::Listed { due: &due, tz: &tz },
            };
            let as_children: Vec<Child> = children.iter().filter_map(as_child).collect();
            let plan = scheduler::plan(scheduler::Input {
                parent: &name,
                schedule,
                timing,
                suspended: parent.run().suspend,
                status: parent.schedule_status(),
                children: &as_children,
                created,
                run_now: parent.annotations().get(ANNOTATION_RUN_NOW).map(String::as_str),
                now,
            });
            let skip_key = newest_evaluation_key(&children, parent.schedule_status());
            let mut notes = apply_actions(parent, &api, &uid, &plan.actions, skip_key.as_deref(), &object).await?;
            notes.extend(plan_notes(&plan));
            let mut plan_status = plan.status.clone();
            plan_status.last_evaluation_key = skip_key;
            let status = schedule_status(parent, &plan, plan_status, next.as_deref(), now);
            (status, notes, plan.requeue_after.map_or(ctx.resync, |w| w.min(ctx.resync)))
        }
    };
    let wrote = apply::write_status(&api, &name, previous.as_ref(), &status)
        .await
        .map_err(|source| Error::WriteStatus { object: object.clone(), source })?;
    match wrote {
        true if !version.is_empty() => ctx.status_writes.wrote(&uid, &version, std::time::Instant::now()),
        _ => ctx.status_writes.forget(&uid),
    }
    apply::publish(ctx, &parent.object_ref(&()), &object, "Schedule", notes);
    Ok(Action::requeue(requeue))
}

/// The evaluation key of the newest child that evaluated (or skipped) its dataset, else the one
/// recorded before (its run may have been pruned since).
fn newest_evaluation_key<K: RunKind>(children: &[K], recorded: Option<&ScheduleStatus>) -> Option<String> {
    let mut finished: Vec<(Timestamp, String)> = children
        .iter()
        .filter(|c| c.run_status().and_then(|s| s.phase) == Some(Phase::Succeeded))
        .filter_map(|c| Some((as_child(c)?.scheduled_time, c.evaluation_key()?)))
        .collect();
    finished.sort_by_key(|(at, _)| *at);
    finished.pop().map(|(_, key)| key).or_else(|| recorded.and_then(|s| s.last_evaluation_key.clone()))
}

/// A parent's status: its run part and its schedule state, as one status object.
fn parent_status<R: serde::Serialize>(run: &RunStatus<R>, schedule: Option<&ScheduleStatus>) -> Value {
    let mut status = serde_json::to_value(run).unwrap_or_else(|_| Value::Object(Default::default()));
    if let (Some(schedule), Some(fields)) = (schedule, status.as_object_mut()) {
        fields.insert("schedule".into(), serde_json::to_value(schedule).unwrap_or_default());
    }
    status
}

/// The status of a parent whose spec is invalid, and the Event of becoming so (pure).
fn invalid_status<K: RunKind>(parent: &K, problems: &str, now: Timestamp) -> (Value, Vec<Note>) {
    let generation = parent.meta().generation.unwrap_or(1);
    let previous = parent.run_status();
    let mut conditions =
        ConditionSet::new(previous.map(|s| s.conditions.as_slice()).unwrap_or_default(), generation, now);
    conditions.invalid(problems);
    let status = RunStatus::<K::Summary> {
        observed_generation: Some(generation),
        phase: Some(Phase::Invalid),
        conditions: conditions.finish(),
        dates: previous.and_then(|s| s.dates.clone()),
        ..Default::default()
    };
    let notes = if previous.and_then(|s| s.phase) != Some(Phase::Invalid) {
        vec![Note::warning(reasons::INVALID_SPEC, problems)]
    } else {
        Vec::new()
    };
    (parent_status(&status, parent.schedule_status()), notes)
}

/// The parent's runs: the children of its kind it controls, from the runs' watch cache. Only
/// when the cache lacks a run the parent's status records as existing (the cache lags behind a
/// run just created, or the run was deleted since) are they listed from the API server.
async fn children<K: RunKind>(
    parent: &K,
    ctx: &Context,
    api: &Api<K>,
    uid: &str,
    object: &str,
) -> Result<Vec<K>, Error> {
    let cached: Vec<K> = ctx
        .stores
        .read()
        .map(|stores| K::cached_runs(&stores))
        .unwrap_or_default()
        .into_iter()
        .filter(|run| run.labels().get(LABEL_SCHEDULE_UID).map(String::as_str) == Some(uid))
        .map(|run| K::clone(&run))
        .collect();
    let recorded = parent.schedule_status().map(|s| s.runs.as_slice()).unwrap_or_default();
    let complete = recorded.iter().all(|run| cached.iter().any(|c| c.meta().name.as_deref() == Some(&run.name)));
    let children = if complete {
        cached
    } else {
        api.list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE_UID}={uid}")))
            .await
            .map_err(|source| Error::Read { what: "scheduled runs", object: object.to_string(), source })?
            .items
    };
    Ok(children
        .into_iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true)))
        .filter(|c| as_child(c).is_some())
        .collect())
}

/// Create and delete the runs the plan says; the Events they make.
async fn apply_actions<K: RunKind>(
    parent: &K,
    api: &Api<K>,
    uid: &str,
    actions: &[scheduler::Action],
    skip_key: Option<&str>,
    object: &str,
) -> Result<Vec<Note>, Error> {
    let mut notes = Vec::new();
    for action in actions {
        match action {
            scheduler::Action::Create { name: child_name, scheduled_time, window } => {
                let child = build_child(parent, child_name, *scheduled_time, window, skip_key);
                // Created before a restart and not yet listed: the same run, adopted, not a second one.
                apply::create_or_adopt(api, child, child_name, uid).await.map_err(|e| match e {
                    CreateError::Foreign => Error::ForeignRun { run: child_name.clone(), object: object.to_string() },
                    CreateError::Read(source) => {
                        Error::Read { what: "existing scheduled run", object: object.to_string(), source }
                    }
                    CreateError::Create(source) => {
                        Error::CreateRun { run: child_name.clone(), object: object.to_string(), source }
                    }
                })?;
                notes.push(Note::normal(
                    reasons::RUN_CREATED,
                    format!("created {child_name} for {} to {} (due {scheduled_time})", window.from, window.to),
                ));
            }
            scheduler::Action::Delete { name: child_name, reason } => {
                let deleted = apply::delete_if_present(api, child_name).await.map_err(|source| Error::DeleteRun {
                    run: child_name.clone(),
                    object: object.to_string(),
                    source,
                })?;
                // Gone already (a cache that had not shown the deletion): no second Event.
                if deleted {
                    let event = if *reason == "Replaced" { reasons::RUN_REPLACED } else { reasons::RUN_PRUNED };
                    notes.push(Note::normal(event, format!("deleted {child_name} ({reason})")));
                }
            }
        }
    }
    Ok(notes)
}

/// The Events of what the plan skipped or holds back (pure).
fn plan_notes(plan: &scheduler::Plan) -> Vec<Note> {
    let mut notes = skip_events(&plan.newly_skipped);
    if plan.unlisted > 0 {
        notes.push(Note::warning(
            reasons::RUN_SKIPPED,
            format!("{} older scheduled times were not looked at (too many due at once)", plan.unlisted),
        ));
    }
    if plan.waiting > 0 {
        notes.push(Note::normal(reasons::RUNS_WAITING, format!("{} due run(s) wait for the active run", plan.waiting)));
    }
    notes
}

/// The parent's status after the plan: phase and conditions from its runs (pure). `waiting`: what
/// a trigger waits for, in words (a schedule's next run is its next scheduled time).
fn schedule_status<K: RunKind>(
    parent: &K,
    plan: &scheduler::Plan,
    schedule: ScheduleStatus,
    waiting: Option<&str>,
    now: Timestamp,
) -> Value {
    let generation = parent.meta().generation.unwrap_or(1);
    let previous = parent.run_status();
    let mut conditions =
        ConditionSet::new(previous.map(|s| s.conditions.as_slice()).unwrap_or_default(), generation, now);
    let mut status = RunStatus::<K::Summary> { observed_generation: Some(generation), ..Default::default() };
    let active = plan.status.runs.iter().any(|r| scheduler::is_active(r.phase));
    let newest_finished =
        plan.status.runs.iter().rev().find(|r| matches!(r.phase, Some(Phase::Succeeded | Phase::Failed)));
    let last_failed = newest_finished.is_some_and(|r| r.phase == Some(Phase::Failed));
    let next = match (waiting, plan.status.next_schedule_time.as_ref()) {
        (Some(waiting), _) => waiting.to_string(),
        (None, Some(time)) => format!("next run {}", time.0),
        (None, None) => "next run never".to_string(),
    };
    if parent.run().suspend {
        status.phase = Some(Phase::Suspended);
        conditions.suspended("the schedule is suspended: no run starts");
    } else {
        status.phase = Some(if active { Phase::Running } else { Phase::Scheduled });
        let (reason, message) = match (active, last_failed, newest_finished) {
            (true, _, _) => (reasons::RUN_ACTIVE, format!("a run is active; {next}")),
            (false, true, Some(run)) => {
                (reasons::LAST_RUN_FAILED, format!("the newest run {} failed; {next}", run.name))
            }
            _ => (reasons::SCHEDULED, next),
        };
        conditions.schedule(!last_failed, active, last_failed, reason, &message);
    }
    status.conditions = conditions.finish();
    // The newest run's window; kept when the history no longer holds a run.
    status.dates =
        plan.status.runs.last().map(|run| run.window.label()).or_else(|| previous.and_then(|s| s.dates.clone()));
    // An empty schedule status (suspended before any run) is written as none: applied as `{}`,
    // server-side apply drops it first and keeps it on the next write, a second write for nothing
    // and, between the two, a status that reads differently.
    let schedule = Some(schedule).filter(|s| *s != ScheduleStatus::default());
    parent_status(&status, schedule.as_ref())
}

/// Events for skipped runs: one each when there are few, one summary by reason when a long
/// downtime skipped many (no storm of Events).
fn skip_events(skipped: &[crate::crd::SkippedRun]) -> Vec<Note> {
    const ONE_EACH: usize = 5;
    if skipped.len() <= ONE_EACH {
        return skipped
            .iter()
            .map(|s| {
                let note = format!(
                    "skipped the run due {} for {} to {}: {}",
                    s.scheduled_time.0, s.window.from, s.window.to, s.reason
                );
                Note::warning(reasons::RUN_SKIPPED, note)
            })
            .collect();
    }
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skipped {
        *by_reason.entry(s.reason.as_str()).or_default() += 1;
    }
    let counts: Vec<String> = by_reason.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    let (first, last) = (&skipped[0], &skipped[skipped.len() - 1]);
    let note = format!(
        "skipped {} runs due from {} to {} ({}); the newest are listed in status.schedule.skipped",
        skipped.len(),
        first.scheduled_time.0,
        last.scheduled_time.0,
        counts.join(", ")
    );
    vec![Note::warning(reasons::RUN_SKIPPED, note)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn time(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn the_schedule_shows_its_newest_runs_window_and_keeps_it_when_the_history_is_empty() {
        let run = |name: &str, from: &str, to: &str| crate::crd::ScheduledRun {
            name: name.into(),
            scheduled_time: time("2025-05-24T13:00:00Z"),
            window: crate::crd::DateRange { from: from.into(), to: to.into() },
            phase: Some(Phase::Succeeded),
        };
        let mut plan = scheduler::Plan {
            actions: Vec::new(),
            status: ScheduleStatus {
                runs: vec![run("a", "2025-05-17", "2025-05-23"), run("b", "2025-05-24", "2025-05-24")],
                ..Default::default()
            },
            waiting: 0,
            newly_skipped: Vec::new(),
            unlisted: 0,
            requeue_after: None,
        };
        let now: Timestamp = "2025-05-24T14:00:00Z".parse().unwrap();
        let status = schedule_status(&parent(), &plan, plan.status.clone(), None, now);
        assert_eq!(status["dates"], "2025-05-24", "the newest run, a single day");
        plan.status.runs.truncate(1);
        let status = schedule_status(&parent(), &plan, plan.status.clone(), None, now);
        assert_eq!(status["dates"], "2025-05-17..2025-05-23");
        plan.status.runs.clear();
        let mut recorded = parent();
        recorded.status = Some(serde_json::from_value(status.clone()).unwrap());
        assert_eq!(schedule_status(&recorded, &plan, plan.status.clone(), None, now)["dates"], status["dates"]);
    }

    fn parent() -> KraJob {
        let mut job: KraJob = serde_json::from_value(json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
            "metadata": {"name": "seoul-results", "namespace": "racing", "uid": "u-1",
                         "labels": {"app.kubernetes.io/instance": "argo-app"}},
            "spec": {"action": "CollectResults", "meet": "seoul", "schedule": {"cron": "0 22 * * SAT,SUN"},
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
                     "retryPolicy": {"limit": 2, "backoff": {"initialSeconds": 60, "factor": 2.0, "maxSeconds": 600}},
                     "suspend": true},
        }))
        .unwrap();
        job.metadata.creation_timestamp = Some(time("2025-05-23T00:00:00Z"));
        job
    }

    #[test]
    fn a_child_is_the_parents_spec_for_one_window_owned_and_without_the_parents_labels() {
        let window = crate::crd::DateRange { from: "2025-05-24".into(), to: "2025-05-24".into() };
        let child = build_child(
            &parent(),
            "seoul-results-20250524-2200",
            "2025-05-24T13:00:00Z".parse().unwrap(),
            &window,
            None,
        );
        assert_eq!(child.spec.date_range, Some(window));
        assert!(child.spec.schedule.is_none() && child.spec.date.is_none());
        assert!(!child.spec.run.suspend, "a run of a schedule is never born suspended");
        assert_eq!(child.spec.run.retry_policy.limit, 2);
        let labels = child.labels();
        assert_eq!(labels[LABEL_SCHEDULE_UID], "u-1");
        assert_eq!(labels[LABEL_SCHEDULE], "seoul-results");
        assert!(!labels.contains_key("app.kubernetes.io/instance"), "GitOps tracking labels stay on the parent");
        let owner = &child.owner_references()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u-1", Some(true)));
        assert_eq!(as_child(&child).unwrap().scheduled_time, "2025-05-24T13:00:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn a_trigger_follows_succeeded_collections_in_order_and_never_passes_an_active_one() {
        let followed = {
            let mut job = parent();
            job.metadata.uid = Some("u-1".into());
            job
        };
        let collection = |day: &str, phase: Phase| {
            let window = DateRange { from: day.into(), to: day.into() };
            let at: Timestamp = format!("{day}T13:00:00Z").parse().unwrap();
            let mut child = build_child(&followed, &format!("c-{day}"), at, &window, None);
            child.status = Some(crate::crd::KraJobStatus {
                run: RunStatus { phase: Some(phase), ..Default::default() },
                schedule: None,
            });
            Arc::new(child)
        };
        let trigger = |days: Option<i32>| Trigger {
            kra_job: "seoul-results".into(),
            days,
            concurrency_policy: Default::default(),
            successful_runs_history_limit: 3,
            failed_runs_history_limit: 3,
        };
        let created: Timestamp = "2025-05-23T00:00:00Z".parse().unwrap();
        let runs = [
            collection("2025-05-17", Phase::Succeeded), // before the trigger existed
            collection("2025-05-24", Phase::Succeeded),
            collection("2025-05-25", Phase::Failed),
            collection("2025-05-31", Phase::Running),
            collection("2025-06-01", Phase::Succeeded), // waits for the one before it
        ];
        let (due, _, _) = trigger_due(&trigger(Some(28)), Some(&followed), &runs, created);
        let windows: Vec<(String, String)> = due.iter().map(|(_, w)| (w.from.clone(), w.to.clone())).collect();
        assert_eq!(windows, [("2025-04-27".to_string(), "2025-05-24".to_string())]);
        let (due, _, _) = trigger_due(&trigger(None), Some(&followed), &runs[..3], created);
        assert_eq!(due[0].1, DateRange { from: "2025-05-24".into(), to: "2025-05-24".into() }, "the window itself");
        let (due, _, waiting) = trigger_due(&trigger(None), None, &runs, created);
        assert!(due.is_empty() && waiting.contains("waiting for KraJob seoul-results to exist"), "{waiting}");
    }

    #[test]
    fn many_skipped_runs_make_one_event() {
        let skipped = |n: usize, reason: &str| crate::crd::SkippedRun {
            scheduled_time: Time(Timestamp::from_second(1_748_000_000 + 3600 * n as i64).unwrap()),
            window: crate::crd::DateRange { from: "2025-05-23".into(), to: "2025-05-23".into() },
            reason: reason.into(),
        };
        let few: Vec<_> = (0..3).map(|n| skipped(n, "DeadlineExceeded")).collect();
        assert_eq!(skip_events(&few).len(), 3);
        let many: Vec<_> =
            (0..400).map(|n| skipped(n, if n < 390 { "CatchUpLimit" } else { "DeadlineExceeded" })).collect();
        let events = skip_events(&many);
        assert_eq!(events.len(), 1);
        assert!(
            events[0].text.contains("skipped 400 runs")
                && events[0].text.contains("390 CatchUpLimit, 10 DeadlineExceeded"),
            "{}",
            events[0].text
        );
    }

    #[test]
    fn a_bad_schedule_names_each_problem() {
        let defaults = validate::WorkerDefaults {
            image: "img".into(),
            database_secret: Some(crate::crd::SecretKeyRef { name: "db".into(), key: "url".into() }),
            ..Default::default()
        };
        assert!(validate_recurrence(&parent(), &defaults).is_ok());
        let mut bad = parent();
        let schedule = bad.spec.schedule.as_mut().unwrap();
        schedule.cron = "0 25 * * *".into();
        schedule.time_zone = "Asia/Busan".into();
        let problems = validate_recurrence(&bad, &defaults).unwrap_err().to_string();
        assert!(problems.contains("schedule.cron: hour: 25 is outside 0-23"), "{problems}");
        assert!(problems.contains("schedule.timeZone: \"Asia/Busan\" is not an IANA time zone"), "{problems}");
        let mut never = parent();
        never.spec.schedule.as_mut().unwrap().cron = "0 0 30 2 *".into();
        assert!(validate_recurrence(&never, &defaults).unwrap_err().to_string().contains("never fires"));
        let mut both = parent();
        both.spec.date = Some("2025-05-24".into());
        assert!(
            validate_recurrence(&both, &defaults)
                .unwrap_err()
                .to_string()
                .contains("set exactly one of date, dateRange and schedule")
        );
        // The children's problems are the schedule's problems.
        let no_db = validate::WorkerDefaults { image: "img".into(), ..Default::default() };
        assert!(validate_recurrence(&parent(), &no_db).unwrap_err().to_string().contains("no database is configured"));
    }
}
