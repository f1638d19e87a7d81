//! The keys the LiteLLM, vLLM and end-to-end checks send, read from their Secrets through the
//! Kubernetes API (never from flags or files; reading registers them with the redactor), and
//! only ever exposed to build an `Authorization` header.

use k8s_openapi::api::core::v1::Secret;

use crate::checks::{kubernetes, qualified};
use crate::context::{Context, secret_value};
use crate::outcome::{Cause, Failure};
use crate::secret::SecretValue;

/// The runbook for a broken key coupling (LiteLLM's copy of vLLM's key differs from vLLM's),
/// in the suite's names: one text for every check that detects it.
pub fn coupling_hint(suite: &crate::suite::Suite) -> String {
    let l = &suite.litellm;
    let ns = &suite.namespace;
    format!(
        "the key coupling: {key} in {ns}/{secret} must equal vLLM's own key, or every chat request gets 401 from vLLM. Compare them ({check}), re-seal {secret} with vLLM's current key (kubeseal), let Argo CD sync, then restart LiteLLM so it reads it (kubectl -n {ns} rollout restart deploy -l {selector})",
        check = kubernetes::vllm_key_name(None),
        key = l.secret.vllm_api_key,
        secret = l.secret.name,
        selector = l.pods.selector,
    )
}

/// The command that shows the proxy's own log.
pub fn proxy_logs(suite: &crate::suite::Suite) -> String {
    format!(
        "kubectl -n {} logs -l {} --tail=200",
        suite.namespace, suite.litellm.pods.selector
    )
}

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
pub async fn load(cx: &Context, which: Key) -> Result<Loaded, Failure> {
    let suite = &cx.suite;
    let ns = suite.namespace.as_str();
    let l = &suite.litellm.secret;
    let (what, secret, key) = match (which, &suite.litellm.chat_key) {
        (Key::Master, _) | (Key::Chat, None) => ("master key", l.name.as_str(), &l.master_key),
        (Key::Chat, Some(k)) => ("chat key", k.secret.as_str(), &k.key),
        (Key::Vllm, _) => ("vLLM key", l.name.as_str(), &l.vllm_api_key),
    };
    let source = format!("{ns}/{secret} {key}");
    let label = format!("{what} ({source})");
    let see = kubernetes::secrets_name(&qualified(suite, ns, secret));
    let found = cx.cluster.get::<Secret>(ns, secret).await?;
    let Some(found) = found else {
        return Err(Failure::new(
            Cause::NotFound,
            format!("cannot read the {label}: secret {ns}/{secret} not found"),
        )
        .hint(format!("see {see}")));
    };
    match secret_value(&found, key) {
        None => Err(Failure::new(
            Cause::MissingKey,
            format!("cannot read the {label}: secret {ns}/{secret} has no key {key}"),
        )
        .hint(format!("see {see}"))),
        Some(v) if v.is_empty() => Err(Failure::new(
            Cause::EmptyKey,
            format!("cannot use the {label}: it is empty"),
        )
        .hint(format!("see {see}"))),
        Some(v) => Ok(Loaded {
            value: v,
            label,
            source,
            secret: secret.to_string(),
            key: key.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_commands_name_the_namespace_and_the_pods() {
        let suite = crate::suite::parse(crate::suite::BUILTIN_SUITE, "builtin").expect("suite");
        let hint = coupling_hint(&suite);
        assert!(
            hint.contains("CA_VLLM_LOCAL_API_KEY in litellm/litellm-secrets"),
            "{hint}"
        );
        assert!(
            hint.contains(
                "kubectl -n litellm rollout restart deploy -l app.kubernetes.io/name=litellm"
            ),
            "{hint}"
        );
        assert_eq!(
            proxy_logs(&suite),
            "kubectl -n litellm logs -l app.kubernetes.io/name=litellm --tail=200"
        );
    }
}
