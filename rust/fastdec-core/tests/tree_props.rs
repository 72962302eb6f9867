//! Property tests of `TokenTree`'s derived buffers (depths, positions, ancestor masks, paths,
//! the additive masks in every dtype) against the naive models in `reference/`; input
//! validation is in `tree_input_props.rs`, greedy verification in `verify_props.rs`.

#![allow(clippy::float_cmp)] // masks hold exact 0.0 / f32::MIN, compared bit for bit

mod arb;
mod common;
mod reference;

use std::fmt::Debug;
use std::mem::MaybeUninit;

use arb::{sizes_big, sizes_small, tree_case, TreeCase};
use common::{build, expected_of};
use fastdec_core::{
    Bf16Bits, F16Bits, MaskDtype, MaskValue, TokenTree, TreeShape, MAX_NODES, MAX_TOKEN_ID,
};
use proptest::prelude::*;
use reference::Expected;

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
        // row sums = depth + 1 (docs/design.md#trees)
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
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `likeliest_leaf` against every leaf's path sum read off the naive model (scores on a grid
    /// of quarters so sums are exact and ties common; ties go to the lowest leaf id); without
    /// scores it is the deepest leaf, as `chain_view`'s default.
    #[test]
    fn likeliest_leaf_has_the_largest_path_score_sum(
        case in tree_case(sizes_small()),
        quarters in prop::collection::vec(0u8..5, 1100),
    ) {
        let plain = build(&case);
        let deepest = plain.chain_view(None).unwrap();
        prop_assert_eq!(plain.likeliest_leaf() as i32, *deepest.last().unwrap());
        let n = case.parents.len();
        let scores: Vec<f32> = quarters[..n].iter().map(|&q| f32::from(q) / 4.0).collect();
        let tree = plain.with_scores(scores.clone()).unwrap();
        let sum = |leaf: usize| -> f64 {
            reference::node_path(&case.parents, leaf)[1..].iter().map(|&j| f64::from(scores[j])).sum()
        };
        let mut best = None::<(usize, f64)>;
        for leaf in reference::leaves(&case.parents) {
            let s = sum(leaf);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((leaf, s));
            }
        }
        prop_assert_eq!(tree.likeliest_leaf(), best.unwrap().0);
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
