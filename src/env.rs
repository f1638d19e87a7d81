//! What a run knows before its checks start: the connected cluster, which namespaces exist,
//! and the redactor primed with every secret value the suite names.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;

use crate::check::Failure;
use crate::cluster::{Access, Cluster};
use crate::secret::{Redactor, SecretValue};
use crate::suite::Suite;

/// Whether a namespace exists, as far as the harness could tell.
#[derive(Debug, Clone)]
pub enum NamespaceState {
    Exists,
    Missing,
    /// Reading it failed (e.g. no ClusterRole for namespaces): checks run anyway.
    Unknown(Failure),
}

pub struct Env {
    pub suite: Arc<Suite>,
    pub cluster: Cluster,
    pub redactor: Redactor,
    pub namespaces: BTreeMap<String, NamespaceState>,
}

impl Env {
    /// Reads what every check relies on, once: namespace existence and the suite's secrets (so
    /// their values are scrubbed from any log or answer, whichever check sees it first).
    pub async fn prepare(suite: Arc<Suite>, cluster: Cluster, redactor: Redactor) -> Env {
        let mut namespaces = BTreeMap::new();
        for ns in suite_namespaces(&suite) {
            let api: Api<Namespace> = Api::all(cluster.client.clone());
            let state = match api.get_opt(&ns).await {
                Ok(Some(_)) => NamespaceState::Exists,
                Ok(None) => NamespaceState::Missing,
                Err(e) => NamespaceState::Unknown(
                    Access {
                        verb: "get",
                        resource: "namespaces",
                        group: "",
                        namespace: &ns,
                        name: Some(&ns),
                    }
                    .failure(e),
                ),
            };
            namespaces.insert(ns, state);
        }
        let env = Env {
            suite,
            cluster,
            redactor,
            namespaces,
        };
        for (ns, name, keys) in secret_keys(&env.suite) {
            if let Ok(Some(secret)) = env.cluster.get::<Secret>(&ns, &name).await {
                for key in keys {
                    if let Some(v) = secret_value(&secret, &key) {
                        env.redactor.register(&v);
                    }
                }
            }
        }
        env
    }

    pub fn namespace(&self, ns: &str) -> Option<&NamespaceState> {
        self.namespaces.get(ns)
    }
}

/// Every namespace the suite reads from, suite namespace first.
pub fn suite_namespaces(suite: &Suite) -> Vec<String> {
    let mut out = vec![suite.namespace.clone()];
    for v in &suite.vllm {
        if !out.contains(&v.namespace) {
            out.push(v.namespace.clone());
        }
    }
    out
}

/// The secret values the suite names that must never be shown: (namespace, secret, keys).
/// Usernames are not secret and are left out (scrubbing "litellm" would blank the report).
fn secret_keys(suite: &Suite) -> Vec<(String, String, Vec<String>)> {
    let l = &suite.litellm.secret;
    let mut out = vec![(
        suite.namespace.clone(),
        l.name.clone(),
        vec![l.master_key.clone(), l.vllm_api_key.clone()],
    )];
    if let Some(db) = &suite.database {
        out.push((
            suite.namespace.clone(),
            db.secret.name.clone(),
            vec![
                db.secret.password.clone(),
                "uri".into(),
                "jdbc-uri".into(),
                "pgpass".into(),
            ],
        ));
    }
    for v in &suite.vllm {
        if let Some(s) = &v.secret {
            out.push((v.namespace.clone(), s.name.clone(), vec![s.api_key.clone()]));
        }
    }
    out
}

/// One key of a Secret, if present.
pub fn secret_value(secret: &Secret, key: &str) -> Option<SecretValue> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| SecretValue::new(b.0.clone()))
}
