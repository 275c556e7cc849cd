//! The batch scheduler's side of jobs tied to their data (issue 38), published as
//! `ps_globus::job`: the scheduler's commands, the wrapper of a job's script, and its first
//! step, which waits for the stage-in, verified. It stands on the ground floor: what
//! tracks a job through the transfer manager is `staging/job/`.
//!
//! Slurm is the scheduler: its commands, as typed calls, are [`slurm`]; a `job submit`
//! command line and the wrapper of its script, [`wrap`].

pub mod slurm;
pub mod stage;
pub mod wrap;

pub use slurm::{JobId, JobInfo, JobState, Slurm};
pub use stage::{OnFailure, StagedFile, expected_of, wait_stage_in};
pub use wrap::{SubmitLine, shell_quoted, wrapper_script};
