//! `KraJob`: one collection run of KRA race data, executed by `kra-collector` in a Job.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DateRange, Meet, RunControls, RunStatus, SecretKeyRef};
use super::schedule::{Schedule, ScheduleStatus};

/// What a collection run does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum KraAction {
    /// Collect the race cards (entries) of the scheduled races before they run.
    CollectRaceCards,
    /// Collect the results (finishing order) after the races.
    CollectResults,
    /// Collect the final odds after the races.
    CollectOdds,
    /// Reconstruct pre-race snapshots from the stored race cards of races collected after their
    /// cutoff (entry-card fields only, under the entry rules). Calls no KRA API.
    Preprocess,
    /// Store each runner's form as of its race's cutoff, from the races stored before that day.
    /// Calls no KRA API.
    Enrich,
    /// Race cards, results and odds, then enrichment, in that order.
    FullPipeline,
}

impl KraAction {
    /// Whether the action calls the KRA API (and so needs a key and a share of its budget).
    pub fn calls_kra_api(self) -> bool {
        !matches!(self, KraAction::Preprocess | KraAction::Enrich)
    }

    /// Every action, in the order of the CRD's enum.
    pub const ALL: [KraAction; 6] = [
        KraAction::CollectRaceCards,
        KraAction::CollectResults,
        KraAction::CollectOdds,
        KraAction::Preprocess,
        KraAction::Enrich,
        KraAction::FullPipeline,
    ];

    /// The `kra-collector` sub-command that performs this action.
    pub fn collector_command(self) -> &'static str {
        match self {
            KraAction::CollectRaceCards => "collect",
            KraAction::CollectResults => "results",
            KraAction::CollectOdds => "odds",
            KraAction::Preprocess => "preprocess",
            KraAction::Enrich => "enrich",
            KraAction::FullPipeline => "pipeline",
        }
    }
}

/// The database the collector writes to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    /// Secret key holding the connection URL (`postgres://...`).
    pub url_secret_ref: SecretKeyRef,
}

/// Spec of a `KraJob`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kra.dev",
    version = "v1alpha1",
    kind = "KraJob",
    plural = "krajobs",
    singular = "krajob",
    shortname = "kj",
    category = "kra",
    namespaced,
    status = "KraJobStatus",
    doc = "A collection run of Korea Racing Authority race data, executed as batch/v1 Jobs by kra-collector.",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "Meet", type_ = "string", json_path = ".spec.meet"),
    printcolumn(
        name = "Date",
        type_ = "string",
        json_path = ".status.dates",
        description = "The race days collected: the date, the range, or on a schedule its newest run's window"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts[-1:].number",
        description = "The number of the newest attempt: how many were made",
        priority = "1"
    ),
    printcolumn(name = "Started", type_ = "date", json_path = ".status.startTime", priority = "1"),
    printcolumn(name = "Next attempt", type_ = "date", json_path = ".status.nextAttemptAt", priority = "1"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule.cron", priority = "1"),
    printcolumn(
        name = "Last schedule",
        type_ = "date",
        json_path = ".status.schedule.lastScheduleTime",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("(has(self.date) ? 1 : 0) + (has(self.dateRange) ? 1 : 0) + (has(self.schedule) ? 1 : 0) == 1")
        .message("set exactly one of date, dateRange and schedule"),
    validation = Rule::new("self.action in ['Preprocess', 'Enrich'] || has(self.apiKeySecretRef)")
        .message("apiKeySecretRef is required: this action calls the KRA API")
)]
#[serde(rename_all = "camelCase")]
pub struct KraJobSpec {
    /// What to collect.
    pub action: KraAction,
    /// Racecourse: `seoul`, `jeju` or `busan` (KRA API codes 1, 2, 3).
    pub meet: Meet,
    /// A single race day, `YYYY-MM-DD`. Exactly one of `date`, `dateRange` and `schedule` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub date: Option<String>,
    /// A range of race days. Exactly one of `date`, `dateRange` and `schedule` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_range: Option<DateRange>,
    /// Run on a schedule: each time it fires, a child `KraJob` collects that run's data window.
    /// Exactly one of `date`, `dateRange` and `schedule` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<Schedule>>,
    /// Race numbers to collect. When absent, the collector asks the race plan which races are
    /// actually scheduled that day (never a fixed 1..15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(range(min = 1, max = 20)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub race_numbers: Option<Vec<i32>>,
    /// The KRA (data.go.kr) service key, as a reference to a Secret key. Never a value.
    /// Required by every action that calls the KRA API; `Preprocess` and `Enrich` call none and
    /// are given no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// The database to write to. When absent, the operator's default database is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseRef>,
    /// Retries, deadline, cleanup, suspension and pod overrides.
    #[serde(flatten)]
    pub run: RunControls,
}

/// The summary `kra-collector` reports when it finishes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSummary {
    /// Races the race plan lists for the requested days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub races_found: Option<i64>,
    /// Races collected successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub races_collected: Option<i64>,
    /// Races that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub races_failed: Option<i64>,
    /// Database rows written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<i64>,
    /// KRA API calls made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_calls: Option<i64>,
    /// Requested race days whose every race is stored (collected now or before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_done: Option<i64>,
    /// Requested race days not done yet: the next attempt starts with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// The last day up to which every requested day is done (`YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_complete_day: Option<String>,
    /// One-line human summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Status of a `KraJob`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KraJobStatus {
    /// Phase, conditions, attempts and result (a scheduled `KraJob` has no attempts of its own:
    /// its runs are child `KraJob`s).
    #[serde(flatten)]
    pub run: RunStatus<CollectionSummary>,
    /// The schedule's state, on a scheduled `KraJob`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<ScheduleStatus>>,
}

/// A `KraJobStatus` reads as its run status (phase, conditions, attempts, result).
impl std::ops::Deref for KraJobStatus {
    type Target = RunStatus<CollectionSummary>;

    fn deref(&self) -> &Self::Target {
        &self.run
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_holds_every_action_of_the_schema() {
        let schema = serde_json::to_value(schemars::schema_for!(KraAction)).unwrap();
        // One `{"const": …}` per documented variant.
        let mut in_schema: Vec<String> = schema["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["const"].as_str().map(String::from))
            .collect();
        let mut listed: Vec<String> =
            KraAction::ALL.iter().map(|a| serde_json::to_value(a).unwrap().as_str().unwrap().to_string()).collect();
        in_schema.sort();
        listed.sort();
        assert_eq!(in_schema.len(), 6, "schema: {schema}");
        assert_eq!(listed, in_schema);
    }

    #[test]
    fn a_decoded_status_keeps_its_lists_without_room_to_spare() {
        let conditions: Vec<_> = ["Ready", "Reconciling", "Stalled", "Running", "Succeeded"]
            .iter()
            .map(|type_| {
                serde_json::json!({"type": type_, "status": "False", "reason": "R", "message": "",
                                   "lastTransitionTime": "2025-05-24T00:00:00Z"})
            })
            .collect();
        let status: KraJobStatus = serde_json::from_value(serde_json::json!({
            "phase": "Running",
            "conditions": conditions,
            "attempts": [{"number": 1, "jobName": "run-1", "generation": 1, "outcome": "Running"}],
        }))
        .unwrap();
        assert_eq!((status.conditions.len(), status.conditions.capacity()), (5, 5));
        assert_eq!((status.attempts.len(), status.attempts.capacity()), (1, 1));
    }
}
