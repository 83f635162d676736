//! Test harness for the controller tests.
//!
//! The tests run on a real Kubernetes API server: the one `KRA_TEST_KUBECONFIG` names (the test
//! command starts one with `scripts/control-plane up` and sets it), or else the developer's
//! `scripts/control-plane up` in its default place. Each test works in a namespace of its own.
//! The controller tests have the operator hand its Jobs to another manager than the control
//! plane's Job controller (`spec.managedBy`), so the test can drive their status; the end-to-end
//! tests leave them to the real Job controller and run their Pods on a local node
//! (`local_node.rs`). The operator runs as the chart's ServiceAccount with exactly the RBAC that
//! `helm template charts/kra-operator` renders (`KRA_TEST_RBAC=namespaces`, the default, or
//! `cluster`).
//!
//! The operator under test is the real `kra-operator` binary, run as a child process, so a test
//! can kill it (a crash), stop it (SIGTERM) and start it again.

#![allow(dead_code)]

pub mod fake_kra;
pub mod fake_llm;
pub mod jaeger;
pub mod kra_day;
pub mod mlflow;
pub mod postgres;
pub mod prometheus_text;
pub mod season;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const MANAGED_BY: &str = "kra.dev/test-driver";
/// The worker image the operator under test puts in its Jobs (a local node runs it).
pub const WORKER_IMAGE: &str = "kra-test/worker:0";
/// How long a test waits for a condition: generous, because a real API server on two shared
/// cores, serving many tests at once, is slow.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// kubectl: `KRA_TEST_KUBECTL`, or the one the test command installs in `.tools/bin`.
pub fn kubectl() -> PathBuf {
    tool("KRA_TEST_KUBECTL", "kubectl")
}

/// helm: `KRA_TEST_HELM`, or the one the test command installs in `.tools/bin`.
pub fn helm() -> PathBuf {
    tool("KRA_TEST_HELM", "helm")
}

fn tool(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let local = repo().join(".tools/bin").join(name);
    assert!(local.exists(), "{name} not found: run scripts/test (it installs .tools/bin/{name}) or set {variable}");
    local
}

/// The kubeconfig of the API server the tests use.
fn test_kubeconfig() -> PathBuf {
    if let Some(path) = std::env::var_os("KRA_TEST_KUBECONFIG") {
        return PathBuf::from(path);
    }
    let local = repo().join(".tools/control-plane/run/kubeconfig");
    assert!(
        local.exists(),
        "no Kubernetes API server for the tests: run scripts/test, or start one with `scripts/control-plane up`, \
         or set KRA_TEST_KUBECONFIG (another cluster)"
    );
    local
}

/// Which RBAC the chart renders for the operator under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacMode {
    /// `watch.mode=namespaces`: a Role in each watched namespace.
    Namespaces,
    /// `watch.mode=cluster`: one ClusterRole.
    Cluster,
}

impl RbacMode {
    pub fn from_env() -> RbacMode {
        match std::env::var("KRA_TEST_RBAC").as_deref() {
            Ok("cluster") => RbacMode::Cluster,
            Ok("namespaces") | Err(_) => RbacMode::Namespaces,
            Ok(other) => panic!("KRA_TEST_RBAC must be namespaces or cluster, not {other:?}"),
        }
    }
}

/// A folder of one test's own under the system's temporary folder, removed with what is in it
/// when dropped, unless the test is failing (panicking): then it stays, for a look at what the
/// test's processes left there, and its path is printed.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new empty folder named `<prefix>-<pid>-<random>`.
    pub fn new(prefix: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), random_suffix()));
        std::fs::create_dir_all(&path).expect("create a scratch folder");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub fn random_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:06x}", (nanos ^ std::process::id().rotate_left(16)) & 0xff_ffff)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The API server the test talks to, and the namespace the test owns.
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    /// The test's scratch folder (the operators' logs), removed unless the test fails.
    pub dir: Scratch,
}

impl Cluster {
    pub async fn start() -> Cluster {
        Self::start_on(test_kubeconfig()).await
    }

    /// A namespace of the test's own on the API server `kubeconfig` names.
    pub async fn start_on(kubeconfig: PathBuf) -> Cluster {
        kra_operator::telemetry::install_crypto_provider();
        let dir = Scratch::new("kra-test");
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig).expect("read the test kubeconfig"),
            &KubeConfigOptions::default(),
        )
        .await
        .expect("load the test kubeconfig");
        let client = Client::try_from(config).expect("build a client");
        install_crds(&client).await;
        let namespace = format!("kra-test-{}", random_suffix());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap())
            .await
            .expect("create the test namespace");
        Cluster { client, kubeconfig, namespace, dir }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Writes per resource (`{"jobs": 3, ...}`) made so far in this test's namespace by anyone but
    /// the test itself, from the API server's audit log (`scripts/control-plane` records every
    /// write). None on a cluster without that log.
    pub fn write_counts(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.audit_log()).ok()?;
        let mut counts = serde_json::Map::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
            let object = &event["objectRef"];
            if object["namespace"] != json!(self.namespace) || event["user"]["username"] == json!(ADMIN_USER) {
                continue;
            }
            if matches!(event["verb"].as_str(), Some("get" | "list" | "watch")) {
                continue;
            }
            let resource = object["resource"].as_str().unwrap_or_default().to_string();
            let count = counts.entry(resource).or_insert(json!(0));
            *count = json!(count.as_u64().unwrap() + 1);
        }
        for resource in ["krajobs", "evaluationruns", "jobs", "events", "leases"] {
            counts.entry(resource.to_string()).or_insert(json!(0));
        }
        Some(Value::Object(counts))
    }

    fn audit_log(&self) -> PathBuf {
        std::env::var_os("KRA_TEST_AUDIT_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.kubeconfig.parent().unwrap().join("logs/audit.log"))
    }

    /// The GETs and LISTs the operator (the chart's ServiceAccount of this test's namespace) made
    /// since `since`, by verb and resource (`"list jobs"`), Lease reads left out, from the API
    /// server's audit log. None on a cluster without that log.
    pub fn operator_reads_since(&self, since: jiff::Timestamp) -> Option<std::collections::BTreeMap<String, u64>> {
        let mut requests = self.operator_requests_since(since)?;
        requests.retain(|key, _| key.starts_with("get ") || key.starts_with("list "));
        Some(requests)
    }

    /// Every request but watches the operator (the chart's ServiceAccount of this test's
    /// namespace) made since `since`, by verb and resource with its subresource
    /// (`"patch krajobs/status"`, a refused one with its code: `"create jobs (409)"`), Lease
    /// requests left out, from the API server's audit log.
    pub fn operator_requests_since(&self, since: jiff::Timestamp) -> Option<std::collections::BTreeMap<String, u64>> {
        let text = std::fs::read_to_string(self.audit_log()).ok()?;
        let operator = format!("system:serviceaccount:{}:", self.namespace);
        let mut counts = std::collections::BTreeMap::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
            let (Some(verb), Some(user)) = (event["verb"].as_str(), event["user"]["username"].as_str()) else {
                continue;
            };
            let at = event["requestReceivedTimestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let object = &event["objectRef"];
            let resource = object["resource"].as_str().unwrap_or_default();
            if verb == "watch" || !user.starts_with(&operator) || resource == "leases" || at.is_none_or(|at| at < since)
            {
                continue;
            }
            let mut key = match object["subresource"].as_str() {
                Some(sub) => format!("{verb} {resource}/{sub}"),
                None => format!("{verb} {resource}"),
            };
            // A refused request is counted apart, with its status code: `create jobs (429)`.
            if let Some(code) = event["responseStatus"]["code"].as_u64().filter(|code| !(200..300).contains(code)) {
                key = format!("{key} ({code})");
            }
            *counts.entry(key).or_insert(0) += 1;
        }
        Some(counts)
    }

    /// Create an object from JSON in the test namespace.
    pub async fn create<K>(&self, object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).expect("test object matches its type");
        self.api::<K>().create(&PostParams::default(), &object).await.expect("create test object")
    }

    /// Mark a Job finished the way the Job controller and kubelet would: a terminated worker pod
    /// (with the given termination message) and a terminal Job condition.
    pub async fn finish_job(&self, job: &str, succeeded: bool, termination_message: Option<&str>) {
        let jobs: Api<Job> = self.api();
        let current = jobs.get(job).await.expect("job to finish exists");
        let uid = current.metadata.uid.clone().unwrap();
        let pods: Api<Pod> = self.api();
        let pod_name = format!("{job}-pod-{}", random_suffix());
        // The Job controller gives a Job's pods its template's labels, and the job-name label.
        let mut labels = current
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert("batch.kubernetes.io/job-name".into(), job.to_string());
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": uid, "controller": true}],
            },
            "spec": {
                "nodeName": "kra-test-no-such-node",
                "restartPolicy": "Never",
                "containers": [{"name": "worker", "image": "kra-test/none:0"}],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.expect("create worker pod");
        let now = jiff::Timestamp::now().to_string();
        let exit_code = if succeeded { 0 } else { 1 };
        let mut terminated =
            json!({"exitCode": exit_code, "reason": if succeeded { "Completed" } else { "Error" }, "finishedAt": now});
        if let Some(message) = termination_message {
            terminated["message"] = json!(message);
        }
        let pod_status = json!({"status": {"phase": if succeeded { "Succeeded" } else { "Failed" }, "containerStatuses": [{
            "name": "worker", "image": "kra-test/none:0", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": terminated},
        }]}});
        pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&pod_status))
            .await
            .expect("patch pod status");
        let condition = if succeeded {
            vec![
                json!({"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}),
                json!({"type": "Complete", "status": "True", "lastTransitionTime": now, "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods"}),
            ]
        } else {
            vec![
                json!({"type": "FailureTarget", "status": "True", "lastTransitionTime": now, "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}),
                json!({"type": "Failed", "status": "True", "lastTransitionTime": now, "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}),
            ]
        };
        let mut status = json!({"status": {"conditions": condition, "startTime": now, "active": 0}});
        if succeeded {
            status["status"]["succeeded"] = json!(1);
            status["status"]["completionTime"] = json!(now);
        } else {
            status["status"]["failed"] = json!(1);
        }
        jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(&status)).await.expect("patch job status");
    }

    /// A kubeconfig for the operator: the chart's ServiceAccount (release `release`, installed in
    /// this namespace), bound to exactly the RBAC `helm template` renders for `watched`
    /// namespaces (or the whole cluster), with a token from the TokenRequest API.
    pub async fn operator_kubeconfig(&self, release: &str, watched: &[String], mode: RbacMode) -> PathBuf {
        let mut args = vec![
            "template".to_string(),
            release.to_string(),
            repo().join("charts/kra-operator").display().to_string(),
            "--namespace".into(),
            self.namespace.clone(),
            "--show-only".into(),
            "templates/serviceaccount.yaml".into(),
            "--show-only".into(),
            "templates/rbac.yaml".into(),
        ];
        match mode {
            RbacMode::Cluster => args.extend(["--set".into(), "watch.mode=cluster".into()]),
            RbacMode::Namespaces => {
                args.extend(["--set".into(), "watch.mode=namespaces".into()]);
                args.extend(["--set".into(), format!("watch.namespaces={{{}}}", watched.join(","))]);
            }
        }
        let output = std::process::Command::new(helm()).args(&args).output().expect("run helm template");
        assert!(output.status.success(), "helm template failed: {}", String::from_utf8_lossy(&output.stderr));
        let objects: Vec<Value> =
            serde_saphyr::from_str_multiple(&String::from_utf8_lossy(&output.stdout)).expect("rendered RBAC parses");
        let mut service_account = None;
        for object in objects.into_iter().filter(|o| !o.is_null()) {
            if object["kind"] == "ServiceAccount" {
                service_account = object["metadata"]["name"].as_str().map(String::from);
            }
            apply_rendered(&self.client, &object).await;
        }
        let service_account = service_account.expect("the chart renders a ServiceAccount");
        let request = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 86400}})).unwrap();
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .create_token_request(&service_account, &PostParams::default(), &request)
            .await
            .expect("request a token for the chart's ServiceAccount")
            .status
            .expect("a token")
            .token;
        let mut config = Kubeconfig::read_from(&self.kubeconfig).expect("read the admin kubeconfig");
        for named in &mut config.auth_infos {
            named.auth_info = Some(AuthInfo { token: Some(token.clone().into()), ..Default::default() });
        }
        let path = self.dir.join(format!("kubeconfig-{release}"));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        path
    }

    /// Run kubectl as the test's admin in the test namespace, with `input` on stdin.
    pub fn kubectl(&self, args: &[&str], input: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new(kubectl())
            .args(args)
            .args(["--namespace", &self.namespace])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().unwrap().write_all(input.unwrap_or_default().as_bytes()).unwrap();
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Like `kubectl`, and fail the test unless it succeeds; its stdout.
    pub fn kubectl_ok(&self, args: &[&str], input: Option<&str>) -> String {
        let output = self.kubectl(args, input);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    pub async fn job_exists(&self, name: &str) -> bool {
        self.api::<Job>().get_opt(name).await.expect("read job").is_some()
    }
}

/// The admin of `scripts/control-plane` (its static token); the harness acts as this user.
const ADMIN_USER: &str = "kra-test-admin";

/// Server-side apply one object the chart rendered (the RBAC kinds and the ServiceAccount).
async fn apply_rendered(client: &Client, object: &Value) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let name = object["metadata"]["name"].as_str().expect("a rendered name").to_string();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let params = PatchParams::apply("kra-operator-tests").force();
    let patch = Patch::Apply(object);
    let result = match object["kind"].as_str().unwrap_or_default() {
        "ServiceAccount" => {
            Api::<ServiceAccount>::namespaced(client.clone(), &namespace).patch(&name, &params, &patch).await.map(drop)
        }
        "Role" => Api::<Role>::namespaced(client.clone(), &namespace).patch(&name, &params, &patch).await.map(drop),
        "RoleBinding" => {
            Api::<RoleBinding>::namespaced(client.clone(), &namespace).patch(&name, &params, &patch).await.map(drop)
        }
        "ClusterRole" => Api::<ClusterRole>::all(client.clone()).patch(&name, &params, &patch).await.map(drop),
        "ClusterRoleBinding" => {
            Api::<ClusterRoleBinding>::all(client.clone()).patch(&name, &params, &patch).await.map(drop)
        }
        other => panic!("the chart's RBAC template rendered an unexpected {other}"),
    };
    result.unwrap_or_else(|e| panic!("apply the chart's {} {name}: {e}", object["kind"]));
}

/// Install the committed CRDs (crds/), so the tests also prove those files work.
async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().and_then(|n| n.to_str()) == Some("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("committed CRD parses");
        let name = crd.metadata.name.clone().unwrap();
        api.patch(&name, &PatchParams::apply("kra-operator-tests").force(), &Patch::Apply(&crd))
            .await
            .expect("install CRD");
    }
    // A real API server needs a moment to serve a new CRD.
    for plural in ["krajobs", "evaluationruns"] {
        wait_until("the CRDs to be served", Duration::from_secs(30), || async {
            let list = client.list_api_group_resources("kra.dev/v1alpha1").await.ok()?;
            list.resources.iter().any(|r| r.name == plural).then_some(())
        })
        .await;
    }
}

/// The sum of the samples of `name` carrying every one of `labels` in one scrape of `/metrics`.
pub fn metric_sum_in(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Poll `probe` every 100 ms until it yields a value; panic naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `kra-evaluator` with `args` on the store at `database`, writing artifacts under `output_dir`.
pub async fn run_evaluator(
    output_dir: &Path,
    database: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kra-evaluator"));
    command.args(args).args(["--database-url", database, "--output-dir"]).arg(output_dir).env("KRA_LOG_FORMAT", "json");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().await.expect("run kra-evaluator")
}

/// The stdout and stderr of a finished process, as text.
pub fn output_text(output: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub async fn http_get(url: &str) -> std::io::Result<String> {
    http_get_status(url).await.map(|(_, body)| body)
}

/// A minimal HTTP/1.0 GET (the test talks to loopback endpoints only).
pub async fn http_get_status(url: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// The operator under test, as a child process.
pub struct Operator {
    child: Option<Child>,
    pub port: u16,
    identity: String,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log: PathBuf,
    starts: u32,
    /// Environment variables beyond the harness's own (for example OpenTelemetry's).
    env: Vec<(String, String)>,
}

impl Operator {
    pub async fn start(cluster: &Cluster) -> Operator {
        Self::start_with(cluster, "operator-a", &[]).await
    }

    pub async fn start_with(cluster: &Cluster, identity: &str, extra: &[&str]) -> Operator {
        let operator = Self::start_granted(cluster, identity, extra, None).await;
        operator.wait_ready().await;
        operator
    }

    /// Start the operator without waiting for it to be ready, its RBAC rendered for `granted`
    /// namespaces in `watch.mode=namespaces` (None: for the namespaces it watches, in the mode
    /// `KRA_TEST_RBAC` names).
    pub async fn start_granted(
        cluster: &Cluster,
        identity: &str,
        extra: &[&str],
        granted: Option<&[String]>,
    ) -> Operator {
        Self::launch(cluster, identity, extra, granted, Some(MANAGED_BY), &[]).await
    }

    /// Start the operator with its Jobs left to the control plane's real Job controller (for a
    /// local node to run their Pods), and wait until it is ready.
    pub async fn start_for_job_controller(cluster: &Cluster, extra: &[&str]) -> Operator {
        Self::start_for_job_controller_with_env(cluster, extra, &[]).await
    }

    /// As `start_for_job_controller`, with these environment variables set too.
    pub async fn start_for_job_controller_with_env(
        cluster: &Cluster,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let operator = Self::launch(cluster, "operator-a", extra, None, None, env).await;
        operator.wait_ready().await;
        operator
    }

    async fn launch(
        cluster: &Cluster,
        identity: &str,
        extra: &[&str],
        granted: Option<&[String]>,
        managed_by: Option<&str>,
        env: &[(&str, &str)],
    ) -> Operator {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--namespace".into(),
            cluster.namespace.clone(),
            "--lease-namespace".into(),
            cluster.namespace.clone(),
            "--lease-duration-seconds".into(),
            "3".into(),
            "--lease-renew-seconds".into(),
            "1".into(),
            "--default-database-secret".into(),
            "kra-db/url".into(),
            "--worker-image".into(),
            WORKER_IMAGE.into(),
        ];
        if let Some(managed_by) = managed_by {
            args.extend(["--job-managed-by".to_string(), managed_by.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let watched: Vec<String> = args.windows(2).filter(|w| w[0] == "--namespace").map(|w| w[1].clone()).collect();
        let kubeconfig = match granted {
            Some(namespaces) => cluster.operator_kubeconfig(&cluster.namespace, namespaces, RbacMode::Namespaces).await,
            None => cluster.operator_kubeconfig(&cluster.namespace, &watched, RbacMode::from_env()).await,
        };
        let mut operator = Operator {
            child: None,
            port: free_port(),
            identity: identity.to_string(),
            args,
            kubeconfig,
            log: cluster.dir.join(format!("{identity}.log")),
            starts: 0,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        operator.spawn();
        operator
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        // A profiler to run the operator under (benchmarks only): `KRA_TEST_OPERATOR_WRAPPER="heaptrack -o /tmp/op"`.
        let program = env!("CARGO_BIN_EXE_kra-operator");
        let wrapper = std::env::var("KRA_TEST_OPERATOR_WRAPPER").unwrap_or_default();
        let mut command = match wrapper.split_whitespace().collect::<Vec<_>>().split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .args(&self.args)
            .args(["--http-addr", &format!("127.0.0.1:{}", self.port), "--identity", &self.identity])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start kra-operator");
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Wait until /readyz answers 200 (leading with synced watches, or a healthy standby).
    pub async fn wait_ready(&self) {
        let url = self.url("/readyz");
        wait_until("the operator to be ready", WAIT, || async {
            matches!(http_get_status(&url).await, Ok((200, _))).then_some(())
        })
        .await;
    }

    pub async fn is_leader(&self) -> bool {
        let Ok(body) = http_get(&self.url("/health/detailed")).await else { return false };
        serde_json::from_str::<Value>(&body).map(|v| v["leadership"]["leader"] == json!(true)).unwrap_or(false)
    }

    pub async fn wait_leader(&self) {
        wait_until("the operator to lead", WAIT, || async { self.is_leader().await.then_some(()) }).await;
    }

    /// A crash: SIGKILL, no cleanup, the Lease is not released.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill operator");
        }
    }

    /// A graceful stop: SIGTERM, then wait for the process to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().expect("operator pid");
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
            assert!(status.is_ok(), "the operator did not stop within 15 s of SIGTERM");
        }
    }

    /// Start the stopped process again and wait until it is ready (leading or standing by).
    pub async fn start_again(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
        self.wait_leader().await;
    }

    pub async fn metrics(&self) -> String {
        http_get(&self.url("/metrics")).await.expect("scrape /metrics")
    }

    /// Sum of one metric's samples whose label set contains every given `key="value"` pair.
    pub async fn metric_sum(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum_in(&self.metrics().await, name, labels)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A control plane of the test's own (`scripts/control-plane up` in a scratch folder), for the
/// tests that install cluster-wide objects from an empty cluster (the chart, config/default);
/// stopped when dropped.
pub struct PrivateControlPlane {
    pub dir: Scratch,
    pub kubeconfig: PathBuf,
}

impl PrivateControlPlane {
    pub fn start() -> PrivateControlPlane {
        let dir = Scratch::new("kra-control-plane");
        let output = std::process::Command::new("bash")
            .arg(repo().join("scripts/control-plane"))
            .arg("up")
            .env("KRA_CONTROL_PLANE_DIR", dir.path())
            .output()
            .expect("run scripts/control-plane up");
        assert!(
            output.status.success(),
            "scripts/control-plane up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PrivateControlPlane { kubeconfig: dir.join("kubeconfig"), dir }
    }

    /// Run a command (kubectl or helm) against this control plane.
    pub fn run(&self, program: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    }

    /// Like `run`, and fail the test unless the command succeeds; its stdout.
    pub fn ok(&self, program: &Path, args: &[&str]) -> String {
        let output = self.run(program, args);
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl PrivateControlPlane {
    /// The process id of one of its processes (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn pid(&self, name: &str) -> u32 {
        let pids = std::fs::read_to_string(self.dir.join("pids")).expect("the control plane's pids file");
        pids.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the control plane's pids file"))
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(repo().join("scripts/control-plane"))
            .arg("down")
            .env("KRA_CONTROL_PLANE_DIR", self.dir.path())
            .status();
    }
}
