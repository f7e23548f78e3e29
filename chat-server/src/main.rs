//! The chat-server binary: parse the configuration, set up logs, serve.
//! `chat-server token ...` prints a token for local testing instead.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = chat_server::Cli::parse();
    if let Some(chat_server::Command::Token(args)) = cli.command {
        return chat_server::token::print(&args);
    }
    chat_core::telemetry::init();
    let shutdown = chat_core::shutdown::on_signal();
    match chat_server::Server::bind(cli.server).await {
        Ok(server) => {
            server.run(shutdown).await;
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "chat-server failed");
            ExitCode::FAILURE
        }
    }
}
