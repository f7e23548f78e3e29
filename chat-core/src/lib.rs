//! Shared building blocks of the chat backend: event types, identifiers,
//! configuration blocks, telemetry, shutdown and the HTTP error type.

pub mod auth;
pub mod config;
pub mod event;
pub mod hot;
pub mod id;
pub mod metrics;
pub mod names;
pub mod problem;
pub mod read_model;
pub mod redis_conn;
pub mod shutdown;
pub mod sse;
pub mod telemetry;
pub mod validate;
