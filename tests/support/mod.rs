//! The test bed: real components where they can run here, faithful fakes where they cannot.
#![allow(dead_code, unused_imports)]

pub mod alias_view;
pub mod certs;
pub mod fake_kube;
pub mod fake_vllm;
pub mod hostile;
pub mod impostor;
pub mod in_flight;
pub mod ingress;
pub mod latency;
pub mod litellm;
pub mod open_proxy;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod pushgateway;
pub mod recording_proxy;
pub mod relay;
pub mod scale;
pub mod stack;
pub mod tls_front;
pub mod warnings;
