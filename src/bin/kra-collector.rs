//! `kra-collector`: collects KRA race data into PostgreSQL, or an embedded SQLite file.

use std::process::ExitCode;

use clap::Parser;
use kra_operator::collector::cli::{self, Cli};
use kra_operator::telemetry;
use tracing::Instrument;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    let _telemetry = telemetry::init(telemetry::default_log_format(cli.global.log_format), "kra-collector");
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(cli).instrument(telemetry::worker_span("kra-collector"))),
        Err(error) => {
            eprintln!("kra-collector: failed to start the runtime: {error}");
            ExitCode::from(cli::exit::USAGE)
        }
    }
}
