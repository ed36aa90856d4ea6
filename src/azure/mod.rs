//! Azure plumbing shared by the sources, the ledger and the channels: credentials (managed
//! identity / developer tools), cached access tokens per scope, and HTTP clients that trust
//! an optional extra CA bundle.

mod build;
mod credential;
mod http;
pub mod storage;
mod token;

pub use build::{sdk_parts, BuildError, SharedCredential};
pub use credential::{credential, describe as describe_credential, CredentialError};
pub use http::{
    http_client, http_client_builder, load_ca_bundle, sdk_client_options, sdk_retry, sdk_transport,
    HttpClientError,
};
pub use token::{
    settings_factory, AccessTokens, CredentialFactory, CredentialTokens, TokenError, REFRESH_MARGIN,
};

/// Scope of Azure Storage tokens.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Scope of Microsoft Graph tokens.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
