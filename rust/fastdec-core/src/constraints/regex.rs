//! Regular-expression constraints on the decoded bytes, through a DFA built ahead of time by
//! `regex-automata` (the `regex` crate's engine).
//!
//! The DFA is anchored at the start of the generated text and built with `MatchKind::All`, so a
//! state records every way the text so far can still continue: the text is a *viable prefix*
//! iff its state is not the dead state, and *complete* iff the end-of-input transition from its
//! state is a match. (Leftmost-first semantics would kill `ab` under `a|ab` once `a` matched.)
//! A token is allowed iff walking its bytes keeps the state alive; an end-of-sequence token iff
//! the text is complete. Patterns are UTF-8 aware (`.` is one code point) but run over bytes, so
//! a token that ends inside a code point is judged correctly.
//!
//! A sequence's state is one `u32`: cloning is a copy, rollback is keeping the old one.

use std::sync::{Arc, Mutex, PoisonError};

use regex_automata::{
    dfa::{dense, Automaton, StartKind},
    nfa::thompson,
    util::{primitives::StateID, start},
    Anchored, MatchKind,
};

use super::vocab::TokenVocab;
use crate::{Error, Result, TokenId};

/// Upper bound on the DFA's memory; a pattern that needs more is rejected instead of exhausting
/// memory (determinisation can blow up exponentially).
pub const DFA_SIZE_LIMIT: usize = 256 << 20;

/// Default memory for cached full masks (see [`RegexConstraint::with_mask_cache`]).
pub const MASK_CACHE_BYTES: usize = 64 << 20;

/// A compiled regex constraint over one vocabulary.
#[derive(Clone)]
pub struct RegexConstraint {
    dfa: Arc<dense::DFA<Vec<u32>>>,
    vocab: Arc<TokenVocab>,
    start: u32,
    max_state: u32,
    live: Vec<bool>, // by state index (id >> stride2): some continuation still matches
    pattern: String,
    masks: Arc<MaskCache>, // shared by clones
}

/// The full masks of recently used DFA states. A mask is a pure function of the state, and
/// decoding revisits the same states (every request under one pattern starts from the same
/// few), so a walk of the token trie (up to ~0.7 ms on a 49k vocabulary) is paid once per
/// state. Bounded by entry count (`bytes / mask size`); the least recently used entry goes
/// first.
struct MaskCache {
    capacity: usize,
    inner: Mutex<MaskCacheInner>,
}

#[derive(Default)]
struct MaskCacheInner {
    map: rustc_hash::FxHashMap<u32, (Arc<[u32]>, u64)>, // state -> (mask, last use)
    clock: u64,
}

impl MaskCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(MaskCacheInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MaskCacheInner> {
        // The map is consistent at every await-free point; a panic elsewhere cannot break it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, state: u32) -> Option<Arc<[u32]>> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.map.get_mut(&state).map(|(mask, used)| {
            *used = now;
            mask.clone()
        })
    }

    fn insert(&self, state: u32, mask: &[u32]) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&state) {
            // O(entries), on a miss only, which has just paid for a full trie walk.
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&s, _)| s);
            if let Some(s) = oldest {
                inner.map.remove(&s);
            }
        }
        inner.clock += 1;
        let now = inner.clock;
        inner.map.insert(state, (mask.into(), now));
    }

    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

impl std::fmt::Debug for RegexConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegexConstraint")
            .field("pattern", &self.pattern)
            .field("dfa_bytes", &self.dfa.memory_usage())
            .finish_non_exhaustive()
    }
}

impl RegexConstraint {
    /// Compiles `pattern` (regex crate syntax) for `vocab`.
    ///
    /// # Errors
    /// A syntax error (the message shows the pattern with the error's position marked) or a
    /// pattern whose DFA exceeds [`DFA_SIZE_LIMIT`].
    pub fn new(pattern: &str, vocab: Arc<TokenVocab>) -> Result<Self> {
        Self::with_limit(pattern, vocab, DFA_SIZE_LIMIT)
    }

    /// [`RegexConstraint::new`] with another bound on the automata's memory (bytes).
    ///
    /// # Errors
    /// As [`RegexConstraint::new`], or a zero limit.
    pub fn with_limit(pattern: &str, vocab: Arc<TokenVocab>, limit: usize) -> Result<Self> {
        if limit == 0 {
            return Err(Error::arg("max_dfa_bytes", limit, "> 0"));
        }
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .minimize(false)
                    .dfa_size_limit(Some(limit))
                    .determinize_size_limit(Some(limit)),
            )
            .thompson(thompson::Config::new().nfa_size_limit(Some(limit)))
            .build(pattern)
            .map_err(|e| Error::arg("regex", format!("{pattern:?}"), describe(&e)))?;
        let cfg = start::Config::new().anchored(Anchored::Yes);
        let start = dfa
            .start_state(&cfg)
            .map_err(|e| Error::arg("regex", format!("{pattern:?}"), e.to_string()))?;
        let (max_state, live) = liveness(&dfa, start);
        let capacity = MASK_CACHE_BYTES / (vocab.len().div_ceil(32) * 4);
        Ok(Self {
            dfa: Arc::new(dfa),
            vocab,
            start: start.as_u32(),
            max_state,
            live,
            pattern: pattern.to_owned(),
            masks: Arc::new(MaskCache::new(capacity)),
        })
    }

    /// This constraint with at most `bytes` of cached full masks (0: no cache), replacing the
    /// default of [`MASK_CACHE_BYTES`].
    #[must_use]
    pub fn with_mask_cache(mut self, bytes: usize) -> Self {
        let capacity = bytes / (self.vocab.len().div_ceil(32) * 4);
        self.masks = Arc::new(MaskCache::new(capacity));
        self
    }

    /// Number of masks in the cache.
    pub fn cached_masks(&self) -> usize {
        self.masks.len()
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The vocabulary the constraint judges tokens of.
    pub fn vocab(&self) -> &Arc<TokenVocab> {
        &self.vocab
    }

    /// The state of the empty text.
    pub fn start(&self) -> u32 {
        self.start
    }

    fn id(state: u32) -> StateID {
        // States only ever come from this DFA; an out-of-range value from a caller reads as
        // dead (checked in `is_live`).
        StateID::new(state as usize).unwrap_or(StateID::ZERO)
    }

    /// Whether `state` is one of this DFA's states (callers may hand back any integer; a bad
    /// one must not index out of the transition table).
    fn valid(&self, state: u32) -> bool {
        state <= self.max_state && (state as usize).is_multiple_of(self.dfa.stride())
    }

    /// Whether the text in `state` can still be extended to a match.
    pub fn is_live(&self, state: u32) -> bool {
        self.valid(state) && self.live[self.index(state)]
    }

    fn index(&self, state: u32) -> usize {
        state as usize >> self.dfa.stride2()
    }

    /// Whether the text in `state` matches the whole pattern.
    pub fn is_complete(&self, state: u32) -> bool {
        self.valid(state)
            && self
                .dfa
                .is_match_state(self.dfa.next_eoi_state(Self::id(state)))
    }

    /// The state after appending `bytes`, or `None` if the text stops being a viable prefix.
    pub fn walk(&self, state: u32, bytes: &[u8]) -> Option<u32> {
        if !self.is_live(state) {
            return None;
        }
        let mut s = Self::id(state);
        for &b in bytes {
            s = self.dfa.next_state(s, b);
            if !self.live[self.index(s.as_u32())] {
                return None;
            }
        }
        Some(s.as_u32())
    }

    /// Whether `token` may follow the text in `state` (end of sequence: iff it is complete).
    pub fn allows(&self, state: u32, token: TokenId) -> bool {
        if self.vocab.is_eos(token) {
            return self.is_complete(state);
        }
        !self.vocab.is_blocked(token) && self.walk(state, self.vocab.token_bytes(token)).is_some()
    }

    /// The state after `token`, or `None` if it is not allowed (an end-of-sequence token keeps
    /// the state: the text is finished).
    pub fn advance(&self, state: u32, token: TokenId) -> Option<u32> {
        if self.vocab.is_eos(token) {
            return self.is_complete(state).then_some(state);
        }
        if self.vocab.is_blocked(token) {
            return None;
        }
        self.walk(state, self.vocab.token_bytes(token))
    }

    /// The full mask for `state`: bit `t % 32` of word `t / 32` set iff token `t` is allowed
    /// (the int32 layout of llguidance, outlines-core and XGrammar). `mask` needs
    /// `ceil(V / 32)` words; it is overwritten.
    ///
    /// # Errors
    /// A mask of the wrong length.
    pub fn fill_mask(&self, state: u32, mask: &mut [u32]) -> Result<()> {
        let v = self.vocab.len();
        let words = v.div_ceil(32);
        if mask.len() != words {
            return Err(Error::LengthMismatch {
                what: "mask",
                expected: words,
                got: mask.len(),
            });
        }
        mask.fill(0);
        if !self.is_live(state) {
            return Ok(());
        }
        if let Some(cached) = self.masks.get(state) {
            mask.copy_from_slice(&cached);
            return Ok(());
        }
        self.walk_mask(state, mask);
        self.masks.insert(state, mask);
        Ok(())
    }

    /// The mask of a live `state` by a walk of the token trie into a zeroed `mask`.
    fn walk_mask(&self, state: u32, mask: &mut [u32]) {
        if self.is_complete(state) {
            for &t in self.vocab.eos_ids() {
                mask[t as usize / 32] |= 1 << (t % 32);
            }
        }
        // Preorder walk of the token trie: one DFA step per trie node, whole subtrees skipped
        // as soon as their prefix is no longer live.
        let trie = self.vocab.trie();
        let mut states = vec![Self::id(state); trie.max_depth + 1];
        let n = trie.byte.len();
        let mut i = 0;
        while i < n {
            let d = trie.depth[i] as usize;
            let next = self.dfa.next_state(states[d - 1], trie.byte[i]);
            if !self.live[self.index(next.as_u32())] {
                i = trie.end[i] as usize;
                continue;
            }
            states[d] = next;
            for &t in &trie.ids[trie.first[i] as usize..trie.first[i + 1] as usize] {
                mask[t as usize / 32] |= 1 << (t % 32);
            }
            i += 1;
        }
    }
}

/// The largest reachable state id and, per state index, whether the state is *live*: some
/// continuation (then the end of input) reaches a match.
///
/// "Not dead" is not enough: a DFA reports matches one byte late, so after `b` under `a?` the
/// state is a (delayed) match state for the empty prefix although the text `b` has no future.
/// Liveness is a backward search from the states whose end-of-input transition matches, over
/// reverse edges of one representative byte per equivalence class (few classes, few edges).
fn liveness(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> (u32, Vec<bool>) {
    let shift = dfa.stride2();
    let reps: Vec<u8> = dfa
        .byte_classes()
        .representatives(..)
        .filter_map(regex_automata::util::alphabet::Unit::as_u8)
        .collect();
    let mut seen = rustc_hash::FxHashSet::default();
    let mut order = vec![start];
    seen.insert(start);
    let mut i = 0;
    while i < order.len() {
        let s = order[i];
        i += 1;
        for &b in &reps {
            let next = dfa.next_state(s, b);
            if seen.insert(next) {
                order.push(next);
            }
        }
    }
    let max_state = order.iter().map(StateID::as_u32).max().unwrap_or(0);
    let n = (max_state as usize >> shift) + 1;
    let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut live = vec![false; n];
    let mut stack = Vec::new();
    for &s in &order {
        let si = s.as_usize() >> shift;
        for &b in &reps {
            reverse[dfa.next_state(s, b).as_usize() >> shift].push(si as u32);
        }
        if dfa.is_match_state(dfa.next_eoi_state(s)) {
            live[si] = true;
            stack.push(si);
        }
    }
    while let Some(si) = stack.pop() {
        for &p in &reverse[si] {
            if !live[p as usize] {
                live[p as usize] = true;
                stack.push(p as usize);
            }
        }
    }
    (max_state, live)
}

/// A build error's message; syntax errors carry regex-syntax's rendering of the pattern with
/// the error's span marked.
fn describe(e: &regex_automata::dfa::dense::BuildError) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Arc<TokenVocab> {
        let toks: Vec<&[u8]> = vec![b"a", b"b", b"ab", b"ba", b"c", b""];
        Arc::new(TokenVocab::new(&toks, &[5], &[5]).unwrap())
    }

    fn walked(rx: &RegexConstraint, state: u32) -> Vec<u32> {
        let mut m = vec![0u32; 1];
        let uncached = rx.clone().with_mask_cache(0);
        uncached.fill_mask(state, &mut m).unwrap();
        assert_eq!(uncached.cached_masks(), 0);
        m
    }

    /// Cached masks equal fresh walks, the cache never exceeds its entry count, and the least
    /// recently used state is the one evicted.
    #[test]
    fn mask_cache_is_exact_bounded_and_lru() {
        let rx = RegexConstraint::new("(ab|ba)*c?", vocab())
            .unwrap()
            .with_mask_cache(2 * 4); // two one-word masks
        let s0 = rx.start();
        let s1 = rx.advance(s0, 0).unwrap(); // "a"
        let s2 = rx.advance(s0, 1).unwrap(); // "b"
        let s3 = rx.advance(s0, 4).unwrap(); // "c"
        let mut m = vec![0u32; 1];
        for (round, &s) in [s0, s1, s0, s2, s3, s0, s1].iter().enumerate() {
            rx.fill_mask(s, &mut m).unwrap();
            assert_eq!(m, walked(&rx, s), "round {round}");
            assert!(rx.cached_masks() <= 2);
        }
        // s0 and s1 are the two most recent: both hit, and s3 was evicted before s1 came back.
        let cache = rx.masks.lock();
        assert!(cache.map.contains_key(&s0) && cache.map.contains_key(&s1));
        assert!(!cache.map.contains_key(&s3));
    }
}
