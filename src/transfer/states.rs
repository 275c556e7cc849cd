//! The states of a transfer item, a batch and a Globus task, as enums.
//!
//! Each one is stored (state database) or sent (Transfer API) as an upper-case word; the
//! enums serialize to exactly that word. A word this build does not know is kept in
//! `Other`, never refused: a newer release (or a newer Globus) may add states, and an
//! older reader must still show them and carry on.

use std::fmt;

/// Defines a string-backed state enum with an `Other(String)` catch-all.
macro_rules! state_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(from = "String", into = "String")]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A state this build does not know, kept as it was written.
            Other(String),
        }

        impl $name {
            /// The stored or wire form.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(text) => text,
                }
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                match text {
                    $( $text => $name::$variant, )*
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                match $name::from(text.as_str()) {
                    $name::Other(_) => $name::Other(text),
                    known => known,
                }
            }
        }

        impl From<$name> for String {
            fn from(state: $name) -> String {
                match state {
                    $name::Other(text) => text,
                    known => known.as_str().to_owned(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum! {
    /// Where one transfer item stands: `PENDING` until its task ends, then final.
    ItemState {
        /// Not yet final: waiting in a batch or in a running task.
        Pending = "PENDING",
        /// Not yet final: on its way by HTTPS, straight to the destination collection
        /// (the lane for small objects). Never submitted as it is: a 2xx makes it
        /// `SUCCEEDED`; a failed request, or a sender that died, makes it `PENDING` in
        /// its batch, once, and it goes by Transfer.
        Https = "HTTPS",
        /// Copied (and verified, where the batch verifies checksums).
        Succeeded = "SUCCEEDED",
        /// Failed at Globus, or refused at submission.
        Failed = "FAILED",
        /// Cancelled, by a user or before submission.
        Canceled = "CANCELED",
    }
}

impl ItemState {
    /// Whether the item has reached a final state (anything but `PENDING` and `HTTPS`).
    pub fn is_final(&self) -> bool {
        !matches!(self, ItemState::Pending | ItemState::Https)
    }
}

state_enum! {
    /// Where a batch (one future Globus task) stands.
    ///
    /// `OPEN` (taking items) → `READY` (items fixed) → `SUBMITTING` (submission id fixed,
    /// not yet acknowledged) → `SUBMITTED` (task id known) → `DONE`; or `READY` →
    /// `MERGED`, when another batch took its items at submission. A batch of the HTTPS
    /// lane is `HTTPS` instead of `OPEN` and `READY`, until each of its items was
    /// delivered (→ `DONE`) or fell back (→ `READY`, a Transfer task of its own label
    /// carrying only those).
    BatchState {
        /// Taking items.
        Open = "OPEN",
        /// Items fixed, waiting for admission.
        Ready = "READY",
        /// Submission id committed; the POST may or may not have reached Globus.
        Submitting = "SUBMITTING",
        /// At Globus with a known task id.
        Submitted = "SUBMITTED",
        /// Finished; its items are final.
        Done = "DONE",
        /// Its items joined another batch (of the same collections, options and
        /// priority, from any process or host) when that one was submitted, and are
        /// reported with it.
        Merged = "MERGED",
        /// Its items go by HTTPS; it is never submitted in this state.
        Https = "HTTPS",
    }
}

state_enum! {
    /// A Globus task's `status`.
    TaskStatus {
        /// Queued or running.
        Active = "ACTIVE",
        /// Paused by a credential or consent problem until someone acts.
        Inactive = "INACTIVE",
        /// Finished with success.
        Succeeded = "SUCCEEDED",
        /// Finished with failure, cancellation or expiry.
        Failed = "FAILED",
    }
}

impl TaskStatus {
    /// Whether the task has finished (`SUCCEEDED` or `FAILED`).
    pub fn is_final(&self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Failed)
    }
}

/// A task document without a `status` (a partial `task_list?fields=...`) has none: an
/// empty `Other`, which is neither final nor active.
impl Default for TaskStatus {
    fn default() -> Self {
        TaskStatus::Other(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_stored_words() {
        for word in ["PENDING", "HTTPS", "SUCCEEDED", "FAILED", "CANCELED"] {
            assert_eq!(ItemState::from(word).as_str(), word);
            assert!(!matches!(ItemState::from(word), ItemState::Other(_)));
        }
        for word in [
            "OPEN",
            "READY",
            "SUBMITTING",
            "SUBMITTED",
            "DONE",
            "MERGED",
            "HTTPS",
        ] {
            assert_eq!(String::from(BatchState::from(word)), word);
        }
        assert_eq!(
            serde_json::to_string(&TaskStatus::Inactive).unwrap(),
            "\"INACTIVE\""
        );
    }

    #[test]
    fn unknown_words_are_kept_not_refused() {
        let status: TaskStatus = serde_json::from_str("\"PAUSED_BY_ADMIN\"").unwrap();
        assert_eq!(status, TaskStatus::Other("PAUSED_BY_ADMIN".into()));
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            "\"PAUSED_BY_ADMIN\""
        );
        assert!(!status.is_final());
        assert!(ItemState::from("ARCHIVED").is_final());
        assert_eq!(BatchState::from("LATER").to_string(), "LATER");
    }
}
