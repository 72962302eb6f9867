//! Token Recycling (Luo et al. 2024, arXiv 2408.08696): a `[vocab, k]` table of candidate next
//! tokens, overwritten after every verification with the target's top-k at *every* verified
//! tree node (rejected branches included), kept across requests, and read by filling a static
//! template breadth-first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::{DraftStats, Drafter, RequestId, Requests, NO_TOPK};
use crate::tree::{ScoreCombine, TrieBuilder};
use crate::{Error, Result, TokenId, TokenTree, TreeTemplate, MAX_NODES};

/// An empty table entry.
const EMPTY: u32 = u32::MAX;

/// Per request: the last token and the tokens of the last proposed tree (to map `topk` rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecycleState {
    last: TokenId,
    proposed: Option<TokenTree>,
}

/// Token Recycling over a shared adjacency table.
pub struct RecycleDrafter {
    vocab_size: usize,
    k: usize,
    table: Vec<AtomicU32>,
    template: TreeTemplate,
    requests: Requests<RecycleState>,
}

impl RecycleDrafter {
    /// A drafter for token ids below `vocab_size`, `k` candidates per token (the paper: 8), and
    /// the template to fill (the paper: [`TreeTemplate::token_recycling`]). Memory:
    /// `vocab_size * k * 4` bytes for the table.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero size, a table above 2^31 entries, or a template
    /// that needs more than `k` ranks.
    pub fn new(
        vocab_size: usize,
        k: usize,
        template: TreeTemplate,
        max_requests: usize,
    ) -> Result<Self> {
        if vocab_size == 0 || vocab_size > crate::MAX_TOKEN_ID as usize + 1 {
            return Err(Error::arg("vocab_size", vocab_size, "must be in [1, 2^31]"));
        }
        if k == 0 || vocab_size.checked_mul(k).is_none_or(|n| n > 1 << 31) {
            return Err(Error::arg(
                "k",
                k,
                "must be >= 1 with vocab_size * k <= 2^31",
            ));
        }
        if template.num_ranks() > k {
            return Err(Error::arg(
                "k",
                k,
                format!("the template uses {} ranks", template.num_ranks()),
            ));
        }
        if max_requests == 0 {
            return Err(Error::arg("max_requests", 0, "must be >= 1"));
        }
        let table = (0..vocab_size * k).map(|_| AtomicU32::new(EMPTY)).collect();
        Ok(RecycleDrafter {
            vocab_size,
            k,
            table,
            template,
            requests: Requests::new(max_requests),
        })
    }

    /// Candidates per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The template filled by `propose`.
    pub fn template(&self) -> &TreeTemplate {
        &self.template
    }

    /// Row `token` of the table (`EMPTY` = `u32::MAX` where nothing is known yet).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for a token outside the vocabulary.
    pub fn row(&self, token: TokenId) -> Result<Vec<u32>> {
        self.check(&[token], "token")?;
        let r = token as usize * self.k;
        Ok(self.table[r..r + self.k]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect())
    }

    /// Overwrites row `token` with `candidates` (at most k; the rest of the row is emptied).
    fn set_row(&self, token: TokenId, candidates: &[TokenId]) {
        let r = token as usize * self.k;
        for (j, slot) in self.table[r..r + self.k].iter().enumerate() {
            slot.store(
                candidates.get(j).copied().unwrap_or(EMPTY),
                Ordering::Relaxed,
            );
        }
    }

    /// Records the bigram `a -> b` if row `a` has no candidates yet (learning without top-k).
    fn seed_bigram(&self, a: TokenId, b: TokenId) {
        let slot = &self.table[a as usize * self.k];
        let _ = slot.compare_exchange(EMPTY, b, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn check(&self, tokens: &[TokenId], what: &'static str) -> Result<()> {
        match tokens.iter().position(|&t| t as usize >= self.vocab_size) {
            Some(i) => Err(Error::IndexOutOfRange {
                what,
                index: i64::from(tokens[i]),
                len: self.vocab_size,
                of: "vocabulary entries",
            }),
            None => Ok(()),
        }
    }

    /// Fills the template from the table; nodes without a candidate are dropped with their
    /// subtrees, repeated siblings merge, and the first `budget` nodes (template order:
    /// shallow and low ranks first) are kept.
    fn draft(&self, root: TokenId, budget: usize) -> Result<TokenTree> {
        if budget == 0 || budget > MAX_NODES {
            return Err(Error::arg(
                "budget",
                budget,
                format!("must be in [1, {MAX_NODES}]"),
            ));
        }
        let shape = self.template.shape();
        let n = self.template.num_nodes().min(budget);
        let mut tokens = vec![EMPTY; n];
        tokens[0] = root;
        let mut complete = true;
        for i in 1..n {
            let parent = tokens[shape.parents()[i] as usize];
            tokens[i] = if parent == EMPTY {
                EMPTY
            } else {
                self.table[parent as usize * self.k + self.template.ranks()[i] as usize]
                    .load(Ordering::Relaxed)
            };
            complete &= tokens[i] != EMPTY;
        }
        if complete && n == self.template.num_nodes() {
            return self.template.fill(tokens);
        }
        let mut trie = TrieBuilder::new(root, 0.0, ScoreCombine::Max);
        let mut map = vec![u32::MAX; n];
        map[0] = 0;
        for i in 1..n {
            let p = map[shape.parents()[i] as usize];
            if tokens[i] != EMPTY && p != u32::MAX {
                map[i] = trie.child(p, tokens[i], 0.0)?;
            }
        }
        let tree = trie.finish();
        Ok(TokenTree {
            scores: None,
            ..tree
        })
    }
}

impl Drafter for RecycleDrafter {
    fn start(&self, id: RequestId, prompt: &[TokenId]) -> Result<()> {
        let Some(&last) = prompt.last() else {
            return Err(Error::Empty { what: "prompt_ids" });
        };
        self.check(prompt, "prompt token")?;
        for w in prompt.windows(2) {
            self.seed_bigram(w[0], w[1]);
        }
        self.requests.insert(
            id,
            RecycleState {
                last,
                proposed: None,
            },
        );
        Ok(())
    }

    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree> {
        let t0 = Instant::now();
        self.requests.propose_timed(id, t0, |state| {
            let tree = self.draft(state.last, budget)?;
            state.proposed = Some(tree.clone());
            Ok(tree)
        })
    }

    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        topk: Option<(&[TokenId], usize)>,
    ) -> Result<()> {
        let t0 = Instant::now();
        if emitted.is_empty() {
            return Err(Error::Empty { what: "emitted" });
        }
        self.check(emitted, "accepted token")?;
        if let Some((rows, k)) = topk {
            if k == 0 {
                return Err(Error::arg(
                    "topk_ids",
                    "[.., 0]",
                    "need at least one column",
                ));
            }
            for row in rows.chunks(k).filter(|r| r[0] != NO_TOPK) {
                self.check(row, "topk token")?;
            }
        }
        self.requests.accept_timed(id, t0, emitted.len(), |state| {
            if let (Some((rows, k)), Some(tree)) = (topk, state.proposed.as_ref()) {
                if rows.len() != tree.num_nodes() * k {
                    return Err(Error::LengthMismatch {
                        what: "topk_ids rows",
                        expected: tree.num_nodes(),
                        got: rows.len() / k,
                    });
                }
                // Every verified node recycles its top-k (the paper's "trash to treasure");
                // nodes on the accepted path are written last, so their rows win duplicates.
                let mut path = vec![0usize];
                let mut node = 0;
                for &t in &emitted[..emitted.len() - 1] {
                    match tree.find_child(node, t) {
                        Some(c) => {
                            path.push(c);
                            node = c;
                        }
                        None => break,
                    }
                }
                let on_path: std::collections::HashSet<usize> = path.iter().copied().collect();
                let order = (0..tree.num_nodes())
                    .filter(|i| !on_path.contains(i))
                    .chain(path.iter().copied());
                for i in order {
                    let row = &rows[i * k..(i + 1) * k];
                    // A node that was not verified (pruned by a hybrid) teaches nothing.
                    if row[0] != NO_TOPK {
                        self.set_row(tree.tokens()[i], row);
                    }
                }
            }
            let mut prev = state.last;
            for &t in emitted {
                self.seed_bigram(prev, t);
                prev = t;
            }
            state.last = prev;
            state.proposed = None;
            Ok(())
        })
    }

    fn wants_topk(&self) -> Option<usize> {
        Some(self.k)
    }

    fn stop(&self, id: &RequestId) -> Result<()> {
        self.requests.remove(id)
    }

    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree> {
        let Some(&last) = context.last() else {
            return Err(Error::Empty { what: "context" });
        };
        self.check(context, "context token")?;
        self.draft(last, budget)
    }

    fn stats(&self) -> DraftStats {
        self.requests.total_stats()
    }

    fn kind(&self) -> &'static str {
        "recycle"
    }

    /// `vocab_size` (u64), `k` (u64), then the table row-major as u32 (`u32::MAX` = empty).
    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.table.len() * 4);
        out.extend_from_slice(&(self.vocab_size as u64).to_le_bytes());
        out.extend_from_slice(&(self.k as u64).to_le_bytes());
        for slot in &self.table {
            out.extend_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
        }
        out
    }

    fn load_state(&self, payload: &[u8]) -> Result<()> {
        let mut r = super::persist::Reader(payload);
        let (vocab, k) = (r.u64()?, r.u64()?);
        if vocab != self.vocab_size as u64 || k != self.k as u64 {
            return Err(Error::arg(
                "state file",
                format!("vocab_size={vocab}, k={k}"),
                format!(
                    "this drafter has vocab_size={}, k={}",
                    self.vocab_size, self.k
                ),
            ));
        }
        let mut values = Vec::with_capacity(self.table.len());
        for _ in 0..self.table.len() {
            let v = r.u32()?;
            if v != EMPTY && v as usize >= self.vocab_size {
                return Err(Error::arg(
                    "state file",
                    v,
                    "a table entry is outside the vocabulary",
                ));
            }
            values.push(v);
        }
        r.done()?;
        for (slot, v) in self.table.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
        Ok(())
    }

    fn memory_bytes(&self) -> usize {
        self.table.len() * 4
            + self
                .requests
                .sum_states(|s| s.proposed.as_ref().map_or(0, |t| t.num_nodes() * 4))
    }

    fn request_stats(&self, id: &RequestId) -> Result<DraftStats> {
        self.requests.with(id, |_, stats| Ok(*stats))
    }
}
