//! The on-call engineer's laptop, end to end: no `--endpoint`, no cluster DNS. smokecheck finds
//! that the in-cluster names do not resolve, port-forwards through the (fake) API server to a
//! ready pod behind each Service, and every layer passes against the same real LiteLLM, fake
//! vLLM and real PostgreSQL as the other tests. A fault shows up in every layer it touches.

use serde_json::Value;

use crate::harness::{Run, assert_no_leaks, run_in, secret_values_read};
use crate::support::litellm::{MASTER_KEY, VLLM_KEY};
use crate::support::stack::{self, Stack};

fn verify(stack: &Stack, format: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", format],
        &["--suite", &suite],
    );
    let output = run.all_output();
    for secret in [MASTER_KEY, VLLM_KEY, stack.db.password.as_str()] {
        assert!(!output.contains(secret), "a secret leaked:\n{output}");
    }
    let read = secret_values_read(stack.fake.scenario(), &stack.fake);
    assert_no_leaks(stack.fault.name, &read, &run);
    run
}

#[test]
fn every_layer_passes_through_port_forwards() {
    let stack = stack::start(stack::fault("healthy").expect("fault"));
    let run = verify(&stack, "json");
    let doc = run.json();
    let failed: Vec<&Value> = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] != "passed")
        .collect();
    assert!(
        failed.is_empty(),
        "not passed: {failed:#?}\nstderr: {}",
        run.stderr
    );
    assert_eq!(run.code, 0);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for layer in [
        "platform::",
        "kubernetes::",
        "database::",
        "litellm::",
        "vllm::",
        "e2e::trimming::healthy",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(layer)),
            "no {layer} check ran: {names:?}"
        );
    }
    let connect = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "database::connect")
        .expect("database::connect");
    assert!(
        connect["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("(port-forward)"),
        "{connect:#}"
    );
    // Every forwarded endpoint went through the API server's portforward subresource.
    let forwarded: Vec<String> = stack
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/portforward"))
        .map(|r| r.path)
        .collect();
    for pod in [
        "/pods/litellm-",
        "/pods/vllm-",
        "/pods/cloudnative-pg-cluster-1/",
    ] {
        assert!(
            forwarded.iter().any(|p| p.contains(pod)),
            "no port-forward to {pod}: {forwarded:?}"
        );
    }
}

#[test]
fn the_terminal_says_how_each_endpoint_was_reached() {
    let stack = stack::start(stack::fault("healthy").expect("fault"));
    let run = verify(&stack, "plain");
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for line in [
        "· litellm/litellm via port-forward to pod litellm-7c9d8f6b5d-",
        "· vllm/vllm via port-forward to pod vllm-5b6f7d8c9f-q8r2n:8000 at 127.0.0.1:",
        "· litellm/cloudnative-pg-cluster-rw via port-forward to pod cloudnative-pg-cluster-1:5432 at 127.0.0.1:",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing:\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_rotated_vllm_key_fails_in_every_layer_it_touches() {
    let stack = stack::start(stack::fault("key-mismatch").expect("fault"));
    let run = verify(&stack, "json");
    assert_eq!(run.code, 1);
    assert_eq!(
        run.check("kubernetes::secrets::vllm-api-key")["cause"],
        "key_mismatch"
    );
    assert_eq!(run.check("vllm::models")["cause"], "upstream_auth");
    assert_eq!(
        run.check("e2e::chat::stack-key-mismatch")["cause"],
        "upstream_auth"
    );
    assert_eq!(run.check("database::connect")["status"], "passed");
}

#[test]
fn every_sandbox_fault_names_a_real_scenario_and_alias() {
    for f in stack::FAULTS {
        let s = crate::support::fake_kube::load_scenario(f.scenario);
        assert!(!s.objects.is_empty(), "{}", f.name);
        assert!(
            crate::support::litellm::alias::ALL.contains(&f.alias),
            "{}",
            f.name
        );
    }
    assert_eq!(stack::FAULTS[0].name, "healthy");
}

#[test]
fn an_override_for_one_endpoint_still_port_forwards_the_others() {
    let stack = stack::start(stack::fault("healthy").expect("fault"));
    let dir = tempfile::tempdir().expect("temp dir");
    let suite = stack.suite.display().to_string();
    let litellm = format!("litellm={}", crate::support::litellm::litellm_proxy().url());
    let run = run_in(
        dir,
        &stack.kubeconfig,
        &["--format", "json"],
        &[
            "--suite",
            &suite,
            "--endpoint",
            &litellm,
            "database::connect",
            "litellm::live",
            "vllm::health",
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.check("database::connect")["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("(port-forward)")
    );
    assert!(
        run.check("vllm::health")["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1")
    );
}
