//! The committed CRDs under crds/ are exactly what the Rust types generate.

use std::collections::BTreeSet;

use kra_operator::crd;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected = BTreeSet::new();
    for definition in crd::all() {
        let name = crd::file_name(&definition);
        let generated = crd::to_yaml(&definition).unwrap();
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/{name} is stale: regenerate it with `cargo run --bin kra-operator -- crd --out-dir crds`"
        );
        expected.insert(name);
    }
    // kustomization.yaml lists the CRDs for config/default; everything else is generated.
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(present, expected, "crds/ holds files no type generates");
}

#[test]
fn the_chart_carries_the_same_crds() {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/kra-operator/files/crds");
    let mut expected = BTreeSet::new();
    for definition in crd::all() {
        let name = crd::file_name(&definition);
        let committed = std::fs::read_to_string(chart.join(&name)).unwrap_or_default();
        assert!(
            committed == crd::to_yaml(&definition).unwrap(),
            "charts/kra-operator/files/crds/{name} is stale: regenerate it with \
             `cargo run --bin kra-operator -- crd --out-dir charts/kra-operator/files/crds`"
        );
        expected.insert(name);
    }
    let present: BTreeSet<String> =
        std::fs::read_dir(&chart).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(present, expected, "the chart holds CRD files no type generates");
}

#[test]
fn crd_print_command_prints_every_crd() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kra-operator")).arg("crd").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text, crd::all_yaml().unwrap());
    assert!(text.contains("name: krajobs.kra.dev") && text.contains("name: evaluationruns.kra.dev"));
}

#[test]
fn the_crd_reference_is_generated_from_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/crds.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crd::reference::markdown(&crd::all());
    assert!(
        committed == generated,
        "docs/reference/crds.md is stale: regenerate it with `cargo run --bin kra-operator -- crd --reference > docs/reference/crds.md`"
    );
    // Every spec field of both kinds is documented, with its validation.
    for field in ["`apiKeySecretRef`", "`raceNumbers`", "`baselineRun`", "`predictor` *", "`snapshotPolicy`"] {
        assert!(generated.contains(field), "{field} missing from the reference");
    }
    assert!(generated.contains("set exactly one of date, dateRange and schedule"));
    assert!(generated.contains("apiKeySecretRef is required: this action calls the KRA API"));
}

#[test]
fn a_reader_that_stops_early_ends_the_crd_output_without_an_error() {
    use std::io::Read;
    // The CRDs are larger than a pipe's buffer, so the command is still writing when the reader
    // goes away (as with `kra-operator crd | head`).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kra-operator"))
        .arg("crd")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut start = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut start).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&start).starts_with("---"));
}
