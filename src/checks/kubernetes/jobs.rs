//! The Prisma migration Job. It is an Argo CD PreSync hook with a TTL, so by PostSync time it
//! is usually gone: absence is not a failure (the database layer proves migrations ran). When
//! present it must be Complete; Failed shows the reason and the log tail of its last pod.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::check::Check;
use crate::outcome::{Cause, Failure, Layer, Passed, Verdict};

use super::{excerpt, in_namespace};

pub fn check(namespace: &str, job: &str) -> Check {
    let check_name = super::jobs_name(job);
    let (ns, job) = (namespace.to_string(), job.to_string());
    in_namespace(
        Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let (ns, job) = (ns.clone(), job.clone());
            async move {
                attempt.observe(format!("getting job {ns}/{job}"));
                let found = cx.cluster.get::<Job>(&ns, &job).await?;
                let Some(found) = found else {
                    return Ok(Passed::new("not present (already cleaned up)")
                        .note(format!(
                            "job {ns}/{job} not found: as a PreSync hook with ttlSecondsAfterFinished it is deleted after it runs; the database layer proves the migrations ran"
                        ))
                        .into());
                };
                let status = found.status.clone().unwrap_or_default();
                let conditions = status.conditions.clone().unwrap_or_default();
                let condition = |t: &str| {
                    conditions
                        .iter()
                        .find(|c| c.type_ == t && c.status == "True")
                };
                if condition("Complete").is_some() {
                    return Ok(Verdict::pass(format!(
                        "complete ({} succeeded)",
                        status.succeeded.unwrap_or(0)
                    )));
                }
                if let Some(failed) = condition("Failed") {
                    let reason = failed.reason.clone().unwrap_or_else(|| "Failed".into());
                    let message = failed.message.clone().unwrap_or_default();
                    let mut f = Failure::new(
                        Cause::JobFailed,
                        format!("job {ns}/{job} failed: {reason}{}", if message.is_empty() { String::new() } else { format!(" ({message})") }),
                    )
                    .hint(format!(
                        "read why the migration failed: kubectl logs -n {ns} job/{job}; fix the cause (database reachable? credentials?) and re-sync the Application to run it again"
                    ));
                    attempt.observe(format!("reading the log of the last pod of job {ns}/{job}"));
                    f = f.details(last_pod_log(&cx, &ns, &job).await);
                    return Err(f);
                }
                let active = status.active.unwrap_or(0);
                Err(Failure::new(
                    Cause::JobRunning,
                    format!("job {ns}/{job} has not completed ({active} active, {} failed)", status.failed.unwrap_or(0)),
                )
                .hint(format!("migrations are still running: rerun with --wait, or follow them with kubectl logs -n {ns} -f job/{job}")))
            }
        }),
        namespace,
    )
}

/// The log tail of the newest pod the Job created.
async fn last_pod_log(cx: &crate::context::Context, ns: &str, job: &str) -> String {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let mut pods = match cx.cluster.list::<Pod>(ns, Some(&selector)).await {
        Ok(p) if !p.is_empty() => p,
        // Clusters before 1.27 label only `job-name`.
        Ok(_) => match cx
            .cluster
            .list::<Pod>(ns, Some(&format!("job-name={job}")))
            .await
        {
            Ok(p) => p,
            Err(f) => return format!("pods of the job unreadable: {}", f.summary),
        },
        Err(f) => return format!("pods of the job unreadable: {}", f.summary),
    };
    pods.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    let Some(pod) = pods.last() else {
        return "no pod of the job is left to read a log from".into();
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    match cx.cluster.log_tail(ns, &name, &container, false, 20).await {
        Ok(text) => format!(
            "last 20 log lines of {name} ({container}):\n{}",
            excerpt(&cx.redactor, &text, 20)
        ),
        Err(f) => format!("log of {name} unavailable: {}", f.summary),
    }
}
