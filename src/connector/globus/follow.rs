//! The Globus tasks an object may travel in, as its reader follows them.
//!
//! A key names the label of the batch its object was put in, `L`. Mostly that is one
//! task. But the task may be cancelled (fail-fast), and its unfinished items go on in a
//! re-split labelled `L-resplit`; and a batch too large to post is split, its parts
//! labelled `L-partN`, all posted before `L` itself (`transfer::manager`'s `split.rs`).
//! Every such label starts with `L-`: the *family* of `L`. When every task the reader
//! follows has ended without its object, it lists the family once (`label:~L-*`) and
//! follows what it did not know; only when that adds nothing is the object's fate
//! decided. A re-split appears moments after its cancel, so the reader waits a grace
//! period for one before it takes the cancel as final.
//!
//! [`Follow`] is that logic alone, a state machine with one method per event (a task
//! seen running, failed or succeeded; a succeeded task's verdict on the object's file;
//! the family's list; a tick that decides) and no I/O: its tests need no emulator.
//! [`Family`] drives it from the watcher and the Transfer client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, TransferFailure};
use crate::transfer::path::normalise_path;
use crate::transfer::states::TaskStatus;
use crate::transfer::types::{SkippedError, Task};
use crate::transfer::watch::{WatchGuard, Watcher};
use crate::transfer::{RESPLIT_SUFFIX, TaskQuery, TransferClient, resplit_label};

/// How long a reader whose object's task was cancelled looks for the re-split that may
/// carry the object on, before it reports the cancel: the producer's manager submits a
/// re-split within moments of its cancel.
const RESPLIT_GRACE: Duration = Duration::from_secs(15);

/// What the followed tasks say of the object, when its file is not there yet.
pub(super) enum Step {
    /// A task that may carry it is still on its way (or not seen yet): wait.
    Wait,
    /// A task just found to have succeeded without skipping it: the file should be
    /// there now; look once more.
    LookAgain,
    /// Every task that could carry it has ended: with this error for it, or (`None`)
    /// every one succeeded and none skipped it.
    Ended(Option<Error>),
}

/// What [`Follow::tick`] asks for next.
#[derive(Debug)]
pub(super) enum Next {
    /// See [`Step::Wait`].
    Wait,
    /// See [`Step::LookAgain`].
    LookAgain,
    /// See [`Step::Ended`].
    Ended(Option<Error>),
    /// Read these succeeded tasks' skipped errors, and tell each with
    /// [`Follow::file_verdict`].
    ReadSkips(Vec<String>),
    /// List the tasks labelled `ROOT-…` ([`Follow::family_filter`]) and tell them with
    /// [`Follow::family_listed`].
    ListFamily,
}

/// Where the object goes: for the errors that name it.
#[derive(Clone, Debug)]
pub(super) struct Paths {
    pub source: String,
    pub destination: String,
}

/// Whether a succeeded task's skipped errors were read for this object, and what they
/// said.
#[derive(Clone, Debug, PartialEq)]
enum Skips {
    Unread,
    /// The object is not among them.
    Clean,
    /// The object is, with this code and description.
    Skipped(String, String),
}

/// One followed label.
#[derive(Debug)]
struct Member {
    label: String,
    /// Its task as last seen.
    task: Option<Task>,
    /// A label not seen yet is waited for until then, and ignored after (`None`: the
    /// key's own label, waited for as long as the reader waits).
    appear_by: Option<Instant>,
    skips: Skips,
}

/// The family of one label, followed: what is known of its tasks and what to do next.
#[derive(Debug)]
pub(super) struct Follow {
    root: String,
    paths: Paths,
    members: Vec<Member>,
    /// A task just read clean: the file should be there, look once more.
    look_again: bool,
    /// How many members there were at the last list of the family: listed again only
    /// when that changed.
    listed_at: Option<usize>,
}

impl Follow {
    /// Follows the batch labelled `root`, of an object bound from `paths.source` to
    /// `paths.destination`.
    pub(super) fn new(root: &str, paths: Paths) -> Self {
        let mut follow = Follow {
            root: root.to_owned(),
            paths,
            members: Vec::new(),
            look_again: false,
            listed_at: None,
        };
        follow.follow(root, None);
        follow
    }

    /// The labels followed, the key's own first.
    pub(super) fn labels(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.label.as_str())
    }

    /// Whether any task of the family has been seen.
    pub(super) fn any_seen(&self) -> bool {
        self.members.iter().any(|m| m.task.is_some())
    }

    /// The filter that lists the family: `label:~ROOT-*` (`*` as globus-cli's inexact
    /// filters use it: a bare `~x` may match only x).
    pub(super) fn family_filter(&self) -> String {
        format!("label:~{}-*", self.root)
    }

    /// Event: `task`, of a followed label, as the watcher shows it now.
    pub(super) fn task_seen(&mut self, task: &Task, now: Instant) {
        match task.status {
            TaskStatus::Failed => self.task_failed(task, now),
            TaskStatus::Succeeded => self.task_succeeded(task),
            _ => {
                self.record(task);
            }
        }
    }

    /// Event: `task` failed; a cancelled one hands its unfinished items to a re-split,
    /// which is followed for its grace period.
    pub(super) fn task_failed(&mut self, task: &Task, now: Instant) {
        if self.record(task)
            && cancelled(task)
            && let Some(label) = task.label.as_deref()
            && !label.ends_with(RESPLIT_SUFFIX)
        {
            self.follow(&resplit_label(label), Some(now + RESPLIT_GRACE));
        }
    }

    /// Event: `task` succeeded; its skipped errors are to be read for this object.
    pub(super) fn task_succeeded(&mut self, task: &Task) {
        self.record(task);
    }

    /// Event: the skipped errors of the succeeded task `task_id` were read: whether
    /// they name this object's file.
    pub(super) fn file_verdict(&mut self, task_id: &str, skipped: &[SkippedError]) {
        let destination = normalise_path(&self.paths.destination);
        let verdict = match skipped
            .iter()
            .find(|s| normalise_path(&s.destination_path) == destination)
        {
            Some(s) => Skips::Skipped(s.error_code.clone(), s.error_details.clone()),
            None => Skips::Clean,
        };
        for member in &mut self.members {
            if member.task.as_ref().is_some_and(|t| t.task_id == task_id) {
                self.look_again |= verdict == Skips::Clean;
                member.skips = verdict.clone();
            }
        }
    }

    /// Event: the family's list, as the labels it holds; those not followed yet are
    /// followed until the watcher sees them (or their grace ends).
    pub(super) fn family_listed<'a>(
        &mut self,
        labels: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) {
        let prefix = format!("{}-", self.root);
        for label in labels {
            if label.starts_with(&prefix) {
                self.follow(label, Some(now + RESPLIT_GRACE));
            }
        }
        self.listed_at = Some(self.members.len());
    }

    /// Event: time passed. What the followed tasks say now, or what to find out first.
    pub(super) fn tick(&mut self, now: Instant) -> Next {
        let open = self.members.iter().any(|m| match &m.task {
            Some(task) => !task.is_final(),
            None => m.appear_by.is_none_or(|by| now < by),
        });
        if open {
            return Next::Wait;
        }
        // Everything followed has ended. A succeeded task may have skipped this object.
        if let Some(member) = self
            .members
            .iter()
            .find(|m| matches!(m.skips, Skips::Skipped(..)))
            && let (Some(task), Skips::Skipped(code, details)) = (&member.task, &member.skips)
        {
            return Next::Ended(Some(failed(
                task,
                code.clone(),
                details.clone(),
                &self.paths,
            )));
        }
        let unread: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.skips == Skips::Unread)
            .filter_map(|m| m.task.as_ref())
            .filter(|t| t.status == TaskStatus::Succeeded)
            .map(|t| t.task_id.clone())
            .collect();
        if !unread.is_empty() {
            return Next::ReadSkips(unread);
        }
        if std::mem::take(&mut self.look_again) {
            return Next::LookAgain;
        }
        // Parts and re-splits this reader did not know of yet.
        if self.listed_at != Some(self.members.len()) {
            return Next::ListFamily;
        }
        Next::Ended(self.failure())
    }

    /// A failure's own reason before a cancel's (which says less); of cancels, the last
    /// followed (a re-split's, which carried the object on).
    fn failure(&self) -> Option<Error> {
        let ended: Vec<&Task> = self
            .members
            .iter()
            .filter_map(|m| m.task.as_ref())
            .filter(|t| t.status == TaskStatus::Failed)
            .collect();
        let task = ended.iter().find(|t| !cancelled(t)).or(ended.last())?;
        let (code, description) = match &task.fatal_error {
            Some(f) => (f.code.clone(), f.description.clone()),
            None => ("FAILED".into(), "the Globus task failed".into()),
        };
        Some(failed(task, code, description, &self.paths))
    }

    /// Follows `label` too, unless it is followed already.
    fn follow(&mut self, label: &str, appear_by: Option<Instant>) {
        if !self.members.iter().any(|m| m.label == label) {
            self.members.push(Member {
                label: label.to_owned(),
                task: None,
                appear_by,
                skips: Skips::Unread,
            });
        }
    }

    /// Keeps `task` as its label's latest; false if its label is not followed.
    fn record(&mut self, task: &Task) -> bool {
        let member = self
            .members
            .iter_mut()
            .find(|m| task.label.as_deref() == Some(m.label.as_str()));
        match member {
            Some(member) => {
                member.task = Some(task.clone());
                true
            }
            None => false,
        }
    }
}

/// The family of one label, followed through the watcher, asking Globus what the watcher
/// does not show (skipped errors, the family's list).
pub(super) struct Family {
    follow: Follow,
    watcher: Arc<Watcher>,
    watches: Vec<WatchGuard>,
}

impl Family {
    /// Follows the batch labelled `root`.
    pub(super) fn new(watcher: Arc<Watcher>, root: &str, paths: Paths) -> Self {
        let mut family = Family {
            follow: Follow::new(root, paths),
            watcher,
            watches: Vec::new(),
        };
        family.watch_new();
        family
    }

    /// The task of the label the key names, as last seen.
    pub(super) fn root_task(&self) -> Option<Task> {
        self.watcher.task(&self.follow.root)
    }

    /// Whether any task of the family has been seen.
    pub(super) fn any_seen(&self) -> bool {
        self.follow.any_seen()
    }

    /// One look at the family (see [`Step`]); `client` asks Globus for skipped errors
    /// and for the family's list.
    pub(super) async fn step(&mut self, client: &TransferClient) -> Result<Step> {
        let now = Instant::now();
        self.observe(now);
        loop {
            match self.follow.tick(now) {
                Next::Wait => return Ok(Step::Wait),
                Next::LookAgain => return Ok(Step::LookAgain),
                Next::Ended(error) => return Ok(Step::Ended(error)),
                Next::ReadSkips(tasks) => {
                    for task in tasks {
                        let skipped = client.skipped_errors(&task).await?;
                        self.follow.file_verdict(&task, &skipped);
                    }
                }
                Next::ListFamily => {
                    let query = TaskQuery {
                        filter: Some(self.follow.family_filter()),
                        limit: Some(1000),
                        ..TaskQuery::default()
                    };
                    let page = match client.task_list(&query).await {
                        Ok(page) => page,
                        // Tried again at the next look.
                        Err(e) if e.is_transient() => {
                            tracing::debug!("listing a batch's family failed: {e}");
                            return Ok(Step::Wait);
                        }
                        Err(e) => return Err(e),
                    };
                    let labels = page.data.iter().filter_map(|t| t.label.as_deref());
                    self.follow.family_listed(labels, now);
                    self.watch_new();
                    self.observe(now);
                }
            }
        }
    }

    /// Tells the machine every followed label's task as the watcher shows it (one look
    /// each, repeated while a cancel adds a re-split to follow).
    fn observe(&mut self, now: Instant) {
        let mut seen = 0;
        while seen < self.watches.len() {
            let labels: Vec<String> = self.follow.labels().skip(seen).map(str::to_owned).collect();
            seen = self.watches.len();
            for label in labels {
                if let Some(task) = self.watcher.task(&label) {
                    self.follow.task_seen(&task, now);
                }
            }
            self.watch_new();
        }
    }

    /// Watches the labels the machine follows and this family does not watch yet.
    fn watch_new(&mut self) {
        let new: Vec<String> = self
            .follow
            .labels()
            .skip(self.watches.len())
            .map(str::to_owned)
            .collect();
        for label in new {
            self.watches.push(self.watcher.watch(&label));
        }
    }
}

/// Whether `task` ended cancelled.
fn cancelled(task: &Task) -> bool {
    task.status == TaskStatus::Failed
        && task
            .fatal_error
            .as_ref()
            .is_some_and(|f| f.code == "CANCELED")
}

/// The error for an object whose task `task` failed it with `code`.
fn failed(task: &Task, code: String, description: String, paths: &Paths) -> Error {
    Error::from(TransferFailure::new(
        Some(task.task_id.clone()),
        code,
        description,
        (paths.source.clone(), paths.destination.clone()),
    ))
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
