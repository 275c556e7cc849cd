//! Long waits, said while they last.
//!
//! A reader that waits for an object on its way (a Globus transfer, a future not set
//! yet) may wait for a day by default, and a wait that says nothing looks like a hang.
//! Each such wait registers here ([`begin`]) with what it waits for, its timeout and the
//! likely cause as it learns it ([`Waiting::cause`]). Once a wait has lasted
//! [`report_after`] (30 s, `PS_GLOBUS_WAIT_REPORT_S`), the process reports its long
//! waits in one summary, at most once per that period however many proxies a worker
//! holds: through `tracing` at WARN (the command line prints it on stderr), or through
//! the host language, which takes the summary itself ([`report_through_host`],
//! [`summary_due`]: the Python package logs it to the `ps_globus` logger).
//!
//! The registry is process-wide by nature (the rate limit is per process), so it is one
//! static; a forked child starts with its parent's entries, which end as its waits drop.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// One wait in progress.
struct Entry {
    id: u64,
    what: String,
    since: Instant,
    since_wall: DateTime<Utc>,
    timeout: Duration,
    cause: String,
}

/// Every wait in progress in this process, and when they were last reported.
struct Registry {
    next: u64,
    entries: Vec<Entry>,
    last_report: Option<Instant>,
    through_host: bool,
    /// Read from the environment at the first report due, not when the registry is made
    /// (the Python package makes it at import, before a notebook sets its variables).
    report_after: Option<Duration>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    let waits = crate::process::inherited(|| {
        Mutex::new(Registry {
            next: 0,
            entries: Vec::new(),
            last_report: None,
            through_host: false,
            report_after: None,
        })
    });
    waits.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a wait lasts before it is reported, and how often reports come.
pub fn report_after() -> Duration {
    *registry()
        .report_after
        .get_or_insert_with(report_after_default)
}

/// [`report_after`] as the environment sets it (`PS_GLOBUS_WAIT_REPORT`), else 30 s.
fn report_after_default() -> Duration {
    crate::Settings::global()
        .wait_report
        .unwrap_or(Duration::from_secs(30))
}

/// A wait in progress: it leaves the registry when dropped.
#[must_use = "the wait is registered only while this lives"]
#[derive(Debug)]
pub struct Waiting(u64);

/// Registers a wait for `what` (e.g. "object /store/ab12 to arrive at site lab") that
/// gives up after `timeout`, with the likely cause of its lasting as known now.
pub fn begin(what: impl Into<String>, timeout: Duration, cause: impl Into<String>) -> Waiting {
    let mut waits = registry();
    waits.next += 1;
    let id = waits.next;
    waits.entries.push(Entry {
        id,
        what: what.into(),
        since: Instant::now(),
        since_wall: Utc::now(),
        timeout,
        cause: cause.into(),
    });
    Waiting(id)
}

impl Waiting {
    /// What most likely keeps it waiting, as learnt since (with the command to run).
    pub fn cause(&self, cause: impl Into<String>) {
        if let Some(entry) = registry().entries.iter_mut().find(|e| e.id == self.0) {
            entry.cause = cause.into();
        }
    }

    /// Reports the process's long waits through `tracing`, if one is due and the host
    /// language does not take the reports: call it from each round of a wait.
    pub fn tick(&self) {
        let due = {
            let mut waits = registry();
            if waits.through_host {
                return;
            }
            due(&mut waits)
        };
        if let Some(summary) = due {
            tracing::warn!(target: "ps_globus::waits", "{summary}");
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        registry().entries.retain(|e| e.id != self.0);
    }
}

/// The host language reports long waits itself (it calls [`summary_due`]), instead of
/// `tracing`, which it does not see.
pub fn report_through_host() {
    registry().through_host = true;
}

/// The summary of the long waits, if one is due now (a wait has lasted
/// [`report_after`], and no summary was given for that long); it counts as given.
pub fn summary_due() -> Option<String> {
    due(&mut registry())
}

/// [`summary_due`] on the locked registry.
fn due(waits: &mut Registry) -> Option<String> {
    let now = Instant::now();
    let every = *waits.report_after.get_or_insert_with(report_after_default);
    if waits.last_report.is_some_and(|at| now < at + every) {
        return None;
    }
    let summary = summary(&waits.entries, now, every)?;
    waits.last_report = Some(now);
    Some(summary)
}

/// The words for `entries` that have lasted `after` at `now`; `None` if none has.
fn summary(entries: &[Entry], now: Instant, after: Duration) -> Option<String> {
    let long: Vec<&Entry> = entries.iter().filter(|e| now >= e.since + after).collect();
    let oldest = long.iter().min_by_key(|e| e.since)?;
    let waited = now - oldest.since;
    let left = oldest.timeout.saturating_sub(waited);
    let others = match long.len() {
        1 => String::new(),
        n => format!(" ({} more long wait(s) in this process)", n - 1),
    };
    Some(format!(
        "ps-globus: still waiting for {} since {} ({} so far; gives up in {}): {}{others}",
        oldest.what,
        oldest.since_wall.format("%H:%M:%S UTC"),
        human(waited),
        human(left),
        oldest.cause,
    ))
}

/// `2 h 5 min`, `3 min 20 s`, `45 s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, what: &str, since: Instant, timeout: Duration) -> Entry {
        Entry {
            id,
            what: what.into(),
            since,
            since_wall: Utc::now(),
            timeout,
            cause: "no Globus task for it is visible yet".into(),
        }
    }

    #[test]
    fn a_summary_names_the_oldest_long_wait_its_timeout_and_cause_and_counts_the_rest() {
        let start = Instant::now();
        let day = Duration::from_secs(86_400);
        let entries = [
            entry(1, "object /s/a to arrive at site lab", start, day),
            entry(
                2,
                "object /s/b to arrive at site lab",
                start + Duration::from_secs(5),
                day,
            ),
            entry(
                3,
                "future f of store 's' to be set",
                start + Duration::from_secs(50),
                day,
            ),
        ];
        let after = Duration::from_secs(30);
        assert_eq!(
            summary(&entries, start + Duration::from_secs(29), after),
            None
        );
        let said = summary(&entries, start + Duration::from_secs(60), after).unwrap();
        assert!(
            said.contains("still waiting for object /s/a to arrive at site lab"),
            "{said}"
        );
        assert!(
            said.contains("1 min 0 s so far; gives up in 23 h 59 min"),
            "{said}"
        );
        assert!(
            said.contains("no Globus task for it is visible yet"),
            "{said}"
        );
        assert!(
            said.contains("(1 more long wait(s) in this process)"),
            "{said}"
        );
    }
}
