//! Chat ids and emojis: never a panic; a chat id that passes is 1 to 64
//! characters of `[A-Za-z0-9_-]`, and an emoji that passes is within the
//! emoji limits.
#![no_main]

use chat_core::validate::{ChatId, Emoji, MAX_EMOJI_BYTES, MAX_EMOJI_SCALARS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(chat) = text.parse::<ChatId>() {
        let s = chat.as_str();
        assert!((1..=64).contains(&s.len()), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{s:?}");
    }
    if let Ok(emoji) = text.parse::<Emoji>() {
        let s = emoji.as_str();
        assert!(!s.is_empty());
        assert!(s.len() <= MAX_EMOJI_BYTES, "{s:?}");
        assert!(s.chars().count() <= MAX_EMOJI_SCALARS, "{s:?}");
    }
});
