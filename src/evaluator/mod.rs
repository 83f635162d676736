//! The evaluation of `kra-evaluator`: datasets from the race store, predictors, scoring by the
//! score-status contract, metrics, and run metadata.

pub mod cli;
pub mod dataset;
pub mod llm;
pub mod metrics;
pub mod mlflow;
pub mod predictors;
pub mod report;
pub mod run;
pub mod scoring;
