//! A SQLite connection driven on the caller's own thread, for the one write that every
//! `put` waits for (the group commit of enqueued transfers).
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement and
//! every result across a channel: on this kind of machine each of those hand-overs costs
//! a thread wake-up, most of a put's time (`strace -ff` showed 7.6 futex calls on the
//! putting thread per put). This connection is `rusqlite`'s, over the same SQLite
//! library sqlx links (`libsqlite3-sys`, one copy per build: its `links = "sqlite3"`
//! allows no second), called on the calling thread: a commit is then SQLite's own work
//! (about 30 µs here, most of it the WAL's locks and writes) and no hand-over.
//!
//! rusqlite is pinned to 0.39 in Cargo.toml because it is the release that depends on
//! the `libsqlite3-sys` sqlx 0.9 depends on (0.37); a later rusqlite asks for a later
//! `libsqlite3-sys`, and the two could not be linked into one build.
//!
//! By default it never waits for a lock: its busy timeout is zero, so a writer elsewhere
//! makes [`DirectConnection::begin_immediate`] fail at once with an error
//! [`is_busy`] recognises, and the caller runs the commit again on a blocking thread
//! with [`DirectConnection::wait_for_locks`]. It never runs a WAL checkpoint either
//! (`wal_autocheckpoint = 0`): that would copy the log into the database on the
//! caller's thread; [`DirectConnection::commits`] tells the caller when to ask for one
//! elsewhere.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::query::Arg;

/// What SQLite (or rusqlite) answered when a call failed.
pub(crate) type DirectError = rusqlite::Error;

/// Another connection holds the lock the failed call needed.
pub(crate) fn is_busy(e: &DirectError) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// SQLite's extended result code for `e` (`SQLITE_FULL` is 13, ...), if SQLite made it.
pub(crate) fn result_code(e: &DirectError) -> Option<i64> {
    e.sqlite_error().map(|e| i64::from(e.extended_code))
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Text(Some(text)) => ToSqlOutput::from(text),
            Arg::Int(Some(n)) => ToSqlOutput::from(n),
            Arg::Bool(Some(b)) => ToSqlOutput::from(i64::from(b)),
            Arg::Float(Some(f)) => ToSqlOutput::from(f),
            Arg::Text(None) | Arg::Int(None) | Arg::Bool(None) | Arg::Float(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
        })
    }
}

/// How many statements a connection keeps prepared: the commit's five, and room.
const PREPARED: usize = 16;

/// An open SQLite connection with its prepared statements, used from one thread at a
/// time.
#[derive(Debug)]
pub(crate) struct DirectConnection {
    /// `None` only inside `drop`, which closes it and reports a failure.
    connection: Option<Connection>,
    /// Transactions committed since [`commits`](Self::commits) last said so.
    commits: u64,
}

impl DirectConnection {
    /// Opens the existing database at `path` read-write, with no busy wait, `NORMAL`
    /// synchronous commits and foreign keys on (as the sqlx pool opens it), and no
    /// automatic checkpoint (see the module).
    pub(crate) fn open(path: &Path) -> Result<Self, DirectError> {
        // No SQLITE_OPEN_CREATE: the pool created and migrated the database.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags)?;
        connection.busy_timeout(Duration::ZERO)?;
        connection.set_prepared_statement_cache_capacity(PREPARED);
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(DirectConnection {
            connection: Some(connection),
            commits: 0,
        })
    }

    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("taken only by drop, which nothing follows")
    }

    /// Makes the connection wait up to `limit` for another writer's lock (a blocking
    /// thread's call), or not at all (`Duration::ZERO`, the caller's own thread).
    pub(crate) fn wait_for_locks(&mut self, limit: Duration) -> Result<(), DirectError> {
        self.connection().busy_timeout(limit)
    }

    /// Takes the write lock now (`BEGIN IMMEDIATE`), or fails with a busy error if
    /// another connection holds it (at once, unless [`wait_for_locks`](Self::wait_for_locks)).
    pub(crate) fn begin_immediate(&mut self) -> Result<(), DirectError> {
        self.run("BEGIN IMMEDIATE", &[], |_| {})
    }

    /// Commits the open transaction.
    pub(crate) fn commit(&mut self) -> Result<(), DirectError> {
        self.run("COMMIT", &[], |_| {})?;
        self.commits += 1;
        Ok(())
    }

    /// Rolls the open transaction back, if one is open.
    pub(crate) fn rollback(&mut self) {
        // On failure SQLite still rolls back what is open when the connection closes.
        if !self.connection().is_autocommit()
            && let Err(e) = self.run("ROLLBACK", &[], |_| {})
        {
            tracing::debug!("rolling back the commit lane's transaction failed: {e}");
        }
    }

    /// Whether `every` transactions were committed since it last said so: the caller's
    /// cue to checkpoint the write-ahead log elsewhere.
    pub(crate) fn commits(&mut self, every: u64) -> bool {
        let due = self.commits >= every;
        if due {
            self.commits = 0;
        }
        due
    }

    /// Runs one statement (prepared once per connection and kept: a transaction's
    /// `BEGIN` and `COMMIT` too) with `params` bound in order, handing the first column
    /// of each row it returns, as an integer, to `row`. A string holding more than one
    /// statement is an error, not its first statement run alone.
    /// The first column of the first row of `sql` as text, if it returns a row.
    pub(crate) fn first_text(
        &mut self,
        sql: &str,
        params: &[Arg<'_>],
    ) -> Result<Option<String>, DirectError> {
        let mut statement = self.connection().prepare_cached(sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        match rows.next()? {
            Some(row) => Ok(Some(row.get(0)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn run(
        &mut self,
        sql: &str,
        params: &[Arg<'_>],
        mut row: impl FnMut(i64),
    ) -> Result<(), DirectError> {
        let mut statement = self.connection().prepare_cached(sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            row(r.get(0)?);
        }
        Ok(())
    }
}

impl Drop for DirectConnection {
    fn drop(&mut self) {
        // Closing rolls back a transaction left open; a failure to close (SQLite keeps
        // the handle then) is said, not ignored.
        if let Some(connection) = self.connection.take()
            && let Err((_, e)) = connection.close()
        {
            tracing::warn!("closing the commit lane's SQLite connection failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, n INT)",
        )
        .unwrap();
        (dir, path)
    }

    #[test]
    fn statements_bind_text_integers_and_null_and_return_rows() {
        let (_dir, path) = database();
        let mut c = DirectConnection::open(&path).unwrap();
        let mut ids = Vec::new();
        for (s, n) in [("a'b\"c", Some(7)), ("", None)] {
            let n = Arg::Int(n);
            c.run(
                "INSERT INTO t (s, n) VALUES ($1, $2) RETURNING id",
                &[Arg::Text(Some(s)), n],
                |id| ids.push(id),
            )
            .unwrap();
        }
        assert_eq!(ids, [1, 2]);
        let mut seen = Vec::new();
        c.run(
            "SELECT COALESCE(n, -1) FROM t WHERE s = $1 ORDER BY id",
            &[Arg::Text(Some("a'b\"c"))],
            |n| seen.push(n),
        )
        .unwrap();
        assert_eq!(seen, [7]);
    }

    #[test]
    fn a_writer_elsewhere_makes_begin_busy_at_once_and_nothing_is_lost() {
        let (_dir, path) = database();
        let mut holder = DirectConnection::open(&path).unwrap();
        let mut other = DirectConnection::open(&path).unwrap();
        holder.begin_immediate().unwrap();
        let err = other.begin_immediate().unwrap_err();
        assert!(is_busy(&err), "{err}");
        assert_eq!(result_code(&err), Some(5), "SQLITE_BUSY");
        holder.commit().unwrap();
        other.begin_immediate().unwrap();
        other.rollback();
        other.rollback(); // none open: nothing to do
        holder.begin_immediate().unwrap();
        holder.commit().unwrap();
    }

    #[test]
    fn a_failed_statement_says_why_and_the_connection_stays_usable() {
        let (_dir, path) = database();
        let mut c = DirectConnection::open(&path).unwrap();
        let err = c
            .run(
                "INSERT INTO t (id) VALUES ($1)",
                &[Arg::Text(Some("x"))],
                |_| {},
            )
            .unwrap_err();
        assert_eq!(
            result_code(&err).map(|c| c & 0xff),
            Some(20),
            "SQLITE_MISMATCH: {err}"
        );
        let err = c.run("SELECT nope FROM t", &[], |_| {}).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        c.run(
            "INSERT INTO t (s) VALUES ($1)",
            &[Arg::Text(Some("ok"))],
            |_| {},
        )
        .unwrap();
    }

    /// The old hand-written binding ran the first statement of a string and dropped the
    /// rest without a word.
    #[test]
    fn a_second_statement_in_one_string_is_refused_not_dropped() {
        let (_dir, path) = database();
        let mut c = DirectConnection::open(&path).unwrap();
        let err = c
            .run(
                "INSERT INTO t (s) VALUES ('one'); INSERT INTO t (s) VALUES ('two')",
                &[],
                |_| {},
            )
            .unwrap_err();
        assert!(matches!(err, rusqlite::Error::MultipleStatement), "{err:?}");
        let mut n = Vec::new();
        c.run("SELECT COUNT(*) FROM t", &[], |c| n.push(c)).unwrap();
        assert_eq!(n, [0], "nothing of it ran");
    }

    #[test]
    fn commits_are_counted_for_the_checkpoint_cue() {
        let (_dir, path) = database();
        let mut c = DirectConnection::open(&path).unwrap();
        for _ in 0..3 {
            c.begin_immediate().unwrap();
            c.commit().unwrap();
        }
        assert!(!c.commits(4));
        assert!(c.commits(3));
        assert!(!c.commits(1), "the count starts again");
        let mut mode = Vec::new();
        c.run("PRAGMA wal_autocheckpoint", &[], |m| mode.push(m))
            .unwrap();
        assert_eq!(mode, [0], "no checkpoint on the caller's thread");
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        assert!(DirectConnection::open(&path).is_err());
        assert!(!path.exists());
    }
}
