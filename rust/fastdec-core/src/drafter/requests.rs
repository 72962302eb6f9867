//! The per-request state table shared by drafters: thread-safe, bounded, LRU eviction.

use rustc_hash::FxHashMap as HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::DraftStats;
use crate::{Error, Result, TokenTree};

/// A request id as servers spell it: an integer or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Int(i) => write!(f, "{i}"),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

struct Slot<S> {
    state: Mutex<(S, DraftStats)>,
    last_used: AtomicU64,
}

/// Active requests: at most `capacity`; starting one more evicts the least recently used
/// (whose later calls then raise `KeyError`). Each request has its own lock, so different
/// requests proceed in parallel.
pub struct Requests<S> {
    slots: RwLock<HashMap<RequestId, Arc<Slot<S>>>>,
    capacity: usize,
    clock: AtomicU64,
    finished: Mutex<DraftStats>,
}

/// Locks ignoring poisoning: a panic in another thread cannot leave our plain-data state
/// half-updated in a way later calls could not survive, and this keeps the object usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S> Requests<S> {
    /// An empty table holding at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Requests {
            slots: RwLock::new(HashMap::default()),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
            finished: Mutex::new(DraftStats::default()),
        }
    }

    /// Number of active requests.
    pub fn len(&self) -> usize {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no request is active.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of active requests.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Inserts (or replaces) a request, evicting the least recently used one when full.
    pub fn insert(&self, id: RequestId, state: S) {
        let slot = Arc::new(Slot {
            state: Mutex::new((state, DraftStats::default())),
            last_used: AtomicU64::new(self.tick()),
        });
        let mut slots = self.slots.write().unwrap_or_else(PoisonError::into_inner);
        if !slots.contains_key(&id) && slots.len() >= self.capacity {
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(old) = oldest {
                if let Some(s) = slots.remove(&old) {
                    lock(&self.finished).add(&lock(&s.state).1);
                }
            }
        }
        if let Some(old) = slots.insert(id, slot) {
            lock(&self.finished).add(&lock(&old.state).1);
        }
    }

    /// Runs `f` on a request's state and counters under its lock.
    ///
    /// # Errors
    /// [`Error::UnknownRequest`].
    pub fn with<T>(
        &self,
        id: &RequestId,
        f: impl FnOnce(&mut S, &mut DraftStats) -> Result<T>,
    ) -> Result<T> {
        let slot = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                slots
                    .get(id)
                    .ok_or_else(|| Error::UnknownRequest { id: id.to_string() })?,
            )
        };
        slot.last_used.store(self.tick(), Ordering::Relaxed);
        let mut guard = lock(&slot.state);
        let (state, stats) = &mut *guard;
        f(state, stats)
    }

    /// [`Requests::with`] for a proposal: `f` drafts from the state, and the tree and the time
    /// since `t0` (taken before any validation or lock wait) are counted.
    ///
    /// # Errors
    /// [`Error::UnknownRequest`], or what `f` returns.
    pub fn propose_timed(
        &self,
        id: &RequestId,
        t0: std::time::Instant,
        f: impl FnOnce(&mut S) -> Result<TokenTree>,
    ) -> Result<TokenTree> {
        self.with(id, |state, stats| {
            let tree = f(state)?;
            stats.record_propose(&tree, t0);
            Ok(tree)
        })
    }

    /// [`Requests::with`] for an accept of `emitted` tokens: `f` updates the state, then the
    /// tokens and the time since `t0` are counted.
    ///
    /// # Errors
    /// [`Error::UnknownRequest`], or what `f` returns.
    pub fn accept_timed(
        &self,
        id: &RequestId,
        t0: std::time::Instant,
        emitted: usize,
        f: impl FnOnce(&mut S) -> Result<()>,
    ) -> Result<()> {
        self.with(id, |state, stats| {
            f(state)?;
            stats.record_accept(emitted, t0);
            Ok(())
        })
    }

    /// Removes a request, folding its counters into the totals.
    ///
    /// # Errors
    /// [`Error::UnknownRequest`].
    pub fn remove(&self, id: &RequestId) -> Result<()> {
        let slot = self
            .slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
            .ok_or_else(|| Error::UnknownRequest { id: id.to_string() })?;
        lock(&self.finished).add(&lock(&slot.state).1);
        Ok(())
    }

    /// Counters of all requests, active and finished.
    pub fn total_stats(&self) -> DraftStats {
        let mut total = *lock(&self.finished);
        for slot in self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            total.add(&lock(&slot.state).1);
        }
        total
    }

    /// Sums `f` over the states of all active requests.
    pub fn sum_states(&self, f: impl Fn(&S) -> usize) -> usize {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots.values().map(|slot| f(&lock(&slot.state).0)).sum()
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }
}
