//! The step-cost fit of the draft-length controller ([`super::length`]): least squares of step
//! seconds on the step's shape with non-negative costs.

pub(super) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

pub(super) fn dot(x: &[f64; 5], w: &[f64; 5]) -> f64 {
    x.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// Least squares of step seconds on the design rows `rows` (intercept, rows, drafting step,
/// drafting rows, draft tokens) with every cost but the intercept `>= 0` (an active set: the
/// most negative cost is dropped and the rest refitted), and a tiny ridge so that columns the
/// data cannot tell apart share their cost instead of cancelling.
pub(super) fn cost_fit(design: &[[f64; 5]], seconds: &[f64], rows: &[usize]) -> [f64; 5] {
    let mut gram = [[0.0; 5]; 5];
    let mut rhs = [0.0; 5];
    for &i in rows {
        let x = &design[i];
        for a in 0..5 {
            rhs[a] += x[a] * seconds[i];
            for b in 0..5 {
                gram[a][b] += x[a] * x[b];
            }
        }
    }
    let ridge = 1e-6 * (0..5).map(|a| gram[a][a]).sum::<f64>() / 5.0;
    let mut active = [true; 5];
    let mut w = [0.0; 5];
    for _ in 0..5 {
        let idx: Vec<usize> = (0..5).filter(|&a| active[a]).collect();
        let mut g: Vec<Vec<f64>> = idx
            .iter()
            .map(|&a| {
                idx.iter()
                    .map(|&b| gram[a][b] + if a == b && a > 0 { ridge } else { 0.0 })
                    .collect()
            })
            .collect();
        let mut r: Vec<f64> = idx.iter().map(|&a| rhs[a]).collect();
        w = [0.0; 5];
        if let Some(sol) = solve(&mut g, &mut r) {
            for (&a, v) in idx.iter().zip(sol) {
                w[a] = v;
            }
        }
        let worst = (1..5)
            .filter(|&a| w[a] < 0.0)
            .min_by(|&a, &b| w[a].total_cmp(&w[b]));
        match worst {
            Some(a) => active[a] = false,
            None => break,
        }
    }
    w
}

/// Gaussian elimination with partial pivoting; `None` for a singular system.
fn solve(matrix: &mut [Vec<f64>], rhs: &mut [f64]) -> Option<Vec<f64>> {
    let size = rhs.len();
    for col in 0..size {
        let pivot =
            (col..size).max_by(|&i, &j| matrix[i][col].abs().total_cmp(&matrix[j][col].abs()))?;
        if matrix[pivot][col].abs() < 1e-300 {
            return None;
        }
        matrix.swap(col, pivot);
        rhs.swap(col, pivot);
        let (top, rest) = matrix.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (offset, row) in rest.iter_mut().enumerate() {
            let factor = row[col] / pivot_row[col];
            for (value, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *value -= factor * p;
            }
            rhs[col + 1 + offset] -= factor * rhs[col];
        }
    }
    let mut solution = vec![0.0; size];
    for row in (0..size).rev() {
        let known: f64 = (row + 1..size).map(|c| matrix[row][c] * solution[c]).sum();
        solution[row] = (rhs[row] - known) / matrix[row][row];
    }
    Some(solution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_fit_recovers_a_linear_cost() {
        let design: Vec<[f64; 5]> = (0..40)
            .map(|i| {
                let rows = f64::from(1 + i % 4);
                let drafting = f64::from(i % 3);
                let tokens = drafting * f64::from(1 + i % 5);
                [
                    1.0,
                    rows,
                    f64::from(u8::from(drafting > 0.0)),
                    drafting,
                    tokens,
                ]
            })
            .collect();
        let truth = [0.01, 0.002, 0.006, 0.0005, 0.0013];
        let s: Vec<f64> = design.iter().map(|x| dot(x, &truth)).collect();
        let all: Vec<usize> = (0..s.len()).collect();
        let w = cost_fit(&design, &s, &all);
        for (a, b) in w.iter().zip(&truth) {
            assert!((a - b).abs() < 1e-4, "{w:?}");
        }
    }
}
