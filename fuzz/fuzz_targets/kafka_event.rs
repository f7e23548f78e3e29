//! A Kafka record's key and value, as the projector and publish-server
//! decode them: never a panic, and an event that decodes encodes back to
//! an equal event whose SSE frame is one well-formed block.
//!
//! Input: one byte `n`, then `n` bytes of key (no key when `n` is 255),
//! then the value (no value when the input ends there).
#![no_main]

use chat_core::event::ChatEvent;
use chat_core::id::EventId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = if n == 255 {
        (None, rest)
    } else {
        let n = usize::from(n).min(rest.len());
        (Some(&rest[..n]), &rest[n..])
    };
    let value = (!value.is_empty()).then_some(value);
    if let Ok(event) = ChatEvent::decode(key, value) {
        let again = ChatEvent::decode(None, Some(&event.to_json())).expect("re-decodes");
        assert_eq!(again, event);
        let frame = chat_core::sse::frame(EventId::new(0, 1), &event);
        assert!(frame.ends_with("\n\n"));
        assert_eq!(frame.matches("\n\n").count(), 1, "one block: {frame:?}");
    }
});
