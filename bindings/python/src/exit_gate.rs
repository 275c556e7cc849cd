//! The runtime's workers stop calling into Python once the interpreter exits.
//!
//! An awaitable's result reaches Python from a runtime worker that takes the GIL
//! (`aio.rs`, and `pyo3-async-runtimes`' `set_result` on a blocking thread). CPython ends a
//! thread that takes the GIL while the interpreter finalizes, mid-call; unwinding out of
//! PyO3's GIL guard then aborts the process ("PyGILState_Release: thread state must be
//! current when releasing", exit status -6) after a program that did all its work. So the
//! exit hook closes this gate while the interpreter still runs, and waits (without the
//! GIL) for the calls already inside; a result that arrives later has no event loop left
//! to go to, and its worker leaves it.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use ps_globus::internal::fork_generation;

/// Whether the gate is closed, how many calls into Python are inside, how many were
/// turned away; per process (a forked child starts open and empty: its parent's calls
/// have no threads in it).
#[derive(Default)]
struct Gate {
    generation: u64,
    closed: bool,
    inside: usize,
    refused: u64,
}

static GATE: Mutex<Option<Gate>> = Mutex::new(None);
static LEFT: Condvar = Condvar::new();

/// Runs `f` with the gate's state of this process.
fn with_gate<R>(f: impl FnOnce(&mut Gate) -> R) -> R {
    let mut slot = GATE.lock().expect("exit gate lock");
    let gate = slot.get_or_insert_with(Gate::default);
    if gate.generation != fork_generation() {
        *gate = Gate {
            generation: fork_generation(),
            ..Gate::default()
        };
    }
    f(gate)
}

/// Leave to call into Python from a runtime worker, until dropped.
pub struct Pass(());

impl Drop for Pass {
    fn drop(&mut self) {
        with_gate(|gate| gate.inside = gate.inside.saturating_sub(1));
        LEFT.notify_all();
    }
}

/// A pass to call into Python, or `None` once the interpreter exits.
pub fn enter() -> Option<Pass> {
    with_gate(|gate| {
        if gate.closed {
            gate.refused += 1;
            None
        } else {
            gate.inside += 1;
            Some(Pass(()))
        }
    })
}

/// Closes the gate and waits up to `limit` for the calls inside to leave. Called without
/// the GIL: they need it to finish.
pub fn close(limit: Duration) {
    let generation = fork_generation();
    with_gate(|gate| gate.closed = true);
    let slot = GATE.lock().expect("exit gate lock");
    let _ = LEFT.wait_timeout_while(slot, limit, |slot| {
        slot.as_ref()
            .is_some_and(|gate| gate.generation == generation && gate.inside > 0)
    });
}

/// How many calls into Python the closed gate turned away.
pub fn refused() -> u64 {
    with_gate(|gate| gate.refused)
}
