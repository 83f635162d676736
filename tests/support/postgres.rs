//! A real PostgreSQL server for the store tests, started by the test itself: `initdb` and
//! `pg_ctl` on a scratch directory and a free port (as the `postgres` user when the tests run as
//! root: `initdb` refuses root), with fsync off. `KRA_TEST_POSTGRES_URL` points the tests at an
//! existing server instead. Every test gets a database of its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    admin_url: String,
    /// The server this process started: the binaries' directory and its scratch directory.
    owned: Option<(PathBuf, PathBuf)>,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KRA_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries not found: run scripts/test (it installs them) or set KRA_TEST_PG_BIN")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `program` run as the owner of the data directory: `postgres` when the tests run as root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_as_owner(program: &Path, args: &[&str]) {
    let output = as_owner(program).args(args).output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{} {:?} failed: {}{}",
        program.display(),
        args,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Postgres {
    pub fn start() -> Postgres {
        if let Ok(url) = std::env::var("KRA_TEST_POSTGRES_URL") {
            return Postgres { admin_url: url, owned: None };
        }
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("kra-pg-{}-{}", std::process::id(), super::random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(status.success());
        }
        let data = dir.join("data");
        let port = super::free_port();
        run_as_owner(
            &bin.join("initdb"),
            &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        let options = format!("-F -c fsync=off -c listen_addresses=127.0.0.1 -p {port} -k {}", dir.display());
        run_as_owner(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                dir.join("server.log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Postgres { admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), owned: Some((bin, dir)) }
    }

    /// A new, empty database; its URL.
    pub async fn database(&self) -> String {
        use sqlx::Connection;
        let name = format!("kra_{}", super::random_suffix());
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.expect("connect to PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((bin, dir)) = &self.owned {
            let data = dir.join("data");
            let stopped =
                as_owner(&bin.join("pg_ctl")).args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
            // The data directory is about 40 MB: a test run starts a dozen servers. A server that
            // did not stop keeps its directory (and its log) for a look.
            if stopped.is_ok_and(|o| o.status.success()) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
