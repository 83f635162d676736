//! `kra-evaluator`: evaluates top-three predictors on stored races, reproducibly.

use std::process::ExitCode;

use clap::Parser;
use kra_operator::evaluator::cli::{self, Cli};
use kra_operator::telemetry;
use tracing::Instrument;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    let _telemetry = telemetry::init(telemetry::default_log_format(cli.log_format), "kra-evaluator");
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(cli).instrument(telemetry::worker_span("kra-evaluator"))),
        Err(error) => {
            eprintln!("kra-evaluator: failed to start the runtime: {error}");
            ExitCode::from(kra_operator::evaluator::error::exit::USAGE)
        }
    }
}
