//! Property tests of constrained tree pruning and greedy verification
//! (`constraints::tree_verify`) against naive models written here: pruning replays every node's
//! token path from the root state; greedy verification takes the argmax of each visited row
//! under the full mask. Vocabularies of odd sizes around the 16 greedy candidates and the
//! 32-bit mask words; logits with many ties and `-inf`.

mod arb;

use std::sync::Arc;

use arb::{distinct_sibling_tokens, parents_from};
use fastdec_core::constraints::tree_verify::top_candidates;
use fastdec_core::constraints::{
    prune_tree, verify_tree, Constraint, RegexConstraint, Rng, Target, TokenVocab,
};
use fastdec_core::TokenTree;
use proptest::collection::vec;
use proptest::prelude::*;

const ALPHABET: [&[u8]; 7] = [b"a", b"b", b"c", b"ab", b"ba", b"abc", b" "];
// The last two allow few tokens, so the 16 candidates often all fail and the mask decides.
const PATTERNS: [&str; 5] = [
    r"(ab|c)*b?",
    r"[ab]{0,6}c",
    r"(a|bc| )*",
    r"c+",
    r" ?(abc)*",
];

/// Token 0 is end of sequence; token `i` is `ALPHABET[(i - 1) % 7]`.
fn regex(pattern: &str, size: usize) -> RegexConstraint {
    let mut words: Vec<&[u8]> = vec![b"</s>"];
    words.extend((1..size).map(|i| ALPHABET[(i - 1) % ALPHABET.len()]));
    let vocab = TokenVocab::new(&words, &[0], &[0]).unwrap();
    RegexConstraint::new(pattern, Arc::new(vocab)).unwrap()
}

/// The state after the path root..node, or `None` if some token on it is not allowed.
fn path_state(c: &RegexConstraint, tree: &TokenTree, node: usize, root: u32) -> Option<u32> {
    let mut path = vec![];
    let mut u = node as i32;
    while u > 0 {
        path.push(tree.tokens()[u as usize]);
        u = tree.parents()[u as usize];
    }
    path.reverse();
    let vocab = Constraint::vocab(c).len();
    if path.iter().any(|&t| t as usize >= vocab) {
        return None;
    }
    Constraint::advance(c, &root, &path).unwrap()
}

fn allowed(c: &RegexConstraint, state: u32, vocab: usize) -> Vec<u32> {
    let mut s = state;
    (0..vocab as u32)
        .filter(|&t| Constraint::allows(c, &mut s, t).unwrap())
        .collect()
}

fn case() -> impl Strategy<Value = (usize, usize, u8, Vec<u32>, Vec<i8>, usize)> {
    (
        prop::sample::select(vec![1usize, 2, 9, 15, 16, 17, 31, 32, 33, 40, 65]),
        1usize..24,
        any::<u8>(),
        0usize..PATTERNS.len(),
    )
        .prop_flat_map(|(size, n, mode, pattern)| {
            (
                Just(size),
                Just(n),
                Just(mode),
                vec(any::<u32>(), n),
                vec(-3i8..=3, n * size),
                Just(pattern),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn prune_and_greedy_verify_match_naive((size, n, mode, raw, ints, pattern) in case()) {
        let c = regex(PATTERNS[pattern], size);
        let parents = parents_from(mode, &raw);
        // A few ids past the vocabulary, which pruning must drop.
        let tokens = distinct_sibling_tokens(&parents, &raw, size as u32 + 2, 0);
        let tree = TokenTree::new(tokens, parents).unwrap();
        let root = c.start();
        let pruned = prune_tree(&c, &tree, &root);

        // Pruning: exactly the nodes whose path is allowed, in order, with their states.
        let kept: Vec<usize> = (0..n).filter(|&i| path_state(&c, &tree, i, root).is_some()).collect();
        prop_assert_eq!(pruned.tree.num_nodes(), kept.len());
        prop_assert_eq!(pruned.changed, kept.len() < n);
        for (new, &old) in kept.iter().enumerate() {
            prop_assert_eq!(pruned.tree.tokens()[new], tree.tokens()[old]);
            prop_assert_eq!(Some(pruned.states[new]), path_state(&c, &tree, old, root));
        }

        // Greedy verification: the masked argmax (lowest id on ties) at each visited node.
        let m = kept.len();
        let logits: Vec<f32> = kept
            .iter()
            .flat_map(|&old| ints[old * size..(old + 1) * size].iter())
            .map(|&x| if x == -3 { f32::NEG_INFINITY } else { f32::from(x) })
            .collect();
        let mut states = pruned.states.clone();
        let got = verify_tree(&c, &pruned.tree, &mut states, Target::Logits(&logits), &mut Rng::new(0)).unwrap();
        prop_assert_eq!(&states, &pruned.states);
        let mut path = vec![0i32];
        let mut u = 0usize;
        let bonus = loop {
            let row = &logits[u * size..(u + 1) * size];
            let ok = allowed(&c, pruned.states[u], size);
            let best = ok.iter().copied().reduce(|b, t| if row[t as usize] > row[b as usize] { t } else { b });
            match best.and_then(|y| pruned.tree.find_child(u, y).map(|ch| (y, ch))) {
                Some((_, ch)) => { path.push(ch as i32); u = ch; }
                None => break best,
            }
        };
        prop_assert_eq!(&got.accepted_nodes, &path);
        prop_assert_eq!(got.bonus_token, bonus);
        let after = bonus.map_or(Some(pruned.states[u]), |y| c.advance(pruned.states[u], y));
        prop_assert_eq!(Some(got.state), after.or(Some(pruned.states[u])));
        prop_assert!(m >= 1);
    }

    #[test]
    fn top_candidates_is_a_stable_sort_prefix(ints in vec(-3i8..=3, 0..70), k in 0usize..20) {
        let row: Vec<f32> = ints.iter().map(|&x| if x == -3 { f32::NEG_INFINITY } else { f32::from(x) }).collect();
        let mut want: Vec<u32> = (0..row.len() as u32).collect();
        want.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));  // stable: ids ascend on ties
        want.truncate(k);
        prop_assert_eq!(top_candidates(&row, k), want);
    }
}
