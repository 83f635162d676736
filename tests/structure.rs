//! The shape of the code, checked: the module map in docs/architecture.md matches `src/`, no
//! function outgrows a screenful, and the dependencies between the top modules run one way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().to_string_lossy().replace('\\', "/")
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    files.sort();
    files
}

/// The code of a file without its unit tests.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests").map_or(text, |i| &text[..i])
}

#[test]
fn the_module_map_lists_every_module_and_nothing_else() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = &doc[doc.find("## Where things are").expect("the map section")..];
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `src/"))
        .filter_map(|rest| rest.split('`').next())
        .map(|path| format!("src/{path}"))
        .collect();
    let present: BTreeSet<String> = all_sources().iter().map(|p| relative(p)).collect();
    let missing: Vec<_> = present.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&present).collect();
    assert!(missing.is_empty(), "modules missing from docs/architecture.md: {missing:?}");
    assert!(stale.is_empty(), "docs/architecture.md lists modules that do not exist: {stale:?}");
}

/// `(file, function, lines)` of every function, found by its `fn` line and the closing brace at
/// the same indentation (the code is rustfmt-formatted).
fn functions() -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    for path in all_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = without_tests(&text).lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            let signature = ["fn ", "pub fn ", "async fn ", "pub async fn ", "pub(super) fn ", "pub(crate) fn "]
                .iter()
                .find_map(|prefix| trimmed.strip_prefix(prefix));
            let Some(rest) = signature else { continue };
            if trimmed.ends_with(';') {
                continue;
            }
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let close = format!("{indent}}}");
            let end = lines[i + 1..].iter().position(|l| *l == close).map_or(lines.len(), |j| i + 1 + j);
            found.push((relative(&path), name, end - i + 1));
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_a_hundred_lines() {
    let all = functions();
    assert!(all.len() > 300, "the scan found only {} functions: is it still reading the code?", all.len());
    assert!(all.iter().any(|(file, name, _)| file == "src/controller/plan.rs" && name == "plan"));
    let long: Vec<_> = all.iter().filter(|(_, _, lines)| *lines > 100).collect();
    assert!(long.is_empty(), "functions over 100 lines (split them into named steps): {long:?}");
}

/// The top modules `module` refers to through `crate::`, outside its unit tests.
fn uses(module: &str) -> BTreeSet<String> {
    let file = root().join("src").join(format!("{module}.rs"));
    let paths = if file.exists() {
        vec![file]
    } else {
        let mut files = Vec::new();
        sources(&root().join("src").join(module), &mut files);
        files
    };
    let mut used = BTreeSet::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for part in without_tests(&text).split("crate::").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name != module {
                used.insert(name);
            }
        }
    }
    used
}

#[test]
fn dependencies_run_one_way() {
    let forbidden: &[(&str, &[&str])] = &[
        ("crd", &["controller", "collector", "evaluator", "store", "race", "worker", "metrics", "operator"]),
        ("race", &["controller", "collector", "evaluator", "store", "kra"]),
        ("store", &["controller", "collector", "evaluator"]),
        ("worker", &["controller", "collector", "evaluator", "store"]),
        ("metrics", &["controller", "operator"]),
        ("kra", &["controller", "collector", "evaluator", "store"]),
        ("collector", &["controller", "evaluator", "operator"]),
        ("evaluator", &["controller", "collector", "operator"]),
        ("controller", &["collector", "evaluator", "store", "operator"]),
    ];
    assert!(uses("collector").contains("store"), "the scan must see the collector's use of the store");
    for (module, never) in forbidden {
        let used = uses(module);
        let wrong: Vec<_> = never.iter().filter(|m| used.contains(**m)).collect();
        assert!(wrong.is_empty(), "src/{module} must not depend on {wrong:?}");
    }
}
