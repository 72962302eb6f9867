//! What a step costs beyond the draft-length controller's cost line, per number of query tokens
//! the step verified (rows plus draft tokens).
//!
//! The line ([`super::cost_fit`]) prices a step by its shape: a constant, rows, drafting rows,
//! draft tokens. It misses what the kernels do with the step's *width*: every row's tokens form
//! one `M`-row matrix in the model's matmuls, and a CPU BLAS runs a single query token as a
//! matrix-vector product but a few as a blocked matrix-matrix one. On vLLM 0.32's CPU engine with
//! SmolLM2-135M in float32 (AMD EPYC with AVX-512, one row; `benches/vllm_cost.py`) a step that
//! verifies 3-5 draft tokens takes 45 ms, one that verifies none 52 ms and one that verifies 1
//! draft token 60 ms: verifying a few tokens is *cheaper* than verifying none. Such a shape
//! differs between CPUs (and GPUs), so it is measured, never assumed: per width `M`, decayed
//! sums of the steps' seconds and of their design rows, so that the mean residual over the
//! *current* line is `(sum seconds - w . sum design) / count`, exact whenever the line is refit.

use super::cost_fit::dot;

/// The widest step with a correction of its own (wider ones get none; the table stays small).
pub const MAX_WIDTH: usize = 1024;
/// Steps seen at a width before its correction is used at all.
const MIN_COUNT: f64 = 3.0;
/// Pseudo-steps pulling a width's correction towards 0 (the line alone).
const PRIOR: f64 = 2.0;

/// Decayed per-width sums: count, seconds, then the design row (1, rows, drafting step,
/// drafting rows, draft tokens) summed.
#[derive(Debug, Clone, Default)]
pub struct CostCurve {
    cells: Vec<[f64; 7]>,
    decay: f64,
}

impl CostCurve {
    /// A curve whose per-width sums decay by `decay` each time that width is seen again.
    pub fn new(decay: f64) -> Self {
        CostCurve {
            cells: Vec::new(),
            decay,
        }
    }

    /// Records a step of `width` query tokens with `design` row taking `seconds`.
    pub fn observe(&mut self, width: usize, design: &[f64; 5], seconds: f64) {
        if width >= MAX_WIDTH || !seconds.is_finite() {
            return;
        }
        if self.cells.len() <= width {
            self.cells.resize(width + 1, [0.0; 7]);
        }
        let c = &mut self.cells[width];
        for v in c.iter_mut() {
            *v *= self.decay;
        }
        c[0] += 1.0;
        c[1] += seconds;
        for (s, x) in c[2..].iter_mut().zip(design) {
            *s += x;
        }
    }

    /// Seconds a step of `width` query tokens takes beyond the line `w` (0 where too few steps
    /// of that width were seen), shrunk towards 0.
    pub fn residual(&self, width: usize, w: &[f64; 5]) -> f64 {
        let Some(c) = self.cells.get(width) else {
            return 0.0;
        };
        if c[0] < MIN_COUNT || w.iter().any(|v| !v.is_finite()) {
            return 0.0;
        }
        let sums: [f64; 5] = [c[2], c[3], c[4], c[5], c[6]];
        (c[1] - dot(&sums, w)) / (c[0] + PRIOR)
    }

    /// `(width, decayed count, residual)` for every width with a correction.
    pub fn table(&self, w: &[f64; 5]) -> Vec<(usize, f64, f64)> {
        (0..self.cells.len())
            .filter(|&m| self.cells[m][0] >= MIN_COUNT)
            .map(|m| (m, self.cells[m][0], self.residual(m, w)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residuals_follow_the_current_line_and_need_a_few_steps() {
        let mut c = CostCurve::new(1.0);
        let w = [0.05, 0.0, 0.0, 0.0, 0.001];
        let x = |t: f64| [1.0, 1.0, f64::from(u8::from(t > 0.0)), 0.0, t];
        c.observe(1, &x(0.0), 0.06);
        c.observe(1, &x(0.0), 0.06);
        assert!(c.residual(1, &w).abs() < 1e-15); // two steps: not yet
        c.observe(1, &x(0.0), 0.06);
        // 3 steps 10 ms over the line, shrunk by 2 pseudo-steps: 6 ms
        assert!((c.residual(1, &w) - 0.006).abs() < 1e-12);
        // refit line: the residual moves with it
        let w2 = [0.06, 0.0, 0.0, 0.0, 0.001];
        assert!(c.residual(1, &w2).abs() < 1e-12);
        assert!(c.residual(4, &w).abs() < 1e-15);
        c.observe(MAX_WIDTH, &x(3.0), 1.0); // too wide: ignored, no growth
        assert_eq!(c.cells.len(), 2);
        assert_eq!(c.table(&w), vec![(1, 3.0, c.residual(1, &w))]);
    }
}
