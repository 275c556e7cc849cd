//! Waiting on the library from Python: off the GIL, and still answering Ctrl-C.

use std::future::Future;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors::to_py_err;

/// How often a wait wakes to let Python run its signal handlers (Ctrl-C answers within
/// this).
const SIGNAL_CHECK: Duration = Duration::from_millis(200);

/// Runs `work` on the library's runtime and waits for it without holding the GIL, so
/// other Python threads run meanwhile. Every [`SIGNAL_CHECK`] the wait takes the GIL back
/// to run Python's signal handlers: a `KeyboardInterrupt` (or any exception a handler
/// raises) cancels `work` and is raised here.
pub fn wait<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = ps_globus::Result<T>> + Send + 'static,
{
    let (done, mut result) = sync_channel(1);
    let task = ps_globus::internal::handle().spawn(async move {
        let _ = done.send(work.await);
    });
    loop {
        // The receiver is moved into the detached closure and back: it is `Send`, not
        // `Sync`.
        let (answer, receiver) = py.detach(move || (result.recv_timeout(SIGNAL_CHECK), result));
        result = receiver;
        match answer {
            Ok(outcome) => return outcome.map_err(|e| to_py_err(py, e)),
            Err(RecvTimeoutError::Timeout) => {
                report_long_waits(py);
                if let Err(interrupted) = py.check_signals() {
                    // Dropping the future is how the library cancels: what it committed
                    // stays committed (a put's transfer still happens).
                    task.abort();
                    return Err(interrupted);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err(
                    "ps-globus: the library's background task ended without an answer \
                     (it panicked; this is a bug, please report it)",
                ));
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
