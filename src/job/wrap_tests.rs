//! Reading `job submit` command lines and writing wrappers; running a wrapper under
//! Slurm is in `tests/job.rs`.

use super::*;

fn words(line: &str) -> Vec<OsString> {
    line.split(' ').map(OsString::from).collect()
}

const OURS: &[&str] = &["stage-in", "stage-out"];
const FLAGS: &[&str] = &["hold-until-staged"];

#[test]
fn options_up_to_the_script_are_ours_or_sbatchs_and_the_rest_the_scripts() {
    let line = SubmitLine::parse(
        &words("--stage-in a:/x:/y -J name --time=10 -N 2 --hold-until-staged --stage-out=b -p debug job.sh -J --stage-in z"),
        OURS,
        FLAGS,
    )
    .unwrap();
    assert_eq!(
        line.ours,
        [
            ("stage-in".to_owned(), Some("a:/x:/y".into())),
            ("hold-until-staged".to_owned(), None),
            ("stage-out".to_owned(), Some("b".into())),
        ]
    );
    assert_eq!(line.sbatch, words("-J name --time=10 -N 2 -p debug"));
    assert_eq!(line.script, PathBuf::from("job.sh"));
    assert_eq!(
        line.args,
        words("-J --stage-in z"),
        "after SCRIPT, all the script's"
    );
}

#[test]
fn separate_values_of_sbatch_options_are_not_taken_for_the_script() {
    let line = SubmitLine::parse(
        &words("--job-name run.sh --output out.txt -vJ j -c4 real.sh arg"),
        OURS,
        FLAGS,
    )
    .unwrap();
    assert_eq!(
        line.sbatch,
        words("--job-name run.sh --output out.txt -vJ j -c4")
    );
    assert_eq!(line.script, PathBuf::from("real.sh"));
    assert_eq!(line.args, words("arg"));
    let dashed = SubmitLine::parse(&words("-N 1 -- -odd-name.sh x"), OURS, FLAGS).unwrap();
    assert_eq!(dashed.script, PathBuf::from("-odd-name.sh"));
}

#[test]
fn options_we_decide_or_cannot_wrap_are_refused_saying_what_instead() {
    for (line, says) in [
        ("--hold job.sh", "--hold-until-staged"),
        ("-H job.sh", "--hold-until-staged"),
        ("-vH job.sh", "--hold-until-staged"),
        ("--wrap=hostname", "give a script"),
        ("--array 1-4 job.sh", "arrays"),
        ("-a 1-4 job.sh", "arrays"),
        ("--parsable job.sh", "printed"),
        ("-W job.sh", "job status"),
    ] {
        let e = SubmitLine::parse(&words(line), OURS, FLAGS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{line}");
        assert!(e.to_string().contains(says), "{line}: {e}");
    }
    for line in ["-J name", "--stage-in", "-J", "--", ""] {
        let e = SubmitLine::parse(&words(line), OURS, FLAGS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{line:?}");
    }
}

#[test]
fn a_wrapper_keeps_the_directives_gates_on_the_first_step_and_carries_the_script() {
    let script = b"#!/bin/bash\n# a comment\n#SBATCH -J named\n\n#SBATCH --time=5\necho hi\n#SBATCH --not-a-directive-any-more\n";
    let step = [OsString::from("ps-globus"), OsString::from("it's")];
    let wrapper = String::from_utf8(wrapper_script(script, &step).unwrap()).unwrap();
    let lines: Vec<&str> = wrapper.lines().collect();
    assert_eq!(
        lines[..3],
        ["#!/bin/sh", "#SBATCH -J named", "#SBATCH --time=5"]
    );
    assert_eq!(
        wrapper.matches("#SBATCH").count(),
        5,
        "2 copied, and the script's 3 inside it, past the wrapper's first command"
    );
    assert!(
        wrapper.contains("'ps-globus' 'it'\\''s' || exit $?\n"),
        "{wrapper}"
    );
    assert!(wrapper.contains("#!/bin/bash\n# a comment\n#SBATCH -J named\n\n"));
    // Not a batch script, or not text: refused as sbatch would.
    for bad in [&b"echo hi\n"[..], b"#!/bin/sh\n\0"] {
        let e = wrapper_script(bad, &step).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}
