//! The chat-server binary: parse the configuration, then serve.
//! `chat-server token ...` prints a token for local testing instead.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = chat_server::Cli::parse();
    if let Some(chat_server::Command::Token(args)) = cli.command {
        return chat_server::token::print(&args);
    }
    let bind = chat_server::Server::bind(cli.server);
    chat_core::serve::main("chat-server", bind, chat_server::Server::run).await
}
