//! Shell completions for the three binaries (`<binary> completions bash|zsh|fish|elvish|powershell`),
//! generated from their clap definitions, so they never lag behind the options.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

/// The `completions` sub-command's argument.
#[derive(clap::Args, Debug, Clone)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The completion script of `C` for `shell`.
pub fn script<C: CommandFactory>(shell: Shell, binary: &str) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut C::command(), binary, &mut out);
    out
}

/// Print the completion script; a reader that stops early ends it quietly. The exit code.
pub fn print<C: CommandFactory>(shell: Shell, binary: &str) -> std::process::ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script::<C>(shell, binary)).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("{binary}: failed to write to standard output: {error}");
            std::process::ExitCode::from(1)
        }
        _ => std::process::ExitCode::SUCCESS,
    }
}
