//! One integration-test binary, so the test bed's servers are started once.

mod kube_fake;
#[path = "../support/mod.rs"]
mod support;
