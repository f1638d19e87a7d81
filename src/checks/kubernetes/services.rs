//! Services: they exist, expose the expected port, and have ready endpoints (EndpointSlices).
//! A Service whose selector matches no ready pod is a failure that names the selector.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::check::Check;
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, Verdict};
use crate::suite::{self, Suite};

use super::{in_namespace, services_name};
use crate::checks::qualified;

pub fn check(s: &Arc<Suite>, namespace: &str, svc: &suite::ServiceRef) -> Check {
    let check_name = services_name(&qualified(s, namespace, &svc.name));
    let (ns, svc) = (namespace.to_string(), svc.clone());
    in_namespace(
        Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let (ns, svc) = (ns.clone(), svc.clone());
            async move {
                attempt.observe(format!("getting service {ns}/{}", svc.name));
                let Some(service) = cx.cluster.get::<Service>(&ns, &svc.name).await? else {
                    return Err(Failure::new(
                        Cause::NotFound,
                        format!("service {ns}/{} not found", svc.name),
                    )
                    .hint(format!(
                        "is its Argo CD Application synced? kubectl get svc -n {ns}"
                    )));
                };
                let spec = service.spec.clone().unwrap_or_default();
                if let Some(port) = svc.port {
                    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
                    if !ports.contains(&i32::from(port)) {
                        let listed = ports
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(Failure::new(
                            Cause::ServicePort,
                            format!(
                                "service {ns}/{} does not expose port {port} (it exposes {})",
                                svc.name,
                                if listed.is_empty() {
                                    "none".to_string()
                                } else {
                                    listed
                                }
                            ),
                        )
                        .hint(
                            "the suite and the Helm values disagree on the port: fix one of them",
                        ));
                    }
                }
                if spec.type_.as_deref() == Some("ExternalName") {
                    return Ok(Verdict::pass(format!(
                        "ExternalName service to {}",
                        spec.external_name.unwrap_or_default()
                    )));
                }
                attempt.observe(format!("listing endpoint slices of {ns}/{}", svc.name));
                let slices = cx.cluster.endpoint_slices(&ns, &svc.name).await?;
                let (ready, total) = count_endpoints(&slices);
                let mut metrics = Metrics::default();
                metrics
                    .count("endpoints", total)
                    .count("ready_endpoints", ready);
                if ready > 0 {
                    return Ok(Passed {
                        summary: format!("{ready}/{total} endpoints ready"),
                        metrics,
                        ..Passed::default()
                    }
                    .into());
                }
                let label_selector = spec.selector.as_ref().filter(|s| !s.is_empty()).map(|s| {
                    s.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let mut f = match label_selector {
                    None => Failure::new(
                        Cause::NoEndpoints,
                        format!(
                            "service {ns}/{} has no selector and no ready endpoints",
                            svc.name
                        ),
                    )
                    .hint("its endpoints are managed by hand or by another controller: check them"),
                    Some(sel) => {
                        let matching = cx.cluster.list::<Pod>(&ns, Some(&sel)).await;
                        let seen = match &matching {
                            Ok(pods) if pods.is_empty() => "matches no pod".to_string(),
                            Ok(pods) => format!("matches {} pod(s), none ready", pods.len()),
                            Err(f) => format!("(pods unreadable: {})", f.summary),
                        };
                        let hint = match &matching {
                            Ok(pods) if pods.is_empty() => format!(
                                "no pod carries the labels {sel}: fix the Service selector or the pod labels in the Helm values"
                            ),
                            _ => format!(
                                "the pods behind it are not Ready: see the kubernetes::pods checks (kubectl get pods -n {ns} -l {sel})"
                            ),
                        };
                        Failure::new(
                            Cause::NoEndpoints,
                            format!(
                                "service {ns}/{} has no ready endpoints: its selector {sel} {seen}",
                                svc.name
                            ),
                        )
                        .hint(hint)
                    }
                };
                f.metrics = metrics;
                Err(f)
            }
        }),
        namespace,
    )
}

/// Ready and total endpoints; a missing `ready` condition means ready (API semantics).
pub(super) fn count_endpoints(slices: &[EndpointSlice]) -> (u64, u64) {
    let mut ready = 0;
    let mut total = 0;
    for e in slices.iter().flat_map(|s| s.endpoints.iter()) {
        total += 1;
        let c = e.conditions.as_ref();
        let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        if is_ready && !terminating {
            ready += 1;
        }
    }
    (ready, total)
}

/// Names of the pods behind ready endpoints.
pub(super) fn ready_targets(slices: &[EndpointSlice]) -> Vec<String> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.target_ref.as_ref().and_then(|t| t.name.clone()))
        .collect()
}
