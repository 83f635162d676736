//! A real trace backend for the tests: Jaeger (v2, built on the OpenTelemetry Collector) with an
//! OTLP/HTTP receiver, in-memory storage and its query API, each on a free loopback port. The
//! binary comes from `KRA_TEST_JAEGER`, or from `.tools/bin/jaeger` (`scripts/install-tools
//! jaeger` builds it from the Go module pinned in tools/jaeger).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

pub struct Jaeger {
    /// Where OTLP/HTTP exporters send spans (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: String,
    query: String,
    log: PathBuf,
    _child: Child,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KRA_TEST_JAEGER") {
        return PathBuf::from(path);
    }
    let built = super::repo().join(".tools/bin/jaeger");
    assert!(built.exists(), "Jaeger not found: run bash scripts/install-tools jaeger, or set KRA_TEST_JAEGER");
    built
}

impl Jaeger {
    pub async fn start(dir: &std::path::Path) -> Jaeger {
        let (otlp, query, query_grpc, health) =
            (super::free_port(), super::free_port(), super::free_port(), super::free_port());
        let config = format!(
            r#"
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"#
        );
        let path = dir.join("jaeger.yaml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("jaeger.log");
        let child = Command::new(binary())
            .arg(format!("--config=file:{}", path.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start jaeger");
        let jaeger = Jaeger {
            otlp_endpoint: format!("http://127.0.0.1:{otlp}"),
            query: format!("http://127.0.0.1:{query}"),
            log,
            _child: child,
        };
        let ready = format!("http://127.0.0.1:{health}/status");
        for _ in 0..300 {
            let up = super::http_get_status(&ready).await.is_ok_and(|(code, _)| code == 200);
            if up && super::http_get(&format!("{}/api/services", jaeger.query)).await.is_ok() {
                return jaeger;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("jaeger did not become ready in 30 s:\n{}", jaeger.logs());
    }

    /// The stored trace with this id (hex), as Jaeger's query API returns it, when it exists.
    pub async fn trace(&self, trace_id: &str) -> Option<Value> {
        let body = super::http_get(&format!("{}/api/traces/{trace_id}", self.query)).await.ok()?;
        let value: Value = serde_json::from_str(&body).ok()?;
        value["data"].as_array()?.first().cloned()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
