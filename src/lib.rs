//! kra-operator: a Kubernetes operator that runs Korea Racing Authority data collection
//! (`KraJob`) and prediction evaluation (`EvaluationRun`) as batch/v1 Jobs.

pub mod api_client;
pub mod collector;
pub mod completions;
pub mod controller;
pub mod crd;
pub mod cron;
pub mod evaluator;
pub mod health;
pub mod kra;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod race;
pub mod store;
pub mod telemetry;
pub mod worker;
