//! `kra-evaluator`: evaluates top-three predictors on stored races, reproducibly.

use std::process::ExitCode;

use clap::Parser;
use kra_operator::evaluator::cli::{self, Cli};
use kra_operator::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    telemetry::init(telemetry::default_log_format(cli.log_format));
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(error) => {
            eprintln!("kra-evaluator: failed to start the runtime: {error}");
            ExitCode::from(kra_operator::evaluator::error::exit::USAGE)
        }
    }
}
