//! Awaitables for asyncio: a library future as a Python awaitable, run on the library's
//! own runtime (never the event loop's thread), through `pyo3-async-runtimes`' generic
//! module.
//!
//! Why not its tokio module: that keeps a runtime of its own in a process-wide static,
//! which a child forked after it started (multiprocessing, a process pool) inherits
//! without its worker threads, and every await there would hang. The library's handle
//! (`ps_globus::internal::handle`) builds a fresh runtime in such a child.

use std::cell::OnceCell;
use std::future::Future;
use std::pin::Pin;

use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use pyo3_async_runtimes::generic::{self, ContextExt};

use crate::errors::to_py_err;
use crate::exit_gate;

/// The library runtime, as `pyo3-async-runtimes` sees a runtime.
pub struct LibraryRuntime;

/// A task of the library runtime that did not finish: it panicked, or was cancelled.
pub struct Unfinished(tokio::task::JoinError);

impl generic::JoinError for Unfinished {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }

    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

tokio::task_local! {
    /// The asyncio event loop and context of the awaitable a task serves.
    static TASK_LOCALS: OnceCell<TaskLocals>;
}

type Joined = Pin<Box<dyn Future<Output = Result<(), Unfinished>> + Send>>;

impl generic::Runtime for LibraryRuntime {
    type JoinError = Unfinished;
    type JoinHandle = Joined;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = ps_globus::internal::handle().spawn(fut);
        Box::pin(async move { task.await.map_err(Unfinished) })
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        // pyo3-async-runtimes hands a result to Python here (with the GIL): not once the
        // interpreter exits (`exit_gate`).
        let task = ps_globus::internal::handle().spawn_blocking(|| {
            if let Some(_pass) = exit_gate::enter() {
                f()
            }
        });
        Box::pin(async move { task.await.map_err(Unfinished) })
    }
}

impl ContextExt for LibraryRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|cell| cell.get().cloned())
            .unwrap_or_default()
    }
}

/// `work` as an awaitable of the running asyncio loop; the library's errors become
/// `ps_globus.errors` exceptions, and `convert` makes the Python value (with the GIL).
pub fn awaitable<'py, T, V, F, C>(
    py: Python<'py>,
    work: F,
    convert: C,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    V: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = ps_globus::Result<T>> + Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<V> + Send + 'static,
{
    generic::future_into_py::<LibraryRuntime, _, V>(py, async move {
        let done = work.await;
        let Some(_pass) = exit_gate::enter() else {
            // The interpreter exits: no loop is left to take the value (`exit_gate`).
            return std::future::pending().await;
        };
        Python::attach(|py| match done {
            Ok(value) => convert(py, value),
            Err(e) => Err(to_py_err(py, e)),
        })
    })
}
