//! JSON Schema and context-free grammar constraints through llguidance (Moskal et al.,
//! <https://github.com/guidance-ai/llguidance>): its JSON-schema compiler, Lark front end and
//! Earley parser with a derivative-based lexer. We do not write a schema compiler of our own.
//!
//! A sequence's state is an llguidance [`Matcher`]: checking a token (`validate_tokens`) leaves
//! it unchanged, and advancing clones it first, so a [`GrammarState`] behaves as a value (the
//! clone shares the grammar and the lexer caches; only the parse stacks are copied).

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, InferenceCapabilities, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};

use super::TokenVocab;
use crate::{Error, Result, TokenId};

/// The grammar compiler of one vocabulary: llguidance's token trie and its slicer (which speeds
/// up masks), built once per vocabulary and shared by every grammar over it.
pub struct GrammarCompiler {
    vocab: Arc<TokenVocab>,
    factory: ParserFactory,
    // The ids whose mask bits our rules set (eos iff complete) or clear (blocked), listed once
    // so a mask does not scan the vocabulary for them.
    eos: Vec<TokenId>,
    blocked: Vec<TokenId>,
}

impl std::fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab_size", &self.vocab.len())
            .finish_non_exhaustive()
    }
}

fn grammar_error(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Grammar {
        what,
        message: e.to_string(),
    }
}

impl GrammarCompiler {
    /// A compiler for `vocab`, which needs an end-of-sequence token (a grammar ends with one).
    ///
    /// # Errors
    /// A vocabulary without an eos id, or one llguidance cannot index.
    pub fn new(vocab: Arc<TokenVocab>) -> Result<Self> {
        let n = vocab.len();
        let eos = vocab.eos_ids().to_vec();
        let blocked = (0..n as TokenId)
            .filter(|&t| !vocab.is_eos(t) && vocab.is_blocked(t))
            .collect();
        let &first_eos = eos.first().ok_or_else(|| {
            Error::arg(
                "vocabulary",
                format!("of {n} tokens"),
                "a grammar constraint needs an end-of-sequence token (TokenVocab(eos=...))",
            )
        })?;
        // Special tokens add no text; llguidance marks them with a 0xFF prefix and names them
        // like its Lark syntax for token ids, `<[id]>`.
        let words: Vec<Vec<u8>> = (0..n as TokenId)
            .map(|t| {
                let bytes = vocab.token_bytes(t);
                if bytes.is_empty() || vocab.is_blocked(t) || vocab.is_eos(t) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(format!("<[{t}]>").as_bytes());
                    w
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let info = TokRxInfo::new(n as u32, first_eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let caps = InferenceCapabilities::default();
        let slices = llguidance::earley::SlicedBiasComputer::general_slices();
        let mut factory =
            ParserFactory::new(&env, caps, &slices).map_err(|e| grammar_error("vocabulary", e))?;
        factory.quiet();
        Ok(Self {
            vocab,
            factory,
            eos,
            blocked,
        })
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Arc<TokenVocab> {
        &self.vocab
    }
}

/// A vocabulary's [`GrammarCompiler`], built on first use and shared after: building one indexes
/// the whole vocabulary (~100 ms for 50k tokens), and every grammar over that vocabulary can
/// share it.
#[derive(Debug, Default)]
pub struct LazyGrammarCompiler(OnceLock<Arc<GrammarCompiler>>);

impl LazyGrammarCompiler {
    /// The compiler of `vocab`, built by the first call. Two threads racing may both build
    /// one; either is kept, and both are equal.
    ///
    /// # Errors
    /// As [`GrammarCompiler::new`].
    pub fn get(&self, vocab: &Arc<TokenVocab>) -> Result<Arc<GrammarCompiler>> {
        if let Some(c) = self.0.get() {
            return Ok(c.clone());
        }
        let built = Arc::new(GrammarCompiler::new(vocab.clone())?);
        Ok(self.0.get_or_init(|| built).clone())
    }
}

/// What a grammar constraint was built from (kept for `repr` and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrammarSource {
    /// A JSON Schema, as JSON text.
    JsonSchema(String),
    /// A Lark grammar in llguidance's dialect.
    Lark(String),
}

/// A constraint the whole decoded text must satisfy: a JSON Schema or a Lark grammar.
pub struct GrammarConstraint {
    compiler: Arc<GrammarCompiler>,
    source: GrammarSource,
    start: Matcher,
}

impl std::fmt::Debug for GrammarConstraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarConstraint")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The parse state of one sequence (clone it to branch; see the module docs).
#[derive(Clone)]
pub struct GrammarState(Matcher);

impl std::fmt::Debug for GrammarState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrammarState")
            .field("error", &self.0.get_error())
            .finish()
    }
}

impl GrammarConstraint {
    /// A JSON Schema constraint: the text must be a JSON document valid under `schema`.
    ///
    /// # Errors
    /// Text that is not JSON (the message gives line and column) or a schema llguidance rejects.
    pub fn json_schema(compiler: Arc<GrammarCompiler>, schema: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(schema)
            .map_err(|e| grammar_error("schema", format!("not valid JSON: {e}")))?;
        let grammar = TopLevelGrammar::from_json_schema(value.clone());
        let source = GrammarSource::JsonSchema(schema.to_owned());
        let for_errors = Arc::clone(&compiler);
        Self::build(compiler, grammar, source).map_err(|e| match e {
            Error::Grammar { what, message } => {
                let message = match locate(&for_errors, &value, "", &message) {
                    Some(at) => format!("at {at}: {message}"),
                    None => message,
                };
                Error::Grammar { what, message }
            }
            other => other,
        })
    }

    /// A Lark grammar constraint (llguidance's dialect: `start: ...`, `%json {...}`, regex
    /// terminals `/.../`).
    ///
    /// # Errors
    /// A grammar llguidance rejects (the message names the line).
    pub fn lark(compiler: Arc<GrammarCompiler>, grammar: &str) -> Result<Self> {
        let top = TopLevelGrammar::from_lark(grammar.to_owned());
        Self::build(compiler, top, GrammarSource::Lark(grammar.to_owned()))
    }

    fn build(
        compiler: Arc<GrammarCompiler>,
        grammar: TopLevelGrammar,
        source: GrammarSource,
    ) -> Result<Self> {
        let what = match source {
            GrammarSource::JsonSchema(_) => "schema",
            GrammarSource::Lark(_) => "grammar",
        };
        let parser = compiler
            .factory
            .create_parser(grammar)
            .map_err(|e| grammar_error(what, e))?;
        let start = Matcher::new(Ok(parser));
        if let Some(e) = start.get_error() {
            return Err(grammar_error(what, e));
        }
        Ok(Self {
            compiler,
            source,
            start,
        })
    }

    /// What the constraint was built from.
    pub fn source(&self) -> &GrammarSource {
        &self.source
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Arc<TokenVocab> {
        &self.compiler.vocab
    }

    /// The state of the empty text.
    pub fn start(&self) -> GrammarState {
        GrammarState(self.start.clone())
    }

    fn check_token(&self, token: TokenId) -> Result<()> {
        if (token as usize) < self.vocab().len() {
            Ok(())
        } else {
            Err(Error::IndexOutOfRange {
                what: "token",
                index: i64::from(token),
                len: self.vocab().len(),
                of: "tokens in the vocabulary",
            })
        }
    }

    /// Whether the text matches the whole grammar (end of sequence is allowed).
    pub fn is_complete(&self, state: &mut GrammarState) -> bool {
        state.0.is_accepting().unwrap_or(false)
    }

    /// Whether the text can still be extended (or ended) validly.
    pub fn is_live(&self, state: &GrammarState) -> bool {
        !state.0.is_error()
    }

    /// Whether `token` may follow the text (end of sequence: iff it is complete; other special
    /// tokens never). The state is unchanged.
    ///
    /// # Errors
    /// A token outside the vocabulary.
    pub fn allows(&self, state: &mut GrammarState, token: TokenId) -> Result<bool> {
        self.check_token(token)?;
        Ok(self.allows_unchecked(state, token))
    }

    fn allows_unchecked(&self, state: &mut GrammarState, token: TokenId) -> bool {
        let vocab = self.vocab();
        if vocab.is_eos(token) {
            return self.is_complete(state);
        }
        if vocab.is_blocked(token) || state.0.is_stopped() {
            return false;
        }
        state.0.validate_tokens(&[token]).unwrap_or(0) == 1
    }

    /// The state after `tokens` in order, or `None` as soon as one is not allowed (an
    /// end-of-sequence token keeps the state).
    ///
    /// # Errors
    /// A token outside the vocabulary.
    pub fn advance(
        &self,
        state: &GrammarState,
        tokens: &[TokenId],
    ) -> Result<Option<GrammarState>> {
        for &t in tokens {
            self.check_token(t)?;
        }
        let mut next = state.clone();
        for &t in tokens {
            if self.vocab().is_eos(t) {
                if !self.is_complete(&mut next) {
                    return Ok(None);
                }
                continue;
            }
            if !self.allows_unchecked(&mut next, t) || next.0.consume_token(t).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(next))
    }

    /// The full mask of `state` in the int32 layout (bit `t % 32` of word `t / 32`).
    ///
    /// # Errors
    /// A mask of the wrong length.
    pub fn fill_mask(&self, state: &mut GrammarState, mask: &mut [u32]) -> Result<()> {
        let n = self.vocab().len();
        if mask.len() != n.div_ceil(32) {
            return Err(Error::LengthMismatch {
                what: "mask",
                expected: n.div_ceil(32),
                got: mask.len(),
            });
        }
        mask.fill(0);
        let stopped = state.0.is_stopped();
        if !stopped && !state.0.is_error() {
            if let Ok(vob) = state.0.compute_mask() {
                for (dst, &w) in mask.iter_mut().zip(vob.as_slice()) {
                    *dst = w;
                }
            }
        }
        // Our rules for special tokens override llguidance's: eos iff complete, others never.
        let complete = self.is_complete(state);
        for &t in &self.compiler.blocked {
            mask[(t / 32) as usize] &= !(1u32 << (t % 32));
        }
        for &t in &self.compiler.eos {
            let (word, bit) = ((t / 32) as usize, 1u32 << (t % 32));
            if complete {
                mask[word] |= bit;
            } else {
                mask[word] &= !bit;
            }
        }
        // Bits past the vocabulary stay clear.
        if !n.is_multiple_of(32) {
            if let Some(last) = mask.last_mut() {
                *last &= (1u32 << (n % 32)) - 1;
            }
        }
        Ok(())
    }
}

/// Where in `schema` the compiler's error `message` comes from, as a JSON pointer: the deepest
/// subschema that, compiled alone, fails with the same message (llguidance's messages name the
/// problem but not its place). Subschemas that reference others fail differently alone and are
/// not blamed. `None` if no subschema reproduces it (the root is then the place).
fn locate(
    compiler: &Arc<GrammarCompiler>,
    schema: &serde_json::Value,
    path: &str,
    message: &str,
) -> Option<String> {
    use serde_json::Value;
    let mut children: Vec<(String, &Value)> = Vec::new();
    if let Value::Object(map) = schema {
        for (key, v) in map {
            match (key.as_str(), v) {
                (
                    "properties" | "$defs" | "definitions" | "patternProperties",
                    Value::Object(m),
                ) => {
                    for (name, sub) in m {
                        let name = name.replace('~', "~0").replace('/', "~1");
                        children.push((format!("{path}/{key}/{name}"), sub));
                    }
                }
                ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(items)) => {
                    for (i, sub) in items.iter().enumerate() {
                        children.push((format!("{path}/{key}/{i}"), sub));
                    }
                }
                (
                    "items" | "additionalProperties" | "not" | "contains" | "propertyNames",
                    Value::Object(_),
                ) => children.push((format!("{path}/{key}"), v)),
                _ => {}
            }
        }
    }
    for (at, sub) in children {
        let grammar = TopLevelGrammar::from_json_schema(sub.clone());
        let fails_alike = compiler
            .factory
            .create_parser(grammar)
            .err()
            .is_some_and(|e| e.to_string() == message);
        if fails_alike {
            return Some(locate(compiler, sub, &at, message).unwrap_or(at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Arc<TokenVocab> {
        let toks: Vec<&[u8]> = vec![
            b"", b"{", b"}", b"\"", b"a", b"b", b":", b",", b"1", b"2", b" ", b"\"a\"", b"true",
        ];
        Arc::new(TokenVocab::new(&toks, &[0], &[0]).unwrap())
    }

    fn compiler() -> Arc<GrammarCompiler> {
        Arc::new(GrammarCompiler::new(vocab()).unwrap())
    }

    #[test]
    fn json_schema_object() {
        let schema = r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],
            "additionalProperties":false,"x-guidance":{"whitespace_flexible":false}}"#;
        let c = GrammarConstraint::json_schema(compiler(), schema).unwrap();
        let s = c.start();
        let mut s1 = c
            .advance(&s, &[1, 11, 6])
            .unwrap()
            .expect("{\"a\": allowed");
        assert!(!c.is_complete(&mut s1));
        assert!(c.allows(&mut s1, 8).unwrap());
        assert!(!c.allows(&mut s1, 4).unwrap());
        assert!(!c.allows(&mut s1, 0).unwrap());
        let mut done = c.advance(&s1, &[8, 9, 2]).unwrap().unwrap();
        assert!(c.is_complete(&mut done));
        assert!(c.allows(&mut done, 0).unwrap());
        assert!(c.advance(&s, &[2]).unwrap().is_none());
        // Checking leaves the state unchanged; the mask agrees with the checks.
        let mut words = vec![0u32; 1];
        c.fill_mask(&mut s1, &mut words).unwrap();
        for t in 0..13u32 {
            assert_eq!(
                words[0] >> t & 1 == 1,
                c.allows(&mut s1, t).unwrap(),
                "token {t}"
            );
        }
        assert!(c.allows(&mut s1, 99).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = GrammarConstraint::json_schema(compiler(), "{\"type\": ").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = GrammarConstraint::json_schema(compiler(), r#"{"type": "nope"}"#).unwrap_err();
        assert_eq!(e.to_string(), "invalid schema: Invalid type: nope");
        let nested = r#"{"type": "object", "properties": {"a": {"type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "nope"}]}}}}"#;
        let e = GrammarConstraint::json_schema(compiler(), nested).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid schema: at /properties/a/items/anyOf/1: Invalid type: nope"
        );
        let e = GrammarConstraint::lark(compiler(), "start: foo").unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
        let no_eos = Arc::new(TokenVocab::new(&[b"a"], &[], &[]).unwrap());
        assert!(GrammarCompiler::new(no_eos).is_err());
    }

    #[test]
    fn lark_grammar() {
        let c = GrammarConstraint::lark(compiler(), "start: \"a\"+ \"b\"").unwrap();
        let s = c.start();
        let mut s2 = c.advance(&s, &[4, 4]).unwrap().unwrap();
        assert!(!c.is_complete(&mut s2));
        let mut s3 = c.advance(&s2, &[5]).unwrap().unwrap();
        assert!(c.is_complete(&mut s3));
        assert!(!c.allows(&mut s3, 4).unwrap());
    }
}
