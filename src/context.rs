//! What every check of a run is given: the suite, the connected cluster, the endpoints (final:
//! resolved and port-forwarded), the one HTTP client, the proxy config as the run read it, the
//! hook it runs as, and the redactor primed with every value of every Secret the suite reads
//! (and the names the report prints, which it leaves alone).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::cluster::Cluster;
use crate::endpoints::Endpoints;
use crate::http::Http;
use crate::once::ReadOnce;
use crate::outcome::Failure;
use crate::plan::Hook;
use crate::proxy_config::ProxyConfig;
use crate::secret::{Redactor, SecretValue};
use crate::suite::{CaSource, Suite};

pub struct Context {
    pub suite: Arc<Suite>,
    pub cluster: Cluster,
    pub redactor: Redactor,
    pub endpoints: Endpoints,
    /// The proxy config from its ConfigMap, read once per run, or why it could not be read.
    pub proxy_config: Result<ProxyConfig, ProxyConfigError>,
    /// Set when running as an Argo CD PostSync hook (its own Application is never waited on).
    pub hook: Option<Hook>,
    /// The one HTTP client of the run (LiteLLM and vLLM probes).
    pub http: Http,
    /// Answers read once per run and shared by the checks that need them.
    pub answers: ReadOnce,
    /// What each alias's deployment failed with first, for the checks that then met the
    /// proxy's cooldown.
    pub alias_failures: AliasFailures,
}

/// The first failure of each alias's deployment (vLLM rejecting LiteLLM's key, vLLM down) a
/// check of this run met. LiteLLM puts an alias in cooldown after such a failure, so an
/// alias's checks running side by side see one root cause and, for the others, a 429
/// cooldown: those report the root cause instead, as the check that met it does.
#[derive(Default)]
pub struct AliasFailures {
    seen: Mutex<HashMap<String, Failure>>,
    told: tokio::sync::Notify,
}

impl AliasFailures {
    /// Keeps `failure` as `alias`'s root cause, unless it has one.
    pub fn record(&self, alias: &str, failure: &Failure) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.entry(alias.to_string())
                .or_insert_with(|| failure.clone());
        }
        self.told.notify_waiters();
    }

    /// `alias`'s root cause, once a check has met it; waits for one `within` (the answer that
    /// caused a cooldown may still be on its way to the check that sent it).
    pub async fn wait_for(&self, alias: &str, within: std::time::Duration) -> Option<Failure> {
        let until = tokio::time::Instant::now() + within;
        loop {
            // Registered before the look, so a record made in between still wakes it.
            let told = self.told.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if let Some(f) = self.seen.lock().ok().and_then(|s| s.get(alias).cloned()) {
                return Some(f);
            }
            if tokio::time::timeout_at(until, told).await.is_err() {
                return None;
            }
        }
    }
}

impl Context {
    /// Reads what every check relies on, once and all at the same time: the proxy config, the
    /// suite's Secrets (`cluster`, which must carry the run's redactor, registers all their
    /// values with it, so they are scrubbed from any log or answer, whichever check sees it
    /// first) and the database's CA ConfigMap. The cluster keeps what it read for the checks
    /// (one GET per object per run). The names the report prints are protected from redaction.
    pub async fn read_shared(
        suite: &Suite,
        cluster: &Cluster,
    ) -> Result<ProxyConfig, ProxyConfigError> {
        let redactor = cluster.redactor();
        redactor.protect(public_names(suite));
        // Reading is registering (Cluster::get); a read that fails here is repeated by the
        // check that needs the object, and registers then.
        let secrets = suite.secrets();
        let secrets = futures::future::join_all(
            secrets
                .iter()
                .map(|s| cluster.get::<Secret>(&s.namespace, &s.name)),
        );
        let ca = async {
            if let Some(db) = suite.database.as_ref().filter(|db| db.sslmode.verifies())
                && let CaSource::ConfigMap { name, .. } = db.ca_source()
            {
                let _ = cluster.get::<ConfigMap>(&suite.namespace, &name).await;
            }
        };
        let (proxy_config, _, _) = tokio::join!(read_proxy_config(cluster, suite), secrets, ca);
        if let Ok(config) = &proxy_config {
            redactor.protect(config.aliases.iter().map(|a| a.name.clone()));
        }
        proxy_config
    }

    /// The aliases the proxy must serve: the suite's list, else the proxy config's.
    pub fn aliases(&self) -> Vec<String> {
        let all: Vec<String> = match (&self.suite.litellm.aliases, &self.proxy_config) {
            (Some(list), _) => list.clone(),
            (None, Ok(config)) => config.aliases.iter().map(|a| a.name.clone()).collect(),
            (None, Err(_)) => Vec::new(),
        };
        // Several deployments under one model_name is LiteLLM's load balancing: one alias.
        let mut seen = std::collections::BTreeSet::new();
        all.into_iter().filter(|a| seen.insert(a.clone())).collect()
    }
}

/// Why a run has no proxy config. Checks that need it say so in one line (its `Display`); the
/// guardrail check, which reads its declaration there, reports each case as a failure of its
/// own.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyConfigError {
    /// Reading the ConfigMap failed (forbidden, no answer): the failure the read reported.
    Unreadable(Failure),
    /// `configmap` is `namespace/name`.
    NotFound {
        configmap: String,
    },
    NoKey {
        configmap: String,
        key: String,
    },
    /// Not a config LiteLLM reads: the parser's one-line error.
    Invalid {
        configmap: String,
        key: String,
        error: String,
    },
}

impl fmt::Display for ProxyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyConfigError::Unreadable(failure) => f.write_str(&failure.summary),
            ProxyConfigError::NotFound { configmap } => {
                write!(f, "configmap {configmap} not found")
            }
            ProxyConfigError::NoKey { configmap, key } => {
                write!(f, "configmap {configmap} has no key {key}")
            }
            ProxyConfigError::Invalid {
                configmap,
                key,
                error,
            } => write!(f, "configmap {configmap} {key}: {error}"),
        }
    }
}

async fn read_proxy_config(
    cluster: &Cluster,
    suite: &Suite,
) -> Result<ProxyConfig, ProxyConfigError> {
    let c = &suite.litellm.config;
    let configmap = format!("{}/{}", suite.namespace, c.configmap);
    let map = cluster
        .get::<ConfigMap>(&suite.namespace, &c.configmap)
        .await
        .map_err(ProxyConfigError::Unreadable)?
        .ok_or_else(|| ProxyConfigError::NotFound {
            configmap: configmap.clone(),
        })?;
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(&c.key))
        .ok_or_else(|| ProxyConfigError::NoKey {
            configmap: configmap.clone(),
            key: c.key.clone(),
        })?;
    ProxyConfig::parse(text).map_err(|error| ProxyConfigError::Invalid {
        configmap,
        key: c.key.clone(),
        error,
    })
}

/// The names the report itself prints (namespaces, object names, selectors, aliases): a
/// Secret value found only inside one of them is not scrubbed there, so a database user named
/// like the namespace does not blank `kubernetes::pods::litellm` (a value equal to such a name
/// is printed as that name anyway). Key names are left out on purpose: a password `password`
/// is still scrubbed.
fn public_names(suite: &Suite) -> Vec<String> {
    let l = &suite.litellm;
    let mut names = suite_namespaces(suite);
    let mut selector = |s: &str| {
        names.push(s.to_string());
        names.extend(s.split([',', '=']).map(|p| p.trim().to_string()));
    };
    selector(&l.pods.selector);
    if let Some(db) = &suite.database {
        selector(&db.pods.selector);
    }
    for s in suite.secrets() {
        names.push(s.name);
    }
    names.extend([l.service.name.clone(), l.config.configmap.clone()]);
    names.extend(l.migration_job.clone());
    names.extend(l.aliases.iter().flatten().cloned());
    if let Some(g) = &l.guardrail {
        names.extend([g.name.clone(), g.configmap.clone()]);
    }
    if let Some(db) = &suite.database {
        names.extend([db.cluster.clone(), db.service.name.clone(), db.name.clone()]);
    }
    for v in &suite.vllm {
        names.push(v.service.name.clone());
    }
    let p = &suite.platform;
    for w in [&p.cnpg_operator, &p.sealed_secrets_controller]
        .into_iter()
        .flatten()
    {
        names.extend([w.namespace.clone(), w.deployment.clone()]);
    }
    if let Some(a) = &p.argocd {
        names.extend([a.namespace.clone(), a.application.clone()]);
    }
    names
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

/// One key of a Secret, if present.
pub fn secret_value(secret: &Secret, key: &str) -> Option<SecretValue> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| SecretValue::new(b.0.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::AliasFailures;
    use crate::outcome::{Cause, Failure};

    #[tokio::test(start_paused = true)]
    async fn a_cooldown_waits_for_the_root_cause_a_sibling_meets_and_only_so_long() {
        let failures = Arc::new(AliasFailures::default());
        // Nobody met one: the wait ends empty, after its time.
        let started = tokio::time::Instant::now();
        assert_eq!(failures.wait_for("a", Duration::from_secs(2)).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // A sibling's answer arrives while the cooldown's check waits.
        let waiting = tokio::spawn({
            let failures = Arc::clone(&failures);
            async move { failures.wait_for("a", Duration::from_secs(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        failures.record("b", &Failure::new(Cause::UpstreamUnreachable, "b's"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let root = Failure::new(Cause::UpstreamAuth, "vLLM rejected the key");
        failures.record("a", &root);
        failures.record("a", &Failure::new(Cause::UpstreamError, "later"));
        assert_eq!(waiting.await.expect("joined"), Some(root.clone()));
        // The first one stays the alias's root cause, and is there at once.
        let at = tokio::time::Instant::now();
        assert_eq!(
            failures.wait_for("a", Duration::from_secs(2)).await,
            Some(root)
        );
        assert_eq!(at.elapsed(), Duration::ZERO);
    }
}
