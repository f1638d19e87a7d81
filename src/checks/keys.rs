//! The keys the LiteLLM, vLLM and end-to-end checks send, read from their Secrets through the
//! Kubernetes API (never from flags or files), registered with the redactor as soon as they are
//! read, and only ever exposed to build an `Authorization` header.

use k8s_openapi::api::core::v1::Secret;

use crate::check::{Cause, Failure, Outcome};
use crate::env::{Env, secret_value};
use crate::secret::SecretValue;

/// Which key a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The proxy's master key (`PROXY_MASTER_KEY`).
    Master,
    /// The key chat requests use: the suite's `litellm.chat_key`, else the master key.
    Chat,
    /// The key LiteLLM sends to vLLM (`CA_VLLM_LOCAL_API_KEY`).
    Vllm,
}

/// A key and where it came from.
pub struct Loaded {
    pub value: SecretValue,
    /// "master key (litellm/litellm-secrets PROXY_MASTER_KEY)".
    pub label: String,
    /// "litellm/litellm-secrets CA_VLLM_LOCAL_API_KEY".
    pub source: String,
    /// The Secret's name, for hints.
    pub secret: String,
    /// The data key in it.
    pub key: String,
}

/// Reads `which` from its Secret. A Secret or key that is missing or empty is a failure naming
/// the kubernetes::secrets check that says more.
pub async fn load(env: &Env, which: Key) -> Result<Loaded, Failure> {
    let suite = &env.suite;
    let ns = suite.namespace.as_str();
    let l = &suite.litellm.secret;
    let (what, secret, key) = match (which, &suite.litellm.chat_key) {
        (Key::Master, _) | (Key::Chat, None) => ("master key", l.name.as_str(), &l.master_key),
        (Key::Chat, Some(k)) => ("chat key", k.secret.as_str(), &k.key),
        (Key::Vllm, _) => ("vLLM key", l.name.as_str(), &l.vllm_api_key),
    };
    let source = format!("{ns}/{secret} {key}");
    let label = format!("{what} ({source})");
    let see = format!(
        "kubernetes::secrets::{}",
        crate::checks::qualified(suite, ns, secret)
    );
    let found = env.cluster.get::<Secret>(ns, secret).await?;
    let Some(found) = found else {
        return Err(Outcome::fail(
            Cause::NotFound,
            format!("cannot read the {label}: secret {ns}/{secret} not found"),
        )
        .hint(format!("see {see}")));
    };
    match secret_value(&found, key) {
        None => Err(Outcome::fail(
            Cause::MissingKey,
            format!("cannot read the {label}: secret {ns}/{secret} has no key {key}"),
        )
        .hint(format!("see {see}"))),
        Some(v) if v.is_empty() => Err(Outcome::fail(
            Cause::EmptyKey,
            format!("cannot use the {label}: it is empty"),
        )
        .hint(format!("see {see}"))),
        Some(v) => {
            env.redactor.register(&v);
            Ok(Loaded {
                value: v,
                label,
                source,
                secret: secret.to_string(),
                key: key.clone(),
            })
        }
    }
}
