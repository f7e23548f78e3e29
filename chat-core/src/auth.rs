//! Optional token authentication. Off unless a key is configured; then
//! every request carries a JWT whose `sub` is the user id, `exp` its expiry
//! and, optionally, `chats` the chats its holder may read and write.
//! Tokens are verified with a shared HMAC secret (HS256) or a public key
//! (RS256 or ES256, PEM), with no leeway on `exp`; `alg: none` and every
//! algorithm but the configured one are refused.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
use crate::validate::{ChatId, UserId};

/// How tokens are checked.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthConfig {
    /// Shared secret of HS256 tokens; setting it turns authentication on.
    #[arg(long = "auth-hmac-key", env = "AUTH_HMAC_KEY", hide_env_values = true)]
    pub auth_hmac_key: Option<String>,

    /// PEM public key (RSA: RS256, EC P-256: ES256) of tokens signed
    /// elsewhere; setting it turns authentication on.
    #[arg(long = "auth-public-key-file", env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// The chats the holder may read and write; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chats: Option<Vec<String>>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub chats: Option<Vec<String>>,
    /// Unix seconds.
    pub expires_at: i64,
}

impl Identity {
    /// Checks that the holder may use `chat`: 403 otherwise.
    pub fn allow(&self, chat: &ChatId) -> Result<(), Problem> {
        match &self.chats {
            Some(chats) if !chats.iter().any(|c| c == chat.as_str()) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "chat-not-allowed",
                "Forbidden",
                format!("the token does not allow chat {chat}"),
            )),
            _ => Ok(()),
        }
    }

    /// Checks a user id the request names besides the token: 403 if it is
    /// someone else.
    pub fn same_user(&self, named: Option<&str>) -> Result<(), Problem> {
        match named {
            Some(named) if named != self.user.as_str() => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "user-mismatch",
                "Forbidden",
                format!(
                    "userId {named:?} is not the token's user {:?}; leave it out or make it match",
                    self.user.as_str()
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// Verifies (and, with an HMAC secret, issues) tokens.
pub struct Auth {
    decoding: DecodingKey,
    validation: Validation,
    /// Only with a shared secret: tokens for local testing.
    encoding: Option<EncodingKey>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

/// A 401 that says why, with the `WWW-Authenticate` challenge.
fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
}

impl Auth {
    /// The verifier `config` asks for; `None` when authentication is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, String> {
        let (decoding, algorithm, encoding) =
            match (&config.auth_hmac_key, &config.auth_public_key_file) {
                (None, None) => return Ok(None),
                (Some(_), Some(_)) => {
                    return Err(
                        "give --auth-hmac-key or --auth-public-key-file, not both".to_owned()
                    );
                }
                (Some(secret), None) => {
                    if secret.len() < 16 {
                        return Err("--auth-hmac-key must be at least 16 bytes".to_owned());
                    }
                    (
                        DecodingKey::from_secret(secret.as_bytes()),
                        Algorithm::HS256,
                        Some(EncodingKey::from_secret(secret.as_bytes())),
                    )
                }
                (None, Some(path)) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                        (key, Algorithm::RS256, None)
                    } else {
                        let key = DecodingKey::from_ec_pem(&pem).map_err(|e| {
                            format!("{} is not an RSA or EC public key: {e}", path.display())
                        })?;
                        (key, Algorithm::ES256, None)
                    }
                }
            };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Some(Self {
            decoding,
            validation,
            encoding,
        }))
    }

    /// Checks a token; answers whom it speaks for, or a 401 saying why not.
    pub fn verify(&self, token: &str) -> Result<Identity, Problem> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => unauthorized("the token has expired"),
                ErrorKind::InvalidSignature => unauthorized("the token's signature is not valid"),
                ErrorKind::InvalidAlgorithm => {
                    unauthorized("the token is not signed with the accepted algorithm")
                }
                _ => unauthorized(format!("the token is not valid: {e}")),
            })?;
        let claims = data.claims;
        let user: UserId = claims
            .sub
            .parse()
            .map_err(|e| unauthorized(format!("the token's sub is not a valid user id: {e}")))?;
        Ok(Identity {
            user,
            chats: claims.chats,
            expires_at: claims.exp,
        })
    }

    /// Signs a token for `user` (HMAC secret only).
    pub fn issue(
        &self,
        user: &UserId,
        chats: Option<Vec<String>>,
        ttl: Duration,
    ) -> Result<(String, i64), String> {
        let key = self
            .encoding
            .as_ref()
            .ok_or("tokens can be issued only with --auth-hmac-key")?;
        let exp = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp,
            chats,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map(|token| (token, exp))
            .map_err(|e| e.to_string())
    }

    /// The token of a request: `Authorization: Bearer`, else the
    /// `chat_token` cookie, else `query_token` (`?token=`, for EventSource,
    /// which cannot set headers). 401 when there is none.
    pub fn token<'a>(
        headers: &'a HeaderMap,
        query_token: Option<&'a str>,
    ) -> Result<&'a str, Problem> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("the Authorization header is not text"))?;
            return value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(|| unauthorized("the Authorization header must be 'Bearer <token>'"));
        }
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("chat_token="))
            .next();
        cookie
            .or(query_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("a token is required: Authorization: Bearer <token>"))
    }
}

/// Parses a lifetime such as `1h`, `30m`, `45s` or `3600` (seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a lifetime: {text:?} (try 1h, 30m, 45s)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("not a lifetime: {text:?} (try 1h, 30m, 45s)")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::from_config(&AuthConfig {
            auth_hmac_key: Some("a-test-secret-of-some-length".into()),
            auth_public_key_file: None,
        })
        .expect("config")
        .expect("on")
    }

    #[test]
    fn a_token_round_trips_and_limits_its_chats() {
        let auth = auth();
        let user: UserId = "alice".parse().expect("user");
        let (token, _) = auth
            .issue(&user, Some(vec!["lobby".into()]), Duration::from_secs(60))
            .expect("token");
        let identity = auth.verify(&token).expect("valid");
        assert_eq!(identity.user, user);
        assert!(identity.allow(&"lobby".parse().expect("chat")).is_ok());
        let refused = identity
            .allow(&"other".parse().expect("chat"))
            .expect_err("403");
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(identity.same_user(Some("alice")).is_ok());
        assert_eq!(
            identity.same_user(Some("bob")).expect_err("403").status,
            StatusCode::FORBIDDEN
        );
    }

    /// Tokens signed elsewhere with a private key (made here by the
    /// `openssl` command) pass with its public key, and no other does.
    #[test]
    fn public_keys_verify_rs256_and_es256_tokens() {
        let dir = std::env::temp_dir().join(format!("auth-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let openssl = |args: &[&str]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("the openssl command runs");
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ]);
        openssl(&["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"]);
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ]);
        openssl(&["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"]);
        let claims = Claims {
            sub: "alice".into(),
            exp: chrono::Utc::now().timestamp() + 600,
            chats: None,
        };
        let read = |name: &str| std::fs::read(dir.join(name)).expect("key file");
        let rsa_token = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("RSA key"),
        )
        .expect("RS256");
        let ec_token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(&read("ec.pem")).expect("EC key"),
        )
        .expect("ES256");
        let verifier = |file: &str| {
            Auth::from_config(&AuthConfig {
                auth_hmac_key: None,
                auth_public_key_file: Some(dir.join(file)),
            })
            .expect("config")
            .expect("on")
        };
        let (rsa, ec) = (verifier("rsa.pub.pem"), verifier("ec.pub.pem"));
        assert_eq!(
            rsa.verify(&rsa_token).expect("RS256 passes").user.as_str(),
            "alice"
        );
        assert_eq!(
            ec.verify(&ec_token).expect("ES256 passes").user.as_str(),
            "alice"
        );
        assert!(rsa.verify(&ec_token).is_err(), "another algorithm");
        assert!(ec.verify(&rsa_token).is_err(), "another algorithm");
        let hmac = auth()
            .issue(
                &"alice".parse().expect("user"),
                None,
                Duration::from_secs(60),
            )
            .expect("token")
            .0;
        assert!(
            rsa.verify(&hmac).is_err(),
            "an HS256 token against a public key"
        );
        assert!(
            rsa.issue(
                &"alice".parse().expect("user"),
                None,
                Duration::from_secs(60)
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lifetimes_read_as_people_write_them() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn the_token_comes_from_the_header_the_cookie_or_the_query() {
        let mut headers = HeaderMap::new();
        assert!(Auth::token(&headers, None).is_err());
        assert_eq!(Auth::token(&headers, Some("q")).expect("query"), "q");
        headers.insert(header::COOKIE, "a=b; chat_token=c".parse().expect("value"));
        assert_eq!(Auth::token(&headers, Some("q")).expect("cookie"), "c");
        headers.insert(header::AUTHORIZATION, "Bearer h".parse().expect("value"));
        assert_eq!(Auth::token(&headers, Some("q")).expect("header"), "h");
    }
}
