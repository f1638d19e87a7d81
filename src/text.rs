//! Small text helpers every layer writes its messages with: an error and its sources on one
//! line, and a byte count as people read it. A leaf: it imports nothing of the crate.

/// The error and its sources on one line, without repeating a cause a wrapper already printed.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A byte count as people read it: `4 MiB`, `1.5 KiB`, `900 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size((8 << 20) + (300 << 10)), "8.3 MiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn a_cause_a_wrapper_already_printed_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading suite x: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "reading suite x: disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("reading suite x")]
        struct Quiet(#[source] std::io::Error);
        let e = Quiet(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&e), "reading suite x: disk on fire");
    }
}
