//! The versioned file format of a drafter's shared state:
//! `b"FASTDEC\0"`, format version (u32 LE), kind length (u8) and kind (ASCII), payload length
//! (u64 LE), payload, FNV-1a 64 checksum of the payload (u64 LE). A truncated, corrupted or
//! foreign file is rejected with a message saying which.

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"FASTDEC\0";
/// Version of the framing and of every payload layout; bump on any change.
pub const FORMAT_VERSION: u32 = 1;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bad(what: impl Into<String>) -> Error {
    Error::arg("state file", "(bytes)", what.into())
}

/// Frames `payload` as a state file of drafter `kind`.
pub fn frame(kind: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&fnv1a(payload).to_le_bytes());
    out
}

/// The payload of a state file of drafter `kind`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a foreign, truncated, corrupted or other-kind file.
pub fn unframe<'a>(kind: &str, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let mut r = Reader(bytes);
    if r.take(8).ok() != Some(&MAGIC[..]) {
        return Err(bad("not a fastdec drafter state file (bad magic)"));
    }
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version}; this fastdec reads version {FORMAT_VERSION}"
        )));
    }
    let n = r.take(1)?[0] as usize;
    let found = r.take(n)?;
    if found != kind.as_bytes() {
        return Err(bad(format!(
            "state of a {:?} drafter, not {kind:?}",
            String::from_utf8_lossy(found)
        )));
    }
    let len = usize::try_from(r.u64()?).map_err(|_| bad("payload length overflows"))?;
    let payload = r.take(len)?;
    if r.u64()? != fnv1a(payload) {
        return Err(bad("checksum mismatch: the file is corrupted"));
    }
    if !r.0.is_empty() {
        return Err(bad("trailing bytes after the checksum"));
    }
    Ok(payload)
}

/// A little-endian cursor whose reads fail (not panic) past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn done(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("payload longer than its contents"))
        }
    }
}
