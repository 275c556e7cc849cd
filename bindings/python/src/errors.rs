//! ps-globus errors as Python exceptions.
//!
//! The classes live in Python (`ps_globus/errors.py`), so that they pickle back from a
//! Parsl or Globus Compute worker to a process that never imported this extension's
//! internals; here each library error picks its class and fills its attributes.

use ps_globus::{Error, ErrorKind};
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
    fields.set_item("kind", format!("{:?}", error.kind()))?;
    fields.set_item("hint", error.hint())?;
    fields.set_item("transient", error.is_transient())?;
    let class = match error {
        Error::TransferFailed {
            task_id,
            code,
            description,
            source_path,
            destination_path,
        } => {
            fields.set_item("task_id", task_id)?;
            fields.set_item("code", code)?;
            fields.set_item("description", description)?;
            fields.set_item("source_path", source_path)?;
            fields.set_item("destination_path", destination_path)?;
            "TransferFailed"
        }
        Error::NeedsAttention { task_id, .. } => {
            fields.set_item("task_id", task_id)?;
            fields.set_item("code", "NEEDS_ATTENTION")?;
            "NeedsAttention"
        }
        Error::Integrity {
            path,
            expected,
            found,
        } => {
            fields.set_item("path", path.display().to_string())?;
            fields.set_item("expected", expected)?;
            fields.set_item("found", found)?;
            "IntegrityError"
        }
        Error::ConsentRequired {
            required_scopes,
            collections,
        } => {
            fields.set_item("required_scopes", required_scopes.clone())?;
            fields.set_item("collections", collections.clone())?;
            "ConsentRequired"
        }
        Error::LoginRequired { .. } | Error::Unauthorized { .. } => "LoginRequired",
        _ => match error.kind() {
            ErrorKind::Timeout => "WaitTimeout",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PermissionDenied => "LoginRequired",
            ErrorKind::Integrity => "IntegrityError",
            ErrorKind::TransferFailed => "TransferFailed",
            ErrorKind::Service => "ServiceError",
            ErrorKind::Storage => "StorageError",
            _ => "PsGlobusError",
        },
    };
    let class = module.getattr(class)?;
    let instance = class.call((error.to_string(),), Some(&fields))?;
    Ok(PyErr::from_value(instance))
}

/// Raises the Python exception of a library error named by `variant`, with made-up
/// fields: the tests check every class the mapping above can produce, including those
/// (a consent, a refused login) that need a person's login to provoke for real.
#[pyfunction]
pub fn _raise_library_error(py: Python<'_>, variant: &str) -> PyResult<()> {
    use std::time::Duration;
    let error = match variant {
        "TransferFailed" => Error::TransferFailed {
            task_id: Some("task-1".into()),
            code: "FILE_NOT_FOUND".into(),
            description: "No such file".into(),
            source_path: "/a/x".into(),
            destination_path: "/b/x".into(),
        },
        "NeedsAttention" => Error::NeedsAttention {
            task_id: "task-2".into(),
            reason: "paused".into(),
            fix: "log in again".into(),
        },
        "Integrity" => Error::Integrity {
            path: "/b/x".into(),
            expected: "3 bytes, sha256 aa".into(),
            found: "3 bytes, sha256 bb".into(),
        },
        "ConsentRequired" => Error::ConsentRequired {
            required_scopes: vec!["scope-1".into()],
            collections: vec!["collection-1".into()],
        },
        "LoginRequired" => Error::LoginRequired {
            reason: "no stored login".into(),
        },
        "Unauthorized" => Error::Unauthorized {
            message: "token expired".into(),
        },
        "Timeout" => Error::Timeout {
            what: "a transfer".into(),
            after: Duration::from_secs(1),
        },
        "MalformedKey" => Error::MalformedKey {
            reason: "bad id".into(),
        },
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "no such variant {other:?}"
            )));
        }
    };
    Err(to_py_err(py, error))
}
