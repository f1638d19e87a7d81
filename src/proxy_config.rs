//! The LiteLLM proxy's `config.yaml`, as far as the harness needs it: the model aliases, their
//! backends and guardrails. Read from the ConfigMap once per run, so the checks follow what
//! GitOps deployed instead of a copy in the suite that can drift.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// One `model_list` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// `model_name`: what clients ask for.
    pub name: String,
    /// `litellm_params.model`, e.g. `openai/qwen/qwen2.5-0.5b`.
    pub model: String,
    /// `litellm_params.api_base`, if any.
    pub api_base: Option<String>,
    /// `litellm_params.api_key` (usually `os.environ/NAME`; never a value we print).
    pub api_key_ref: Option<String>,
    /// `litellm_params.guardrails`.
    pub guardrails: Vec<String>,
    /// Everything of the entry but its name (`litellm_params`, `model_info`, ...), digested:
    /// two entries with equal digests are served alike, whatever they are called. A digest,
    /// because `litellm_params` may hold a key in plain text.
    pub deployment: [u8; 32],
}

impl Alias {
    /// The model name the backend serves: `model` without LiteLLM's provider prefix
    /// (`openai/qwen/qwen2.5-0.5b` → `qwen/qwen2.5-0.5b`).
    pub fn served_model(&self) -> &str {
        self.model
            .split_once('/')
            .map(|(_, m)| m)
            .unwrap_or(&self.model)
    }

    /// The env var `api_key: os.environ/NAME` reads, if that is how the key is given.
    pub fn api_key_env(&self) -> Option<&str> {
        self.api_key_ref
            .as_deref()
            .and_then(|k| k.strip_prefix("os.environ/"))
    }
}

/// A top-level `guardrails` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardrailDecl {
    pub name: String,
    /// `litellm_params.guardrail`: `pkg.module.Class`.
    pub target: String,
    pub mode: Option<String>,
    pub default_on: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyConfig {
    pub aliases: Vec<Alias>,
    pub guardrails: Vec<GuardrailDecl>,
}

impl ProxyConfig {
    /// Parses config.yaml; the error is one line for a report.
    pub fn parse(text: &str) -> Result<ProxyConfig, String> {
        let doc: Value = serde_saphyr::from_str(text).map_err(|e| {
            format!(
                "not valid YAML: {}",
                e.to_string().lines().next().unwrap_or("")
            )
        })?;
        let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        let list = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        };
        let aliases = doc
            .get("model_list")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let params = m.get("litellm_params").cloned().unwrap_or(Value::Null);
                Some(Alias {
                    name: str_at(m, "model_name")?,
                    model: str_at(&params, "model").unwrap_or_default(),
                    api_base: str_at(&params, "api_base"),
                    api_key_ref: str_at(&params, "api_key"),
                    guardrails: list(params.get("guardrails")),
                    deployment: digest_without_name(m),
                })
            })
            .collect();
        let guardrails = doc
            .get("guardrails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| {
                let params = g.get("litellm_params").cloned().unwrap_or(Value::Null);
                Some(GuardrailDecl {
                    name: str_at(g, "guardrail_name")?,
                    target: str_at(&params, "guardrail").unwrap_or_default(),
                    mode: str_at(&params, "mode"),
                    default_on: params
                        .get("default_on")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            })
            .collect();
        Ok(ProxyConfig {
            aliases,
            guardrails,
        })
    }

    pub fn alias(&self, name: &str) -> Option<&Alias> {
        self.aliases.iter().find(|a| a.name == name)
    }

    /// What serves `alias`: the digests of its entries (several under one `model_name` are
    /// LiteLLM's load balancing), sorted, or `None` when the config has no entry for it. Aliases
    /// with equal deployments differ only in their name: a chat through one proves the same
    /// route, key, backend and guardrails as through the other.
    pub fn deployment(&self, alias: &str) -> Option<Vec<[u8; 32]>> {
        let mut digests: Vec<[u8; 32]> = self
            .aliases
            .iter()
            .filter(|a| a.name == alias)
            .map(|a| a.deployment)
            .collect();
        digests.sort_unstable();
        (!digests.is_empty()).then_some(digests)
    }

    /// Whether requests to `alias` go through guardrail `name` (enabled on it, or default_on).
    pub fn guarded(&self, alias: &str, name: &str) -> bool {
        let default_on = self
            .guardrails
            .iter()
            .any(|g| g.name == name && g.default_on);
        default_on
            || self
                .alias(alias)
                .is_some_and(|a| a.guardrails.iter().any(|g| g == name))
    }
}

/// The SHA-256 of a `model_list` entry without its `model_name`, with every map's keys in
/// order (a YAML's key order is no difference in what LiteLLM serves).
fn digest_without_name(entry: &Value) -> [u8; 32] {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), canonical(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let mut entry = canonical(entry);
    if let Some(map) = entry.as_object_mut() {
        map.remove("model_name");
    }
    Sha256::digest(entry.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_aliases_backends_and_guardrails() {
        let c = ProxyConfig::parse(
            "model_list:\n  - model_name: small\n    litellm_params:\n      model: openai/qwen/qwen2.5-0.5b\n      api_base: http://vllm.vllm.svc.cluster.local/v1\n      api_key: os.environ/CA_VLLM_LOCAL_API_KEY\n      guardrails: [message_trimming]\nguardrails:\n  - guardrail_name: message_trimming\n    litellm_params: {guardrail: a.b.C, mode: pre_call}\n",
        )
        .expect("parses");
        let a = c.alias("small").expect("alias");
        assert_eq!(a.served_model(), "qwen/qwen2.5-0.5b");
        assert_eq!(a.api_key_env(), Some("CA_VLLM_LOCAL_API_KEY"));
        assert!(c.guarded("small", "message_trimming"));
        assert!(!c.guarded("other", "message_trimming"));
        assert_eq!(c.guardrails[0].target, "a.b.C");
    }

    #[test]
    fn aliases_differing_only_in_their_name_share_a_deployment() {
        let c = ProxyConfig::parse(concat!(
            "model_list:\n",
            "  - model_name: a\n    litellm_params: {model: openai/m, api_base: http://v/v1, guardrails: [t]}\n",
            "  - model_name: b\n    litellm_params: {api_base: http://v/v1, model: openai/m, guardrails: [t]}\n",
            "  - model_name: c\n    litellm_params: {model: openai/m, api_base: http://v/v1}\n",
            "  - model_name: d\n    litellm_params: {model: openai/m, api_base: http://v/v1, guardrails: [t]}\n    model_info: {max_input_tokens: 100}\n",
            "  - model_name: e\n    litellm_params: {model: openai/m, api_base: http://w/v1, guardrails: [t]}\n",
            "  - model_name: e\n    litellm_params: {model: openai/m, api_base: http://v/v1, guardrails: [t]}\n",
        ))
        .expect("parses");
        let d = |name| c.deployment(name).expect(name);
        assert_eq!(d("a"), d("b"), "key order is no difference");
        assert_ne!(d("a"), d("c"), "a guardrail is");
        assert_ne!(d("a"), d("d"), "model_info is");
        assert_eq!(d("e").len(), 2, "load-balanced entries are one deployment");
        assert_ne!(d("a"), d("e"));
        assert_eq!(c.deployment("absent"), None);
    }

    #[test]
    fn bad_yaml_is_one_line() {
        let err = ProxyConfig::parse("model_list: [\n").unwrap_err();
        assert!(
            err.starts_with("not valid YAML") && !err.contains('\n'),
            "{err}"
        );
    }
}
