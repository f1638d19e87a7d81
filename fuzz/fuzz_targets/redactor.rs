//! The redactor (`secret::Redactor`): registered secret values never survive redaction, and
//! redaction never panics nor blows the text up.
//!
//! Input: secret values and, last, the text to redact, separated by 0xFF bytes (a byte that
//! neither a registrable value nor the text can hold: both are UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smokecheck::secret::{REDACTED, Redactor, SecretValue};

/// The README's promise: values of at least this many bytes are scrubbed as substrings.
const MIN_SCRUBBED: usize = 6;

fuzz_target!(|data: &[u8]| {
    let mut parts: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let text = String::from_utf8_lossy(parts.pop().unwrap_or_default());
    let redactor = Redactor::default();
    // As a Secret's values are registered: all at once.
    let values: Vec<SecretValue> = parts.iter().map(|v| SecretValue::new(v.to_vec())).collect();
    redactor.register_all(&values);
    let out = redactor.redact(&text);

    // Every replaced run of at least one byte becomes one marker.
    assert!(
        out.len() <= text.len().max(1) * REDACTED.len(),
        "redaction grew {} bytes into {}",
        text.len(),
        out.len()
    );

    // Registration trims whitespace (Secret data often ends with a newline), so the secret is
    // the value without it. Which whitespace is trimmed is the redactor's choice: a value
    // counts when it keeps 6 bytes without any, and must not survive without ASCII whitespace.
    let values: Vec<&str> = parts
        .iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .filter(|v| v.trim().len() >= MIN_SCRUBBED)
        .collect();
    // A value that can match across a marker's edge or inside it ("<redac", "ted>xyz") can
    // rewrite markers already placed, and the pieces can spell another value out of marker and
    // text ("ed>xyz" in "<redacted>ted>xyz"): no byte of the text leaks, but the check below
    // would flag it. Such values (not plausible for a generated key or password) are held only
    // to the bound above. For all others a marker is never touched, so a value in the output
    // either overlaps a marker or was left in the text: a leak.
    if values
        .iter()
        .any(|v| overlaps_marker(v.trim()) || overlaps_marker(v.trim_ascii()))
    {
        return;
    }
    let markers = occurrences(&out, REDACTED);
    for value in values {
        for (start, end) in occurrences(&out, value.trim_ascii()) {
            assert!(
                markers.iter().any(|&(s, e)| s < end && start < e),
                "a registered value survived redaction at byte {start}"
            );
        }
    }
});

/// Whether `value` can match where a marker is: it contains the marker or lies inside it, or
/// one of its ends is the opposite end of the marker.
fn overlaps_marker(value: &str) -> bool {
    value.contains(REDACTED)
        || REDACTED.contains(value)
        || (1..REDACTED.len()).any(|k| {
            value.ends_with(&REDACTED[..k]) || value.starts_with(&REDACTED[REDACTED.len() - k..])
        })
}

/// Byte ranges of every occurrence of `needle` in `haystack`, overlapping ones included.
fn occurrences(haystack: &str, needle: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = haystack[from..].find(needle) {
        let start = from + i;
        found.push((start, start + needle.len()));
        from = start + haystack[start..].chars().next().map_or(1, char::len_utf8);
    }
    found
}
