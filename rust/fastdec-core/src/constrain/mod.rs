//! Constrained decoding: token vocabularies as bytes, regex constraints on the decoded text, and
//! adaptive weighted rejection sampling (AWRS), which samples from the constrained distribution
//! while checking only a few tokens per step instead of masking the whole vocabulary.

pub mod awrs;
mod draws;
pub mod grammar;
pub mod regex;
mod rng;
mod softmax;
pub mod vocab;

pub use awrs::{Estimator, MaskFallback, Rng, Sample};
pub use grammar::{GrammarCompiler, GrammarConstraint, GrammarSource, GrammarState};
pub use regex::RegexConstraint;
pub use vocab::TokenVocab;
