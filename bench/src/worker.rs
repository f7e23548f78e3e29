//! The subscriber worker (`sse-bench subscribe`): its share of the
//! subscribers, each reading its stream and timing each post's delivery.

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::hist::Histogram;
use crate::*;

/// The chats subscriber `i` follows: `i` and the next ones, as many as
/// `--chats-per-stream`, each once.
pub(crate) fn chats_of(shared: &Shared, i: usize) -> impl Iterator<Item = usize> + '_ {
    let n = shared.chats_per_stream.clamp(1, shared.chats.max(1));
    (0..n).map(move |j| (i + j) % shared.chats)
}

/// Subscriber `i`'s stream URL on `server`.
pub(crate) fn subscribe_url(shared: &Shared, i: usize, server: usize) -> String {
    let template = &shared.subscribe_urls[server];
    let chats: Vec<String> = chats_of(shared, i)
        .map(|c| format!("chat={}", chat_id(&shared.chat_prefix, c)))
        .collect();
    template
        .replace("{chats}", &chats.join("&"))
        .replace("{chat}", &chat_id(&shared.chat_prefix, i % shared.chats))
}

/// Subscriber `i`: its (first) chat, its server and its source address.
pub(crate) fn placement(shared: &Shared, i: usize) -> (usize, usize, IpAddr) {
    let source = 1 + (i % usize::from(shared.source_addrs.max(1))) as u8;
    (
        i % shared.chats,
        i % shared.subscribe_urls.len(),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
    )
}

/// What a worker counts of its subscribers: as atomics while it runs
/// (`Counters`), as plain numbers in its result.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Counts<T> {
    pub(crate) connected: T,
    pub(crate) failed: T,
    /// Deliveries of a post not seen before on that connection.
    pub(crate) unique: T,
    pub(crate) duplicates: T,
    /// Streams that ended before the worker was stopped.
    pub(crate) closed: T,
}

pub(crate) type Counters = Counts<AtomicU64>;

impl Counters {
    /// The counts so far.
    fn load(&self) -> Counts<u64> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            connected: load(&self.connected),
            failed: load(&self.failed),
            unique: load(&self.unique),
            duplicates: load(&self.duplicates),
            closed: load(&self.closed),
        }
    }
}

/// What a worker reports at the end.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerResult {
    /// Flattened: the counts are fields of the result line's JSON.
    #[serde(flatten)]
    pub(crate) counts: Counts<u64>,
    pub(crate) histogram: Vec<(usize, u64)>,
}

/// The worker: opens its share of the subscribers, says `ready`, reports
/// `progress` every 500 ms and, when told `stop` (or stdin closes), its
/// result.
pub(crate) async fn subscribe(shared: Shared) -> Result<(), Failure> {
    let counters = Arc::new(Counters::default());
    let histogram = Arc::new(Histogram::new());
    let limit = Arc::new(tokio::sync::Semaphore::new(
        shared.connect_concurrency.max(1),
    ));
    let mut opening = Vec::new();
    for i in (shared.worker..shared.subscribers).step_by(shared.workers.max(1)) {
        let (_, server, source) = placement(&shared, i);
        let url = subscribe_url(&shared, i, server);
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let permit = limit.clone().acquire_owned().await.map_err(Failure::from)?;
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
        counts: counters.load(),
        histogram: histogram.export(),
    };
    let json = serde_json::to_string(&result).map_err(Failure::from)?;
    say(&mut out, format!("result {json}"));
    Ok(())
}

/// Splits `http://host:port/path` into the address and the path.
pub(crate) fn split_url(url: &str) -> Result<(SocketAddr, &str), Failure> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority
        .parse()
        .map_err(|_| format!("{url}: the host must be an IP address and port"))?;
    Ok((addr, if path.is_empty() { "/" } else { path }))
}

pub(crate) struct Opened {
    pub(crate) chunked: bool,
    /// Body bytes read with the head.
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn connect(
    url: &str,
    source: IpAddr,
    wait_first_byte: bool,
) -> Result<(tokio::net::TcpStream, Opened), Failure> {
    let (addr, path) = split_url(url)?;
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
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
            if stream.read_buf(&mut buf).await.map_err(Failure::from)? == 0 {
                return Err("closed before the response head".into());
            }
            if let Some(head) = sse::head(&buf)? {
                break head;
            }
        };
        let mut body = buf.split_off(head.len);
        if wait_first_byte
            && body.is_empty()
            && stream.read_buf(&mut body).await.map_err(Failure::from)? == 0
        {
            return Err("closed before the first event".into());
        }
        Ok::<_, Failure>((
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

pub(crate) async fn read_events(
    mut stream: tokio::net::TcpStream,
    opened: Opened,
    counters: &Counters,
    histogram: &Histogram,
) -> Result<(), Failure> {
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
        if stream.read_buf(&mut raw).await.map_err(Failure::from)? == 0 {
            return Err("the server closed the connection".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8081/api/chats/x/events").expect("splits"),
            (
                "127.0.0.1:8081".parse().expect("addr"),
                "/api/chats/x/events"
            )
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
            chats_per_stream: 1,
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
        assert_eq!(subscribe_url(&shared, 4, 1), "http://127.0.0.1:2/b-1");
        let many = Shared {
            subscribe_urls: vec!["http://127.0.0.1:1/api/events?{chats}".into()],
            chats_per_stream: 2,
            ..shared
        };
        assert_eq!(
            subscribe_url(&many, 2, 0),
            "http://127.0.0.1:1/api/events?chat=b-2&chat=b-0",
            "the next chats, wrapping round"
        );
    }
}
