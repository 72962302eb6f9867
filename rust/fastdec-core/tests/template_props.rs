//! Property tests of static templates (`TreeTemplate`) and Sequoia's optimal templates
//! (`optimal_template`), against the naive models in `reference/`.

mod arb;
mod reference;

use std::mem::MaybeUninit;
use std::sync::Arc;

use arb::{distinct_sibling_tokens, parents_from};
use fastdec_core::{
    optimal_template, AcceptanceTable, Error, TreeTemplate, MAX_NODES, MAX_TOKEN_ID,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn is_invalid_argument(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { .. })
}

// ---------------------------------------------------------------------------------------------
// from_paths / paths
// ---------------------------------------------------------------------------------------------

/// The rank paths of a random rank tree (siblings carry distinct ranks), in that tree's node
/// order, plus spare random words.
fn rank_paths() -> impl Strategy<Value = (Vec<Vec<u32>>, Vec<u32>)> {
    (
        1usize..70,
        0u8..4,
        prop_oneof![Just(2u32), Just(4), Just(9)],
    )
        .prop_flat_map(|(n, mode, ranks)| {
            (
                vec(any::<u32>(), n),
                vec(any::<u32>(), n),
                vec(any::<u32>(), 8),
            )
                .prop_map(move |(rp, rr, spare)| {
                    let parents = parents_from(mode, &rp);
                    let rank = distinct_sibling_tokens(&parents, &rr, ranks, 0);
                    let paths = (1..n)
                        .map(|i| {
                            reference::node_path(&parents, i)[1..]
                                .iter()
                                .map(|&j| rank[j])
                                .collect()
                        })
                        .collect();
                    (paths, spare)
                })
        })
}

/// The same paths in a random order.
fn shuffled_rank_paths() -> impl Strategy<Value = (Vec<Vec<u32>>, Vec<u32>)> {
    rank_paths().prop_flat_map(|(paths, spare)| (Just(paths).prop_shuffle(), Just(spare)))
}

/// Expected `(parents, ranks, sorted paths)` of a template built from `paths`.
fn template_model(paths: &[Vec<u32>]) -> (Vec<i32>, Vec<u32>, Vec<Vec<u32>>) {
    let mut sorted = paths.to_vec();
    sorted.sort_by(|a, b| reference::path_order(a, b));
    let mut parents = vec![-1];
    let mut ranks = vec![0];
    for path in &sorted {
        let prefix = &path[..path.len() - 1];
        let parent = if prefix.is_empty() {
            0
        } else {
            1 + sorted.iter().position(|q| q[..] == *prefix).unwrap()
        };
        parents.push(parent as i32);
        ranks.push(*path.last().unwrap());
    }
    (parents, ranks, sorted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn from_paths_sorts_and_links((paths, spare) in shuffled_rank_paths()) {
        let template = TreeTemplate::from_paths(&paths).unwrap();
        let (parents, ranks, sorted) = template_model(&paths);
        prop_assert_eq!(template.num_nodes(), paths.len() + 1);
        prop_assert_eq!(template.shape().parents(), &parents[..]);
        prop_assert_eq!(template.ranks(), &ranks[..]);
        prop_assert_eq!(template.paths(), sorted.clone());
        let want_num_ranks = ranks[1..].iter().max().map_or(0, |&r| r as usize + 1);
        prop_assert_eq!(template.num_ranks(), want_num_ranks);
        prop_assert_eq!(template.shape().depth(), &reference::depths(&parents)[..]);
        // round trip through paths()
        prop_assert_eq!(&TreeTemplate::from_paths(&template.paths()).unwrap(), &template);

        // an orphan: drop the parent of some path of length >= 2
        if let Some(child) = paths.iter().position(|p| p.len() >= 2) {
            let prefix = paths[child][..paths[child].len() - 1].to_vec();
            let orphaned: Vec<Vec<u32>> = paths.iter().filter(|p| **p != prefix).cloned().collect();
            prop_assert!(is_invalid_argument(&TreeTemplate::from_paths(&orphaned).unwrap_err()));
        }
        // a duplicate
        if !paths.is_empty() {
            let mut twice = paths.clone();
            twice.insert(spare[0] as usize % (paths.len() + 1), paths[spare[1] as usize % paths.len()].clone());
            prop_assert!(is_invalid_argument(&TreeTemplate::from_paths(&twice).unwrap_err()));
        }
        // the (implicit) root listed as an empty path
        let mut with_root = paths.clone();
        with_root.insert(spare[2] as usize % (paths.len() + 1), Vec::new());
        prop_assert!(is_invalid_argument(&TreeTemplate::from_paths(&with_root).unwrap_err()));
    }
}

#[test]
fn from_paths_limits() {
    let empty: [&[u32]; 0] = [];
    let root_only = TreeTemplate::from_paths(&empty).unwrap();
    assert_eq!(root_only.num_nodes(), 1);
    assert_eq!(root_only.num_ranks(), 0);
    assert!(root_only.paths().is_empty());
    let widest: Vec<Vec<u32>> = (0..MAX_NODES as u32 - 1).map(|r| vec![r]).collect();
    assert_eq!(
        TreeTemplate::from_paths(&widest).unwrap().num_nodes(),
        MAX_NODES
    );
    let too_wide: Vec<Vec<u32>> = (0..MAX_NODES as u32).map(|r| vec![r]).collect();
    assert!(matches!(
        TreeTemplate::from_paths(&too_wide),
        Err(Error::TooManyNodes { .. })
    ));
}

#[test]
fn token_recycling_template() {
    let t = TreeTemplate::token_recycling();
    assert_eq!(t.num_nodes(), 81);
    let paths = t.paths();
    let widths: Vec<usize> = (1..=6)
        .map(|d| paths.iter().filter(|p| p.len() == d).count())
        .collect();
    assert_eq!(widths, [8, 21, 25, 15, 8, 3]);
    assert!(paths.iter().all(|p| !p.is_empty() && p.len() <= 6));
    let leaves = paths
        .iter()
        .filter(|p| !paths.iter().any(|q| q.len() > p.len() && q.starts_with(p)))
        .count();
    assert_eq!(leaves, 40);
    assert_eq!(t.shape().leaves().len(), 40);
    assert_eq!(t.shape().max_depth(), 6);
    assert_eq!(t.num_ranks(), 8);
    // sorted by (length, ranks) and prefix-closed
    assert!(paths
        .windows(2)
        .all(|w| reference::path_order(&w[0], &w[1]).is_lt()));
    assert!(paths
        .iter()
        .all(|p| p.len() == 1 || paths.contains(&p[..p.len() - 1].to_vec())));
}

// ---------------------------------------------------------------------------------------------
// fill, fill_ranked, fill_with
// ---------------------------------------------------------------------------------------------

/// Checks a filled tree against the trie of the intended per-node tokens.
fn check_fill(
    template: &TreeTemplate,
    intended: &[u32],
    tree: &fastdec_core::TokenTree,
) -> Result<(), TestCaseError> {
    let parents = template.shape().parents();
    let trie = reference::trie_of(intended, parents);
    prop_assert_eq!(tree.tokens(), &trie.tokens()[..]);
    prop_assert_eq!(tree.parents(), &trie.parents[..]);
    let dup = reference::has_duplicate_siblings(intended, parents);
    prop_assert_eq!(Arc::ptr_eq(tree.shape(), template.shape()), !dup);
    if !dup {
        prop_assert_eq!(tree.tokens(), intended);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn fill_shares_shape_or_merges(
        (paths, _) in rank_paths(),
        raw in vec(any::<u32>(), 70),
        vocab in prop_oneof![Just(2u32), Just(3), Just(1000)],
        distinct in any::<bool>(),
    ) {
        let template = TreeTemplate::from_paths(&paths).unwrap();
        let n = template.num_nodes();
        let tokens = if distinct {
            distinct_sibling_tokens(template.shape().parents(), &raw[..n], vocab, 0)
        } else {
            raw[..n].iter().map(|&r| r % vocab).collect()
        };
        let tree = template.fill(tokens.clone()).unwrap();
        check_fill(&template, &tokens, &tree)?;
        if distinct {
            prop_assert!(Arc::ptr_eq(tree.shape(), template.shape()));
        }

        let mut long = tokens.clone();
        long.push(0);
        let r = template.fill(long);
        prop_assert!(matches!(r, Err(Error::LengthMismatch { expected, got, .. }) if expected == n && got == n + 1), "{:?}", r);
        if distinct {
            let mut big = tokens;
            let at = raw[69] as usize % n;
            big[at] = MAX_TOKEN_ID + 1;
            let r = template.fill(big);
            prop_assert!(matches!(r, Err(Error::InvalidValue { index, .. }) if index == at), "{:?}", r);
        }
    }

    #[test]
    fn fill_ranked_takes_candidates_by_depth_and_rank(
        (paths, spare) in rank_paths(),
        raw in vec(any::<u32>(), 100),
        vocab in prop_oneof![Just(3u32), Just(1000)],
        extra_k in 0usize..3,
    ) {
        let template = TreeTemplate::from_paths(&paths).unwrap();
        let k = template.num_ranks() + extra_k;
        let depth = reference::depths(template.shape().parents());
        let max_depth = *depth.iter().max().unwrap() as usize;
        let need = max_depth * k;
        let candidates: Vec<u32> = (0..need).map(|i| raw[i % raw.len()].wrapping_add(i as u32) % vocab).collect();
        let root = spare[0] % 50;
        let tree = template.fill_ranked(root, &candidates, k).unwrap();
        let mut intended = vec![root];
        for (i, &rank) in template.ranks().iter().enumerate().skip(1) {
            intended.push(candidates[(depth[i] as usize - 1) * k + rank as usize]);
        }
        check_fill(&template, &intended, &tree)?;

        if template.num_ranks() > 0 {
            let k = template.num_ranks() - 1;
            let e = template.fill_ranked(root, &candidates[..max_depth * k], k).unwrap_err();
            prop_assert!(is_invalid_argument(&e), "{}", e);
        }
        let mut more = candidates.clone();
        more.push(1);
        let r = template.fill_ranked(root, &more, k);
        prop_assert!(
            matches!(r, Err(Error::LengthMismatch { expected, got, .. }) if expected == need && got == need + 1),
            "{:?}", r
        );
    }

    #[test]
    fn fill_with_walks_the_successor_table(
        (paths, spare) in rank_paths(),
        table in vec(0u32..6, 10 * 9),
    ) {
        let template = TreeTemplate::from_paths(&paths).unwrap();
        // Token Recycling: adj[token][rank], tokens 0..10, ranks 0..9
        let next = |t: u32, r: u32| table[(t as usize % 10) * 9 + r as usize % 9];
        let root = spare[0] % 10;
        let mut calls = 0;
        let tree = template.fill_with(root, |t, r| { calls += 1; next(t, r) }).unwrap();
        prop_assert_eq!(calls, template.num_nodes() - 1);
        let parents = template.shape().parents();
        let mut intended = vec![root];
        for (i, &rank) in template.ranks().iter().enumerate().skip(1) {
            let path = reference::node_path(parents, i);
            let parent_token = intended[path[path.len() - 2]];
            intended.push(next(parent_token, rank));
        }
        check_fill(&template, &intended, &tree)?;
    }
}

/// Reads back an output buffer that was fully initialised with a sentinel before the call.
#[allow(unsafe_code)]
fn read_back(out: &[MaybeUninit<f32>]) -> Vec<f32> {
    // SAFETY: every element was created by `MaybeUninit::new`, so it is initialised whether or
    // not the code under test wrote it.
    out.iter().map(|x| unsafe { x.assume_init() }).collect()
}

/// The additive mask of `parents` (prefix columns visible), from the naive ancestor walk.
fn model_mask(parents: &[i32], prefix_len: usize) -> Vec<f32> {
    let anc = reference::ancestor_matrix(parents);
    let mut out = Vec::new();
    for row in &anc {
        out.resize(out.len() + prefix_len, 0.0);
        out.extend(row.iter().map(|&a| if a { 0.0 } else { f32::MIN }));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Trees filled from one template share its shape and so its cached mask block; merged
    /// fills get their own shape, whose mask must follow the merged parents.
    #[test]
    fn masks_of_filled_trees((paths, spare) in rank_paths(), raw in vec(any::<u32>(), 3 * 70)) {
        let template = TreeTemplate::from_paths(&paths).unwrap();
        let n = template.num_nodes();
        let parents = template.shape().parents();
        for (k, chunk) in raw.chunks_exact(70).enumerate() {
            let tokens = if k == 2 {
                chunk[..n].iter().map(|&t| t % 2).collect()
            } else {
                distinct_sibling_tokens(parents, &chunk[..n], 1000, 0)
            };
            let tree = template.fill(tokens).unwrap();
            let prefix_len = (spare[k] % 4) as usize;
            let m = tree.num_nodes();
            let mut out = vec![MaybeUninit::new(1.5f32); m * (prefix_len + m)];
            tree.write_additive_mask(prefix_len, &mut out).unwrap();
            let want = model_mask(tree.parents(), prefix_len);
            prop_assert_eq!(bits(&read_back(&out)), bits(&want));
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A `k` whose candidate count overflows is an error, not a panic.
#[test]
fn fill_ranked_rejects_huge_k() {
    let template = TreeTemplate::from_paths(&[vec![0u32], vec![0, 0], vec![1]]).unwrap();
    for k in [usize::MAX, usize::MAX / 2 + 1] {
        let e = template.fill_ranked(1, &[1, 2, 3, 4], k).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { got: 4, .. }), "{e}");
    }
}

#[test]
fn fill_token_recycling_merges_unfilled_rows() {
    // An adjacency matrix that is still all zeros: every node repeats its siblings' token, so the
    // 81-node template collapses into a chain of depth 6.
    let t = TreeTemplate::token_recycling();
    let tree = t.fill_with(5, |_, _| 0).unwrap();
    assert_eq!(tree.tokens(), &[5, 0, 0, 0, 0, 0, 0]);
    assert_eq!(tree.parents(), &[-1, 0, 1, 2, 3, 4, 5]);
    // Distinct ranks give distinct tokens: the shape is shared.
    let tree = t.fill_with(5, |p, r| p * 8 + r + 1).unwrap();
    assert!(Arc::ptr_eq(tree.shape(), t.shape()));
}

// ---------------------------------------------------------------------------------------------
// Sequoia: optimal_template
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Table {
    probs: Vec<f64>,
    rows: usize,
    ranks: usize,
}

impl Table {
    fn p(&self, parent_depth: usize, rank: usize) -> f64 {
        if rank >= self.ranks {
            return 0.0;
        }
        self.probs[parent_depth.min(self.rows - 1) * self.ranks + rank]
    }
    fn build(&self) -> AcceptanceTable {
        AcceptanceTable::new(self.probs.clone(), self.rows, self.ranks).unwrap()
    }
}

fn table(max_rows: usize, max_ranks: usize) -> impl Strategy<Value = Table> {
    (1..=max_rows, 1..=max_ranks).prop_flat_map(|(rows, ranks)| {
        let prob = prop_oneof![1 => Just(0.0f64), 1 => Just(1.0f64), 6 => 0.0f64..=1.0];
        vec(prob, rows * ranks).prop_map(move |probs| Table { probs, rows, ranks })
    })
}

/// Structural checks of a returned template, and its value under the model.
fn check_template(
    t: &Table,
    template: &TreeTemplate,
    value: f64,
    budget: usize,
    max_depth: usize,
) -> Result<(), TestCaseError> {
    let paths = template.paths();
    prop_assert!(template.num_nodes() <= budget);
    prop_assert!(paths.iter().all(|p| p.len() <= max_depth));
    prop_assert!(paths
        .iter()
        .all(|p| p.iter().all(|&r| (r as usize) < t.ranks)));
    let p = |d: usize, r: usize| t.p(d, r);
    // nodes that add nothing are left out
    for path in &paths {
        prop_assert!(
            reference::expected_accepted(std::slice::from_ref(path), &p) > 0.0,
            "{:?}",
            path
        );
    }
    let model_value = reference::expected_accepted(&paths, &p);
    prop_assert!(
        (model_value - value).abs() <= 1e-9,
        "model {} vs returned {}",
        model_value,
        value
    );
    let own = template.expected_accepted(&t.build());
    prop_assert!(
        (own - value).abs() <= 1e-9,
        "expected_accepted {} vs returned {}",
        own,
        value
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Tiny cases: the DP value equals the brute-force maximum over every rank tree.
    #[test]
    fn optimal_template_equals_brute_force(t in table(3, 3), budget in 1usize..=6, max_depth in 0usize..=3) {
        let acceptance = t.build();
        for d in 0..=4 {
            for r in 0..=3 {
                prop_assert_eq!(acceptance.prob(d, r).to_bits(), t.p(d, r).to_bits());
            }
        }
        let (template, value) = optimal_template(&acceptance, budget, max_depth).unwrap();
        let (best, best_paths) = reference::best_rank_tree(budget, max_depth, t.ranks, &|d, r| t.p(d, r));
        prop_assert!((value - best).abs() <= 1e-9, "DP {} vs brute force {} (e.g. {:?}); DP chose {:?}", value, best, best_paths, template.paths());
        check_template(&t, &template, value, budget, max_depth)?;
    }

    /// Bigger cases: the DP beats random templates and is monotone in budget and depth.
    #[test]
    fn optimal_template_beats_random_templates(
        t in table(4, 6),
        budget in 8usize..=48,
        max_depth in 1usize..=7,
        raw in vec(any::<u32>(), 8 * 2 * 48),
    ) {
        let acceptance = t.build();
        let (template, value) = optimal_template(&acceptance, budget, max_depth).unwrap();
        check_template(&t, &template, value, budget, max_depth)?;
        let p = |d: usize, r: usize| t.p(d, r);
        for trial in raw.chunks_exact(2 * 48) {
            // grow a random rank tree of at most `budget` nodes and depth `max_depth`
            let mut paths: Vec<Vec<u32>> = vec![Vec::new()];
            for step in trial.chunks_exact(2).take(budget - 1) {
                let at = step[0] as usize % paths.len();
                let r = step[1] % t.ranks as u32;
                let mut child = paths[at].clone();
                child.push(r);
                if child.len() <= max_depth && !paths.contains(&child) {
                    paths.push(child);
                }
            }
            paths.remove(0);
            let random_value = reference::expected_accepted(&paths, &p);
            prop_assert!(value >= random_value - 1e-9, "DP {} < random {} for {:?}", value, random_value, paths);
            if !paths.is_empty() {
                let own = TreeTemplate::from_paths(&paths).unwrap().expected_accepted(&acceptance);
                prop_assert!((own - random_value).abs() <= 1e-9);
            }
        }
        let (_, smaller_budget) = optimal_template(&acceptance, budget - 1, max_depth).unwrap();
        let (_, shallower) = optimal_template(&acceptance, budget, max_depth - 1).unwrap();
        prop_assert!(smaller_budget <= value + 1e-9 && shallower <= value + 1e-9);
    }
}

#[test]
fn optimal_template_honours_depth_rows() {
    // Only rank 0 is accepted under the root, only rank 1 further down.
    let acceptance = AcceptanceTable::new(vec![0.9, 0.0, 0.0, 0.5], 2, 2).unwrap();
    let (template, value) = optimal_template(&acceptance, 4, 3).unwrap();
    assert_eq!(template.paths(), vec![vec![0], vec![0, 1], vec![0, 1, 1]]);
    assert!((value - (0.9 + 0.45 + 0.225)).abs() < 1e-12);
    // A zero row stops growth at that depth whatever the budget.
    let acceptance = AcceptanceTable::new(vec![0.8, 0.7, 0.0, 0.0], 2, 2).unwrap();
    let (template, value) = optimal_template(&acceptance, 50, 10).unwrap();
    assert_eq!(template.paths(), vec![vec![0], vec![1]]);
    assert!((value - 1.5).abs() < 1e-12);
    // Budget 1 or depth 0: the root alone.
    assert_eq!(
        optimal_template(&acceptance, 1, 10).unwrap().0.num_nodes(),
        1
    );
    let (root_only, value) = optimal_template(&acceptance, 10, 0).unwrap();
    assert_eq!(
        root_only,
        TreeTemplate::from_paths::<Vec<u32>>(&[]).unwrap()
    );
    assert!(value.abs() < 1e-12);
}

#[test]
fn optimal_template_errors() {
    let acceptance = AcceptanceTable::new(vec![0.5, 0.25], 1, 2).unwrap();
    for (budget, depth) in [(0, 3), (MAX_NODES + 1, 3), (10, MAX_NODES + 1)] {
        assert!(is_invalid_argument(
            &optimal_template(&acceptance, budget, depth).unwrap_err()
        ));
    }
    assert!(matches!(
        AcceptanceTable::new(vec![], 0, 2),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        AcceptanceTable::new(vec![], 2, 0),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        AcceptanceTable::new(vec![0.5; 5], 2, 2),
        Err(Error::LengthMismatch {
            expected: 4,
            got: 5,
            ..
        })
    ));
    for bad in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            AcceptanceTable::new(vec![0.5, 0.5, bad, 0.5], 2, 2),
            Err(Error::InvalidValue { index: 2, .. })
        ));
    }
    assert!(matches!(
        AcceptanceTable::new(vec![0.5; MAX_NODES + 1], 1, MAX_NODES + 1),
        Err(Error::TooManyNodes { .. })
    ));
    // sizes whose product overflows are errors, not panics
    for (rows, ranks) in [(usize::MAX, 2), (2, usize::MAX), (usize::MAX, usize::MAX)] {
        let e = AcceptanceTable::new(vec![0.5; 4], rows, ranks).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { got: 4, .. }), "{e}");
    }
    // a DP that would run for minutes is refused up front
    assert!(is_invalid_argument(
        &optimal_template(&acceptance, MAX_NODES, MAX_NODES).unwrap_err()
    ));
    // the largest budget works (and the DP stays fast enough for a test)
    let (template, value) = optimal_template(&acceptance, MAX_NODES, 4).unwrap();
    assert!(template.num_nodes() <= MAX_NODES && value > 0.0);
}
