//! chat-dev: runs the whole chat backend on one machine for development and
//! demos (`make run`): chat-server in this process, publish-server and the
//! hot-chat scheduler as children (the binaries beside this one). Unless told where
//! Kafka and Redis are, it starts an embedded Kafka-protocol broker
//! (librdkafka's mock cluster, in this process) and a local `redis-server` on
//! its own port and data folder. One Ctrl-C stops everything.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tracing::{error, info, warn};

mod banner;
mod children;

use children::{ready, start_publish_server, start_redis, start_scheduler, stop_child};

#[derive(Debug, Parser)]
#[command(
    name = "chat-dev",
    version,
    about = "Runs the chat backend locally: chat-server, publish-server and scheduler, with an embedded \
             Kafka-protocol broker (unless KAFKA_BROKERS is set) and a local redis-server \
             (unless REDIS_URL or REDIS_CLUSTER_NODES is set)"
)]
struct DevArgs {
    #[command(flatten)]
    server: chat_server::Config,

    /// Port of the local redis-server started when no Redis URL is given.
    #[arg(long, env = "DEV_REDIS_PORT", default_value_t = 6380)]
    dev_redis_port: u16,

    /// Folder for the local redis-server's working files and log.
    #[arg(long, env = "DEV_DATA_DIR", default_value = ".run")]
    dev_data_dir: PathBuf,

    /// The local redis-server keeps its data in an append-only file under
    /// the data folder, so that a restart keeps the read model (with a
    /// Kafka that keeps its log: `KAFKA=local make run`).
    #[arg(long, env = "DEV_REDIS_KEEP", default_value_t = false, action = clap::ArgAction::Set)]
    dev_redis_keep: bool,

    /// Address publish-server's SSE API listens on.
    #[arg(long, env = "PUBLISH_SERVER_LISTEN", default_value = chat_core::config::defaults::PUBLISH_SERVER_LISTEN)]
    dev_publish_listen: SocketAddr,

    /// Address of the scheduler's health and metrics endpoints.
    #[arg(long, env = "SCHEDULER_LISTEN", default_value = chat_core::config::defaults::SCHEDULER_LISTEN)]
    dev_scheduler_listen: SocketAddr,
}

fn main() -> ExitCode {
    chat_core::telemetry::init();
    let matches = DevArgs::command().get_matches();
    let args = match DevArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    let given = |id: &str| matches!(matches.value_source(id), Some(source) if source != ValueSource::DefaultValue);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-dev: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let redis_given = given("url") || args.server.redis.is_cluster();
    let result = runtime.block_on(run(args, given("brokers"), redis_given));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-dev: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why the local system could not start, in words for the person at the
/// terminal.
#[derive(Debug, thiserror::Error)]
enum DevError {
    #[error("cannot start the embedded Kafka broker: {0}")]
    Broker(#[source] rdkafka::error::KafkaError),
    #[error("cannot create topic {topic}: {source}")]
    Topic {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Server(#[from] chat_server::Error),
    #[error("chat-server failed: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
    #[error("cannot find this program's folder: {0}")]
    NoFolder(#[source] std::io::Error),
    #[error("{listen} is taken, so {name} cannot listen there: set {variable} to a free address")]
    Taken {
        listen: SocketAddr,
        name: String,
        variable: String,
    },
    #[error("cannot start {program} (`make run` builds it): {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} exited at start-up ({status}); see its log above")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
    },
    #[error("{name} was not ready on {listen} within 30 s; see its log above")]
    NotReady { name: String, listen: SocketAddr },
    #[error("cannot create {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "port {0} is taken, so the local redis-server cannot start there: \
         set DEV_REDIS_PORT to a free port, or REDIS_URL to use a running Redis"
    )]
    RedisPortTaken(u16),
    #[error("cannot start redis-server (is it installed? `make run` installs it): {0}")]
    RedisSpawn(#[source] std::io::Error),
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[from] redis::RedisError),
    #[error("redis-server did not answer on port {port}; see {dir}/redis.log")]
    RedisSilent { port: u16, dir: String },
}

async fn run(args: DevArgs, kafka_given: bool, redis_given: bool) -> Result<(), DevError> {
    let shutdown = chat_core::shutdown::on_signal();
    let mut config = args.server;

    // The mock cluster lives as long as this function: it stops at return.
    let _embedded_kafka = if kafka_given {
        None
    } else {
        let cluster = MockCluster::new(1).map_err(DevError::Broker)?;
        cluster
            .create_topic(&config.kafka.topic, config.kafka.topic_partitions, 1)
            .map_err(|source| DevError::Topic {
                topic: config.kafka.topic.clone(),
                source,
            })?;
        config.kafka.brokers = cluster.bootstrap_servers();
        // The mock broker does not take CreateTopics requests; the topic exists.
        config.kafka.create_topic = false;
        Some::<MockCluster<'static, DefaultProducerContext>>(cluster)
    };

    let mut redis_child = None;
    if !redis_given {
        let (child, url) =
            start_redis(args.dev_redis_port, &args.dev_data_dir, args.dev_redis_keep).await?;
        redis_child = Some(child);
        config.redis.url = url;
    }

    // The web UI, served by chat-server, streams from this publish-server
    // unless told otherwise.
    if std::env::var_os("PUBLIC_STREAM_URL").is_none() {
        config.web.public_stream_url = format!("http://{}", args.dev_publish_listen);
    }
    // With a signing key, the local UI signs in through development tokens
    // unless told otherwise.
    if config.auth.auth_hmac_key.is_some() && std::env::var_os("DEV_TOKENS").is_none() {
        config.web.dev_tokens = true;
    }
    let server = chat_server::Server::bind(config.clone()).await?;
    let addr = server.local_addr();
    let publish_addr = args.dev_publish_listen;
    let scheduler_addr = args.dev_scheduler_listen;
    let children = async {
        let publish = start_publish_server(&config, addr, publish_addr).await?;
        match start_scheduler(&config, scheduler_addr).await {
            Ok(scheduler) => Ok((publish, scheduler)),
            Err(error) => {
                stop_child("publish-server", publish).await;
                Err(error)
            }
        }
    };
    let (publish, scheduler) = match children.await {
        Ok(children) => children,
        Err(error) => {
            if let Some(child) = redis_child {
                stop_child("redis-server", child).await;
            }
            return Err(error);
        }
    };
    // The banner comes once chat-server is ready: Kafka and Redis answer and
    // its projector owns its partitions, so what is posted is fetchable.
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let waited = tokio::time::Instant::now();
    let mut told = false;
    // A Ctrl-C while waiting stops everything at once (chat-server stops,
    // and would never be ready).
    while !shutdown.is_cancelled() && !ready(addr).await {
        if waited.elapsed() >= Duration::from_secs(60) {
            warn!(%addr, "chat-server is still not ready after 60 s (see its /readyz); going on");
            break;
        }
        if !told && waited.elapsed() >= Duration::from_secs(2) {
            info!("waiting for chat-server to be ready (its projector joins its group)");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let banner = banner::Banner {
        chat: addr,
        publish: publish_addr,
        scheduler: scheduler_addr,
        config: &config,
        embedded_kafka: !kafka_given,
        local_redis: (!redis_given).then(|| args.dev_data_dir.join("redis")),
    };
    let _ = std::io::stderr().write_all(banner.to_string().as_bytes());
    let mut publish = Some(publish);
    let mut scheduler = Some(scheduler);
    if let (Some(publish_child), Some(scheduler_child)) = (publish.as_mut(), scheduler.as_mut()) {
        tokio::select! {
            status = publish_child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                error!(%status, "publish-server stopped on its own; stopping everything");
                publish = None;
                shutdown.cancel();
            }
            status = scheduler_child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                error!(%status, "scheduler stopped on its own; stopping everything");
                scheduler = None;
                shutdown.cancel();
            }
            () = shutdown.cancelled() => {}
        }
    }
    let served = serving.await.map_err(DevError::from);
    if let Some(child) = scheduler {
        stop_child("scheduler", child).await;
    }
    if let Some(child) = publish {
        stop_child("publish-server", child).await;
    }
    if let Some(child) = redis_child {
        stop_child("redis-server", child).await;
    }
    info!("everything stopped");
    served
}
