//! Adding and removing a reaction: written to Kafka once its message is
//! known to the read model.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_core::api::AddReactionBody;
use chat_core::event::{self, ChatEvent, Reaction, ReactionAction, ReactionChanged};
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::read_model::Lookup;
use chat_core::validate::{ChatId, Emoji, UserId};
use serde::Deserialize;

use super::AppState;
use super::error::redis_unavailable;
use super::extract::{ApiQuery, Caller, JsonBody, MessagePath, ReactionPath};

pub(super) async fn add_reaction(
    State(state): State<AppState>,
    MessagePath { chat, message }: MessagePath,
    caller: Caller,
    JsonBody(body): JsonBody<AddReactionBody>,
) -> Result<(StatusCode, Json<Reaction>), ApiError> {
    let emoji = body.emoji.parse()?;
    let user_id = caller.user(&chat, body.user_id.as_deref(), false)?;
    let change = ReactionChanged {
        action: ReactionAction::Add,
        ..changed(chat, message, user_id, emoji)
    };
    let reaction = store_reaction(&state, change).await?;
    Ok((StatusCode::CREATED, Json(reaction)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RemoveReactionQuery {
    #[serde(default)]
    user_id: Option<String>,
}

pub(super) async fn remove_reaction(
    State(state): State<AppState>,
    ReactionPath {
        chat,
        message,
        emoji,
    }: ReactionPath,
    ApiQuery(query): ApiQuery<RemoveReactionQuery>,
    caller: Caller,
) -> Result<Json<Reaction>, ApiError> {
    let user_id = caller.user(&chat, query.user_id.as_deref(), true)?;
    let change = ReactionChanged {
        action: ReactionAction::Remove,
        ..changed(chat, message, user_id, emoji)
    };
    store_reaction(&state, change).await.map(Json)
}

/// A change of `user`'s `emoji` on a message, made now (an add until said
/// otherwise).
fn changed(chat: ChatId, message: EventId, user: UserId, emoji: Emoji) -> ReactionChanged {
    ReactionChanged {
        chat_id: chat,
        message_id: message,
        user_id: user,
        emoji,
        action: ReactionAction::Add,
        created_at: event::now(),
    }
}

/// Passes the user's write limit, checks the message exists, then writes
/// the change.
async fn store_reaction(state: &AppState, change: ReactionChanged) -> Result<Reaction, ApiError> {
    state
        .write_limits
        .reaction(&change.user_id)
        .map_err(|over| ApiError::WriteLimit {
            what: "reactions",
            retry_after_secs: over.retry_after_secs,
        })?;
    ensure_message_exists(state, &change).await?;
    let id = state
        .producer
        .send(&ChatEvent::Reaction(change.clone()))
        .await?;
    Ok(Reaction { id, change })
}

/// A reaction needs its message in the read model. A message posted a
/// moment ago may not be there yet: wait (boundedly) for the projector to
/// pass its position before calling it missing. An id the chat's log cannot
/// hold (another partition, or past the log's end) is missing at once. A new
/// emoji on a message that holds the most distinct emojis is refused.
async fn ensure_message_exists(state: &AppState, change: &ReactionChanged) -> Result<(), ApiError> {
    let give_up = Instant::now() + state.reaction_wait;
    let missing = || {
        ApiError::NotFound(format!(
            "chat {} has no message {}",
            change.chat_id, change.message_id
        ))
    };
    let mut asked_kafka = false;
    loop {
        let found = state
            .read_model
            .lookup(
                &state.redis,
                &change.chat_id,
                change.message_id,
                change.emoji.as_str(),
            )
            .await
            .map_err(|e| {
                redis_unavailable(
                    "the reaction was not stored: Redis, which holds the read model, \
                     is unavailable; retry",
                    &e,
                )
            })?;
        match found {
            Lookup::Found {
                distinct_emojis,
                holds_emoji,
            } => {
                let max = state.read_model.max_emojis();
                let adds_one = change.action == ReactionAction::Add && !holds_emoji;
                if adds_one && distinct_emojis >= max as usize {
                    return Err(ApiError::TooManyEmojis {
                        message: change.message_id.to_string(),
                        max,
                    });
                }
                return Ok(());
            }
            Lookup::Missing => return Err(missing()),
            Lookup::NotYetProjected { .. } if !asked_kafka => {
                asked_kafka = true;
                // Kafka unreachable: wait for the projector as before.
                if let Ok(false) = state
                    .producer
                    .may_hold(&change.chat_id, change.message_id)
                    .await
                {
                    return Err(missing());
                }
            }
            Lookup::NotYetProjected { projected } if Instant::now() >= give_up => {
                // Past the end of the log, with the projector at that end:
                // made up (the first look allowed for a broker that reports
                // the end short by a batch).
                let end = state
                    .producer
                    .chat_log_end(&change.chat_id, change.message_id.partition)
                    .await;
                if let Ok(Some(end)) = end
                    && change.message_id.offset >= end
                    && projected.unwrap_or(-1) >= end - 1
                {
                    return Err(missing());
                }
                return Err(ApiError::unavailable(format!(
                    "message {} is not in the read model yet; retry",
                    change.message_id
                )));
            }
            Lookup::NotYetProjected { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
