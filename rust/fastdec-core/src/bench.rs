//! Timing of the per-step tree work inside Rust, so that `benches/tree_step.py` can report Rust,
//! Python and NumPy percentiles from one run (criterion reports means only). Not part of the
//! stable API.

use std::mem::MaybeUninit;
use std::time::Instant;

use crate::{token_ids_from_i32, Error, Result, TreeTemplate};

/// Nanoseconds of each step's set of tree operations (fill the template, position ids, float32
/// additive mask, leaf paths, greedy verification). `tokens` and `target_argmax` are
/// `[steps, N]` row-major for the template's `N` nodes. Each step allocates its outputs, as the
/// Python API does.
///
/// # Errors
/// [`Error::LengthMismatch`] for arrays that are not `[steps, N]` (equal lengths, a multiple
/// of `N`), or any error of the operations themselves.
pub fn time_tree_step(
    template: &TreeTemplate,
    tokens: &[i32],
    target_argmax: &[i32],
    prefix_len: usize,
    mask_prefix_len: usize,
) -> Result<Vec<u64>> {
    let n = template.num_nodes();
    if tokens.len() != target_argmax.len() || !tokens.len().is_multiple_of(n) {
        return Err(Error::LengthMismatch {
            what: "tokens and target_argmax ([steps, num_nodes] each)",
            expected: tokens.len(),
            got: target_argmax.len(),
        });
    }
    let mut times = Vec::with_capacity(tokens.len() / n);
    for (tok, am) in tokens.chunks_exact(n).zip(target_argmax.chunks_exact(n)) {
        let t0 = Instant::now();
        let tree = template.fill(token_ids_from_i32(tok, "tokens")?)?;
        let pos = tree.position_ids(prefix_len)?;
        let mut mask = Vec::<MaybeUninit<f32>>::with_capacity(n * (mask_prefix_len + n));
        mask.resize(n * (mask_prefix_len + n), MaybeUninit::uninit());
        tree.write_additive_mask(mask_prefix_len, &mut mask)?;
        let paths = tree.leaf_paths().len();
        let verdict = tree.verify_greedy(am)?;
        std::hint::black_box((pos, mask, paths, verdict));
        times.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_time_per_step_and_shape_errors() {
        // root -> {rank 0, rank 1}, rank 0 -> rank 0
        let template = TreeTemplate::from_paths(&[vec![0u32], vec![0, 0], vec![1]]).unwrap();
        let n = template.num_nodes();
        let tokens: Vec<i32> = (0..3 * n as i32).collect();
        let times = time_tree_step(&template, &tokens, &tokens, 5, 5).unwrap();
        assert_eq!(times.len(), 3);
        let err = time_tree_step(&template, &tokens, &tokens[1..], 5, 5).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
        let err = time_tree_step(&template, &tokens[1..], &tokens[1..], 5, 5).unwrap_err();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    }
}
