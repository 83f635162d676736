//! A scripted LLM endpoint for the evaluator tests: OpenAI-compatible `/v1/chat/completions`
//! and Anthropic `/v1/messages`. Each race (found by the `## Race <id>` line of the prompt) gets
//! its scripted replies in order, then the default answer.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Reply {
    /// The model's answer text.
    Text(String),
    Status(u16),
    /// Answer after a delay.
    Slow(Duration, String),
}

#[derive(Default)]
struct State_ {
    script: HashMap<String, Vec<Reply>>,
    default: String,
    /// (path, authorization header, x-api-key header, race id)
    calls: Vec<(String, Option<String>, Option<String>, String)>,
    /// (prompt tokens, completion tokens) reported with each answer.
    usage: Vec<(i64, i64)>,
}

#[derive(Clone)]
pub struct FakeLlm {
    pub url: String,
    state: Arc<Mutex<State_>>,
}

fn race_id(body: &Value) -> String {
    let content = body["messages"][0]["content"].as_str().unwrap_or_default();
    content.lines().find_map(|l| l.strip_prefix("## Race ")).unwrap_or_default().trim().to_string()
}

async fn answer(path: &'static str, state: Arc<Mutex<State_>>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = race_id(&body);
    let reply = {
        let mut state = state.lock().unwrap();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        state.calls.push((path.to_string(), header("authorization"), header("x-api-key"), id.clone()));
        let default = state.default.clone();
        state
            .script
            .get_mut(&id)
            .and_then(|replies| (!replies.is_empty()).then(|| replies.remove(0)))
            .unwrap_or(Reply::Text(default))
    };
    let text = match reply {
        Reply::Status(code) => return (StatusCode::from_u16(code).unwrap(), "scripted failure").into_response(),
        Reply::Slow(wait, text) => {
            tokio::time::sleep(wait).await;
            text
        }
        Reply::Text(text) => text,
    };
    // Tokens, as a real endpoint counts them (here: words), reported with every answer.
    let prompt_tokens = body["messages"][0]["content"].as_str().unwrap_or_default().split_whitespace().count() as i64;
    let completion_tokens = text.split_whitespace().count() as i64;
    state.lock().unwrap().usage.push((prompt_tokens, completion_tokens));
    let response = if path == "messages" {
        json!({"type": "message", "content": [{"type": "text", "text": text}],
               "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}})
    } else {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
               "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}})
    };
    ([("content-type", "application/json")], response.to_string()).into_response()
}

impl FakeLlm {
    pub async fn start(default: &str) -> FakeLlm {
        let state = Arc::new(Mutex::new(State_ { default: default.to_string(), ..Default::default() }));
        let app = Router::new()
            .route(
                "/v1/chat/completions",
                post(|State(s): State<Arc<Mutex<State_>>>, h: HeaderMap, b: String| answer("chat", s, h, b)),
            )
            .route(
                "/v1/messages",
                post(|State(s): State<Arc<Mutex<State_>>>, h: HeaderMap, b: String| answer("messages", s, h, b)),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLlm { url, state }
    }

    pub fn script(&self, race_id: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().script.insert(race_id.to_string(), replies);
    }

    /// (prompt tokens, completion tokens) the endpoint reported with each answer.
    pub fn usage(&self) -> Vec<(i64, i64)> {
        self.state.lock().unwrap().usage.clone()
    }

    /// (path, authorization, x-api-key, race id) of every call.
    pub fn calls(&self) -> Vec<(String, Option<String>, Option<String>, String)> {
        self.state.lock().unwrap().calls.clone()
    }
}
