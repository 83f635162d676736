//! The evaluation of `kra-evaluator`: the command line builds a [`request::Request`], [`run`]
//! carries it out step by step over datasets from the race store, predictors, scoring by the
//! score-status contract and metrics, and records the run (metadata, artifacts, MLflow).

pub mod artifacts;
pub mod cli;
pub mod dataset;
pub mod error;
pub mod llm;
pub mod metadata;
pub mod metrics;
pub mod mlflow;
pub mod predictors;
pub mod report;
pub mod request;
pub mod results;
pub mod run;
pub mod scoring;
pub mod tracking;
