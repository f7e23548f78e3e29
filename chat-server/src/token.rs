//! `chat-server token`: prints a signed token for local testing (needs the
//! HMAC key the servers verify with).

use std::io::Write as _;
use std::process::ExitCode;

use chat_core::auth::{Auth, AuthConfig, AuthSetupError};
use chat_core::validate::{ChatId, Invalid, UserId};

/// Prints a signed token (needs the HMAC key the servers verify with).
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
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
    auth: AuthConfig,
}

/// Why no token was made.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

fn token(args: &TokenArgs) -> Result<String, TokenError> {
    let auth = Auth::from_config(&args.auth)?.ok_or(AuthSetupError::Off)?;
    let user: UserId = args.user.parse()?;
    for chat in args.chats.iter().flatten() {
        chat.parse::<ChatId>()?;
    }
    let ttl = chat_core::auth::parse_ttl(&args.ttl)?;
    let (token, _) = auth.issue(&user, args.chats.clone(), ttl)?;
    Ok(token)
}

/// Prints the token `args` ask for on stdout, or why not on stderr.
pub fn print(args: &TokenArgs) -> ExitCode {
    match token(args) {
        Ok(token) => {
            let _ = writeln!(std::io::stdout(), "{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "chat-server token: {error}");
            ExitCode::FAILURE
        }
    }
}
