//! SQLite and `fork`: a child forked from a process that had SQLite open must not use it.
//!
//! SQLite keeps process-wide state about open files (the unix VFS's inode list, its lock
//! counts, static mutexes) that a forked child inherits without the threads that hold its
//! mutexes or the `fcntl` locks it records: a child that opens the same database may hang
//! on a mutex forever, or believe it holds a lock it does not (SQLite's own documentation:
//! never carry SQLite across a `fork`). A process forked *before* SQLite was used, or one
//! whose state database is PostgreSQL, is unaffected.
//!
//! So the first SQLite open of a forked child whose ancestor had opened SQLite fails at
//! once, with what to do, instead of hanging.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::runtime::fork_generation;

/// The fork generation in which this process (or the ancestor it was forked from) first
/// opened a SQLite database; `u64::MAX`: never. A forked child keeps it: that is the
/// point.
struct SqliteOpenedIn(AtomicU64);

/// Refuses a SQLite open in a child forked after SQLite was used; records the first use.
pub(super) fn check_sqlite_allowed(path: &Path) -> Result<()> {
    // From the first SQLite open on, forks must be counted.
    crate::process::install_fork_handler();
    let now = fork_generation();
    let opened_in = &crate::process::inherited(|| SqliteOpenedIn(AtomicU64::new(u64::MAX))).0;
    match opened_in.compare_exchange(u64::MAX, now, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        Err(opened) if opened == now => Ok(()),
        Err(_) => Err(Error::state_message(
            path,
            "this process was forked from one that had a SQLite state database \
                      open, and SQLite's state cannot cross a fork (it could hang, or corrupt \
                      the database). Start worker processes before using ps-globus, or with \
                      multiprocessing's 'spawn' or 'forkserver' start method, or give every \
                      process one PostgreSQL database (PS_GLOBUS_STATE_URL)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::StateDb;
    use crate::process::in_forked_child;
    use crate::runtime::block_on;

    #[test]
    fn a_child_forked_after_sqlite_was_opened_is_refused_at_once_and_the_parent_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = block_on(StateDb::open(&path)).unwrap();
        let status = in_forked_child(|| match block_on(StateDb::open(&path)) {
            Err(e) if e.to_string().contains("forked") && e.remedy().is_none() => 0,
            Err(_) => 2,
            Ok(_) => 3,
        });
        assert!(
            libc::WIFEXITED(status),
            "the child hung or died: status {status}"
        );
        assert_eq!(libc::WEXITSTATUS(status), 0);
        // The parent still opens and uses it.
        let again = block_on(StateDb::open(&path)).unwrap();
        assert_eq!(again.engine(), db.engine());
    }
}
