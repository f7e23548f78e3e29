//! Validated identifiers and inputs: a value of these types has passed the
//! rules of the API contract, so the code that holds one need not check again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an input was refused, in words a client developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field or path parameter at fault, as the API names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The longest chat id, user id and client message id (in bytes).
pub const MAX_ID_LEN: usize = 64;
/// The longest `clientMessageId` (in bytes).
pub const MAX_CLIENT_MESSAGE_ID_LEN: usize = 128;
/// The most Unicode scalar values an emoji sequence may have (a family with
/// skin tones or a subdivision flag has 7).
pub const MAX_EMOJI_SCALARS: usize = 10;
/// The most bytes an emoji sequence may have.
pub const MAX_EMOJI_BYTES: usize = 40;

fn check_id(
    field: &'static str,
    s: &str,
    max: usize,
    extra: &[char],
    allowed: &str,
) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || extra.contains(c)))
    {
        return Err(Invalid::new(
            field,
            format!("may only contain {allowed}, found {c:?}"),
        ));
    }
    Ok(())
}

/// The rule of `check_id` as a regular expression (ECMAScript and most
/// others), for clients that check an id before sending it.
fn id_pattern(max: usize, extra: &[char]) -> String {
    let extra: String = extra.iter().map(|c| format!("\\{c}")).collect();
    format!("^[A-Za-z0-9_\\-{extra}]{{1,{max}}}$")
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $extra:expr, $allowed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The rule ids of this kind follow, as a regular expression.
            pub fn pattern() -> String {
                id_pattern($max, $extra)
            }
        }

        impl FromStr for $name {
            type Err = Invalid;

            fn from_str(s: &str) -> Result<Self, Invalid> {
                check_id($field, s, $max, $extra, $allowed)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = Invalid;

            fn try_from(s: String) -> Result<Self, Invalid> {
                check_id($field, &s, $max, $extra, $allowed)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A chat id: 1 to 64 characters of `[A-Za-z0-9_-]`.
    ChatId, "chatId", MAX_ID_LEN, &[], "letters, digits, '_' and '-'"
);
id_type!(
    /// A user id: 1 to 64 characters of `[A-Za-z0-9_.@-]`.
    UserId, "userId", MAX_ID_LEN, &['.', '@'], "letters, digits, '_', '-', '.' and '@'"
);
id_type!(
    /// A client's own id for a message it posts, so a retried POST does not
    /// create a second message: 1 to 128 characters of `[A-Za-z0-9_.:-]`
    /// (a UUID fits).
    ClientMessageId, "clientMessageId", MAX_CLIENT_MESSAGE_ID_LEN, &['.', ':'],
    "letters, digits, '_', '-', '.' and ':'"
);

/// Checks a message text: not blank, at most `max_chars` Unicode scalar
/// values, and no control characters other than tab, line feed and carriage
/// return.
pub fn check_text(text: &str, max_chars: usize) -> Result<(), Invalid> {
    if text.trim().is_empty() {
        return Err(Invalid::new("text", "must not be empty or blank"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Invalid::new(
            "text",
            format!("must be at most {max_chars} characters, got {chars}"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(Invalid::new(
            "text",
            format!("must not contain control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(())
}

/// An emoji: one short emoji sequence (a single emoji, with optional
/// variation selector, skin tone, keycap, tag or zero-width-joiner parts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Emoji(String);

impl Emoji {
    /// The emoji as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Code points that are pictographs on their own (Unicode's emoji blocks and
/// the older symbols that have emoji presentation).
fn is_pictograph(c: char) -> bool {
    matches!(u32::from(c),
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139
        | 0x2194..=0x2199 | 0x21A9..=0x21AA | 0x231A..=0x231B | 0x2328 | 0x23CF
        | 0x23E9..=0x23F3 | 0x23F8..=0x23FA | 0x24C2 | 0x25AA..=0x25AB | 0x25B6
        | 0x25C0 | 0x25FB..=0x25FE | 0x2600..=0x27BF | 0x2934..=0x2935
        | 0x2B05..=0x2B07 | 0x2B1B..=0x2B1C | 0x2B50 | 0x2B55 | 0x3030 | 0x303D
        | 0x3297 | 0x3299 | 0x1F000..=0x1FAFF)
        && !is_regional_indicator(c)
        && !is_skin_tone(c)
}

/// The letters of a flag: two of them make one flag.
fn is_regional_indicator(c: char) -> bool {
    matches!(u32::from(c), 0x1F1E6..=0x1F1FF)
}

/// Fitzpatrick skin tones: they modify the pictograph before them.
fn is_skin_tone(c: char) -> bool {
    matches!(u32::from(c), 0x1F3FB..=0x1F3FF)
}

const ZWJ: char = '\u{200D}';
const KEYCAP: char = '\u{20E3}';

/// Code points that only modify the pictograph before them: variation
/// selectors, the keycap, skin tones and tags.
fn is_modifier(c: char) -> bool {
    matches!(u32::from(c), 0xFE0E | 0xFE0F | 0x20E3 | 0xE0020..=0xE007F) || is_skin_tone(c)
}

/// One emoji grapheme: a keycap, a flag (two regional indicators), or a
/// pictograph with its modifiers, optionally joined to more of them by
/// zero-width joiners. Two emojis side by side are two graphemes.
fn check_emoji(s: &str) -> Result<(), Invalid> {
    let invalid = |reason: &str| Err(Invalid::new("emoji", reason));
    if s.is_empty() {
        return invalid("must not be empty");
    }
    if s.len() > MAX_EMOJI_BYTES || s.chars().count() > MAX_EMOJI_SCALARS {
        return invalid("must be one short emoji sequence");
    }
    let chars: Vec<char> = s.chars().collect();
    let keycap_base = |c: char| c.is_ascii_digit() || c == '#' || c == '*';
    // A keycap: a digit, '#' or '*', an optional U+FE0F, then U+20E3.
    if keycap_base(chars[0]) {
        return match chars[1..] {
            [KEYCAP] | ['\u{FE0F}', KEYCAP] => Ok(()),
            _ => invalid("must be one emoji, not text"),
        };
    }
    if is_regional_indicator(chars[0]) {
        return match chars[1..] {
            [second] if is_regional_indicator(second) => Ok(()),
            _ => invalid("must be one emoji: a flag is two regional indicators"),
        };
    }
    // Where the sequence stands: a pictograph is expected at the start and
    // after a joiner; modifiers and a joiner may follow a pictograph.
    let mut expect_pictograph = true;
    for &c in &chars {
        if expect_pictograph {
            if !is_pictograph(c) {
                return invalid("must be one emoji sequence, not text");
            }
            expect_pictograph = false;
        } else if c == ZWJ {
            expect_pictograph = true;
        } else if is_pictograph(c) {
            return invalid("must be one emoji, not several side by side");
        } else if !is_modifier(c) {
            return invalid("must be one emoji sequence, not text");
        }
    }
    if expect_pictograph {
        return invalid("must not end with a zero-width joiner");
    }
    Ok(())
}

impl FromStr for Emoji {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        check_emoji(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Emoji {
    type Error = Invalid;

    fn try_from(s: String) -> Result<Self, Invalid> {
        check_emoji(&s)?;
        Ok(Self(s))
    }
}

impl From<Emoji> for String {
    fn from(e: Emoji) -> String {
        e.0
    }
}

impl fmt::Display for Emoji {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns_say_what_the_checks_accept() {
        assert_eq!(ChatId::pattern(), r"^[A-Za-z0-9_\-]{1,64}$");
        assert_eq!(UserId::pattern(), r"^[A-Za-z0-9_\-\.\@]{1,64}$");
        // Every printable ASCII character, alone, passes the check exactly
        // when the pattern's character class lists it.
        for c in ' '..='~' {
            let one = c.to_string();
            let listed = c.is_ascii_alphanumeric() || "_-".contains(c);
            assert_eq!(one.parse::<ChatId>().is_ok(), listed, "{c:?}");
            assert_eq!(
                one.parse::<UserId>().is_ok(),
                listed || ".@".contains(c),
                "{c:?}"
            );
        }
    }

    #[test]
    fn chat_ids_follow_the_contract() {
        for ok in ["lobby", "a", "A-b_9", &"x".repeat(64)] {
            assert!(ok.parse::<ChatId>().is_ok(), "{ok} should be valid");
        }
        for bad in ["", "has space", "dot.ted", "slash/", "ünï", &"x".repeat(65)] {
            let err = bad.parse::<ChatId>().expect_err(bad);
            assert_eq!(err.field, "chatId");
        }
    }

    #[test]
    fn user_and_client_message_ids_follow_their_rules() {
        assert!("alice.smith@example".parse::<UserId>().is_ok());
        assert!("alice:1".parse::<UserId>().is_err());
        assert!(
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
                .parse::<ClientMessageId>()
                .is_ok()
        );
        assert!("a b".parse::<ClientMessageId>().is_err());
        assert!("x".repeat(129).parse::<ClientMessageId>().is_err());
    }

    #[test]
    fn text_must_be_present_bounded_and_free_of_control_characters() {
        assert!(check_text("hi", 10).is_ok());
        assert!(check_text("line one\nline two\ttab", 100).is_ok());
        assert!(check_text("héllo wörld 👋", 13).is_ok());
        assert!(check_text("", 10).is_err());
        assert!(check_text(" \n\t ", 10).is_err());
        assert!(check_text(&"a".repeat(11), 10).is_err());
        assert!(check_text("nul\0byte", 100).is_err());
        assert!(check_text("bell\u{7}", 100).is_err());
    }

    #[test]
    fn emoji_accepts_single_emoji_sequences() {
        for ok in [
            "👍",
            "❤️",
            "👍🏽",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "👨‍👩‍👧‍👦",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            "🧑‍💻",
            "☕",
            "🏳️‍🌈",
            "👩🏽‍🚀",
            "❤️‍🔥",
        ] {
            assert!(ok.parse::<Emoji>().is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn emoji_refuses_text_and_long_sequences() {
        for bad in [
            "",
            "a",
            "thumbs",
            "👍 ",
            " 👍",
            "1",
            "\u{200D}👍",
            "👍\u{200D}",
            "\u{FE0F}",
            "<script>",
            &"👍".repeat(11),
            "👍👍",
            "😀🚀",
            &"👍".repeat(10),
            "🇫🇷🇫🇷",
            "🇫",
            "👍\u{200D}\u{200D}🚀",
            "🏽",
            "👍a",
        ] {
            assert!(bad.parse::<Emoji>().is_err(), "{bad:?} should be refused");
        }
    }
}
