//! Reading engine token rows in place: the token types engines hold, and the fingerprint that
//! recognises a request from its row without reading the whole row.
//!
//! A request's row only grows (vLLM's persistent batch appends what each step emitted), so
//! request `r`, last seen with `length` tokens, is the row whose first `length` tokens are its
//! tokens. Comparing whole prefixes would cost O(context) a row a step; the fingerprint reads
//! the `TAIL` tokens before `length`, the first `HEAD` tokens and a geometric sample of the rest
//! (positions `HEAD`, `2 HEAD`, `4 HEAD`, ...), plus `length` itself: O(log context) a check.
//! Two live requests of the same length that agree on all of these but differ elsewhere would
//! be confused; the cost of that is drafts from the wrong history (the engine verifies every
//! draft, so the output is unchanged), never a wrong token.

use crate::{Error, Result, TokenId, MAX_TOKEN_ID};

/// Tokens before a length that the fingerprint reads in full.
pub const TAIL: usize = 16;
/// Leading tokens the fingerprint reads in full.
pub const HEAD: usize = 8;

/// A token id as an engine stores it (int32 / int64 arrays, or fastdec's own ids).
pub trait Token: Copy + Send + Sync {
    /// The id as a signed integer (invalid ids stay visible: negative or too large).
    fn value(self) -> i64;
}

impl Token for i32 {
    fn value(self) -> i64 {
        i64::from(self)
    }
}

impl Token for i64 {
    fn value(self) -> i64 {
        self
    }
}

impl Token for u32 {
    fn value(self) -> i64 {
        i64::from(self)
    }
}

/// `row` as token ids.
///
/// # Errors
/// [`Error::InvalidValue`] naming the first id outside `0..=MAX_TOKEN_ID`.
pub fn token_ids<T: Token>(row: &[T], what: &'static str) -> Result<Vec<TokenId>> {
    if let Some(index) = row
        .iter()
        .position(|t| !(0..=i64::from(MAX_TOKEN_ID)).contains(&t.value()))
    {
        return Err(Error::InvalidValue {
            what,
            index,
            value: row[index].value().to_string(),
            expected: "token ids must be in 0..=2147483647",
        });
    }
    Ok(row.iter().map(|t| t.value() as TokenId).collect())
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// The fingerprint of `row[..len]` (see the module docs). `len <= row.len()`.
pub fn fingerprint<T: Token>(row: &[T], len: usize) -> u64 {
    let len = len.min(row.len());
    let mut h = mix(0x2545_f491_4f6c_dd1d, len as u64);
    let tail = len.saturating_sub(TAIL);
    for t in &row[tail..len] {
        h = mix(h, t.value() as u64);
    }
    let mut p = 0;
    while p < tail {
        h = mix(h, row[p].value() as u64 ^ ((p as u64) << 40));
        p = if p < HEAD { p + 1 } else { 2 * p };
    }
    // a final avalanche (splitmix64's), so that the low bits a hash map reads are mixed
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_see_length_tail_and_head() {
        let row: Vec<i32> = (0..100).collect();
        let f = fingerprint(&row, 80);
        assert_eq!(f, fingerprint(&row[..80], 80)); // what lies after len is not read
        assert_ne!(f, fingerprint(&row, 79));
        let mut tail = row.clone();
        tail[70] = 7;
        assert_ne!(f, fingerprint(&tail, 80));
        let mut head = row.clone();
        head[3] = 7;
        assert_ne!(f, fingerprint(&head, 80));
        let mut sampled = row.clone();
        sampled[32] = 7;
        assert_ne!(f, fingerprint(&sampled, 80));
        let types: Vec<i64> = (0..100).collect();
        assert_eq!(f, fingerprint(&types, 80));
    }

    #[test]
    fn bad_ids_are_named() {
        let err = token_ids(&[1i64, -3], "tokens").unwrap_err().to_string();
        assert!(err.contains("-3") && err.contains("index 1"), "{err}");
        assert!(token_ids(&[i64::from(MAX_TOKEN_ID) + 1], "tokens").is_err());
    }
}
