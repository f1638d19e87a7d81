//! A namespace as crowded as a real one: filler Pods and Secrets beside the suite's own, so a
//! benchmark sees what 2,000 pods and 50 Secrets cost (list answers, memory) without any of
//! them changing what the suite checks.
//!
//! Filler pods are copies of the scenario's own pods (their real shapes and sizes: containers,
//! env, probes, status), renamed and relabelled as other applications' (`filler-<app>`), so no
//! selector of the suite matches them. Filler Secrets mix the kinds a namespace accumulates:
//! Helm release records (the large ones, ~40 KB), TLS pairs, registry credentials and small
//! Opaque ones, with seeded random content. Their values are never read by the suite's checks.

use base64::Engine as _;
use serde_json::{Value, json};

use super::fake_kube::{Scenario, str_at};
use super::latency::SplitMix64;

/// How many other applications the filler belongs to (labels, name prefixes).
const APPS: u64 = 40;

/// The label every filler object carries, so tests can tell filler from the suite's objects.
pub const FILLER_LABEL: &str = "smokecheck.bed/filler";

/// Adds `pods` filler Pods and `secrets` filler Secrets to `namespace`, drawn from `seed`.
/// Panics when the scenario has no pod to copy.
pub fn fill(scenario: &mut Scenario, namespace: &str, pods: usize, secrets: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let templates: Vec<Value> = scenario
        .of_kind("Pod")
        .filter(|p| str_at(p, "/metadata/namespace") == Some(namespace))
        .cloned()
        .collect();
    assert!(
        pods == 0 || !templates.is_empty(),
        "scenario {}: no pod in {namespace} to copy for filler",
        scenario.name
    );
    for k in 0..pods {
        let template = &templates[k % templates.len()];
        scenario
            .objects
            .push(filler_pod(template, namespace, k, &mut rng));
    }
    for k in 0..secrets {
        scenario.objects.push(filler_secret(namespace, k, &mut rng));
    }
}

fn app(k: usize) -> String {
    format!("filler-{:02}", k as u64 % APPS)
}

fn hex(rng: &mut SplitMix64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(len);
    s
}

/// A UUID-shaped identifier (version 5 bits set, as the fixtures' are).
fn uid(rng: &mut SplitMix64) -> String {
    let h = hex(rng, 32);
    format!(
        "{}-{}-5{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn filler_pod(template: &Value, namespace: &str, k: usize, rng: &mut SplitMix64) -> Value {
    let app = app(k);
    let hash = hex(rng, 10);
    let name = format!("{app}-{hash}-{}", hex(rng, 5));
    let mut pod = template.clone();
    let meta = &mut pod["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(namespace);
    meta["generateName"] = json!(format!("{app}-{hash}-"));
    meta["uid"] = json!(uid(rng));
    meta["labels"] = json!({
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": app,
        "pod-template-hash": hash,
        FILLER_LABEL: "true",
    });
    meta["ownerReferences"] = json!([{
        "apiVersion": "apps/v1",
        "blockOwnerDeletion": true,
        "controller": true,
        "kind": "ReplicaSet",
        "name": format!("{app}-{hash}"),
        "uid": uid(rng),
    }]);
    if let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) {
        let ip = format!("10.52.{}.{}", rng.below(250) + 1, rng.below(250) + 2);
        status.insert("podIP".into(), json!(ip));
        status.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    pod
}

fn filler_secret(namespace: &str, k: usize, rng: &mut SplitMix64) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let random = |rng: &mut SplitMix64, n: usize| -> Vec<u8> {
        (0..n).map(|_| (rng.next_u64() & 0xff) as u8).collect()
    };
    let app = app(k);
    let (name, kind, data, mut labels) = match k % 5 {
        // Helm keeps each release's manifest gzipped and base64-encoded in a Secret.
        0 => {
            let version = k / 5 + 1;
            let release = b64(&random(rng, 30 * 1024));
            (
                format!("sh.helm.release.v1.{app}.v{version}"),
                "helm.sh/release.v1",
                json!({"release": b64(release.as_bytes())}),
                json!({"name": app, "owner": "helm", "status": "deployed", "version": version.to_string()}),
            )
        }
        1 => {
            let pem = |rng: &mut SplitMix64, label: &str, bytes: usize| {
                let body = b64(&random(rng, bytes));
                let lines: Vec<&str> = body
                    .as_bytes()
                    .chunks(64)
                    .filter_map(|c| std::str::from_utf8(c).ok())
                    .collect();
                format!(
                    "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                    lines.join("\n")
                )
            };
            (
                format!("{app}-tls-{k}"),
                "kubernetes.io/tls",
                json!({
                    "tls.crt": b64(pem(rng, "CERTIFICATE", 1100).as_bytes()),
                    "tls.key": b64(pem(rng, "PRIVATE KEY", 1200).as_bytes()),
                }),
                json!({"app.kubernetes.io/name": app}),
            )
        }
        2 => {
            let auth = b64(format!("robot:{}", hex(rng, 40)).as_bytes());
            let config = json!({"auths": {"registry.example.internal": {"auth": auth}}});
            (
                format!("{app}-pull-{k}"),
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": b64(config.to_string().as_bytes())}),
                json!({"app.kubernetes.io/name": app}),
            )
        }
        _ => {
            let mut data = serde_json::Map::new();
            for i in 0..(3 + rng.below(4)) {
                let len = 16 + rng.below(48) as usize;
                data.insert(format!("KEY_{i}"), json!(b64(hex(rng, len).as_bytes())));
            }
            (
                format!("{app}-env-{k}"),
                "Opaque",
                Value::Object(data),
                json!({"app.kubernetes.io/name": app}),
            )
        }
    };
    labels[FILLER_LABEL] = json!("true");
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "creationTimestamp": "2026-10-02T14:20:05Z",
            "resourceVersion": (800_000 + k).to_string(),
            "uid": uid(rng),
        },
        "data": data,
    })
}

/// The aliases of a scaled proxy config: `chat-001`, `chat-002`, ...
pub fn alias_names(n: usize) -> Vec<String> {
    let width = n.to_string().len().max(3);
    (1..=n).map(|i| format!("chat-{i:0width$}")).collect()
}
