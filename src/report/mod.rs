//! The consumers of a run: the terminal (live, as checks finish), JUnit XML for CI, a JSON
//! document for scripts and the one-line termination message for `kubectl get pod`. One
//! [`Reporter`] takes the run's events and hands them to the ones the plan's output selects,
//! then writes every report of the run's outcome. Reporters only render; the only I/O they do
//! is writing their output. Text that came from a server is shown through [`visible`]: on a
//! terminal, a CI page or `kubectl describe`, an escape sequence in a pod log must not act.
//!
//! Architecture invariant: reporters read the result model and events; they import neither the
//! runner, the pipeline nor the checks.

mod files;
pub mod fleet;
pub mod json;
pub mod junit;
pub mod metrics;
pub mod terminal;

use std::borrow::Cow;
use std::time::Duration;

pub use self::files::{WriteError, write_termination_message};
use self::terminal::{Styles, Terminal};
use crate::events::{Event, Events};
use crate::outcome::{CheckResult, RunReport, Status};
use crate::plan::{Format, Output};

/// Every report a run writes, from its events and its outcome: live lines on the terminal as
/// checks finish (pretty and plain), then the summary or the JSON document on stdout, the
/// JUnit file and the termination message.
pub struct Reporter {
    output: Output,
    /// The live terminal, from the run's start on (pretty and plain formats).
    terminal: Option<Terminal>,
}

impl Reporter {
    pub fn new(output: Output) -> Reporter {
        Reporter {
            output,
            terminal: None,
        }
    }

    /// Clears what an earlier run left where this run's reports go: its JUnit file is removed
    /// (a killed run must never leave an earlier pass for CI to read) and the termination
    /// message says there is no outcome yet. A JUnit file that cannot be removed is
    /// [`WriteError::fails_the_run`]: CI would read the earlier one.
    pub fn start(&self) -> Vec<WriteError> {
        files::clear(&self.output)
    }

    /// Writes the reports of `report` (a run's, or the one entry of a run that could not
    /// start): the JUnit file, the termination message, and on stdout the JSON document or
    /// (for a run that ran) the summary line. Says what could not be written.
    pub fn finish(&mut self, report: &RunReport) -> Vec<WriteError> {
        // Before a run starts (a setup failure), or in machine formats, the terminal is plain.
        let plain = Terminal::new(Styles::default(), false);
        let terminal = self.terminal.as_ref().unwrap_or(&plain);
        terminal.finish();
        let mut problems = Vec::new();
        if let Some(path) = &self.output.junit
            && let Err(source) = files::write_report(path, &junit::render(report))
        {
            problems.push(WriteError::Junit {
                path: path.clone(),
                source,
            });
        }
        if let Some(path) = &self.output.termination_log
            && let Err(e) = files::write_termination_message(path, &termination_message(report))
        {
            problems.push(e);
        }
        match self.output.format {
            Format::Json => terminal::print_stdout(&json::render(report)),
            Format::Pretty | Format::Plain => {
                if report.error.is_none() {
                    terminal.print(&terminal::render_summary(report, terminal.styles()));
                }
            }
        }
        problems
    }
}

impl Events for Reporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted(start) => {
                if self.output.format == Format::Json {
                    return;
                }
                let styles = if self.output.color {
                    Styles::colored()
                } else {
                    Styles::default()
                };
                let live = Terminal::new(styles, self.output.progress_bar);
                live.print(&terminal::render_header(
                    Some(&start.context),
                    &start.namespace,
                    start.checks,
                    &styles,
                ));
                live.print(&terminal::render_notes(&start.notes, &styles));
                live.start(start.checks);
                self.terminal = Some(live);
            }
            Event::CheckFinished(result) => {
                if let Some(live) = &self.terminal {
                    live.finished(result);
                }
            }
            Event::RunFinished(_) => {
                if let Some(live) = &self.terminal {
                    live.finish();
                }
            }
        }
    }
}

/// What `--list` prints: one name a line, or a JSON array.
pub fn list(names: &[String], format: Format) -> String {
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(names).unwrap_or_default()
        ),
        Format::Pretty | Format::Plain => names.iter().map(|n| format!("{n}\n")).collect(),
    }
}

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
