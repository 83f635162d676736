//! Run tracking in MLflow through its REST API: the experiment, a run named after the evaluation,
//! the metadata as params and tags, the metrics, the artifacts, and the final status.
//!
//! A re-run of the same evaluation (same run name, same results) never logs anything twice: a
//! finished run carrying the same `kra.run_name` and `kra.results_sha256` tags is reused as it
//! is. An unfinished one (a crash while logging) is marked KILLED and a fresh run is logged.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// MLflow's limits per `runs/log-batch` call.
const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
const MAX_TAGS: usize = 100;
/// MLflow keeps at most this many characters of a param value.
const MAX_PARAM_VALUE: usize = 6000;

#[derive(Debug, thiserror::Error)]
#[error("failed to {step} in MLflow at {base}: {detail}")]
pub struct MlflowError {
    step: &'static str,
    base: String,
    detail: String,
}

pub struct Mlflow {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// What was logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub experiment_id: String,
    pub run_id: String,
    /// An earlier finished run with the same results was found and reused.
    pub reused: bool,
    pub artifact_uri: String,
}

/// A metric to log.
pub struct Metric {
    pub key: String,
    pub value: f64,
}

/// A dataset a run used, as an MLflow run input.
pub struct DatasetInput {
    pub name: String,
    /// The dataset's content id.
    pub digest: String,
    /// Where it came from (the selection, never a database URL).
    pub source: String,
    /// A summary: races, exclusions, policy.
    pub profile: String,
}

/// The alias of a registered model's current champion.
pub const CHAMPION_ALIAS: &str = "champion";

/// What a finished run logs.
pub struct Completion<'a> {
    pub params: &'a [(String, String)],
    pub metrics: &'a [Metric],
    pub dataset: Option<DatasetInput>,
    pub files: &'a [(&'a str, Vec<u8>)],
}

impl Mlflow {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, MlflowError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| MlflowError {
            step: "build the HTTP client",
            base: base.to_string(),
            detail: e.without_url().to_string(),
        })?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), token: token.filter(|t| !t.is_empty()) })
    }

    fn error(&self, step: &'static str, detail: impl std::fmt::Display) -> MlflowError {
        MlflowError { step, base: self.base.clone(), detail: detail.to_string() }
    }

    async fn call(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), MlflowError> {
        let mut request = self.http.request(method, format!("{}/api/2.0/mlflow/{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| self.error(step, e.without_url()))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| self.error(step, e.without_url()))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn ok(
        &self,
        step: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, MlflowError> {
        let (status, value) = self.call(step, method, path, body).await?;
        if status == 200 {
            Ok(value)
        } else {
            Err(self.error(step, format!("HTTP {status}: {}", value["message"].as_str().unwrap_or("no message"))))
        }
    }

    async fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, value) = self.call("look up the experiment", reqwest::Method::GET, &path, None).await?;
        if status == 200 {
            return value["experiment"]["experiment_id"]
                .as_str()
                .map(String::from)
                .ok_or_else(|| self.error("look up the experiment", "no experiment id"));
        }
        let created = self
            .ok("create the experiment", reqwest::Method::POST, "experiments/create", Some(json!({"name": name})))
            .await?;
        created["experiment_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| self.error("create the experiment", "no experiment id"))
    }

    async fn existing_run(
        &self,
        experiment: &str,
        run_name: &str,
        results_sha: &str,
    ) -> Result<Option<(String, String, String)>, MlflowError> {
        let filter = format!(
            "tags.`kra.run_name` = '{}' and tags.`kra.results_sha256` = '{results_sha}'",
            run_name.replace('\'', "")
        );
        let found = self
            .ok(
                "search runs",
                reqwest::Method::POST,
                "runs/search",
                Some(json!({"experiment_ids": [experiment], "filter": filter, "max_results": 10})),
            )
            .await?;
        Ok(found["runs"].as_array().and_then(|runs| {
            runs.iter().find_map(|run| {
                let info = &run["info"];
                Some((
                    info["run_id"].as_str()?.to_string(),
                    info["status"].as_str()?.to_string(),
                    info["artifact_uri"].as_str().unwrap_or_default().to_string(),
                ))
            })
        }))
    }

    async fn upload(&self, experiment: &str, run: &str, name: &str, body: Vec<u8>) -> Result<(), MlflowError> {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/{name}", self.base);
        let mut request = self.http.put(url).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.error("upload an artifact", e.without_url()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.error("upload an artifact", format!("HTTP {} for {name}", response.status())))
        }
    }

    /// The `results.json` of the newest finished run named `run_name` in the experiment, if any.
    /// The champion of a registered model: the version its `champion` alias points at and that
    /// version's run. `None` while the model or the alias does not exist.
    pub async fn champion(&self, model: &str) -> Result<Option<(String, String)>, MlflowError> {
        let path = format!(
            "registered-models/alias?name={}&alias={CHAMPION_ALIAS}",
            percent_encoding::utf8_percent_encode(model, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, body) = self.call("look up the champion", reqwest::Method::GET, &path, None).await?;
        if status == 404 || body["error_code"] == "RESOURCE_DOES_NOT_EXIST" {
            return Ok(None);
        }
        if status != 200 {
            return Err(self.error("look up the champion", format!("HTTP {status}: {body}")));
        }
        let version = &body["model_version"];
        match (version["version"].as_str(), version["run_id"].as_str()) {
            (Some(v), Some(run)) => Ok(Some((v.to_string(), run.to_string()))),
            _ => Err(self.error("look up the champion", format!("no version or run in {body}"))),
        }
    }

    /// The `results.json` of a run, by its id.
    pub async fn results_of_run(&self, run_id: &str) -> Result<Vec<u8>, MlflowError> {
        let run = self
            .ok("read the champion's run", reqwest::Method::GET, &format!("runs/get?run_id={run_id}"), None)
            .await?;
        let experiment_id = run["run"]["info"]["experiment_id"]
            .as_str()
            .ok_or_else(|| self.error("read the champion's run", "no experiment id"))?;
        self.download_results(experiment_id, run_id).await
    }

    /// Make a run the champion of a registered model (created when missing): a new model version
    /// from the run's artifacts, and the `champion` alias moved to it. Earlier versions stay.
    /// Returns the new version.
    pub async fn crown(&self, model: &str, run_id: &str, source: &str) -> Result<String, MlflowError> {
        let (status, body) = self
            .call("register the model", reqwest::Method::POST, "registered-models/create", Some(json!({"name": model})))
            .await?;
        if status != 200 && body["error_code"] != "RESOURCE_ALREADY_EXISTS" {
            return Err(self.error("register the model", format!("HTTP {status}: {body}")));
        }
        let created = self
            .ok(
                "create a model version",
                reqwest::Method::POST,
                "model-versions/create",
                Some(json!({"name": model, "source": source, "run_id": run_id})),
            )
            .await?;
        let version = created["model_version"]["version"]
            .as_str()
            .ok_or_else(|| self.error("create a model version", "no version"))?
            .to_string();
        let alias = json!({"name": model, "alias": CHAMPION_ALIAS, "version": version});
        self.ok("move the champion alias", reqwest::Method::POST, "registered-models/alias", Some(alias)).await?;
        Ok(version)
    }

    /// Set tags on a run.
    pub async fn set_tags(&self, run_id: &str, tags: &[(&str, String)]) -> Result<(), MlflowError> {
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        self.ok("tag the run", reqwest::Method::POST, "runs/log-batch", Some(json!({"run_id": run_id, "tags": tags})))
            .await
            .map(|_| ())
    }

    async fn download_results(&self, experiment_id: &str, run_id: &str) -> Result<Vec<u8>, MlflowError> {
        let url =
            format!("{}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/results.json", self.base);
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.error("download an artifact", e.without_url()))?;
        if !response.status().is_success() {
            return Err(self.error(
                "download an artifact",
                format!("HTTP {} for results.json of run {run_id}", response.status()),
            ));
        }
        let bytes = response.bytes().await.map_err(|e| self.error("download an artifact", e.without_url()))?;
        Ok(bytes.to_vec())
    }

    pub async fn finished_results(
        &self,
        experiment_name: &str,
        run_name: &str,
    ) -> Result<Option<Vec<u8>>, MlflowError> {
        let path = format!(
            "experiments/get-by-name?experiment_name={}",
            percent_encoding::utf8_percent_encode(experiment_name, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, experiment) = self.call("look up the experiment", reqwest::Method::GET, &path, None).await?;
        let Some(experiment_id) = experiment["experiment"]["experiment_id"].as_str().filter(|_| status == 200) else {
            return Ok(None);
        };
        let filter =
            format!("tags.`kra.run_name` = '{}' and attributes.status = 'FINISHED'", run_name.replace('\'', ""));
        let body = json!({"experiment_ids": [experiment_id], "filter": filter, "max_results": 1, "order_by": ["attributes.start_time DESC"]});
        let found = self.ok("search runs", reqwest::Method::POST, "runs/search", Some(body)).await?;
        let Some(run_id) = found["runs"][0]["info"]["run_id"].as_str() else { return Ok(None) };
        self.download_results(experiment_id, run_id).await.map(Some)
    }

    /// Find the experiment (creating it) and start the run, or find a finished run with the same
    /// results to reuse.
    pub async fn begin(
        &self,
        experiment_name: &str,
        run_name: &str,
        results_sha: &str,
        tags: &[(String, String)],
        started_ms: i64,
    ) -> Result<Logged, MlflowError> {
        let experiment_id = self.experiment(experiment_name).await?;
        if let Some((run_id, status, artifact_uri)) = self.existing_run(&experiment_id, run_name, results_sha).await? {
            if status == "FINISHED" {
                return Ok(Logged { experiment_id, run_id, reused: true, artifact_uri });
            }
            let kill = json!({"run_id": run_id, "status": "KILLED", "end_time": started_ms});
            self.ok("close an unfinished run", reqwest::Method::POST, "runs/update", Some(kill)).await?;
        }
        let mut all_tags = vec![
            ("kra.run_name".to_string(), run_name.to_string()),
            ("kra.results_sha256".to_string(), results_sha.to_string()),
        ];
        all_tags.extend(tags.iter().cloned());
        let as_json =
            |tags: &[(String, String)]| tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>();
        let first = &all_tags[..all_tags.len().min(MAX_TAGS)];
        let create = json!({"experiment_id": experiment_id, "run_name": run_name, "start_time": started_ms, "tags": as_json(first)});
        let created = self.ok("create the run", reqwest::Method::POST, "runs/create", Some(create)).await?;
        let run_id = created["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| self.error("create the run", "no run id"))?
            .to_string();
        for chunk in all_tags[first.len()..].chunks(MAX_TAGS) {
            self.ok(
                "log tags",
                reqwest::Method::POST,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "tags": as_json(chunk)})),
            )
            .await?;
        }
        let artifact_uri = created["run"]["info"]["artifact_uri"].as_str().unwrap_or_default().to_string();
        Ok(Logged { experiment_id, run_id, reused: false, artifact_uri })
    }

    /// Log params, metrics, the dataset input and artifacts (name, bytes) of a started run, then
    /// finish it.
    pub async fn complete(&self, run: &Logged, logged: &Completion<'_>, finished_ms: i64) -> Result<(), MlflowError> {
        let Completion { params, metrics, dataset, files } = logged;
        let run_id = &run.run_id;
        if let Some(dataset) = dataset {
            // The dataset as a run input: the MLflow UI shows which data each run used.
            let input = json!({"run_id": run_id, "datasets": [{
                "tags": [{"key": "mlflow.data.context", "value": "evaluation"}],
                "dataset": {"name": dataset.name, "digest": dataset.digest, "source_type": "kra-store",
                            "source": dataset.source, "profile": dataset.profile},
            }]});
            self.ok("log the dataset input", reqwest::Method::POST, "runs/log-inputs", Some(input)).await?;
        }
        let params: Vec<Value> = params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v.chars().take(MAX_PARAM_VALUE).collect::<String>()}))
            .collect();
        for chunk in params.chunks(MAX_PARAMS) {
            self.ok(
                "log params",
                reqwest::Method::POST,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "params": chunk})),
            )
            .await?;
        }
        let metrics: Vec<Value> = metrics
            .iter()
            .filter(|m| m.value.is_finite())
            .map(|m| json!({"key": m.key, "value": m.value, "timestamp": finished_ms, "step": 0}))
            .collect();
        for chunk in metrics.chunks(MAX_METRICS) {
            self.ok(
                "log metrics",
                reqwest::Method::POST,
                "runs/log-batch",
                Some(json!({"run_id": run_id, "metrics": chunk})),
            )
            .await?;
        }
        for (name, body) in files.iter() {
            self.upload(&run.experiment_id, run_id, name, body.clone()).await?;
        }
        let finish = json!({"run_id": run_id, "status": "FINISHED", "end_time": finished_ms});
        self.ok("finish the run", reqwest::Method::POST, "runs/update", Some(finish)).await?;
        Ok(())
    }
}
