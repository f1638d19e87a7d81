//! What people read: a line per check as it finishes, details indented under failures, and a
//! one-line summary. `pretty` adds colour (owo-colors) and a live progress bar (indicatif) on a
//! terminal; `plain` is the same text without either, for logs (the Argo CD hook).
//!
//! Everything but our own styles goes through [`visible`] before it is printed (check names
//! come from the proxy config's aliases, summaries and details quote logs and servers), and
//! every line of a multi-line text is indented: a server cannot clear the screen, write the
//! clipboard, overwrite a line or print a `PASS` line of its own.

use std::io::Write;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use owo_colors::{OwoColorize, Style};

use super::{human_duration, visible};
use crate::outcome::{CheckResult, RunReport, Status};

/// All colours in one place; plain unless switched on once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Styles {
    pub(super) pass: Style,
    pub(super) fail: Style,
    pub(super) skip: Style,
    pub(super) name: Style,
    pub(super) dim: Style,
    pub(super) hint: Style,
    pub(super) warn: Style,
}

impl Styles {
    pub fn colored() -> Styles {
        Styles {
            pass: Style::new().green().bold(),
            fail: Style::new().red().bold(),
            skip: Style::new().yellow().bold(),
            name: Style::new().bold(),
            dim: Style::new().dimmed(),
            hint: Style::new().cyan(),
            warn: Style::new().yellow().bold(),
        }
    }
}

/// The header line of a run.
pub fn render_header(context: Option<&str>, namespace: &str, checks: usize, s: &Styles) -> String {
    let context = one_line(context.unwrap_or("-"));
    let namespace = one_line(namespace);
    format!(
        "{} {} · context {context} · namespace {namespace} · {checks} checks\n",
        "smokecheck".style(s.name),
        env!("CARGO_PKG_VERSION")
    )
}

/// Lines about how the run reaches the cluster (port-forwards), under the header.
pub fn render_notes(lines: &[String], s: &Styles) -> String {
    lines
        .iter()
        .map(|l| format!("{} {}\n", "·".style(s.dim), one_line(l)))
        .collect()
}

/// One check's block: its line, then (for failures) summary, details and hint, indented; a
/// passed check's warnings as `WARN` lines, each with its hint.
pub fn render_result(r: &CheckResult, s: &Styles) -> String {
    let (label, style) = match r.status {
        Status::Passed if r.is_flaky() => ("FLAKY", s.skip),
        Status::Passed => ("PASS ", s.pass),
        Status::Failed => ("FAIL ", s.fail),
        Status::Skipped => ("SKIP ", s.skip),
    };
    let name = one_line(&r.name);
    let mut out = format!("{} {}", label.style(style), name.style(s.name));
    match r.status {
        Status::Passed => {
            let attempts = if r.attempts > 1 {
                format!(", {} attempts", r.attempts)
            } else {
                String::new()
            };
            out.push_str(&format!(
                " {}",
                format!("({}{attempts})", human_duration(r.duration)).style(s.dim)
            ));
            if !r.summary.is_empty() {
                out.push_str(&format!(" {}", continued(&r.summary)));
            }
            out.push('\n');
            if let Some(d) = &r.details {
                out.push_str(&indent(d, "      ", s.dim));
            }
            for w in &r.warnings {
                out.push_str(&format!(
                    "      {} {}\n",
                    "WARN".style(s.warn),
                    continued(&w.reason)
                ));
                out.push_str(&format!(
                    "           {} {}\n",
                    "hint:".style(s.hint),
                    continued(&w.hint)
                ));
            }
        }
        Status::Skipped => {
            out.push_str(&format!(
                " {}\n",
                continued(r.skip_reason.as_deref().unwrap_or("")).style(s.dim)
            ));
        }
        Status::Failed => {
            let cause = r.cause.map(|c| format!(" [{c}]")).unwrap_or_default();
            let attempts = if r.attempts > 1 {
                format!(", {} attempts", r.attempts)
            } else {
                String::new()
            };
            out.push_str(&format!(
                " {}\n",
                format!("({}{attempts}){cause}", human_duration(r.duration)).style(s.dim)
            ));
            out.push_str(&format!("      {}\n", continued(&r.summary)));
            if let Some(d) = &r.details {
                out.push_str(&indent(d, "      │ ", s.dim));
            }
            if let Some(h) = &r.hint {
                out.push_str(&format!(
                    "      {} {}\n",
                    "hint:".style(s.hint),
                    continued(h)
                ));
            }
        }
    }
    out
}

fn indent(text: &str, prefix: &str, style: Style) -> String {
    text.lines()
        .map(|l| format!("{}{}\n", prefix.style(style), visible(l)))
        .collect()
}

/// A name (a check's, a context's, a pod's), made visible, on one line whatever it holds.
fn one_line(text: &str) -> String {
    visible(text).replace('\n', "\u{2424}")
}

/// A text meant for one line, made visible, its further lines (if a server put some in)
/// indented under it so none can pass for a line of ours.
fn continued(text: &str) -> String {
    visible(text).lines().collect::<Vec<_>>().join("\n      ")
}

/// The closing line.
pub fn render_summary(report: &RunReport, s: &Styles) -> String {
    if let Some(error) = &report.error {
        return format!("{} {}\n", "error:".style(s.fail), continued(error));
    }
    let c = report.counts();
    let flaky = report.checks.iter().filter(|r| r.is_flaky()).count();
    let verdict = if c.failed > 0 {
        "FAILED".style(s.fail).to_string()
    } else {
        "PASSED".style(s.pass).to_string()
    };
    let mut marks = Vec::new();
    if flaky > 0 {
        marks.push(format!("{flaky} flaky"));
    }
    if c.warned > 0 {
        marks.push(format!("{} with warnings", c.warned));
    }
    let flaky = if marks.is_empty() {
        String::new()
    } else {
        format!(" ({})", marks.join(", "))
    };
    format!(
        "\n{verdict} {} passed{flaky}, {} failed, {} skipped in {}\n",
        c.passed,
        c.failed,
        c.skipped,
        human_duration(report.duration)
    )
}

/// Writes to stdout. A reader that went away (`| head -1`) ends the output, never the run: the
/// exit code stays the run's (`print!` would panic on the broken pipe, exit 101).
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Live output to stdout: each result as it arrives, under a progress bar when stdout is a
/// terminal and the format is pretty.
pub struct Terminal {
    styles: Styles,
    /// Whether to show a progress bar once the run starts (a terminal, pretty format).
    progress_bar: bool,
    /// Made when the run starts and the number of checks is known.
    bar: std::sync::OnceLock<ProgressBar>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Terminal {
    pub fn new(styles: Styles, progress_bar: bool) -> Terminal {
        Terminal {
            styles,
            progress_bar,
            bar: std::sync::OnceLock::new(),
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    pub fn styles(&self) -> &Styles {
        &self.styles
    }

    pub fn print(&self, text: &str) {
        match self.bar.get() {
            Some(bar) => bar.suspend(|| self.write(text)),
            None => self.write(text),
        }
    }

    fn write(&self, text: &str) {
        if let Ok(mut out) = self.out.lock() {
            // A closed stdout (`| head`) must not turn into a failure of the run.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }

    /// The run starts with `total` checks: the progress bar appears, where there is one.
    pub fn start(&self, total: usize) {
        if !self.progress_bar {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} checks {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let _ = self.bar.set(bar);
    }

    /// A check is done: its block, printed above the bar.
    pub fn finished(&self, result: &CheckResult) {
        self.print(&render_result(result, &self.styles));
        if let Some(bar) = self.bar.get() {
            bar.inc(1);
            bar.set_message(one_line(&result.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Cause, Layer};

    #[test]
    fn a_server_cannot_print_a_line_of_its_own() {
        let mut r = CheckResult::skipped("e2e::chat::a\nPASS  e2e::chat::b", Layer::E2e, "".into());
        r.status = Status::Failed;
        r.cause = Some(Cause::HttpStatus);
        r.summary = "the proxy answered 500: boom\nPASS  litellm::auth (1ms)".into();
        r.details = Some("line one\r\nPASS  forged\u{1b}[2K".into());
        r.hint = Some("fix it\nPASS  forged".into());
        let out = render_result(&r, &Styles::default());
        for line in out.lines().skip(1) {
            assert!(line.starts_with("      "), "{line:?} in\n{out}");
        }
        assert!(
            out.starts_with("FAIL  e2e::chat::a␤PASS  e2e::chat::b "),
            "{out}"
        );
        assert!(out.contains("│ PASS  forged␛[2K"), "{out}");
    }
}
