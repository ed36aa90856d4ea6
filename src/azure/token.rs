//! Access tokens per scope (`https://graph.microsoft.com/.default`…), from one credential.

use async_trait::async_trait;

/// A token could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an access token for {scope}: {detail}")]
pub struct TokenError {
    /// The scope asked for.
    pub scope: String,
    /// Why (never the token).
    pub detail: String,
}

/// Gives bearer tokens per scope, cached until shortly before expiry.
#[async_trait]
pub trait AccessTokens: Send + Sync {
    /// A bearer token (without the `Bearer ` prefix) for `scope`.
    async fn token(&self, scope: &str) -> Result<String, TokenError>;
    /// Forgets the cached token for `scope` (after a 401), so the next call fetches anew.
    fn invalidate(&self, scope: &str);
}
