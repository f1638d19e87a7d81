//! The fleet file: which clusters a fleet run checks, each with how to reach it (a kube context,
//! a kubeconfig) and the suite of its overrides (a suite file, or the built-in suite with its
//! namespace or aliases changed). Versioned YAML with a published JSON Schema
//! (`smokecheck schema fleet`, suites/fleet.schema.json); loading is `read(path)` then
//! `parse(&str)`, and every error names the file, the line and the field, as the suite's do.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::suite::{self, SuiteError};

/// The fleet file format this smokecheck reads.
pub const VERSION: u32 = 1;

/// A fleet file, as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Format version: this smokecheck reads version 1.
    pub version: u32,
    /// The clusters, each checked on its own and reported together.
    pub clusters: Vec<ClusterSpec>,
}

/// One cluster of the estate.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// The cluster's name in reports (`<name>/<layer>` in JUnit): lowercase letters, digits,
    /// `-` and `.`, unique in the file.
    pub name: String,
    /// The kubeconfig context that reaches it [default: the kubeconfig's current context].
    #[serde(default)]
    pub context: Option<String>,
    /// The kubeconfig file, relative to the fleet file [default: `--kubeconfig`, else
    /// KUBECONFIG or ~/.kube/config, as kubectl]. A cluster names a context, a kubeconfig or both.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The suite file of its overrides, relative to the fleet file [default: the built-in
    /// suite].
    #[serde(default)]
    pub suite: Option<PathBuf>,
    /// Overrides the suite's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Overrides the suite's `litellm.aliases`: the model aliases this cluster's proxy must
    /// serve.
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
}

/// Why a fleet file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("reading fleet file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `file:line:col: field: message`, as for suites.
    #[error(transparent)]
    Invalid(SuiteError),
}

/// Reads and parses the fleet file at `path`.
pub fn read(path: &Path) -> Result<FleetFile, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses a fleet file; `origin` names where the text came from in error messages.
pub fn parse(text: &str, origin: &str) -> Result<FleetFile, FleetError> {
    let fleet: FleetFile = suite::deserialize(text, origin).map_err(FleetError::Invalid)?;
    fleet.validate().map_err(|(field, message)| {
        let (line, column) = locate(text, &field);
        FleetError::Invalid(SuiteError::Invalid {
            origin: origin.to_string(),
            line,
            column,
            field,
            message,
        })
    })?;
    Ok(fleet)
}

impl FleetFile {
    /// What serde cannot check: the version, and names that are unique and usable in reports.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.version != VERSION {
            return Err((
                "version".into(),
                format!(
                    "unsupported version {}: this smokecheck reads version {VERSION}",
                    self.version
                ),
            ));
        }
        if self.clusters.is_empty() {
            return Err((
                "clusters".into(),
                "a fleet needs at least one cluster".into(),
            ));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            let at = |field: &str| format!("clusters[{i}].{field}");
            if !valid_name(&c.name) {
                return Err((
                    at("name"),
                    format!(
                        "{:?} is not a cluster name: use lowercase letters, digits, '-' and '.', starting with a letter or digit",
                        c.name
                    ),
                ));
            }
            if let Some(first) = self.clusters[..i].iter().position(|o| o.name == c.name) {
                return Err((
                    at("name"),
                    format!("{:?} is also the name of clusters[{first}]", c.name),
                ));
            }
            if c.context.is_none() && c.kubeconfig.is_none() {
                return Err((
                    at("name"),
                    format!(
                        "cluster {:?} names neither a context nor a kubeconfig: every cluster would be the same one",
                        c.name
                    ),
                ));
            }
            if c.context.as_deref().is_some_and(|x| x.trim().is_empty()) {
                return Err((at("context"), "must not be empty".into()));
            }
            if let Some(ns) = &c.namespace
                && !suite::valid_namespace(ns)
            {
                return Err((
                    at("namespace"),
                    format!("{ns:?} is not a valid namespace name"),
                ));
            }
            if let Some(aliases) = &c.aliases
                && (aliases.is_empty() || aliases.iter().any(|a| a.trim().is_empty()))
            {
                return Err((
                    at("aliases"),
                    "list at least one alias, none empty (leave the field out to read them from the proxy config)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// A cluster name: it stands in JUnit suite and test names, and in file names a CI job may
/// derive from it.
fn valid_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The line and column of `clusters[i].field` (or a top-level field): the i-th item of the
/// `clusters:` list, then its key. Semantic errors come after parsing, when serde's locations
/// are gone.
fn locate(text: &str, field: &str) -> (u64, u64) {
    let lines: Vec<&str> = text.lines().collect();
    let column = |l: &str| (l.len() - l.trim_start().len() + 1) as u64;
    let key_line = |from: usize, to: usize, key: &str| {
        (from..to).find(|&n| {
            lines[n]
                .trim_start()
                .trim_start_matches("- ")
                .starts_with(&format!("{key}:"))
        })
    };
    let Some(rest) = field.strip_prefix("clusters[") else {
        return key_line(0, lines.len(), field)
            .map(|n| (n as u64 + 1, column(lines[n])))
            .unwrap_or((1, 1));
    };
    let (index, key) = match rest.split_once("].") {
        Some((i, k)) => (i.parse::<usize>().unwrap_or(0), k),
        None => (0, ""),
    };
    let Some(list) = key_line(0, lines.len(), "clusters") else {
        return (1, 1);
    };
    // The list's items: lines starting with "- " at the first item's indentation.
    let items: Vec<usize> = {
        let first = (list + 1..lines.len()).find(|&n| lines[n].trim_start().starts_with("- "));
        match first {
            Some(f) => {
                let indent = column(lines[f]);
                (f..lines.len())
                    .filter(|&n| {
                        column(lines[n]) == indent && lines[n].trim_start().starts_with("- ")
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    };
    let Some(&start) = items.get(index) else {
        return (list as u64 + 1, column(lines[list]));
    };
    let end = items.get(index + 1).copied().unwrap_or(lines.len());
    match key_line(start, end, key) {
        Some(n) => {
            let l = lines[n];
            let col = l
                .find(&format!("{key}:"))
                .map_or(column(l), |c| c as u64 + 1);
            (n as u64 + 1, col)
        }
        None => (start as u64 + 1, column(lines[start])),
    }
}

/// The fleet file format's JSON Schema (`smokecheck schema fleet`; published as
/// suites/fleet.schema.json).
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(FleetFile);
    schema.insert(
        "title".into(),
        serde_json::Value::from(format!("smokecheck fleet file, version {VERSION}")),
    );
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "fleet.yaml").unwrap_err().to_string()
    }

    const THREE: &str = "version: 1
clusters:
  - name: north
    context: north-prod
  - name: south
    context: south-prod
    namespace: litellm-south
    aliases: [chat-small]
  - name: lab
    kubeconfig: lab/kubeconfig
    suite: lab/suite.yaml
";

    #[test]
    fn a_fleet_file_names_its_clusters_and_their_overrides() {
        let fleet = parse(THREE, "fleet.yaml").expect("parses");
        let names: Vec<&str> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["north", "south", "lab"]);
        assert_eq!(
            fleet.clusters[1].namespace.as_deref(),
            Some("litellm-south")
        );
        assert_eq!(
            fleet.clusters[1].aliases.as_deref(),
            Some(&["chat-small".to_string()][..])
        );
        assert_eq!(
            fleet.clusters[2].suite.as_deref(),
            Some(Path::new("lab/suite.yaml"))
        );
        assert!(fleet.clusters[2].context.is_none());
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        insta::assert_snapshot!(err(
            "version: 1\nclusters:\n  - name: north\n    contxt: north-prod\n"
        ));
    }

    #[test]
    fn wrong_type_names_file_line_and_field() {
        insta::assert_snapshot!(err(
            "version: 1\nclusters:\n  - name: north\n    context: north\n    aliases: chat-small\n"
        ));
    }

    #[test]
    fn unsupported_version_is_rejected() {
        insta::assert_snapshot!(err("version: 2\nclusters:\n  - name: a\n    context: a\n"));
    }

    #[test]
    fn a_duplicate_name_is_located_at_the_second_cluster() {
        insta::assert_snapshot!(err(
            "version: 1\nclusters:\n  - name: north\n    context: a\n  - context: b\n    name: north\n"
        ));
    }

    #[test]
    fn a_cluster_without_context_or_kubeconfig_is_refused() {
        insta::assert_snapshot!(err(
            "version: 1\nclusters:\n  - name: north\n    context: a\n  - name: south\n"
        ));
    }

    #[test]
    fn bad_names_namespaces_and_aliases_are_refused_where_they_stand() {
        for (text, expected) in [
            (
                "version: 1\nclusters:\n  - name: North_1\n    context: a\n",
                "fleet.yaml:3:5: clusters[0].name: \"North_1\" is not a cluster name",
            ),
            (
                "version: 1\nclusters:\n  - name: a\n    context: a\n    namespace: Lite\n",
                "fleet.yaml:5:5: clusters[0].namespace: \"Lite\" is not a valid namespace name",
            ),
            (
                "version: 1\nclusters:\n  - name: a\n    context: a\n    aliases: []\n",
                "fleet.yaml:5:5: clusters[0].aliases: list at least one alias",
            ),
            (
                "version: 1\nclusters: []\n",
                "fleet.yaml:2:1: clusters: a fleet needs at least one cluster",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(expected), "{e}\nexpected: {expected}");
        }
    }

    #[test]
    fn the_published_schema_is_current() {
        let published = include_str!("../../suites/fleet.schema.json");
        assert_eq!(
            published.trim_end(),
            schema().trim_end(),
            "regenerate it: cargo run -- schema fleet > suites/fleet.schema.json"
        );
        let schema: serde_json::Value = serde_json::from_str(&schema()).expect("json");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["required"],
            serde_json::json!(["version", "clusters"])
        );
    }

    #[test]
    fn the_example_fleet_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/examples/fleet.yaml");
        let fleet = read(&path).expect("ci/examples/fleet.yaml parses");
        assert_eq!(fleet.clusters.len(), 3);
        assert!(fleet.clusters.iter().any(|c| c.suite.is_some()));
        assert!(fleet.clusters.iter().any(|c| c.namespace.is_some()));
        assert!(fleet.clusters.iter().any(|c| c.aliases.is_some()));
    }
}
