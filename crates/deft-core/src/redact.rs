//! Replacing secret values with `[secret:NAME]` in everything deft records or sends to a
//! model (SPEC §3).
//!
//! Redaction prevents accidents, not attacks: a secret is only in a sandbox when its owner put
//! it there. It still catches the ways a value commonly leaks: whole, split across two writes
//! (the [`StreamRedactor`] holds back a tail that could be the start of a secret), base64 in
//! each of its three alignments, JSON- and URL-escaped, and each line of a multi-line value.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Derived forms shorter than this are not searched: too many innocent matches.
const MIN_DERIVED: usize = 6;

/// The secrets of one user, ready to be found in text.
#[derive(Clone, Default)]
pub struct Redactor {
    automaton: Option<AhoCorasick>,
    replacements: Vec<String>,
    longest: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.replacements.len())
            .finish()
    }
}

impl Redactor {
    /// From secret values by name.
    pub fn new(secrets: &BTreeMap<String, String>) -> Redactor {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        for (name, value) in secrets {
            for pattern in forms(value) {
                if !patterns.contains(&pattern) {
                    patterns.push(pattern);
                    replacements.push(format!("[secret:{name}]"));
                }
            }
        }
        if patterns.is_empty() {
            return Redactor::default();
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("literal patterns always build");
        Redactor {
            automaton: Some(automaton),
            replacements,
            longest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    pub fn redact(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact_bytes(text.as_bytes())).into_owned()
    }

    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.automaton {
            None => bytes.to_vec(),
            Some(automaton) => {
                let mut out = Vec::with_capacity(bytes.len());
                automaton.replace_all_with_bytes(bytes, &mut out, |m, _, out| {
                    out.extend_from_slice(self.replacements[m.pattern().as_usize()].as_bytes());
                    true
                });
                out
            }
        }
    }

    /// The length of the longest form searched for: text split into pieces must overlap by
    /// one less than this, so that no form is missed across a seam.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// The name of the first secret found in `bytes`, in any form this redactor knows.
    pub fn find(&self, bytes: &[u8]) -> Option<&str> {
        let found = self.automaton.as_ref()?.find(bytes)?;
        let replacement = &self.replacements[found.pattern().as_usize()];
        Some(
            replacement
                .strip_prefix("[secret:")
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(replacement),
        )
    }

    /// Redacts every string inside a JSON value.
    pub fn redact_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(text) => Value::String(self.redact(text)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A redactor for output that arrives in pieces.
    pub fn stream(&self) -> StreamRedactor<'_> {
        StreamRedactor {
            redactor: self,
            pending: Vec::new(),
        }
    }
}

/// The value and the forms it commonly takes in output.
fn forms(value: &str) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    if value.is_empty() {
        return forms;
    }
    let mut derived: Vec<String> = Vec::new();
    forms.push(value.as_bytes().to_vec());
    if value.contains('\n') {
        derived.extend(
            value
                .lines()
                .map(|line| line.trim_end_matches('\r').to_owned()),
        );
    }
    let json = serde_json::to_string(value).expect("strings serialize");
    derived.push(json[1..json.len() - 1].to_owned());
    derived.push(percent_encode(value));
    derived.push(percent_encode(value).replace("%20", "+"));
    for alignment in 0..3 {
        let mut padded = vec![0u8; alignment];
        padded.extend_from_slice(value.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            // Keep only the characters that depend on the value alone: skip the group that
            // mixes in the padding, and the last group, which the bytes after it change.
            let skip = if alignment == 0 { 0 } else { 4 };
            let whole_groups = padded.len() / 3;
            let end = whole_groups * 4;
            if end > skip {
                derived.push(encoded[skip..end].to_owned());
            }
        }
    }
    for form in derived {
        if form.len() >= MIN_DERIVED && form != value {
            forms.push(form.into_bytes());
        }
    }
    forms
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Redacts output that arrives in pieces, holding back a tail that may be the start of a
/// secret completed by the next piece.
#[derive(Debug)]
pub struct StreamRedactor<'a> {
    redactor: &'a Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor<'_> {
    /// Takes the next piece; returns what is safe to pass on now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let Some(automaton) = &self.redactor.automaton else {
            return chunk.to_vec();
        };
        let mut buffer = std::mem::take(&mut self.pending);
        buffer.extend_from_slice(chunk);
        // A match that starts before `cut` is wholly inside the buffer (no pattern is longer
        // than `longest`), so everything up to it can be decided now.
        let mut emit_until = buffer.len().saturating_sub(self.redactor.longest - 1);
        let mut out = Vec::with_capacity(buffer.len());
        let mut position = 0;
        for found in automaton.find_iter(&buffer) {
            if found.start() >= emit_until {
                break;
            }
            out.extend_from_slice(&buffer[position..found.start()]);
            out.extend_from_slice(
                self.redactor.replacements[found.pattern().as_usize()].as_bytes(),
            );
            position = found.end();
            emit_until = emit_until.max(found.end());
        }
        if position < emit_until {
            out.extend_from_slice(&buffer[position..emit_until]);
        }
        self.pending = buffer.split_off(emit_until);
        out
    }

    /// The rest, once no more pieces will come.
    pub fn finish(self) -> Vec<u8> {
        self.redactor.redact_bytes(&self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor() -> Redactor {
        Redactor::new(&BTreeMap::from([
            ("API_KEY".to_owned(), "sk-live-4f8a9c1e2b".to_owned()),
            (
                "CERT".to_owned(),
                "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34\n-----END KEY-----".to_owned(),
            ),
            ("PASSWORD".to_owned(), "p@ss w\"rd/1".to_owned()),
        ]))
    }

    fn check(input: &str, expect: &str) {
        assert_eq!(redactor().redact(input), expect, "input {input:?}");
    }

    #[test]
    fn values_and_their_common_forms_are_replaced() {
        check("key=sk-live-4f8a9c1e2b done", "key=[secret:API_KEY] done");
        check(
            &format!("b64={}", STANDARD_NO_PAD.encode("sk-live-4f8a9c1e2b")),
            "b64=[secret:API_KEY]",
        );
        for prefix in ["x", "xy", "xyz"] {
            let encoded = STANDARD_NO_PAD.encode(format!("{prefix}sk-live-4f8a9c1e2b!!"));
            let redacted = redactor().redact(&encoded);
            assert!(
                redacted.contains("[secret:API_KEY]"),
                "alignment {}: {redacted}",
                prefix.len()
            );
        }
        check(
            "{\"pw\": \"p@ss w\\\"rd/1\"}",
            "{\"pw\": \"[secret:PASSWORD]\"}",
        );
        check("url?pw=p%40ss%20w%22rd%2F1", "url?pw=[secret:PASSWORD]");
        check("line: MIIBOgIBAAJBAKj34", "line: [secret:CERT]");
        check("nothing secret here", "nothing secret here");
        assert_eq!(Redactor::new(&BTreeMap::new()).redact("sk-live"), "sk-live");
    }

    #[test]
    fn json_values_are_redacted_throughout() {
        let value = serde_json::json!({"out": ["sk-live-4f8a9c1e2b"], "n": 1});
        assert_eq!(
            redactor().redact_json(&value),
            serde_json::json!({"out": ["[secret:API_KEY]"], "n": 1})
        );
    }

    proptest! {
        /// However output is cut into pieces, the streamed result equals redacting it whole.
        #[test]
        fn streaming_equals_redacting_whole(cuts in prop::collection::vec(0usize..200, 0..12), filler in "[a-z ]{0,40}") {
            let text = format!("{filler}sk-live-4f8a9c1e2b{filler}{}{filler}", STANDARD_NO_PAD.encode("sk-live-4f8a9c1e2b"));
            let redactor = redactor();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.push(0);
            cuts.push(text.len());
            cuts.sort();
            cuts.dedup();
            let mut stream = redactor.stream();
            let mut out = Vec::new();
            for window in cuts.windows(2) {
                out.extend(stream.push(&text.as_bytes()[window[0]..window[1]]));
            }
            out.extend(stream.finish());
            prop_assert_eq!(String::from_utf8(out).unwrap(), redactor.redact(&text));
            prop_assert!(!redactor.redact(&text).contains("sk-live"));
        }
    }
}
