//! One request budget per state database and identity: a token bucket kept in the
//! database, so that every process sharing it (producers, readers, the poller and the
//! watcher) stays under one rate together. Globus meters about 20 Transfer requests a
//! second per user over 10-second windows and answers 429 above it; many processes that
//! each poll on their own exceed that at five.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::client::{RequestGate, TransferClient};
use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::query;

/// A token bucket of `rate` requests per second (bursts of up to `rate`, at least one)
/// shared through the `request_budget` table.
pub(crate) struct RequestBudget {
    db: StateDb,
    identity: String,
    rate: f64,
}

impl RequestBudget {
    /// The budget of `identity` in `db`; `None` when `rate` is not positive (no limit).
    pub(crate) fn new(db: StateDb, identity: &str, rate: f64) -> Option<Arc<RequestBudget>> {
        (rate > 0.0 && rate.is_finite()).then(|| {
            Arc::new(RequestBudget {
                db,
                identity: identity.to_owned(),
                rate,
            })
        })
    }

    /// `client`, its every request drawing on the budget of `rate` requests per second
    /// that `db` keeps for the client's identity (`client` itself when `rate` is 0).
    pub(crate) fn gate(client: TransferClient, db: &StateDb, rate: f64) -> TransferClient {
        match RequestBudget::new(db.clone(), &client.service_identity(), rate) {
            Some(budget) => client.with_gate(budget),
            None => client,
        }
    }

    /// Takes one token if there is one; otherwise says how long until there is.
    async fn take(&self) -> Result<Option<Duration>> {
        let db = &self.db;
        let burst = self.rate.max(1.0);
        let mut tx = db.begin_write().await?;
        // The database's clock: hosts sharing one PostgreSQL database share its bucket.
        let now = tx.clock_ms().await?;
        let row: Option<(f64, i64)> =
            query("SELECT tokens, updated_at FROM request_budget WHERE identity = $1")
                .bind(&self.identity)
                .fetch_optional_as(&mut tx)
                .await?;
        let tokens = row.map_or(burst, |(tokens, at)| {
            (tokens + (now - at).max(0) as f64 / 1000.0 * self.rate).min(burst)
        });
        if tokens < 1.0 {
            tx.commit().await?;
            return Ok(Some(Duration::from_secs_f64((1.0 - tokens) / self.rate)));
        }
        query(
            "INSERT INTO request_budget (identity, tokens, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT(identity) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
        )
        .bind(&self.identity)
        .bind(tokens - 1.0)
        .bind(now)
        .execute(&mut tx).await?;
        tx.commit().await?;
        Ok(None)
    }
}

#[async_trait]
impl RequestGate for RequestBudget {
    async fn admit(&self) {
        loop {
            match self.take().await {
                Ok(None) => return,
                Ok(Some(wait)) => tokio::time::sleep(wait.max(Duration::from_millis(5))).await,
                Err(e) => {
                    // The budget is a courtesy to the service: a database that cannot
                    // keep it must not stop the request (Globus would answer 429).
                    tracing::warn!("the request budget could not be read, going on: {e}");
                    return;
                }
            }
        }
    }
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("identity", &self.identity)
            .field("rate", &self.rate)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes' budgets on one database draw on one bucket, on either engine (on
    /// PostgreSQL, every host's processes).
    #[tokio::test]
    async fn budgets_on_one_database_share_their_tokens() {
        for engine in crate::state::tests::engines().await {
            let db = engine.db;
            let a = RequestBudget::new(db.clone(), "me@svc", 4.0).unwrap();
            let b = RequestBudget::new(db.clone(), "me@svc", 4.0).unwrap();
            let other = RequestBudget::new(db.clone(), "someone-else@svc", 4.0).unwrap();
            for _ in 0..2 {
                assert_eq!(a.take().await.unwrap(), None);
                assert_eq!(b.take().await.unwrap(), None);
            }
            let wait = a
                .take()
                .await
                .unwrap()
                .expect("four taken: the fifth waits");
            assert!(
                wait > Duration::ZERO && wait <= Duration::from_millis(250),
                "{wait:?}"
            );
            assert_eq!(other.take().await.unwrap(), None, "per identity");
            assert!(
                RequestBudget::new(db, "x", 0.0).is_none(),
                "0 means no limit"
            );
        }
    }
}
