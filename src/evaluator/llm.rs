//! The LLM predictor: the prompt template and one race as JSON, sent to an OpenAI-compatible
//! chat completions endpoint (also vLLM, Ollama, llama.cpp servers) or the Anthropic Messages
//! API, with bounded concurrency, a timeout per call and retries for failures that can pass.
//! The answer text goes through the same contract as every other prediction. Answers are kept
//! in the store, keyed by endpoint, model, prompt, race input and seed: the same evaluation again
//! re-uses them and calls nothing; any change of the five calls again. Token use is counted per
//! call and per run, and priced when prices are given.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::{Value, json};

use super::dataset::DatasetRace;
use super::metadata::sha256_hex;
use super::scoring::payload_from_text;
use crate::crd::evaluationrun::LlmApi;
use crate::store::{CachedAnswer, Store};

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
    /// sha256 of the prompt template (part of the answers' cache key).
    pub prompt_sha256: String,
    /// Prices per million tokens (prompt, completion): the run's cost.
    pub prices: Option<(f64, f64)>,
}

/// The tokens of one answered call, as the endpoint reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: Option<i64>,
    pub completion: Option<i64>,
}

/// What one race's answer cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RaceUsage {
    pub race_id: String,
    /// The answer was kept from an earlier run: no call.
    pub cached: bool,
    /// HTTP calls made (retries included).
    pub calls: u32,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
}

/// What a run's answers cost: calls, tokens paid (fresh answers) and re-used (kept answers),
/// the cost when prices are given, and each race's share.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunUsage {
    pub calls: u64,
    pub cached_answers: usize,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Tokens of the kept answers, not paid again.
    pub tokens_reused: i64,
    pub cost: Option<f64>,
    pub races: Vec<RaceUsage>,
}

/// Total the races' usage (pure).
pub fn run_usage(races: Vec<RaceUsage>, prices: Option<(f64, f64)>) -> RunUsage {
    let mut usage = RunUsage::default();
    for race in &races {
        usage.calls += u64::from(race.calls);
        let tokens = race.prompt_tokens.unwrap_or(0) + race.completion_tokens.unwrap_or(0);
        if race.cached {
            usage.cached_answers += 1;
            usage.tokens_reused += tokens;
        } else {
            usage.prompt_tokens += race.prompt_tokens.unwrap_or(0);
            usage.completion_tokens += race.completion_tokens.unwrap_or(0);
        }
    }
    usage.cost = prices.map(|(prompt, completion)| {
        (usage.prompt_tokens as f64 * prompt + usage.completion_tokens as f64 * completion) / 1_000_000.0
    });
    usage.races = races;
    usage
}

/// What one race's call gave.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmAnswer {
    pub payload: Option<Value>,
    /// Why there is no payload: a transport class, or `no_json` when the text held none.
    pub error: Option<&'static str>,
    pub usage: RaceUsage,
}

/// The instruction appended to every prompt: the one output contract.
pub const OUTPUT_INSTRUCTION: &str = "Answer with one JSON object and nothing else: \
{\"predicted\": [chulNo, chulNo, chulNo], \"confidence\": <0..1>, \"reasoning\": \"<short>\"}. \
The three chulNo values are distinct start numbers of runners in this race, most likely first.";

pub fn prompt(template: &str, race: &DatasetRace) -> String {
    let race_json = serde_json::to_string_pretty(&race.input.value()).unwrap_or_default();
    format!("{}\n\n## Race {}\n```json\n{race_json}\n```\n\n{OUTPUT_INSTRUCTION}\n", template.trim_end(), race.race_id)
}

enum CallError {
    Retryable(&'static str),
    Final(&'static str),
}

pub struct LlmPredictor {
    http: reqwest::Client,
    settings: LlmSettings,
    /// Where answers are kept and looked up; `None`: every race is asked.
    cache: Option<Store>,
}

impl LlmPredictor {
    pub fn new(settings: LlmSettings, cache: Option<Store>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("kra-evaluator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("failed to build the HTTP client: {}", e.without_url()))?;
        Ok(Self { http, settings, cache })
    }

    pub fn identity(&self) -> Value {
        json!({"kind": "llm", "api": crate::crd::arg_value(self.settings.api), "model": self.settings.model, "endpoint": self.settings.endpoint})
    }

    async fn call(&self, text: &str) -> Result<(String, Tokens), CallError> {
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
        let (text, tokens) = match s.api {
            LlmApi::OpenAiChat => (
                body["choices"][0]["message"]["content"].as_str(),
                Tokens {
                    prompt: body["usage"]["prompt_tokens"].as_i64(),
                    completion: body["usage"]["completion_tokens"].as_i64(),
                },
            ),
            LlmApi::AnthropicMessages => (
                body["content"]
                    .as_array()
                    .and_then(|blocks| blocks.iter().find(|b| b["type"] == "text"))
                    .and_then(|b| b["text"].as_str()),
                Tokens {
                    prompt: body["usage"]["input_tokens"].as_i64(),
                    completion: body["usage"]["output_tokens"].as_i64(),
                },
            ),
        };
        text.map(|t| (t.to_string(), tokens)).ok_or(CallError::Retryable("malformed"))
    }

    /// The key of a race's answer: endpoint, API, model, prompt, race input and seed.
    fn cache_entry(&self, race: &DatasetRace) -> CachedAnswer {
        let s = &self.settings;
        let input_sha256 = sha256_hex(race.input.text().as_bytes());
        let api = crate::crd::arg_value(s.api);
        let key = format!("{api}\n{}\n{}\n{}\n{input_sha256}\n{}", s.endpoint, s.model, s.prompt_sha256, s.seed);
        CachedAnswer {
            cache_key: sha256_hex(key.as_bytes()),
            endpoint: s.endpoint.clone(),
            model: s.model.clone(),
            prompt_sha256: s.prompt_sha256.clone(),
            input_sha256,
            seed: s.seed,
            answer: String::new(),
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    fn answered(race: &DatasetRace, text: &str, cached: bool, calls: u32, tokens: Tokens) -> LlmAnswer {
        let payload = payload_from_text(text);
        let error = payload.is_none().then_some("no_json");
        let usage = RaceUsage {
            race_id: race.race_id.clone(),
            cached,
            calls,
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
        };
        LlmAnswer { payload, error, usage }
    }

    async fn answer(&self, race: &DatasetRace) -> LlmAnswer {
        let mut entry = self.cache_entry(race);
        if let Some(cache) = &self.cache {
            match cache.cached_answer(&entry.cache_key).await {
                Ok(Some(kept)) => {
                    let tokens = Tokens { prompt: kept.prompt_tokens, completion: kept.completion_tokens };
                    return Self::answered(race, &kept.answer, true, 0, tokens);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(race = %race.race_id, %error, "kept LLM answers unreadable; asking"),
            }
        }
        let text = prompt(&self.settings.template, race);
        let failed = |class, calls| LlmAnswer {
            payload: None,
            error: Some(class),
            usage: RaceUsage { race_id: race.race_id.clone(), calls, ..Default::default() },
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call(&text).await {
                Ok((answer, tokens)) => {
                    if let Some(cache) = &self.cache {
                        entry.answer = answer.clone();
                        (entry.prompt_tokens, entry.completion_tokens) = (tokens.prompt, tokens.completion);
                        if let Err(error) = cache.keep_answer(&entry, jiff::Timestamp::now()).await {
                            tracing::warn!(race = %race.race_id, %error, "failed to keep an LLM answer");
                        }
                    }
                    return Self::answered(race, &answer, false, attempt, tokens);
                }
                Err(CallError::Final(class)) => return failed(class, attempt),
                Err(CallError::Retryable(class)) if attempt >= self.settings.attempts => {
                    return failed(class, attempt);
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
