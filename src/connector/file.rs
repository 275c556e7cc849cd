//! `file`: objects as files in one directory.
//!
//! Each object is the file `<dir>/<object id>`. Shared file systems make this the
//! simplest way to pass objects between processes and nodes of one cluster.
//!
//! **Atomicity.** A put writes a hidden sibling temporary file (`.<id>.<pid>-<n>.tmp`) and
//! renames it into place, so a reader never sees a partial object under its key, even if
//! the writer crashes mid-write. A crash can leave a temporary file behind; it is never
//! readable through a key and is safe to delete.
//!
//! **Durability.** No `fsync` is done: after a put returns, the object survives the
//! process but not necessarily a power loss or kernel crash of the machine. This keeps a
//! small put near the cost of the bare system calls.
//!
//! **Confinement.** Object ids are restricted to `A-Z a-z 0-9 _ -` (see
//! [`Key`]), so no key can name a path outside the directory.
//!
//! **I/O.** Operations use plain blocking `std::fs` calls on the calling thread: for
//! small objects that is several times faster than a hop to a blocking thread pool.
//! A `get` reads the object into one buffer of its exact size (one copy, from the page
//! cache). A large buffer is advised to be backed by huge pages before it is first
//! touched: on this kind of machine, faulting in fresh memory 4 KiB at a time costs more
//! than the copy itself (measured here for 64 MiB: see the README's benchmarks).
//!
//! **No memory mapping.** Objects used to be memory-mapped from 1 MiB up, to return the
//! page cache itself. A mapped file that anyone truncates (a user's `> file`, a cleanup
//! script) kills the reading process with `SIGBUS` the next time a byte past the new
//! end is touched, long after `get` returned. A read copies, so the bytes a `get`
//! returned stay intact whatever happens to the file; a file that changes size while
//! it is read is an error, never a short object. Async code that moves very large
//! objects on a latency-critical runtime can run the call inside
//! `tokio::task::spawn_blocking`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::deferred::{self, Found};
use super::trust::{self, Provenance};
use super::{Capabilities, Connector, ConnectorConfig, Key, PutOptions, Settlement};
use crate::error::{Error, Result};
use crate::fsutil::ObjectDir;

/// A connector that keeps each object in a file of one directory.
///
/// ```
/// use ps_globus::connector::{Connector, FileConnector, PutOptions};
/// let dir = tempfile::tempdir()?;
/// let connector = FileConnector::new(dir.path())?;
/// ps_globus::block_on(async {
///     let key = connector.put(b"hello", &PutOptions::default()).await?;
///     assert_eq!(std::fs::read(dir.path().join(key.id()))?, b"hello");
///     connector.evict(&key).await?;
///     assert!(!connector.exists(&key).await?);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileConnector {
    dir: PathBuf,
    /// The directory, opened once for puts.
    objects: Arc<ObjectDir>,
    /// Local, or rebuilt from data: then it changes only objects it minted, in a
    /// directory this process trusts.
    provenance: Provenance,
}

#[derive(Serialize, Deserialize)]
pub(super) struct FileOptions {
    dir: PathBuf,
}

impl FileConnector {
    /// The kind name in keys and configs.
    pub const KIND: &'static str = "file";

    /// A connector on `dir`, created if missing. The path is made absolute, so the
    /// connector's config means the same directory in any process. The directory gets the
    /// store marker (`trust::STORE_MARKER`): a process that rebuilds this store from a
    /// proxy may then delete the objects it minted there.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let dir = fs::canonicalize(dir).map_err(|e| Error::io("resolve directory", dir, e))?;
        trust::mark_store_dir(&dir);
        Ok(FileConnector {
            objects: Arc::new(ObjectDir::new(&dir, "")),
            dir,
            provenance: Provenance::Local,
        })
    }

    /// A connector rebuilt from data on `dir`: nothing is created or marked, and changes
    /// are checked ([`trust::check_change`]).
    fn from_data(dir: PathBuf, provenance: &Provenance) -> Self {
        let dir = fs::canonicalize(&dir).unwrap_or(dir);
        FileConnector {
            objects: Arc::new(ObjectDir::new(&dir, "")),
            dir,
            provenance: provenance.clone(),
        }
    }

    /// Checks that this connector may change object `id` (see [`trust::check_change`]).
    fn check_change(&self, id: &str, operation: &'static str) -> Result<()> {
        trust::check_change(&self.provenance, Some(&self.dir), id, operation)
    }

    /// The directory holding the objects.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn build(
        config: &ConnectorConfig,
        provenance: &Provenance,
    ) -> Result<Arc<dyn Connector>> {
        let options: FileOptions = config.options_as()?;
        if !options.dir.is_absolute() {
            return Err(Error::invalid_config(
                "file connector",
                format!(
                    "dir {} is relative; a config must name an absolute directory",
                    options.dir.display()
                ),
            ));
        }
        match provenance {
            Provenance::Local => Ok(Arc::new(Self::new(options.dir)?)),
            Provenance::Data(_) => Ok(Arc::new(Self::from_data(options.dir, provenance))),
        }
    }

    /// The path of the object `key` names, after checking the key.
    fn path(&self, key: &Key) -> Result<PathBuf> {
        key.check_kind(Self::KIND)?;
        Ok(self.dir.join(key.id()))
    }
}

/// The object file's metadata, without following a link; `None`: no such file.
fn object_meta(path: &Path) -> std::io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig {
            kind: Self::KIND.to_owned(),
            options: serde_json::json!({ "dir": self.dir }),
        }
    }

    fn capabilities(&self) -> Capabilities {
        // One file per object, so `resolve_path` works and `put_file` places the file
        // without reading it into memory.
        Capabilities::in_memory()
            .outliving_instances()
            .with_put_file()
            .with_resolve_path()
            .with_deferred_keys()
    }

    /// On a file system other hosts mount (NFS, Lustre, GPFS, …), anywhere; on a local
    /// one, this host.
    fn reach(&self) -> super::Reach {
        let settings = super::globus::settings_default();
        match crate::state::network_file_system(&self.dir, &settings) {
            Some(_) => super::Reach::anywhere(),
            None => super::Reach::this_host(),
        }
    }

    async fn put(&self, data: &[u8], _options: &PutOptions) -> Result<Key> {
        let key = Key::generate(Self::KIND);
        self.check_change(key.id(), "a put")?;
        self.objects.write_atomic(key.id(), data)?;
        Ok(key)
    }

    /// A reflink where the file system makes one, else a copy by the kernel. Never a
    /// hard link: reads here do not verify the bytes, so an object that is the caller's
    /// own file would change when the file does.
    async fn put_file(&self, file: &Path, _options: &PutOptions) -> Result<Key> {
        let key = Key::generate(Self::KIND);
        self.check_change(key.id(), "a put")?;
        self.objects.place_file(key.id(), file, false, false)?;
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        if key.is_deferred() {
            return match deferred::read(&self.dir, key.id(), &path.to_string_lossy())? {
                Found::Pending => Ok(None),
                Found::Ready(data) => Ok(Some(data)),
                Found::Mismatch(e, _) => Err(e),
            };
        }
        crate::fsutil::read_regular_file_if_there(&path)
    }

    async fn resolve_path(&self, key: &Key) -> Result<PathBuf> {
        let path = self.path(key)?;
        if key.is_deferred() && self.get(key).await?.is_none() {
            let store = self.dir.display().to_string();
            return Err(Error::not_found(&store, key, "the future is not set yet"));
        }
        match object_meta(&path).map_err(|e| Error::io("inspect", &path, e))? {
            Some(meta) if meta.is_file() => Ok(path),
            Some(_) => Err(Error::io("inspect", path, crate::fsutil::not_an_object())),
            None => Err(Error::not_found(&self.dir.display().to_string(), key, "")),
        }
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let path = self.path(key)?;
        if key.is_deferred() && !self.dir.join(deferred::manifest_name(key.id())).exists() {
            return Ok(false);
        }
        match object_meta(&path).map_err(|e| Error::io("inspect", &path, e))? {
            Some(meta) if meta.is_file() => Ok(true),
            Some(_) => Err(Error::io("inspect", path, crate::fsutil::not_an_object())),
            None => Ok(false),
        }
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let path = self.path(key)?;
        self.check_change(key.id(), "an eviction")?;
        if key.is_deferred() {
            return deferred::remove(&self.dir, key.id());
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", path, e)),
        }
    }

    /// The object, then its manifest beside it (`<id>.manifest`).
    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        key.check_deferred(Self::KIND)?;
        self.check_change(key.id(), "setting a future")?;
        deferred::write(&self.objects, key.id(), settlement).map(drop)
    }

    fn not_found_hint(&self) -> &'static str {
        "a file connector's objects are visible only where its directory is mounted"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;

    /// A link, FIFO or device planted under an object's name in a shared directory is
    /// refused by get, exists and resolve_path: never read through (a link to
    /// `/dev/zero` was read without end), never waited on (a FIFO blocked for ever).
    #[test]
    fn a_link_fifo_or_device_under_an_objects_name_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"not yours").unwrap();
        let connector = FileConnector::new(dir.path()).unwrap();
        let planted = |name: &str| Key::new(FileConnector::KIND, name).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        crate::fsutil::make_fifo(&dir.path().join("fifo")).unwrap();
        for name in ["zero", "link", "fifo"] {
            let key = planted(name);
            for err in [
                block_on(connector.get(&key)).unwrap_err(),
                block_on(connector.exists(&key)).unwrap_err(),
                block_on(connector.resolve_path(&key)).unwrap_err(),
            ] {
                assert!(
                    err.to_string().contains("not a regular file"),
                    "{name}: {err}"
                );
                assert!(!err.to_string().contains("not yours"));
            }
        }
    }

    #[test]
    fn puts_leave_only_object_files() {
        let dir = tempfile::tempdir().unwrap();
        let connector = FileConnector::new(dir.path()).unwrap();
        let keys: Vec<Key> = (0..20)
            .map(|i| {
                block_on(connector.put(&vec![i as u8; i * 1000], &PutOptions::default())).unwrap()
            })
            .collect();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != trust::STORE_MARKER)
            .collect();
        names.sort();
        let mut ids: Vec<String> = keys.iter().map(|k| k.id().to_owned()).collect();
        ids.sort();
        assert_eq!(names, ids, "no temporary files remain");
    }

    #[test]
    fn disk_full_errors_say_what_to_do() {
        let err = Error::io(
            "write",
            "/scratch/x",
            std::io::ErrorKind::StorageFull.into(),
        );
        let text = err.to_string();
        assert!(text.contains("/scratch/x"), "{text}");
        assert!(text.contains("free space"), "{text}");
        assert!(text.contains("existing objects are intact"), "{text}");
    }

    /// Regression: a large object was returned as a memory mapping of its file, and
    /// truncating the file afterwards (a user's `> file`) killed the process with SIGBUS
    /// when the returned bytes were read. They are a copy now, intact whatever happens
    /// to the file, and the mapping's unlink-safety holds too.
    #[test]
    fn bytes_returned_by_get_survive_the_file_being_truncated_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let connector = FileConnector::new(dir.path()).unwrap();
        let data: Vec<u8> = (0..((4 << 20) + 4097)).map(|i| (i % 241) as u8).collect();
        let key = block_on(connector.put(&data, &PutOptions::default())).unwrap();
        let back = block_on(connector.get(&key)).unwrap().unwrap();
        fs::File::options()
            .write(true)
            .open(dir.path().join(key.id()))
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(back[..] == data[..], "the bytes read before the truncation");
        let again = block_on(connector.get(&key)).unwrap().unwrap();
        assert!(
            again.is_empty(),
            "a truncated object reads as what is there now"
        );
        block_on(connector.evict(&key)).unwrap();
        assert_eq!(back[back.len() - 1], data[data.len() - 1]);
    }

    #[test]
    fn relative_dirs_in_configs_are_refused() {
        let config =
            ConnectorConfig::new("file", serde_json::json!({"dir": "relative/path"})).unwrap();
        assert!(matches!(config.build_local(), Err(Error::InvalidInput(_))));
    }
}
