//! Where an endpoint keeps its objects: every object in a SQLite database in the
//! endpoint's directory (so a restart, or a crash after `/set` answered, keeps it), and
//! the most recently used ones also in memory, up to a byte budget, so that hot reads
//! never touch the disk.
//!
//! Each row carries the object's size and SHA-256, computed when it arrived; a read from
//! the database is checked against both before it is served, and a row that fails is
//! removed and reported as [`StorageError::Corrupt`] rather than served. (ProxyStore's
//! `SQLiteStorage` keeps bare blobs; its default storage is a dict that a restart empties.)
//!
//! Database calls block, so they run on tokio's blocking pool; one connection, behind a
//! mutex, serialises them (SQLite allows one writer anyway). WAL journal: a reader is
//! not blocked by the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// The database file inside an endpoint's directory (not ProxyStore's `blobs.db`: its
/// rows have no digest).
pub const DATABASE_FILE: &str = "objects.db";

/// SQLite's default largest blob (`SQLITE_MAX_LENGTH`): no object may be larger.
pub const SQLITE_MAX_BLOB: u64 = 1_000_000_000;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object is larger than the endpoint accepts.
    #[error("the object is {size} bytes, over this endpoint's max_object_size of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A stored object no longer matches the size and digest it was stored with.
    #[error(
        "object {key:?} in {path} is damaged (size or sha256 differ from when it was stored); it was removed"
    )]
    Corrupt {
        /// Its key.
        key: String,
        /// The database.
        path: PathBuf,
    },
    /// The database failed.
    #[error("the object database {path}: {source}")]
    Database {
        /// The database.
        path: PathBuf,
        /// What failed.
        #[source]
        source: rusqlite::Error,
    },
}

/// One object held in memory, with its SHA-256 (computed once, when it arrived).
#[derive(Clone)]
struct Resident {
    data: Bytes,
    sha256: [u8; 32],
}

/// An object and its SHA-256, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its bytes.
    pub data: Bytes,
    /// Their SHA-256.
    pub sha256: [u8; 32],
}

/// The memory tier: an LRU of objects and their total size.
struct Memory {
    objects: LruCache<String, Resident>,
    bytes: u64,
    budget: u64,
}

impl Memory {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.objects.pop(key) {
            self.bytes -= old.data.len() as u64;
        }
    }

    /// Keeps `data` in memory if it fits the budget, dropping the least recently used
    /// objects to make room (they stay in the database).
    fn insert(&mut self, key: String, stored: Stored) {
        let Stored { data, sha256 } = stored;
        self.remove(&key);
        let size = data.len() as u64;
        if size > self.budget {
            return;
        }
        while self.bytes + size > self.budget {
            match self.objects.pop_lru() {
                Some((_, old)) => self.bytes -= old.data.len() as u64,
                None => break,
            }
        }
        self.bytes += size;
        self.objects.put(key, Resident { data, sha256 });
    }
}

/// An endpoint's objects (see the module docs).
#[derive(Clone)]
pub struct Storage {
    memory: Arc<Mutex<Memory>>,
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    max_object_size: u64,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path)
            .field("max_object_size", &self.max_object_size)
            .finish_non_exhaustive()
    }
}

/// Counts, for `endpoint check` and the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Objects stored.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of them held in memory too.
    pub memory_bytes: u64,
}

impl Storage {
    /// Opens (or creates) the database at `path`, with `memory_budget` bytes of objects
    /// kept in memory and objects of at most `max_object_size` bytes.
    pub fn open(
        path: &Path,
        memory_budget: u64,
        max_object_size: u64,
    ) -> Result<Self, StorageError> {
        let database = |source| StorageError::Database {
            path: path.to_owned(),
            source,
        };
        let db = Connection::open(path).map_err(database)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(database)?;
        // Durable against a crash of the process (the OS still has the page); an fsync
        // per object would cap small puts at the disk's flush rate.
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(database)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(database)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (
                 key TEXT PRIMARY KEY,
                 value BLOB NOT NULL,
                 size INTEGER NOT NULL,
                 sha256 BLOB NOT NULL
             )",
        )
        .map_err(database)?;
        Ok(Storage {
            memory: Arc::new(Mutex::new(Memory {
                objects: LruCache::unbounded(),
                bytes: 0,
                budget: memory_budget,
            })),
            db: Arc::new(Mutex::new(db)),
            path: path.to_owned(),
            max_object_size: max_object_size.min(SQLITE_MAX_BLOB),
        })
    }

    /// The largest object accepted.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().expect("storage memory lock")
    }

    fn database(&self, source: rusqlite::Error) -> StorageError {
        StorageError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` on the database connection on the blocking pool.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        let outcome = tokio::task::spawn_blocking(move || f(&db.lock().expect("storage db lock")))
            .await
            .expect("a storage call panicked");
        outcome.map_err(|e| self.database(e))
    }

    /// Stores `data` under `key` (replacing what was there, as ProxyStore's does): in the
    /// database first, then in memory.
    pub async fn set(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let sha256 = Sha256::digest(&data).into();
        self.set_stored(key, Stored { data, sha256 }).await
    }

    /// Stores an object whose SHA-256 the caller has already computed or checked (a
    /// peer's frame carries it).
    pub async fn set_stored(&self, key: &str, stored: Stored) -> Result<(), StorageError> {
        let size = stored.data.len() as u64;
        if size > self.max_object_size {
            return Err(StorageError::TooLarge {
                size,
                limit: self.max_object_size,
            });
        }
        let (row_key, row) = (key.to_owned(), stored.clone());
        self.with_db(move |db| {
            db.prepare_cached(
                "INSERT OR REPLACE INTO objects (key, value, size, sha256) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                row_key,
                &row.data[..],
                size as i64,
                &row.sha256[..]
            ])
        })
        .await?;
        self.memory().insert(key.to_owned(), stored);
        Ok(())
    }

    /// The object under `key`, if any: from memory, or read from the database and
    /// checked.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        Ok(self.get_stored(key).await?.map(|stored| stored.data))
    }

    /// The object under `key` and its SHA-256, if any.
    pub async fn get_stored(&self, key: &str) -> Result<Option<Stored>, StorageError> {
        if let Some(resident) = self.memory().objects.get(key) {
            return Ok(Some(Stored {
                data: resident.data.clone(),
                sha256: resident.sha256,
            }));
        }
        let row_key = key.to_owned();
        let row: Option<(Vec<u8>, i64, Vec<u8>)> = self
            .with_db(move |db| {
                db.prepare_cached("SELECT value, size, sha256 FROM objects WHERE key = ?1")?
                    .query_row(params![row_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .await?;
        let Some((value, size, digest)) = row else {
            return Ok(None);
        };
        let sha256: [u8; 32] = Sha256::digest(&value).into();
        if value.len() as i64 != size || sha256[..] != digest[..] {
            tracing::error!(key, path = %self.path.display(), "a stored object is damaged; removing it");
            self.evict(key).await?;
            return Err(StorageError::Corrupt {
                key: key.to_owned(),
                path: self.path.clone(),
            });
        }
        let stored = Stored {
            data: Bytes::from(value),
            sha256,
        };
        self.memory().insert(key.to_owned(), stored.clone());
        Ok(Some(stored))
    }

    /// Whether an object is stored under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        if self.memory().objects.contains(key) {
            return Ok(true);
        }
        let row_key = key.to_owned();
        self.with_db(move |db| {
            db.prepare_cached("SELECT 1 FROM objects WHERE key = ?1")?
                .query_row(params![row_key], |_| Ok(()))
                .optional()
                .map(|found| found.is_some())
        })
        .await
    }

    /// Removes the object under `key` from memory and the database (a missing one is
    /// fine).
    pub async fn evict(&self, key: &str) -> Result<(), StorageError> {
        self.memory().remove(key);
        let row_key = key.to_owned();
        self.with_db(move |db| {
            db.prepare_cached("DELETE FROM objects WHERE key = ?1")?
                .execute(params![row_key])
                .map(drop)
        })
        .await
    }

    /// What is stored.
    pub async fn usage(&self) -> Result<Usage, StorageError> {
        let memory_bytes = self.memory().bytes;
        let (objects, bytes) = self
            .with_db(|db| {
                db.query_row(
                    "SELECT count(*), coalesce(sum(size), 0) FROM objects",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
            })
            .await?;
        Ok(Usage {
            objects: objects as u64,
            bytes: bytes as u64,
            memory_bytes,
        })
    }
}
