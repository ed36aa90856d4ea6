//! Access tokens per scope (`https://graph.microsoft.com/.default`…), from one credential.

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

pub use crate::http::AccessTokens;

pub use crate::http::TokenError;

/// Tokens are renewed this long before they expire, so a request never leaves with a token
/// that expires on the way.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Builds a fresh credential (with an empty SDK cache); `Err` is the reason, for the log.
pub(crate) type CredentialFactory =
    Arc<dyn Fn() -> Result<Arc<dyn TokenCredential>, String> + Send + Sync>;

/// [`AccessTokens`] over an Azure SDK credential, cached per scope until
/// [`REFRESH_MARGIN`] before expiry. Concurrent callers wait for one fetch.
///
/// The SDK's managed-identity credential keeps its own token cache (with the same margin)
/// and offers no way to bypass it, so clearing our cache alone would hand a refused token
/// back. Built [`with_first`](Self::with_first), `invalidate` also marks the scope so
/// the next fetch for it goes through a freshly built credential; built with
/// [`new`](Self::new) (one fixed credential), it can only clear this cache.
pub struct CredentialTokens {
    credential: Mutex<Arc<dyn TokenCredential>>,
    factory: Option<CredentialFactory>,
    cache: Mutex<HashMap<String, (String, OffsetDateTime)>>,
    /// Scopes whose token was refused: fetched next through a new credential.
    refused: Mutex<HashSet<String>>,
    fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CredentialTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialTokens").finish_non_exhaustive()
    }
}

impl CredentialTokens {
    /// Tokens from one fixed `credential` (its own cache cannot be bypassed after a 401).
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        Self {
            credential: Mutex::new(credential),
            factory: None,
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashSet::new()),
            fetch: tokio::sync::Mutex::new(()),
        }
    }

    /// Tokens from `first` (an existing credential, e.g. the one the SDK clients share),
    /// replaced by one from `factory` whenever a token was refused.
    pub(crate) fn with_first(first: Arc<dyn TokenCredential>, factory: CredentialFactory) -> Self {
        Self {
            factory: Some(factory),
            ..Self::new(first)
        }
    }

    /// Tokens from the configured credential ([`super::credential`]), rebuilt after a 401.
    pub fn from_settings(
        settings: &crate::config::AzureSettings,
    ) -> Result<Self, super::CredentialError> {
        let first = super::credential(settings)?;
        Ok(Self::with_first(first, settings_factory(settings)))
    }

    /// The credential, for the SDK clients that take one directly.
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        self.credential.lock().expect("credential lock").clone()
    }

    fn cached(&self, scope: &str) -> Option<String> {
        let cache = self.cache.lock().expect("token cache lock");
        let (token, expires_on) = cache.get(scope)?;
        let margin = time::Duration::try_from(REFRESH_MARGIN).unwrap_or(time::Duration::minutes(5));
        (*expires_on - margin > OffsetDateTime::now_utc()).then(|| token.clone())
    }

    /// The credential to fetch `scope` with: a new one when its last token was refused.
    fn credential_for(&self, scope: &str) -> Result<Arc<dyn TokenCredential>, TokenError> {
        let refused = self.refused.lock().expect("refused lock").remove(scope);
        match (&self.factory, refused) {
            (Some(factory), true) => {
                let fresh = factory().map_err(|detail| TokenError {
                    scope: scope.to_string(),
                    detail: format!(
                        "cannot create a new credential after a refused token: {detail}"
                    ),
                })?;
                tracing::debug!(scope, "token refused: fetching through a new credential");
                // Replaced for every scope: the old instance would keep serving the refused
                // token from its cache; other scopes stay in our cache until they expire.
                *self.credential.lock().expect("credential lock") = fresh.clone();
                Ok(fresh)
            }
            _ => Ok(self.credential()),
        }
    }
}

/// A factory building the credential configured by `settings` anew.
pub(crate) fn settings_factory(settings: &crate::config::AzureSettings) -> CredentialFactory {
    let settings = settings.clone();
    Arc::new(move || super::credential(&settings).map_err(|e| e.to_string()))
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
        let credential = self.credential_for(scope)?;
        let token = credential
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
        if self.factory.is_some() {
            self.refused
                .lock()
                .expect("refused lock")
                .insert(scope.to_string());
        }
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

    /// Like the SDK's managed-identity credential: caches its token per instance.
    #[derive(Debug)]
    struct Caching {
        instance: usize,
        fetched: Arc<AtomicUsize>,
        cache: Mutex<Option<String>>,
    }

    #[async_trait]
    impl TokenCredential for Caching {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let mut cache = self.cache.lock().unwrap();
            let token = cache.get_or_insert_with(|| {
                let n = self.fetched.fetch_add(1, Ordering::SeqCst);
                format!("{}-{}-{n}", scopes[0], self.instance)
            });
            Ok(AccessToken::new(
                token.clone(),
                OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }

    fn caching_factory(built: Arc<AtomicUsize>, fetched: Arc<AtomicUsize>) -> CredentialFactory {
        Arc::new(move || {
            let instance = built.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(Caching {
                instance,
                fetched: fetched.clone(),
                cache: Mutex::new(None),
            }) as Arc<dyn TokenCredential>)
        })
    }

    #[tokio::test]
    async fn a_refused_token_is_fetched_again_through_a_new_credential() {
        let built = Arc::new(AtomicUsize::new(0));
        let fetched = Arc::new(AtomicUsize::new(0));
        let factory = caching_factory(built.clone(), fetched.clone());
        let tokens = CredentialTokens::with_first(factory().unwrap(), factory);
        let first = tokens.token("a").await.unwrap();
        assert_eq!(first, "a-0-0");
        tokens.invalidate("a");
        let second = tokens.token("a").await.unwrap();
        assert_ne!(
            second, first,
            "the SDK cache must not hand the refused token back"
        );
        assert_eq!(second, "a-1-1");
        assert_eq!(built.load(Ordering::SeqCst), 2);
        // Once replaced, the token is cached again: no credential per call.
        assert_eq!(tokens.token("a").await.unwrap(), "a-1-1");
        assert_eq!(built.load(Ordering::SeqCst), 2);
        assert_eq!(fetched.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_fixed_credential_only_clears_our_cache() {
        let built = Arc::new(AtomicUsize::new(0));
        let fetched = Arc::new(AtomicUsize::new(0));
        let credential = caching_factory(built.clone(), fetched.clone())().unwrap();
        let tokens = CredentialTokens::new(credential);
        let first = tokens.token("a").await.unwrap();
        tokens.invalidate("a");
        // Documented limit of `new`: the SDK's cache answers the same token.
        assert_eq!(tokens.token("a").await.unwrap(), first);
        assert_eq!(built.load(Ordering::SeqCst), 1);
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
