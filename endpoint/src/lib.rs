//! ps-globus endpoints: a long-running object store at each site that serves ProxyStore's
//! endpoint REST API (so ProxyStore's own `EndpointConnector` works against it, and so
//! does ours), and fetches objects from the endpoints of other sites.
//!
//! | module | job |
//! | --- | --- |
//! | [`storage`] | objects in SQLite, the hot ones in memory up to a byte budget, checked by size and SHA-256 |
//! | [`rest`] | ProxyStore's REST API, for the endpoint's owner only |
//! | [`owner`] | who is calling: the uid behind a loopback TCP or Unix-socket connection |
//! | [`peer`] | requests to other endpoints over pinned, mutually authenticated TLS: direct, or through the relay |
//! | [`relay`] | the relay (`ps-globus relay serve`) and an endpoint's connection to it |
//! | [`serve`] | one endpoint running |
//! | [`manage`] | configure, list, stop, remove |
//!
//! Trust follows the library's rule: a key names an endpoint by id; where that endpoint
//! is, and its certificate, come from the relay this endpoint's own configuration names,
//! which vouches only for endpoints of the same Globus identity.

pub mod manage;
pub mod owner;
pub mod peer;
pub mod relay;
pub mod rest;
pub mod serve;
pub mod storage;

/// Whether `host` is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
