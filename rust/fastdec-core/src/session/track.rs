//! The request table behind [`super::DraftSession`]: recognising each row's request, feeding it
//! what is new, starting, finishing and evicting, all in one place under one cap.

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use super::length::{next_streak, DraftLength, RowState};
use super::rows::{fingerprint, token_ids, Token, TAIL};
use super::suffix_match::{self, SuffixMatch};
use super::SessionStats;
use crate::drafter::{Drafter, RequestId};
use crate::{Error, Result, TokenId};

struct Tracked {
    key: Option<RequestId>,
    /// tokens of the request known so far
    length: usize,
    /// id-less rows: the fingerprint of its row at `length`
    fp: u64,
    /// rows with ids: its last (up to `TAIL`) tokens before `length`
    tail: Vec<TokenId>,
    last_seen: u64,
    tick: u64,
    /// the chain proposed at `length` (drafted or not) and its tokens' confidences
    chain: Vec<TokenId>,
    confidence: Vec<f64>,
    /// how many leading chain tokens were drafted
    drafted: usize,
    /// tokens the drafter's chains predicted in a row up to the latest miss (see `length`)
    streak: u32,
    /// how much of the end of its text it held earlier too (see `suffix_match`)
    matches: SuffixMatch,
    /// the row's state when `chain` was proposed
    chain_state: RowState,
}

impl Tracked {
    /// The request's state for the length controller now.
    fn state(&self) -> RowState {
        RowState {
            streak: self.streak,
            matched: self.matches.length(),
        }
    }
}

/// A row of one step as recognised: the session's request id and whether it drafts.
pub(super) struct Seen {
    pub id: i64,
    pub draft: bool,
}

/// One row: `tokens` are the request's tokens at positions `offset..offset + tokens.len()`
/// (`offset` 0: the whole row; engines such as SGLang pass only a tail).
#[derive(Clone, Copy)]
pub(super) struct Row<'a, T> {
    pub tokens: &'a [T],
    pub offset: usize,
}

impl<T: Token> Row<'_, T> {
    fn end(&self) -> usize {
        self.offset + self.tokens.len()
    }

    /// The tokens from position `from` on (`offset <= from <= end`).
    fn from(&self, from: usize) -> &[T] {
        &self.tokens[from - self.offset..]
    }
}

pub(super) struct Tracker {
    drafter: Arc<dyn Drafter>,
    max_requests: usize,
    max_gap: usize,
    grace_steps: u64,
    requests: HashMap<i64, Tracked>,
    by_fp: HashMap<(usize, u64), Vec<i64>>,
    by_key: HashMap<RequestId, i64>,
    lru: BTreeSet<(u64, i64)>,
    next_id: i64,
    step: u64,
    pub last_rows: Vec<i64>,
    pub stats: SessionStats,
}

impl Tracker {
    pub fn new(
        drafter: Arc<dyn Drafter>,
        max_requests: usize,
        max_gap: usize,
        grace_steps: u64,
    ) -> Self {
        Tracker {
            drafter,
            max_requests,
            max_gap,
            grace_steps,
            requests: HashMap::default(),
            by_fp: HashMap::default(),
            by_key: HashMap::default(),
            lru: BTreeSet::new(),
            next_id: 0,
            step: 0,
            last_rows: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Recognises every row's request, feeds each what is new to it (and the length
    /// controller what was accepted of its last draft), starts unknown rows that emitted
    /// something, finishes id-less requests gone for `grace_steps`. Returns the rows as seen and
    /// the tokens the batch gained.
    pub fn observe<T: Token>(
        &mut self,
        keys: Option<&[RequestId]>,
        rows: &[Row<'_, T>],
        sampled: &[usize],
        length: &mut DraftLength,
    ) -> Result<(Vec<Option<Seen>>, usize, bool)> {
        self.step += 1;
        // a row that began, or is still prefilling: the engine ran a prefill in this step
        let mut prefill = false;
        let step = self.step;
        let mut gained = 0usize;
        let mut seen: Vec<Option<Seen>> = Vec::with_capacity(rows.len());
        let previous = std::mem::take(&mut self.last_rows);
        for (i, row) in rows.iter().enumerate() {
            let hint = previous.get(i).copied().unwrap_or(-1);
            let key = keys.map(|k| &k[i]);
            let s = match self.recognise(key, row, hint) {
                Some(id) => {
                    gained += self.feed(id, row, length)?;
                    Some(Seen {
                        id,
                        draft: sampled[i] > 0,
                    })
                }
                None if sampled[i] == 0 || row.tokens.is_empty() => {
                    prefill |= !row.tokens.is_empty();
                    None
                }
                None => {
                    prefill = true;
                    Some(Seen {
                        id: self.begin(key, row, sampled[i])?,
                        draft: true,
                    })
                }
            };
            seen.push(s);
        }
        // A cap below the batch can evict a request this very step: its row gets no draft.
        for s in &mut seen {
            if s.as_ref()
                .is_some_and(|s| !self.requests.contains_key(&s.id))
            {
                *s = None;
            }
        }
        self.last_rows = seen
            .iter()
            .map(|s| s.as_ref().map_or(-1, |s| s.id))
            .collect();
        if keys.is_none() {
            let grace = self.grace_steps;
            let gone: Vec<i64> = self
                .requests
                .iter()
                .filter(|(_, r)| r.last_seen + grace <= step)
                .map(|(&id, _)| id)
                .collect();
            for id in gone {
                self.stop(id, false)?;
            }
        }
        Ok((seen, gained, prefill))
    }

    /// The live request `row` continues, if any.
    fn recognise<T: Token>(
        &self,
        key: Option<&RequestId>,
        row: &Row<'_, T>,
        hint: i64,
    ) -> Option<i64> {
        if let Some(key) = key {
            let id = *self.by_key.get(key)?;
            let r = &self.requests[&id];
            // its known length lies in the row, and the row holds its tail where they overlap
            if r.length < row.offset || r.length > row.end() {
                return None;
            }
            let from = r.length.saturating_sub(r.tail.len()).max(row.offset);
            let overlap = &r.tail[r.tail.len() - (r.length - from)..];
            let here = &row.tokens[from - row.offset..r.length - row.offset];
            let same = here
                .iter()
                .zip(overlap)
                .all(|(a, &b)| a.value() == i64::from(b));
            return same.then_some(id);
        }
        let (tokens, n) = (row.tokens, row.tokens.len());
        if n == 0 {
            return None;
        }
        let continues = |r: &Tracked| r.length <= n && fingerprint(tokens, r.length) == r.fp;
        if let Some(r) = self.requests.get(&hint) {
            if r.last_seen != self.step && n - r.length.min(n) <= self.max_gap && continues(r) {
                return Some(hint);
            }
        }
        for len in (n.saturating_sub(self.max_gap).max(1)..=n).rev() {
            if let Some(ids) = self.by_fp.get(&(len, fingerprint(tokens, len))) {
                if let Some(&id) = ids
                    .iter()
                    .find(|id| self.requests[id].last_seen != self.step)
                {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Feeds request `id` the tokens of `row` after its known length; returns how many.
    fn feed<T: Token>(
        &mut self,
        id: i64,
        row: &Row<'_, T>,
        length: &mut DraftLength,
    ) -> Result<usize> {
        let r = self
            .requests
            .get_mut(&id)
            .expect("recognised requests are live");
        let new = token_ids(row.from(r.length), "row tokens")?;
        let chain = std::mem::take(&mut r.chain);
        let confidence = std::mem::take(&mut r.confidence);
        let drafted = std::mem::take(&mut r.drafted);
        if !new.is_empty() {
            let matched = length.observe(&chain, &confidence, &new, r.chain_state);
            r.streak = next_streak(r.streak, matched, new.len());
            r.matches.extend(&new);
            self.stats.accepted += matched.min(drafted).min(new.len() - 1) as u64;
            match self.drafter.accept(&RequestId::Int(id), &new, None) {
                // the drafter dropped it (its own cap, below the session's): start it again
                Err(Error::UnknownRequest { .. }) => self
                    .drafter
                    .start(RequestId::Int(id), &token_ids(row.tokens, "row tokens")?)?,
                other => other?,
            }
        }
        self.index(id, row);
        Ok(new.len())
    }

    /// Starts a request for `row`, whose last `sampled` tokens were emitted (the rest is the
    /// prompt); a known id whose row did not continue it is restarted; the least recently seen
    /// request is finished beyond the cap.
    fn begin<T: Token>(
        &mut self,
        key: Option<&RequestId>,
        row: &Row<'_, T>,
        sampled: usize,
    ) -> Result<i64> {
        if let Some(old) = key.and_then(|k| self.by_key.get(k).copied()) {
            self.stop(old, false)?;
            self.stats.restarted += 1;
        }
        while self.requests.len() >= self.max_requests {
            let Some(&(_, oldest)) = self.lru.iter().next() else {
                break;
            };
            self.stop(oldest, true)?;
        }
        let tokens = token_ids(row.tokens, "row tokens")?;
        let prompt = tokens.len().saturating_sub(sampled).max(1);
        let id = self.next_id;
        self.next_id += 1;
        self.drafter.start(RequestId::Int(id), &tokens[..prompt])?;
        let mut matches = SuffixMatch::default();
        matches.extend(&tokens[tokens.len().saturating_sub(suffix_match::MAX_TOKENS / 2)..]);
        if prompt < tokens.len() {
            self.drafter
                .accept(&RequestId::Int(id), &tokens[prompt..], None)?;
        }
        self.requests.insert(
            id,
            Tracked {
                key: key.cloned(),
                length: 0,
                fp: 0,
                tail: Vec::new(),
                last_seen: self.step,
                tick: 0,
                chain: Vec::new(),
                confidence: Vec::new(),
                drafted: 0,
                streak: 0,
                matches,
                chain_state: RowState::default(),
            },
        );
        if let Some(k) = key {
            self.by_key.insert(k.clone(), id);
        }
        self.stats.started += 1;
        self.index(id, row);
        Ok(id)
    }

    /// Records that request `id` holds `row` now.
    fn index<T: Token>(&mut self, id: i64, row: &Row<'_, T>) {
        let step = self.step;
        let r = self
            .requests
            .get_mut(&id)
            .expect("indexed requests are live");
        let old = (r.length, r.fp);
        r.length = row.end();
        r.last_seen = step;
        self.lru.remove(&(r.tick, id));
        r.tick = step;
        self.lru.insert((step, id));
        if r.key.is_some() {
            let from = row.tokens.len().saturating_sub(TAIL);
            r.tail.clear();
            r.tail
                .extend(row.tokens[from..].iter().map(|t| t.value() as TokenId));
            return;
        }
        r.fp = fingerprint(row.tokens, row.tokens.len());
        let new = (r.length, r.fp);
        if old != new {
            unindex(&mut self.by_fp, old, id);
            self.by_fp.entry(new).or_default().push(id);
        }
    }

    fn stop(&mut self, id: i64, evicted: bool) -> Result<()> {
        let Some(r) = self.requests.remove(&id) else {
            return Ok(());
        };
        self.lru.remove(&(r.tick, id));
        match &r.key {
            Some(k) => {
                self.by_key.remove(k);
            }
            None => unindex(&mut self.by_fp, (r.length, r.fp), id),
        }
        self.stats.stopped += 1;
        self.stats.evicted += u64::from(evicted);
        match self.drafter.stop(&RequestId::Int(id)) {
            Err(Error::UnknownRequest { .. }) => Ok(()), // the drafter's own cap dropped it
            other => other,
        }
    }

    /// Request `id`'s state for the length controller (zeros for an unknown id).
    pub fn row_state(&self, id: i64) -> RowState {
        self.requests
            .get(&id)
            .map_or(RowState::default(), Tracked::state)
    }

    /// Remembers the chain proposed for request `id` and how much of it was drafted (the next
    /// step reads what the engine's output says of it).
    pub fn set_draft(
        &mut self,
        id: i64,
        chain: Vec<TokenId>,
        confidence: Vec<f64>,
        drafted: usize,
    ) {
        if let Some(r) = self.requests.get_mut(&id) {
            r.chain = chain;
            r.confidence = confidence;
            r.drafted = drafted;
            r.chain_state = r.state();
        }
    }

    /// Finishes the requests with these engine ids (unknown ones are ignored).
    pub fn finish(&mut self, keys: &[RequestId]) -> Result<()> {
        for key in keys {
            if let Some(id) = self.by_key.get(key).copied() {
                self.stop(id, false)?;
            }
        }
        Ok(())
    }

    /// Finishes every live request.
    pub fn finish_all(&mut self) -> Result<()> {
        let ids: Vec<i64> = self.requests.keys().copied().collect();
        for id in ids {
            self.stop(id, false)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::{NgramConfig, NgramDrafter};
    use crate::session::LengthConfig;

    #[test]
    fn a_row_state_follows_the_text_fed_so_far() {
        let drafter = Arc::new(NgramDrafter::new(NgramConfig::default()).unwrap());
        let mut tracker = Tracker::new(drafter, 8, 4, 4);
        let mut length = DraftLength::new(LengthConfig::new(4)).unwrap();
        let keys = [RequestId::Int(7)];
        let text: Vec<i32> = (0..24).chain(0..9).chain([99]).collect();
        // a prompt of 24 new tokens, then 9 that repeat its start, then one new token
        for (end, matched) in [(24, 0), (27, 2), (33, 8), (34, 0)] {
            let row = Row {
                tokens: &text[..end],
                offset: 0,
            };
            let (seen, ..) = tracker
                .observe(Some(&keys), &[row], &[1], &mut length)
                .unwrap();
            let id = seen[0].as_ref().unwrap().id;
            assert_eq!(tracker.row_state(id).matched, matched, "at {end} tokens");
        }
        assert_eq!(tracker.row_state(12345), RowState::default());
    }
}
