//! Placing an existing file into an [`ObjectDir`] as an object (`put_file`), in the
//! cheapest way that is safe for the connector:
//!
//! 1. **A reflink** (`FICLONE`: XFS, Btrfs, bcachefs, ZFS 2.2+…): a copy that shares the
//!    blocks until either side writes, made in constant time. The object is a file of
//!    its own: changing the original later changes nothing.
//! 2. **A hard link**, only where the caller allows it: the object *is* the original
//!    file, so writing the original later changes the object. Only a connector whose
//!    every read verifies the bytes against the key (and never maps the file) may allow
//!    it: the Globus connector, whose readers then get an integrity error, never the
//!    changed bytes.
//! 3. **A copy**, read and written in chunks, hashed while each chunk is in the CPU's
//!    cache: one pass over the bytes, and the hash is that of what was written.
//!
//! Whatever the way, the hash (when asked for) is of the placed file's bytes, read
//! after placing for a reflink or a link, so that it describes the object as it is.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::AtFlags;

use super::object_dir::{IoFailure, failure_below, through_temporary};
use super::{ObjectDir, PassError, hash_through};
use crate::error::{Error, Result};

/// How a file became an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// A reflink: shares the original's blocks, but is a file of its own.
    Reflink,
    /// A hard link: the original file itself.
    HardLink,
    /// A copy of the bytes.
    Copy,
}

/// A placed object: its size, its sha256 (lowercase hex, when asked for), and how.
#[derive(Debug)]
pub(crate) struct PlacedFile {
    pub size: u64,
    pub sha256: Option<String>,
    pub how: Placed,
}

impl ObjectDir {
    /// Places the regular file `source` in the directory as `name` (see the module
    /// docs); `hard_link_ok`: the caller's reads verify every byte, so the object may be
    /// the original file itself; `hash`: compute the sha256 of the object.
    pub(crate) fn place_file(
        &self,
        name: &str,
        source: &Path,
        hard_link_ok: bool,
        hash: bool,
    ) -> Result<PlacedFile> {
        let src = open_regular(source)?;
        let placed = self.with_dir(|dir| {
            if reflink_into(dir, name, &src)? {
                return Ok((Placed::Reflink, None));
            }
            if hard_link_ok && link_into(dir, name, source, &src)? {
                return Ok((Placed::HardLink, None));
            }
            Ok((Placed::Copy, copy_into(dir, name, &src, hash)?))
        });
        let (how, copied) = placed.map_err(|failure| match failure {
            // An empty name: the caller's own file failed.
            (op, at, e) if at.is_empty() => Error::io(op, source, e),
            failure => failure_below(&self.path(), failure),
        })?;
        let object = self.path().join(name);
        let (size, sha256) = match copied {
            Some((size, sha)) => (size, Some(sha)),
            None if hash => {
                let (size, sha) = super::hash_file(&object)?;
                (size, Some(sha))
            }
            None => {
                let meta =
                    std::fs::metadata(&object).map_err(|e| Error::io("inspect", &object, e))?;
                (meta.len(), None)
            }
        };
        Ok(PlacedFile { size, sha256, how })
    }
}

/// Opens `source` for reading; only a regular file (a FIFO would block, a device read
/// without end).
fn open_regular(source: &Path) -> Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| Error::io("open", source, e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io("inspect", source, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "stage",
            source,
            std::io::Error::new(
                ErrorKind::InvalidInput,
                "not a regular file; stage a file (for a directory, use `transfer`)",
            ),
        ));
    }
    Ok(file)
}

/// A reflink of `src` as `name`; `false` where the file system cannot make one (or
/// anything else refuses it: a link or a copy does the job).
fn reflink_into(dir: &OwnedFd, name: &str, src: &File) -> Result<bool, IoFailure> {
    through_temporary(dir, name, 0o666, |file, _| {
        Ok(rustix::fs::ioctl_ficlone(&file, src).ok())
    })
    .map(|placed| placed.is_some())
}

/// A hard link to `source` as `name`; `false` where one cannot be made (another file
/// system, a file system without links, a file the kernel will not let us link). The
/// link must name the very file opened as `src`: a path swapped in between (for a FIFO,
/// say) is unlinked again and the caller copies from `src` instead.
fn link_into(dir: &OwnedFd, name: &str, source: &Path, src: &File) -> Result<bool, IoFailure> {
    use std::os::unix::fs::MetadataExt;
    match rustix::fs::linkat(rustix::fs::CWD, source, dir, name, AtFlags::empty()) {
        Ok(()) => {}
        Err(rustix::io::Errno::NOENT) => {
            return Err(("stage", String::new(), std::io::ErrorKind::NotFound.into()));
        }
        Err(_) => return Ok(false),
    }
    let opened = src.metadata().map_err(|e| ("inspect", String::new(), e))?;
    let linked = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| ("inspect", name.to_owned(), e.into()))?;
    if (linked.st_dev as u64, linked.st_ino as u64) == (opened.dev(), opened.ino()) {
        return Ok(true);
    }
    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    Ok(false)
}

/// Copies `src` as `name`; returns the size and the sha256 when `hash`: then the copy
/// is chunk by chunk, each chunk hashed between its read and its write.
fn copy_into(
    dir: &OwnedFd,
    name: &str,
    mut src: &File,
    hash: bool,
) -> Result<Option<(u64, String)>, IoFailure> {
    through_temporary(dir, name, 0o666, |mut out, tmp| {
        if hash {
            hash_through(src, |chunk| out.write_all(chunk))
                .map(|hashed| Some(Some(hashed)))
                .map_err(|e| match e {
                    PassError::Read(e) => ("read", String::new(), e),
                    PassError::Sink(e) => ("write", tmp.to_owned(), e),
                })
        } else {
            // No hash wanted: the kernel copies (copy_file_range), the bytes never pass
            // through this process.
            std::io::copy(&mut src, &mut out)
                .map(|_| Some(None))
                .map_err(|e| ("copy", tmp.to_owned(), e))
        }
    })
    .map(Option::flatten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;

    fn source(dir: &Path, len: usize) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let path = dir.join("original");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    /// Where links are not allowed, the object is a file of its own (a reflink or a
    /// copy), hashed as written: changing the original afterwards changes nothing.
    #[test]
    fn without_links_the_object_is_its_own_file_hashed_as_written() {
        let root = tempfile::tempdir().unwrap();
        let (original, data) = source(root.path(), (3 * super::super::HASH_CHUNK) + 17);
        let dir = ObjectDir::new(root.path(), "store");
        let placed = dir.place_file("obj", &original, false, true).unwrap();
        assert_ne!(placed.how, Placed::HardLink);
        assert_eq!(placed.size, data.len() as u64);
        assert_eq!(
            placed.sha256,
            Some(super::super::hex(&Sha256::digest(&data)))
        );
        let object = root.path().join("store/obj");
        let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
        assert_ne!(inode(&object), inode(&original));
        std::fs::write(&original, b"changed").unwrap();
        assert!(std::fs::read(&object).unwrap() == data);
        let names: Vec<_> = std::fs::read_dir(root.path().join("store"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["obj"], "no temporary file left");
    }

    /// Where links are allowed (and no reflink is possible), the object is the original
    /// file itself; its hash is read from the placed file.
    #[test]
    fn where_allowed_the_object_may_be_the_original_file() {
        let root = tempfile::tempdir().unwrap();
        let (original, data) = source(root.path(), 1000);
        let dir = ObjectDir::new(root.path(), "store");
        let placed = dir.place_file("obj", &original, true, true).unwrap();
        assert_eq!(
            placed.sha256,
            Some(super::super::hex(&Sha256::digest(&data)))
        );
        let object = root.path().join("store/obj");
        let same = std::fs::metadata(&object).unwrap().ino()
            == std::fs::metadata(&original).unwrap().ino();
        assert_eq!(same, placed.how == Placed::HardLink, "{:?}", placed.how);
        assert_ne!(placed.how, Placed::Copy, "same file system: never a copy");
    }

    /// A FIFO is refused at once (never waited on), a directory too, and a missing
    /// file is an error naming it; nothing is left in the store.
    #[test]
    fn only_a_regular_file_is_placed() {
        let root = tempfile::tempdir().unwrap();
        let fifo = root.path().join("fifo");
        crate::fsutil::make_fifo(&fifo).unwrap();
        let dir = ObjectDir::new(root.path(), "store");
        for (path, says) in [
            (fifo, "not a regular file"),
            (root.path().to_owned(), "not a regular file"),
            (root.path().join("missing"), "missing"),
        ] {
            let err = dir.place_file("obj", &path, true, true).unwrap_err();
            assert!(err.to_string().contains(says), "{}: {err}", path.display());
        }
        assert!(!root.path().join("store/obj").exists());
    }

    /// Regression guard: the path is linked, but the file was opened before; if the
    /// path names another file by then (swapped for a FIFO, say, which a later hash
    /// would wait on for ever), the link is undone and the caller copies instead.
    #[test]
    fn a_link_to_a_path_swapped_after_it_was_opened_is_undone() {
        let root = tempfile::tempdir().unwrap();
        let (original, _) = source(root.path(), 100);
        let opened = File::open(&original).unwrap();
        let other = root.path().join("other");
        std::fs::write(&other, b"not the opened file").unwrap();
        let dir = super::super::object_dir::open_dir(root.path()).unwrap();
        assert!(!link_into(&dir, "obj", &other, &opened).unwrap());
        assert!(!root.path().join("obj").exists());
        assert!(link_into(&dir, "obj", &original, &opened).unwrap());
    }

    /// On a file system that makes reflinks, `put_file` makes one even where a hard link
    /// is allowed: the object is then a file of its own, made without copying. Runs on
    /// the directory `PS_GLOBUS_REFLINK_DIR` names (`scripts/test` mounts a small XFS
    /// image there when it runs as root), else in the temporary directory if that
    /// file system makes reflinks; says so when neither does.
    #[test]
    fn reflinks_where_the_file_system_makes_them() {
        let base = std::env::var_os("PS_GLOBUS_REFLINK_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let root = tempfile::tempdir_in(&base).unwrap();
        let (original, data) = source(root.path(), super::super::HASH_CHUNK + 5);
        let dir = ObjectDir::new(root.path(), "store");
        let placed = dir.place_file("obj", &original, true, true).unwrap();
        if placed.how != Placed::Reflink {
            assert!(
                std::env::var_os("PS_GLOBUS_REFLINK_DIR").is_none(),
                "{} makes no reflink",
                base.display()
            );
            eprintln!("skipped: {} makes no reflinks", base.display());
            return;
        }
        let object = root.path().join("store/obj");
        assert_ne!(
            std::fs::metadata(&object).unwrap().ino(),
            std::fs::metadata(&original).unwrap().ino()
        );
        assert_eq!(
            placed.sha256,
            Some(super::super::hex(&Sha256::digest(&data)))
        );
        std::fs::write(&original, b"changed").unwrap();
        assert!(std::fs::read(&object).unwrap() == data);
    }
}
