//! Fidelity of the fake Kubernetes API server: real kubectl reads every scenario object from it.
