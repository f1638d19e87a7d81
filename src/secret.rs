//! Secret values: held, compared and scrubbed, never shown.
//!
//! A [`SecretValue`] has no way to print its value; two values are compared by SHA-256 digest.
//! Every value the harness reads is registered with the run's [`Redactor`], which scrubs it (and
//! anything shaped like a bearer token or an API key) from text that comes back from a server
//! or a log before that text reaches any report.

use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use regex::Regex;
use sha2::{Digest, Sha256};

/// A secret's value. `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct SecretValue {
    bytes: Vec<u8>,
}

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.iter().all(|b| b.is_ascii_whitespace())
    }

    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.bytes).into()
    }

    /// Equality by digest, so the values themselves are never compared or copied around.
    pub fn same_as(&self, other: &SecretValue) -> bool {
        self.digest() == other.digest()
    }

    /// The value as text, for the few places that must send it (an `Authorization` header);
    /// never for output.
    pub fn expose(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

pub const REDACTED: &str = "<redacted>";

/// Values shorter than this are not scrubbed as plain substrings (a 3-character password
/// would blank every word that contains it); the token patterns still apply.
const MIN_SCRUB_LEN: usize = 6;

static TOKEN_PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        // Authorization headers and bearer tokens.
        r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}",
        // OpenAI/LiteLLM-style keys.
        r"\bsk-[A-Za-z0-9_-]{6,}",
        // Passwords inside connection URLs: scheme://user:password@host.
        r"([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+(@)",
    ]
    .iter()
    .map(|p| Regex::new(p).expect("static pattern"))
    .collect()
});

/// Scrubs known secret values and token-shaped strings from text. Cheap to clone; shared by
/// every check of a run.
#[derive(Clone, Default)]
pub struct Redactor {
    known: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Remembers a value so it is scrubbed from all later text.
    pub fn register(&self, value: &SecretValue) {
        let Some(text) = value.expose() else { return };
        let text = text.trim();
        if text.len() < MIN_SCRUB_LEN {
            return;
        }
        if let Ok(mut known) = self.known.write()
            && !known.iter().any(|k| k == text)
        {
            known.push(text.to_string());
            // Longest first, so a value that contains another is scrubbed whole.
            known.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Ok(known) = self.known.read() {
            for value in known.iter() {
                if out.contains(value.as_str()) {
                    out = out.replace(value.as_str(), REDACTED);
                }
            }
        }
        for (i, re) in TOKEN_PATTERNS.iter().enumerate() {
            out = match i {
                0 => re
                    .replace_all(&out, format!("${{1}}{REDACTED}"))
                    .into_owned(),
                1 => re.replace_all(&out, REDACTED).into_owned(),
                _ => re
                    .replace_all(&out, format!("${{1}}{REDACTED}${{2}}"))
                    .into_owned(),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> SecretValue {
        SecretValue::new(s.as_bytes().to_vec())
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let v = value("hunter2-very-secret");
        assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
        assert_eq!(format!("{v}"), "<redacted>");
    }

    #[test]
    fn equality_is_by_digest() {
        assert!(value("abc-123").same_as(&value("abc-123")));
        assert!(!value("abc-123").same_as(&value("abc-124")));
    }

    #[test]
    fn whitespace_only_value_counts_as_empty() {
        assert!(value("").is_empty());
        assert!(value(" \n").is_empty());
        assert!(!value("x").is_empty());
    }

    #[test]
    fn registered_values_are_scrubbed_longest_first() {
        let r = Redactor::default();
        r.register(&value("pass-word"));
        r.register(&value("pass-word-extended"));
        assert_eq!(
            r.redact("a pass-word-extended b pass-word c"),
            "a <redacted> b <redacted> c"
        );
    }

    #[test]
    fn token_shapes_are_scrubbed_without_registration() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("Authorization: Bearer abcdefghijkl.mnop"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(r.redact("key sk-1234567890abc used"), "key <redacted> used");
        assert_eq!(
            r.redact("postgresql://litellm:s3cr3t!@db:5432/litellm"),
            "postgresql://litellm:<redacted>@db:5432/litellm"
        );
    }

    #[test]
    fn short_values_are_not_scrubbed_as_substrings() {
        let r = Redactor::default();
        r.register(&value("ab"));
        assert_eq!(r.redact("table tab"), "table tab");
    }
}
