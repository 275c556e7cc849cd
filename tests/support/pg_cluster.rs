//! A throw-away PostgreSQL server for tests: the one `scripts/test` started (its URL in
//! `PS_GLOBUS_TEST_POSTGRES_URL`), else one this test process starts itself from
//! Debian's packages (`initdb` + `pg_ctl`, on a private socket directory, no TCP) and
//! stops when it exits. As root, the server runs as the `postgres` user the package
//! made (`initdb` refuses root). Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The server's URL for a maintenance connection (database `postgres`).
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("PS_GLOBUS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start(),
    })
}

/// A new, empty database on the test server; its URL.
#[allow(dead_code)] // not every test binary uses it
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    let server = server();
    let name = format!("psg_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("the test PostgreSQL server does not answer: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    with_database(server, &name)
}

/// `server` with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let mut url = reqwest::Url::parse(server).expect("the test server's URL parses");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Where Debian puts a PostgreSQL version's programs (the newest installed), or `PATH`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        let version = p.parent().and_then(|v| v.file_name());
        version.and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    versions.pop().unwrap_or_default()
}

/// Runs a PostgreSQL program as the server's user, or panics saying what failed.
fn run(bin: &Path, program: &str, args: &[&str], as_postgres: bool) {
    let path = bin.join(program);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install PostgreSQL (apt-get install postgresql; scripts/test does)"));
    assert!(
        out.status.success(),
        "{program} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory of the server this process started, stopped at exit.
static STARTED: OnceLock<(PathBuf, PathBuf, bool)> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some((bin, dir, as_postgres)) = STARTED.get() {
        let data = dir.join("data");
        let data = data.to_str().unwrap_or_default();
        let _ = std::panic::catch_unwind(|| {
            run(
                bin,
                "pg_ctl",
                &["-D", data, "-m", "immediate", "stop"],
                *as_postgres,
            )
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Starts a server in a new temporary directory; its maintenance URL.
fn start() -> String {
    let bin = bin_dir();
    let as_postgres = rustix::process::geteuid().is_root();
    // In /tmp, which the postgres user can reach whatever TMPDIR says.
    let dir = tempfile::Builder::new()
        .prefix("ps-globus-pg.")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    if as_postgres {
        let out = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .output()
            .expect("chown runs");
        assert!(
            out.status.success(),
            "no postgres user to run the server as: install PostgreSQL from Debian's packages"
        );
    }
    let data = dir.join("data");
    let (data_s, dir_s) = (data.to_str().unwrap(), dir.to_str().unwrap());
    run(
        &bin,
        "initdb",
        &[
            "-D",
            data_s,
            "-A",
            "trust",
            "-U",
            "ps_globus",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        as_postgres,
    );
    let options = format!("-k {dir_s} -c listen_addresses= -p 5432 -F");
    let log = dir.join("log");
    run(
        &bin,
        "pg_ctl",
        &[
            "-D",
            data_s,
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ],
        as_postgres,
    );
    let _ = STARTED.set((bin, dir.clone(), as_postgres));
    // SAFETY: registers a plain function with no arguments, run once at exit.
    #[allow(unsafe_code)]
    unsafe {
        libc::atexit(stop_at_exit)
    };
    format!("postgres://ps_globus@localhost/postgres?host={dir_s}&port=5432")
}
