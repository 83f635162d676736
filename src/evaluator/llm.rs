//! The LLM predictor: the prompt template and one race as JSON, sent to an OpenAI-compatible
//! chat completions endpoint (also vLLM, Ollama, llama.cpp servers) or the Anthropic Messages
//! API, with bounded concurrency, a timeout per call and retries for failures that can pass.
//! The answer text goes through the same contract as every other prediction.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::dataset::DatasetRace;
use super::scoring::payload_from_text;
use crate::crd::evaluationrun::LlmApi;

#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// Base URL including the API version: `http://host:8000/v1` (`/chat/completions` or
    /// `/messages` is appended).
    pub endpoint: String,
    pub api: LlmApi,
    pub model: String,
    pub api_key: Option<String>,
    pub template: String,
    pub concurrency: usize,
    pub timeout: Duration,
    pub attempts: u32,
    pub seed: i64,
}

/// What one race's call gave.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmAnswer {
    pub payload: Option<Value>,
    /// Why there is no payload: a transport class, or `no_json` when the text held none.
    pub error: Option<&'static str>,
}

/// The instruction appended to every prompt: the one output contract.
pub const OUTPUT_INSTRUCTION: &str = "Answer with one JSON object and nothing else: \
{\"predicted\": [chulNo, chulNo, chulNo], \"confidence\": <0..1>, \"reasoning\": \"<short>\"}. \
The three chulNo values are distinct start numbers of runners in this race, most likely first.";

pub fn prompt(template: &str, race: &DatasetRace) -> String {
    let race_json = serde_json::to_string_pretty(&race.input).unwrap_or_default();
    format!("{}\n\n## Race {}\n```json\n{race_json}\n```\n\n{OUTPUT_INSTRUCTION}\n", template.trim_end(), race.race_id)
}

enum CallError {
    Retryable(&'static str),
    Final(&'static str),
}

pub struct LlmPredictor {
    http: reqwest::Client,
    settings: LlmSettings,
}

impl LlmPredictor {
    pub fn new(settings: LlmSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("kra-evaluator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("failed to build the HTTP client: {}", e.without_url()))?;
        Ok(Self { http, settings })
    }

    pub fn identity(&self) -> Value {
        json!({"kind": "llm", "api": crate::crd::arg_value(self.settings.api), "model": self.settings.model, "endpoint": self.settings.endpoint})
    }

    async fn call(&self, text: &str) -> Result<String, CallError> {
        let s = &self.settings;
        let base = s.endpoint.trim_end_matches('/');
        let request = match s.api {
            LlmApi::OpenAiChat => {
                let body = json!({
                    "model": s.model, "temperature": 0, "seed": s.seed,
                    "messages": [{"role": "user", "content": text}],
                });
                let mut request = self
                    .http
                    .post(format!("{base}/chat/completions"))
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
                if let Some(key) = &s.api_key {
                    request = request.bearer_auth(key);
                }
                request
            }
            LlmApi::AnthropicMessages => {
                let body = json!({
                    "model": s.model, "max_tokens": 1024, "temperature": 0,
                    "messages": [{"role": "user", "content": text}],
                });
                let mut request = self
                    .http
                    .post(format!("{base}/messages"))
                    .header("anthropic-version", "2023-06-01")
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
                if let Some(key) = &s.api_key {
                    request = request.header("x-api-key", key);
                }
                request
            }
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() { CallError::Retryable("timeout") } else { CallError::Retryable("network") }
        })?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            401 | 403 => return Err(CallError::Final("auth")),
            429 => return Err(CallError::Retryable("rate_limited")),
            500..=599 => return Err(CallError::Retryable("server_error")),
            _ => return Err(CallError::Final("invalid_request")),
        }
        let bytes = response.bytes().await.map_err(|_| CallError::Retryable("malformed"))?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| CallError::Retryable("malformed"))?;
        let text = match s.api {
            LlmApi::OpenAiChat => body["choices"][0]["message"]["content"].as_str(),
            LlmApi::AnthropicMessages => body["content"]
                .as_array()
                .and_then(|blocks| blocks.iter().find(|b| b["type"] == "text"))
                .and_then(|b| b["text"].as_str()),
        };
        text.map(String::from).ok_or(CallError::Retryable("malformed"))
    }

    async fn answer(&self, race: &DatasetRace) -> LlmAnswer {
        let text = prompt(&self.settings.template, race);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(&text).await {
                Ok(answer) => {
                    let payload = payload_from_text(&answer);
                    let error = payload.is_none().then_some("no_json");
                    return LlmAnswer { payload, error };
                }
                Err(CallError::Final(class)) => return LlmAnswer { payload: None, error: Some(class) },
                Err(CallError::Retryable(class)) if attempt >= self.settings.attempts => {
                    return LlmAnswer { payload: None, error: Some(class) };
                }
                Err(CallError::Retryable(_)) => {
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
            }
        }
    }

    /// Answers for every race, in the dataset's order, at most `concurrency` calls at once.
    pub async fn answers(&self, races: &[DatasetRace]) -> Vec<LlmAnswer> {
        futures::stream::iter(races)
            .map(|race| self.answer(race))
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await
    }
}
