//! Greedy (temperature 0) tree verification, docs/design.md#greedy: walk from the root, moving to the
//! child whose token equals the target's argmax at the current node; the argmax where the walk
//! stops is the bonus token. Distinct siblings make the walk unique.

use super::token_tree::TokenTree;
use crate::{Error, Result, TokenId};

/// Outcome of verifying one tree (greedily or stochastically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Accepted node ids, root first (`num_accepted + 1` entries, ascending).
    pub accepted_nodes: Vec<i32>,
    /// The token emitted after the last accepted node (the target's argmax, or the bonus draw).
    pub bonus_token: TokenId,
}

impl Verification {
    /// Number of accepted draft tokens (root excluded).
    pub fn num_accepted(&self) -> usize {
        self.accepted_nodes.len() - 1
    }

    /// The tokens this step emits: the accepted drafts, then the bonus token.
    pub fn emitted_tokens(&self, tree: &TokenTree) -> Vec<TokenId> {
        let mut out: Vec<TokenId> = self.accepted_nodes[1..]
            .iter()
            .map(|&i| tree.tokens()[i as usize])
            .collect();
        out.push(self.bonus_token);
        out
    }
}

impl TokenTree {
    /// Greedy verification against `target_argmax[i]`, the target's argmax token at node `i`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `target_argmax` does not have one entry per node;
    /// [`Error::InvalidValue`] for a negative token.
    pub fn verify_greedy(&self, target_argmax: &[i32]) -> Result<Verification> {
        if target_argmax.len() != self.num_nodes() {
            return Err(Error::LengthMismatch {
                what: "target_argmax",
                expected: self.num_nodes(),
                got: target_argmax.len(),
            });
        }
        self.verify_greedy_at(target_argmax, 0)
    }

    /// Verification with `offset` added to error indices (batched callers pass flat arrays).
    fn verify_greedy_at(&self, target_argmax: &[i32], offset: usize) -> Result<Verification> {
        if let Some(i) = target_argmax.iter().position(|&t| t < 0) {
            return Err(Error::InvalidValue {
                what: "target_argmax token",
                index: offset + i,
                value: target_argmax[i].to_string(),
                expected: "token ids must be >= 0",
            });
        }
        let first_child = self.shape.first_child();
        let next_sibling = self.shape.next_sibling();
        let mut accepted_nodes = Vec::with_capacity(self.max_depth() + 1);
        let mut cur = 0usize;
        accepted_nodes.push(0);
        loop {
            let want = target_argmax[cur] as TokenId;
            let mut child = first_child[cur];
            while child >= 0 && self.tokens[child as usize] != want {
                child = next_sibling[child as usize];
            }
            if child < 0 {
                return Ok(Verification {
                    accepted_nodes,
                    bonus_token: want,
                });
            }
            cur = child as usize;
            accepted_nodes.push(child);
        }
    }
}

/// Verifies a batch of trees. `target_argmax` is the concatenation of every tree's per-node
/// argmax (ragged layout, tree `b` at `cu_num_nodes[b]..cu_num_nodes[b + 1]`).
///
/// # Errors
/// [`Error::LengthMismatch`] if the total length differs from the total node count, or any
/// per-tree error with its index in the flat array.
pub fn verify_greedy_batch(
    trees: &[&TokenTree],
    target_argmax: &[i32],
) -> Result<Vec<Verification>> {
    let total: usize = trees.iter().map(|t| t.num_nodes()).sum();
    if target_argmax.len() != total {
        return Err(Error::LengthMismatch {
            what: "target_argmax",
            expected: total,
            got: target_argmax.len(),
        });
    }
    let mut offset = 0;
    trees
        .iter()
        .map(|tree| {
            let n = tree.num_nodes();
            let r = tree.verify_greedy_at(&target_argmax[offset..offset + n], offset);
            offset += n;
            r
        })
        .collect()
}

/// The outcomes of a batch in padded arrays (the layout batched callers and the CUDA kernel
/// use): row `b` of `accepted_nodes` is tree `b`'s path, root first, padded with -1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedVerifications {
    /// Trees in the batch.
    pub rows: usize,
    /// Columns of `accepted_nodes`: the longest possible path (largest depth + 1).
    pub width: usize,
    /// `[rows, width]` accepted node ids, -1 past each path.
    pub accepted_nodes: Vec<i32>,
    /// `[rows]` accepted draft tokens (root excluded).
    pub num_accepted: Vec<i32>,
    /// `[rows]` bonus tokens.
    pub bonus_tokens: Vec<i32>,
}

/// [`verify_greedy_batch`] with its outcomes padded ([`PaddedVerifications`]; width 1 for an
/// empty batch).
///
/// # Errors
/// As [`verify_greedy_batch`].
pub fn verify_greedy_batch_padded(
    trees: &[&TokenTree],
    target_argmax: &[i32],
) -> Result<PaddedVerifications> {
    let results = verify_greedy_batch(trees, target_argmax)?;
    let width = trees.iter().map(|t| t.max_depth() + 1).max().unwrap_or(1);
    let mut accepted_nodes = vec![-1i32; results.len() * width];
    for (row, r) in accepted_nodes.chunks_exact_mut(width).zip(&results) {
        row[..r.accepted_nodes.len()].copy_from_slice(&r.accepted_nodes);
    }
    Ok(PaddedVerifications {
        rows: results.len(),
        width,
        accepted_nodes,
        num_accepted: results.iter().map(|r| r.num_accepted() as i32).collect(),
        // Token ids are at most i32::MAX (`MAX_TOKEN_ID`).
        bonus_tokens: results.iter().map(|r| r.bonus_token as i32).collect(),
    })
}
