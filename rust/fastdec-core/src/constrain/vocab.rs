//! The model's vocabulary as the bytes each token adds to the decoded text: what a constraint on
//! the text needs to judge a token. Built on the Python side from a tokenizer
//! (`fastdec.vocab.TokenVocabulary`); special tokens carry no bytes and are never allowed by a
//! constraint, except the end-of-sequence ids, which are allowed exactly when the text so far is
//! complete.

use crate::{Error, Result, TokenId};

/// Token byte strings, special tokens and end-of-sequence ids of one model.
#[derive(Debug, Clone)]
pub struct TokenVocab {
    bytes: Vec<u8>,
    offsets: Vec<u32>, // token i = bytes[offsets[i]..offsets[i + 1]]
    special: Vec<bool>,
    eos: Vec<bool>,
}

/// The largest vocabulary accepted (the largest model vocabularies are ~262k tokens).
pub const MAX_VOCAB: usize = 1 << 22;

impl TokenVocab {
    /// A vocabulary from each token's bytes; `special` ids (control tokens) and `eos` ids.
    ///
    /// # Errors
    /// An empty or oversized vocabulary, or a special/eos id outside it.
    pub fn new(tokens: &[&[u8]], special: &[TokenId], eos: &[TokenId]) -> Result<Self> {
        if tokens.is_empty() {
            return Err(Error::Empty { what: "vocabulary" });
        }
        if tokens.len() > MAX_VOCAB {
            return Err(Error::arg(
                "vocabulary size",
                tokens.len(),
                format!("at most {MAX_VOCAB} tokens"),
            ));
        }
        let total: usize = tokens.iter().map(|t| t.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(Error::arg("vocabulary bytes", total, "under 4 GiB in all"));
        }
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0);
        for t in tokens {
            bytes.extend_from_slice(t);
            offsets.push(bytes.len() as u32);
        }
        let n = tokens.len();
        let flags = |ids: &[TokenId], what: &'static str| -> Result<Vec<bool>> {
            let mut out = vec![false; n];
            for &id in ids {
                let slot = out.get_mut(id as usize).ok_or(Error::IndexOutOfRange {
                    what,
                    index: i64::from(id),
                    len: n,
                    of: "tokens in the vocabulary",
                })?;
                *slot = true;
            }
            Ok(out)
        };
        let special = flags(special, "special token id")?;
        let eos = flags(eos, "eos token id")?;
        Ok(Self {
            bytes,
            offsets,
            special,
            eos,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.special.len()
    }

    /// Never true (a vocabulary has at least one token); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.special.is_empty()
    }

    /// The bytes of `token` (empty for special tokens and ids outside the vocabulary).
    pub fn token_bytes(&self, token: TokenId) -> &[u8] {
        let i = token as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether `token` is an end-of-sequence id.
    pub fn is_eos(&self, token: TokenId) -> bool {
        self.eos.get(token as usize).copied().unwrap_or(false)
    }

    /// Whether a constraint must never allow `token`: a special token other than end of
    /// sequence, a token without bytes (it would leave the text unchanged forever), or an id
    /// outside the vocabulary.
    pub fn is_blocked(&self, token: TokenId) -> bool {
        let i = token as usize;
        i >= self.len()
            || (!self.eos[i] && (self.special[i] || self.offsets[i] == self.offsets[i + 1]))
    }
}
