//! The writer's group commit, in one round trip to the database.
//!
//! A put waits for its item to be committed (that is the durability promise: a
//! `kill -9` right after `put` returns loses nothing). Every statement sent to SQLite
//! through sqlx is a round trip to the connection's own thread, and on this kind of
//! machine each costs tens of microseconds in wake-ups alone: `BEGIN`, one `INSERT` per
//! item and `COMMIT` made a sequential put spend most of its time waiting. Here the
//! whole group — new batches, items (many to a statement), closes — is one script of
//! statements sent at once: `BEGIN IMMEDIATE; …; COMMIT`.

use std::collections::HashSet;

use sqlx::{Row, SqliteConnection};

use super::loops::WriteReq;
use super::sql::now_ms;
use crate::error::Result;
use crate::state::StateDb;
use crate::transfer::states::{BatchState, ItemState};

/// Items per `INSERT` statement: 10 parameters each, well under SQLite's 32766.
const ITEMS_PER_INSERT: usize = 500;

/// Groups larger than this are not kept as prepared statements (each size of group is
/// its own script; a few small shapes repeat, large ones rarely do).
const CACHED_UP_TO: usize = 16;

/// Commits a group of enqueues and closes on `conn` in one transaction and one round
/// trip; returns the new item ids in the order of the group's items. `inserted` holds
/// the labels of batches already in the database (inserted by an earlier group of this
/// writer and not closed since). Batches belong to `identity`, made by `owner`.
pub(super) async fn commit_writes(
    conn: &mut SqliteConnection,
    (db, identity, owner): (&StateDb, &str, &str),
    requests: &[WriteReq],
    inserted: &mut HashSet<String>,
) -> Result<Vec<i64>> {
    let now = now_ms();
    let mut script = String::from("BEGIN IMMEDIATE;");
    let mut new_batches = Vec::new();
    let mut items = Vec::new();
    let mut closes = Vec::new();
    for request in requests {
        match request {
            WriteReq::Item {
                key, label, spec, ..
            } => {
                if !inserted.contains(label) && !new_batches.iter().any(|(l, _)| *l == label) {
                    new_batches.push((label, key));
                }
                items.push((label, spec));
            }
            WriteReq::Close { label, .. } => closes.push(label),
        }
    }
    for _ in &new_batches {
        script.push_str(
            "INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);",
        );
    }
    for chunk in items.chunks(ITEMS_PER_INSERT) {
        script.push_str(
            "INSERT INTO items (batch_id, source_path, destination_path, recursive, external_checksum, \
             checksum_algorithm, state, created_at, size) VALUES ",
        );
        for n in 0..chunk.len() {
            if n > 0 {
                script.push(',');
            }
            script.push_str("((SELECT id FROM batches WHERE label = ?), ?, ?, ?, ?, ?, ?, ?, ?)");
        }
        script.push_str(" RETURNING id;");
    }
    for _ in &closes {
        script.push_str(
            "UPDATE batches SET state = 'READY', closed_at = ? WHERE label = ? AND state = 'OPEN';",
        );
    }
    script.push_str("COMMIT;");

    // Only fixed text and `?` placeholders: every value is a bound parameter.
    let mut query =
        sqlx::query(sqlx::AssertSqlSafe(script)).persistent(requests.len() <= CACHED_UP_TO);
    for (label, key) in &new_batches {
        query = query
            .bind(*label)
            .bind(identity)
            .bind(&key.0)
            .bind(&key.1)
            .bind(&key.2)
            .bind(key.3)
            .bind(BatchState::Open.as_str())
            .bind(owner)
            .bind(now);
    }
    for (label, spec) in &items {
        let (checksum, algorithm) = spec.external_checksum.clone().unzip();
        query = query
            .bind(*label)
            .bind(&spec.source_path)
            .bind(&spec.destination_path)
            .bind(spec.recursive)
            .bind(checksum)
            .bind(algorithm)
            .bind(ItemState::Pending.as_str())
            .bind(now)
            .bind(spec.size.map(|s| s as i64));
    }
    for label in &closes {
        query = query.bind(now).bind(*label);
    }

    let rows = match query.fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) => {
            // A statement failed inside the script: its transaction is still open on
            // this connection. End it here, or the next user of the connection would
            // find itself inside it.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(db.error(e));
        }
    };
    // Rowids are handed out in increasing order within the transaction, which holds
    // the write lock: sorted, they are in the order of the VALUES rows.
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    ids.sort_unstable();
    for (label, _) in new_batches {
        inserted.insert(label.clone());
    }
    for label in closes {
        inserted.remove(label.as_str());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::ItemSpec;
    use tokio::sync::oneshot;

    fn item(label: &str, n: usize) -> WriteReq {
        WriteReq::Item {
            key: ("src".into(), "dst".into(), "{}".into(), 1),
            label: label.into(),
            spec: Box::new(ItemSpec::new(
                "src",
                format!("/in/{n}"),
                "dst",
                format!("/out/{n}"),
            )),
            ack: oneshot::channel().0,
        }
    }

    async fn connection(db: &StateDb) -> SqliteConnection {
        db.pool().acquire().await.unwrap().detach()
    }

    /// Ids come back in the order of the group's items, also across statements.
    #[tokio::test]
    async fn ids_follow_the_items_order_across_insert_statements() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
        let mut conn = connection(&db).await;
        let mut inserted = HashSet::new();
        let count = ITEMS_PER_INSERT * 2 + 7;
        let group: Vec<WriteReq> = (0..count).map(|n| item("psg-a", n)).collect();
        let ids = commit_writes(&mut conn, (&db, "me", "host:1:1"), &group, &mut inserted)
            .await
            .unwrap();
        assert_eq!(ids.len(), count);
        for (n, id) in ids.iter().enumerate() {
            let path: String = sqlx::query_scalar("SELECT source_path FROM items WHERE id = ?")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(path, format!("/in/{n}"));
        }
        assert!(inserted.contains("psg-a"));
    }

    /// A statement that fails inside the script leaves no transaction open on the
    /// connection: the next group commits on it, and the failed one left nothing.
    #[tokio::test]
    async fn a_failed_group_is_rolled_back_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
        let mut conn = connection(&db).await;
        // The writer believes a batch exists that does not: its item cannot be inserted.
        let mut inserted: HashSet<String> = ["psg-gone".to_string()].into();
        let to = (&db, "me", "host:1:1");
        let group = [item("psg-new", 0), item("psg-gone", 1)];
        assert!(
            commit_writes(&mut conn, to, &group, &mut inserted)
                .await
                .is_err()
        );
        let (batches, items): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items)")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!((batches, items), (0, 0), "all or nothing");
        assert!(!inserted.contains("psg-new"));
        let ids = commit_writes(&mut conn, to, &[item("psg-new", 2)], &mut inserted)
            .await
            .expect("the connection is not left inside the failed transaction");
        assert_eq!(ids.len(), 1);
    }
}
