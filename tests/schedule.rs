//! Scheduled KraJobs, and scheduled and triggered EvaluationRuns, against a real Kubernetes API
//! server (see tests/support), with a clock the test moves: the operator reads the time from a file (`--clock-file`). The clock starts at the
//! real time (nothing is due before a KraJob's creation) and the test moves it to the fire times
//! it wants, computed with the same cron evaluation the operator uses (tested on its own in
//! `src/cron.rs`).

mod support;

use std::path::PathBuf;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::api::batch::v1::Job;
use kra_operator::controller::scheduler;
use kra_operator::crd::{EvaluationRun, KraJob, Phase};
use kra_operator::cron::Cron;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{Cluster, Operator, WAIT, wait_until};

struct Clock(PathBuf);

impl Clock {
    fn new(cluster: &Cluster, start: Timestamp) -> Clock {
        let clock = Clock(cluster.dir.join("clock"));
        clock.set(start);
        clock
    }
    fn set(&self, now: Timestamp) {
        std::fs::write(&self.0, now.to_string()).unwrap();
    }
}

async fn start(cluster: &Cluster, clock: &Clock) -> Operator {
    let path = clock.0.to_str().unwrap().to_string();
    Operator::start_with(cluster, "operator-a", &["--clock-file", &path, "--resync-seconds", "1"]).await
}

fn seoul() -> TimeZone {
    TimeZone::get("Asia/Seoul").unwrap()
}

/// The first `count` fire times of `cron` in `tz` after the real time now.
fn fires(cron: &str, tz: &TimeZone, count: usize) -> Vec<Timestamp> {
    let cron: Cron = cron.parse().unwrap();
    let mut out = vec![cron.next_after(Timestamp::now(), tz).unwrap()];
    while out.len() < count {
        out.push(cron.next_after(*out.last().unwrap(), tz).unwrap());
    }
    out
}

fn name_at(parent: &str, at: Timestamp, tz: &TimeZone) -> String {
    scheduler::child_name(parent, at, tz)
}

fn scheduled(name: &str, schedule: Value) -> Value {
    json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
        "metadata": {"name": name},
        "spec": {
            "action": "CollectResults", "meet": "seoul", "schedule": schedule,
            "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"},
            "retryPolicy": {"limit": 0},
        },
    })
}

async fn get(cluster: &Cluster, name: &str) -> KraJob {
    cluster.api::<KraJob>().get(name).await.expect("read KraJob")
}

async fn wait_for<F: Fn(&KraJob) -> bool>(cluster: &Cluster, name: &str, what: &str, check: F) -> KraJob {
    wait_until(&format!("KraJob {name}: {what}"), WAIT, || async {
        let job = get(cluster, name).await;
        check(&job).then_some(job)
    })
    .await
}

fn schedule_status(job: &KraJob) -> &kra_operator::crd::ScheduleStatus {
    job.status.as_ref().and_then(|s| s.schedule.as_ref()).expect("schedule status")
}

fn run_names(job: &KraJob) -> Vec<String> {
    job.status
        .as_ref()
        .and_then(|s| s.schedule.as_ref())
        .map(|s| s.runs.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

async fn children(cluster: &Cluster) -> Vec<KraJob> {
    let mut list =
        cluster.api::<KraJob>().list(&ListParams::default().labels("kra.dev/schedule-uid")).await.unwrap().items;
    list.sort_by_key(|c| c.name_any());
    list
}

async fn wait_job(cluster: &Cluster, name: &str) -> Job {
    wait_until(&format!("Job {name}"), WAIT, || async { cluster.api::<Job>().get_opt(name).await.unwrap() }).await
}

const SUMMARY: &str = r#"{"racesFound":10,"racesCollected":10,"racesFailed":0,"rowsWritten":120,"apiCalls":57}"#;

/// Finish a child run's first attempt and wait until the child reports the outcome.
async fn finish_run(cluster: &Cluster, child: &str, succeeded: bool) {
    wait_job(cluster, &format!("{child}-1")).await;
    cluster.finish_job(&format!("{child}-1"), succeeded, Some(SUMMARY)).await;
    let phase = if succeeded { Phase::Succeeded } else { Phase::Failed };
    // Finished, or already pruned by its schedule's history limit.
    wait_until(&format!("KraJob {child} to finish"), WAIT, || async {
        match cluster.api::<KraJob>().get_opt(child).await.unwrap() {
            None => Some(()),
            Some(c) => (c.status.as_ref().and_then(|s| s.run.phase) == Some(phase)).then_some(()),
        }
    })
    .await;
}

#[tokio::test]
async fn a_seoul_schedule_runs_each_race_day_once_with_its_data_window() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    // Ready: the watches have synced, and from here the schedule reads its runs from them.
    let since = Timestamp::now();
    let cron = "0 22 * * SAT,SUN";
    let [first, second] = fires(cron, &seoul(), 2)[..] else { unreachable!() };
    cluster.create::<KraJob>(scheduled("seoul-results", json!({"cron": cron}))).await;

    let idle = wait_for(&cluster, "seoul-results", "scheduled", |j| {
        j.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Scheduled)
    })
    .await;
    assert_eq!(schedule_status(&idle).next_schedule_time.as_ref().unwrap().0, first);
    let ready = idle.status.as_ref().unwrap().run.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert!(children(&cluster).await.is_empty());

    clock.set(first + 30.seconds());
    let child_name = name_at("seoul-results", first, &seoul());
    assert!(child_name.ends_with("-2200"), "{child_name}");
    let running = wait_for(&cluster, "seoul-results", "a run", |j| run_names(j) == [child_name.clone()]).await;
    assert_eq!(running.status.as_ref().unwrap().run.phase, Some(Phase::Running));
    let child = get(&cluster, &child_name).await;
    let window = child.spec.date_range.clone().unwrap();
    let day = first.to_zoned(seoul()).date().to_string();
    assert_eq!((window.from.as_str(), window.to.as_str()), (day.as_str(), day.as_str()));
    assert_eq!(schedule_status(&running).runs[0].window, window);
    // The child is an ordinary KraJob: it gets its own Job.
    finish_run(&cluster, &child_name, true).await;
    let done = wait_for(&cluster, "seoul-results", "last success", |j| {
        j.status.as_ref().and_then(|s| s.schedule.as_ref()).and_then(|s| s.last_successful_time.clone()).is_some()
    })
    .await;
    assert_eq!(schedule_status(&done).last_successful_time.as_ref().unwrap().0, first);
    assert_eq!(schedule_status(&done).last_schedule_time.as_ref().unwrap().0, first);
    assert_eq!(schedule_status(&done).next_schedule_time.as_ref().unwrap().0, second);
    // Looked at again and again (resync every second), the same day never runs twice.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(children(&cluster).await.len(), 1);
    // The spec is never written by the operator (no drift for GitOps).
    assert_eq!(get(&cluster, "seoul-results").await.metadata.generation, Some(1));
    // Reconciled every second, the schedule never listed its runs: they come from the cache.
    let reads = cluster.operator_reads_since(since).expect("the API server's audit log");
    assert!(reads.is_empty(), "the operator read from the API server after its watches synced: {reads:?}");
}

#[tokio::test]
async fn downtime_is_caught_up_oldest_first_without_losing_a_day() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let mut operator = start(&cluster, &clock).await;
    let cron = "0 22 * * SAT,SUN";
    cluster.create::<KraJob>(scheduled("weekend", json!({"cron": cron, "maxCatchUp": 3}))).await;
    wait_for(&cluster, "weekend", "scheduled", |j| j.status.is_some()).await;

    // Down for two weekends: four race days come due, the newest three are caught up.
    let due = fires(cron, &seoul(), 4);
    operator.stop().await;
    clock.set(due[3] + 2.hours());
    operator.restart().await;
    let names: Vec<String> = due[1..].iter().map(|at| name_at("weekend", *at, &seoul())).collect();
    let first = wait_for(&cluster, "weekend", "the first catch-up run", |j| run_names(j).len() == 1).await;
    assert_eq!(run_names(&first), names[..1]);
    let skipped = &schedule_status(&first).skipped;
    assert_eq!(skipped.len(), 1);
    let oldest_day = due[0].to_zoned(seoul()).date().to_string();
    assert_eq!((skipped[0].reason.as_str(), skipped[0].window.from.clone()), ("CatchUpLimit", oldest_day));
    // Forbid: one at a time, oldest first.
    finish_run(&cluster, &names[0], true).await;
    wait_for(&cluster, "weekend", "the second run", |j| run_names(j).len() == 2).await;
    finish_run(&cluster, &names[1], false).await;
    let third = wait_for(&cluster, "weekend", "the third run", |j| run_names(j).len() == 3).await;
    assert_eq!(run_names(&third), names);
}

#[tokio::test]
async fn a_daylight_saving_gap_is_skipped_as_cronjob_skips_it_and_runs_keep_local_dates() {
    let cluster = Cluster::start().await;
    // The next spring-forward in New York after a week from now.
    let new_york = TimeZone::get("America/New_York").unwrap();
    let mut transitions = new_york.following(Timestamp::now() + 168.hours());
    let gap = loop {
        let transition = transitions.next().unwrap();
        if transition.dst().is_dst() {
            break transition.timestamp();
        }
    };
    // 02:30 does not exist on that day: as in a Kubernetes CronJob, nothing fires that day. The
    // schedule names that day and the next only (US spring-forward is the second Sunday of March,
    // so both days are in one month).
    let day = gap.to_zoned(new_york.clone()).date();
    let cron = format!("30 2 {},{} {} *", day.day(), day.day() + 1, day.month());
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    cluster
        .create::<KraJob>(scheduled(
            "ny",
            json!({"cron": cron, "timeZone": "America/New_York", "concurrencyPolicy": "Allow"}),
        ))
        .await;
    let created = wait_for(&cluster, "ny", "scheduled", |j| j.status.is_some()).await;
    let next = schedule_status(&created).next_schedule_time.clone().expect("a next schedule time");
    let tomorrow = day.tomorrow().unwrap();
    let expected = tomorrow.at(2, 30, 0, 0).to_zoned(new_york.clone()).unwrap().timestamp();
    assert_eq!(next.0, expected, "the next fire time is the day after the gap");
    // Both days past: one run, the day after the gap, with its own local date as its window.
    clock.set(tomorrow.at(3, 0, 0, 0).to_zoned(new_york.clone()).unwrap().timestamp());
    let job = wait_for(&cluster, "ny", "a run", |j| !run_names(j).is_empty()).await;
    let runs = &schedule_status(&job).runs;
    assert_eq!(run_names(&job), [format!("ny-{}-0230", tomorrow.strftime("%Y%m%d"))]);
    assert_eq!(runs[0].scheduled_time.0, expected);
    assert_eq!(runs[0].window.from, tomorrow.to_string());
}

#[tokio::test]
async fn replace_deletes_the_active_run_and_history_limits_prune_finished_ones() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    cluster
        .create::<KraJob>(scheduled(
            "hourly",
            json!({"cron": "0 * * * *", "concurrencyPolicy": "Replace", "successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 0}),
        ))
        .await;
    wait_for(&cluster, "hourly", "scheduled", |j| j.status.is_some()).await;
    let hours = fires("0 * * * *", &seoul(), 4);
    let hour = |i: usize| name_at("hourly", hours[i], &seoul());

    clock.set(hours[0] + 1.minute());
    wait_for(&cluster, "hourly", "the first hour", |j| run_names(j) == [hour(0)]).await;
    // The next hour comes while the first run is still active: it is replaced.
    clock.set(hours[1] + 1.minute());
    wait_for(&cluster, "hourly", "the second hour replaces the first", |j| run_names(j) == [hour(1)]).await;
    wait_until("the replaced run to go", WAIT, || async {
        cluster.api::<KraJob>().get_opt(&hour(0)).await.unwrap().is_none().then_some(())
    })
    .await;
    finish_run(&cluster, &hour(1), true).await;
    clock.set(hours[2] + 1.minute());
    wait_for(&cluster, "hourly", "the third hour", |j| run_names(j) == [hour(1), hour(2)]).await;
    finish_run(&cluster, &hour(2), true).await;
    // One success kept: the older is pruned.
    let pruned = wait_for(&cluster, "hourly", "the second hour pruned", |j| run_names(j) == [hour(2)]).await;
    assert_eq!(pruned.status.as_ref().unwrap().run.phase, Some(Phase::Scheduled));
    clock.set(hours[3] + 1.minute());
    wait_for(&cluster, "hourly", "the fourth hour", |j| run_names(j) == [hour(2), hour(3)]).await;
    finish_run(&cluster, &hour(3), false).await;
    // No failure kept.
    wait_for(&cluster, "hourly", "the failed run pruned", |j| run_names(j) == [hour(2)]).await;
    wait_until("the pruned run to go", WAIT, || async {
        cluster.api::<KraJob>().get_opt(&hour(3)).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn suspend_skips_due_runs_and_resume_runs_the_next_one() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    cluster.create::<KraJob>(scheduled("paused", json!({"cron": "0 22 * * *"}))).await;
    wait_for(&cluster, "paused", "scheduled", |j| j.status.is_some()).await;
    let days = fires("0 22 * * *", &seoul(), 2);

    let patch = |suspend: bool| json!({"spec": {"suspend": suspend}});
    let api = cluster.api::<KraJob>();
    api.patch("paused", &PatchParams::default(), &Patch::Merge(&patch(true))).await.unwrap();
    let suspended = wait_for(&cluster, "paused", "suspended", |j| {
        j.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Suspended)
    })
    .await;
    // Suspended before any run: nothing is due, and the schedule status may be empty (none).
    let schedule = suspended.status.as_ref().and_then(|s| s.schedule.as_ref());
    assert!(schedule.is_none_or(|s| s.next_schedule_time.is_none()), "{schedule:?}");
    clock.set(days[0] + 5.minutes());
    let skipped = wait_for(&cluster, "paused", "a skipped run", |j| {
        j.status.as_ref().and_then(|s| s.schedule.as_ref()).is_some_and(|s| !s.skipped.is_empty())
    })
    .await;
    assert_eq!(schedule_status(&skipped).skipped[0].reason, "Suspended");
    assert!(children(&cluster).await.is_empty());

    api.patch("paused", &PatchParams::default(), &Patch::Merge(&patch(false))).await.unwrap();
    let resumed = wait_for(&cluster, "paused", "resumed", |j| {
        j.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Scheduled)
    })
    .await;
    assert_eq!(schedule_status(&resumed).next_schedule_time.as_ref().unwrap().0, days[1]);
    clock.set(days[1] + 1.minute());
    let next = wait_for(&cluster, "paused", "the next run", |j| run_names(j).len() == 1).await;
    assert_eq!(run_names(&next), [name_at("paused", days[1], &seoul())]);
}

#[tokio::test]
async fn an_invalid_schedule_is_stalled_with_the_problem_named() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    cluster.create::<KraJob>(scheduled("bad", json!({"cron": "0 22 * * FUNDAY", "timeZone": "Mars/Olympus"}))).await;
    let bad =
        wait_for(&cluster, "bad", "invalid", |j| j.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Invalid))
            .await;
    let stalled = bad.status.as_ref().unwrap().run.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
    assert_eq!(stalled.status, "True");
    assert!(stalled.message.contains("schedule.cron: day-of-week: \"FUNDAY\" is not a number"), "{}", stalled.message);
    assert!(stalled.message.contains("schedule.timeZone: \"Mars/Olympus\""), "{}", stalled.message);
    // Deleting the schedule deletes its runs through their owner references (no runs here).
    cluster.api::<KraJob>().delete("bad", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn run_now_starts_a_run_for_the_current_window_once() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    cluster.create::<KraJob>(scheduled("manual", json!({"cron": "0 22 * * SAT,SUN"}))).await;
    wait_for(&cluster, "manual", "scheduled", |j| j.status.is_some()).await;
    let at = Timestamp::now();
    clock.set(at);
    let request = at.to_string();
    let annotate = json!({"metadata": {"annotations": {"kra.dev/run-now": request}}});
    cluster.api::<KraJob>().patch("manual", &PatchParams::default(), &Patch::Merge(&annotate)).await.unwrap();
    let expected = format!("{}-now", name_at("manual", at, &seoul()));
    let started = wait_for(&cluster, "manual", "the requested run", |j| run_names(j) == [expected.clone()]).await;
    assert_eq!(schedule_status(&started).last_run_now.as_deref(), Some(request.as_str()));
    let child = get(&cluster, &expected).await;
    let today = at.to_zoned(seoul()).date().to_string();
    assert_eq!(child.spec.date_range.unwrap().from, today);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(children(&cluster).await.len(), 1, "one request, one run");
}

#[tokio::test]
async fn a_window_crosses_the_month_boundary() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    // 06:00 Seoul on the 1st of each month collects the last two days of the month before.
    let cron = "0 6 1 * *";
    cluster
        .create::<KraJob>(scheduled("month-end", json!({"cron": cron, "window": {"offsetDays": -2, "days": 2}})))
        .await;
    wait_for(&cluster, "month-end", "scheduled", |j| j.status.is_some()).await;
    let first = fires(cron, &seoul(), 1)[0];
    clock.set(first + 1.minute());
    let name = name_at("month-end", first, &seoul());
    let job = wait_for(&cluster, "month-end", "the run", |j| run_names(j) == [name.clone()]).await;
    let window = &schedule_status(&job).runs[0].window;
    let first_day = first.to_zoned(seoul()).date();
    assert_eq!(first_day.day(), 1);
    let from = first_day.checked_sub(2.days()).unwrap();
    let to = first_day.yesterday().unwrap();
    assert_eq!((window.from.clone(), window.to.clone()), (from.to_string(), to.to_string()));
    assert_ne!(from.month(), first_day.month(), "the window is in the previous month");
    assert_eq!(get(&cluster, &name).await.spec.date_range.as_ref(), Some(window));
}

#[tokio::test]
async fn a_keyless_enrich_schedule_runs_after_each_race_day_without_a_key() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    let cron = "30 23 * * SAT,SUN";
    let [first, _] = fires(cron, &seoul(), 2)[..] else { unreachable!() };
    let mut object = scheduled("seoul-enrich", json!({"cron": cron}));
    object["spec"]["action"] = json!("Enrich");
    object["spec"].as_object_mut().unwrap().remove("apiKeySecretRef");
    cluster.create::<KraJob>(object).await;
    wait_for(&cluster, "seoul-enrich", "scheduled", |j| {
        j.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Scheduled)
    })
    .await;
    clock.set(first + 30.seconds());
    let child_name = name_at("seoul-enrich", first, &seoul());
    wait_for(&cluster, "seoul-enrich", "a run", |j| run_names(j) == [child_name.clone()]).await;
    let child = get(&cluster, &child_name).await;
    assert_eq!(child.spec.api_key_secret_ref, None, "the child names no key either");
    let day = first.to_zoned(seoul()).date().to_string();
    assert_eq!(child.spec.date_range.clone().unwrap().from, day, "the race day just run");
    let job = wait_job(&cluster, &format!("{child_name}-1")).await;
    let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(container.args.as_ref().unwrap()[0], "enrich");
    assert!(container.env.iter().flatten().all(|e| e.name != "KRA_API_KEY"), "no key in the worker");
    finish_run(&cluster, &child_name, true).await;
}

fn evaluation(name: &str, how: Value) -> Value {
    let mut run = json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun",
        "metadata": {"name": name},
        "spec": {"dataset": {"meet": "seoul"}, "predictor": {"baseline": "Rating"}, "retryPolicy": {"limit": 0}},
    });
    run["spec"].as_object_mut().unwrap().extend(how.as_object().unwrap().clone());
    run
}

async fn evaluation_children(cluster: &Cluster) -> Vec<EvaluationRun> {
    let api = cluster.api::<EvaluationRun>();
    let mut list = api.list(&ListParams::default().labels("kra.dev/schedule-uid")).await.unwrap().items;
    list.sort_by_key(|c| c.name_any());
    list
}

async fn wait_evaluation<F: Fn(&EvaluationRun) -> bool>(
    cluster: &Cluster,
    name: &str,
    what: &str,
    check: F,
) -> EvaluationRun {
    wait_until(&format!("EvaluationRun {name}: {what}"), WAIT, || async {
        let run = cluster.api::<EvaluationRun>().get_opt(name).await.unwrap()?;
        check(&run).then_some(run)
    })
    .await
}

/// Finish an evaluation's first attempt with this summary; wait until the run reports it.
async fn finish_evaluation(cluster: &Cluster, run: &str, summary: &Value) {
    wait_job(cluster, &format!("{run}-1")).await;
    cluster.finish_job(&format!("{run}-1"), true, Some(&summary.to_string())).await;
    wait_evaluation(cluster, run, "succeeded", |r| {
        r.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Succeeded)
    })
    .await;
}

fn job_args(job: &Job) -> Vec<String> {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap_or_default()
}

#[tokio::test]
async fn an_evaluation_schedule_starts_a_child_run_per_fire_time_and_skips_an_unchanged_evaluation() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    // Every Monday 09:00, the four weeks before it.
    let cron = "0 9 * * MON";
    let [first, second] = fires(cron, &seoul(), 2)[..] else { unreachable!() };
    let schedule = json!({"schedule": {"cron": cron, "window": {"offsetDays": -28, "days": 28}}});
    cluster.create::<EvaluationRun>(evaluation("weekly", schedule)).await;
    let idle = wait_evaluation(&cluster, "weekly", "scheduled", |r| {
        r.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Scheduled)
    })
    .await;
    let state = idle.status.as_ref().unwrap().schedule.as_ref().unwrap();
    assert_eq!(state.next_schedule_time.as_ref().unwrap().0, first);
    assert!(evaluation_children(&cluster).await.is_empty());

    clock.set(first + 30.seconds());
    let name = name_at("weekly", first, &seoul());
    let child = wait_evaluation(&cluster, &name, "created", |_| true).await;
    let monday = first.to_zoned(seoul()).date();
    let window = child.spec.dataset.date_range.clone().unwrap();
    assert_eq!(window.from, (monday - 28.days()).to_string());
    assert_eq!(window.to, (monday - 1.days()).to_string());
    assert!(
        child.spec.schedule.is_none() && child.spec.skip_if_evaluation_key.is_none(),
        "the first run has nothing to skip"
    );
    // The child is an ordinary EvaluationRun: its own Job, over its window.
    let job = wait_job(&cluster, &format!("{name}-1")).await;
    let args = job_args(&job);
    assert!(args.windows(2).any(|w| w == ["--from", window.from.as_str()]), "{args:?}");
    let summary = json!({"dataSnapshotId": "ds-1", "evaluationKey": "sha256:first", "metrics": {"exact_top3_hit_rate": 0.1},
                         "message": "40 races"});
    finish_evaluation(&cluster, &name, &summary).await;
    let recorded = wait_evaluation(&cluster, "weekly", "the key of its newest evaluation", |r| {
        r.status.as_ref().and_then(|s| s.schedule.as_ref()).and_then(|s| s.last_evaluation_key.clone()).is_some()
    })
    .await;
    let state = recorded.status.as_ref().unwrap().schedule.as_ref().unwrap();
    assert_eq!(state.last_evaluation_key.as_deref(), Some("sha256:first"));
    assert_eq!(state.last_successful_time.as_ref().unwrap().0, first);

    // The next week's run is told that key: the evaluator skips it if nothing changed.
    clock.set(second + 30.seconds());
    let next = name_at("weekly", second, &seoul());
    let child = wait_evaluation(&cluster, &next, "created", |_| true).await;
    assert_eq!(child.spec.skip_if_evaluation_key.as_deref(), Some("sha256:first"));
    let args = job_args(&wait_job(&cluster, &format!("{next}-1")).await);
    assert!(args.windows(2).any(|w| w == ["--skip-if-evaluation-key", "sha256:first"]), "{args:?}");
    let skipped = json!({"dataSnapshotId": "ds-1", "evaluationKey": "sha256:first", "skipped": "UnchangedDataset",
                         "message": "skipped: the dataset ds-1 and the predictor are those of an earlier run"});
    finish_evaluation(&cluster, &next, &skipped).await;
    let done = wait_evaluation(&cluster, &next, "its result", |r| {
        r.status.as_ref().and_then(|s| s.run.result.clone()).is_some()
    })
    .await;
    assert_eq!(done.status.unwrap().run.result.unwrap().skipped.as_deref(), Some("UnchangedDataset"));
    assert_eq!(evaluation_children(&cluster).await.len(), 2, "one run per fire time");
    assert_eq!(cluster.api::<EvaluationRun>().get("weekly").await.unwrap().metadata.generation, Some(1));
}

#[tokio::test]
async fn each_successful_collection_triggers_one_evaluation_of_the_days_up_to_its_window() {
    let cluster = Cluster::start().await;
    let clock = Clock::new(&cluster, Timestamp::now());
    let _operator = start(&cluster, &clock).await;
    let cron = "0 22 * * SAT,SUN";
    let [first, second, third] = fires(cron, &seoul(), 3)[..] else { unreachable!() };
    cluster.create::<KraJob>(scheduled("seoul-results", json!({"cron": cron}))).await;
    let trigger = json!({"trigger": {"kraJob": "seoul-results", "days": 28}});
    cluster.create::<EvaluationRun>(evaluation("after-results", trigger)).await;
    let waiting = wait_evaluation(&cluster, "after-results", "scheduled", |r| {
        r.status.as_ref().and_then(|s| s.run.phase) == Some(Phase::Scheduled)
    })
    .await;
    let ready = waiting.status.as_ref().unwrap().run.conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
    assert!(ready.message.contains("seoul-results"), "{ready:?}");

    // The collection of the first race day succeeds: one evaluation of the 28 days up to it.
    clock.set(first + 30.seconds());
    let collection = name_at("seoul-results", first, &seoul());
    wait_for(&cluster, "seoul-results", "a run", |j| run_names(j) == [collection.clone()]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(evaluation_children(&cluster).await.is_empty(), "a collection still running triggers nothing");
    finish_run(&cluster, &collection, true).await;
    let name = name_at("after-results", first, &seoul());
    let child = wait_evaluation(&cluster, &name, "created", |_| true).await;
    let day = first.to_zoned(seoul()).date();
    let window = child.spec.dataset.date_range.clone().unwrap();
    assert_eq!((window.from, window.to), ((day - 27.days()).to_string(), day.to_string()));
    assert!(child.spec.trigger.is_none());
    let summary =
        json!({"dataSnapshotId": "ds-1", "evaluationKey": "sha256:k1", "metrics": {"exact_top3_hit_rate": 0.2}});
    finish_evaluation(&cluster, &name, &summary).await;

    // A failed collection triggers nothing; the next successful one triggers the next evaluation,
    // told the key of the last one.
    clock.set(second + 30.seconds());
    let failed = name_at("seoul-results", second, &seoul());
    wait_for(&cluster, "seoul-results", "the second run", |j| run_names(j).contains(&failed)).await;
    finish_run(&cluster, &failed, false).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(evaluation_children(&cluster).await.len(), 1, "a failed collection triggers no evaluation");
    clock.set(third + 30.seconds());
    let collected = name_at("seoul-results", third, &seoul());
    wait_for(&cluster, "seoul-results", "the third run", |j| run_names(j).contains(&collected)).await;
    finish_run(&cluster, &collected, true).await;
    let next = wait_evaluation(&cluster, &name_at("after-results", third, &seoul()), "created", |_| true).await;
    assert_eq!(next.spec.dataset.date_range.unwrap().to, third.to_zoned(seoul()).date().to_string());
    assert_eq!(next.spec.skip_if_evaluation_key.as_deref(), Some("sha256:k1"));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(evaluation_children(&cluster).await.len(), 2, "one evaluation per successful collection");
}
