//! A job's command line and its wrapped script.
//!
//! `ps-globus job submit [OUR OPTIONS] [SBATCH OPTIONS] SCRIPT [SCRIPT ARGS]` reads as
//! `sbatch` does: options up to the script, everything after it the script's. Which
//! `sbatch` options take a separate value is Slurm's table (`src/common/slurm_opt.c`,
//! options with `required_argument`); an option we decide ourselves, or that cannot go
//! with a wrapped script, is refused with what to use instead.
//!
//! The script sbatch receives is a wrapper: the user's `#SBATCH` lines (so that its
//! directives still apply), then a first step (waiting for the stage-in), then the user's
//! script, carried inside the wrapper as sbatch carries a script (a copy taken at
//! submission, whatever happens to the file later), run with the job's arguments.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, ErrorKind, Result};

/// `sbatch`'s long options that take a value, which may come as the next word.
const LONG_WITH_VALUE: &[&str] = &[
    "account",
    "acctg-freq",
    "array",
    "batch",
    "bb",
    "bbf",
    "begin",
    "chdir",
    "cluster",
    "cluster-constraint",
    "clusters",
    "comment",
    "constraint",
    "container",
    "container-id",
    "context",
    "core-spec",
    "cores-per-socket",
    "cpu-freq",
    "cpus-per-gpu",
    "cpus-per-task",
    "deadline",
    "delay-boot",
    "dependency",
    "distribution",
    "error",
    "exclude",
    "export",
    "export-file",
    "extra",
    "extra-node-info",
    "gid",
    "gpu-bind",
    "gpu-freq",
    "gpus",
    "gpus-per-node",
    "gpus-per-socket",
    "gpus-per-task",
    "gres",
    "gres-flags",
    "hint",
    "input",
    "job-name",
    "kill-on-invalid-dep",
    "licenses",
    "mail-type",
    "mail-user",
    "mcs-label",
    "mem",
    "mem-bind",
    "mem-per-cpu",
    "mem-per-gpu",
    "mincpus",
    "network",
    "nodefile",
    "nodelist",
    "nodes",
    "ntasks",
    "ntasks-per-core",
    "ntasks-per-gpu",
    "ntasks-per-node",
    "ntasks-per-socket",
    "ntasks-per-tres",
    "open-mode",
    "output",
    "partition",
    "prefer",
    "priority",
    "profile",
    "qos",
    "reservation",
    "segment",
    "signal",
    "sockets-per-node",
    "switches",
    "thread-spec",
    "threads-per-core",
    "time",
    "time-min",
    "tmp",
    "tres-bind",
    "tres-per-task",
    "uid",
    "wait-all-nodes",
    "wckey",
    "wrap",
];

/// `sbatch`'s short options that take a value (attached, or the next word).
const SHORT_WITH_VALUE: &str = "ABCDFGJLMNSabcdeimnopqtwx";

/// `sbatch` options refused, by long and short name, with what to do instead.
const REFUSED: &[(&str, Option<char>, &str)] = &[
    (
        "hold",
        Some('H'),
        "the stage-in decides the hold: use --hold-until-staged",
    ),
    (
        "parsable",
        None,
        "the job id is printed already (-F json for all of it)",
    ),
    (
        "wrap",
        None,
        "give a script: its first step waits for the stage-in",
    ),
    (
        "array",
        Some('a'),
        "job arrays are not supported yet: submit one job per stage-in",
    ),
    (
        "wait",
        Some('W'),
        "follow the job with `ps-globus job status` or `job watch`",
    ),
    ("test-only", None, "nothing would be staged for it"),
    ("help", Some('h'), "see `sbatch --help`"),
    ("usage", None, "see `sbatch --usage`"),
    ("version", Some('V'), "see `sbatch --version`"),
];

/// One option of ours found on the command line, and its value if it takes one.
pub type OwnOption = (String, Option<OsString>);

/// A `job submit` command line, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitLine {
    /// Our options, in order (as `--name`, without the dashes).
    pub ours: Vec<OwnOption>,
    /// `sbatch`'s options, as given.
    pub sbatch: Vec<OsString>,
    /// The batch script.
    pub script: PathBuf,
    /// The script's arguments.
    pub args: Vec<OsString>,
}

impl SubmitLine {
    /// Reads `words` (after `job submit`). `ours_with_value` and `our_flags` are our
    /// options' long names; everything else before the script goes to `sbatch`.
    pub fn parse(
        words: &[OsString],
        ours_with_value: &[&str],
        our_flags: &[&str],
    ) -> Result<SubmitLine> {
        let mut line = SubmitLine {
            ours: Vec::new(),
            sbatch: Vec::new(),
            script: PathBuf::new(),
            args: Vec::new(),
        };
        let mut rest = words.iter();
        while let Some(word) = rest.next() {
            let text = word.to_string_lossy();
            if text == "--" {
                let script = rest.next().ok_or_else(|| usage("no SCRIPT after --"))?;
                line.script = script.into();
                break;
            }
            if let Some(long) = text.strip_prefix("--") {
                let (name, attached) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(OsString::from(value))),
                    None => (long, None),
                };
                refuse_long(name)?;
                let ours = ours_with_value.contains(&name);
                let takes_value = ours || LONG_WITH_VALUE.contains(&name);
                let value = match (attached, takes_value) {
                    (Some(value), _) => Some(value),
                    (None, true) => Some(
                        rest.next()
                            .ok_or_else(|| usage(&format!("--{name} needs a value")))?
                            .clone(),
                    ),
                    (None, false) => None,
                };
                if ours || our_flags.contains(&name) {
                    line.ours.push((name.to_owned(), value));
                } else {
                    line.sbatch.push(word.clone());
                    if attached_separately(&text, &value) {
                        line.sbatch.extend(value);
                    }
                }
                continue;
            }
            if text.starts_with('-') && text.len() > 1 {
                line.sbatch.push(word.clone());
                // Bundled flags, the last of them perhaps taking the next word.
                for (at, letter) in text.char_indices().skip(1) {
                    refuse_short(letter)?;
                    if SHORT_WITH_VALUE.contains(letter) {
                        if at + letter.len_utf8() == text.len() {
                            let value = rest
                                .next()
                                .ok_or_else(|| usage(&format!("-{letter} needs a value")))?;
                            line.sbatch.push(value.clone());
                        }
                        break;
                    }
                }
                continue;
            }
            line.script = word.into();
            break;
        }
        if line.script.as_os_str().is_empty() {
            return Err(usage("no SCRIPT: give the batch script to submit"));
        }
        line.args = rest.cloned().collect();
        Ok(line)
    }
}

/// Whether a long option's value came as the next word (so it goes to sbatch after it).
fn attached_separately(text: &str, value: &Option<OsString>) -> bool {
    value.is_some() && !text.contains('=')
}

fn refuse_long(name: &str) -> Result<()> {
    match REFUSED.iter().find(|(long, _, _)| *long == name) {
        Some((_, _, instead)) => Err(usage(&format!("sbatch's --{name} is refused: {instead}"))),
        None => Ok(()),
    }
}

fn refuse_short(letter: char) -> Result<()> {
    match REFUSED.iter().find(|(_, short, _)| *short == Some(letter)) {
        Some((long, _, instead)) => Err(usage(&format!(
            "sbatch's -{letter} (--{long}) is refused: {instead}"
        ))),
        None => Ok(()),
    }
}

fn usage(message: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!(
            "job submit: {message} (usage: job submit [OUR OPTIONS] [SBATCH OPTIONS] SCRIPT [ARGS])"
        ),
    )
}

/// The wrapper of `script` (the user's batch script, as read at submission): its
/// `#SBATCH` lines, then `first_step` (a command; the job ends with its exit status if
/// it fails, the script not run; the `export NAME='value'` lines it writes to descriptor
/// 3 are run), then the script itself with the job's arguments.
pub fn wrapper_script(script: &[u8], first_step: &[OsString]) -> Result<Vec<u8>> {
    if !script.starts_with(b"#!") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the batch script's first line must start with #! and the path to an \
             interpreter (as sbatch requires)",
        ));
    }
    if script.contains(&0) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the batch script holds a NUL byte: it is not a text file",
        ));
    }
    let delimiter = format!("PS_GLOBUS_SCRIPT_{}", uuid::Uuid::new_v4().simple());
    let mut out = b"#!/bin/sh\n".to_vec();
    out.extend(directives(script));
    // The first step runs before the script is copied out: a step that ends the job
    // (a failed stage-in; `scancel`; `scontrol requeuehold`, whose SIGKILL no trap
    // sees) leaves nothing behind on the node.
    out.extend_from_slice(
        b"# Written by `ps-globus job submit`: the first step waits for the job's stage-in\n\
          # (verified), then the batch script below runs with the job's arguments.\n",
    );
    // What the step writes to descriptor 3 are `export NAME='value'` lines for the script
    // (the local paths of the references it resolved), run here. Only that: its standard
    // output goes to the job's output, with its standard error, never to `eval`.
    if !first_step.is_empty() {
        out.extend_from_slice(b"ps_globus_exports=$(");
        for (n, word) in first_step.iter().enumerate() {
            if n > 0 {
                out.push(b' ');
            }
            out.extend(shell_quoted(word));
        }
        out.extend_from_slice(b" 3>&1 1>&2) || exit $?\neval \"$ps_globus_exports\"\n");
    }
    out.extend_from_slice(
        b"ps_globus_script=$(mktemp \"${TMPDIR:-/tmp}/ps-globus-job.XXXXXX\") || exit 1\n\
          trap 'rm -f \"$ps_globus_script\"' EXIT\n\
          trap 'exit 129' HUP\ntrap 'exit 130' INT\ntrap 'exit 143' TERM\n",
    );
    out.extend_from_slice(format!("cat > \"$ps_globus_script\" <<'{delimiter}'\n").as_bytes());
    out.extend_from_slice(script);
    if !script.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("{delimiter}\n").as_bytes());
    out.extend_from_slice(b"chmod 700 \"$ps_globus_script\"\n\"$ps_globus_script\" \"$@\"\n");
    Ok(out)
}

/// The `#SBATCH` lines sbatch reads from `script`: those before its first command
/// (after the `#!` line, among comments and blank lines).
fn directives(script: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in script.split(|&b| b == b'\n').skip(1) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        if !trimmed.starts_with(b"#") {
            break;
        }
        if trimmed.starts_with(b"#SBATCH") {
            out.extend_from_slice(trimmed);
            out.push(b'\n');
        }
    }
    out
}

/// `word` quoted for `sh`: in single quotes, a `'` as `'\''`.
pub fn shell_quoted(word: &OsStr) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in word.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
#[path = "wrap_tests.rs"]
mod tests;
