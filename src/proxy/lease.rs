//! `Lease`: a lifetime that ends at a time, not at a scope's end, and can be extended.
//!
//! A lease and its objects are rows in the state database, not state in its owner's
//! memory: when it expires, whichever process of that database sees it first evicts its
//! objects, also after the owner crashed. Every process that has made a lease runs one
//! background reaper per database, which wakes when the next lease of the database is
//! due; [`reap_expired_leases`] does one round by hand (a cron job, a workflow's last
//! step). On PostgreSQL (`state_url`) every host of a facility shares the leases, and
//! expiry is by the database's clock, so hosts' clocks may drift.
//!
//! A reaper *claims* a lease before evicting it, so two processes never both evict it; a
//! reaper that dies mid-way leaves a claim that goes stale after two minutes, and the next
//! one takes it over (evictions are idempotent). Its evictions are the store's own: on a
//! Globus store they share delete tasks, as [`Store::evict`] does. A lease's objects are
//! evicted through a store rebuilt from the lease's store config, so a store that cannot
//! be built in the reaping process (a Redis password variable set only at one site) is
//! left for a process that can.

use crate::error::{LeaseEnded, Untrusted};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::lazy::Proxy;
use super::store::{Store, StoreConfig};
use crate::connector::{Key, Reach, Verdict};
use crate::error::{Error, Result};
use crate::runtime::block_on;
use crate::settings::Settings;
use crate::state::{StateDb, leases};

/// A group of objects of one store evicted when the lease expires (see the module docs).
/// Cheap to clone; dropping it does not end it.
///
/// ```
/// use std::time::Duration;
/// use ps_globus::{Store, connector::FileConnector, state::StateDb};
/// # ps_globus::block_on(async {
/// let dir = tempfile::tempdir().expect("a temporary directory");
/// let db = StateDb::open(dir.path().join("state.db")).await?;
/// let store = Store::new("doc-lease", FileConnector::new(dir.path().join("objects"))?)?;
/// let lease = store.lease_in_async(&db, Duration::from_secs(3600)).await?;
/// let key = lease.put_async(&vec![1u8, 2, 3]).await?;
/// lease.extend_async(Duration::from_secs(600)).await?;
/// lease.end_async().await?; // or let it expire
/// assert!(!store.exists_async(&key).await?);
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct Lease {
    store: Store,
    db: StateDb,
    id: String,
}

impl Store {
    /// A new lease of this store's objects that expires `ttl` from now, kept in the
    /// default state database, which every lease of this process shares (see
    /// [`StateDb::shared_default`]).
    pub fn lease(&self, ttl: Duration) -> Result<Lease> {
        block_on(async {
            let db = StateDb::shared_default(&Settings::from_env()).await?;
            self.lease_in_async(&db, ttl).await
        })
    }

    /// A new lease kept in `db`, which every process that may evict it must share.
    pub async fn lease_in_async(&self, db: &StateDb, ttl: Duration) -> Result<Lease> {
        let id = format!("lease-{}", Key::new_id());
        let store = serde_json::to_string(self.config()).map_err(|e| Error::encode("json", e))?;
        let reach = serde_json::to_string(&self.connector().reach())
            .map_err(|e| Error::encode("json", e))?;
        leases::create(db, &id, &store, &reach, millis(ttl)).await?;
        reaper_for(db).notify_one();
        Ok(Lease {
            store: self.clone(),
            db: db.clone(),
            id,
        })
    }

    /// The live lease `id` of this store, kept in the default state database: one that
    /// another process made (a workflow's later step extends or ends it).
    /// [`LeaseEnded`](crate::error::LeaseEnded) if it has expired, was ended or never
    /// was; [`Error::InvalidInput`] if it holds another store's objects.
    pub fn lease_by_id(&self, id: &str) -> Result<Lease> {
        block_on(async {
            let db = StateDb::shared_default(&Settings::from_env()).await?;
            self.lease_by_id_in_async(&db, id).await
        })
    }

    /// [`lease_by_id`](Self::lease_by_id) in `db`.
    pub async fn lease_by_id_in_async(&self, db: &StateDb, id: &str) -> Result<Lease> {
        let Some(stored) = leases::live_store(db, id).await? else {
            return Err(Error::from(LeaseEnded::new(id.to_owned())));
        };
        let theirs: StoreConfig = serde_json::from_str(&stored)
            .map_err(|e| Error::malformed(format!("lease {id}: its store: {e}")))?;
        if theirs.connector != self.config().connector {
            return Err(Error::invalid_config(
                "lease",
                format!(
                    "lease {id} holds objects of store {:?} over another connector than \
                     store {:?}: open it with that store",
                    theirs.name,
                    self.name()
                ),
            ));
        }
        reaper_for(db).notify_one();
        Ok(Lease {
            store: self.clone(),
            db: db.clone(),
            id: id.to_owned(),
        })
    }
}

impl Lease {
    /// The lease's id (as the state database knows it).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the lease expires; [`LeaseEnded`](crate::error::LeaseEnded) once it has expired or was ended.
    pub async fn expires_at_async(&self) -> Result<DateTime<Utc>> {
        let at = leases::expiry(&self.db, &self.id).await?;
        at.map(time).ok_or_else(|| self.ended())
    }

    /// Moves the expiry `by` later; the new expiry. A lease that has already expired (or
    /// was ended) cannot be revived: [`LeaseEnded`](crate::error::LeaseEnded).
    pub fn extend(&self, by: Duration) -> Result<DateTime<Utc>> {
        block_on(self.extend_async(by))
    }

    /// Async [`extend`](Self::extend).
    pub async fn extend_async(&self, by: Duration) -> Result<DateTime<Utc>> {
        let at = leases::extend(&self.db, &self.id, millis(by)).await?;
        at.map(time).ok_or_else(|| self.ended())
    }

    /// Stores `value` for this lease; a plain proxy of it.
    pub fn proxy<T>(&self, value: &T) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let key = self.put(value)?;
        Ok(self.store.proxy_from_key(key))
    }

    /// Stores `value` for this lease; its key.
    pub fn put<T: Serialize + 'static>(&self, value: &T) -> Result<Key> {
        block_on(self.put_async(value))
    }

    /// Async [`put`](Self::put). If the lease has expired meanwhile, the object is
    /// evicted again (nothing outlives its lease) and the put is [`LeaseEnded`](crate::error::LeaseEnded).
    pub async fn put_async<T: Serialize + 'static>(&self, value: &T) -> Result<Key> {
        // Refuse early: no object is written for a lease that is over.
        self.expires_at_async().await?;
        let key = self.store.put_async(value).await?;
        if let Err(e) = self.attach_async(&key).await {
            let _ = self.store.evict_async(&key).await;
            return Err(e);
        }
        Ok(key)
    }

    /// Makes an object already in the lease's store part of the lease.
    pub fn attach(&self, key: &Key) -> Result<()> {
        block_on(self.attach_async(key))
    }

    /// Async [`attach`](Self::attach).
    pub async fn attach_async(&self, key: &Key) -> Result<()> {
        match leases::add(&self.db, &self.id, &key.to_string()).await? {
            true => Ok(()),
            false => Err(self.ended()),
        }
    }

    /// Ends the lease now: evicts its objects. Ending a lease that already expired (and
    /// whose objects another process is evicting or has evicted) succeeds.
    pub fn end(self) -> Result<()> {
        block_on(self.end_async())
    }

    /// Async [`end`](Self::end). Objects this process cannot reach (another host's
    /// disk, another site) are left for a process that can, and the lease with them:
    /// [`Error::Unsupported`] says where.
    pub async fn end_async(self) -> Result<()> {
        match end_lease(&self.db, &self.id).await? {
            Some(ended) if ended.left > 0 => Err(Error::unsupported(
                "ending a lease whose objects this process cannot reach",
                self.store.connector().kind(),
                format!(
                    "{} object(s) of lease {} left: {}",
                    ended.left,
                    self.id,
                    ended.why.unwrap_or_default()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn ended(&self) -> Error {
        Error::from(LeaseEnded::new(self.id.clone()))
    }
}

/// A lease as the state database knows it (see [`list_leases`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: String,
    /// The name of the store its objects are in.
    pub store: String,
    /// When it expires (or, once `ending`, when its eviction claim goes stale).
    pub expires_at: DateTime<Utc>,
    /// Whether a process has claimed the eviction of its objects.
    pub ending: bool,
    /// How many objects it holds.
    pub objects: u64,
}

impl LeaseInfo {
    /// `ending` (a process evicts its objects), `expired` (due to be reaped: the next
    /// process that sees it, or `ps-globus lease reap`, evicts them) or `live`, at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.ending {
            "ending"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "live"
        }
    }
}

/// Every lease in `db`, soonest expiry first.
pub async fn list_leases(db: &StateDb) -> Result<Vec<LeaseInfo>> {
    let rows = leases::list(db).await?;
    Ok(rows
        .into_iter()
        .map(|(id, store, expires_at, ending, objects)| LeaseInfo {
            id,
            store: serde_json::from_str::<StoreConfig>(&store)
                .map_or_else(|_| "(unreadable)".into(), |s| s.name),
            expires_at: time(expires_at),
            ending: ending != 0,
            objects: u64::try_from(objects).unwrap_or(0),
        })
        .collect())
}

/// What ending one lease did: how many of its objects this process evicted, how many it
/// left (held where it cannot reach, or not its store's to delete), and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LeaseReport {
    /// The lease's id.
    pub id: String,
    /// Objects evicted.
    pub evicted: usize,
    /// Objects left; the lease stays for a process that reaches them.
    pub left: usize,
    /// Why objects were left, or went with the process that held them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Whether the lease is gone from the database (every object evicted or gone).
    pub forgotten: bool,
}

/// Ends lease `id` now, from any process of its database: evicts the objects this
/// process reaches and forgets the lease once none is left. `None` if there was no such
/// lease, or another process is ending it.
pub async fn end_lease(db: &StateDb, id: &str) -> Result<Option<LeaseReport>> {
    match leases::claim(db, id).await? {
        Some(claimed) => evict_claimed(db, claimed).await.map(Some),
        None => Ok(None),
    }
}

/// Evicts the objects of every expired lease in `db` that this process reaches (see the
/// module docs); what it did, per lease. A lease whose objects another process, host or
/// site holds is left to it (claimed, so it is tried again when the claim goes stale).
/// Leases whose evictions failed are left for a later round, and the first such failure
/// is the error.
pub async fn reap_expired_leases(db: &StateDb) -> Result<Vec<LeaseReport>> {
    let claimed = leases::claim_expired(db).await?;
    let results = join_all(claimed.into_iter().map(|c| evict_claimed(db, c))).await;
    results.into_iter().collect()
}

/// Evicts what this process reaches of a claimed lease's objects, then forgets the lease
/// if nothing is left. On a failure the lease stays claimed, and is retried when the
/// claim goes stale.
async fn evict_claimed(db: &StateDb, claimed: leases::Claimed) -> Result<LeaseReport> {
    let unreadable = |what: &str, e: serde_json::Error| {
        Error::state(
            db.path(),
            format!("lease {}: its {what} is unreadable", claimed.id),
            e,
        )
    };
    let config: StoreConfig =
        serde_json::from_str(&claimed.store).map_err(|e| unreadable("store", e))?;
    let reach: Reach = serde_json::from_str(&claimed.reach).map_err(|e| unreadable("reach", e))?;
    let mut ended = LeaseReport {
        id: claimed.id.clone(),
        evicted: 0,
        left: 0,
        why: None,
        forgotten: false,
    };
    let store = super::get_or_create_store(&config)?;
    match reach.verdict(&store.connector().reach()) {
        Verdict::Evict => {}
        Verdict::Gone(why) => {
            ended.why = Some(why);
            leases::finish(db, &claimed.id).await?;
            ended.forgotten = true;
            return Ok(ended);
        }
        Verdict::Leave(why) => {
            leases::release(db, &claimed).await?;
            ended.left = claimed.keys.len();
            ended.why = Some(why);
            return Ok(ended);
        }
    }
    let keys = claimed
        .keys
        .iter()
        .map(|k| k.parse::<Key>())
        .collect::<Result<Vec<_>>>()?;
    let evicted = join_all(keys.iter().map(|key| store.evict_async(key))).await;
    for result in evicted {
        match result {
            Ok(()) => ended.evicted += 1,
            // Not this store's to delete (a hostile row): left, and said so.
            Err(e) if e.is::<Untrusted>() => {
                ended.left += 1;
                ended.why.get_or_insert_with(|| e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    // A Globus store deletes the copies elsewhere in the background: a failure there
    // keeps the lease for a later round, as a failed eviction here does.
    store.connector().close().await?;
    if ended.left == 0 {
        leases::finish(db, &claimed.id).await?;
        ended.forgotten = true;
    }
    Ok(ended)
}

/// The longest a reaper sleeps, so that a lease another process made is not missed for
/// long (this process is told of its own at once).
const REAPER_IDLE: Duration = Duration::from_secs(30);

/// The longest a reaper waits between looks at a database that keeps failing.
const REAPER_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long a reaper waits after `failures` failed looks in a row (none: the last look
/// succeeded, and it waits until the next lease is due); `None` once the database is gone
/// for good (a SQLite file that was removed). An outage of any length, a PostgreSQL
/// server down for minutes, only slows it: it backs off up to five minutes a look and
/// never gives up while its database exists.
fn reaper_backoff(failures: u32, database_gone: bool) -> Option<Duration> {
    if database_gone {
        return None;
    }
    let doubled = Duration::from_secs(1u64 << failures.min(16));
    Some(doubled.min(REAPER_BACKOFF_MAX))
}

/// This process's lease reapers, by database: the handle that wakes each.
fn running_reapers() -> &'static Mutex<HashMap<PathBuf, Arc<Notify>>> {
    /// The slot's own type.
    #[derive(Default)]
    struct Reapers(Mutex<HashMap<PathBuf, Arc<Notify>>>);
    &crate::process::own(Reapers::default).0
}

/// Starts (once per database, per process) the reaper of `db`'s leases; the handle that
/// wakes it when a lease is made.
fn reaper_for(db: &StateDb) -> Arc<Notify> {
    let mut reapers = running_reapers().lock().expect("poisoned");
    if let Some(wake) = reapers.get(db.path()) {
        return Arc::clone(wake);
    }
    let wake = Arc::new(Notify::new());
    reapers.insert(db.path().to_owned(), Arc::clone(&wake));
    let (db, woken) = (db.clone(), Arc::clone(&wake));
    crate::runtime::handle().spawn(async move {
        let mut failures: u32 = 0;
        loop {
            match reap_expired_leases(&db).await {
                Ok(ended) => {
                    for lease in ended.iter().filter(|l| l.left > 0) {
                        tracing::debug!(
                            "lease {}: {} object(s) left: {}",
                            lease.id,
                            lease.left,
                            lease.why.as_deref().unwrap_or_default()
                        );
                    }
                }
                Err(e) => tracing::warn!("evicting the objects of expired leases: {e}"),
            }
            let wait = match (db.clock_ms().await, leases::next_due(&db).await) {
                (Ok(now), Ok(due)) => {
                    failures = 0;
                    due.map_or(REAPER_IDLE, |at| {
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(REAPER_IDLE)
                    })
                }
                _ => {
                    failures = failures.saturating_add(1);
                    // A database removed for good (a test's temporary one) ends the reaper.
                    match reaper_backoff(failures, db.is_removed()) {
                        Some(wait) => wait,
                        None => break,
                    }
                }
            };
            // A lease made meanwhile may be due sooner: it wakes the reaper.
            let _ = tokio::time::timeout(wait, woken.notified()).await;
        }
        running_reapers()
            .lock()
            .expect("poisoned")
            .remove(db.path());
    });
    wake
}

/// The longest a lease is made or extended by at once: a thousand years (a longer
/// `Duration`, up to `Duration::MAX`, counts as this; the expiry column never overflows).
const LONGEST_MS: i64 = 1000 * 365 * 24 * 3600 * 1000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis())
        .unwrap_or(i64::MAX)
        .min(LONGEST_MS)
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a reaper gave up after five failed looks in a row (about five
    /// minutes of a database outage), and leases of that process were never reaped
    /// again. It backs off instead, and stops only for a database that is gone.
    #[test]
    fn a_reaper_outlives_any_outage_of_a_database_that_still_exists() {
        let mut longest = Duration::ZERO;
        for failures in 1..10_000 {
            let wait = reaper_backoff(failures, false).expect("never gives up");
            assert!(
                wait >= longest && wait <= REAPER_BACKOFF_MAX,
                "{failures}: {wait:?}"
            );
            longest = wait;
        }
        assert_eq!(longest, REAPER_BACKOFF_MAX);
        assert_eq!(reaper_backoff(u32::MAX, false), Some(REAPER_BACKOFF_MAX));
        assert_eq!(reaper_backoff(1, true), None);
    }
}
