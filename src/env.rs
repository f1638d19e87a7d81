//! What a run knows before its checks start: the connected cluster, which namespaces exist,
//! and the redactor primed with every secret value the suite names.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::cluster::Cluster;
use crate::connect::Endpoints;
use crate::http::Http;
use crate::proxy_config::ProxyConfig;
use crate::secret::{Redactor, SecretValue};
use crate::suite::Suite;

pub struct Env {
    pub suite: Arc<Suite>,
    pub cluster: Cluster,
    pub redactor: Redactor,
    pub endpoints: Endpoints,
    /// The proxy config from its ConfigMap, or why it could not be read.
    pub proxy: Result<ProxyConfig, String>,
    /// Set when running as an Argo CD PostSync hook (its own Application is never waited on).
    pub hook: Option<crate::cli::Hook>,
    /// The one HTTP client of the run (LiteLLM and vLLM probes).
    pub http: Http,
}

impl Env {
    /// Reads what every check relies on, once: the proxy config, and the suite's secrets (so
    /// their values are scrubbed from any log or answer, whichever check sees it first).
    pub async fn prepare(
        suite: Arc<Suite>,
        cluster: Cluster,
        redactor: Redactor,
        endpoints: Endpoints,
        hook: Option<crate::cli::Hook>,
    ) -> Env {
        let proxy = read_proxy_config(&cluster, &suite).await;
        let env = Env {
            suite,
            cluster,
            redactor,
            endpoints,
            proxy,
            hook,
            http: Http::new(),
        };
        for s in env
            .suite
            .secrets()
            .into_iter()
            .filter(|s| !s.sensitive.is_empty())
        {
            if let Ok(Some(secret)) = env.cluster.get::<Secret>(&s.namespace, &s.name).await {
                for key in &s.sensitive {
                    if let Some(v) = secret_value(&secret, key) {
                        env.redactor.register(&v);
                    }
                }
            }
        }
        env
    }

    /// The aliases the proxy must serve: the suite's list, else the proxy config's.
    pub fn aliases(&self) -> Vec<String> {
        let all: Vec<String> = match (&self.suite.litellm.aliases, &self.proxy) {
            (Some(list), _) => list.clone(),
            (None, Ok(config)) => config.aliases.iter().map(|a| a.name.clone()).collect(),
            (None, Err(_)) => Vec::new(),
        };
        // Several deployments under one model_name is LiteLLM's load balancing: one alias.
        let mut seen = std::collections::BTreeSet::new();
        all.into_iter().filter(|a| seen.insert(a.clone())).collect()
    }
}

async fn read_proxy_config(cluster: &Cluster, suite: &Suite) -> Result<ProxyConfig, String> {
    let c = &suite.litellm.config;
    let ns = &suite.namespace;
    let map = cluster
        .get::<ConfigMap>(ns, &c.configmap)
        .await
        .map_err(|f| f.summary)?
        .ok_or_else(|| format!("configmap {ns}/{} not found", c.configmap))?;
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(&c.key))
        .ok_or_else(|| format!("configmap {ns}/{} has no key {}", c.configmap, c.key))?;
    ProxyConfig::parse(text).map_err(|e| format!("configmap {ns}/{} {}: {e}", c.configmap, c.key))
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
