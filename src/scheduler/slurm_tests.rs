//! Reading Slurm's outputs; running its commands against a cluster is in
//! `tests/job.rs`.

use super::*;

#[test]
fn sbatch_parsable_gives_the_id_and_cluster() {
    assert_eq!(
        JobId::parse_parsable("4242\n").unwrap(),
        JobId {
            id: 4242,
            cluster: None
        }
    );
    let federated = JobId::parse_parsable("17;perlmutter\n").unwrap();
    assert_eq!(federated.cluster.as_deref(), Some("perlmutter"));
    assert_eq!(federated.to_string(), "17;perlmutter");
    // A site's submit filter may print a notice first: the last line is the answer.
    assert_eq!(
        JobId::parse_parsable("note: using default account\n99\n")
            .unwrap()
            .id,
        99
    );
}

#[test]
fn sbatch_output_that_is_no_job_id_is_a_service_error_quoting_it() {
    for text in ["", "Submitted batch job 12", "-1", "18446744073709551616"] {
        let e = JobId::parse_parsable(text).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Service, "{text:?}");
        assert!(e.to_string().contains("sbatch --parsable"), "{e}");
    }
}

#[test]
fn scontrol_one_line_gives_state_reason_and_hold() {
    let held = "JobId=1 JobName=wrap UserId=root(0) Priority=0 Nice=0 JobState=PENDING \
                Reason=JobHeldUser Dependency=(null) ExitCode=0:0 Command=/a path/with spaces";
    let info = JobInfo::parse_scontrol(held).unwrap();
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.reason, "JobHeldUser");
    assert!(info.held);
    let done = "JobId=1 Priority=4294901759 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0";
    let info = JobInfo::parse_scontrol(done).unwrap();
    assert_eq!(
        (info.state, info.held, info.exit_code.as_str()),
        (JobState::Failed, false, "3:0")
    );
    // `Reason` is not `ReasonX`: keys match whole.
    let info = JobInfo::parse_scontrol("JobState=RUNNING ReasonX=odd").unwrap();
    assert_eq!(info.reason, "None");
    let e = JobInfo::parse_scontrol("slurm_load_jobs error: something").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Service);
}

#[test]
fn states_read_sacct_words_and_know_which_are_final() {
    assert_eq!(JobState::parse("CANCELLED by 0"), JobState::Cancelled);
    assert_eq!(JobState::parse("COMPLETED"), JobState::Completed);
    assert_eq!(
        JobState::parse("REQUEUED"),
        JobState::Other("REQUEUED".into())
    );
    for state in [
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
    ] {
        assert!(JobState::parse(state).is_final(), "{state}");
        assert_eq!(JobState::parse(state).as_str(), state);
    }
    for state in ["PENDING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"] {
        assert!(!JobState::parse(state).is_final(), "{state}");
    }
}

#[tokio::test]
async fn a_missing_command_is_an_error_naming_it() {
    let empty = tempfile::tempdir().unwrap();
    let slurm = Slurm::from_path().in_dir(empty.path());
    let e = slurm
        .submit(&[], Path::new("job.sh"), &[], false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("`sbatch`"), "{e}");
}
