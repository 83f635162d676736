//! The Helm chart, rendered by the real `helm template`: least-privilege RBAC in both watch
//! modes, a restricted operator pod, CRDs from the Rust types kept on uninstall, and monitoring
//! objects that match the Service, the operator's metrics and the runbook. (`helm lint --strict`
//! and the Kubernetes schema validation run in scripts/check-chart.)

#[path = "support/prometheus_text.rs"]
mod prometheus_text;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, RwLock};

use kra_operator::controller::stores::Stores;
use kra_operator::crd::{self, KraJob};
use kra_operator::metrics::Metrics;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use serde_json::{Value, json};

const NAMESPACE: &str = "kra-system";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm() -> PathBuf {
    std::env::var_os("KRA_TEST_HELM").map(PathBuf::from).unwrap_or_else(|| root().join(".tools/bin/helm"))
}

fn template(values: &[&str]) -> Result<Vec<Value>, String> {
    let mut command = Command::new(helm());
    command.args(["template", "kra", "charts/kra-operator", "--namespace", NAMESPACE]).current_dir(root());
    for value in values {
        if value.ends_with(".yaml") {
            command.args(["--values", value]);
        } else {
            command.args(["--set", value]);
        }
    }
    let output = command.output().expect("run helm template");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_str_multiple(&text).expect("rendered YAML parses");
    Ok(objects.into_iter().filter(|o| !o.is_null()).collect())
}

fn render(values: &[&str]) -> Vec<Value> {
    template(values).unwrap_or_else(|error| panic!("helm template {values:?} failed: {error}"))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)?["value"].as_str()
}

fn assert_least_privilege(role: &Value) {
    let name = &role["metadata"]["name"];
    for rule in role["rules"].as_array().unwrap() {
        let resources = strings(&rule["resources"]);
        let verbs = strings(&rule["verbs"]);
        let groups = strings(&rule["apiGroups"]);
        assert!(!resources.contains(&"secrets"), "{name} grants Secrets: {rule}");
        assert!(
            !resources.contains(&"*") && !verbs.contains(&"*") && !groups.contains(&"*"),
            "wildcard in {name}: {rule}"
        );
        assert!(!verbs.contains(&"escalate") && !verbs.contains(&"bind") && !verbs.contains(&"impersonate"));
        if groups.contains(&"kra.dev") {
            // A spec is never written: update and patch only on status subresources. KraJobs and
            // EvaluationRuns are created and deleted as the runs of schedules; nothing else is.
            let updates = verbs.iter().any(|v| ["update", "patch"].contains(v));
            let creates = verbs.iter().any(|v| ["create", "delete"].contains(v));
            assert!(!verbs.contains(&"deletecollection"), "{name}: {rule}");
            for resource in &resources {
                assert!(
                    !updates || resource.ends_with("/status"),
                    "{name} updates {resource} outside its status subresource"
                );
                assert!(
                    !creates || ["krajobs", "evaluationruns"].contains(resource),
                    "{name} creates or deletes {resource}"
                );
            }
        }
    }
}

fn grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().unwrap().iter().any(|rule| {
        strings(&rule["apiGroups"]).contains(&group)
            && strings(&rule["resources"]).contains(&resource)
            && strings(&rule["verbs"]).contains(&verb)
    })
}

#[test]
fn cluster_mode_rbac_grants_no_secrets_and_never_writes_a_spec() {
    let objects = render(&[]);
    let cluster_role = one(&objects, "ClusterRole");
    assert_least_privilege(cluster_role);
    assert!(grants(cluster_role, "kra.dev", "krajobs/status", "patch"));
    assert!(grants(cluster_role, "kra.dev", "krajobs", "create"), "scheduled runs are child KraJobs");
    assert!(
        !grants(cluster_role, "kra.dev", "krajobs", "patch") && !grants(cluster_role, "kra.dev", "krajobs", "update")
    );
    assert!(grants(cluster_role, "kra.dev", "evaluationruns", "watch"));
    assert!(grants(cluster_role, "batch", "jobs", "create"));
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
    assert_eq!(binding["subjects"][0]["name"], one(&objects, "ServiceAccount")["metadata"]["name"]);

    // The Lease is the only thing granted in the operator's own namespace, and nothing else.
    let lease = one(&objects, "Role");
    assert_least_privilege(lease);
    assert_eq!(lease["metadata"]["namespace"], NAMESPACE);
    assert_eq!(lease["rules"].as_array().unwrap().len(), 1);
    assert!(grants(lease, "coordination.k8s.io", "leases", "update"));
}

#[test]
fn namespaced_mode_grants_a_role_per_watched_namespace_and_nothing_cluster_wide() {
    let objects = render(&["charts/kra-operator/ci/namespaced-values.yaml"]);
    assert!(of_kind(&objects, "ClusterRole").is_empty() && of_kind(&objects, "ClusterRoleBinding").is_empty());
    let roles = of_kind(&objects, "Role");
    let mut namespaces: Vec<&str> = roles.iter().filter_map(|r| r["metadata"]["namespace"].as_str()).collect();
    namespaces.sort();
    assert_eq!(namespaces, ["kra-collect", "kra-eval", NAMESPACE]);
    for role in &roles {
        assert_least_privilege(role);
    }
    for binding in of_kind(&objects, "RoleBinding") {
        assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE, "{binding}");
        let bound = roles.iter().any(|r| {
            r["metadata"]["name"] == binding["roleRef"]["name"]
                && r["metadata"]["namespace"] == binding["metadata"]["namespace"]
        });
        assert!(bound, "{binding} binds a Role missing from its namespace");
    }
    // The operator is told the same list, and the worker defaults.
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(container, "KRA_WATCH_NAMESPACES"), Some("kra-collect,kra-eval"));
    assert_eq!(env(container, "KRA_DEFAULT_DATABASE_SECRET"), Some("kra-db/url"));
    assert_eq!(env(container, "KRA_DEFAULT_MLFLOW_TRACKING_URI"), Some("http://mlflow.mlops:5000"));
    assert_eq!(
        env(container, "KRA_DEFAULT_MLFLOW_EXPERIMENT"),
        Some(kra_operator::crd::evaluationrun::DEFAULT_MLFLOW_EXPERIMENT)
    );
    assert_eq!(env(container, "KRA_WORKER_KRA_API_BASE_URL"), Some("http://kra-mirror.kra-collect:8080/B551015"));
    assert_eq!(env(container, "KRA_METRICS_MAX_API_KEYS"), Some("20"), "the metric series limit reaches the operator");
}

#[test]
fn namespaced_mode_without_namespaces_is_refused_with_the_key_named() {
    let error = template(&["watch.mode=namespaces"]).unwrap_err();
    assert!(error.contains("/watch/namespaces"), "{error}");
    let error = template(&["watch.mode=everywhere"]).unwrap_err();
    assert!(error.contains("/watch/mode"), "{error}");
}

#[test]
fn the_operator_pod_is_restricted_probed_and_highly_available() {
    let objects = render(&[]);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    for forbidden in ["hostNetwork", "hostPID", "hostIPC", "volumes"] {
        assert!(pod.get(forbidden).is_none(), "the pod sets {forbidden}");
    }
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert!(security["capabilities"].get("add").is_none());
    assert!(security.get("privileged").is_none_or(|p| p == false));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string()
    );
    assert_eq!(env(container, "KRA_LEADER_ELECTION"), Some("true"));
    assert_eq!(env(container, "KRA_LEASE_RETRY_SECONDS"), Some("2"), "a standby retries every 2 s by default");
    assert_eq!(env(container, "KRA_WATCH_NAMESPACES"), None, "cluster mode watches everything");
    assert_eq!(env(container, "KRA_WORKER_IMAGE"), Some("ghcr.io/kra-dev/kra-operator:0.1.0"));
    assert_eq!(env(container, "KRA_HTTP_ADDR"), Some("0.0.0.0:8080"));
    assert_eq!(env(container, "KRA_API_REQUESTS_PER_DAY"), Some("10000"));
    assert_eq!(env(container, "KRA_API_REQUESTS_PER_SECOND"), Some("5"));

    // The PDB and the Service select exactly the operator pods.
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    for selector in [&pdb["spec"]["selector"]["matchLabels"], &one(&objects, "Service")["spec"]["selector"]] {
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(&pod_labels[key], value, "selector {key} does not match the pod");
        }
    }
}

fn normalized(value: &Value) -> Value {
    // Helm's YAML round trip turns 2.0 into 2: compare numbers as numbers.
    match value {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()),
        other => other.clone(),
    }
}

#[test]
fn crds_are_the_generated_ones_installed_by_upgrades_and_kept_on_uninstall() {
    let objects = render(&[]);
    let rendered = of_kind(&objects, "CustomResourceDefinition");
    let generated = crd::all();
    assert_eq!(rendered.len(), generated.len());
    for definition in generated {
        let name = definition.metadata.name.clone().unwrap();
        let ours = rendered.iter().find(|c| c["metadata"]["name"] == name.as_str()).expect("the chart renders it");
        assert_eq!(ours["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        assert_eq!(normalized(&ours["spec"]), normalized(&serde_json::to_value(&definition.spec).unwrap()), "{name}");
    }
    assert!(of_kind(&render(&["crds.install=false"]), "CustomResourceDefinition").is_empty());
    let unkept = render(&["crds.keep=false"]);
    assert!(
        of_kind(&unkept, "CustomResourceDefinition")
            .iter()
            .all(|c| c["metadata"]["annotations"].get("helm.sh/resource-policy").is_none())
    );
}

/// Every metric name the operator exports, read from its own registry with every family observed.
fn exported_metric_names() -> Vec<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    let stores: Arc<RwLock<Stores>> = Arc::default();
    let metrics = Metrics::new(&mut registry, stores.clone(), 20);
    metrics.observe_reconcile("krajob", std::time::Duration::from_millis(5), Some("read"));
    metrics.attempt("krajob", "started");
    metrics.leader.set(1);
    let job: KraJob = serde_json::from_value(json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": "KraJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": {"action": "CollectResults", "meet": "seoul", "date": "2025-05-24", "apiKeySecretRef": {"name": "k", "key": "v"}},
        "status": {"phase": "Succeeded"},
    }))
    .unwrap();
    let mut writer = Writer::<KraJob>::default();
    writer.apply_watcher_event(&watcher::Event::Apply(job));
    *stores.write().unwrap() =
        Stores { krajobs: vec![writer.as_reader()], evaluation_runs: vec![], undecodable: None, watches: vec![] };
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    prometheus_text::served_metric_names(&text).into_iter().collect()
}

#[test]
fn alerts_use_exported_metrics_and_each_has_a_runbook_section() {
    let objects = render(&["charts/kra-operator/ci/everything-values.yaml"]);
    let rule = one(&objects, "PrometheusRule");
    let exported = exported_metric_names();
    let runbook = std::fs::read_to_string(root().join("docs/operations/runbook.md")).expect("the runbook exists");
    let headings: Vec<String> =
        runbook.lines().filter_map(|l| l.strip_prefix("## ")).map(|h| h.trim().to_string()).collect();
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            alerts += 1;
            let name = alert["alert"].as_str().unwrap();
            let expr = alert["expr"].as_str().unwrap();
            let used = prometheus_text::operator_metrics_in(expr);
            assert!(!used.is_empty(), "{name} uses no operator metric");
            for metric in used {
                assert!(
                    exported.iter().any(|m| m == metric),
                    "{name} uses {metric}, which the operator does not export ({exported:?})"
                );
            }
            assert!(headings.iter().any(|h| h == name), "docs/operations/runbook.md has no `## {name}` section");
            let url = alert["annotations"]["runbook_url"].as_str().unwrap();
            assert!(url.ends_with(&format!("runbook.md#{}", name.to_lowercase())), "{name}: {url}");
            assert!(["critical", "warning", "info"].contains(&alert["labels"]["severity"].as_str().unwrap()));
        }
    }
    assert!(alerts >= 6);
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let objects = render(&["charts/kra-operator/ci/everything-values.yaml"]);
    let monitor = one(&objects, "ServiceMonitor");
    let service = one(&objects, "Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][key], value, "the ServiceMonitor does not select the Service");
    }
    let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == port));
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert!(of_kind(&render(&[]), "ServiceMonitor").is_empty(), "off by default");
}

#[test]
fn the_network_policy_allows_dns_the_api_server_and_scrapes_only() {
    let objects = render(&["charts/kra-operator/ci/everything-values.yaml"]);
    let policy = one(&objects, "NetworkPolicy");
    assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    let pod_labels = &one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value);
    }
    let egress = policy["spec"]["egress"].as_array().unwrap();
    let ports: Vec<i64> =
        egress.iter().flat_map(|r| r["ports"].as_array().unwrap()).filter_map(|p| p["port"].as_i64()).collect();
    assert_eq!(ports, [53, 53, 443, 6443]);
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.96.0.1/32");
    let ingress = &policy["spec"]["ingress"][0];
    assert_eq!(ingress["ports"][0]["port"], "http");
    assert_eq!(ingress["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
}

#[test]
fn the_chart_default_mlflow_experiment_is_the_one_the_crd_and_the_evaluator_default_to() {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(root().join("charts/kra-operator/values.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["worker"]["mlflow"]["experiment"], kra_operator::crd::evaluationrun::DEFAULT_MLFLOW_EXPERIMENT);
}

#[test]
fn extra_env_args_and_volumes_reach_the_operator_pod() {
    let objects = render(&[
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
        "extraArgs[0]=--resync-seconds=120",
        "extraVolumes[0].name=ca",
        "extraVolumes[0].configMap.name=corporate-ca",
        "extraVolumeMounts[0].name=ca",
        "extraVolumeMounts[0].mountPath=/etc/ssl/corporate",
    ]);
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(env(container, "HTTPS_PROXY"), Some("http://proxy:3128"));
    assert_eq!(strings(&container["args"]), ["run", "--resync-seconds=120"]);
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corporate-ca");
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/etc/ssl/corporate");
    // Without them the pod has no volumes at all (its root is read-only, it writes nothing).
    let plain = render(&[]);
    let pod = &one(&plain, "Deployment")["spec"]["template"]["spec"];
    assert!(pod.get("volumes").is_none() && pod["containers"][0].get("volumeMounts").is_none());
    assert_eq!(strings(&pod["containers"][0]["args"]), ["run"]);
}

#[test]
fn a_volume_mount_without_a_path_is_refused_by_the_values_schema() {
    let error = template(&["extraVolumeMounts[0].name=ca"]).expect_err("the schema refuses it");
    assert!(error.contains("mountPath"), "{error}");
}

#[test]
fn helm_show_readme_prints_the_charts_readme() {
    let output =
        Command::new(helm()).args(["show", "readme", "charts/kra-operator"]).current_dir(root()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let readme = String::from_utf8_lossy(&output.stdout);
    let ours = std::fs::read_to_string(root().join("charts/kra-operator/README.md")).unwrap();
    assert_eq!(readme.trim(), ours.trim());
    assert!(readme.contains("extraEnv"), "the README lists the values people look for");
}

#[test]
fn worker_resources_and_pull_secrets_reach_the_operator_as_its_defaults() {
    use kra_operator::controller::resources::{DEFAULT_LIMITS, DEFAULT_REQUESTS, parse_list};
    let objects = render(&[]);
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let requests = env(container, "KRA_WORKER_REQUESTS").unwrap();
    let limits = env(container, "KRA_WORKER_LIMITS").unwrap();
    assert_eq!(parse_list(requests).unwrap(), parse_list(DEFAULT_REQUESTS).unwrap(), "chart and binary agree");
    assert_eq!(parse_list(limits).unwrap(), parse_list(DEFAULT_LIMITS).unwrap());
    assert_eq!(env(container, "KRA_WORKER_IMAGE_PULL_SECRETS"), None);

    let objects = render(&[
        "worker.resources.requests.memory=2Gi",
        "worker.resources.requests.cpu=null",
        "worker.resources.limits=null",
        "worker.imagePullSecrets[0].name=registry-a",
        "worker.imagePullSecrets[1].name=registry-b",
    ]);
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(container, "KRA_WORKER_REQUESTS"), Some("memory=2Gi"));
    assert_eq!(env(container, "KRA_WORKER_LIMITS"), Some(""), "none: the operator sets no limit");
    assert_eq!(env(container, "KRA_WORKER_IMAGE_PULL_SECRETS"), Some("registry-a,registry-b"));

    let error = template(&["worker.resources.requests.memory=lots"]).expect_err("the schema refuses it");
    assert!(error.contains("memory"), "{error}");
}

#[test]
fn every_object_carries_the_standard_labels() {
    for object in render(&[]) {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/part-of"], "kra-operator", "{}", object["kind"]);
        assert_eq!(labels["app.kubernetes.io/instance"], "kra", "{}", object["kind"]);
    }
}

fn promtool() -> PathBuf {
    std::env::var_os("KRA_TEST_PROMTOOL").map(PathBuf::from).unwrap_or_else(|| root().join(".tools/bin/promtool"))
}

/// Run promtool with `args` in `dir`: its combined output, and whether it succeeded.
fn run_promtool(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is needed: bash scripts/install-tools promtool (or set KRA_TEST_PROMTOOL)");
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[test]
fn prometheus_accepts_the_rendered_alerts_and_they_fire_as_their_unit_tests_say() {
    let objects = render(&["metrics.prometheusRule.enabled=true"]);
    let rule = one(&objects, "PrometheusRule");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // YAML is a superset of JSON: the rule groups as JSON are a rules file.
    std::fs::write(dir.join("rules.yaml"), serde_json::to_string_pretty(&rule["spec"]).unwrap()).unwrap();
    let tests = std::fs::read_to_string(root().join("tests/prometheus/alerts.test.yaml")).unwrap();
    std::fs::write(dir.join("alerts.test.yaml"), &tests).unwrap();

    let (ok, output) = run_promtool(&dir, &["check", "rules", "rules.yaml"]);
    assert!(ok, "promtool check rules: {output}");
    let (ok, output) = run_promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(ok, "promtool test rules: {output}");

    // Every alert has a case where it fires and one where it stays quiet.
    let parsed: Value = serde_saphyr::from_str(&tests).unwrap();
    let cases: Vec<&Value> =
        parsed["tests"].as_array().unwrap().iter().flat_map(|t| t["alert_rule_test"].as_array().unwrap()).collect();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let name = alert["alert"].as_str().unwrap();
            let of_alert = cases.iter().filter(|c| c["alertname"] == name);
            let (firing, quiet): (Vec<&&Value>, Vec<&&Value>) =
                of_alert.partition(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()));
            assert!(!firing.is_empty() && !quiet.is_empty(), "{name} needs a firing and a quiet case");
        }
    }

    // The tests can fail: with a threshold moved past their input, promtool says so.
    let strict = render(&["metrics.prometheusRule.enabled=true", "metrics.prometheusRule.resultsStaleDays=10"]);
    std::fs::write(dir.join("rules.yaml"), serde_json::to_string(&one(&strict, "PrometheusRule")["spec"]).unwrap())
        .unwrap();
    let (ok, output) = run_promtool(&dir, &["test", "rules", "alerts.test.yaml"]);
    assert!(!ok && output.contains("KraResultsStale"), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_grafana_dashboard_is_an_optional_config_map_for_the_sidecar_and_every_panel_is_documented() {
    let labelled = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
            .count()
    };
    assert_eq!(labelled(&render(&[])), 0, "off by default");
    let objects = render(&[
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.namespace=monitoring",
        "metrics.grafanaDashboard.annotations.grafana_folder=Operators",
    ]);
    assert_eq!(labelled(&objects), 1);
    let map =
        objects.iter().find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "kra-kra-operator-dashboard");
    let map = map.expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Operators");
    assert_eq!(map["metadata"]["labels"]["app.kubernetes.io/part-of"], "kra-operator");
    let dashboard: Value = serde_json::from_str(map["data"]["kra-operator.json"].as_str().unwrap()).unwrap();
    let file = std::fs::read_to_string(root().join("charts/kra-operator/files/dashboards/kra-operator.json")).unwrap();
    assert_eq!(dashboard, serde_json::from_str::<Value>(&file).unwrap());

    // Every panel says what it shows, and docs/operations/dashboard.md describes each by title.
    let doc = std::fs::read_to_string(root().join("docs/operations/dashboard.md")).unwrap();
    let panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row").collect();
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(panel["description"].as_str().is_some_and(|d| d.len() > 20), "panel {title} has no description");
        assert!(doc.contains(&format!("**{title}**")), "docs/operations/dashboard.md does not describe {title}");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title} ignores the data source variable");
    }
}

#[test]
fn tracing_is_off_by_default_and_one_value_turns_it_on_for_the_operator_and_its_workers() {
    let objects = render(&["networkPolicy.enabled=true"]);
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(container, "OTEL_EXPORTER_OTLP_ENDPOINT"), None, "off by default");
    let egress = one(&objects, "NetworkPolicy")["spec"]["egress"].as_array().unwrap().len();

    let objects = render(&[
        "networkPolicy.enabled=true",
        "tracing.otlpEndpoint=http://otel-collector.observability:4318",
        "tracing.workerOtlpEndpoint=http://otel-agent.kra-jobs:4318",
    ]);
    let container = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(container, "OTEL_EXPORTER_OTLP_ENDPOINT"), Some("http://otel-collector.observability:4318"));
    assert_eq!(env(container, "KRA_WORKER_OTLP_ENDPOINT"), Some("http://otel-agent.kra-jobs:4318"));
    let rules = one(&objects, "NetworkPolicy")["spec"]["egress"].as_array().unwrap().clone();
    assert_eq!(rules.len(), egress + 1, "the spans may leave the operator pod");
    assert_eq!(rules.last().unwrap()["ports"][0]["port"], 4318);

    let error = template(&["tracing.otlpEndpoint=otel-collector:4318"]).expect_err("a URL is needed");
    assert!(error.contains("otlpEndpoint"), "{error}");
}
