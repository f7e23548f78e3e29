//! `POST /api/chats/{chatId}/messages`: a message, written to Kafka, at most
//! once per `clientMessageId`.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chat_core::api::PostMessageBody;
use chat_core::event::{self, ChatEvent, Message, MessagePosted};
use chat_core::problem::ApiError;
use chat_core::validate::{ClientMessageId, check_text};
use tracing::{error, warn};

use super::AppState;
use super::error::redis_unavailable;
use super::extract::{Caller, ChatPath, JsonBody};
use crate::client_messages::{Claim, Stored};

pub(super) async fn post_message(
    State(state): State<AppState>,
    ChatPath(chat_id): ChatPath,
    caller: Caller,
    JsonBody(body): JsonBody<PostMessageBody>,
) -> Result<Response, ApiError> {
    check_text(&body.text, state.limits.max_text_chars)?;
    let client_message_id: Option<ClientMessageId> =
        body.client_message_id.map(|id| id.parse()).transpose()?;
    let user_id = caller.user(&chat_id, body.user_id.as_deref(), false)?;
    state
        .write_limits
        .message(&user_id)
        .map_err(|over| ApiError::WriteLimit {
            what: "messages",
            retry_after_secs: over.retry_after_secs,
        })?;
    let event = MessagePosted {
        chat_id,
        user_id,
        text: body.text,
        client_message_id,
        created_at: event::now(),
    };
    let (message, replayed) = match event.client_message_id.clone() {
        None => {
            let id = state
                .producer
                .send(&ChatEvent::Message(event.clone()))
                .await?;
            (Message::stored(id, event), false)
        }
        Some(client_id) => post_once(&state, event, &client_id).await?,
    };
    let mut response = (StatusCode::CREATED, Json(message)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Posts a message with a `clientMessageId` at most once: answers the stored
/// message (and `true`) when the id was used before.
async fn post_once(
    state: &AppState,
    event: MessagePosted,
    client_id: &ClientMessageId,
) -> Result<(Message, bool), ApiError> {
    let store = &state.client_messages;
    let give_up = Instant::now() + state.claim_wait;
    loop {
        let claim = store
            .claim(&state.redis, &event.chat_id, &event.user_id, client_id)
            .await
            .map_err(|e| {
                redis_unavailable(
                    "the message was not stored: Redis, which remembers clientMessageIds, \
                     is unavailable; retry",
                    &e,
                )
            })?;
        match claim {
            Claim::Won { marker } => {
                return send_claimed(state, event, client_id, &marker)
                    .await
                    .map(|m| (m, false));
            }
            Claim::Stored(stored) => return same_text(stored, event, client_id),
            // A write whose outcome Kafka never told, or that a server died
            // in the middle of: once it can no longer reach the log, and
            // the projector has applied the log to its end without it, it
            // was not stored.
            Claim::Unknown { marker, at_ms }
            | Claim::Pending {
                marker,
                at_ms: Some(at_ms),
            } if settled(state, at_ms) => {
                // Kafka or Redis that cannot say counts as not yet.
                if log_applied(state, &event).await == Some(true)
                    && let Some(own) = store
                        .take_over(
                            &state.redis,
                            &event.chat_id,
                            &event.user_id,
                            client_id,
                            &marker,
                        )
                        .await
                        .unwrap_or(None)
                {
                    return send_claimed(state, event, client_id, &own)
                        .await
                        .map(|m| (m, false));
                }
                if Instant::now() >= give_up {
                    return Err(in_doubt(client_id));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Claim::Unknown { .. } if Instant::now() >= give_up => return Err(in_doubt(client_id)),
            Claim::Pending { .. } if Instant::now() >= give_up => {
                return Err(ApiError::ClientMessageIdInProgress(
                    client_id.as_str().to_owned(),
                ));
            }
            Claim::Pending { .. } | Claim::Unknown { .. } => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
        }
    }
}

/// The answer to a retry whose first write Kafka has not told about yet:
/// 503, as for the first request (the message is not known to be stored;
/// retry).
fn in_doubt(client_id: &ClientMessageId) -> ApiError {
    ApiError::unavailable(format!(
        "an earlier write of clientMessageId {} may have been stored, and Kafka has not told yet; retry",
        client_id.as_str()
    ))
}

/// Whether a write that was claimed, or whose outcome was unknown, at
/// `at_ms` (Unix ms) can no longer reach the log: librdkafka gives a write
/// up after the message timeout from its send (after the claim, before the
/// unknown mark), and any request of it still at a broker has timed out by
/// then too (the request timeout is shorter), with a second to spare.
fn settled(state: &AppState, at_ms: i64) -> bool {
    let timeout = state.producer.message_timeout().as_millis() as i64;
    chrono::Utc::now().timestamp_millis() >= at_ms + timeout + 1000
}

/// Whether the projector has applied `event`'s partition to the end of the
/// log as Kafka tells it now. A write that was stored is then in the read
/// model; one that is not there was not stored. `None` when Kafka or Redis
/// cannot say.
async fn log_applied(state: &AppState, event: &MessagePosted) -> Option<bool> {
    let (partition, end) = state
        .producer
        .chat_partition_end(&event.chat_id)
        .await
        .ok()?;
    let projected = state
        .read_model
        .projected(&state.redis, partition)
        .await
        .ok()?;
    Some(projected.map_or(end == 0, |p| p + 1 >= end))
}

/// Writes a message whose `clientMessageId` this request claimed (with
/// `marker`), and records what it became.
async fn send_claimed(
    state: &AppState,
    event: MessagePosted,
    client_id: &ClientMessageId,
    marker: &str,
) -> Result<Message, ApiError> {
    let store = &state.client_messages;
    match state
        .producer
        .send(&ChatEvent::Message(event.clone()))
        .await
    {
        Ok(id) => {
            let message = Message::stored(id, event);
            if let Err(error) = store.complete(&state.redis, &message, client_id).await {
                error!(%error, %message.chat_id, %client_id,
                    "message stored but its clientMessageId was not recorded; a retry may duplicate it");
            }
            Ok(message)
        }
        // A write that may have reached the log keeps its claim, marked as
        // unknown: a retry waits for the projector to tell what it became,
        // or to have applied the log to its end without it.
        Err(produce_error) if produce_error.may_be_stored() => {
            if let Err(error) = store
                .mark_unknown(&state.redis, &event.chat_id, &event.user_id, client_id)
                .await
            {
                warn!(%error, %client_id, "cannot mark clientMessageId as unknown; a retry takes its pending claim over once the write can no longer be stored");
            }
            Err(produce_error.into())
        }
        Err(produce_error) => {
            if let Err(error) = store
                .release(
                    &state.redis,
                    &event.chat_id,
                    &event.user_id,
                    client_id,
                    marker,
                )
                .await
            {
                warn!(%error, %client_id, "cannot release clientMessageId; a retry takes its claim over once the write can no longer be stored");
            }
            Err(produce_error.into())
        }
    }
}

/// Answers the message stored for a retried `clientMessageId` (its id and
/// time, with the retry's own text, which is the same), or 409 when the id
/// was used for a different text.
fn same_text(
    stored: Stored,
    event: MessagePosted,
    client_id: &ClientMessageId,
) -> Result<(Message, bool), ApiError> {
    if stored.has_text(&event.text) {
        let message = Message::stored(
            stored.id,
            MessagePosted {
                created_at: stored.created_at,
                ..event
            },
        );
        return Ok((message, true));
    }
    Err(ApiError::ClientMessageIdReused {
        id: client_id.as_str().to_owned(),
        message: stored.id.to_string(),
    })
}
