//! Access tokens per scope (`https://graph.microsoft.com/.default`…), from one credential.

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

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

/// Tokens are renewed this long before they expire, so a request never leaves with a token
/// that expires on the way.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// [`AccessTokens`] over an Azure SDK credential, cached per scope until
/// [`REFRESH_MARGIN`] before expiry. Concurrent callers wait for one fetch.
///
/// `invalidate` drops this cache only: the SDK's managed-identity credential keeps its own
/// cache with the same margin, so a token refused early is replaced once the identity
/// endpoint issues a new one.
pub struct CredentialTokens {
    credential: Arc<dyn TokenCredential>,
    cache: Mutex<HashMap<String, (String, OffsetDateTime)>>,
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CredentialTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialTokens").finish_non_exhaustive()
    }
}

impl CredentialTokens {
    /// Tokens from `credential`.
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            credential,
            cache: Mutex::new(HashMap::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// The credential, for the SDK clients that take one directly.
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.clone()
    }

    fn cached(&self, scope: &str) -> Option<String> {
        let cache = self.cache.lock().expect("token cache lock");
        let (token, expires_on) = cache.get(scope)?;
        let margin = time::Duration::try_from(REFRESH_MARGIN).unwrap_or(time::Duration::minutes(5));
        (*expires_on - margin > OffsetDateTime::now_utc()).then(|| token.clone())
    }
}

#[async_trait]
impl AccessTokens for CredentialTokens {
    async fn token(&self, scope: &str) -> Result<String, TokenError> {
        if let Some(t) = self.cached(scope) {
            return Ok(t);
        }
        let _single_flight = self.fetch.lock().await;
        if let Some(t) = self.cached(scope) {
            return Ok(t);
        }
        let token = self
            .credential
            .get_token(&[scope], None)
            .await
            .map_err(|e| TokenError {
                scope: scope.to_string(),
                detail: e.to_string(),
            })?;
        let secret = token.token.secret().to_string();
        tracing::debug!(scope, expires_on = %token.expires_on, "access token obtained");
        self.cache
            .lock()
            .expect("token cache lock")
            .insert(scope.to_string(), (secret.clone(), token.expires_on));
        Ok(secret)
    }

    fn invalidate(&self, scope: &str) {
        self.cache.lock().expect("token cache lock").remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: time::Duration,
    }

    #[async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken::new(
                format!("{}-{n}", scopes[0]),
                OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    #[tokio::test]
    async fn a_token_is_reused_until_shortly_before_it_expires() {
        let cred = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: time::Duration::hours(1),
        });
        let tokens = CredentialTokens::new(cred.clone());
        assert_eq!(tokens.token("a").await.unwrap(), "a-0");
        assert_eq!(tokens.token("a").await.unwrap(), "a-0");
        assert_eq!(tokens.token("b").await.unwrap(), "b-1");
        tokens.invalidate("a");
        assert_eq!(tokens.token("a").await.unwrap(), "a-2");
        assert_eq!(cred.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_token_expiring_within_five_minutes_is_fetched_again() {
        let cred = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: time::Duration::minutes(4),
        });
        let tokens = CredentialTokens::new(cred.clone());
        tokens.token("a").await.unwrap();
        tokens.token("a").await.unwrap();
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }
}
