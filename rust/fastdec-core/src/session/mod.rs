//! One owner of every engine's requests: a [`DraftSession`] keeps per-request drafter state,
//! recognises requests (by the engine's id, or from row contents for engines that pass none),
//! feeds each the tokens new to it, finishes and evicts in one place under one cap, and drafts
//! the whole batch in one call per engine step.
//!
//! Per step and row the work is O(tokens new to the row + log context): rows are read in place
//! and only at the positions the fingerprint samples ([`rows`]) and after the request's known
//! length. A request seen for the first time is fed its whole prompt once.
//!
//! Requests without ids (vLLM 0.32/0.33 `custom_class`): a row continues the request last seen
//! at the same row if that request's fingerprint matches; otherwise every request whose
//! fingerprint at one of the lengths `n, n - 1, ..., n - max_gap` matches (longest first); two
//! requests with equal rows are interchangeable (their drafts are equal), each claimed once a
//! step. A request missing from `grace_steps` consecutive steps is finished (the drafter's
//! `stop` runs, which is when a trie drafter adds its output to the shared trie).
//!
//! Requests with ids (SGLang, llama.cpp, vLLM 0.34): the id is the key; a row that does not
//! continue what the session knows of its request (shorter, or a different fingerprint)
//! restarts it. The engine finishes requests with [`DraftSession::finish`].
//!
//! At most `max_requests` are live; starting one more finishes the least recently seen.

pub mod length;
mod parallel;
pub mod rows;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;

use crate::drafter::{Drafter, RequestId};
use crate::{Error, Result, TokenId};
pub use length::{chain_confidences, DraftLength, LengthConfig, LengthStats};
use parallel::ParallelChoice;
use rows::{fingerprint, token_ids, Token};

/// A session's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Nodes asked of the drafter per row (the draft is the tree's deepest chain).
    pub tree_budget: usize,
    /// Requests live at once (the least recently seen is finished beyond).
    pub max_requests: usize,
    /// Id-less rows: steps a request may be missing before it counts as finished.
    pub grace_steps: u64,
    /// Id-less rows: the most tokens a request may gain between two sightings.
    pub max_gap: usize,
    /// The draft-length controller (its `k` is the most draft tokens per row).
    pub length: LengthConfig,
}

impl SessionConfig {
    /// The defaults for drafts of at most `k` tokens.
    pub fn new(k: usize) -> Self {
        SessionConfig {
            tree_budget: k + 1,
            max_requests: 1024,
            grace_steps: 4,
            max_gap: k + 1 + 8,
            length: LengthConfig::new(k),
        }
    }
}

/// Counters of a session (see [`DraftSession::stats`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionStats {
    /// Engine steps.
    pub steps: u64,
    /// Rows drafted for.
    pub rows: u64,
    /// Draft tokens returned.
    pub drafted: u64,
    /// Draft tokens the engine accepted (read from what rows gained).
    pub accepted: u64,
    /// Requests started, finished (by the engine, by absence, or restarted) and evicted.
    pub started: u64,
    /// Requests finished.
    pub stopped: u64,
    /// Of those, finished for the cap.
    pub evicted: u64,
    /// Live requests.
    pub live: usize,
    /// Nanoseconds spent in [`DraftSession::step`].
    pub step_ns: u64,
    /// Per batch-size bucket drafted so far: (rows from, ns a row proposing one after another,
    /// ns a row on rayon's pool), NaN where not measured (see the `parallel` module).
    pub propose_ns_per_row: Vec<(usize, f64, f64)>,
}

struct Tracked {
    key: Option<RequestId>,
    length: usize,
    fp: u64,
    last_seen: u64,
    tick: u64,
    draft: Vec<TokenId>,
    confidence: Vec<f64>,
}

struct Inner {
    requests: HashMap<i64, Tracked>,
    by_fp: HashMap<(usize, u64), Vec<i64>>,
    by_key: HashMap<RequestId, i64>,
    lru: BTreeSet<(u64, i64)>,
    next_id: i64,
    tick: u64,
    last_rows: Vec<i64>,
    length: DraftLength,
    last_call: Option<f64>,
    clock: Instant,
    last_drafts: Vec<usize>,
    parallel: ParallelChoice,
    stats: SessionStats,
}

/// The draft session (see the module docs). Thread-safe: one step runs at a time.
pub struct DraftSession {
    drafter: Arc<dyn Drafter>,
    config: SessionConfig,
    inner: Mutex<Inner>,
}

/// A row of this step, as recognised.
struct Seen {
    id: i64,
    draft: bool,
}

impl DraftSession {
    /// A session drafting with `drafter`.
    ///
    /// # Errors
    /// A setting out of range (named).
    pub fn new(drafter: Arc<dyn Drafter>, config: SessionConfig) -> Result<Self> {
        let length = DraftLength::new(config.length)?;
        for (name, value) in [
            ("tree_budget", config.tree_budget.saturating_sub(1)),
            ("max_requests", config.max_requests),
            ("grace_steps", config.grace_steps as usize),
            ("max_gap", config.max_gap),
        ] {
            if value < 1 {
                let shown = if name == "tree_budget" {
                    config.tree_budget
                } else {
                    value
                };
                let least = if name == "tree_budget" { 2 } else { 1 };
                return Err(Error::arg(name, shown, format!("must be >= {least}")));
            }
        }
        Ok(DraftSession {
            drafter,
            inner: Mutex::new(Inner {
                requests: HashMap::default(),
                by_fp: HashMap::default(),
                by_key: HashMap::default(),
                lru: BTreeSet::new(),
                next_id: 0,
                tick: 0,
                last_rows: Vec::new(),
                length,
                last_call: None,
                clock: Instant::now(),
                last_drafts: Vec::new(),
                parallel: ParallelChoice::default(),
                stats: SessionStats::default(),
            }),
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The drafter.
    pub fn drafter(&self) -> &Arc<dyn Drafter> {
        &self.drafter
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One engine step for the whole batch: recognises each row's request, feeds it the tokens
    /// new to it, finishes requests gone for `grace_steps` (id-less rows only), and returns one
    /// linear draft per row.
    ///
    /// `keys`: the engine's request id per row, or `None` for id-less rows. `rows[i]`: row
    /// `i`'s tokens so far (drafts excluded). `sampled[i]`: tokens row `i` emitted last step (0:
    /// a partial prefill, no draft; an unknown row with 0 is not started). `room[i]`: the most
    /// draft tokens row `i` may get (`min(k, max_model_len - len)`). `now`: the engine step's
    /// time in seconds on any monotonic clock (`None`: the session's own); the draft-length
    /// controller reads a step's cost as the time between consecutive calls.
    ///
    /// # Errors
    /// Length mismatches, invalid token ids (named), or a drafter error.
    pub fn step<T: Token>(
        &self,
        keys: Option<&[RequestId]>,
        rows: &[&[T]],
        sampled: &[usize],
        room: &[usize],
        now: Option<f64>,
    ) -> Result<Vec<Vec<TokenId>>> {
        let start = Instant::now();
        for (what, got) in [("sampled", sampled.len()), ("room", room.len())]
            .into_iter()
            .chain(keys.map(|k| ("keys", k.len())))
        {
            if got != rows.len() {
                return Err(Error::LengthMismatch {
                    what,
                    expected: rows.len(),
                    got,
                });
            }
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let now = now.unwrap_or_else(|| start.duration_since(inner.clock).as_secs_f64());
        inner.tick += 1;
        let step = inner.tick;
        let mut emitted_total = 0usize;
        let mut seen: Vec<Option<Seen>> = Vec::with_capacity(rows.len());
        let previous_rows = std::mem::take(&mut inner.last_rows);
        for (i, row) in rows.iter().enumerate() {
            let hint = previous_rows.get(i).copied().unwrap_or(-1);
            let key = keys.map(|k| &k[i]);
            let found = self.recognise(inner, key, row, hint, step);
            let s = match found {
                Some(id) => {
                    emitted_total += self.feed(inner, id, row, step)?;
                    Some(Seen {
                        id,
                        draft: sampled[i] > 0,
                    })
                }
                None if sampled[i] == 0 || row.is_empty() => None,
                None => Some(Seen {
                    id: self.begin(inner, key, row, sampled[i], step)?,
                    draft: true,
                }),
            };
            seen.push(s);
        }
        // A cap below the batch can evict a request this very step: its row gets no draft.
        for s in &mut seen {
            if s.as_ref()
                .is_some_and(|s| !inner.requests.contains_key(&s.id))
            {
                *s = None;
            }
        }
        inner.last_rows = seen
            .iter()
            .map(|s| s.as_ref().map_or(-1, |s| s.id))
            .collect();
        if keys.is_none() {
            let grace = self.config.grace_steps;
            let gone: Vec<i64> = inner
                .requests
                .iter()
                .filter(|(_, r)| r.last_seen + grace <= step)
                .map(|(&id, _)| id)
                .collect();
            for id in gone {
                self.stop(inner, id, false)?;
            }
        }
        if let Some(t) = inner.last_call {
            let seconds = now - t;
            let drafts = std::mem::take(&mut inner.last_drafts);
            inner.length.observe_step(&drafts, seconds, emitted_total);
        }
        let drafts = self.draft(inner, rows, &seen, room)?;
        inner.last_drafts = drafts.iter().map(Vec::len).collect();
        inner.last_call = Some(now);
        let s = &mut inner.stats;
        s.steps += 1;
        s.drafted += drafts.iter().map(|d| d.len() as u64).sum::<u64>();
        s.step_ns += start.elapsed().as_nanos() as u64;
        Ok(drafts)
    }

    /// The live request `row` continues, if any.
    fn recognise<T: Token>(
        &self,
        inner: &Inner,
        key: Option<&RequestId>,
        row: &[T],
        hint: i64,
        step: u64,
    ) -> Option<i64> {
        let n = row.len();
        let continues = |r: &Tracked| r.length <= n && fingerprint(row, r.length) == r.fp;
        if let Some(key) = key {
            let id = *inner.by_key.get(key)?;
            return continues(&inner.requests[&id]).then_some(id);
        }
        if n == 0 {
            return None;
        }
        let gap = self.config.max_gap;
        if let Some(r) = inner.requests.get(&hint) {
            if r.last_seen != step && n - r.length.min(n) <= gap && continues(r) {
                return Some(hint);
            }
        }
        for len in (n.saturating_sub(gap).max(1)..=n).rev() {
            let fp = fingerprint(row, len);
            if let Some(ids) = inner.by_fp.get(&(len, fp)) {
                if let Some(&id) = ids.iter().find(|id| inner.requests[id].last_seen != step) {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Feeds request `id` the tokens of `row` after its known length; returns how many.
    fn feed<T: Token>(&self, inner: &mut Inner, id: i64, row: &[T], step: u64) -> Result<usize> {
        let r = inner
            .requests
            .get_mut(&id)
            .expect("recognised requests are live");
        let new = token_ids(&row[r.length..], "row tokens")?;
        let draft = std::mem::take(&mut r.draft);
        let confidence = std::mem::take(&mut r.confidence);
        if !new.is_empty() {
            if !draft.is_empty() {
                let accepted = inner.length.observe(&draft, &confidence, &new);
                inner.stats.accepted += accepted as u64;
            }
            match self.drafter.accept(&RequestId::Int(id), &new, None) {
                // the drafter dropped it (its own cap, below the session's): start it again
                Err(Error::UnknownRequest { .. }) => self
                    .drafter
                    .start(RequestId::Int(id), &token_ids(row, "row tokens")?)?,
                other => other?,
            }
        }
        Self::index(inner, id, row, step);
        Ok(new.len())
    }

    /// Starts a request for `row`, whose last `sampled` tokens were emitted (the rest is the
    /// prompt); finishes the least recently seen beyond the cap first.
    fn begin<T: Token>(
        &self,
        inner: &mut Inner,
        key: Option<&RequestId>,
        row: &[T],
        sampled: usize,
        step: u64,
    ) -> Result<i64> {
        if let Some(old) = key.and_then(|k| inner.by_key.get(k).copied()) {
            self.stop(inner, old, false)?; // a row that does not continue its request: restart
        }
        while inner.requests.len() >= self.config.max_requests {
            let Some(&(_, oldest)) = inner.lru.iter().next() else {
                break;
            };
            self.stop(inner, oldest, true)?;
        }
        let tokens = token_ids(row, "row tokens")?;
        let prompt = tokens.len().saturating_sub(sampled).max(1);
        let id = inner.next_id;
        inner.next_id += 1;
        self.drafter.start(RequestId::Int(id), &tokens[..prompt])?;
        if prompt < tokens.len() {
            self.drafter
                .accept(&RequestId::Int(id), &tokens[prompt..], None)?;
        }
        inner.requests.insert(
            id,
            Tracked {
                key: key.cloned(),
                length: 0,
                fp: 0,
                last_seen: step,
                tick: 0,
                draft: Vec::new(),
                confidence: Vec::new(),
            },
        );
        if let Some(k) = key {
            inner.by_key.insert(k.clone(), id);
        }
        inner.stats.started += 1;
        Self::index(inner, id, row, step);
        Ok(id)
    }

    /// Records that request `id` holds `row` now.
    fn index<T: Token>(inner: &mut Inner, id: i64, row: &[T], step: u64) {
        let r = inner
            .requests
            .get_mut(&id)
            .expect("indexed requests are live");
        let old = (r.length, r.fp);
        r.length = row.len();
        r.fp = fingerprint(row, row.len());
        r.last_seen = step;
        inner.lru.remove(&(r.tick, id));
        r.tick = step;
        inner.lru.insert((step, id));
        let new = (r.length, r.fp);
        if r.key.is_none() && old != new {
            unindex(&mut inner.by_fp, old, id);
            inner.by_fp.entry(new).or_default().push(id);
        }
    }

    fn stop(&self, inner: &mut Inner, id: i64, evicted: bool) -> Result<()> {
        let Some(r) = inner.requests.remove(&id) else {
            return Ok(());
        };
        inner.lru.remove(&(r.tick, id));
        match &r.key {
            Some(k) => {
                inner.by_key.remove(k);
            }
            None => unindex(&mut inner.by_fp, (r.length, r.fp), id),
        }
        inner.stats.stopped += 1;
        inner.stats.evicted += u64::from(evicted);
        match self.drafter.stop(&RequestId::Int(id)) {
            Err(Error::UnknownRequest { .. }) => Ok(()), // the drafter's own cap dropped it
            other => other,
        }
    }

    /// Drafts every row that may get one, in one batched proposal.
    fn draft<T: Token>(
        &self,
        inner: &mut Inner,
        rows: &[&[T]],
        seen: &[Option<Seen>],
        room: &[usize],
    ) -> Result<Vec<Vec<TokenId>>> {
        let mut out = vec![Vec::new(); rows.len()];
        let k = self.config.length.k;
        let todo: Vec<usize> = (0..rows.len())
            .filter(|&i| seen[i].as_ref().is_some_and(|s| s.draft) && room[i] > 0)
            .collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let ids: Vec<RequestId> = todo
            .iter()
            .map(|&i| RequestId::Int(seen[i].as_ref().map_or(-1, |s| s.id)))
            .collect();
        let budget = self.config.tree_budget;
        let drafter = &*self.drafter;
        let pooled = inner.parallel.pooled(ids.len());
        let t0 = Instant::now();
        let trees: Vec<_> = if pooled {
            ids.par_iter()
                .map(|id| drafter.propose(id, budget))
                .collect::<Result<_>>()?
        } else {
            ids.iter()
                .map(|id| drafter.propose(id, budget))
                .collect::<Result<_>>()?
        };
        inner.parallel.record(ids.len(), pooled, t0);
        let mut chains: Vec<(usize, Vec<TokenId>, Vec<f64>)> = Vec::with_capacity(todo.len());
        for (&i, tree) in todo.iter().zip(&trees) {
            if tree.num_nodes() < 2 {
                continue;
            }
            let mut nodes = tree.chain_view(None)?;
            nodes.truncate(room[i].min(k) + 1);
            let tokens = nodes[1..]
                .iter()
                .map(|&n| tree.tokens()[n as usize])
                .collect();
            chains.push((i, tokens, chain_confidences(tree.scores(), &nodes)));
        }
        let confidences: Vec<&[f64]> = chains.iter().map(|c| c.2.as_slice()).collect();
        let keeps = inner.length.cut_batch(&confidences);
        inner.stats.rows += todo.len() as u64;
        for ((i, mut tokens, mut confidence), keep) in chains.into_iter().zip(keeps) {
            tokens.truncate(keep);
            confidence.truncate(keep);
            let id = seen[i].as_ref().map_or(-1, |s| s.id);
            if let Some(r) = inner.requests.get_mut(&id) {
                r.draft.clone_from(&tokens);
                r.confidence = confidence;
            }
            out[i] = tokens;
        }
        Ok(out)
    }

    /// Finishes the requests with these engine ids (unknown ones are ignored: a request the
    /// session never drafted for, or one already evicted).
    ///
    /// # Errors
    /// A drafter error.
    pub fn finish(&self, keys: &[RequestId]) -> Result<()> {
        let mut g = self.lock();
        for key in keys {
            if let Some(id) = g.by_key.get(key).copied() {
                self.stop(&mut g, id, false)?;
            }
        }
        Ok(())
    }

    /// Finishes every live request (their outputs reach the drafter's shared memory).
    ///
    /// # Errors
    /// A drafter error.
    pub fn finish_all(&self) -> Result<()> {
        let mut g = self.lock();
        let ids: Vec<i64> = g.requests.keys().copied().collect();
        for id in ids {
            self.stop(&mut g, id, false)?;
        }
        Ok(())
    }

    /// Per row of the last step, the session's id of its request (-1: none).
    pub fn last_rows(&self) -> Vec<i64> {
        self.lock().last_rows.clone()
    }

    /// Live requests.
    pub fn len(&self) -> usize {
        self.lock().requests.len()
    }

    /// Whether no request is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        let g = self.lock();
        SessionStats {
            live: g.requests.len(),
            propose_ns_per_row: g.parallel.measured(),
            ..g.stats.clone()
        }
    }

    /// What the draft-length controller has measured.
    pub fn length_stats(&self) -> LengthStats {
        self.lock().length.stats()
    }
}

fn unindex(by_fp: &mut HashMap<(usize, u64), Vec<i64>>, key: (usize, u64), id: i64) {
    if let Some(ids) = by_fp.get_mut(&key) {
        ids.retain(|&x| x != id);
        if ids.is_empty() {
            by_fp.remove(&key);
        }
    }
}
