//! Checking that a file at this site is exactly the object its key describes.
//!
//! Size first (a `stat`), then the sha256. Objects of [`INLINE_HASH_LIMIT`] or more (up to
//! tens of GB) are read and hashed on the library runtime's blocking threads, never on an
//! async worker; smaller ones inline, where a thread hop would cost more than the hash.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::config::ObjectMeta;
use crate::error::{Error, IntegrityMismatch, Result};
use crate::runtime;

/// Files smaller than this are hashed on the calling task.
pub(crate) const INLINE_HASH_LIMIT: u64 = 1 << 20;

/// What a look at an object's file found.
pub(super) enum Verdict {
    /// The file holds exactly the object; its bytes, when the look was asked to keep
    /// them (a `get` then needs no second read and hash).
    Match(Option<Bytes>),
    /// No file.
    Absent,
    /// A file of another size: still being written (a transfer writes in place), or
    /// changed since; which one, only the transfer's state can tell.
    WrongSize(u64),
    /// The right size, the wrong bytes: what was found.
    Mismatch(String),
}

/// Whether `local` (below the site's `root`) holds exactly the object; `keep`: read it
/// into memory and keep the bytes on a match (one read and one hash for a `get`).
pub(super) async fn verify_file(
    root: &Path,
    local: &Path,
    meta: &ObjectMeta,
    keep: bool,
) -> Result<Verdict> {
    refuse_links(root, local)?;
    if keep {
        // The read looks at the file's presence and size itself.
        return Ok(match read_hashed(local, meta).await? {
            Read::Missing => Verdict::Absent,
            // Shorter or longer (possibly only by the end of the read): still being
            // written, or changed.
            Read::Size(size) => Verdict::WrongSize(size),
            Read::Hashed(bytes, sha) if sha == meta.sha256 => Verdict::Match(Some(bytes.into())),
            Read::Hashed(_, sha) => Verdict::Mismatch(format!("sha256 {sha}")),
        });
    }
    match fs::metadata(local) {
        Ok(m) if m.len() == meta.size => {}
        Ok(m) => return Ok(Verdict::WrongSize(m.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Verdict::Absent),
        Err(e) => return Err(Error::io("inspect", local, e)),
    }
    let (_, sha) = hash_file(local, meta.size).await?;
    Ok(if sha == meta.sha256 {
        Verdict::Match(None)
    } else {
        Verdict::Mismatch(format!("sha256 {sha}"))
    })
}

/// The object's bytes if `local` (below the site's `root`) holds exactly them; `None` if
/// there is no file.
pub(super) async fn read_verified(
    root: &Path,
    local: &Path,
    meta: &ObjectMeta,
) -> Result<Option<Bytes>> {
    refuse_links(root, local)?;
    match read_hashed(local, meta).await? {
        Read::Missing => Ok(None),
        Read::Size(size) => Err(integrity(local, meta, format!("{size} bytes"))),
        Read::Hashed(bytes, sha) if sha == meta.sha256 => Ok(Some(bytes.into())),
        Read::Hashed(_, sha) => Err(integrity(
            local,
            meta,
            format!("{} bytes, sha256 {sha}", meta.size),
        )),
    }
}

/// What reading an object's file found.
enum Read {
    /// No file.
    Missing,
    /// A file of another size (possibly only by the end of the read).
    Size(u64),
    /// The file's bytes, of the expected size, and their sha256.
    Hashed(Vec<u8>, String),
}

/// Reads the object's file into a fresh buffer (see
/// [`crate::fsutil::read_exact_fresh`]) and hashes it; large files on the runtime's
/// blocking threads.
async fn read_hashed(local: &Path, meta: &ObjectMeta) -> Result<Read> {
    if meta.size < INLINE_HASH_LIMIT {
        read_hashed_now(local, meta.size)
    } else {
        let (local, size) = (local.to_owned(), meta.size);
        runtime::blocking(move || read_hashed_now(&local, size)).await?
    }
}

fn read_hashed_now(local: &Path, expected: u64) -> Result<Read> {
    let file = match fs::File::open(local) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) => return Err(Error::io("read", local, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| Error::io("inspect", local, e))?
        .len();
    if size != expected {
        return Ok(Read::Size(size));
    }
    let bytes = match crate::fsutil::read_exact_fresh(&file, size as usize) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            let now = file.metadata().map_or(0, |m| m.len());
            return Ok(Read::Size(now));
        }
        Err(e) => return Err(Error::io("read", local, e)),
    };
    let sha = crate::fsutil::hex(&Sha256::digest(&bytes));
    Ok(Read::Hashed(bytes, sha))
}

/// The size and sha256 of the file at `path`, expected to be about `size_hint` bytes
/// (which decides whether to hash inline).
pub(super) async fn hash_file(path: &Path, size_hint: u64) -> Result<(u64, String)> {
    if size_hint < INLINE_HASH_LIMIT {
        crate::fsutil::hash_file(path)
    } else {
        let path = path.to_owned();
        runtime::blocking(move || crate::fsutil::hash_file(&path)).await?
    }
}

/// An object's path below the site's `root` (the store directory, any directories of
/// the object's path, the file itself) may not pass through a symbolic link: a planted
/// link could make a reader return, or an integrity error describe, any file on the
/// host. Every component is checked, not only the last. The error names only the path
/// inside the site, never what a link points to.
pub(super) fn refuse_links(root: &Path, local: &Path) -> Result<()> {
    let inside = local.strip_prefix(root).map_err(|_| {
        Error::malformed(format!(
            "{} is not under the site's local path",
            local.display()
        ))
    })?;
    let mut at = root.to_path_buf();
    for component in inside.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::malformed(format!(
                    "{} is a symbolic link; objects are plain files in their store directory",
                    at.display()
                )));
            }
            Ok(_) => {}
            // Not there (yet): nothing below it can be a link.
            Err(_) => break,
        }
    }
    Ok(())
}

/// The sha256 of bytes in memory, lowercase hex.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    crate::fsutil::hex(&Sha256::digest(data))
}

/// The error for a file that is not the object its key describes.
pub(super) fn integrity(local: &Path, meta: &ObjectMeta, found: String) -> Error {
    Error::from(IntegrityMismatch::new(
        local,
        format!("{} bytes, sha256 {}", meta.size, meta.sha256),
        found,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(data: &[u8]) -> ObjectMeta {
        ObjectMeta {
            v: super::super::META_VERSION,
            source: "a".into(),
            collection: uuid::Uuid::nil(),
            path: "x".into(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
            destinations: Default::default(),
        }
    }

    /// Both sides of the inline/blocking threshold give the same verdicts.
    #[tokio::test(flavor = "current_thread")]
    async fn large_and_small_files_verify_alike_on_a_current_thread_runtime() {
        let dir = tempfile::tempdir().unwrap();
        for len in [10usize, (INLINE_HASH_LIMIT as usize) + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            fs::write(&path, &data).unwrap();
            let meta = meta_of(&data);
            for keep in [false, true] {
                let verdict = verify_file(dir.path(), &path, &meta, keep).await.unwrap();
                match verdict {
                    Verdict::Match(bytes) => assert_eq!(bytes.is_some(), keep),
                    _ => panic!("the file is the object"),
                }
            }
            assert_eq!(
                read_verified(dir.path(), &path, &meta)
                    .await
                    .unwrap()
                    .unwrap(),
                data
            );
            assert_eq!(
                hash_file(&path, len as u64).await.unwrap(),
                (len as u64, meta.sha256.clone())
            );
            let mut changed = data.clone();
            changed[len / 2] ^= 1;
            fs::write(&path, &changed).unwrap();
            for keep in [false, true] {
                assert!(matches!(
                    verify_file(dir.path(), &path, &meta, keep).await.unwrap(),
                    Verdict::Mismatch(_)
                ));
            }
            assert!(matches!(
                read_verified(dir.path(), &path, &meta).await,
                Err(Error::Integrity(_))
            ));
            let mut grown = data.clone();
            grown.extend_from_slice(&[0; 3 << 20]);
            fs::write(&path, &grown).unwrap();
            let err = read_verified(dir.path(), &path, &meta).await.unwrap_err();
            assert!(
                err.to_string().contains(&format!("{} bytes", grown.len())),
                "{err}"
            );
        }
        assert!(matches!(
            verify_file(dir.path(), &dir.path().join("none"), &meta_of(b"x"), true)
                .await
                .unwrap(),
            Verdict::Absent
        ));
    }
}
