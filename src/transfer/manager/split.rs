//! Batches that fit in one `POST /transfer`, and the split of one that does not.
//!
//! Globus documents no limit on a submission's size, but every HTTP service has one (the
//! emulator's is `max_body_bytes`), and a document over it is refused with 413 before
//! anything is created. So a batch is kept under
//! [`max_document_bytes`](super::ManagerConfig::max_document_bytes) three times over: an
//! open batch closes before its estimated document would pass it; a claim merges
//! waiting batches only within it; and the document is measured before it is posted.
//!
//! A batch over it, or refused with 413 all the same (a service whose limit is lower),
//! is *split*: its later half moves to a new batch, a *part*, and both go again. Each
//! goes exactly once: the refused submission id was never used (a 413 comes before the
//! service reads the document), and each half is claimed with a fresh one. No item fails
//! for it; only a single item over the limit on its own fails, with what to do.
//!
//! Neither half merges with other batches again (both keep their labels), or claims
//! would merge them back into a document the service refuses.
//!
//! Labels stay true. A part of the batch labelled `ROOT` is labelled `ROOT-partN`, and
//! the root itself (whose label the keys carry) is posted only after every part of it
//! has a task. A reader that sees its label's task end without its object then finds the
//! parts already listed (`label:~ROOT-*`), and follows them.

use super::Inner;
use super::config::BatchOptions;
use super::sql::{bump_generation, now_ms};
use crate::error::{Error, GlobusApiError, Result};
use crate::state::query::query;
use crate::transfer::states::{BatchState, ItemState};

/// What one item adds to a transfer document beside its paths and checksum (its field
/// names, `DATA_TYPE`, `recursive`, quotes and separators: about 120 bytes), with room
/// for JSON escapes.
pub(super) const ITEM_OVERHEAD: usize = 160;

/// [`ITEM_OVERHEAD`] and an item's paths and checksum, as SQL over the `items` table:
/// the estimate [`ItemSpec::document_bytes`](super::ItemSpec) makes before the row exists.
/// (`LENGTH` counts characters, so non-ASCII paths are under-counted; the document is
/// measured exactly before it is posted.)
pub(super) const ITEM_BYTES_SQL: &str = "(LENGTH(source_path) + LENGTH(destination_path) \
     + COALESCE(LENGTH(external_checksum), 0) + COALESCE(LENGTH(checksum_algorithm), 0) + 160)";

/// Room kept in a document for what is not an item: the label, ids, options.
const DOCUMENT_OVERHEAD: usize = 4096;

/// The bytes of items a batch may hold under `max_document_bytes`.
pub(super) fn item_budget(max_document_bytes: usize) -> usize {
    max_document_bytes.saturating_sub(DOCUMENT_OVERHEAD)
}

/// What a part's label adds to its root's: `ROOT-part2`.
pub(crate) const PART_SUFFIX: &str = "-part";

/// The label of the `n`th part of the batch labelled `root`.
fn part_label(root: &str, n: i64) -> String {
    format!("{root}{PART_SUFFIX}{n}")
}

/// The root of a part's label (`ROOT-partN` → `ROOT`); any other label is its own root.
fn root_of(label: &str) -> &str {
    match label.rsplit_once(PART_SUFFIX) {
        Some((root, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => root,
        _ => label,
    }
}

/// The longest label Globus takes.
const MAX_LABEL: usize = 128;

/// Whether the service refused a document for its size.
pub(super) fn refused_as_too_large(e: &Error) -> bool {
    e.downcast_ref::<GlobusApiError>()
        .is_some_and(|answer| answer.status == 413)
}

impl Inner {
    /// Splits `batch` (`SUBMITTING`, not posted) in two because of `why`: the later half
    /// of its items moves to a new part, and the batch goes back to `READY` without its
    /// unused submission id. False if it has a single item (nothing to split).
    pub(super) async fn split(&self, batch: i64, why: &str) -> Result<bool> {
        let Some((label, part)) = split_batch(&self.db, batch, &self.owner, why).await? else {
            return Ok(false);
        };
        tracing::info!("transfer batch {label} was too large to post ({why}): split off {part}");
        self.signals.submit_kick.notify_one();
        self.signals.changed.notify_waiters();
        Ok(true)
    }
}

/// The options of a batch split in two, and of its new part `n`, from the batch's
/// `options`. Neither half merges with other batches from now on (`keep_label`): a claim
/// would merge them back into one document the service refuses, for ever. A label the
/// user chose (staging) gets the part's suffix where Globus has room for it.
fn split_options(options: &str, n: i64) -> Result<(String, String)> {
    let Ok(mut parsed) = serde_json::from_str::<BatchOptions>(options) else {
        // Options this build cannot read already keep their label.
        return Ok((options.to_owned(), options.to_owned()));
    };
    parsed.keep_label = true;
    let own = serde_json::to_string(&parsed).map_err(|e| Error::encode("json", e))?;
    if let Some(user) = parsed.label.take() {
        let suffixed = part_label(root_of(&user), n);
        parsed.label = Some(if suffixed.len() <= MAX_LABEL {
            suffixed
        } else {
            user
        });
    }
    let part = serde_json::to_string(&parsed).map_err(|e| Error::encode("json", e))?;
    Ok((own, part))
}

/// The split of [`Inner::split`], in one transaction; the batch's label and its new
/// part's, or `None` if it is not `SUBMITTING` or has fewer than two items.
async fn split_batch(
    db: &crate::state::StateDb,
    batch: i64,
    owner: &str,
    why: &str,
) -> Result<Option<(String, String)>> {
    let mut tx = db.begin_write().await?;
    // Only items still to go (a lane batch that fell back holds delivered ones too).
    let items: Vec<i64> =
        query("SELECT id FROM items WHERE batch_id = $1 AND state = $2 ORDER BY id")
            .bind(batch)
            .bind(ItemState::Pending.as_str())
            .fetch_scalars(&mut tx)
            .await?;
    if items.len() < 2 {
        return Ok(None);
    }
    let row = query(
        "SELECT label, identity, source, destination, options, priority, state \
         FROM batches WHERE id = $1",
    )
    .bind(batch)
    .fetch_one(&mut tx)
    .await?;
    if row.try_get::<String, _>("state")? != BatchState::Submitting.as_str() {
        return Ok(None);
    }
    let label: String = row.try_get("label")?;
    let root = root_of(&label).to_owned();
    let parts: i64 = query("SELECT COUNT(*) FROM batches WHERE label LIKE $1")
        .bind(&format!("{root}{PART_SUFFIX}%"))
        .fetch_scalar(&mut tx)
        .await?;
    let part = part_label(&root, parts + 1);
    let options: String = row.try_get("options")?;
    let (batch_options, part_options) = split_options(&options, parts + 1)?;
    let now = now_ms();
    let [identity, source, destination] =
        ["identity", "source", "destination"].map(|c| row.try_get::<String, _>(c));
    let (identity, source, destination) = (identity?, source?, destination?);
    let part_id: i64 = query(
        "INSERT INTO batches (label, identity, source, destination, options, priority, state, \
         owner, created_at, closed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&part)
    .bind(&identity)
    .bind(&source)
    .bind(&destination)
    .bind(&part_options)
    .bind(row.try_get::<i64, _>("priority")?)
    .bind(BatchState::Ready.as_str())
    .bind(owner)
    .bind(now)
    .bind(now)
    .fetch_scalar(&mut tx)
    .await?;
    // Items keep the batch they were enqueued under (their label, for `items(label)`).
    query(
        "UPDATE items SET merged_from = COALESCE(merged_from, batch_id), batch_id = $1 \
         WHERE batch_id = $2 AND id >= $3",
    )
    .bind(part_id)
    .bind(batch)
    .bind(items[items.len() / 2])
    .execute(&mut tx)
    .await?;
    query(
        "UPDATE batches SET state = $1, submission_id = NULL, last_error = $2, options = $3 \
         WHERE id = $4",
    )
    .bind(BatchState::Ready.as_str())
    .bind(&format!("split for its size ({why})"))
    .bind(&batch_options)
    .bind(batch)
    .execute(&mut tx)
    .await?;
    bump_generation(&mut tx).await?;
    tx.commit().await?;
    Ok(Some((label, part)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_of_a_part_counts_under_the_same_root() {
        assert_eq!(root_of("psg-0a"), "psg-0a");
        assert_eq!(root_of("psg-0a-part3"), "psg-0a");
        assert_eq!(root_of("psg-0a-resplit"), "psg-0a-resplit");
        assert_eq!(root_of("psg-0a-resplit-part12"), "psg-0a-resplit");
        assert_eq!(root_of("my-part"), "my-part");
        assert_eq!(root_of("my-partx"), "my-partx");
        assert_eq!(part_label("psg-0a", 2), "psg-0a-part2");
    }

    #[test]
    fn the_sql_estimate_of_an_item_is_the_one_made_before_it_is_stored() {
        assert!(ITEM_BYTES_SQL.contains(&format!("+ {ITEM_OVERHEAD})")));
        let spec = super::super::ItemSpec::new("a", "/src/x", "b", "/dst/xy").checksum("ab", "MD5");
        assert_eq!(spec.document_bytes(), 6 + 7 + 2 + 3 + ITEM_OVERHEAD);
    }

    /// One item as it is posted, with its longest fields, fits the overhead allowed.
    #[test]
    fn an_items_json_beside_its_paths_fits_the_overhead() {
        let item = crate::transfer::types::TransferItem {
            data_type: "transfer_item".into(),
            source_path: String::new(),
            destination_path: String::new(),
            recursive: Some(false),
            external_checksum: Some(String::new()),
            checksum_algorithm: Some(String::new()),
        };
        let json = serde_json::to_string(&item).unwrap();
        assert!(
            json.len() < ITEM_OVERHEAD, // and a comma
            "{} bytes: {json}",
            json.len()
        );
    }
}
