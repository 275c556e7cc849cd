//! The state database: every transfer batch and item ps-globus tracks, the pollers'
//! leases, the request budget, the named dataset references and the lease lifetimes, in
//! SQLite (a file on this host, the default) or PostgreSQL (one server every host of a
//! facility reaches: `state_url`).
//!
//! The SQL lives in a few files, each the whole storage interface of one user:
//! `transfer/manager/sql.rs` and `claim.rs` (batches, items, processes, leases),
//! `transfer/watch.rs` and `budget.rs` (the shared watcher and request budget), and
//! `state/refs.rs` (references), `state/leases.rs` (lease lifetimes). It is written once, in the dialect both engines share,
//! and run through `state/query.rs`, the one place that knows there are two engines. One write
//! bypasses it on SQLite: the group commit every `put` waits for runs on a direct
//! connection (`state/direct.rs`) in WAL mode (sqlx's hand-overs cost a thread wake-up
//! each, most of a put's time).
//!
//! Which database: [`StateDb::open_default`] takes `PS_GLOBUS_STATE_URL`, else the
//! configuration file's `state_url`, else `state.db` in the state directory
//! ([`Settings::home`]): `$PS_GLOBUS_HOME/state.db`, else
//! `$XDG_DATA_HOME/ps-globus/state.db`, else `~/.local/share/ps-globus/state.db`.
//! Several processes (and, on PostgreSQL, hosts) share it: writes that read first run in
//! write transactions (`StateDb::begin_write`) that serialise writers, so they queue
//! instead of failing half-way or losing an update.
//!
//! **Network file systems.** SQLite's WAL mode needs shared memory that NFS, Lustre, GPFS
//! and friends do not provide, and is unsafe there. When the database sits on one, it is
//! opened in the rollback-journal mode (`journal_mode=DELETE`) instead, and
//! [`StateDb::warning`] says so and what to do (put `PS_GLOBUS_HOME` on a local disk, or
//! share one PostgreSQL database).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::error::{Error, Result};
use crate::settings::Settings;

pub(crate) mod direct;
mod fork;
pub(crate) mod jobs;
pub(crate) mod leases;
#[cfg(test)]
#[path = "../../tests/support/pg_cluster.rs"]
#[allow(unreachable_pub)] // shared with the integration tests, where it is `pub`
pub(crate) mod pg_test_cluster;
pub(crate) mod postgres;
pub(crate) mod query;
pub(crate) mod refs;
mod shared;

/// Every schema migration of one engine, embedded in the binary: (version, name, SQL).
/// Each engine has its own folder (`migrations/sqlite/`, `migrations/postgres/`) with the
/// same versions and the same tables and columns: a new migration is a file in each and
/// a `version "name"` pair in the list here.
macro_rules! migrations {
    ($engine:literal) => {
        migrations!($engine: 1 "init", 2 "refs", 3 "strict_service", 4 "reporting",
            5 "merging", 6 "lifetime_leases", 7 "lease_reach", 8 "shared_batches", 9 "jobs")
    };
    // `migrations/<engine>/000<version>_<name>.sql`, for versions 1 to 9.
    ($engine:literal: $($version:literal $name:literal),*) => {
        &[$((
            $version,
            $name,
            include_str!(concat!("../../migrations/", $engine, "/000", $version, "_", $name, ".sql")),
        )),*]
    };
}

/// The SQLite schema's migrations.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = migrations!("sqlite");
/// The PostgreSQL schema's migrations (see [`postgres`]).
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = migrations!("postgres");

fn migrator(migrations: &'static [(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    (*name).into(),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Names the network file system `path` is on, if it is on one.
///
/// [`Settings::assume_network_fs`] (`PS_GLOBUS_ASSUME_NETWORK_FS=1`) forces a yes (to
/// test the fallback, or where the detection cannot see through a mount).
pub(crate) fn network_file_system(path: &Path, settings: &Settings) -> Option<&'static str> {
    if settings.assume_network_fs {
        return Some("network (PS_GLOBUS_ASSUME_NETWORK_FS=1)");
    }
    let stat = rustix::fs::statfs(path).ok()?;
    classify_fs_magic(stat.f_type as i64)
}

/// The network file systems known by their `statfs` magic numbers.
pub(crate) fn classify_fs_magic(magic: i64) -> Option<&'static str> {
    match magic as u32 {
        0x6969 => Some("NFS"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x4750_4653 => Some("GPFS"),
        0xFF53_4D42 | 0xFE53_4D42 => Some("SMB/CIFS"),
        0x1983_0326 => Some("BeeGFS"),
        0x00C3_6400 => Some("CephFS"),
        0x0102_1997 => Some("9p"),
        0x6B41_4653 => Some("AFS"),
        0x5346_4846 => Some("WekaFS"),
        _ => None,
    }
}

/// An open state database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StateDb {
    pool: Pool,
    /// The SQLite file, or the PostgreSQL URL without its password: what errors name.
    path: Arc<Path>,
    warning: Option<String>,
}

/// The connections of one engine.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The database's clock in Unix milliseconds, on PostgreSQL (the one clock every host
/// shares; `clock_timestamp`, not `now`, which stands still within a transaction).
const PG_CLOCK_MS: &str =
    "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT)";

/// This host's clock in Unix milliseconds.
fn local_clock_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl StateDb {
    /// Opens (creating if needed) the state database the settings and the configuration
    /// file name: `state_url` (`PS_GLOBUS_STATE_URL`, else the configuration file's
    /// `state_url`), else `state.db` in the settings' state directory.
    pub async fn open_default(settings: &Settings) -> Result<StateDb> {
        Self::open_in(&settings.home, settings).await
    }

    /// Whether this is a SQLite database whose file was removed (nothing will open it
    /// again); a PostgreSQL database is never "removed", only unreachable for a while.
    pub(crate) fn is_removed(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_)) && !self.path.exists()
    }

    /// [`open_default`](Self::open_default) with `home` as the state directory (where a
    /// store keeps its own state): a configured `state_url` still wins, so that every
    /// store and command of a facility shares the facility's database.
    pub async fn open_in(home: &Path, settings: &Settings) -> Result<StateDb> {
        match state_url(settings)? {
            Some(url) => Self::open_url(&url, settings).await,
            None => Self::open_with(home.join("state.db"), settings).await,
        }
    }

    /// Opens the state database at `url`: `sqlite:PATH` (a file on this host) or
    /// `postgres://USER@HOST:PORT/DATABASE` (a server every host reaches; `?host=/DIR`
    /// for a local socket). Anything else is a typed error saying what is accepted.
    pub async fn open_url(url: &str, settings: &Settings) -> Result<StateDb> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Self::open_with(path, settings).await;
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StateDb {
                pool: Pool::Postgres(postgres::open(url).await?),
                path: Path::new(&postgres::redacted(url)).into(),
                warning: None,
            });
        }
        Err(Error::invalid_config(
            "state_url",
            format!(
                "{:?} is not a state database URL: use sqlite:PATH (the default, a file on \
                 this host) or postgres://USER@HOST:PORT/DATABASE (one database for every host)",
                postgres::redacted(url)
            ),
        ))
    }

    /// Opens (creating if needed) the database at `path` and brings its schema up to date,
    /// with the settings this process's environment holds now.
    pub async fn open(path: impl AsRef<Path>) -> Result<StateDb> {
        Self::open_with(path, &Settings::from_env()).await
    }

    /// [`open`](Self::open), with `settings` deciding what the environment would.
    pub async fn open_with(path: impl AsRef<Path>, settings: &Settings) -> Result<StateDb> {
        let path = path.as_ref().to_path_buf();
        fork::check_sqlite_allowed(&path)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let network = network_file_system(dir, settings);
        let journal = if network.is_some() {
            SqliteJournalMode::Delete
        } else {
            SqliteJournalMode::Wal
        };
        let warning = network.map(|fs| {
            format!(
                "the state database {} is on {fs}, where SQLite's WAL mode is unsafe; it runs in \
                 rollback-journal mode instead, which is slower and still relies on the file \
                 system's locks. Put PS_GLOBUS_HOME on a local disk (e.g. /tmp or node-local \
                 scratch), or give every host one PostgreSQL database (state_url)",
                path.display()
            )
        });
        let state_error =
            |e: sqlx::Error| database_error(&path, "the state database cannot be opened", e);
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(state_error)?
            .filename(&path)
            .create_if_missing(false)
            .journal_mode(journal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Two opens of a fresh database must not both create it: one connects and
        // migrates at a time, in this process (async lock) and across processes (flock).
        // Connecting is inside: the first connection switches a new file to WAL, which
        // takes an exclusive lock SQLite does not wait for ("database is locked").
        /// The slot's own type.
        struct Opening(tokio::sync::Mutex<()>);
        let opening = crate::process::own(|| Opening(tokio::sync::Mutex::const_new(())));
        let _one_here = opening.0.lock().await;
        let lock_path = path.with_extension("migrate.lock");
        let pool = crate::fsutil::with_file_lock(&lock_path, || {
            crate::runtime::block_on(async {
                // Only the first connection may create the file: the pool opens more as
                // it needs them, and one opened after the database was removed (a test's
                // directory, a home cleaned while a process ran) made an empty database
                // without tables there, rather than failing.
                let first =
                    SqliteConnection::connect_with(&options.clone().create_if_missing(true))
                        .await
                        .map_err(state_error)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    // No ping before every acquire: a round trip to the connection's
                    // thread per query, for a file that cannot go away the way a server
                    // can.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(state_error)?;
                first.close().await.map_err(state_error)?;
                migrator(SQLITE_MIGRATIONS)
                    .run(&pool)
                    .await
                    .map_err(|e| match e {
                        sqlx::migrate::MigrateError::Execute(e) => database_error(
                            &path,
                            "cannot bring the state database's schema up to date",
                            e,
                        ),
                        e => Error::state(
                            &path,
                            "cannot bring the state database's schema up to date (if a \
                             newer ps-globus wrote this database, upgrade this one)",
                            e,
                        ),
                    })?;
                Ok(pool)
            })
        })?;
        Ok(StateDb {
            pool: Pool::Sqlite(pool),
            path: path.into(),
            warning,
        })
    }

    /// The SQLite pool, for what only SQLite does (the commit lane's checkpoints);
    /// `None` on PostgreSQL.
    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// The SQLite pool of a test's database.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        self.sqlite_pool().expect("a SQLite state database")
    }

    /// Closes every connection (waiting for queries in flight); a later query fails.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    /// Where the database is: the SQLite file, or the PostgreSQL URL (without its
    /// password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the database runs in a degraded mode, if it does (network file system).
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// The database engine that holds the state: `SQLite` (a file on this host) or
    /// `PostgreSQL` (a server shared by every host that names it).
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "SQLite",
            Pool::Postgres(_) => "PostgreSQL",
        }
    }

    /// The newest schema version applied (the migrations' numbering, shared by every
    /// engine).
    pub async fn schema_version(&self) -> Result<i64> {
        query::query("SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM _sqlx_migrations")
            .fetch_scalar(self)
            .await
    }

    /// How the engine runs: SQLite's journal mode (`wal`, or `delete` on network file
    /// systems), or the PostgreSQL server's version.
    pub async fn mode(&self) -> Result<String> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(format!(
                "{} journal",
                self.journal_mode().await?.unwrap_or_default()
            )),
            Pool::Postgres(_) => {
                let version: String = query::query("SHOW server_version")
                    .fetch_scalar(self)
                    .await?;
                Ok(format!("server {version}"))
            }
        }
    }

    /// The journal mode in use (`wal`, or `delete` on network file systems); `None` on
    /// PostgreSQL.
    pub async fn journal_mode(&self) -> Result<Option<String>> {
        if self.sqlite_pool().is_none() {
            return Ok(None);
        }
        let mode: String = query::query("PRAGMA journal_mode")
            .fetch_scalar(self)
            .await?;
        Ok(Some(mode.to_lowercase()))
    }

    /// Now, in Unix milliseconds, by the clock every user of the database shares: this
    /// host's for SQLite (only this host uses it), the server's for PostgreSQL (hosts'
    /// clocks drift; leases and heartbeats must not).
    pub async fn clock_ms(&self) -> Result<i64> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(local_clock_ms()),
            Pool::Postgres(_) => query::query(PG_CLOCK_MS).fetch_scalar(self).await,
        }
    }

    /// A transaction that holds the write lock from its start: use it for every
    /// read-then-write, so concurrent writers queue instead of failing (see [`query`]).
    pub(crate) async fn begin_write(&self) -> Result<query::Tx> {
        query::Tx::begin(self, true).await
    }

    /// A transaction for writes that read nothing another writer changes (the commit
    /// lane's inserts of its own batches and items): all or nothing, but on PostgreSQL
    /// without the write lock, so that every host's appends run side by side.
    pub(crate) async fn begin_append(&self) -> Result<query::Tx> {
        query::Tx::begin(self, false).await
    }

    /// A connection of its own for the group commit of enqueued transfers (see
    /// [`direct`]); `None` on PostgreSQL.
    pub(crate) fn direct(&self) -> Option<Result<direct::DirectConnection>> {
        self.sqlite_pool()?;
        Some(
            direct::DirectConnection::open(&self.path)
                .map_err(|e| self.direct_error("the state database cannot be opened", e)),
        )
    }

    /// Whether a commit never waits for readers (SQLite's WAL mode), so that the commit
    /// lane may run it on the caller's own thread.
    pub(crate) fn commits_without_readers(&self) -> bool {
        self.warning.is_none() && self.sqlite_pool().is_some()
    }

    /// Wraps an error of a [`direct::DirectConnection`] with the database's path.
    pub(crate) fn direct_error(&self, context: &str, e: direct::DirectError) -> Error {
        classified(&self.path, context, direct::result_code(&e), e)
    }

    /// Wraps a database error with the database's path.
    pub(crate) fn error(&self, e: sqlx::Error) -> Error {
        database_error(&self.path, "a query of the state database failed", e)
    }
}

/// The state URL the settings name (`PS_GLOBUS_STATE_URL`), else the configuration
/// file's `state_url`; `None` for the default (SQLite in the state directory).
fn state_url(settings: &Settings) -> Result<Option<String>> {
    if let Some(url) = &settings.state_url {
        return Ok(Some(url.clone()));
    }
    Ok(crate::config::Config::load(settings)?.state_url)
}

/// A database error on the database at `path` while doing `context` (see [`classified`]).
fn database_error(path: &Path, context: &str, e: sqlx::Error) -> Error {
    let code = e.as_database_error().and_then(|d| d.code());
    classified(path, context, code.and_then(|c| c.parse().ok()), e)
}

/// An error with SQLite result code `code` on the database at `path` while doing
/// `context`; a full disk is said to be one, whatever SQLite called it, with the
/// directory to free.
fn classified(
    path: &Path,
    context: &str,
    code: Option<i64>,
    e: impl Into<crate::error::BoxError>,
) -> Error {
    if code.is_some_and(means_disk_full) {
        let dir = path.parent().unwrap_or(Path::new("."));
        return Error::state(
            path,
            format!(
                "the file system holding the state database is full, over quota or failing: \
                 free space under {} (nothing of this operation was committed)",
                dir.display()
            ),
            e,
        );
    }
    Error::state(path, context, e)
}

/// Whether a SQLite result code (extended codes included) means the disk is full:
/// `SQLITE_FULL` in any of its forms, or the I/O errors a full disk causes in WAL mode
/// (growing the shared-memory file, `SQLITE_IOERR_SHMSIZE`, 4874; writing,
/// `SQLITE_IOERR_WRITE`, 778), which SQLite reports only as "disk I/O error".
fn means_disk_full(code: i64) -> bool {
    const SQLITE_FULL: i64 = 13;
    code & 0xff == SQLITE_FULL || code == 4874 || code == 778
}

#[cfg(test)]
pub(crate) mod tests;
