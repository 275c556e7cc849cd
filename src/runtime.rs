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
//!
//! A process forked after the runtime started (Python's `multiprocessing`, a process-pool
//! executor) gets a runtime of its own on first use, rather than hanging on the parent's
//! threads that it does not have: see [`ForkLocal`](crate::process::ForkLocal).

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

/// The library runtime's handle, creating the runtime on first use (and again in a
/// process forked after it started: see [`ForkLocal`](crate::process::ForkLocal)).
///
/// Spawn long-lived library work (pollers, background resolves) here, never on a caller's
/// runtime.
pub fn handle() -> &'static Handle {
    crate::process::own_context()
        .runtime
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("ps-globus")
                .enable_all()
                .build()
                .expect("ps-globus: cannot start the library's tokio runtime (out of threads?)")
        })
        .handle()
}

/// How many times this process's ancestry forked since the library first started: 0 in
/// the process that started it, and one more in each child forked after that.
///
/// Counted by a `pthread_atfork` child handler, installed when the first [`ForkLocal`](crate::process::ForkLocal)
/// value (the runtime, say) is made.
///
/// ```
/// ps_globus::block_on(async {});
/// assert_eq!(ps_globus::internal::fork_generation(), 0); // not a forked child
/// ```
pub fn fork_generation() -> u64 {
    crate::process::fork_generation()
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
    block_on_until(pin!(future), None).expect("no deadline to pass")
}

/// [`block_on`] for at most `limit`: the future's output, or `None` with the future left
/// as it is (poll it again to go on waiting; drop it to cancel). For a caller that must
/// look up now and then, as the Python package does for Ctrl-C.
///
/// ```
/// use std::time::Duration;
/// let mut never = std::pin::pin!(std::future::pending::<()>());
/// assert_eq!(ps_globus::internal::block_on_for(never.as_mut(), Duration::from_millis(1)), None);
/// let mut ready = std::pin::pin!(async { 7 });
/// assert_eq!(ps_globus::internal::block_on_for(ready.as_mut(), Duration::ZERO), Some(7));
/// ```
pub fn block_on_for<F: Future>(future: Pin<&mut F>, limit: Duration) -> Option<F::Output> {
    block_on_until(future, Some(deadline_after(limit)))
}

fn block_on_until<F: Future>(
    mut future: Pin<&mut F>,
    deadline: Option<Instant>,
) -> Option<F::Output> {
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
    if let Poll::Ready(value) = future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        return Some(value);
    }
    let park = || park_until_ready(future, deadline);
    if caller_is_multi_thread {
        tokio::task::block_in_place(park)
    } else {
        park()
    }
}

/// Whether this thread is inside [`block_on`], which holds it until its future is done:
/// blocking I/O here (a large write to a socket, say) stalls nothing the library's
/// runtime or the caller's runtime would otherwise run, and saves handing the work to a
/// blocking thread and back.
pub(crate) fn may_block() -> bool {
    DEPTH.get() > 0
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

/// Polls `future` on this thread, parking between wake-ups; `None` once `deadline`
/// passed.
fn park_until_ready<F: Future>(
    mut future: Pin<&mut F>,
    deadline: Option<Instant>,
) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return Some(value);
        }
        // A spurious unpark only costs one more poll.
        match deadline {
            None => thread::park(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                thread::park_timeout(left);
            }
        }
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
    tokio::select! {
        biased;
        value = future => Some(value),
        _ = sleep(limit) => None,
    }
}

/// The instant `limit` from now, saturating: a limit too far to represent (a hostile
/// `wait_timeout_s`, `--timeout 18446744073709551615`) is a deadline thirty years out,
/// never an overflow panic.
///
/// ```
/// let far = ps_globus::internal::deadline_after(std::time::Duration::MAX);
/// assert!(far > std::time::Instant::now());
/// ```
pub fn deadline_after(limit: Duration) -> std::time::Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = std::time::Instant::now();
    now.checked_add(limit.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// Sleeps for `duration` by the library runtime's clock (in any caller's runtime, even one
/// built without a timer).
pub(crate) async fn sleep(duration: Duration) {
    let sleep = {
        let _context = handle().enter();
        tokio::time::sleep(duration)
    };
    sleep.await
}

/// Calls `look` until it finds something (or fails), first 2 ms apart, then twice as
/// long each time up to `slowest`; `None` if `limit` passed first. For waits on a thing
/// that gives no signal (a file another process writes, a value on a server).
pub(crate) async fn poll_until_found<T, F, Fut>(
    limit: Duration,
    slowest: Duration,
    mut look: F,
) -> crate::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<Option<T>>>,
{
    let polling = async {
        let mut delay = Duration::from_millis(2);
        loop {
            if let Some(found) = look().await? {
                return Ok(found);
            }
            sleep(delay).await;
            delay = (delay * 2).min(slowest);
        }
    };
    timeout(limit, polling).await.transpose()
}

/// Polls `future` inside the library runtime's context, whatever runtime awaits it.
///
/// For clients that spawn their own background tasks, timers and sockets from inside a
/// call (the Redis connection manager does, on "the current runtime"): polled this way
/// they land on the library runtime, which lives as long as the process, rather than on a
/// caller's runtime that may be gone by the next call (a `#[tokio::test]`'s, say).
pub(crate) async fn in_library_context<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let _context = handle().enter();
        future.as_mut().poll(cx)
    })
    .await
}

/// Runs `work` when the process exits normally (`exit`, or `main` returning), after work
/// registered later: one `atexit` hook for the library, running every piece on a thread of
/// its own, because the exiting thread's thread-locals (the tokio context among them) may
/// already be gone when exit hooks run. A panic in one piece does not stop the others.
/// `abort`, a crash or `kill -9` skip it all.
pub(crate) fn at_exit(work: fn()) {
    let context = crate::process::inherited_context();
    extern "C" fn run_all() {
        // Nothing may unwind out of an exit hook.
        let _ = std::panic::catch_unwind(|| {
            let registered = &crate::process::inherited_context().exit_work;
            let work = std::mem::take(&mut *registered.lock().unwrap_or_else(|e| e.into_inner()));
            let runner = thread::Builder::new()
                .name("ps-globus-exit".into())
                .spawn(move || {
                    for piece in work.into_iter().rev() {
                        let _ = std::panic::catch_unwind(piece);
                    }
                });
            if let Ok(runner) = runner {
                let _ = runner.join();
            }
        });
    }
    context
        .exit_work
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(work);
    context.exit_hook.call_once(|| {
        // SAFETY: `run_all` is an `extern "C" fn()` that never unwinds.
        unsafe {
            libc::atexit(run_all);
        }
    });
}

/// Runs `work` on the library runtime's blocking threads: for work that takes long
/// enough (hashing a large file) to stall an async worker. A panic in `work` becomes
/// [`Error::Internal`](crate::Error::Internal).
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> crate::Result<T> {
    handle()
        .spawn_blocking(work)
        .await
        .map_err(|e| crate::Error::background("blocking work", Some(e.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::in_forked_child;

    #[test]
    fn a_child_forked_after_the_runtime_started_gets_a_working_runtime_of_its_own() {
        // The parent's runtime is running, with a timer in use.
        block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
        let parent_generation = fork_generation();
        let status = in_forked_child(|| {
            if fork_generation() != parent_generation + 1 {
                return 2;
            }
            // A timer and a spawned task both need worker threads, which the inherited
            // runtime no longer has.
            let spawned = block_on(handle().spawn(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                7
            }));
            if spawned.ok() != Some(7) {
                return 3;
            }
            0
        });
        assert!(
            libc::WIFEXITED(status),
            "the child hung or died: status {status}"
        );
        assert_eq!(libc::WEXITSTATUS(status), 0);
        assert_eq!(
            fork_generation(),
            parent_generation,
            "the parent's count moved"
        );
        assert_eq!(block_on(handle().spawn(async { 1 })).ok(), Some(1));
    }
}
