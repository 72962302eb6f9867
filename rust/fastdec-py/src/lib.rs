//! `fastdec._core`: the thin PyO3 binding of fastdec-core. It converts types, releases the GIL
//! around real work and maps errors; all logic lives in the core crate.
// PyO3 extracts arguments by value (`PyRef`, `Vec<PyRef>`) and methods may ignore `self`
// (`__hash__`), and `'py` names the interpreter lifetime by convention.
#![allow(
    clippy::needless_pass_by_value,
    clippy::unused_self,
    clippy::elidable_lifetime_names
)]

mod bench;
mod constraints;
mod convert;
mod drafter;
mod error;
mod linear;
mod session;
mod template;
mod tree;
mod verify;

use pyo3::prelude::*;

/// The native module. Public names are re-exported (and documented) by `fastdec`.
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::bench::_time_tree_step;
    #[pymodule_export]
    use super::constraints::grammar::{PyGrammar, PyGrammarState, PyJsonSchema};
    #[pymodule_export]
    use super::constraints::tree::PyPrunedTree;
    #[pymodule_export]
    use super::constraints::{awrs_sample, softmax64, PyRegex, PyTokenVocab};
    #[pymodule_export]
    use super::drafter::{
        PyBaseDrafter, PyDraftBatch, PyHybridDrafter, PyNgramDrafter, PyRecycleDrafter,
        PyTrieDrafter,
    };
    #[pymodule_export]
    use super::linear::_linear_rows;
    #[pymodule_export]
    use super::session::{PyDraftLength, PyDraftSession};
    #[pymodule_export]
    use super::template::{optimal_template, PyTreeTemplate};
    #[pymodule_export]
    use super::tree::{verify_greedy_batch, PyTokenTree};
    #[pymodule_export]
    use super::verify::verify_stochastic_batch;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("MAX_NODES", fastdec_core::MAX_NODES)?;
        // AWRS rejections before the full-mask fallback by default (benches report it).
        m.add("_MASK_AFTER", fastdec_core::constraints::awrs::MASK_AFTER)?;
        Ok(())
    }
}
