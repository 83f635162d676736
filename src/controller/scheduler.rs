//! The pure planner of a scheduled `KraJob` or `EvaluationRun` (or a triggered `EvaluationRun`):
//! from the schedule, its recorded state, the child runs that exist and the time, decide which
//! runs to create or delete, which scheduled times to skip (and why), and the new schedule status.
//!
//! The due times come from the cron expression, or, for a trigger, from the succeeded runs of
//! the scheduled `KraJob` it follows ([`Timing`]). Rules, in order, over the times due since
//! `lastScheduleTime` (or since the parent was created):
//! 1. suspended: every due time is skipped (`Suspended`);
//! 2. past `startingDeadlineSeconds`: skipped (`DeadlineExceeded`);
//! 3. catch-up `Latest`, or concurrency `Replace`: all but the newest are skipped
//!    (`Superseded`); catch-up `All`: beyond `maxCatchUp`, the oldest are skipped
//!    (`CatchUpLimit`);
//! 4. concurrency: `Allow` starts every remaining run; `Forbid` starts the oldest only when no
//!    run is active, and otherwise leaves them due (they wait, within their deadline);
//!    `Replace` deletes the active runs and starts the newest.
//!
//! `lastScheduleTime` advances over what was started or skipped, never over a run that waits, so
//! a restart neither loses nor repeats a window: a due time whose child already exists (created
//! just before a crash) counts as started.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{CatchUp, ConcurrencyPolicy, DateRange, Phase, Schedule, ScheduleStatus, ScheduledRun, SkippedRun};
use crate::cron::Cron;

/// Skipped times kept in status.
pub const MAX_SKIPPED: usize = 20;
/// Due times looked at in one reconcile (the newest, when more are due).
const MAX_DUE: usize = 500;

pub const SKIP_SUSPENDED: &str = "Suspended";
pub const SKIP_DEADLINE: &str = "DeadlineExceeded";
pub const SKIP_CATCH_UP_LIMIT: &str = "CatchUpLimit";
pub const SKIP_SUPERSEDED: &str = "Superseded";

/// A child run as read from the API.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub scheduled_time: Timestamp,
    pub window: DateRange,
    pub phase: Option<Phase>,
}

impl Child {
    pub fn active(&self) -> bool {
        is_active(self.phase)
    }
}

/// Whether a run in this phase has not finished (an invalid child never will: it does not
/// block the others).
pub fn is_active(phase: Option<Phase>) -> bool {
    !matches!(phase, Some(Phase::Succeeded | Phase::Failed | Phase::Invalid))
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Create {
        name: String,
        scheduled_time: Timestamp,
        window: DateRange,
    },
    /// Delete a child: `Replaced` (an active run replaced) or `HistoryLimit` (pruned).
    Delete {
        name: String,
        reason: &'static str,
    },
}

/// Where due times and their windows come from.
#[derive(Clone, Copy)]
pub enum Timing<'a> {
    /// The cron expression of a schedule, read in its time zone; each time's window from
    /// `schedule.window`.
    Cron { cron: &'a Cron, tz: &'a TimeZone },
    /// Listed times, each with its window, oldest first (a trigger: the scheduled times of the
    /// collections that succeeded, each with the window evaluated after it). Child names use `tz`.
    Listed { due: &'a [(Timestamp, DateRange)], tz: &'a TimeZone },
}

impl Timing<'_> {
    fn tz(&self) -> &TimeZone {
        match self {
            Timing::Cron { tz, .. } | Timing::Listed { tz, .. } => tz,
        }
    }

    /// The times due after `since` up to `now` (at most `MAX_DUE`, the newest), and how many
    /// more were not listed.
    fn between(&self, since: Timestamp, now: Timestamp) -> (Vec<Timestamp>, usize) {
        match self {
            Timing::Cron { cron, tz } => cron.between(since, now, tz, MAX_DUE),
            Timing::Listed { due, .. } => {
                let mut times: Vec<Timestamp> =
                    due.iter().map(|(at, _)| *at).filter(|at| *at > since && *at <= now).collect();
                let unlisted = times.len().saturating_sub(MAX_DUE);
                times.drain(..unlisted);
                (times, unlisted)
            }
        }
    }

    /// The window of a run due at `at`: from the schedule, or the newest listed at or before it.
    fn window(&self, schedule: &Schedule, at: Timestamp) -> Option<DateRange> {
        match self {
            Timing::Cron { tz, .. } => Some(window(schedule, at, tz)),
            Timing::Listed { due, .. } => due.iter().rev().find(|(t, _)| *t <= at).map(|(_, w)| w.clone()),
        }
    }

    fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Timing::Cron { cron, tz } => cron.next_after(now, tz),
            Timing::Listed { .. } => None,
        }
    }
}

pub struct Input<'a> {
    pub parent: &'a str,
    /// The schedule's settings (concurrency, deadline, catch-up, history limits); a trigger's
    /// are given as a schedule.
    pub schedule: &'a Schedule,
    pub timing: Timing<'a>,
    pub suspended: bool,
    pub status: Option<&'a ScheduleStatus>,
    pub children: &'a [Child],
    /// When the `KraJob` was created: no run is due before it.
    pub created: Timestamp,
    /// The `kra.dev/run-now` annotation: a request to run the window of that time at once,
    /// whatever the schedule and the concurrency policy say. Handled once per value.
    pub run_now: Option<&'a str>,
    pub now: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: ScheduleStatus,
    /// Due runs left waiting for an active one (`Forbid`).
    pub waiting: usize,
    /// Runs skipped by this reconcile (for Events), and how many more were not even listed.
    pub newly_skipped: Vec<SkippedRun>,
    pub unlisted: usize,
    pub requeue_after: Option<Duration>,
}

/// The child's name: `<parent>-<YYYYMMDD>-<HHMM>` of the scheduled time in the schedule's zone.
pub fn child_name(parent: &str, scheduled: Timestamp, tz: &TimeZone) -> String {
    let local = scheduled.to_zoned(tz.clone());
    let name = format!("{parent}-{}", local.strftime("%Y%m%d-%H%M"));
    if name.len() <= 253 {
        return name;
    }
    // Keep names within the API's limit, unique through a hash of the full name.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hash}-{}", &parent[..200.min(parent.len())], local.strftime("%Y%m%d-%H%M"))
}

/// The data window of a run scheduled at `scheduled`.
pub fn window(schedule: &Schedule, scheduled: Timestamp, tz: &TimeZone) -> DateRange {
    let date: Date = scheduled.to_zoned(tz.clone()).date();
    let from = date.checked_add(jiff::Span::new().days(i64::from(schedule.window.offset_days))).unwrap_or(date);
    let to = from.checked_add(jiff::Span::new().days(i64::from(schedule.window.days.max(1) - 1))).unwrap_or(from);
    DateRange { from: from.to_string(), to: to.to_string() }
}

fn time(t: &Time) -> Timestamp {
    t.0
}

pub fn plan(input: Input<'_>) -> Plan {
    let Input { parent, schedule, timing, suspended, status, children, created, run_now, now } = input;
    let tz = timing.tz();
    let previous = status.cloned().unwrap_or_default();
    let since = previous.last_schedule_time.as_ref().map(time).unwrap_or(created);
    let (due, unlisted) = timing.between(since, now);

    let mut sorted = sort_due(&input, due, previous.last_schedule_time.as_ref().map(time));
    let active: Vec<&Child> = children.iter().filter(|c| c.active()).collect();
    let (to_start, waiting, mut actions) = starts(schedule.concurrency_policy, sorted.live, &active);
    let mut started: Vec<(Timestamp, String, DateRange)> = Vec::new();
    for at in to_start {
        let name = child_name(parent, at, tz);
        let Some(window) = timing.window(schedule, at) else { continue };
        actions.push(Action::Create { name: name.clone(), scheduled_time: at, window: window.clone() });
        started.push((at, name, window));
        sorted.last = Some(sorted.last.map_or(at, |l| l.max(at)));
    }

    // A run-now request (new value of the annotation): one extra run for the window of its time.
    let mut last_run_now = previous.last_run_now.clone();
    if let Some(request) = run_now.filter(|r| previous.last_run_now.as_deref() != Some(*r)) {
        last_run_now = Some(request.to_string());
        if let Ok(at) = request.parse::<Timestamp>() {
            let name = format!("{}-now", child_name(parent, at, tz));
            if let Some(window) = timing.window(schedule, at).filter(|_| !children.iter().any(|c| c.name == name)) {
                actions.push(Action::Create { name: name.clone(), scheduled_time: at, window: window.clone() });
                started.push((at, name, window));
            }
        }
    }

    let runs = prune_history(schedule, children, &previous.runs, &mut actions, &started);
    let last_successful = children
        .iter()
        .filter(|c| c.phase == Some(Phase::Succeeded))
        .map(|c| c.scheduled_time)
        .chain(previous.last_successful_time.as_ref().map(time))
        .max();
    let mut all_skipped = previous.skipped.clone();
    all_skipped.extend(sorted.skipped.iter().cloned());
    all_skipped.sort_by_key(|s| s.scheduled_time.0);
    let excess = all_skipped.len().saturating_sub(MAX_SKIPPED);
    all_skipped.drain(..excess);

    let next = if suspended { None } else { timing.next_after(now) };
    let requeue_after = next.map(|n| Duration::from_secs(n.duration_since(now).as_secs().max(1) as u64));
    Plan {
        actions,
        status: ScheduleStatus {
            last_schedule_time: sorted.last.map(Time),
            last_successful_time: last_successful.map(Time),
            next_schedule_time: next.map(Time),
            runs,
            last_run_now,
            skipped: all_skipped,
            last_evaluation_key: previous.last_evaluation_key.clone(),
        },
        waiting,
        newly_skipped: sorted.skipped,
        unlisted,
        requeue_after,
    }
}

/// The due times, sorted: those that may still start, and those skipped (with why).
struct Due {
    live: Vec<Timestamp>,
    skipped: Vec<SkippedRun>,
    /// The newest scheduled time handled (started before, started now, or skipped).
    last: Option<Timestamp>,
}

/// Sort the due times: a time whose child exists was started before a restart (it counts as
/// started), and so does a time that names the same child as an earlier one (a wall-clock time a
/// daylight-saving fold repeats: same name, same window); suspension, the starting deadline and
/// the catch-up rule skip the others.
fn sort_due(input: &Input<'_>, due: Vec<Timestamp>, last: Option<Timestamp>) -> Due {
    let Input { parent, schedule, timing, suspended, children, now, .. } = *input;
    let tz = timing.tz();
    let mut sorted = Due { live: Vec::new(), skipped: Vec::new(), last };
    let skip = |sorted: &mut Due, at: Timestamp, reason: &'static str| {
        sorted.skipped.push(SkippedRun {
            scheduled_time: Time(at),
            window: timing.window(schedule, at).unwrap_or_default(),
            reason: reason.into(),
        });
        sorted.last = Some(sorted.last.map_or(at, |l| l.max(at)));
    };
    let mut names = std::collections::HashSet::new();
    for at in due {
        let name = child_name(parent, at, tz);
        if children.iter().any(|c| c.name == name) || !names.insert(name) {
            sorted.last = Some(sorted.last.map_or(at, |l| l.max(at)));
        } else if suspended {
            skip(&mut sorted, at, SKIP_SUSPENDED);
        } else if schedule.starting_deadline_seconds.is_some_and(|d| now.duration_since(at).as_secs() > d) {
            skip(&mut sorted, at, SKIP_DEADLINE);
        } else {
            sorted.live.push(at);
        }
    }
    let newest_only = schedule.catch_up == CatchUp::Latest || schedule.concurrency_policy == ConcurrencyPolicy::Replace;
    let keep = if newest_only { 1 } else { schedule.max_catch_up.max(1) as usize };
    if sorted.live.len() > keep {
        let reason = if newest_only { SKIP_SUPERSEDED } else { SKIP_CATCH_UP_LIMIT };
        let dropped: Vec<Timestamp> = sorted.live.drain(..sorted.live.len() - keep).collect();
        for at in dropped {
            skip(&mut sorted, at, reason);
        }
    }
    sorted
}

/// Which live times start now under the concurrency policy: the times, how many wait, and the
/// deletions of the active runs a `Replace` supersedes.
fn starts(policy: ConcurrencyPolicy, live: Vec<Timestamp>, active: &[&Child]) -> (Vec<Timestamp>, usize, Vec<Action>) {
    match policy {
        ConcurrencyPolicy::Allow => (live, 0, Vec::new()),
        ConcurrencyPolicy::Forbid if !active.is_empty() => (Vec::new(), live.len(), Vec::new()),
        ConcurrencyPolicy::Forbid => {
            let waiting = live.len().saturating_sub(1);
            (live.into_iter().take(1).collect(), waiting, Vec::new())
        }
        ConcurrencyPolicy::Replace => {
            let deletions = if live.is_empty() {
                Vec::new()
            } else {
                active.iter().map(|child| Action::Delete { name: child.name.clone(), reason: "Replaced" }).collect()
            };
            (live, 0, deletions)
        }
    }
}

/// Keep the newest finished runs up to each history limit (active runs are never pruned): the
/// deletions go to `actions`; the runs that remain, with those started now, in time order.
/// Outcome before cleanup: a finished run is deleted only once the status that was read
/// (`recorded`, so already written) lists it with that outcome; until then it stays, and the
/// status write's own watch event brings the reconcile that deletes it.
fn prune_history(
    schedule: &Schedule,
    children: &[Child],
    recorded: &[ScheduledRun],
    actions: &mut Vec<Action>,
    started: &[(Timestamp, String, DateRange)],
) -> Vec<ScheduledRun> {
    let replaced: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let mut remaining: Vec<&Child> = children.iter().filter(|c| !replaced.contains(&c.name)).collect();
    remaining.sort_by_key(|c| c.scheduled_time);
    let mut pruned = Vec::new();
    for (phase, limit) in [
        (Phase::Succeeded, schedule.successful_runs_history_limit),
        (Phase::Failed, schedule.failed_runs_history_limit),
    ] {
        let finished: Vec<&&Child> = remaining.iter().filter(|c| c.phase == Some(phase)).collect();
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        let is_recorded = |c: &Child| recorded.iter().any(|r| r.name == c.name && r.phase == c.phase);
        pruned.extend(finished.iter().take(excess).filter(|c| is_recorded(c)).map(|c| c.name.clone()));
    }
    for name in &pruned {
        actions.push(Action::Delete { name: name.clone(), reason: "HistoryLimit" });
    }
    let mut runs: Vec<ScheduledRun> = remaining
        .iter()
        .filter(|c| !pruned.contains(&c.name))
        .map(|c| ScheduledRun {
            name: c.name.clone(),
            scheduled_time: Time(c.scheduled_time),
            window: c.window.clone(),
            phase: c.phase,
        })
        .collect();
    runs.extend(started.iter().map(|(at, name, window)| ScheduledRun {
        name: name.clone(),
        scheduled_time: Time(*at),
        window: window.clone(),
        phase: None,
    }));
    runs.sort_by_key(|r| r.scheduled_time.0);
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Window;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(cron: &str) -> Schedule {
        serde_json::from_value(serde_json::json!({ "cron": cron })).unwrap()
    }

    struct World {
        schedule: Schedule,
        cron: Cron,
        tz: TimeZone,
        suspended: bool,
        status: Option<ScheduleStatus>,
        children: Vec<Child>,
        created: Timestamp,
        run_now: Option<String>,
    }

    impl World {
        fn new(schedule: Schedule, created: &str) -> World {
            World {
                cron: schedule.cron.parse().unwrap(),
                tz: TimeZone::get(&schedule.time_zone).unwrap(),
                schedule,
                suspended: false,
                status: None,
                children: Vec::new(),
                created: at(created),
                run_now: None,
            }
        }

        /// Plan at `now`, then apply the plan the way the controller would.
        fn step(&mut self, now: &str) -> Plan {
            let plan = plan(Input {
                parent: "seoul",
                schedule: &self.schedule,
                timing: Timing::Cron { cron: &self.cron, tz: &self.tz },
                suspended: self.suspended,
                status: self.status.as_ref(),
                children: &self.children,
                created: self.created,
                run_now: self.run_now.as_deref(),
                now: at(now),
            });
            for action in &plan.actions {
                match action {
                    Action::Create { name, scheduled_time, window } => self.children.push(Child {
                        name: name.clone(),
                        scheduled_time: *scheduled_time,
                        window: window.clone(),
                        phase: Some(Phase::Running),
                    }),
                    Action::Delete { name, .. } => self.children.retain(|c| &c.name != name),
                }
            }
            self.status = Some(plan.status.clone());
            plan
        }

        fn finish(&mut self, name: &str, phase: Phase) {
            self.children.iter_mut().find(|c| c.name == name).unwrap_or_else(|| panic!("no child {name}")).phase =
                Some(phase);
        }
    }

    fn created(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(plan: &Plan) -> Vec<(String, &'static str)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { name, reason } => Some((name.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn reasons(plan: &Plan) -> Vec<(String, String)> {
        plan.newly_skipped.iter().map(|s| (s.window.from.clone(), s.reason.clone())).collect()
    }

    #[test]
    fn a_seoul_weekend_schedule_runs_each_race_day_with_its_own_window() {
        // 22:00 Seoul on Saturdays and Sundays; created on Friday 2025-05-23.
        let mut world = World::new(schedule("0 22 * * SAT,SUN"), "2025-05-23T03:00:00Z");
        let idle = world.step("2025-05-24T12:59:00Z");
        assert!(idle.actions.is_empty());
        assert_eq!(idle.status.next_schedule_time, Some(Time(at("2025-05-24T13:00:00Z"))));
        assert_eq!(idle.requeue_after, Some(Duration::from_secs(60)));

        let saturday = world.step("2025-05-24T13:00:05Z");
        assert_eq!(created(&saturday), ["seoul-20250524-2200"]);
        let run = &saturday.status.runs[0];
        assert_eq!((run.window.from.as_str(), run.window.to.as_str()), ("2025-05-24", "2025-05-24"));
        assert_eq!(saturday.status.last_schedule_time, Some(Time(at("2025-05-24T13:00:00Z"))));
        assert_eq!(saturday.status.next_schedule_time, Some(Time(at("2025-05-25T13:00:00Z"))));

        // Nothing twice: the same time, looked at again, creates nothing.
        assert!(world.step("2025-05-24T13:30:00Z").actions.is_empty());
        world.finish("seoul-20250524-2200", Phase::Succeeded);
        let sunday = world.step("2025-05-25T13:00:00Z");
        assert_eq!(created(&sunday), ["seoul-20250525-2200"]);
        assert_eq!(sunday.status.last_successful_time, Some(Time(at("2025-05-24T13:00:00Z"))));
    }

    #[test]
    fn a_window_can_look_back_and_span_several_days_across_a_month_boundary() {
        let mut monday = schedule("0 6 * * MON");
        monday.window = Window { offset_days: -3, days: 3 };
        let mut world = World::new(monday, "2025-05-28T00:00:00Z");
        // Monday 2025-06-02 06:00 Seoul collects Friday 30 May to Sunday 1 June.
        let plan = world.step("2025-06-01T21:00:00Z");
        assert_eq!(created(&plan), ["seoul-20250602-0600"]);
        assert_eq!(plan.status.runs[0].window, DateRange { from: "2025-05-30".into(), to: "2025-06-01".into() });
    }

    #[test]
    fn a_daylight_saving_gap_skips_that_day_as_cronjob_does() {
        let mut london = schedule("30 1 * * *");
        london.time_zone = "Europe/London".into();
        london.concurrency_policy = ConcurrencyPolicy::Allow;
        let mut world = World::new(london, "2025-03-29T00:00:00Z");
        // 2025-03-30: 01:00 GMT jumps to 02:00 BST, so 01:30 does not exist and, as in a
        // Kubernetes CronJob, nothing fires that day; the next day 01:30 BST is 00:30 UTC.
        let plan = world.step("2025-03-31T12:00:00Z");
        assert_eq!(created(&plan), ["seoul-20250329-0130", "seoul-20250331-0130"]);
        let times: Vec<Timestamp> = plan.status.runs.iter().map(|r| r.scheduled_time.0).collect();
        assert_eq!(times, [at("2025-03-29T01:30:00Z"), at("2025-03-31T00:30:00Z")]);
        let days: Vec<&str> = plan.status.runs.iter().map(|r| r.window.from.as_str()).collect();
        assert_eq!(days, ["2025-03-29", "2025-03-31"]);
    }

    #[test]
    fn a_daylight_saving_fold_fires_twice_but_runs_its_window_once() {
        let mut london = schedule("30 1 * * *");
        london.time_zone = "Europe/London".into();
        london.concurrency_policy = ConcurrencyPolicy::Allow;
        let mut world = World::new(london, "2025-10-25T12:00:00Z");
        // 2025-10-26: 02:00 BST falls back to 01:00 GMT, so 01:30 happens at 00:30 and 01:30 UTC.
        // Both fire times name the same run (its local time), which is created once.
        let first = world.step("2025-10-26T00:45:00Z");
        assert_eq!(created(&first), ["seoul-20251026-0130"]);
        let second = world.step("2025-10-26T01:45:00Z");
        assert!(created(&second).is_empty(), "the repeated 01:30 is the same run: {:?}", created(&second));
        assert_eq!(second.status.runs.len(), 1);
        assert_eq!(second.status.runs[0].scheduled_time.0, at("2025-10-26T00:30:00Z"));
        // Both times due in one reconcile (the operator was down across the fold): one run.
        let mut world = World::new(world.schedule.clone(), "2025-10-25T12:00:00Z");
        assert_eq!(created(&world.step("2025-10-26T02:00:00Z")), ["seoul-20251026-0130"]);
    }

    #[test]
    fn downtime_is_caught_up_oldest_first_one_at_a_time_under_forbid() {
        let mut world = World::new(schedule("0 22 * * SAT,SUN"), "2025-05-23T00:00:00Z");
        world.step("2025-05-23T01:00:00Z");
        // The operator comes back two weekends later: four race days are due.
        let first = world.step("2025-06-01T14:00:00Z");
        assert_eq!(created(&first), ["seoul-20250524-2200"]);
        assert_eq!(first.waiting, 3);
        assert!(first.newly_skipped.is_empty(), "nothing is lost");
        // While it runs, the rest wait.
        assert!(world.step("2025-06-01T14:10:00Z").actions.is_empty());
        world.finish("seoul-20250524-2200", Phase::Succeeded);
        assert_eq!(created(&world.step("2025-06-01T14:20:00Z")), ["seoul-20250525-2200"]);
        world.finish("seoul-20250525-2200", Phase::Failed);
        assert_eq!(created(&world.step("2025-06-01T14:30:00Z")), ["seoul-20250531-2200"]);
        world.finish("seoul-20250531-2200", Phase::Succeeded);
        let last = world.step("2025-06-01T14:40:00Z");
        assert_eq!(created(&last), ["seoul-20250601-2200"]);
        assert_eq!(last.waiting, 0);
        assert_eq!(last.status.last_schedule_time, Some(Time(at("2025-06-01T13:00:00Z"))));
    }

    #[test]
    fn allow_catches_up_at_once_within_max_catch_up_and_names_the_rest() {
        let mut allow = schedule("0 22 * * *");
        allow.concurrency_policy = ConcurrencyPolicy::Allow;
        allow.max_catch_up = 3;
        let mut world = World::new(allow, "2025-05-20T00:00:00Z");
        let plan = world.step("2025-05-25T14:00:00Z");
        assert_eq!(created(&plan), ["seoul-20250523-2200", "seoul-20250524-2200", "seoul-20250525-2200"]);
        assert_eq!(
            reasons(&plan),
            [
                ("2025-05-20".into(), SKIP_CATCH_UP_LIMIT.into()),
                ("2025-05-21".into(), SKIP_CATCH_UP_LIMIT.into()),
                ("2025-05-22".into(), SKIP_CATCH_UP_LIMIT.into())
            ]
        );
        assert_eq!(plan.status.skipped.len(), 3);
    }

    #[test]
    fn catch_up_latest_runs_only_the_newest() {
        let mut latest = schedule("0 22 * * *");
        latest.catch_up = CatchUp::Latest;
        let mut world = World::new(latest, "2025-05-20T00:00:00Z");
        let plan = world.step("2025-05-23T14:00:00Z");
        assert_eq!(created(&plan), ["seoul-20250523-2200"]);
        assert_eq!(reasons(&plan).len(), 3);
        assert!(plan.newly_skipped.iter().all(|s| s.reason == SKIP_SUPERSEDED));
    }

    #[test]
    fn the_starting_deadline_skips_what_is_too_late_to_start() {
        let mut late = schedule("0 22 * * *");
        late.starting_deadline_seconds = Some(3600);
        late.concurrency_policy = ConcurrencyPolicy::Allow;
        let mut world = World::new(late, "2025-05-20T00:00:00Z");
        let plan = world.step("2025-05-22T13:30:00Z");
        // The 21st is 24.5 hours late, the 22nd half an hour.
        assert_eq!(created(&plan), ["seoul-20250522-2200"]);
        assert_eq!(
            reasons(&plan),
            [("2025-05-20".into(), SKIP_DEADLINE.into()), ("2025-05-21".into(), SKIP_DEADLINE.into())]
        );
    }

    #[test]
    fn forbid_waits_for_the_active_run_and_then_the_deadline_may_skip() {
        let mut forbid = schedule("0 * * * *");
        forbid.starting_deadline_seconds = Some(1800);
        let mut world = World::new(forbid, "2025-05-20T00:30:00Z");
        assert_eq!(created(&world.step("2025-05-20T01:00:00Z")).len(), 1);
        let busy = world.step("2025-05-20T02:10:00Z");
        assert!(created(&busy).is_empty());
        assert_eq!(busy.waiting, 1);
        // Still running past the 02:00 run's deadline: it is skipped, 03:00 waits.
        let later = world.step("2025-05-20T03:05:00Z");
        assert_eq!(reasons(&later), [("2025-05-20".into(), SKIP_DEADLINE.into())]);
        assert_eq!(later.waiting, 1);
        world.finish("seoul-20250520-1000", Phase::Succeeded);
        assert_eq!(created(&world.step("2025-05-20T03:10:00Z")), ["seoul-20250520-1200"]);
    }

    #[test]
    fn replace_deletes_the_active_run_and_starts_the_newest() {
        let mut replace = schedule("0 * * * *");
        replace.concurrency_policy = ConcurrencyPolicy::Replace;
        let mut world = World::new(replace, "2025-05-20T00:30:00Z");
        world.step("2025-05-20T01:00:00Z");
        let plan = world.step("2025-05-20T03:00:00Z");
        assert_eq!(deleted(&plan), [("seoul-20250520-1000".to_string(), "Replaced")]);
        assert_eq!(created(&plan), ["seoul-20250520-1200"]);
        assert_eq!(reasons(&plan), [("2025-05-20".into(), SKIP_SUPERSEDED.into())]);
    }

    #[test]
    fn allow_overlaps_runs() {
        let mut allow = schedule("0 * * * *");
        allow.concurrency_policy = ConcurrencyPolicy::Allow;
        let mut world = World::new(allow, "2025-05-20T00:30:00Z");
        world.step("2025-05-20T01:00:00Z");
        let plan = world.step("2025-05-20T02:00:00Z");
        assert_eq!(created(&plan), ["seoul-20250520-1100"]);
        assert!(deleted(&plan).is_empty());
        assert_eq!(world.children.iter().filter(|c| c.active()).count(), 2);
    }

    #[test]
    fn history_keeps_the_newest_finished_runs_per_outcome() {
        let mut kept = schedule("0 * * * *");
        kept.successful_runs_history_limit = 2;
        kept.failed_runs_history_limit = 1;
        let mut world = World::new(kept, "2025-05-20T00:30:00Z");
        let outcomes = [Phase::Succeeded, Phase::Failed, Phase::Succeeded, Phase::Failed, Phase::Succeeded];
        let mut pruned = Vec::new();
        for (hour, outcome) in outcomes.iter().enumerate() {
            let plan = world.step(&format!("2025-05-20T0{}:00:00Z", hour + 1));
            pruned.extend(deleted(&plan));
            let name = created(&plan)[0].clone();
            world.finish(&name, *outcome);
        }
        pruned.extend(deleted(&world.step("2025-05-20T05:30:00Z")));
        assert_eq!(
            pruned,
            [("seoul-20250520-1100".to_string(), "HistoryLimit"), ("seoul-20250520-1000".to_string(), "HistoryLimit")]
        );
        let left: Vec<&str> = world.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(left, ["seoul-20250520-1200", "seoul-20250520-1300", "seoul-20250520-1400"]);
        assert_eq!(world.status.as_ref().unwrap().runs.len(), 3);
    }

    #[test]
    fn a_finished_run_is_pruned_only_once_a_written_status_records_its_outcome() {
        let mut none_kept = schedule("0 * * * *");
        none_kept.successful_runs_history_limit = 0;
        let mut world = World::new(none_kept, "2025-05-20T00:30:00Z");
        world.step("2025-05-20T01:00:00Z");
        world.finish("seoul-20250520-1000", Phase::Succeeded);
        let recorded_before = world.status.clone();
        // The reconcile that first sees it finished records it and deletes nothing.
        let seen = world.step("2025-05-20T01:10:00Z");
        assert!(deleted(&seen).is_empty(), "{:?}", seen.actions);
        assert_eq!(seen.status.last_successful_time, Some(Time(at("2025-05-20T01:00:00Z"))));
        assert_eq!(seen.status.runs[0].phase, Some(Phase::Succeeded));
        // Its status write failed (or the operator died): the old status is read again, and
        // again nothing is deleted.
        world.status = recorded_before;
        assert!(deleted(&world.step("2025-05-20T01:11:00Z")).is_empty());
        // Once the recorded outcome is read back, the run goes, and its success stays recorded.
        let pruned = world.step("2025-05-20T01:12:00Z");
        assert_eq!(deleted(&pruned), [("seoul-20250520-1000".to_string(), "HistoryLimit")]);
        assert_eq!(pruned.status.last_successful_time, Some(Time(at("2025-05-20T01:00:00Z"))));
        assert!(pruned.status.runs.is_empty());
    }

    #[test]
    fn suspend_skips_what_comes_due_and_resume_continues_from_the_next_time() {
        let mut world = World::new(schedule("0 22 * * *"), "2025-05-20T00:00:00Z");
        world.suspended = true;
        let suspended = world.step("2025-05-22T14:00:00Z");
        assert!(created(&suspended).is_empty());
        assert_eq!(suspended.status.next_schedule_time, None);
        assert!(suspended.newly_skipped.iter().all(|s| s.reason == SKIP_SUSPENDED));
        assert_eq!(suspended.newly_skipped.len(), 3);
        world.suspended = false;
        let resumed = world.step("2025-05-23T10:00:00Z");
        assert!(created(&resumed).is_empty(), "nothing that came due while suspended runs");
        assert_eq!(resumed.status.next_schedule_time, Some(Time(at("2025-05-23T13:00:00Z"))));
        assert_eq!(created(&world.step("2025-05-23T13:00:00Z")), ["seoul-20250523-2200"]);
    }

    #[test]
    fn run_now_starts_one_extra_run_per_request_whatever_the_policy() {
        let mut world = World::new(schedule("0 22 * * *"), "2025-05-20T00:00:00Z");
        world.step("2025-05-20T13:00:00Z");
        assert_eq!(world.children.len(), 1, "the scheduled run is active");
        world.run_now = Some("2025-05-20T14:30:00Z".into());
        let plan = world.step("2025-05-20T14:30:05Z");
        assert_eq!(created(&plan), ["seoul-20250520-2330-now"], "Forbid does not hold an explicit request");
        assert_eq!(plan.status.last_run_now.as_deref(), Some("2025-05-20T14:30:00Z"));
        // The same request is handled once; the schedule itself is unchanged.
        assert!(world.step("2025-05-20T14:31:00Z").actions.is_empty());
        assert_eq!(world.status.as_ref().unwrap().last_schedule_time, Some(Time(at("2025-05-20T13:00:00Z"))));
        world.run_now = Some("not a time".into());
        assert!(created(&world.step("2025-05-20T14:32:00Z")).is_empty());
    }

    #[test]
    fn a_child_created_just_before_a_crash_counts_as_started() {
        let mut world = World::new(schedule("0 22 * * *"), "2025-05-20T00:00:00Z");
        world.children.push(Child {
            name: "seoul-20250520-2200".into(),
            scheduled_time: at("2025-05-20T13:00:00Z"),
            window: DateRange { from: "2025-05-20".into(), to: "2025-05-20".into() },
            phase: None,
        });
        let plan = world.step("2025-05-20T13:01:00Z");
        assert!(plan.actions.is_empty());
        assert_eq!(plan.status.last_schedule_time, Some(Time(at("2025-05-20T13:00:00Z"))));
        assert_eq!(plan.status.runs.len(), 1);
    }
}
