//! Token trees: representation, derived buffers, construction, verification.

mod batch;
mod build;
mod float_bits;
mod mask;
mod sequoia;
mod shape;
mod template;
mod token_tree;
mod verify;
mod verify_stochastic;

pub use batch::{PaddedTrees, TreeBatch};
pub(crate) use build::TrieBuilder;
pub use build::{fuse, ScoreCombine, ScoreMode};
pub use float_bits::{Bf16Bits, F16Bits};
pub use mask::{MaskDtype, MaskValue, Padded, MASK_CACHE_MAX_NODES, MAX_MASK_ELEMENTS};
pub use sequoia::{optimal_template, AcceptanceTable, MAX_DP_WORK};
pub use shape::{AncestorBits, Children, TreeShape};
pub use template::TreeTemplate;
pub(crate) use token_tree::check_token_ids;
pub use token_tree::TokenTree;
pub use verify::{
    verify_greedy_batch, verify_greedy_batch_padded, PaddedVerifications, Verification,
};
pub use verify_stochastic::{verify_stochastic_batch, Prob, CDF_CHUNK};
