//! The container image (built by `scripts/image`, which the test command runs first), run with
//! podman under the restrictions the operator puts on every worker Pod and the chart on the
//! operator: UID 65532, a read-only root with no tmpfs of podman's own (only the writable mounts a
//! Pod spec would declare), no capabilities, no new privileges. Where podman cannot run a
//! container at all, each test says so and skips; a missing image is a failure.

#[path = "support/local_node.rs"]
mod local_node;
mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use kra_operator::crd::{CollectionSummary, KraJob};
use local_node::{PODMAN_GLOBAL, PODMAN_HOST};
use serde_json::json;
use support::fake_kra::FakeKra;
use support::kra_day::{self, Day};
use support::postgres::Postgres;
use support::{Cluster, RbacMode, WAIT, http_get_status, output_text as text, random_suffix, wait_until};

fn image() -> String {
    std::env::var("KRA_TEST_IMAGE").unwrap_or_else(|_| format!("localhost/kra-operator:{}", env!("CARGO_PKG_VERSION")))
}

/// podman as toolchain.md measured it works here (the options the local node uses too).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(PODMAN_GLOBAL);
    command
}

/// The restrictions of a worker Pod, as `podman run` options (after `PODMAN_HOST`).
const RESTRICTED: &[&str] = &[
    "--user",
    "65532:65532",
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// Whether podman can run the image here; None (and a message) where it cannot run containers.
fn ready() -> Option<()> {
    let probe =
        podman().args(["run", "--rm"]).args(PODMAN_HOST).args(RESTRICTED).arg(image()).arg("--version").output();
    match probe {
        Err(error) => {
            eprintln!("SKIPPED: podman cannot be started here ({error}); the image tests need podman and runc");
            None
        }
        Ok(output) if output.status.success() => Some(()),
        Ok(output) => {
            let message = text(&output);
            let missing = podman().args(["image", "exists", &image()]).status().map(|s| !s.success()).unwrap_or(false);
            assert!(!missing, "the image {} does not exist: build it with `bash scripts/image`", image());
            eprintln!("SKIPPED: podman cannot run a container here: {message}");
            None
        }
    }
}

/// Run the image with the restrictions and `extra` podman arguments before it.
fn run(extra: &[&str], args: &[&str]) -> Output {
    podman()
        .args(["run", "--rm"])
        .args(PODMAN_HOST)
        .args(RESTRICTED)
        .args(extra)
        .arg(image())
        .args(args)
        .output()
        .expect("run podman")
}

/// A folder the container's UID may write (a Pod's emptyDir).
fn writable_dir() -> support::Scratch {
    let dir = support::Scratch::new("kra-image");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir
}

fn mount(host: &Path, container: &str) -> String {
    format!("{}:{container}", host.display())
}

#[test]
fn the_operator_binary_answers_help_and_version_under_the_restrictions() {
    if ready().is_none() {
        return;
    }
    let help = run(&[], &["--help"]);
    assert!(help.status.success(), "{}", text(&help));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Kubernetes operator"), "{}", text(&help));
    let version = run(&[], &["--version"]);
    let expected = format!(
        "kra-operator {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        kra_operator::evaluator::metadata::COMMIT_SHA
    );
    assert_eq!(String::from_utf8_lossy(&version.stdout), expected, "the image runs the binaries of this commit");
}

// The fake KRA API serves from this runtime while podman blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_in_the_image_collects_into_postgresql_and_writes_its_termination_message() {
    if ready().is_none() {
        return;
    }
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    let postgres = Postgres::start();
    let database = postgres.database().await;
    let dir = writable_dir();
    let message = dir.join("termination-log");
    std::fs::write(&message, "").unwrap();
    std::fs::set_permissions(&message, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let env = [
        format!("DATABASE_URL={database}"),
        "KRA_API_KEY=image-test-key".into(),
        format!("KRA_API_BASE_URL={}", kra.base_url),
        "KRA_REQUESTS_PER_SECOND=1000".into(),
    ];
    let mut extra: Vec<String> = env.iter().flat_map(|e| ["--env".to_string(), e.clone()]).collect();
    extra.extend([
        "--volume".into(),
        mount(&message, "/dev/termination-log"),
        "--entrypoint".into(),
        "kra-collector".into(),
    ]);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let output =
        run(&extra, &["collect", "--meet", "seoul", "--date", "2025-05-24", "--summary-file", "/dev/termination-log"]);
    assert!(output.status.success(), "{}", text(&output));
    let summary: CollectionSummary = serde_json::from_str(&std::fs::read_to_string(&message).unwrap()).unwrap();
    assert_eq!((summary.races_found, summary.races_collected), (Some(4), Some(4)));
    let store = kra_operator::store::Store::open(&database).await.unwrap();
    assert_eq!(store.count("prerace_snapshots").await.unwrap(), 4, "the rows are in PostgreSQL");
}

// The fake KRA API serves from this runtime while podman blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_the_collector_needs_a_writable_mount_and_says_so() {
    if ready().is_none() {
        return;
    }
    let kra = FakeKra::start().await;
    kra_day::serve_before(&kra, &Day::default());
    let base = format!("KRA_API_BASE_URL={}", kra.base_url);
    let args = ["collect", "--meet", "seoul", "--date", "2025-05-24"];
    let common = ["--env", "KRA_API_KEY=image-test-key", "--env", &base, "--env", "KRA_REQUESTS_PER_SECOND=1000"];

    // On the read-only root alone: a clear error naming the mount to add, and no API call.
    let mut extra = common.to_vec();
    extra.extend(["--entrypoint", "kra-collector"]);
    let refused = run(&extra, &args);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("mount a writable volume at /var/lib/kra"), "{}", text(&refused));
    assert!(kra.requests().is_empty());

    // With a writable volume at the image's data directory: the embedded SQLite file.
    let dir = writable_dir();
    let volume = mount(&dir, "/var/lib/kra");
    let mut extra = common.to_vec();
    extra.extend(["--volume", &volume, "--entrypoint", "kra-collector"]);
    let output = run(&extra, &args);
    assert!(output.status.success(), "{}", text(&output));
    assert!(dir.join("kra.sqlite3").exists(), "the SQLite file is on the mount");
}

#[tokio::test]
async fn the_evaluator_in_the_image_writes_its_artifacts_to_the_mount() {
    if ready().is_none() {
        return;
    }
    let dir = writable_dir();
    let database = dir.join("kra.sqlite3");
    kra_day::collected_store(&format!("sqlite://{}", database.display())).await;
    std::fs::set_permissions(&database, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let volume = mount(&dir, "/var/lib/kra");
    let output = run(
        &["--volume", &volume, "--entrypoint", "kra-evaluator"],
        &[
            "evaluate",
            "--baseline",
            "rating",
            "--meet",
            "seoul",
            "--from",
            "2025-05-24",
            "--to",
            "2025-05-24",
            "--run-name",
            "in-image",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("evaluations/in-image/results.json")).unwrap()).unwrap();
    assert_eq!(results["metrics"]["races"], 4);
    assert!(dir.join("evaluations/in-image/report.html").exists());
}

/// A detached container, removed when dropped.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "--force", "--time", "0", &self.0]).output();
    }
}

#[tokio::test]
async fn the_operator_in_the_image_reconciles_on_the_real_control_plane() {
    if ready().is_none() {
        return;
    }
    let cluster = Cluster::start().await;
    let kubeconfig = cluster
        .operator_kubeconfig(&cluster.namespace, std::slice::from_ref(&cluster.namespace), RbacMode::Namespaces)
        .await;
    std::fs::set_permissions(&kubeconfig, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // The kubeconfig names the control plane's CA by its path: the same path in the container.
    let ca = cluster.kubeconfig.parent().unwrap().join("pki/ca.crt");
    let port = support::free_port();
    let name = format!("kra-operator-{}", random_suffix());
    let output = podman()
        .args(["run", "--detach", "--name", &name])
        .args(PODMAN_HOST)
        .args(RESTRICTED)
        .args(["--volume", &format!("{}:/etc/kra/kubeconfig:ro", kubeconfig.display())])
        .args(["--volume", &format!("{}:{}:ro", ca.display(), ca.display())])
        .args(["--env", "KUBECONFIG=/etc/kra/kubeconfig"])
        .arg(image())
        .args(["run", "--namespace", &cluster.namespace, "--lease-namespace", &cluster.namespace])
        .args(["--http-addr", &format!("127.0.0.1:{port}"), "--worker-image", &image()])
        .args(["--default-database-secret", "kra-db/url", "--job-managed-by", support::MANAGED_BY])
        .output()
        .expect("start the operator's container");
    assert!(output.status.success(), "{}", text(&output));
    let _running = Running(name.clone());
    let logs = || text(&podman().args(["logs", &name]).output().unwrap());
    let ready = wait_until("the operator in the image to be ready", WAIT, || async {
        matches!(http_get_status(&format!("http://127.0.0.1:{port}/readyz")).await, Ok((200, _))).then_some(())
    });
    tokio::time::timeout(WAIT + Duration::from_secs(5), ready).await.unwrap_or_else(|_| panic!("{}", logs()));

    cluster
        .create::<KraJob>(json!({
            "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": "from-image"},
            "spec": {"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
                     "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}},
        }))
        .await;
    wait_until("the Job of the operator in the image", WAIT, || async {
        cluster.job_exists("from-image-1").await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_images_tls_roots_refuse_an_unknown_issuer_at_once_and_trust_a_given_ca() {
    if ready().is_none() {
        return;
    }
    // The control plane's API server is an HTTPS server whose certificate no public root signs.
    let cluster = Cluster::start().await;
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let server =
        kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("a server in the kubeconfig");
    let base = format!("{}/B551015", server.trim());
    let dir = writable_dir();
    let volume = mount(&dir, "/var/lib/kra");
    let ca = cluster.kubeconfig.parent().unwrap().join("pki/ca.crt");
    let ca_volume = format!("{}:/etc/kra/ca.crt:ro", ca.display());
    let args =
        ["collect", "--meet", "seoul", "--date", "2025-05-24", "--api-key", "image-test-key", "--api-base-url", &base];

    let refused = run(&["--volume", &volume, "--entrypoint", "kra-collector"], &args);
    assert_eq!(refused.status.code(), Some(7), "a certificate nobody vouches for stops the run: {}", text(&refused));
    let message = text(&refused);
    assert!(message.contains("TLS certificate is not trusted") && message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("after 1 attempt(s)"), "not retried: {message}");
    assert!(!message.contains("image-test-key"), "the key stays out of errors");

    // With the server's CA as the trust bundle, TLS succeeds and the server's own answer (a
    // refusal: it is not the KRA API) comes back: the image's TLS stack reads SSL_CERT_FILE.
    let trusted = run(
        &[
            "--volume",
            &volume,
            "--volume",
            &ca_volume,
            "--env",
            "SSL_CERT_FILE=/etc/kra/ca.crt",
            "--entrypoint",
            "kra-collector",
        ],
        &args,
    );
    let message = text(&trusted);
    assert!(!message.contains("TLS certificate is not trusted"), "{message}");
    assert!(message.contains("HTTP 40"), "the HTTPS server answered: {message}");
}
