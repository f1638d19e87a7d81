//! One integration-test binary, so the test bed's servers are started once.

#[path = "../support/mod.rs"]
mod support;

mod cli_contract;
mod cli_run;
mod deploy;
mod fleet;
mod forwarding;
mod harness;
mod hostile;
mod hostile_apiserver;
mod hostile_bed;
mod hostile_database;
mod ingress;
mod ingress_bed;
mod junit_consumer;
mod kube_credentials;
mod kube_fake;
mod laptop;
mod latency_bed;
mod leaks;
mod llm_bed;
mod monitor;
mod pipeline;
mod postgres_bed;
mod prometheus_bed;
mod scale_bed;
mod scheduling;
mod serve;
mod snapshots;
mod verify_database;
mod verify_e2e;
mod verify_kube;
mod verify_platform;
mod warning_bed;
mod warnings;
