//! Times the AWRS pieces on a 49,152-token vocabulary (a development aid:
//! `cargo run --release -p fastdec-core --example awrs_timing`).
use fastdec_core::constrain::{awrs, Estimator, Rng};
use std::time::Instant;

fn main() {
    let vocab = 49_152;
    let mut rng = Rng::new(1);
    let logits: Vec<f32> = (0..vocab)
        .map(|_| (rng.uniform() as f32 - 0.5) * 12.0)
        .collect();
    let mut weights = Vec::new();
    let reps: u32 = 2000;
    let start = Instant::now();
    for _ in 0..reps {
        awrs::exp_weights(&logits, 1.0, &mut weights).unwrap();
    }
    println!(
        "exp_weights {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(reps)
    );
    let mut probs = Vec::new();
    let start = Instant::now();
    for _ in 0..reps {
        awrs::softmax_into(&logits, 1.0, &mut probs).unwrap();
    }
    println!(
        "softmax_into {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(reps)
    );
    let start = Instant::now();
    for i in 0..reps {
        let mut check = |_t: u32| true;
        awrs::sample_logits(
            &logits,
            1.0,
            &mut check,
            Estimator::None,
            &mut Rng::new(u64::from(i)),
        )
        .unwrap();
    }
    println!(
        "sample_logits {:.1} us",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(reps)
    );
    // The first 31 distinct draws rejected, then anything accepted: the rejection loop's cost.
    for rejects in [1u32, 8, 31, 127, 500] {
        let start = Instant::now();
        for i in 0..reps {
            let mut seen = 0u32;
            let mut check = |_t: u32| {
                seen += 1;
                seen > rejects
            };
            awrs::sample_logits(
                &logits,
                1.0,
                &mut check,
                Estimator::None,
                &mut Rng::new(u64::from(i)),
            )
            .unwrap();
        }
        println!(
            "sample_logits with {rejects} rejections {:.1} us",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(reps)
        );
    }
}
