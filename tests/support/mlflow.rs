//! A real MLflow tracking server for the tests: `mlflow server` on a free port with an SQLite
//! backend and a local artifact store. The binary comes from `KRA_TEST_MLFLOW`, or from the venv
//! scripts/test installs (`.tools/mlflow-venv`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct MlflowServer {
    pub url: String,
    child: Child,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KRA_TEST_MLFLOW") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/mlflow-venv/bin/mlflow");
    assert!(
        venv.exists(),
        "MLflow not found: run scripts/test (it installs .tools/mlflow-venv) or set KRA_TEST_MLFLOW"
    );
    venv
}

impl MlflowServer {
    pub async fn start(dir: &std::path::Path) -> MlflowServer {
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("mlflow.log")).unwrap();
        // Its own process group: `mlflow server` starts uvicorn workers as children, and killing
        // the parent alone would leave them running.
        let child = Command::new(binary())
            .process_group(0)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("mlflow-artifacts"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start the MLflow server");
        let url = format!("http://127.0.0.1:{port}");
        let health = format!("{url}/health");
        super::wait_until("MLflow to answer /health", Duration::from_secs(90), || async {
            matches!(super::http_get_status(&health).await, Ok((200, _))).then_some(())
        })
        .await;
        MlflowServer { url, child }
    }

    /// GET an MLflow REST path (`/api/2.0/mlflow/...`) as JSON.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let body = super::http_get(&format!("{}{path}", self.url)).await.expect("query MLflow");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
        let _ = self.child.start_kill();
    }
}
