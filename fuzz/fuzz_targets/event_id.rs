//! Event ids as clients send them back: the `Last-Event-ID` header, the
//! `lastEventId` parameter and the fetch API's `after`/`before` cursors.
//! Never a panic; an id that parses prints back to an id that parses to
//! itself.
#![no_main]

use chat_core::id::EventId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(id) = text.parse::<EventId>() {
        let printed = id.to_string();
        assert_eq!(printed.parse::<EventId>().expect("reparses"), id);
        assert!(id.partition >= 0 && id.offset >= 0, "{text:?} gave {id:?}");
    }
});
