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

mod cost_curve;
mod cost_fit;
pub mod length;
pub mod rows;
mod suffix_match;
mod track;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;

use crate::drafter::{Drafter, RequestId};
use crate::parallel::ParallelChoice;
use crate::{Error, Result, TokenId, TokenTree};
pub use length::{chain_confidences, DraftLength, LengthConfig, LengthStats, RowState};
use rows::Token;
use track::{Row, Seen, Tracker};

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

/// A row's chain as the length controller sees it.
struct Chain {
    row: usize,
    id: i64,
    tokens: Vec<TokenId>,
    confidence: Vec<f64>,
    /// the token drafted past the chain's end
    filler: TokenId,
    /// the most draft tokens the row may get
    room: usize,
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
    /// Requests started.
    pub started: u64,
    /// Requests finished (by the engine, by absence, for the cap, or restarted).
    pub stopped: u64,
    /// Of those, finished for the cap.
    pub evicted: u64,
    /// Of those, restarted: a row with a known id that did not continue its request (a gap,
    /// or a shorter row).
    pub restarted: u64,
    /// Live requests.
    pub live: usize,
    /// Nanoseconds spent in [`DraftSession::step`].
    pub step_ns: u64,
    /// Per batch-size bucket drafted so far: (rows from, ns a row proposing one after another,
    /// ns a row on rayon's pool), NaN where not measured (see [`crate::parallel`]).
    pub propose_ns_per_row: Vec<(usize, f64, f64)>,
}

struct Inner {
    tracker: Tracker,
    length: DraftLength,
    parallel: ParallelChoice,
    clock: Instant,
    last_call: Option<f64>,
    last_drafts: Vec<usize>,
}

/// The draft session (see the module docs). Thread-safe: one step runs at a time.
pub struct DraftSession {
    drafter: Arc<dyn Drafter>,
    config: SessionConfig,
    inner: Mutex<Inner>,
}

fn check_lengths(rows: usize, inputs: &[(&'static str, Option<usize>)]) -> Result<()> {
    for &(what, got) in inputs {
        if let Some(got) = got.filter(|&g| g != rows) {
            return Err(Error::LengthMismatch {
                what,
                expected: rows,
                got,
            });
        }
    }
    Ok(())
}

fn as_rows<'a, T>(rows: &[&'a [T]], offsets: Option<&[usize]>) -> Vec<Row<'a, T>> {
    rows.iter()
        .enumerate()
        .map(|(i, &tokens)| Row {
            tokens,
            offset: offsets.map_or(0, |o| o[i]),
        })
        .collect()
}

impl DraftSession {
    /// A session drafting with `drafter`.
    ///
    /// # Errors
    /// A setting out of range (named).
    pub fn new(drafter: Arc<dyn Drafter>, config: SessionConfig) -> Result<Self> {
        let length = DraftLength::new(config.length)?;
        if config.tree_budget < 2 {
            return Err(Error::arg(
                "tree_budget",
                config.tree_budget,
                "must be >= 2",
            ));
        }
        for (name, value) in [
            ("max_requests", config.max_requests),
            ("grace_steps", config.grace_steps as usize),
            ("max_gap", config.max_gap),
        ] {
            if value < 1 {
                return Err(Error::arg(name, value, "must be >= 1"));
            }
        }
        let tracker = Tracker::new(
            Arc::clone(&drafter),
            config.max_requests,
            config.max_gap,
            config.grace_steps,
        );
        Ok(DraftSession {
            drafter,
            inner: Mutex::new(Inner {
                tracker,
                length,
                parallel: ParallelChoice::default(),
                clock: Instant::now(),
                last_call: None,
                last_drafts: Vec::new(),
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

    /// One engine step for the whole batch, linear drafts out: recognises each row's request,
    /// feeds it the tokens new to it, finishes requests gone for `grace_steps` (id-less rows
    /// only), and returns one draft per row, cut to the length the controller finds worth it.
    ///
    /// `keys`: the engine's request id per row, or `None` for id-less rows. `rows[i]`: row
    /// `i`'s tokens (drafts excluded), from position `offsets[i]` (default 0: the whole row;
    /// offsets need ids). `sampled[i]`: tokens row `i` emitted last step (0: a partial prefill,
    /// no draft; an unknown row with 0 is not started). `room[i]`: the most draft tokens row
    /// `i` may get (`min(k, max_model_len - len)`). `now`: the engine step's time in seconds on
    /// any monotonic clock (`None`: the session's own); the draft-length controller reads a
    /// step's cost as the time between consecutive calls.
    ///
    /// # Errors
    /// Length mismatches, offsets without ids, invalid token ids (named), or a drafter error.
    pub fn step<T: Token>(
        &self,
        keys: Option<&[RequestId]>,
        rows: &[&[T]],
        offsets: Option<&[usize]>,
        sampled: &[usize],
        room: &[usize],
        now: Option<f64>,
    ) -> Result<Vec<Vec<TokenId>>> {
        let start = Instant::now();
        Self::check(keys, rows.len(), offsets, sampled, Some(room.len()))?;
        let mut g = self.lock();
        let inner = &mut *g;
        let now = now.unwrap_or_else(|| start.duration_since(inner.clock).as_secs_f64());
        let rows = as_rows(rows, offsets);
        let (seen, gained, prefill) =
            inner
                .tracker
                .observe(keys, &rows, sampled, &mut inner.length)?;
        if let Some(t) = inner.last_call {
            let drafts = std::mem::take(&mut inner.last_drafts);
            inner
                .length
                .observe_step_with(&drafts, now - t, gained, prefill);
        }
        // each row's last token: the filler of a row whose drafter has no chain (padding only)
        let last: Vec<Option<TokenId>> = if self.config.length.pad {
            rows.iter()
                .map(|r| {
                    r.tokens
                        .last()
                        .and_then(|t| TokenId::try_from(t.value()).ok())
                })
                .collect()
        } else {
            Vec::new()
        };
        let drafts = self.draft_chains(inner, &seen, room, &last)?;
        inner.last_drafts = drafts.iter().map(Vec::len).collect();
        inner.last_call = Some(now);
        let s = &mut inner.tracker.stats;
        s.steps += 1;
        s.drafted += drafts.iter().map(|d| d.len() as u64).sum::<u64>();
        s.step_ns += start.elapsed().as_nanos() as u64;
        Ok(drafts)
    }

    /// [`DraftSession::step`] for engines that verify trees (SGLang): one tree of at most
    /// `budget` nodes per row (default `tree_budget`; root = the row's last token); a row that
    /// does not draft, or every row at `budget` 1, gets its root alone. No length controller:
    /// the engine verifies fixed-size trees, or picks `budget` per step itself (a tree loop's
    /// own cost model, as llama.cpp's tree loop does).
    ///
    /// # Errors
    /// As [`DraftSession::step`]; an empty row; `budget` 0.
    pub fn step_trees<T: Token>(
        &self,
        keys: Option<&[RequestId]>,
        rows: &[&[T]],
        offsets: Option<&[usize]>,
        sampled: &[usize],
        budget: Option<usize>,
    ) -> Result<Vec<TokenTree>> {
        let start = Instant::now();
        Self::check(keys, rows.len(), offsets, sampled, None)?;
        if let Some(i) = rows.iter().position(|r| r.is_empty()) {
            return Err(Error::arg("rows", format!("row {i}"), "must not be empty"));
        }
        let budget = budget.unwrap_or(self.config.tree_budget);
        if budget == 0 {
            return Err(Error::arg(
                "budget",
                budget,
                "must be at least 1 (the root)",
            ));
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let rows = as_rows(rows, offsets);
        let (seen, ..) = inner
            .tracker
            .observe(keys, &rows, sampled, &mut inner.length)?;
        let todo: Vec<usize> = (0..rows.len())
            .filter(|&i| budget > 1 && seen[i].as_ref().is_some_and(|s| s.draft))
            .collect();
        let ids: Vec<i64> = todo
            .iter()
            .map(|&i| seen[i].as_ref().map_or(-1, |s| s.id))
            .collect();
        let mut proposed = self.propose(inner, &ids, budget)?.into_iter();
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if todo.binary_search(&i).is_ok() {
                out.extend(proposed.next());
            } else {
                let root = row.tokens[row.tokens.len() - 1].value();
                out.push(TokenTree::chain(rows::token_ids(&[root], "row tokens")?)?);
            }
        }
        let s = &mut inner.tracker.stats;
        s.steps += 1;
        s.rows += todo.len() as u64;
        s.drafted += out.iter().map(|t| t.num_nodes() as u64 - 1).sum::<u64>();
        s.step_ns += start.elapsed().as_nanos() as u64;
        Ok(out)
    }

    fn check(
        keys: Option<&[RequestId]>,
        rows: usize,
        offsets: Option<&[usize]>,
        sampled: &[usize],
        room: Option<usize>,
    ) -> Result<()> {
        check_lengths(
            rows,
            &[
                ("sampled", Some(sampled.len())),
                ("room", room),
                ("keys", keys.map(<[_]>::len)),
                ("offsets", offsets.map(<[_]>::len)),
            ],
        )?;
        if offsets.is_some() && keys.is_none() {
            return Err(Error::arg(
                "offsets",
                "given",
                "rows without ids are recognised from whole rows: pass ids, or no offsets",
            ));
        }
        Ok(())
    }

    /// Proposals for these requests, one after another or on rayon's pool as measured.
    fn propose(&self, inner: &mut Inner, ids: &[i64], budget: usize) -> Result<Vec<TokenTree>> {
        let drafter = &*self.drafter;
        let pooled = inner.parallel.pooled(ids.len());
        let t0 = Instant::now();
        let one = |&id: &i64| drafter.propose(&RequestId::Int(id), budget);
        let trees = if pooled {
            ids.par_iter().map(one).collect::<Result<Vec<_>>>()?
        } else {
            ids.iter().map(one).collect::<Result<Vec<_>>>()?
        };
        if !ids.is_empty() {
            inner.parallel.record(ids.len(), pooled, t0);
        }
        Ok(trees)
    }

    /// Linear drafts for every row that may get one: each tree's deepest chain, cut by the
    /// length controller.
    fn draft_chains(
        &self,
        inner: &mut Inner,
        seen: &[Option<Seen>],
        room: &[usize],
        last: &[Option<TokenId>],
    ) -> Result<Vec<Vec<TokenId>>> {
        let mut out = vec![Vec::new(); seen.len()];
        let k = self.config.length.k;
        let todo: Vec<usize> = (0..seen.len())
            .filter(|&i| seen[i].as_ref().is_some_and(|s| s.draft) && room[i] > 0)
            .collect();
        if todo.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = todo
            .iter()
            .map(|&i| seen[i].as_ref().map_or(-1, |s| s.id))
            .collect();
        let trees = self.propose(inner, &ids, self.config.tree_budget)?;
        let pad = self.config.length.pad;
        let mut chains: Vec<Chain> = Vec::with_capacity(todo.len());
        for ((&i, &id), tree) in todo.iter().zip(&ids).zip(&trees) {
            let own = last.get(i).copied().flatten();
            let Some(root) = own.or_else(|| tree.tokens().first().copied()) else {
                continue;
            };
            if tree.num_nodes() < 2 {
                if pad {
                    // no chain, but filler may still make the step cheaper (see `cost_curve`)
                    chains.push(Chain {
                        row: i,
                        id,
                        tokens: Vec::new(),
                        confidence: Vec::new(),
                        filler: root,
                        room: room[i].min(k),
                    });
                }
                continue;
            }
            // the chain a greedy verifier is expected to accept most of (not the deepest)
            let mut nodes = tree.chain_view(Some(tree.likeliest_leaf()))?;
            nodes.truncate(room[i].min(k) + 1);
            let tokens: Vec<TokenId> = nodes[1..]
                .iter()
                .map(|&n| tree.tokens()[n as usize])
                .collect();
            let filler = tokens.last().copied().unwrap_or(root);
            let confidence = chain_confidences(tree.scores(), &nodes);
            chains.push(Chain {
                row: i,
                id,
                tokens,
                confidence,
                filler,
                room: room[i].min(k),
            });
        }
        let confidences: Vec<&[f64]> = chains.iter().map(|c| c.confidence.as_slice()).collect();
        let rooms: Vec<usize> = chains.iter().map(|c| c.room).collect();
        let states: Vec<RowState> = chains
            .iter()
            .map(|c| inner.tracker.row_state(c.id))
            .collect();
        let keeps = inner
            .length
            .cut_step(&confidences, &states, Some(&rooms), seen.len());
        inner.tracker.stats.rows += todo.len() as u64;
        for (c, keep) in chains.into_iter().zip(keeps) {
            // past the chain's end: filler (the chain's last token repeated), rarely accepted,
            // verified only because the measured step is cheaper with it
            let mut draft = c.tokens[..keep.min(c.tokens.len())].to_vec();
            draft.resize(keep, c.filler);
            out[c.row] = draft;
            inner.tracker.set_draft(c.id, c.tokens, c.confidence, keep);
        }
        Ok(out)
    }

    /// Finishes the requests with these engine ids (unknown ids are ignored: a request the
    /// session never drafted for, or one already evicted).
    ///
    /// # Errors
    /// A drafter error.
    pub fn finish(&self, keys: &[RequestId]) -> Result<()> {
        self.lock().tracker.finish(keys)
    }

    /// Finishes every live request (their outputs reach the drafter's shared memory).
    ///
    /// # Errors
    /// A drafter error.
    pub fn finish_all(&self) -> Result<()> {
        self.lock().tracker.finish_all()
    }

    /// Per row of the last step, the session's id of its request (-1: none).
    pub fn last_rows(&self) -> Vec<i64> {
        self.lock().tracker.last_rows.clone()
    }

    /// Live requests.
    pub fn len(&self) -> usize {
        self.lock().tracker.len()
    }

    /// Whether no request is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters so far.
    pub fn stats(&self) -> SessionStats {
        let g = self.lock();
        SessionStats {
            live: g.tracker.len(),
            propose_ns_per_row: g.parallel.measured(),
            ..g.tracker.stats.clone()
        }
    }

    /// What the draft-length controller has measured.
    pub fn length_stats(&self) -> LengthStats {
        self.lock().length.stats()
    }
}
