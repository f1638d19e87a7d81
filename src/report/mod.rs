//! One result model, three renderings: the terminal (live, as checks finish), JUnit XML for CI
//! and a JSON document for scripts. Reporters only render; the only I/O they do is writing
//! their output. Text that came from a server is shown through [`visible`]: on a terminal, a
//! CI page or `kubectl describe`, an escape sequence in a pod log must not act.

pub mod json;
pub mod junit;
pub mod terminal;

use std::borrow::Cow;
use std::time::Duration;

use crate::outcome::{CheckResult, RunReport, Status};

/// Kubernetes keeps at most 4096 bytes of a termination message.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// The one line `kubectl get pod` and Argo CD show for the run: why it failed, or that it
/// passed.
pub fn termination_message(report: &RunReport) -> String {
    let c = report.counts();
    let mut line = if let Some(error) = &report.error {
        format!("smokecheck: nothing could be checked: {error}")
    } else if c.failed == 0 {
        format!(
            "smokecheck: {} checks passed, {} skipped",
            c.passed, c.skipped
        )
    } else {
        let failed: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|r| r.status == Status::Failed)
            .collect();
        let first = failed[0];
        let more = if failed.len() > 1 {
            format!(
                " (and {} more: {})",
                failed.len() - 1,
                failed[1..]
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        format!(
            "smokecheck: {} of {} checks failed: {}: {}{more}",
            c.failed,
            report.checks.len(),
            first.name,
            first.summary
        )
    };
    // `kubectl describe pod` prints it raw: one line, nothing a terminal would act on.
    line = visible(&line.replace('\n', " ")).into_owned();
    if line.len() > TERMINATION_MESSAGE_MAX {
        let mut cut = TERMINATION_MESSAGE_MAX - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// `text` with every character that would act on a terminal (or break XML) made visible: C0
/// controls and DEL as their Unicode control pictures (`ESC` → `␛`, `CR` → `␍`), C1 controls,
/// bidirectional overrides and isolates, line/paragraph separators and noncharacters as
/// `\u{..}` escapes, a tab as spaces. `\n` stays: it is our own line structure, and the
/// renderers indent every line they print.
pub fn visible(text: &str) -> Cow<'_, str> {
    fn acts(c: char) -> bool {
        (c.is_control() && c != '\n')
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{fdd0}'..='\u{fdef}'
            )
            || (c as u32) & 0xfffe == 0xfffe
    }
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("    "),
            '\u{0}'..='\u{1f}' => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'));
            }
            '\u{7f}' => out.push('\u{2421}'),
            c if acts(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Told about each check as it finishes, for live output.
pub trait Progress: Send + Sync {
    fn started(&self, total: usize);
    fn finished(&self, result: &CheckResult);
}

/// Progress for machine formats: nothing live.
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _total: usize) {}
    fn finished(&self, _result: &CheckResult) {}
}

/// `1.234s` / `12ms`: what people read in terminal lines.
pub fn human_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Cause;

    #[test]
    fn escape_sequences_and_overrides_become_visible() {
        assert_eq!(
            visible("a\u{1b}]52;c;eA==\u{7}\u{1b}[2J\rb\u{8}\u{7f}\u{9b}\u{202e}c\u{ffff}"),
            "a␛]52;c;eA==␇␛[2J␍b␈␡\\u{9b}\\u{202e}c\\u{ffff}"
        );
        assert_eq!(visible("one\n\ttwo"), "one\n    two");
        assert!(matches!(visible("plain ünïcode ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_termination_message_is_one_visible_line() {
        let mut report = RunReport::setup_failure(
            None,
            "litellm".into(),
            Cause::Setup,
            "bad\r\n\u{1b}[2Jthing".into(),
        );
        report.error = Some("bad\r\n\u{1b}[2Jthing".into());
        assert_eq!(
            termination_message(&report),
            "smokecheck: nothing could be checked: bad␍ ␛[2Jthing"
        );
    }
}
