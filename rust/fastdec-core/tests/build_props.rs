//! Property tests of tree building: `fuse`, `best_first_subtree`, `with_path_scores` and
//! `TokenTree::best_first_expand`, against the naive models in `reference/`.

#![allow(clippy::float_cmp)] // the models compute scores in the same order, so they match exactly

mod arb;
mod reference;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use arb::{distinct_sibling_tokens, parents_from, tree_case};
use fastdec_core::{fuse, Error, ScoreCombine, ScoreMode, TokenTree, MAX_NODES, MAX_TOKEN_ID};
use proptest::collection::vec;
use proptest::prelude::*;
use reference::{Mode, NaiveTrie};

fn is_invalid_argument(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { .. })
}

/// Scores as bit patterns, so that comparisons are exact and NaN-safe.
fn bits(scores: &[f32]) -> Vec<u32> {
    scores.iter().map(|s| s.to_bits()).collect()
}

/// A score from a small set (to force ties) or a finer grid.
fn score_from(x: u32, fine: bool) -> f32 {
    if fine {
        (x % 20_001) as f32 / 1000.0 - 10.0
    } else {
        (x % 7) as f32 - 3.0
    }
}

// ---------------------------------------------------------------------------------------------
// fuse
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FuseInput {
    tokens: Vec<u32>,
    parents: Vec<i32>,
    scores: Option<Vec<f32>>,
}

/// Trees over a tiny vocabulary sharing root token 7, so that fusion merges a lot.
fn fuse_input() -> impl Strategy<Value = FuseInput> {
    (1usize..25, 0u8..4, any::<bool>(), any::<bool>()).prop_flat_map(|(n, mode, scored, fine)| {
        (
            vec(any::<u32>(), n),
            vec(any::<u32>(), n),
            vec(any::<u32>(), n),
        )
            .prop_map(move |(rp, rt, rs)| {
                let parents = parents_from(mode, &rp);
                let mut tokens = distinct_sibling_tokens(&parents, &rt, 3, 0);
                tokens[0] = 7;
                let scores = scored.then(|| rs.iter().map(|&x| score_from(x, fine)).collect());
                FuseInput {
                    tokens,
                    parents,
                    scores,
                }
            })
    })
}

fn combine_fn(combine: ScoreCombine) -> fn(f32, f32) -> f32 {
    match combine {
        ScoreCombine::Sum => |a, b| a + b,
        ScoreCombine::Max => f32::max,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fuse_matches_naive_trie(
        inputs in vec(fuse_input(), 1..5),
        sum in any::<bool>(),
        budget in prop::option::of(1usize..80),
    ) {
        let combine = if sum { ScoreCombine::Sum } else { ScoreCombine::Max };
        let trees: Vec<TokenTree> = inputs
            .iter()
            .map(|t| {
                let tree = TokenTree::new(t.tokens.clone(), t.parents.clone()).unwrap();
                match &t.scores {
                    Some(s) => tree.with_scores(s.clone()).unwrap(),
                    None => tree,
                }
            })
            .collect();
        let refs: Vec<&TokenTree> = trees.iter().collect();

        // Model: insert every root-to-node token path, tree by tree, into a list-backed trie.
        let score_of = |t: &FuseInput, i: usize| t.scores.as_ref().map_or(1.0, |s| s[i]);
        let f = combine_fn(combine);
        let mut trie = NaiveTrie::new(7, score_of(&inputs[0], 0));
        for (k, t) in inputs.iter().enumerate() {
            if k > 0 {
                trie.scores[0] = f(trie.scores[0], score_of(t, 0));
            }
            for i in 1..t.tokens.len() {
                trie.insert(&reference::token_path(&t.tokens, &t.parents, i), score_of(t, i), f);
            }
        }

        let fused = fuse(&refs, combine, None).unwrap();
        prop_assert_eq!(fused.tokens(), &trie.tokens()[..]);
        prop_assert_eq!(fused.parents(), &trie.parents[..]);
        prop_assert_eq!(bits(fused.scores().unwrap()), bits(&trie.scores));

        // Independently: the node set is the union of the input path sets, and without scores
        // `Sum` counts the trees that contain each path.
        let path_sets: Vec<HashSet<Vec<u32>>> = inputs
            .iter()
            .map(|t| (0..t.tokens.len()).map(|i| reference::token_path(&t.tokens, &t.parents, i)).collect())
            .collect();
        let union: HashSet<Vec<u32>> = path_sets.iter().flatten().cloned().collect();
        let fused_paths: Vec<Vec<u32>> =
            (0..fused.num_nodes()).map(|i| reference::token_path(fused.tokens(), fused.parents(), i)).collect();
        prop_assert_eq!(fused_paths.len(), union.len(), "fused tree repeats a path");
        prop_assert_eq!(fused_paths.iter().cloned().collect::<HashSet<_>>(), union);
        if sum && inputs.iter().all(|t| t.scores.is_none()) {
            for (path, &score) in fused_paths.iter().zip(fused.scores().unwrap()) {
                let count = path_sets.iter().filter(|s| s.contains(path)).count();
                prop_assert_eq!(score, count as f32);
            }
        }

        // Budget pruning = naive best-first loop over (score desc, id asc) on the fused trie.
        if let Some(b) = budget {
            let pruned = fuse(&refs, combine, Some(b)).unwrap();
            let keep = reference::best_first_keep(&trie.parents, &trie.scores, b, None);
            let (tokens, parents, old) = reference::subtree(&trie.tokens(), &trie.parents, &keep);
            prop_assert_eq!(pruned.num_nodes(), b.min(trie.paths.len()));
            prop_assert_eq!(pruned.tokens(), &tokens[..]);
            prop_assert_eq!(pruned.parents(), &parents[..]);
            let want_scores: Vec<f32> = old.iter().map(|&i| trie.scores[i]).collect();
            prop_assert_eq!(bits(pruned.scores().unwrap()), bits(&want_scores));
        }
    }
}

#[test]
fn fuse_errors() {
    let a = TokenTree::new(vec![1, 2, 3], vec![-1, 0, 0]).unwrap();
    let b = TokenTree::new(vec![9, 2], vec![-1, 0]).unwrap();
    assert!(matches!(
        fuse(&[], ScoreCombine::Sum, None),
        Err(Error::Empty { .. })
    ));
    assert!(is_invalid_argument(
        &fuse(&[&a, &b], ScoreCombine::Sum, None).unwrap_err()
    ));
    assert!(is_invalid_argument(
        &fuse(&[&a], ScoreCombine::Max, Some(0)).unwrap_err()
    ));
    // Two disjoint chains of MAX_NODES nodes cannot merge into MAX_NODES nodes.
    let chain_of = |t: u32| {
        let mut tokens = vec![t; MAX_NODES];
        tokens[0] = 0;
        TokenTree::chain(tokens).unwrap()
    };
    let (x, y) = (chain_of(1), chain_of(2));
    assert!(matches!(
        fuse(&[&x, &y], ScoreCombine::Sum, Some(10)),
        Err(Error::TooManyNodes { .. })
    ));
    // ... but each alone, or a chain fused with itself, fits exactly.
    let xx = fuse(&[&x, &x], ScoreCombine::Sum, None).unwrap();
    assert_eq!(xx.num_nodes(), MAX_NODES);
    assert!(xx.scores().unwrap().iter().all(|&s| s == 2.0));
}

// ---------------------------------------------------------------------------------------------
// best_first_subtree, with_path_scores
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn best_first_subtree_matches_naive_loop(
        case in tree_case(1usize..150),
        scored in any::<bool>(),
        fine in any::<bool>(),
        budget in any::<prop::sample::Index>(),
        max_depth in prop::option::of(0usize..6),
    ) {
        let n = case.tokens.len();
        let budget = 1 + budget.index(n + 2);
        let scores: Vec<f32> = case.noise.iter().map(|&x| score_from(x, fine)).collect();
        let mut tree = TokenTree::new(case.tokens.clone(), case.parents.clone()).unwrap();
        if scored {
            tree = tree.with_scores(scores.clone()).unwrap();
        }
        let got = tree.best_first_subtree(budget, max_depth).unwrap();
        let model_scores = if scored { scores.clone() } else { vec![0.0; n] };
        let keep = reference::best_first_keep(&case.parents, &model_scores, budget, max_depth);
        let (tokens, parents, old) = reference::subtree(&case.tokens, &case.parents, &keep);
        prop_assert_eq!(got.tokens(), &tokens[..]);
        prop_assert_eq!(got.parents(), &parents[..]);
        if scored {
            let want: Vec<f32> = old.iter().map(|&i| scores[i]).collect();
            prop_assert_eq!(bits(got.scores().unwrap()), bits(&want));
        } else {
            prop_assert_eq!(got.scores(), None);
        }
        // Size: the budget, unless the (depth-limited) tree is smaller.
        let depth = reference::depths(&case.parents);
        let available = depth.iter().filter(|&&d| max_depth.is_none_or(|m| d as usize <= m)).count();
        prop_assert_eq!(got.num_nodes(), budget.min(available));
        prop_assert!(is_invalid_argument(&tree.best_first_subtree(0, max_depth).unwrap_err()));
    }

    /// Log-probability path scores never increase down the tree, so best-first selection is the
    /// global top-(budget - 1) of the non-root nodes by (score desc, id asc), ties included.
    #[test]
    fn best_first_subtree_logprob_is_global_top(
        case in tree_case(1usize..150),
        fine in any::<bool>(),
        budget in any::<prop::sample::Index>(),
    ) {
        let n = case.tokens.len();
        let budget = 1 + budget.index(n + 1);
        let edges: Vec<f32> = case
            .noise
            .iter()
            .map(|&x| if fine { -((x % 10_000) as f32) / 1000.0 } else { -((x % 4) as f32) / 2.0 })
            .collect();
        let tree = TokenTree::new(case.tokens.clone(), case.parents.clone())
            .unwrap()
            .with_scores(edges.clone())
            .unwrap()
            .with_path_scores(ScoreMode::LogProb)
            .unwrap();
        let got = tree.best_first_subtree(budget, None).unwrap();
        let path_score = |i: usize| {
            reference::node_path(&case.parents, i)[1..].iter().fold(0.0f32, |acc, &j| acc + edges[j])
        };
        let mut order: Vec<(f32, usize)> = (1..n).map(|i| (path_score(i), i)).collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut keep = vec![false; n];
        keep[0] = true;
        for &(_, i) in order.iter().take(budget - 1) {
            keep[i] = true;
        }
        let (tokens, parents, _) = reference::subtree(&case.tokens, &case.parents, &keep);
        prop_assert_eq!(got.tokens(), &tokens[..]);
        prop_assert_eq!(got.parents(), &parents[..]);
    }

    #[test]
    fn with_path_scores_folds_along_paths(case in tree_case(1usize..100), mode in 0u8..3) {
        let (score_mode, model) = [(ScoreMode::LogProb, Mode::LogProb), (ScoreMode::Prob, Mode::Prob), (ScoreMode::Path, Mode::Path)][mode as usize];
        let edges: Vec<f32> = case.noise.iter().map(|&x| match model {
            Mode::LogProb => -((x % 1000) as f32) / 100.0,
            Mode::Prob => (x % 1001) as f32 / 1000.0,
            Mode::Path => score_from(x, true),
        }).collect();
        let tree = TokenTree::new(case.tokens.clone(), case.parents.clone()).unwrap();
        let no_scores = tree.clone().with_path_scores(score_mode);
        prop_assert!(matches!(no_scores, Err(Error::Empty { .. })), "{:?}", no_scores);
        let got = tree.with_scores(edges.clone()).unwrap().with_path_scores(score_mode).unwrap();
        let want: Vec<f32> = (0..edges.len())
            .map(|i| {
                let path = reference::node_path(&case.parents, i);
                if model == Mode::Path {
                    return edges[i];
                }
                path[1..].iter().fold(model.root(), |acc, &j| model.extend(acc, edges[j]))
            })
            .collect();
        prop_assert_eq!(bits(got.scores().unwrap()), bits(&want));
    }
}

// ---------------------------------------------------------------------------------------------
// best_first_expand
// ---------------------------------------------------------------------------------------------

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A deterministic drafter: children of a path are a hash of (seed, path). Up to `k` children
/// with tokens from `0..vocab` (repeats happen) and edge scores suited to `mode`.
#[derive(Debug, Clone, Copy)]
struct Drafter {
    seed: u64,
    k: u64,
    vocab: u64,
    mode: Mode,
    fine: bool,
}

impl Drafter {
    fn children(&self, path: &[u32]) -> Vec<(u32, f32)> {
        let mut h = self.seed;
        for &t in path {
            h = splitmix(h ^ u64::from(t));
        }
        let count = h % (self.k + 1);
        (0..count)
            .map(|_| {
                h = splitmix(h);
                let token = (h % self.vocab) as u32;
                let grid = if self.fine { 1_000_003 } else { 9 };
                let x = ((h >> 24) % grid) as f32 / (grid - 1) as f32; // [0, 1]
                let score = match self.mode {
                    Mode::LogProb => -4.0 * x,
                    Mode::Prob => x,
                    Mode::Path => 4.0 * x - 2.0,
                };
                (token, score)
            })
            .collect()
    }
}

fn score_mode(mode: Mode) -> ScoreMode {
    match mode {
        Mode::LogProb => ScoreMode::LogProb,
        Mode::Prob => ScoreMode::Prob,
        Mode::Path => ScoreMode::Path,
    }
}

fn drafter(modes: &'static [Mode], max_k: u64) -> impl Strategy<Value = Drafter> {
    (
        any::<u64>(),
        1..=max_k,
        1u64..6,
        prop::sample::select(modes),
        any::<bool>(),
    )
        .prop_map(|(seed, k, vocab, mode, fine)| Drafter {
            seed,
            k,
            vocab,
            mode,
            fine,
        })
}

/// Runs the implementation, recording the paths it asks the drafter about.
fn run_expand(
    d: Drafter,
    root: u32,
    budget: usize,
    max_depth: usize,
) -> (TokenTree, Vec<Vec<u32>>) {
    let mut calls = Vec::new();
    let tree =
        TokenTree::best_first_expand(root, budget, max_depth, score_mode(d.mode), |path, out| {
            calls.push(path.to_vec());
            out.extend(d.children(path));
            Ok(())
        })
        .unwrap();
    (tree, calls)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn best_first_expand_matches_naive_loop(
        d in drafter(&[Mode::LogProb, Mode::Prob, Mode::Path], 4),
        root in 0u32..10,
        budget in 1usize..60,
        max_depth in 0usize..7,
    ) {
        let (tree, calls) = run_expand(d, root, budget, max_depth);
        let model_calls = RefCell::new(Vec::new());
        let expand = |path: &[u32]| {
            model_calls.borrow_mut().push(path.to_vec());
            d.children(path)
        };
        let (tokens, parents, scores) = reference::best_first_expand(root, budget, max_depth, d.mode, &expand);
        prop_assert_eq!(tree.tokens(), &tokens[..]);
        prop_assert_eq!(tree.parents(), &parents[..]);
        prop_assert_eq!(bits(tree.scores().unwrap()), bits(&scores));
        prop_assert_eq!(calls, model_calls.into_inner());
        prop_assert!(tree.num_nodes() <= budget);
        prop_assert!(tree.max_depth() <= max_depth);
    }

    /// With non-increasing path scores (log-probabilities <= 0, probabilities in [0, 1]),
    /// best-first expansion finds the global top-(budget - 1) nodes of the drafter's tree.
    #[test]
    fn best_first_expand_finds_global_top_nodes(
        d in drafter(&[Mode::LogProb, Mode::Prob], 3),
        root in 0u32..10,
        budget in 1usize..40,
        max_depth in 0usize..5,
    ) {
        let (tree, _) = run_expand(d, root, budget, max_depth);
        let universe: HashMap<Vec<u32>, f32> =
            reference::expansion_universe(root, max_depth, d.mode, &|p: &[u32]| d.children(p)).into_iter().collect();
        let scores = tree.scores().unwrap();
        let got: HashMap<Vec<u32>, f32> = (1..tree.num_nodes())
            .map(|i| (reference::token_path(tree.tokens(), tree.parents(), i), scores[i]))
            .collect();
        prop_assert_eq!(got.len(), (budget - 1).min(universe.len()));
        for (path, s) in &got {
            prop_assert_eq!(universe.get(path).map(|u| u.to_bits()), Some(s.to_bits()), "{:?}", path);
        }
        let min_kept = got.values().copied().min_by(f32::total_cmp);
        let max_dropped = universe.iter().filter(|(p, _)| !got.contains_key(*p)).map(|(_, &s)| s).max_by(f32::total_cmp);
        if let (Some(kept), Some(dropped)) = (min_kept, max_dropped) {
            prop_assert!(kept >= dropped, "kept {} < dropped {}", kept, dropped);
        }
        // Nodes are added in non-increasing score order.
        for w in scores[1..].windows(2) {
            prop_assert!(w[0] >= w[1], "{:?}", scores);
        }
    }
}

#[test]
fn best_first_expand_errors() {
    let none = |_: &[u32], _: &mut Vec<(u32, f32)>| Ok(());
    for budget in [0, MAX_NODES + 1] {
        let e = TokenTree::best_first_expand(1, budget, 3, ScoreMode::LogProb, none).unwrap_err();
        assert!(is_invalid_argument(&e), "{e}");
    }
    let root_only = TokenTree::best_first_expand(1, 5, 3, ScoreMode::LogProb, none).unwrap();
    assert_eq!(root_only.tokens(), &[1]);
    assert_eq!(root_only.scores(), Some(&[0.0][..]));
    let nan = |_: &[u32], out: &mut Vec<(u32, f32)>| {
        out.push((3, f32::NAN));
        Ok(())
    };
    assert!(is_invalid_argument(
        &TokenTree::best_first_expand(1, 5, 3, ScoreMode::Prob, nan).unwrap_err()
    ));
    let big = |_: &[u32], out: &mut Vec<(u32, f32)>| {
        out.extend([(3, -1.0), (MAX_TOKEN_ID + 1, -2.0)]);
        Ok(())
    };
    assert!(matches!(
        TokenTree::best_first_expand(1, 5, 3, ScoreMode::LogProb, big),
        Err(Error::InvalidValue { index: 1, .. })
    ));
    let failing = |path: &[u32], out: &mut Vec<(u32, f32)>| {
        if path.len() > 2 {
            return Err(Error::Empty { what: "drafter" });
        }
        out.push((path.len() as u32, -1.0));
        Ok(())
    };
    assert_eq!(
        TokenTree::best_first_expand(1, 10, 5, ScoreMode::LogProb, failing).unwrap_err(),
        Error::Empty { what: "drafter" }
    );
    // budget 1 never calls the drafter
    let panics =
        |_: &[u32], _: &mut Vec<(u32, f32)>| -> fastdec_core::Result<()> { panic!("called") };
    assert_eq!(
        TokenTree::best_first_expand(4, 1, 3, ScoreMode::Path, panics)
            .unwrap()
            .tokens(),
        &[4]
    );
}
