//! One client for Microsoft Graph, shared by every part that calls it: the Teams bot (user
//! lookups, app installs, chats), e-mail (`sendMail`, the owner's language), escalation (the
//! manager) and the SharePoint source and page publisher (sites, drives, files).
//!
//! One place holds the base URL (`REMINDERS_GRAPH_BASE_URL`), the token scope
//! (`REMINDERS_GRAPH_SCOPE`), the URL building, the pacing and the error mapping. Each call
//! is paced by the limiter of the documented limit it counts against ([`Pace`]), shared by
//! every clone of the client, so the Teams bot, its e-mail fallback and escalation together
//! stay within one allowance:
//! - directory reads and SharePoint: Graph's global limit per app
//!   (<https://learn.microsoft.com/graph/throttling-limits>);
//! - `…/teamwork/installedApps` and their chats: 30 requests / s per app per tenant
//!   (<https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits>);
//! - `sendMail`: 10,000 requests / 10 min and 4 concurrent per mailbox
//!   (<https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits>).
//!
//! `sendMail` is a message post: under [`Replay::NotIfMaybeDelivered`] it is never sent again
//! once it may have been delivered. Errors name the call ([`GraphCall`]) and never carry the
//! URL (it holds addresses), the token, or an address from Graph's message (scrubbed by
//! [`crate::http::service_error`]).

use crate::config::GraphSettings;
use crate::http::{
    encode_segment, AccessTokens, HttpClient, HttpError, HttpOutcome, RateLimiter, Replay,
    RetryPolicy, StreamedResponse,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::Semaphore;
use url::Url;

/// Exchange Online's concurrent request limit per mailbox: `sendMail` requests in flight
/// at once from the shared mailbox.
pub(crate) const MAX_CONCURRENT_SENDS: usize = 4;

/// The documented limit a call counts against, and so the limiter that paces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Directory reads and SharePoint: Graph's global limit (`REMINDERS_GRAPH_RATE_PER_SECOND`).
    Directory,
    /// The Teams endpoints: installed apps and their chats
    /// (`REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND`, 30/s documented).
    Teams,
    /// `sendMail` from the shared mailbox (`REMINDERS_MAIL_RATE_PER_SECOND`, at most 4 in flight).
    Mail,
}

/// The Graph limiters of a run (the same `Arc`s as the run's delivery limits).
#[derive(Clone, Debug)]
pub struct GraphLimits {
    /// Graph's global limit: directory reads, SharePoint.
    pub directory: Arc<RateLimiter>,
    /// Graph's Microsoft Teams service limit.
    pub teams: Arc<RateLimiter>,
    /// The shared mailbox's `sendMail` pace.
    pub mail: Arc<RateLimiter>,
    /// `sendMail` requests in flight from the shared mailbox.
    pub(crate) mail_in_flight: Arc<Semaphore>,
}

impl GraphLimits {
    /// Fresh limiters at the configured rates, for a client used alone (a run shares the
    /// ones of its [`DeliveryLimits`](crate::deliver::DeliveryLimits)).
    pub fn from_settings(settings: &crate::config::DeliverySettings) -> Self {
        Self {
            directory: Arc::new(RateLimiter::new(settings.graph_rate_per_second, 1)),
            teams: Arc::new(RateLimiter::new(settings.graph_teams_rate_per_second, 1)),
            mail: Arc::new(RateLimiter::new(settings.mail_rate_per_second, 1)),
            mail_in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        }
    }
}

/// What a Graph call was for, named in its error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GraphCall {
    /// `GET /users/{id}`.
    User,
    /// `GET /users/{id}/manager`.
    Manager,
    /// `POST /users/{id}/sendMail`.
    SendMail,
    /// `POST /users/{id}/teamwork/installedApps`.
    InstallApp,
    /// `GET /users/{id}/teamwork/installedApps?$filter=…`.
    InstalledApps,
    /// `GET /users/{id}/teamwork/installedApps/{id}/chat`.
    Chat,
    /// SharePoint: sites, drives and files.
    Files,
}

impl GraphCall {
    /// The call in words (`user lookup`…).
    pub fn as_str(self) -> &'static str {
        match self {
            GraphCall::User => "user lookup",
            GraphCall::Manager => "manager lookup",
            GraphCall::SendMail => "sendMail",
            GraphCall::InstallApp => "Teams app install",
            GraphCall::InstalledApps => "installed Teams apps",
            GraphCall::Chat => "1:1 chat lookup",
            GraphCall::Files => "files",
        }
    }
}

/// A Graph call that failed for good: which call, and the HTTP layer's error (status, the
/// service's code, attempts; no URL, no token, addresses scrubbed from Graph's message).
#[derive(Clone, Debug, thiserror::Error)]
#[error("graph {}: {}{}", call.as_str(), source.reason(), source.code().map(|c| format!(" ({c})")).unwrap_or_default())]
pub(crate) struct GraphError {
    /// The call that failed.
    pub call: GraphCall,
    /// What the HTTP layer saw.
    #[source]
    pub source: HttpError,
}

impl GraphError {
    /// The HTTP layer's error (status, code, attempts, transient or not).
    pub(crate) fn http(&self) -> &HttpError {
        &self.source
    }

    /// The HTTP status, when Graph answered.
    pub fn status(&self) -> Option<u16> {
        self.source.status()
    }

    /// The one "not there" rule: Graph answered 404 (no such user, manager, site, file).
    pub(crate) fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// The manager fields the escalation reads. [`MANAGER_SELECT`] also names `displayName` and
/// `userPrincipalName`, as it always has (the fake Graph holds the lookup to that list); no
/// code reads them, so they are not kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manager {
    /// Entra object id.
    pub id: String,
    /// Primary SMTP address; absent for accounts without a mailbox.
    #[serde(default)]
    pub mail: Option<String>,
}

/// The `$select` of the manager lookup.
pub(crate) const MANAGER_SELECT: &[&str] = &["id", "mail", "displayName", "userPrincipalName"];

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<String>,
}

/// The one Graph client; cheap to clone (clones share limiters and counters).
#[derive(Clone)]
pub struct GraphClient {
    base: Url,
    scope: String,
    tokens: Arc<dyn AccessTokens>,
    directory: HttpClient,
    teams: HttpClient,
    mail: HttpClient,
    mail_in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.base.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for `settings`, with tokens from `tokens`, connections from `client` (which
    /// must not follow redirects: a download redirect is followed by hand, without the
    /// token) and the run's shared `limits`.
    pub fn new(
        settings: &GraphSettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
        limits: GraphLimits,
    ) -> Self {
        Self {
            base: settings.base_url.clone(),
            scope: settings.scope.clone(),
            tokens,
            directory: HttpClient::new("graph", client.clone()).with_rate_limit(limits.directory),
            teams: HttpClient::new("graph", client.clone()).with_rate_limit(limits.teams),
            mail: HttpClient::new("graph sendMail", client).with_rate_limit(limits.mail),
            mail_in_flight: limits.mail_in_flight,
        }
    }

    /// Uses `policy` for every call (tests shorten the delays; the SharePoint source uses
    /// `REMINDERS_AZURE_MAX_RETRIES`). Limiters and counters stay shared with other clones.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.directory = self.directory.with_policy(policy.clone());
        self.teams = self.teams.with_policy(policy.clone());
        self.mail = self.mail.with_policy(policy);
        self
    }

    /// The base URL (`https://graph.microsoft.com`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The HTTP client of one pace (its counters: attempts, 429s, retries).
    pub fn http(&self, pace: Pace) -> &HttpClient {
        match pace {
            Pace::Directory => &self.directory,
            Pace::Teams => &self.teams,
            Pace::Mail => &self.mail,
        }
    }

    /// `{base}/v1.0/{segments…}?{query}`: each path segment percent-encoded by the `url`
    /// crate's path rule (so `/`, `?`, `#` and `%` in an address or a file name never
    /// change the shape of the URL, while SharePoint's `root:` and `:/content` stay as
    /// Graph wants them), each query value by [`encode_segment`] (`,` kept, for `$select`).
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1.0").extend(segments);
        }
        if !query.is_empty() {
            let text: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    let v: Vec<String> = v.split(',').map(encode_segment).collect();
                    format!("{k}={}", v.join(","))
                })
                .collect();
            url.set_query(Some(&text.join("&")));
        }
        url
    }

    /// Sends the request `build` makes with `url` (called again for each attempt), with the
    /// Graph token, paced by `pace`, under `replay`.
    pub(crate) async fn send(
        &self,
        call: GraphCall,
        pace: Pace,
        replay: Replay,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<HttpOutcome, GraphError> {
        let http = self.http(pace);
        http.send_with(
            replay,
            || build(http.client()),
            Some((self.tokens.as_ref(), self.scope.as_str())),
        )
        .await
        .map_err(|source| GraphError { call, source })
    }

    /// Like [`send`](Self::send) for a read whose body the caller streams (a download).
    pub(crate) async fn send_streaming(
        &self,
        call: GraphCall,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<StreamedResponse, GraphError> {
        let http = &self.directory;
        http.send_streaming(
            || build(http.client()),
            Some((self.tokens.as_ref(), self.scope.as_str())),
        )
        .await
        .map_err(|source| GraphError { call, source })
    }

    /// `GET {segments}?{query}` as JSON, paced by `pace`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        call: GraphCall,
        pace: Pace,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, GraphError> {
        let url = self.url(segments, query);
        let out = self
            .send(call, pace, Replay::Safe, |c| c.get(url.clone()))
            .await?;
        out.json("graph")
            .map_err(|source| GraphError { call, source })
    }

    /// `GET /users/{user}?$select=…` (`user` an object id or a UPN); a user the directory
    /// does not have is an error that [`GraphError::is_not_found`] tells apart (its code,
    /// `Request_ResourceNotFound`, goes into the report).
    pub(crate) async fn user<T: DeserializeOwned>(
        &self,
        user: &str,
        select: &[&str],
    ) -> Result<T, GraphError> {
        let select = select.join(",");
        self.get(
            GraphCall::User,
            Pace::Directory,
            &["users", user],
            &[("$select", &select)],
        )
        .await
    }

    /// `GET /users/{user}/manager`; `None` when the user has no manager (404).
    pub(crate) async fn manager(&self, user: &str) -> Result<Option<Manager>, GraphError> {
        let select = MANAGER_SELECT.join(",");
        not_found_is_none(
            self.get(
                GraphCall::Manager,
                Pace::Directory,
                &["users", user, "manager"],
                &[("$select", &select)],
            )
            .await,
        )
    }

    /// `POST /users/{from}/sendMail`: paced by the mailbox's limiter, at most four in flight,
    /// never sent again once it may have been delivered.
    pub(crate) async fn send_mail(
        &self,
        from: &str,
        body: &serde_json::Value,
    ) -> Result<HttpOutcome, GraphError> {
        let url = self.url(&["users", from, "sendMail"], &[]);
        // A closed semaphore only happens at shutdown; the mail then goes without the
        // in-flight bound rather than failing.
        let _permit = self.mail_in_flight.acquire().await.ok();
        self.send(
            GraphCall::SendMail,
            Pace::Mail,
            Replay::NotIfMaybeDelivered,
            |c| c.post(url.clone()).json(body),
        )
        .await
    }

    /// `POST /users/{user_id}/teamwork/installedApps`: 201 installed, 409 already there,
    /// both `Ok` (one call on the throttled Teams endpoints instead of a listing first).
    pub(crate) async fn install_app(
        &self,
        user_id: &str,
        teams_app_id: &str,
    ) -> Result<(), GraphError> {
        let url = self.url(&["users", user_id, "teamwork", "installedApps"], &[]);
        let catalog = self.url(&["appCatalogs", "teamsApps", teams_app_id], &[]);
        let body = serde_json::json!({ "teamsApp@odata.bind": catalog.as_str() });
        match self
            .send(GraphCall::InstallApp, Pace::Teams, Replay::Safe, |c| {
                c.post(url.clone()).json(&body)
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The id of the installation of `teams_app_id` for `user_id`, if any.
    pub(crate) async fn installation(
        &self,
        user_id: &str,
        teams_app_id: &str,
    ) -> Result<Option<String>, GraphError> {
        #[derive(Deserialize)]
        struct Installations {
            #[serde(default)]
            value: Vec<IdOnly>,
        }
        let filter = format!("teamsApp/id eq '{teams_app_id}'");
        let list: Installations = self
            .get(
                GraphCall::InstalledApps,
                Pace::Teams,
                &["users", user_id, "teamwork", "installedApps"],
                &[("$expand", "teamsApp"), ("$filter", &filter)],
            )
            .await?;
        Ok(list.value.into_iter().find_map(|i| i.id))
    }

    /// The id of the 1:1 chat of an installation; `None` when Graph gives none.
    pub(crate) async fn chat(
        &self,
        user_id: &str,
        installation_id: &str,
    ) -> Result<Option<String>, GraphError> {
        let chat: IdOnly = self
            .get(
                GraphCall::Chat,
                Pace::Teams,
                &[
                    "users",
                    user_id,
                    "teamwork",
                    "installedApps",
                    installation_id,
                    "chat",
                ],
                &[],
            )
            .await?;
        Ok(chat.id.filter(|id| !id.is_empty()))
    }
}

/// A 404 is an answer (`None`), anything else an error.
fn not_found_is_none<T>(result: Result<T, GraphError>) -> Result<Option<T>, GraphError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::http::TokenError;
    use async_trait::async_trait;

    /// Tokens for unit tests that never reach a token endpoint (also used by app's tests).
    pub(crate) struct NoTokens;

    #[async_trait]
    impl AccessTokens for NoTokens {
        async fn token(&self, scope: &str) -> Result<String, TokenError> {
            Err(TokenError {
                scope: scope.into(),
                detail: "none in unit tests".into(),
            })
        }
        fn invalidate(&self, _scope: &str) {}
    }

    fn client(base: &str) -> GraphClient {
        let limits = GraphLimits {
            directory: Arc::new(RateLimiter::new(10.0, 1)),
            teams: Arc::new(RateLimiter::new(10.0, 1)),
            mail: Arc::new(RateLimiter::new(10.0, 1)),
            mail_in_flight: Arc::new(Semaphore::new(4)),
        };
        GraphClient::new(
            &GraphSettings {
                base_url: Url::parse(base).unwrap(),
                scope: "https://graph.microsoft.com/.default".into(),
            },
            Arc::new(NoTokens),
            reqwest::Client::new(),
            limits,
        )
    }

    #[test]
    fn an_address_or_a_file_name_never_changes_the_shape_of_the_url() {
        let g = client("https://graph.microsoft.com/");
        let url = g.url(&["users", "o'brien/x?y#z%@contoso.com", "sendMail"], &[]);
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/users/o'brien%2Fx%3Fy%23z%25@contoso.com/sendMail"
        );
        assert_eq!(url.path_segments().unwrap().count(), 4);
        // SharePoint's path addressing keeps its colons; spaces are encoded.
        let url = g.url(
            &[
                "drives",
                "b!docs",
                "root:",
                "General",
                "a b.xlsx:",
                "content",
            ],
            &[],
        );
        assert_eq!(
            url.path(),
            "/v1.0/drives/b!docs/root:/General/a%20b.xlsx:/content"
        );
    }

    #[test]
    fn a_base_url_with_a_path_keeps_it_and_query_values_are_encoded_but_select_lists_stay_readable()
    {
        let g = client("http://127.0.0.1:9/graph");
        let url = g.url(
            &["users", "u1", "teamwork", "installedApps"],
            &[
                ("$select", "id,preferredLanguage"),
                ("$filter", "teamsApp/id eq 'a&b=c'"),
            ],
        );
        assert_eq!(url.path(), "/graph/v1.0/users/u1/teamwork/installedApps");
        assert_eq!(
            url.query(),
            Some("$select=id,preferredLanguage&$filter=teamsApp%2Fid%20eq%20%27a%26b%3Dc%27")
        );
    }

    struct FixedToken;

    #[async_trait]
    impl AccessTokens for FixedToken {
        async fn token(&self, _scope: &str) -> Result<String, TokenError> {
            Ok("t0k3n-secret".into())
        }
        fn invalidate(&self, _scope: &str) {}
    }

    #[tokio::test]
    async fn a_refused_call_names_the_call_status_and_code_but_neither_the_address_nor_the_token() {
        // Graph quotes the address it was asked for in its message.
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"error": {
                    "code": "Authorization_RequestDenied",
                    "message": "Insufficient privileges for 'jean.dupont@contoso.com'."
                }})),
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut g = client(&base);
        g.tokens = Arc::new(FixedToken);
        let err = g.manager("jean.dupont@contoso.com").await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("graph manager lookup: HTTP 403")
                && text.ends_with("(Authorization_RequestDenied)"),
            "{text}"
        );
        assert!(
            !text.contains("jean.dupont") && !text.contains("t0k3n"),
            "{text}"
        );
        assert!(!err.is_not_found());
        // A 403 is not retried, and not a "maybe delivered".
        assert_eq!(err.http().attempts(), 1);
        assert!(!err.http().maybe_delivered());
    }

    #[tokio::test]
    async fn an_error_names_the_call_and_never_the_address_asked_for() {
        // Nothing listens on port 9 of this machine, and no token is given: the error comes
        // from the token, before any request, and names the call.
        let g = client("http://127.0.0.1:9");
        let err = g
            .user::<serde_json::Value>("jean.dupont@contoso.com", &["id"])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("graph user lookup: "), "{text}");
        assert!(!text.contains("jean.dupont"), "{text}");
        assert_eq!(err.call, GraphCall::User);
    }
}
