//! proptest strategies for random trees shared by the property-test binaries.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;

use proptest::collection::vec;
use proptest::prelude::*;

/// A random valid tree plus per-node noise for tests that derive more random inputs from it.
#[derive(Debug, Clone)]
pub struct TreeCase {
    pub tokens: Vec<u32>,
    pub parents: Vec<i32>,
    /// Vocabulary the tokens were drawn from (before sibling fix-up), offset included.
    pub vocab: u32,
    pub offset: u32,
    pub noise: Vec<u32>,
}

/// Parent arrays of different shapes from raw random words: random recursive trees, deep
/// "caterpillars", bushy trees (every node under one of the first four) and long chains with
/// occasional branches.
pub fn parents_from(mode: u8, raw: &[u32]) -> Vec<i32> {
    (0..raw.len())
        .map(|i| {
            if i == 0 {
                return -1;
            }
            let i = i as u32;
            let r = raw[i as usize];
            let p = match mode % 4 {
                0 => r % i,
                1 => i - 1 - r % i.min(3),
                2 => r % i.min(4),
                _ => {
                    if r.is_multiple_of(4) {
                        (r / 4) % i
                    } else {
                        i - 1
                    }
                }
            };
            p as i32
        })
        .collect()
}

/// Tokens `raw % vocab + offset`, bumped until siblings are distinct.
pub fn distinct_sibling_tokens(parents: &[i32], raw: &[u32], vocab: u32, offset: u32) -> Vec<u32> {
    let mut used: Vec<HashSet<u32>> = vec![HashSet::new(); parents.len()];
    let mut tokens = vec![raw[0] % vocab + offset];
    for i in 1..parents.len() {
        let p = parents[i] as usize;
        let mut t = raw[i] % vocab;
        while !used[p].insert(t) {
            t += 1;
        }
        tokens.push(t + offset);
    }
    tokens
}

/// Random valid trees with a node count drawn from `sizes`. Token ids are small, or close to
/// `MAX_TOKEN_ID`; vocabularies are tiny (so that random argmaxes often hit) to large.
pub fn tree_case(sizes: impl Strategy<Value = usize>) -> impl Strategy<Value = TreeCase> {
    (
        sizes,
        0u8..4,
        prop_oneof![Just(3u32), Just(16), Just(1000)],
        any::<bool>(),
    )
        .prop_flat_map(|(n, mode, vocab, high)| {
            let offset = if high {
                fastdec_core::MAX_TOKEN_ID - 4 * 4096
            } else {
                0
            };
            (
                vec(any::<u32>(), n),
                vec(any::<u32>(), n),
                vec(any::<u32>(), n),
            )
                .prop_map(move |(rp, rt, noise)| {
                    let parents = parents_from(mode, &rp);
                    let tokens = distinct_sibling_tokens(&parents, &rt, vocab, offset);
                    TreeCase {
                        tokens,
                        parents,
                        vocab,
                        offset,
                        noise,
                    }
                })
        })
}

/// Small to medium sizes, weighted towards the 64-node boundary of the one-word fast path.
pub fn sizes_small() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..=40, 2 => 60usize..=70, 2 => 71usize..=300, 1 => 126usize..=130]
}

/// Sizes with rows of many 64-bit words.
pub fn sizes_big() -> impl Strategy<Value = usize> {
    600usize..=1100
}
