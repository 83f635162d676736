//! Logging: JSON lines by default (for log pipelines), plain text for people at a terminal.
//! The level comes from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// The log format when none is given: text for a person at a terminal, JSON for a log pipeline
/// (a Pod's stderr is never a terminal).
pub fn default_log_format(choice: Option<LogFormat>) -> LogFormat {
    use std::io::IsTerminal;
    choice.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Text } else { LogFormat::Json })
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Install the one rustls crypto provider of this build (ring). Call first in every main:
/// with none, or more than one, selected, TLS clients panic when built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
