//! Core errors to Python exceptions: bad values `ValueError`, bad indices `IndexError`,
//! missing keys `KeyError`, files `OSError` (the orphan rule forbids `From<core::Error> for PyErr` here).

use fastdec_core::{Error, ErrorKind};
use pyo3::exceptions::{PyIndexError, PyKeyError, PyOSError, PyValueError};
use pyo3::PyErr;

/// Maps a core error to the matching Python exception, message unchanged.
pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err.kind() {
        ErrorKind::Index => PyIndexError::new_err(msg),
        ErrorKind::Key => PyKeyError::new_err(msg),
        ErrorKind::Value => PyValueError::new_err(msg),
        ErrorKind::Io => PyOSError::new_err(msg),
    }
}
