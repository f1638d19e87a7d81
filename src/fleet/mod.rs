//! Fleet runs: every cluster of an estate in one command, one report. This module holds the
//! data: the fleet file ([`file`]), the validated [`FleetPlan`] (one [`Plan`] per cluster) and
//! what a fleet run ends with ([`FleetReport`]). Running the plan is [`crate::fanout`]'s,
//! rendering the report [`crate::report::fleet`]'s.
//!
//! Architecture invariant: data only, as [`crate::plan`]: this module imports the plan, the
//! suite and the result model, nothing that runs, so the command line can build a fleet plan
//! and the reporters can read a fleet report without depending on the pipeline.

pub mod file;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::file::{ClusterSpec, FleetError, FleetFile};
use crate::outcome::RunReport;
use crate::plan::{self, KubeSelection, Plan, PlanError};
use crate::suite::Suite;

/// A validated fleet run: one plan per cluster, and how many run at once.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub clusters: Vec<ClusterPlan>,
    /// `--clusters`: how many clusters are checked at once (each with its own checks in flight,
    /// its own connection, port-forwards, timeouts and deadline).
    pub concurrency: usize,
}

/// One cluster of a fleet run.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The cluster's name in reports.
    pub name: String,
    pub plan: Plan,
}

/// What a cluster of the fleet is, before the flags every cluster shares are added: its name,
/// its suite (overrides applied) and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub suite: Suite,
    pub kube: KubeSelection,
}

/// A fleet file whose clusters could not all be planned.
#[derive(Debug, thiserror::Error)]
pub enum FleetPlanError {
    #[error(transparent)]
    File(#[from] FleetError),
    /// A cluster's suite (its path, namespace or aliases).
    #[error("{origin}: cluster {name}")]
    Cluster {
        origin: String,
        name: String,
        #[source]
        source: PlanError,
    },
    /// A flag that does not go with a fleet run, or a `--cluster` the file lacks.
    #[error(transparent)]
    Flag(#[from] PlanError),
}

/// The clusters of the fleet file at `path`: those `selected` (`--cluster`), or all, in the
/// file's order, each with its suite loaded. Paths in the file are relative to it;
/// `kubeconfig` (`--kubeconfig`) is the default of a cluster that names only a context.
pub fn targets(
    path: &Path,
    selected: &[String],
    kubeconfig: Option<&Path>,
) -> Result<Vec<Target>, FleetPlanError> {
    let fleet = file::read(path)?;
    let origin = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new(""));
    for name in selected {
        if !fleet.clusters.iter().any(|c| &c.name == name) {
            let names: Vec<&str> = fleet.clusters.iter().map(|c| c.name.as_str()).collect();
            return Err(PlanError::Flag {
                flag: "--cluster",
                message: format!(
                    "{origin} has no cluster {name:?} (it has {})",
                    names.join(", ")
                ),
            }
            .into());
        }
    }
    fleet
        .clusters
        .iter()
        .filter(|c| selected.is_empty() || selected.contains(&c.name))
        .map(|c| {
            target(c, base, kubeconfig).map_err(|source| FleetPlanError::Cluster {
                origin: origin.clone(),
                name: c.name.clone(),
                source,
            })
        })
        .collect()
}

fn target(c: &ClusterSpec, base: &Path, kubeconfig: Option<&Path>) -> Result<Target, PlanError> {
    let relative = |p: &PathBuf| -> PathBuf {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let suite_path = c.suite.as_ref().map(relative);
    let mut suite = plan::load_suite(suite_path.as_deref(), c.namespace.as_deref())?;
    if let Some(aliases) = &c.aliases {
        suite.litellm.aliases = Some(aliases.clone());
    }
    Ok(Target {
        name: c.name.clone(),
        suite,
        kube: KubeSelection {
            kubeconfig: c
                .kubeconfig
                .as_ref()
                .map(relative)
                .or_else(|| kubeconfig.map(Path::to_path_buf)),
            context: c.context.clone(),
        },
    })
}

/// One cluster's part of a fleet run: its name, the context it was reached through, and its
/// report, exactly a single run's (a run that could not start is its one `smokecheck::setup`
/// entry).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterReport {
    pub name: String,
    pub context: Option<String>,
    pub report: RunReport,
    /// How the cluster ended, for the exit code and the summary.
    pub verdict: Verdict,
}

/// How one cluster of a fleet ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// A check failed.
    Failed,
    /// Nothing could be checked (unreachable API server, bad kubeconfig, a filter that matches
    /// none of its checks): its report is one failed `smokecheck::setup` entry.
    NotChecked,
    /// smokecheck panicked while checking it (a bug).
    Panicked,
}

impl Verdict {
    /// The verdict of a finished run's report.
    pub fn of(report: &RunReport) -> Verdict {
        if report.error.is_some() {
            Verdict::NotChecked
        } else if report.counts().failed > 0 {
            Verdict::Failed
        } else {
            Verdict::Passed
        }
    }
}

/// A whole fleet run, its clusters in the plan's order.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetReport {
    pub clusters: Vec<ClusterReport>,
    pub duration: Duration,
}

/// How many clusters ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterCounts {
    pub passed: usize,
    pub failed: usize,
    pub not_checked: usize,
}

impl FleetReport {
    pub fn counts(&self) -> ClusterCounts {
        let mut c = ClusterCounts::default();
        for cluster in &self.clusters {
            match cluster.verdict {
                Verdict::Passed => c.passed += 1,
                Verdict::Failed | Verdict::Panicked => c.failed += 1,
                Verdict::NotChecked => c.not_checked += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cluster_of_the_example_gets_its_overrides() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/examples/fleet.yaml");
        let targets = targets(&path, &[], Some(Path::new("/default/kubeconfig"))).expect("plans");
        let seen: Vec<(&str, &str, Option<Vec<String>>)> = targets
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.suite.namespace.as_str(),
                    t.suite.litellm.aliases.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("kommune-nord", "litellm", None),
                (
                    "kommune-sued",
                    "litellm-sued",
                    Some(vec!["chat-small".into(), "chat-large".into()])
                ),
                ("labor", "litellm-labor", None),
            ]
        );
        assert!(targets[2].suite.database.is_none(), "the lab's own suite");
        assert_eq!(
            targets[0].kube.kubeconfig.as_deref(),
            Some(Path::new("/default/kubeconfig")),
            "--kubeconfig is the default"
        );
        assert_eq!(
            targets[2].kube.kubeconfig.as_deref(),
            Some(
                path.parent()
                    .expect("dir")
                    .join("fleet/labor.kubeconfig")
                    .as_path()
            ),
            "relative to the fleet file"
        );
    }

    #[test]
    fn a_cluster_selection_must_name_clusters_of_the_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/examples/fleet.yaml");
        let some = targets(&path, &["labor".into()], None).expect("plans");
        assert_eq!(some.len(), 1);
        let err = targets(&path, &["labour".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--cluster: ")
                && err.contains(
                    "has no cluster \"labour\" (it has kommune-nord, kommune-sued, labor)"
                ),
            "{err}"
        );
    }

    #[test]
    fn a_broken_cluster_suite_names_the_fleet_file_and_the_cluster() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("s.yaml"), "version: 1\nnamespce: x\n").expect("write");
        let fleet = dir.path().join("fleet.yaml");
        std::fs::write(
            &fleet,
            "version: 1\nclusters:\n  - name: a\n    context: a\n    suite: s.yaml\n",
        )
        .expect("write");
        let err = targets(&fleet, &[], None).unwrap_err();
        let chain = crate::text::error_chain(&err);
        assert!(
            chain.contains("fleet.yaml: cluster a: ")
                && chain.contains("s.yaml:2:1: namespce: unknown field"),
            "{chain}"
        );
    }
}
