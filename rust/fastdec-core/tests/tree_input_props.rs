//! Property tests of `TokenTree` / `TreeShape` input validation: every kind of defect in the
//! parents and tokens gives the error the naive model in `reference/` predicts, and the size
//! limits hold.

mod arb;
mod common;
mod reference;

use arb::tree_case;
use common::{build, expected_of};
use fastdec_core::{TokenTree, TreeShape, MAX_NODES, MAX_TOKEN_ID};
use proptest::collection::vec;
use proptest::prelude::*;
use reference::Expected;

/// Parent arrays with every kind of defect, tokens that may repeat among siblings or exceed
/// `MAX_TOKEN_ID`, and lengths that may disagree.
fn raw_tree_input() -> impl Strategy<Value = (Vec<u32>, Vec<i32>)> {
    (0usize..40, 0u8..10, 0u8..3, 0u8..4).prop_flat_map(|(n, root_kind, len_kind, tok_kind)| {
        let parent = prop_oneof![
            6 => -3i32..45,
            1 => Just(i32::MIN),
            1 => Just(i32::MAX),
        ];
        let token = match tok_kind {
            0 => (0u32..3).boxed(),
            1 => (0u32..1000).boxed(),
            2 => prop_oneof![
                12 => 0u32..50,
                1 => Just(MAX_TOKEN_ID),
                1 => Just(MAX_TOKEN_ID + 1),
                1 => (MAX_TOKEN_ID - 2)..=u32::MAX,
            ]
            .boxed(),
            _ => any::<u32>().boxed(),
        };
        let ntok = match len_kind {
            0 | 1 => n,
            _ => (n + 1).saturating_sub(2 * (n % 2)),
        };
        (vec(parent, n), vec(token, ntok), any::<u32>()).prop_map(
            move |(mut parents, tokens, r)| {
                if let Some(p0) = parents.first_mut() {
                    if root_kind < 8 {
                        *p0 = -1;
                    }
                }
                // Mostly-valid parent arrays: repair all but (at most) one entry.
                if root_kind < 5 {
                    let bad = if parents.is_empty() {
                        0
                    } else {
                        r as usize % parents.len()
                    };
                    for (i, p) in parents.iter_mut().enumerate().skip(1) {
                        if i != bad || root_kind < 2 {
                            *p = p.rem_euclid(i as i32);
                        }
                    }
                }
                (tokens, parents)
            },
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn invalid_input_gives_the_right_error((tokens, parents) in raw_tree_input()) {
        let want = reference::validate_tree(&tokens, &parents, MAX_NODES);
        match TokenTree::new(tokens.clone(), parents.clone()) {
            Ok(tree) => {
                prop_assert_eq!(want, None);
                prop_assert_eq!(tree.tokens(), &tokens[..]);
                prop_assert_eq!(tree.parents(), &parents[..]);
            }
            Err(e) => prop_assert_eq!(Some(expected_of(&e)), want, "{}", e),
        }
        let want_shape = reference::validate_parents(&parents, MAX_NODES);
        match TreeShape::new(parents.clone()) {
            Ok(_) => prop_assert_eq!(want_shape, None),
            Err(e) => prop_assert_eq!(Some(expected_of(&e)), want_shape, "{}", e),
        }
    }

    /// Valid parents, tokens from a tiny vocabulary: duplicate siblings (also in groups of
    /// more than 16 siblings) are reported as the first offending pair.
    #[test]
    fn duplicate_siblings_are_reported(
        (mode, raw_parents, raw_tokens) in (1usize..200, 0u8..4, prop_oneof![Just(3u32), Just(40), Just(400)])
            .prop_flat_map(|(n, mode, vocab)| (Just(mode), vec(any::<u32>(), n), vec(0..vocab, n)))
    ) {
        let parents = arb::parents_from(mode, &raw_parents);
        let want = reference::first_duplicate_sibling(&raw_tokens, &parents);
        match TokenTree::new(raw_tokens.clone(), parents.clone()) {
            Ok(_) => prop_assert_eq!(want, None),
            Err(e) => prop_assert_eq!(Some(expected_of(&e)), want, "{}", e),
        }
    }

    #[test]
    fn chain_matches_explicit_parents(tokens in vec(0u32..100, 1..80)) {
        let chain = TokenTree::chain(tokens.clone()).unwrap();
        let parents: Vec<i32> = (0..tokens.len() as i32).map(|i| i - 1).collect();
        prop_assert_eq!(chain.parents(), &parents[..]);
        prop_assert_eq!(chain.tokens(), &tokens[..]);
        prop_assert_eq!(chain.max_depth(), tokens.len() - 1);
        prop_assert_eq!(chain.chain_view(None).unwrap(), parents.iter().map(|p| p + 1).collect::<Vec<_>>());
    }

    #[test]
    fn with_scores_validates(case in tree_case(1usize..30), nan_at in any::<prop::sample::Index>(), extra in 0usize..3) {
        let tree = build(&case);
        let n = tree.num_nodes();
        let scores: Vec<f32> = case.noise.iter().map(|&x| (x % 100) as f32 / 10.0).collect();
        let scored = tree.clone().with_scores(scores.clone()).unwrap();
        prop_assert_eq!(scored.scores(), Some(&scores[..]));
        let mut bad = scores.clone();
        let at = nan_at.index(n);
        bad[at] = f32::NAN;
        prop_assert_eq!(expected_of(&tree.clone().with_scores(bad).unwrap_err()), Expected::InvalidValue { index: at });
        let mut long = scores;
        long.resize(n + 1 + extra, 0.0);
        prop_assert_eq!(
            expected_of(&tree.with_scores(long).unwrap_err()),
            Expected::LengthMismatch { expected: n, got: n + 1 + extra }
        );
    }
}

#[test]
fn size_limits() {
    let parents: Vec<i32> = (0..=MAX_NODES as i32).map(|i| i - 1).collect();
    let tokens = vec![1u32; MAX_NODES + 1];
    assert_eq!(
        expected_of(&TokenTree::new(tokens.clone(), parents.clone()).unwrap_err()),
        Expected::TooManyNodes
    );
    assert_eq!(
        expected_of(&TreeShape::new(parents.clone()).unwrap_err()),
        Expected::TooManyNodes
    );
    assert_eq!(
        expected_of(&TokenTree::chain(tokens.clone()).unwrap_err()),
        Expected::TooManyNodes
    );
    // exactly MAX_NODES is fine, with the last word of every row in use
    let tree = TokenTree::new(tokens[..MAX_NODES].to_vec(), parents[..MAX_NODES].to_vec()).unwrap();
    assert_eq!(tree.max_depth(), MAX_NODES - 1);
    assert!(tree.ancestor_bits().get(MAX_NODES - 1, 0));
    assert!(tree.ancestor_bits().get(MAX_NODES - 1, MAX_NODES - 1));
    assert!(!tree.ancestor_bits().get(MAX_NODES - 2, MAX_NODES - 1));
    assert_eq!(
        TokenTree::chain(tokens[..MAX_NODES].to_vec())
            .unwrap()
            .parents(),
        tree.parents()
    );

    assert_eq!(
        expected_of(&TokenTree::new(vec![], vec![]).unwrap_err()),
        Expected::Empty
    );
    assert_eq!(
        expected_of(&TreeShape::new(vec![]).unwrap_err()),
        Expected::Empty
    );
    assert_eq!(
        expected_of(&TokenTree::chain(vec![]).unwrap_err()),
        Expected::Empty
    );
    assert_eq!(
        expected_of(&TokenTree::chain(vec![1, MAX_TOKEN_ID + 1, 2]).unwrap_err()),
        Expected::InvalidValue { index: 1 }
    );
    assert_eq!(
        TokenTree::chain(vec![MAX_TOKEN_ID]).unwrap().root_token(),
        MAX_TOKEN_ID
    );
    assert_eq!(
        fastdec_core::token_ids_from_i32(&[3, 0, -1, -5], "token").map_err(|e| expected_of(&e)),
        Err(Expected::InvalidValue { index: 2 })
    );
    assert_eq!(
        fastdec_core::token_ids_from_i32(&[3, 0, i32::MAX], "token"),
        Ok(vec![3, 0, MAX_TOKEN_ID])
    );
}
