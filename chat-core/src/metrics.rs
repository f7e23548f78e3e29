//! Prometheus metrics: the recorder, and the middleware that counts requests
//! by route and status.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Latency buckets, in seconds: 1 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets. The recorder
/// keeps every sample recorded since the last fold, so without this its
/// memory grows with traffic until someone scrapes `/metrics`.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The names of the metrics recorded in more than one place, each spelled
/// once: the catalog and every place that records one use these.
pub mod name {
    pub const FETCH_COUNTS_DROPPED_TOTAL: &str = "fetch_counts_dropped_total";
    pub const PUBLISH_REPLAYS_TOTAL: &str = "publish_replays_total";
    pub const PUBLISH_HUBS: &str = "publish_hubs";
    pub const PUBLISH_HUB_BUFFER_BYTES: &str = "publish_hub_buffer_bytes";
    pub const PUBLISH_CONNECTIONS: &str = "publish_connections";
    pub const PROJECTOR_LAG_SECONDS: &str = "projector_lag_seconds";
    pub const HTTP_OPEN_CONNECTIONS: &str = "http_open_connections";
    pub const HOT_SNAPSHOT_FETCHES_TOTAL: &str = "hot_snapshot_fetches_total";
    pub const HOT_SNAPSHOT_CHATS: &str = "hot_snapshot_chats";
    pub const HOT_PAGE_READS_TOTAL: &str = "hot_page_reads_total";
}

/// Every metric of the three servers: name, kind, and the HELP text of its
/// exposition. A metric recorded anywhere is listed here, once; a test of
/// each server holds its `/metrics` to having HELP for every metric.
pub const CATALOG: &[(&str, Kind, &str)] = &[
    // Every server.
    (
        "http_requests_total",
        Kind::Counter,
        "HTTP requests answered, by route template, method and status.",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "Time to answer an HTTP request (to the head of a stream), by route and method.",
    ),
    (
        name::HTTP_OPEN_CONNECTIONS,
        Kind::Gauge,
        "HTTP connections open (chat-server and scheduler; publish-server counts its streams in publish_connections).",
    ),
    (
        "http_connections_refused_total",
        Kind::Counter,
        "Connections answered 503 and closed because the server held --max-connections.",
    ),
    (
        "http_write_timeouts_total",
        Kind::Counter,
        "Connections closed because the client took no bytes of an answer for --write-timeout-ms.",
    ),
    // chat-server: writes.
    (
        "kafka_produce_duration_seconds",
        Kind::Histogram,
        "Time from handing an event to the producer to Kafka's acknowledgement.",
    ),
    (
        "kafka_produce_errors_total",
        Kind::Counter,
        "Events Kafka did not acknowledge.",
    ),
    // chat-server: the fetch API and hot chats.
    (
        "fetch_requests_total",
        Kind::Counter,
        "Fetch API requests, by status.",
    ),
    (
        "fetch_duration_seconds",
        Kind::Histogram,
        "Time to answer a fetch API request.",
    ),
    (
        "fetch_counts_flushed_total",
        Kind::Counter,
        "Distinct clients' fetches per chat and second, counted toward hotness and flushed to Redis.",
    ),
    (
        name::FETCH_COUNTS_DROPPED_TOTAL,
        Kind::Counter,
        "Fetch counts dropped: the hot-chat Redis did not take them, or too many were pending.",
    ),
    (
        "hot_fetches_total",
        Kind::Counter,
        "Fetches of hot chats by budget (client: per client, per instance; chat: the chat's cluster-wide budget, for pages the snapshot cannot answer), mode (instance, redis or local) and outcome (admitted or throttled).",
    ),
    (
        "hot_client_budget_full_total",
        Kind::Counter,
        "Hot-chat fetches admitted untracked because the per-client budget tracked as many clients as it may.",
    ),
    (
        name::HOT_SNAPSHOT_FETCHES_TOTAL,
        Kind::Counter,
        "Fetches of hot chats by how the snapshot served them: hit (fresh), miss (read it), wait (waited for a read in flight), stale (an older one, while a read is in flight or Redis fails), uncovered (a page it cannot answer).",
    ),
    (
        name::HOT_PAGE_READS_TOTAL,
        Kind::Counter,
        "Redis page reads for hot chats by kind (snapshot: one per chat per snapshot lifetime; page: a page the snapshot cannot answer) and result (ok or error).",
    ),
    (
        name::HOT_SNAPSHOT_CHATS,
        Kind::Gauge,
        "Hot chats with a snapshot on this server.",
    ),
    (
        "hot_chats",
        Kind::Gauge,
        "Chats this server knows to be hot.",
    ),
    (
        "hot_store_up",
        Kind::Gauge,
        "1 while the hot-chat Redis answers, 0 while hot chats are throttled locally.",
    ),
    (
        "hotchat_flag_delay_seconds",
        Kind::Histogram,
        "From the end of the second that made a chat hot to this server learning of it.",
    ),
    // chat-server: the projector.
    (
        "projector_events_applied_total",
        Kind::Counter,
        "Events the projector applied to the read model.",
    ),
    (
        "projector_reactions_refused_total",
        Kind::Counter,
        "Reaction adds the projector dropped, by reason (emoji_cap: the message held --max-emojis-per-message).",
    ),
    (
        "projector_malformed_records_total",
        Kind::Counter,
        "Records the projector skipped because they are not chat events.",
    ),
    (
        "projector_redis_errors_total",
        Kind::Counter,
        "Failed writes of the projector to Redis (each retried).",
    ),
    (
        "projector_rejoins_total",
        Kind::Counter,
        "Times the projector left and rejoined its group because the group left the log unread.",
    ),
    (
        "projector_lag_records",
        Kind::Gauge,
        "Records of the topic the projector has not applied yet.",
    ),
    (
        name::PROJECTOR_LAG_SECONDS,
        Kind::Gauge,
        "Age of the newest record the projector applied, 0 when caught up.",
    ),
    // publish-server.
    (
        name::PUBLISH_CONNECTIONS,
        Kind::Gauge,
        "Open event streams.",
    ),
    (
        name::PUBLISH_HUBS,
        Kind::Gauge,
        "Chats with a hub (streamed or recently streamed).",
    ),
    (
        name::PUBLISH_HUB_BUFFER_BYTES,
        Kind::Gauge,
        "Bytes of recent events all hubs keep in memory (at most --hub-buffer-total-bytes).",
    ),
    (
        "publish_events_in_total",
        Kind::Counter,
        "Records read from Kafka.",
    ),
    (
        "publish_malformed_records_total",
        Kind::Counter,
        "Records skipped because they are not chat events.",
    ),
    (
        "publish_consumer_lag_seconds",
        Kind::Gauge,
        "Age of the newest record read from Kafka.",
    ),
    (
        "publish_event_delay_seconds",
        Kind::Histogram,
        "Each event's time from its producer to this reader (the Kafka hop).",
    ),
    (
        "publish_frames_delivered_total",
        Kind::Counter,
        "Frames written to subscribers' sockets.",
    ),
    (
        "publish_coalesced_frames_total",
        Kind::Counter,
        "`reactions` events sent for hot chats (a chat's events of one second travel as one frame).",
    ),
    (
        name::PUBLISH_REPLAYS_TOTAL,
        Kind::Counter,
        "Resumes served from memory or Redis, by source.",
    ),
    (
        "publish_resets_total",
        Kind::Counter,
        "Streams told `reset`: their position could not be replayed.",
    ),
    (
        "publish_slow_subscriber_catchups_total",
        Kind::Counter,
        "Subscribers that fell behind the live feed and caught up from the chat's buffer.",
    ),
    (
        "publish_heap_in_use_bytes",
        Kind::Gauge,
        "Heap bytes in use, as the allocator reports them.",
    ),
    (
        "publish_memory_trims_total",
        Kind::Counter,
        "Times the heap was trimmed to give memory back, by reason.",
    ),
    (
        "publish_memory_trim_seconds",
        Kind::Histogram,
        "How long each heap trim held the allocator.",
    ),
    (
        "publish_fanout_delay_seconds",
        Kind::Histogram,
        "From an event's arrival at its chat's hub to a live subscriber's socket taking it.",
    ),
    // The scheduler.
    (
        "scheduler_leader",
        Kind::Gauge,
        "1 while this replica leads, 0 while it stands by.",
    ),
    (
        "scheduler_hot_chats",
        Kind::Gauge,
        "Chats flagged hot after the last tick.",
    ),
    (
        "scheduler_tick_duration_seconds",
        Kind::Histogram,
        "Time a tick took, in one Redis round trip.",
    ),
    (
        "scheduler_tick_lateness_seconds",
        Kind::Histogram,
        "How late a tick started after its due time.",
    ),
    (
        "scheduler_tick_errors_total",
        Kind::Counter,
        "Ticks that failed.",
    ),
];

/// The HELP text of the catalogue's metric `name` (empty for none).
pub fn help(name: &str) -> &'static str {
    CATALOG
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or("", |(_, _, help)| help)
}

/// Gives every metric of the catalogue its HELP text.
fn describe() {
    for &(name, kind, help) in CATALOG {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The process's metrics recorder, installed on first use, with every
/// metric described, and a thread that folds histogram samples into their
/// buckets every `UPKEEP_EVERY`.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no metrics upkeep thread; histograms grow until scraped");
            }
            handle
        })
        .clone()
}

/// Counts every request by route template, method and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    record_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// The `method` label of a request: a method the HTTP standard names, else
/// `other`. Any token is a method to the http crate, so a label of the
/// client's own spelling would let anyone add series without bound.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

/// Counts one request by route template, method and status
/// (`http_requests_total`) and records how long it took
/// (`http_request_duration_seconds`): for the router's requests and for
/// those answered outside it.
pub fn record_request(
    route: impl Into<metrics::SharedString>,
    method: impl Into<metrics::SharedString>,
    status: u16,
    took: std::time::Duration,
) {
    let (route, method) = (route.into(), method.into());
    metrics::histogram!("http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(took);
    metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status.to_string())
        .increment(1);
}

/// `GET /metrics`: the recorder's Prometheus text exposition.
pub fn exposition(handle: &PrometheusHandle) -> Response {
    text(handle.render())
}

/// `GET /metrics` answering `body`, a Prometheus text exposition.
pub fn text(body: String) -> Response {
    use axum::response::IntoResponse as _;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::method_label;

    #[test]
    fn a_made_up_method_is_labelled_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for made_up in ["X0001", "get", "BREW", "PROPFIND"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("a token");
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}
