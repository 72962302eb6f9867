//! How many tokens of each linear draft are worth verifying, learnt from what the engine accepted
//! and what its steps cost (the draft-length controller of [`super::DraftSession`]).
//!
//! A draft token is worth verifying when what it is expected to add beats what it costs. If the
//! engine emits `R` tokens per second and one more verified token makes a step `b` seconds longer,
//! a token reached (all tokens before it accepted) and accepted with cumulative probability `q`
//! raises throughput iff `q / b > R`, i.e. `q >= tau = b * R` (`tau` in the stats). Where a
//! step's cost is not a line the marginal rule generalises to the cut that maximises
//! `sum(q) - R * seconds(step)` over every token count (`length_cut`). Both are measured:
//!
//! * `b` and `R` from the step clock: the seconds between consecutive engine steps regressed on
//!   the shape of the step verified in between (a constant, its rows, whether any row drafted,
//!   its drafting rows, its draft tokens), least squares with the costs kept `>= 0` and one refit
//!   without outlying steps, over a recent window; `R` as emitted tokens over seconds. The
//!   step-level term matters: on vLLM's CPU engine the first draft token of a step costs several
//!   ms (the rejection sampler, logits at draft positions), later ones about 1 ms. What a line
//!   cannot say, the step's *width* (rows plus draft tokens) adds: per width, the steps' mean
//!   seconds beyond the line (`cost_curve`; at one row on a CPU, 3-5 draft tokens can cost less
//!   than none, so the cut may then draft filler past a chain's end, see `length_cut`).
//! * `q` as the product of per-token acceptance probabilities, estimated per (depth, row match,
//!   row streak, drafter confidence bin) with shrinkage through coarser and coarser rates:
//!   (depth, match, streak), (depth, match), (depth, whether the depth lies within the match),
//!   within the match or not, overall. A chain token's confidence is its tree score over its
//!   parent's; a drafter without scores (prompt lookup) gives 1. The row's *match* is how much
//!   of the end of its text it has seen before (windows of 2, 4, 8, 16 tokens, see
//!   `suffix_match`): the signal SuffixDecoding (Oliaro et al. 2024, arXiv:2411.04975) caps its
//!   drafts with (at most as many tokens as matched), and the best single predictor in replays
//!   of the vLLM bench's outputs (`benches/vllm_replay.py`: first-token acceptance 0.15-0.17
//!   without a 2-token match, 0.92-1.0 with an 8-token one). Whether a depth lies within the
//!   match pools every depth's outcomes, so a cold controller learns that rule in a few steps.
//!   The row's *streak* counts the tokens its drafter's chains predicted in a row up to the
//!   latest miss (the chains as proposed, drafted or not): a row that is copying text keeps
//!   being right, one in free prose keeps missing (first-token acceptance 0.23-0.26 after a
//!   miss, 0.73-0.86 after three or more hits in the same replays). Outcomes are learnt from
//!   every chain token the engine's output decides, not only the drafted ones: a row that
//!   drafted nothing still says whether its chain's first token was right, and a draft accepted
//!   in full whether the next chain token was.
//!
//! Until the cost is measured (`min_steps` steps) there is no `tau`: a chain is drafted whole
//! while no outcome is known, then as far as its estimated acceptance stays at least
//! `COLD_FLOOR` (0.1, the path-probability floor SuffixDecoding drafts with). Whole chains all
//! through the cold steps cost a short workload much of its run (replay of the bench's code
//! edits, 3 requests at 4 rows: hybrid 60.2 -> 64.5 tok/s, 0.87x -> 0.94x SuffixDecoding's);
//! capping a cold row at its match instead starves drafts whose evidence is not the row's own
//! text (a trie's cross-request memory).
//!
//! A small share of rows (`explore`) drafts nothing (half of them) or a uniform length up to its
//! room, filler included (the other half), whatever the estimates say, so that neither the
//! acceptance nor a width's cost can get stuck on what is never drafted.
//!
//! Why `generate(budget="auto")` (and llama.cpp's tree loop) keep their own controller
//! (`fastdec.generation.budget.AutoBudget`) instead of this one: the two answer different
//! questions from different clocks. Here a batched engine decides, per row, how much of a
//! linear chain to verify; the cost is a line over a step's shape (rows, drafting rows, draft
//! tokens) timed between the engine's calls, and acceptance is per token. A single-sequence
//! tree loop decides one tree size per forward; its cost is the forward's own time against the
//! tree's node count, which on a CPU is not a line (flat to a few rows, then steps where the
//! matmuls change kernel), so it keeps a monotone (isotonic) curve per size, and its acceptance
//! is measured per size counterfactually from the accepted path of the tree actually verified.
//! A line fitted here would misprice small trees there; per-size curves there have no notion of
//! rows. The shared part is the rule: run what maximises measured tokens per second, plain
//! decoding (no draft) included.

use std::collections::VecDeque;

use super::cost_curve::CostCurve;
use super::cost_fit::{cost_fit, dot, median};
use super::suffix_match::MATCH_FROM;
use crate::{Error, Result, TokenId};

/// Engine steps between refits of the cost.
const REFIT_EVERY: u64 = 8;
/// Until the cost is measured, a draft token is kept while its chance of acceptance (with every
/// token before it) is at least this: the path-probability floor SuffixDecoding drafts with
/// (Arctic Inference's `min_token_prob`, 0.1).
const COLD_FLOOR: f64 = 0.1;
/// The most streak bins (the lower bounds of bins 1.. are `STREAK_FROM`).
pub const STREAK_BINS: usize = 6;
const STREAK_FROM: [u32; STREAK_BINS - 1] = [1, 2, 4, 8, 16];
/// The most match bins (no match, then one per window of `MATCH_FROM`).
pub const MATCH_BINS: usize = MATCH_FROM.len() + 1;
/// Per-observation decay of a step width's cost sums (about the last 50 steps of each width).
const CURVE_DECAY: f64 = 0.98;

/// A step's shape as the cost line reads it: 1, rows, whether any row drafted, drafting rows,
/// draft tokens.
pub(super) fn step_design(rows: usize, drafting: usize, tokens: usize) -> [f64; 5] {
    let any = f64::from(u8::from(drafting > 0));
    [1.0, rows as f64, any, drafting as f64, tokens as f64]
}

/// What the controller knows of a row when its chain is proposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowState {
    /// Tokens its drafter's chains predicted in a row up to the latest miss.
    pub streak: u32,
    /// The longest window (of `MATCH_FROM` tokens) ending its text that it held earlier too.
    pub matched: u32,
}

/// A row's streak after a step: `predicted` leading tokens of its chain matched the `emitted`
/// tokens; all of them matched (the chain may go on being right) or it missed.
pub fn next_streak(streak: u32, predicted: usize, emitted: usize) -> u32 {
    let p = u32::try_from(predicted).unwrap_or(u32::MAX);
    if predicted >= emitted {
        streak.saturating_add(p)
    } else {
        p
    }
}

/// The controller's settings (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LengthConfig {
    /// The most draft tokens per row.
    pub k: usize,
    /// Confidence bins per depth.
    pub bins: usize,
    /// Streak bins (streaks 0, 1, 2-3, 4-7, 8-15, 16+; fewer merge the longest; 1: ignored).
    pub streak_bins: usize,
    /// Match bins (no match, 2, 4, 8, 16+ tokens; fewer merge the longest; 1: ignored).
    pub match_bins: usize,
    /// Recent steps in the cost fit.
    pub window: usize,
    /// Steps measured before `tau` leaves 0 (draft everything until then).
    pub min_steps: usize,
    /// Share of rows drafted in full (half of it) or not at all (the other half).
    pub explore: f64,
    /// Per-observation decay of the acceptance counts.
    pub decay: f64,
    /// Pseudo-counts pulling a bin towards its depth's rate, and a depth towards the overall.
    pub shrink: f64,
    /// `false`: always draft the full chain.
    pub enabled: bool,
    /// Draft filler past a chain's end when the measured cost says a wider step is cheaper
    /// (see `cost_curve`).
    pub pad: bool,
}

impl LengthConfig {
    /// The defaults for drafts of at most `k` tokens.
    pub fn new(k: usize) -> Self {
        LengthConfig {
            k,
            bins: 8,
            streak_bins: 6,
            match_bins: MATCH_BINS,
            window: 128,
            min_steps: 16,
            explore: 0.05,
            decay: 0.998,
            shrink: 8.0,
            enabled: true,
            pad: true,
        }
    }

    fn check(&self) -> Result<()> {
        let checks: [(&'static str, bool, String); 9] = [
            ("k", self.k >= 1, self.k.to_string()),
            ("bins", self.bins >= 1, self.bins.to_string()),
            (
                "streak_bins",
                (1..=STREAK_BINS).contains(&self.streak_bins),
                self.streak_bins.to_string(),
            ),
            (
                "match_bins",
                (1..=MATCH_BINS).contains(&self.match_bins),
                self.match_bins.to_string(),
            ),
            ("window", self.window >= 4, self.window.to_string()),
            (
                "min_steps",
                2 <= self.min_steps && self.min_steps <= self.window,
                self.min_steps.to_string(),
            ),
            (
                "explore",
                (0.0..=1.0).contains(&self.explore),
                self.explore.to_string(),
            ),
            (
                "decay",
                self.decay > 0.0 && self.decay <= 1.0,
                self.decay.to_string(),
            ),
            ("shrink", self.shrink > 0.0, self.shrink.to_string()),
        ];
        for (name, ok, value) in checks {
            if !ok {
                return Err(Error::arg(name, value, "out of range for the draft length"));
            }
        }
        Ok(())
    }
}

/// Accepted / tried, decayed so that the estimate follows the text.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    accepted: f64,
    tried: f64,
}

impl Rate {
    fn add(&mut self, accepted: bool, decay: f64) {
        self.accepted = self.accepted * decay + f64::from(u8::from(accepted));
        self.tried = self.tried * decay + 1.0;
    }
}

/// What the controller has measured (see [`DraftLength::stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LengthStats {
    /// The cumulative acceptance a draft token must reach.
    pub tau: f64,
    /// Fitted seconds: fixed per step, per row, per step with drafts, per drafting row, per
    /// draft token (NaN until fitted).
    pub cost: [f64; 5],
    /// Emitted tokens per second.
    pub tokens_per_second: f64,
    /// Acceptance overall (NaN before any draft).
    pub acceptance: f64,
    /// Acceptance per depth.
    pub acceptance_by_depth: Vec<f64>,
    /// Steps in the cost window.
    pub steps: usize,
    /// Per step width (rows plus draft tokens) with enough steps: the decayed count of steps
    /// and their mean seconds beyond the fitted line.
    pub curve: Vec<(usize, f64, f64)>,
}

/// The draft-length controller (see the module docs).
#[derive(Debug, Clone)]
pub struct DraftLength {
    config: LengthConfig,
    // [depth][match][streak][confidence], [depth][match][streak], [depth][match],
    // [depth][within the match], [within the match]; per depth for the stats
    cells: Vec<Rate>,
    streaks: Vec<Rate>,
    matches: Vec<Rate>,
    within: Vec<Rate>,
    inside: [Rate; 2],
    depths: Vec<Rate>,
    overall: Rate,
    // (rows, any row drafting, drafting rows, draft tokens, seconds, emitted) per step
    steps: VecDeque<[f64; 6]>,
    rng: u64,
    observed: u64,
    cost: [f64; 5],
    rate: f64,
    curve: CostCurve,
    // the median step's seconds in the cost window (NaN before the first fit)
    typical: f64,
}

impl DraftLength {
    /// A controller with these settings.
    ///
    /// # Errors
    /// A setting out of range (named).
    pub fn new(config: LengthConfig) -> Result<Self> {
        config.check()?;
        Ok(DraftLength {
            cells: vec![
                Rate::default();
                config.k * config.match_bins * config.streak_bins * config.bins
            ],
            streaks: vec![Rate::default(); config.k * config.match_bins * config.streak_bins],
            matches: vec![Rate::default(); config.k * config.match_bins],
            within: vec![Rate::default(); config.k * 2],
            inside: [Rate::default(); 2],
            depths: vec![Rate::default(); config.k],
            overall: Rate::default(),
            steps: VecDeque::with_capacity(config.window),
            rng: 0x9E37_79B9_7F4A_7C15,
            observed: 0,
            cost: [f64::NAN; 5],
            rate: f64::NAN,
            curve: CostCurve::new(CURVE_DECAY),
            typical: f64::NAN,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LengthConfig {
        &self.config
    }

    /// Changes the share of rows drafted in full or not at all whatever `tau` says.
    ///
    /// # Errors
    /// A share outside `[0, 1]`.
    pub fn set_explore(&mut self, explore: f64) -> Result<()> {
        LengthConfig {
            explore,
            ..self.config
        }
        .check()?;
        self.config.explore = explore;
        Ok(())
    }

    fn bin(&self, confidence: f64) -> usize {
        let b = (confidence * self.config.bins as f64) as i64;
        b.clamp(0, self.config.bins as i64 - 1) as usize
    }

    /// The lower bound of the match bin of a row that matched `matched` tokens.
    fn match_floor(&self, matched: u32) -> u32 {
        MATCH_FROM
            .iter()
            .take(self.config.match_bins - 1)
            .take_while(|&&f| matched >= f)
            .last()
            .copied()
            .unwrap_or(0)
    }

    /// Indices of a token into `inside`, `within`, `matches`, `streaks` and `cells`.
    fn slots(&self, depth: usize, confidence: f64, row: RowState) -> [usize; 5] {
        let d = depth.min(self.config.k - 1);
        let bin = |from: &[u32], value: u32, bins: usize| {
            from.iter()
                .take_while(|&&f| value >= f)
                .count()
                .min(bins - 1)
        };
        let mb = bin(&MATCH_FROM, row.matched, self.config.match_bins);
        // SuffixDecoding drafts at most as many tokens as it matched: a token within that
        // length is the likelier, at any depth, which a cold controller learns from every
        // depth's outcomes at once
        let inside = usize::from(depth < self.match_floor(row.matched) as usize);
        let dm = d * self.config.match_bins + mb;
        let dms =
            dm * self.config.streak_bins + bin(&STREAK_FROM, row.streak, self.config.streak_bins);
        [
            inside,
            d * 2 + inside,
            dm,
            dms,
            dms * self.config.bins + self.bin(confidence),
        ]
    }

    /// Estimated chance that a draft token at `depth` (0 = first) with `confidence`, of a row
    /// in state `row`, is accepted, given that every token before it was.
    pub fn probability(&self, depth: usize, confidence: f64, row: RowState) -> f64 {
        let s = self.config.shrink;
        let shrunk = |r: Rate, towards: f64| (r.accepted + s * towards) / (r.tried + s);
        let o = self.overall;
        let p_all = (o.accepted + 0.5) / (o.tried + 1.0);
        let [i, di, dm, dms, c] = self.slots(depth, confidence, row);
        let p_inside = shrunk(self.inside[i], p_all);
        let p_depth = shrunk(self.within[di], p_inside);
        let p_match = shrunk(self.matches[dm], p_depth);
        let p_streak = shrunk(self.streaks[dms], p_match);
        shrunk(self.cells[c], p_streak)
    }

    /// Records what the engine's output says of a row's previous chain (`chain`: the tokens
    /// proposed, drafted or not, with their `confidences`; `row`: the row's state when it
    /// was proposed; `emitted`: the tokens the row gained since). Every chain token the output
    /// decides is an outcome: token j was reached iff all before it matched, and it is decided
    /// while `j < emitted.len()`. Returns how many leading chain tokens matched the output.
    pub fn observe(
        &mut self,
        chain: &[TokenId],
        confidences: &[f64],
        emitted: &[TokenId],
        row: RowState,
    ) -> usize {
        let matched = chain
            .iter()
            .zip(emitted)
            .take_while(|(a, b)| a == b)
            .count();
        let decay = self.config.decay;
        for j in 0..chain.len().min(emitted.len()).min(matched + 1) {
            let hit = j < matched;
            let [i, di, dm, dms, cell] =
                self.slots(j, confidences.get(j).copied().unwrap_or(1.0), row);
            self.cells[cell].add(hit, decay);
            self.streaks[dms].add(hit, decay);
            self.matches[dm].add(hit, decay);
            self.within[di].add(hit, decay);
            self.inside[i].add(hit, decay);
            self.depths[j.min(self.config.k - 1)].add(hit, decay);
            self.overall.add(hit, decay);
        }
        matched
    }

    /// Records one engine step: `drafts` the draft length of each row verified, `seconds`
    /// taken, `emitted` tokens gained; refits the cost every few steps.
    pub fn observe_step(&mut self, drafts: &[usize], seconds: f64, emitted: usize) {
        self.observe_step_with(drafts, seconds, emitted, false);
    }

    /// [`DraftLength::observe_step`] for a step that may also have prefilled a request
    /// (`prefill`): its seconds then say nothing of its width (see `cost_curve`).
    pub fn observe_step_with(
        &mut self,
        drafts: &[usize],
        seconds: f64,
        emitted: usize,
        prefill: bool,
    ) {
        let rows = drafts.len();
        if rows == 0 || !(seconds > 0.0 && seconds.is_finite()) {
            return;
        }
        let drafting = drafts.iter().filter(|&&d| d > 0).count();
        let tokens: usize = drafts.iter().sum();
        if self.steps.len() == self.config.window {
            self.steps.pop_front();
        }
        let any = f64::from(u8::from(drafting > 0));
        self.steps.push_back([
            rows as f64,
            any,
            drafting as f64,
            tokens as f64,
            seconds,
            emitted as f64,
        ]);
        // a step stretched by a hiccup or a long prefill says nothing of its width
        if !prefill && (self.typical.is_nan() || seconds <= 3.0 * self.typical) {
            let design = step_design(rows, drafting, tokens);
            self.curve.observe(rows + tokens, &design, seconds);
        }
        self.observed += 1;
        if self.observed.is_multiple_of(REFIT_EVERY) || self.steps.len() == self.config.min_steps {
            self.fit();
        }
    }

    fn fit(&mut self) {
        if self.steps.len() < self.config.min_steps {
            return;
        }
        let mut seconds: Vec<f64> = self.steps.iter().map(|s| s[4]).collect();
        let typical = median(&mut seconds);
        self.typical = typical;
        // engine idle time or a huge prefill
        let kept: Vec<&[f64; 6]> = self
            .steps
            .iter()
            .filter(|s| s[4] <= 10.0 * typical)
            .collect();
        let tokens = kept.iter().map(|s| s[3]);
        let spread =
            tokens.clone().fold(f64::NEG_INFINITY, f64::max) - tokens.fold(f64::INFINITY, f64::min);
        if kept.len() < 2 || spread == 0.0 {
            return; // the token cost is not identified yet: keep the last fit
        }
        let design: Vec<[f64; 5]> = kept.iter().map(|s| [1.0, s[0], s[1], s[2], s[3]]).collect();
        let s: Vec<f64> = kept.iter().map(|s| s[4]).collect();
        let all: Vec<usize> = (0..s.len()).collect();
        let mut w = cost_fit(&design, &s, &all);
        let mut resid: Vec<f64> = design.iter().zip(&s).map(|(x, y)| y - dot(x, &w)).collect();
        let mid = median(&mut resid.clone());
        let mut dev: Vec<f64> = resid.iter().map(|r| (r - mid).abs()).collect();
        let mad = median(&mut dev);
        if mad > 0.0 {
            // one refit without the steps a hiccup stretched (robust to outliers)
            let inliers: Vec<usize> = (0..s.len())
                .filter(|&i| resid[i].abs() <= 3.5 * 1.4826 * mad)
                .collect();
            if inliers.len() >= 2.max(s.len() / 2) {
                w = cost_fit(&design, &s, &inliers);
            }
        }
        resid.clear();
        self.cost = w;
        let emitted: f64 = kept.iter().map(|s| s[5]).sum();
        self.rate = emitted / s.iter().sum::<f64>();
    }

    /// The cumulative acceptance probability a draft token must reach to be verified: the
    /// engine's tokens/s times a draft token's seconds.
    pub fn tau(&self) -> f64 {
        if !self.config.enabled || !self.rate.is_finite() {
            return 0.0;
        }
        (self.rate * self.cost[4]).min(1.0)
    }

    /// What has been measured so far.
    pub fn stats(&self) -> LengthStats {
        let ratio = |r: &Rate| {
            if r.tried > 0.0 {
                r.accepted / r.tried
            } else {
                f64::NAN
            }
        };
        LengthStats {
            tau: self.tau(),
            cost: self.cost,
            tokens_per_second: self.rate,
            acceptance: ratio(&self.overall),
            acceptance_by_depth: self.depths.iter().map(ratio).collect(),
            steps: self.steps.len(),
            curve: self.curve.table(&self.cost),
        }
    }
}

/// Per chain node after the root, its tree score over its parent's clipped to `[0, 1]`; 1 for
/// a tree without scores.
pub fn chain_confidences(scores: Option<&[f32]>, nodes: &[i32]) -> Vec<f64> {
    let Some(scores) = scores else {
        return vec![1.0; nodes.len().saturating_sub(1)];
    };
    nodes
        .windows(2)
        .map(|w| {
            let parent = f64::from(scores[w[0] as usize]);
            let ratio = if parent > 0.0 {
                f64::from(scores[w[1] as usize]) / parent
            } else {
                0.0
            };
            if ratio.is_finite() {
                ratio.clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect()
}

#[path = "length_cut.rs"]
mod cut;

#[cfg(test)]
#[path = "length_tests.rs"]
mod tests;
