//! The state database on a PostgreSQL server, which every host of a facility reaches
//! (issue 16): connecting, and bringing the schema up to date from
//! `migrations/postgres/` (the same versions as `migrations/sqlite/`).
//!
//! Many hosts may open a fresh database at once: sqlx's migrator holds a PostgreSQL
//! advisory lock while it migrates, so one host creates the schema and the others find
//! it done. A database URL may carry a password: it appears in no error and no log
//! ([`redacted`]).
//!
//! [`StateDb::open_url`](super::StateDb::open_url) opens it for a `postgres://` state
//! URL; from then on the state layer's statements ([`super::query`]) run on it as on
//! SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{Error, Result};

/// Connects to the PostgreSQL database at `url` and brings its schema up to date.
pub(crate) async fn open(url: &str) -> Result<PgPool> {
    let shown = redacted(url);
    let failed = |message: &str, e: sqlx::Error| Error::state(&shown, message, e);
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        failed(
            "the state URL is not a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE, \
             or ?host=/SOCKET/DIR for a local socket)",
            e,
        )
    })?;
    // One connection first, so that a server that is not there says so at once, with
    // where it was looked for (a pool would retry until its acquire timeout, then say
    // only "pool timed out").
    let probe = options.connect().await.map_err(|e| {
        let place = match options.get_socket() {
            Some(dir) => format!("the socket in {}", dir.display()),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        if let Some(name) = missing_database(&e) {
            // The server's own words end with its source line ("at line 948"): ours say
            // what to do instead.
            return Error::state_message(
                shown.clone(),
                format!(
                    "the PostgreSQL server at {place} has no database {name:?}: create it \
                     (`createdb {name}`, or `CREATE DATABASE {name}` as a role that may), \
                     then run this again; ps-globus creates its tables, not the database"
                ),
            );
        }
        failed(
            &format!("cannot connect to the PostgreSQL state database at {place}"),
            e,
        )
    })?;
    let _ = sqlx::Connection::close(probe).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| failed("cannot connect to the PostgreSQL state database", e))?;
    let migrator = super::migrator(super::POSTGRES_MIGRATIONS);
    if up_to_date(&pool, &migrator).await {
        return Ok(pool);
    }
    migrator.run(&pool).await.map_err(|e| {
        Error::state(
            &shown,
            "cannot bring the PostgreSQL state database's schema up to date",
            e,
        )
    })?;
    Ok(pool)
}

/// Whether every migration of `migrator` is applied to the database, unchanged (the
/// checksums sqlx recorded). Looked at without the migrator's advisory lock: a fleet of
/// workers starting at once (64 processes) queued on that lock for 2 s before their
/// first puts, to learn one after another that there was nothing to do. Anything else
/// (no table yet, a failed or changed migration, an error) is for the migrator to
/// settle, under its lock.
async fn up_to_date(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> bool {
    let applied: Vec<(i64, bool, Vec<u8>)> =
        match sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(_) => return false,
        };
    applied.len() == migrator.iter().count()
        && migrator.iter().all(|m| {
            applied.iter().any(|(version, success, checksum)| {
                *version == m.version && *success && checksum[..] == m.checksum[..]
            })
        })
}

/// The database `e` says does not exist (PostgreSQL's `invalid_catalog_name`, 3D000).
fn missing_database(e: &sqlx::Error) -> Option<String> {
    let database = e.as_database_error()?;
    if database.code().as_deref() != Some("3D000") {
        return None;
    }
    // `database "NAME" does not exist`
    let message = database.message();
    let name = message.split('"').nth(1).unwrap_or(message);
    Some(name.to_owned())
}

/// `url` fit to show (see [`crate::redact::url`]).
pub(crate) fn redacted(url: &str) -> String {
    crate::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::pg_test_cluster;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redacted("postgres://me:s3cret@db.example:5432/psg"),
            "postgres://me:***@db.example:5432/psg"
        );
        assert_eq!(
            redacted("postgres://me@db.example/psg"),
            "postgres://me@db.example/psg"
        );
        assert!(!redacted("postgres//me:s3cret@nowhere").contains("s3cret"));
        assert!(!redacted("postgres://me@db/psg?password=s3cret").contains("s3cret"));
    }

    /// A database at the newest schema is seen so without the migrator (and its lock);
    /// one whose recorded migration differs from ours is not: the migrator then refuses
    /// it, as it did before this look.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_an_unchanged_newest_schema_skips_the_migrator() {
        let url = pg_test_cluster::fresh_database().await;
        let pool = open(&url).await.unwrap();
        let migrator = crate::state::migrator(crate::state::POSTGRES_MIGRATIONS);
        assert!(up_to_date(&pool, &migrator).await, "freshly migrated");
        sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
            .execute(&pool)
            .await
            .unwrap();
        assert!(!up_to_date(&pool, &migrator).await, "a changed migration");
        let refused = open(&url)
            .await
            .expect_err("the migrator refuses a changed one");
        assert_eq!(refused.kind(), crate::ErrorKind::Storage, "{refused}");
        assert!(
            refused.to_string().contains("schema up to date"),
            "{refused}"
        );
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
            .execute(&pool)
            .await
            .unwrap();
        assert!(!up_to_date(&pool, &migrator).await, "one missing");
    }

    /// Hosts that open a fresh database at the same moment all succeed, and the schema is
    /// made once: every table at the newest version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_of_a_fresh_database_migrate_it_once() {
        let url = pg_test_cluster::fresh_database().await;
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { open(&url).await })
            })
            .collect();
        let mut pools = Vec::new();
        for o in opens {
            pools.push(o.await.unwrap().expect("every host opens the database"));
        }
        let pool = &pools[0];
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap();
        let newest: Vec<i64> = crate::state::POSTGRES_MIGRATIONS
            .iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(applied, newest);
        let mut tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        tables.sort();
        assert_eq!(
            tables,
            [
                "batches",
                "generation",
                "items",
                "jobs",
                "leases",
                "lifetime_leases",
                "lifetime_objects",
                "processes",
                "refs",
                "request_budget",
                "watched_tasks",
                "watches"
            ]
        );
        // The two engines' schemas have the same columns.
        let columns: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name NOT LIKE '\\_sqlx%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(columns, crate::state::tests::sqlite_column_count().await);
    }

    /// Regression: an unreachable server read "pool timed out" after 10 s; it says the
    /// connection was refused, and where, at once.
    #[tokio::test]
    async fn an_unreachable_server_says_refused_and_where() {
        let err = open("postgres://me:s3cret@127.0.0.1:1/psg?password=s3cret")
            .await
            .unwrap_err();
        let text = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("timed out"), "{text}");
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_a_clear_error_without_the_password() {
        // A socket directory with no server in it.
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "postgres://me:s3cret@localhost/psg?host={}&port=1",
            dir.path().display()
        );
        let err = open(&url).await.unwrap_err().to_string();
        assert!(err.contains("cannot connect"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
