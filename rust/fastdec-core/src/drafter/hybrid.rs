//! A drafter fusing the trees of several drafters under one budget (e.g. Token Recycling with
//! n-gram or trie retrieval). Each part drafts with the full budget; its scores are normalised
//! by its root score (a tree without scores counts 1 per node), weighted, summed over equal
//! paths by tree fusion, and the fused tree is pruned best-first to the budget.
//!
//! Top-k feedback: the target verifies the fused tree, but a part that learns from top-k rows
//! (Token Recycling) indexes them by the nodes of the tree *it* proposed. So each proposal
//! remembers, for every such part, which fused node each of its nodes became (the fused node
//! with the same root-to-node token path, or none if pruning dropped it), and `accept` hands
//! the part its rows through that map, with [`NO_TOPK`] rows for the pruned nodes.

use std::sync::Arc;
use std::time::Instant;

use super::{DraftStats, Drafter, RequestId, Requests, NO_TOPK};
use crate::tree::{fuse, ScoreCombine};
use crate::{Error, Result, TokenId, TokenTree};

/// A part node that has no fused node (pruned away).
const PRUNED: u32 = u32::MAX;

/// What the last proposal of a request needs to route top-k rows to the parts.
#[derive(Debug, Default)]
pub(crate) struct Provenance {
    /// Nodes of the fused (pruned) tree the target verifies.
    fused_nodes: usize,
    /// Per part: the fused node of each of its nodes ([`PRUNED`] if none); empty for parts
    /// that do not want top-k.
    maps: Vec<Vec<u32>>,
}

/// For every node of `part`, the node of `fused` with the same root-to-node token path, or
/// [`PRUNED`]. Both trees share the root token, and parents precede children in both, so one
/// pass in node order suffices.
pub(crate) fn provenance(part: &TokenTree, fused: &TokenTree) -> Vec<u32> {
    let mut map = Vec::with_capacity(part.num_nodes());
    map.push(if part.root_token() == fused.root_token() {
        0
    } else {
        PRUNED
    });
    for i in 1..part.num_nodes() {
        let p = map[part.parents()[i] as usize];
        let m = if p == PRUNED {
            PRUNED
        } else {
            fused
                .find_child(p as usize, part.tokens()[i])
                .map_or(PRUNED, |c| c as u32)
        };
        map.push(m);
    }
    map
}

/// A part's `[map.len(), k]` rows from the fused tree's `rows`: row `i` is the row of the fused
/// node `map[i]`, or all [`NO_TOPK`] when node `i` was pruned.
fn route_rows(map: &[u32], rows: &[TokenId], k: usize) -> Vec<TokenId> {
    let mut out = Vec::with_capacity(map.len() * k);
    for &m in map {
        if m == PRUNED {
            out.extend(std::iter::repeat_n(NO_TOPK, k));
        } else {
            let m = m as usize;
            out.extend_from_slice(&rows[m * k..(m + 1) * k]);
        }
    }
    out
}

/// Fusion of weighted drafters.
pub struct HybridDrafter {
    parts: Vec<(Arc<dyn Drafter>, f32)>,
    /// The last proposal's provenance per request (`None` before a proposal, after an accept).
    requests: Requests<Option<Provenance>>,
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

    /// Each part's tree with its scores normalised by its root score and weighted.
    fn weigh(&self, trees: Vec<TokenTree>) -> Result<Vec<TokenTree>> {
        trees
            .into_iter()
            .zip(&self.parts)
            .map(|(tree, (_, w))| {
                let scores = match tree.scores() {
                    Some(s) if s[0] > 0.0 => s.iter().map(|&x| x / s[0] * w).collect(),
                    _ => vec![*w; tree.num_nodes()],
                };
                tree.with_scores(scores)
            })
            .collect()
    }

    fn combine(weighted: &[TokenTree], budget: usize) -> Result<TokenTree> {
        fuse(
            &weighted.iter().collect::<Vec<_>>(),
            ScoreCombine::Sum,
            Some(budget),
        )
    }

    /// Runs `f` on every part (with its index); all parts are attempted and the first error is
    /// returned.
    fn each(&self, mut f: impl FnMut(usize, &dyn Drafter) -> Result<()>) -> Result<()> {
        let mut first = Ok(());
        for (i, (d, _)) in self.parts.iter().enumerate() {
            if let Err(e) = f(i, d.as_ref()) {
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
        self.each(|_, d| d.start(id.clone(), prompt))?;
        self.requests.insert(id, None);
        Ok(())
    }

    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree> {
        let t0 = Instant::now();
        self.requests.propose_timed(id, t0, |state| {
            // A failing part below may already hold a new proposal: forget the old provenance
            // rather than route rows through it.
            *state = None;
            let trees = self
                .parts
                .iter()
                .map(|(d, _)| d.propose(id, budget))
                .collect::<Result<Vec<_>>>()?;
            let weighted = self.weigh(trees)?;
            let fused = Self::combine(&weighted, budget)?;
            let maps = self
                .parts
                .iter()
                .zip(&weighted)
                .map(|((d, _), tree)| match d.wants_topk() {
                    Some(_) => provenance(tree, &fused),
                    None => Vec::new(),
                })
                .collect();
            *state = Some(Provenance {
                fused_nodes: fused.num_nodes(),
                maps,
            });
            Ok(fused)
        })
    }

    /// Forwards `emitted` to every part, and to each part that wants top-k its own rows
    /// (routed through the last proposal's provenance; see the module docs). `k` is passed on
    /// as given: parts take the first `min(k, their k)` columns.
    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        topk: Option<(&[TokenId], usize)>,
    ) -> Result<()> {
        let t0 = Instant::now();
        // Rows are checked against the fused tree before any part changes; a failed check keeps
        // the provenance, so the caller may retry with correct rows.
        let routed = self.requests.with(id, |state, _| {
            let routed = match (topk, state.as_ref()) {
                (Some((rows, k)), Some(prov)) => {
                    if k == 0 {
                        return Err(Error::arg(
                            "topk_ids",
                            "[.., 0]",
                            "need at least one column",
                        ));
                    }
                    if rows.len() != prov.fused_nodes * k {
                        return Err(Error::LengthMismatch {
                            what: "topk_ids rows",
                            expected: prov.fused_nodes,
                            got: rows.len() / k,
                        });
                    }
                    let per_part: Vec<Option<Vec<TokenId>>> = prov
                        .maps
                        .iter()
                        .map(|map| (!map.is_empty()).then(|| route_rows(map, rows, k)))
                        .collect();
                    Some((per_part, k))
                }
                // Without a proposal there is no tree the rows could belong to.
                _ => None,
            };
            *state = None;
            Ok(routed)
        })?;
        self.each(|i, d| {
            let part_topk = routed
                .as_ref()
                .and_then(|(per_part, k)| per_part[i].as_deref().map(|r| (r, *k)));
            d.accept(id, emitted, part_topk)
        })?;
        self.requests
            .accept_timed(id, t0, emitted.len(), |_| Ok(()))
    }

    fn wants_topk(&self) -> Option<usize> {
        self.parts.iter().filter_map(|(d, _)| d.wants_topk()).max()
    }

    fn stop(&self, id: &RequestId) -> Result<()> {
        self.requests.remove(id)?;
        self.each(|_, d| d.stop(id))
    }

    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree> {
        let trees = self
            .parts
            .iter()
            .map(|(d, _)| d.propose_for(context, budget))
            .collect::<Result<Vec<_>>>()?;
        Self::combine(&self.weigh(trees)?, budget)
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
        self.parts
            .iter()
            .map(|(d, _)| d.memory_bytes())
            .sum::<usize>()
            + self.requests.sum_states(|s| {
                s.as_ref()
                    .map_or(0, |p| p.maps.iter().map(|m| m.capacity() * 4).sum())
            })
    }

    fn request_stats(&self, id: &RequestId) -> Result<DraftStats> {
        self.requests.with(id, |_, stats| Ok(*stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::{NgramConfig, NgramDrafter, NgramMode, RecycleDrafter};
    use crate::TreeTemplate;
    use proptest::prelude::*;

    /// Root-to-node tokens of node `i`.
    fn path(t: &TokenTree, mut i: usize) -> Vec<TokenId> {
        let mut p = vec![t.tokens()[i]];
        while i != 0 {
            i = t.parents()[i] as usize;
            p.push(t.tokens()[i]);
        }
        p.reverse();
        p
    }

    /// The node of `t` with root-to-node tokens `p`, if any.
    fn find(t: &TokenTree, p: &[TokenId]) -> Option<usize> {
        if t.root_token() != p[0] {
            return None;
        }
        p[1..]
            .iter()
            .try_fold(0, |node, &tok| t.find_child(node, tok))
    }

    /// A recycle part (k = 2) whose table holds 5 -> [10, 11], 10 -> [12, 13], 11 -> [14, 15],
    /// so it drafts 7 distinct tokens from root 5.
    fn warm_recycle() -> Arc<RecycleDrafter> {
        let paths: [&[u32]; 6] = [&[0], &[1], &[0, 0], &[0, 1], &[1, 0], &[1, 1]];
        let template = TreeTemplate::from_paths(&paths).unwrap();
        let r = Arc::new(RecycleDrafter::new(100, 2, template, 8).unwrap());
        let w = RequestId::Str("warm".into());
        r.start(w.clone(), &[5]).unwrap();
        r.propose(&w, 8).unwrap();
        r.accept(&w, &[5], Some((&[10, 11], 2))).unwrap();
        assert_eq!(r.propose(&w, 8).unwrap().tokens(), &[5, 10, 11]);
        r.accept(&w, &[5], Some((&[10, 11, 12, 13, 14, 15], 2)))
            .unwrap();
        r.stop(&w).unwrap();
        r
    }

    fn pld() -> Arc<NgramDrafter> {
        let config = NgramConfig {
            mode: NgramMode::Pld,
            ..NgramConfig::default()
        };
        Arc::new(NgramDrafter::new(config).unwrap())
    }

    #[test]
    fn wants_topk_is_the_largest_over_parts() {
        let recycle = warm_recycle();
        assert_eq!(recycle.wants_topk(), Some(2));
        assert_eq!(pld().wants_topk(), None);
        let h = HybridDrafter::new(vec![(recycle, 1.0), (pld(), 1.0)], 4).unwrap();
        assert_eq!(h.wants_topk(), Some(2));
        let h = HybridDrafter::new(vec![(pld(), 1.0), (pld(), 0.5)], 4).unwrap();
        assert_eq!(h.wants_topk(), None);
    }

    /// A recycle part inside a hybrid learns the rows of the fused nodes its nodes became, and
    /// nothing for the nodes that pruning dropped. (Before routing, the hybrid dropped top-k and
    /// every row below stayed as it was.)
    #[test]
    fn recycle_part_learns_through_provenance() {
        let recycle = warm_recycle();
        let own = recycle.propose_for(&[5], 8).unwrap();
        assert_eq!(own.num_nodes(), 7);
        let before: Vec<Vec<u32>> = own
            .tokens()
            .iter()
            .map(|&t| recycle.row(t).unwrap())
            .collect();
        let parts: Vec<(Arc<dyn Drafter>, f32)> = vec![(recycle.clone(), 1.0), (pld(), 1.0)];
        let h = HybridDrafter::new(parts, 4).unwrap();
        let id = RequestId::Int(1);
        // PLD continues the earlier "5" with 10, 12, 7: that path gathers both parts' votes.
        h.start(id.clone(), &[5, 10, 12, 7, 5]).unwrap();
        let fused = h.propose(&id, 5).unwrap();
        assert_eq!(fused.num_nodes(), 5);
        // The recycle part proposed `own` again (start only seeded the empty rows 12 and 7).
        let mapped = (0..own.num_nodes())
            .filter(|&i| find(&fused, &path(&own, i)).is_some())
            .count();
        assert!(
            mapped > 1 && mapped < own.num_nodes(),
            "some nodes kept, some pruned"
        );
        // Row j of the fused tree: two tokens no table holds yet.
        let rows: Vec<TokenId> = (0..fused.num_nodes() as u32)
            .flat_map(|j| [60 + 2 * j, 61 + 2 * j])
            .collect();
        h.accept(&id, &[10, 99], Some((&rows, 2))).unwrap();
        for (i, &tok) in own.tokens().iter().enumerate() {
            let want = match find(&fused, &path(&own, i)) {
                Some(j) => rows[2 * j..2 * j + 2].to_vec(),
                None => before[i].clone(),
            };
            assert_eq!(recycle.row(tok).unwrap(), want, "row of node {i} ({tok})");
        }
        // The learnt rows drive the next proposal: root 99's row is still empty, but 10's now
        // holds the fused node (5, 10)'s top-k.
        let j = find(&fused, &[5, 10]).unwrap();
        let next = recycle.propose_for(&[10], 3).unwrap();
        assert_eq!(&next.tokens()[1..], &rows[2 * j..2 * j + 2]);
    }

    #[test]
    fn rows_must_match_the_fused_tree_and_change_nothing_otherwise() {
        let recycle = warm_recycle();
        let h = HybridDrafter::new(vec![(recycle.clone(), 1.0), (pld(), 1.0)], 4).unwrap();
        let id = RequestId::Int(1);
        h.start(id.clone(), &[5]).unwrap();
        let fused = h.propose(&id, 5).unwrap();
        let rows = vec![1; (fused.num_nodes() + 1) * 2];
        let err = h.accept(&id, &[10, 99], Some((&rows, 2))).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
        assert!(h.accept(&id, &[10], Some((&[], 0))).is_err());
        assert_eq!(recycle.row(5).unwrap(), vec![10, 11]);
        assert_eq!(h.request_stats(&id).unwrap().steps, 0);
    }

    #[test]
    fn recycle_skips_no_topk_rows() {
        let recycle = warm_recycle();
        let id = RequestId::Int(0);
        recycle.start(id.clone(), &[5]).unwrap();
        let tree = recycle.propose(&id, 3).unwrap();
        assert_eq!(tree.tokens(), &[5, 10, 11]);
        recycle
            .accept(
                &id,
                &[10, 1],
                Some((&[20, 21, NO_TOPK, NO_TOPK, 22, 23], 2)),
            )
            .unwrap();
        assert_eq!(recycle.row(5).unwrap(), vec![20, 21]);
        assert_eq!(recycle.row(10).unwrap(), vec![12, 13]);
        assert_eq!(recycle.row(11).unwrap(), vec![22, 23]);
    }

    /// A random tree over tokens 0..4 with root token 0 and random positive scores.
    fn arb_tree() -> impl Strategy<Value = TokenTree> {
        prop::collection::vec((any::<prop::sample::Index>(), 0u32..4, 0.1f32..4.0), 0..24).prop_map(
            |nodes| {
                let mut tokens = vec![0];
                let mut parents = vec![-1];
                let mut scores = vec![1.0];
                let mut seen = std::collections::HashSet::new();
                for (p, t, s) in nodes {
                    let p = p.index(tokens.len());
                    // Siblings carry distinct tokens in a valid tree.
                    if seen.insert((p, t)) {
                        parents.push(p as i32);
                        tokens.push(t);
                        scores.push(s);
                    }
                }
                TokenTree::new(tokens, parents)
                    .unwrap()
                    .with_scores(scores)
                    .unwrap()
            },
        )
    }

    proptest! {
        /// Every part node maps to the fused node with the same token path, and maps to none
        /// exactly when the fused (pruned) tree has no such path.
        #[test]
        fn provenance_follows_token_paths(
            trees in prop::collection::vec(arb_tree(), 1..4),
            budget in 1usize..30,
        ) {
            let fused = fuse(&trees.iter().collect::<Vec<_>>(), ScoreCombine::Sum, Some(budget))
                .unwrap();
            for tree in &trees {
                let map = provenance(tree, &fused);
                prop_assert_eq!(map.len(), tree.num_nodes());
                for (i, &m) in map.iter().enumerate() {
                    let want = find(&fused, &path(tree, i));
                    prop_assert_eq!((m != PRUNED).then_some(m as usize), want);
                    if m != PRUNED {
                        prop_assert_eq!(path(&fused, m as usize), path(tree, i));
                    }
                }
            }
        }
    }
}
