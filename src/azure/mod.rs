//! Azure plumbing shared by the sources, the ledger and the channels: credentials (managed
//! identity / developer tools), cached access tokens per scope, and HTTP clients that trust
//! an optional extra CA bundle.

mod token;

pub use token::{AccessTokens, TokenError};
