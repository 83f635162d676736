//! Logging and traces. Logs: JSON lines by default (for log pipelines), plain text for people at
//! a terminal; the level comes from `RUST_LOG` (default `info`). Traces: OpenTelemetry, off
//! unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, exported
//! over OTLP/HTTP with the service name `OTEL_SERVICE_NAME` (default: the binary's name). A trace
//! crosses process boundaries through the W3C `TRACEPARENT` variable: the operator gives it to the
//! worker Jobs it creates, and the workers' spans join the reconcile's trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable that carries a W3C trace context into a worker process.
pub const TRACEPARENT: &str = "TRACEPARENT";

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

/// Whether the environment asks for traces: an OTLP endpoint is set and the SDK is not disabled.
pub fn tracing_requested(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Keeps the trace exporter alive; dropping it exports the spans still buffered. Hold it until
/// the end of `main`, outside the async runtime.
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("failed to export the last spans: {error}");
        }
    }
}

/// Start logging, and tracing when the environment asks for it. `service` names this process in
/// traces unless `OTEL_SERVICE_NAME` does. A trace exporter that cannot be built is reported
/// once and leaves logging on.
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (provider, problem) = if tracing_requested(|name| std::env::var(name).ok()) {
        match tracer_provider(service) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let traces = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("kra-operator")));
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
    if let Some(problem) = problem {
        tracing::warn!("traces are off: failed to set up the OTLP exporter: {problem}");
    }
    Telemetry { provider }
}

fn tracer_provider(service: &str) -> Result<SdkTracerProvider, String> {
    // The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS and _TIMEOUT itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().map_err(|e| e.to_string())?;
    let name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|n| !n.trim().is_empty());
    let resource =
        opentelemetry_sdk::Resource::builder().with_service_name(name.unwrap_or_else(|| service.to_string()));
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// The W3C `traceparent` of the current span, when it is being traced.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The span a worker process runs in: a child of the trace named by `TRACEPARENT` when there is
/// one (the reconcile that created its Job), otherwise the root of a trace of its own.
pub fn worker_span(name: &'static str) -> tracing::Span {
    let span = tracing::info_span!("worker", otel.name = name, otel.kind = "consumer");
    if let Ok(traceparent) = std::env::var(TRACEPARENT) {
        let carrier = HashMap::from([("traceparent".to_string(), traceparent)]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        let _ = span.set_parent(parent);
    }
    span
}

/// Install the one rustls crypto provider of this build (ring). Call first in every main:
/// with none, or more than one, selected, TLS clients panic when built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_on_only_with_an_endpoint_and_not_disabled() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert!(!tracing_requested(env(&[])));
        assert!(!tracing_requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(tracing_requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])));
        assert!(tracing_requested(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")])));
        let disabled = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"), ("OTEL_SDK_DISABLED", "TRUE")]);
        assert!(!tracing_requested(disabled));
    }

    #[test]
    fn an_untraced_span_has_no_traceparent() {
        assert_eq!(current_traceparent(), None);
    }
}
