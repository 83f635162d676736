//! One collection run: the I/O around the pure steps. For each day the race plan says which
//! races exist; for each race the card is required, the scratch list, track and training are
//! soft (a failure leaves an empty block and a flag), and the horse, jockey, trainer and owner
//! details are fetched once per run. A race fails only when its card fails or when half or more
//! of its horses' details fail (domain.md §2.2). Auth and quota failures stop the whole run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};

use super::odds;
use super::prerace;
use super::race_plan;
use super::results;
use crate::crd::Meet;
use crate::kra::client::{CallError, Endpoint, Fetched, KraClient};
use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::{PRERACE_SCHEMA, PreRaceCard, PreRaceSnapshot};
use crate::race::{PlannedRace, RaceKey};
use crate::store::{Store, StoreError, StoredRaceState};

/// Minutes before the scheduled start when the pre-race state is frozen.
pub const CUTOFF_MINUTES: i64 = 10;

/// What a run collects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    Cards,
    Results,
    Odds,
}

#[derive(Clone, Debug)]
pub struct RunRequest {
    pub meet: Meet,
    pub from: Date,
    pub to: Date,
    /// Only these races; all the plan lists when `None`.
    pub races: Option<Vec<i64>>,
    pub stages: Vec<Stage>,
    /// Fetch horse, jockey, trainer and owner details with the cards.
    pub details: bool,
    /// Odds rows per statement.
    pub odds_batch: usize,
    /// Take odds from the day-level dividend totals (API301, the backfill source) instead of
    /// the per-race odds (API160_1). Stored under their own source, never mixed.
    pub odds_backfill: bool,
    /// Fetch races again although everything the stages ask for is stored (a race whose result
    /// is stored is otherwise skipped: it has run, and a new card of it adds nothing honest).
    pub refresh: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RaceFailure {
    pub race_id: String,
    pub stage: &'static str,
    pub class: String,
    pub message: String,
}

/// The machine-readable summary of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub races_found: i64,
    pub races_collected: i64,
    /// Of the races collected, those already stored and complete: no call made for them.
    pub races_skipped: i64,
    pub races_failed: i64,
    pub rows_written: i64,
    pub api_calls: i64,
    pub api_calls_by_endpoint: BTreeMap<&'static str, u64>,
    pub failures: Vec<RaceFailure>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
    /// The class of that stop: `auth`, `quota_exhausted`, `budget_exhausted` or `database`.
    pub stop_class: Option<&'static str>,
    pub message: String,
    /// Requested days, and those whose every race is stored (collected now or before).
    pub days: i64,
    pub days_done: i64,
    pub days_left: i64,
    /// The last day up to which every requested day is done: where a stopped run resumes.
    pub last_complete_day: Option<String>,
    /// `pipeline`: the enrichment that followed the collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<super::history::HistorySummary>,
}

impl RunSummary {
    pub fn succeeded(&self) -> bool {
        self.stopped.is_none() && self.races_failed == 0
    }
}

/// Something that ends the run.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    Api(CallError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Progress lines for a person at a terminal.
pub type Progress<'a> = dyn Fn(&str) + Send + Sync + 'a;

pub struct Collector<'a> {
    client: &'a KraClient,
    store: &'a Store,
    clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    progress: &'a Progress<'a>,
    /// Detail rows by (endpoint, id): each horse, jockey, trainer and owner once per run.
    details: HashMap<(Endpoint, String), Result<Option<Row>, String>>,
    summary: RunSummary,
    failed_races: BTreeSet<String>,
    /// Races whose last requested stage has run: collected unless they failed on the way.
    finished_races: BTreeSet<String>,
    /// Rows of race cards fetched after the race that already carry its result: the result
    /// stage reads them instead of calling the API again.
    card_results: HashMap<String, Vec<Row>>,
}

fn param(date: Date) -> String {
    date.strftime("%Y%m%d").to_string()
}

/// The raw parameters of a call, for the response store (the key is never among them).
fn params_json(params: &[(&str, String)]) -> Value {
    Value::Object(params.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect())
}

impl<'a> Collector<'a> {
    pub fn new(
        client: &'a KraClient,
        store: &'a Store,
        clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
        progress: &'a Progress<'a>,
    ) -> Self {
        Self {
            client,
            store,
            clock,
            progress,
            details: HashMap::new(),
            summary: RunSummary::default(),
            failed_races: BTreeSet::new(),
            finished_races: BTreeSet::new(),
            card_results: HashMap::new(),
        }
    }

    /// Run the request to its end (or to a stop) and summarise.
    pub async fn run(mut self, request: &RunRequest) -> RunSummary {
        self.summary.days = request.from.until(request.to).map_or(0, |span| i64::from(span.get_days())) + 1;
        let mut contiguous = true;
        let mut date = request.from;
        while date <= request.to {
            match self.day(request, date).await {
                Err(stop) => {
                    self.summary.stop_class = Some(match &stop {
                        Stop::Api(error) => error.class(),
                        Stop::Store(_) => "database",
                    });
                    self.summary.stopped = Some(stop.to_string());
                    break;
                }
                Ok(ids) => {
                    let prefix = format!("{}_{}_", param(date), request.meet.api_code());
                    let failed = self.failed_races.iter().any(|id| id.starts_with(&prefix));
                    if !failed && ids.iter().all(|id| self.finished_races.contains(id)) {
                        self.summary.days_done += 1;
                        if contiguous {
                            self.summary.last_complete_day = Some(date.to_string());
                        }
                    } else {
                        contiguous = false;
                    }
                }
            }
            date = match date.tomorrow() {
                Ok(next) => next,
                Err(_) => break,
            };
        }
        self.summary.days_left = self.summary.days - self.summary.days_done;
        let stats = self.client.stats();
        self.summary.api_calls = stats.total() as i64;
        self.summary.api_calls_by_endpoint = stats.by_endpoint();
        self.summary.races_failed = self.failed_races.len() as i64;
        // Only what was stored counts: a race the run stopped in (or never reached) is neither
        // collected nor failed, and the stop message says how many there are.
        self.summary.races_collected = self.finished_races.difference(&self.failed_races).count() as i64;
        let unfinished = self.summary.races_found
            - self.summary.races_collected
            - self.failed_races.iter().filter(|id| !id.ends_with("_*")).count() as i64;
        self.summary.message = match &self.summary.stopped {
            Some(reason) => format!(
                "stopped: {reason} ({} race(s) found, {} collected, {} failed, {unfinished} not finished)",
                self.summary.races_found, self.summary.races_collected, self.summary.races_failed
            ),
            None => format!(
                "{} race(s) found, {} collected ({} already stored), {} failed, {} row(s) written, {} API call(s); \
                 {} of {} day(s) done",
                self.summary.races_found,
                self.summary.races_collected,
                self.summary.races_skipped,
                self.summary.races_failed,
                self.summary.rows_written,
                self.summary.api_calls,
                self.summary.days_done,
                self.summary.days
            ),
        };
        self.summary
    }

    /// Fetch, keep the raw bodies, and turn a fatal failure into a stop.
    async fn fetch(
        &mut self,
        endpoint: Endpoint,
        params: &[(&str, String)],
    ) -> Result<Result<Fetched, CallError>, Stop> {
        match self.client.fetch(endpoint, params).await {
            Ok(fetched) => {
                let at = (self.clock)();
                for page in &fetched.pages {
                    // The request of this page: its parameters, `pageNo` and `numOfRows`.
                    let mut params = params_json(params);
                    params["pageNo"] = page.page_no.into();
                    params["numOfRows"] = page.num_of_rows.into();
                    self.store.put_raw(endpoint.api_id(), &params, &page.body, at).await?;
                }
                Ok(Ok(fetched))
            }
            Err(error) if error.fatal() => Err(Stop::Api(error)),
            Err(error) => Ok(Err(error)),
        }
    }

    async fn fail(&mut self, race_id: &str, stage: &'static str, class: &str, message: String) -> Result<(), Stop> {
        (self.progress)(&format!("{race_id} {stage} failed: {message}"));
        self.store.record_failure(race_id, stage, class, &message, (self.clock)()).await?;
        self.failed_races.insert(race_id.to_string());
        self.summary.failures.push(RaceFailure {
            race_id: race_id.to_string(),
            stage,
            class: class.to_string(),
            message,
        });
        Ok(())
    }

    /// Races of a day stored with everything the request's stages ask for (none with `refresh`):
    /// their result is stored, so they have run.
    fn complete_races(request: &RunRequest, state: &[StoredRaceState]) -> Vec<StoredRaceState> {
        if request.refresh {
            return Vec::new();
        }
        let complete = |s: &&StoredRaceState| {
            let odds = if request.odds_backfill { s.odds_api301 } else { s.odds_api160 };
            s.results > 0
                && (!request.stages.contains(&Stage::Cards) || s.snapshots > 0)
                && (!request.stages.contains(&Stage::Odds) || odds > 0)
        };
        let wanted = |n: i64| request.races.as_ref().is_none_or(|list| list.contains(&n));
        state.iter().filter(|s| wanted(s.number)).filter(complete).cloned().collect()
    }

    /// Count races as collected without a call: they are stored and complete.
    fn skip_stored(&mut self, ids: &[String]) {
        self.summary.races_found += ids.len() as i64;
        self.summary.races_skipped += ids.len() as i64;
        self.finished_races.extend(ids.iter().cloned());
    }

    /// One day: its race ids (as far as they are known).
    async fn day(&mut self, request: &RunRequest, date: Date) -> Result<Vec<String>, Stop> {
        let meet = request.meet;
        let stored_races = self.store.day_state(meet, date).await?;
        let complete = Self::complete_races(request, &stored_races);
        let today = (self.clock)().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9))).date();
        if !request.refresh && date < today && self.store.planned_races(meet, date).await? == Some(0) {
            // A past day the plan said has no races: it will not get any.
            return Ok(Vec::new());
        }
        let known = |n: &i64| stored_races.iter().any(|s| s.number == *n);
        let every_wanted_complete = match &request.races {
            Some(list) => list.iter().all(|n| complete.iter().any(|s| s.number == *n)),
            None => !stored_races.is_empty() && complete.len() == stored_races.len(),
        };
        if every_wanted_complete && request.races.as_ref().is_none_or(|list| list.iter().all(known)) {
            // A past day stored in full (a resumed backfill): not a single call.
            let ids: Vec<String> = complete.iter().map(|s| s.race_id.clone()).collect();
            (self.progress)(&format!("{} {}: {} race(s) already stored", date, meet.as_str(), ids.len()));
            self.skip_stored(&ids);
            return Ok(ids);
        }
        let day_params = vec![("meet", meet.api_code().to_string()), ("rc_date", param(date))];
        let day_id = format!("{}_{}_*", param(date), meet.api_code());
        let plan = match self.fetch(Endpoint::RacePlan, &day_params).await? {
            Ok(fetched) => {
                let plan = race_plan::planned_races(date, meet, &fetched.rows);
                self.store.record_plan(meet, date, plan.len() as i64, (self.clock)()).await?;
                plan
            }
            Err(error) => match &request.races {
                // Without the plan the requested races can still be tried; their start is unknown.
                Some(numbers) => numbers
                    .iter()
                    .map(|n| PlannedRace { key: RaceKey { date, meet, number: *n }, start: None, distance: None })
                    .collect(),
                None => {
                    self.fail(&day_id, "card", error.class(), format!("the race plan is unavailable: {error}")).await?;
                    return Ok(Vec::new());
                }
            },
        };
        let races: Vec<PlannedRace> = match &request.races {
            Some(numbers) => {
                for missing in numbers.iter().filter(|n| !plan.iter().any(|r| r.key.number == **n)) {
                    let id = RaceKey { date, meet, number: *missing }.race_id();
                    self.summary.races_found += 1;
                    self.fail(&id, "card", "not_scheduled", "the race plan does not list this race".into()).await?;
                }
                plan.into_iter().filter(|r| numbers.contains(&r.key.number)).collect()
            }
            None => plan,
        };
        (self.progress)(&format!("{} {}: {} race(s) planned", date, meet.as_str(), races.len()));
        let ids: Vec<String> = races.iter().map(|r| r.key.race_id()).collect();
        for race in &races {
            let written = self.store.upsert_race(race, (self.clock)()).await?;
            self.summary.rows_written += written.rows as i64;
        }
        let is_complete = |race: &PlannedRace| complete.iter().any(|s| s.race_id == race.key.race_id());
        let (stored, races): (Vec<PlannedRace>, Vec<PlannedRace>) = races.into_iter().partition(is_complete);
        self.skip_stored(&stored.iter().map(|r| r.key.race_id()).collect::<Vec<_>>());
        self.summary.races_found += races.len() as i64;
        if races.is_empty() {
            return Ok(ids);
        }
        if request.stages.contains(&Stage::Cards) {
            self.cards(request, date, &races).await?;
        }
        for race in &races {
            if request.stages.contains(&Stage::Results) {
                self.result(race).await?;
                self.finished(request, Stage::Results, race);
            }
            if request.stages.contains(&Stage::Odds) {
                self.odds(race, request.odds_batch, request.odds_backfill).await?;
                self.finished(request, Stage::Odds, race);
            }
        }
        Ok(ids)
    }

    /// A race whose `stage` just ran is finished when that is the last stage the run asked for.
    fn finished(&mut self, request: &RunRequest, stage: Stage, race: &PlannedRace) {
        let last = [Stage::Odds, Stage::Results, Stage::Cards].into_iter().find(|s| request.stages.contains(s));
        if last == Some(stage) {
            self.finished_races.insert(race.key.race_id());
        }
    }

    /// A day-level source that may fail without failing the races: rows, or a flag.
    async fn soft(&mut self, endpoint: Endpoint, params: &[(&str, String)]) -> Result<(Vec<Row>, String), Stop> {
        Ok(match self.fetch(endpoint, params).await? {
            Ok(fetched) => (fetched.rows, "ok".into()),
            Err(error) => (Vec::new(), format!("unavailable: {}", error.class())),
        })
    }

    async fn cards(&mut self, request: &RunRequest, date: Date, races: &[PlannedRace]) -> Result<(), Stop> {
        let meet = request.meet;
        let code = meet.api_code().to_string();
        let day = param(date);
        let now = (self.clock)();
        let today = now.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9))).date();
        // Past its cutoff; a race without a known start is past once its day is.
        let past = |race: &PlannedRace| cutoff(race).map_or(race.key.date < today, |c| now > c);
        // A day whose every race is past its cutoff (a backfill): what the track and training
        // sources say now is no pre-race state, and no snapshot of it is a model input.
        let all_past = races.iter().all(past);
        let (cancelled, cancelled_flag) =
            self.soft(Endpoint::Cancelled, &[("meet", code.clone()), ("rc_date", day.clone())]).await?;
        let not_fetched = || (Vec::new(), "not fetched: every race of the day is past its cutoff".to_string());
        let (track, track_flag) = if all_past {
            not_fetched()
        } else {
            self.soft(
                Endpoint::Track,
                &[("meet", code.clone()), ("rc_date_fr", day.clone()), ("rc_date_to", day.clone())],
            )
            .await?
        };
        let (training, training_flag) = if all_past && meet == Meet::Seoul {
            not_fetched()
        } else if meet == Meet::Seoul {
            self.soft(Endpoint::Training, &[("trng_dt", day.clone())]).await?
        } else {
            (Vec::new(), "not collected for this racecourse".to_string())
        };

        for race in races {
            let race_id = race.key.race_id();
            let params = vec![("meet", code.clone()), ("rc_date", day.clone()), ("rc_no", race.key.number.to_string())];
            let rows = match self.fetch(Endpoint::RaceDetail, &params).await? {
                Ok(fetched) if fetched.rows.is_empty() => {
                    self.fail(&race_id, "card", "card_empty", "the race card has no entries".into()).await?;
                    continue;
                }
                Ok(fetched) => fetched.rows,
                Err(error) => {
                    self.fail(&race_id, "card", error.class(), error.to_string()).await?;
                    continue;
                }
            };
            let of_race = |row: &&Row| normalize::int(row.get("rcNo")) == Some(race.key.number);
            let scratched: BTreeSet<i64> =
                cancelled.iter().filter(of_race).filter_map(|r| normalize::int(r.get("chulNo"))).collect();
            let card = prerace::card(&rows, &scratched);
            let track_row = track.iter().find(of_race).cloned();
            let after_race = past(race);
            if after_race && results::result(&rows).is_ok() {
                // The same call already says how the race ended: the result stage reads it.
                self.card_results.insert(race_id.clone(), rows.clone());
            }
            // Details fetched after the cutoff count the race itself (a winner's record shows one
            // more win): never fetched then.
            let (details, failed_horses) =
                if request.details && !after_race { self.details(&card, meet).await? } else { (json!({}), vec![]) };
            let runners = card.entries.iter().filter(|e| !e.scratched).count();
            if request.details && runners > 0 && (failed_horses.len() * 2 >= runners) {
                let message = format!("details failed for {} of {} horses", failed_horses.len(), runners);
                self.fail(&race_id, "card", "details_failed", message).await?;
                continue;
            }
            let (training_block, training_state) = training_for(&card, &training);
            let content =
                PreRaceSnapshot { track: track_row.map(|r| track_block(&r)), details, training: training_block, card };
            let collected_at = (self.clock)();
            let cutoff = cutoff(race);
            let sources = json!({
                "details": if after_race { "not fetched: after the cutoff" } else if request.details { "ok" } else { "not requested" },
                "cancelled": cancelled_flag,
                "track": track_flag,
                "training": if training_state.is_empty() { training_flag.clone() } else { training_state },
                "failedHorses": failed_horses,
                "excludedFields": prerace::excluded_fields(&rows),
                "cutoffAt": cutoff.map(|c| c.to_string()),
                "cutoffUnbounded": cutoff.is_none(),
                "collectedAt": collected_at.to_string(),
            });
            let after_cutoff = cutoff.is_some_and(|c| collected_at > c);
            let revision = self
                .store
                .add_prerace_snapshot(&race_id, PRERACE_SCHEMA, &content, &sources, collected_at, after_cutoff)
                .await?;
            self.summary.rows_written += i64::from(revision.is_some());
            (self.progress)(&format!(
                "{race_id} card: {} runner(s){}",
                content.card.entries.len(),
                match revision {
                    Some(r) => format!(", revision {r}{}", if after_cutoff { " (after the cutoff)" } else { "" }),
                    None => ", unchanged".into(),
                }
            ));
            self.finished(request, Stage::Cards, race);
        }
        Ok(())
    }

    /// One detail row, fetched at most once per run.
    async fn detail(
        &mut self,
        endpoint: Endpoint,
        id: Option<&str>,
        params: Vec<(&'static str, String)>,
    ) -> Result<Result<Option<Row>, String>, Stop> {
        let Some(id) = id else { return Ok(Ok(None)) };
        let key = (endpoint, id.to_string());
        if let Some(known) = self.details.get(&key) {
            return Ok(known.clone());
        }
        let outcome = match self.fetch(endpoint, &params).await? {
            Ok(fetched) => Ok(fetched.rows.into_iter().next()),
            Err(error) => Err(error.class().to_string()),
        };
        self.details.insert(key, outcome.clone());
        Ok(outcome)
    }

    /// Details of every runner; a horse fails when any of its fetches failed.
    async fn details(&mut self, card: &PreRaceCard, meet: Meet) -> Result<(Value, Vec<Value>), Stop> {
        let code = meet.api_code().to_string();
        let mut blocks = serde_json::Map::new();
        let mut failed = Vec::new();
        for entry in card.entries.iter().filter(|e| !e.scratched) {
            let hr = entry.hr_no.as_deref();
            let jk = entry.jk_no.as_deref();
            let tr = entry.tr_no.as_deref();
            let ow = entry.ow_no.as_deref();
            let lookups = [
                (
                    "hrDetail",
                    self.detail(Endpoint::Horse, hr, vec![("hr_no", hr.unwrap_or_default().to_string())]).await?,
                ),
                (
                    "jkDetail",
                    self.detail(Endpoint::Jockey, jk, vec![("jk_no", jk.unwrap_or_default().to_string())]).await?,
                ),
                (
                    "trDetail",
                    self.detail(Endpoint::Trainer, tr, vec![("tr_no", tr.unwrap_or_default().to_string())]).await?,
                ),
                (
                    "jkStats",
                    self.detail(
                        Endpoint::JockeyStats,
                        jk,
                        vec![("jk_no", jk.unwrap_or_default().to_string()), ("meet", code.clone())],
                    )
                    .await?,
                ),
                (
                    "owDetail",
                    self.detail(
                        Endpoint::Owner,
                        ow,
                        vec![("ow_no", ow.unwrap_or_default().to_string()), ("meet", code.clone())],
                    )
                    .await?,
                ),
            ];
            let mut block = serde_json::Map::new();
            let mut errors = Vec::new();
            for (name, outcome) in lookups {
                match outcome {
                    Ok(row) => {
                        block.insert(name.into(), row.map(Value::Object).unwrap_or_else(|| json!({})));
                    }
                    Err(class) => {
                        block.insert(name.into(), json!({}));
                        errors.push(format!("{name}: {class}"));
                    }
                }
            }
            if !errors.is_empty() {
                failed.push(json!({"chulNo": entry.chul_no, "hrNo": entry.hr_no, "errors": errors}));
            }
            blocks.insert(entry.chul_no.to_string(), Value::Object(block));
        }
        Ok((Value::Object(blocks), failed))
    }

    async fn result(&mut self, race: &PlannedRace) -> Result<(), Stop> {
        let race_id = race.key.race_id();
        let params = vec![
            ("meet", race.key.meet.api_code().to_string()),
            ("rc_date", param(race.key.date)),
            ("rc_no", race.key.number.to_string()),
        ];
        // A fresh call, unless this run's card call for the race was made after it ran and already
        // holds its result (a card read before the race shows every `ord` as 0: never reused).
        let rows = match self.card_results.remove(&race_id) {
            Some(rows) => rows,
            None => match self.fetch(Endpoint::RaceDetail, &params).await? {
                Ok(fetched) => fetched.rows,
                Err(error) => return self.fail(&race_id, "result", error.class(), error.to_string()).await,
            },
        };
        match results::result(&rows) {
            Ok(result) => {
                let revision = self.store.add_result(&race_id, &result, (self.clock)()).await?;
                self.summary.rows_written += i64::from(revision.is_some());
                let top3 = result
                    .top3
                    .map(|t| format!("{t:?}"))
                    .unwrap_or_else(|| format!("dead heat, placed {:?}", result.placed));
                (self.progress)(&format!("{race_id} result: {top3}"));
                Ok(())
            }
            Err(error) => self.fail(&race_id, "result", "result_not_available", error.to_string()).await,
        }
    }

    async fn odds(&mut self, race: &PlannedRace, batch: usize, backfill: bool) -> Result<(), Stop> {
        let race_id = race.key.race_id();
        let (endpoint, source) =
            if backfill { (Endpoint::DividendTotals, "API301") } else { (Endpoint::Odds, "API160_1") };
        let params = vec![
            ("meet", race.key.meet.api_code().to_string()),
            ("rc_date", param(race.key.date)),
            ("rc_no", race.key.number.to_string()),
        ];
        let rows = match self.fetch(endpoint, &params).await? {
            Ok(fetched) => fetched.rows,
            Err(error) => return self.fail(&race_id, "odds", error.class(), error.to_string()).await,
        };
        let (odds, _dropped) = odds::odds(&rows, race.key.number);
        let written = self.store.upsert_odds(&race_id, source, &odds, (self.clock)(), batch).await?;
        self.summary.rows_written += written.rows as i64;
        (self.progress)(&format!("{race_id} odds: {} row(s), {} changed", odds.len(), written.rows));
        Ok(())
    }
}

/// The cutoff of a race: its scheduled start (Asia/Seoul) less [`CUTOFF_MINUTES`]; `None` when the
/// start is unknown.
fn cutoff(race: &PlannedRace) -> Option<Timestamp> {
    let time = race.start?;
    let start = race.key.date.to_datetime(time).in_tz("Asia/Seoul").ok()?.timestamp();
    Some(start - SignedDuration::from_mins(CUTOFF_MINUTES))
}

/// The allow-listed track fields of API189_1 (an L0 snapshot).
fn track_block(row: &Row) -> Value {
    let keep = ["weather", "track", "waterPercent", "temperature", "humidity", "windDirection", "windSpeed"];
    Value::Object(row.iter().filter(|(k, _)| keep.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Training rows (API329) joined by horse name, the only key the API gives. A name that more
/// than one runner of the card carries is ambiguous: those runners get no training block
/// rather than a wrong one.
fn training_for(card: &PreRaceCard, rows: &[Row]) -> (Value, String) {
    if rows.is_empty() {
        return (json!({}), String::new());
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for entry in &card.entries {
        if let Some(name) = entry.hr_name.as_deref() {
            *names.entry(name).or_default() += 1;
        }
    }
    let mut blocks = serde_json::Map::new();
    let mut ambiguous = 0;
    for entry in &card.entries {
        let Some(name) = entry.hr_name.as_deref() else { continue };
        if names.get(name).copied().unwrap_or(0) > 1 {
            ambiguous += 1;
            continue;
        }
        let sessions: Vec<Value> = rows
            .iter()
            .filter(|r| normalize::text(r.get("hrnm")).as_deref() == Some(name))
            .map(|r| Value::Object(r.clone()))
            .collect();
        if !sessions.is_empty() {
            blocks.insert(entry.chul_no.to_string(), Value::Array(sessions));
        }
    }
    let state =
        if ambiguous > 0 { format!("ok; {ambiguous} runner(s) with an ambiguous name left out") } else { "ok".into() };
    (Value::Object(blocks), state)
}
