//! The Kubernetes layer: are the deployment's objects there and healthy? Pods, Services,
//! Secrets, the migration Job, the guardrail wiring and the CloudNativePG cluster.

mod cnpg;
mod guardrail;
pub mod ingress;
mod jobs;
mod pods;
mod secrets;
mod services;

use std::sync::Arc;

use crate::check::Check;
use crate::outcome::Prerequisite;
use crate::secret::Redactor;
use crate::suite::Suite;

pub fn checks(suite: &Suite) -> Vec<Check> {
    let s = Arc::new(suite.clone());
    let ns = suite.namespace.clone();
    let mut out = Vec::new();

    out.push(pods::check("litellm", &ns, &suite.litellm.pods));
    if let Some(db) = &suite.database {
        out.push(pods::check("database", &ns, &db.pods));
    }
    let many_vllm = suite.vllm.len() > 1;
    for v in &suite.vllm {
        if let Some(p) = &v.pods {
            let label = if many_vllm {
                format!("vllm:{}/{}", v.namespace, v.service.name)
            } else {
                "vllm".to_string()
            };
            out.push(pods::check(&label, &v.namespace, p));
        }
    }

    out.push(services::check(&s, &ns, &suite.litellm.service));
    if let Some(db) = &suite.database {
        out.push(services::check(&s, &ns, &db.service));
    }
    for v in &suite.vllm {
        out.push(services::check(&s, &v.namespace, &v.service));
    }

    out.extend(secrets::checks(&s));

    if let Some(job) = &suite.litellm.migration_job {
        out.push(jobs::check(&ns, job));
    }
    if let Some(g) = &suite.litellm.guardrail {
        out.push(guardrail::check(&s, g));
    }
    if let Some(db) = &suite.database {
        out.push(cnpg::check(&ns, db).requires(crate::checks::platform::cnpg_crd()));
    }
    out
}

// The names of this layer's checks, where the checks are built and wherever a prerequisite or
// a hint names one. `object` is as `checks::qualified` writes it: bare in the suite's namespace,
// `namespace/name` elsewhere.

/// `kubernetes::pods::<label>` (`litellm`, `database`, `vllm` or `vllm:<ns>/<svc>`).
pub fn pods_name(label: &str) -> String {
    format!("kubernetes::pods::{label}")
}

/// `kubernetes::services::<object>`.
pub fn services_name(object: &str) -> String {
    format!("kubernetes::services::{object}")
}

/// `kubernetes::secrets::<object>`.
pub fn secrets_name(object: &str) -> String {
    format!("kubernetes::secrets::{object}")
}

/// The key coupling check: `kubernetes::secrets::vllm-api-key`, with `::<ns>/<svc>` for one of
/// several vLLM backends.
pub fn vllm_key_name(backend: Option<(&str, &str)>) -> String {
    match backend {
        Some((ns, svc)) => format!("kubernetes::secrets::vllm-api-key::{ns}/{svc}"),
        None => "kubernetes::secrets::vllm-api-key".to_string(),
    }
}

/// `kubernetes::jobs::<job>`.
pub fn jobs_name(job: &str) -> String {
    format!("kubernetes::jobs::{job}")
}

/// `kubernetes::guardrail::<guardrail_name>`.
pub fn guardrail_name(guardrail: &str) -> String {
    format!("kubernetes::guardrail::{guardrail}")
}

/// `kubernetes::cnpg::<cluster>`.
pub fn cnpg_name(cluster: &str) -> String {
    format!("kubernetes::cnpg::{cluster}")
}

/// Adds the namespace prerequisite every namespaced check has.
fn in_namespace(check: Check, namespace: &str) -> Check {
    check.requires(Prerequisite::Namespace(namespace.to_string()))
}

/// The last `max_lines` lines of a log, each cut to a readable width, for details: redacted
/// first, so a secret straddling a cut is scrubbed whole.
pub(crate) fn excerpt(redactor: &Redactor, text: &str, max_lines: usize) -> String {
    const WIDTH: usize = 300;
    redactor.tail(text, max_lines, WIDTH)
}
