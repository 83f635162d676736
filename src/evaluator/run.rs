//! One evaluation, step by step: read the prompt, make the predictor, load the dataset, read the
//! baseline run, predict and score, then record the metadata, the report, MLflow and the files.
//! Every step names what failed in an [`EvaluatorError`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::dataset::{self, Dataset, DatasetBuilder, DatasetRace, SplitRule};
use super::error::EvaluatorError;
use super::llm::{self, LlmPredictor, LlmSettings, RaceUsage};
use super::metadata::{self, COMMIT_SHA, ChampionRecord, METADATA_SCHEMA, RunMetadata};
use super::predictors::{Predictor, Recorded};
use super::request::{PredictorRequest, PromptFile, Request, Selection, Tracking};
use super::results::{self, EvaluationResults};
use super::scoring::{RaceScore, ScoringPolicy};
use super::tracking::{self, TrackedRun};
use super::{artifacts, report};
use crate::crd::arg_value;
use crate::crd::evaluationrun::{Baseline, FeatureSet};
use crate::store::{Store, redact_url};

/// A prompt template read from its file.
struct Prompt {
    version: Option<String>,
    sha256: String,
    template: String,
}

/// How the predictions are made.
enum Source {
    Immediate(Predictor),
    Llm(LlmPredictor, ScoringPolicy),
}

/// Carry out the request; the summary printed at the end on success.
pub async fn execute(request: Request) -> Result<Value, EvaluatorError> {
    let prompt = request.prompt.as_ref().map(read_prompt).transpose()?;
    let cache = answer_cache(&request).await?;
    // Every seed's predictor is made first: a bad request fails before any data is read.
    let sources: Vec<(i64, Source)> = request
        .seeds
        .iter()
        .map(|&seed| predictor(&request, seed, prompt.as_ref(), cache.clone()).map(|source| (seed, source)))
        .collect::<Result<_, _>>()?;
    let started_at = jiff::Timestamp::now();
    let store = Store::open(&request.database_url).await.map_err(|e| EvaluatorError::Database(e.to_string()))?;
    // The dataset as an index (no model inputs): selected, identified and checked first; the
    // inputs are made again a month at a time to predict, so no run holds them all.
    let dataset = load_dataset(&store, &request.database_url, &request.selection).await?;
    let (evaluation_key, unchanged) = check_unchanged(&request, &dataset, &sources, prompt.as_ref());
    if let Some(skipped) = unchanged {
        return Ok(skipped);
    }
    let (baseline, champion) = baseline(&request).await?;
    let (runs, usage) =
        run_seeds(&store, &request.selection, &dataset, &sources, request.resamples, baseline.as_deref()).await?;
    let llm_usage = usage.map(|races| llm::run_usage(races, prices(&request)));
    let (seed, mut results, identity) = results::judge(runs, request.gate_seed);
    results.gate = request.gate;
    let promotion = decision(&results, champion.as_ref());
    let results_json = results_json(&results)?;
    let run_id = metadata::run_id(jiff::Timestamp::now());
    let run_name = request.run_name.clone().unwrap_or_else(|| run_id.clone());
    let mut metadata = RunMetadata {
        schema: METADATA_SCHEMA,
        run_id,
        commit_sha: COMMIT_SHA,
        prompt_version: prompt.as_ref().and_then(|p| p.version.clone()),
        prompt_sha256: prompt.as_ref().map(|p| p.sha256.clone()),
        data_snapshot_id: dataset.snapshot_id.clone(),
        evaluation_key,
        snapshot_policy: results.inputs.snapshot_policy.clone(),
        features: results.inputs.features.clone(),
        enrichment_version: results.inputs.enrichment_version.clone(),
        reconstructed_race_count: results.inputs.reconstructed_races,
        seed,
        seeds: request.seeds.clone(),
        mode: arg_value(request.mode),
        predictor: identity,
        selection: metadata::selection_json(&request.selection),
        race_count: dataset.races.len(),
        excluded_count: dataset.excluded.len(),
        results_sha256: metadata::sha256_hex(results_json.as_bytes()),
        llm_usage,
        promotion,
        champion,
        mlflow_experiment_id: None,
        mlflow_run_id: None,
        started_at: started_at.to_string(),
        finished_at: jiff::Timestamp::now().to_string(),
    };
    let report = report::html(&results, COMMIT_SHA, metadata.prompt_version.as_deref());
    let prompt_text = prompt.map(|p| p.template);
    let tracked = match &request.tracking {
        Some(tracking) => {
            let run = TrackedRun {
                run_name: &run_name,
                results_json: &results_json,
                report: &report,
                prompt: prompt_text.as_deref(),
                started_at,
            };
            Some(tracking::track(tracking, run, &results, &mut metadata).await)
        }
        None => None,
    };
    let directory = request.output_dir.join(&run_name);
    artifacts::write(&directory, &results_json, &report, &metadata)
        .map_err(|e| EvaluatorError::Usage(format!("failed to write the artifacts to {}: {e}", directory.display())))?;
    let artifact_uri = match tracked {
        Some(Ok(uri)) => {
            crown(&request, &mut metadata, &uri).await.map_err(|e| {
                EvaluatorError::Tracking(format!("{e} (the local artifacts are in {})", directory.display()))
            })?;
            artifacts::write(&directory, &results_json, &report, &metadata).map_err(|e| {
                EvaluatorError::Usage(format!("failed to write the artifacts to {}: {e}", directory.display()))
            })?;
            uri
        }
        Some(Err(error)) => {
            return Err(EvaluatorError::Tracking(format!(
                "{error} (the local artifacts are in {})",
                directory.display()
            )));
        }
        None => directory.display().to_string(),
    };
    if let Some(path) = &request.summary_file
        && let Err(error) = std::fs::write(path, artifacts::termination_summary(&results, &metadata, &artifact_uri))
    {
        eprintln!("kra-evaluator: failed to write the summary to {}: {error}", path.display());
    }
    Ok(artifacts::printed_summary(&results, &metadata, &directory))
}

impl Source {
    /// Who makes the predictions, for the run metadata and the evaluation key.
    fn identity(&self) -> Value {
        match self {
            Source::Immediate(predictor) => predictor.identity(),
            Source::Llm(llm, _) => llm.identity(),
        }
    }
}

/// LLM answers are kept in the store and re-used (unless turned off).
async fn answer_cache(request: &Request) -> Result<Option<Store>, EvaluatorError> {
    match &request.predictor {
        PredictorRequest::Llm(llm) if llm.cache => {
            Ok(Some(Store::open(&request.database_url).await.map_err(|e| EvaluatorError::Database(e.to_string()))?))
        }
        _ => Ok(None),
    }
}

fn results_json(results: &EvaluationResults) -> Result<String, EvaluatorError> {
    serde_json::to_string_pretty(results)
        .map(|json| json + "\n")
        .map_err(|e| EvaluatorError::Usage(format!("failed to encode the results: {e}")))
}

/// The run's evaluation key, and the summary of a skipped run when the key is the one the
/// request says to skip.
fn check_unchanged(
    request: &Request,
    dataset: &Dataset,
    sources: &[(i64, Source)],
    prompt: Option<&Prompt>,
) -> (String, Option<Value>) {
    let identity = sources.first().map(|(_, source)| source.identity()).unwrap_or_default();
    let key =
        metadata::evaluation_key(&dataset.snapshot_id, &identity, prompt.map(|p| p.sha256.as_str()), &request.seeds);
    let skipped = (request.skip_if_evaluation_key.as_deref() == Some(key.as_str()))
        .then(|| skip_unchanged(request, dataset, &key, prompt));
    (key, skipped)
}

/// A run whose dataset and predictor are those of the run it was told about: nothing is
/// predicted, tracked or written but the summary saying so.
fn skip_unchanged(request: &Request, dataset: &Dataset, evaluation_key: &str, prompt: Option<&Prompt>) -> Value {
    let message = format!(
        "skipped: the dataset {} ({} races) and the predictor are those of an earlier run (evaluation key {})",
        dataset.snapshot_id,
        dataset.races.len(),
        evaluation_key
    );
    if let Some(path) = &request.summary_file {
        let summary = crate::crd::EvaluationSummary {
            data_snapshot_id: Some(dataset.snapshot_id.clone()),
            evaluation_key: Some(evaluation_key.to_string()),
            prompt_sha256: prompt.map(|p| p.sha256.clone()),
            commit_sha: Some(COMMIT_SHA.to_string()),
            skipped: Some(artifacts::SKIPPED_UNCHANGED.to_string()),
            message: Some(message.clone()),
            ..Default::default()
        };
        if let Err(error) = std::fs::write(path, serde_json::to_string(&summary).unwrap_or_default()) {
            eprintln!("kra-evaluator: failed to write the summary to {}: {error}", path.display());
        }
    }
    serde_json::json!({
        "skipped": artifacts::SKIPPED_UNCHANGED,
        "message": message,
        "dataSnapshotId": dataset.snapshot_id,
        "evaluationKey": evaluation_key,
        "races": dataset.races.len(),
    })
}

fn read_prompt(file: &PromptFile) -> Result<Prompt, EvaluatorError> {
    let bytes = std::fs::read(&file.path).map_err(|error| {
        EvaluatorError::Usage(format!("failed to read the prompt {}: {error}", file.path.display()))
    })?;
    Ok(Prompt {
        version: file.version.clone(),
        sha256: metadata::sha256_hex(&bytes),
        template: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

fn predictor(
    request: &Request,
    seed: i64,
    prompt: Option<&Prompt>,
    cache: Option<Store>,
) -> Result<Source, EvaluatorError> {
    let usage = |message: &str| EvaluatorError::Usage(message.to_string());
    match &request.predictor {
        PredictorRequest::Baseline(Baseline::Rating) => Ok(Source::Immediate(Predictor::Rating)),
        PredictorRequest::Baseline(Baseline::Random) => Ok(Source::Immediate(Predictor::Random { seed: seed as u64 })),
        PredictorRequest::Baseline(Baseline::Form) => match request.selection.features {
            FeatureSet::CardForm => Ok(Source::Immediate(Predictor::Form)),
            FeatureSet::Card => Err(usage(
                "the form baseline ranks runners by their form: evaluate with --features card+form (after \
                 `kra-collector enrich` for these days)",
            )),
        },
        PredictorRequest::Baseline(Baseline::Favourite) => Err(usage(
            "the favourite baseline needs odds, which are held back from model input until their publication time is known",
        )),
        PredictorRequest::Llm(llm) => {
            let Some(prompt) = prompt else { return Err(usage("an LLM predictor needs --prompt-file")) };
            let settings = LlmSettings {
                endpoint: llm.endpoint.clone(),
                api: llm.api,
                model: llm.model.clone(),
                api_key: llm.api_key.clone().filter(|k| !k.is_empty()),
                template: prompt.template.clone(),
                concurrency: llm.concurrency,
                timeout: llm.timeout,
                attempts: llm.attempts.max(1),
                seed,
                prompt_sha256: prompt.sha256.clone(),
                prices: llm.prices,
            };
            let policy = ScoringPolicy { require_confidence: true, defer_threshold: llm.defer_threshold };
            let predictor = LlmPredictor::new(settings, cache).map_err(EvaluatorError::Usage)?;
            Ok(Source::Llm(predictor, policy))
        }
        PredictorRequest::Recorded(path) => match std::fs::read_to_string(path) {
            Ok(text) => Ok(Source::Immediate(Predictor::Recorded(Recorded::parse(&text)))),
            Err(error) => Err(EvaluatorError::Usage(format!("failed to read {}: {error}", path.display()))),
        },
    }
}

/// The dataset's index: every selected race chosen, checked and identified, without its input.
async fn load_dataset(store: &Store, url: &str, selection: &Selection) -> Result<Dataset, EvaluatorError> {
    let (from, to, ids) = match (&selection.from, &selection.to, &selection.races) {
        (Some(from), Some(to), None) if from <= to => (Some(*from), Some(*to), None),
        (Some(_), Some(_), None) => return Err(EvaluatorError::Usage("--to is before --from".into())),
        (None, None, Some(ids)) if !ids.is_empty() => {
            let days: Vec<jiff::civil::Date> =
                ids.iter().filter_map(|id| jiff::civil::Date::strptime("%Y%m%d", id.get(..8)?).ok()).collect();
            (days.iter().min().copied(), days.iter().max().copied(), Some(ids.clone()))
        }
        _ => return Err(EvaluatorError::Usage("select races with --from and --to, or --races".into())),
    };
    // A month of stored rows at a time. A list of ids none of which names a day reads nothing:
    // each id is then missing.
    let mut builder = DatasetBuilder::new(ids.as_deref(), selection.snapshot_policy, selection.features).index();
    for days in from.zip(to).map(|(from, to)| months(from, to)).unwrap_or_default() {
        read_days(store, selection, days, &mut builder).await?;
        // Post-race odds, for the research ROI only (the inputs are made already).
        let odds = store.win_odds_between(selection.meet, days.0, days.1).await;
        builder.add_win_odds(&odds.map_err(|e| EvaluatorError::Database(e.to_string()))?);
    }
    let dataset = builder.finish();
    let dataset = match selection.split {
        None => dataset,
        Some(part) => {
            let rule = SplitRule { holdout_min: selection.holdout_min, validation_min: selection.validation_min };
            dataset::split(dataset, part, rule)
        }
    };
    if dataset.races.is_empty() {
        return Err(EvaluatorError::NoDataset(format!(
            "no races to evaluate in {}: {}",
            redact_url(url),
            dataset::no_races_advice(&dataset.excluded)
        )));
    }
    Ok(dataset)
}

/// Add the stored races of the days `from..=to` (with their enrichments, for the `CardForm`
/// features) to a dataset.
async fn read_days(
    store: &Store,
    selection: &Selection,
    (from, to): (jiff::civil::Date, jiff::civil::Date),
    builder: &mut DatasetBuilder,
) -> Result<(), EvaluatorError> {
    let database = |e: crate::store::StoreError| EvaluatorError::Database(e.to_string());
    let stored = store.races_between(selection.meet, from, to).await.map_err(database)?;
    let enrichments = match selection.features {
        FeatureSet::CardForm => store.enrichments_between(selection.meet, from, to).await.map_err(database)?,
        FeatureSet::Card => Default::default(),
    };
    builder.add(&stored, Some(&enrichments)).map_err(|e| EvaluatorError::Leakage(e.to_string()))
}

/// The races of one part of the dataset's index (in its order) with their model inputs, made
/// again from the store. Fails when the store no longer holds exactly those races, snapshots,
/// results and enrichments (it changed since the index was read).
async fn with_inputs(
    store: &Store,
    selection: &Selection,
    part: &[DatasetRace],
) -> Result<Vec<DatasetRace>, EvaluatorError> {
    let (Some(first), Some(last)) = (part.first(), part.last()) else { return Ok(Vec::new()) };
    let day = |race: &DatasetRace| {
        race.date.parse::<jiff::civil::Date>().map_err(|e| EvaluatorError::Usage(format!("race {}: {e}", race.race_id)))
    };
    let days = (day(first)?, day(last)?);
    let ids: Vec<String> = part.iter().map(|race| race.race_id.clone()).collect();
    let mut builder = DatasetBuilder::new(Some(&ids), selection.snapshot_policy, selection.features);
    read_days(store, selection, days, &mut builder).await?;
    let races = builder.finish().races;
    let key = |r: &DatasetRace| {
        (r.race_id.clone(), r.snapshot_sha256.clone(), r.result_sha256.clone(), r.enrichment_sha256.clone())
    };
    if races.len() != part.len() || races.iter().zip(part).any(|(made, indexed)| key(made) != key(indexed)) {
        return Err(EvaluatorError::Database(format!(
            "the stored races of {} to {} changed while the evaluation read them: run it again",
            days.0, days.1
        )));
    }
    Ok(races)
}

/// The calendar months from `from` to `to`, each as its first and last day within the range.
fn months(from: jiff::civil::Date, to: jiff::civil::Date) -> Vec<(jiff::civil::Date, jiff::civil::Date)> {
    let mut parts = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start.last_of_month().min(to);
        parts.push((start, end));
        match end.tomorrow() {
            Ok(next) => start = next,
            Err(_) => break,
        }
    }
    parts
}

/// The prices per million tokens of an LLM predictor.
fn prices(request: &Request) -> Option<(f64, f64)> {
    match &request.predictor {
        PredictorRequest::Llm(llm) => llm.prices,
        _ => None,
    }
}

/// What one seed's run has gathered so far.
#[derive(Default)]
struct SeedRun {
    scores: Vec<RaceScore>,
    errors: BTreeMap<String, usize>,
    usage: Vec<RaceUsage>,
    /// LLM calls made, and those the endpoint never answered (network errors and timeouts).
    calls: usize,
    unanswered: usize,
}

/// Every seed's run, and the LLM usage of all of them (an LLM predictor only). The dataset is
/// read a month at a time: its races' inputs are made, every seed predicts them and only the
/// scores are kept.
async fn run_seeds(
    store: &Store,
    selection: &Selection,
    dataset: &Dataset,
    sources: &[(i64, Source)],
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> Result<(Vec<(i64, EvaluationResults, Value)>, Option<Vec<RaceUsage>>), EvaluatorError> {
    let mut runs: Vec<SeedRun> = sources.iter().map(|_| SeedRun::default()).collect();
    for month in dataset.races.chunk_by(|a, b| a.date.get(..7) == b.date.get(..7)) {
        let races = with_inputs(store, selection, month).await?;
        for ((_, source), run) in sources.iter().zip(&mut runs) {
            predict(&races, source, run).await;
        }
    }
    let mut results = Vec::with_capacity(sources.len());
    let mut usage: Option<Vec<RaceUsage>> = None;
    for ((seed, source), run) in sources.iter().zip(runs) {
        let (identity, policy) = match source {
            Source::Immediate(predictor) => (results::identity(dataset, predictor), predictor.policy()),
            Source::Llm(llm, policy) => {
                if run.unanswered == run.calls {
                    return Err(EvaluatorError::Unreachable(format!(
                        "the LLM endpoint {} answered none of {} calls (network errors or timeouts)",
                        llm.identity()["endpoint"],
                        run.calls
                    )));
                }
                usage.get_or_insert_with(Vec::new).extend(run.usage);
                (llm.identity(), *policy)
            }
        };
        let scored = results::Scored { identity, policy, scores: run.scores, errors: run.errors };
        results.push((*seed, results::summarise(dataset, scored, resamples, baseline), source.identity()));
    }
    Ok((results, usage))
}

/// One seed's predictions for some races (with their inputs), scored.
async fn predict(races: &[DatasetRace], source: &Source, run: &mut SeedRun) {
    match source {
        Source::Immediate(predictor) => {
            let payloads: Vec<Option<Value>> = races.iter().map(|race| predictor.predict(race)).collect();
            run.scores.extend(results::score_races(races, &payloads, &predictor.policy()));
        }
        Source::Llm(llm, policy) => {
            let answers = llm.answers(races).await;
            for error in answers.iter().filter_map(|a| a.error) {
                *run.errors.entry(error.to_string()).or_insert(0) += 1;
            }
            run.calls += answers.len();
            run.unanswered += answers.iter().filter(|a| matches!(a.error, Some("network" | "timeout"))).count();
            run.usage.extend(answers.iter().map(|a| a.usage.clone()));
            let payloads: Vec<Option<Value>> = answers.into_iter().map(|a| a.payload).collect();
            run.scores.extend(results::score_races(races, &payloads, policy));
        }
    }
}

/// The champion gate's decision: from the comparison with the baseline, or, when a champion
/// model has no champion yet, this run as its first.
/// The guard rails the run breaks against its baseline on the same races.
pub fn broken_rails(results: &EvaluationResults) -> Vec<String> {
    results
        .baseline_metrics
        .as_ref()
        .map(|baseline| super::metrics::guard_rails(&results.metrics, baseline, results.gate.guard_margin))
        .unwrap_or_default()
}

fn decision(results: &EvaluationResults, champion: Option<&ChampionRecord>) -> Option<crate::crd::PromotionDecision> {
    match (&results.comparison, champion) {
        (Some(comparison), _) => Some(super::metrics::promotion(comparison, &broken_rails(results), &results.gate)),
        (None, Some(record)) if record.previous_version.is_none() => {
            Some(crate::crd::PromotionDecision { promoted: true, reason: "FirstChampion".into(), ..Default::default() })
        }
        (None, _) => None,
    }
}

/// The baseline's race scores, and with `--champion-model` and `--baseline-run champion`, the
/// champion they are (none yet: no baseline, and this run may become the first).
async fn baseline(request: &Request) -> Result<(Option<Vec<RaceScore>>, Option<ChampionRecord>), EvaluatorError> {
    let Some(name) = &request.baseline_run else { return Ok((None, None)) };
    let Some(model) = request.champion_model.as_ref().filter(|_| name == "champion") else {
        return Ok((Some(baseline_scores(&request.output_dir, request.tracking.as_ref(), name).await?), None));
    };
    let Some(tracking) = &request.tracking else {
        return Err(EvaluatorError::Usage("--champion-model needs MLflow tracking (--mlflow-tracking-uri)".into()));
    };
    let tracking_error = |e: super::mlflow::MlflowError| EvaluatorError::Tracking(e.to_string());
    let mlflow = super::mlflow::Mlflow::new(&tracking.uri, tracking.token.clone()).map_err(tracking_error)?;
    let record =
        |version: Option<String>| ChampionRecord { model: model.clone(), previous_version: version.clone(), version };
    match mlflow.champion(model).await.map_err(tracking_error)? {
        None => Ok((None, Some(record(None)))),
        Some((version, run_id)) => {
            let bytes = mlflow.results_of_run(&run_id).await.map_err(tracking_error)?;
            Ok((Some(scores_of(&bytes, &format!("champion (version {version})"))?), Some(record(Some(version)))))
        }
    }
}

/// The gate's decision is tagged on the tracked run (its reason, and the guard rails broken);
/// a promoted run (or a model's first) becomes the champion: a new model version and the alias
/// moved to it.
async fn crown(request: &Request, metadata: &mut RunMetadata, artifact_uri: &str) -> Result<(), String> {
    let (Some(tracking), Some(decision), Some(run_id)) =
        (&request.tracking, &metadata.promotion, &metadata.mlflow_run_id)
    else {
        return Ok(());
    };
    let mlflow = super::mlflow::Mlflow::new(&tracking.uri, tracking.token.clone()).map_err(|e| e.to_string())?;
    if let Some(record) = metadata.champion.as_mut()
        && decision.promoted
    {
        record.version = Some(mlflow.crown(&record.model, run_id, artifact_uri).await.map_err(|e| e.to_string())?);
    }
    let mut tags = vec![("kra.promotion", decision.reason.clone())];
    if !decision.guard_rails.is_empty() {
        tags.push(("kra.promotion.guard_rails", decision.guard_rails.join("; ")));
    }
    tags.extend(metadata.champion.as_ref().and_then(|r| r.version.clone()).map(|v| ("kra.champion_version", v)));
    mlflow.set_tags(run_id, &tags).await.map_err(|e| e.to_string())
}

/// The race scores of an earlier run: from the output directory, else (with tracking
/// configured) from the newest finished MLflow run of that name — pods do not share a disk.
async fn baseline_scores(
    output_dir: &Path,
    tracking: Option<&Tracking>,
    name: &str,
) -> Result<Vec<RaceScore>, EvaluatorError> {
    let path = output_dir.join(name).join("results.json");
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => {
            let from_mlflow = match tracking {
                Some(tracking) => {
                    let tracking_error = |e: super::mlflow::MlflowError| EvaluatorError::Tracking(e.to_string());
                    let mlflow =
                        super::mlflow::Mlflow::new(&tracking.uri, tracking.token.clone()).map_err(tracking_error)?;
                    mlflow.finished_results(&tracking.experiment, name).await.map_err(tracking_error)?
                }
                None => None,
            };
            from_mlflow.ok_or_else(|| {
                EvaluatorError::Usage(format!(
                    "failed to read the baseline run {name:?}: not at {} ({error}){}",
                    path.display(),
                    if tracking.is_some() { " nor finished in MLflow" } else { "" }
                ))
            })?
        }
    };
    scores_of(&text, &format!("{name:?}"))
}

fn scores_of(text: &[u8], name: &str) -> Result<Vec<RaceScore>, EvaluatorError> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| EvaluatorError::Usage(format!("the baseline run {name} has no readable results: {e}")))?;
    serde_json::from_value(value["races"].clone())
        .map_err(|e| EvaluatorError::Usage(format!("the baseline run {name} has no readable race scores: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_read_a_calendar_month_at_a_time() {
        let date = |text: &str| text.parse::<jiff::civil::Date>().unwrap();
        let parts = months(date("2024-12-30"), date("2025-02-03"));
        let text: Vec<(String, String)> = parts.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(
            text,
            [
                ("2024-12-30".into(), "2024-12-31".into()),
                ("2025-01-01".into(), "2025-01-31".into()),
                ("2025-02-01".into(), "2025-02-03".into())
            ]
        );
        assert_eq!(months(date("2025-05-24"), date("2025-05-24")).len(), 1);
        assert!(months(date("2025-05-25"), date("2025-05-24")).is_empty());
    }

    /// Two stored races of 2025-05-24 with a card of eight runners and a result.
    async fn store_two_races(url: &str) -> Store {
        use crate::race::{PlannedRace, RaceKey};
        let store = Store::open(url).await.unwrap();
        let at: jiff::Timestamp = "2025-05-24T00:00:00Z".parse().unwrap();
        for number in [1, 2] {
            let key = RaceKey { date: "2025-05-24".parse().unwrap(), meet: crate::crd::Meet::Seoul, number };
            store.upsert_race(&PlannedRace { key, start: None, distance: Some(1200) }, at).await.unwrap();
            let entries: Vec<Value> =
                (1..=8).map(|c| serde_json::json!({"chul_no": c, "rating": 50 - c, "scratched": false})).collect();
            let card = serde_json::json!({"card": {"distance": 1200, "entries": entries}, "track": null});
            store
                .add_prerace_snapshot(&key.race_id(), "kra-prerace-v1", &card, &serde_json::json!({}), at, false)
                .await
                .unwrap();
            let result = serde_json::json!({"placed": [1, 2, 3], "finishers": [], "top3": [1, 2, 3], "dead_heats": []});
            store.add_result(&key.race_id(), &result, at).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn inputs_are_made_again_from_the_store_and_a_store_changed_since_the_index_fails_the_run() {
        let dir = std::env::temp_dir().join(format!("kra-run-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("kra.sqlite3").display());
        let store = store_two_races(&url).await;
        let day: jiff::civil::Date = "2025-05-24".parse().unwrap();
        let selection = Selection { from: Some(day), to: Some(day), ..Default::default() };

        let index = load_dataset(&store, &url, &selection).await.unwrap();
        assert_eq!(index.races.len(), 2);
        assert!(index.races.iter().all(|r| r.input.text().is_empty() && r.field_size == 8), "an index holds no input");
        let races = with_inputs(&store, &selection, &index.races).await.unwrap();
        let runners = |r: &DatasetRace| r.input.value()["runners"].as_array().map_or(0, Vec::len);
        assert_eq!(races.iter().map(runners).collect::<Vec<_>>(), [8, 8], "the inputs are made again");
        assert_eq!(
            races.iter().map(|r| &r.race_id).collect::<Vec<_>>(),
            index.races.iter().map(|r| &r.race_id).collect::<Vec<_>>()
        );

        // A corrected result stored after the index was read: the run fails, it does not score
        // races against an answer other than the one its dataset id stands for.
        let corrected = serde_json::json!({"placed": [2, 1, 3], "finishers": [], "top3": [2, 1, 3], "dead_heats": []});
        store.add_result(&index.races[1].race_id, &corrected, "2025-05-25T00:00:00Z".parse().unwrap()).await.unwrap();
        match with_inputs(&store, &selection, &index.races).await {
            Err(EvaluatorError::Database(message)) => {
                assert!(message.contains("changed while the evaluation read them"), "{message}")
            }
            other => panic!("a changed store is an error, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
