//! # ps-globus
//!
//! Pass-by-reference for distributed scientific workflows. A program puts an object into
//! a [`Store`] and gets back a small, serializable [`Proxy`]; the proxy travels through
//! the workflow system, and turns into the object only where and when it is used.
//!
//! ```
//! use ps_globus::{Proxy, Store, connector::FileConnector};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::new("lib-doc", FileConnector::new(dir.path())?)?;
//!
//! // Producer: store the object, ship the proxy (a few hundred bytes of JSON).
//! let proxy = store.proxy(&vec![0.5f64; 1000])?;
//! let wire = serde_json::to_string(&proxy)?;
//!
//! // Consumer (here the same process; see examples/quickstart.rs for two processes):
//! let proxy: Proxy<Vec<f64>> = serde_json::from_str(&wire)?;
//! assert_eq!(proxy.iter().sum::<f64>(), 500.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`connector`] (where bytes live: memory, a directory, or Globus collections
//! across sites), [`proxy`] (stores, proxies, persistent dataset references),
//! [`transfer`] (the Globus Transfer client and the transfer manager), [`auth`] (login,
//! service identities, token storage), [`stream`] (topics of objects, over
//! Redis or over Globus itself),
//! [`config`] (sites and the client id), [`state`] (the state database), [`settings`]
//! (the environment, read once), `conformance` (the connector test suite, feature
//! `conformance`), and the [`block_on`] bridge that lets synchronous code wait on the
//! library's async I/O. The Globus emulator, its two-site harness and the demo's
//! workload are the `ps-globus-sim` package; the command is `ps-globus-cli`. `docs/ARCHITECTURE.md` maps the layers and the flow of one
//! object.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod connector;
pub mod error;
// The three modules with `unsafe` of their own (the lint denies it everywhere else), each
// block with its SAFETY argument: fsutil (a huge-page hint on a fresh buffer, its length
// after the kernel filled it), process (the fork hook, and `ForkLocal`'s leaked slot) and
// runtime (the exit hook).
#[allow(unsafe_code)]
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod http;
#[allow(unsafe_code)]
mod process;
pub mod proxy;
mod redact;
#[allow(unsafe_code)]
mod runtime;
mod scheduler;
pub mod settings;
mod staging;
pub mod state;
pub mod stream;
pub mod transfer;
mod waits;

pub use error::{BoxError, Error, ErrorKind, Result};
pub use proxy::{
    Codec, FutureSetter, Lease, Lifetime, OwnedProxy, Proxy, ProxyOptions, Store, StoreConfig,
    get_or_create_store, get_store, register_store, unregister_store,
};
pub use runtime::block_on;
pub use settings::Settings;
pub use staging::job;

/// The README's Rust examples, compiled (and run, but for the `no_run` ones, which need
/// real collections or a Redis server, and whose twins run against the emulator) as
/// doctests: `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
/// Not part of the API: what the command (`ps-globus-cli`), the emulator
/// (`ps-globus-sim`) and the Python bindings share with the library beyond its public
/// API. There is no semver promise here: anything may change or go in any release.
/// Hidden from the documentation; a program using ps-globus as a library should not
/// need it (if it does, that is an issue to file).
pub mod internal {
    pub use crate::auth::{AUTH_RS, TRANSFER_RS};
    pub use crate::config::edit::{remove_redis, remove_site, save_redis, save_site};
    pub use crate::config::host_name;
    pub use crate::process::ForkLocal;
    pub use crate::redact::url as redact_url;
    pub use crate::runtime::{block_on_for, deadline_after, fork_generation, handle};
    pub use crate::staging::{NO_TIMEOUT, deadline, join_endpoint, labels_and_tasks, sync_level};

    /// Staging for `ps-globus transfer|stage-in|stage-out` and the Python package's
    /// `ps_globus.staging`: addresses resolved against the sites, a plan, its items
    /// enqueued and awaited.
    pub mod staging {
        pub use crate::staging::{
            BatchLine, Direction, Location, NO_TIMEOUT, PlannedItem, deadline, enqueue,
            enqueue_with_lane, join_endpoint, labels_and_tasks, local_path, parse_batch, plan,
            resolve_address, submit, sync_level, wait_all,
        };
    }
    pub use crate::transfer::RESPLIT_SUFFIX;
    pub use crate::transfer::lane::{HttpsCredentials, HttpsLane};
    pub use crate::transfer::path::{
        PathError, collection_path, collection_path_from, normalise_path,
    };
    pub use crate::transfer::types::{format_time, parse_time};
    pub use crate::transfer::watch::label_filter;
    pub use crate::waits::{
        Waiting, begin as begin_wait, report_after, report_through_host, summary_due,
    };
}
