//! Pods: enough Ready pods per selector, none of them broken, and when not, why: the container
//! state in the words `kubectl describe` uses, plus the log tail where the error is (for a
//! crash loop, the previous container's).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::check::Check;
use crate::outcome::{Cause, Failure, Layer, Metrics, Passed, ProbeResult, Warning};
use crate::suite::Pods;

use super::{excerpt, in_namespace};

const LOG_LINES: i64 = 20;

pub fn check(label: &str, namespace: &str, pods: &Pods) -> Check {
    let name = super::pods_name(label);
    let namespace = namespace.to_string();
    let spec = pods.clone();
    let ns = namespace.clone();
    in_namespace(
        Check::new(name, Layer::Kubernetes, move |cx, attempt| {
            let (ns, spec) = (ns.clone(), spec.clone());
            async move {
                attempt.observe(format!("listing pods {} in {ns}", spec.selector));
                let pods = cx.cluster.list::<Pod>(&ns, Some(&spec.selector)).await?;
                let mut probed = judge(&ns, &spec, &pods);
                if let Err(f) = &mut probed
                    && let Some((pod, container, previous)) = log_source(&pods, &spec)
                {
                    attempt.observe(format!("reading the log of {ns}/{pod} ({container})"));
                    let tail = cx
                        .cluster
                        .log_tail(&ns, &pod, &container, previous, LOG_LINES)
                        .await;
                    let which = if previous { "previous " } else { "" };
                    let section = match tail {
                        Ok(text) if text.trim().is_empty() => {
                            format!("log of {pod} ({which}container {container}): empty")
                        }
                        Ok(text) => format!(
                            "last {LOG_LINES} log lines of {pod} ({which}container {container}):\n{}",
                            excerpt(&cx.redactor, &text, LOG_LINES as usize)
                        ),
                        Err(e) => format!("log of {pod} unavailable: {}", e.summary),
                    };
                    f.details = Some(match f.details.take() {
                        Some(d) => format!("{d}\n{section}"),
                        None => section,
                    });
                }
                probed
            }
        }),
        &namespace,
    )
}

/// What is wrong with one pod, most telling first.
#[derive(Debug, Clone, PartialEq)]
enum Problem {
    CrashLoop {
        container: String,
        restarts: i32,
        last: Option<String>,
    },
    ImagePull {
        container: String,
        image: String,
        reason: String,
        message: String,
    },
    ContainerConfig {
        container: String,
        reason: String,
        message: String,
    },
    Unschedulable {
        message: String,
    },
    /// Running (or starting) but not Ready.
    NotReady {
        state: String,
    },
}

impl Problem {
    /// Whether the pod will not get better by waiting: a broken rollout, even when enough
    /// other pods are Ready.
    fn is_broken(&self) -> bool {
        !matches!(self, Problem::NotReady { .. })
    }

    fn cause(&self) -> Cause {
        match self {
            Problem::CrashLoop { .. } => Cause::CrashLoop,
            Problem::ImagePull { .. } => Cause::ImagePull,
            Problem::ContainerConfig { .. } => Cause::ContainerConfig,
            Problem::Unschedulable { .. } => Cause::Unschedulable,
            Problem::NotReady { .. } => Cause::NotReady,
        }
    }

    fn describe(&self) -> String {
        match self {
            Problem::CrashLoop {
                container,
                restarts,
                last,
            } => {
                let last = last
                    .as_ref()
                    .map(|l| format!(", last exit: {l}"))
                    .unwrap_or_default();
                format!("container {container} in CrashLoopBackOff ({restarts} restarts{last})")
            }
            Problem::ImagePull {
                container,
                image,
                reason,
                ..
            } => format!("container {container}: {reason} for image {image}"),
            Problem::ContainerConfig {
                container,
                reason,
                message,
            } => format!("container {container}: {reason}: {message}"),
            Problem::Unschedulable { message } => format!("Pending, unschedulable: {message}"),
            Problem::NotReady { state } => format!("not ready: {state}"),
        }
    }

    fn hint(&self, ns: &str, pod: &str) -> String {
        match self {
            Problem::CrashLoop { container, .. } => format!(
                "the container exits at start; its previous log above shows why (kubectl logs -n {ns} {pod} -c {container} --previous)"
            ),
            Problem::ImagePull { .. } => format!(
                "check the image name and tag in the Helm values, and the registry credentials (imagePullSecrets): kubectl describe pod -n {ns} {pod}"
            ),
            Problem::ContainerConfig { .. } => format!(
                "a Secret or ConfigMap the pod references is missing or lacks a key (see the kubernetes::secrets checks): kubectl describe pod -n {ns} {pod}"
            ),
            Problem::Unschedulable { .. } => format!(
                "no node can take the pod: free capacity or lower its requests (kubectl describe pod -n {ns} {pod})"
            ),
            Problem::NotReady { .. } => format!(
                "its readiness probe fails: kubectl describe pod -n {ns} {pod} (events) and kubectl logs -n {ns} {pod}"
            ),
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let main = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    init.iter().chain(main.iter())
}

fn diagnose(pod: &Pod) -> Option<Problem> {
    if is_ready(pod) {
        return None;
    }
    let status = pod.status.as_ref();
    for cs in statuses(pod) {
        let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        match reason.as_str() {
            "CrashLoopBackOff" => {
                let last = cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            "{} (exit code {})",
                            t.reason.as_deref().unwrap_or("terminated"),
                            t.exit_code
                        )
                    });
                return Some(Problem::CrashLoop {
                    container: cs.name.clone(),
                    restarts: cs.restart_count,
                    last,
                });
            }
            "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
                return Some(Problem::ImagePull {
                    container: cs.name.clone(),
                    image: cs.image.clone(),
                    reason,
                    message,
                });
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                return Some(Problem::ContainerConfig {
                    container: cs.name.clone(),
                    reason,
                    message,
                });
            }
            _ => {}
        }
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        return Some(Problem::Unschedulable {
            message: c
                .message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "no reason given".into()),
        });
    }
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Unknown".into());
    let state = statuses(pod)
        .find(|cs| !cs.ready)
        .map(|cs| match cs.state.as_ref() {
            Some(s) if s.running.is_some() => {
                format!(
                    "container {} running but not ready (readiness probe failing)",
                    cs.name
                )
            }
            Some(s) if s.waiting.is_some() => format!(
                "container {} waiting: {}",
                cs.name,
                s.waiting
                    .as_ref()
                    .and_then(|w| w.reason.clone())
                    .unwrap_or_default()
            ),
            Some(s) if s.terminated.is_some() => format!(
                "container {} terminated: {}",
                cs.name,
                s.terminated
                    .as_ref()
                    .and_then(|t| t.reason.clone())
                    .unwrap_or_default()
            ),
            _ => format!("container {} not ready", cs.name),
        })
        .unwrap_or_else(|| {
            if pod.metadata.deletion_timestamp.is_some() {
                "terminating".to_string()
            } else {
                format!("phase {phase}")
            }
        });
    Some(Problem::NotReady { state })
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Decides the outcome from the listed pods (pure, so it is tested without a server).
fn judge(ns: &str, spec: &Pods, pods: &[Pod]) -> ProbeResult {
    let total = pods.len() as u64;
    let ready = pods.iter().filter(|p| is_ready(p)).count() as u64;
    let restarts: i64 = pods
        .iter()
        .flat_map(statuses)
        .map(|c| i64::from(c.restart_count))
        .sum();
    let mut metrics = Metrics::default();
    metrics
        .count("pods", total)
        .count("ready_pods", ready)
        .count("restarts", restarts.max(0) as u64);

    if pods.is_empty() {
        let mut f = Failure::new(
            Cause::NoPods,
            format!("no pod in namespace {ns} matches {}", spec.selector),
        )
        .hint(format!(
            "is the Deployment scaled to zero, or the selector wrong? kubectl get deploy,rs,pods -n {ns} -l {}",
            spec.selector
        ));
        f.metrics = metrics;
        return Err(f);
    }

    let problems: Vec<(String, Problem)> = pods
        .iter()
        .filter_map(|p| diagnose(p).map(|d| (pod_name(p), d)))
        .collect();
    let states = problems
        .iter()
        .map(|(pod, p)| format!("{pod}: {}", p.describe()))
        .collect::<Vec<_>>()
        .join("\n");
    let worst = worst_index(&problems).map(|i| &problems[i]);

    let enough = ready >= u64::from(spec.min_ready);
    match worst {
        Some((pod, problem)) if !enough || problem.is_broken() => {
            let summary = format!(
                "{ready}/{total} pods ready (need {}); {pod}: {}",
                spec.min_ready,
                problem.describe()
            );
            // With one problem pod the summary already says it all.
            let details = if problems.len() > 1 {
                states
            } else {
                String::new()
            };
            let mut f: Failure = Failure::new(problem.cause(), summary)
                .details(details)
                .hint(problem.hint(ns, pod));
            f.metrics = metrics;
            Err(f)
        }
        _ => {
            let mut p = Passed {
                summary: format!("{ready}/{total} pods ready (need {})", spec.min_ready),
                metrics,
                ..Passed::default()
            };
            if !states.is_empty() {
                p = p.note(states);
            }
            p.warnings = restart_warnings(ns, pods, unix_now());
            Ok(p.into())
        }
    }
}

/// A restart this recent, of a pod that is Ready again, is a warning: the next one may not
/// come back (a memory leak, a liveness probe at its edge).
const RECENT_RESTART_SECS: i64 = 3600;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Warnings for the Ready pods whose containers ended an instance within the last hour
/// (`now` in Unix seconds): OOMKilled, with the memory limit it hit, or any other restart.
fn restart_warnings(ns: &str, pods: &[Pod], now: i64) -> Vec<Warning> {
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| is_ready(p)) {
        let name = pod_name(pod);
        for cs in statuses(pod) {
            let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            let Some(ended) = t.finished_at.as_ref().map(|f| f.0.as_second()) else {
                continue;
            };
            let ago = now - ended;
            // A finish time in the future is a skewed clock: still recent.
            if ago > RECENT_RESTART_SECS {
                continue;
            }
            let minutes = (ago.max(0) / 60).max(1);
            let when = if minutes == 1 {
                "a minute ago".to_string()
            } else {
                format!("{minutes} minutes ago")
            };
            let container = &cs.name;
            let reason = t.reason.as_deref().unwrap_or("terminated");
            let w = if reason == "OOMKilled" {
                let limit = memory_limit(pod, container)
                    .map(|l| format!(" at its {l} memory limit"))
                    .unwrap_or_default();
                Warning::new(
                    format!(
                        "pod {ns}/{name}: container {container} was OOMKilled {when}{limit} ({} restarts); Ready again",
                        cs.restart_count
                    ),
                    format!(
                        "it will be killed again under the same load: raise resources.limits.memory of container {container} in the Deployment (the chart's values), or find what grows (kubectl -n {ns} top pod {name})"
                    ),
                )
            } else {
                Warning::new(
                    format!(
                        "pod {ns}/{name}: container {container} restarted {} times, the last {when} ({reason}, exit code {}); Ready again",
                        cs.restart_count, t.exit_code
                    ),
                    format!(
                        "read why the last instance ended: kubectl -n {ns} logs {name} -c {container} --previous, and kubectl -n {ns} describe pod {name} (liveness probe failures show there)"
                    ),
                )
            };
            out.push(w);
        }
    }
    out
}

/// The memory limit of `container` in the pod's spec, as written (`2Gi`).
fn memory_limit(pod: &Pod, container: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")
        .map(|q| q.0.clone())
}

/// The pod a failure is about: the first broken one, else the first with a problem. One rule
/// for the summary and the log, so the log shown is the summary's pod's.
fn worst_index<T>(problems: &[(T, Problem)]) -> Option<usize> {
    problems
        .iter()
        .position(|(_, p)| p.is_broken())
        .or_else(|| (!problems.is_empty()).then_some(0))
}

/// Which log explains the failure: the failing container of the worst pod, its previous run
/// for a crash loop. None where there is no log to read (image pull, config error, Pending).
fn log_source(pods: &[Pod], spec: &Pods) -> Option<(String, String, bool)> {
    let problems: Vec<(&Pod, Problem)> = pods
        .iter()
        .filter_map(|p| diagnose(p).map(|d| (p, d)))
        .collect();
    let (pod, problem) = problems.get(worst_index(&problems)?).cloned()?;
    match problem {
        Problem::CrashLoop { container, .. } => Some((pod_name(pod), container, true)),
        Problem::NotReady { .. } => {
            let running =
                statuses(pod).find(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))?;
            let container = spec
                .container
                .clone()
                .filter(|c| statuses(pod).any(|s| &s.name == c))
                .unwrap_or_else(|| running.name.clone());
            Some((pod_name(pod), container, false))
        }
        Problem::ImagePull { .. }
        | Problem::ContainerConfig { .. }
        | Problem::Unschedulable { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Verdict;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod fixture")
    }

    fn spec() -> Pods {
        Pods {
            selector: "app=x".into(),
            min_ready: 1,
            container: Some("app".into()),
        }
    }

    fn ready_pod(name: &str) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": name},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "app", "image": "img", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {}}}]}
        }))
    }

    fn crash_pod(name: &str) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": name},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "image": "img", "imageID": "", "ready": false,
                    "restartCount": 7,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        }))
    }

    #[test]
    fn crash_loop_with_enough_ready_pods_still_fails() {
        let out = judge("ns", &spec(), &[ready_pod("a"), crash_pod("b")]);
        let Err(f) = out else {
            panic!("expected failure, got {out:?}")
        };
        assert_eq!(f.cause, Cause::CrashLoop);
        assert!(f.summary.contains("1/2 pods ready"), "{}", f.summary);
        assert!(
            f.summary
                .contains("7 restarts, last exit: Error (exit code 1)"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn crash_loop_reads_the_previous_log() {
        let src = log_source(&[ready_pod("a"), crash_pod("b")], &spec());
        assert_eq!(src, Some(("b".into(), "app".into(), true)));
    }

    #[test]
    fn the_log_shown_is_the_summarys_pod() {
        let mut pull = crash_pod("c");
        if let Some(cs) = pull
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs[0].state = serde_json::from_value(
                serde_json::json!({"waiting": {"reason": "ImagePullBackOff"}}),
            )
            .ok();
            cs[0].last_state = None;
        }
        let pods = [crash_pod("b"), pull];
        let Err(f) = judge("ns", &spec(), &pods) else {
            panic!()
        };
        assert!(
            f.summary.contains("b: container app in CrashLoopBackOff"),
            "{}",
            f.summary
        );
        assert_eq!(
            log_source(&pods, &spec()),
            Some(("b".into(), "app".into(), true))
        );
    }

    #[test]
    fn no_pods_names_the_selector() {
        let Err(f) = judge("ns", &spec(), &[]) else {
            panic!()
        };
        assert_eq!(f.cause, Cause::NoPods);
        assert!(f.summary.contains("app=x"));
    }

    fn restarted_pod(reason: &str, finished: &str) -> Pod {
        pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "litellm",
                "resources": {"limits": {"memory": "2Gi"}}}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "litellm", "ready": true, "image": "i",
                    "imageID": "", "restartCount": 5, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": reason,
                        "finishedAt": finished}}}]}
        }))
    }

    // 2026-01-01T12:00:00Z
    const NOON: i64 = 1_767_268_800;

    #[test]
    fn a_ready_pod_restarted_twelve_minutes_ago_warns() {
        let w = restart_warnings(
            "ns",
            &[restarted_pod("Error", "2026-01-01T11:48:00Z")],
            NOON,
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].reason
                .contains("restarted 5 times, the last 12 minutes ago (Error, exit code 137)"),
            "{w:?}"
        );
        assert!(w[0].hint.contains("--previous"), "{w:?}");
    }

    #[test]
    fn an_oom_kill_names_the_memory_limit_it_hit() {
        let w = restart_warnings(
            "ns",
            &[restarted_pod("OOMKilled", "2026-01-01T11:40:00Z")],
            NOON,
        );
        assert!(
            w[0].reason
                .contains("was OOMKilled 20 minutes ago at its 2Gi memory limit"),
            "{w:?}"
        );
        assert!(w[0].hint.contains("resources.limits.memory"), "{w:?}");
    }

    #[test]
    fn a_restart_over_an_hour_ago_does_not_warn() {
        let w = restart_warnings(
            "ns",
            &[restarted_pod("OOMKilled", "2026-01-01T10:59:00Z")],
            NOON,
        );
        assert!(w.is_empty(), "{w:?}");
        assert!(restart_warnings("ns", &[ready_pod("a")], NOON).is_empty());
    }

    #[test]
    fn enough_ready_pods_pass() {
        let Ok(Verdict::Passed(p)) = judge("ns", &spec(), &[ready_pod("a")]) else {
            panic!()
        };
        assert_eq!(p.summary, "1/1 pods ready (need 1)");
    }
}
