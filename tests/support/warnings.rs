//! States that are not failures yet but will be, for the checks that warn about them: a pod of
//! the suite restarted recently or OOMKilled while Ready. Restarts age, so the folders
//! `pod-restarted-recently` and `pod-oom-killed` write their times relative to now
//! (`${now-12m}`); [`restarted`] builds any other age on a loaded scenario (a restart 61
//! minutes ago, say, that must not warn).
//!
//! The other warning states live elsewhere: a SealedSecret whose `Synced` is False is the
//! `sealedsecret-stale` folder; a certificate expiring soon is an `ingress-*` folder or
//! `Scenario::set_certificate` with `certs::CertSpec::expiring_in_days`; an alias the proxy
//! serves but its config lacks is the stack's `Fault::also_served` (stack.rs).

use serde_json::{Value, json};

use super::certs;
use super::fake_kube::{Scenario, rfc3339, str_at};

/// A container's last restart.
#[derive(Debug, Clone, Copy)]
pub struct Restart<'a> {
    /// `restartCount`.
    pub count: u32,
    /// Seconds since the previous instance ended (and the current one started).
    pub ago: i64,
    /// `lastState.terminated.reason`: `Error`, `OOMKilled`, `Completed`.
    pub reason: &'a str,
    pub exit_code: i32,
}

impl Restart<'_> {
    /// Killed at its memory limit, `minutes` ago.
    pub fn oom_killed(minutes: i64) -> Restart<'static> {
        Restart {
            count: 1,
            ago: minutes * 60,
            reason: "OOMKilled",
            exit_code: 137,
        }
    }
}

/// Makes `container` of pod `namespace/name` one that restarted as `restart` says and has been
/// Ready since (a minute after it started); panics when the pod or container is absent.
pub fn restarted(
    scenario: &mut Scenario,
    namespace: &str,
    name: &str,
    container: &str,
    restart: Restart<'_>,
) {
    let now = certs::now();
    let ended = now - restart.ago;
    let scenario_name = scenario.name.clone();
    let pod = scenario
        .objects
        .iter_mut()
        .find(|o| {
            str_at(o, "/kind") == Some("Pod")
                && str_at(o, "/metadata/namespace") == Some(namespace)
                && str_at(o, "/metadata/name") == Some(name)
        })
        .unwrap_or_else(|| panic!("scenario {scenario_name}: no Pod {namespace}/{name}"));
    let status = pod
        .pointer_mut("/status/containerStatuses")
        .and_then(Value::as_array_mut)
        .and_then(|all| {
            all.iter_mut()
                .find(|c| str_at(c, "/name") == Some(container))
        })
        .unwrap_or_else(|| panic!("pod {namespace}/{name} has no container {container}"));
    status["restartCount"] = json!(restart.count);
    status["lastState"] = json!({"terminated": {
        "containerID": "containerd://2b8f0c6e9d41a7f35e1c08b6d2a49f7e3c5d1b80a6e2f94c7d3b5a1e8f0c6d29",
        "exitCode": restart.exit_code,
        "finishedAt": rfc3339(ended),
        "reason": restart.reason,
        "startedAt": rfc3339(ended - 9 * 60),
    }});
    status["state"] = json!({"running": {"startedAt": rfc3339(ended)}});
    status["ready"] = json!(true);
    status["started"] = json!(true);
    for condition in pod
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if matches!(
            str_at(condition, "/type"),
            Some("Ready" | "ContainersReady")
        ) {
            condition["status"] = json!("True");
            condition["lastTransitionTime"] = json!(rfc3339(ended + 60));
        }
    }
}
