//! Azure plumbing shared by the sources, the ledger and the channels: credentials (managed
//! identity / developer tools), cached access tokens per scope, and HTTP clients that trust
//! an optional extra CA bundle.

mod build;
mod credential;
mod http;
pub mod storage;
mod token;

// `pub` only for what the binary and the tests use; the rest is the crate's own, so the
// compiler reports what nobody calls.
pub use build::BuildError;
pub(crate) use build::SharedCredential;
pub use credential::credential;
pub use credential::CredentialError;
pub(crate) use http::http_client;
pub use http::HttpClientError;
pub use http::{http_client_builder, sdk_client_options};
pub use token::TokenError;
pub use token::{AccessTokens, CredentialTokens};
