//! sse-bench: N SSE subscribers over K chats on one or more servers, P posts
//! per second (through chat-server, or produced straight to Kafka), for a
//! fixed time. Prints deliveries per second, post-to-receipt latency, lost
//! events, and the servers' RSS per connection and CPU time.
//!
//! The subscribers live in worker processes (`sse-bench subscribe`, started
//! by `sse-bench run`), so that no process needs more file descriptors than
//! its limit allows.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};

/// Why a benchmark step failed, in words for the person running it.
pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;

mod floor;
mod hist;
mod metrics;
mod post;
mod run;
mod sse;
mod worker;

use run::run;
use worker::subscribe;

#[derive(Debug, Parser)]
#[command(
    name = "sse-bench",
    version,
    about = "Load generator for SSE fan-out servers"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Runs a benchmark and prints its figures.
    Run(Box<RunArgs>),
    /// A worker holding a share of the subscribers (started by `run`).
    #[command(hide = true)]
    Subscribe(Shared),
    /// Runs librdkafka's mock Kafka cluster (the broker `make run` embeds)
    /// with the topic made, prints its bootstrap address, and serves until
    /// killed.
    MockBroker(MockBrokerArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct MockBrokerArgs {
    #[arg(long, default_value = chat_core::names::CHAT_EVENTS_TOPIC)]
    pub(crate) topic: String,
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
}

/// What `run` and its workers both need to know.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Shared {
    /// SSE URL per server, `{chat}` standing for the chat id, or `{chats}`
    /// for `chat=...&chat=...` of a subscriber's chats (a many-chat
    /// stream); subscribers are spread over them evenly.
    #[arg(long = "subscribe-url", value_delimiter = ',', required = true)]
    pub(crate) subscribe_urls: Vec<String>,
    /// Concurrent subscribers in all.
    #[arg(long, default_value_t = 1000)]
    pub(crate) subscribers: usize,
    /// Chats the subscribers and posts are spread over.
    #[arg(long, default_value_t = 10)]
    pub(crate) chats: usize,
    /// Chats each subscriber follows on its one stream (`{chats}` in the
    /// subscribe URL): subscriber `i` follows chats `i` to `i + n - 1`.
    #[arg(long, default_value_t = 1)]
    pub(crate) chats_per_stream: usize,
    /// Chat ids are `{prefix}-{n}`.
    #[arg(long, default_value = "bench")]
    pub(crate) chat_prefix: String,
    /// Worker processes holding the subscribers (each needs a file
    /// descriptor per subscriber).
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// This worker's number (workers only).
    #[arg(long, default_value_t = 0, hide = true)]
    pub(crate) worker: usize,
    /// Loopback source addresses (127.0.0.1 up), so that more connections
    /// than one address's ephemeral ports can be opened.
    #[arg(long, default_value_t = 8)]
    pub(crate) source_addrs: u8,
    /// Connections being opened at once, per worker.
    #[arg(long, default_value_t = 200)]
    pub(crate) connect_concurrency: usize,
    /// Wait for the first body bytes before counting a subscriber as
    /// connected (publish-server sends `retry:` once subscribed).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) wait_first_byte: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Publish {
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
    /// POST each message to Centrifugo's HTTP API (`--publish-url`, its
    /// `/api/publish`, with `--publish-api-key`) on the chat's channel.
    Centrifugo,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) shared: Shared,
    /// Posts per second, in all (spread over the chats in turn).
    #[arg(long, default_value_t = 1000)]
    pub(crate) rate: u64,
    /// Bytes of message text.
    #[arg(long, default_value_t = 100)]
    pub(crate) size: usize,
    /// Seconds of posting.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// How events get in.
    #[arg(long, value_enum, default_value_t = Publish::ChatServer)]
    pub(crate) publish: Publish,
    /// chat-server's post URL, `{chat}` standing for the chat id.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/api/chats/{chat}/messages"
    )]
    pub(crate) post_url: String,
    /// The peer's publish URL (with `--publish nchan` or `pushpin`).
    #[arg(long, default_value = "http://127.0.0.1:80/pub/{chat}")]
    pub(crate) publish_url: String,
    /// The API key sent as `X-API-Key` (with `--publish centrifugo`).
    #[arg(long, default_value = "")]
    pub(crate) publish_api_key: String,
    /// Also time each post from its send to its receipt by a plain Kafka
    /// consumer of the topic (`--kafka-brokers`, `--kafka-topic`): the
    /// floor that Kafka sets under publish-server.
    #[arg(long)]
    pub(crate) floor: bool,
    /// The floor consumer's longest fetch wait at the broker, in ms (as
    /// publish-server's `--kafka-fetch-wait-ms`).
    #[arg(long, default_value_t = 10)]
    pub(crate) floor_fetch_wait_ms: u64,
    /// Kafka bootstrap servers (with `--publish kafka`).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) kafka_brokers: String,
    /// Kafka topic (with `--publish kafka`).
    #[arg(long, default_value = chat_core::names::CHAT_EVENTS_TOPIC)]
    pub(crate) kafka_topic: String,
    /// Posts in flight at most; the pacing waits beyond it.
    #[arg(long, default_value_t = 2000)]
    pub(crate) max_in_flight: usize,
    /// Base URLs of publish-server processes whose `/metrics` histograms to
    /// report over the posting (their Kafka hop and own share).
    #[arg(long = "metrics-url", value_delimiter = ',')]
    pub(crate) metrics_urls: Vec<String>,
    /// Process ids of the servers, for RSS and CPU time.
    #[arg(long = "server-pid", value_delimiter = ',')]
    pub(crate) server_pids: Vec<u32>,
    /// Seconds to wait for every subscriber to connect.
    #[arg(long, default_value_t = 120)]
    pub(crate) connect_timeout: u64,
    /// Seconds to wait, after the last post, for deliveries still on the way.
    #[arg(long, default_value_t = 10)]
    pub(crate) drain: u64,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub(crate) json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Failure::from)
            .and_then(|rt| rt.block_on(run(*args))),
        Command::Subscribe(shared) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Failure::from)
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

pub(crate) fn mock_broker(args: &MockBrokerArgs) -> Result<(), Failure> {
    let cluster = rdkafka::mocking::MockCluster::new(1).map_err(Failure::from)?;
    cluster
        .create_topic(&args.topic, args.partitions, 1)
        .map_err(Failure::from)?;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", cluster.bootstrap_servers());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(crate) fn chat_id(prefix: &str, n: usize) -> String {
    format!("{prefix}-{n}")
}
