//! What one commit writes: its requests sorted by what they write ([`Group`]), and the
//! statements that write them, with their values in order.

use super::super::loops::WriteReq;
use super::super::rows::BatchKey;
use crate::state::query::{Arg, placeholders};
use crate::transfer::ItemSpec;
use crate::transfer::states::{BatchState, ItemState};

/// The columns of an item's row, in [`Group::item_values`]'s order.
pub(super) const ITEM_COLUMNS: &str = "INSERT INTO items (batch_id, source_path, destination_path, \
     recursive, external_checksum, checksum_algorithm, state, created_at, size) VALUES ";

/// An insert of `rows` items that returns their ids.
pub(super) fn items_insert(rows: usize) -> String {
    let mut sql = String::from(ITEM_COLUMNS);
    for n in 0..rows {
        if n > 0 {
            sql.push(',');
        }
        let first = n * 9 + 1;
        sql.push_str(&format!(
            "((SELECT id FROM batches WHERE label = ${first}), {})",
            placeholders(first + 1, 8)
        ));
    }
    sql.push_str(" RETURNING id");
    sql
}

/// Idempotent: a leader dropped mid-commit may have committed a batch it could not record
/// in `inserted`; the next group inserts it again, harmlessly.
pub(super) const BATCH_INSERT: &str = "INSERT INTO batches (label, identity, source, destination, options, \
     priority, state, owner, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (label) DO NOTHING";
/// PostgreSQL: one item (`$1` its batch's label, `$2..$9` as in [`ITEM_INSERT`]) into
/// another process's batch, if it still takes items (open, fewer than `$10`), holding
/// the batch row with a share lock as [`REJOIN`](super::super::share::REJOIN) does: its id, or no row.
pub(super) const JOIN_ONE: &str = "INSERT INTO items (batch_id, source_path, destination_path, \
     recursive, external_checksum, checksum_algorithm, state, created_at, size) \
     SELECT b.id, $2, $3, $4, $5, $6, $7, $8, $9 FROM batches b WHERE b.label = $1 \
     AND b.state = 'OPEN' AND (SELECT COUNT(*) FROM items i WHERE i.batch_id = b.id) < $10 \
     FOR SHARE OF b RETURNING id";
/// One item, and its id back: [`items_insert`]`(1)` (a test checks), as a constant for
/// the prepared-statement cache.
pub(super) const ITEM_INSERT: &str = "INSERT INTO items (batch_id, source_path, destination_path, \
     recursive, external_checksum, checksum_algorithm, state, created_at, size) VALUES \
     ((SELECT id FROM batches WHERE label = $1), $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
/// `OPEN` → `READY`; a batch of the HTTPS lane keeps its state and is only stamped
/// closed (it settles as its requests end: `lane.rs`).
/// (Parameters first appear in order: SQLite numbers `$N` names as they appear.)
pub(super) const BATCH_CLOSE: &str = "UPDATE batches SET state = CASE WHEN state = $1 THEN $2 ELSE state END, \
     closed_at = $3 WHERE label = $4 AND (state = $1 OR (state = $5 AND closed_at IS NULL))";

/// A group of requests sorted by what they write.
pub(super) struct Group<'a> {
    /// The batches its items were proposed for (in order of first appearance), and
    /// whether they are of the HTTPS lane.
    pub(super) batches: Vec<(&'a String, &'a BatchKey, bool)>,
    pub(super) items: Vec<(&'a String, &'a ItemSpec)>,
    pub(super) closes: Vec<&'a String>,
    /// Joined batches the writer no longer puts into.
    pub(super) forgets: Vec<&'a String>,
}

impl<'a> Group<'a> {
    /// Sorts `requests`.
    pub(super) fn of(requests: &'a [WriteReq]) -> Self {
        let mut group = Group {
            batches: Vec::new(),
            items: Vec::new(),
            closes: Vec::new(),
            forgets: Vec::new(),
        };
        for request in requests {
            match request {
                WriteReq::Item {
                    key, label, spec, ..
                } => {
                    if !group.batches.iter().any(|(l, _, _)| *l == label) {
                        group.batches.push((label, key, spec.https));
                    }
                    group.items.push((label, spec));
                }
                WriteReq::Close { label, .. } => group.closes.push(label),
                WriteReq::Forget { label } => group.forgets.push(label),
            }
        }
        group
    }

    /// The values of [`share::FIND_OPEN`] for a batch of `key`.
    pub(super) fn route_values(
        key: &'a BatchKey,
        (identity, owner): (&'a str, &'a str),
        max_items: usize,
    ) -> [Arg<'a>; 7] {
        [
            Arg::Text(Some(identity)),
            Arg::Text(Some(&key.0)),
            Arg::Text(Some(&key.1)),
            Arg::Text(Some(&key.2)),
            Arg::Int(Some(key.3)),
            Arg::Text(Some(owner)),
            Arg::Int(Some(max_items as i64)),
        ]
    }

    /// The values of one new batch's insert, in [`BATCH_INSERT`]'s order.
    pub(super) fn batch_values(
        (label, key, https): (&'a str, &'a BatchKey, bool),
        (identity, owner): (&'a str, &'a str),
        now: i64,
    ) -> [Arg<'a>; 9] {
        [
            Arg::Text(Some(label)),
            Arg::Text(Some(identity)),
            Arg::Text(Some(&key.0)),
            Arg::Text(Some(&key.1)),
            Arg::Text(Some(&key.2)),
            Arg::Int(Some(key.3)),
            Arg::Text(Some(if https {
                BatchState::Https.as_str()
            } else {
                BatchState::Open.as_str()
            })),
            Arg::Text(Some(owner)),
            Arg::Int(Some(now)),
        ]
    }

    /// The values of one item's row, in [`ITEM_INSERT`]'s order.
    pub(super) fn item_values((label, spec): (&'a str, &'a ItemSpec), now: i64) -> [Arg<'a>; 9] {
        let (checksum, algorithm) = spec
            .external_checksum
            .as_ref()
            .map(|(c, a)| (c.as_str(), a.as_str()))
            .unzip();
        [
            Arg::Text(Some(label)),
            Arg::Text(Some(&spec.source_path)),
            Arg::Text(Some(&spec.destination_path)),
            Arg::Bool(spec.recursive),
            Arg::Text(checksum),
            Arg::Text(algorithm),
            Arg::Text(Some(if spec.https {
                ItemState::Https.as_str()
            } else {
                ItemState::Pending.as_str()
            })),
            Arg::Int(Some(now)),
            Arg::Int(spec.size.map(|s| s as i64)),
        ]
    }

    /// The values of one close, in [`BATCH_CLOSE`]'s order.
    pub(super) fn close_values(label: &'a str, now: i64) -> [Arg<'a>; 5] {
        [
            Arg::Text(Some(BatchState::Open.as_str())),
            Arg::Text(Some(BatchState::Ready.as_str())),
            Arg::Int(Some(now)),
            Arg::Text(Some(label)),
            Arg::Text(Some(BatchState::Https.as_str())),
        ]
    }
}
