//! The operator's HTTP endpoints: `/metrics`, `/livez`, `/readyz` and `/health/detailed`.
//! Each answer reflects real state: readiness waits for the watches to sync, the detailed
//! health asks the Kubernetes API on every call.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use kube::Client;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::controller::stores::Stores;
use crate::crd::GROUP;

/// How long the election loop may go quiet before the process counts as wedged.
const LIVENESS_HORIZON: Duration = Duration::from_secs(60);
const API_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Default)]
pub struct Leadership {
    pub enabled: bool,
    pub leader: bool,
    pub holder: Option<String>,
    pub identity: String,
    pub lease: String,
    pub last_error: Option<String>,
}

/// State the endpoints read; written by the election loop and the controllers.
pub struct Health {
    client: Client,
    registry: Registry,
    version: &'static str,
    heartbeat: RwLock<Instant>,
    leadership: RwLock<Leadership>,
    /// The controllers' watch caches (set only while leading).
    stores: Arc<RwLock<Stores>>,
}

impl Health {
    pub fn new(
        client: Client,
        registry: Registry,
        stores: Arc<RwLock<Stores>>,
        version: &'static str,
        leadership: Leadership,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            registry,
            version,
            heartbeat: RwLock::new(Instant::now()),
            leadership: RwLock::new(leadership),
            stores,
        })
    }

    /// Called by the election loop after every round, successful or not.
    pub fn beat(&self) {
        *self.heartbeat.write().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn update_leadership(&self, change: impl FnOnce(&mut Leadership)) {
        change(&mut self.leadership.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// This replica leads (elected, or running without leader election).
    pub fn became_leader(&self, identity: &str) {
        self.update_leadership(|l| {
            l.leader = true;
            l.holder = Some(identity.to_string());
            l.last_error = None;
        });
    }

    /// This replica stopped leading (its controllers have stopped).
    pub fn stopped_leading(&self) {
        self.update_leadership(|l| l.leader = false);
    }

    /// A standby's round: the Lease was read, `holder` holds it.
    pub fn following(&self, holder: Option<String>) {
        self.update_leadership(|l| {
            l.holder = holder;
            l.last_error = None;
        });
    }

    /// A round that could not read or write the Lease.
    pub fn lease_error(&self, error: String) {
        self.update_leadership(|l| l.last_error = Some(error));
    }

    fn live(&self) -> bool {
        self.heartbeat.read().map(|t| t.elapsed() < LIVENESS_HORIZON).unwrap_or(false)
    }

    fn leadership(&self) -> Leadership {
        self.leadership.read().map(|l| l.clone()).unwrap_or_default()
    }

    fn synced(&self) -> Vec<(&'static str, bool)> {
        self.stores.read().map(|s| s.synced()).unwrap_or_default()
    }

    /// The watched objects that do not decode now (`Kind namespace/name`, the error).
    fn undecodable(&self) -> Vec<(String, String)> {
        let registry = self.stores.read().ok().and_then(|s| s.undecodable.clone());
        registry
            .map(|r| r.list().into_iter().map(|(key, error)| (key.to_string(), error)).collect())
            .unwrap_or_default()
    }

    /// The readiness answer as a person reads it: the state, then any object that is not
    /// reconciled because it does not decode (at most ten named).
    pub fn readiness_text(&self) -> (bool, String) {
        let (ready, why) = self.ready();
        let bad = self.undecodable();
        if bad.is_empty() {
            return (ready, why.to_string());
        }
        let names: Vec<&str> = bad.iter().take(10).map(|(name, _)| name.as_str()).collect();
        let more =
            if bad.len() > names.len() { format!(" and {} more", bad.len() - names.len()) } else { String::new() };
        let text = format!(
            "{why}; {} object(s) cannot be decoded by this operator and are not reconciled: {}{more} (see their Stalled condition)",
            bad.len(),
            names.join(", ")
        );
        (ready, text)
    }

    fn all_synced(&self) -> bool {
        let synced = self.synced();
        !synced.is_empty() && synced.iter().all(|(_, ready)| *ready)
    }

    /// Ready: the leader once its watches have synced; a standby while it can reach the Lease.
    pub fn ready(&self) -> (bool, &'static str) {
        let leadership = self.leadership();
        if leadership.leader {
            if self.all_synced() { (true, "leader, watches synced") } else { (false, "leader, watches not synced yet") }
        } else if leadership.last_error.is_some() {
            (false, "standby, cannot reach the leader Lease")
        } else if leadership.enabled {
            (true, "standby")
        } else {
            (false, "starting")
        }
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health/detailed", get(detailed))
        .with_state(health)
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &health.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "failed to encode metrics").into_response(),
    }
}

async fn livez(State(health): State<Arc<Health>>) -> Response {
    if health.live() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "election loop stalled").into_response()
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    // An object that does not decode is reported, not a reason to take the operator out of
    // service: every other run is reconciled.
    let (ready, why) = health.readiness_text();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, why).into_response()
}

async fn detailed(State(health): State<Arc<Health>>) -> Response {
    let api = tokio::time::timeout(API_CHECK_TIMEOUT, health.client.apiserver_version()).await;
    let (api_up, api_detail) = match api {
        Ok(Ok(info)) => (true, info.git_version),
        Ok(Err(e)) => (false, format!("failed to reach the Kubernetes API: {e}")),
        Err(_) => (false, "failed to reach the Kubernetes API: timed out".to_string()),
    };
    let mut crds = BTreeMap::new();
    if api_up {
        let served = tokio::time::timeout(
            API_CHECK_TIMEOUT,
            health.client.list_api_group_resources(&format!("{GROUP}/v1alpha1")),
        )
        .await;
        let names: Vec<String> = match served {
            Ok(Ok(list)) => list.resources.into_iter().map(|r| r.name).collect(),
            _ => Vec::new(),
        };
        for plural in ["krajobs", "evaluationruns"] {
            let state = if names.iter().any(|n| n == plural) { "served" } else { "missing" };
            crds.insert(format!("{plural}.{GROUP}"), state);
        }
    }
    let crds_ok = api_up && crds.values().all(|s| *s == "served");
    let leadership = health.leadership();
    let synced = health.synced();
    let (ready, readiness) = health.ready();
    let undecodable = health.undecodable();
    let status = if !api_up {
        "unhealthy"
    } else if !crds_ok || !ready || !undecodable.is_empty() {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": status,
        "version": health.version,
        "kubernetesApi": { "status": if api_up { "up" } else { "down" }, "detail": api_detail },
        "crds": crds,
        "watches": synced.iter().map(|(k, v)| (k.to_string(), json!({ "synced": v }))).collect::<serde_json::Map<_, _>>(),
        "leadership": {
            "enabled": leadership.enabled,
            "leader": leadership.leader,
            "identity": leadership.identity,
            "holder": leadership.holder,
            "lease": leadership.lease,
            "lastError": leadership.last_error,
        },
        "readiness": readiness,
        "undecodable": undecodable.iter().map(|(object, error)| json!({"object": object, "error": error})).collect::<Vec<_>>(),
    });
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}
