//! Jobs of a batch scheduler tied to their data (issue 38): a job's stage-in starts at
//! submission, while the job queues, and its first step waits for it, verified; its
//! stage-out follows its end.
//!
//! Slurm is the scheduler: its commands, as typed calls, are [`slurm`]; a `job submit`
//! command line and the wrapper of its script, [`wrap`].

pub mod slurm;
pub mod stage;
pub mod wrap;

pub use slurm::{JobId, JobInfo, JobState, Slurm};
pub use stage::{OnFailure, StagedFile, expected_of, wait_stage_in};
pub use wrap::{SubmitLine, wrapper_script};
