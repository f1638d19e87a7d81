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
    for value in &parts {
        redactor.register(&SecretValue::new(value.to_vec()));
    }
    let out = redactor.redact(&text);

    // Every replaced run of at least one byte becomes one marker.
    assert!(
        out.len() <= text.len().max(1) * REDACTED.len(),
        "redaction grew {} bytes into {}",
        text.len(),
        out.len()
    );
    let markers = occurrences(&out, REDACTED);
    for value in &parts {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        // Registration trims (Secret data often ends with a newline); the trimmed value is
        // the secret.
        let value = value.trim();
        if value.len() < MIN_SCRUBBED {
            continue;
        }
        // An occurrence that overlaps a marker was made by redaction (a value such as
        // "ted>xyz" right after a scrubbed one), not left over from the text.
        for (start, end) in occurrences(&out, value) {
            assert!(
                markers.iter().any(|&(s, e)| s < end && start < e),
                "a registered value survived redaction at byte {start}"
            );
        }
    }
});

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
