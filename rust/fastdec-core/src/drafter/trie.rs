//! Trie retrieval (Lookahead / PIA, Zhao et al. 2024, arXiv 2312.12728; with SuffixDecoding's
//! split into a per-request tree and a shared tree of past outputs, arXiv 2411.04975).
//!
//! A trie holds every window of up to `depth` tokens with occurrence counts. To draft, the
//! longest suffix of the context (up to `max_match` tokens) is matched from the root and its
//! continuations are expanded best-first by empirical path probability (the product of
//! `count(child) / sum of sibling counts`). Each request has a local trie over its prompt and
//! output; outputs of finished requests go into one shared global trie. The two candidate
//! trees are fused with weights `1 - w` and `w`, then pruned to the budget.
//!
//! Two refinements over taking the longest match only, measured on the Spec-Bench replay
//! (Vicuna-7B outputs, budget 64; MAT 2.275 -> 2.406): the continuations of every shorter
//! matching suffix are fused in too, each with `match_decay` times the weight of the next longer
//! one, and counts are smoothed (`count / (sum of sibling counts + smoothing)`), so that a
//! continuation seen once is not treated as certain. A shorter match expands only
//! `part_budget_decay` times the nodes of the next longer one (its nodes weigh less, so few
//! survive the final cut): with 3 matches and 0.5 this keeps MAT at 2.406 (2.412 with 4 full
//! parts) at a third of the work (8k-token context: p50 5.4 us instead of 15 us).
//!
//! The longest match leads across the two tries too: a trie whose longest match is `j` tokens
//! shorter than the other's starts at `match_decay^j` of its weight (SuffixDecoding drafts from
//! the better of its two trees). Matches of up to 16 tokens (windows of 28), not 4 (windows of
//! 16): in replays of the vLLM bench's outputs (`benches/vllm_replay.py`, the chains at
//! SuffixDecoding's own draft lengths) a 4-token context followed whatever most often came next
//! (in a loop the model repeats, the prompt's continuation of the loop's last 4 tokens) and lost
//! 69 of 854 tokens on code edits to SuffixDecoding's 24-token matches; with both changes (and
//! servers' chains read off the likeliest path, `TokenTree::likeliest_leaf`) it loses 9 and gains
//! 7, and Spec-Bench's MAT (budget 64) goes from 2.406 to 2.410.

use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use super::{DraftStats, Drafter, RequestId, Requests};
use crate::tree::{check_token_ids, ScoreCombine, TrieBuilder};
use crate::{Error, Result, TokenId, TokenTree, MAX_NODES};

use super::count_trie::CountTrie;

/// One request: its tokens, its local trie and the open windows (trie nodes of its last
/// `depth - 1` suffixes) for O(depth) streaming inserts.
#[derive(Debug, Clone)]
pub(crate) struct TrieRequest {
    tokens: Vec<TokenId>,
    local: CountTrie,
    active: Vec<u32>,
    output_start: usize,
}

impl TrieRequest {
    fn push(&mut self, t: TokenId, depth: usize, max_context: usize) {
        if self.tokens.len() >= max_context {
            // Memory cap: keep the newest half of the history (the trie keeps its counts).
            let drop = self.tokens.len() - max_context / 2;
            self.tokens.drain(..drop);
            self.output_start = self.output_start.saturating_sub(drop);
        }
        self.tokens.push(t);
        // `active` holds the open windows deepest first; each grows by `t`, a new one opens at
        // the root, and the one that reaches `depth` closes.
        let mut next = Vec::with_capacity(depth);
        for &a in self.active.iter().chain(std::iter::once(&0)) {
            next.push(self.local.bump(a, t));
        }
        if next.len() >= depth {
            next.remove(0);
        }
        self.active = next;
        if self.local.enforce_cap() {
            // Ids changed: re-open the windows from the last tokens.
            let tail = self.tokens.len().saturating_sub(depth - 1);
            self.active = (tail..self.tokens.len())
                .filter_map(|s| self.local.walk(&self.tokens[s..]))
                .collect();
        }
    }
}

/// Configuration of a [`TrieDrafter`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrieConfig {
    /// Longest window stored (match plus continuation).
    pub depth: usize,
    /// Longest context suffix matched.
    pub max_match: usize,
    /// Weight of the shared output trie against the request's own (`w` in `(1-w)*local + w*global`).
    pub output_weight: f32,
    /// Node cap of each local trie.
    pub max_local_nodes: usize,
    /// Node cap of the shared trie.
    pub max_global_nodes: usize,
    /// Active requests kept (least recently used evicted beyond).
    pub max_requests: usize,
    /// Tokens of history kept per request; beyond it the oldest half is dropped.
    pub max_context: usize,
    /// Weight ratio of each shorter matching suffix's continuations to the next longer one's
    /// (0: the longest match only).
    pub match_decay: f32,
    /// Pseudo-count added to each sibling total when turning counts into probabilities.
    pub smoothing: f32,
    /// Most matching suffix lengths fused per trie (longest first).
    pub match_parts: usize,
    /// Ratio of each shorter match's expansion budget to the next longer one's (1: all expand
    /// to the full budget).
    pub part_budget_decay: f32,
}

impl Default for TrieConfig {
    fn default() -> Self {
        TrieConfig {
            depth: 28,
            max_match: 16,
            output_weight: 0.5,
            max_local_nodes: 1 << 20,
            max_global_nodes: 1 << 22,
            max_requests: 1024,
            max_context: 1 << 20,
            match_decay: 0.8,
            smoothing: 0.5,
            match_parts: 3,
            part_budget_decay: 0.5,
        }
    }
}

/// Trie retrieval with per-request and shared output tries.
pub struct TrieDrafter {
    config: TrieConfig,
    global: RwLock<CountTrie>,
    requests: Requests<TrieRequest>,
}

impl TrieDrafter {
    /// A drafter with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid configuration.
    pub fn new(config: TrieConfig) -> Result<Self> {
        if config.depth < 2 || config.depth > 64 || config.max_match == 0 {
            return Err(Error::arg(
                "depth/max_match",
                format!("{}/{}", config.depth, config.max_match),
                "need 2 <= depth <= 64 and max_match >= 1",
            ));
        }
        if config.match_parts == 0 {
            return Err(Error::arg("match_parts", 0, "must be >= 1"));
        }
        if !(config.smoothing.is_finite() && config.smoothing >= 0.0) {
            return Err(Error::arg(
                "smoothing",
                config.smoothing,
                "must be finite and >= 0",
            ));
        }
        if !(config.part_budget_decay > 0.0 && config.part_budget_decay <= 1.0) {
            return Err(Error::arg(
                "part_budget_decay",
                config.part_budget_decay,
                "must be in (0, 1]",
            ));
        }
        if !(0.0..=1.0).contains(&config.match_decay) {
            return Err(Error::arg(
                "match_decay",
                config.match_decay,
                "must be in [0, 1]",
            ));
        }
        if !(0.0..=1.0).contains(&config.output_weight) {
            return Err(Error::arg(
                "output_weight",
                config.output_weight,
                "must be in [0, 1]",
            ));
        }
        if config.max_context < 2 * config.depth {
            return Err(Error::arg(
                "max_context",
                config.max_context,
                format!("must be >= 2 * depth = {}", 2 * config.depth),
            ));
        }
        if config.max_local_nodes < 2 * config.depth
            || config.max_global_nodes < 2 * config.depth
            || config.max_requests == 0
        {
            return Err(Error::arg(
                "max_local_nodes/max_global_nodes/max_requests",
                format!(
                    "{}/{}/{}",
                    config.max_local_nodes, config.max_global_nodes, config.max_requests
                ),
                "node caps >= 2 * depth, max_requests >= 1",
            ));
        }
        let global = RwLock::new(CountTrie::new(config.max_global_nodes, config.smoothing));
        let requests = Requests::new(config.max_requests);
        Ok(TrieDrafter {
            config,
            global,
            requests,
        })
    }

    /// Nodes in the shared output trie.
    pub fn global_nodes(&self) -> usize {
        self.global
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn draft(
        &self,
        local: Option<&CountTrie>,
        context: &[TokenId],
        budget: usize,
    ) -> Result<TokenTree> {
        let Some(&root) = context.last() else {
            return Err(Error::Empty { what: "context" });
        };
        if budget == 0 || budget > MAX_NODES {
            return Err(Error::arg(
                "budget",
                budget,
                format!("must be in [1, {MAX_NODES}]"),
            ));
        }
        let c = &self.config;
        let w = c.output_weight;
        // Every part (suffix length x trie) expands into one builder, summing scores on shared
        // paths exactly as tree fusion does; each part's budget is capped so that the builder
        // stays within MAX_NODES (only budgets above MAX_NODES / (2 * match_parts) are cut).
        let part_budget = budget.min(MAX_NODES / (2 * c.match_parts)).max(1);
        let mut builder = TrieBuilder::new(root, 0.0, ScoreCombine::Sum);
        let mut parts = 0;
        let global = self.global.read().unwrap_or_else(PoisonError::into_inner);
        // The longest match of either trie leads: a match j tokens shorter weighs match_decay^j
        // in whichever trie it is (SuffixDecoding drafts from the longer match of its two trees).
        // Otherwise a shared trie's frequent short match outweighs the request's own long one.
        let longest = local
            .map_or(0, |l| l.longest_match(context, c.max_match, c.depth))
            .max(global.longest_match(context, c.max_match, c.depth));
        if let Some(local) = local {
            parts += local.retrieve_all(
                context,
                c.max_match,
                longest,
                part_budget,
                c.depth,
                1.0 - w,
                c.match_decay,
                c.match_parts,
                c.part_budget_decay,
                &mut builder,
            );
        }
        parts += global.retrieve_all(
            context,
            c.max_match,
            longest,
            part_budget,
            c.depth,
            w,
            c.match_decay,
            c.match_parts,
            c.part_budget_decay,
            &mut builder,
        );
        drop(global);
        if parts == 0 {
            return TokenTree::chain(vec![root]);
        }
        let tree = builder.finish();
        if tree.num_nodes() > budget {
            tree.best_first_subtree(budget, None)
        } else {
            Ok(tree)
        }
    }
}

impl Drafter for TrieDrafter {
    fn start(&self, id: RequestId, prompt: &[TokenId]) -> Result<()> {
        check_token_ids(prompt, "prompt token")?;
        let mut req = TrieRequest {
            tokens: Vec::with_capacity(prompt.len()),
            local: CountTrie::new(self.config.max_local_nodes, self.config.smoothing),
            active: Vec::new(),
            output_start: prompt.len(),
        };
        for &t in prompt {
            req.push(t, self.config.depth, self.config.max_context);
        }
        self.requests.insert(id, req);
        Ok(())
    }

    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree> {
        let t0 = Instant::now();
        self.requests.propose_timed(id, t0, |req| {
            self.draft(Some(&req.local), &req.tokens, budget)
        })
    }

    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        _topk: Option<(&[TokenId], usize)>,
    ) -> Result<()> {
        let t0 = Instant::now();
        check_token_ids(emitted, "accepted token")?;
        self.requests.accept_timed(id, t0, emitted.len(), |req| {
            for &t in emitted {
                req.push(t, self.config.depth, self.config.max_context);
            }
            Ok(())
        })
    }

    fn stop(&self, id: &RequestId) -> Result<()> {
        // The request's output joins the shared trie (cross-request sharing), then it is dropped.
        let output = self
            .requests
            .with(id, |req, _| Ok(req.tokens[req.output_start..].to_vec()))?;
        self.requests.remove(id)?;
        self.global
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert_windows(&output, self.config.depth);
        Ok(())
    }

    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree> {
        check_token_ids(context, "context token")?;
        let mut local = CountTrie::new(
            self.config
                .max_local_nodes
                .max(context.len() * self.config.depth),
            self.config.smoothing,
        );
        local.insert_windows(context, self.config.depth);
        self.draft(Some(&local), context, budget)
    }

    fn stats(&self) -> DraftStats {
        self.requests.total_stats()
    }

    fn kind(&self) -> &'static str {
        "trie"
    }

    /// `depth` (u32), then the shared trie (node count u64; per node parent u32, token u32,
    /// count f32). Per-request tries are not saved.
    fn save_state(&self) -> Vec<u8> {
        let mut out = (self.config.depth as u32).to_le_bytes().to_vec();
        self.global
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .save(&mut out);
        out
    }

    fn load_state(&self, payload: &[u8]) -> Result<()> {
        let mut r = super::persist::Reader(payload);
        let depth = r.u32()? as usize;
        if depth != self.config.depth {
            return Err(Error::arg(
                "state file",
                format!("depth={depth}"),
                format!("this drafter has depth={}", self.config.depth),
            ));
        }
        let trie = CountTrie::load(&mut r, self.config.max_global_nodes, self.config.smoothing)?;
        r.done()?;
        *self.global.write().unwrap_or_else(PoisonError::into_inner) = trie;
        Ok(())
    }

    fn memory_bytes(&self) -> usize {
        self.global
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .memory_bytes()
            + self
                .requests
                .sum_states(|r| r.local.memory_bytes() + r.tokens.capacity() * 4)
    }

    fn request_stats(&self, id: &RequestId) -> Result<DraftStats> {
        self.requests.with(id, |_, stats| Ok(*stats))
    }
}

#[cfg(test)]
mod file_tests {
    use super::{TrieConfig, TrieDrafter};
    use crate::drafter::{Drafter, RequestId};
    use crate::{Error, ErrorKind};

    #[test]
    fn save_file_and_load_file_round_trip_and_name_the_path() {
        let dir = std::env::temp_dir().join(format!("fastdec-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("trie.state");
        let trie = TrieDrafter::new(TrieConfig::default()).expect("defaults are valid");
        trie.start(RequestId::Int(1), &[1, 2, 3, 1, 2, 3])
            .expect("start");
        trie.accept(&RequestId::Int(1), &[1, 2], None)
            .expect("accept");
        trie.stop(&RequestId::Int(1)).expect("stop");
        trie.save_file(&path).expect("written");
        let fresh = TrieDrafter::new(TrieConfig::default()).expect("defaults are valid");
        fresh.load_file(&path).expect("read back");
        assert_eq!(fresh.save(), trie.save());

        let missing = dir.join("missing.state");
        let err = fresh.load_file(&missing).expect_err("no such file");
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.to_string().starts_with(&missing.display().to_string()));

        std::fs::write(&path, b"not a state file").expect("written");
        let err = fresh.load_file(&path).expect_err("garbage");
        assert!(matches!(err, Error::InFile { .. }));
        assert_eq!(err.kind(), ErrorKind::Value);
        assert!(err.to_string().starts_with(&path.display().to_string()));
        std::fs::remove_dir_all(&dir).expect("cleaned up");
    }
}
