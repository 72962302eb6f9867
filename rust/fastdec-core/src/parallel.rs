//! Whether a step's proposals run on rayon's pool or one after another, chosen by measurement.
//!
//! A proposal costs a few microseconds; handing a batch to the pool costs anything from a few
//! to a hundred microseconds depending on the CPU, the core count and whether the pool's
//! threads were asleep (between engine steps they usually are). On a 2-core VM, 16 prompt-lookup
//! proposals took 6 us in a loop and 75 us through the pool. No fixed row count is right on
//! every machine, so each batch-size bucket (powers of two) times both ways on real steps (the
//! drafts are the same either way: only time is at stake) and keeps the faster, re-trying the
//! other now and then in case the load changed.
//!
//! [`crate::session::DraftSession`] keeps one choice inside its own lock; a drafter's batch
//! calls ([`crate::drafter::Drafter::propose_batch`]) take a [`MeasuredPool`], the same choice
//! behind a lock of its own, so that every caller of a batch proposal gets the measured choice
//! rather than a fixed row count.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;

/// Buckets: 1, 2-3, 4-7, ... rows.
const BUCKETS: usize = 16;
/// Tries of each way before a bucket trusts its estimates.
const TRIES: u32 = 3;
/// One step in this many re-times the way not chosen.
const RETRY_EVERY: u64 = 64;
/// Weight of a new timing in a bucket's running estimate.
const ALPHA: f64 = 0.2;

#[derive(Debug, Clone, Copy, Default)]
struct Way {
    ns_per_row: f64,
    tries: u32,
}

impl Way {
    fn add(&mut self, ns_per_row: f64) {
        self.ns_per_row = if self.tries == 0 {
            ns_per_row
        } else {
            (1.0 - ALPHA) * self.ns_per_row + ALPHA * ns_per_row
        };
        self.tries = self.tries.saturating_add(1);
    }
}

/// The measured choice per batch-size bucket (see the module docs).
#[derive(Debug, Clone)]
pub struct ParallelChoice {
    serial: [Way; BUCKETS],
    pooled: [Way; BUCKETS],
    steps: u64,
    threads: usize,
}

impl Default for ParallelChoice {
    fn default() -> Self {
        ParallelChoice {
            serial: [Way::default(); BUCKETS],
            pooled: [Way::default(); BUCKETS],
            steps: 0,
            threads: rayon::current_num_threads(),
        }
    }
}

fn bucket(rows: usize) -> usize {
    (usize::BITS - rows.max(1).leading_zeros() - 1).min(BUCKETS as u32 - 1) as usize
}

impl ParallelChoice {
    /// Whether the next batch of `rows` proposals should run on the pool.
    pub fn pooled(&mut self, rows: usize) -> bool {
        self.steps += 1;
        if rows < 2 || self.threads < 2 {
            return false;
        }
        let b = bucket(rows);
        let (s, p) = (self.serial[b], self.pooled[b]);
        if s.tries < TRIES || p.tries < TRIES {
            return p.tries < s.tries; // alternate until both are measured
        }
        let faster_pooled = p.ns_per_row < s.ns_per_row;
        if self.steps.is_multiple_of(RETRY_EVERY) {
            return !faster_pooled;
        }
        faster_pooled
    }

    /// Records a batch of `rows` proposals that took from `t0` until now.
    pub fn record(&mut self, rows: usize, pooled: bool, t0: Instant) {
        let ns = t0.elapsed().as_nanos() as f64 / rows.max(1) as f64;
        let b = bucket(rows);
        if pooled {
            self.pooled[b].add(ns);
        } else {
            self.serial[b].add(ns);
        }
    }

    /// Per bucket with measurements: (rows from, serial ns a row, pooled ns a row), NaN for a
    /// way not timed.
    pub fn measured(&self) -> Vec<(usize, f64, f64)> {
        let ns = |w: &Way| if w.tries > 0 { w.ns_per_row } else { f64::NAN };
        (0..BUCKETS)
            .filter(|&b| self.serial[b].tries > 0 || self.pooled[b].tries > 0)
            .map(|b| (1 << b, ns(&self.serial[b]), ns(&self.pooled[b])))
            .collect()
    }
}

/// A [`ParallelChoice`] shared by the threads that call one object. The lock is held only to
/// choose and to record, never while the work runs, so concurrent batches do not serialise.
#[derive(Debug, Default)]
pub struct MeasuredPool(Mutex<ParallelChoice>);

impl MeasuredPool {
    /// `f` over `items`, one after another or on rayon's pool as measured; the results in order.
    ///
    /// # Errors
    /// The first failing item's error (a failed batch is not timed).
    pub fn map<I, T, E, F>(&self, items: &[I], f: F) -> std::result::Result<Vec<T>, E>
    where
        I: Sync,
        T: Send,
        E: Send,
        F: Fn(&I) -> std::result::Result<T, E> + Sync + Send,
    {
        let lock = || self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let pooled = lock().pooled(items.len());
        let t0 = Instant::now();
        let out: std::result::Result<Vec<T>, E> = if pooled {
            items.par_iter().map(&f).collect()
        } else {
            items.iter().map(&f).collect()
        };
        if !items.is_empty() && out.is_ok() {
            lock().record(items.len(), pooled, t0);
        }
        out
    }

    /// See [`ParallelChoice::measured`].
    pub fn measured(&self) -> Vec<(usize, f64, f64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .measured()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!([1, 2, 3, 4, 7, 8, 256].map(bucket), [0, 1, 1, 2, 2, 3, 8]);
    }

    #[test]
    fn the_faster_way_wins_after_both_were_tried() {
        let mut c = ParallelChoice {
            threads: 4,
            ..ParallelChoice::default()
        };
        let mut seen = [0, 0];
        for _ in 0..2 * TRIES {
            let p = c.pooled(16);
            seen[usize::from(p)] += 1;
            // the pool is slow here: record made-up timings through the estimates directly
            if p {
                c.pooled[bucket(16)].add(5000.0);
            } else {
                c.serial[bucket(16)].add(400.0);
            }
        }
        assert_eq!(seen, [TRIES, TRIES]);
        let picks: Vec<bool> = (0..RETRY_EVERY).map(|_| c.pooled(16)).collect();
        assert_eq!(picks.iter().filter(|&&p| p).count(), 1); // one re-try a round
        assert!(!c.pooled(1)); // a single row never goes to the pool
    }

    #[test]
    fn a_shared_pool_keeps_order_and_learns() {
        let pool = MeasuredPool::default();
        let items: Vec<u32> = (0..40).collect();
        for _ in 0..4 * TRIES {
            let out: Vec<u32> = pool.map(&items, |&x| Ok::<_, ()>(x * 2)).unwrap();
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert_eq!(
            pool.map(&items, |&x| if x == 7 { Err(x) } else { Ok(x) }),
            Err(7)
        );
        let m = pool.measured();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, 32);
        if rayon::current_num_threads() > 1 {
            assert!(m[0].1.is_finite() && m[0].2.is_finite(), "{m:?}"); // both ways were timed
        }
    }
}
