//! fastdec-core: the algorithms behind fastdec, a library for lossless, training-free speculative
//! decoding. This crate is pure Rust (no Python); `fastdec-py` binds it as `fastdec._core`.
//!
//! # Token trees
//! A draft tree of `N` nodes is stored parents-first: node 0 is the root (the last accepted token,
//! whose K/V are not cached yet), `parents[0] = -1` and `parents[i] < i`, and siblings carry
//! distinct tokens. Every derived buffer (depths, position ids, ancestor masks, leaf paths,
//! first-child/next-sibling lists) then follows in one pass in node order, `O(N * depth)`.
//!
//! ```
//! use fastdec_core::TokenTree;
//!
//! // root 10 -> {11, 12}, 11 -> 13
//! let tree = TokenTree::new(vec![10, 11, 12, 13], vec![-1, 0, 0, 1])?;
//! assert_eq!(tree.position_ids(7)?, vec![7, 8, 8, 9]);
//! // the target's argmax at every node: it agrees with 11 then 13, then proposes 99
//! let result = tree.verify_greedy(&[11, 13, 0, 99])?;
//! assert_eq!(result.accepted_nodes, vec![0, 1, 3]);
//! assert_eq!(result.bonus_token, 99);
//! # Ok::<(), fastdec_core::Error>(())
//! ```
//!
//! # Limits
//! Trees hold at most [`MAX_NODES`] nodes; trees of at most 64 nodes keep each ancestor row in
//! one machine word (the fast path). Token ids are at most `i32::MAX` so that they cross into
//! int32 arrays unchanged.

#[doc(hidden)]
pub mod bench;
pub mod constraints;
pub mod drafter;
pub mod error;
pub mod linear;
pub mod parallel;
pub mod session;
pub mod tree;

pub use error::{Error, ErrorKind, Result};
pub use tree::{
    fuse, optimal_template, verify_greedy_batch, verify_greedy_batch_padded,
    verify_stochastic_batch, AcceptanceTable, AncestorBits, Bf16Bits, F16Bits, MaskDtype,
    MaskValue, Padded, PaddedTrees, PaddedVerifications, Prob, ScoreCombine, ScoreMode, TokenTree,
    TreeBatch, TreeShape, TreeTemplate, Verification, CDF_CHUNK,
};

/// A token id. Valid ids are `0..=MAX_TOKEN_ID`.
pub type TokenId = u32;

/// The largest token id (ids cross the Python boundary as int32).
pub const MAX_TOKEN_ID: TokenId = i32::MAX as TokenId;

/// The largest tree fastdec builds (nodes including the root). Bounds every O(N^2) buffer: a
/// dense float32 mask of this size is 64 MiB.
pub const MAX_NODES: usize = 4096;

/// Converts int32 token ids (the boundary dtype) to [`TokenId`]s, rejecting negatives.
///
/// # Errors
/// [`Error::InvalidValue`] naming the first negative id.
pub fn token_ids_from_i32(ids: &[i32], what: &'static str) -> Result<Vec<TokenId>> {
    // Check first, then cast: both loops vectorise (collecting through a per-element Result
    // does not, and cost ~3 ns per token).
    if let Some(index) = ids.iter().position(|&t| t < 0) {
        return Err(Error::InvalidValue {
            what,
            index,
            value: ids[index].to_string(),
            expected: "token ids must be >= 0",
        });
    }
    Ok(ids.iter().map(|&t| t as TokenId).collect())
}
