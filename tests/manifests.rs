//! The plain manifests (`config/default`, rendered by kubectl's kustomize): least-privilege RBAC
//! and a restricted operator pod.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn kubectl() -> PathBuf {
    std::env::var_os("KRA_TEST_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl"))
}

fn rendered() -> Vec<Value> {
    render(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/default"))
}

fn render(dir: &std::path::Path) -> Vec<Value> {
    let output = Command::new(kubectl()).arg("kustomize").arg(dir).output().expect("run kubectl kustomize");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text).expect("rendered YAML parses")
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

#[test]
fn rbac_grants_no_secrets_and_never_writes_a_spec() {
    let objects = rendered();
    let roles: Vec<&Value> = of_kind(&objects, "ClusterRole").into_iter().chain(of_kind(&objects, "Role")).collect();
    assert_eq!(roles.len(), 2);
    for role in roles {
        for rule in role["rules"].as_array().unwrap() {
            let resources = strings(&rule["resources"]);
            let verbs = strings(&rule["verbs"]);
            assert!(!resources.contains(&"secrets"), "a rule grants Secrets: {rule}");
            assert!(
                !resources.contains(&"*") && !verbs.contains(&"*") && !strings(&rule["apiGroups"]).contains(&"*"),
                "wildcard: {rule}"
            );
            if strings(&rule["apiGroups"]).contains(&"kra.dev") {
                // A spec is never written; KraJobs and EvaluationRuns are created and deleted as scheduled runs.
                let updates = verbs.iter().any(|v| ["update", "patch"].contains(v));
                let creates = verbs.iter().any(|v| ["create", "delete"].contains(v));
                for resource in &resources {
                    assert!(
                        !updates || resource.ends_with("/status"),
                        "{resource} is updated outside its status subresource"
                    );
                    assert!(
                        !creates || ["krajobs", "evaluationruns"].contains(resource),
                        "{resource} is created or deleted"
                    );
                }
            }
        }
    }
    let leases = of_kind(&objects, "Role")[0];
    assert_eq!(strings(&leases["rules"][0]["resources"]), ["leases"], "the Lease is a namespaced grant");
}

#[test]
fn the_operator_pod_runs_restricted_with_two_replicas_and_probes() {
    let objects = rendered();
    let deployment = of_kind(&objects, "Deployment")[0];
    assert_eq!(deployment["metadata"]["namespace"], "kra-system");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&container["securityContext"]["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let namespace = of_kind(&objects, "Namespace")[0];
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(of_kind(&objects, "CustomResourceDefinition").len(), 2, "the CRDs come with the base");
}

#[test]
fn the_kind_end_to_end_krajob_is_a_valid_run_with_the_chart_defaults() {
    use kra_operator::controller::validate::{self, WorkerDefaults};
    use kra_operator::crd::{KraJob, SecretKeyRef};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/kind/e2e/krajob.yaml")).unwrap();
    let job: KraJob = serde_saphyr::from_str(&text).expect("the e2e KraJob matches the type");
    // scripts/kind-e2e installs the chart with worker.database.secretName=kra-db.
    let defaults = WorkerDefaults {
        image: "kra-operator:e2e".into(),
        database_secret: Some(SecretKeyRef { name: "kra-db".into(), key: "url".into() }),
        ..Default::default()
    };
    let invocation = validate::krajob(&job.spec, &defaults).expect("the e2e KraJob is valid").invocation();
    assert_eq!(invocation.args[..3], ["pipeline", "--meet", "seoul"]);
    let cluster: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root.join("config/kind/cluster.yaml")).unwrap()).unwrap();
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(cluster["apiVersion"], "kind.x-k8s.io/v1alpha4");
}

#[test]
fn the_worker_image_follows_the_operator_image_a_user_sets() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let copy = std::env::temp_dir().join(format!("kra-manifests-{}", std::process::id()));
    let base = copy.join("config/default");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(root.join("config/default")).unwrap().flatten() {
        std::fs::copy(entry.path(), base.join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(copy.join("crds")).unwrap();
    for entry in std::fs::read_dir(root.join("crds")).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.join("crds").join(entry.file_name())).unwrap();
    }
    // What `kustomize edit set image` writes.
    let mut kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    kustomization.push_str(
        "images:\n  - name: ghcr.io/kra-dev/kra-operator\n    newName: registry.example/kra\n    newTag: \"7\"\n",
    );
    std::fs::write(base.join("kustomization.yaml"), kustomization).unwrap();
    let objects = render(&base);
    std::fs::remove_dir_all(&copy).unwrap();
    let deployment = of_kind(&objects, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/kra:7");
    let worker = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "KRA_WORKER_IMAGE").unwrap();
    assert_eq!(worker["value"], "registry.example/kra:7", "worker Jobs run the image the operator runs");
}

#[test]
fn the_grafana_dashboard_without_helm_is_the_charts_in_a_labelled_config_map() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let objects = render(&root.join("config/grafana"));
    assert_eq!(objects.len(), 1, "{objects:?}");
    let map = &objects[0];
    assert_eq!(map["kind"], "ConfigMap");
    assert_eq!(map["metadata"]["name"], "kra-operator-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's label");
    let shipped: Value = serde_json::from_str(map["data"]["kra-operator.json"].as_str().unwrap()).unwrap();
    let chart = std::fs::read_to_string(root.join("charts/kra-operator/files/dashboards/kra-operator.json")).unwrap();
    assert_eq!(
        shipped,
        serde_json::from_str::<Value>(&chart).unwrap(),
        "config/grafana/kra-operator.json is stale: run bash scripts/generate"
    );
}
