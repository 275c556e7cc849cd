//! A SQLite connection driven on the caller's own thread, for the one write that every
//! `put` waits for (the group commit of enqueued transfers).
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every statement and
//! every result across a channel: on this kind of machine each of those hand-overs costs
//! a thread wake-up, most of a put's time (`strace -ff` showed 7.6 futex calls on the
//! putting thread per put). This connection calls the same SQLite library sqlx links
//! (`libsqlite3-sys`, the one copy in the build) on the calling thread: a commit is then
//! SQLite's own work (about 30 µs here, most of it the WAL's locks and writes) and no
//! hand-over.
//!
//! It never waits for a lock: its busy timeout is zero, so a writer elsewhere makes
//! [`DirectConnection::begin_immediate`] report [`DirectError::is_busy`] at once, and
//! the caller goes through sqlx (which waits on its own thread) instead. It is used only
//! in WAL mode, where a transaction that holds the write lock commits without waiting
//! for readers.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_int};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::query::Arg;

/// What SQLite answered when a call failed: its extended result code and message.
#[derive(Debug)]
pub(crate) struct DirectError {
    /// SQLite's extended result code (`SQLITE_BUSY` is 5, `SQLITE_FULL` 13, ...).
    pub code: i32,
    message: String,
}

impl DirectError {
    /// Another connection holds the lock this call needed.
    pub fn is_busy(&self) -> bool {
        matches!(self.code & 0xff, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED)
    }
}

impl std::fmt::Display for DirectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code: {})", self.message, self.code)
    }
}

impl std::error::Error for DirectError {}

/// One prepared statement, finalized on drop.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the pointer came from sqlite3_prepare_v2 and is finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

/// An open SQLite connection with its prepared statements, used from one thread at a
/// time (it is `Send`, not `Sync`: every call takes `&mut self`).
pub(crate) struct DirectConnection {
    db: NonNull<ffi::sqlite3>,
    statements: HashMap<&'static str, Statement>,
}

// SAFETY: the connection is opened with SQLITE_OPEN_FULLMUTEX (SQLite's serialized
// mode), so it may be used from any thread; `&mut self` on every call keeps it to one
// thread at a time, and its statements never leave it.
unsafe impl Send for DirectConnection {}

impl DirectConnection {
    /// Opens the existing database at `path` read-write, with no busy wait, `NORMAL`
    /// synchronous commits and foreign keys on (as the sqlx pool opens it).
    pub fn open(path: &Path) -> Result<Self, DirectError> {
        let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| DirectError {
            code: ffi::SQLITE_CANTOPEN,
            message: format!("{} has a NUL byte in its name", path.display()),
        })?;
        let mut db = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_FULLMUTEX;
        // SAFETY: `name` is a NUL-terminated string and `db` a place for the handle;
        // SQLite sets `db` (possibly to a handle that must still be closed) on failure too.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(db) = NonNull::new(db) else {
            return Err(DirectError {
                code: rc,
                message: "SQLite could not allocate a connection".into(),
            });
        };
        let mut connection = DirectConnection {
            db,
            statements: HashMap::new(),
        };
        connection.check(rc)?;
        // SAFETY: a live handle; both calls only set options on it.
        unsafe {
            ffi::sqlite3_extended_result_codes(db.as_ptr(), 1);
            ffi::sqlite3_busy_timeout(db.as_ptr(), 0);
        }
        connection.execute("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
        Ok(connection)
    }

    /// Runs `sql` (one or more statements, no parameters, rows ignored).
    pub fn execute(&mut self, sql: &str) -> Result<(), DirectError> {
        let sql = CString::new(sql).expect("statements are fixed text");
        // SAFETY: a live handle and a NUL-terminated script; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db.as_ptr(),
                sql.as_ptr(),
                None,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        self.check(rc)
    }

    /// Takes the write lock now (`BEGIN IMMEDIATE`), or fails at once with a busy error
    /// if another connection holds it.
    pub fn begin_immediate(&mut self) -> Result<(), DirectError> {
        self.run("BEGIN IMMEDIATE", &[], |_| {})
    }

    /// Commits the open transaction.
    pub fn commit(&mut self) -> Result<(), DirectError> {
        self.run("COMMIT", &[], |_| {})
    }

    /// Rolls the open transaction back, if one is open.
    pub fn rollback(&mut self) {
        // SAFETY: a live handle; autocommit only reads the connection's state.
        if unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) } == 0 {
            let _ = self.run("ROLLBACK", &[], |_| {});
        }
    }

    /// Runs one statement (prepared once per connection and kept: a transaction's
    /// `BEGIN` and `COMMIT` too, which `execute` would parse every time) with `params`
    /// bound in order, handing the first column of each row it returns, as an integer,
    /// to `row`.
    pub fn run(
        &mut self,
        sql: &'static str,
        params: &[Arg<'_>],
        mut row: impl FnMut(i64),
    ) -> Result<(), DirectError> {
        let stmt = self.statement(sql)?;
        // SAFETY: a statement of this live connection; reset and clear_bindings make it
        // ready for new values whatever the previous use left.
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        for (i, value) in params.iter().enumerate() {
            let at = i as c_int + 1;
            // SAFETY: `at` is a parameter index of the statement (SQLite checks it and
            // returns SQLITE_RANGE otherwise); SQLITE_TRANSIENT makes SQLite copy the
            // text before the call returns, so the borrow may end after it.
            let rc = unsafe {
                match *value {
                    Arg::Text(Some(text)) => ffi::sqlite3_bind_text(
                        stmt,
                        at,
                        text.as_ptr().cast(),
                        text.len() as c_int,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                    Arg::Int(Some(n)) => ffi::sqlite3_bind_int64(stmt, at, n),
                    Arg::Bool(Some(b)) => ffi::sqlite3_bind_int64(stmt, at, b.into()),
                    Arg::Float(Some(f)) => ffi::sqlite3_bind_double(stmt, at, f),
                    Arg::Text(None) | Arg::Int(None) | Arg::Bool(None) | Arg::Float(None) => {
                        ffi::sqlite3_bind_null(stmt, at)
                    }
                }
            };
            self.check(rc)?;
        }
        loop {
            // SAFETY: a prepared statement with every parameter bound.
            match unsafe { ffi::sqlite3_step(stmt) } {
                // SAFETY: a row is current, and column 0 exists in every statement run here.
                ffi::SQLITE_ROW => row(unsafe { ffi::sqlite3_column_int64(stmt, 0) }),
                ffi::SQLITE_DONE => break,
                rc => {
                    let error = self.error(rc);
                    // SAFETY: as above; a reset after a failed step releases its locks.
                    unsafe { ffi::sqlite3_reset(stmt) };
                    return Err(error);
                }
            }
        }
        // Reset now: a statement left mid-way keeps its read of the database open.
        // SAFETY: as above.
        unsafe { ffi::sqlite3_reset(stmt) };
        Ok(())
    }

    /// The prepared statement for `sql`, prepared on first use.
    fn statement(&mut self, sql: &'static str) -> Result<*mut ffi::sqlite3_stmt, DirectError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.0.as_ptr());
        }
        let mut stmt = ptr::null_mut();
        // SAFETY: a live handle, and `sql` with its exact length (no NUL needed).
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                sql.len() as c_int,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                ptr::null_mut(),
            )
        };
        self.check(rc)?;
        let stmt = NonNull::new(stmt).ok_or_else(|| DirectError {
            code: ffi::SQLITE_MISUSE,
            message: format!("no statement in {sql:?}"),
        })?;
        self.statements.insert(sql, Statement(stmt));
        Ok(stmt.as_ptr())
    }

    fn check(&self, rc: c_int) -> Result<(), DirectError> {
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(self.error(rc)),
        }
    }

    /// The error SQLite reports for the failed call that returned `rc`.
    fn error(&self, rc: c_int) -> DirectError {
        // SAFETY: a live handle; errmsg returns a NUL-terminated string SQLite owns,
        // copied here before the next call can change it.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(self.db.as_ptr());
            let message = ffi::sqlite3_errmsg(self.db.as_ptr());
            let message = if message.is_null() {
                String::new()
            } else {
                CStr::from_ptr(message).to_string_lossy().into_owned()
            };
            (code, message)
        };
        DirectError {
            code: if code & 0xff == rc & 0xff { code } else { rc },
            message,
        }
    }
}

impl Drop for DirectConnection {
    fn drop(&mut self) {
        // Statements first: a connection closes only when none is left.
        self.statements.clear();
        // SAFETY: the handle is live, has no statement left, and is closed once, here
        // (closing rolls back a transaction left open).
        unsafe { ffi::sqlite3_close(self.db.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut c = DirectConnection::open_creating(&path);
        c.execute(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, n INT)",
        )
        .unwrap();
        (dir, path)
    }

    impl DirectConnection {
        fn open_creating(path: &Path) -> Self {
            std::fs::File::create(path).unwrap();
            DirectConnection::open(path).unwrap()
        }
    }

    #[test]
    fn statements_bind_text_integers_and_null_and_return_rows() {
        let (_dir, path) = database();
        let mut c = DirectConnection::open(&path).unwrap();
        let mut ids = Vec::new();
        for (s, n) in [("a'b\"c", Some(7)), ("", None)] {
            let n = Arg::Int(n);
            c.run(
                "INSERT INTO t (s, n) VALUES (?, ?) RETURNING id",
                &[Arg::Text(Some(s)), n],
                |id| ids.push(id),
            )
            .unwrap();
        }
        assert_eq!(ids, [1, 2]);
        let mut seen = Vec::new();
        c.run(
            "SELECT COALESCE(n, -1) FROM t WHERE s = ? ORDER BY id",
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
        assert!(err.is_busy(), "{err}");
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
                "INSERT INTO t (id) VALUES (?)",
                &[Arg::Text(Some("x"))],
                |_| {},
            )
            .unwrap_err();
        assert_eq!(err.code & 0xff, ffi::SQLITE_MISMATCH, "{err}");
        let err = c.run("SELECT nope FROM t", &[], |_| {}).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        c.run(
            "INSERT INTO t (s) VALUES (?)",
            &[Arg::Text(Some("ok"))],
            |_| {},
        )
        .unwrap();
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        assert!(DirectConnection::open(&path).is_err());
        assert!(!path.exists());
    }
}
