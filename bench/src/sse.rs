//! The client side of one SSE stream, as cheap as it can be: the HTTP
//! response head, chunked decoding, and the benchmark's marker in each
//! event (`#bench:{seq}:{sent_micros}#` in the message text).

use crate::Failure;

/// The start of the marker the publisher puts in every message text.
pub(crate) const MARKER: &[u8] = b"#bench:";

/// The marker for post `seq`, sent at `sent_micros` (µs since the epoch).
pub(crate) fn marker(seq: u64, sent_micros: u64) -> String {
    format!("#bench:{seq}:{sent_micros}#")
}

/// What the response head said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes the head took.
    pub(crate) len: usize,
    pub(crate) chunked: bool,
}

/// Parses the response head from the start of `buf`: `Ok(None)` until it is
/// complete; an error unless the status is 200.
pub(crate) fn head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Err("response head over 16 KiB".into());
        }
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("answered {status:?}").into());
    }
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    Ok(Some(Head {
        len: end + 4,
        chunked,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size(usize),
    Extension(usize),
    SizeEnd(usize),
    Data(usize),
    DataEnd,
    Done,
}

/// Decodes `Transfer-Encoding: chunked` as bytes arrive.
#[derive(Debug)]
pub(crate) struct Dechunk(Chunk);

impl Dechunk {
    pub(crate) fn new() -> Self {
        Self(Chunk::Size(0))
    }

    /// Appends the data in `input` to `out`.
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Failure> {
        while let Some((&byte, rest)) = input.split_first() {
            match self.0 {
                Chunk::Size(n) => {
                    input = rest;
                    self.0 = match byte {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            let digit = (byte as char).to_digit(16).unwrap_or(0) as usize;
                            Chunk::Size(
                                n.checked_mul(16)
                                    .and_then(|n| n.checked_add(digit))
                                    .ok_or("chunk size overflows")?,
                            )
                        }
                        b';' | b' ' | b'\t' => Chunk::Extension(n),
                        b'\r' => Chunk::SizeEnd(n),
                        b'\n' => Self::after_size(n),
                        _ => return Err(format!("bad chunk size byte {byte:#x}").into()),
                    };
                }
                Chunk::Extension(n) | Chunk::SizeEnd(n) => {
                    input = rest;
                    if byte == b'\n' {
                        self.0 = Self::after_size(n);
                    }
                }
                Chunk::Data(left) => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.0 = if take == left {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left - take)
                    };
                }
                Chunk::DataEnd => {
                    input = rest;
                    if byte == b'\n' {
                        self.0 = Chunk::Size(0);
                    }
                }
                Chunk::Done => return Ok(()),
            }
        }
        Ok(())
    }

    fn after_size(n: usize) -> Chunk {
        if n == 0 { Chunk::Done } else { Chunk::Data(n) }
    }

    /// Whether the last chunk came.
    pub(crate) fn done(&self) -> bool {
        matches!(self.0, Chunk::Done)
    }
}

/// Takes each complete event (up to a blank line) off the front of `buf`
/// and hands `f` the marker's `(seq, sent_micros)` of those that have one.
pub(crate) fn drain_events(buf: &mut Vec<u8>, mut f: impl FnMut(u64, u64)) {
    let mut start = 0;
    while let Some(end) = find(&buf[start..], b"\n\n") {
        let event = &buf[start..start + end];
        if let Some((seq, sent)) = parse_marker(event) {
            f(seq, sent);
        }
        start += end + 2;
    }
    buf.drain(..start);
}

pub(crate) fn parse_marker(event: &[u8]) -> Option<(u64, u64)> {
    let at = find(event, MARKER)? + MARKER.len();
    let rest = &event[at..];
    let (seq, rest) = number(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (sent, rest) = number(rest)?;
    rest.starts_with(b"#").then_some((seq, sent))
}

fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let n = bytes[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((n, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_tells_status_and_chunking() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n").expect("partial"),
            None
        );
        let head_bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        assert_eq!(
            head(head_bytes).expect("complete"),
            Some(Head {
                len: head_bytes.len() - 4,
                chunked: true
            })
        );
        assert!(head(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").is_err());
        let plain = head(b"HTTP/1.0 200 OK\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!plain.chunked);
    }

    #[test]
    fn chunks_are_decoded_whatever_the_read_boundaries() {
        let body = "id: 0-1\nevent: message\ndata: {\"text\":\"#bench:7:1700000000000001# pad\"}\n\n\
                    : heartbeat\n\nid: 0-2\ndata: {\"text\":\"#bench:8:1700000000000002#\"}\n\n";
        let (a, b) = body.split_at(40);
        let wire = format!(
            "{:x};ext=1\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let mut dechunk = Dechunk::new();
            let mut out = Vec::new();
            let mut seen = Vec::new();
            for piece in wire.as_bytes().chunks(step) {
                dechunk.feed(piece, &mut out).expect("valid");
                drain_events(&mut out, |seq, sent| seen.push((seq, sent)));
            }
            assert!(dechunk.done());
            assert!(out.is_empty());
            assert_eq!(
                seen,
                [(7, 1_700_000_000_000_001), (8, 1_700_000_000_000_002)],
                "read {step} bytes at a time"
            );
        }
        assert!(Dechunk::new().feed(b"zz\r\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn events_without_a_whole_marker_are_skipped() {
        let mut buf =
            b"data: #bench:1:2\n\ndata: #bench::2#\n\ndata: #bench:3:4#\n\npartial".to_vec();
        let mut seen = Vec::new();
        drain_events(&mut buf, |seq, sent| seen.push((seq, sent)));
        assert_eq!(seen, [(3, 4)]);
        assert_eq!(buf, b"partial");
        assert_eq!(marker(3, 4), "#bench:3:4#");
    }
}
