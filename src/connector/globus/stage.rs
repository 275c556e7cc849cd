//! The producer's side: an object written at this site, then one transfer item per
//! destination enqueued with the manager; and eviction of the copies it sent.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::GlobusConnector;
use super::config::{META_VERSION, ObjectMeta};
use super::verify::INLINE_HASH_LIMIT;
use crate::connector::{Key, PutOptions};
use crate::error::{Error, Result};
use crate::transfer::{CollectionHttps, ItemSpec, LaneBody, Priority};

/// Objects up to this size are kept in memory for their HTTPS PUT; larger ones are read
/// back from the store directory.
const KEEP_FOR_LANE: usize = 64 << 10;

impl GlobusConnector {
    /// Enqueues the transfers of a freshly written object; returns its key. To each
    /// destination whose collection serves HTTPS, an object of at most its
    /// `https_max_size` goes by the HTTPS lane (`data`, else the file written here, is
    /// PUT there after this returns); the rest by Transfer. Credentials missing for a
    /// lane are this put's error, before anything is enqueued (the written file is
    /// removed).
    pub(super) async fn stage(
        &self,
        id: String,
        size: u64,
        sha256: String,
        options: &PutOptions,
        data: Option<&[u8]>,
    ) -> Result<Key> {
        self.mark_store_dir();
        let source = self.inner.site.clone();
        let (local, source_path) = self.paths(&source, &id)?;
        let collection = self.inner.config.site(&source)?.collection;
        let mut destinations = BTreeMap::new();
        let targets = self
            .inner
            .config
            .destinations_for(&source, options.destinations.as_deref())?;
        if !targets.is_empty() {
            let routes = match self.lane_routes(&targets, size).await {
                Ok(routes) => routes,
                Err(e) => {
                    // Nothing was enqueued: the object was never handed out.
                    let _ = fs::remove_file(&local);
                    return Err(e);
                }
            };
            let manager = self.manager().await?;
            let mut sends = Vec::new();
            for (dest, https) in targets.into_iter().zip(routes) {
                let (_, dest_path) = self.paths(&dest, &id)?;
                let mut spec = ItemSpec::new(
                    collection.to_string(),
                    source_path.clone(),
                    self.inner.config.site(&dest)?.collection.to_string(),
                    dest_path.clone(),
                )
                .priority(self.priority_of(Some(size), options.bulk))
                .options(super::labelled_batches())
                .checksum(sha256.clone(), "SHA256")
                .size(size);
                if https.is_some() {
                    spec = spec.via_https();
                }
                let enqueued = match manager.enqueue(spec).await {
                    Ok(enqueued) => enqueued,
                    Err(e) => {
                        // No PUT will follow for the lane items already committed: they
                        // go by Transfer, or a flush would wait for them for ever.
                        for (item, _, _) in &sends {
                            let _ = manager.https_failed(*item, "its put failed").await;
                        }
                        return Err(e);
                    }
                };
                if let Some(https) = https {
                    sends.push((enqueued.item, https, dest_path));
                }
                destinations.insert(dest, enqueued.label);
            }
            if !sends.is_empty() {
                let lane = self.lane().await?;
                // A small object's bytes are kept; a larger one is read from the store
                // directory when its turn comes, so a burst of puts queued for the lane
                // holds no copies (at most the PUTs in flight hold theirs).
                let body = match data {
                    Some(data) if data.len() <= KEEP_FOR_LANE => {
                        LaneBody::Bytes(Bytes::copy_from_slice(data))
                    }
                    _ => LaneBody::File(local),
                };
                for (item, https, dest_path) in sends {
                    lane.send(item, https, dest_path, body.clone());
                }
            }
        }
        Key::new(Self::KIND, id.clone())?.with_meta(ObjectMeta {
            v: META_VERSION,
            source,
            collection,
            path: id,
            size,
            sha256,
            destinations,
        })
    }

    /// Per destination, its collection's HTTPS if an object of `size` bytes goes there
    /// by the lane, else `None` (Transfer).
    async fn lane_routes(
        &self,
        targets: &[String],
        size: u64,
    ) -> Result<Vec<Option<Arc<CollectionHttps>>>> {
        let mut routes = Vec::with_capacity(targets.len());
        for dest in targets {
            let max = self.inner.config.https_max_size_for(dest)?;
            let route = if max > 0 && size <= max {
                let collection = self.inner.config.site(dest)?.collection;
                self.lane().await?.route(&collection).await?
            } else {
                None
            };
            routes.push(route);
        }
        Ok(routes)
    }

    /// [`Connector::put_file`]: a reflink into the store directory where the file
    /// system makes one, else a hard link (same file system), else a copy hashed as it
    /// is written (see [`crate::fsutil::ObjectDir::place_file`]). Then the same
    /// transfers as a `put`. A hard link shares the file: change the original afterwards
    /// and readers get an [`Error::Integrity`], never the changed bytes (every read here
    /// verifies the sha256; none maps the file).
    pub(super) async fn stage_file(&self, file: &Path, options: &PutOptions) -> Result<Key> {
        let id = Key::new_id();
        self.check_change(&id, &id, "a put")?;
        let size = fs::metadata(file)
            .map_err(|e| Error::io("stage", file, e))?
            .len();
        let placed = if size < INLINE_HASH_LIMIT {
            self.inner.objects.place_file(&id, file, true, true)?
        } else {
            let (this, id, file) = (self.clone(), id.clone(), file.to_owned());
            crate::runtime::blocking(move || this.inner.objects.place_file(&id, &file, true, true))
                .await??
        };
        tracing::debug!(how = ?placed.how, size = placed.size, "staged {}", file.display());
        let sha256 = placed.sha256.expect("place_file hashes when asked to");
        self.stage(id, placed.size, sha256, options, None).await
    }

    /// The priority of an object's transfers: bulk at or above the store's
    /// `latency_max_size` (when its size is known), or when its put says so (`bulk`);
    /// else latency (the express lane).
    fn priority_of(&self, size: Option<u64>, bulk: bool) -> Priority {
        if bulk || size.is_some_and(|size| self.inner.config.is_bulk(size)) {
            Priority::Bulk
        } else {
            Priority::Latency
        }
    }

    /// Enqueues the transfers of files already written under this site's store directory
    /// (paths relative to it, each with its size and sha256 where they are checked) to
    /// the `asked` destinations (default: the store's), in order, at latency priority
    /// (bulk from `latency_max_size`),
    /// so that files sent together join one Globus task. The labels of their batches, by
    /// destination.
    pub(crate) async fn send_files(
        &self,
        files: &[(String, Option<(u64, String)>)],
        asked: Option<&[String]>,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let site = &self.inner.site;
        let mut labels = BTreeMap::new();
        let targets = self.inner.config.destinations_for(site, asked)?;
        if targets.is_empty() {
            return Ok(labels);
        }
        let manager = self.manager().await?;
        let collection = self.inner.config.site(site)?.collection.to_string();
        for dest in targets {
            let dest_collection = self.inner.config.site(&dest)?.collection.to_string();
            for (name, check) in files {
                let (_, source_path) = self.paths(site, name)?;
                let (_, dest_path) = self.paths(&dest, name)?;
                let mut spec = ItemSpec::new(
                    collection.clone(),
                    source_path,
                    dest_collection.clone(),
                    dest_path,
                )
                .options(super::labelled_batches());
                if let Some((size, sha256)) = check {
                    spec = spec.checksum(sha256.clone(), "SHA256").size(*size);
                }
                let size = check.as_ref().map(|(size, _)| *size);
                spec = spec.priority(self.priority_of(size, false));
                let label = manager.enqueue(spec).await?.label;
                let sent: &mut Vec<String> = labels.entry(dest.clone()).or_default();
                if !sent.contains(&label) {
                    sent.push(label);
                }
            }
        }
        Ok(labels)
    }

    /// Deletes the object's copies at the destinations, after their transfers end.
    pub(super) async fn evict_remote(&self, meta: &ObjectMeta) -> Result<()> {
        let labels = meta
            .destinations
            .iter()
            .map(|(dest, label)| (dest.clone(), vec![label.clone()]))
            .collect();
        self.evict_copies(&labels, std::slice::from_ref(&meta.path))
            .await
    }

    /// Waits (up to an hour) for the transfers of `path` (under the store directory) to
    /// `dest` in the batches labelled there to end; the path at `dest`.
    pub(super) async fn wait_for_copy(
        &self,
        manager: &crate::transfer::TransferManager,
        labels: &BTreeMap<String, Vec<String>>,
        dest: &str,
        path: &str,
    ) -> Result<String> {
        let (_, dest_path) = self.paths(dest, path)?;
        for label in labels.get(dest).into_iter().flatten() {
            for item in manager.items(label).await? {
                if item.destination_path == dest_path && !item.is_final() {
                    let _ = manager.wait(item.item, Duration::from_secs(3600)).await;
                }
            }
        }
        Ok(dest_path)
    }

    /// Deletes `paths` (under the store directory) at each destination, after the
    /// transfers of the batches labelled there end. The deletes join the delete batch at
    /// once (a hold on their place), so evictions made together become one delete task
    /// even when one waits for its transfer; and the rest runs in the background (the
    /// manager's `flush`, `close` and the exit hook wait for it), so evictions made one
    /// after another (ProxyStore's `ContextLifetime`) share a task too.
    pub(super) async fn evict_copies(
        &self,
        labels: &BTreeMap<String, Vec<String>>,
        paths: &[String],
    ) -> Result<()> {
        let manager = self.manager().await?.clone();
        let deleter = self.deleter().await?;
        let mut holds = Vec::new();
        for dest in labels.keys() {
            let collection = self.inner.config.site(dest)?.collection.to_string();
            for path in paths {
                holds.push((
                    dest.clone(),
                    collection.clone(),
                    path.clone(),
                    deleter.hold(),
                ));
            }
        }
        let (this, labels) = (self.clone(), labels.clone());
        let waiting = manager.clone();
        manager.spawn_background("deleting evicted copies", async move {
            let mut receipts = Vec::with_capacity(holds.len());
            for (dest, collection, path, hold) in holds {
                // Let an in-flight transfer finish first, or it would land after the delete.
                let dest_path = this.wait_for_copy(&waiting, &labels, &dest, &path).await?;
                receipts.push(hold.add(collection, dest_path));
            }
            for receipt in receipts {
                receipt.submitted().await?;
            }
            Ok(())
        });
        Ok(())
    }
}
