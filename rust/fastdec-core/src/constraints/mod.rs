//! Constrained decoding: token vocabularies as bytes, the [`Constraint`] trait with regex and
//! grammar constraints on the decoded text, adaptive weighted rejection sampling (AWRS), which
//! samples from the constrained distribution while checking only a few tokens per step instead
//! of masking the whole vocabulary, and constrained pruning and verification of draft trees.

pub mod awrs;
pub mod constraint;
mod draws;
pub mod grammar;
pub mod regex;
mod rng;
mod softmax;
pub mod tree_verify;
pub mod vocab;

pub use awrs::{Estimator, MaskFallback, Rng, Sample};
pub use constraint::Constraint;
pub use grammar::{
    GrammarCompiler, GrammarConstraint, GrammarSource, GrammarState, LazyGrammarCompiler,
};
pub use regex::RegexConstraint;
pub use tree_verify::{prune_tree, verify_tree, ConstrainedVerification, Pruned, Target};
pub use vocab::TokenVocab;
