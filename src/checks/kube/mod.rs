//! The Kubernetes layer: are the deployment's objects there and healthy? Pods, Services,
//! Secrets, the migration Job, the guardrail wiring and the CloudNativePG cluster.

mod cnpg;
mod guardrail;
mod jobs;
mod pods;
mod secrets;
mod services;

use std::sync::Arc;

use crate::check::Check;
use crate::checks::qualified;
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

/// The check name for an object: `kubernetes::<kind>::<name or namespace/name>`.
fn name(suite: &Suite, kind: &str, namespace: &str, object: &str) -> String {
    format!(
        "kubernetes::{kind}::{}",
        qualified(suite, namespace, object)
    )
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
