//! The JSON bodies of chat-server's write requests and the checks their
//! fields go through: never a panic.
#![no_main]

use chat_core::api::{AddReactionBody, PostMessageBody};
use chat_core::validate::{ClientMessageId, Emoji, UserId, check_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<PostMessageBody>(data) {
        let _ = body.user_id.map(|u| u.parse::<UserId>());
        let _ = body.client_message_id.map(|c| c.parse::<ClientMessageId>());
        if check_text(&body.text, 4000).is_ok() {
            assert!(!body.text.trim().is_empty());
            assert!(body.text.chars().count() <= 4000);
        }
    }
    if let Ok(body) = serde_json::from_slice::<AddReactionBody>(data) {
        let _ = body.user_id.map(|u| u.parse::<UserId>());
        let _ = body.emoji.parse::<Emoji>();
    }
});
