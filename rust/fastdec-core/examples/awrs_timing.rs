//! Times the AWRS pieces on a 49,152-token vocabulary (a development aid:
//! `cargo run --release -p fastdec-core --example awrs_timing`).
use fastdec_core::constraints::{awrs, Estimator, Rng};
use std::time::Instant;

const REPS: u32 = 2000;

/// Prints the mean time of `f(rep)` over [`REPS`] calls.
fn time(label: &str, mut f: impl FnMut(u32)) {
    let start = Instant::now();
    for i in 0..REPS {
        f(i);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(REPS);
    println!("{label} {us:.1} us");
}

fn main() {
    let vocab = 49_152;
    let mut rng = Rng::new(1);
    let logits: Vec<f32> = (0..vocab)
        .map(|_| (rng.uniform() as f32 - 0.5) * 12.0)
        .collect();
    let mut weights = Vec::new();
    time("exp_weights", |_| {
        awrs::exp_weights(&logits, 1.0, &mut weights).unwrap();
    });
    let mut probs = Vec::new();
    time("softmax_into", |_| {
        awrs::softmax_into(&logits, 1.0, &mut probs).unwrap();
    });
    // The first `rejects` distinct draws rejected, then anything accepted: the rejection loop.
    for rejects in [0u32, 1, 8, 31, 127, 500] {
        time(&format!("sample_logits with {rejects} rejections"), |i| {
            let mut seen = 0u32;
            let mut check = |_t: u32| {
                seen += 1;
                seen > rejects
            };
            let mut rng = Rng::new(u64::from(i));
            awrs::sample_logits(&logits, 1.0, &mut check, Estimator::None, &mut rng).unwrap();
        });
    }
}
