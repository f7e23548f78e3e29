//! How the failures of the services a request depends on (Kafka, Redis)
//! become answers of the error catalogue: 503 with words the caller can
//! act on.

use chat_core::problem::ApiError;
use tracing::warn;

use crate::producer::ProduceError;

impl From<ProduceError> for ApiError {
    fn from(error: ProduceError) -> Self {
        ApiError::unavailable(format!("the event was not stored: {error}"))
    }
}

/// 503 for a Redis failure while using `what`.
pub(super) fn redis_unavailable(what: &str, error: &redis::RedisError) -> ApiError {
    warn!(%error, "Redis unavailable");
    ApiError::unavailable(format!("{what} (Redis) is unavailable; retry: {error}"))
}
