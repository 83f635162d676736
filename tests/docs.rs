//! The documentation says what exists: every relative link (and its `#anchor`) in the README,
//! docs/ and the chart resolves, and every command in their shell blocks names binaries,
//! sub-commands, options and repository paths that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md"), root().join("charts/kra-operator/README.md")];
    walk(&root().join("docs"), &mut files);
    files
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(target, line)` of every inline Markdown link outside code.
fn links(text: &str) -> Vec<(String, usize)> {
    let mut in_code = false;
    let mut out = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((after[..end].to_string(), number + 1));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let files = markdown_files();
    assert!(files.len() >= 10, "expected the README and the docs, found {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (target, line) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').map(|(p, a)| (p, Some(a))).unwrap_or((&target, None));
            let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            let place = format!("{}:{line}: {target}", file.strip_prefix(root()).unwrap().display());
            if !resolved.exists() {
                broken.push(format!("{place} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor
                && resolved.extension().is_some_and(|e| e == "md")
                && !anchors(&std::fs::read_to_string(&resolved).unwrap()).contains(anchor)
            {
                broken.push(format!("{place} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Shell commands of the fenced `sh` blocks, continuation lines joined, split at `&&`, `|`, `;`.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    for line in text.lines() {
        if let Some(lang) = line.strip_prefix("```") {
            in_shell = !in_shell && matches!(lang.trim(), "sh" | "bash" | "shell");
            continue;
        }
        if !in_shell || line.trim_start().starts_with('#') {
            continue;
        }
        let line = line.split(" # ").next().unwrap();
        if let Some(continued) = line.strip_suffix('\\') {
            pending.push_str(continued);
            continue;
        }
        pending.push_str(line);
        for part in pending.split("&&").flat_map(|p| p.split('|')).flat_map(|p| p.split(';')) {
            let part = part.trim().trim_start_matches('(').trim_end_matches(')').trim_end_matches('&').trim();
            if !part.is_empty() {
                out.push(part.to_string());
            }
        }
        pending.clear();
    }
    out
}

fn binary(token: &str) -> Option<&'static str> {
    let name = token.rsplit('/').next()?;
    match name {
        "kra-operator" => Some(env!("CARGO_BIN_EXE_kra-operator")),
        "kra-collector" => Some(env!("CARGO_BIN_EXE_kra-collector")),
        "kra-evaluator" => Some(env!("CARGO_BIN_EXE_kra-evaluator")),
        _ => None,
    }
}

const REPO_DIRS: &[&str] = &["config/", "crds/", "charts/", "docs/", "scripts/", "migrations/", "examples/", "tests/"];

#[test]
fn documented_commands_name_things_that_exist() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let place = file.strip_prefix(root()).unwrap().display().to_string();
        for command in commands(&text) {
            let tokens: Vec<&str> =
                command.split_whitespace().filter(|t| !t.contains('=') || t.starts_with("--")).collect();
            // Repository paths named anywhere in the command exist.
            for token in &tokens {
                let token = token.trim_matches(|c| c == '\'' || c == '"');
                let path = token.split_once('=').map_or(token, |(_, v)| v);
                if REPO_DIRS.iter().any(|d| path.starts_with(d)) && !path.contains('<') && !root().join(path).exists() {
                    problems.push(format!("{place}: `{command}` names {path}, which does not exist"));
                }
            }
            // Project binaries: the sub-command exists and accepts every option given.
            if let Some(bin) = tokens.first().and_then(|t| binary(t)) {
                checked += 1;
                let sub: Vec<&str> = tokens[1..].iter().take_while(|t| !t.starts_with('-')).take(1).copied().collect();
                let output = Command::new(bin).args(&sub).arg("--help").output().unwrap();
                let help = String::from_utf8_lossy(&output.stdout).into_owned();
                if !output.status.success() {
                    problems.push(format!("{place}: `{command}`: `{} --help` fails", sub.join(" ")));
                    continue;
                }
                for option in tokens.iter().filter(|t| t.starts_with("--")) {
                    let option = option.split('=').next().unwrap();
                    if !help.contains(&format!("{option} "))
                        && !help.contains(&format!("{option}\n"))
                        && !help.contains(&format!("{option}="))
                        && !help.contains(&format!("{option} <"))
                    {
                        problems
                            .push(format!("{place}: `{command}`: {option} is not an option of `{}`", sub.join(" ")));
                    }
                }
            }
            // `cargo run --example X` names an example that exists.
            if let Some(position) = tokens.iter().position(|t| *t == "--example") {
                let name = tokens.get(position + 1).copied().unwrap_or_default();
                if !root().join("examples").join(format!("{name}.rs")).exists() {
                    problems.push(format!("{place}: `{command}`: no example {name}"));
                }
            }
        }
    }
    assert!(checked >= 5, "expected commands of the project's binaries in the docs, found {checked}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_readme_test_command_is_the_one_ci_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap_or_default();
    assert!(commands(&readme).iter().any(|c| c == "bash scripts/test"), "the README gives `bash scripts/test`");
    assert!(ci.contains("scripts/test"), ".ci/run calls scripts/test");
}

#[test]
fn each_binary_help_says_what_that_binary_does() {
    for (binary, words) in [
        (env!("CARGO_BIN_EXE_kra-operator"), "Kubernetes operator"),
        (env!("CARGO_BIN_EXE_kra-collector"), "Collect Korea Racing Authority race data"),
        (env!("CARGO_BIN_EXE_kra-evaluator"), "Evaluate top-three predictors"),
    ] {
        let output = Command::new(binary).arg("--help").output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        let header = help.lines().next().unwrap_or_default();
        assert!(header.starts_with(words), "{binary}: {header}");
    }
}

#[test]
fn each_binary_prints_shell_completions_of_its_own_commands() {
    for (binary, name, subcommand) in [
        (env!("CARGO_BIN_EXE_kra-operator"), "kra-operator", "crd"),
        (env!("CARGO_BIN_EXE_kra-collector"), "kra-collector", "pipeline"),
        (env!("CARGO_BIN_EXE_kra-evaluator"), "kra-evaluator", "score"),
    ] {
        for shell in ["bash", "zsh", "fish"] {
            let output = Command::new(binary).args(["completions", shell]).output().unwrap();
            assert!(output.status.success(), "{name} completions {shell}: {}", String::from_utf8_lossy(&output.stderr));
            let script = String::from_utf8_lossy(&output.stdout);
            assert!(script.contains(name) && script.contains(subcommand), "{name} {shell}: {script}");
        }
        let refused = Command::new(binary).args(["completions", "tcsh"]).output().unwrap();
        assert!(!refused.status.success(), "{name} accepted an unknown shell");
    }
}

#[test]
fn each_binary_version_names_the_commit_it_was_built_from() {
    for (binary, name) in [
        (env!("CARGO_BIN_EXE_kra-operator"), "kra-operator"),
        (env!("CARGO_BIN_EXE_kra-collector"), "kra-collector"),
        (env!("CARGO_BIN_EXE_kra-evaluator"), "kra-evaluator"),
    ] {
        let output = Command::new(binary).arg("--version").output().unwrap();
        assert!(output.status.success());
        let version = String::from_utf8_lossy(&output.stdout);
        let expected = format!(
            "{name} {} (commit {})\n",
            env!("CARGO_PKG_VERSION"),
            kra_operator::evaluator::metadata::COMMIT_SHA
        );
        assert_eq!(version, expected);
    }
}
