//! Property tests of greedy verification (`TokenTree::verify_greedy`, `verify_greedy_batch`)
//! against the naive model in `reference/`.

mod arb;
mod common;
mod reference;

use arb::{sizes_small, tree_case, TreeCase};
use common::{build, expected_of};
use fastdec_core::{verify_greedy_batch, verify_greedy_batch_padded, TokenTree};
use proptest::collection::vec;
use proptest::prelude::*;
use reference::Expected;

/// Target argmax per node: with probability 0.7 the token of a random child, otherwise a token
/// near the tree's vocabulary (which may or may not match a child).
fn argmax_for(case: &TreeCase, salt: u32) -> Vec<i32> {
    let children = reference::children_lists(&case.parents);
    (0..case.tokens.len())
        .map(|i| {
            let x = case.noise[i]
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(salt.wrapping_mul(0x85EB_CA6B));
            let kids = &children[i];
            if x % 10 < 7 && !kids.is_empty() {
                case.tokens[kids[(x / 10) as usize % kids.len()]] as i32
            } else {
                (case.offset + (x / 10) % (case.vocab + 2)) as i32
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn verify_greedy_matches_path_cumprod(case in tree_case(sizes_small()), salt in any::<u32>()) {
        let tree = build(&case);
        let argmax = argmax_for(&case, salt);
        let got = tree.verify_greedy(&argmax).unwrap();
        let (want_nodes, want_bonus) = reference::verify_greedy(&case.tokens, &case.parents, &argmax);
        prop_assert_eq!(&got.accepted_nodes, &want_nodes);
        prop_assert_eq!(got.bonus_token as i32, want_bonus);
        prop_assert_eq!(got.num_accepted(), want_nodes.len() - 1);
        let mut emitted: Vec<u32> = want_nodes[1..].iter().map(|&j| case.tokens[j as usize]).collect();
        emitted.push(want_bonus as u32);
        prop_assert_eq!(got.emitted_tokens(&tree), emitted);
    }

    #[test]
    fn verify_greedy_rejects_bad_argmax(case in tree_case(1usize..60), salt in any::<u32>(), at in any::<prop::sample::Index>(), neg in i32::MIN..0) {
        let tree = build(&case);
        let n = tree.num_nodes();
        let mut argmax = argmax_for(&case, salt);
        let at = at.index(n);
        argmax[at] = neg;
        prop_assert_eq!(expected_of(&tree.verify_greedy(&argmax).unwrap_err()), Expected::InvalidValue { index: at });
        argmax[at] = 0;
        argmax.push(0);
        prop_assert_eq!(
            expected_of(&tree.verify_greedy(&argmax).unwrap_err()),
            Expected::LengthMismatch { expected: n, got: n + 1 }
        );
        argmax.truncate(n - 1);
        prop_assert_eq!(
            expected_of(&tree.verify_greedy(&argmax).unwrap_err()),
            Expected::LengthMismatch { expected: n, got: n - 1 }
        );
    }

    #[test]
    fn verify_greedy_batch_matches_per_tree(
        cases in vec(tree_case(1usize..50), 1..6),
        salt in any::<u32>(),
        at in any::<prop::sample::Index>(),
        neg in i32::MIN..0,
    ) {
        let trees: Vec<TokenTree> = cases.iter().map(build).collect();
        let refs: Vec<&TokenTree> = trees.iter().collect();
        let mut flat = Vec::new();
        let mut want = Vec::new();
        for (case, tree) in cases.iter().zip(&trees) {
            let argmax = argmax_for(case, salt);
            want.push(tree.verify_greedy(&argmax).unwrap());
            let (nodes, bonus) = reference::verify_greedy(&case.tokens, &case.parents, &argmax);
            prop_assert_eq!(&want.last().unwrap().accepted_nodes, &nodes);
            prop_assert_eq!(want.last().unwrap().bonus_token as i32, bonus);
            flat.extend(argmax);
        }
        prop_assert_eq!(&verify_greedy_batch(&refs, &flat).unwrap(), &want);
        // The padded layout holds the same outcomes, row by row.
        let padded = verify_greedy_batch_padded(&refs, &flat).unwrap();
        let width = trees.iter().map(|t| t.max_depth() + 1).max().unwrap();
        prop_assert_eq!((padded.rows, padded.width), (trees.len(), width));
        for (b, w) in want.iter().enumerate() {
            let row = &padded.accepted_nodes[b * width..(b + 1) * width];
            let k = w.accepted_nodes.len();
            prop_assert_eq!(&row[..k], &w.accepted_nodes[..]);
            prop_assert!(row[k..].iter().all(|&x| x == -1));
            prop_assert_eq!(padded.num_accepted[b] as usize, w.num_accepted());
            prop_assert_eq!(padded.bonus_tokens[b] as u32, w.bonus_token);
        }

        let total = flat.len();
        let mut longer = flat.clone();
        longer.push(1);
        prop_assert_eq!(
            expected_of(&verify_greedy_batch(&refs, &longer).unwrap_err()),
            Expected::LengthMismatch { expected: total, got: total + 1 }
        );
        // a negative token reports its index in the flat array
        let at = at.index(total);
        flat[at] = neg;
        prop_assert_eq!(
            expected_of(&verify_greedy_batch(&refs, &flat).unwrap_err()),
            Expected::InvalidValue { index: at }
        );
    }
}

#[test]
fn verify_greedy_batch_empty() {
    assert_eq!(verify_greedy_batch(&[], &[]), Ok(vec![]));
    let padded = verify_greedy_batch_padded(&[], &[]).unwrap();
    assert_eq!(
        (padded.rows, padded.width, padded.accepted_nodes.len()),
        (0, 1, 0)
    );
    assert_eq!(
        verify_greedy_batch(&[], &[1]).map_err(|e| expected_of(&e)),
        Err(Expected::LengthMismatch {
            expected: 0,
            got: 1
        })
    );
}
