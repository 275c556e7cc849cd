//! Which processes sharing the state database are alive, and the poller lease.
//!
//! A process is named `host:pid:start-time`: on its own host a pid is alive when
//! `/proc/<pid>/stat` shows the same start time (a reused pid is another process); on
//! another host, when its heartbeat is fresh. Work owned by a dead process (open
//! batches, half-submitted ones, the poller lease) is taken over by a live one.

use std::collections::BTreeSet;

use super::Inner;
use super::sql::{self, ProcessRow, now_ms};
use crate::error::Result;

/// This process, as it records itself in the database.
pub(crate) fn this_process() -> ProcessRow {
    let pid = std::process::id();
    let host = hostname();
    let started = process_start(pid).unwrap_or_else(|| now_ms().to_string());
    ProcessRow {
        owner: format!("{host}:{pid}:{started}"),
        host,
        pid,
        started,
        heartbeat_at: now_ms(),
    }
}

/// A running process's start time (field 22 of `/proc/<pid>/stat`), to tell a live pid
/// from a reused one; `None` if the process is gone, or has exited and only waits to be
/// reaped by its parent (a zombie holds no lease: treating it as alive kept the poller
/// lease of an exited `ps-globus transfer` for a whole lease period).
pub(super) fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Counted after the parenthesised command name, which may hold spaces: field 3 is
    // the state, field 22 the start time.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18).map(str::to_owned)
}

/// Whether the process named `owner` (`host:pid:start`) may still run: on this host,
/// its pid runs with the same start time; another host's cannot be checked from here
/// (a lease of theirs ends by expiring).
pub(crate) fn owner_alive(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(started), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return true;
    }
    pid.parse()
        .ok()
        .and_then(process_start)
        .is_some_and(|s| s == started)
}

/// The name this host goes by in the state database: `PS_GLOBUS_HOST_ID` when set
/// (containers or test "hosts" that share a kernel's host name), else the host name.
fn hostname() -> String {
    /// The slot's own type: read once, as the process's identity must not change.
    struct HostId(String);
    crate::process::inherited(|| HostId(host_id_default()))
        .0
        .clone()
}

/// The host name as the environment sets it, else the kernel's.
fn host_id_default() -> String {
    match &crate::settings::Settings::global().host_id {
        Some(id) => id.clone(),
        None => crate::config::host_name(),
    }
}

impl Inner {
    /// Owners that are alive: this process, processes on this host whose pid still runs
    /// with the same start time, and other hosts' processes with a fresh heartbeat.
    pub(super) async fn live_owners(&self) -> Result<BTreeSet<String>> {
        // Heartbeats are written by the database's clock, and read by it.
        let fresh = self.db.clock_ms().await? - 3 * self.config.lease_ttl.as_millis() as i64;
        Ok(sql::processes(&self.db)
            .await?
            .into_iter()
            .filter(|p| {
                if p.owner == self.owner {
                    true
                } else if p.host == self.host {
                    process_start(p.pid).as_deref() == Some(p.started.as_str())
                } else {
                    p.heartbeat_at > fresh
                }
            })
            .map(|p| p.owner)
            .collect())
    }

    /// Open batches whose process died are closed, so they get submitted; how many.
    pub(super) async fn close_orphaned_open_batches(&self) -> Result<usize> {
        let live = self.live_owners().await?;
        let mut closed = 0;
        for (batch, owner) in sql::open_batches(&self.db, &self.identity).await? {
            if !live.contains(&owner) {
                sql::adopt_open_batch(&self.db, batch, &self.owner).await?;
                closed += 1;
            }
        }
        self.fall_back_orphaned_lanes(&live).await?;
        Ok(closed)
    }

    /// Renews this process's heartbeat, which other hosts read as "alive".
    pub(super) async fn heartbeat(&self) -> Result<()> {
        sql::heartbeat(&self.db, &self.owner).await
    }

    /// Takes or renews the poller lease for this identity; true if this process polls.
    pub(super) async fn lease(&self) -> Result<bool> {
        let live = self.live_owners().await?;
        sql::take_lease(
            &self.db,
            &format!("poller:{}", self.identity),
            &self.owner,
            self.config.lease_ttl,
            |owner| live.contains(owner),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an exited child that its parent has not reaped yet (a zombie) was
    /// taken for alive, so its poller lease blocked every other process for a lease
    /// period.
    #[test]
    fn an_exited_but_unreaped_process_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        // Wait for the exit but leave the child unreaped: a zombie.
        let options =
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
        rustix::process::waitid(rustix::process::WaitId::Pid(pid), options).unwrap();
        assert!(std::fs::read_to_string(format!("/proc/{}/stat", child.id())).is_ok());
        assert_eq!(process_start(child.id()), None);
        let mut child = child;
        child.wait().unwrap();
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(
            process_start(std::process::id()),
            process_start(std::process::id())
        );
    }
}
