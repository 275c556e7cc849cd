//! Globus Transfer: the API's documents, a typed client, and the transfer manager.
//!
//! - [`types`]: every request and response document of Transfer API v0.10 the product and
//!   the emulator use, defined once so both sides of the wire agree.
//! - [`TransferClient`]: typed requests with globus-sdk's retry policy ([`RetryConfig`]).
//! - [`CollectionHttps`]: a collection's files over HTTPS (GET, ranged GET, HEAD, PUT,
//!   DELETE), for small objects that need not wait for a task; `lane` (crate-private)
//!   sends manager items that way, with Transfer behind them for what fails.
//! - [`TransferManager`]: coalesced, exactly-once, crash-resumable transfers tracked in
//!   the [state database](crate::state), polled by one poller per identity.
//! - [`ItemState`], [`BatchState`], [`TaskStatus`]: the states, as enums that keep words
//!   they do not know.
//! - `watch` and `delete` (crate-private): the watcher readers wait on, one `task_list`
//!   per cycle for every awaited label, and the batcher that turns evictions into few
//!   delete tasks. `lookup`: the collection lookup a login is given.

mod answer;
pub mod budget;
mod client;
pub(crate) mod delete;
mod https;
pub(crate) mod lane;
mod lookup;
mod manager;
pub(crate) mod path;
mod retry;
pub(crate) mod states;
pub mod types;
pub mod watch;

pub use client::{DEFAULT_TRANSFER_URL, RequestGate, TaskQuery, TransferClient};
pub use https::CollectionHttps;
pub(crate) use lane::{HttpsCredentials, HttpsLane, LaneBody};

pub use lookup::TransferCollectionLookup;
pub use manager::{
    Activity, BatchOptions, BatchStatus, DEFAULT_MAX_DOCUMENT_BYTES, Enqueued, ItemSpec,
    ItemStatus, ManagerConfig, Priority, RESPLIT_SUFFIX, TransferManager, Trouble, Unsubmitted,
};
pub(crate) use manager::{new_label, resplit_label};
pub(crate) use manager::{owner_alive, this_process};
pub use retry::RetryConfig;
pub use states::{BatchState, ItemState, TaskStatus};
