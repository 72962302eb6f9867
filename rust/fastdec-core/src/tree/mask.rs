//! Attention-mask outputs of a tree: dense bool, additive float in a requested dtype, and the
//! SGLang-style padded form. All are O(N * depth) ancestor walks over pre-filled rows.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use super::float_bits::{Bf16Bits, F16Bits};
use super::shape::TreeShape;
use super::token_tree::{checked_prefix, TokenTree};
use crate::{Error, Result, TokenId, MAX_NODES};

/// The largest additive mask built (2^28 elements: 1 GiB in float32).
pub const MAX_MASK_ELEMENTS: usize = 1 << 28;

/// Trees up to this size cache their `[N, N]` mask block per dtype (256 KiB in float32).
pub const MASK_CACHE_MAX_NODES: usize = 256;

/// An element type of the additive mask: 0 where visible, the dtype's most negative finite
/// value (`finfo(dtype).min`) where masked.
pub trait MaskValue: Copy + Send + Sync + 'static {
    /// Visible.
    const ZERO: Self;
    /// Masked.
    const MIN: Self;
    #[doc(hidden)]
    fn cache(shape: &TreeShape) -> &OnceLock<Vec<Self>>;
}

impl MaskValue for f32 {
    const ZERO: Self = 0.0;
    const MIN: Self = f32::MIN;
    fn cache(shape: &TreeShape) -> &OnceLock<Vec<Self>> {
        &shape.mask_blocks.f32
    }
}
impl MaskValue for f64 {
    const ZERO: Self = 0.0;
    const MIN: Self = f64::MIN;
    fn cache(shape: &TreeShape) -> &OnceLock<Vec<Self>> {
        &shape.mask_blocks.f64
    }
}
impl MaskValue for F16Bits {
    const ZERO: Self = F16Bits(0);
    const MIN: Self = F16Bits(0xFBFF); // -65504
    fn cache(shape: &TreeShape) -> &OnceLock<Vec<Self>> {
        &shape.mask_blocks.f16
    }
}
impl MaskValue for Bf16Bits {
    const ZERO: Self = Bf16Bits(0);
    const MIN: Self = Bf16Bits(0xFF7F); // -3.3895e38
    fn cache(shape: &TreeShape) -> &OnceLock<Vec<Self>> {
        &shape.mask_blocks.bf16
    }
}

/// Row width `prefix_len + n` of an additive mask, checking that `n * width` neither overflows
/// `usize` nor differs from the output's length.
fn mask_width(prefix_len: usize, n: usize, out_len: usize) -> Result<usize> {
    let (width, len) = prefix_len
        .checked_add(n)
        .and_then(|width| Some((width, n.checked_mul(width)?)))
        .ok_or_else(|| Error::arg("prefix_len", prefix_len, "the mask size overflows usize"))?;
    if out_len != len {
        return Err(Error::LengthMismatch {
            what: "mask output",
            expected: len,
            got: out_len,
        });
    }
    Ok(width)
}

/// Element dtypes of the additive mask. `BFloat16` and `Float16` are returned as raw 16-bit
/// patterns (`u16`), which torch reinterprets with `.view(torch.bfloat16)` / numpy with
/// `.view(np.float16)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskDtype {
    /// IEEE single precision.
    Float32,
    /// IEEE double precision.
    Float64,
    /// IEEE half precision, as bits.
    Float16,
    /// bfloat16, as bits.
    BFloat16,
}

impl MaskDtype {
    /// Parses `float32`/`float64`/`float16`/`bfloat16` (also `f32`, `half`, `torch.float16`, ...).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the unknown dtype.
    pub fn parse(name: &str) -> Result<Self> {
        // torch.float is float32, whereas Python's float (numpy's reading) is float64.
        let name = match name {
            "torch.float" => "float32",
            other => other.strip_prefix("torch.").unwrap_or(other),
        };
        Ok(match name {
            "float32" | "f32" | "single" => MaskDtype::Float32,
            // numpy's reading of Python's `float` (np.dtype(float) is float64)
            "float64" | "f64" | "double" | "float" => MaskDtype::Float64,
            "float16" | "f16" | "half" => MaskDtype::Float16,
            "bfloat16" | "bf16" => MaskDtype::BFloat16,
            _ => {
                return Err(Error::arg(
                    "dtype",
                    name,
                    "one of float32, float64, float16, bfloat16",
                ))
            }
        })
    }

    /// Bit pattern of `finfo(dtype).min` for the 16-bit types (bfloat16's for the others).
    pub fn min_bits16(self) -> u16 {
        match self {
            MaskDtype::Float16 => F16Bits::MIN.0,
            _ => Bf16Bits::MIN.0,
        }
    }
}

/// The SGLang-style fixed-size form of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    /// `[size]` tokens, padded with the pad token.
    pub tokens: Vec<i32>,
    /// `[size, size]` row-major; padded rows see only themselves (no fully masked row, so no NaN).
    pub mask: Vec<bool>,
    /// `[size]` position ids; padded slots get `prefix_len`.
    pub positions: Vec<i32>,
}

impl TokenTree {
    /// Dense ancestor-or-self mask, `[N, N]` row-major: `mask[i][j]` iff `j` is on the path to `i`.
    pub fn ancestor_mask(&self) -> Vec<bool> {
        let n = self.num_nodes();
        let mut out = vec![false; n * n];
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            self.shape.for_each_ancestor(i, |j| row[j] = true);
        }
        out
    }

    /// Writes the additive attention mask `[N, prefix_len + N]` row-major into `out`: `zero`
    /// where visible (every prefix column, and the ancestors-or-self of each node), `min`
    /// elsewhere. This is the 4D-mask block transformers adds to the attention scores.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out` has the wrong size; [`Error::InvalidArgument`] if
    /// `prefix_len` is so large that the mask size overflows `usize`.
    pub fn additive_mask_into<T: Copy>(
        &self,
        prefix_len: usize,
        zero: T,
        min: T,
        out: &mut [T],
    ) -> Result<()> {
        let n = self.num_nodes();
        let width = mask_width(prefix_len, n, out.len())?;
        for (i, row) in out.chunks_exact_mut(width).enumerate() {
            let (prefix, block) = row.split_at_mut(prefix_len);
            prefix.fill(zero);
            block.fill(min);
            self.shape.for_each_ancestor(i, |j| block[j] = zero);
        }
        Ok(())
    }

    /// Fast path of [`TokenTree::additive_mask_into`] for output memory that may be
    /// uninitialised (a freshly allocated numpy array): every element is written. Trees of at
    /// most [`MASK_CACHE_MAX_NODES`] nodes copy rows of a cached `[N, N]` block (shared by all
    /// trees of one template); larger ones walk ancestors.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out` has the wrong size; [`Error::InvalidArgument`] if
    /// `prefix_len` is so large that the mask size overflows `usize`.
    pub fn write_additive_mask<T: MaskValue>(
        &self,
        prefix_len: usize,
        out: &mut [MaybeUninit<T>],
    ) -> Result<()> {
        let n = self.num_nodes();
        let width = mask_width(prefix_len, n, out.len())?;
        if n <= MASK_CACHE_MAX_NODES {
            let block = T::cache(&self.shape).get_or_init(|| {
                let mut b = vec![T::MIN; n * n];
                self.additive_mask_into(0, T::ZERO, T::MIN, &mut b)
                    .expect("sized above");
                b
            });
            for (row, src) in out.chunks_exact_mut(width).zip(block.chunks_exact(n)) {
                let (prefix, tail) = row.split_at_mut(prefix_len);
                for x in prefix.iter_mut() {
                    x.write(T::ZERO);
                }
                for (x, &v) in tail.iter_mut().zip(src) {
                    x.write(v);
                }
            }
        } else {
            for (i, row) in out.chunks_exact_mut(width).enumerate() {
                let (prefix, tail) = row.split_at_mut(prefix_len);
                for x in prefix.iter_mut() {
                    x.write(T::ZERO);
                }
                for x in tail.iter_mut() {
                    x.write(T::MIN);
                }
                self.shape.for_each_ancestor(i, |j| {
                    tail[j].write(T::ZERO);
                });
            }
        }
        Ok(())
    }

    /// Number of elements of the additive mask for `prefix_len`, if it stays within bounds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when positions overflow int32 or the mask would exceed
    /// [`MAX_MASK_ELEMENTS`] elements.
    pub fn additive_mask_len(&self, prefix_len: usize) -> Result<usize> {
        checked_prefix(prefix_len, self.max_depth())?;
        let n = self.num_nodes();
        match n.checked_mul(prefix_len + n) {
            Some(len) if len <= MAX_MASK_ELEMENTS => Ok(len),
            _ => Err(Error::arg(
                "prefix_len",
                prefix_len,
                format!("the [{n}, prefix_len + {n}] mask is too large"),
            )),
        }
    }

    /// The tree padded to `size` slots (the `draft_token_num` form of `SGLang`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `size < N` or `size > MAX_NODES`, or positions overflow.
    pub fn padded(&self, size: usize, pad_token: TokenId, prefix_len: usize) -> Result<Padded> {
        let n = self.num_nodes();
        if size < n || size > MAX_NODES {
            return Err(Error::arg(
                "size",
                size,
                format!("must be in [{n}, {MAX_NODES}] for a tree of {n} nodes"),
            ));
        }
        if pad_token > crate::MAX_TOKEN_ID {
            return Err(Error::arg(
                "pad_id",
                pad_token,
                "token ids must be in [0, 2147483647]",
            ));
        }
        let base = checked_prefix(prefix_len, self.max_depth())?;
        let mut tokens: Vec<i32> = self.tokens.iter().map(|&t| t as i32).collect();
        tokens.resize(size, pad_token as i32);
        let mut positions: Vec<i32> = self.depth().iter().map(|&d| base + d).collect();
        positions.resize(size, base);
        let mut mask = vec![false; size * size];
        for (i, row) in mask.chunks_exact_mut(size).enumerate() {
            if i < n {
                self.shape.for_each_ancestor(i, |j| row[j] = true);
            } else {
                row[i] = true;
            }
        }
        Ok(Padded {
            tokens,
            mask,
            positions,
        })
    }
}
