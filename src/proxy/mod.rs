//! Stores and proxies: typed objects over connectors, and lazy references to them.
//!
//! - [`Store`]: a named [`Connector`](crate::connector::Connector) with a [`Codec`], a
//!   cache of decoded objects and metrics. `put` a value, get a key; or `proxy` a value,
//!   get a [`Proxy`].
//! - [`Proxy<T>`]: a lazy reference that serializes as its factory (store config + key)
//!   and becomes its object on first use, in whatever process it reaches.
//! - [`OwnedProxy<T>`]: a proxy that owns its object and evicts it when dropped;
//!   [`Lifetime`], which evicts a group of objects together at a scope's end; and
//!   [`Lease`], which evicts them when it expires, from whichever process sees it first.
//! - Futures ([`Store::future`]): a [`Proxy<T>`] handed out before its object exists,
//!   and the [`FutureSetter<T>`] that makes it.
//! - The process-wide store registry ([`register_store`], [`get_store`],
//!   [`get_or_create_store`]): how a proxy deserialized in a process that has never seen
//!   its store finds one, built from the config it carries.

mod cache;
mod codec;
mod future;
mod lazy;
mod lease;
mod lifetime;
mod metrics;
mod owned;
mod reference;
mod registry;
mod store;

pub use codec::Codec;
pub use future::FutureSetter;
pub use lazy::{Proxy, ProxyFactory, ProxyOptions};

pub use lease::{Lease, LeaseInfo, LeaseReport, end_lease, list_leases, reap_expired_leases};
pub use lifetime::Lifetime;
pub use metrics::{MetricsSnapshot, OpStats};
pub use owned::OwnedProxy;
pub use reference::{DatasetRef, list_refs, load_ref, remove_ref, save_ref};

pub use registry::{get_or_create_store, get_store, register_store, unregister_store};
pub use store::{IntoConnector, Store, StoreBuilder, StoreConfig};
