//! Installing the operator on a real, empty API server (a control plane of each test's own):
//! `helm install`, `helm upgrade` with a CRD change and `helm uninstall` (the CRDs, and so the
//! users' resources, are kept); `kubectl apply -k config/default`; the kind end-to-end manifests.
//! No kubelet runs, so nothing waits for the operator's pods (`--wait` is not used).

mod support;

use serde_json::Value;
use support::{PrivateControlPlane, helm, kubectl, repo};

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("kubectl prints JSON")
}

fn printer_columns(plane: &PrivateControlPlane) -> Vec<String> {
    let crd = json(&plane.ok(&kubectl(), &["get", "crd", "krajobs.kra.dev", "-o", "json"]));
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn helm_installs_upgrades_the_crds_and_uninstalls_keeping_them() {
    let plane = PrivateControlPlane::start();
    // An older release of the chart: its KraJob CRD has no printer columns.
    let old = plane.dir.join("old-chart");
    let copied =
        std::process::Command::new("cp").arg("-r").arg(repo().join("charts/kra-operator")).arg(&old).status().unwrap();
    assert!(copied.success());
    let crd_path = old.join("files/crds/krajobs.kra.dev.yaml");
    let mut crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(&crd_path).unwrap()).unwrap();
    crd["spec"]["versions"][0].as_object_mut().unwrap().remove("additionalPrinterColumns");
    std::fs::write(&crd_path, serde_json::to_string_pretty(&crd).unwrap()).unwrap();

    let install = ["install", "kra", old.to_str().unwrap(), "--namespace", "kra-system", "--create-namespace"];
    plane.ok(&helm(), &install);
    plane.ok(
        &kubectl(),
        &["wait", "--for", "condition=Established", "crd/krajobs.kra.dev", "crd/evaluationruns.kra.dev"],
    );
    assert!(printer_columns(&plane).is_empty(), "the old chart's CRD was installed");
    let deployment =
        json(&plane.ok(&kubectl(), &["-n", "kra-system", "get", "deployment", "kra-kra-operator", "-o", "json"]));
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], "kra-kra-operator");
    plane.ok(
        &kubectl(),
        &["-n", "kra-system", "get", "serviceaccount/kra-kra-operator", "clusterrole/kra-kra-operator"],
    );
    // The admission of the real server accepts the chart's restricted pod in a restricted namespace.
    plane.ok(
        &kubectl(),
        &["apply", "--server-side", "-f", "config/samples/krajob-collect-race-cards.yaml", "-n", "default"],
    );

    // Upgrading to this chart upgrades the CRD (Helm's crds/ folder never would).
    plane.ok(&helm(), &["upgrade", "kra", "charts/kra-operator", "--namespace", "kra-system"]);
    let columns = printer_columns(&plane);
    assert!(columns.iter().any(|c| c == "Phase"), "helm upgrade left the old CRD: {columns:?}");
    let history = plane.ok(&helm(), &["history", "kra", "--namespace", "kra-system", "-o", "json"]);
    assert_eq!(json(&history).as_array().unwrap().len(), 2);

    // Uninstalling removes the operator, keeps the CRDs and the users' KraJobs.
    plane.ok(&helm(), &["uninstall", "kra", "--namespace", "kra-system"]);
    let left = plane.run(&kubectl(), &["-n", "kra-system", "get", "deployment", "kra-kra-operator"]);
    assert!(!left.status.success(), "the Deployment outlived helm uninstall");
    plane.ok(&kubectl(), &["get", "crd", "krajobs.kra.dev", "evaluationruns.kra.dev"]);
    let kept = plane.ok(&kubectl(), &["-n", "default", "get", "krajobs", "-o", "name"]);
    assert_eq!(kept.trim(), "krajob.kra.dev/seoul-collect-race-cards");
}

#[test]
fn config_default_and_the_kind_manifests_apply_to_a_real_server() {
    let plane = PrivateControlPlane::start();
    let applied = plane.ok(&kubectl(), &["apply", "--server-side", "-k", "config/default"]);
    for object in [
        "namespace/kra-system",
        "customresourcedefinition.apiextensions.k8s.io/krajobs.kra.dev",
        "serviceaccount/kra-operator",
        "deployment.apps/kra-operator",
    ] {
        assert!(applied.contains(object), "{object} missing from: {applied}");
    }
    plane.ok(&kubectl(), &["wait", "--for", "condition=Established", "crd/krajobs.kra.dev"]);
    let namespace = json(&plane.ok(&kubectl(), &["get", "namespace", "kra-system", "-o", "json"]));
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    // The real server's Pod Security admission would refuse a Deployment whose pods break the
    // restricted profile: a dry run of a pod from its template proves they pass.
    let deployment =
        json(&plane.ok(&kubectl(), &["-n", "kra-system", "get", "deployment", "kra-operator", "-o", "json"]));
    let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "template-check", "namespace": "kra-system"}});
    pod["spec"] = deployment["spec"]["template"]["spec"].clone();
    let pod_file = plane.dir.join("pod.json");
    std::fs::write(&pod_file, pod.to_string()).unwrap();
    let dry_run = plane.run(&kubectl(), &["create", "--dry-run=server", "-f", pod_file.to_str().unwrap()]);
    assert!(
        dry_run.status.success(),
        "the restricted profile refuses the operator pod: {}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&dry_run.stderr).contains("violate"),
        "{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );

    plane.ok(&kubectl(), &["create", "namespace", "kra-e2e"]);
    let e2e = plane.ok(&kubectl(), &["apply", "--server-side", "-f", "config/kind/e2e"]);
    assert!(e2e.contains("krajob.kra.dev/e2e-full-pipeline serverside-applied"), "{e2e}");
    assert!(e2e.contains("deployment.apps/postgres serverside-applied"), "{e2e}");
}

/// Processes whose command line mentions `dir` (what a failed start must not leave behind).
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.ok()?.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            text.contains(&needle).then_some(text)
        })
        .collect()
}

fn failed_start(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new("bash");
    command.arg(repo().join("scripts/control-plane")).arg("up").env("KRA_CONTROL_PLANE_DIR", dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "scripts/control-plane up succeeded with {env:?}");
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

#[test]
fn a_control_plane_that_cannot_start_says_which_step_failed_and_leaves_no_process() {
    let scratch = std::env::temp_dir().join(format!("kra-cp-fail-{}", support::random_suffix()));
    // A port already in use: the API server cannot bind it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let dir = scratch.join("busy-port");
    let message = failed_start(&dir, &[("KRA_CONTROL_PLANE_API_PORT", &port)]);
    let log = dir.join("logs/kube-apiserver.log");
    assert_eq!(message, format!("scripts/control-plane: starting kube-apiserver: it exited; read {}", log.display()));
    assert!(std::fs::read_to_string(&log).unwrap().contains("address already in use"));
    assert_eq!(processes_under(&dir), Vec::<String>::new(), "a failed start left processes behind");

    // An API server that never becomes ready within the deadline.
    let dir = scratch.join("never-ready");
    let message = failed_start(&dir, &[("KRA_CONTROL_PLANE_TIMEOUT", "0")]);
    assert!(message.starts_with("scripts/control-plane: starting "), "{message}");
    assert!(message.contains("not ready within 0 s; read ") && message.ends_with(".log"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(processes_under(&dir), Vec::<String>::new(), "a failed start left processes behind");
    let _ = std::fs::remove_dir_all(&scratch);
}

/// `kubectl create` of one object; the server's answer (stdout and stderr) and whether it took it.
fn create(plane: &PrivateControlPlane, name: &str, object: Value) -> (bool, String) {
    let file = plane.dir.join(format!("{name}.json"));
    std::fs::write(&file, object.to_string()).unwrap();
    let output = plane.run(&kubectl(), &["-n", "default", "create", "-f", file.to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn krajob(name: &str, overrides: Value) -> Value {
    serde_json::json!({"apiVersion": "kra.dev/v1alpha1", "kind": "KraJob", "metadata": {"name": name},
        "spec": {"action": "CollectRaceCards", "meet": "seoul", "date": "2025-05-24",
                 "apiKeySecretRef": {"name": "kra-api", "key": "serviceKey"}, "podOverrides": overrides}})
}

fn llm_run(name: &str, endpoint: &str) -> Value {
    serde_json::json!({"apiVersion": "kra.dev/v1alpha1", "kind": "EvaluationRun", "metadata": {"name": name},
        "spec": {"dataset": {"meet": "seoul", "dateRange": {"from": "2025-05-01", "to": "2025-05-31"}},
                 "prompt": {"configMapName": "prompts", "key": "v1.md", "version": "v1"},
                 "predictor": {"llm": {"endpoint": endpoint, "model": "m", "apiKeySecretRef": {"name": "llm", "key": "token"}}}}})
}

#[test]
fn the_charts_admission_policy_refuses_what_a_resource_may_not_ask_for() {
    let plane = PrivateControlPlane::start();
    plane.ok(
        &helm(),
        &[
            "install",
            "kra",
            "charts/kra-operator",
            "--namespace",
            "kra-system",
            "--create-namespace",
            "--set",
            "image.tag=test",
            "--set",
            "policy.allowedWorkerImages={registry.example/kra:*}",
            "--set",
            "policy.llmEndpoints.allowedHosts={*.models.svc}",
        ],
    );
    plane.ok(
        &kubectl(),
        &["wait", "--for", "condition=Established", "crd/krajobs.kra.dev", "crd/evaluationruns.kra.dev"],
    );
    // The API server enforces a new policy once it has loaded it: wait for the first refusal.
    let mut refused = (true, String::new());
    for attempt in 0..60 {
        refused = create(
            &plane,
            &format!("evil-{attempt}"),
            krajob(&format!("evil-{attempt}"), serde_json::json!({"image": "evil/miner:1"})),
        );
        if !refused.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!refused.0, "an arbitrary image was accepted: {}", refused.1);
    assert!(
        refused.1.contains("spec.podOverrides.image: evil/miner:1 is not an allowed worker image"),
        "{}",
        refused.1
    );

    let cases = [
        (
            "worker-image",
            krajob("worker-image", serde_json::json!({"image": "ghcr.io/kra-dev/kra-operator:test"})),
            None,
        ),
        ("allowed-prefix", krajob("allowed-prefix", serde_json::json!({"image": "registry.example/kra:0.3"})), None),
        ("no-overrides", krajob("no-overrides", serde_json::json!({"labels": {"team": "a"}})), None),
        (
            "account",
            krajob("account", serde_json::json!({"serviceAccountName": "admin"})),
            Some("spec.podOverrides.serviceAccountName: admin is not an allowed service account"),
        ),
        ("https-in-cluster", llm_run("https-in-cluster", "https://vllm.models.svc/v1"), None),
        ("plain-http", llm_run("plain-http", "http://vllm.models.svc:8000/v1"), Some("must be https")),
        ("elsewhere", llm_run("elsewhere", "https://attacker.example/v1"), Some("is not an allowed LLM host")),
    ];
    for (name, object, refusal) in cases {
        let (accepted, answer) = create(&plane, name, object);
        match refusal {
            None => assert!(accepted, "{name} was refused: {answer}"),
            Some(expected) => {
                assert!(!accepted, "{name} was accepted: {answer}");
                assert!(answer.contains(expected), "{name}: {answer}");
            }
        }
    }
}
