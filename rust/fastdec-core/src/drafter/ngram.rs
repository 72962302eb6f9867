//! N-gram draft tables: prompt lookup decoding (Saxena 2023, as run by Spec-Bench) and better
//! modes over one incremental index per request.
//!
//! For every n in `[min_n, max_n]` the index maps each n-gram to its first, last and previous
//! occurrence (by end position) and chains older occurrences, so that appending a token and
//! proposing cost O(max_n) hash operations (plus the draft), whatever the context length.

use rustc_hash::FxHashMap as HashMap;
use std::time::Instant;

use super::{DraftStats, Drafter, RequestId, Requests};
use crate::tree::{check_token_ids, ScoreCombine, TrieBuilder};
use crate::{Error, Result, TokenId, TokenTree, MAX_NODES};

const NONE: u32 = u32::MAX;

/// How the n-gram drafter turns matches into a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgramMode {
    /// Prompt lookup decoding: for n = max_n..=min_n, the earliest earlier occurrence of the
    /// context's last n tokens; a chain of the (up to) `num_pred` tokens after it. This is the
    /// rule behind Spec-Bench's published PLD figure (MAT 1.75 on Vicuna-7B).
    Pld,
    /// Spec-Bench's `pld.py` to the letter: as [`NgramMode::Pld`], but an occurrence counts only
    /// if a full `num_pred` tokens follow it and the continuation does not start inside the
    /// suffix (so only the first occurrence can qualify).
    PldStrict,
    /// The most recent earlier occurrence of the longest matching suffix; a chain of up to
    /// `num_pred` tokens (shorter if the context ends).
    Recent,
    /// A tree of the continuations of the `max_matches` most recent occurrences of the longest
    /// matching suffix, each weighted by recency, merged and pruned best-first to the budget.
    Tree,
}

impl NgramMode {
    /// Parses `pld`, `pld_strict`, `recent` or `tree`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`].
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "pld" => Ok(NgramMode::Pld),
            "pld_strict" => Ok(NgramMode::PldStrict),
            "recent" => Ok(NgramMode::Recent),
            "tree" => Ok(NgramMode::Tree),
            _ => Err(Error::arg(
                "mode",
                name,
                "one of 'pld', 'pld_strict', 'recent', 'tree'",
            )),
        }
    }
}

/// Configuration of an [`NgramDrafter`].
#[derive(Debug, Clone, PartialEq)]
pub struct NgramConfig {
    /// Draft construction.
    pub mode: NgramMode,
    /// Shortest suffix matched.
    pub min_n: usize,
    /// Longest suffix matched (at most 16).
    pub max_n: usize,
    /// Draft tokens per continuation (PLD: 10).
    pub num_pred: usize,
    /// Occurrences merged in tree mode.
    pub max_matches: usize,
    /// Weight of the i-th most recent occurrence in tree mode: `decay^i`.
    pub decay: f32,
    /// Active requests kept (least recently used evicted beyond).
    pub max_requests: usize,
    /// Tokens indexed per request; beyond it the index keeps the most recent half.
    pub max_context: usize,
}

impl Default for NgramConfig {
    fn default() -> Self {
        NgramConfig {
            mode: NgramMode::Pld,
            min_n: 1,
            max_n: 3,
            num_pred: 10,
            max_matches: 16,
            decay: 0.9,
            max_requests: 1024,
            max_context: 1 << 20,
        }
    }
}

impl NgramConfig {
    fn validate(&self) -> Result<()> {
        if self.min_n == 0 || self.min_n > self.max_n || self.max_n > 16 {
            return Err(Error::arg(
                "min_n/max_n",
                format!("{}/{}", self.min_n, self.max_n),
                "need 1 <= min_n <= max_n <= 16",
            ));
        }
        if self.num_pred == 0 || self.num_pred >= MAX_NODES {
            return Err(Error::arg(
                "num_pred",
                self.num_pred,
                format!("must be in [1, {MAX_NODES})"),
            ));
        }
        if self.max_matches == 0 {
            return Err(Error::arg("max_matches", 0, "must be >= 1"));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return Err(Error::arg("decay", self.decay, "must be in (0, 1]"));
        }
        if self.max_requests == 0 || self.max_context < 2 * self.max_n {
            return Err(Error::arg(
                "max_requests/max_context",
                format!("{}/{}", self.max_requests, self.max_context),
                "max_requests >= 1 and max_context >= 2 * max_n",
            ));
        }
        Ok(())
    }
}

/// First, last and previous occurrence of one n-gram (end positions; `NONE` = absent).
#[derive(Debug, Clone, Copy)]
struct Occ {
    first: u32,
    last: u32,
    prev: u32,
}

/// One request's tokens and n-gram index.
#[derive(Debug, Clone)]
pub(crate) struct NgramIndex {
    tokens: Vec<TokenId>,
    min_n: usize,
    maps: Vec<HashMap<u64, Occ>>,
    /// `older[n - min_n][e]`: the previous occurrence (end position) of the n-gram ending at e.
    older: Vec<Vec<u32>>,
}

fn ngram_key(gram: &[TokenId]) -> u64 {
    // FxHash-style mixing; a collision is detected by comparing tokens and then ignored.
    gram.iter().fold(0u64, |h, &t| {
        (h.rotate_left(5) ^ u64::from(t)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

impl NgramIndex {
    fn new(min_n: usize, max_n: usize) -> Self {
        let k = max_n - min_n + 1;
        NgramIndex {
            tokens: Vec::new(),
            min_n,
            maps: vec![HashMap::default(); k],
            older: vec![Vec::new(); k],
        }
    }

    /// Heap bytes: tokens, chains and hash maps (per entry: key, value and control byte).
    fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, Occ)>() + 1;
        self.tokens.capacity() * 4
            + self.older.iter().map(|o| o.capacity() * 4).sum::<usize>()
            + self
                .maps
                .iter()
                .map(|m| m.capacity() * entry)
                .sum::<usize>()
    }

    fn max_n(&self) -> usize {
        self.min_n + self.maps.len() - 1
    }

    fn extend(&mut self, new: &[TokenId], max_context: usize) {
        for &t in new {
            if self.tokens.len() >= max_context {
                self.rebuild_tail(max_context / 2);
            }
            self.push(t);
        }
    }

    /// Keeps only the most recent `keep` tokens (memory cap), re-indexing them.
    fn rebuild_tail(&mut self, keep: usize) {
        let tail = self.tokens[self.tokens.len() - keep..].to_vec();
        *self = NgramIndex::new(self.min_n, self.max_n());
        for t in tail {
            self.push(t);
        }
    }

    fn push(&mut self, t: TokenId) {
        self.tokens.push(t);
        let e = self.tokens.len() - 1;
        for (k, (map, older)) in self.maps.iter_mut().zip(&mut self.older).enumerate() {
            let n = self.min_n + k;
            older.push(NONE);
            if e + 1 < n {
                continue;
            }
            let gram = &self.tokens[e + 1 - n..=e];
            let occ = map.entry(ngram_key(gram)).or_insert(Occ {
                first: e as u32,
                last: NONE,
                prev: NONE,
            });
            let f = occ.first as usize;
            if f != e && self.tokens[f + 1 - n..=f] != *gram {
                continue; // hash collision with another n-gram: leave its entry alone
            }
            older[e] = occ.last;
            occ.prev = occ.last;
            occ.last = e as u32;
        }
    }

    /// The entry of the n-gram formed by the last n tokens, if indexed and not a collision.
    fn suffix_occ(&self, n: usize) -> Option<Occ> {
        let len = self.tokens.len();
        if n > len {
            return None;
        }
        let gram = &self.tokens[len - n..];
        let occ = *self.maps[n - self.min_n].get(&ngram_key(gram))?;
        let f = occ.first as usize;
        (self.tokens[f + 1 - n..=f] == *gram).then_some(occ)
    }

    fn propose(&self, cfg: &NgramConfig, budget: usize) -> Result<TokenTree> {
        let Some(&root) = self.tokens.last() else {
            return Err(Error::Empty { what: "context" });
        };
        if budget == 0 || budget > MAX_NODES {
            return Err(Error::arg(
                "budget",
                budget,
                format!("must be in [1, {MAX_NODES}]"),
            ));
        }
        let k = cfg.num_pred.min(budget - 1);
        let len = self.tokens.len();
        let mut draft: &[TokenId] = &[];
        if k > 0 {
            for n in (self.min_n..=self.max_n()).rev() {
                let Some(occ) = self.suffix_occ(n) else {
                    continue;
                };
                match cfg.mode {
                    NgramMode::Pld => {
                        // The first occurrence, unless it is the suffix itself.
                        let start = occ.first as usize + 1;
                        if start < len {
                            draft = &self.tokens[start..(start + k).min(len)];
                            break;
                        }
                    }
                    NgramMode::PldStrict => {
                        // pld.py: the earliest window with a full k-token continuation that does
                        // not start inside the suffix. Later occurrences have shorter
                        // continuations, so only the first can qualify.
                        let start = occ.first as usize + 1;
                        if start + k <= len && start + n < len {
                            draft = &self.tokens[start..start + k];
                            break;
                        }
                    }
                    NgramMode::Recent => {
                        if occ.prev != NONE {
                            let start = occ.prev as usize + 1;
                            draft = &self.tokens[start..(start + k).min(len)];
                            break;
                        }
                    }
                    NgramMode::Tree => {
                        if occ.prev != NONE {
                            return Ok(self.match_tree(n, occ.prev, cfg, budget, k));
                        }
                    }
                }
            }
        }
        let mut chain = Vec::with_capacity(draft.len() + 1);
        chain.push(root);
        chain.extend_from_slice(draft);
        TokenTree::chain(chain)
    }

    /// Trie of the continuations after the most recent occurrences of the n-gram, walking the
    /// chain of older occurrences from `latest`; occurrence i weighs `decay^i`.
    fn match_tree(
        &self,
        n: usize,
        latest: u32,
        cfg: &NgramConfig,
        budget: usize,
        k: usize,
    ) -> TokenTree {
        let len = self.tokens.len();
        let older = &self.older[n - self.min_n];
        let mut trie = TrieBuilder::new(self.tokens[len - 1], 0.0, ScoreCombine::Sum);
        let (mut e, mut weight, mut total) = (latest, 1.0f32, 0.0f32);
        for _ in 0..cfg.max_matches {
            if e == NONE {
                break;
            }
            let start = e as usize + 1;
            let mut node = 0u32;
            for &t in &self.tokens[start..(start + k).min(len)] {
                node = trie
                    .child(node, t, weight)
                    .expect("at most max_matches * k < MAX_NODES nodes");
            }
            total += weight;
            weight *= cfg.decay;
            e = older[e as usize];
        }
        trie.add_root_score(total);
        let tree = trie.finish();
        if tree.num_nodes() > budget {
            tree.best_first_subtree(budget, None).expect("budget >= 1")
        } else {
            tree
        }
    }
}

/// Prompt lookup and n-gram drafting over per-request incremental indexes.
pub struct NgramDrafter {
    config: NgramConfig,
    requests: Requests<NgramIndex>,
}

impl NgramDrafter {
    /// A drafter with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid configuration.
    pub fn new(config: NgramConfig) -> Result<Self> {
        config.validate()?;
        if config.mode == NgramMode::Tree
            && config.max_matches.saturating_mul(config.num_pred) >= MAX_NODES
        {
            return Err(Error::arg(
                "max_matches * num_pred",
                config.max_matches * config.num_pred,
                format!("must be < {MAX_NODES}"),
            ));
        }
        let requests = Requests::new(config.max_requests);
        Ok(NgramDrafter { config, requests })
    }

    /// The configuration.
    pub fn config(&self) -> &NgramConfig {
        &self.config
    }

    /// Number of active requests.
    pub fn num_requests(&self) -> usize {
        self.requests.len()
    }
}

impl Drafter for NgramDrafter {
    fn start(&self, id: RequestId, prompt: &[TokenId]) -> Result<()> {
        check_token_ids(prompt, "prompt token")?;
        let mut index = NgramIndex::new(self.config.min_n, self.config.max_n);
        index.extend(prompt, self.config.max_context);
        self.requests.insert(id, index);
        Ok(())
    }

    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree> {
        let t0 = Instant::now();
        self.requests
            .propose_timed(id, t0, |index| index.propose(&self.config, budget))
    }

    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        _topk: Option<(&[TokenId], usize)>,
    ) -> Result<()> {
        let t0 = Instant::now();
        check_token_ids(emitted, "accepted token")?;
        self.requests.accept_timed(id, t0, emitted.len(), |index| {
            index.extend(emitted, self.config.max_context);
            Ok(())
        })
    }

    fn stop(&self, id: &RequestId) -> Result<()> {
        self.requests.remove(id)
    }

    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree> {
        check_token_ids(context, "context token")?;
        let mut index = NgramIndex::new(self.config.min_n, self.config.max_n);
        index.extend(context, self.config.max_context.max(context.len()));
        index.propose(&self.config, budget)
    }

    fn stats(&self) -> DraftStats {
        self.requests.total_stats()
    }

    fn memory_bytes(&self) -> usize {
        self.requests.sum_states(NgramIndex::memory_bytes)
    }

    fn kind(&self) -> &'static str {
        "ngram"
    }

    /// N-gram indexes are per request: there is no shared state.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    fn load_state(&self, payload: &[u8]) -> Result<()> {
        super::persist::Reader(payload).done()
    }

    fn request_stats(&self, id: &RequestId) -> Result<DraftStats> {
        self.requests.with(id, |_, stats| Ok(*stats))
    }
}
