//! The CloudNativePG cluster: healthy phase, every instance ready, the `Ready` condition, a
//! named primary, and the read-write Service routing to that primary (a `-rw` Service pointing
//! at a replica makes every LiteLLM write fail).

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

use crate::check::Check;
use crate::cluster::Access;
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed};
use crate::suite::Database;

use super::in_namespace;
use super::services::ready_targets;

const GROUP: &str = "postgresql.cnpg.io";
const HEALTHY: &str = "Cluster in healthy state";

pub fn check(namespace: &str, db: &Database) -> Check {
    let check_name = super::cnpg_name(&db.cluster);
    let (ns, db) = (namespace.to_string(), db.clone());
    in_namespace(
        Check::new(check_name, Layer::Kubernetes, move |cx, attempt| {
            let (ns, db) = (ns.clone(), db.clone());
            async move {
                if cx.cluster.serves(&format!("{GROUP}/v1")) == Some(false) {
                    return Err(Failure::new(
                        Cause::CrdMissing,
                        format!("CloudNativePG is not installed: the API server does not serve {GROUP}/v1"),
                    )
                    .hint("install the CloudNativePG operator (its Argo CD Application) before LiteLLM's database"));
                }
                attempt.observe(format!("getting cluster {ns}/{}", db.cluster));
                let gvk = GroupVersionKind::gvk(GROUP, "v1", "Cluster");
                let ar = ApiResource::from_gvk_with_plural(&gvk, "clusters");
                let api: Api<DynamicObject> =
                    Api::namespaced_with(cx.cluster.client.clone(), &ns, &ar);
                let cluster = match api.get_opt(&db.cluster).await {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        return Err(Failure::new(
                            Cause::NotFound,
                            format!("CNPG cluster {ns}/{} not found", db.cluster),
                        )
                        .hint(format!("kubectl get clusters.postgresql.cnpg.io -n {ns}: is the database Application synced?")));
                    }
                    Err(e) => {
                        return Err(Access {
                            verb: "get",
                            resource: "clusters",
                            group: GROUP,
                            namespace: &ns,
                            name: Some(&db.cluster),
                        }
                        .failure(e));
                    }
                };
                let status = cluster.data.get("status").cloned().unwrap_or(Value::Null);
                let health = Health::of(&status);
                let mut metrics = Metrics::default();
                metrics
                    .count("instances", health.instances)
                    .count("ready_instances", health.ready);
                let healthy = health.phase == HEALTHY
                    && health.ready == health.instances
                    && health.ready_condition == Some(true);
                if !healthy {
                    let mut f = Failure::new(
                        Cause::CnpgUnhealthy,
                        format!(
                            "CNPG cluster {ns}/{}: phase {:?}, {}/{} instances ready, Ready condition {}",
                            db.cluster,
                            health.phase,
                            health.ready,
                            health.instances,
                            match health.ready_condition {
                                Some(true) => "True",
                                Some(false) => "False",
                                None => "absent",
                            }
                        ),
                    )
                    .details(health.details())
                    .hint(format!(
                        "kubectl cnpg status -n {ns} {0} (or kubectl describe clusters.postgresql.cnpg.io -n {ns} {0}) and the logs of the instance pods",
                        db.cluster
                    ));
                    f.metrics = metrics;
                    return Err(f);
                }
                let Some(primary) = health.primary.clone() else {
                    return Err(Failure::new(
                        Cause::CnpgUnhealthy,
                        format!("CNPG cluster {ns}/{} names no current primary", db.cluster),
                    ));
                };
                attempt.observe(format!(
                    "listing endpoint slices of {ns}/{}",
                    db.service.name
                ));
                let slices = cx.cluster.endpoint_slices(&ns, &db.service.name).await?;
                let targets = ready_targets(&slices);
                if targets.iter().any(|t| t != &primary) || !targets.contains(&primary) {
                    let routed = if targets.is_empty() {
                        "no pod".to_string()
                    } else {
                        targets.join(", ")
                    };
                    return Err(Failure::new(
                        Cause::RwNotPrimary,
                        format!(
                            "service {ns}/{} routes to {routed}, but the primary is {primary}",
                            db.service.name
                        ),
                    )
                    .hint(format!(
                        "writes through {} would fail or hit a replica: check the Service's selector (cnpg.io/instanceRole=primary) and the instance pods' role labels; kubectl get pods -n {ns} -L cnpg.io/instanceRole",
                        db.service.name
                    ))
                    );
                }
                Ok(Passed {
                    summary: format!(
                        "healthy, {}/{} instances ready, primary {primary} behind {}",
                        health.ready, health.instances, db.service.name
                    ),
                    metrics,
                    ..Passed::default()
                }
                .into())
            }
        }),
        namespace,
    )
}

#[derive(Debug, Default)]
struct Health {
    phase: String,
    phase_reason: Option<String>,
    instances: u64,
    ready: u64,
    ready_condition: Option<bool>,
    conditions: Vec<String>,
    primary: Option<String>,
}

impl Health {
    fn of(status: &Value) -> Health {
        let s = |k: &str| status.get(k).and_then(Value::as_str).map(String::from);
        let n = |k: &str| status.get(k).and_then(Value::as_u64).unwrap_or(0);
        let conditions = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ready_condition = conditions
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
            .and_then(|c| c.get("status").and_then(Value::as_str))
            .map(|v| v == "True");
        Health {
            phase: s("phase").unwrap_or_default(),
            phase_reason: s("phaseReason"),
            instances: n("instances"),
            ready: n("readyInstances"),
            ready_condition,
            conditions: conditions
                .iter()
                .map(|c| {
                    let g = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
                    format!(
                        "{}={} {} {}",
                        g("type"),
                        g("status"),
                        g("reason"),
                        g("message")
                    )
                    .trim()
                    .to_string()
                })
                .collect(),
            primary: s("currentPrimary"),
        }
    }

    fn details(&self) -> String {
        let mut lines = Vec::new();
        if let Some(r) = &self.phase_reason {
            lines.push(format!("phase reason: {r}"));
        }
        if let Some(p) = &self.primary {
            lines.push(format!("current primary: {p}"));
        }
        lines.extend(self.conditions.iter().map(|c| format!("condition {c}")));
        lines.join("\n")
    }
}
