//! The one error type of the core crate. Every message names the offending value and what was
//! expected, so that it can reach Python users unchanged.

use thiserror::Error;

/// Which Python exception an [`Error`] becomes at the binding boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad shapes or values (`ValueError`).
    Value,
    /// An index or id outside its valid range (`IndexError`).
    Index,
    /// A missing key such as an unknown request id (`KeyError`).
    Key,
    /// A file that cannot be read or written (`OSError`).
    Io,
}

/// Errors returned by fastdec-core. Caller input never panics; it ends up here.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum Error {
    /// An input that must hold at least one element is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// Name of the empty input.
        what: &'static str,
    },
    /// A tree (or requested size) above [`crate::MAX_NODES`].
    #[error("{what} of {num_nodes} nodes exceeds the maximum of {max} nodes")]
    TooManyNodes {
        /// What was too large.
        what: &'static str,
        /// The requested size.
        num_nodes: usize,
        /// The limit.
        max: usize,
    },
    /// Two inputs that must have matching lengths do not.
    #[error("{what} has length {got}, expected {expected}")]
    LengthMismatch {
        /// Name of the input with the wrong length.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Node 0 must be the root (parent -1).
    #[error("node 0 is the root and must have parent -1, got {parent}")]
    RootParent {
        /// The parent given for node 0.
        parent: i64,
    },
    /// A node whose parent does not come before it.
    #[error("node {node} has parent {parent}; parents must come first (0 <= parent < {node})")]
    ParentNotBefore {
        /// The node.
        node: usize,
        /// Its parent as given.
        parent: i64,
    },
    /// Two children of one node carry the same token.
    #[error(
        "nodes {first} and {second} are both children of node {parent} with token {token}; \
         siblings must carry distinct tokens"
    )]
    DuplicateSibling {
        /// The common parent.
        parent: usize,
        /// The earlier sibling.
        first: usize,
        /// The later sibling.
        second: usize,
        /// The repeated token.
        token: u32,
    },
    /// A value outside its domain (a negative token id, a NaN score, ...).
    #[error("{what} {value} at index {index} is invalid: {expected}")]
    InvalidValue {
        /// What kind of value.
        what: &'static str,
        /// Position of the value in its input.
        index: usize,
        /// The value, formatted.
        value: String,
        /// The valid domain.
        expected: &'static str,
    },
    /// An index outside `0..len`.
    #[error("{what} {index} out of range for {len} {of}")]
    IndexOutOfRange {
        /// What kind of index.
        what: &'static str,
        /// The index as given.
        index: i64,
        /// The valid length.
        len: usize,
        /// What the index counts.
        of: &'static str,
    },
    /// A request id that was never started, or was stopped or evicted.
    #[error("unknown request id {id} (never started, stopped, or evicted as least recently used)")]
    UnknownRequest {
        /// The id, formatted.
        id: String,
    },
    /// An argument outside its domain.
    #[error("invalid {name} = {value}: {expected}")]
    InvalidArgument {
        /// The argument name as the caller spells it.
        name: &'static str,
        /// The value, formatted.
        value: String,
        /// The valid domain.
        expected: String,
    },
    /// A grammar or JSON Schema the grammar compiler rejects.
    #[error("invalid {what}: {message}")]
    Grammar {
        /// `"schema"` or `"grammar"`.
        what: &'static str,
        /// The compiler's message (it names the position).
        message: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// An error about the contents of a file (it keeps the kind of `error`).
    #[error("{path}: {error}")]
    InFile {
        /// The file.
        path: String,
        /// What is wrong with its contents.
        error: Box<Error>,
    },
}

impl Error {
    /// The Python exception class this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::IndexOutOfRange { .. } => ErrorKind::Index,
            Error::UnknownRequest { .. } => ErrorKind::Key,
            Error::Io { .. } => ErrorKind::Io,
            Error::InFile { error, .. } => error.kind(),
            _ => ErrorKind::Value,
        }
    }

    pub(crate) fn io(path: &std::path::Path, err: &std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: err.to_string(),
        }
    }

    pub(crate) fn arg(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
