//! Adding and removing a reaction: written to Kafka once its message is
//! known to the read model, and only when it changes something (see
//! `reaction_changes`): an add of an emoji the user holds, or a remove of
//! one the user does not hold, answers 200 with `"changed": false` and
//! writes nothing.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::api::AddReactionBody;
use chat_core::event::{self, ChatEvent, Reaction, ReactionAction, ReactionChanged};
use chat_core::id::EventId;
use chat_core::problem::ApiError;
use chat_core::read_model::Lookup;
use chat_core::validate::{ChatId, Emoji, UserId};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::redis_unavailable;
use super::extract::{ApiQuery, Caller, JsonBody, MessagePath, ReactionPath};
use crate::reaction_changes::Decision;

/// What a reaction request did.
enum Outcome {
    /// The change was written: its event.
    Written(Reaction),
    /// It would have changed nothing, and nothing was written.
    Unchanged(ReactionChanged),
}

/// The answer to a change that changed nothing: the change, no id.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Unchanged {
    changed: bool,
    #[serde(flatten)]
    change: ReactionChanged,
}

impl Outcome {
    /// `written` for a change that was written, else 200 `changed: false`.
    fn respond(self, written: StatusCode) -> Response {
        match self {
            Self::Written(reaction) => (written, Json(reaction)).into_response(),
            Self::Unchanged(change) => Json(Unchanged {
                changed: false,
                change,
            })
            .into_response(),
        }
    }
}

pub(super) async fn add_reaction(
    State(state): State<AppState>,
    MessagePath { chat, message }: MessagePath,
    caller: Caller,
    JsonBody(body): JsonBody<AddReactionBody>,
) -> Result<Response, ApiError> {
    let emoji = body.emoji.parse()?;
    let user_id = caller.user(&chat, body.user_id.as_deref(), false)?;
    let change = ReactionChanged {
        action: ReactionAction::Add,
        ..changed(chat, message, user_id, emoji)
    };
    let outcome = store_reaction(&state, change).await?;
    Ok(outcome.respond(StatusCode::CREATED))
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
) -> Result<Response, ApiError> {
    let user_id = caller.user(&chat, query.user_id.as_deref(), true)?;
    let change = ReactionChanged {
        action: ReactionAction::Remove,
        ..changed(chat, message, user_id, emoji)
    };
    let outcome = store_reaction(&state, change).await?;
    Ok(outcome.respond(StatusCode::OK))
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

/// Passes the user's write limit, decides whether the change changes
/// anything (waiting for a message posted a moment ago), then writes it if
/// it does.
async fn store_reaction(state: &AppState, change: ReactionChanged) -> Result<Outcome, ApiError> {
    state
        .write_limits
        .reaction(&change.user_id)
        .map_err(|over| ApiError::WriteLimit {
            what: "reactions",
            retry_after_secs: over.retry_after_secs,
        })?;
    // One round trip when the message is there (the decision checks
    // that); only a message the read model does not show is waited for.
    let mut waited = false;
    let mark = loop {
        match decide(state, &change).await? {
            Decision::Write(mark) => break mark,
            Decision::Same => return Ok(Outcome::Unchanged(change)),
            Decision::Full => {
                return Err(ApiError::TooManyEmojis {
                    message: change.message_id.to_string(),
                    max: state.read_model.max_emojis(),
                });
            }
            Decision::Missing if !waited => {
                waited = true;
                ensure_message_exists(state, &change).await?;
            }
            // Trimmed by retention since it was found.
            Decision::Missing => {
                return Err(ApiError::NotFound(format!(
                    "chat {} has no message {}",
                    change.chat_id, change.message_id
                )));
            }
            Decision::Busy => return Err(busy(&change)),
        }
    };
    let sent = state
        .producer
        .send(&ChatEvent::Reaction(change.clone()))
        .await;
    // A write that may be in the log all the same keeps its mark in flight
    // until it can no longer arrive; else the mark says what the log holds.
    let settled = match &sent {
        Ok(id) => Some(Some(*id)),
        Err(error) if error.may_be_stored() => None,
        Err(_) => Some(None),
    };
    if let Some(stored) = settled
        && let Err(error) = state
            .reaction_changes
            .settle(&state.redis, &mark, stored)
            .await
    {
        tracing::warn!(%error, "cannot note a reaction change; it stays in flight until it lapses");
    }
    let id = sent?;
    Ok(Outcome::Written(Reaction { id, change }))
}

/// Decides `change`, waiting (up to the reaction wait) while another change
/// of the same reaction is being written.
async fn decide(state: &AppState, change: &ReactionChanged) -> Result<Decision, ApiError> {
    let give_up = Instant::now() + state.reaction_wait;
    loop {
        let decision = state
            .reaction_changes
            .decide(&state.redis, change)
            .await
            .map_err(|e| read_model_down(&e))?;
        match decision {
            Decision::Busy if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            decided => return Ok(decided),
        }
    }
}

/// 503: Redis, which holds the read model, did not answer.
fn read_model_down(error: &redis::RedisError) -> ApiError {
    redis_unavailable(
        "the reaction was not stored: Redis, which holds the read model, is unavailable; retry",
        error,
    )
}

/// 503: another change of the same reaction is still being written.
fn busy(change: &ReactionChanged) -> ApiError {
    ApiError::unavailable(format!(
        "another change of {}'s {} on message {} is being written; retry",
        change.user_id,
        change.emoji.as_str(),
        change.message_id
    ))
}

/// A reaction needs its message in the read model. A message posted a
/// moment ago may not be there yet: wait (boundedly) for the projector to
/// pass its position before calling it missing. An id the chat's log cannot
/// hold (another partition, or past the log's end) is missing at once.
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
            .lookup(&state.redis, &change.chat_id, change.message_id)
            .await
            .map_err(|e| read_model_down(&e))?;
        match found {
            Lookup::Found => return Ok(()),
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
