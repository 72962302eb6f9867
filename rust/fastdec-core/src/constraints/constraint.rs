//! The interface every constraint on the decoded text offers ([`Constraint`]), implemented by
//! [`RegexConstraint`] (a DFA; a state is a `u32`) and [`GrammarConstraint`] (llguidance; a
//! state is a parser). Constrained tree pruning and verification
//! ([`super::tree_verify`]) and the bindings are written once against it.
//!
//! A state is a value: [`Constraint::advance`] returns a new one and leaves the given one as it
//! was, so tree nodes may share the state of their parent. Some constraints (llguidance) need
//! `&mut` to *ask* a question of a state (the parser runs forward and rolls back); those
//! methods leave it observably unchanged.

use std::cell::RefCell;
use std::sync::Arc;

use super::awrs::{self, Estimator, MaskFallback, Rng, Sample};
use super::grammar::{GrammarConstraint, GrammarState};
use super::regex::RegexConstraint;
use super::vocab::TokenVocab;
use crate::{Error, Result, TokenId};

/// A constraint the whole decoded text must satisfy.
pub trait Constraint: Send + Sync {
    /// The state of one sequence's text.
    type State: Clone + Send;

    /// The vocabulary the constraint reads tokens in.
    fn vocab(&self) -> &Arc<TokenVocab>;

    /// The state of the empty text.
    fn start(&self) -> Self::State;

    /// Whether the text can still be extended (or ended) validly.
    fn is_live(&self, state: &Self::State) -> bool;

    /// Whether the text is complete (end of sequence is allowed).
    fn is_complete(&self, state: &mut Self::State) -> bool;

    /// Whether `token` may follow the text; the state is unchanged. `token` must be in the
    /// vocabulary (see [`Constraint::check_token`]).
    fn allows_unchecked(&self, state: &mut Self::State, token: TokenId) -> bool;

    /// The state after `token`, or `None` if it is not allowed (an end-of-sequence token keeps
    /// the state: the text is finished). `token` must be in the vocabulary.
    fn advance_unchecked(&self, state: &Self::State, token: TokenId) -> Option<Self::State>;

    /// Writes the allowed-token bitmask (bit `t % 32` of word `t / 32`, `ceil(V / 32)` words).
    ///
    /// # Errors
    /// A mask of the wrong length.
    fn fill_mask(&self, state: &mut Self::State, mask: &mut [u32]) -> Result<()>;

    /// Checks that `token` is in the vocabulary.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] naming the token.
    fn check_token(&self, token: TokenId) -> Result<()> {
        let len = self.vocab().len();
        if (token as usize) < len {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                what: "token",
                index: i64::from(token),
                len,
                of: "tokens in the vocabulary",
            })
        }
    }

    /// Whether `token` may follow the text (end of sequence: iff it is complete; other special
    /// tokens never).
    ///
    /// # Errors
    /// A token outside the vocabulary.
    fn allows(&self, state: &mut Self::State, token: TokenId) -> Result<bool> {
        self.check_token(token)?;
        Ok(self.allows_unchecked(state, token))
    }

    /// The state after `tokens` in order, or `None` as soon as one is not allowed.
    ///
    /// # Errors
    /// A token outside the vocabulary (all are checked first).
    fn advance(&self, state: &Self::State, tokens: &[TokenId]) -> Result<Option<Self::State>> {
        for &t in tokens {
            self.check_token(t)?;
        }
        let mut s = state.clone();
        for &t in tokens {
            match self.advance_unchecked(&s, t) {
                Some(next) => s = next,
                None => return Ok(None),
            }
        }
        Ok(Some(s))
    }

    /// One AWRS step from `logits / temperature` under the constraint. Without weights
    /// ([`Estimator::None`]), after `mask_after` rejections (0: never) the token is drawn
    /// under the full mask instead: the same law, and a bounded cost when the model disagrees
    /// with the constraint ([`awrs::MaskFallback`]).
    ///
    /// # Errors
    /// Logits that are not one per vocabulary entry, or as [`awrs::sample_logits`].
    fn sample(
        &self,
        state: &mut Self::State,
        logits: &[f32],
        temperature: f64,
        estimator: Estimator,
        mask_after: usize,
        rng: &mut Rng,
    ) -> Result<Sample> {
        self.check_row(logits.len(), "logits")?;
        // The check and the mask both read the state mutably, never at the same time.
        let state = RefCell::new(state);
        let mut check = |t: TokenId| self.allows_unchecked(&mut state.borrow_mut(), t);
        // The mask has the vocabulary's length by construction, so filling cannot fail.
        let mut fill = |m: &mut [u32]| drop(self.fill_mask(&mut state.borrow_mut(), m));
        let fallback = (mask_after > 0).then_some(MaskFallback {
            after: mask_after,
            fill: &mut fill,
        });
        awrs::sample_logits_with_mask(logits, temperature, &mut check, fallback, estimator, rng)
    }

    /// One AWRS step from probabilities (need not be normalised) under the constraint.
    ///
    /// # Errors
    /// Probabilities that are not one per vocabulary entry, or as [`awrs::sample`].
    fn sample_probs(
        &self,
        state: &mut Self::State,
        probs: &[f64],
        estimator: Estimator,
        rng: &mut Rng,
    ) -> Result<Sample> {
        self.check_row(probs.len(), "probs")?;
        awrs::sample(
            probs,
            &mut |t| self.allows_unchecked(state, t),
            estimator,
            rng,
        )
    }

    /// Checks that a row of scores has one entry per vocabulary token.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`].
    fn check_row(&self, len: usize, what: &'static str) -> Result<()> {
        let expected = self.vocab().len();
        if len == expected {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                expected,
                got: len,
            })
        }
    }
}

impl Constraint for RegexConstraint {
    type State = u32;

    fn vocab(&self) -> &Arc<TokenVocab> {
        RegexConstraint::vocab(self)
    }

    fn start(&self) -> u32 {
        RegexConstraint::start(self)
    }

    fn is_live(&self, state: &u32) -> bool {
        RegexConstraint::is_live(self, *state)
    }

    fn is_complete(&self, state: &mut u32) -> bool {
        RegexConstraint::is_complete(self, *state)
    }

    fn allows_unchecked(&self, state: &mut u32, token: TokenId) -> bool {
        RegexConstraint::allows(self, *state, token)
    }

    fn advance_unchecked(&self, state: &u32, token: TokenId) -> Option<u32> {
        RegexConstraint::advance(self, *state, token)
    }

    fn fill_mask(&self, state: &mut u32, mask: &mut [u32]) -> Result<()> {
        RegexConstraint::fill_mask(self, *state, mask)
    }
}

impl Constraint for GrammarConstraint {
    type State = GrammarState;

    fn vocab(&self) -> &Arc<TokenVocab> {
        GrammarConstraint::vocab(self)
    }

    fn start(&self) -> GrammarState {
        GrammarConstraint::start(self)
    }

    fn is_live(&self, state: &GrammarState) -> bool {
        GrammarConstraint::is_live(self, state)
    }

    fn is_complete(&self, state: &mut GrammarState) -> bool {
        GrammarConstraint::is_complete(self, state)
    }

    fn allows_unchecked(&self, state: &mut GrammarState, token: TokenId) -> bool {
        // The token was checked by the caller, so the range error cannot occur.
        GrammarConstraint::allows(self, state, token).unwrap_or(false)
    }

    fn advance_unchecked(&self, state: &GrammarState, token: TokenId) -> Option<GrammarState> {
        GrammarConstraint::advance(self, state, &[token]).unwrap_or(None)
    }

    fn fill_mask(&self, state: &mut GrammarState, mask: &mut [u32]) -> Result<()> {
        GrammarConstraint::fill_mask(self, state, mask)
    }
}
