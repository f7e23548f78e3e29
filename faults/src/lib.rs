//! The fault suite's harness: the whole system in processes of its own on
//! 127.0.0.1 (Apache Kafka of one node or three, redis-server with an
//! append-only file, two chat-servers, two publish-servers and the
//! scheduler), posting clients and SSE subscribers that run throughout, and
//! the final check: every message that got a 201 reached every subscriber
//! of its chat exactly once, in id order, and is fetchable.
//!
//! The server binaries are the ones `cargo build --bins` leaves beside the
//! test binary (`make test` builds them first).

use std::path::{Path, PathBuf};

pub use test_support::{KafkaNodes, SseBlock, eventually, free_cluster_port, free_port, unique};

mod clients;
mod cluster;
mod fetch;
mod launcher;
mod load;
mod report;
mod service;

pub use cluster::*;
pub use fetch::*;
pub use load::*;
pub use report::*;
pub use service::*;

/// A binary of the workspace, built beside the running test binary.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` first (make test does)",
        bin.display()
    );
    bin
}
