//! ps-globus errors as Python exceptions.
//!
//! The classes live in Python (`ps_globus/errors.py`), so that they pickle back from a
//! Parsl or Globus Compute worker to a process that never imported this extension's
//! internals; here each library error picks its class and fills its attributes.

use ps_globus::error::{
    AlreadySet, ConsentRequired, IntegrityMismatch, LeaseEnded, NeedsAttention, ProducerGone,
    Remedy, TransferFailure,
};
use ps_globus::{Error, ErrorKind, Settings};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The Python exception for `error`.
pub fn to_py_err(py: Python<'_>, error: Error) -> PyErr {
    build(py, &error).unwrap_or_else(|failed| {
        // The errors module itself failed to import: still say what went wrong.
        PyRuntimeError::new_err(format!("{error} (and ps_globus.errors failed: {failed})"))
    })
}

fn build(py: Python<'_>, error: &Error) -> PyResult<PyErr> {
    let module = py.import("ps_globus.errors")?;
    let fields = PyDict::new(py);
    fields.set_item("kind", kind_name(error.kind()))?;
    fields.set_item("hint", error.remedy().map(say))?;
    fields.set_item("transient", error.is_transient())?;
    let class = if let Some(failure) = error.downcast_ref::<TransferFailure>() {
        fields.set_item("task_id", &failure.task_id)?;
        fields.set_item("code", &failure.code)?;
        fields.set_item("description", &failure.description)?;
        fields.set_item("source_path", &failure.source_path)?;
        fields.set_item("destination_path", &failure.destination_path)?;
        "TransferFailed"
    } else if let Some(paused) = error.downcast_ref::<NeedsAttention>() {
        fields.set_item("task_id", &paused.task_id)?;
        fields.set_item("code", "NEEDS_ATTENTION")?;
        "NeedsAttention"
    } else if let Some(mismatch) = error.downcast_ref::<IntegrityMismatch>() {
        fields.set_item("path", mismatch.path.display().to_string())?;
        fields.set_item("expected", &mismatch.expected)?;
        fields.set_item("found", &mismatch.found)?;
        "IntegrityError"
    } else if let Some(set) = error.downcast_ref::<AlreadySet>() {
        fields.set_item("what", &set.what)?;
        "AlreadySet"
    } else if let Some(gone) = error.downcast_ref::<ProducerGone>() {
        fields.set_item("what", &gone.what)?;
        fields.set_item("reason", &gone.reason)?;
        "ProducerGone"
    } else if let Some(ended) = error.downcast_ref::<LeaseEnded>() {
        fields.set_item("lease", &ended.lease)?;
        "LeaseEnded"
    } else if let Some(consent) = error.downcast_ref::<ConsentRequired>() {
        fields.set_item("required_scopes", consent.required_scopes.clone())?;
        fields.set_item("collections", consent.collections.clone())?;
        "ConsentRequired"
    } else {
        match error.kind() {
            ErrorKind::Timeout => "WaitTimeout",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PermissionDenied => "LoginRequired",
            ErrorKind::Integrity => "IntegrityError",
            ErrorKind::TransferFailed => "TransferFailed",
            ErrorKind::Service | ErrorKind::Unreachable => "ServiceError",
            ErrorKind::Storage => "StorageError",
            _ => "PsGlobusError",
        }
    };
    let class = module.getattr(class)?;
    let instance = class.call((error.to_string(),), Some(&fields))?;
    Ok(PyErr::from_value(instance))
}

/// The `kind` attribute: the category's name. A service out of reach keeps the name
/// `Service` it had before the two were told apart.
fn kind_name(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::Unreachable => "Service".into(),
        other => format!("{other:?}"),
    }
}

/// A remedy, in the words of a Python user (who has the `ps-globus` command beside the
/// package for logging in).
fn say(remedy: &Remedy) -> String {
    match remedy {
        Remedy::Login { collections } if !collections.is_empty() => {
            let flags: Vec<String> = collections
                .iter()
                .map(|c| format!("--collection {c}"))
                .collect();
            format!("run `ps-globus login {}`", flags.join(" "))
        }
        Remedy::Login { .. } => format!("run `ps-globus login`, or {SERVICE_IDENTITY}"),
        Remedy::ResumeTaskByLogin => "run `ps-globus login` (with `--collection <id>` for each \
                                      collection involved); the task resumes by itself"
            .into(),
        // A token from the environment is used as is: a login would not replace it.
        Remedy::LoginAgain if Settings::from_env().access_token.is_some() => {
            "Globus refuses the token in PS_GLOBUS_ACCESS_TOKEN: set a valid one, or unset it to \
             use your stored login"
                .into()
        }
        Remedy::LoginAgain => format!("run `ps-globus login` again, or {SERVICE_IDENTITY}"),
        other => other.to_string(),
    }
}

/// Credentials for a process nobody can open a browser for.
const SERVICE_IDENTITY: &str =
    "set a service identity (PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET)";

/// Raises the Python exception of a library error named by `variant`, with made-up
/// fields: the tests check every class the mapping above can produce, including those
/// (a consent, a refused login) that need a person's login to provoke for real.
#[pyfunction]
pub fn _raise_library_error(py: Python<'_>, variant: &str) -> PyResult<()> {
    use std::time::Duration;
    let error = match variant {
        "TransferFailed" => TransferFailure::new(
            Some("task-1".into()),
            "FILE_NOT_FOUND",
            "No such file",
            ("/a/x", "/b/x"),
        )
        .into(),
        "NeedsAttention" => NeedsAttention::login("task-2", "paused").into(),
        "Integrity" => {
            IntegrityMismatch::new("/b/x", "3 bytes, sha256 aa", "3 bytes, sha256 bb").into()
        }
        "ConsentRequired" => {
            ConsentRequired::new(vec!["scope-1".into()], vec!["collection-1".into()]).into()
        }
        "AlreadySet" => AlreadySet::new("the future f").into(),
        "ProducerGone" => ProducerGone::new("the future f", "its producer failed").into(),
        "LeaseEnded" => LeaseEnded::new("lease-1").into(),
        "LoginRequired" => Error::login_required("no stored login"),
        "Unauthorized" => Error::unauthorized("token expired"),
        "Timeout" => Error::new(
            ErrorKind::Timeout,
            format!(
                "timed out after {:?} waiting for a transfer",
                Duration::from_secs(1)
            ),
        )
        .with_remedy(Remedy::RaiseLimitOrCheckTransfers),
        "MalformedKey" => Error::new(ErrorKind::InvalidInput, "malformed key: bad id"),
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "no such variant {other:?}"
            )));
        }
    };
    Err(to_py_err(py, error))
}
