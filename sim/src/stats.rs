//! What the emulator has served: `GET /__sim/stats` and [`Simulator::stats`](super::Simulator::stats).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A snapshot of the emulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Every Transfer and Auth request (429 and 503 answers included; `/__sim/*` not).
    pub api_requests: u64,
    /// Requests by identity id (`anonymous` without a valid token).
    pub by_identity: BTreeMap<String, u64>,
    /// Requests by `METHOD /route/template`.
    pub by_route: BTreeMap<String, u64>,
    /// Requests by HTTP status (HTTPS requests included).
    pub by_status: BTreeMap<u16, u64>,
    /// Tasks submitted, by type (`TRANSFER`, `DELETE`).
    pub tasks_submitted: BTreeMap<String, u64>,
    /// Tasks finished, by type then final status.
    pub tasks_finished: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bytes written by transfer tasks.
    pub bytes_copied: u64,
    /// Bytes read to compute checksums (source and destination), by algorithm (`MD5`,
    /// `SHA256`, ...).
    #[serde(default)]
    pub bytes_checksummed: BTreeMap<String, u64>,
    /// 429 answers sent.
    pub responses_429: u64,
    /// 503 answers sent.
    pub responses_503: u64,
    /// Requests to the collections' HTTPS origins (not in `api_requests`: the data plane
    /// is no Transfer or Auth request). Also in `by_route` as `HTTPS METHOD`.
    #[serde(default)]
    pub https_requests: u64,
}

impl SimStats {
    /// Tasks submitted of every type.
    pub fn tasks(&self) -> u64 {
        self.tasks_submitted.values().sum()
    }

    /// Requests made to one route (`"GET /v0.10/task_list"`).
    pub fn route(&self, route: &str) -> u64 {
        self.by_route.get(route).copied().unwrap_or(0)
    }

    /// Requests made to the Transfer API (every `/v0.10/` route; not Auth, not HTTPS).
    pub fn transfer_requests(&self) -> u64 {
        self.by_route
            .iter()
            .filter(|(route, _)| route.contains(" /v0.10/"))
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Default)]
pub(crate) struct Stats(Mutex<SimStats>);

impl Stats {
    fn with(&self, f: impl FnOnce(&mut SimStats)) {
        f(&mut self.0.lock().expect("stats poisoned"));
    }

    pub(crate) fn request(&self, identity: &str, route: &str, status: u16) {
        self.with(|s| {
            s.api_requests += 1;
            *s.by_identity.entry(identity.to_owned()).or_default() += 1;
            *s.by_route.entry(route.to_owned()).or_default() += 1;
            *s.by_status.entry(status).or_default() += 1;
            match status {
                429 => s.responses_429 += 1,
                503 => s.responses_503 += 1,
                _ => {}
            }
        });
    }

    /// One request to a collection's HTTPS origin, answered with `status`.
    pub(crate) fn https_request(&self, route: &str, status: u16) {
        self.with(|s| {
            s.https_requests += 1;
            *s.by_route.entry(route.to_owned()).or_default() += 1;
            *s.by_status.entry(status).or_default() += 1;
        });
    }

    pub(crate) fn task_submitted(&self, kind: &str) {
        self.with(|s| *s.tasks_submitted.entry(kind.to_owned()).or_default() += 1);
    }

    pub(crate) fn task_finished(&self, kind: &str, status: &str) {
        self.with(|s| {
            *s.tasks_finished
                .entry(kind.to_owned())
                .or_default()
                .entry(status.to_owned())
                .or_default() += 1
        });
    }

    pub(crate) fn checksummed(&self, algorithm: &str, n: u64) {
        self.with(|s| *s.bytes_checksummed.entry(algorithm.to_owned()).or_default() += n);
    }

    pub(crate) fn bytes_copied(&self, n: u64) {
        self.with(|s| s.bytes_copied += n);
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        self.0.lock().expect("stats poisoned").clone()
    }
}
