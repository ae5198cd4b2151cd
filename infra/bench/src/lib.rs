//! What the `bench` binary and the `sam-local-check` binary share: the loopback Lambda
//! Runtime API a function process is spawned behind.

pub mod runtime;
