//! `verify --pushgateway URL`: a batch run's metrics (report::metrics::batch) pushed to a
//! Prometheus Pushgateway, as Prometheus documents for batch jobs: POST (the gateway replaces
//! only the families pushed, so a failed run, which pushes no last-success time, leaves the
//! last success in place) to the group `job="smokecheck"`, `instance=<cluster>`, each value
//! base64url-encoded so any name is one path segment. One request, bounded in time and in
//! what is read back; its failure is reported by the caller and never changes the exit code.

use std::time::{Duration, SystemTime};

use base64::Engine as _;

use crate::http::{excerpt, text, transport};
use crate::outcome::RunReport;
use crate::report::metrics;
use crate::secret::Redactor;
use crate::text::error_chain;

/// The `job` label of every push.
pub const JOB: &str = "smokecheck";
/// The longest a push may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The push did not land.
#[derive(Debug, thiserror::Error)]
#[error("pushing the metrics to {url} failed: {reason}")]
pub struct PushError {
    /// The group's URL (without credentials: the plan refuses those).
    pub url: String,
    pub reason: String,
}

/// The URL of the group `job`, `instance` under the Pushgateway at `base`.
pub fn group_url(base: &http::Uri, instance: &str) -> String {
    let segment = |v: &str| {
        if v.is_empty() {
            // The gateway's spelling of an empty value.
            "=".to_string()
        } else {
            base64::engine::general_purpose::URL_SAFE.encode(v)
        }
    };
    format!(
        "{}/metrics/job/{JOB}/instance@base64/{}",
        base.to_string().trim_end_matches('/'),
        segment(instance)
    )
}

/// Pushes the metrics of `report` (ended at `ended`) to the group of `instance`.
pub async fn push(
    base: &http::Uri,
    instance: &str,
    report: &RunReport,
    ended: SystemTime,
    timeout: Duration,
) -> Result<(), PushError> {
    let url = group_url(base, instance);
    let fail = |reason: String| PushError {
        url: base.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        // A Pushgateway is reached directly (in the cluster, or a CI service).
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("smokecheck/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(format!("building the HTTP client: {}", error_chain(&e))))?;
    let resp = client
        .post(&url)
        .header(
            reqwest::header::CONTENT_TYPE,
            metrics::Exposition::Prometheus.content_type(),
        )
        .body(metrics::batch(report, ended))
        .send()
        .await
        .map_err(|e| fail(transport(e).0))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = text(resp, "POST").await.unwrap_or_default();
    Err(fail(format!(
        "the gateway answered {status}: {}",
        excerpt(&Redactor::default(), &body)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_job_and_instance_each_one_base64url_segment() {
        let base: http::Uri = "http://pushgateway.monitoring:9091/".parse().expect("uri");
        assert_eq!(
            group_url(&base, "prod/eu-1"),
            "http://pushgateway.monitoring:9091/metrics/job/smokecheck/instance@base64/cHJvZC9ldS0x"
        );
        assert!(group_url(&base, "").ends_with("/instance@base64/="));
    }
}
