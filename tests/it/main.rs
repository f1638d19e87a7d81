//! One integration-test binary, so the test bed's servers are started once.

#[path = "../support/mod.rs"]
mod support;

mod deploy;
mod harness;
mod hostile_bed;
mod hostile_database;
mod junit_consumer;
mod kube_fake;
mod laptop;
mod llm_bed;
mod postgres_bed;
mod snapshots;
mod verify_database;
mod verify_e2e;
mod verify_kube;
mod verify_platform;
