//! Render: turn a planned reminder into a Teams Adaptive Card, a plain-text body and an
//! HTML e-mail body, from template files an operator can override.

mod dates;
mod templates;

pub use dates::format_date;
pub use templates::{
    clean_text, escape_markdown, LanguageConstants, MessageConstants, RenderError, Renderer,
};

use serde::{Deserialize, Serialize};

/// One reminder rendered in one language.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderedMessage {
    /// Language code (`fr`, `en`).
    pub language: String,
    /// Subject line (e-mail subject, card title, Teams summary).
    pub subject: String,
    /// Plain-text body (Teams fallback text, e-mail alternative).
    pub text: String,
    /// HTML body (e-mail).
    pub html: String,
    /// Adaptive Card JSON (Teams).
    pub card: serde_json::Value,
}

#[cfg(test)]
mod cases;
#[cfg(test)]
pub(crate) use cases::official_card_messages;
