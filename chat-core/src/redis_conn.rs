//! A Redis connection that is made on first use and remade after failures,
//! so the server starts, and keeps answering what it can, while Redis is down.
//! It speaks to one Redis, or, given seed nodes, to a Redis Cluster: every
//! script and pipeline of the servers touches the keys of one slot.

use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Where the connection goes.
enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A lazily connected, self-healing Redis connection.
pub struct RedisConn {
    target: Target,
    /// Made by the first command; it reconnects by itself after that.
    conn: OnceCell<Conn>,
    config: RedisConfig,
}

/// A connection to one Redis or to a Redis Cluster: either answers every
/// command, routed by its keys on a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("cluster", &matches!(self.target, Target::Cluster(_)))
            .field("connected", &self.conn.initialized())
            .finish()
    }
}

impl RedisConn {
    /// A connection to `config`'s cluster seed nodes, else to its URL;
    /// fails only on a malformed address.
    pub fn new(config: &RedisConfig) -> redis::RedisResult<Self> {
        let target = if !config.is_cluster() {
            Target::Single(redis::Client::open(config.url.as_str())?)
        } else {
            let timeout = config.timeout();
            let client = ClusterClient::builder(config.cluster_seed_urls())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A failover takes a few seconds: the client retries moved
                // and unreachable slots within that, then the command fails.
                .retries(3)
                .min_retry_wait(50)
                .max_retry_wait(500)
                .build()?;
            Target::Cluster(client)
        };
        Ok(Self {
            target,
            conn: OnceCell::new(),
            config: config.clone(),
        })
    }

    /// The connection, made now if it never was.
    pub async fn get(&self) -> redis::RedisResult<Conn> {
        let timeout = self.config.timeout();
        self.conn
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Single(client) => {
                        let settings = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(timeout))
                            .set_response_timeout(Some(timeout))
                            .set_number_of_retries(2)
                            .set_max_delay(timeout);
                        ConnectionManager::new_with_config(client.clone(), settings)
                            .await
                            .map(Conn::Single)
                    }
                    Target::Cluster(client) => {
                        let connect = client.get_async_connection();
                        match tokio::time::timeout(timeout * 3, connect).await {
                            Ok(conn) => conn.map(Conn::Cluster),
                            Err(_) => Err(redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "no Redis Cluster seed node answered",
                            ))),
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    /// Checks that Redis answers (every master of a cluster).
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.get().await?;
        redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map(drop)
    }
}
