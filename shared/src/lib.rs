//! The common crate of the four functions: domain types, configuration, telemetry, the
//! HTTP layer (errors, extractors, guards) and the AWS adapters. Only `aws` touches
//! `aws_sdk_*` types; everything else speaks domain types.

pub mod aws;
pub mod config;
pub mod domain;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod payments;
pub mod providers;
pub mod services;
pub mod session;
pub mod telemetry;

pub use services::Services;
