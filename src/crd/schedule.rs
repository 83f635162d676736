//! The schedule of a recurring `KraJob`: when it runs, which data window each run covers, and
//! what happens to runs that are due together (catch-up, concurrency).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DateRange, Phase};

/// The time zone a schedule uses when it names none: the racecourses' own.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Seoul";

/// A cron schedule. Each time it fires, the operator creates a child `KraJob` named
/// `<name>-<YYYYMMDD>-<HHMM>` (the scheduled time in `timeZone`) for that run's data window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Five-field cron expression (minute hour day-of-month month day-of-week) or a descriptor
    /// (`@daily`, `@weekly`, ...), read in `timeZone` exactly as a Kubernetes CronJob reads its
    /// schedule. Example: `0 22 * * SAT,SUN`.
    #[schemars(length(min = 1, max = 100))]
    pub cron: String,
    /// IANA time zone of the expression and of the data windows.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// The race days each run collects, relative to the date of its scheduled time.
    #[serde(default)]
    pub window: Window,
    /// What to do when a run is due while an earlier one is still active.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its scheduled time is skipped
    /// (reason `DeadlineExceeded`). No deadline when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Runs missed while the operator was down (or waiting): `All` runs each, oldest first, up
    /// to `maxCatchUp`; `Latest` runs only the newest.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The most missed runs started by one catch-up; older ones are skipped (reason
    /// `CatchUpLimit`).
    #[serde(default = "default_max_catch_up")]
    #[schemars(range(min = 1, max = 100))]
    pub max_catch_up: i32,
    /// Succeeded child runs kept; older ones are deleted.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_runs_history_limit: i32,
    /// Failed child runs kept; older ones are deleted.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_runs_history_limit: i32,
}

fn default_time_zone() -> String {
    DEFAULT_TIME_ZONE.to_string()
}
fn default_max_catch_up() -> i32 {
    10
}
fn default_successful_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    3
}

/// The data window of a scheduled run: `days` race days starting `offsetDays` from the date of
/// the scheduled time. The default, `{offsetDays: 0, days: 1}`, is the scheduled day itself
/// (a run at 22:00 collects the race day just finished); `{offsetDays: -1, days: 1}` is the day
/// before (a run the next morning).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// First day of the window, in days from the scheduled date (0 or negative).
    #[serde(default)]
    #[schemars(range(min = -366, max = 0))]
    pub offset_days: i32,
    /// Number of days in the window.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 366))]
    pub days: i32,
}

fn one() -> i32 {
    1
}

impl Default for Window {
    fn default() -> Self {
        Window { offset_days: 0, days: 1 }
    }
}

/// As in a CronJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    Allow,
    /// A due run waits until the active one has finished (skipped only past its starting
    /// deadline); catch-up then proceeds one run at a time, oldest first.
    #[default]
    Forbid,
    /// A due run replaces the active one, which is deleted; only the newest due run starts.
    Replace,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CatchUp {
    /// Every missed run, oldest first, at most `maxCatchUp`.
    #[default]
    All,
    /// Only the newest missed run.
    Latest,
}

/// A child run of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRun {
    /// The child `KraJob`.
    pub name: String,
    /// When it was due.
    pub scheduled_time: Time,
    /// The race days it collects.
    pub window: DateRange,
    /// Its phase, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
}

/// A scheduled time that did not run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedRun {
    pub scheduled_time: Time,
    /// The race days it would have collected.
    pub window: DateRange,
    /// `Suspended`, `DeadlineExceeded`, `CatchUpLimit`, `Superseded` or `Replaced`.
    pub reason: String,
}

/// The state of a schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The newest scheduled time that was started or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The scheduled time of the newest run that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the schedule fires next (absent while suspended or when it never fires again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Child runs that exist, oldest first (the active ones and the history kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ScheduledRun>,
    /// The last `kra.dev/run-now` request handled (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_now: Option<String>,
    /// The most recent scheduled times that were skipped, with the reason (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedRun>,
    /// On an `EvaluationRun` schedule or trigger: the evaluation key of the newest run that
    /// evaluated its dataset; the next run skips itself when its own key is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_key: Option<String>,
}
