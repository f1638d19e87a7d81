//! Failure attribution: which part of the chain an error answer from the LiteLLM proxy points
//! at. Same status, different cause: a 401 is our key or vLLM's, a 500 is vLLM unreachable or
//! the guardrail raising. The rules follow what the pinned proxy was observed to answer
//! (reference/litellm-behaviour.md, tests/it/llm_bed.rs); the unit tests below pin the bodies
//! it really sends.

use serde_json::Value;

use crate::outcome::{Cause, Failure};
use crate::secret::Redactor;

/// How much of the message a summary quotes.
const HEADLINE_CHARS: usize = 160;

/// An error answer of the proxy, parsed as far as it is JSON. Its text is redacted when it is
/// parsed, before anything reads or cuts it: the proxy relays vLLM's error bodies, and a key
/// cut in half at the headline's end would no longer be recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub status: u16,
    /// `error.message` (or `detail`, or the body itself when it is not JSON).
    pub message: String,
    /// `error.type`.
    pub kind: String,
    /// The first line of the message, short enough for a summary.
    pub headline: String,
}

impl ProxyError {
    pub fn parse(status: u16, body: &str, redactor: &Redactor) -> ProxyError {
        let json: Option<Value> = serde_json::from_str(body).ok();
        let err = json.as_ref().map(|j| j.get("error").unwrap_or(j));
        let text = |v: Option<&Value>| match v {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        };
        let message = text(err.and_then(|e| e.get("message")))
            .or_else(|| text(err.and_then(|e| e.get("detail"))))
            .or_else(|| match err {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| body.trim().to_string());
        let kind = text(err.and_then(|e| e.get("type"))).unwrap_or_default();
        ProxyError {
            status,
            headline: redactor.first_line(&message, HEADLINE_CHARS),
            message: redactor.redact(&message),
            kind: redactor.redact(&kind),
        }
    }

    fn has(&self, needle: &str) -> bool {
        self.message.contains(needle)
    }

    /// Raised by LiteLLM's provider layer (its exception names carry the `litellm.` prefix), as
    /// opposed to the proxy's own code, hooks and guardrails.
    fn raised_by_provider_layer(&self) -> bool {
        self.message.trim_start().starts_with("litellm.")
    }
}

/// What the request was, so the verdict can name it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub alias: &'a str,
    /// The key we sent ("master key (litellm/litellm-secrets PROXY_MASTER_KEY)").
    pub key_label: &'a str,
    /// The guardrail on this alias, if any: a 500 from outside the provider layer is then
    /// the guardrail raising.
    pub guardrail: Option<&'a str>,
    /// The runbook for a broken key coupling ([`crate::checks::keys::coupling_hint`]).
    pub coupling: &'a str,
    /// The command that shows the proxy's log ([`crate::checks::keys::proxy_logs`]).
    pub logs: &'a str,
}

/// The failure an error answer means. `details` is left to the caller (it quotes the body).
pub fn classify(e: &ProxyError, r: &Request) -> Failure {
    let alias = r.alias;
    let status = e.status;
    let said = &e.headline;
    let lower = e.message.to_lowercase();
    let coupling = r.coupling.to_string();
    match status {
        401 if e.has("AuthenticationError") || e.kind == "authentication_error" => Failure::new(
            Cause::UpstreamAuth,
            format!("vLLM rejected the key LiteLLM sends for alias {alias} (401 through the proxy)"),
        )
        .hint(coupling),
        401 | 403 => Failure::new(
            Cause::ProxyAuth,
            format!("the proxy rejected our {} ({status}): {said}", r.key_label),
        )
        .hint(
            "the master key must equal general_settings.master_key (PROXY_MASTER_KEY in the pod's env: restart the proxy after the Secret changed); a virtual key must exist in the proxy's database and be allowed to use this alias",
        ),
        400 if e.kind == "no_db_connection" => Failure::new(
            Cause::ProxyAuth,
            format!(
                "the proxy rejected our {} (400 no_db_connection): without a database it only accepts its master key",
                r.key_label
            ),
        )
        .hint("use the master key, or connect the proxy to its database (litellm::ready shows its db state)"),
        429 if e.kind == "all_deployments_in_cooldown" || lower.contains("cooldown") => Failure::new(
            Cause::Cooldown,
            format!("the proxy put alias {alias} in cooldown after an earlier failure (429): it did not even call vLLM"),
        )
        .hint(
            "a consequence, not the cause: the failure before it is the one to fix (often vLLM rejecting LiteLLM's key or vLLM down: see vllm::models and vllm::health). Run with --wait to have it reported",
        ),
        400 if e.has("ContextWindowExceededError") || lower.contains("maximum context length") => {
            Failure::new(
                Cause::ContextWindow,
                format!("vLLM refused the prompt for alias {alias} as over its context window (400 ContextWindowExceededError)"),
            )
            .hint(
                "the trimming guardrail did not trim: enable it on the alias (litellm_params.guardrails: [message_trimming]) and make sure it passes max_tokens to trim_messages",
            )
        }
        400 | 404 if e.has("Invalid model name") || lower.contains("model_not_found") => {
            Failure::new(
                Cause::UnknownAlias,
                format!("the proxy does not know alias {alias} ({status} Invalid model name)"),
            )
            .hint(
                "add the alias to model_list in the proxy config (ConfigMap litellm-config) or correct litellm.aliases in the suite; litellm::models lists what the proxy serves",
            )
        }
        500..=599
            if e.has("Connection error")
                || e.has("APIConnectionError")
                || lower.contains("connection refused")
                || lower.contains("cannot connect") =>
        {
            Failure::new(
                Cause::UpstreamUnreachable,
                format!("LiteLLM cannot connect to vLLM for alias {alias} ({status} Connection error)"),
            )
            .hint(
                "vLLM is down or the alias's api_base is wrong: see vllm::health and kubernetes::services for vLLM; the pods' events say why it is not serving",
            )
        }
        500 if !e.raised_by_provider_layer() && r.guardrail.is_some() => {
            let g = r.guardrail.unwrap_or_default();
            Failure::new(
                Cause::GuardrailCrashed,
                format!("guardrail {g} crashed on alias {alias} (500 from the proxy before vLLM was called): {said}"),
            )
            .hint(format!(
                "the guardrail's Python raised: read the proxy's log for the traceback ({}) and fix the script in its ConfigMap; a pre_call guardrail that raises fails every request of the alias",
                r.logs
            ))
        }
        408 | 504 => Failure::new(
            Cause::UpstreamError,
            format!("vLLM did not answer in time for alias {alias} ({status}): {said}"),
        )
        .hint("vLLM is overloaded or stuck: see vllm::health and vLLM's logs"),
        429 => Failure::new(
            Cause::UpstreamError,
            format!("rate limited on alias {alias} (429): {said}"),
        )
        .hint("vLLM or a proxy limit (key, team, tpm/rpm) refused the request: lower the load or raise the limit"),
        500..=599 if e.raised_by_provider_layer() || matches!(status, 502 | 503) => Failure::new(
            Cause::UpstreamError,
            format!("vLLM failed the request for alias {alias} ({status}): {said}"),
        )
        .hint("see vllm::health and vLLM's logs"),
        _ => Failure::new(
            Cause::HttpStatus,
            format!("the proxy answered {status} for alias {alias}: {said}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(guardrail: Option<&'static str>) -> Request<'static> {
        Request {
            alias: "a",
            key_label: "master key (litellm/litellm-secrets PROXY_MASTER_KEY)",
            guardrail,
            coupling: "the key coupling: CA_VLLM_LOCAL_API_KEY in litellm/litellm-secrets must equal vLLM's own key",
            logs: "kubectl -n litellm logs -l app.kubernetes.io/name=litellm --tail=200",
        }
    }

    fn parse(status: u16, body: &str) -> ProxyError {
        ProxyError::parse(status, body, &Redactor::default())
    }

    fn cause(status: u16, body: &str, guardrail: Option<&'static str>) -> Cause {
        classify(&parse(status, body), &req(guardrail)).cause
    }

    // Bodies as the pinned proxy (1.106.12) sends them, copied from the bed (llm_bed.rs).
    const NO_KEY: &str = r#"{"error":{"message":"Authentication Error, No api key passed in.","type":"auth_error","param":"None","code":"401"}}"#;
    const NO_DB: &str = r#"{"error":{"message":"No connected db.","type":"no_db_connection","param":"None","code":"400"}}"#;
    const UPSTREAM_401: &str = r#"{"error":{"message":"litellm.AuthenticationError: AuthenticationError: OpenAIException - Error code: 401 - {'error': 'Unauthorized'}\n\nLiteLLM: model group 'key-mismatch' failed with the error above. No fallback was attempted.","type":"authentication_error","param":null,"code":"401"}}"#;
    const COOLDOWN: &str = r#"{"error":{"message":"No deployments available for selected model, Try again in 5 seconds. All deployments for selected model are in cooldown. Passed model=key-mismatch. pre-call-checks=False, cooldown_list=['ec408fefae691efc5662d018ba90389219359d332309a15512585f1739329e3f']","type":"all_deployments_in_cooldown","param":null,"code":"429"}}"#;
    const CONTEXT: &str = r#"{"error":{"message":"litellm.ContextWindowExceededError: litellm.BadRequestError: ContextWindowExceededError: OpenAIException - This model's maximum context length is 512 tokens. However, you requested 773 tokens (768 in the messages, 5 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":null,"code":"400"}}"#;
    const DOWN: &str = r#"{"error":{"message":"litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.\n\nLiteLLM: model group 'down' failed with the error above. No fallback was attempted.","type":"internal_server_error","param":null,"code":"500"}}"#;
    const VLLM_503: &str = r#"{"error":{"message":"litellm.ServiceUnavailableError: ServiceUnavailableError: OpenAIException - fake vLLM fault: status 503\n\nLiteLLM: model group 'faulty' failed with the error above. No fallback was attempted.","type":"internal_server_error","param":null,"code":"503"}}"#;
    const UNKNOWN: &str = r#"{"error":{"message":"{'error': '/chat/completions: Invalid model name passed in model=no-such-alias. Call `/v1/models` to view available models for your key.'}","type":"None","param":"None","code":"400"}}"#;
    const CRASH: &str = r#"{"error":{"message":"message_trimming guardrail crashed (test fixture)","type":"internal_server_error","param":null,"code":"500"}}"#;

    #[test]
    fn a_missing_or_unknown_key_is_ours() {
        assert_eq!(cause(401, NO_KEY, None), Cause::ProxyAuth);
        assert_eq!(cause(400, NO_DB, None), Cause::ProxyAuth);
    }

    #[test]
    fn vllm_rejecting_litellms_key_is_the_coupling_not_ours() {
        let f = classify(&parse(401, UPSTREAM_401), &req(None));
        assert_eq!(f.cause, Cause::UpstreamAuth);
        assert!(f.hint.unwrap_or_default().contains("CA_VLLM_LOCAL_API_KEY"));
    }

    #[test]
    fn cooldown_is_a_consequence() {
        assert_eq!(cause(429, COOLDOWN, None), Cause::Cooldown);
        assert!(Cause::Cooldown.is_consequence());
    }

    #[test]
    fn over_the_window_is_context_window() {
        assert_eq!(
            cause(400, CONTEXT, Some("message_trimming")),
            Cause::ContextWindow
        );
    }

    #[test]
    fn connection_error_is_vllm_unreachable_even_on_a_guarded_alias() {
        assert_eq!(
            cause(500, DOWN, Some("message_trimming")),
            Cause::UpstreamUnreachable
        );
    }

    #[test]
    fn a_500_from_the_proxy_itself_is_the_guardrail_when_there_is_one() {
        assert_eq!(
            cause(500, CRASH, Some("message_trimming")),
            Cause::GuardrailCrashed
        );
        assert_eq!(cause(500, CRASH, None), Cause::HttpStatus);
    }

    #[test]
    fn unknown_alias() {
        assert_eq!(cause(400, UNKNOWN, None), Cause::UnknownAlias);
    }

    #[test]
    fn plain_text_bodies_still_classify() {
        let e = parse(500, "Internal Server Error");
        assert_eq!(e.message, "Internal Server Error");
        assert_eq!(classify(&e, &req(None)).cause, Cause::HttpStatus);
    }

    #[test]
    fn a_vllm_5xx_passed_through_is_upstream_even_on_a_guarded_alias() {
        assert_eq!(
            cause(503, VLLM_503, Some("message_trimming")),
            Cause::UpstreamError
        );
    }

    #[test]
    fn a_key_straddling_the_headline_cut_is_scrubbed_before_the_cut() {
        // vLLM echoed the key it got; the proxy relays it. Cut at 160 characters first, the
        // key's first characters would have reached the summary unrecognised.
        let key = "vllm-key-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
        let redactor = Redactor::default();
        redactor.register(&crate::secret::SecretValue::new(key.as_bytes().to_vec()));
        let message = format!("litellm.APIError: {} rejected {key}", "x".repeat(130));
        let body = serde_json::json!({"error": {"message": message, "type": "api_error"}});
        let e = ProxyError::parse(500, &body.to_string(), &redactor);
        let f = classify(&e, &req(None));
        for text in [&e.headline, &e.message, &f.summary] {
            assert!(!text.contains("vllm-key"), "{text}");
        }
        assert!(e.headline.ends_with("rejected …"), "{}", e.headline);
    }
}
