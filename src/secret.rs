//! Secret values: held, compared and scrubbed, never shown.
//!
//! A [`SecretValue`] has no way to print its value; two values are compared by SHA-256 digest.
//! Every value of every Secret the run reads is registered with the run's [`Redactor`]
//! (`Cluster::get` does it for each Secret it returns), in the forms a server is likely to echo
//! it in: raw, base64, URL-encoded and JSON-escaped. The redactor scrubs those (and anything
//! shaped like a bearer token, an `sk-` key or a password in a connection URL) from text that
//! comes back from a server or a log, before that text reaches any report.
//!
//! Redact first, then cut: a secret cut in half is no longer recognisable, so text from outside
//! is only ever shortened by the redactor's own [`Redactor::cut`], [`Redactor::first_line`],
//! [`Redactor::head`] and [`Redactor::tail`], which redact the whole text before cutting it.
//!
//! What cannot be scrubbed: values shorter than [`MIN_SCRUB_LEN`] bytes (they would blank
//! ordinary words), values the run never read, and forms other than the ones above (a value
//! hashed, split or encoded twice).

use std::fmt;
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, Input, MatchKind};
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
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

/// Values (and forms of values) shorter than this are not scrubbed as plain substrings: a
/// 3-character password would blank every word that contains it. The token patterns still
/// apply to them.
pub const MIN_SCRUB_LEN: usize = 6;

/// What a truncated text ends with.
const ELLIPSIS: char = '…';

/// RFC 3986's unreserved characters stay, everything else is `%XX` (`encodeURIComponent`,
/// Python's `quote(s, safe="")`, Go's `url.QueryEscape` but for the space).
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// As [`URL_COMPONENT`], keeping `/` (Python's `quote(s)` default, URL paths).
const URL_PATH: &AsciiSet = &URL_COMPONENT.remove(b'/');

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
    known: Arc<RwLock<Known>>,
}

/// What the redactor knows; replaced whole on registration, read by every `redact`.
#[derive(Clone, Default)]
struct Known {
    /// Every form of every registered value.
    forms: Arc<Vec<String>>,
    /// One automaton over all forms (leftmost-longest: a value that contains another is
    /// scrubbed whole); `None` until something is registered.
    matcher: Option<Arc<AhoCorasick>>,
    /// The report's own names (namespaces, object and key names, check names): a value found
    /// only inside one of these is left alone, so a database user called `litellm` does not
    /// blank the namespace, and the report stays readable. A value that extends past such a
    /// name is still scrubbed.
    protected: Arc<Vec<String>>,
}

impl Redactor {
    /// Remembers a value (in every form in which it is scrubbed) for all later text.
    pub fn register(&self, value: &SecretValue) {
        self.register_all([value]);
    }

    /// Remembers several values at once (one rebuild of the matcher).
    pub fn register_all<'a>(&self, values: impl IntoIterator<Item = &'a SecretValue>) {
        let new: Vec<String> = values.into_iter().flat_map(|v| forms(&v.bytes)).collect();
        let Ok(mut known) = self.known.write() else {
            return;
        };
        let mut all: Vec<String> = known.forms.as_ref().clone();
        let before = all.len();
        for form in new {
            if !all.contains(&form) {
                all.push(form);
            }
        }
        if all.len() == before {
            return;
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&all)
            .ok()
            .map(Arc::new);
        known.forms = Arc::new(all);
        known.matcher = matcher;
    }

    /// Names the report itself prints (see `Known::protected`).
    pub fn protect<S: Into<String>>(&self, names: impl IntoIterator<Item = S>) {
        let Ok(mut known) = self.known.write() else {
            return;
        };
        let mut all: Vec<String> = known.protected.as_ref().clone();
        for name in names {
            let name = name.into();
            if name.len() >= MIN_SCRUB_LEN && !all.contains(&name) {
                all.push(name);
            }
        }
        known.protected = Arc::new(all);
    }

    /// `text` with every registered value and every token-shaped string replaced by
    /// [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let known = self.known.read().map(|k| k.clone()).unwrap_or_default();
        // Known values first: a value that holds something token-shaped is scrubbed whole.
        let scrubbed = known.scrub(text);
        let tokens = scrub_tokens(&scrubbed);
        if tokens == scrubbed {
            tokens
        } else {
            // What the patterns left can form a registered value again ("<redacted>" is text).
            known.scrub(&tokens)
        }
    }

    /// Redacts `text`, then keeps at most `max_chars` characters of it (a cut ends in `…`).
    pub fn cut(&self, text: &str, max_chars: usize) -> String {
        shorten(&self.redact(text), max_chars)
    }

    /// Redacts `text`, then keeps its first line, trimmed and cut to `max_chars`.
    pub fn first_line(&self, text: &str, max_chars: usize) -> String {
        let clean = self.redact(text);
        shorten(clean.lines().next().unwrap_or_default().trim(), max_chars)
    }

    /// Redacts `text`, then keeps its first `max_lines` lines, each cut to `width`.
    pub fn head(&self, text: &str, max_lines: usize, width: usize) -> String {
        let clean = self.redact(text);
        let lines: Vec<&str> = clean.lines().take(max_lines).collect();
        lines
            .iter()
            .map(|l| shorten(l, width))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Redacts `text`, then keeps its last `max_lines` lines, each cut to `width`.
    pub fn tail(&self, text: &str, max_lines: usize, width: usize) -> String {
        let clean = self.redact(text);
        let lines: Vec<&str> = clean.lines().collect();
        let start = lines.len().saturating_sub(max_lines);
        lines[start..]
            .iter()
            .map(|l| shorten(l, width))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Known {
    /// `text` without the registered values. A scrubbed value next to text can form another
    /// value ("<redacted>" is text too): a few passes settle it.
    fn scrub(&self, text: &str) -> String {
        let Some(matcher) = &self.matcher else {
            return text.to_string();
        };
        let mut out = scrub(text, matcher, &self.protected);
        for _ in 0..3 {
            let again = scrub(&out, matcher, &self.protected);
            if again == out {
                break;
            }
            out = again;
        }
        out
    }
}

/// `text` with bearer tokens, `sk-` keys and passwords in connection URLs replaced.
fn scrub_tokens(text: &str) -> String {
    let mut out = text.to_string();
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

/// One pass of the known values over `text`.
fn scrub(text: &str, matcher: &AhoCorasick, protected: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while from < text.len() {
        let Some(m) = matcher.find(Input::new(text).span(from..text.len())) else {
            break;
        };
        if inside_protected(text.as_bytes(), m.start(), m.end(), protected) {
            // Look again one byte on: another value may start inside this one.
            from = m.start() + 1;
            continue;
        }
        // Patterns are valid UTF-8, so a match starts and ends on character boundaries.
        out.push_str(&text[copied..m.start()]);
        out.push_str(REDACTED);
        copied = m.end();
        from = m.end();
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether `text[start..end]` lies inside an occurrence of a protected name.
fn inside_protected(text: &[u8], start: usize, end: usize, protected: &[String]) -> bool {
    protected.iter().any(|name| {
        let n = name.len();
        if n < end - start {
            return false;
        }
        // An occurrence covering the match starts in end-n ..= start.
        let lo = end.saturating_sub(n);
        let hi = (start + n).min(text.len());
        hi > lo && text[lo..hi].windows(n).any(|w| w == name.as_bytes())
    })
}

/// The forms a value is scrubbed in: raw text (and, for a multi-line value such as a PEM key,
/// each line), base64 (standard and URL-safe, padded or not, of the value with and without its
/// trailing newline), URL-encoded (component, path and form flavours) and JSON-escaped (as
/// serde_json and as Python's `json.dumps` write it). Forms shorter than [`MIN_SCRUB_LEN`] are
/// left out, and so is everything of a value whose trimmed length is.
fn forms(bytes: &[u8]) -> Vec<String> {
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < MIN_SCRUB_LEN {
        return Vec::new();
    }
    let mut out = Vec::new();
    for b in [bytes, trimmed] {
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            out.push(engine.encode(b));
        }
    }
    let component = percent_encode(trimmed, URL_COMPONENT).to_string();
    out.push(component.replace("%20", "+"));
    out.push(component);
    out.push(percent_encode(trimmed, URL_PATH).to_string());
    if let Ok(text) = std::str::from_utf8(trimmed) {
        out.push(text.to_string());
        if text.contains('\n') {
            out.extend(text.lines().map(|l| l.trim().to_string()));
        }
        let json = serde_json::to_string(text).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or_default();
        out.push(ascii_json(json));
        out.push(json.to_string());
    }
    out.retain(|f| f.len() >= MIN_SCRUB_LEN);
    out.sort();
    out.dedup();
    out
}

/// JSON-escaped text with every non-ASCII character as `\uXXXX` (Python's default).
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// At most `max` characters of already-redacted text, never ending inside a [`REDACTED`]
/// marker (`<reda…` would read as damage), with `…` where it was cut.
fn shorten(text: &str, max: usize) -> String {
    let Some((end, _)) = text.char_indices().nth(max) else {
        return text.to_string();
    };
    let end = text
        .match_indices(REDACTED)
        .find(|(at, m)| *at < end && end < at + m.len())
        .map_or(end, |(at, _)| at);
    let mut out = text[..end].to_string();
    out.push(ELLIPSIS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> SecretValue {
        SecretValue::new(s.as_bytes().to_vec())
    }

    fn redactor(values: &[&str]) -> Redactor {
        let r = Redactor::default();
        for v in values {
            r.register(&value(v));
        }
        r
    }

    /// Every 12-character window of `secret` that appears in `text`.
    fn fragments<'a>(secret: &'a str, text: &str) -> Vec<&'a str> {
        (0..=secret.len().saturating_sub(12))
            .map(|i| &secret[i..i + 12])
            .filter(|w| text.contains(w))
            .collect()
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
        let r = redactor(&["pass-word", "pass-word-extended"]);
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
        let r = redactor(&["ab"]);
        assert_eq!(r.redact("table tab"), "table tab");
    }

    #[test]
    fn a_value_is_scrubbed_in_base64_url_and_json_forms() {
        let secret = "p@ss/wörd+\"quoted\"\\ é=&?";
        let r = redactor(&[secret]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let b64_url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let url = percent_encode(secret.as_bytes(), URL_COMPONENT).to_string();
        let json = serde_json::to_string(secret).unwrap_or_default();
        let python_json = r#""p@ss/w\u00f6rd+\"quoted\"\\ \u00e9=&?""#;
        for form in [
            secret.to_string(),
            b64,
            b64_url,
            url.clone(),
            url.replace("%20", "+"),
            json,
            python_json.to_string(),
        ] {
            let text = format!("the server said [{form}] twice: {form}.");
            let out = r.redact(&text);
            assert_eq!(out.matches(REDACTED).count(), 2, "{form} -> {out}");
        }
    }

    #[test]
    fn a_value_with_a_trailing_newline_is_scrubbed_in_base64_both_ways() {
        // `echo secret | kubectl create secret --from-file` stores the newline.
        let r = redactor(&["newline-secret-value\n"]);
        for b in ["newline-secret-value\n", "newline-secret-value"] {
            let encoded = base64::engine::general_purpose::STANDARD.encode(b);
            assert_eq!(r.redact(&encoded), REDACTED, "{b:?}");
        }
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_scrubbed_on_its_own() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n";
        let r = redactor(&[pem]);
        // Only the middle lines, as a log tail cut at a line would show them.
        let out = r.redact("key: BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----");
        assert_eq!(out, "key: <redacted>\n<redacted>");
    }

    #[test]
    fn a_password_straddling_a_cut_is_scrubbed_before_the_cut() {
        let password = "Zq3kT9vW2mXc8LrB5nHy7JdF4gPs6QaE1uKo0VbNwRtYe2MiCx9UzLh3GjDf5SkA";
        assert_eq!(password.len(), 64);
        let r = redactor(&[password]);
        let line = format!("{}postgresql://user:{password}@host", "x".repeat(280));
        let cuts = [
            r.cut(&line, 300),
            r.first_line(&line, 300),
            r.head(&line, 1, 300),
            r.tail(&line, 1, 300),
            r.cut(&line, 290),
            r.cut(&line, 310),
        ];
        for cut in cuts {
            assert!(
                fragments(password, &cut).is_empty(),
                "password fragment in {cut}"
            );
            assert!(!cut.contains("user:Z"), "{cut}");
            assert!(cut.ends_with('…'), "{cut}");
        }
    }

    #[test]
    fn a_cut_never_ends_inside_the_marker() {
        let r = redactor(&["secret-value-1"]);
        let text = format!("{}secret-value-1 tail", "x".repeat(10));
        assert_eq!(r.cut(&text, 14), format!("{}…", "x".repeat(10)));
        assert_eq!(r.cut(&text, 20), format!("{}<redacted>…", "x".repeat(10)));
        assert_eq!(r.cut("short", 14), "short");
    }

    #[test]
    fn tail_keeps_the_last_lines_and_head_the_first() {
        let r = Redactor::default();
        let text = "a\nb\nc\nd";
        assert_eq!(r.tail(text, 2, 300), "c\nd");
        assert_eq!(r.head(text, 2, 300), "a\nb");
        assert_eq!(r.tail(&"y".repeat(400), 1, 300).chars().count(), 301);
    }

    #[test]
    fn a_value_inside_the_reports_own_names_is_left_there_and_scrubbed_elsewhere() {
        let r = redactor(&["llm-app", "litellm"]);
        r.protect(["llm-app-secrets", "litellm", "kubernetes::pods::litellm"]);
        assert_eq!(
            r.redact("kubernetes::pods::litellm: secret llm-app-secrets, user llm-app"),
            "kubernetes::pods::litellm: secret llm-app-secrets, user <redacted>"
        );
        // A value that equals a name the report prints is public: it stays everywhere.
        assert_eq!(r.redact("role litellm"), "role litellm");
    }

    #[test]
    fn a_protected_name_never_shields_a_value_that_extends_past_it() {
        let r = redactor(&["litellm", "tellm-s3cret-pw"]);
        r.protect(["litellm"]);
        assert_eq!(r.redact("litellm-s3cret-pw"), "li<redacted>");
        let r = redactor(&["litellm-s3cret-pw"]);
        r.protect(["litellm"]);
        assert_eq!(r.redact("x litellm-s3cret-pw"), "x <redacted>");
    }

    #[test]
    fn no_registered_value_survives_in_what_scrubbing_leaves() {
        // Contrived values that "<redacted>" itself completes: the invariant the fuzzer
        // checks (no registered value of 6 bytes or more in the output) still holds.
        let r = redactor(&["SECRET-1", "ted>tail-x", "Bearer <redacted>"]);
        for text in ["SECRET-1tail-x", "Authorization: Bearer abcdefghijkl"] {
            let out = r.redact(text);
            for v in ["SECRET-1", "ted>tail-x", "Bearer <redacted>"] {
                assert!(!out.contains(v), "{v:?} in {out:?}");
            }
        }
    }

    #[test]
    fn many_values_share_one_matcher() {
        let r = Redactor::default();
        let values: Vec<SecretValue> = (0..500)
            .map(|i| value(&format!("value-{i:04}-of-many")))
            .collect();
        r.register_all(&values);
        let text = (0..500)
            .map(|i| format!("value-{i:04}-of-many"))
            .collect::<Vec<_>>()
            .join(" ");
        let out = r.redact(&text);
        assert_eq!(out.matches(REDACTED).count(), 500);
        assert!(!out.contains("of-many"), "{out}");
    }
}
