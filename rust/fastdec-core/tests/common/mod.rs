//! Helpers shared by the tree property-test binaries (`tree_props`, `tree_input_props`,
//! `verify_props`).

#![allow(dead_code)] // each test binary uses a different subset

use fastdec_core::{Error, TokenTree};

use crate::arb::TreeCase;
use crate::reference::Expected;

/// The facts of an error that the model predicts.
pub fn expected_of(e: &Error) -> Expected {
    match e {
        Error::Empty { .. } => Expected::Empty,
        Error::TooManyNodes { .. } => Expected::TooManyNodes,
        Error::LengthMismatch { expected, got, .. } => Expected::LengthMismatch {
            expected: *expected,
            got: *got,
        },
        Error::RootParent { parent } => Expected::RootParent { parent: *parent },
        Error::ParentNotBefore { node, parent } => Expected::ParentNotBefore {
            node: *node,
            parent: *parent,
        },
        Error::DuplicateSibling {
            parent,
            first,
            second,
            token,
        } => Expected::DuplicateSibling {
            parent: *parent,
            first: *first,
            second: *second,
            token: *token,
        },
        Error::InvalidValue { index, .. } => Expected::InvalidValue { index: *index },
        Error::InvalidArgument { .. } => Expected::InvalidArgument,
        Error::IndexOutOfRange { index, .. } => Expected::IndexOutOfRange { index: *index },
        other => panic!("unexpected error variant {other:?}"),
    }
}

pub fn build(case: &TreeCase) -> TokenTree {
    TokenTree::new(case.tokens.clone(), case.parents.clone()).expect("generated trees are valid")
}
