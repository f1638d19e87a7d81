//! The platform layer: prerequisites run first and name what is missing, and the checks that
//! need a missing prerequisite are skipped with its reason instead of failing in cascade.

use crate::harness::{Run, run_in, text, verify_json};
use crate::support::fake_kube::FakeKube;

fn run(scenario: &str, args: &[&str]) -> Run {
    let fake = FakeKube::start(scenario);
    verify_json(&fake, args)
}

#[test]
fn healthy_platform_passes() {
    let r = run("healthy", &["platform"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.statuses().len(), 5);
    assert_eq!(
        text(&r.check("platform::argocd-app"), "summary"),
        "Application argocd/litellm is Synced and Healthy"
    );
    assert_eq!(
        text(&r.check("platform::crds"), "summary"),
        "served: clusters.postgresql.cnpg.io, sealedsecrets.bitnami.com, applications.argoproj.io"
    );
}

#[test]
fn operator_scaled_to_zero_is_unavailable_despite_available_true() {
    let r = run("operator-scaled-to-zero", &["platform"]);
    assert_eq!(r.code, 1);
    let c = r.check("platform::cnpg-operator");
    assert_eq!(c["cause"], "operator_unavailable", "{c:#}");
    assert_eq!(
        text(&c, "summary"),
        "the CloudNativePG operator is scaled to zero (cnpg-system/cnpg-controller-manager has replicas: 0)"
    );
    assert!(
        text(&c, "details").contains("condition Available=True"),
        "{c:#}"
    );
    assert!(
        text(&c, "hint")
            .contains("kubectl -n cnpg-system scale deploy/cnpg-controller-manager --replicas=1")
    );
}

#[test]
fn operators_out_of_rbac_reach_are_skipped_with_the_reason() {
    let r = run("operators-forbidden", &["platform"]);
    assert_eq!(r.code, 0, "skips are not failures: {}", r.stdout);
    for name in [
        "platform::cnpg-operator",
        "platform::sealed-secrets-controller",
    ] {
        let c = r.check(name);
        assert_eq!(c["status"], "skipped", "{c:#}");
        assert!(
            text(&c, "skip_reason").contains("forbidden: cannot get deployments.apps"),
            "{c:#}"
        );
    }
}

#[test]
fn terminating_namespace_fails_and_skips_its_checks() {
    let r = run("namespace-terminating", &[]);
    assert_eq!(r.code, 1);
    let c = r.check("platform::namespace");
    assert_eq!(c["cause"], "namespace_terminating", "{c:#}");
    assert!(
        text(&c, "summary").starts_with("namespace litellm is Terminating since 2026-11-28"),
        "{c:#}"
    );
    for (name, status) in r.statuses() {
        if name.starts_with("kubernetes::") && !name.contains("vllm/") {
            assert_eq!(status, "skipped", "{name}");
        }
    }
    assert_eq!(
        r.check("kubernetes::services::vllm/vllm")["status"],
        "passed"
    );
    let skipped = r.check("kubernetes::pods::litellm");
    assert!(
        text(&skipped, "skip_reason").starts_with("skipped: namespace litellm is Terminating"),
        "{skipped:#}"
    );
}

#[test]
fn out_of_sync_application_lists_the_drifted_resources() {
    let r = run("argocd-out-of-sync", &["platform::argocd-app"]);
    assert_eq!(r.code, 1);
    let c = r.check("platform::argocd-app");
    assert_eq!(c["cause"], "app_out_of_sync", "{c:#}");
    assert_eq!(
        text(&c, "summary"),
        "Application argocd/litellm is OutOfSync: 2 resource(s) drifted from Git: ConfigMap litellm/litellm-config, Deployment litellm/litellm"
    );
}

#[test]
fn a_syncing_application_fails_from_outside_and_is_skipped_by_its_own_hook() {
    let outside = run("argocd-syncing", &["platform::argocd-app"]);
    let c = outside.check("platform::argocd-app");
    assert_eq!(c["cause"], "app_syncing", "{c:#}");
    assert!(
        text(&c, "hint").contains("SMOKECHECK_ARGOCD_APP=argocd/litellm"),
        "{c:#}"
    );

    let fake = FakeKube::start("argocd-syncing");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = fake.write_kubeconfig(dir.path());
    let term = dir.path().join("termination-log").display().to_string();
    let hook = run_in(
        dir,
        &kubeconfig,
        &["--format", "json"],
        &[
            "platform",
            "--argocd-app",
            "argocd/litellm",
            "--termination-log",
            &term,
            "--wait",
            "30s",
        ],
    );
    assert_eq!(
        hook.code, 0,
        "the hook never waits on or fails its own sync: {}",
        hook.stdout
    );
    let c = hook.check("platform::argocd-app");
    assert_eq!(c["status"], "skipped", "{c:#}");
    assert!(
        text(&c, "skip_reason").starts_with("running inside this Application's sync"),
        "{c:#}"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.path.contains("/applications/")),
        "the Application is not even read"
    );
}
