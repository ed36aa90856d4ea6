//! Placeholder: being written.
use super::{ParseError, ParsedExport};
pub(super) fn parse(_input: &(impl AsRef<[u8]> + ?Sized), name: &str) -> Result<ParsedExport, ParseError> {
    Err(ParseError::NotAnExport { name: name.into(), what: "csv not implemented yet".into() })
}
