//! The Argo CD health checks and actions of config/argocd/argocd-cm.yaml, run in Lua 5.1 (the
//! language of Argo CD's gopher-lua, here through lupa) against statuses built by the
//! operator's own condition code, so the fixtures are what the operator really writes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use jiff::Timestamp;
use kra_operator::controller::conditions::ConditionSet;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("KRA_TEST_LUA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/lua-venv/bin/python"))
}

fn config() -> Value {
    let text = std::fs::read_to_string(root().join("config/argocd/argocd-cm.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("argocd-cm.yaml parses")
}

fn script(key: &str) -> String {
    config()["data"][key].as_str().unwrap_or_else(|| panic!("argocd-cm has no {key}")).to_string()
}

/// The actions of a kind: the discovery script and each definition's script, by name.
fn actions(kind: &str) -> (String, Vec<(String, String)>) {
    let text = script(&format!("resource.customizations.actions.kra.dev_{kind}"));
    let actions: Value = serde_saphyr::from_str(&text).expect("the actions block parses");
    let definitions = actions["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_string(), d["action.lua"].as_str().unwrap().to_string()))
        .collect();
    (actions["discovery.lua"].as_str().unwrap().to_string(), definitions)
}

fn run(lua: &str, object: &Value) -> Value {
    let name = format!("kra-argocd-{}-{:x}.lua", std::process::id(), lua.len() ^ (lua.as_ptr() as usize));
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, lua).unwrap();
    let _remove = RemoveOnDrop(&path);
    let mut child = Command::new(python())
        .arg(root().join("tests/argocd/run_lua.py"))
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Lua runner (scripts/test installs lupa into .tools/lua-venv)");
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "Lua failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

struct RemoveOnDrop<'a>(&'a std::path::Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn now() -> Timestamp {
    "2025-05-24T13:00:00Z".parse().unwrap()
}

fn resource(kind: &str, generation: i64, status: Option<Value>, spec: Value) -> Value {
    let mut object = json!({
        "apiVersion": "kra.dev/v1alpha1", "kind": kind,
        "metadata": {"name": "r", "namespace": "racing", "generation": generation},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn status(phase: &str, build: impl FnOnce(&mut ConditionSet<'_>)) -> Value {
    let mut set = ConditionSet::new(&[], 1, now());
    build(&mut set);
    json!({"phase": phase, "observedGeneration": 1, "conditions": set.finish()})
}

fn health(kind: &str, object: &Value) -> (String, String) {
    let result = run(&script(&format!("resource.customizations.health.kra.dev_{kind}")), object);
    (result["status"].as_str().unwrap().to_string(), result["message"].as_str().unwrap_or_default().to_string())
}

#[test]
fn health_follows_the_conditions_the_operator_writes() {
    let spec = json!({"action": "CollectResults", "meet": "seoul", "date": "2025-05-24"});
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("no status yet", resource("KraJob", 1, None, spec.clone()), "Progressing", "Waiting for the operator"),
        (
            "a spec change not yet seen",
            resource("KraJob", 2, Some(status("Succeeded", |c| c.succeeded("done"))), spec.clone()),
            "Progressing",
            "generation 2",
        ),
        (
            "an invalid spec",
            resource("KraJob", 1, Some(status("Invalid", |c| c.invalid("date: not a date"))), spec.clone()),
            "Degraded",
            "date: not a date",
        ),
        (
            "out of retries",
            resource(
                "KraJob",
                1,
                Some(status("Failed", |c| c.failed("RetryLimitExceeded", "3 attempts failed"))),
                spec.clone(),
            ),
            "Degraded",
            "3 attempts failed",
        ),
        (
            "suspended",
            resource("KraJob", 1, Some(status("Suspended", |c| c.suspended("held"))), spec.clone()),
            "Suspended",
            "held",
        ),
        (
            "running",
            resource("KraJob", 1, Some(status("Running", |c| c.running("attempt 1 is running"))), spec.clone()),
            "Progressing",
            "attempt 1 is running",
        ),
        (
            "backing off",
            resource("KraJob", 1, Some(status("BackingOff", |c| c.backing_off("next at 13:05"))), spec.clone()),
            "Progressing",
            "next at 13:05",
        ),
        (
            "succeeded",
            resource("KraJob", 1, Some(status("Succeeded", |c| c.succeeded("attempt 1 succeeded"))), spec.clone()),
            "Healthy",
            "attempt 1 succeeded",
        ),
        (
            "a schedule between runs",
            resource(
                "KraJob",
                1,
                Some(status("Scheduled", |c| c.schedule(true, false, false, "Scheduled", "next run 2025-05-25"))),
                spec.clone(),
            ),
            "Healthy",
            "next run",
        ),
        (
            "a schedule with a run active",
            resource(
                "KraJob",
                1,
                Some(status("Running", |c| c.schedule(true, true, false, "RunActive", "a run is active"))),
                spec.clone(),
            ),
            "Progressing",
            "a run is active",
        ),
        (
            "a schedule whose newest run failed",
            resource(
                "KraJob",
                1,
                Some(status("Scheduled", |c| c.schedule(false, false, true, "LastRunFailed", "the newest run failed"))),
                spec.clone(),
            ),
            "Degraded",
            "the newest run failed",
        ),
    ];
    for (case, object, expected, message) in cases {
        let (status, text) = health("KraJob", &object);
        assert_eq!(status, expected, "{case}: {text}");
        assert!(text.contains(message), "{case}: {text:?} lacks {message:?}");
    }
    // EvaluationRuns share the script.
    let run_spec = json!({"dataset": {"races": ["20250524_1_1"]}, "predictor": {"baseline": "rating"}});
    let done = resource(
        "EvaluationRun",
        1,
        Some(status("Succeeded", |c| c.succeeded("attempt 1 succeeded"))),
        run_spec.clone(),
    );
    assert_eq!(health("EvaluationRun", &done).0, "Healthy");
    let failed =
        resource("EvaluationRun", 1, Some(status("Failed", |c| c.failed("RetryLimitExceeded", "gave up"))), run_spec);
    assert_eq!(health("EvaluationRun", &failed).0, "Degraded");
}

#[test]
fn actions_suspend_resume_and_run_a_schedule_now() {
    let (discovery, definitions) = actions("KraJob");
    let scheduled = resource(
        "KraJob",
        1,
        None,
        json!({"action": "CollectResults", "meet": "seoul", "schedule": {"cron": "0 22 * * SAT,SUN"}}),
    );
    let offered = run(&discovery, &scheduled);
    assert_eq!(offered["suspend"]["disabled"], false);
    assert_eq!(offered["resume"]["disabled"], true);
    assert_eq!(offered["run-now"]["disabled"], false);
    let one_off = resource(
        "KraJob",
        1,
        None,
        json!({"action": "CollectResults", "meet": "seoul", "date": "2025-05-24", "suspend": true}),
    );
    let offered = run(&discovery, &one_off);
    assert_eq!(
        (offered["suspend"]["disabled"].clone(), offered["resume"]["disabled"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(offered["run-now"]["disabled"], true, "run-now is for schedules");

    let action = |name: &str| definitions.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).unwrap();
    assert_eq!(run(&action("suspend"), &scheduled)["spec"]["suspend"], true);
    assert_eq!(run(&action("resume"), &one_off)["spec"]["suspend"], false);
    let before = Timestamp::now().as_second();
    let requested = run(&action("run-now"), &scheduled);
    let stamp: Timestamp = requested["metadata"]["annotations"]["kra.dev/run-now"].as_str().unwrap().parse().unwrap();
    assert!(stamp.as_second() >= before - 1, "run-now stamps the current time: {stamp}");
    assert_eq!(requested["spec"], scheduled["spec"], "run-now leaves the spec alone");

    let (discovery, definitions) = actions("EvaluationRun");
    let run_object = resource("EvaluationRun", 1, None, json!({"dataset": {"races": ["20250524_1_1"]}}));
    let offered = run(&discovery, &run_object);
    assert_eq!(offered["suspend"]["disabled"], false);
    assert_eq!(definitions.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["suspend", "resume"]);
}
