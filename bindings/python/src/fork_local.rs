//! A value of this process that a child forked after it was made builds anew.
//!
//! A connector, a publisher or a lease holds the parent's connections, pools and runtime
//! tasks: in a forked child they have no threads behind them. The child rebuilds its own
//! on first use, and **leaks** the parent's: dropping it would close connections the
//! parent still uses (a PostgreSQL pool sends its goodbye on the shared socket).

use std::sync::Mutex;

use ps_globus::internal::fork_generation;
use pyo3::PyResult;

/// A `T` for the process it is used in (see the module docs).
pub struct ForkLocal<T> {
    live: Mutex<(u64, T)>,
}

impl<T: Clone> ForkLocal<T> {
    /// `value`, made in this process.
    pub fn new(value: T) -> Self {
        ForkLocal {
            live: Mutex::new((fork_generation(), value)),
        }
    }

    /// The value of this process: in a child forked after it was made, `rebuild` makes
    /// one from the parent's (which is leaked, not dropped).
    pub fn get(&self, rebuild: impl FnOnce(&T) -> PyResult<T>) -> PyResult<T> {
        let mut live = self.live.lock().expect("fork-local lock");
        if live.0 != fork_generation() {
            let fresh = (fork_generation(), rebuild(&live.1)?);
            std::mem::forget(std::mem::replace(&mut *live, fresh));
        }
        Ok(live.1.clone())
    }
}
