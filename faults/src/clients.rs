//! The fault suite's clients: a poster that records what it was told, and
//! a subscriber that records what it received.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::*;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn post(
    http: reqwest::Client,
    bases: Vec<String>,
    chats: Vec<String>,
    tag: String,
    poster: usize,
    every: Duration,
    client_ids: bool,
    acked: Arc<Mutex<HashMap<String, Vec<Acked>>>>,
    outcomes: Arc<Outcomes>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    stop: CancellationToken,
) {
    let mut beat = chat_core::shutdown::Ticks::every(every, &stop);
    for n in 0u64.. {
        if !beat.next().await {
            return;
        }
        let chat = &chats[(n as usize + poster) % chats.len()];
        let text = format!("{tag}-{n}");
        let mut body = json!({"userId": format!("poster-{poster}"), "text": text});
        if client_ids {
            body["clientMessageId"] = json!(text);
        }
        // A refused post is retried with its clientMessageId, on the other
        // server, for up to 30 s; it is given up only then.
        let give_up = Instant::now()
            + if client_ids {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            };
        for attempt in 0usize.. {
            let base = &bases[(n as usize + attempt) % bases.len()];
            let at = Instant::now();
            let answer = http
                .post(format!("{base}/api/chats/{chat}/messages"))
                .json(&body)
                .send()
                .await;
            attempts.lock().expect("attempts").push(Attempt {
                at,
                took: at.elapsed(),
                status: answer.as_ref().map_or(0, |r| r.status().as_u16()),
                retry_after: answer
                    .as_ref()
                    .is_ok_and(|r| r.headers().contains_key("retry-after")),
            });
            let counter = match &answer {
                Ok(r) if r.status() == 201 || r.status() == 200 => None,
                Ok(r) if r.status() == 503 => Some(&outcomes.unavailable),
                Ok(r) if r.status() == 409 => Some(&outcomes.conflict),
                Ok(_) => Some(&outcomes.other_status),
                Err(_) => Some(&outcomes.transport_error),
            };
            match counter {
                None => {
                    let stored: Value = answer.expect("answer").json().await.unwrap_or(Value::Null);
                    if let Some(id) = stored["id"].as_str() {
                        outcomes.created.fetch_add(1, Ordering::Relaxed);
                        if attempt > 0 {
                            outcomes
                                .retried_then_created
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        acked
                            .lock()
                            .expect("acked")
                            .entry(chat.clone())
                            .or_default()
                            .push(Acked {
                                id: id.to_owned(),
                                text: text.clone(),
                                at: Instant::now(),
                            });
                    }
                    break;
                }
                Some(counter) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

pub(crate) async fn subscribe(
    http: reqwest::Client,
    bases: Vec<String>,
    chat: String,
    index: usize,
    got: Arc<Mutex<Received>>,
    connected: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut last_id: Option<String> = None;
    let mut first = true;
    for attempt in index.. {
        if stop.is_cancelled() {
            return;
        }
        let base = &bases[attempt % bases.len()];
        let mut request = http.get(format!("{base}/api/chats/{chat}/events"));
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::select! {
            () = stop.cancelled() => return,
            r = request.send() => r,
        };
        match response {
            Ok(r) if r.status() == 200 => {
                if first {
                    connected.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
                let mut body = r.bytes_stream();
                let mut decoder = test_support::SseDecoder::default();
                loop {
                    let chunk = tokio::select! {
                        () = stop.cancelled() => return,
                        c = body.next() => c,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    for block in decoder.push(&chunk) {
                        let SseBlock { id, event, data } = SseBlock::parse(&block);
                        let data = data.and_then(|d| serde_json::from_str::<Value>(&d).ok());
                        let mut got = got.lock().expect("received");
                        match event.as_deref() {
                            Some("message") => {
                                let text = data
                                    .as_ref()
                                    .and_then(|d| d["text"].as_str())
                                    .unwrap_or_default()
                                    .to_owned();
                                got.messages.push((id.clone().unwrap_or_default(), text));
                            }
                            Some("reset") => {
                                got.resets += 1;
                            }
                            _ => {}
                        }
                        if id.is_some() {
                            last_id = id;
                        }
                    }
                }
            }
            _ => {}
        }
        got.lock().expect("received").reconnects += 1;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
