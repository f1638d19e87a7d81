//! The LiteLLM error classifier (`ProxyError::parse` + `classify`): any status and any body give
//! a failure with a one-line summary and a bounded headline; never a panic.
//!
//! Input: a first line `STATUS [GUARDRAIL]` (the guardrail on the alias, if any), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smokecheck::checks::litellm::classify::{ProxyError, Request, classify};
use smokecheck::secret::Redactor;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut words = head.splitn(2, ' ');
    let Some(Ok(status)) = words.next().map(str::parse::<u16>) else {
        return;
    };
    let guardrail = words.next().map(str::trim).filter(|g| !g.is_empty());
    // The checks read answers as lossy UTF-8 (reqwest's `text()`).
    let body = String::from_utf8_lossy(body);

    let error = ProxyError::parse(status, &body, &Redactor::default());
    let headline = &error.headline;
    assert!(
        !headline.contains('\n'),
        "headline spans lines: {headline:?}"
    );
    assert!(
        headline.chars().count() <= 161,
        "headline longer than 160 characters and the ellipsis"
    );
    let request = Request {
        alias: "fuzz",
        key_label: "master key (litellm/litellm-secrets PROXY_MASTER_KEY)",
        guardrail,
        coupling: "the key coupling",
        logs: "kubectl -n litellm logs deploy/litellm",
    };
    let failure = classify(&error, &request);
    assert!(
        !failure.summary.contains('\n'),
        "summary spans lines: {:?}",
        failure.summary
    );
});
