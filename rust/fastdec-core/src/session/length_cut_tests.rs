//! Tests of the draft-length controller's cut (`length_cut`).

use proptest::prelude::*;

use super::super::{DraftLength, LengthConfig, RowState};
use crate::session::cost_fit::dot;

const R0: RowState = RowState {
    streak: 0,
    matched: 0,
};

/// A controller timed on one row whose step takes `seconds(d)` with `d` draft tokens, each
/// width seen as often, and whose first tokens are right `first` of the time.
fn timed(seconds: impl Fn(usize) -> f64, first: u32, pad: bool) -> DraftLength {
    let mut l = DraftLength::new(LengthConfig {
        explore: 0.0,
        pad,
        ..LengthConfig::new(6)
    })
    .unwrap();
    for i in 0..140 {
        l.observe_step(&[i % 7], seconds(i % 7), 1);
    }
    for i in 0..200u32 {
        let emitted = if i % 100 < first { 5 } else { 6 };
        l.observe(&[5, 5, 5, 5], &[1.0; 4], &[emitted], R0);
    }
    l
}

#[test]
fn a_cheaper_wide_step_is_filled_and_a_line_is_not() {
    // the CPU engine's shape: 52 ms without drafts, 60 ms with one, 45 ms with 2-4, then 1.5 ms
    // a token
    let engine = |d: usize| match d {
        0 => 0.052,
        1 => 0.060,
        2..=4 => 0.045,
        _ => 0.045 + 0.0015 * (d - 4) as f64,
    };
    let mut l = timed(engine, 20, true);
    let cut = l.cut_step(&[&[1.0; 4]], &[R0], Some(&[6]), 1);
    assert!((2..=4).contains(&cut[0]), "{cut:?}");
    // no chain at all: filler alone, the same width
    let cut = l.cut_step(&[&[]], &[R0], Some(&[6]), 1);
    assert!((2..=4).contains(&cut[0]), "{cut:?}");
    // no room past the chain, or padding off: the chain's likely tokens only
    assert_eq!(l.cut_step(&[&[]], &[R0], None, 1), [0]);
    let mut off = timed(engine, 20, false);
    assert_eq!(off.cut_step(&[&[]], &[R0], Some(&[6]), 1), [0]);
    // a step that only grows: nothing for a chain that is rarely right, no filler ever
    let mut line = timed(|d| 0.05 + 0.004 * d as f64, 3, true);
    assert_eq!(line.cut_step(&[&[1.0; 4]], &[R0], Some(&[6]), 1), [0]);
    assert_eq!(line.cut_step(&[&[]], &[R0], Some(&[6]), 1), [0]);
}

/// The obviously-correct cut: every combination of per-row lengths, the best value of
/// `sum(q) - rate * seconds`.
fn brute(l: &DraftLength, chains: &[Vec<f64>], most: &[usize], batch: usize) -> f64 {
    let qs: Vec<Vec<f64>> = chains
        .iter()
        .zip(most)
        .map(|(c, &m)| {
            let mut q = 1.0;
            (0..m)
                .map(|j| {
                    q = if j < c.len() {
                        q * l.probability(j, c[j], R0)
                    } else {
                        0.0
                    };
                    q
                })
                .collect()
        })
        .collect();
    let mut best = f64::NEG_INFINITY;
    let mut keep = vec![0usize; chains.len()];
    loop {
        let gain: f64 = keep
            .iter()
            .zip(&qs)
            .map(|(&k, q)| q[..k].iter().sum::<f64>())
            .sum();
        let drafted: usize = keep.iter().sum();
        let drafting = keep.iter().filter(|&&k| k > 0).count();
        let x = [
            1.0,
            batch as f64,
            f64::from(u8::from(drafted > 0)),
            drafting as f64,
            drafted as f64,
        ];
        let seconds = dot(&x, &l.cost) + l.curve.residual(batch + drafted, &l.cost);
        best = best.max(gain - l.rate * seconds);
        // next combination
        let mut i = 0;
        while i < keep.len() && keep[i] == most[i] {
            keep[i] = 0;
            i += 1;
        }
        if i == keep.len() {
            return best;
        }
        keep[i] += 1;
    }
}

proptest! {
    // Without a drafting row's own cost, a step's cost depends on its token count alone, so the
    // likeliest tokens first is optimal: the cut reaches the brute force's best value.
    #[test]
    fn the_cut_is_the_best_of_every_combination(
        steps in proptest::collection::vec((0usize..9, 0.03f64..0.08), 20..60),
        chains in proptest::collection::vec(proptest::collection::vec(0.0f64..1.0, 0..4), 1..4),
        room in proptest::collection::vec(0usize..5, 3),
        outcomes in proptest::collection::vec((0.0f64..1.0, 0usize..3), 0..40),
        extra_rows in 0usize..3,
    ) {
        let mut l = DraftLength::new(LengthConfig {
            explore: 0.0,
            min_steps: 8,
            ..LengthConfig::new(4)
        })
        .unwrap();
        let batch = chains.len() + extra_rows;
        for &(d, s) in &steps {
            let mut drafts = vec![0; batch];
            drafts[0] = d.min(4);
            drafts[batch - 1] += d.saturating_sub(4);
            l.observe_step(&drafts, s, 1);
        }
        for &(conf, hits) in &outcomes {
            l.observe(&[1, 2, 3, 4], &[conf; 4], &[1, 2, 3, 4][..=hits], R0);
        }
        prop_assume!(l.rate.is_finite());
        l.cost[3] = 0.0; // no per-drafting-row cost (see above)
        let views: Vec<&[f64]> = chains.iter().map(Vec::as_slice).collect();
        let rows = vec![R0; chains.len()];
        let most: Vec<usize> = (0..chains.len()).map(|i| room[i].min(4)).collect();
        let keeps = l.cut_step(&views, &rows, Some(&most), batch);
        prop_assert!(keeps.iter().zip(&most).all(|(k, m)| k <= m));
        let value = {
            let mut gain = 0.0;
            for (c, &k) in chains.iter().zip(&keeps) {
                let mut q = 1.0;
                for j in 0..k {
                    q = if j < c.len() { q * l.probability(j, c[j], R0) } else { 0.0 };
                    gain += q;
                }
            }
            let drafted: usize = keeps.iter().sum();
            let x = [1.0, batch as f64, f64::from(u8::from(drafted > 0)),
                     keeps.iter().filter(|&&k| k > 0).count() as f64, drafted as f64];
            gain - l.rate * (dot(&x, &l.cost) + l.curve.residual(batch + drafted, &l.cost))
        };
        let best = brute(&l, &chains, &most, batch);
        prop_assert!((value - best).abs() < 1e-9, "{keeps:?}: {value} vs best {best}");
    }
}
