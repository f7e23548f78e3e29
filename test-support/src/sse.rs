//! The client side of Server-Sent Events as the tests read them: blocks
//! cut from the byte stream before decoding, their fields, and a
//! subscriber that hands events over as they arrive.

use std::time::Duration;

/// The fields of one SSE block (the text up to a blank line), as a client
/// reads them: `id:`, `event:` and `data:` (the server writes each once
/// and on one line).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseBlock {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

impl SseBlock {
    pub fn parse(block: &str) -> Self {
        let mut fields = Self::default();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                fields.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                fields.event = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                fields.data = Some(v.to_owned());
            }
        }
        fields
    }
}

/// Cuts an SSE byte stream into blocks. Bytes are buffered until a blank
/// line ends a block, and only a whole block is decoded, so a character
/// split across two reads arrives whole.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
}

impl SseDecoder {
    /// Takes the next bytes; answers the blocks they complete, each with
    /// its closing blank line (so the blocks, joined, are the stream).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut blocks = Vec::new();
        while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
            blocks.push(String::from_utf8(block).expect("an SSE block is UTF-8"));
        }
        blocks
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

impl Event {
    /// The event of a block; `None` for a comment or `retry:` alone.
    pub fn parse(block: &str) -> Option<Self> {
        let SseBlock { id, event, data } = SseBlock::parse(block);
        Some(Self {
            id,
            event: event?,
            data: serde_json::from_str(&data?).expect("data is JSON"),
        })
    }
}

/// An SSE subscriber: events arrive on `events` as the stream delivers them.
#[derive(Debug)]
pub struct Subscriber {
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Opens a stream; returns once the response headers arrived and the
    /// first bytes (`retry:`) were read, so the subscription is live.
    pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let headers: Vec<(&str, String)> = last_event_id
            .map(|id| ("last-event-id", id.to_owned()))
            .into_iter()
            .collect();
        Self::open_with(http, url, &headers).await
    }

    /// Opens a stream with these request headers.
    pub async fn open_with(http: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> Self {
        use futures::StreamExt as _;
        let mut request = http.get(url).timeout(Duration::from_secs(600));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.bytes_stream();
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let first = body.next().await.expect("first bytes").expect("bytes");
        let task = tokio::spawn(async move {
            let mut decoder = SseDecoder::default();
            let mut bytes = first;
            loop {
                for block in decoder.push(&bytes) {
                    if let Some(event) = Event::parse(&block)
                        && tx.send(event).is_err()
                    {
                        return;
                    }
                }
                match body.next().await {
                    Some(Ok(more)) => bytes = more,
                    _ => return,
                }
            }
        });
        Self { events, task }
    }

    /// The next `n` events, within `limit`.
    pub async fn take(&mut self, n: usize, limit: Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => got.push(event),
                Ok(None) => break,
                Err(_) => panic!("got {} of {n} events: {got:?}", got.len()),
            }
        }
        got
    }

    /// Whether the stream has ended (the server closed it).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_arrives_whole() {
        let stream =
            "retry: 2000\n\nid: 0-1\nevent: message\ndata: {\"text\":\"👍\"}\n\n".as_bytes();
        let cut = stream.len() - 5; // inside the emoji's four bytes
        let mut decoder = SseDecoder::default();
        let mut blocks = decoder.push(&stream[..cut]);
        assert_eq!(blocks, ["retry: 2000\n\n"]);
        blocks.extend(decoder.push(&stream[cut..]));
        assert_eq!(blocks.concat().as_bytes(), stream);
        let event = Event::parse(&blocks[1]).expect("an event");
        assert_eq!(event.data["text"], "👍");
        assert_eq!(Event::parse(&blocks[0]), None);
    }
}
