//! The publish-server binary: parse the configuration, set up logs, serve.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = publish_server::Config::parse();
    chat_core::telemetry::init();
    let shutdown = chat_core::shutdown::on_signal();
    let result = match publish_server::Server::bind(config).await {
        Ok(server) => server.run(shutdown).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "publish-server failed");
            ExitCode::FAILURE
        }
    }
}
