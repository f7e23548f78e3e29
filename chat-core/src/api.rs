//! The JSON bodies of chat-server's write requests, as the client sends
//! them: fields are plain strings here and are validated by the handler
//! (the user may come from a token instead).

use serde::Deserialize;

/// `POST /api/chats/{chatId}/messages`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostMessageBody {
    #[serde(default)]
    pub user_id: Option<String>,
    pub text: String,
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// `POST /api/chats/{chatId}/messages/{messageId}/reactions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddReactionBody {
    #[serde(default)]
    pub user_id: Option<String>,
    pub emoji: String,
}
