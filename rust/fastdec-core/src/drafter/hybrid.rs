//! A drafter fusing the trees of several drafters under one budget (e.g. Token Recycling with
//! n-gram or trie retrieval). Each part drafts with the full budget; its scores are normalised
//! by its root score (a tree without scores counts 1 per node), weighted, summed over equal
//! paths by tree fusion, and the fused tree is pruned best-first to the budget.

use std::sync::Arc;
use std::time::Instant;

use super::{DraftStats, Drafter, RequestId, Requests};
use crate::tree::{fuse, ScoreCombine};
use crate::{Error, Result, TokenId, TokenTree};

/// Fusion of weighted drafters.
pub struct HybridDrafter {
    parts: Vec<(Arc<dyn Drafter>, f32)>,
    requests: Requests<()>,
}

impl HybridDrafter {
    /// Fuses `parts` (drafter, weight > 0).
    ///
    /// # Errors
    /// [`Error::Empty`] without parts, [`Error::InvalidArgument`] for a weight that is not
    /// finite and positive.
    pub fn new(parts: Vec<(Arc<dyn Drafter>, f32)>, max_requests: usize) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::Empty { what: "drafters" });
        }
        if let Some((_, w)) = parts.iter().find(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::arg("weight", w, "weights must be finite and > 0"));
        }
        if max_requests == 0 {
            return Err(Error::arg("max_requests", 0, "must be >= 1"));
        }
        Ok(HybridDrafter {
            parts,
            requests: Requests::new(max_requests),
        })
    }

    fn combine(&self, trees: Vec<TokenTree>, budget: usize) -> Result<TokenTree> {
        let weighted = trees
            .into_iter()
            .zip(&self.parts)
            .map(|(tree, (_, w))| {
                let scores = match tree.scores() {
                    Some(s) if s[0] > 0.0 => s.iter().map(|&x| x / s[0] * w).collect(),
                    _ => vec![*w; tree.num_nodes()],
                };
                tree.with_scores(scores)
            })
            .collect::<Result<Vec<_>>>()?;
        fuse(
            &weighted.iter().collect::<Vec<_>>(),
            ScoreCombine::Sum,
            Some(budget),
        )
    }

    /// Runs `f` on every part; all parts are attempted and the first error is returned.
    fn each(&self, mut f: impl FnMut(&dyn Drafter) -> Result<()>) -> Result<()> {
        let mut first = Ok(());
        for (d, _) in &self.parts {
            if let Err(e) = f(d.as_ref()) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drafter for HybridDrafter {
    fn start(&self, id: RequestId, prompt: &[TokenId]) -> Result<()> {
        self.each(|d| d.start(id.clone(), prompt))?;
        self.requests.insert(id, ());
        Ok(())
    }

    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree> {
        let t0 = Instant::now();
        self.requests.propose_timed(id, t0, |()| {
            let trees = self
                .parts
                .iter()
                .map(|(d, _)| d.propose(id, budget))
                .collect::<Result<Vec<_>>>()?;
            self.combine(trees, budget)
        })
    }

    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        topk: Option<(&[TokenId], usize)>,
    ) -> Result<()> {
        let t0 = Instant::now();
        self.requests.with(id, |(), _| Ok(()))?;
        // Parts that learn from top-k rows need rows for the tree *they* proposed; the fused
        // tree differs, so top-k is not forwarded (documented limitation).
        let _ = topk;
        self.each(|d| d.accept(id, emitted, None))?;
        self.requests
            .accept_timed(id, t0, emitted.len(), |()| Ok(()))
    }

    fn stop(&self, id: &RequestId) -> Result<()> {
        self.requests.remove(id)?;
        self.each(|d| d.stop(id))
    }

    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree> {
        let trees = self
            .parts
            .iter()
            .map(|(d, _)| d.propose_for(context, budget))
            .collect::<Result<Vec<_>>>()?;
        self.combine(trees, budget)
    }

    fn stats(&self) -> DraftStats {
        self.requests.total_stats()
    }

    fn kind(&self) -> &'static str {
        "hybrid"
    }

    /// The number of parts (u32), then each part's framed state (length u64, bytes).
    fn save_state(&self) -> Vec<u8> {
        let mut out = (self.parts.len() as u32).to_le_bytes().to_vec();
        for (d, _) in &self.parts {
            let part = d.save();
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(&part);
        }
        out
    }

    fn load_state(&self, payload: &[u8]) -> Result<()> {
        let mut r = super::persist::Reader(payload);
        let n = r.u32()? as usize;
        if n != self.parts.len() {
            return Err(Error::arg(
                "state file",
                format!("{n} parts"),
                format!("this hybrid has {} parts", self.parts.len()),
            ));
        }
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::try_from(r.u64()?)
                .map_err(|_| Error::arg("state file", "part length", "overflows"))?;
            frames.push(r.take(len)?);
        }
        r.done()?;
        // Check every part's framing before changing any part.
        for ((d, _), bytes) in self.parts.iter().zip(&frames) {
            super::persist::unframe(d.kind(), bytes)?;
        }
        for ((d, _), bytes) in self.parts.iter().zip(frames) {
            d.load(bytes)?;
        }
        Ok(())
    }

    fn memory_bytes(&self) -> usize {
        self.parts.iter().map(|(d, _)| d.memory_bytes()).sum()
    }

    fn request_stats(&self, id: &RequestId) -> Result<DraftStats> {
        self.requests.with(id, |(), stats| Ok(*stats))
    }
}
