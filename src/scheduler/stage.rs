//! A job's stage-in as its first step sees it: the files it waits for, and their
//! verification once Globus says they arrived.
//!
//! The first step runs on a compute node, from the wrapper `job submit` wrote: each file
//! is one word of its command line (`ITEM:SIZE:SHA256:PATH`), so the step needs nothing
//! but the state database (to follow the items) and the token store (to ask Globus, if
//! nobody else on the database is asking). A file arrives when its item has succeeded
//! and the file at its path is a regular file of the expected size and sha256, where
//! these were known at submission (a source at the submitting site, hashed then);
//! otherwise Globus's own checksum verification of the copy is what vouches for it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// One file of a stage-in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedFile {
    /// Its transfer item in the state database.
    pub item: i64,
    /// Where it arrives (a local path on the job's nodes).
    pub path: PathBuf,
    /// Its size, if known at submission.
    pub size: Option<u64>,
    /// Its sha256 (lowercase hex), if known at submission.
    pub sha256: Option<String>,
}

impl StagedFile {
    /// As one word of the first step's command line: `ITEM:SIZE:SHA256:PATH`, `-` for
    /// what is unknown (the path last: it may hold `:`).
    pub fn to_word(&self) -> OsString {
        let size = self.size.map_or("-".to_owned(), |s| s.to_string());
        let sha = self.sha256.as_deref().unwrap_or("-");
        let mut word = format!("{}:{size}:{sha}:", self.item).into_bytes();
        word.extend_from_slice(self.path.as_os_str().as_bytes());
        OsString::from_vec(word)
    }

    /// Reads a word [`to_word`](Self::to_word) wrote.
    pub fn parse_word(word: &OsStr) -> Result<StagedFile> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{:?} is not a staged file (ITEM:SIZE:SHA256:PATH, - for unknown)",
                    word.to_string_lossy()
                ),
            )
        };
        let mut parts = word.as_bytes().splitn(4, |&b| b == b':');
        let mut text = || {
            parts
                .next()
                .and_then(|p| std::str::from_utf8(p).ok())
                .ok_or_else(bad)
        };
        let item = text()?.parse().map_err(|_| bad())?;
        let size = match text()? {
            "-" => None,
            n => Some(n.parse().map_err(|_| bad())?),
        };
        let sha256 = match text()? {
            "-" => None,
            h if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Some(h.to_ascii_lowercase())
            }
            _ => return Err(bad()),
        };
        let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
        Ok(StagedFile {
            item,
            path: PathBuf::from(OsStr::from_bytes(path)),
            size,
            sha256,
        })
    }

    /// Checks the file that arrived: a regular file (not a link: whoever could plant
    /// one would choose what the job reads), of the expected size and sha256.
    pub fn verify(&self) -> Result<()> {
        let path = &self.path;
        let meta = std::fs::symlink_metadata(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Integrity,
                format!(
                    "{}: Globus reported the stage-in item {} done, but the file is not there",
                    path.display(),
                    self.item
                ),
                e,
            )
        })?;
        if !meta.file_type().is_file() {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{}: not a regular file (a link or a directory): refusing to hand it to the job",
                    path.display()
                ),
            ));
        }
        if let Some(size) = self.size
            && meta.len() != size
        {
            return Err(Error::new(
                ErrorKind::Integrity,
                format!(
                    "{}: {} bytes arrived, {size} were staged",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        if let Some(expected) = &self.sha256 {
            let (_, found) = crate::fsutil::hash_file(path)?;
            if &found != expected {
                return Err(Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "{}: sha256 {found}, but {expected} was staged",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What a job does when its stage-in fails for good (or does not arrive in time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// Its first step fails with the reason: the job ends `FAILED`, its script unrun.
    #[default]
    Fail,
    /// It is cancelled (`scancel`): it ends `CANCELLED`, its script unrun.
    Cancel,
    /// It goes back to the queue, held (`scontrol requeuehold`), its script unrun: a
    /// release runs it again, first step first.
    Hold,
    /// Its script runs anyway, after the reason is said.
    Run,
}

impl OnFailure {
    /// Reads `fail`, `cancel`, `hold` or `run`.
    pub fn parse(text: &str) -> Result<OnFailure> {
        match text {
            "fail" => Ok(OnFailure::Fail),
            "cancel" => Ok(OnFailure::Cancel),
            "hold" => Ok(OnFailure::Hold),
            "run" => Ok(OnFailure::Run),
            other => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{other:?} is not one of fail, cancel, hold, run"),
            )),
        }
    }

    /// Its word.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Fail => "fail",
            OnFailure::Cancel => "cancel",
            OnFailure::Hold => "hold",
            OnFailure::Run => "run",
        }
    }
}

/// The size and sha256 of a source file at the submitting site, read now: what its copy
/// must be when it arrives.
pub fn expected_of(local_source: &std::path::Path) -> Result<(u64, String)> {
    crate::fsutil::hash_file(local_source)
}

/// Waits, up to `limit` in all, for every file of a stage-in to arrive, then verifies
/// each. `arrival(item, left)` waits up to `left` for one transfer item to succeed: a
/// `TransferManager::wait`, passed in by the caller, so that this module needs nothing
/// of the transfer layer. A file whose transfer failed for good is that failure
/// (Globus's code and description); past `limit`, a timeout naming what was still on
/// its way.
pub async fn wait_stage_in<F, Fut>(
    files: &[StagedFile],
    limit: Duration,
    mut arrival: F,
) -> Result<()>
where
    F: FnMut(i64, Duration) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    for file in files {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        arrival(file.item, left).await.map_err(|e| {
            if e.kind() == ErrorKind::Timeout {
                Error::timeout(
                    format!(
                        "the stage-in of {} (item {})",
                        file.path.display(),
                        file.item
                    ),
                    limit,
                )
            } else {
                e
            }
        })?;
    }
    for file in files {
        file.verify()?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
