//! sse-bench: N SSE subscribers over K chats on one or more servers, P posts
//! per second (through chat-server, or produced straight to Kafka), for a
//! fixed time. Prints deliveries per second, post-to-receipt latency, lost
//! events, and the servers' RSS per connection and CPU time.
//!
//! The subscribers live in worker processes (`sse-bench subscribe`, started
//! by `sse-bench run`), so that no process needs more file descriptors than
//! its limit allows.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod hist;
mod sse;

use hist::Histogram;

#[derive(Debug, Parser)]
#[command(
    name = "sse-bench",
    version,
    about = "Load generator for SSE fan-out servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a benchmark and prints its figures.
    Run(RunArgs),
    /// A worker holding a share of the subscribers (started by `run`).
    #[command(hide = true)]
    Subscribe(Shared),
    /// Runs librdkafka's mock Kafka cluster (the broker `make run` embeds)
    /// with the topic made, prints its bootstrap address, and serves until
    /// killed.
    MockBroker(MockBrokerArgs),
}

#[derive(Debug, clap::Args)]
struct MockBrokerArgs {
    #[arg(long, default_value = "chat-events")]
    topic: String,
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

/// What `run` and its workers both need to know.
#[derive(Debug, Clone, clap::Args)]
struct Shared {
    /// SSE URL per server, `{chat}` standing for the chat id; subscribers
    /// are spread over them evenly.
    #[arg(long = "subscribe-url", value_delimiter = ',', required = true)]
    subscribe_urls: Vec<String>,
    /// Concurrent subscribers in all.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Chats the subscribers and posts are spread over.
    #[arg(long, default_value_t = 10)]
    chats: usize,
    /// Chat ids are `{prefix}-{n}`.
    #[arg(long, default_value = "bench")]
    chat_prefix: String,
    /// Worker processes holding the subscribers (each needs a file
    /// descriptor per subscriber).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// This worker's number (workers only).
    #[arg(long, default_value_t = 0, hide = true)]
    worker: usize,
    /// Loopback source addresses (127.0.0.1 up), so that more connections
    /// than one address's ephemeral ports can be opened.
    #[arg(long, default_value_t = 8)]
    source_addrs: u8,
    /// Connections being opened at once, per worker.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Wait for the first body bytes before counting a subscriber as
    /// connected (publish-server sends `retry:` once subscribed).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait_first_byte: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Publish {
    /// POST each message to chat-server.
    ChatServer,
    /// Produce each message event straight to the Kafka topic.
    Kafka,
    /// POST each message text to nchan's publisher location
    /// (`--publish-url`, `{chat}` standing for the channel).
    Nchan,
    /// POST each message to Pushpin's HTTP publish endpoint
    /// (`--publish-url`) as a GRIP `http-stream` item on the chat's channel.
    Pushpin,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    shared: Shared,
    /// Posts per second, in all (spread over the chats in turn).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Bytes of message text.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// How events get in.
    #[arg(long, value_enum, default_value_t = Publish::ChatServer)]
    publish: Publish,
    /// chat-server's post URL, `{chat}` standing for the chat id.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/api/chats/{chat}/messages"
    )]
    post_url: String,
    /// The peer's publish URL (with `--publish nchan` or `pushpin`).
    #[arg(long, default_value = "http://127.0.0.1:80/pub/{chat}")]
    publish_url: String,
    /// Kafka bootstrap servers (with `--publish kafka`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Kafka topic (with `--publish kafka`).
    #[arg(long, default_value = "chat-events")]
    kafka_topic: String,
    /// Posts in flight at most; the pacing waits beyond it.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// Process ids of the servers, for RSS and CPU time.
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Seconds to wait for every subscriber to connect.
    #[arg(long, default_value_t = 120)]
    connect_timeout: u64,
    /// Seconds to wait, after the last post, for deliveries still on the way.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(args))),
        Command::Subscribe(shared) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(subscribe(shared))),
        Command::MockBroker(args) => mock_broker(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sse-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn mock_broker(args: &MockBrokerArgs) -> Result<(), String> {
    let cluster = rdkafka::mocking::MockCluster::new(1).map_err(|e| e.to_string())?;
    cluster
        .create_topic(&args.topic, args.partitions, 1)
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", cluster.bootstrap_servers());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn chat_id(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}

/// Subscriber `i`: its chat, its server and its source address.
fn placement(shared: &Shared, i: usize) -> (usize, usize, IpAddr) {
    let source = 1 + (i % usize::from(shared.source_addrs.max(1))) as u8;
    (
        i % shared.chats,
        i % shared.subscribe_urls.len(),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
    )
}

/// What a worker reports at the end.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerResult {
    connected: u64,
    failed: u64,
    /// Deliveries of a post not seen before on that connection.
    unique: u64,
    duplicates: u64,
    /// Streams that ended before the worker was stopped.
    closed: u64,
    histogram: Vec<(usize, u64)>,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    closed: AtomicU64,
}

/// The worker: opens its share of the subscribers, says `ready`, reports
/// `progress` every 500 ms and, when told `stop` (or stdin closes), its
/// result.
async fn subscribe(shared: Shared) -> Result<(), String> {
    let counters = Arc::new(Counters::default());
    let histogram = Arc::new(Histogram::new());
    let limit = Arc::new(tokio::sync::Semaphore::new(
        shared.connect_concurrency.max(1),
    ));
    let mut opening = Vec::new();
    for i in (shared.worker..shared.subscribers).step_by(shared.workers.max(1)) {
        let (chat, server, source) = placement(&shared, i);
        let url =
            shared.subscribe_urls[server].replace("{chat}", &chat_id(&shared.chat_prefix, chat));
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let counters = counters.clone();
        let histogram = histogram.clone();
        let wait_first_byte = shared.wait_first_byte;
        tokio::spawn(async move {
            let stream = connect(&url, source, wait_first_byte).await;
            drop(permit);
            match stream {
                Ok((stream, rest)) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    let _ = opened_tx.send(());
                    let ended = read_events(stream, rest, &counters, &histogram).await;
                    if let Err(error) = ended {
                        eprintln!("sse-bench: stream of {url} ended: {error}");
                    }
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if counters.failed.load(Ordering::Relaxed) <= 5 {
                        eprintln!("sse-bench: cannot subscribe to {url} from {source}: {error}");
                    }
                    let _ = opened_tx.send(());
                }
            }
        });
        opening.push(opened);
    }
    for opened in opening {
        let _ = opened.await;
    }
    let mut out = std::io::stdout();
    let say = |out: &mut std::io::Stdout, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(
        &mut out,
        format!(
            "ready {} {}",
            counters.connected.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed)
        ),
    );
    let (stop_tx, mut stop) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "stop" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = stop_tx.blocking_send(());
    });
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = tick.tick() => say(&mut out, format!("progress {}", counters.unique.load(Ordering::Relaxed))),
        }
    }
    let result = WorkerResult {
        connected: counters.connected.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        unique: counters.unique.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        closed: counters.closed.load(Ordering::Relaxed),
        histogram: histogram.export(),
    };
    let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
    say(&mut out, format!("result {json}"));
    Ok(())
}

/// Splits `http://host:port/path` into the address and the path.
fn split_url(url: &str) -> Result<(SocketAddr, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority
        .parse()
        .map_err(|_| format!("{url}: the host must be an IP address and port"))?;
    Ok((addr, if path.is_empty() { "/" } else { path }))
}

struct Opened {
    chunked: bool,
    /// Body bytes read with the head.
    body: Vec<u8>,
}

async fn connect(
    url: &str,
    source: IpAddr,
    wait_first_byte: bool,
) -> Result<(tokio::net::TcpStream, Opened), String> {
    let (addr, path) = split_url(url)?;
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| format!("bind {source}: {e}"))?;
        let mut stream = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("request: {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let head = loop {
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed before the response head".to_owned());
            }
            if let Some(head) = sse::head(&buf)? {
                break head;
            }
        };
        let mut body = buf.split_off(head.len);
        if wait_first_byte
            && body.is_empty()
            && stream
                .read_buf(&mut body)
                .await
                .map_err(|e| e.to_string())?
                == 0
        {
            return Err("closed before the first event".to_owned());
        }
        Ok((
            stream,
            Opened {
                chunked: head.chunked,
                body,
            },
        ))
    };
    tokio::time::timeout(Duration::from_secs(30), attempt)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
}

async fn read_events(
    mut stream: tokio::net::TcpStream,
    opened: Opened,
    counters: &Counters,
    histogram: &Histogram,
) -> Result<(), String> {
    let mut dechunk = opened.chunked.then(sse::Dechunk::new);
    let mut raw = opened.body;
    let mut events = Vec::new();
    // Posts of one chat are sent concurrently, so they may be logged in
    // another order than their numbers: each post is checked off by number.
    let mut seen: Vec<u64> = Vec::new();
    loop {
        match dechunk.as_mut() {
            Some(dechunk) => {
                dechunk.feed(&raw, &mut events)?;
                raw.clear();
            }
            None => events.append(&mut raw),
        }
        let now = now_micros();
        sse::drain_events(&mut events, |seq, sent| {
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            if seen[word] & bit != 0 {
                counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            seen[word] |= bit;
            counters.unique.fetch_add(1, Ordering::Relaxed);
            histogram.record(now.saturating_sub(sent));
        });
        if dechunk.as_ref().is_some_and(sse::Dechunk::done) {
            return Err("the server ended the stream".into());
        }
        if raw.capacity() < 4096 {
            raw.reserve(4096);
        }
        if stream.read_buf(&mut raw).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed the connection".into());
        }
    }
}

/// A worker process and its output lines.
struct Worker {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    progress: Arc<AtomicU64>,
}

fn start_worker(shared: &Shared, worker: usize) -> Result<Worker, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("subscribe")
        .arg(format!(
            "--subscribe-url={}",
            shared.subscribe_urls.join(",")
        ))
        .arg(format!("--subscribers={}", shared.subscribers))
        .arg(format!("--chats={}", shared.chats))
        .arg(format!("--chat-prefix={}", shared.chat_prefix))
        .arg(format!("--workers={}", shared.workers))
        .arg(format!("--worker={worker}"))
        .arg(format!("--source-addrs={}", shared.source_addrs))
        .arg(format!(
            "--connect-concurrency={}",
            shared.connect_concurrency
        ))
        .arg(format!("--wait-first-byte={}", shared.wait_first_byte))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start a worker: {e}"))?;
    let stdout = child.stdout.take().ok_or("worker has no stdout")?;
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let progress = Arc::new(AtomicU64::new(0));
    let seen = progress.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("progress ") {
                seen.store(n.trim().parse().unwrap_or(0), Ordering::Relaxed);
            } else if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Worker {
        child,
        lines,
        progress,
    })
}

/// A server's RSS in KiB and CPU time in seconds, from /proc.
fn server_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc counts CPU time in USER_HZ ticks, 100 per second on Linux.
    Some((rss, ticks / 100.0))
}

fn usage_sum(pids: &[u32]) -> Result<(u64, f64), String> {
    pids.iter().try_fold((0, 0.0), |(rss, cpu), &pid| {
        let (r, c) = server_usage(pid).ok_or_else(|| format!("no process {pid}"))?;
        Ok((rss + r, cpu + c))
    })
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Report {
    publish: &'static str,
    subscribers: u64,
    failed_subscribers: u64,
    chats: usize,
    rate: u64,
    size: usize,
    duration_s: f64,
    posts_acknowledged: u64,
    posts_failed: u64,
    posting_fell_behind_ms: u64,
    deliveries_expected: u64,
    deliveries: u64,
    deliveries_per_s: f64,
    lost: u64,
    duplicates: u64,
    streams_closed: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_rss_idle_kib: u64,
    server_rss_connected_kib: u64,
    server_rss_end_kib: u64,
    rss_per_connection_kib: f64,
    server_cpu_s: f64,
}

async fn run(args: RunArgs) -> Result<(), String> {
    let shared = &args.shared;
    if shared.chats == 0 || shared.subscribers == 0 || args.rate == 0 {
        return Err("--chats, --subscribers and --rate must be above 0".into());
    }
    let marker_len = sse::marker(u64::from(u32::MAX), now_micros()).len();
    if args.size < marker_len {
        return Err(format!("--size must be at least {marker_len}"));
    }
    let (rss_idle, _) = usage_sum(&args.server_pids)?;
    eprintln!(
        "sse-bench: opening {} subscribers over {} chats on {} server(s) from {} worker(s)",
        shared.subscribers,
        shared.chats,
        shared.subscribe_urls.len(),
        shared.workers
    );
    let mut workers = (0..shared.workers.max(1))
        .map(|w| start_worker(shared, w))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut connected, mut failed) = (0u64, 0u64);
    let connect_deadline = tokio::time::Instant::now() + Duration::from_secs(args.connect_timeout);
    let connect_started = Instant::now();
    for worker in &mut workers {
        let line = tokio::time::timeout_at(connect_deadline, worker.lines.recv())
            .await
            .map_err(|_| "subscribers did not connect in time (--connect-timeout)".to_owned())?
            .ok_or("a worker died while connecting")?;
        let mut parts = line.split_whitespace().skip(1);
        connected += parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        failed += parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    }
    eprintln!(
        "sse-bench: {connected} subscribers connected ({failed} failed) in {:.1} s; posting {} per second for {} s",
        connect_started.elapsed().as_secs_f64(),
        args.rate,
        args.duration
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_connected, cpu_start) = usage_sum(&args.server_pids)?;

    let mut per_chat_subscribers = vec![0u64; shared.chats];
    for i in 0..shared.subscribers {
        per_chat_subscribers[placement(shared, i).0] += 1;
    }
    let posted = post_all(&args).await?;
    // From the first measured post, not from the sender's set-up and
    // warm-up (a Kafka producer's metadata and producer id take ~0.6 s).
    let started = posted.started;
    let posting_took = started.elapsed();
    let expected: u64 = posted
        .acknowledged
        .iter()
        .zip(&per_chat_subscribers)
        .map(|(acks, subs)| acks * subs)
        .sum();
    // Wait for deliveries still on the way.
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain);
    let mut all_in_at = None;
    while Instant::now() < drain_deadline {
        let got: u64 = workers
            .iter()
            .map(|w| w.progress.load(Ordering::Relaxed))
            .sum();
        if got >= expected {
            all_in_at = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = all_in_at.unwrap_or(posting_took).max(posting_took);
    let (rss_end, cpu_end) = usage_sum(&args.server_pids)?;

    let histogram = Histogram::new();
    let mut total = WorkerResult::default();
    for worker in &mut workers {
        if let Some(stdin) = worker.child.stdin.as_mut() {
            let _ = stdin.write_all(b"stop\n");
            let _ = stdin.flush();
        }
        let line = tokio::time::timeout(Duration::from_secs(30), worker.lines.recv())
            .await
            .map_err(|_| "a worker did not report".to_owned())?
            .ok_or("a worker died before reporting")?;
        let json = line
            .strip_prefix("result ")
            .ok_or_else(|| format!("unexpected worker output {line:?}"))?;
        let result: WorkerResult = serde_json::from_str(json).map_err(|e| e.to_string())?;
        histogram.merge(&result.histogram);
        total.unique += result.unique;
        total.duplicates += result.duplicates;
        total.closed += result.closed;
        let _ = worker.child.wait();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    let report = Report {
        publish: match args.publish {
            Publish::ChatServer => "chat-server",
            Publish::Kafka => "kafka",
            Publish::Nchan => "nchan",
            Publish::Pushpin => "pushpin",
        },
        subscribers: connected,
        failed_subscribers: failed,
        chats: shared.chats,
        rate: args.rate,
        size: args.size,
        duration_s: posting_took.as_secs_f64(),
        posts_acknowledged: posted.acknowledged.iter().sum(),
        posts_failed: posted.failed,
        posting_fell_behind_ms: posted.behind.as_millis() as u64,
        deliveries_expected: expected,
        deliveries: total.unique,
        deliveries_per_s: total.unique as f64 / elapsed.as_secs_f64(),
        lost: expected.saturating_sub(total.unique),
        duplicates: total.duplicates,
        streams_closed: total.closed,
        p50_ms: ms(histogram.quantile(0.5)),
        p99_ms: ms(histogram.quantile(0.99)),
        max_ms: ms(histogram.max()),
        server_rss_idle_kib: rss_idle,
        server_rss_connected_kib: rss_connected,
        server_rss_end_kib: rss_end,
        rss_per_connection_kib: if connected == 0 {
            0.0
        } else {
            rss_connected.saturating_sub(rss_idle) as f64 / connected as f64
        },
        server_cpu_s: cpu_end - cpu_start,
    };
    print_report(&report);
    if args.json {
        let json = serde_json::to_string(&report).map_err(|e| e.to_string())?;
        let _ = writeln!(std::io::stdout(), "{json}");
    }
    if report.lost > 0 || failed > 0 {
        return Err(format!(
            "{} deliveries lost, {failed} subscribers failed",
            report.lost
        ));
    }
    Ok(())
}

fn print_report(r: &Report) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "subscribers {} ({} failed) over {} chats; {} posts/s of {} bytes via {} for {:.1} s\n\
         posts acknowledged {} failed {} (pacing fell behind by {} ms)\n\
         deliveries {} of {} expected: {:.0}/s; lost {}, duplicates {}, streams closed {}\n\
         post-to-receipt p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n\
         server RSS idle {} KiB, connected {} KiB, end {} KiB: {:.2} KiB per connection; server CPU {:.1} s",
        r.subscribers,
        r.failed_subscribers,
        r.chats,
        r.rate,
        r.size,
        r.publish,
        r.duration_s,
        r.posts_acknowledged,
        r.posts_failed,
        r.posting_fell_behind_ms,
        r.deliveries,
        r.deliveries_expected,
        r.deliveries_per_s,
        r.lost,
        r.duplicates,
        r.streams_closed,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.server_rss_idle_kib,
        r.server_rss_connected_kib,
        r.server_rss_end_kib,
        r.rss_per_connection_kib,
        r.server_cpu_s,
    );
}

struct Posted {
    /// Acknowledged posts per chat.
    acknowledged: Vec<u64>,
    failed: u64,
    /// How far the pacing fell behind its schedule at worst.
    behind: Duration,
    /// When the first measured post was due: after the sender's warm-up.
    started: Instant,
}

/// Sends `rate` posts per second for `duration` seconds, chats in turn,
/// each chat's posts numbered from 0 in its marker.
async fn post_all(args: &RunArgs) -> Result<Posted, String> {
    let chats = args.shared.chats;
    let total = args.rate * args.duration;
    let sender = Sender::new(args)?;
    // A new producer first fetches metadata and its producer id, and a new
    // HTTP client opens its connections: not part of what is measured.
    // The warm-up post goes to a chat nobody subscribes to.
    let warm_up = chat_id(&args.shared.chat_prefix, usize::MAX);
    sender
        .send(&warm_up, "warm-up".to_owned())
        .await
        .map_err(|e| format!("warm-up post to {warm_up} failed: {e}"))?;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..chats).map(|_| AtomicU64::new(0)).collect());
    let failed = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut behind = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..total {
        let due = start + Duration::from_nanos(k * 1_000_000_000 / args.rate);
        tokio::time::sleep_until(due).await;
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        behind = behind.max(tokio::time::Instant::now().saturating_duration_since(due));
        let chat = (k % chats as u64) as usize;
        let seq = k / chats as u64;
        let sender = sender.clone();
        let acknowledged = acknowledged.clone();
        let failed = failed.clone();
        let chat_name = chat_id(&args.shared.chat_prefix, chat);
        let size = args.size;
        tasks.spawn(async move {
            let mut text = sse::marker(seq, now_micros());
            text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
            match sender.send(&chat_name, text).await {
                Ok(()) => acknowledged[chat].fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("sse-bench: post to {chat_name} failed: {error}");
                    }
                    0
                }
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(Posted {
        acknowledged: acknowledged
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
        failed: failed.load(Ordering::Relaxed),
        behind,
        started: start.into_std(),
    })
}

#[derive(Clone)]
enum Sender {
    ChatServer {
        http: reqwest::Client,
        url: Arc<str>,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: Arc<str>,
    },
    /// nchan or Pushpin: an HTTP POST per message.
    Peer {
        http: reqwest::Client,
        url: Arc<str>,
        grip: bool,
    },
}

impl Sender {
    fn new(args: &RunArgs) -> Result<Self, String> {
        Ok(match args.publish {
            Publish::ChatServer => Sender::ChatServer {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(args.max_in_flight)
                    .build()
                    .map_err(|e| e.to_string())?,
                url: args.post_url.as_str().into(),
            },
            Publish::Nchan | Publish::Pushpin => Sender::Peer {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(args.max_in_flight)
                    .build()
                    .map_err(|e| e.to_string())?,
                url: args.publish_url.as_str().into(),
                grip: args.publish == Publish::Pushpin,
            },
            Publish::Kafka => Sender::Kafka {
                producer: rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &args.kafka_brokers)
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "1")
                    .set("message.timeout.ms", "10000")
                    .create()
                    .map_err(|e| format!("Kafka producer: {e}"))?,
                topic: args.kafka_topic.as_str().into(),
            },
        })
    }

    async fn send(&self, chat: &str, text: String) -> Result<(), String> {
        match self {
            Sender::ChatServer { http, url } => {
                let response = http
                    .post(url.replace("{chat}", chat))
                    .json(&serde_json::json!({"userId": "bench", "text": text}))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status() == 201 {
                    Ok(())
                } else {
                    Err(format!("answered {}", response.status()))
                }
            }
            Sender::Peer { http, url, grip } => {
                let request = if *grip {
                    let content = format!("event: message\ndata: {text}\n\n");
                    http.post(url.as_ref()).json(&serde_json::json!({
                        "items": [{"channel": chat, "formats": {"http-stream": {"content": content}}}]
                    }))
                } else {
                    http.post(url.replace("{chat}", chat)).body(text)
                };
                let response = request.send().await.map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("answered {}", response.status()))
                }
            }
            Sender::Kafka { producer, topic } => {
                let event = chat_core::event::ChatEvent::Message(chat_core::event::MessagePosted {
                    chat_id: chat.parse().map_err(|e| format!("chat id {chat}: {e}"))?,
                    user_id: "bench".parse().map_err(|e| format!("user id: {e}"))?,
                    text,
                    client_message_id: None,
                    created_at: chrono::Utc::now(),
                });
                let payload = event.to_json();
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to(topic)
                            .key(chat)
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8081/api/chats/x/events"),
            Ok((
                "127.0.0.1:8081".parse().expect("addr"),
                "/api/chats/x/events"
            ))
        );
        assert!(split_url("https://127.0.0.1:1/").is_err());
        assert!(split_url("http://localhost:1/").is_err());
    }

    #[test]
    fn subscribers_spread_over_chats_servers_and_sources() {
        let shared = Shared {
            subscribe_urls: vec![
                "http://127.0.0.1:1/{chat}".into(),
                "http://127.0.0.1:2/{chat}".into(),
            ],
            subscribers: 12,
            chats: 3,
            chat_prefix: "b".into(),
            workers: 2,
            worker: 0,
            source_addrs: 4,
            connect_concurrency: 1,
            wait_first_byte: true,
        };
        let placed: Vec<_> = (0..12).map(|i| placement(&shared, i)).collect();
        for chat in 0..3 {
            assert_eq!(placed.iter().filter(|p| p.0 == chat).count(), 4);
        }
        assert_eq!(placed.iter().filter(|p| p.1 == 1).count(), 6);
        assert_eq!(placed[5].2, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    }
}
