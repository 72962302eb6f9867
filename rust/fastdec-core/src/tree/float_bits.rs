//! The 16-bit float element types of the additive mask, as raw bit patterns (a leaf module:
//! `shape` caches mask blocks of them and `mask` writes them).

/// IEEE half-precision bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct F16Bits(pub u16);

/// bfloat16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16Bits(pub u16);
