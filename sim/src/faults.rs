//! Injected faults and the rate limiter.
//!
//! Every decision is a pure function of (seed, identity, route, per-route request number
//! or submission id, attempt), hashed with SHA-256: a failing run replays exactly, even
//! when its requests arrive concurrently and in another order.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::config::{FaultConfig, FaultKind, SimConfig};

/// What an HTTP fault does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpFault {
    TooManyRequests {
        retry_after: u64,
    },
    Unavailable {
        retry_after: u64,
    },
    ExternalError,
    ConnectionReset,
    /// HTTPS: the sticky `ENDPOINT_ERROR` 404.
    EndpointError,
}

pub(crate) struct Faults {
    seed: u64,
    fail_rate: f64,
    http: Vec<FaultConfig>,
    /// Task faults: pattern, kind, and how many times per path (absent: always).
    paths: Vec<(glob::Pattern, FaultKind, Option<u64>)>,
    /// How often each task fault (by index) has acted on each path.
    path_hits: Mutex<HashMap<(usize, String), u64>>,
    rate_limit: Option<u32>,
    counters: Mutex<HashMap<(String, String), u64>>,
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// Where the limiter meters requests.
const WINDOW: Duration = Duration::from_secs(10);

impl Faults {
    pub(crate) fn new(config: &SimConfig) -> Self {
        Faults {
            seed: config.seed,
            fail_rate: config.fail_rate,
            http: config
                .faults
                .iter()
                .filter(|f| f.kind.is_http())
                .cloned()
                .collect(),
            paths: config
                .faults
                .iter()
                .filter_map(|f| {
                    Some((
                        glob::Pattern::new(f.path.as_deref()?).ok()?,
                        f.kind,
                        f.count,
                    ))
                })
                .collect(),
            path_hits: Mutex::default(),
            rate_limit: config.effective_rate_limit(),
            counters: Mutex::default(),
            windows: Mutex::default(),
        }
    }

    /// The task fault of one of `kinds` for a source path, if one is configured and, for
    /// a fault with a `count`, has not yet acted that many times on this path (then the
    /// path heals: a recoverable fault, "fails 3 times then succeeds"). Only a fault that
    /// acts is counted, so each count is one failed attempt.
    pub(crate) fn path_fault(&self, path: &str, kinds: &[FaultKind]) -> Option<FaultKind> {
        let mut hits = self.path_hits.lock().expect("fault counters poisoned");
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, (pattern, kind, _))| kinds.contains(kind) && pattern.matches(path))
            .find_map(|(i, (_, kind, count))| {
                let hit = hits.entry((i, path.to_owned())).or_default();
                if count.is_some_and(|c| *hit >= c) {
                    return None;
                }
                *hit += 1;
                Some(*kind)
            })
    }

    /// A seeded shuffle of `items`: the same seed and `what` give the same order.
    pub(crate) fn shuffle<T>(&self, what: &str, items: &mut [T]) {
        let digest = Sha256::new()
            .chain_update(self.seed.to_le_bytes())
            .chain_update(what.as_bytes())
            .finalize();
        let mut state = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        // Fisher-Yates with SplitMix64: tiny, and nothing here needs more.
        for i in (1..items.len()).rev() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            items.swap(i, (z % (i as u64 + 1)) as usize);
        }
    }

    /// Decides the fault (if any) for one Transfer request. `occurrence` is the submission
    /// id for submissions (so a re-post is a new attempt of the same thing), else `None`
    /// (the per-route request number is used).
    pub(crate) fn http_fault(
        &self,
        identity: &str,
        route: &str,
        occurrence: Option<&str>,
    ) -> Option<HttpFault> {
        if self.http.is_empty() && self.fail_rate <= 0.0 {
            return None;
        }
        let counter_key = (
            identity.to_owned(),
            occurrence.map_or_else(|| route.to_owned(), |s| format!("{route} {s}")),
        );
        let n = {
            let mut counters = self.counters.lock().expect("fault counters poisoned");
            let n = counters.entry(counter_key).or_insert(0);
            *n += 1;
            *n - 1
        };
        let what = occurrence.unwrap_or("");
        let https = route.starts_with("HTTPS ");
        for (i, fault) in self.http.iter().enumerate() {
            match fault.route.as_deref() {
                Some(r) if r != route => continue,
                None if https => continue,
                _ => {}
            }
            if n < fault.after || fault.count.is_some_and(|c| n >= fault.after + c) {
                continue;
            }
            if self.chance(&[identity, route, what, &n.to_string(), &i.to_string()])
                < fault.probability
            {
                return Some(match fault.kind {
                    FaultKind::Http429 => HttpFault::TooManyRequests {
                        retry_after: fault.retry_after,
                    },
                    FaultKind::Http503 => HttpFault::Unavailable {
                        retry_after: fault.retry_after,
                    },
                    FaultKind::Http502 => HttpFault::ExternalError,
                    FaultKind::HttpsEndpointError => HttpFault::EndpointError,
                    _ => HttpFault::ConnectionReset,
                });
            }
        }
        (!https
            && self.chance(&[identity, route, what, &n.to_string(), "fail_rate"]) < self.fail_rate)
            .then_some(HttpFault::Unavailable { retry_after: 1 })
    }

    /// A number in [0, 1) determined by the seed and `parts`.
    fn chance(&self, parts: &[&str]) -> f64 {
        let mut hash = Sha256::new();
        hash.update(self.seed.to_le_bytes());
        for part in parts {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let n = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
        (n >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Admits one request of `identity`, or says how many seconds to wait.
    pub(crate) fn rate_limited(&self, identity: &str) -> Option<u64> {
        let limit = self.rate_limit? as usize * WINDOW.as_secs() as usize;
        let now = Instant::now();
        let mut windows = self.windows.lock().expect("rate windows poisoned");
        let window = windows.entry(identity.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= limit {
            let oldest = *window.front().expect("window is full");
            let wait = WINDOW.saturating_sub(now.duration_since(oldest));
            return Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        window.push_back(now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(faults: &str) -> SimConfig {
        toml::from_str(faults).unwrap()
    }

    #[test]
    fn decisions_replay_from_the_seed_whatever_the_interleaving() {
        let c = config("fail_rate = 0.3\nseed = 7");
        let run = |order: &[&str]| {
            let f = Faults::new(&c);
            let mut seen: Vec<(String, Option<HttpFault>)> = Vec::new();
            for who in order {
                seen.push((
                    who.to_string(),
                    f.http_fault(who, "GET /v0.10/task_list", None),
                ));
            }
            seen.sort_by(|a, b| a.0.cmp(&b.0));
            seen
        };
        let a = run(&["alice", "bob", "alice", "bob", "alice", "bob"]);
        let b = run(&["bob", "bob", "bob", "alice", "alice", "alice"]);
        assert_eq!(a, b);
        let hits = (0..1000)
            .filter(|i| Faults::new(&c).chance(&[&i.to_string()]) < 0.3)
            .count();
        assert!((200..400).contains(&hits), "about 30% fail: {hits}");
    }

    #[test]
    fn windows_of_http_faults() {
        let c = config(
            r#"[[faults]]
               kind = "http_429"
               route = "GET /v0.10/task_list"
               after = 1
               count = 2
               retry_after = 3"#,
        );
        let f = Faults::new(&c);
        let got: Vec<_> = (0..5)
            .map(|_| f.http_fault("u", "GET /v0.10/task_list", None))
            .collect();
        let storm = Some(HttpFault::TooManyRequests { retry_after: 3 });
        assert_eq!(got, vec![None, storm, storm, None, None]);
        assert_eq!(f.http_fault("u", "GET /v0.10/submission_id", None), None);
    }

    #[test]
    fn rate_limit_counts_a_ten_second_window() {
        let f = Faults::new(&config("rate_limit = 2"));
        for _ in 0..20 {
            assert_eq!(f.rate_limited("u"), None);
        }
        assert!(f.rate_limited("u").unwrap() >= 1);
        assert_eq!(f.rate_limited("other"), None, "per identity");
    }
}
