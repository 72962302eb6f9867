//! Training-free drafters behind one interface (`Drafter`): per-request lifecycle, stateless
//! proposals for servers without request ids, statistics, and bounded memory.
//!
//! Protocol per request: `start(id, prompt)`, then repeatedly `propose(id, budget)` (a tree whose
//! root is the last token of the sequence) and `accept(id, emitted)` with the tokens the step
//! appended (accepted drafts, then the bonus token); finally `stop(id)`.

mod count_trie;
mod hybrid;
mod ngram;
pub mod persist;
mod recycle;
mod requests;
mod trie;

pub use hybrid::HybridDrafter;
pub use ngram::{NgramConfig, NgramDrafter, NgramMode};
pub use recycle::RecycleDrafter;
pub use requests::{RequestId, Requests};
pub use trie::{TrieConfig, TrieDrafter};

use crate::parallel::MeasuredPool;
use crate::{Error, Result, TokenId, TokenTree};

/// The first entry of a `topk` row that carries no information (see [`Drafter::accept`]);
/// never a valid token id.
pub const NO_TOPK: TokenId = u32::MAX;

/// Counters kept per drafter and per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DraftStats {
    /// Verification steps reported through `accept`.
    pub steps: u64,
    /// Draft tokens proposed (tree nodes minus the root), summed over proposals.
    pub drafted: u64,
    /// Tokens emitted by accepted steps (accepted drafts plus bonus tokens).
    pub emitted: u64,
    /// Nanoseconds spent in `propose`.
    pub propose_ns: u64,
    /// Nanoseconds spent in `accept`.
    pub accept_ns: u64,
}

impl DraftStats {
    /// Mean tokens emitted per step, bonus included (Spec-Bench's "mean accepted tokens").
    pub fn mean_accepted(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.emitted as f64 / self.steps as f64
        }
    }

    /// Counts one proposal of `tree` that started at `t0`.
    pub(crate) fn record_propose(&mut self, tree: &TokenTree, t0: std::time::Instant) {
        self.drafted += tree.num_nodes() as u64 - 1;
        self.propose_ns += t0.elapsed().as_nanos() as u64;
    }

    /// Counts one step that emitted `emitted` tokens, accepted from `t0` on.
    pub(crate) fn record_accept(&mut self, emitted: usize, t0: std::time::Instant) {
        self.steps += 1;
        self.emitted += emitted as u64;
        self.accept_ns += t0.elapsed().as_nanos() as u64;
    }

    pub(crate) fn add(&mut self, other: &DraftStats) {
        self.steps += other.steps;
        self.drafted += other.drafted;
        self.emitted += other.emitted;
        self.propose_ns += other.propose_ns;
        self.accept_ns += other.accept_ns;
    }
}

/// A draft generator. Implementations are thread-safe: every method takes `&self`, and
/// different requests may be served from different threads at once.
pub trait Drafter: Send + Sync {
    /// Registers a request and its prompt (replacing a request with the same id).
    ///
    /// # Errors
    /// Invalid tokens.
    fn start(&self, id: RequestId, prompt: &[TokenId]) -> Result<()>;

    /// A draft tree of at most `budget` nodes (root included) for the request's next tokens.
    ///
    /// # Errors
    /// Unknown request (`KeyError`), a zero budget.
    fn propose(&self, id: &RequestId, budget: usize) -> Result<TokenTree>;

    /// Appends the tokens the last step emitted. `topk` (`[num_nodes, k]` row-major, with `k`)
    /// carries the target's top-k at every verified node, for drafters that learn from it
    /// (see [`Drafter::wants_topk`]).
    ///
    /// The `topk` contract: row `i` belongs to node `i` of the tree this request's last
    /// `propose` returned; columns are best first (as `torch.topk` sorts them), and `k` need not
    /// equal `wants_topk` (a drafter uses the first `min(k, its k)` columns). A row whose first
    /// entry is [`NO_TOPK`] carries no information: its node was not verified (a
    /// [`HybridDrafter`] sends such rows for nodes of a part's tree that fusion pruned away).
    /// Rows of nodes off the accepted path are real data (rejected branches were verified too),
    /// so a caller must not fill them with anything but the target's top-k or `NO_TOPK` rows.
    ///
    /// # Errors
    /// Unknown request, invalid tokens.
    fn accept(
        &self,
        id: &RequestId,
        emitted: &[TokenId],
        topk: Option<(&[TokenId], usize)>,
    ) -> Result<()>;

    /// How many top-k columns this drafter learns from in [`Drafter::accept`] (`None`: it
    /// ignores `topk`, so the caller can skip computing it). Token Recycling returns its `k`, a
    /// hybrid the largest over its parts.
    fn wants_topk(&self) -> Option<usize> {
        None
    }

    /// Proposals for many requests at once (requests have their own locks), one after another or
    /// on rayon's pool as `pool` measured on earlier batches (see [`crate::parallel`]: no fixed
    /// row count is right on every machine). `budgets` has one entry per request.
    ///
    /// # Errors
    /// A length mismatch, or the first failing request's error.
    fn propose_batch(
        &self,
        ids: &[RequestId],
        budgets: &[usize],
        pool: &MeasuredPool,
    ) -> Result<Vec<TokenTree>> {
        let items = zip_budgets(ids, budgets)?;
        pool.map(&items, |&(id, b)| self.propose(id, b))
    }

    /// Stateless proposals for many contexts at once, chosen between a loop and rayon's pool
    /// as in [`Drafter::propose_batch`].
    ///
    /// # Errors
    /// A length mismatch, or the first failing context's error.
    fn propose_for_batch(
        &self,
        contexts: &[Vec<TokenId>],
        budgets: &[usize],
        pool: &MeasuredPool,
    ) -> Result<Vec<TokenTree>> {
        let items = zip_budgets(contexts, budgets)?;
        pool.map(&items, |&(c, b)| self.propose_for(c, b))
    }

    /// Forgets a request (its shared contributions, if any, stay).
    ///
    /// # Errors
    /// Unknown request.
    fn stop(&self, id: &RequestId) -> Result<()>;

    /// A stateless proposal from a whole context (last token = root), for servers that keep no
    /// request ids.
    ///
    /// # Errors
    /// An empty context or a zero budget.
    fn propose_for(&self, context: &[TokenId], budget: usize) -> Result<TokenTree>;

    /// Totals over all requests so far (stopped ones included).
    fn stats(&self) -> DraftStats;

    /// Heap bytes held by the drafter's tables and request states (an estimate from capacities).
    fn memory_bytes(&self) -> usize;

    /// The drafter's kind in state files (`"ngram"`, `"recycle"`, `"trie"`, `"hybrid"`).
    fn kind(&self) -> &'static str;

    /// The state shared across requests (tables, shared tries) as a payload; per-request
    /// state is not saved.
    fn save_state(&self) -> Vec<u8>;

    /// Replaces the shared state with a payload from [`Drafter::save_state`].
    ///
    /// # Errors
    /// A malformed payload or one made by a differently configured drafter.
    fn load_state(&self, payload: &[u8]) -> Result<()>;

    /// The shared state as a framed, versioned, checksummed file (see [`persist`]).
    fn save(&self) -> Vec<u8> {
        persist::frame(self.kind(), &self.save_state())
    }

    /// Loads a file made by [`Drafter::save`].
    ///
    /// # Errors
    /// A foreign, truncated, corrupted or mismatched file.
    fn load(&self, bytes: &[u8]) -> Result<()> {
        self.load_state(persist::unframe(self.kind(), bytes)?)
    }

    /// Writes [`Drafter::save`]'s bytes to the file `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    fn save_file(&self, path: &std::path::Path) -> Result<()> {
        std::fs::write(path, self.save()).map_err(|e| Error::io(path, &e))
    }

    /// Loads the file `path` made by [`Drafter::save_file`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::InFile`] around the error of
    /// [`Drafter::load`] for a foreign, truncated, corrupted or mismatched one.
    fn load_file(&self, path: &std::path::Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
        self.load(&bytes).map_err(|error| Error::InFile {
            path: path.display().to_string(),
            error: Box::new(error),
        })
    }

    /// Counters of one active request.
    ///
    /// # Errors
    /// Unknown request.
    fn request_stats(&self, id: &RequestId) -> Result<DraftStats>;
}

/// `(item, budget)` pairs, or the length mismatch named.
fn zip_budgets<'a, T>(items: &'a [T], budgets: &[usize]) -> Result<Vec<(&'a T, usize)>> {
    if items.len() != budgets.len() {
        return Err(Error::LengthMismatch {
            what: "budgets",
            expected: items.len(),
            got: budgets.len(),
        });
    }
    Ok(items.iter().zip(budgets.iter().copied()).collect())
}
