//! The reader's side: wait until the object is at this site (a destination, or pulled
//! on demand), following its Globus task where this process can see it, then verify.
//!
//! The completion signal is the file itself, present with the key's size and sha256: that
//! needs no credentials and cannot be fooled by a partial file (Globus writes in place).
//! The task adds early, precise failure: a FAILED task, or this object among a succeeded
//! task's skipped errors, is an [`Error::TransferFailed`] at once, not a timeout; and the
//! wait ends at the task's deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::GlobusConnector;
use super::config::{DEFAULT_WAIT, ObjectMeta};
use super::verify::{Verdict, integrity, verify_file};
use crate::connector::Key;
use crate::error::{Error, Result};
use crate::transfer::path::normalise_path;
use crate::transfer::states::TaskStatus;
use crate::transfer::{ItemSpec, Priority, RESPLIT_SUFFIX, resplit_label};

/// How long a reader whose object's task was cancelled looks for the re-split that may
/// carry the object on, before it reports the cancel: the producer's manager submits a
/// re-split within moments of its cancel.
const RESPLIT_GRACE: Duration = Duration::from_secs(15);

impl GlobusConnector {
    /// [`Connector::resolve_path`](crate::connector::Connector::resolve_path): the
    /// verified local path at this site, waiting for the transfer if it is on the way; a
    /// 40 GB array never passes through memory.
    pub(super) async fn verified_path(&self, key: &Key) -> Result<PathBuf> {
        let meta = self.meta(key)?.ok_or_else(|| Error::InvalidConfig {
            what: "globus key".into(),
            message: format!("key {} carries no object metadata", key.id()),
        })?;
        // The waits and the final check look for links themselves, right before each look.
        let (root, local) = self.object_at_site(&meta.path)?;
        if meta.source != self.inner.site {
            self.wait_for(&meta, &root, &local, false).await?;
        }
        match verify_file(&root, &local, &meta, false).await? {
            Verdict::Match(_) => Ok(local),
            Verdict::Absent => Err(Error::not_found(&self.inner.config.store_dir, key, "")),
            Verdict::WrongSize(size) => Err(integrity(&local, &meta, format!("{size} bytes"))),
            Verdict::Mismatch(found) => Err(integrity(&local, &meta, found)),
        }
    }

    /// Waits until the object is at this site (a destination, or pulled on demand).
    /// `keep`: the caller wants the bytes; the look that finds them verified returns
    /// them, so that they are read and hashed once, not once to wait and once to get.
    pub(super) async fn wait_for(
        &self,
        meta: &ObjectMeta,
        root: &Path,
        local: &Path,
        keep: bool,
    ) -> Result<Option<Bytes>> {
        let site = &self.inner.site;
        let label = match meta.destinations.get(site) {
            Some(label) => label.clone(),
            None => match verify_file(root, local, meta, keep).await? {
                Verdict::Match(bytes) => return Ok(bytes),
                _ if self.inner.config.pull_on_demand => self.pull(meta).await?,
                _ => {
                    return Err(Error::NotStaged {
                        key: meta.path.clone(),
                        site: site.clone(),
                        destinations: meta.destinations.keys().cloned().collect(),
                    });
                }
            },
        };
        // Already here: no need to follow the transfer (nor to ask Globus anything).
        if let Verdict::Match(bytes) = verify_file(root, local, meta, keep).await? {
            return Ok(bytes);
        }
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let (_, dest_path) = self.paths(site, &meta.path)?;
        let watcher = self.watcher().await?.clone();
        let mut label = label;
        let mut _watch = watcher.watch(&label);
        // A task cancelled by fail-fast hands its unfinished items to a re-split whose
        // label derives from its own: the reader follows it there for a while before
        // taking the cancel as the object's fate.
        let mut cancelled: Option<(Error, Instant)> = None;
        let explicit = self.inner.config.wait_timeout_s.map(Duration::from_secs);
        let mut until = crate::runtime::deadline_after(explicit.unwrap_or(DEFAULT_WAIT));
        let mut delay = Duration::from_millis(10);
        let mut checked_skips = false;
        loop {
            let changed = watcher.changed();
            let verdict = verify_file(root, local, meta, keep).await?;
            if let Verdict::Match(bytes) = verdict {
                return Ok(bytes);
            }
            let task = watcher.task(&label);
            if task.is_none()
                && let Some((_, given_up_at)) = &cancelled
                && Instant::now() >= *given_up_at
            {
                return Err(cancelled.take().expect("checked above").0);
            }
            if let Some(task) = &task {
                if explicit.is_none()
                    && let Some(deadline) = task
                        .deadline
                        .as_deref()
                        .and_then(crate::transfer::types::parse_time)
                {
                    let left = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
                    until =
                        crate::runtime::deadline_after(left.saturating_add(Duration::from_secs(5)));
                }
                let failed = |code: String, description: String| Error::TransferFailed {
                    task_id: Some(task.task_id.clone()),
                    code,
                    description,
                    source_path: source_path.clone(),
                    destination_path: dest_path.clone(),
                };
                match task.status {
                    TaskStatus::Failed => {
                        let (code, description) = match &task.fatal_error {
                            Some(f) => (f.code.clone(), f.description.clone()),
                            None => ("FAILED".into(), "the Globus task failed".into()),
                        };
                        let error = failed(code.clone(), description);
                        if code == "CANCELED" && !label.ends_with(RESPLIT_SUFFIX) {
                            label = resplit_label(&label);
                            _watch = watcher.watch(&label);
                            cancelled = Some((error, Instant::now() + RESPLIT_GRACE));
                            checked_skips = false;
                            continue;
                        }
                        return Err(error);
                    }
                    TaskStatus::Succeeded if !checked_skips => {
                        checked_skips = true;
                        let client = self.client().await?;
                        let skipped = client.skipped_errors(&task.task_id).await?;
                        if let Some(s) = skipped.iter().find(|s| {
                            normalise_path(&s.destination_path) == normalise_path(&dest_path)
                        }) {
                            return Err(failed(s.error_code.clone(), s.error_details.clone()));
                        }
                        // The file should be there now: one more look below.
                        continue;
                    }
                    TaskStatus::Succeeded => {
                        return Err(match verdict {
                            Verdict::Mismatch(found) => integrity(local, meta, found),
                            // The copy is done: a size that differs is a changed file.
                            Verdict::WrongSize(size) => {
                                integrity(local, meta, format!("{size} bytes"))
                            }
                            _ => failed(
                                "MISSING".into(),
                                format!(
                                    "the task succeeded but {} is not there (deleted since?)",
                                    local.display()
                                ),
                            ),
                        });
                    }
                    _ => {}
                }
            } else if let Verdict::Mismatch(found) = verdict {
                // Right size, wrong bytes, and no task of ours in flight to explain it.
                return Err(integrity(local, meta, found));
            }
            let now = Instant::now();
            if now >= until {
                return Err(Error::Timeout {
                    what: format!("{} to arrive at site {site}", meta.path),
                    after: explicit.unwrap_or(DEFAULT_WAIT),
                });
            }
            let _ = crate::runtime::timeout(delay.min(until - now), changed).await;
            // A stat is cheap; the file is the completion signal, so look often.
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Transfers an object from its source to this site; returns the batch label.
    async fn pull(&self, meta: &ObjectMeta) -> Result<String> {
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let (_, dest_path) = self.paths(&self.inner.site, &meta.path)?;
        let spec = ItemSpec::new(
            meta.collection.to_string(),
            source_path,
            self.inner
                .config
                .site(&self.inner.site)?
                .collection
                .to_string(),
            dest_path,
        )
        .priority(Priority::Latency)
        .options(super::labelled_batches())
        .checksum(meta.sha256.clone(), "SHA256")
        .size(meta.size);
        Ok(self.manager().await?.enqueue(spec).await?.label)
    }
}
