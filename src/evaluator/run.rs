//! One evaluation, step by step: read the prompt, make the predictor, load the dataset, read the
//! baseline run, predict and score, then record the metadata, the report, MLflow and the files.
//! Every step names what failed in an [`EvaluatorError`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::dataset::{self, Dataset, DatasetBuilder, SplitRule};
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
    let dataset = load_dataset(&request.database_url, &request.selection).await?;
    let (evaluation_key, unchanged) = check_unchanged(&request, &dataset, &sources, prompt.as_ref());
    if let Some(skipped) = unchanged {
        return Ok(skipped);
    }
    let (baseline, champion) = baseline(&request).await?;
    let (runs, usage) = run_seeds(&dataset, &sources, request.resamples, baseline.as_deref()).await?;
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

async fn load_dataset(url: &str, selection: &Selection) -> Result<Dataset, EvaluatorError> {
    let store = Store::open(url).await.map_err(|e| EvaluatorError::Database(e.to_string()))?;
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
    // A month of stored rows at a time: only the model inputs of every race are held at once.
    // A list of ids none of which names a day reads nothing: each id is then missing.
    let mut builder = DatasetBuilder::new(ids.as_deref(), selection.snapshot_policy, selection.features);
    for (from, to) in from.zip(to).map(|(from, to)| months(from, to)).unwrap_or_default() {
        let database = |e: crate::store::StoreError| EvaluatorError::Database(e.to_string());
        let stored = store.races_between(selection.meet, from, to).await.map_err(database)?;
        let enrichments = match selection.features {
            FeatureSet::CardForm => store.enrichments_between(selection.meet, from, to).await.map_err(database)?,
            FeatureSet::Card => Default::default(),
        };
        builder.add(&stored, Some(&enrichments)).map_err(|e| EvaluatorError::Leakage(e.to_string()))?;
        // Post-race odds, for the research ROI only (the inputs are made already).
        builder.add_win_odds(&store.win_odds_between(selection.meet, from, to).await.map_err(database)?);
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

/// Every seed's run, and the LLM usage of all of them (an LLM predictor only).
async fn run_seeds(
    dataset: &Dataset,
    sources: &[(i64, Source)],
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> Result<(Vec<(i64, EvaluationResults, Value)>, Option<Vec<RaceUsage>>), EvaluatorError> {
    let mut runs = Vec::with_capacity(sources.len());
    let mut usage: Option<Vec<RaceUsage>> = None;
    for (seed, source) in sources {
        let (results, identity, races) = predict_and_score(dataset, source, resamples, baseline).await?;
        if let Some(races) = races {
            usage.get_or_insert_with(Vec::new).extend(races);
        }
        runs.push((*seed, results, identity));
    }
    Ok((runs, usage))
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

/// A promoted run (or a model's first) becomes the champion: a new model version and the alias
/// moved to it. The decision is tagged on the run either way.
async fn crown(request: &Request, metadata: &mut RunMetadata, artifact_uri: &str) -> Result<(), String> {
    let (Some(tracking), Some(record), Some(decision), Some(run_id)) =
        (&request.tracking, metadata.champion.as_mut(), &metadata.promotion, &metadata.mlflow_run_id)
    else {
        return Ok(());
    };
    let mlflow = super::mlflow::Mlflow::new(&tracking.uri, tracking.token.clone()).map_err(|e| e.to_string())?;
    if decision.promoted {
        record.version = Some(mlflow.crown(&record.model, run_id, artifact_uri).await.map_err(|e| e.to_string())?);
    }
    let mut tags = vec![("kra.promotion", decision.reason.clone())];
    tags.extend(record.version.clone().map(|v| ("kra.champion_version", v)));
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

/// The results, the predictor's identity and, for an LLM, what each race's answer cost.
async fn predict_and_score(
    dataset: &Dataset,
    source: &Source,
    resamples: usize,
    baseline: Option<&[RaceScore]>,
) -> Result<(EvaluationResults, Value, Option<Vec<RaceUsage>>), EvaluatorError> {
    match source {
        Source::Immediate(predictor) => {
            Ok((results::evaluate(dataset, predictor, resamples, baseline), predictor.identity(), None))
        }
        Source::Llm(llm, policy) => {
            let answers = llm.answers(&dataset.races).await;
            let mut errors = BTreeMap::new();
            for error in answers.iter().filter_map(|a| a.error) {
                *errors.entry(error.to_string()).or_insert(0usize) += 1;
            }
            if answers.iter().all(|a| matches!(a.error, Some("network" | "timeout"))) {
                return Err(EvaluatorError::Unreachable(format!(
                    "the LLM endpoint {} answered none of {} calls (network errors or timeouts)",
                    llm.identity()["endpoint"],
                    answers.len()
                )));
            }
            let usage: Vec<RaceUsage> = answers.iter().map(|a| a.usage.clone()).collect();
            let answers = results::Answers {
                identity: llm.identity(),
                policy: *policy,
                payloads: answers.into_iter().map(|a| a.payload).collect(),
                errors,
            };
            Ok((results::score_answers(dataset, answers, resamples, baseline), llm.identity(), Some(usage)))
        }
    }
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
}
