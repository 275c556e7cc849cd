//! The retry policy of the Transfer client, matching globus-sdk's.
//!
//! A reading request may take 20 s, a writing one 60 s (connecting: 10 s); no retry
//! starts once the call has taken 90 s. Up to 5 retries; attempt `k` sleeps `(0.25 + 0.5·random) · 2^k` seconds, capped at 10 s;
//! an integer `Retry-After` on 429 or 503 replaces that sleep (still capped, still
//! counted as an attempt, so a storm of 429s cannot retry forever). Retried: 429, 500,
//! 502, 503, 504 and connection failures, but never an `ExternalError*` or
//! `EndpointError*` answer. A 401 is not retried here: the client refreshes the
//! credentials once and repeats the request itself.

use std::time::Duration;

/// How requests are retried.
///
/// ```
/// let mut fast = ps_globus::transfer::RetryConfig::default();
/// fast.base = std::time::Duration::from_millis(1);
/// assert_eq!(fast.max_retries, 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The longest sleep between attempts (also caps `Retry-After`).
    pub max_sleep: Duration,
    /// The unit of the backoff: attempt `k` sleeps `(0.5 + random) · base · 2^k`.
    pub base: Duration,
    /// How long one reading request (`GET`) may take, answer included.
    pub read_timeout: Duration,
    /// How long one writing request (a submission, a cancel) may take.
    pub write_timeout: Duration,
    /// No retry starts once a call has taken this long: a service that accepts
    /// connections but never answers fails a call in about this time, not
    /// `max_retries` times the request timeout.
    pub total: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            max_sleep: Duration::from_secs(10),
            base: Duration::from_millis(500),
            read_timeout: Duration::from_secs(20),
            write_timeout: Duration::from_secs(60),
            total: Duration::from_secs(90),
        }
    }
}

impl backon::BackoffBuilder for RetryConfig {
    type Backoff = Backoff;

    fn build(self) -> Backoff {
        Backoff {
            config: self,
            attempt: 0,
        }
    }
}

/// The sleeps of one request's retries.
#[derive(Debug)]
pub struct Backoff {
    config: RetryConfig,
    attempt: u32,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt as usize >= self.config.max_retries {
            return None;
        }
        let jitter = 0.5 + unit_random();
        let sleep = self
            .config
            .base
            .mul_f64(jitter * 2f64.powi(self.attempt as i32));
        self.attempt += 1;
        Some(sleep.min(self.config.max_sleep))
    }
}

/// A number in [0, 1) from the process's UUID generator (no extra RNG dependency).
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn sleeps_grow_jittered_and_capped_and_stop_after_max_retries() {
        let sleeps: Vec<Duration> = RetryConfig::default().build().collect();
        assert_eq!(sleeps.len(), 5);
        for (k, sleep) in sleeps.iter().enumerate() {
            let nominal = 0.5 * 2f64.powi(k as i32);
            let secs = sleep.as_secs_f64();
            assert!(
                secs >= 0.25 * 2f64.powi(k as i32) - 1e-9,
                "attempt {k}: {secs}"
            );
            assert!(
                secs <= (nominal * 1.5).min(10.0) + 1e-9,
                "attempt {k}: {secs}"
            );
        }
        assert!(sleeps[4] <= Duration::from_secs(10));
    }
}
