//! `sse-bench run`: starts the workers, posts, and reports the figures.

use std::io::{BufRead as _, Write as _};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hist::Histogram;
use crate::post::*;
use crate::worker::*;
use crate::*;

/// A worker process and its output lines.
pub(crate) struct Worker {
    pub(crate) child: std::process::Child,
    pub(crate) lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    pub(crate) progress: Arc<AtomicU64>,
}

pub(crate) fn start_worker(shared: &Shared, worker: usize) -> Result<Worker, Failure> {
    let exe = std::env::current_exe().map_err(Failure::from)?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("subscribe")
        .arg(format!(
            "--subscribe-url={}",
            shared.subscribe_urls.join(",")
        ))
        .arg(format!("--subscribers={}", shared.subscribers))
        .arg(format!("--chats={}", shared.chats))
        .arg(format!("--chats-per-stream={}", shared.chats_per_stream))
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
pub(crate) fn server_usage(pid: u32) -> Option<(u64, f64)> {
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

pub(crate) fn usage_sum(pids: &[u32]) -> Result<(u64, f64), Failure> {
    pids.iter().try_fold((0, 0.0), |(rss, cpu), &pid| {
        let (r, c) = server_usage(pid).ok_or_else(|| format!("no process {pid}"))?;
        Ok((rss + r, cpu + c))
    })
}

/// The figures of one run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) publish: &'static str,
    pub(crate) subscribers: u64,
    pub(crate) failed_subscribers: u64,
    pub(crate) chats: usize,
    pub(crate) rate: u64,
    pub(crate) size: usize,
    pub(crate) duration_s: f64,
    pub(crate) posts_acknowledged: u64,
    pub(crate) posts_failed: u64,
    pub(crate) posting_fell_behind_ms: u64,
    pub(crate) deliveries_expected: u64,
    pub(crate) deliveries: u64,
    pub(crate) deliveries_per_s: f64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    pub(crate) streams_closed: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) server_rss_idle_kib: u64,
    pub(crate) server_rss_connected_kib: u64,
    pub(crate) server_rss_end_kib: u64,
    pub(crate) rss_per_connection_kib: f64,
    pub(crate) server_cpu_s: f64,
    /// publish-server's own histograms over the posting (`--metrics-url`):
    /// the bucket bound holding the 99th percentile of the Kafka hop
    /// (`publish_event_delay_seconds`) and of its own share, hub to socket
    /// (`publish_fanout_delay_seconds`).
    pub(crate) kafka_hop_p99_le_ms: Option<f64>,
    pub(crate) fanout_p99_le_ms: Option<f64>,
    /// Posts a plain Kafka consumer timed (with `--floor`), and their p50
    /// and p99 from send to its receipt.
    pub(crate) floor_samples: Option<u64>,
    pub(crate) floor_p50_ms: Option<f64>,
    pub(crate) floor_p99_ms: Option<f64>,
}

pub(crate) async fn run(args: RunArgs) -> Result<(), Failure> {
    let shared = &args.shared;
    if shared.chats == 0 || shared.subscribers == 0 || args.rate == 0 {
        return Err("--chats, --subscribers and --rate must be above 0".into());
    }
    let marker_len = sse::marker(u64::from(u32::MAX), now_micros()).len();
    if args.size < marker_len {
        return Err(format!("--size must be at least {marker_len}").into());
    }
    let (rss_idle, _) = usage_sum(&args.server_pids)?;
    let floor = if args.floor {
        Some(crate::floor::Floor::start(
            &args.kafka_brokers,
            &args.kafka_topic,
            args.floor_fetch_wait_ms,
        )?)
    } else {
        None
    };
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
        for chat in chats_of(shared, i) {
            per_chat_subscribers[chat] += 1;
        }
    }
    let sender = crate::post::warmed_sender(&args).await?;
    // publish-server's histograms from here on: not the warm-up post, once
    // every server has read it.
    crate::metrics::until_each_counted(&args.metrics_urls, "publish_event_delay_seconds").await;
    let metrics_before = crate::metrics::scrape(&args.metrics_urls).await;
    let posted = post_all(&args, sender).await?;
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
    let floor = floor.map(crate::floor::Floor::finish);
    let metrics_after = crate::metrics::scrape(&args.metrics_urls).await;
    let p99_le = |name: &str| crate::metrics::p99_le_ms(&metrics_before, &metrics_after, name);

    let histogram = Histogram::new();
    let mut total = Counts::<u64>::default();
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
        let result: WorkerResult = serde_json::from_str(json).map_err(Failure::from)?;
        histogram.merge(&result.histogram);
        total.unique += result.counts.unique;
        total.duplicates += result.counts.duplicates;
        total.closed += result.counts.closed;
        let _ = worker.child.wait();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    let report = Report {
        publish: match args.publish {
            Publish::ChatServer => "chat-server",
            Publish::Kafka => "kafka",
            Publish::Nchan => "nchan",
            Publish::Pushpin => "pushpin",
            Publish::Centrifugo => "centrifugo",
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
        kafka_hop_p99_le_ms: p99_le("publish_event_delay_seconds"),
        fanout_p99_le_ms: p99_le("publish_fanout_delay_seconds"),
        floor_samples: floor.map(|(n, _, _)| n),
        floor_p50_ms: floor.map(|(_, p50, _)| ms(p50)),
        floor_p99_ms: floor.map(|(_, _, p99)| ms(p99)),
    };
    print_report(&report);
    if args.json {
        let json = serde_json::to_string(&report).map_err(Failure::from)?;
        let _ = writeln!(std::io::stdout(), "{json}");
    }
    if report.lost > 0 || failed > 0 {
        return Err(format!(
            "{} deliveries lost, {failed} subscribers failed",
            report.lost
        )
        .into());
    }
    Ok(())
}

pub(crate) fn print_report(r: &Report) {
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
    if let (Some(n), Some(p50), Some(p99)) = (r.floor_samples, r.floor_p50_ms, r.floor_p99_ms) {
        let _ = writeln!(
            out,
            "Kafka floor (a plain consumer, {n} posts): send-to-receipt p50 {p50:.2} ms  p99 {p99:.2} ms"
        );
    }
}
