//! An item asked for again while an earlier copy of it is still queued.
//!
//! A command that fails (a refused login, Ctrl-C) leaves its items queued in the state
//! database, and the next command on it submits them; a user who then runs the same
//! command again would otherwise queue each copy a second time, and the file would move
//! twice. [`TransferManager::enqueue_once`] follows the earlier item instead. An earlier
//! item of another identity of the same service (a token that was refused, then
//! replaced) is taken over when it was never submitted and its process is gone, so that
//! "the next command submits it" holds whoever runs it.

use std::collections::HashMap;

use super::config::{Enqueued, ItemSpec};
use super::sql::now_ms;
use super::{Inner, TransferManager};
use crate::error::{Error, Result};
use crate::state::query::query;
use crate::transfer::states::{BatchState, ItemState};

/// An earlier pending item of the same copy.
struct Earlier {
    item: i64,
    label: String,
    batch: i64,
    identity: String,
    state: String,
    never_submitted: bool,
    owner: String,
}

impl TransferManager {
    /// [`enqueue`](Self::enqueue)s each of `specs`, except those whose copy (same
    /// collections, paths and options) an earlier command queued and that is still on its
    /// way: that item is handed back instead, marked [`Enqueued::earlier`].
    pub async fn enqueue_once(&self, specs: Vec<ItemSpec>) -> Result<Vec<Enqueued>> {
        let mut earlier = self.inner.earlier_items(&specs).await?;
        // Asked once, and only where another identity's item may be taken over.
        let live = if earlier.values().any(|e| e.identity != self.inner.identity) {
            self.inner.live_owners().await?
        } else {
            Default::default()
        };
        let mut handles = Vec::with_capacity(specs.len());
        let mut fresh = Vec::new();
        for (n, spec) in specs.into_iter().enumerate() {
            let found = earlier.remove(&(
                spec.source.clone(),
                spec.source_path.clone(),
                spec.destination.clone(),
                spec.destination_path.clone(),
            ));
            match found {
                Some(e) if self.inner.follows(&e, &live).await? => handles.push((
                    n,
                    Enqueued {
                        item: e.item,
                        label: e.label,
                        earlier: true,
                    },
                )),
                _ => fresh.push((n, spec)),
            }
        }
        // Enqueued concurrently, so that they commit together.
        let enqueued = futures_util::future::try_join_all(
            fresh
                .into_iter()
                .map(|(n, spec)| async move { Ok::<_, Error>((n, self.enqueue(spec).await?)) }),
        )
        .await?;
        handles.extend(enqueued);
        handles.sort_by_key(|(n, _)| *n);
        Ok(handles.into_iter().map(|(_, h)| h).collect())
    }
}

impl TransferManager {
    /// The items of this identity, in any state, that make one of `specs`' copies (same
    /// collections, paths and options) and were queued at or after `since_ms` (Unix
    /// milliseconds): by position in `specs`, the first such item of each. A caller that
    /// may have queued a copy before it died (and cannot know whether it did) asks this
    /// before queueing it again.
    pub async fn copies_since(
        &self,
        specs: &[ItemSpec],
        since_ms: i64,
    ) -> Result<Vec<Option<Enqueued>>> {
        let mut found = Vec::with_capacity(specs.len());
        for spec in specs {
            let options =
                serde_json::to_string(&spec.options).map_err(|e| Error::encode("json", e))?;
            let row = query(
                "SELECT items.id, COALESCE(origin.label, batches.label) AS label \
                 FROM items JOIN batches ON batches.id = items.batch_id \
                 LEFT JOIN batches origin ON origin.id = items.merged_from \
                 WHERE batches.identity = $1 AND batches.source = $2 AND batches.destination = $3 \
                 AND batches.options = $4 AND items.source_path = $5 \
                 AND items.destination_path = $6 AND items.created_at >= $7 \
                 ORDER BY items.id LIMIT 1",
            )
            .bind(&self.inner.identity)
            .bind(&spec.source)
            .bind(&spec.destination)
            .bind(&options)
            .bind(&spec.source_path)
            .bind(&spec.destination_path)
            .bind(since_ms)
            .fetch_optional(&self.inner.db)
            .await?;
            found.push(match row {
                Some(row) => Some(Enqueued {
                    item: row.try_get("id")?,
                    label: row.try_get("label")?,
                    earlier: true,
                }),
                None => None,
            });
        }
        Ok(found)
    }
}

/// (source, source path, destination, destination path).
type Copy = (String, String, String, String);

impl Inner {
    /// The earlier pending items of `specs`' copies, at this service, by copy.
    async fn earlier_items(&self, specs: &[ItemSpec]) -> Result<HashMap<Copy, Earlier>> {
        let service = self
            .identity
            .rsplit_once('@')
            .map_or(String::new(), |(_, url)| url.to_owned());
        let mut groups: Vec<(String, String, String)> = Vec::new();
        for spec in specs {
            let options =
                serde_json::to_string(&spec.options).map_err(|e| Error::encode("json", e))?;
            let group = (spec.source.clone(), spec.destination.clone(), options);
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        let mut found = HashMap::new();
        for (source, destination, options) in groups {
            let rows = query(
                "SELECT items.id, items.source_path, items.destination_path, batches.id AS batch, \
                 batches.identity, batches.state, batches.submission_id, batches.owner, \
                 COALESCE(origin.label, batches.label) AS label \
                 FROM items JOIN batches ON batches.id = items.batch_id \
                 LEFT JOIN batches origin ON origin.id = items.merged_from \
                 WHERE items.state = $1 AND batches.source = $2 AND batches.destination = $3 \
                 AND batches.options = $4 AND batches.state IN ($5, $6, $7, $8) \
                 AND batches.identity LIKE $9 ORDER BY items.id",
            )
            .bind(ItemState::Pending.as_str())
            .bind(&source)
            .bind(&destination)
            .bind(&options)
            .bind(BatchState::Open.as_str())
            .bind(BatchState::Ready.as_str())
            .bind(BatchState::Submitting.as_str())
            .bind(BatchState::Submitted.as_str())
            .bind(&format!("%@{service}"))
            .fetch_all(&self.db)
            .await?;
            for row in rows {
                let copy = (
                    source.clone(),
                    row.try_get::<String, _>("source_path")?,
                    destination.clone(),
                    row.try_get::<String, _>("destination_path")?,
                );
                if let std::collections::hash_map::Entry::Vacant(entry) = found.entry(copy) {
                    entry.insert(Earlier {
                        item: row.try_get("id")?,
                        label: row.try_get("label")?,
                        batch: row.try_get("batch")?,
                        identity: row.try_get("identity")?,
                        state: row.try_get("state")?,
                        never_submitted: row
                            .try_get::<Option<String>, _>("submission_id")?
                            .is_none(),
                        owner: row.try_get("owner")?,
                    });
                }
            }
        }
        Ok(found)
    }

    /// Whether this manager can follow `earlier` to its end: it is this identity's, or
    /// another identity's that was never submitted and whose process is gone, taken over
    /// here (in one statement that checks both again).
    async fn follows(
        &self,
        earlier: &Earlier,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<bool> {
        if earlier.identity == self.identity {
            return Ok(true);
        }
        let unsent = [BatchState::Open.as_str(), BatchState::Ready.as_str()];
        if !earlier.never_submitted
            || !unsent.contains(&earlier.state.as_str())
            || live.contains(&earlier.owner)
        {
            return Ok(false);
        }
        let taken = query(
            "UPDATE batches SET identity = $1, state = $2, closed_at = COALESCE(closed_at, $3) \
             WHERE id = $4 AND identity = $5 AND submission_id IS NULL AND state IN ($6, $7)",
        )
        .bind(&self.identity)
        .bind(BatchState::Ready.as_str())
        .bind(now_ms())
        .bind(earlier.batch)
        .bind(&earlier.identity)
        .bind(BatchState::Open.as_str())
        .bind(BatchState::Ready.as_str())
        .execute(&self.db)
        .await?;
        if taken == 1 {
            tracing::info!(
                "took over batch {} of {} (never submitted, its process gone)",
                earlier.label,
                earlier.identity
            );
            self.signals.submit_kick.notify_one();
        }
        Ok(taken == 1)
    }
}
