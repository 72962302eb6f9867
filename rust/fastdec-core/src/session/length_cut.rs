//! The draft-length controller's decision: how many tokens of each row's chain to verify (see
//! [`super::DraftLength`] for what it has measured).

use super::{step_design, DraftLength, RowState, COLD_FLOOR};
use crate::session::cost_fit::dot;

/// What a step of the candidate cut verifies beyond the forced rows' drafts.
#[derive(Debug, Clone, Copy)]
struct Token {
    row: usize,
    /// cumulative acceptance (0 for filler past the chain's end)
    q: f64,
}

impl DraftLength {
    pub(super) fn random(&mut self) -> f64 {
        // splitmix64: exploration only needs a cheap, seeded stream
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// How many leading tokens of each row's chain (given by its confidences and the row's
    /// state) to draft, for a step of these rows alone and without filler (see
    /// [`DraftLength::cut_step`]).
    pub fn cut_batch(&mut self, chains: &[&[f64]], rows: &[RowState]) -> Vec<usize> {
        self.cut_step(chains, rows, None, chains.len())
    }

    /// How many tokens to draft for each row: its chain's leading tokens, then, where `room`
    /// allows (the most draft tokens row `i` may get, at most `k`) and padding is on, filler
    /// past the chain's end. `batch_rows`: the rows of the engine step, drafting or not.
    ///
    /// Until the cost is measured, whole chains while no outcome is known, then each chain as
    /// far as its estimated acceptance stays `>= COLD_FLOOR`. Then the cut that maximises what
    /// the step is expected to emit minus what it costs at the engine's rate `R`:
    /// `sum(q) - R * seconds(step)`, where `q` is each verified token's cumulative acceptance
    /// (filler: 0) and a step's seconds are the fitted line over its shape plus the measured
    /// correction for its width (`cost_curve`). Tokens enter in order of `q` (a chain's `q`
    /// never rises along it, so every candidate is a prefix of each chain), and every number of
    /// tokens is tried: a row drafts when its tokens pay for a drafting row's cost too, the
    /// batch when they pay for a step that verifies drafts at all, and filler when the engine
    /// runs a wider step faster (a CPU BLAS on one query token against a few).
    pub fn cut_step(
        &mut self,
        chains: &[&[f64]],
        rows: &[RowState],
        room: Option<&[usize]>,
        batch_rows: usize,
    ) -> Vec<usize> {
        let k = self.config.k;
        let chain_len: Vec<usize> = chains.iter().map(|c| c.len().min(k)).collect();
        if !self.config.enabled {
            return chain_len;
        }
        let measured = self.rate.is_finite();
        // filler is drafted only once the cost is measured, or by an explored row (else a row
        // without chains would never time a wider step)
        let reach = |i: usize, pad: bool| match room {
            Some(r) if pad => r.get(i).copied().unwrap_or(0).min(k),
            Some(r) => chain_len[i].min(r.get(i).copied().unwrap_or(0)),
            None => chain_len[i],
        };
        let most: Vec<usize> = (0..chains.len())
            .map(|i| reach(i, self.config.pad && measured))
            .collect();
        let mut keeps = most.clone();
        let mut forced = vec![false; most.len()];
        let explore = self.config.explore;
        if explore > 0.0 {
            for i in 0..most.len() {
                let r = self.random();
                if r < explore {
                    forced[i] = true;
                    // half draft nothing, half a uniform length (every width gets timed)
                    let most = reach(i, self.config.pad);
                    keeps[i] = if r < explore / 2.0 {
                        0
                    } else {
                        1 + ((r - explore / 2.0) / (explore / 2.0) * most as f64) as usize
                    }
                    .min(most);
                }
            }
        }
        if !measured {
            if self.overall.tried > 0.0 {
                for (i, conf) in chains.iter().enumerate() {
                    if forced[i] {
                        continue;
                    }
                    let row = rows.get(i).copied().unwrap_or_default();
                    let mut q = 1.0;
                    let mut n = 0;
                    while n < keeps[i] {
                        q *= self.probability(n, conf[n], row);
                        if q < COLD_FLOOR {
                            break;
                        }
                        n += 1;
                    }
                    keeps[i] = n;
                }
            }
            return keeps;
        }
        // every candidate token of the rows the controller decides, likeliest first
        let mut tokens: Vec<Token> = Vec::new();
        for (i, conf) in chains.iter().enumerate() {
            if forced[i] {
                continue;
            }
            let row = rows.get(i).copied().unwrap_or_default();
            let mut q = 1.0;
            for j in 0..most[i] {
                q = if j < chain_len[i] {
                    q * self.probability(j, conf[j], row)
                } else {
                    0.0
                };
                tokens.push(Token { row: i, q });
            }
        }
        // stable: a row's tokens keep their order where their q ties
        tokens.sort_by(|a, b| b.q.total_cmp(&a.q));
        let forced_tokens: usize = (0..keeps.len())
            .filter(|&i| forced[i])
            .map(|i| keeps[i])
            .sum();
        let forced_rows = (0..keeps.len())
            .filter(|&i| forced[i] && keeps[i] > 0)
            .count();
        let batch = batch_rows.max(chains.len());
        let w = self.cost;
        let seconds = |drafting: usize, drafted: usize| {
            dot(&step_design(batch, drafting, drafted), &w)
                + self.curve.residual(batch + drafted, &w)
        };
        let mut taken = vec![0usize; chains.len()];
        let (mut gain, mut drafting) = (0.0, forced_rows);
        let mut best = (-self.rate * seconds(drafting, forced_tokens), 0);
        for (t, token) in tokens.iter().enumerate() {
            gain += token.q;
            if taken[token.row] == 0 {
                drafting += 1;
            }
            taken[token.row] += 1;
            let value = gain - self.rate * seconds(drafting, forced_tokens + t + 1);
            // a longer cut must be better by more than rounding
            if value > best.0 + 1e-9 {
                best = (value, t + 1);
            }
        }
        for (i, keep) in keeps.iter_mut().enumerate() {
            if !forced[i] {
                *keep = 0;
            }
        }
        for token in &tokens[..best.1] {
            keeps[token.row] += 1;
        }
        keeps
    }
}

#[cfg(test)]
#[path = "length_cut_tests.rs"]
mod tests;
