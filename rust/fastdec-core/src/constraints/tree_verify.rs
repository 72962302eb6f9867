//! Constrained speculative decoding over a draft tree: drafts the constraint forbids are pruned
//! before the target scores them, and every emitted token is drawn from the target restricted
//! to the constraint.
//!
//! At a node `u` whose text is in state `s` the target law is `g(x) = p_u(x) l_s(x) / Z`.
//! Verification draws `y ~ g` (greedy: the allowed token of highest logit, lowest id among
//! ties; sampling: one AWRS step, Lipkin et al. 2025) and moves to the child carrying `y` if
//! there is one, else emits `y` as the bonus and stops. Every emitted token is an exact draw
//! from `g` whatever the tree, so the output has the law of plain constrained decoding (at
//! temperature 0: greedy decoding under the full mask), and a drafted child `x` is accepted
//! with probability `g(x)`, as the point-mass rule would (docs/design.md#stochastic).

use super::awrs::{self, Estimator, Rng};
use super::constraint::Constraint;
use crate::{Error, Result, TokenId, TokenTree};

/// Logit-ordered candidates checked before the full mask decides (greedy). Most steps end at
/// the first or second candidate; the mask costs a trie walk of the vocabulary.
pub const GREEDY_CANDIDATES: usize = 16;

/// A draft tree cut down to what a constraint allows.
#[derive(Debug, Clone)]
pub struct Pruned<S> {
    /// The kept nodes (ancestor-closed), renumbered in their original order.
    pub tree: TokenTree,
    /// The state after each kept node's text (the root's is the state given).
    pub states: Vec<S>,
    /// Whether nodes were removed (the tree's ids no longer match the proposal).
    pub changed: bool,
}

/// The outcome of verifying one pruned tree under a constraint.
#[derive(Debug, Clone)]
pub struct ConstrainedVerification<S> {
    /// Accepted node ids of the pruned tree, root first.
    pub accepted_nodes: Vec<i32>,
    /// The token after the path, or `None` at a dead end (nothing allowed has mass).
    pub bonus_token: Option<TokenId>,
    /// The state after the bonus token (after the path at a dead end).
    pub state: S,
}

/// The target's scores at every node of a tree, row-major `[num_nodes, vocab_size]`.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Logits: greedy verification.
    Logits(&'a [f32]),
    /// Warped probabilities (need not be normalised): sampled verification.
    Probs32(&'a [f32]),
    /// Warped probabilities in float64.
    Probs64(&'a [f64]),
}

impl Target<'_> {
    fn len(&self) -> usize {
        match self {
            Target::Logits(x) | Target::Probs32(x) => x.len(),
            Target::Probs64(x) => x.len(),
        }
    }
}

/// The subtree of `tree` whose every token `constraint` allows after the text in `state` (the
/// root stands for text already there), and each kept node's state. One walk in node order:
/// parents come first, so a node is kept iff its parent was and its token is allowed. Tokens
/// outside the constraint's vocabulary are pruned (the target cannot emit them).
pub fn prune_tree<C: Constraint>(
    constraint: &C,
    tree: &TokenTree,
    state: &C::State,
) -> Pruned<C::State> {
    let n = tree.num_nodes();
    let vocab = constraint.vocab().len();
    let parents = tree.parents();
    let tokens = tree.tokens();
    let mut state_of: Vec<Option<C::State>> = Vec::with_capacity(n);
    state_of.push(Some(state.clone()));
    for i in 1..n {
        let t = tokens[i];
        let next = match &state_of[parents[i] as usize] {
            Some(s) if (t as usize) < vocab => constraint.advance_unchecked(s, t),
            _ => None,
        };
        state_of.push(next);
    }
    let keep: Vec<bool> = state_of.iter().map(Option::is_some).collect();
    let states: Vec<C::State> = state_of.into_iter().flatten().collect();
    let changed = states.len() < n;
    let tree = if changed {
        tree.subtree(&keep)
    } else {
        tree.clone()
    };
    Pruned {
        tree,
        states,
        changed,
    }
}

/// Verifies a pruned tree: `states[i]` is the state after node `i`'s text (as
/// [`prune_tree`] returns them; asked questions of, left unchanged), `target` the target's
/// rows, `rng` the randomness of sampled verification (greedy reads none).
///
/// # Errors
/// [`Error::LengthMismatch`] for a state or target row count that does not match the tree or
/// rows that are not `vocab_size` wide; [`Error::InvalidValue`] for a NaN logit or bad
/// probabilities in a visited row (see [`awrs::check_probs`]).
pub fn verify_tree<C: Constraint>(
    constraint: &C,
    tree: &TokenTree,
    states: &mut [C::State],
    target: Target<'_>,
    rng: &mut Rng,
) -> Result<ConstrainedVerification<C::State>> {
    let n = tree.num_nodes();
    let vocab = constraint.vocab().len();
    if states.len() != n {
        return Err(Error::LengthMismatch {
            what: "states",
            expected: n,
            got: states.len(),
        });
    }
    if target.len() != n * vocab {
        return Err(Error::LengthMismatch {
            what: "target rows (num_nodes * vocab_size values)",
            expected: n * vocab,
            got: target.len(),
        });
    }
    let mut accepted_nodes = vec![0i32];
    let mut mask = Vec::new();
    let mut row64 = Vec::new();
    let mut u = 0usize;
    loop {
        let rows = u * vocab..(u + 1) * vocab;
        let s = &mut states[u];
        let y = match target {
            Target::Logits(all) => greedy_pick(constraint, s, &all[rows], &mut mask)?,
            Target::Probs32(all) => {
                row64.clear();
                row64.extend(all[rows].iter().map(|&p| f64::from(p)));
                sample_pick(constraint, s, &row64, rng)?
            }
            Target::Probs64(all) => sample_pick(constraint, s, &all[rows], rng)?,
        };
        let Some(y) = y else {
            return Ok(ConstrainedVerification {
                accepted_nodes,
                bonus_token: None,
                state: states[u].clone(),
            });
        };
        let Some(child) = tree.find_child(u, y) else {
            let after = constraint.advance_unchecked(&states[u], y);
            return Ok(ConstrainedVerification {
                accepted_nodes,
                bonus_token: Some(y),
                state: after.unwrap_or_else(|| states[u].clone()),
            });
        };
        accepted_nodes.push(child as i32);
        u = child;
    }
}

/// The allowed token of highest logit (lowest id among equal logits, as `argmax` of the
/// masked row), or `None` when nothing is allowed.
fn greedy_pick<C: Constraint>(
    constraint: &C,
    state: &mut C::State,
    row: &[f32],
    mask: &mut Vec<u32>,
) -> Result<Option<TokenId>> {
    if let Some(i) = row.iter().position(|x| x.is_nan()) {
        return Err(Error::InvalidValue {
            what: "logit",
            index: i,
            value: "NaN".to_owned(),
            expected: "logits must not be NaN",
        });
    }
    for t in top_candidates(row, GREEDY_CANDIDATES) {
        if constraint.allows_unchecked(state, t) {
            return Ok(Some(t));
        }
    }
    mask.clear();
    mask.resize(row.len().div_ceil(32), 0);
    constraint.fill_mask(state, mask)?;
    let mut best: Option<usize> = None;
    for t in (0..row.len()).filter(|&t| mask[t / 32] >> (t % 32) & 1 == 1) {
        if best.is_none_or(|b| row[t] > row[b]) {
            best = Some(t);
        }
    }
    Ok(best.map(|t| t as TokenId))
}

/// The `k` token ids of highest logit, best first, lower id first among equal logits (the order
/// in which the first allowed one is the argmax of the masked row). One pass, O(V k) worst case
/// and O(V) in practice (most logits lose to the current k-th).
pub fn top_candidates(row: &[f32], k: usize) -> Vec<TokenId> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (t, &x) in row.iter().enumerate() {
        if best.len() == k && best.last().is_none_or(|&(worst, _)| x <= worst) {
            continue;
        }
        // After every entry with a logit >= x: equal logits keep ascending ids.
        let at = best.partition_point(|&(y, _)| y >= x);
        best.insert(at, (x, t));
        best.truncate(k);
    }
    best.into_iter().map(|(_, t)| t as TokenId).collect()
}

/// One AWRS draw from `probs` restricted to what the constraint allows.
fn sample_pick<C: Constraint>(
    constraint: &C,
    state: &mut C::State,
    probs: &[f64],
    rng: &mut Rng,
) -> Result<Option<TokenId>> {
    let mut check = |t: TokenId| constraint.allows_unchecked(state, t);
    Ok(awrs::sample(probs, &mut check, Estimator::None, rng)?.token)
}
