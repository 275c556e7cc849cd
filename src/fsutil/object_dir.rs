//! A directory of objects, opened once and written through its descriptor.
//!
//! A put used to name its file by full path several times: a check of every component
//! for links, the create, the rename. Each is a walk from `/` through every component
//! (and on this kind of machine a system call costs microseconds). Here the directory is
//! opened once, walking it component by component below a trusted root without
//! following any link (`O_NOFOLLOW` at each step: a link planted on the way is refused,
//! and swapping one in later changes nothing, since the descriptor keeps naming the
//! directory that was checked). Each put is then `openat` + `write` + `renameat` on
//! one name inside it.
//!
//! If the directory is removed while open (someone cleared the store), writes into it
//! fail with `ENOENT`: the directory is opened (and created) again and the write retried
//! once.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::error::{Error, Result};

/// A failed file-system step: the operation, the name it failed on (relative to the
/// directory, or empty for the caller's own file), and the cause.
pub(super) type IoFailure = (&'static str, String, std::io::Error);

/// A directory below a trusted root, opened on first use (see the module docs).
#[derive(Debug)]
pub(crate) struct ObjectDir {
    root: PathBuf,
    below: PathBuf,
    fd: Mutex<Option<Arc<OwnedFd>>>,
}

impl ObjectDir {
    /// The directory `root/below`. `root` is trusted (it comes from the configuration and
    /// may itself pass through links); `below` is relative and may not.
    pub(crate) fn new(root: impl Into<PathBuf>, below: impl Into<PathBuf>) -> Self {
        ObjectDir {
            root: root.into(),
            below: below.into(),
            fd: Mutex::new(None),
        }
    }

    /// The directory's path (for messages and for callers that need a path).
    pub(crate) fn path(&self) -> PathBuf {
        self.root.join(&self.below)
    }

    /// Writes `data` as the file `name` in the directory, atomically: an exclusive
    /// hidden temporary file, then a rename. On failure the temporary file is removed
    /// and `name` is untouched. The directory is created if missing.
    pub(crate) fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()> {
        self.with_dir(|dir| write_in(dir, name, data, false))
            .map_err(|failure| failure_below(&self.path(), failure))
    }

    /// Writes `data` as the file `name` only if no file has that name: a whole temporary
    /// file, then `link(2)` to the name (atomic, and safe on NFS, which
    /// `RENAME_NOREPLACE` is not). `false`: `name` was already there, and is untouched.
    pub(crate) fn write_new(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.with_dir(|dir| link_new_in(dir, name, data))
            .map_err(|failure| failure_below(&self.path(), failure))
    }

    /// Removes the file `name` from the directory (a missing one is fine).
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        let dir = self
            .open(false)
            .map_err(|failure| failure_below(&self.path(), failure))?;
        match rustix::fs::unlinkat(&*dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("remove", self.path().join(name), e.into())),
        }
    }

    /// Runs `f` on the directory's descriptor; if it fails with `ENOENT` (the directory
    /// was removed since it was opened), opens the directory again and retries once.
    pub(super) fn with_dir<T>(
        &self,
        f: impl Fn(&OwnedFd) -> Result<T, IoFailure>,
    ) -> Result<T, IoFailure> {
        let dir = self.open(false)?;
        match f(&dir) {
            Err((_, _, e)) if e.kind() == ErrorKind::NotFound => f(&*self.open(true)?),
            other => other,
        }
    }

    /// The open directory; `again`: the one held is stale, open it anew.
    fn open(&self, again: bool) -> Result<Arc<OwnedFd>, IoFailure> {
        let mut held = self.fd.lock().expect("object directory lock poisoned");
        if let Some(fd) = held.as_ref().filter(|_| !again) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(open_below(&self.root, &self.below)?);
        *held = Some(fd.clone());
        Ok(fd)
    }
}

/// Opens the directory at `path` (a trusted path: links on the way are followed).
pub(super) fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens `root/below`, creating missing directories, following no link below `root`.
fn open_below(root: &Path, below: &Path) -> Result<OwnedFd, IoFailure> {
    let fail = |op, at: &Path, e: std::io::Error| (op, at.display().to_string(), e);
    std::fs::create_dir_all(root).map_err(|e| fail("create directory", root, e))?;
    let mut dir = open_dir(root).map_err(|e| fail("open directory", root, e))?;
    let mut walked = PathBuf::new();
    for component in below.components() {
        let Component::Normal(name) = component else {
            return Err(fail(
                "open directory",
                below,
                std::io::Error::new(ErrorKind::InvalidInput, "not a plain relative path"),
            ));
        };
        walked.push(name);
        dir = step_into(&dir, name).map_err(|e| fail("open directory", &walked, e))?;
    }
    Ok(dir)
}

/// Opens the directory `name` inside `dir` without following a link, creating it if
/// missing (a concurrent creator is fine).
fn step_into(dir: &OwnedFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || rustix::fs::openat(dir, name, flags, Mode::empty());
    let opened = match open() {
        Err(rustix::io::Errno::NOENT) => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => open(),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    opened.map_err(|e| match e {
        // O_NOFOLLOW on a link: ELOOP; with O_DIRECTORY some kernels say ENOTDIR.
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => std::io::Error::new(
            ErrorKind::InvalidData,
            "a symbolic link or a file where a directory of the store should be; \
             objects live in plain directories: remove it",
        ),
        e => e.into(),
    })
}

/// The hidden temporary name for `name`, unique to this process and call (a random
/// part: no counter to keep, and none a forked child would repeat).
pub(super) fn temporary_name(name: &str) -> String {
    let unique = uuid::Uuid::new_v4().simple();
    format!(".{name}.{}-{unique}.tmp", std::process::id())
}

/// Makes `name` in `dir` through a hidden temporary file, created exclusively with
/// `mode`: `fill` writes it and hands back what to return (`None`: nothing to place),
/// then it is renamed into place. On any failure, or when `fill` places nothing, the
/// temporary file is removed and `name` is untouched. (A temporary file that could not
/// be created is someone else's, and stays.)
pub(super) fn through_temporary<T>(
    dir: &impl AsFd,
    name: &str,
    mode: u32,
    fill: impl FnOnce(File, &str) -> Result<Option<T>, IoFailure>,
) -> Result<Option<T>, IoFailure> {
    let tmp = temporary_name(name);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(mode))
        .map_err(|e| ("write", tmp.clone(), e.into()))?;
    let placed = match fill(File::from(fd), &tmp) {
        Ok(Some(value)) => rustix::fs::renameat(dir, &tmp, dir, name)
            .map(|()| Some(value))
            .map_err(|e| ("rename into place", name.to_owned(), e.into())),
        other => other,
    };
    if !matches!(placed, Ok(Some(_))) {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    placed
}

/// Writes `data` as `name` in `dir` (see [`through_temporary`]). A `secret` file gets
/// mode 0600 and is synced to disk before the rename; others the usual mode, no fsync.
pub(super) fn write_in(
    dir: &impl AsFd,
    name: &str,
    data: &[u8],
    secret: bool,
) -> Result<(), IoFailure> {
    let mode = if secret { 0o600 } else { 0o666 };
    through_temporary(dir, name, mode, |mut file, tmp| {
        file.write_all(data)
            .and_then(|()| if secret { file.sync_all() } else { Ok(()) })
            .map(Some)
            .map_err(|e| ("write", tmp.to_owned(), e))
    })
    .map(|_| ())
}

/// Writes `data` as `name` in `dir` unless `name` exists (see [`ObjectDir::write_new`]).
fn link_new_in(dir: &impl AsFd, name: &str, data: &[u8]) -> Result<bool, IoFailure> {
    let tmp = temporary_name(name);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &tmp, flags, Mode::from_raw_mode(0o666))
        .map_err(|e| ("write", tmp.clone(), e.into()))?;
    let linked = File::from(fd)
        .write_all(data)
        .map_err(|e| ("write", tmp.clone(), e))
        .and_then(
            |()| match rustix::fs::linkat(dir, &tmp, dir, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::EXIST) => Ok(false),
                Err(e) => Err(("link into place", name.to_owned(), e.into())),
            },
        );
    let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    linked
}

/// The error for a failed step, its name taken below `base`.
pub(super) fn failure_below(base: &Path, (op, at, e): IoFailure) -> Error {
    Error::io(op, base.join(at), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_under_their_name_and_leave_no_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = ObjectDir::new(root.path(), "a/b");
        dir.write_atomic("x", b"one").unwrap();
        dir.write_atomic("x", b"two").unwrap();
        assert_eq!(std::fs::read(root.path().join("a/b/x")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(root.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"]);
    }

    /// A store directory cleared while the process holds it open is made again: the
    /// next put lands in the new directory, not in the removed one (where it would be
    /// lost, unreachable by any path).
    #[test]
    fn a_store_directory_removed_while_open_is_made_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = ObjectDir::new(root.path(), "store");
        dir.write_atomic("first", b"1").unwrap();
        std::fs::remove_dir_all(root.path().join("store")).unwrap();
        dir.write_atomic("second", b"2").unwrap();
        assert_eq!(
            std::fs::read(root.path().join("store/second")).unwrap(),
            b"2"
        );
    }

    /// A link planted where a directory of the store should be is refused, whether it
    /// was there before the first put or swapped in later (the open descriptor keeps
    /// naming the directory that was checked).
    #[test]
    fn a_link_on_the_way_to_the_store_is_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("store")).unwrap();
        let err = ObjectDir::new(root.path(), "store/objects")
            .write_atomic("x", b"data")
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        let dir = ObjectDir::new(root.path(), "real");
        dir.write_atomic("x", b"data").unwrap();
        std::fs::rename(root.path().join("real"), root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("real")).unwrap();
        dir.write_atomic("y", b"data").unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read(root.path().join("moved/y")).unwrap(), b"data");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file_and_keeps_the_target() {
        let root = tempfile::tempdir().unwrap();
        let dir = ObjectDir::new(root.path(), "");
        // A non-empty directory cannot be renamed over by a file.
        std::fs::create_dir(root.path().join("blocked")).unwrap();
        std::fs::write(root.path().join("blocked/inside"), b"x").unwrap();
        let err = dir.write_atomic("blocked", b"new").unwrap_err();
        let names = crate::fsutil::tests::failed_rename_left(&err, root.path());
        assert_eq!(names, ["blocked"], "no temporary file left");
    }
}
