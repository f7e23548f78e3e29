//! chat-dev: runs the whole chat backend on one machine for development and
//! demos (`make run`): chat-server in this process, publish-server and the
//! hot-chat scheduler as children (the binaries beside this one). Unless told where
//! Kafka and Redis are, it starts an embedded Kafka-protocol broker
//! (librdkafka's mock cluster, in this process) and a local `redis-server` on
//! its own port and data folder. One Ctrl-C stops everything.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::process::{Child, Command};
use tracing::{error, info, warn};

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
        config.public_stream_url = format!("http://{}", args.dev_publish_listen);
    }
    // With a signing key, the local UI signs in through development tokens
    // unless told otherwise.
    if config.auth.auth_hmac_key.is_some() && std::env::var_os("DEV_TOKENS").is_none() {
        config.dev_tokens = true;
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
    let kafka_note = if kafka_given {
        ""
    } else {
        "  (embedded mock broker: events live until exit)"
    };
    let redis_note = if redis_given {
        String::new()
    } else {
        format!(
            "  (local redis-server, files in {})",
            args.dev_data_dir.join("redis").display()
        )
    };
    let banner = format!(
        "\nchat backend running:\n  web UI          http://{addr}/{web_note}\n  chat-server     http://{addr}\n  publish-server  http://{publish_addr}\n  scheduler       http://{scheduler_addr}/metrics\n  Kafka           {brokers}  topic {topic}{kafka_note}\n  Redis           {redis}{redis_note}\n\nTry:\n  curl -N http://{publish_addr}/api/chats/lobby/events\n  curl -X POST http://{addr}/api/chats/lobby/messages -H 'content-type: application/json' -d '{{\"userId\":\"alice\",\"text\":\"hi\"}}'\n  curl http://{addr}/api/chats/lobby/messages\n  API description: http://{addr}/api/openapi.json\n\nPress Ctrl-C to stop.\n",
        brokers = config.kafka.brokers,
        topic = config.kafka.topic,
        redis = if config.redis.is_cluster() {
            format!("cluster {}", config.redis.cluster_nodes.join(","))
        } else {
            config.redis.url.clone()
        },
        web_note = if config.web_dir.join("index.html").is_file() {
            String::new()
        } else {
            format!(
                "  (not built: no {})",
                config.web_dir.join("index.html").display()
            )
        },
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
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

/// Starts the `publish-server` binary found beside this one, reading the
/// same topic and Redis, with chat-server's address among its CORS origins
/// (unless `CORS_ORIGINS` says otherwise), and waits until it is ready.
/// Its other settings come from its own environment variables.
async fn start_publish_server(
    config: &chat_server::Config,
    chat_addr: SocketAddr,
    listen: SocketAddr,
) -> Result<Child, DevError> {
    let mut command = server_command("publish-server", config, listen)?;
    command.env("PUBLISH_SERVER_LISTEN", listen.to_string());
    if std::env::var_os("CORS_ORIGINS").is_none() {
        let port = chat_addr.port();
        command.env(
            "CORS_ORIGINS",
            format!("http://{chat_addr},http://127.0.0.1:{port},http://localhost:{port}"),
        );
    }
    start_server("publish-server", command, listen).await
}

/// Starts the `scheduler` binary found beside this one on the same Redis,
/// and waits until it is ready. Its other settings come from its own
/// environment variables.
async fn start_scheduler(
    config: &chat_server::Config,
    listen: SocketAddr,
) -> Result<Child, DevError> {
    let mut command = server_command("scheduler", config, listen)?;
    command.env("SCHEDULER_LISTEN", listen.to_string());
    start_server("scheduler", command, listen).await
}

/// The command of a server binary beside this one, told chat-server's
/// topic, Redis and key prefix; fails when `listen` is taken.
fn server_command(
    name: &str,
    config: &chat_server::Config,
    listen: SocketAddr,
) -> Result<Command, DevError> {
    let binary = std::env::current_exe()
        .map_err(DevError::NoFolder)?
        .with_file_name(name);
    if std::net::TcpListener::bind(listen).is_err() {
        return Err(DevError::Taken {
            listen,
            name: name.to_owned(),
            variable: name.to_uppercase().replace('-', "_") + "_LISTEN",
        });
    }
    let mut command = Command::new(&binary);
    command
        .env("KAFKA_BROKERS", &config.kafka.brokers)
        .env("KAFKA_TOPIC", &config.kafka.topic)
        .env("REDIS_URL", &config.redis.url)
        .env("REDIS_CLUSTER_NODES", config.redis.cluster_nodes.join(","))
        .env("REDIS_KEY_PREFIX", &config.redis.key_prefix)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(url) = &config.hot_store.hot_redis_url {
        command.env("HOT_REDIS_URL", url);
    }
    if let Some(key) = &config.auth.auth_hmac_key {
        command.env("AUTH_HMAC_KEY", key);
    }
    if let Some(path) = &config.auth.auth_public_key_file {
        command.env("AUTH_PUBLIC_KEY_FILE", path);
    }
    if let Some(issuer) = &config.auth.auth_issuer {
        command.env("AUTH_ISSUER", issuer);
    }
    if let Some(audience) = &config.auth.auth_audience {
        command.env("AUTH_AUDIENCE", audience);
    }
    die_with_parent(&mut command);
    Ok(command)
}

/// Spawns `command` and waits (up to 30 s) until `/readyz` on `listen`
/// answers 200.
async fn start_server(
    name: &str,
    mut command: Command,
    listen: SocketAddr,
) -> Result<Child, DevError> {
    let mut child = command.spawn().map_err(|source| DevError::Spawn {
        program: command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned(),
        source,
    })?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if ready(listen).await {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DevError::Exited {
                name: name.to_owned(),
                status,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            stop_child(name, child).await;
            return Err(DevError::NotReady {
                name: name.to_owned(),
                listen,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `/readyz` at `addr` answers 200.
async fn ready(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nhost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Starts `redis-server` on `port` with its files under `data_dir` (and its
/// data in an append-only file there when `keep`), and waits until it
/// answers.
async fn start_redis(
    port: u16,
    data_dir: &std::path::Path,
    keep: bool,
) -> Result<(Child, String), DevError> {
    let dir = data_dir.join("redis");
    let dir = std::fs::create_dir_all(&dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|source| DevError::DataDir { dir, source })?;
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        return Err(DevError::RedisPortTaken(port));
    }
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            if keep { "yes" } else { "no" },
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--logfile", "redis.log", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let child = command.spawn().map_err(DevError::RedisSpawn)?;
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str())?;
    for _ in 0..100 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok()
        {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevError::RedisSilent {
        port,
        dir: dir.display().to_string(),
    })
}

/// Puts a child in its own process group (so a terminal's Ctrl-C reaches
/// only this launcher, which stops children in order) and has the kernel
/// stop it should this launcher die without cleaning up.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    command.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks a child to stop (SIGTERM) and waits for it, killing it after 5 s.
#[allow(unsafe_code)]
async fn stop_child(name: &str, mut child: Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => info!(%name, %status, "stopped"),
        Ok(Err(error)) => warn!(%name, %error, "cannot wait for child"),
        Err(_) => {
            warn!(%name, "did not stop within 5 s; killing it");
            let _ = child.kill().await;
        }
    }
}
