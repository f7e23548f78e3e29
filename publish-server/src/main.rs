//! The publish-server binary: parse the configuration, set up logs, serve.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = publish_server::Config::parse();
    chat_core::telemetry::init();
    let shutdown = chat_core::shutdown::on_signal();
    match publish_server::Server::bind(config).await {
        Ok(server) => {
            server.run(shutdown).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "publish-server failed");
            ExitCode::FAILURE
        }
    }
}
