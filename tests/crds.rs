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
    for field in ["`apiKeySecretRef` *", "`raceNumbers`", "`baselineRun`", "`predictor` *"] {
        assert!(generated.contains(field), "{field} missing from the reference");
    }
    assert!(generated.contains("set exactly one of date, dateRange and schedule"));
}
