//! `kra-collector`: collects KRA race data into PostgreSQL, or an embedded SQLite file.

use std::process::ExitCode;

use clap::Parser;
use kra_operator::collector::cli::{self, Cli};
use kra_operator::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    telemetry::init(telemetry::default_log_format(cli.global.log_format));
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(error) => {
            eprintln!("kra-collector: failed to start the runtime: {error}");
            ExitCode::from(cli::exit::USAGE)
        }
    }
}
