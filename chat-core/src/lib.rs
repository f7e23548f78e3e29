//! Shared building blocks of the chat backend: event types, identifiers,
//! configuration blocks, telemetry, shutdown and the HTTP error type.
//!
//! Without the default `server` feature only the pure parts build (events,
//! ids, validation, request bodies, SSE frames), with no Kafka, Redis or
//! HTTP library: the fuzz targets use that.

pub mod api;
pub mod client_ip;
pub mod event;
pub mod id;
pub mod sse;
pub mod validate;

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod hot;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod names;
#[cfg(feature = "server")]
pub mod problem;
#[cfg(feature = "server")]
pub mod read_model;
#[cfg(feature = "server")]
pub mod redis_conn;
#[cfg(feature = "server")]
pub mod serve;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod telemetry;
