//! One integration-test binary, so the test bed's servers are started once.

#[path = "../support/mod.rs"]
mod support;

mod harness;
mod kube_fake;
mod llm_bed;
mod postgres_bed;
mod snapshots;
mod verify_e2e;
mod verify_kube;
