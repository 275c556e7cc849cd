//! What the background loops cannot do right now: the error of the last attempt to
//! submit or to poll, kept until an attempt succeeds.
//!
//! The loops retry forever (a workflow outlives a Globus outage or an expired login),
//! so the error alone never reaches a caller. A short-lived command wants it at once:
//! [`TransferManager::troubled`](super::TransferManager::troubled) waits for it, and a
//! wait that times out names it.

use std::sync::Arc;

use crate::error::{ConsentRequired, Error, ErrorKind, Remedy};

/// What a background loop was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Submitting a batch (`GET /submission_id`, `POST /transfer`).
    Submitting,
    /// Polling the tasks in flight.
    Polling,
}

impl Activity {
    /// The activity in a sentence: `submitting transfers`, `polling Globus`.
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::Submitting => "submitting transfers",
            Activity::Polling => "polling Globus",
        }
    }
}

/// A background failure not (yet) followed by a success.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Trouble {
    /// What failed.
    pub activity: Activity,
    /// The last attempt's error, after the Transfer client's own retries.
    pub error: Arc<Error>,
    /// Attempts that failed in a row.
    pub failures: u32,
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Each failure already counts the Transfer client's own retries (the error says
        // how many): these are the manager's rounds, each of which retried.
        match self.failures {
            1 => write!(f, "{} failed: {}", self.activity.as_str(), self.error),
            n => write!(
                f,
                "{} failed {n} times in a row: {}",
                self.activity.as_str(),
                self.error
            ),
        }
    }
}

impl Trouble {
    /// The error a wait ends with when this trouble needs a person (a login or consent
    /// the manager cannot renew): `None` for trouble that may pass by itself.
    pub fn needs_login(&self) -> Option<Error> {
        if let Some(consent) = self.error.downcast_ref::<ConsentRequired>() {
            return Some(consent.clone().into());
        }
        let remedy = self
            .error
            .remedy()
            .filter(|r| matches!(r, Remedy::Login { .. } | Remedy::LoginAgain))?;
        let message = format!("{}: {}", self.activity.as_str(), self.error);
        Some(Error::new(ErrorKind::PermissionDenied, message).with_remedy(remedy.clone()))
    }
}

/// The manager's current trouble, shared by its loops and its callers.
pub(super) struct TroubleCell(tokio::sync::watch::Sender<Option<Trouble>>);

impl TroubleCell {
    pub(super) fn new() -> Self {
        TroubleCell(tokio::sync::watch::channel(None).0)
    }

    /// Records a failed attempt at `activity`.
    pub(super) fn failed(&self, activity: Activity, error: Error) {
        self.0.send_modify(|now| {
            let failures = match now {
                Some(t) if t.activity == activity => t.failures + 1,
                _ => 1,
            };
            *now = Some(Trouble {
                activity,
                error: Arc::new(error),
                failures,
            });
        });
    }

    /// Records a successful attempt at `activity`: its trouble, if any, is over.
    pub(super) fn succeeded(&self, activity: Activity) {
        self.0.send_if_modified(|now| {
            let over = now.as_ref().is_some_and(|t| t.activity == activity);
            if over {
                *now = None;
            }
            over
        });
    }

    /// The current trouble.
    pub(super) fn current(&self) -> Option<Trouble> {
        self.0.borrow().clone()
    }

    /// Waits until there is trouble, and returns it.
    pub(super) async fn next(&self) -> Trouble {
        let mut watching = self.0.subscribe();
        // The guard is dropped here, before any other await.
        let seen = watching
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|now| now.clone());
        match seen {
            Some(trouble) => trouble,
            // The sender lives as long as `self`: never closed while we wait on it.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Error {
        Error::unauthorized("Token is not valid.")
    }

    #[tokio::test]
    async fn failures_count_in_a_row_and_a_success_of_the_same_activity_ends_them() {
        let cell = TroubleCell::new();
        assert!(cell.current().is_none());
        cell.failed(Activity::Submitting, refused());
        // One failed round (itself after the client's retries) is not "1 time(s) in a row".
        let once = cell.current().expect("in trouble").to_string();
        assert!(once.starts_with("submitting transfers failed: "), "{once}");
        cell.failed(Activity::Submitting, refused());
        assert_eq!(cell.next().await.failures, 2);
        // Polling going well says nothing about submitting.
        cell.succeeded(Activity::Polling);
        let now = cell.current().expect("still in trouble");
        assert_eq!(now.activity, Activity::Submitting);
        assert!(
            now.to_string()
                .contains("submitting transfers failed 2 times in a row")
        );
        cell.succeeded(Activity::Submitting);
        assert!(cell.current().is_none());
        // Another activity's failure starts its own count.
        cell.failed(Activity::Polling, refused());
        assert_eq!(cell.current().unwrap().failures, 1);
    }
}
