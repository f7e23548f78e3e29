//! Shared building blocks of the chat backend: event types, identifiers,
//! configuration blocks, telemetry, shutdown and the HTTP error type.

pub mod config;
pub mod event;
pub mod id;
pub mod names;
pub mod problem;
pub mod shutdown;
pub mod telemetry;
pub mod validate;
