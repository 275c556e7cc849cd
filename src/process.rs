//! The library's process state, owned in one place.
//!
//! Everything ps-globus keeps for the life of a process lives in one of two contexts,
//! the only two `static`s of the library (outside the emulator):
//!
//! - [`inherited`]: what a process forked from this one keeps, because it stays true
//!   there: the environment's settings, the connector kinds and process defaults code
//!   registered, the fork count itself, the exit hooks, the waits being reported.
//! - [`own`]: what a forked child must not use, and gets afresh on first use (see
//!   [`ForkLocal`]): the library's tokio runtime, the registries of stores, managers,
//!   state databases, lifetimes and lease reapers, which own threads, connections and
//!   locks that do not survive a fork.
//!
//! A module keeps its value in a slot of either, keyed by the value's type (a module's
//! own private type, so slots never collide), made on first use and never dropped, as
//! a `static` would be. Nothing here knows the modules above it.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock, RwLock};

/// What a forked child keeps.
pub(crate) struct Inherited {
    /// How many times this process's ancestry forked since the library started (the
    /// `pthread_atfork` child handler counts it: an atomic, all it may touch).
    pub(crate) fork_generation: AtomicU64,
    /// The fork handler, installed once.
    pub(crate) fork_hook: Once,
    /// Work to run at a normal exit, in registration order.
    pub(crate) exit_work: Mutex<Vec<fn()>>,
    /// The exit hook, installed once.
    pub(crate) exit_hook: Once,
    slots: Slots,
}

/// What a forked child makes afresh.
pub(crate) struct PerProcess {
    /// The library's tokio runtime (read on every `block_on`: a field, not a slot).
    pub(crate) runtime: OnceLock<tokio::runtime::Runtime>,
    slots: Slots,
}

static INHERITED: Inherited = Inherited {
    fork_generation: AtomicU64::new(0),
    fork_hook: Once::new(),
    exit_work: Mutex::new(Vec::new()),
    exit_hook: Once::new(),
    slots: Slots::new(),
};

static PER_PROCESS: ForkLocal<PerProcess> = ForkLocal::new();

/// The context a forked child keeps.
pub(crate) fn inherited_context() -> &'static Inherited {
    &INHERITED
}

/// This process's own context (a forked child's is fresh).
pub(crate) fn own_context() -> &'static PerProcess {
    PER_PROCESS.get_or_init(|| PerProcess {
        runtime: OnceLock::new(),
        slots: Slots::new(),
    })
}

/// The value of type `T` that this process and the children it forks share, made by
/// `init` on first use (once, however many threads ask at the same moment).
pub(crate) fn inherited<T: Any + Send + Sync>(init: impl FnOnce() -> T) -> &'static T {
    INHERITED.slots.get_or_init(init)
}

/// This process's own value of type `T`, made by `init` on first use in this process
/// (a forked child makes its own).
pub(crate) fn own<T: Any + Send + Sync>(init: impl FnOnce() -> T) -> &'static T {
    own_context().slots.get_or_init(init)
}

/// The fork count (see [`Inherited::fork_generation`]).
pub(crate) fn fork_generation() -> u64 {
    INHERITED.fork_generation.load(Ordering::Acquire)
}

/// Values, one per type, each made once and kept for the rest of the process.
struct Slots(RwLock<Vec<(TypeId, &'static (dyn Any + Send + Sync))>>);

impl Slots {
    const fn new() -> Self {
        Slots(RwLock::new(Vec::new()))
    }

    fn get_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> &'static T {
        // The cell is found (or added) under the lock, and filled outside it: `init` may
        // ask for other slots, and only those asking for this one wait for it.
        self.cell::<T>().get_or_init(init)
    }

    fn cell<T: Any + Send + Sync>(&self) -> &'static OnceLock<T> {
        let id = TypeId::of::<T>();
        let find = |cells: &[(TypeId, &'static (dyn Any + Send + Sync))]| {
            cells
                .iter()
                .find(|(of, _)| *of == id)
                .and_then(|(_, cell)| cell.downcast_ref::<OnceLock<T>>())
        };
        // A panic elsewhere while holding the lock leaves the list whole: go on with it.
        if let Some(cell) = find(&self.0.read().unwrap_or_else(|e| e.into_inner())) {
            return cell;
        }
        let mut cells = self.0.write().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = find(&cells) {
            return cell;
        }
        // Leaked on purpose: a slot lives as long as the process, as a `static` does
        // (and a value owning threads must never be dropped from an exiting thread).
        let cell: &'static OnceLock<T> = Box::leak(Box::new(OnceLock::new()));
        cells.push((id, cell));
        cell
    }
}

/// Registers, once per process, the `pthread_atfork` handler that counts forks.
pub(crate) fn install_fork_handler() {
    extern "C" fn forked_child() {
        // Only an atomic store: the child of a multi-threaded process may call nothing
        // that is not async-signal-safe until it execs.
        INHERITED.fork_generation.fetch_add(1, Ordering::AcqRel);
    }
    INHERITED.fork_hook.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        }
    });
}

/// A process-global value that a forked child does not inherit.
///
/// `fork` copies memory but only the forking thread: in the child, the library runtime's
/// worker threads are gone (a wait on it would hang forever), and a lock another thread
/// held at the fork stays locked. Values that own threads, locks, connections or open
/// state files (the runtime, the registries of running managers and stores) live in a
/// `ForkLocal`: a child forked after one was made gets a fresh one on first use. The
/// parent's copy is leaked in the child, never dropped: dropping it would join threads
/// that do not exist there, or close connections the parent still uses.
///
/// ```
/// use std::sync::Mutex;
/// use ps_globus::internal::ForkLocal;
///
/// static OPEN_FILES: ForkLocal<Mutex<Vec<String>>> = ForkLocal::new();
/// OPEN_FILES.get_or_init(Default::default).lock().unwrap().push("a".into());
/// // The same value in this process; a forked child would start with an empty list.
/// assert_eq!(OPEN_FILES.get_or_init(Default::default).lock().unwrap().len(), 1);
/// ```
pub struct ForkLocal<T> {
    slot: AtomicPtr<(u64, T)>,
    // Shared like a `&T` across threads: Send and Sync only where `T` is.
    _value: std::marker::PhantomData<T>,
}

impl<T> std::fmt::Debug for ForkLocal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkLocal").finish_non_exhaustive()
    }
}

impl<T> ForkLocal<T> {
    /// An empty slot, for a `static`.
    pub const fn new() -> Self {
        ForkLocal {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            _value: std::marker::PhantomData,
        }
    }

    /// This process's value, made by `init` on first use in this process.
    pub fn get_or_init(&'static self, init: impl FnOnce() -> T) -> &'static T {
        let generation = fork_generation();
        let current = self.slot.load(Ordering::Acquire);
        // SAFETY: a non-null slot points at a leaked box, never freed.
        if let Some((made_in, value)) = unsafe { current.as_ref() }
            && *made_in == generation
        {
            return value;
        }
        // Counting forks matters from the first value on: only then is there one a
        // child must not use.
        install_fork_handler();
        let fresh = Box::into_raw(Box::new((generation, init())));
        match self
            .slot
            .compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: just leaked; lives for the rest of the process.
            Ok(_) => unsafe { &(*fresh).1 },
            Err(winner) => {
                // Another thread of this process made it first: use theirs, and leak ours
                // (it may own threads that must not be joined from here).
                // SAFETY: as above, a leaked box.
                unsafe { &(*winner).1 }
            }
        }
    }
}

impl<T> Default for ForkLocal<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Forks, runs `child` in the child (killed by an alarm if it hangs) and returns the
/// child's wait status.
#[cfg(test)]
pub(crate) fn in_forked_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child only runs `child` and exits; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(20) };
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(99);
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_slot_is_made_once_per_type_whoever_asks_first() {
        struct Counted(usize);
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let slots: &'static Slots = Box::leak(Box::new(Slots::new()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    slots
                        .get_or_init(|| Counted(MADE.fetch_add(1, Ordering::SeqCst)))
                        .0
                })
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(MADE.load(Ordering::SeqCst), 1, "made once");
        assert!(seen.iter().all(|v| *v == seen[0]));
        // Another type is another slot; an init may ask for other slots.
        let text: &String = slots.get_or_init(|| format!("{}", slots.get_or_init(|| 7u8)));
        assert_eq!(text, "7");
    }

    #[test]
    fn a_forked_child_keeps_inherited_slots_and_makes_its_own_afresh() {
        struct Mark(u64);
        struct Here(u64);
        let parent = fork_generation();
        assert_eq!(inherited(|| Mark(parent)).0, parent);
        assert_eq!(own(|| Here(parent)).0, parent);
        let status = in_forked_child(|| {
            let child = fork_generation();
            match (inherited(|| Mark(child)).0, own(|| Here(child)).0) {
                (kept, fresh) if kept == parent && fresh == child && child == parent + 1 => 0,
                _ => 1,
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status}"
        );
    }
}
