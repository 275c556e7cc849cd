//! The emulator's settings: the same struct backs `ps-globus sim serve` flags and
//! `--config sim.toml` (where secrets can live, out of `ps`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Globus's documented Transfer request rate per user (requests per second).
pub const DEFAULT_RATE_LIMIT: u32 = 20;

/// How an emulator behaves. `Default` gives a fast emulator with no collections that is
/// as strict as the real service (SPEC §3.11): identical-path conflicts, the 50-id
/// filter limit, the rate limit, lingering `nice_status`, documented label filters and
/// a random copy order are all on; [`SimConfig::lenient`] turns them off.
///
/// ```
/// let config: ps_globus_sim::SimConfig = toml::from_str(r#"
///     task_latency_ms = 250
///     bandwidth = "500MB/s"
///     static_token = "secret-token"
///     [collections.a]
///     root = "/tmp/a"
///     [[faults]]
///     kind = "file_not_found"
///     path = "/broken/*"
/// "#).unwrap();
/// assert_eq!(config.bandwidth_bytes_per_s().unwrap(), Some(500_000_000));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Where to listen (default `127.0.0.1:0`: loopback, any free port).
    pub listen: SocketAddr,
    /// Collections by name.
    pub collections: BTreeMap<String, CollectionConfig>,
    /// A bearer token valid for every scope, for one fixed identity.
    pub static_token: Option<String>,
    /// Confidential clients for the `client_credentials` grant: id → secret.
    pub clients: BTreeMap<String, String>,
    /// Native-app client ids; when empty, any well-formed UUID is accepted.
    pub native_clients: Vec<String>,
    /// Per-task overhead, spent after a task takes a running slot (milliseconds).
    pub task_latency_ms: u64,
    /// Copy rate per running task, e.g. `"500MB/s"`, `"1GiB/s"`; absent: unlimited.
    pub bandwidth: Option<String>,
    /// Copy rate shared by every running task, e.g. `"1GB/s"`: the sites' data nodes and
    /// network, which tasks between them share (at Globus, more tasks at once do not
    /// make a link faster); absent: unlimited. With `bandwidth` too, a task gets the
    /// lower of its own rate and its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bandwidth: Option<String>,
    /// Transfer requests per second per identity, metered over 10-second windows, as
    /// Globus documents (~20); over it, 429 with `Retry-After`. Absent or 0: unlimited.
    pub rate_limit: Option<u32>,
    /// Probability that a Transfer request answers 503 (seeded; 0 disables).
    pub fail_rate: f64,
    /// Seed for every injected fault.
    pub seed: u64,
    /// Access-token lifetime in seconds (Globus: 172800).
    pub token_lifetime_s: u64,
    /// Queued + running tasks allowed per identity.
    pub pending_cap: usize,
    /// How often a task retries a failing path (milliseconds).
    pub fault_retry_ms: u64,
    /// Checksum mismatches tolerated per file before the task fails.
    pub checksum_retries: u32,
    /// Injected faults.
    pub faults: Vec<FaultConfig>,
    /// Where tasks are kept across restarts (`sim serve --state FILE`); absent: in
    /// memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// Refuse (409 `Conflict`) a transfer whose destination path equals, or lies under or
    /// above a recursive destination of, an unfinished transfer of the same identity, as
    /// Globus does. Default on.
    pub identical_path_conflicts: bool,
    /// The most task ids a `task_id:` filter may hold (Globus: 50); more is 400.
    pub max_filter_task_ids: usize,
    /// The largest request body accepted; a larger one is 413 before it is read (as a
    /// real service's front end answers). Globus documents no number: see SPEC §3.11.
    pub max_body_bytes: usize,
    /// Accept an undocumented bare `label:x` filter (as `label:=x`). Default off: only
    /// `label:=`, `label:~`, `label:!` and `label:!~` are understood.
    pub bare_label_filters: bool,
    /// How long (seconds) a fault stays in `nice_status` after the task recovered from
    /// it ("an error within the past 15 minutes"). 0: cleared at once.
    pub nice_status_linger_s: u64,
    /// Copy a task's files in request order. Default off: a seeded random order, since
    /// Globus promises none.
    pub ordered_copies: bool,
    /// How long each HTTPS request waits before it is served (a wide-area round trip).
    pub https_latency_ms: u64,
}

/// The emulator's request-body limit by default: 1 MiB, the client's own cap for a
/// transfer document ([`ps_globus::transfer::DEFAULT_MAX_DOCUMENT_BYTES`]).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            collections: BTreeMap::new(),
            static_token: None,
            clients: BTreeMap::new(),
            native_clients: Vec::new(),
            task_latency_ms: 0,
            bandwidth: None,
            link_bandwidth: None,
            rate_limit: Some(DEFAULT_RATE_LIMIT),
            fail_rate: 0.0,
            seed: 0,
            token_lifetime_s: 172_800,
            pending_cap: 100,
            fault_retry_ms: 1000,
            checksum_retries: 3,
            faults: Vec::new(),
            state_file: None,
            identical_path_conflicts: true,
            max_filter_task_ids: 50,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bare_label_filters: false,
            nice_status_linger_s: 900,
            ordered_copies: false,
            https_latency_ms: 0,
        }
    }
}

/// One collection: a local directory served as a Globus collection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectionConfig {
    /// The directory that is the collection's `/` (and `/~/`).
    pub root: PathBuf,
    /// Present it as a GCSv5 mapped collection that needs a `data_access` consent.
    pub requires_data_access: bool,
    /// Present it as high-assurance (then no consent is needed).
    pub high_assurance: bool,
    /// Where `~` leads (the endpoint document's `default_directory`); absent: `/`.
    pub default_directory: Option<String>,
    /// The checksum algorithms its storage can compute (`MD5`, `SHA1`, `SHA256`,
    /// `SHA512`, `ADLER32`); absent: all of them. A transfer asking for another one
    /// retries with `UNSUPPORTED_CHECKSUM_ALGORITHM` until its deadline, as a real
    /// collection that cannot verify it does.
    pub checksum_algorithms: Option<Vec<String>>,
    /// The identities that may use it (its access rules): usernames
    /// (`user@sim.ps-globus.local`, `CLIENT_ID@clients.auth.globus.org`), identity ids or
    /// client ids. Absent: every identity the emulator authenticates.
    pub allow: Option<Vec<String>>,
    /// No HTTPS for it (`enable_https = false`): its endpoint document says
    /// `https_server: null`, and it has no HTTPS origin.
    pub disable_https: bool,
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// What goes wrong.
    pub kind: FaultKind,
    /// For task faults: a glob matched against an item's source path (`/dir/*.dat`).
    #[serde(default)]
    pub path: Option<String>,
    /// For HTTP faults: `"METHOD /route/template"`, e.g. `"GET /v0.10/task_list"`, or
    /// `"HTTPS METHOD"` for a collection's HTTPS requests (`"HTTPS PUT"`); absent: every
    /// Transfer route (never HTTPS).
    #[serde(default)]
    pub route: Option<String>,
    /// Probability per request (HTTP faults), seeded. Default 1.
    #[serde(default = "one")]
    pub probability: f64,
    /// HTTP faults hit only requests numbered `after ..` on their route per identity.
    #[serde(default)]
    pub after: u64,
    /// ... and at most this many of them (absent: no end). For task faults: this many
    /// failed attempts at each matching path, after which the path heals ("fails 3 times
    /// then succeeds"); absent: the fault never heals.
    #[serde(default)]
    pub count: Option<u64>,
    /// The `Retry-After` seconds of 429 and 503 answers.
    #[serde(default = "one_u64")]
    pub retry_after: u64,
}

fn one() -> f64 {
    1.0
}

fn one_u64() -> u64 {
    1
}

/// The kinds of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The source path is missing: retried inside the task (ACTIVE, nice_status
    /// `FILE_NOT_FOUND`) until the deadline, or skipped with `skip_source_errors`.
    FileNotFound,
    /// The source path is unreadable: like `FileNotFound` with `PERMISSION_DENIED`.
    PermissionDenied,
    /// The destination is over quota: retried, or fatal with `fail_on_quota_errors`.
    QuotaExceeded,
    /// The copy's checksum never matches: `CHECKSUM_MISMATCH` events, then failure.
    ChecksumMismatch,
    /// The task goes INACTIVE (expired credentials or consent) until its deadline.
    Inactive,
    /// The destination cannot be reached: retried (`CONNECT_FAILED`), never skipped.
    ConnectFailed,
    /// The storage answers an error: retried (`ENDPOINT_ERROR`), never skipped.
    EndpointError,
    /// HTTP 429 with `Retry-After`.
    #[serde(rename = "http_429")]
    Http429,
    /// HTTP 503 `ServiceUnavailable` with `Retry-After`.
    #[serde(rename = "http_503")]
    Http503,
    /// HTTP 502 `ExternalError` (never retried by the SDK).
    #[serde(rename = "http_502")]
    Http502,
    /// The connection is cut in the middle of the response body.
    ConnectionReset,
    /// HTTPS only: the 404 a failing GCS backend answers (`GlobusError: v=1
    /// c=ENDPOINT_ERROR`), and every later request on the same connection too (the
    /// fault is sticky per connection: a client retries on a fresh one).
    HttpsEndpointError,
}

impl FaultKind {
    /// Whether the fault acts on requests (rather than inside tasks).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            FaultKind::Http429
                | FaultKind::Http503
                | FaultKind::Http502
                | FaultKind::ConnectionReset
                | FaultKind::HttpsEndpointError
        )
    }
}

impl SimConfig {
    /// The task latency as a duration.
    pub fn task_latency(&self) -> Duration {
        Duration::from_millis(self.task_latency_ms)
    }

    /// The bandwidth in bytes per second, if limited.
    pub fn bandwidth_bytes_per_s(&self) -> Result<Option<u64>, String> {
        self.bandwidth.as_deref().map(parse_rate).transpose()
    }

    /// The link bandwidth in bytes per second, if limited.
    pub fn link_bandwidth_bytes_per_s(&self) -> Result<Option<u64>, String> {
        self.link_bandwidth.as_deref().map(parse_rate).transpose()
    }

    /// This configuration with every real-service rule relaxed: no rate limit, no
    /// identical-path conflicts, bare label filters accepted, `nice_status` cleared at
    /// once, files copied in request order. For tests that need one of them off.
    pub fn lenient(self) -> Self {
        SimConfig {
            rate_limit: None,
            identical_path_conflicts: false,
            max_filter_task_ids: usize::MAX,
            bare_label_filters: true,
            nice_status_linger_s: 0,
            ordered_copies: true,
            ..self
        }
    }

    /// The rate limit in force, if any (0 means none).
    pub fn effective_rate_limit(&self) -> Option<u32> {
        self.rate_limit.filter(|r| *r > 0)
    }

    /// Checks the settings, saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        self.bandwidth_bytes_per_s()?;
        self.link_bandwidth_bytes_per_s()?;
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(format!(
                "fail_rate {} is not between 0 and 1",
                self.fail_rate
            ));
        }
        for (name, collection) in &self.collections {
            if name.is_empty() || name.contains(['/', ':', ' ']) {
                return Err(format!(
                    "collection name {name:?} must be non-empty, without / : or spaces"
                ));
            }
            if let Some(dir) = &collection.default_directory {
                ps_globus::internal::collection_path(dir)
                    .map_err(|e| format!("collection {name}: default_directory: {e}"))?;
            }
            for algorithm in collection.checksum_algorithms.iter().flatten() {
                if super::checksum::Algorithm::parse(algorithm).is_none() {
                    return Err(format!(
                        "collection {name}: unknown checksum algorithm {algorithm:?} \
                         (MD5, SHA1, SHA256, SHA512, ADLER32)"
                    ));
                }
            }
            if !collection.root.is_dir() {
                return Err(format!(
                    "collection {name}: root {} is not a directory (create it first)",
                    collection.root.display()
                ));
            }
        }
        for fault in &self.faults {
            if fault.kind.is_http() == fault.path.is_some() {
                return Err(format!(
                    "fault {:?}: task faults need `path`, HTTP faults must not have one",
                    fault.kind
                ));
            }
            if let Some(path) = &fault.path {
                glob::Pattern::new(path).map_err(|e| format!("fault path {path:?}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Parses `500MB/s`, `1GiB/s`, `100 kB/s`, `12345` (bytes per second).
///
/// ```
/// use ps_globus_sim::parse_rate;
/// assert_eq!(parse_rate("500MB/s"), Ok(500_000_000));
/// assert_eq!(parse_rate("1GiB/s"), Ok(1 << 30));
/// assert!(parse_rate("fast").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s").trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("bandwidth {text:?}: expected a number and a unit, e.g. 500MB/s"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "bandwidth {text:?}: unknown unit {other:?} (use B, kB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    let rate = number * scale;
    if rate < 1.0 {
        return Err(format!("bandwidth {text:?} is below 1 byte per second"));
    }
    Ok(rate as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_kind_parses_by_its_documented_name() {
        let names = [
            ("file_not_found", FaultKind::FileNotFound),
            ("permission_denied", FaultKind::PermissionDenied),
            ("quota_exceeded", FaultKind::QuotaExceeded),
            ("checksum_mismatch", FaultKind::ChecksumMismatch),
            ("inactive", FaultKind::Inactive),
            ("connect_failed", FaultKind::ConnectFailed),
            ("endpoint_error", FaultKind::EndpointError),
            ("http_429", FaultKind::Http429),
            ("http_503", FaultKind::Http503),
            ("http_502", FaultKind::Http502),
            ("connection_reset", FaultKind::ConnectionReset),
            ("https_endpoint_error", FaultKind::HttpsEndpointError),
        ];
        for (name, kind) in names {
            let path = if kind.is_http() {
                ""
            } else {
                "path = \"/x\"\n"
            };
            let config: SimConfig =
                toml::from_str(&format!("[[faults]]\nkind = \"{name}\"\n{path}")).unwrap();
            assert_eq!(config.faults[0].kind, kind);
            config.validate().unwrap();
        }
    }

    #[test]
    fn invalid_settings_say_what_is_wrong() {
        let bad = |text: &str| {
            toml::from_str::<SimConfig>(text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate())
        };
        assert!(bad("fail_rate = 2.0").unwrap_err().contains("fail_rate"));
        assert!(
            bad("bandwidth = \"fast\"")
                .unwrap_err()
                .contains("bandwidth")
        );
        assert!(
            bad("[[faults]]\nkind = \"http_429\"\npath = \"/x\"")
                .unwrap_err()
                .contains("must not have")
        );
        assert!(
            bad("[collections.a]\nroot = \"/no/such/dir\"")
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(bad("unknown_key = 1").is_err());
    }
}
