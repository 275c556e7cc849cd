//! Small file-system helpers shared by the connectors and the token store.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use sha2::Digest;

use crate::error::{Error, Result};

mod object_dir;
mod place;
pub(crate) use object_dir::ObjectDir;

/// Writes `data` to `path` atomically: a sibling temporary file, then a rename.
///
/// The temporary file is created exclusively (never an existing file or a planted link),
/// under a name unique to this process and call. On failure it is removed and `path` is
/// untouched. A `secret` file is created with mode 0600 and synced to disk before the
/// rename; other files get the usual mode and no fsync.
pub(crate) fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::io("write", path, ErrorKind::InvalidInput.into()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = object_dir::open_dir(parent).map_err(|e| Error::io("open directory", parent, e))?;
    object_dir::write_in(&dir, name, data, secret)
        .map_err(|failure| object_dir::failure_below(parent, failure))
}

/// Runs `f` holding an exclusive `flock` on `lock_path` (other processes wait).
pub(crate) fn with_file_lock<T>(lock_path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = lock_path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(lock_path)
        .map_err(|e| Error::io("open", lock_path, e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| Error::io("lock", lock_path, e.into()))?;
    let result = f();
    let _ = rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock);
    result
}

/// A copy of `data` in a fresh buffer that the kernel may back with transparent huge
/// pages. First touching freshly allocated memory page by page (4 KiB faults) costs more
/// than the copy itself on a large buffer; asking for huge pages (`MADV_HUGEPAGE`) on
/// the 2 MiB-aligned interior of the buffer, before anything is written to it, makes a
/// 64 MiB copy several times faster where transparent huge pages are in `madvise`
/// mode. The buffer is an ordinary `Vec` allocation (never a custom-aligned one, which
/// `Vec` could not free); where the advice is refused, nothing changes but speed.
pub(crate) fn copy_to_fresh_vec(data: &[u8]) -> Vec<u8> {
    let mut out = fresh_vec(data.len());
    out.extend_from_slice(data);
    out
}

/// An empty `Vec` with room for `capacity` bytes, its large interior advised to be
/// backed by huge pages before anything touches it (see [`copy_to_fresh_vec`]).
pub(crate) fn fresh_vec(capacity: usize) -> Vec<u8> {
    const HUGE_PAGE: usize = 2 << 20;
    let out = Vec::with_capacity(capacity);
    if capacity >= 2 * HUGE_PAGE {
        let start = out.as_ptr() as usize;
        let first = start.next_multiple_of(HUGE_PAGE);
        let last = (start + capacity) / HUGE_PAGE * HUGE_PAGE;
        if last > first {
            // SAFETY: [first, last) lies inside the allocation just made (its capacity is
            // `capacity`), which nothing has touched yet; madvise only advises the kernel
            // how to back those pages and never changes their contents.
            let _ = unsafe {
                rustix::mm::madvise(
                    first as *mut std::ffi::c_void,
                    last - first,
                    rustix::mm::Advice::LinuxHugepage,
                )
            };
        }
    }
    out
}

/// Bytes per chunk of a hashing pass: small enough to stay in a core's cache between the
/// read, the hash and whatever is done with the chunk next.
pub(crate) const HASH_CHUNK: usize = 256 << 10;

/// Which side of a [`hash_through`] pass failed.
pub(crate) enum PassError {
    /// Reading the source.
    Read(std::io::Error),
    /// Handing a chunk on.
    Sink(std::io::Error),
}

/// Reads `src` to its end in chunks, hashing each chunk and then handing it to `sink`
/// (a write, or nothing): one pass over the bytes. Returns the size and the sha256
/// (lowercase hex) of what went through.
pub(crate) fn hash_through(
    mut src: impl Read,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(u64, String), PassError> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(PassError::Read(e)),
        };
        hasher.update(&buf[..n]);
        sink(&buf[..n]).map_err(PassError::Sink)?;
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// The size and sha256 (lowercase hex) of the file at `path`, read in one pass.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String)> {
    let file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    hash_through(file, |_| Ok(()))
        .map_err(|(PassError::Read(e) | PassError::Sink(e))| Error::io("read", path, e))
}

/// Lowercase hex of `bytes` (a digest).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Files at least this large are read in two halves at once (see [`read_exact_fresh`]).
const PARALLEL_READ: usize = 8 << 20;

/// Exactly `len` bytes of `file` from its start, in a fresh buffer (see [`fresh_vec`]).
///
/// The kernel's copy from the page cache is what bounds a large read here (measured
/// 1.0-1.3 GB/s into fresh huge pages, 2.8 GB/s into memory already touched), so a large
/// file is read as two halves at once, one on a second thread: about 1.9 GB/s for 64 MiB.
/// A file shorter than `len` is an `UnexpectedEof` error, never a short buffer.
pub(crate) fn read_exact_fresh(file: &fs::File, len: usize) -> std::io::Result<Vec<u8>> {
    let mut out = fresh_vec(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len >= PARALLEL_READ {
        let (first, second) = spare.split_at_mut(len / 2);
        let offset = first.len() as u64;
        std::thread::scope(|scope| {
            let other = scope.spawn(move || pread_all(file, second, offset));
            let mine = pread_all(file, first, 0);
            let theirs = other.join().expect("reading never panics");
            mine.and(theirs)
        })?;
    } else {
        pread_all(file, spare, 0)?;
    }
    // SAFETY: `pread_all` returned Ok for every part, so each of the first `len` bytes
    // (within the capacity `fresh_vec` reserved) was written by the kernel.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// Fills all of `buf` from `file` at `offset`, or fails (`UnexpectedEof` if it ends).
fn pread_all(
    file: &fs::File,
    mut buf: &mut [std::mem::MaybeUninit<u8>],
    mut offset: u64,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pread(file, &mut *buf, offset) {
            Ok(([], _)) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok((read, _)) => {
                let n = read.len();
                offset += n as u64;
                buf = &mut buf[n..];
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads a whole object file into one buffer of its size.
///
/// Only a regular file is an object: a symbolic link, FIFO or device planted under an
/// object's name in a shared directory is refused, not read through (a link to
/// `/dev/zero` would otherwise be read without end, a FIFO would block forever).
pub(crate) fn read_regular_file(path: &Path) -> std::io::Result<Bytes> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_an_object(),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_an_object());
    }
    let len = usize::try_from(meta.len()).map_err(|_| std::io::Error::other("too large"))?;
    let changed = |now: String| {
        std::io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "the object file changed size while it was read ({len} bytes, then {now}); \
                 puts never rewrite an object file: something else is writing it"
            ),
        )
    };
    let data = crate::fsutil::read_exact_fresh(&file, len).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => changed("fewer".into()),
        _ => e,
    })?;
    // A byte past the end: the file grew while it was read.
    if rustix::io::pread(&file, &mut [0u8; 1], len as u64)? > 0 {
        return Err(changed("more".into()));
    }
    Ok(Bytes::from(data))
}

/// [`read_regular_file`], with a missing file as `None` and other failures as
/// [`Error::Storage`](crate::Error::Storage) naming the path.
pub(crate) fn read_regular_file_if_there(path: &Path) -> Result<Option<Bytes>> {
    match read_regular_file(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The error for something other than a regular file under an object's name.
pub(crate) fn not_an_object() -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidData,
        "not a regular file (a link, FIFO or device put under an object's name?); \
         remove it: puts never make one",
    )
}

/// Makes a named pipe at `path` (tests plant one where a file is expected).
#[cfg(test)]
pub(crate) fn make_fifo(path: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    Ok(mknodat(
        CWD,
        path,
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both halves of a parallel read land where they belong, at sizes on both sides
    /// of the threshold; a file shorter than asked is an error, not a short buffer.
    #[test]
    fn an_exact_read_returns_the_files_bytes_in_order_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, 4097, PARALLEL_READ - 1, PARALLEL_READ + 4099] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            assert!(
                read_exact_fresh(&file, len).unwrap() == data,
                "length {len}"
            );
            let err = read_exact_fresh(&file, len + 1).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "length {len}");
        }
    }

    #[test]
    fn a_copy_to_a_fresh_vec_is_the_same_bytes_at_every_size() {
        for len in [0, 1, 4095, (4 << 20) + 4097, 9 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let copy = copy_to_fresh_vec(&data);
            assert_eq!(copy, data, "length {len}");
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("object");
        std::fs::write(&target, b"old").unwrap();
        // A directory cannot be renamed over by a file: the write succeeds, the rename fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let err = write_atomic(&blocked, b"new", false).unwrap_err();
        let names = failed_rename_left(&err, dir.path());
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
    }

    /// Checks that `err` is a failed rename naming `blocked`; returns what `dir` holds.
    pub(super) fn failed_rename_left(err: &Error, dir: &Path) -> Vec<std::ffi::OsString> {
        assert!(
            matches!(err, Error::Storage(_))
                && err.to_string().starts_with("rename into place ")
                && err.is::<std::io::Error>(),
            "{err:?}"
        );
        assert!(err.to_string().contains("blocked"), "names the path: {err}");
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }
}
