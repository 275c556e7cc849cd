//! Not part of the API: what the command (`ps-globus-cli`), the emulator
//! (`ps-globus-sim`) and the Python bindings share with the library beyond its public
//! API. There is no semver promise here: anything may change or go in any release.
//! Hidden from the documentation; a program using ps-globus as a library should not
//! need it (if it does, that is an issue to file).

pub use crate::auth::{AUTH_RS, TRANSFER_RS};
pub use crate::config::host_name;
pub use crate::redact::url as redact_url;
pub use crate::runtime::{ForkLocal, deadline_after, fork_generation, handle};
pub use crate::staging::{NO_TIMEOUT, deadline, join_endpoint, labels_and_tasks, sync_level};
pub use crate::transfer::RESPLIT_SUFFIX;
pub use crate::transfer::path::{PathError, collection_path, collection_path_from, normalise_path};
pub use crate::transfer::types::{format_time, parse_time};
pub use crate::transfer::watch::label_filter;
pub use crate::waits::{
    Waiting, begin as begin_wait, report_after, report_through_host, summary_due,
};
