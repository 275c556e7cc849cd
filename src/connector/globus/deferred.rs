//! Deferred keys (futures) on Globus: the key is made before the object, so it carries no
//! size, sha256 or batch label. `set`, at whichever site the producer runs, writes the
//! object and then its manifest there (see [`crate::connector::deferred`]) and enqueues
//! both to every destination, where they join the same Globus task (the manager
//! coalesces items of the same collections and options). Globus copies a task's files in
//! no particular order: a reader takes the object only when the manifest has arrived
//! whole, verifies, and the object matches it. The labels of those transfers stay at the
//! producer's site (`<id>.labels`, never sent), so an eviction there lets them finish
//! before it deletes the copies, as for any object.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Map;

use super::GlobusConnector;
use super::config::{META_VERSION, ObjectMeta};
use crate::connector::deferred::{self, Found, manifest_name};
use crate::connector::manifest::Outcome;
use crate::connector::{Key, PutOptions, Settlement};
use crate::error::{Error, Result};

/// The local-only record of where a deferred object's transfers went: `<id>.labels`.
fn labels_name(id: &str) -> String {
    format!("{id}.labels")
}

impl GlobusConnector {
    /// [`Connector::new_key`](crate::connector::Connector::new_key): a deferred key
    /// that records the put's destinations, if it names any (checked now).
    pub(super) fn new_deferred_key(&self, options: &PutOptions) -> Result<Key> {
        let mut extra = Map::new();
        // The one site that may settle it: where it is made, or the one the options name.
        let settler = options.settling_site.as_deref().unwrap_or(&self.inner.site);
        self.inner.config.site(settler)?;
        extra.insert("site".into(), settler.into());
        if let Some(sites) = &options.destinations {
            self.inner.config.destinations_for("", Some(sites))?;
            extra.insert("destinations".into(), sites.clone().into());
        }
        Ok(Key::deferred(Self::KIND, extra))
    }

    /// Writes a deferred key's settlement at this site and sends it on (see the module).
    pub(super) async fn settle_here_and_send(
        &self,
        key: &Key,
        settlement: Settlement<'_>,
    ) -> Result<()> {
        key.check_deferred(Self::KIND)?;
        let id = key.id();
        self.check_change(id, id, "setting a future")?;
        let settler = key
            .meta()
            .and_then(|m| m.get("site"))
            .and_then(|s| s.as_str());
        if let Some(settler) = settler.filter(|s| *s != self.inner.site) {
            return Err(Error::unsupported(
                "settling a future made for another site",
                Self::KIND,
                format!(
                    "future {id} is settled only at site {settler:?}, and this process is at \
                     {:?}: set it there (or make it with PutOptions::with_settling_site)",
                    self.inner.site
                ),
            ));
        }
        let asked: Option<Vec<String>> = key
            .meta()
            .and_then(|m| m.get("destinations"))
            .map(|d| serde_json::from_value(d.clone()))
            .transpose()
            .map_err(|e| Error::malformed(format!("key {key}: destinations: {e}")))?;
        // The object first, enqueued before its manifest is sealed: the manifest carries
        // the batch label of the object's transfer to each destination, so a reader
        // there follows that task (and fails Integrity once it is final, if the bytes
        // that arrived do not match).
        let mut outcome = deferred::write_object(&self.inner.objects, id, settlement)?;
        let mut labels = BTreeMap::new();
        if let Outcome::Set {
            size,
            sha256,
            labels: sent,
        } = &mut outcome
        {
            let object = [(id.to_owned(), Some((*size, sha256.clone())))];
            labels = self.send_files(&object, asked.as_deref()).await?;
            sent.extend(
                labels
                    .iter()
                    .filter_map(|(site, l)| Some((site.clone(), l.first()?.clone()))),
            );
        }
        deferred::seal_manifest(&self.inner.objects, id, settlement, outcome)?;
        let manifest = [(manifest_name(id), None)];
        for (site, more) in self.send_files(&manifest, asked.as_deref()).await? {
            let sent: &mut Vec<String> = labels.entry(site).or_default();
            for label in more {
                if !sent.contains(&label) {
                    sent.push(label);
                }
            }
        }
        if labels.is_empty() {
            return Ok(());
        }
        let record = serde_json::to_vec(&labels).expect("labels serialize");
        self.inner.objects.write_atomic(&labels_name(id), &record)
    }

    /// The verified object of a deferred key at this site; `None` while it is not set or
    /// still arriving (a file Globus is still writing may not match yet).
    ///
    /// Bytes that do not match the manifest are [`Error::Integrity`] at once at the site
    /// that set it (nothing is on its way there), and elsewhere once the task that carries
    /// them (its label is in the manifest) is final: until then the file may be half
    /// written.
    pub(super) async fn get_deferred(&self, key: &Key) -> Result<Option<Bytes>> {
        let (root, local) = self.object_at_site(key.id())?;
        let dir = local.parent().unwrap_or(&root);
        super::verify::refuse_links(&root, dir)?;
        let (mismatch, outcome) = match deferred::read(dir, key.id(), &local.to_string_lossy())? {
            Found::Ready(data) => return Ok(Some(data)),
            Found::Pending => return Ok(None),
            Found::Mismatch(e, outcome) => (e, outcome),
        };
        let Some(settler) = key
            .meta()
            .and_then(|m| m.get("site"))
            .and_then(|s| s.as_str())
        else {
            // A key of a release before settling sites: as then, "maybe still arriving".
            return Ok(None);
        };
        let Outcome::Set {
            size,
            sha256,
            labels,
        } = outcome
        else {
            return Err(mismatch);
        };
        let here = &self.inner.site;
        let (Some(source), Some(label)) = (Some(settler).filter(|s| s != here), labels.get(here))
        else {
            // Set here, or no transfer of ours to wait for: the bytes are what they are.
            return Err(mismatch);
        };
        let meta = ObjectMeta {
            v: META_VERSION,
            source: source.to_owned(),
            collection: self.inner.config.site(source)?.collection,
            path: key.id().to_owned(),
            size,
            sha256,
            destinations: [(here.clone(), label.clone())].into(),
        };
        self.wait_for(&meta, &root, &local, true).await
    }

    /// Evicts a deferred object here (a tombstone manifest in its place, so later readers
    /// fail at once) and, at the site that set it, its copies at the destinations: the
    /// object deleted (after its transfer ends, in the shared delete batch) and the
    /// tombstone sent over the manifest (after the manifest's own transfer ended).
    pub(super) async fn evict_deferred(&self, key: &Key) -> Result<()> {
        let id = key.id();
        self.check_change(id, id, "an eviction")?;
        let (root, local) = self.object_at_site(id)?;
        let dir = local.parent().unwrap_or(&root).to_owned();
        super::verify::refuse_links(&root, &dir)?;
        let labels: Option<BTreeMap<String, Vec<String>>> =
            match std::fs::read(dir.join(labels_name(id))) {
                Ok(text) => serde_json::from_slice(&text).ok(),
                Err(_) => None,
            };
        deferred::remove(&dir, id)?;
        if let Some(labels) = labels {
            self.evict_copies(&labels, &[id.to_owned()]).await?;
            let manager = self.manager().await?;
            for dest in labels.keys() {
                self.wait_for_copy(manager, &labels, dest, &manifest_name(id))
                    .await?;
            }
            let sites: Vec<String> = labels.keys().cloned().collect();
            self.send_files(&[(manifest_name(id), None)], Some(&sites))
                .await?;
        }
        let _ = std::fs::remove_file(dir.join(labels_name(id)));
        Ok(())
    }
}
