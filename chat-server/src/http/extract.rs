//! Typed extractors: the path, the query and the JSON body parsed and
//! validated, and the caller's identity. Each rejects with the error
//! catalogue, never with axum's plain-text answers.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use chat_core::auth::{AuthError, Identity, TokenSource};
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::validate::{ChatId, Emoji, Invalid, UserId};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::hot::Client;

/// A path parameter that breaks the API's rules is a malformed URL: 400.
fn path_param<T: std::str::FromStr<Err = Invalid>>(value: &str) -> Result<T, ApiError> {
    value.parse().map_err(ApiError::bad_request)
}

async fn raw_path<T, S>(parts: &mut Parts, state: &S) -> Result<T, ApiError>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    Path::<T>::from_request_parts(parts, state)
        .await
        .map(|Path(raw)| raw)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// `/api/chats/{chat_id}/...`: the chat.
pub(super) struct ChatPath(pub(super) ChatId);

impl<S: Send + Sync> FromRequestParts<S> for ChatPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let chat: String = raw_path(parts, state).await?;
        Ok(Self(path_param(&chat)?))
    }
}

/// `/api/chats/{chat_id}/messages/{message_id}/...`: a message of a chat.
pub(super) struct MessagePath {
    pub(super) chat: ChatId,
    pub(super) message: EventId,
}

impl<S: Send + Sync> FromRequestParts<S> for MessagePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (chat, message): (String, String) = raw_path(parts, state).await?;
        Ok(Self {
            chat: path_param(&chat)?,
            message: path_param(&message)?,
        })
    }
}

/// `/api/chats/{chat_id}/messages/{message_id}/reactions/{emoji}`.
pub(super) struct ReactionPath {
    pub(super) chat: ChatId,
    pub(super) message: EventId,
    pub(super) emoji: Emoji,
}

impl<S: Send + Sync> FromRequestParts<S> for ReactionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (chat, message, emoji): (String, String, String) = raw_path(parts, state).await?;
        Ok(Self {
            chat: path_param(&chat)?,
            message: path_param(&message)?,
            emoji: path_param(&emoji)?,
        })
    }
}

/// A query string of the expected shape: 400 otherwise.
pub(super) struct ApiQuery<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| Self(query))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Who is asking. With authentication on, the token's identity, or why
/// there is none; it is checked after the request is validated, so a
/// malformed request gets its 400 whoever sends it. And the client's
/// address, when the request came over a socket.
pub(super) struct Caller {
    auth: Option<Result<Identity, AuthError>>,
    address: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = state.auth.as_ref().map(|auth| {
            // The header only: a cookie would ride along on a cross-site
            // request to this write API (CSRF).
            TokenSource::header_only(&parts.headers)
                .token()
                .and_then(|token| auth.verify(token))
        });
        // The client behind a listed proxy, else the peer itself.
        let forwarded_for = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| state.trusted_proxies.client(peer.ip(), forwarded_for));
        Ok(Self { auth, address })
    }
}

impl Caller {
    /// The client's address (behind a trusted proxy, the one it forwarded
    /// for), when the request came over a socket.
    pub(super) fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The verified identity (401 when the token is missing or not
    /// valid); `None` with authentication off.
    fn identity(&self) -> Result<Option<&Identity>, ApiError> {
        match &self.auth {
            None => Ok(None),
            Some(Ok(identity)) => Ok(Some(identity)),
            Some(Err(error)) => Err(error.clone().into()),
        }
    }

    /// The user acting in `chat`: the token's (403 if the token does not
    /// allow the chat, or `named` is someone else), or, with authentication
    /// off, the one the request names (in the body: 422 when missing or
    /// invalid; in the query: 400).
    pub(super) fn user(
        &self,
        chat: &ChatId,
        named: Option<&str>,
        in_query: bool,
    ) -> Result<UserId, ApiError> {
        match self.identity()? {
            Some(identity) => {
                identity.allow(chat)?;
                identity.same_user(named)?;
                Ok(identity.user.clone())
            }
            None => {
                let missing = Invalid::new("userId", "is required");
                let parsed = named.ok_or(missing).and_then(str::parse::<UserId>);
                parsed.map_err(|e| {
                    if in_query {
                        ApiError::bad_request(e)
                    } else {
                        ApiError::Invalid(e)
                    }
                })
            }
        }
    }

    /// A reader of `chat`, and the user a fetch speaks for, if any: the
    /// token's (a `named` user must be the same), or the one named.
    pub(super) fn reader(
        &self,
        chat: &ChatId,
        named: Option<&str>,
    ) -> Result<Option<UserId>, ApiError> {
        match self.identity()? {
            Some(identity) => {
                identity.allow(chat)?;
                identity.same_user(named)?;
                Ok(Some(identity.user.clone()))
            }
            None => named
                .map(|user| user.parse().map_err(ApiError::bad_request))
                .transpose(),
        }
    }
}

impl Caller {
    /// The client, for hotness and per-client budgets: the user a fetch
    /// speaks for (the token's, or with authentication off the one it
    /// names), else the address.
    pub(super) fn client(&self, user: Option<&UserId>) -> Client {
        match (user, self.address) {
            (Some(user), _) => Client::User(user.clone()),
            (None, Some(address)) => Client::Address(chat_core::client_ip::limit_key(address)),
            (None, None) => Client::Unknown,
        }
    }
}

/// A JSON request body: `application/json`, within the size limit, read
/// within the body timeout, and of the expected shape.
pub(super) struct JsonBody<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limits = &state.limits;
        check_json_content_type(request.headers())?;
        let too_large = ApiError::BodyTooLarge(limits.max_body_bytes);
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            return Err(too_large);
        }
        let read = axum::body::to_bytes(request.into_body(), limits.max_body_bytes);
        let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
            Err(_) => return Err(ApiError::BodyTimeout(limits.body_timeout)),
            Ok(Err(_)) => return Err(too_large),
            Ok(Ok(bytes)) => bytes,
        };
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            if e.is_data() {
                ApiError::InvalidBody(e.to_string())
            } else {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            }
        })
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() == Some("application/json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(media_type.map_or_else(
        || "no Content-Type".to_owned(),
        |m| format!("{m:?}"),
    )))
}
