//! A Redis connection that is made on first use and remade after failures,
//! so the server starts, and keeps answering what it can, while Redis is down.

use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// A lazily connected, self-healing Redis connection.
pub struct RedisConn {
    client: redis::Client,
    /// Made by the first command; the manager reconnects by itself after that.
    manager: OnceCell<ConnectionManager>,
    config: RedisConfig,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("connected", &self.manager.initialized())
            .finish()
    }
}

impl RedisConn {
    /// A connection to `config.url`; fails only on a malformed URL.
    pub fn new(config: &RedisConfig) -> redis::RedisResult<Self> {
        Ok(Self {
            client: redis::Client::open(config.url.as_str())?,
            manager: OnceCell::new(),
            config: config.clone(),
        })
    }

    /// The connection, made now if it never was.
    pub async fn get(&self) -> redis::RedisResult<ConnectionManager> {
        let timeout = self.config.timeout();
        self.manager
            .get_or_try_init(|| async {
                let settings = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(timeout);
                ConnectionManager::new_with_config(self.client.clone(), settings).await
            })
            .await
            .cloned()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.get().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
    }
}
