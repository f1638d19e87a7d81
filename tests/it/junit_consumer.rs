//! The JUnit report read by a real consumer: Python's junitparser (as GitLab and Jenkins
//! plugins parse it), from a run with a pass, a failure, a skip, metrics and a flaky retry.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::verify_json;
use crate::support::fake_kube::FakeKube;

/// The Python with junitparser that `ci/test` installs; missing = a loud failure.
fn python() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let py = home.join(".cache/smokecheck/venv-tools/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run ci/test, which installs junitparser there",
        py.display()
    );
    py
}

const READER: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
out = {"tests": xml.tests, "failures": xml.failures, "skipped": xml.skipped, "suites": {}, "cases": {}}
for suite in xml:
    out["suites"][suite.name] = suite.tests
    for case in suite:
        entry = {"result": [type(r).__name__ for r in case.result],
                 "message": [r.message for r in case.result],
                 "type": [r.type for r in case.result],
                 "properties": {p.get("name"): p.get("value") for p in case._elem.iter("property")},
                 "flaky": len(case._elem.findall("flakyFailure"))}
        out["cases"][case.name] = entry
print(json.dumps(out))
"#;

/// What junitparser reads from `junit` (READER's JSON); panics when it cannot parse it.
pub fn parse(junit: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, junit).expect("write");
    let out = Command::new(python())
        .arg("-c")
        .arg(READER)
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "junitparser failed: {}\n{junit}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

#[test]
fn junitparser_reads_counts_failures_properties_and_flaky_reruns() {
    // missing-key: one failure, one skip (the key coupling); a pods listing that times out once
    // and then answers makes kubernetes::pods::litellm flaky.
    let fake = FakeKube::start("missing-key");
    fake.delay_next_requests("/pods", Duration::from_secs(4), 1);
    let run = verify_json(
        &fake,
        &[
            "--test-threads",
            "1",
            "--timeout",
            "1s",
            "--wait",
            "4s",
            "kubernetes::",
            "--skip",
            "cnpg",
            "--skip",
            "jobs",
            "--skip",
            "guardrail",
            "--skip",
            "services",
        ],
    );
    let parsed = parse(&run.junit.clone().expect("junit written"));
    let doc = run.json();
    assert_eq!(
        parsed["tests"],
        doc["checks"].as_array().map(Vec::len).unwrap_or(0)
    );
    assert_eq!(parsed["failures"], doc["summary"]["failed"]);
    assert_eq!(parsed["skipped"], doc["summary"]["skipped"]);
    assert_eq!(parsed["suites"]["kubernetes"], parsed["tests"]);

    let missing = &parsed["cases"]["kubernetes::secrets::litellm-secrets"];
    assert_eq!(missing["result"][0], "Failure", "{missing}");
    assert_eq!(missing["type"][0], "missing_key");
    assert_eq!(
        missing["message"][0],
        "secret litellm/litellm-secrets has no key CA_VLLM_LOCAL_API_KEY"
    );

    let skipped = &parsed["cases"]["kubernetes::secrets::vllm-api-key"];
    assert_eq!(skipped["result"][0], "Skipped", "{skipped}");

    let pods = &parsed["cases"]["kubernetes::pods::litellm"];
    assert_eq!(
        pods["result"].as_array().map(Vec::len),
        Some(0),
        "passed in the end: {pods}"
    );
    assert_eq!(pods["flaky"], 1, "one flaky rerun recorded: {pods}");
    assert_eq!(pods["properties"]["ready_pods"], "2", "{pods}");
    assert_eq!(pods["properties"]["attempts"], "2", "{pods}");
    let entry = run.check("kubernetes::pods::litellm");
    assert_eq!(entry["attempts"], 2);
}
