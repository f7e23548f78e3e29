//! The publish-server binary: parse the configuration, then serve.

use clap::Parser;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = publish_server::Config::parse();
    let bind = publish_server::Server::bind(config);
    chat_core::serve::main("publish-server", bind, publish_server::Server::run).await
}
