//! Test helpers shared by the integration tests.

#![allow(dead_code)]
// each test crate uses a different part
// Helpers of test binaries: `pub` for the modules that use them, never an API.
#![allow(unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ps_globus::Result;
use ps_globus::connector::{Connector, ConnectorConfig, Key, LocalConnector, PutOptions};
use tokio::sync::{Notify, Semaphore};

/// A local connector whose reads wait at a gate, so tests can hold a resolve "in flight"
/// and observe what happens meanwhile, synchronised by events rather than sleeps.
#[derive(Debug)]
pub struct GatedConnector {
    inner: LocalConnector,
    gate: Semaphore,
    /// Reads that have started (reached the gate).
    pub gets: AtomicUsize,
    /// Notified every time a read reaches the gate.
    pub get_started: Notify,
}

impl GatedConnector {
    pub fn new() -> Arc<Self> {
        Arc::new(GatedConnector {
            inner: LocalConnector::new(),
            gate: Semaphore::new(0),
            gets: AtomicUsize::new(0),
            get_started: Notify::new(),
        })
    }

    /// Lets `n` reads through the gate.
    pub fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Lets every read through from now on.
    pub fn open_all(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    /// Waits (asynchronously) until at least `n` reads have reached the gate.
    pub async fn wait_for_gets(&self, n: usize) {
        loop {
            let notified = self.get_started.notified();
            if self.gets() >= n {
                return;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl Connector for GatedConnector {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }
    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key> {
        self.inner.put(data, options).await
    }
    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.get_started.notify_waiters();
        self.gate.acquire().await.expect("gate closed").forget();
        self.inner.get(key).await
    }
    async fn exists(&self, key: &Key) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn evict(&self, key: &Key) -> Result<()> {
        self.inner.evict(key).await
    }
}

/// A local connector that records every eviction.
#[derive(Debug, Default)]
pub struct Counting {
    inner: LocalConnector,
    evicted: Mutex<Vec<String>>,
    puts: AtomicUsize,
}

impl Counting {
    /// How many puts were made.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// The ids evicted so far, in order.
    pub fn evicted(&self) -> Vec<String> {
        self.evicted.lock().unwrap().clone()
    }
}

#[async_trait]
impl Connector for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn config(&self) -> ConnectorConfig {
        self.inner.config()
    }
    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(data, options).await
    }
    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }
    async fn exists(&self, key: &Key) -> Result<bool> {
        self.inner.exists(key).await
    }
    async fn evict(&self, key: &Key) -> Result<()> {
        self.evicted.lock().unwrap().push(key.id().to_owned());
        self.inner.evict(key).await
    }
}

/// Runs the ignored test `child` of this test binary as a process of its own, with
/// `var` set to `value`; its output (the caller checks its status).
pub fn run_child_output(
    child: &str,
    var: &str,
    value: impl AsRef<std::ffi::OsStr>,
) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", child, "--nocapture"])
        .env(var, value)
        .output()
        .unwrap()
}

/// [`run_child_output`] of a child that must succeed; its standard output.
pub fn run_child(child: &str, var: &str, value: impl AsRef<std::ffi::OsStr>) -> String {
    let out = run_child_output(child, var, value);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{child}: {stdout}{stderr}");
    stdout
}

/// A store name no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", Key::new_id())
}

/// The payload of a panic, as text.
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}
pub mod emulator;
pub mod endpoints;
pub mod managers;
pub mod pg_cluster;
pub mod readme;
pub mod redis_server;
pub mod sites;
pub mod slurm_cluster;

/// The state database of a test's own directory `dir`.
pub async fn lease_db(dir: &tempfile::TempDir) -> ps_globus::state::StateDb {
    ps_globus::state::StateDb::open(dir.path().join("state.db"))
        .await
        .unwrap()
}

/// Waits (up to 20 s) until `done` holds; for waits on an expiry, which is the behaviour
/// under test, not a stand-in for an event.
pub async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done().await {
        assert!(
            std::time::Instant::now() < limit,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The repository's root directory (the workspace's: every package's tests read its
/// README, fuzz corpora and scripts from there).
pub fn repo_root() -> &'static std::path::Path {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest)
}

/// Runs `command` to its end, fails the test with its output unless it succeeded, and
/// returns its standard output.
pub fn succeeded(command: &mut std::process::Command) -> String {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
