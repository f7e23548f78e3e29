//! The launcher's children: publish-server, the scheduler and a local
//! redis-server, each started, waited for until ready, and stopped in
//! order.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::DevError;

/// Starts the `publish-server` binary found beside this one, reading the
/// same topic and Redis, with chat-server's address among its CORS origins
/// (unless `CORS_ORIGINS` says otherwise), and waits until it is ready.
/// Its other settings come from its own environment variables.
pub(super) async fn start_publish_server(
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
pub(super) async fn start_scheduler(
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
    if let Some(url) = &config.hot.store.hot_redis_url {
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
pub(super) async fn ready(addr: SocketAddr) -> bool {
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
pub(super) async fn start_redis(
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
pub(super) async fn stop_child(name: &str, mut child: Child) {
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
