//! Optimal static templates by Sequoia's dynamic program (Chen et al. 2024, arXiv 2402.12374,
//! §3.1): under the positional-acceptance assumption the expected number of accepted tokens of
//! a template is `F(T) = sum over nodes v of prod over edges on root->v of p(depth, rank)`
//! (the root counts 1, the bonus token is not included), and the best tree for a node budget
//! and depth limit decomposes over subtrees.

use super::template::TreeTemplate;
use crate::{Error, Result, MAX_NODES};

/// Acceptance probabilities per child rank, optionally per depth: `p(d, r)` is the probability
/// that the rank-`r` child of an accepted node at depth `d` is accepted (row `d` of a
/// `[rows, ranks]` table; depths beyond the last row reuse it, so one row = a plain vector).
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptanceTable {
    probs: Vec<f64>,
    rows: usize,
    ranks: usize,
}

impl AcceptanceTable {
    /// A table of `rows` rows of `ranks` probabilities, row-major.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::LengthMismatch`], or [`Error::InvalidValue`] for a value
    /// outside `[0, 1]`.
    pub fn new(probs: Vec<f64>, rows: usize, ranks: usize) -> Result<Self> {
        if rows == 0 || ranks == 0 {
            return Err(Error::Empty { what: "acceptance" });
        }
        if rows.checked_mul(ranks) != Some(probs.len()) {
            // saturating: a product that overflows usize cannot match any length
            let expected = rows.saturating_mul(ranks);
            return Err(Error::LengthMismatch {
                what: "acceptance",
                expected,
                got: probs.len(),
            });
        }
        if ranks > MAX_NODES {
            return Err(Error::TooManyNodes {
                what: "acceptance ranks",
                num_nodes: ranks,
                max: MAX_NODES,
            });
        }
        if let Some(index) = probs.iter().position(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::InvalidValue {
                what: "acceptance probability",
                index,
                value: probs[index].to_string(),
                expected: "probabilities must be in [0, 1]",
            });
        }
        Ok(AcceptanceTable { probs, rows, ranks })
    }

    /// Number of ranks per row.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// `p(parent_depth, rank)`; 0 for ranks beyond the table.
    pub fn prob(&self, parent_depth: usize, rank: usize) -> f64 {
        if rank >= self.ranks {
            return 0.0;
        }
        let row = parent_depth.min(self.rows - 1);
        self.probs[row * self.ranks + rank]
    }
}

impl TreeTemplate {
    /// Expected accepted draft tokens per step, `F(T) - 1`, under `acceptance`.
    pub fn expected_accepted(&self, acceptance: &AcceptanceTable) -> f64 {
        let parents = self.shape().parents();
        let depth = self.shape().depth();
        let mut reach = vec![1.0f64; self.num_nodes()];
        let mut total = 0.0;
        for i in 1..self.num_nodes() {
            let p = parents[i] as usize;
            reach[i] = reach[p] * acceptance.prob(depth[p] as usize, self.ranks()[i] as usize);
            total += reach[i];
        }
        total
    }
}

/// Upper bound on the DP's inner steps (a few seconds on one core).
pub const MAX_DP_WORK: u128 = 2_000_000_000;

/// The template of at most `budget` nodes (root included) and depth at most `max_depth` that
/// maximises expected accepted tokens, with that expectation (`F - 1`). Nodes that add nothing
/// (probability 0) are left out, so the template may use fewer nodes than the budget.
///
/// Cost: `O(max_depth * ranks * budget^2)` time, `O(max_depth * ranks * budget)` memory.
///
/// # Errors
/// [`Error::InvalidArgument`] for a budget outside `[1, MAX_NODES]`, a depth above it, or a
/// problem above [`MAX_DP_WORK`] steps.
#[allow(clippy::many_single_char_names)] // the paper's notation
pub fn optimal_template(
    acceptance: &AcceptanceTable,
    budget: usize,
    max_depth: usize,
) -> Result<(TreeTemplate, f64)> {
    if budget == 0 || budget > MAX_NODES {
        return Err(Error::arg(
            "budget",
            budget,
            format!("must be in [1, {MAX_NODES}]"),
        ));
    }
    if max_depth > MAX_NODES {
        return Err(Error::arg(
            "max_depth",
            max_depth,
            format!("must be <= {MAX_NODES}"),
        ));
    }
    let max_depth = max_depth.min(budget - 1);
    let ranks = acceptance.ranks();
    let b = budget;
    // The DP is O(max_depth * ranks * budget^2); refuse what would run for minutes or more.
    let work = (max_depth as u128) * (ranks as u128) * (b as u128) * (b as u128) / 2;
    if work > MAX_DP_WORK {
        return Err(Error::arg(
            "budget",
            budget,
            format!(
                "max_depth * ranks * budget^2 / 2 = {work} exceeds {MAX_DP_WORK} steps \
                 (max_depth {max_depth}, ranks {ranks}); use a smaller budget, depth or rank count"
            ),
        ));
    }
    // f[d][m]: best F of a subtree whose root sits at depth d, using at most m nodes (m >= 1).
    let mut f = vec![vec![1.0f64; b + 1]; max_depth + 1];
    // choice[d][r][k]: nodes given to rank r's subtree when ranks r.. share k nodes (0 = none).
    let mut choice = vec![vec![vec![0u16; b]; ranks]; max_depth];
    for d in (0..max_depth).rev() {
        // g[r][k]: best sum over ranks r.. of p(d, r) * f[d+1][j_r] with sum j_r <= k.
        let mut g = vec![vec![0.0f64; b]; ranks + 1];
        for r in (0..ranks).rev() {
            let p = acceptance.prob(d, r);
            for k in 0..b {
                let mut best = g[r + 1][k];
                let mut pick = 0u16;
                if p > 0.0 {
                    for j in 1..=k {
                        let v = p * f[d + 1][j] + g[r + 1][k - j];
                        if v > best {
                            best = v;
                            pick = j as u16;
                        }
                    }
                }
                g[r][k] = best;
                choice[d][r][k] = pick;
            }
        }
        for m in 1..=b {
            f[d][m] = 1.0 + g[0][m - 1];
        }
    }
    let mut paths: Vec<Vec<u32>> = Vec::new();
    // Depth-first reconstruction with an explicit stack: (rank path, depth, node budget).
    let mut stack = vec![(Vec::new(), 0usize, b)];
    while let Some((path, d, m)) = stack.pop() {
        if d == max_depth {
            continue;
        }
        let mut k = m - 1;
        for (r, by_k) in choice[d].iter().enumerate() {
            let j = by_k[k] as usize;
            if j > 0 {
                let mut child = path.clone();
                child.push(r as u32);
                paths.push(child.clone());
                stack.push((child, d + 1, j));
                k -= j;
            }
        }
    }
    let template = TreeTemplate::from_paths(&paths)?;
    let value = template.expected_accepted(acceptance);
    Ok((template, value))
}
