//! Reconcile of a scheduled `KraJob` (I/O at the edges, decisions in `scheduler`): read the
//! child runs -> validate -> plan -> create/delete children -> write status -> Events.
//!
//! Each run is a child `KraJob` for one data window, owned by the schedule (controller owner
//! reference) and labelled with its uid, so the attempt machinery (retries, backoff, adoption,
//! results) is the one every `KraJob` has. Children carry none of the parent's own labels, so a
//! GitOps tool that tracks the parent by label does not take them for its own.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::apply::{self, CreateError, Note};
use super::conditions::ConditionSet;
use super::context::Context;
use super::error::Error;
use super::kind::RunKind;
use super::scheduler::{self, Child};
use super::validate::Problems;
use super::{reasons, validate};
use crate::crd::{KraJob, KraJobSpec, KraJobStatus, Phase, Schedule, ScheduleStatus};
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

/// Validate a scheduled spec (pure): the CEL rules, the cron expression, the time zone, and
/// the spec of the children it would create.
pub fn validate_schedule(
    job: &KraJob,
    defaults: &validate::WorkerDefaults,
) -> Result<(Schedule, Cron, TimeZone), Problems> {
    let mut problems = Problems::default();
    if let Err(message) = job.check_declared() {
        problems.whole(message);
        return Err(problems);
    }
    let Some(schedule) = job.spec.schedule.clone() else {
        problems.field("schedule", "missing");
        return Err(problems);
    };
    let cron = schedule.cron.parse::<Cron>().map_err(|e| problems.field("schedule.cron", e.to_string())).ok();
    let tz = TimeZone::get(&schedule.time_zone)
        .map_err(|_| problems.field("schedule.timeZone", format!("{:?} is not an IANA time zone", schedule.time_zone)))
        .ok();
    if let (Some(cron), Some(tz)) = (&cron, &tz)
        && cron.next_after(Timestamp::UNIX_EPOCH, tz).is_none()
    {
        problems.field("schedule.cron", format!("{:?} never fires", schedule.cron));
    }
    // Each child is this spec with one window: check it as such.
    let sample = child_spec(&job.spec, &crate::crd::DateRange { from: "2025-01-01".into(), to: "2025-01-01".into() });
    if let Err(child_problems) = validate::krajob(&sample, defaults) {
        problems.extend(child_problems);
    }
    match (cron, tz) {
        (Some(cron), Some(tz)) if problems.is_empty() => Ok((schedule, cron, tz)),
        _ => Err(problems),
    }
}

/// The spec of one run: the schedule's spec for one data window.
pub fn child_spec(spec: &KraJobSpec, window: &crate::crd::DateRange) -> KraJobSpec {
    let mut child = spec.clone();
    child.schedule = None;
    child.date = None;
    child.date_range = Some(window.clone());
    child.run.suspend = false;
    child
}

/// The child `KraJob` of one scheduled run (pure).
pub fn build_child(parent: &KraJob, name: &str, scheduled: Timestamp, window: &crate::crd::DateRange) -> KraJob {
    let parent_name = parent.name_any();
    let uid = parent.uid().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (super::build::LABEL_MANAGED_BY.to_string(), super::build::MANAGER.to_string()),
        (LABEL_SCHEDULE_UID.to_string(), uid.clone()),
    ]);
    if parent_name.len() <= 63 {
        labels.insert(LABEL_SCHEDULE.to_string(), parent_name.clone());
    }
    let mut child = KraJob::new(name, child_spec(&parent.spec, window));
    child.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: parent.namespace(),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(ANNOTATION_SCHEDULED_TIME.to_string(), scheduled.to_string())])),
        owner_references: Some(vec![OwnerReference {
            api_version: KraJob::api_version(&()).to_string(),
            kind: KraJob::kind(&()).to_string(),
            name: parent_name,
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    };
    child
}

fn as_child(job: &KraJob) -> Option<Child> {
    let scheduled_time = job.annotations().get(ANNOTATION_SCHEDULED_TIME)?.parse().ok()?;
    Some(Child {
        name: job.name_any(),
        scheduled_time,
        window: job.spec.date_range.clone()?,
        phase: job.status.as_ref().and_then(|s| s.run.phase),
    })
}

pub async fn reconcile(parent: &KraJob, ctx: &Context) -> Result<Action, Error> {
    let object = format!("KraJob {}/{}", parent.namespace().unwrap_or_default(), parent.name_any());
    let missing = |field| Error::MissingMetadata { object: object.clone(), field };
    let namespace = parent.namespace().ok_or_else(|| missing("namespace"))?;
    let name = parent.metadata.name.clone().ok_or_else(|| missing("name"))?;
    let uid = parent.metadata.uid.clone().ok_or_else(|| missing("uid"))?;
    let now = ctx.clock.now();
    let api: Api<KraJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = parent.status.clone().unwrap_or_default();

    let (status, notes, requeue) = match validate_schedule(parent, &ctx.defaults) {
        Err(problems) => {
            let (status, notes) = invalid_status(parent, &previous, &problems.to_string(), now);
            (status, notes, ctx.resync)
        }
        Ok((schedule, cron, tz)) => {
            let children = list_children(&api, &uid, &object).await?;
            let created = parent.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
            let plan = scheduler::plan(scheduler::Input {
                parent: &name,
                schedule: &schedule,
                cron: &cron,
                tz: &tz,
                suspended: parent.spec.run.suspend,
                status: previous.schedule.as_ref(),
                children: &children,
                created,
                run_now: parent.annotations().get(ANNOTATION_RUN_NOW).map(String::as_str),
                now,
            });
            let mut notes = apply_actions(parent, &api, &uid, &plan.actions, &object).await?;
            notes.extend(plan_notes(&plan));
            let status = schedule_status(parent, &previous, &plan, now);
            (status, notes, plan.requeue_after.map_or(ctx.resync, |w| w.min(ctx.resync)))
        }
    };
    apply::write_status(&api, &name, Some(&previous), &status)
        .await
        .map_err(|source| Error::WriteStatus { object: object.clone(), source })?;
    apply::publish(ctx, &parent.object_ref(&()), &object, "Schedule", notes).await;
    Ok(Action::requeue(requeue))
}

/// The status of a schedule whose spec is invalid, and the Event of becoming so (pure).
fn invalid_status(
    parent: &KraJob,
    previous: &KraJobStatus,
    problems: &str,
    now: Timestamp,
) -> (KraJobStatus, Vec<Note>) {
    let generation = parent.metadata.generation.unwrap_or(1);
    let mut conditions = ConditionSet::new(&previous.run.conditions, generation, now);
    conditions.invalid(problems);
    let mut status = KraJobStatus { run: Default::default(), schedule: previous.schedule.clone() };
    status.run.observed_generation = Some(generation);
    status.run.phase = Some(Phase::Invalid);
    status.run.conditions = conditions.finish();
    status.run.dates = previous.run.dates.clone();
    let notes = if previous.run.phase != Some(Phase::Invalid) {
        vec![Note::warning(reasons::INVALID_SPEC, problems)]
    } else {
        Vec::new()
    };
    (status, notes)
}

/// The schedule's runs: the child KraJobs it controls.
async fn list_children(api: &Api<KraJob>, uid: &str, object: &str) -> Result<Vec<Child>, Error> {
    let listed = api
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE_UID}={uid}")))
        .await
        .map_err(|source| Error::Read { what: "scheduled runs", object: object.to_string(), source })?;
    Ok(listed
        .items
        .iter()
        .filter(|c| c.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true)))
        .filter_map(as_child)
        .collect())
}

/// Create and delete the runs the plan says; the Events they make.
async fn apply_actions(
    parent: &KraJob,
    api: &Api<KraJob>,
    uid: &str,
    actions: &[scheduler::Action],
    object: &str,
) -> Result<Vec<Note>, Error> {
    let mut notes = Vec::new();
    for action in actions {
        match action {
            scheduler::Action::Create { name: child_name, scheduled_time, window } => {
                let child = build_child(parent, child_name, *scheduled_time, window);
                // Created before a restart and not yet listed: the same run, adopted, not a second one.
                apply::create_or_adopt(api, &child, child_name, uid).await.map_err(|e| match e {
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
                apply::delete_if_present(api, child_name).await.map_err(|source| Error::DeleteRun {
                    run: child_name.clone(),
                    object: object.to_string(),
                    source,
                })?;
                let event = if *reason == "Replaced" { reasons::RUN_REPLACED } else { reasons::RUN_PRUNED };
                notes.push(Note::normal(event, format!("deleted {child_name} ({reason})")));
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

/// The schedule's status after the plan: phase and conditions from its runs (pure).
fn schedule_status(parent: &KraJob, previous: &KraJobStatus, plan: &scheduler::Plan, now: Timestamp) -> KraJobStatus {
    let generation = parent.metadata.generation.unwrap_or(1);
    let mut conditions = ConditionSet::new(&previous.run.conditions, generation, now);
    let mut status = KraJobStatus::default();
    status.run.observed_generation = Some(generation);
    let active = plan.status.runs.iter().any(|r| scheduler::is_active(r.phase));
    let newest_finished =
        plan.status.runs.iter().rev().find(|r| matches!(r.phase, Some(Phase::Succeeded | Phase::Failed)));
    let last_failed = newest_finished.is_some_and(|r| r.phase == Some(Phase::Failed));
    let next = plan.status.next_schedule_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "never".into());
    if parent.spec.run.suspend {
        status.run.phase = Some(Phase::Suspended);
        conditions.suspended("the schedule is suspended: no run starts");
    } else {
        status.run.phase = Some(if active { Phase::Running } else { Phase::Scheduled });
        let (reason, message) = match (active, last_failed, newest_finished) {
            (true, _, _) => (reasons::RUN_ACTIVE, format!("a run is active; next run {next}")),
            (false, true, Some(run)) => {
                (reasons::LAST_RUN_FAILED, format!("the newest run {} failed; next run {next}", run.name))
            }
            _ => (reasons::SCHEDULED, format!("next run {next}")),
        };
        conditions.schedule(!last_failed, active, last_failed, reason, &message);
    }
    status.run.conditions = conditions.finish();
    // The newest run's window; kept when the history no longer holds a run.
    status.run.dates = plan.status.runs.last().map(|run| run.window.label()).or_else(|| previous.run.dates.clone());
    // An empty schedule status (suspended before any run) is written as none: applied as `{}`,
    // server-side apply drops it first and keeps it on the next write, a second write for nothing
    // and, between the two, a status that reads differently.
    status.schedule = Some(plan.status.clone()).filter(|s| *s != ScheduleStatus::default());
    status
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
        let now = "2025-05-24T14:00:00Z".parse().unwrap();
        let status = schedule_status(&parent(), &KraJobStatus::default(), &plan, now);
        assert_eq!(status.run.dates.as_deref(), Some("2025-05-24"), "the newest run, a single day");
        plan.status.runs.truncate(1);
        let status = schedule_status(&parent(), &KraJobStatus::default(), &plan, now);
        assert_eq!(status.run.dates.as_deref(), Some("2025-05-17..2025-05-23"));
        plan.status.runs.clear();
        assert_eq!(schedule_status(&parent(), &status, &plan, now).run.dates, status.run.dates);
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
        let child =
            build_child(&parent(), "seoul-results-20250524-2200", "2025-05-24T13:00:00Z".parse().unwrap(), &window);
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
        assert!(validate_schedule(&parent(), &defaults).is_ok());
        let mut bad = parent();
        let schedule = bad.spec.schedule.as_mut().unwrap();
        schedule.cron = "0 25 * * *".into();
        schedule.time_zone = "Asia/Busan".into();
        let problems = validate_schedule(&bad, &defaults).unwrap_err().to_string();
        assert!(problems.contains("schedule.cron: hour: 25 is outside 0-23"), "{problems}");
        assert!(problems.contains("schedule.timeZone: \"Asia/Busan\" is not an IANA time zone"), "{problems}");
        let mut never = parent();
        never.spec.schedule.as_mut().unwrap().cron = "0 0 30 2 *".into();
        assert!(validate_schedule(&never, &defaults).unwrap_err().to_string().contains("never fires"));
        let mut both = parent();
        both.spec.date = Some("2025-05-24".into());
        assert!(
            validate_schedule(&both, &defaults)
                .unwrap_err()
                .to_string()
                .contains("set exactly one of date, dateRange and schedule")
        );
        // The children's problems are the schedule's problems.
        let no_db = validate::WorkerDefaults { image: "img".into(), ..Default::default() };
        assert!(validate_schedule(&parent(), &no_db).unwrap_err().to_string().contains("no database is configured"));
    }
}
