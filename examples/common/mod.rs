//! What the examples share: how they end. An error is a message on stderr (with the
//! library's hint, where it has one) and exit code 1, never a panic.

// `pub` for the examples that include this file, never an API.
#![allow(unreachable_pub)]

use std::process::ExitCode;

/// An example's result.
pub type Outcome = Result<(), Box<dyn std::error::Error>>;

/// Exit code 0, or 1 with the error (and its hint) on stderr.
pub fn exit_with(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(hint) = error
                .downcast_ref::<ps_globus::Error>()
                .and_then(ps_globus::Error::remedy)
            {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A usage error naming the example whose header documents its options.
#[allow(dead_code)] // not every example takes options
pub fn usage(example: &str, message: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("{message}; see the header of examples/{example}.rs").into()
}

/// The number after option `name` in `args`, or `default` when the option is absent; a
/// usage error naming `example` when its value is missing or not a number.
#[allow(dead_code)] // not every example takes options
pub fn number_arg(
    example: &str,
    args: &[String],
    name: &str,
    default: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    match text_arg(example, args, name)? {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| usage(example, format!("{name} takes a number, not {v:?}"))),
    }
}

/// The value after option `name` in `args`, if the option is given; a usage error naming
/// `example` when its value is missing.
#[allow(dead_code)] // not every example takes options
pub fn text_arg(
    example: &str,
    args: &[String],
    name: &str,
) -> Result<Option<String>, Box<dyn std::error::Error>> {
    match args.iter().position(|a| a == name).map(|i| args.get(i + 1)) {
        None => Ok(None),
        Some(Some(v)) => Ok(Some(v.clone())),
        Some(None) => Err(usage(example, format!("{name} needs a value"))),
    }
}
