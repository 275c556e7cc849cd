//! Every statement on the lease-lifetime tables: a lease's expiry, its objects, and the
//! claim a process takes before it evicts them. The proxy layer (`proxy/lease.rs`) turns
//! rows into evictions; this file is all it knows of storage.
//!
//! Times are the database's clock ([`StateDb::clock_ms`]): every host of a PostgreSQL
//! database agrees on when a lease expired. A process that evicts a lease first *claims*
//! it: `ending = 1` and the expiry pushed `CLAIM_MS` ahead. Only one process wins the
//! claim; one that dies while evicting leaves a claim that expires in turn, and the next
//! process to look takes it over. Evictions are idempotent, so a second go is harmless.

use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::query;

/// How long a process that claimed a lease's eviction has before another may take it.
pub(crate) const CLAIM_MS: i64 = 120_000;

/// A lease whose eviction this process has claimed: its store and its objects (JSON).
#[derive(Debug)]
pub(crate) struct Claimed {
    pub id: String,
    pub store: String,
    /// Where its objects can be evicted from (JSON `Reach`).
    pub reach: String,
    /// Its expiry before the claim (restored by [`release`]).
    pub expires_at: i64,
    pub keys: Vec<String>,
}

/// A lease as listed: its id, store (JSON), expiry, whether a process claimed its
/// eviction, and how many objects it holds.
pub(crate) type Listed = (String, String, i64, i64, i64);

/// Every lease, soonest expiry first.
pub(crate) async fn list(db: &StateDb) -> Result<Vec<Listed>> {
    query(
        "SELECT l.id, l.store, l.expires_at, l.ending, \
         (SELECT COUNT(*) FROM lifetime_objects o WHERE o.lease_id = l.id) \
         FROM lifetime_leases l ORDER BY l.expires_at, l.id",
    )
    .fetch_all_as(db)
    .await
}

/// Records a new lease of `store` (JSON) whose objects are reached from `reach` (JSON)
/// and that expires `ttl_ms` from now; its expiry.
pub(crate) async fn create(
    db: &StateDb,
    id: &str,
    store: &str,
    reach: &str,
    ttl_ms: i64,
) -> Result<i64> {
    let now = db.clock_ms().await?;
    let expires_at = now.saturating_add(ttl_ms);
    query(
        "INSERT INTO lifetime_leases (id, store, expires_at, ending, created_at, reach) \
         VALUES ($1, $2, $3, 0, $4, $5)",
    )
    .bind(id)
    .bind(store)
    .bind(expires_at)
    .bind(now)
    .bind(reach)
    .execute(db)
    .await?;
    Ok(expires_at)
}

/// Adds `key` (JSON) to the lease, if it is still live (not expired, not ending);
/// `false` if it is not, and the key was not added.
///
/// A write transaction, as a claim is: the two never interleave. (As one statement outside
/// the write lock, on PostgreSQL an add could commit between a claim's reading of the
/// lease's objects and its commit: the put returned `Ok` and the object outlived the
/// lease — 48 of 320 in a test of 16 concurrent putters.)
pub(crate) async fn add(db: &StateDb, id: &str, key: &str) -> Result<bool> {
    let mut tx = db.begin_write().await?;
    let now = tx.clock_ms().await?;
    let live = query(
        "SELECT COUNT(*) FROM lifetime_leases WHERE id = $1 AND ending = 0 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_scalars::<i64>(&mut tx)
    .await?
    .first()
    .is_some_and(|n| *n > 0);
    if live {
        query(
            "INSERT INTO lifetime_objects (lease_id, key) VALUES ($1, $2) \
             ON CONFLICT (lease_id, key) DO NOTHING",
        )
        .bind(id)
        .bind(key)
        .execute(&mut tx)
        .await?;
    }
    tx.commit().await?;
    Ok(live)
}

/// Moves a live lease's expiry `by_ms` later; its new expiry, or `None` if the lease has
/// expired, is ending or is gone.
pub(crate) async fn extend(db: &StateDb, id: &str, by_ms: i64) -> Result<Option<i64>> {
    let mut tx = db.begin_write().await?;
    let now = tx.clock_ms().await?;
    let updated = query(
        "UPDATE lifetime_leases SET expires_at = expires_at + $2 \
         WHERE id = $1 AND ending = 0 AND expires_at > $3",
    )
    .bind(id)
    .bind(by_ms)
    .bind(now)
    .execute(&mut tx)
    .await?;
    let expires_at = if updated > 0 {
        query("SELECT expires_at FROM lifetime_leases WHERE id = $1")
            .bind(id)
            .fetch_optional_as::<(i64,)>(&mut tx)
            .await?
            .map(|(at,)| at)
    } else {
        None
    };
    tx.commit().await?;
    Ok(expires_at)
}

/// A live lease's expiry; `None` if it has expired, is ending or is gone.
pub(crate) async fn expiry(db: &StateDb, id: &str) -> Result<Option<i64>> {
    let now = db.clock_ms().await?;
    let row: Option<(i64,)> = query(
        "SELECT expires_at FROM lifetime_leases WHERE id = $1 AND ending = 0 AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional_as(db)
    .await?;
    Ok(row.map(|(at,)| at))
}

/// The store config (JSON) of a live lease; `None` if it has expired, is ending or is gone.
pub(crate) async fn live_store(db: &StateDb, id: &str) -> Result<Option<String>> {
    let now = db.clock_ms().await?;
    let row: Option<(String,)> =
        query("SELECT store FROM lifetime_leases WHERE id = $1 AND ending = 0 AND expires_at > $2")
            .bind(id)
            .bind(now)
            .fetch_optional_as(db)
            .await?;
    Ok(row.map(|(store,)| store))
}

/// When the next lease (live, or a claim that may go stale) is due, if any lease is left.
pub(crate) async fn next_due(db: &StateDb) -> Result<Option<i64>> {
    query("SELECT MIN(expires_at) FROM lifetime_leases")
        .fetch_scalar::<Option<i64>>(db)
        .await
}

/// Claims the eviction of lease `id` now, expired or not (its owner ends it early); `None`
/// if another process holds the claim or the lease is gone.
pub(crate) async fn claim(db: &StateDb, id: &str) -> Result<Option<Claimed>> {
    Ok(
        claim_where(db, "id = $2 AND (ending = 0 OR expires_at <= $1)", Some(id))
            .await?
            .pop(),
    )
}

/// Claims the eviction of every lease that has expired (and every claim gone stale).
pub(crate) async fn claim_expired(db: &StateDb) -> Result<Vec<Claimed>> {
    claim_where(db, "expires_at <= $1", None).await
}

async fn claim_where(db: &StateDb, filter: &str, id: Option<&str>) -> Result<Vec<Claimed>> {
    let mut tx = db.begin_write().await?;
    let now = tx.clock_ms().await?;
    let select = format!(
        "SELECT id, store, reach, expires_at FROM lifetime_leases WHERE {filter} ORDER BY id"
    );
    let mut leases = query(&select).bind(now);
    if let Some(id) = id {
        leases = leases.bind(id);
    }
    let leases: Vec<(String, String, String, i64)> = leases.fetch_all_as(&mut tx).await?;
    let mut claimed = Vec::with_capacity(leases.len());
    for (id, store, reach, expires_at) in leases {
        query("UPDATE lifetime_leases SET ending = 1, expires_at = $2 WHERE id = $1")
            .bind(&id)
            .bind(now.saturating_add(CLAIM_MS))
            .execute(&mut tx)
            .await?;
        let keys = query("SELECT key FROM lifetime_objects WHERE lease_id = $1 ORDER BY key")
            .bind(&id)
            .fetch_scalars::<String>(&mut tx)
            .await?;
        claimed.push(Claimed {
            id,
            store,
            reach,
            expires_at,
            keys,
        });
    }
    tx.commit().await?;
    Ok(claimed)
}

/// Gives a claim back, untouched: the lease's expiry is what it was and it is not ending
/// (a process that cannot reach its objects leaves it to one that can, at once).
pub(crate) async fn release(db: &StateDb, claimed: &Claimed) -> Result<()> {
    query("UPDATE lifetime_leases SET ending = 0, expires_at = $2 WHERE id = $1")
        .bind(&claimed.id)
        .bind(claimed.expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Forgets a lease whose objects are evicted (its objects' rows go with it).
pub(crate) async fn finish(db: &StateDb, id: &str) -> Result<()> {
    query("DELETE FROM lifetime_leases WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease takes keys and extensions while live; once expired, only one of two
    /// claims wins, and nothing is added or extended any more; on both engines.
    #[tokio::test]
    async fn an_expired_lease_is_claimed_once_and_takes_nothing_more() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let expires = create(db, "live", "{}", "{}", 60_000).await.unwrap();
            assert!(add(db, "live", "k1").await.unwrap());
            assert!(
                add(db, "live", "k1").await.unwrap(),
                "a second attach is fine"
            );
            let later = extend(db, "live", 1_000).await.unwrap().unwrap();
            assert_eq!(later, expires + 1_000);
            assert!(claim_expired(db).await.unwrap().is_empty());

            create(db, "gone", "{\"s\":1}", "{}", -1).await.unwrap();
            assert!(!add(db, "gone", "k2").await.unwrap());
            assert_eq!(extend(db, "gone", 60_000).await.unwrap(), None);
            assert_eq!(expiry(db, "gone").await.unwrap(), None);
            let first = claim_expired(db).await.unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!(
                (first[0].id.as_str(), first[0].store.as_str()),
                ("gone", "{\"s\":1}")
            );
            assert!(first[0].keys.is_empty());
            assert!(claim_expired(db).await.unwrap().is_empty(), "claimed once");
            assert!(
                claim(db, "gone").await.unwrap().is_none(),
                "the claim holds"
            );

            let listed = list(db).await.unwrap();
            assert_eq!(listed.len(), 2);
            let live = listed.iter().find(|l| l.0 == "live").unwrap();
            assert_eq!((live.3, live.4), (0, 1), "live, one object");
            let gone = listed.iter().find(|l| l.0 == "gone").unwrap();
            assert_eq!((gone.3, gone.4), (1, 0), "claimed, no object");
            let ended = claim(db, "live").await.unwrap().unwrap();
            assert_eq!(ended.keys, ["k1"]);
            assert!(
                !add(db, "live", "k3").await.unwrap(),
                "an ending lease takes nothing"
            );
            finish(db, "live").await.unwrap();
            finish(db, "gone").await.unwrap();
            assert_eq!(next_due(db).await.unwrap(), None);
        }
    }
}
