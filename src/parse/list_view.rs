//! Placeholder: being written.
use super::{ParseError, ParsedExport};
pub(super) fn looks_like_list_view(_text: &str) -> bool { false }
pub(super) fn parse(_text: &str, name: &str) -> Result<ParsedExport, ParseError> {
    Err(ParseError::NotAnExport { name: name.into(), what: "list view not implemented yet".into() })
}
