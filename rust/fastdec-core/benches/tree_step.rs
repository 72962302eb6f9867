//! Criterion benchmarks of the per-step tree work with Token Recycling's 81-node template (the
//! same steps `benches/tree_step.py` times from Python), plus verification and masks over sizes.
#![allow(missing_docs, clippy::semicolon_if_nothing_returned)] // criterion closures read better as expressions

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fastdec_core::{TokenId, TokenTree, TreeTemplate};

/// Deterministic xorshift so that the bench needs no rand crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Tokens for a template from a successor table with distinct entries per row, and an argmax
/// that follows the first child 60% of the time.
fn step_inputs(template: &TreeTemplate, rng: &mut Rng) -> (Vec<TokenId>, Vec<i32>) {
    let tree = template
        .fill_with(7, |parent, rank| {
            (parent.wrapping_mul(2_654_435_761) >> 8) % 30_000 * 8 + rank
        })
        .unwrap();
    let first_child = tree.shape().first_child();
    let argmax = (0..tree.num_nodes())
        .map(|i| {
            let c = first_child[i];
            if c >= 0 && rng.next() % 10 < 6 {
                tree.tokens()[c as usize] as i32
            } else {
                (rng.next() % 32_000) as i32
            }
        })
        .collect();
    (tree.tokens().to_vec(), argmax)
}

fn per_step(c: &mut Criterion) {
    let template = TreeTemplate::token_recycling();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (tokens, argmax) = step_inputs(&template, &mut rng);
    let n = template.num_nodes();
    let mut mask = vec![std::mem::MaybeUninit::<f32>::uninit(); n * n];
    let mut mask_ref = vec![0f32; n * n];
    let mut g = c.benchmark_group("tree_step_81");
    g.bench_function("fill", |b| {
        b.iter(|| template.fill(black_box(tokens.clone())).unwrap())
    });
    let tree = template.fill(tokens.clone()).unwrap();
    g.bench_function("position_ids", |b| {
        b.iter(|| tree.position_ids(black_box(512)).unwrap())
    });
    g.bench_function("additive_mask_f32", |b| {
        b.iter(|| tree.write_additive_mask(black_box(0), &mut mask).unwrap())
    });
    g.bench_function("additive_mask_f32_reference", |b| {
        b.iter(|| {
            tree.additive_mask_into(black_box(0), 0.0f32, f32::MIN, &mut mask_ref)
                .unwrap()
        });
    });
    g.bench_function("leaf_paths", |b| {
        b.iter(|| black_box(tree.leaf_paths()).len())
    });
    g.bench_function("verify_greedy", |b| {
        b.iter(|| tree.verify_greedy(black_box(&argmax)).unwrap())
    });
    g.bench_function("whole_step", |b| {
        b.iter(|| {
            let tree = template.fill(black_box(tokens.clone())).unwrap();
            let pos = tree.position_ids(512).unwrap();
            tree.write_additive_mask(0, &mut mask).unwrap();
            let paths = tree.leaf_paths().len();
            let r = tree.verify_greedy(&argmax).unwrap();
            (pos, paths, r)
        });
    });
    g.finish();
}

fn over_sizes(c: &mut Criterion) {
    let mut g = c.benchmark_group("tree_sizes");
    for &n in &[26usize, 64, 81, 257, 1024] {
        let mut rng = Rng(n as u64 + 1);
        // A random tree: parent uniformly among the previous 8 nodes, distinct tokens.
        let parents: Vec<i32> = (0..n as i32)
            .map(|i| {
                if i == 0 {
                    -1
                } else {
                    i - 1 - (rng.next() % 8).min(i as u64 - 1) as i32
                }
            })
            .collect();
        let tokens: Vec<TokenId> = (0..n as u32).collect();
        let tree = TokenTree::new(tokens.clone(), parents.clone()).unwrap();
        let argmax: Vec<i32> = (0..n)
            .map(|i| tree.shape().first_child()[i].max(0))
            .collect();
        let mut mask = vec![std::mem::MaybeUninit::<f32>::uninit(); n * n];
        g.bench_with_input(BenchmarkId::new("build", n), &n, |b, _| {
            b.iter(|| {
                TokenTree::new(black_box(tokens.clone()), black_box(parents.clone())).unwrap()
            });
        });
        g.bench_with_input(BenchmarkId::new("verify_greedy", n), &n, |b, _| {
            b.iter(|| tree.verify_greedy(black_box(&argmax)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("additive_mask_f32", n), &n, |b, _| {
            b.iter(|| tree.write_additive_mask(black_box(0), &mut mask).unwrap());
        });
    }
    g.finish();
}

criterion_group!(benches, per_step, over_sizes);
criterion_main!(benches);
