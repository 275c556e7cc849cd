//! Per-store operation metrics: counts, objects, bytes and time per operation.
//!
//! Counters are relaxed atomics, so recording costs a few nanoseconds and never locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Live counters for one operation.
#[derive(Default)]
pub(crate) struct OpCounter {
    calls: AtomicU64,
    objects: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
}

impl OpCounter {
    /// Records one call over `objects` objects and `bytes` bytes that started at `start`.
    pub(crate) fn record(&self, start: Instant, objects: u64, bytes: u64, ok: bool) {
        self.calls.fetch_add(1, Relaxed);
        self.objects.fetch_add(objects, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Relaxed);
    }

    fn snapshot(&self) -> OpStats {
        OpStats {
            calls: self.calls.load(Relaxed),
            objects: self.objects.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            total_time: Duration::from_nanos(self.nanos.load(Relaxed)),
        }
    }
}

/// All of a store's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) put: OpCounter,
    pub(crate) get: OpCounter,
    pub(crate) exists: OpCounter,
    pub(crate) evict: OpCounter,
    pub(crate) put_batch: OpCounter,
    pub(crate) get_batch: OpCounter,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            put: self.put.snapshot(),
            get: self.get.snapshot(),
            exists: self.exists.snapshot(),
            evict: self.evict.snapshot(),
            put_batch: self.put_batch.snapshot(),
            get_batch: self.get_batch.snapshot(),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
        }
    }
}

/// Totals for one operation since the store was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OpStats {
    /// Calls made.
    pub calls: u64,
    /// Objects the calls covered (a batch call covers many).
    pub objects: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Object bytes moved (as stored, after encoding).
    pub bytes: u64,
    /// Time spent in the calls, encoding and decoding included.
    pub total_time: Duration,
}

impl OpStats {
    /// Mean time per call, or zero when there were none.
    pub fn mean_time(&self) -> Duration {
        self.total_time
            .checked_div(u32::try_from(self.calls).unwrap_or(u32::MAX))
            .unwrap_or_default()
    }
}

/// A copy of a store's metrics at one instant; see [`Store::metrics`](crate::Store::metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// `put`, `put_with` and the puts behind `proxy`.
    pub put: OpStats,
    /// `get` and proxy resolutions, cache hits included.
    pub get: OpStats,
    /// `exists`.
    pub exists: OpStats,
    /// `evict`, including evict-on-resolve.
    pub evict: OpStats,
    /// `put_batch` and `proxy_batch`.
    pub put_batch: OpStats,
    /// `get_batch`.
    pub get_batch: OpStats,
    /// Gets answered from the cache of decoded objects.
    pub cache_hits: u64,
    /// Gets that had to read and decode (counted only while the cache is enabled).
    pub cache_misses: u64,
}
