//! Waiting on the library from Python: off the GIL, and still answering Ctrl-C.

use std::future::Future;
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::to_py_err;

/// How often a wait wakes to let Python run its signal handlers (Ctrl-C answers within
/// this).
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// Runs `work` on this thread, as the library's [`block_on`](ps_globus::block_on) does, and
/// waits for it without holding the GIL, so other Python threads run meanwhile. Polling
/// here rather than on a runtime worker saves two thread hand-offs an operation, and lets
/// the library block this thread on a large write instead of handing it to another
/// (`redis` bulk path). Every [`SIGNAL_CHECK`] the wait takes the GIL back to run Python's
/// signal handlers: a `KeyboardInterrupt` (or any exception a handler raises) cancels
/// `work` and is raised here.
pub fn wait<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = ps_globus::Result<T>> + Send + 'static,
{
    let mut work = Box::pin(work);
    loop {
        // The future is moved into the detached closure and back.
        let (answer, back) = py.detach(move || {
            let answer = ps_globus::internal::block_on_for(work.as_mut(), SIGNAL_CHECK);
            (answer, work)
        });
        work = back;
        match answer {
            Some(outcome) => return outcome.map_err(|e| to_py_err(py, e)),
            None => {
                report_long_waits(py);
                if let Err(interrupted) = py.check_signals() {
                    // Dropping the future is how the library cancels: what it committed
                    // stays committed (a put's transfer still happens).
                    drop(work);
                    return Err(interrupted);
                }
            }
        }
    }
}

/// Logs the library's summary of this process's long waits, when one is due, to the
/// `ps_globus` logger at WARNING (`ps_globus::waits`: at most one every 30 s).
fn report_long_waits(py: Python<'_>) {
    if let Some(summary) = ps_globus::internal::summary_due() {
        let logged = py
            .import("logging")
            .and_then(|logging| logging.call_method1("getLogger", ("ps_globus",)))
            .and_then(|logger| logger.call_method1("warning", (summary,)));
        if let Err(e) = logged {
            e.print(py);
        }
    }
}
