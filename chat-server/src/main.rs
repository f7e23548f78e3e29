//! The chat-server binary: parse the configuration, set up logs, serve.
//! `chat-server token ...` prints a token for local testing instead.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

/// Prints a signed token (needs the HMAC key the servers verify with).
#[derive(Debug, Parser)]
#[command(name = "chat-server token", about = "Prints a token for local testing")]
struct TokenArgs {
    /// The user the token speaks for (its `sub`).
    #[arg(long)]
    user: String,
    /// Chats the holder may read and write, comma-separated (default: any).
    #[arg(long, value_delimiter = ',')]
    chats: Option<Vec<String>>,
    /// Lifetime, such as 1h, 30m or 45s.
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[command(flatten)]
    auth: chat_core::auth::AuthConfig,
}

fn token(args: TokenArgs) -> Result<String, String> {
    let auth = chat_core::auth::Auth::from_config(&args.auth)?
        .ok_or("set AUTH_HMAC_KEY (or --auth-hmac-key) to sign tokens")?;
    let user = args
        .user
        .parse()
        .map_err(|e: chat_core::validate::Invalid| e.to_string())?;
    for chat in args.chats.iter().flatten() {
        chat.parse::<chat_core::validate::ChatId>()
            .map_err(|e| e.to_string())?;
    }
    let ttl = chat_core::auth::parse_ttl(&args.ttl)?;
    auth.issue(&user, args.chats, ttl).map(|(token, _)| token)
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        let args = TokenArgs::parse_from(std::env::args().skip(1));
        return match token(args) {
            Ok(token) => {
                let _ = writeln!(std::io::stdout(), "{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "chat-server token: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let config = chat_server::Config::parse();
    chat_core::telemetry::init();
    let shutdown = chat_core::shutdown::on_signal();
    let result = match chat_server::Server::bind(config).await {
        Ok(server) => server.run(shutdown).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "chat-server failed");
            ExitCode::FAILURE
        }
    }
}
