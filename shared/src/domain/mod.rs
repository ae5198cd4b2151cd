//! Domain types: validated values that cannot hold bad data once constructed.

pub mod audit;
pub mod catalog;
pub mod credits;
pub mod expiry;
pub mod generation;
pub mod ids;
pub mod ledger;
pub mod payment;
pub mod products;
pub mod secrets;
pub mod user;

pub use credits::Credits;
pub use ids::{ApiKeyId, AuditId, GenerationId, LedgerId, UploadId, UserId};
