//! The model's vocabulary as the bytes each token adds to the decoded text: what a constraint on
//! the text needs to judge a token. Built on the Python side from a tokenizer
//! (`fastdec.vocab.TokenVocabulary`); special tokens carry no bytes and are never allowed by a
//! constraint, except the end-of-sequence ids, which are allowed exactly when the text so far is
//! complete.

use std::sync::OnceLock;

use crate::{Error, Result, TokenId};

/// The vocabulary's ordinary tokens as a byte trie in preorder: a full mask walks each shared
/// prefix once and skips every subtree whose prefix the constraint already rejects.
#[derive(Debug, Clone, Default)]
pub struct TokenTrie {
    /// Per node: the byte on the edge from its parent, its depth (1 for the root's children),
    /// the node index just past its subtree, and its tokens `ids[first[i]..first[i + 1]]`.
    pub byte: Vec<u8>,
    /// See [`TokenTrie::byte`].
    pub depth: Vec<u32>,
    /// See [`TokenTrie::byte`].
    pub end: Vec<u32>,
    /// See [`TokenTrie::byte`].
    pub first: Vec<u32>,
    /// Token ids grouped by node.
    pub ids: Vec<u32>,
    /// The deepest node's depth.
    pub max_depth: usize,
}

/// Token byte strings, special tokens and end-of-sequence ids of one model.
#[derive(Debug, Clone)]
pub struct TokenVocab {
    bytes: Vec<u8>,
    offsets: Vec<u32>, // token i = bytes[offsets[i]..offsets[i + 1]]
    special: Vec<bool>,
    eos: Vec<bool>,
    eos_ids: Vec<TokenId>,
    trie: OnceLock<TokenTrie>,
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
        let eos_ids = (0..n as TokenId).filter(|&t| eos[t as usize]).collect();
        Ok(Self {
            bytes,
            offsets,
            special,
            eos,
            eos_ids,
            trie: OnceLock::new(),
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

    /// The ordinary tokens (not blocked, not end of sequence) as a trie, built on first use.
    pub fn trie(&self) -> &TokenTrie {
        self.trie.get_or_init(|| {
            let mut order: Vec<u32> = (0..self.len() as u32)
                .filter(|&t| !self.is_blocked(t) && !self.is_eos(t))
                .collect();
            order.sort_by(|&a, &b| self.token_bytes(a).cmp(self.token_bytes(b)));
            let mut trie = TokenTrie::default();
            // Path of open nodes (index per depth) and their bytes.
            let mut path: Vec<usize> = Vec::new();
            let mut prev: &[u8] = &[];
            for &t in &order {
                let bytes = self.token_bytes(t);
                let common = prev.iter().zip(bytes).take_while(|(a, b)| a == b).count();
                while path.len() > common {
                    let node = path.pop().expect("non-empty");
                    trie.end[node] = trie.byte.len() as u32;
                }
                for (d, &b) in bytes.iter().enumerate().skip(common) {
                    path.push(trie.byte.len());
                    trie.byte.push(b);
                    trie.depth.push(d as u32 + 1);
                    trie.end.push(0);
                    trie.first.push(trie.ids.len() as u32);
                }
                // `first` is non-decreasing: tokens go to the node just opened (the last one).
                trie.ids.push(t);
                trie.max_depth = trie.max_depth.max(bytes.len());
                prev = bytes;
            }
            while let Some(node) = path.pop() {
                trie.end[node] = trie.byte.len() as u32;
            }
            trie.first.push(trie.ids.len() as u32);
            trie
        })
    }

    /// The end-of-sequence ids, ascending.
    pub fn eos_ids(&self) -> &[TokenId] {
        &self.eos_ids
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
