//! The counted trie behind [`super::TrieDrafter`]: every window of up to `depth` tokens with
//! occurrence counts, in an arena with a node cap, and best-first expansion of the continuations
//! of a matched node by smoothed empirical path probability.
//!
//! Kept apart from the drafter (requests, the shared trie, fusion of matches) so that the data
//! structure and its invariants (sorted child lists, exact count sums, the cap) are tested on
//! their own.

use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;

use crate::tree::TrieBuilder;
use crate::{Error, Result, TokenId, MAX_TOKEN_ID};

const NIL: u32 = u32::MAX;

/// Nodes with more children than this keep them in a list sorted by count, so that drafting
/// expands them lazily (one sibling at a time) instead of scanning every child: short matches
/// in a long context or a large shared trie have hundreds of continuations.
const SORTED_FANOUT: u32 = 8;

#[derive(Debug, Clone, Copy)]
struct Node {
    token: TokenId,
    count: f32,
    /// Sum of the children's counts (whole numbers, so the running sum is exact below 2^24).
    child_total: f32,
    first_child: u32,
    next_sibling: u32,
    /// Number of children.
    fanout: u32,
    /// Index into `CountTrie::sorted` (children by count descending, then id), or `NIL`.
    sorted: u32,
}

impl Node {
    fn new(token: TokenId, next_sibling: u32) -> Self {
        Node {
            token,
            count: 0.0,
            child_total: 0.0,
            first_child: NIL,
            next_sibling,
            fanout: 0,
            sorted: NIL,
        }
    }
}

/// A counted trie of token windows in an arena, with a node cap.
#[derive(Debug, Clone)]
pub(super) struct CountTrie {
    /// Added to sibling-count totals: a continuation seen once is not certain.
    smoothing: f32,
    nodes: Vec<Node>,
    child: HashMap<u64, u32>,
    /// Sorted child lists of the nodes with more than `SORTED_FANOUT` children.
    sorted: Vec<Vec<u32>>,
    max_nodes: usize,
}

fn key(parent: u32, token: TokenId) -> u64 {
    (u64::from(parent) << 32) | u64::from(token)
}

impl CountTrie {
    pub(super) fn new(max_nodes: usize, smoothing: f32) -> Self {
        CountTrie {
            smoothing,
            nodes: vec![Node::new(0, NIL)],
            child: HashMap::default(),
            sorted: Vec::new(),
            max_nodes,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.child.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
            + self
                .sorted
                .iter()
                .map(|v| v.capacity() * 4 + std::mem::size_of::<Vec<u32>>())
                .sum::<usize>()
    }

    fn find(&self, parent: u32, token: TokenId) -> Option<u32> {
        self.child.get(&key(parent, token)).copied()
    }

    /// The child `token` of `parent`, created if needed, with its count raised by 1.
    pub(super) fn bump(&mut self, parent: u32, token: TokenId) -> u32 {
        if let Some(&c) = self.child.get(&key(parent, token)) {
            if self.nodes[parent as usize].sorted == NIL {
                self.nodes[c as usize].count += 1.0;
                self.nodes[parent as usize].child_total += 1.0;
            } else {
                let count = self.nodes[c as usize].count;
                self.set_count(parent, c, count + 1.0);
            }
            return c;
        }
        let c = self.nodes.len() as u32;
        let p = &mut self.nodes[parent as usize];
        let next = p.first_child;
        p.first_child = c;
        p.fanout += 1;
        let promote = p.fanout == SORTED_FANOUT + 1;
        self.nodes.push(Node::new(token, next));
        self.child.insert(key(parent, token), c);
        // The new child (count 0, the largest id) sorts last; set_count moves it into place.
        if promote {
            self.promote(parent);
        } else if let Some(list) = self.sorted_list_mut(parent) {
            list.push(c);
        }
        self.set_count(parent, c, 1.0);
        c
    }

    fn sorted_list_mut(&mut self, parent: u32) -> Option<&mut Vec<u32>> {
        let s = self.nodes[parent as usize].sorted;
        (s != NIL).then(|| &mut self.sorted[s as usize])
    }

    /// Gives `parent` a sorted child list (built from its linked list).
    fn promote(&mut self, parent: u32) {
        let mut list = Vec::with_capacity(2 * SORTED_FANOUT as usize);
        let mut c = self.nodes[parent as usize].first_child;
        while c != NIL {
            list.push(c);
            c = self.nodes[c as usize].next_sibling;
        }
        let nodes = &self.nodes;
        list.sort_unstable_by(|&a, &b| {
            nodes[b as usize]
                .count
                .total_cmp(&nodes[a as usize].count)
                .then(a.cmp(&b))
        });
        self.nodes[parent as usize].sorted = self.sorted.len() as u32;
        self.sorted.push(list);
    }

    /// Sets a child's count, keeping its parent's total and sorted list right.
    pub(super) fn set_count(&mut self, parent: u32, id: u32, count: f32) {
        let old = self.nodes[id as usize].count;
        self.nodes[id as usize].count = count;
        self.nodes[parent as usize].child_total += count - old;
        let s = self.nodes[parent as usize].sorted;
        if s == NIL {
            return;
        }
        // Order: count descending, then id ascending (the order drafting breaks score ties in).
        let nodes = &self.nodes;
        let list = &mut self.sorted[s as usize];
        let before = |x: u32, count: f32| {
            let cx = if x == id {
                old
            } else {
                nodes[x as usize].count
            };
            count.total_cmp(&cx).then(x.cmp(&id)).is_lt()
        };
        let at = list.partition_point(|&x| before(x, old));
        debug_assert_eq!(list[at], id);
        let before_new = |x: u32| {
            let cx = nodes[x as usize].count;
            count.total_cmp(&cx).then(x.cmp(&id)).is_lt()
        };
        if count >= old {
            let to = list[..at].partition_point(|&x| before_new(x));
            list[to..=at].rotate_right(1);
        } else {
            let to = at + 1 + list[at + 1..].partition_point(|&x| before_new(x));
            list[at..to].rotate_left(1);
        }
    }

    /// Inserts every window `tokens[s..s + depth]` (clipped at the end).
    pub(super) fn insert_windows(&mut self, tokens: &[TokenId], depth: usize) {
        for s in 0..tokens.len() {
            let mut node = 0;
            for &t in &tokens[s..(s + depth).min(tokens.len())] {
                node = self.bump(node, t);
            }
        }
        self.enforce_cap();
    }

    /// When above the cap: halve every count and drop nodes below 1 (with their subtrees),
    /// repeatedly, until at most half the cap remains (Lookahead's squeeze). Returns whether
    /// node ids changed.
    pub(super) fn enforce_cap(&mut self) -> bool {
        if self.nodes.len() <= self.max_nodes {
            return false;
        }
        while self.nodes.len() > self.max_nodes / 2 {
            let mut fresh = CountTrie::new(self.max_nodes, self.smoothing);
            // Depth-first copy of the surviving nodes (a child's count never exceeds its parent's).
            let mut stack = vec![(0u32, 0u32)];
            while let Some((old, new)) = stack.pop() {
                let mut c = self.nodes[old as usize].first_child;
                while c != NIL {
                    let n = self.nodes[c as usize];
                    let halved = (n.count / 2.0).floor();
                    if halved >= 1.0 {
                        let id = fresh.bump(new, n.token);
                        fresh.set_count(new, id, halved);
                        stack.push((c, id));
                    }
                    c = n.next_sibling;
                }
            }
            *self = fresh;
        }
        true
    }

    /// Nodes in id order as (parent, token, count); ids and sibling order are rebuilt exactly
    /// by re-adding them in this order.
    pub(super) fn save(&self, out: &mut Vec<u8>) {
        let mut parent = vec![0u32; self.nodes.len()];
        for (p, n) in self.nodes.iter().enumerate() {
            let mut c = n.first_child;
            while c != NIL {
                parent[c as usize] = p as u32;
                c = self.nodes[c as usize].next_sibling;
            }
        }
        out.extend_from_slice(&(self.nodes.len() as u64 - 1).to_le_bytes());
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            out.extend_from_slice(&parent[i].to_le_bytes());
            out.extend_from_slice(&n.token.to_le_bytes());
            out.extend_from_slice(&n.count.to_le_bytes());
        }
    }

    pub(super) fn load(
        r: &mut super::persist::Reader<'_>,
        max_nodes: usize,
        smoothing: f32,
    ) -> Result<Self> {
        let n = usize::try_from(r.u64()?)
            .map_err(|_| Error::arg("state file", "node count", "overflows"))?;
        let mut trie = CountTrie::new(max_nodes, smoothing);
        for i in 1..=n {
            let (parent, token, count) = (r.u32()?, r.u32()?, r.f32()?);
            if parent as usize >= i || token > MAX_TOKEN_ID || !(count.is_finite() && count > 0.0) {
                return Err(Error::arg(
                    "state file",
                    format!("node {i}"),
                    "malformed trie node",
                ));
            }
            if trie.find(parent, token).is_some() {
                return Err(Error::arg(
                    "state file",
                    format!("node {i}"),
                    "duplicate trie child",
                ));
            }
            let id = trie.bump(parent, token);
            trie.set_count(parent, id, count);
        }
        trie.enforce_cap();
        Ok(trie)
    }

    /// The node reached by `path` from the root.
    pub(super) fn walk(&self, path: &[TokenId]) -> Option<u32> {
        path.iter().try_fold(0u32, |node, &t| self.find(node, t))
    }

    /// Best-first continuations below `node` as a tree rooted at `root` with path-probability
    /// scores times `weight`, at most `budget` nodes and `max_depth` levels.
    fn continuations(
        &self,
        node: u32,
        budget: usize,
        max_depth: usize,
        weight: f32,
        out: &mut TrieBuilder,
    ) {
        // This part's nodes go straight into the shared builder `out` (summing with other
        // parts, as tree fusion would); `len` counts the part's own nodes against its budget.
        out.add_root_score(weight);
        let mut len = 1usize;
        let mut heap = BinaryHeap::new();
        // Children of a node with a sorted list enter the heap one at a time: a sibling can only
        // be taken after the better ones before it, so its successor is pushed when it is popped.
        // Other nodes push their best `room` children at once (a sibling ranked r-th is taken
        // only after the r - 1 better ones). Both give exactly the eager best-first result.
        let mut kids: Vec<Cand> = Vec::new();
        let expand = |heap: &mut BinaryHeap<Cand>,
                      kids: &mut Vec<Cand>,
                      room: usize,
                      trie_node: u32,
                      out_node: u32,
                      score: f32,
                      depth: u32| {
            if depth as usize >= max_depth || room == 0 {
                return;
            }
            let n = &self.nodes[trie_node as usize];
            let denom = n.child_total + self.smoothing;
            if n.sorted != NIL {
                let first = self.sorted[n.sorted as usize][0];
                heap.push(Cand {
                    score: score * self.nodes[first as usize].count / denom,
                    node: first,
                    out_parent: out_node,
                    depth: depth + 1,
                    parent_score: score,
                    list: n.sorted,
                    rank: 0,
                    denom,
                });
                return;
            }
            kids.clear();
            let mut c = n.first_child;
            while c != NIL {
                let k = &self.nodes[c as usize];
                kids.push(Cand {
                    score: score * k.count / denom,
                    node: c,
                    out_parent: out_node,
                    depth: depth + 1,
                    parent_score: score,
                    list: NIL,
                    rank: 0,
                    denom,
                });
                c = k.next_sibling;
            }
            if kids.len() > room {
                // Cand orders by score, then lower node id first: the best are the largest.
                kids.select_nth_unstable_by(room, |a, b| b.cmp(a));
                kids.truncate(room);
            }
            heap.extend(kids.drain(..));
        };
        expand(&mut heap, &mut kids, budget - len, node, 0, weight, 0);
        while len < budget {
            let Some(cand) = heap.pop() else {
                break;
            };
            let id = out
                .child(
                    cand.out_parent,
                    self.nodes[cand.node as usize].token,
                    cand.score,
                )
                .expect("parts * budget <= MAX_NODES");
            len += 1;
            if cand.list != NIL {
                let list = &self.sorted[cand.list as usize];
                if let Some(&next) = list.get(cand.rank as usize + 1) {
                    heap.push(Cand {
                        score: cand.parent_score * self.nodes[next as usize].count / cand.denom,
                        node: next,
                        rank: cand.rank + 1,
                        ..cand
                    });
                }
            }
            expand(
                &mut heap,
                &mut kids,
                budget - len,
                cand.node,
                id,
                cand.score,
                cand.depth,
            );
        }
    }

    /// The longest suffix of `context` (at most `max_match` tokens, shorter than `depth`) that
    /// has continuations here (0: none).
    pub(super) fn longest_match(
        &self,
        context: &[TokenId],
        max_match: usize,
        depth: usize,
    ) -> usize {
        (1..=max_match.min(context.len()).min(depth - 1))
            .rev()
            .find(|&q| {
                self.walk(&context[context.len() - q..])
                    .is_some_and(|node| self.nodes[node as usize].first_child != NIL)
            })
            .unwrap_or(0)
    }

    /// Candidate trees for the suffixes of `context` (at most `max_match` tokens) that have
    /// continuations, longest first: a suffix `j` tokens shorter than `longest` (the longest
    /// match of every trie drafting, this one's included) with `weight * match_decay^j` (only
    /// the longest when `match_decay` is 0).
    #[allow(clippy::too_many_arguments)] // two call sites; a parameter struct would only rename them
    pub(super) fn retrieve_all(
        &self,
        context: &[TokenId],
        max_match: usize,
        longest: usize,
        budget: usize,
        depth: usize,
        weight: f32,
        match_decay: f32,
        max_parts: usize,
        budget_decay: f32,
        out: &mut TrieBuilder,
    ) -> usize {
        let mut part_budget = budget as f32;
        let mut added = 0;
        let mut w = weight;
        for q in (1..=max_match.min(context.len()).min(depth - 1)).rev() {
            if let Some(node) = self.walk(&context[context.len() - q..]) {
                if self.nodes[node as usize].first_child != NIL {
                    if added == 0 {
                        // This trie's longest match: it starts `longest - q` factors below
                        // `weight`. Every shorter suffix has continuations too (an occurrence of
                        // a suffix with a next token is one of each shorter suffix), so later
                        // parts decay one factor per token shorter.
                        for _ in q..longest {
                            w *= match_decay;
                        }
                        if q < longest && w <= 0.0 {
                            return 0; // only the longest match counts, and it is the other trie's
                        }
                    }
                    // A shorter match's nodes weigh less in the fused tree, so fewer of them can
                    // make the final cut: its expansion budget shrinks by `budget_decay`.
                    let b = (part_budget.ceil() as usize).clamp(1, budget);
                    self.continuations(node, b, depth - q, w, out);
                    added += 1;
                    w *= match_decay;
                    part_budget *= budget_decay;
                    if w <= 0.0 || added == max_parts {
                        break;
                    }
                }
            }
        }
        added
    }
}

/// A heap entry of best-first expansion: a trie node to add under `out_parent`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    score: f32,
    node: u32,
    out_parent: u32,
    depth: u32,
    /// The parent's score and `child_total + smoothing`, to score the next sibling.
    parent_score: f32,
    denom: f32,
    /// The sorted child list `node` came from and its rank there, or `NIL`.
    list: u32,
    rank: u32,
}

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Cand {
    /// Higher score first, then the lower (older) node id.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.node.cmp(&self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every sorted child list holds exactly the node's children, by count descending then id.
    fn check_sorted(t: &CountTrie) {
        for (i, n) in t.nodes.iter().enumerate() {
            let mut kids = Vec::new();
            let mut c = n.first_child;
            while c != NIL {
                kids.push(c);
                c = t.nodes[c as usize].next_sibling;
            }
            assert_eq!(kids.len(), n.fanout as usize, "fanout of node {i}");
            let total = 0.0 + kids.iter().map(|&c| t.nodes[c as usize].count).sum::<f32>();
            // Half-integer counts below 2^20: the sums are exact.
            assert_eq!(
                total.to_bits(),
                n.child_total.to_bits(),
                "child_total of node {i}"
            );
            if kids.len() > SORTED_FANOUT as usize {
                kids.sort_by(|&a, &b| {
                    let (ca, cb) = (t.nodes[a as usize].count, t.nodes[b as usize].count);
                    cb.total_cmp(&ca).then(a.cmp(&b))
                });
                assert_eq!(t.sorted[n.sorted as usize], kids, "sorted list of node {i}");
            } else {
                assert_eq!(n.sorted, NIL);
            }
        }
    }

    proptest! {
        #[test]
        fn sorted_child_lists_follow_counts(
            ops in prop::collection::vec((0u32..3, 0u32..24, 0u32..8), 1..600),
        ) {
            let mut t = CountTrie::new(1 << 20, 0.5);
            for (parent_pick, token, count) in ops {
                let parent = parent_pick.min(t.len() as u32 - 1);
                let id = t.bump(parent, token);
                // Arbitrary counts (as a loaded file may hold), up and down, ties included.
                if count > 0 {
                    t.set_count(parent, id, count as f32 * 0.5);
                }
            }
            check_sorted(&t);
        }

        #[test]
        fn sorted_lists_survive_the_cap(tokens in prop::collection::vec(0u32..20, 50..400)) {
            let mut t = CountTrie::new(200, 0.0);
            t.insert_windows(&tokens, 4);
            prop_assert!(t.len() <= 200);
            check_sorted(&t);
        }
    }
}
