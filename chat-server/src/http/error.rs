//! How the failures of the services a request depends on (Kafka, Redis)
//! become answers of the error catalogue: 503 with words the caller can
//! act on.

use chat_core::problem::ApiError;
use tracing::warn;

use crate::producer::ProduceError;

impl From<ProduceError> for ApiError {
    /// Says why in the API's words; Kafka's own error is logged where the
    /// write failed.
    fn from(error: ProduceError) -> Self {
        let why = match error {
            ProduceError::QueueFull | ProduceError::Timeout(_) => error.to_string(),
            ProduceError::Kafka(_) => "Kafka refused it; retry".to_owned(),
        };
        ApiError::unavailable(format!("the event was not stored: {why}"))
    }
}

/// What a fetch answers while the read model cannot be read.
pub(super) const READ_MODEL_DOWN: &str =
    "the messages cannot be read now: Redis, which holds the read model, is unavailable; retry";

/// 503 for a Redis failure, answered with `sentence` (whole, as the caller
/// reads it); the error itself is logged, not answered.
pub(super) fn redis_unavailable(sentence: &'static str, error: &redis::RedisError) -> ApiError {
    warn!(%error, "Redis unavailable");
    ApiError::unavailable(sentence)
}
