//! `kra-operator`: runs the controllers, or prints the CRDs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kra_operator::{api_client, crd, operator, telemetry};

/// mimalloc instead of the C library's malloc: the operator allocates and frees small objects
/// for every watch event and request, and mimalloc spent less CPU on them at the same peak RSS
/// (docs/benchmarks.md, "mimalloc"). Its `no_thp` feature keeps it from asking for transparent
/// huge pages, which cost about 10 MiB more resident memory for an idle operator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernetes operator for KRA race-data collection (KraJob) and evaluation (EvaluationRun).
#[derive(Parser, Debug)]
#[command(version = env!("KRA_VERSION"), about)]
struct Cli {
    /// Log format (default: text at a terminal, JSON otherwise).
    #[arg(long, env = "KRA_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<telemetry::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controllers (uses the in-cluster config, or KUBECONFIG).
    Run(Box<operator::RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into a directory.
    Crd {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long, conflicts_with = "reference")]
        out_dir: Option<PathBuf>,
        /// Print the CRD reference (Markdown, docs/reference/crds.md) instead of the CRDs.
        #[arg(long)]
        reference: bool,
    },
    /// Print a shell completion script.
    Completions(kra_operator::completions::CompletionArgs),
}

/// Print to stdout. A reader that stops early (`kra-operator crd | head`) closes the pipe: that
/// ends the output, it is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("failed to write to standard output")
        }
        _ => Ok(()),
    }
}

fn write_crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let Some(dir) = out_dir else {
        return print_stdout(&crd::all_yaml().context("failed to render the CRDs")?);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    for definition in crd::all() {
        let path = dir.join(crd::file_name(&definition));
        let yaml = crd::to_yaml(&definition).context("failed to render a CRD")?;
        std::fs::write(&path, yaml).with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::install_crypto_provider();
    let result = match cli.command {
        Command::Completions(args) => {
            return kra_operator::completions::print::<Cli>(args.shell, "kra-operator");
        }
        Command::Crd { reference: true, .. } => print_stdout(&crd::reference::markdown(&crd::all())),
        Command::Crd { out_dir, .. } => write_crds(out_dir),
        Command::Run(args) => {
            let _telemetry = telemetry::init(telemetry::default_log_format(cli.log_format), "kra-operator");
            operator::runtime(&args).context("failed to start the runtime").and_then(|runtime| {
                runtime.block_on(async {
                    let client = api_client::connect(args.api_http2).await?;
                    operator::run(*args, client).await
                })
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("kra-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}
