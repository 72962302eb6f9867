//! Property tests of stochastic verification (`TokenTree::verify_stochastic`,
//! `verify_stochastic_batch`) against a plain transcription of the rule (docs/design.md#stochastic, the
//! module docs of `fastdec.sampling`): vocabularies around the CDF chunk size, random trees, rows
//! whose mass sits on the children only (the `z == 0` fallback) and coins on exact boundaries.

mod arb;

use fastdec_core::{verify_stochastic_batch, Error, TokenTree, CDF_CHUNK};
use proptest::collection::vec;
use proptest::prelude::*;

/// Why the model rejects an input.
#[derive(Debug, PartialEq)]
enum Rejected {
    Token,
    Coin,
    Prob,
    NoMass,
}

fn kind_of(e: &Error) -> Rejected {
    match e {
        Error::InvalidValue { what: "token", .. } => Rejected::Token,
        Error::InvalidValue { what: "coin", .. } => Rejected::Coin,
        Error::InvalidValue {
            what: "probability",
            ..
        } => Rejected::Prob,
        Error::InvalidValue {
            what: "probs row", ..
        } => Rejected::NoMass,
        other => panic!("unexpected error {other:?}"),
    }
}

fn valid(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// The bonus CDF in the chunked order, spelt out: chunk totals, then offsets plus running sums.
fn chunked_cdf(masked: &[f64]) -> Vec<f64> {
    let totals: Vec<f64> = masked
        .chunks(CDF_CHUNK)
        .map(|c| {
            let mut s = 0.0;
            for &m in c {
                s += m;
            }
            s
        })
        .collect();
    let mut cdf = Vec::with_capacity(masked.len());
    let mut offset = 0.0;
    for (c, chunk) in masked.chunks(CDF_CHUNK).enumerate() {
        let mut acc = 0.0;
        for &m in chunk {
            acc += m;
            cdf.push(offset + acc);
        }
        offset += totals[c];
    }
    cdf
}

/// The rule, transcribed: children lists by scanning parents, the masked row, the CDF as a list.
fn model(
    tokens: &[u32],
    parents: &[i32],
    probs: &[f64],
    vocab: usize,
    coins: &[[f64; 2]],
) -> Result<(Vec<i32>, u32), Rejected> {
    let n = tokens.len();
    if tokens.iter().any(|&t| t as usize >= vocab) {
        return Err(Rejected::Token);
    }
    if coins.iter().flatten().any(|c| !(0.0..1.0).contains(c)) {
        return Err(Rejected::Coin);
    }
    let kids = |u: usize| (0..n).filter(move |&i| parents[i] == u as i32);
    let mut nodes = vec![0i32];
    let mut u = 0;
    loop {
        let row = &probs[u * vocab..(u + 1) * vocab];
        let mut cum = 0.0;
        let mut next = None;
        for c in kids(u) {
            let p = row[tokens[c] as usize];
            if !valid(p) {
                return Err(Rejected::Prob);
            }
            cum += p;
            if coins[u][0] < cum {
                next = Some(c);
                break;
            }
        }
        if next.is_none() {
            if row.iter().any(|&p| !valid(p)) {
                return Err(Rejected::Prob);
            }
            let mut masked = row.to_vec();
            for c in kids(u) {
                masked[tokens[c] as usize] = 0.0;
            }
            let cdf = chunked_cdf(&masked);
            let z = *cdf.last().unwrap();
            if z > 0.0 {
                let x = coins[u][1] * z;
                let hit = (0..vocab).find(|&t| masked[t] > 0.0 && x < cdf[t]);
                let last = (0..vocab).rev().find(|&t| masked[t] > 0.0).unwrap();
                return Ok((nodes, hit.unwrap_or(last) as u32));
            }
            next = kids(u).rfind(|&c| row[tokens[c] as usize] > 0.0);
            if next.is_none() {
                return Err(Rejected::NoMass);
            }
        }
        let c = next.unwrap();
        nodes.push(c as i32);
        u = c;
    }
}

/// A tree, its target rows and coins, derived from random words.
#[derive(Debug, Clone)]
struct Case {
    tokens: Vec<u32>,
    parents: Vec<i32>,
    vocab: usize,
    probs: Vec<f32>,
    coins: Vec<[f64; 2]>,
}

/// splitmix64: a deterministic stream from one proptest seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * 2f64.powi(-53)
    }
}

const MAX_BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

fn build_case(n: usize, vocab: usize, mode: u8, seed: u64) -> Case {
    let mut rng = Rng(seed);
    let raw: Vec<u32> = (0..n).map(|_| rng.next() as u32).collect();
    let shape = arb::parents_from(mode, &raw);
    let (mut tokens, mut parents) = (vec![rng.below(vocab) as u32], vec![-1i32]);
    let mut used: Vec<Vec<u32>> = vec![Vec::new()];
    for (i, &p) in shape.iter().enumerate().skip(1) {
        // A parent whose every token is taken gives way to the newest node (no children yet).
        let p = if used[p as usize].len() < vocab {
            p as usize
        } else {
            i - 1
        };
        let mut t = rng.below(vocab) as u32;
        while used[p].contains(&t) {
            t = (t + 1) % vocab as u32;
        }
        used[p].push(t);
        used.push(Vec::new());
        tokens.push(t);
        parents.push(p as i32);
    }
    let mut probs = vec![0.0f32; n * vocab];
    for u in 0..n {
        let row = &mut probs[u * vocab..(u + 1) * vocab];
        let mut w = vec![0.0f64; vocab];
        let kind = rng.below(6);
        match kind {
            0 => w.iter_mut().for_each(|x| *x = rng.unit()),
            1 => w
                .iter_mut()
                .for_each(|x| *x = if rng.below(3) == 0 { rng.unit() } else { 0.0 }),
            3 | 4 if !used[u].is_empty() => {
                // the children hold all the mass (4: only 0.9 of a unit, the rest nowhere)
                used[u].iter().for_each(|&t| w[t as usize] = rng.unit());
            }
            2..=4 => w[rng.below(vocab)] = 1.0, // (3, 4 for a leaf: one-hot)
            _ => {}                             // no mass at all
        }
        let sum: f64 = w.iter().sum();
        let scale = if sum > 0.0 { 1.0 / sum } else { 0.0 } * if kind == 4 { 0.9 } else { 1.0 };
        for (dst, x) in row.iter_mut().zip(&w) {
            *dst = (x * scale) as f32;
        }
    }
    let mut coins = vec![[0.0; 2]; n];
    for u in 0..n {
        let row: Vec<f64> = probs[u * vocab..(u + 1) * vocab]
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let mut bounds = Vec::new();
        let mut cum = 0.0;
        for &t in &used[u] {
            cum += row[t as usize];
            bounds.push(cum);
        }
        let mut masked = row.clone();
        used[u].iter().for_each(|&t| masked[t as usize] = 0.0);
        let cdf = chunked_cdf(&masked);
        let z = *cdf.last().unwrap();
        let cdf_bounds: Vec<f64> = if z > 0.0 {
            cdf.iter().map(|c| c / z).collect()
        } else {
            Vec::new()
        };
        coins[u] = [
            edge_coin(&mut rng, &bounds),
            edge_coin(&mut rng, &cdf_bounds),
        ];
    }
    Case {
        tokens,
        parents,
        vocab,
        probs,
        coins,
    }
}

/// A uniform coin, 0, the largest coin below 1, or one on (or just below) a boundary.
fn edge_coin(rng: &mut Rng, bounds: &[f64]) -> f64 {
    let inside: Vec<f64> = bounds
        .iter()
        .copied()
        .filter(|b| (0.0..1.0).contains(b))
        .collect();
    match rng.below(5) {
        0 => 0.0,
        1 => MAX_BELOW_ONE,
        2 | 3 if !inside.is_empty() => {
            let b = inside[rng.below(inside.len())];
            if rng.below(2) == 0 || b == 0.0 {
                b
            } else {
                f64::from_bits(b.to_bits() - 1)
            }
        }
        _ => rng.unit(),
    }
}

fn vocab_sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![1usize, 2, 3, 7, 255, 256, 257, 511, 512, 513, 2049]),
        1usize..1100,
    ]
}

fn cases() -> impl Strategy<Value = Case> {
    (1usize..24, vocab_sizes(), 0u8..4, any::<u64>())
        .prop_map(|(n, v, m, s)| build_case(n, v, m, s))
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let tree = TokenTree::new(case.tokens.clone(), case.parents.clone()).unwrap();
    let wide: Vec<f64> = case.probs.iter().map(|&x| f64::from(x)).collect();
    let want = model(&case.tokens, &case.parents, &wide, case.vocab, &case.coins);
    for got in [
        tree.verify_stochastic(&case.probs, case.vocab, &case.coins),
        tree.verify_stochastic(&wide, case.vocab, &case.coins),
    ] {
        match (&got, &want) {
            (Ok(g), Ok((nodes, bonus))) => {
                prop_assert_eq!(&g.accepted_nodes, nodes);
                prop_assert_eq!(g.bonus_token, *bonus);
            }
            (Err(e), Err(kind)) => prop_assert_eq!(&kind_of(e), kind),
            _ => prop_assert!(false, "got {:?}, model {:?}", got, want),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn verify_stochastic_matches_model(case in cases()) {
        check(&case)?;
    }

    #[test]
    fn bad_values_are_rejected_like_the_model(case in cases(), at in any::<prop::sample::Index>(), what in 0u8..3) {
        let mut case = case;
        match what {
            0 => { let i = at.index(case.probs.len()); case.probs[i] = [-0.5, f32::NAN, f32::INFINITY][i % 3]; }
            1 => { let i = at.index(case.coins.len()); case.coins[i][i % 2] = [1.0, -1e-9, f64::NAN][i % 3]; }
            _ => { let i = at.index(case.tokens.len()); case.tokens[i] += case.vocab as u32; }
        }
        // A bumped token may now repeat a sibling's: such a tree cannot be built.
        if TokenTree::new(case.tokens.clone(), case.parents.clone()).is_ok() {
            check(&case)?;
        }
    }

    #[test]
    fn batch_matches_per_tree(parts in vec((1usize..12, 0u8..4, any::<u64>()), 1..5), vocab in vocab_sizes(), pad in 0usize..3, seed in any::<u64>()) {
        let cases: Vec<Case> = parts.iter().map(|&(n, m, s)| build_case(n, vocab, m, s)).collect();
        let trees: Vec<TokenTree> = cases.iter().map(|c| TokenTree::new(c.tokens.clone(), c.parents.clone()).unwrap()).collect();
        let refs: Vec<&TokenTree> = trees.iter().collect();
        let m = cases.iter().map(|c| c.tokens.len()).max().unwrap() + pad;
        // Padding rows hold values the verifier must never read.
        let mut rng = Rng(seed);
        let mut probs = vec![f32::NAN; cases.len() * m * vocab];
        let mut coins: Vec<[f64; 2]> = (0..cases.len() * m).map(|_| [rng.unit(), 2.0]).collect();
        for (b, c) in cases.iter().enumerate() {
            let n = c.tokens.len();
            probs[b * m * vocab..(b * m + n) * vocab].copy_from_slice(&c.probs);
            coins[b * m..b * m + n].copy_from_slice(&c.coins);
        }
        let got = verify_stochastic_batch(&refs, &probs, m, vocab, &coins);
        let per_tree: Vec<_> = trees.iter().zip(&cases).map(|(t, c)| t.verify_stochastic(&c.probs, vocab, &c.coins)).collect();
        match per_tree.iter().position(Result::is_err) {
            None => prop_assert_eq!(got.unwrap(), per_tree.into_iter().map(Result::unwrap).collect::<Vec<_>>()),
            Some(b) => {
                // the first failing tree's error, with its indices into the flat arrays
                let (got, want) = (got.unwrap_err(), per_tree[b].clone().unwrap_err());
                prop_assert_eq!(kind_of(&got), kind_of(&want));
            }
        }
    }
}
