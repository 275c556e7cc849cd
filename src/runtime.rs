//! The process-global library runtime, and waiting on a future from synchronous code.
//!
//! `Deref` is synchronous, yet resolving a proxy may wait on I/O, timers or (later) a
//! Globus transfer. ps-globus therefore owns one multi-thread tokio runtime per process
//! that is never dropped: library I/O registers with it, so a waiting thread never depends
//! on a caller's (possibly short-lived, possibly current-thread) runtime.
//!
//! [`block_on`] is the bridge from sync code, and it works everywhere:
//! - The future is first polled once inline, inside the library runtime's context. Local
//!   and file operations finish right there: no thread hop, no allocation (at ~1 µs per
//!   operation a channel round trip between threads would cost more than the work).
//! - Only if that first poll is pending does the calling thread park until woken. On a
//!   worker of a multi-thread tokio runtime it first calls `block_in_place`, so the
//!   caller's other tasks move to another worker.
//! - On a *current-thread* tokio runtime (what `#[tokio::test]` gives by default) it also
//!   works, but the whole runtime waits with it: its other tasks do not run until the
//!   value arrives. Async code should call the `*_async` methods instead.
//!
//! Unlike tokio's `Runtime::block_on` it never panics when called from async code, and it
//! may be nested (a proxy whose factory resolves another proxy).

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

/// The library runtime's handle, creating the runtime on first use.
///
/// Spawn long-lived library work (pollers, background resolves) here, never on a caller's
/// runtime.
pub fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("ps-globus")
                .enable_all()
                .build()
                .expect("ps-globus: cannot start the library's tokio runtime (out of threads?)")
        })
        .handle()
}

/// Runs `future` to completion from synchronous code, from any thread.
///
/// See the module docs for how it behaves inside tokio runtimes.
///
/// ```
/// let answer = ps_globus::block_on(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    // Decided before entering our own context, which would hide the caller's runtime. A
    // nested call (a proxy's factory resolving another proxy) leaves it to the outermost
    // call: that one already left the worker, or was on a current-thread runtime, where
    // `block_in_place` would panic.
    let nested = DEPTH.get() > 0;
    let caller_is_multi_thread = !nested
        && Handle::try_current()
            .map(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
            .unwrap_or(false);
    let _depth = DepthGuard::enter();
    let _context = handle().enter();
    let mut future = pin!(future);
    if let Poll::Ready(value) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return value;
    }
    let park = || park_until_ready(future);
    if caller_is_multi_thread {
        tokio::task::block_in_place(park)
    } else {
        park()
    }
}

thread_local! {
    /// How many `block_on` calls are active on this thread.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

struct DepthGuard;

impl DepthGuard {
    fn enter() -> Self {
        DEPTH.set(DEPTH.get() + 1);
        DepthGuard
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
    }
}

/// Polls `future` on this thread, parking between wake-ups.
fn park_until_ready<F: Future>(mut future: std::pin::Pin<&mut F>) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        // A spurious unpark only costs one more poll.
        thread::park();
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` with a time limit measured by the library runtime's clock.
///
/// Works in any caller's runtime, even one built without a timer.
/// Returns `None` when the limit passed first.
pub(crate) async fn timeout<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let sleep = {
        let _context = handle().enter();
        tokio::time::sleep(limit)
    };
    tokio::select! {
        biased;
        value = future => Some(value),
        _ = sleep => None,
    }
}

/// Runs `work` on the library runtime's blocking threads: for work that takes long
/// enough (hashing a large file) to stall an async worker. A panic in `work` becomes
/// [`Error::Background`](crate::Error::Background).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> crate::Result<T> {
    handle()
        .spawn_blocking(work)
        .await
        .map_err(|e| crate::Error::background("blocking work", Some(e.into())))
}
