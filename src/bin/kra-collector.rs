//! `kra-collector`: not implemented yet. It says so and exits non-zero, so a Job that runs it fails
//! visibly instead of pretending to have done the work.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("kra-collector {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "kra-collector: collection of KRA race data is not implemented yet (tracked in issue #3); nothing was done"
    );
    ExitCode::from(2)
}
