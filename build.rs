//! Embeds the commit the binaries are built from (`KRA_COMMIT_SHA`), for the evaluator's run
//! metadata and `--version` (`KRA_VERSION`). A build without git (an image build without .git) passes it as an environment variable.

use std::process::Command;

fn main() {
    let sha = std::env::var("KRA_COMMIT_SHA").ok().filter(|s| !s.is_empty()).or_else(|| {
        let output = Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    });
    let sha = sha.unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KRA_COMMIT_SHA={sha}");
    // What `--version` prints: the release and the commit it was built from.
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=KRA_VERSION={version} (commit {sha})");
    println!("cargo:rerun-if-env-changed=KRA_COMMIT_SHA");
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
