//! Property tests of `TokenTree`: every derived buffer, input validation and greedy
//! verification against the naive models in `reference/`.

#![allow(clippy::float_cmp)] // masks hold exact 0.0 / f32::MIN, compared bit for bit

mod arb;
mod reference;

use std::fmt::Debug;
use std::mem::MaybeUninit;

use arb::{sizes_big, sizes_small, tree_case, TreeCase};
use fastdec_core::{
    verify_greedy_batch, Bf16Bits, Error, F16Bits, MaskDtype, MaskValue, TokenTree, TreeShape,
    MAX_NODES, MAX_TOKEN_ID,
};
use proptest::collection::vec;
use proptest::prelude::*;
use reference::Expected;

/// The facts of an error that the model predicts.
fn expected_of(e: &Error) -> Expected {
    match e {
        Error::Empty { .. } => Expected::Empty,
        Error::TooManyNodes { .. } => Expected::TooManyNodes,
        Error::LengthMismatch { expected, got, .. } => Expected::LengthMismatch {
            expected: *expected,
            got: *got,
        },
        Error::RootParent { parent } => Expected::RootParent { parent: *parent },
        Error::ParentNotBefore { node, parent } => Expected::ParentNotBefore {
            node: *node,
            parent: *parent,
        },
        Error::DuplicateSibling {
            parent,
            first,
            second,
            token,
        } => Expected::DuplicateSibling {
            parent: *parent,
            first: *first,
            second: *second,
            token: *token,
        },
        Error::InvalidValue { index, .. } => Expected::InvalidValue { index: *index },
        Error::InvalidArgument { .. } => Expected::InvalidArgument,
        Error::IndexOutOfRange { index, .. } => Expected::IndexOutOfRange { index: *index },
        other => panic!("unexpected error variant {other:?}"),
    }
}

/// `finfo(float16).min` = -65504: sign 1, exponent 11110, mantissa all ones.
const F16_MIN_BITS: u16 = (1 << 15) | (0x1E << 10) | 0x3FF;
/// `finfo(bfloat16).min`: sign 1, exponent 11111110, mantissa (7 bits) all ones; it is also
/// the upper half of `f32::MIN`.
const BF16_MIN_BITS: u16 = (1 << 15) | (0xFE << 7) | 0x7F;

/// Reads back an output buffer that was fully initialised with a sentinel before the call.
#[allow(unsafe_code)]
fn read_back<T: Copy>(out: &[MaybeUninit<T>]) -> Vec<T> {
    // SAFETY: every element was created by `MaybeUninit::new(sentinel)`, so it is initialised
    // whether or not the code under test wrote it.
    out.iter().map(|x| unsafe { x.assume_init() }).collect()
}

/// `write_additive_mask::<T>` against the ancestor matrix: `zero` on prefix columns and
/// ancestors, `min` elsewhere, and no element left at the sentinel.
fn check_write_mask<T: MaskValue + PartialEq + Debug>(
    tree: &TokenTree,
    anc: &[Vec<bool>],
    prefix_len: usize,
    zero: T,
    min: T,
    sentinel: T,
) -> Result<(), TestCaseError> {
    let n = anc.len();
    let w = prefix_len + n;
    let mut out = vec![MaybeUninit::new(sentinel); n * w];
    tree.write_additive_mask(prefix_len, &mut out).unwrap();
    let got = read_back(&out);
    for i in 0..n {
        for k in 0..w {
            let want = if k < prefix_len || anc[i][k - prefix_len] {
                zero
            } else {
                min
            };
            prop_assert_eq!(
                got[i * w + k],
                want,
                "write_additive_mask[{}][{}] prefix {}",
                i,
                k,
                prefix_len
            );
        }
    }
    let mut wrong = vec![MaybeUninit::new(sentinel); n * w + 1];
    prop_assert_eq!(
        expected_of(
            &tree
                .write_additive_mask(prefix_len, &mut wrong)
                .unwrap_err()
        ),
        Expected::LengthMismatch {
            expected: n * w,
            got: n * w + 1
        }
    );
    Ok(())
}

fn build(case: &TreeCase) -> TokenTree {
    TokenTree::new(case.tokens.clone(), case.parents.clone()).expect("generated trees are valid")
}

/// Compares every derived buffer of `case` with the naive model.
#[allow(clippy::needless_pass_by_value)]
fn check_derived(case: TreeCase) -> Result<(), TestCaseError> {
    let tree = build(&case);
    let parents = &case.parents;
    let n = parents.len();
    prop_assert_eq!(tree.num_nodes(), n);
    prop_assert_eq!(tree.tokens(), &case.tokens[..]);
    prop_assert_eq!(tree.parents(), &parents[..]);
    prop_assert_eq!(tree.root_token(), case.tokens[0]);

    // depth, max_depth
    let depth = reference::depths(parents);
    let max_depth = *depth.iter().max().unwrap() as usize;
    prop_assert_eq!(tree.depth(), &depth[..]);
    prop_assert_eq!(tree.max_depth(), max_depth);

    // first_child / next_sibling / children, ascending
    let children = reference::children_lists(parents);
    let shape = tree.shape();
    for (p, kids) in children.iter().enumerate() {
        prop_assert_eq!(
            shape.first_child()[p],
            kids.first().map_or(-1, |&c| c as i32)
        );
        for (k, &c) in kids.iter().enumerate() {
            prop_assert_eq!(
                shape.next_sibling()[c],
                kids.get(k + 1).map_or(-1, |&s| s as i32)
            );
        }
        prop_assert_eq!(&shape.children(p).collect::<Vec<_>>(), kids);
    }
    prop_assert_eq!(shape.next_sibling()[0], -1);

    // find_child against a scan (present tokens and one absent token per node)
    for (p, kids) in children.iter().enumerate() {
        for &c in kids {
            prop_assert_eq!(tree.find_child(p, case.tokens[c]), Some(c));
        }
        // one of kids.len() + 1 candidates is absent
        let absent = (0..=kids.len() as u32)
            .find(|t| kids.iter().all(|&c| case.tokens[c] != *t))
            .unwrap();
        prop_assert_eq!(tree.find_child(p, absent), None);
    }

    // leaves and leaf paths
    let leaves = reference::leaves(parents);
    prop_assert_eq!(
        shape.leaves(),
        &leaves.iter().map(|&l| l as i32).collect::<Vec<_>>()[..]
    );
    let width = max_depth + 1;
    prop_assert_eq!(shape.leaf_path_width(), width);
    let mut want_paths = Vec::new();
    for &leaf in &leaves {
        let mut row: Vec<i32> = reference::node_path(parents, leaf)
            .iter()
            .map(|&j| j as i32)
            .collect();
        row.resize(width, -1);
        want_paths.extend(row);
    }
    prop_assert_eq!(tree.leaf_paths(), &want_paths[..]);

    // ancestor bits, packed int32 words and the dense mask
    let anc = reference::ancestor_matrix(parents);
    let bits = tree.ancestor_bits();
    prop_assert_eq!(bits.words_per_row(), n.div_ceil(64));
    for (i, row) in anc.iter().enumerate() {
        prop_assert_eq!(bits.row(i).len(), n.div_ceil(64));
        for (j, &a) in row.iter().enumerate() {
            prop_assert_eq!(bits.get(i, j), a, "ancestor bit ({}, {})", i, j);
        }
        // row sums = depth + 1 (trees.md §1.1)
        prop_assert_eq!(row.iter().filter(|&&a| a).count(), depth[i] as usize + 1);
    }
    let words32 = n.div_ceil(32);
    let mut want_words = Vec::with_capacity(n * words32);
    for row in &anc {
        for w in 0..words32 {
            let mut word = 0u32;
            for b in 0..32 {
                if row.get(32 * w + b).copied().unwrap_or(false) {
                    word |= 1 << b;
                }
            }
            want_words.push(word as i32);
        }
    }
    prop_assert_eq!(bits.to_i32_words(), want_words);
    let dense: Vec<bool> = anc.concat();
    prop_assert_eq!(tree.ancestor_mask(), dense.clone());

    // additive float masks: 0 on every prefix column and on ancestors, MIN elsewhere
    for prefix_len in [0usize, 1, 5] {
        let w = prefix_len + n;
        let mut out = vec![1.5f32; n * w];
        tree.additive_mask_into(prefix_len, 0.0f32, f32::MIN, &mut out)
            .unwrap();
        for i in 0..n {
            for k in 0..w {
                let visible = k < prefix_len || anc[i][k - prefix_len];
                let want = if visible { 0.0 } else { f32::MIN };
                prop_assert_eq!(
                    out[i * w + k].to_bits(),
                    want.to_bits(),
                    "mask[{}][{}] prefix {}",
                    i,
                    k,
                    prefix_len
                );
            }
        }
        prop_assert_eq!(tree.additive_mask_len(prefix_len), Ok(n * w));
        let mut wrong = vec![0.0f32; n * w + 1];
        prop_assert_eq!(
            expected_of(
                &tree
                    .additive_mask_into(prefix_len, 0.0, f32::MIN, &mut wrong)
                    .unwrap_err()
            ),
            Expected::LengthMismatch {
                expected: n * w,
                got: n * w + 1
            }
        );
    }

    // the same masks through the (cached for small trees) MaybeUninit writer, every dtype;
    // prefixes in both orders so that a cached block is reused with another prefix
    for prefix_len in [5usize, 0, 1, 0] {
        check_write_mask(&tree, &anc, prefix_len, 0.0f32, f32::MIN, 1.5)?;
        check_write_mask(&tree, &anc, prefix_len, 0.0f64, f64::MIN, 1.5)?;
        check_write_mask(
            &tree,
            &anc,
            prefix_len,
            F16Bits(0),
            F16Bits(F16_MIN_BITS),
            F16Bits(0x3C00),
        )?;
        check_write_mask(
            &tree,
            &anc,
            prefix_len,
            Bf16Bits(0),
            Bf16Bits(BF16_MIN_BITS),
            Bf16Bits(0x3F80),
        )?;
    }

    // position ids
    for prefix_len in [0usize, 1, 5, 100_000] {
        let want: Vec<i32> = depth.iter().map(|&d| prefix_len as i32 + d).collect();
        prop_assert_eq!(tree.position_ids(prefix_len).unwrap(), want);
    }
    let last_ok = i32::MAX as usize - max_depth;
    prop_assert_eq!(tree.position_ids(last_ok).unwrap()[0], last_ok as i32);
    prop_assert_eq!(
        expected_of(&tree.position_ids(last_ok + 1).unwrap_err()),
        Expected::InvalidArgument
    );

    // padded (SGLang draft_token_num form)
    let extra = case.noise[0] as usize % 4;
    let size = n + extra;
    let pad = case.noise[n - 1] % 7;
    let prefix_len = [0usize, 1, 5][case.noise[0] as usize % 3];
    let padded = tree.padded(size, pad, prefix_len).unwrap();
    let mut want_tokens: Vec<i32> = case.tokens.iter().map(|&t| t as i32).collect();
    want_tokens.resize(size, pad as i32);
    prop_assert_eq!(&padded.tokens, &want_tokens);
    let mut want_pos: Vec<i32> = depth.iter().map(|&d| prefix_len as i32 + d).collect();
    want_pos.resize(size, prefix_len as i32);
    prop_assert_eq!(&padded.positions, &want_pos);
    for (i, row) in padded.mask.chunks_exact(size).enumerate() {
        for (j, &m) in row.iter().enumerate() {
            let want = if i < n && j < n { anc[i][j] } else { i == j };
            prop_assert_eq!(m, want, "padded mask ({}, {})", i, j);
        }
    }
    prop_assert_eq!(
        expected_of(&tree.padded(MAX_NODES + 1, pad, 0).unwrap_err()),
        Expected::InvalidArgument
    );
    if n > 1 {
        prop_assert_eq!(
            expected_of(&tree.padded(n - 1, pad, 0).unwrap_err()),
            Expected::InvalidArgument
        );
    }
    prop_assert_eq!(
        expected_of(&tree.padded(size, MAX_TOKEN_ID + 1, 0).unwrap_err()),
        Expected::InvalidArgument
    );

    // chain view: default = deepest leaf, lowest id on ties; explicit leaves; errors
    let deepest = *leaves
        .iter()
        .find(|&&l| depth[l] as usize == max_depth)
        .unwrap();
    let as_i32 = |v: Vec<usize>| v.into_iter().map(|j| j as i32).collect::<Vec<_>>();
    prop_assert_eq!(
        tree.chain_view(None).unwrap(),
        as_i32(reference::node_path(parents, deepest))
    );
    for &leaf in leaves.iter().take(50) {
        prop_assert_eq!(
            tree.chain_view(Some(leaf)).unwrap(),
            as_i32(reference::node_path(parents, leaf))
        );
    }
    if let Some(inner) = (0..n).find(|&i| !children[i].is_empty()) {
        prop_assert_eq!(
            expected_of(&tree.chain_view(Some(inner)).unwrap_err()),
            Expected::InvalidArgument
        );
    }
    prop_assert_eq!(
        expected_of(&tree.chain_view(Some(n)).unwrap_err()),
        Expected::IndexOutOfRange { index: n as i64 }
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn derived_buffers_match_naive_model(case in tree_case(sizes_small())) {
        check_derived(case)?;
    }

    /// TreeShape alone agrees with the tree built around it.
    #[test]
    fn shape_new_matches_naive_model(case in tree_case(sizes_small())) {
        let shape = TreeShape::new(case.parents.clone()).unwrap();
        prop_assert_eq!(shape.num_nodes(), case.parents.len());
        prop_assert_eq!(shape.depth(), &reference::depths(&case.parents)[..]);
        let leaves: Vec<i32> = reference::leaves(&case.parents).iter().map(|&l| l as i32).collect();
        prop_assert_eq!(shape.leaves(), &leaves[..]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// Trees of 600..=1100 nodes: many 64-bit words per ancestor row.
    #[test]
    fn derived_buffers_match_naive_model_big(case in tree_case(sizes_big())) {
        check_derived(case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid input
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Greedy verification
// ---------------------------------------------------------------------------------------------

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
        prop_assert_eq!(verify_greedy_batch(&refs, &flat).unwrap(), want);

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
fn mask_dtypes() {
    for (names, dtype) in [
        (
            &["float32", "f32", "single", "torch.float32", "torch.float"][..],
            MaskDtype::Float32,
        ),
        (
            &["float64", "f64", "double", "float", "torch.float64"][..],
            MaskDtype::Float64,
        ),
        (
            &["float16", "f16", "half", "torch.float16"][..],
            MaskDtype::Float16,
        ),
        (
            &["bfloat16", "bf16", "torch.bfloat16"][..],
            MaskDtype::BFloat16,
        ),
    ] {
        for name in names {
            assert_eq!(MaskDtype::parse(name), Ok(dtype), "{name}");
        }
    }
    for bad in ["int8", "", "torch.", "Float32", "torch.torch.float32"] {
        assert_eq!(
            MaskDtype::parse(bad).map_err(|e| expected_of(&e)),
            Err(Expected::InvalidArgument),
            "{bad}"
        );
    }
    assert_eq!(MaskDtype::Float16.min_bits16(), F16_MIN_BITS);
    assert_eq!(MaskDtype::BFloat16.min_bits16(), BF16_MIN_BITS);
    assert_eq!(F16_MIN_BITS, 0xFBFF);
    assert_eq!(<F16Bits as MaskValue>::MIN, F16Bits(F16_MIN_BITS));
    assert_eq!(<Bf16Bits as MaskValue>::MIN, Bf16Bits(BF16_MIN_BITS));
    assert_eq!(u32::from(BF16_MIN_BITS), f32::MIN.to_bits() >> 16);
    assert_eq!(
        f32::from_bits(u32::from(BF16_MIN_BITS) << 16),
        -3.389_531_4e38
    );
}

#[test]
fn additive_mask_len_limits() {
    let tree = TokenTree::new(vec![1, 2, 3], vec![-1, 0, 1]).unwrap();
    assert_eq!(tree.additive_mask_len(0), Ok(9));
    assert_eq!(tree.additive_mask_len(10), Ok(39));
    let max = fastdec_core::tree::MAX_MASK_ELEMENTS;
    // n * (prefix_len + n) <= MAX_MASK_ELEMENTS
    let last_ok = max / 3 - 3;
    assert_eq!(tree.additive_mask_len(last_ok), Ok(3 * (last_ok + 3)));
    assert_eq!(
        tree.additive_mask_len(last_ok + 1)
            .map_err(|e| expected_of(&e)),
        Err(Expected::InvalidArgument)
    );
    assert_eq!(
        tree.additive_mask_len(usize::MAX)
            .map_err(|e| expected_of(&e)),
        Err(Expected::InvalidArgument)
    );
    assert_eq!(
        tree.additive_mask_len(usize::MAX - 1)
            .map_err(|e| expected_of(&e)),
        Err(Expected::InvalidArgument)
    );
}

/// A `prefix_len` so large that the size of `[N, prefix_len + N]` overflows is an invalid
/// argument, not a panic (caller input never panics).
#[test]
fn mask_writers_reject_overflowing_prefix() {
    for n in [1usize, 2, 3] {
        let tree = TokenTree::chain((0..n as u32).collect()).unwrap();
        for prefix_len in [
            usize::MAX,
            usize::MAX - n + 1,
            (usize::MAX / n).saturating_add(1),
            usize::MAX / n,
        ] {
            let mut out: Vec<f32> = Vec::new();
            let e = tree
                .additive_mask_into(prefix_len, 0.0, f32::MIN, &mut out)
                .unwrap_err();
            assert_eq!(expected_of(&e), Expected::InvalidArgument, "{e}");
            let mut out: Vec<MaybeUninit<f32>> = Vec::new();
            let e = tree.write_additive_mask(prefix_len, &mut out).unwrap_err();
            assert_eq!(expected_of(&e), Expected::InvalidArgument, "{e}");
        }
    }
}

#[test]
fn verify_greedy_batch_empty() {
    assert_eq!(verify_greedy_batch(&[], &[]), Ok(vec![]));
    assert_eq!(
        verify_greedy_batch(&[], &[1]).map_err(|e| expected_of(&e)),
        Err(Expected::LengthMismatch {
            expected: 0,
            got: 1
        })
    );
}
