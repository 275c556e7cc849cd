//! The producer's side: an object written at this site, then one transfer item per
//! destination enqueued with the manager; and eviction of the copies it sent.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use super::GlobusConnector;
use super::config::{META_VERSION, ObjectMeta};
use super::verify::hash_file;
use crate::connector::{Key, PutOptions};
use crate::error::{Error, Result};
use crate::transfer::{ItemSpec, Priority};

impl GlobusConnector {
    /// Enqueues the transfers of a freshly written object; returns its key.
    pub(super) async fn stage(
        &self,
        id: String,
        size: u64,
        sha256: String,
        options: &PutOptions,
    ) -> Result<Key> {
        let source = self.inner.site.clone();
        let (_, source_path) = self.paths(&source, &id)?;
        let collection = self.inner.config.site(&source)?.collection;
        let mut destinations = BTreeMap::new();
        let targets = self
            .inner
            .config
            .destinations_for(&source, options.destinations.as_deref())?;
        if !targets.is_empty() {
            let manager = self.manager().await?;
            for dest in targets {
                let (_, dest_path) = self.paths(&dest, &id)?;
                let spec = ItemSpec::new(
                    collection.to_string(),
                    source_path.clone(),
                    self.inner.config.site(&dest)?.collection.to_string(),
                    dest_path,
                )
                .priority(Priority::Latency)
                .checksum(sha256.clone(), "SHA256")
                .size(size);
                destinations.insert(dest, manager.enqueue(spec).await?.label);
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

    /// [`Connector::put_file`]: a hard link into the store directory when on the same
    /// file system, else a streamed copy; the sha256 is streamed. Then the same
    /// transfers as a `put`. The hard link shares the file: change the original
    /// afterwards and readers get an [`Error::Integrity`], not the changed bytes.
    pub(super) async fn stage_file(&self, file: &Path, options: &PutOptions) -> Result<Key> {
        let id = Key::new_id();
        let (_, local) = self.local_object(&id)?;
        let dir = local.parent().expect("object paths have a parent");
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        if let Err(link_error) = fs::hard_link(file, &local) {
            if link_error.kind() == ErrorKind::NotFound {
                return Err(Error::io("stage", file, link_error));
            }
            let tmp = dir.join(format!(".{id}.partial"));
            let copied = fs::copy(file, &tmp)
                .map_err(|e| Error::io("copy", file, e))
                .and_then(|_| fs::rename(&tmp, &local).map_err(|e| Error::io("rename", &tmp, e)));
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
        }
        let size_hint = fs::metadata(&local).map_or(u64::MAX, |m| m.len());
        let (size, sha256) = hash_file(&local, size_hint).await?;
        self.stage(id, size, sha256, options).await
    }

    /// Deletes the object's copies at the destinations, after their transfers end. The
    /// deletes join the delete batch at once (a hold on their place), so evictions made
    /// together become one delete task even when one waits for its transfer.
    pub(super) async fn evict_remote(&self, meta: &ObjectMeta) -> Result<()> {
        let manager = self.manager().await?;
        let deleter = self.deleter().await?;
        let holds: Vec<_> = meta.destinations.iter().map(|_| deleter.hold()).collect();
        let mut receipts = Vec::with_capacity(holds.len());
        for ((dest, label), hold) in meta.destinations.iter().zip(holds) {
            let (_, dest_path) = self.paths(dest, &meta.path)?;
            // Let an in-flight transfer finish first, or it would land after the delete.
            for item in manager.items(label).await? {
                if item.destination_path == dest_path && !item.is_final() {
                    let _ = manager.wait(item.item, Duration::from_secs(3600)).await;
                }
            }
            let collection = self.inner.config.site(dest)?.collection.to_string();
            receipts.push(hold.add(collection, dest_path));
        }
        for receipt in receipts {
            receipt.submitted().await?;
        }
        Ok(())
    }
}
