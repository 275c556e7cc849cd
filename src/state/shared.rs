//! One pool per process and database: every lease, store and call that asks for the
//! default state database shares it. (A pool per lease ran out of file handles after
//! ~340 leases on SQLite, and 40 leases held 82 PostgreSQL connections.)

use std::path::Path;

use super::{StateDb, state_url};
use crate::error::{Error, Result};
use crate::settings::Settings;

impl StateDb {
    /// The default state database (as [`open_default`](Self::open_default)), opened once
    /// per process and database: every lease, store and call of this process that asks for
    /// it shares one pool. (A pool per lease ran out of file handles after ~340 leases on
    /// SQLite, and 40 leases held 82 PostgreSQL connections.)
    pub async fn shared_default(settings: &Settings) -> Result<StateDb> {
        Self::shared_in(&settings.home, settings).await
    }

    /// [`open_in`](Self::open_in), opened once per process and database (see
    /// [`shared_default`](Self::shared_default)). The pool lives on the library runtime,
    /// so callers on short-lived runtimes share it safely.
    pub async fn shared_in(home: &Path, settings: &Settings) -> Result<StateDb> {
        /// The slot's own type: this process's open databases, by URL.
        #[derive(Default)]
        struct Shared(std::sync::Mutex<std::collections::HashMap<String, StateDb>>);
        let which = match state_url(settings)? {
            Some(url) => url,
            None => format!("sqlite:{}", home.join("state.db").display()),
        };
        let shared = &crate::process::own(Shared::default).0;
        if let Some(db) = shared.lock().expect("shared databases").get(&which) {
            return Ok(db.clone());
        }
        let (home, settings) = (home.to_owned(), settings.clone());
        let opened = crate::runtime::handle()
            .spawn(async move { Self::open_in(&home, &settings).await })
            .await
            .map_err(|e| Error::background("opening the state database", Some(e.into())))??;
        let mut shared = shared.lock().expect("shared databases");
        Ok(shared.entry(which).or_insert(opened).clone())
    }
}
