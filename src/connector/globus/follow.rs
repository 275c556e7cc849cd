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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::transfer::path::normalise_path;
use crate::transfer::states::TaskStatus;
use crate::transfer::types::Task;
use crate::transfer::watch::{WatchGuard, Watcher};
use crate::transfer::{RESPLIT_SUFFIX, TaskQuery, TransferClient, resplit_label};

/// How long a reader whose object's task was cancelled looks for the re-split that may
/// carry the object on, before it reports the cancel: the producer's manager submits a
/// re-split within moments of its cancel.
const RESPLIT_GRACE: Duration = Duration::from_secs(15);

/// One followed label.
struct Member {
    label: String,
    _watch: WatchGuard,
    /// A re-split not seen yet is waited for until then, and ignored after.
    appear_by: Option<Instant>,
    /// Its task's skipped errors were looked through for this object.
    skips_checked: bool,
}

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

/// Where the object goes: for the errors that name it.
pub(super) struct Paths {
    pub source: String,
    pub destination: String,
}

/// The tasks of the family of one label, followed.
pub(super) struct Family {
    root: String,
    watcher: Arc<Watcher>,
    members: Vec<Member>,
}

impl Family {
    /// Follows the batch labelled `root`.
    pub fn new(watcher: Arc<Watcher>, root: &str) -> Self {
        let mut family = Family {
            root: root.to_owned(),
            watcher,
            members: Vec::new(),
        };
        family.follow(root, None);
        family
    }

    /// Follows `label` too; false if it was followed already.
    fn follow(&mut self, label: &str, appear_by: Option<Instant>) -> bool {
        if self.members.iter().any(|m| m.label == label) {
            return false;
        }
        self.members.push(Member {
            label: label.to_owned(),
            _watch: self.watcher.watch(label),
            appear_by,
            skips_checked: false,
        });
        true
    }

    /// The task of the label the key names, as last seen.
    pub fn root_task(&self) -> Option<Task> {
        self.watcher.task(&self.root)
    }

    /// Whether any task of the family has been seen.
    pub fn any_seen(&self) -> bool {
        self.members
            .iter()
            .any(|m| self.watcher.task(&m.label).is_some())
    }

    /// One look at the family (see [`Step`]); `client` asks Globus for skipped errors
    /// and for the family's list.
    pub async fn step(&mut self, client: &TransferClient, paths: &Paths) -> Result<Step> {
        let now = Instant::now();
        // One look at the watcher per step: every decision below reads this snapshot.
        let mut tasks: Vec<Option<Task>> = self
            .members
            .iter()
            .map(|m| self.watcher.task(&m.label))
            .collect();
        // A cancelled task hands its unfinished items to a re-split.
        let resplits: Vec<String> = tasks
            .iter()
            .flatten()
            .filter(|t| cancelled(t))
            .filter_map(|t| t.label.as_deref())
            .filter(|label| !label.ends_with(RESPLIT_SUFFIX))
            .map(resplit_label)
            .collect();
        for label in resplits {
            if self.follow(&label, Some(now + RESPLIT_GRACE)) {
                tasks.push(self.watcher.task(&label));
            }
        }
        let open = self.members.iter().zip(&tasks).any(|(m, task)| match task {
            Some(task) => !task.is_final(),
            // The key's own label is waited for as long as the reader waits; a re-split
            // for its grace; a listed part until the watcher sees it.
            None => m.appear_by.is_none_or(|by| now < by),
        });
        if open {
            return Ok(Step::Wait);
        }
        // Everything followed has ended. A succeeded task may have skipped this object.
        let destination = normalise_path(&paths.destination);
        let mut looked = false;
        for (member, task) in self.members.iter_mut().zip(&tasks) {
            let Some(task) = task else { continue };
            if task.status != TaskStatus::Succeeded || member.skips_checked {
                continue;
            }
            member.skips_checked = true;
            looked = true;
            let skipped = client.skipped_errors(&task.task_id).await?;
            if let Some(s) = skipped
                .iter()
                .find(|s| normalise_path(&s.destination_path) == destination)
            {
                let (code, details) = (s.error_code.clone(), s.error_details.clone());
                return Ok(Step::Ended(Some(failed(task, code, details, paths))));
            }
        }
        if looked {
            return Ok(Step::LookAgain);
        }
        // Parts and re-splits this reader did not know of yet.
        if self.list_family(client).await? {
            return Ok(Step::Wait);
        }
        // A failure's own reason before a cancel's (which says less); of cancels, the
        // last followed (a re-split's, which carried the object on).
        let ended: Vec<&Task> = tasks
            .iter()
            .flatten()
            .filter(|t| t.status == TaskStatus::Failed)
            .collect();
        let failure = ended
            .iter()
            .find(|t| !cancelled(t))
            .or(ended.last())
            .map(|task| {
                let (code, description) = match &task.fatal_error {
                    Some(f) => (f.code.clone(), f.description.clone()),
                    None => ("FAILED".into(), "the Globus task failed".into()),
                };
                failed(task, code, description, paths)
            });
        Ok(Step::Ended(failure))
    }

    /// Lists every task labelled `ROOT-…` and follows those not followed yet; true if
    /// there were any. A list that fails is tried again at the next look.
    async fn list_family(&mut self, client: &TransferClient) -> Result<bool> {
        let prefix = format!("{}-", self.root);
        let query = TaskQuery {
            // `*` as globus-cli's inexact filters use it: a bare `~x` may match only x.
            filter: Some(format!("label:~{prefix}*")),
            limit: Some(1000),
            ..TaskQuery::default()
        };
        let page = match client.task_list(&query).await {
            Ok(page) => page,
            Err(e) if e.is_transient() => {
                tracing::debug!("listing the tasks of batch {} failed: {e}", self.root);
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let before = self.members.len();
        for label in page.data.iter().filter_map(|t| t.label.as_deref()) {
            if label.starts_with(&prefix) {
                self.follow(label, Some(Instant::now() + RESPLIT_GRACE));
            }
        }
        Ok(self.members.len() > before)
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
    Error::TransferFailed {
        task_id: Some(task.task_id.clone()),
        code,
        description,
        source_path: paths.source.clone(),
        destination_path: paths.destination.clone(),
    }
}
