//! The suite file: what "working" means for one LiteLLM deployment.
//!
//! A suite names the Kubernetes objects of the deployment (DESIGN.md) and how much of it must be
//! healthy. Every field has the default of the reference deployment, so `version: 1` alone is a
//! complete suite; `null` switches an optional part off. Loading is `read(path)` then
//! `parse(&str)`, so parsing is tested without disk, and every error names the file, the line
//! and the field.

mod model;
mod secrets;
mod validate;

pub use model::*;
pub use secrets::SecretUse;

use std::path::{Path, PathBuf};

/// The suite format this smokecheck reads.
pub const VERSION: u32 = 1;

/// The built-in default suite, so the binary works from any directory (and in the image).
pub const BUILTIN_SUITE: &str = include_str!("../../suites/litellm.yaml");

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("reading suite {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `field` is the dotted path of the offending field, empty at the top level.
    #[error("{origin}:{line}:{column}: {field}{message}", field = field_prefix(.field))]
    Invalid {
        origin: String,
        line: u64,
        column: u64,
        field: String,
        message: String,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// Whether `ns` can name a namespace (what `--namespace` and a fleet file's `namespace` accept).
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Reads and parses the suite at `path`.
pub fn read(path: &Path) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses a suite; `origin` names where the text came from in error messages.
pub fn parse(text: &str, origin: &str) -> Result<Suite, SuiteError> {
    let suite: Suite = deserialize(text, origin)?;
    suite
        .validate()
        .map_err(|(field, message)| invalid_at(text, origin, field, message))?;
    Ok(suite)
}

/// Deserializes YAML `text` into `T`; an error names `origin`, the line, the column and the
/// field. The suite's loader and the fleet file's (crate::fleet) share it, so both say
/// `file:line:col: field: ...` the same way.
pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, SuiteError> {
    let mut field = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|err| {
            field = escape_controls(&err.path().to_string());
            err.into_inner()
        })
    });
    parsed.map_err(|err| {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        SuiteError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            field: field.clone(),
            message: plain_message(&err),
        }
    })
}

/// A semantic error (found after parsing) at the dotted `field`, located in `text` as well as
/// it can be.
pub(crate) fn invalid_at(text: &str, origin: &str, field: String, message: String) -> SuiteError {
    let (line, column) = locate(text, &field);
    SuiteError::Invalid {
        origin: origin.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// A field path on one line: a quoted YAML key can hold line breaks and terminal escapes, shown
/// escaped as serde shows the key in its message (`a\nb\u{1b}[2J`).
fn escape_controls(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// serde-saphyr renders a source snippet and the location into its message; our error carries
/// both as fields already, so keep only the first line of the message itself.
fn plain_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    // "error: line 3 column 5: unknown field ..." → "unknown field ..."
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((prefix, rest)) if prefix.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    }
}

/// Best-effort line of a validated field (`litellm.pods.selector`): the first line, after the
/// parents' lines, whose key is the last path segment. Semantic errors come after parsing, when
/// serde's locations are gone.
fn locate(text: &str, field: &str) -> (u64, u64) {
    let mut from = 0usize;
    let mut found = (1, 1);
    let lines: Vec<&str> = text.lines().collect();
    for segment in field.split('.') {
        let key = segment.split('[').next().unwrap_or(segment);
        if key.is_empty() {
            continue;
        }
        if let Some((idx, line)) = lines.iter().enumerate().skip(from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:"))
        }) {
            from = idx + 1;
            let column = line.len() - line.trim_start().len() + 1;
            found = (idx as u64 + 1, column as u64);
        }
    }
    found
}

/// The suite format's JSON Schema (`smokecheck schema`; published as suites/schema.json).
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(Suite);
    schema.insert(
        "title".into(),
        serde_json::Value::from(format!("smokecheck suite, version {VERSION}")),
    );
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests;
