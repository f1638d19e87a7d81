//! One integration-test binary, so the test bed's servers are started once.

#[path = "../support/mod.rs"]
mod support;

mod postgres_bed;
