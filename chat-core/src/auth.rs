//! Optional token authentication. Off unless a key is configured; then
//! every request carries a JWT whose `sub` is the user id, `exp` its expiry
//! and, optionally, `chats` the chats its holder may read and write.
//! Tokens are verified with a shared HMAC secret (HS256) or a public key
//! (RS256 or ES256, PEM), with no leeway on `exp` and `nbf`; `alg: none`
//! and every algorithm but the configured one are refused. With a public
//! key, the token must also name this service's issuer (`iss`) and audience
//! (`aud`): the identity provider signs tokens for other services too.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::validate::{ChatId, Invalid, UserId};

/// Why a request's token was refused: 401 (no valid token) or 403 (a valid
/// token that does not allow this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: Authorization: Bearer <token>")]
    Missing,
    #[error("the Authorization header is not text")]
    HeaderNotText,
    #[error("the Authorization header must be 'Bearer <token>'")]
    NotBearer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued by another issuer (iss)")]
    WrongIssuer,
    #[error("the token is meant for another audience (aud)")]
    WrongAudience,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token is not signed with the accepted algorithm")]
    WrongAlgorithm,
    #[error("the token is not valid: {0}")]
    Malformed(String),
    #[error("the token's sub is not a valid user id: {0}")]
    BadSubject(Invalid),
    /// 403: the token's `chats` claim leaves this chat out.
    #[error("the token does not allow chat {0}")]
    ChatNotAllowed(ChatId),
    /// 403: the request names another user than the token's.
    #[error("userId {named:?} is not the token's user {user:?}; leave it out or make it match")]
    UserMismatch { named: String, user: String },
}

/// Why tokens cannot be verified or issued as configured.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("give --auth-hmac-key or --auth-public-key-file, not both")]
    BothKeys,
    #[error("--auth-hmac-key must be at least {MIN_HMAC_KEY_BYTES} bytes")]
    ShortKey,
    #[error(
        "with --auth-public-key-file, give --auth-issuer and --auth-audience too: the key's owner signs tokens for other services as well"
    )]
    PublicKeyUnscoped,
    #[error("cannot read {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an RSA or EC public key: {source}")]
    NotAKey {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("set AUTH_HMAC_KEY (or --auth-hmac-key) to sign tokens")]
    Off,
    #[error("tokens can be issued only with --auth-hmac-key")]
    CannotIssue,
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("not a lifetime: {0:?} (try 1h, 30m, 45s)")]
    Lifetime(String),
}

/// The shortest HMAC secret accepted: 256 bits, the size of HS256's hash.
pub const MIN_HMAC_KEY_BYTES: usize = 32;

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

    /// The `iss` every token must carry (required with
    /// `--auth-public-key-file`; optional with an HMAC key, whose tokens then
    /// carry it).
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,

    /// The `aud` every token must name (required with
    /// `--auth-public-key-file`; optional with an HMAC key, whose tokens then
    /// carry it).
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
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
    /// The issuer, written into issued tokens when configured (checked by
    /// the validation, not read here).
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub iss: Option<String>,
    /// The audience, written into issued tokens when configured (checked
    /// by the validation, not read here: it may be a list).
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub aud: Option<String>,
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
    pub fn allow(&self, chat: &ChatId) -> Result<(), AuthError> {
        match &self.chats {
            Some(chats) if !chats.iter().any(|c| c == chat.as_str()) => {
                Err(AuthError::ChatNotAllowed(chat.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Checks a user id the request names besides the token: 403 if it is
    /// someone else.
    pub fn same_user(&self, named: Option<&str>) -> Result<(), AuthError> {
        match named {
            Some(named) if named != self.user.as_str() => Err(AuthError::UserMismatch {
                named: named.to_owned(),
                user: self.user.as_str().to_owned(),
            }),
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
    /// What issued tokens say of their issuer and audience.
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The verifier `config` asks for; `None` when authentication is off.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, AuthSetupError> {
        let (decoding, algorithm, encoding) =
            match (&config.auth_hmac_key, &config.auth_public_key_file) {
                (None, None) => return Ok(None),
                (Some(_), Some(_)) => return Err(AuthSetupError::BothKeys),
                (Some(secret), None) => {
                    if secret.len() < MIN_HMAC_KEY_BYTES {
                        return Err(AuthSetupError::ShortKey);
                    }
                    (
                        DecodingKey::from_secret(secret.as_bytes()),
                        Algorithm::HS256,
                        Some(EncodingKey::from_secret(secret.as_bytes())),
                    )
                }
                (None, Some(path)) => {
                    if config.auth_issuer.is_none() || config.auth_audience.is_none() {
                        return Err(AuthSetupError::PublicKeyUnscoped);
                    }
                    let pem = std::fs::read(path).map_err(|source| AuthSetupError::ReadKey {
                        path: path.clone(),
                        source,
                    })?;
                    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                        (key, Algorithm::RS256, None)
                    } else {
                        let key = DecodingKey::from_ec_pem(&pem).map_err(|source| {
                            AuthSetupError::NotAKey {
                                path: path.clone(),
                                source,
                            }
                        })?;
                        (key, Algorithm::ES256, None)
                    }
                }
            };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.auth_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        // Without a configured audience, a token that names one is refused:
        // it is meant for another service.
        if let Some(audience) = &config.auth_audience {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Self {
            decoding,
            validation,
            encoding,
            issuer: config.auth_issuer.clone(),
            audience: config.auth_audience.clone(),
        }))
    }

    /// Checks a token; answers whom it speaks for, or a 401 saying why not.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                _ => AuthError::Malformed(e.to_string()),
            })?;
        let claims = data.claims;
        let user: UserId = claims.sub.parse().map_err(AuthError::BadSubject)?;
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
    ) -> Result<(String, i64), AuthSetupError> {
        let key = self.encoding.as_ref().ok_or(AuthSetupError::CannotIssue)?;
        let exp = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp,
            chats,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map(|token| (token, exp))
            .map_err(AuthSetupError::Sign)
    }
}

/// Where a request's token may be: the `Authorization` header (as sent),
/// the `chat_token` cookie, or `?token=` (for EventSource, which cannot set
/// headers). Never logged.
#[derive(Default, Clone)]
pub struct TokenSource {
    pub authorization: Option<Vec<u8>>,
    pub cookies: Vec<String>,
    pub query: Option<String>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

impl TokenSource {
    /// The places of a request with `headers` and, maybe, `?token=`.
    pub fn from_headers(headers: &HeaderMap, query: Option<String>) -> Self {
        Self {
            authorization: headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec()),
            cookies: headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect(),
            query,
        }
    }

    /// The `Authorization` header alone: for a write API, which must not
    /// take a cookie a browser sends by itself (cross-site requests).
    pub fn header_only(headers: &HeaderMap) -> Self {
        Self {
            cookies: Vec::new(),
            ..Self::from_headers(headers, None)
        }
    }

    /// The token: `Authorization: Bearer`, else the `chat_token` cookie,
    /// else `?token=`. 401 when there is none.
    pub fn token(&self) -> Result<&str, AuthError> {
        if let Some(value) = &self.authorization {
            let value = std::str::from_utf8(value).map_err(|_| AuthError::HeaderNotText)?;
            return value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or(AuthError::NotBearer);
        }
        let cookie = self
            .cookies
            .iter()
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("chat_token="))
            .next();
        cookie
            .or(self.query.as_deref())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)
    }
}

/// Parses a lifetime such as `1h`, `30m`, `45s` or `3600` (seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, AuthSetupError> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let not_a_lifetime = || AuthSetupError::Lifetime(text.to_owned());
    let n: u64 = digits.parse().map_err(|_| not_a_lifetime())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(not_a_lifetime()),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::from_config(&AuthConfig {
            auth_hmac_key: Some("a-test-secret-of-thirty-two-bytes".into()),
            ..AuthConfig::default()
        })
        .expect("config")
        .expect("on")
    }

    /// What `auth` answers when asked for a token of alice's, for a minute.
    fn issue_alice(auth: &Auth) -> Result<(String, i64), AuthSetupError> {
        auth.issue(
            &"alice".parse().expect("user"),
            None,
            Duration::from_secs(60),
        )
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
        assert_eq!(
            refused,
            AuthError::ChatNotAllowed("other".parse().expect("chat"))
        );
        assert!(identity.same_user(Some("alice")).is_ok());
        assert!(matches!(
            identity.same_user(Some("bob")),
            Err(AuthError::UserMismatch { .. })
        ));
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
            iss: Some("https://id.example".into()),
            aud: Some("chat".into()),
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
        let scoped = |file: &str| AuthConfig {
            auth_public_key_file: Some(dir.join(file)),
            auth_issuer: Some("https://id.example".into()),
            auth_audience: Some("chat".into()),
            ..AuthConfig::default()
        };
        let verifier = |file: &str| {
            Auth::from_config(&scoped(file))
                .expect("config")
                .expect("on")
        };
        // A public key alone would take any token its owner signs.
        for unscoped in [
            AuthConfig {
                auth_issuer: None,
                ..scoped("rsa.pub.pem")
            },
            AuthConfig {
                auth_audience: None,
                ..scoped("rsa.pub.pem")
            },
        ] {
            assert!(matches!(
                Auth::from_config(&unscoped),
                Err(AuthSetupError::PublicKeyUnscoped)
            ));
        }
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
        let (hmac, _) = issue_alice(&auth()).expect("token");
        assert!(
            rsa.verify(&hmac).is_err(),
            "an HS256 token against a public key"
        );
        assert!(issue_alice(&rsa).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Signs `claims` (JSON) with the test secret.
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a-test-secret-of-thirty-two-bytes"),
        )
        .expect("HS256")
    }

    #[test]
    fn issuer_audience_and_not_before_are_checked() {
        let scoped = Auth::from_config(&AuthConfig {
            auth_hmac_key: Some("a-test-secret-of-thirty-two-bytes".into()),
            auth_issuer: Some("https://id.example".into()),
            auth_audience: Some("chat".into()),
            ..AuthConfig::default()
        })
        .expect("config")
        .expect("on");
        let now = chrono::Utc::now().timestamp();
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": now + 600,
                "iss": "https://id.example", "aud": "chat"});
            for (k, v) in extra.as_object().expect("object") {
                claims[k] = v.clone();
            }
            signed(claims)
        };
        assert!(scoped.verify(&token(serde_json::json!({}))).is_ok());
        assert!(
            scoped
                .verify(&token(serde_json::json!({"aud": ["other", "chat"]})))
                .is_ok()
        );
        for (claims, why) in [
            (
                serde_json::json!({"aud": "billing"}),
                AuthError::WrongAudience,
            ),
            (
                serde_json::json!({"aud": ["billing"]}),
                AuthError::WrongAudience,
            ),
            (
                serde_json::json!({"iss": "https://evil.example"}),
                AuthError::WrongIssuer,
            ),
            (
                serde_json::json!({"nbf": now + 600}),
                AuthError::NotYetValid,
            ),
        ] {
            assert_eq!(scoped.verify(&token(claims.clone())), Err(why), "{claims}");
        }
        let bare = signed(serde_json::json!({"sub": "alice", "exp": now + 600}));
        assert!(scoped.verify(&bare).is_err(), "no iss and aud");
        // Tokens it issues carry both.
        let (issued, _) = issue_alice(&scoped).expect("token");
        assert!(scoped.verify(&issued).is_ok());

        // Without a configured audience, a token meant for another service
        // is refused, and nbf still counts.
        let plain = auth();
        let foreign =
            signed(serde_json::json!({"sub": "alice", "exp": now + 600, "aud": "billing"}));
        assert_eq!(plain.verify(&foreign), Err(AuthError::WrongAudience));
        let early = signed(serde_json::json!({"sub": "alice", "exp": now + 600, "nbf": now + 600}));
        assert_eq!(plain.verify(&early), Err(AuthError::NotYetValid));
    }

    #[test]
    fn short_hmac_keys_are_refused() {
        let config = |key: &str| AuthConfig {
            auth_hmac_key: Some(key.into()),
            ..AuthConfig::default()
        };
        assert!(matches!(
            Auth::from_config(&config(&"k".repeat(MIN_HMAC_KEY_BYTES - 1))),
            Err(AuthSetupError::ShortKey)
        ));
        assert!(Auth::from_config(&config(&"k".repeat(MIN_HMAC_KEY_BYTES))).is_ok());
    }

    #[test]
    fn lifetimes_read_as_people_write_them() {
        assert_eq!(parse_ttl("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("45").ok(), Some(Duration::from_secs(45)));
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn the_token_comes_from_the_header_the_cookie_or_the_query() {
        let token = |headers: &HeaderMap, query: Option<&str>| {
            TokenSource::from_headers(headers, query.map(str::to_owned))
                .token()
                .map(str::to_owned)
        };
        let mut headers = HeaderMap::new();
        assert_eq!(token(&headers, None), Err(AuthError::Missing));
        assert_eq!(token(&headers, Some("q")).expect("query"), "q");
        headers.insert(header::COOKIE, "a=b; chat_token=c".parse().expect("value"));
        assert_eq!(token(&headers, Some("q")).expect("cookie"), "c");
        headers.insert(header::AUTHORIZATION, "Bearer h".parse().expect("value"));
        assert_eq!(token(&headers, Some("q")).expect("header"), "h");
    }
}
