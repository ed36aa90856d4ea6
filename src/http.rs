//! The shared HTTP layer for every cloud call (Graph, Bot Connector, webhooks, SharePoint):
//! client-side rate limit → bearer token → send with timeout → retry with `Retry-After` or
//! capped exponential backoff with jitter → one token refresh on `401`.
//!
//! Errors never carry a URL: webhook URLs are secrets and Graph paths hold e-mail addresses.
//! They name the service (`graph`, `bot connector`…) and carry the status and the service's
//! error code instead.

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::debug;

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
///
/// Declared here, beside its one consumer, rather than in `azure` (which implements it) so
/// that the HTTP layer does not depend on the Azure plumbing.
#[async_trait]
pub trait AccessTokens: Send + Sync {
    /// A bearer token (without the `Bearer ` prefix) for `scope`.
    async fn token(&self, scope: &str) -> Result<String, TokenError>;
    /// Forgets the cached token for `scope` (after a 401), so the next call fetches anew.
    fn invalidate(&self, scope: &str);
}

/// When and how often to retry.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (a `401` refresh does not count against it).
    pub max_attempts: u32,
    /// First backoff delay; doubles each retry.
    pub base_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Largest wait honoured from a `Retry-After` header; longer asks are cut to this.
    pub max_retry_after: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// How the waits between attempts are spent (the real clock unless a test records them).
    pub waits: Waits,
}

/// How the layer waits out a `Retry-After` or a backoff: on the real clock, or, for tests,
/// [`Waits::recorded`], which returns at once and keeps each duration asked for, so a test
/// asserts what was waited for instead of timing the wall clock on a busy machine.
#[derive(Clone, Default)]
pub struct Waits {
    recorded: Option<Arc<Mutex<Vec<Duration>>>>,
}

impl Waits {
    /// Waits that take no time and are kept for [`Waits::taken`].
    pub fn recorded() -> Self {
        Self {
            recorded: Some(Arc::default()),
        }
    }

    /// The durations waited so far, in order (always empty on the real clock).
    pub fn taken(&self) -> Vec<Duration> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Waits `d` (or records it).
    pub async fn wait(&self, d: Duration) {
        match &self.recorded {
            Some(r) => r.lock().unwrap_or_else(|e| e.into_inner()).push(d),
            None => tokio::time::sleep(d).await,
        }
    }
}

impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.recorded.is_some() {
            "Waits::recorded"
        } else {
            "Waits::real"
        })
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            timeout: Duration::from_secs(30),
            waits: Waits::default(),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 = first retry), with "equal jitter": half
    /// the exponential delay fixed, half random, so that many clients hit by the same fault
    /// do not come back in lockstep while the spacing stays measurable.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        let jitter = rand::random_range(0.0..=1.0f64);
        half + half.mul_f64(jitter)
    }
}

/// A token bucket: at most `rate` requests per second on average, at most `burst` at once,
/// with an adaptive pace under it.
///
/// Callers reserve a slot and sleep until it comes (the bucket may go negative), so waiting
/// callers are served in arrival order and the pace stays exact under contention.
///
/// The pace starts at the configured ceiling (the service's documented limit). A `429`
/// ([`Self::throttled`]) cuts it by [`BACK_OFF`] (at most once per [`BACK_OFF_EVERY`]: the
/// requests already in flight when the service started refusing say the same thing once)
/// and holds every caller for the `Retry-After` the service asked for; each success
/// ([`Self::succeeded`]) creeps it back up by [`CREEP`] of the ceiling. The limit is shared
/// with other apps of the tenant, so the pace settles just under what is left of it.
#[derive(Debug)]
pub struct RateLimiter {
    ceiling: f64,
    burst: f64,
    state: Mutex<Bucket>,
    backoffs: AtomicU64,
}

/// The factor a `429` multiplies the pace by.
pub(crate) const BACK_OFF: f64 = 0.7;
/// The share of the ceiling each success gives back (1/200: from half the ceiling back to
/// it in 100 successes, two seconds at 50/s).
pub(crate) const CREEP: f64 = 0.005;
/// The lowest pace, as a share of the ceiling.
pub(crate) const FLOOR_SHARE: f64 = 0.05;
/// Several `429`s within this interval cut the pace once.
pub(crate) const BACK_OFF_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    last_backoff: Option<Instant>,
}

impl RateLimiter {
    /// A limiter of `rate` per second (must be > 0) with a burst of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            ceiling: rate,
            burst,
            // Start with one token: a fresh process must not burst past a limit the
            // previous run may have just used up.
            state: Mutex::new(Bucket {
                tokens: 1.0f64.min(burst),
                last: Instant::now(),
                rate,
                last_backoff: None,
            }),
            backoffs: AtomicU64::new(0),
        }
    }

    /// The configured ceiling, requests per second.
    pub fn rate(&self) -> f64 {
        self.ceiling
    }

    /// The current adaptive pace, requests per second (at most [`Self::rate`]).
    pub fn current_rate(&self) -> f64 {
        self.lock().rate
    }

    /// How many times a `429` cut the pace.
    pub fn backoffs(&self) -> u64 {
        self.backoffs.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refills the bucket up to now at the current pace.
    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(self.burst);
        b.last = now;
    }

    /// Waits for a slot.
    pub(crate) async fn acquire(&self) {
        let wait = {
            let mut b = self.lock();
            self.refill(&mut b, Instant::now());
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-b.tokens / b.rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }

    /// The service answered `429`: slow down, and let no new request start before
    /// `retry_after` (when given) has passed.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut b = self.lock();
        self.refill(&mut b, now);
        let recent = b
            .last_backoff
            .is_some_and(|at| now.saturating_duration_since(at) < BACK_OFF_EVERY);
        if !recent {
            b.rate = (b.rate * BACK_OFF).max(self.ceiling * FLOOR_SHARE);
            b.last_backoff = Some(now);
            self.backoffs.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(pause) = retry_after {
            // A debt worth `pause` at the current pace: the next reservation waits at least
            // that long. `min` so that simultaneous 429s pause once, not once each.
            b.tokens = b.tokens.min(-pause.as_secs_f64() * b.rate);
        }
    }

    /// A request went through: creep back towards the ceiling.
    pub(crate) fn succeeded(&self) {
        let mut b = self.lock();
        if b.rate < self.ceiling {
            let now = Instant::now();
            self.refill(&mut b, now);
            b.rate = (b.rate + self.ceiling * CREEP).min(self.ceiling);
        }
    }
}

/// A pace per key (a Bot Connector conversation) on top of the shared one: at most `burst`
/// at once and `rate` per second each. Entries whose bucket is full again are forgotten,
/// so the map stays as small as the number of recently busy keys.
#[derive(Debug)]
pub struct KeyedRateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<std::collections::HashMap<String, (f64, Instant)>>,
}

impl KeyedRateLimiter {
    /// `rate` per second (> 0) per key with a burst of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
            burst: f64::from(burst.max(1)),
            state: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Keys currently tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits for a slot for `key`.
    pub(crate) async fn acquire(&self, key: &str) {
        let wait = {
            let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if map.len() >= 1024 {
                let (rate, burst) = (self.rate, self.burst);
                map.retain(|_, (tokens, last)| {
                    *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
                });
            }
            let (tokens, last) = map.entry(key.to_string()).or_insert((self.burst, now));
            *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * self.rate)
                .min(self.burst);
            *last = now;
            *tokens -= 1.0;
            (*tokens < 0.0).then(|| Duration::from_secs_f64(-*tokens / self.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a call may be sent again after a failure that leaves its fate unknown.
///
/// The rule of `teams-delivery.md` ("Throttling and retries"): reads and idempotent writes
/// are retried on 5xx, timeouts and resets; a message post is retried only when it surely
/// did not reach the service, because a timeout, a reset after the request was written or a
/// gateway's 5xx can mean "delivered, answer lost".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Reads and idempotent writes: retry 408, 412, 429, 5xx, timeouts, resets.
    Safe,
    /// Posting a message (activity, `sendMail`, webhook): retry only what proves it was not
    /// taken — 412, 429, 503 with `Retry-After`, a connection that never opened. Anything else
    /// after the request may have been written ends the call at once as
    /// [`HttpError::MaybeDelivered`]: never sent again, in this run or on another channel.
    NotIfMaybeDelivered,
}

/// What one attempt ended with, for the retry decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    /// The service answered this status (400 or above).
    Status { status: u16, retry_after: bool },
    /// The connection never opened: the request surely did not reach the service.
    NotConnected,
    /// Timed out or broke after the connection opened.
    Broken,
}

fn should_retry(replay: Replay, attempt: Attempt) -> bool {
    match (replay, attempt) {
        (_, Attempt::NotConnected) => true,
        (
            _,
            Attempt::Status {
                status: 429 | 412, ..
            },
        ) => true,
        (Replay::Safe, Attempt::Status { status, .. }) => is_retryable_status(status),
        (Replay::Safe, Attempt::Broken) => true,
        // A 503 with Retry-After is the service refusing the request before taking it.
        (
            Replay::NotIfMaybeDelivered,
            Attempt::Status {
                status: 503,
                retry_after: true,
            },
        ) => true,
        (Replay::NotIfMaybeDelivered, _) => false,
    }
}

/// Whether a failed message post may have been delivered all the same.
fn maybe_delivered(replay: Replay, attempt: Attempt) -> bool {
    if replay == Replay::Safe {
        return false;
    }
    match attempt {
        Attempt::NotConnected => false,
        Attempt::Broken => true,
        Attempt::Status {
            status,
            retry_after,
        } => status >= 500 && !(status == 503 && retry_after),
    }
}

/// A response that ended the retry loop successfully (any status below 400).
#[derive(Clone, Debug)]
pub struct HttpOutcome {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

impl HttpOutcome {
    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, service: &str) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            service: service.to_string(),
            detail: e.to_string(),
            attempts: self.attempts,
        })
    }
}

/// A success (status below 400) whose body is still to be read, from
/// [`HttpClient::send_streaming`].
#[derive(Debug)]
pub(crate) struct StreamedResponse {
    /// The response, body unread.
    pub response: reqwest::Response,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

/// A call that failed for good (after the retries the policy allows).
#[derive(Clone, Debug, thiserror::Error)]
pub enum HttpError {
    /// The service answered with an error status.
    #[error("{service}: HTTP {status}{}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), retried(*attempts))]
    Status {
        /// Service name (`graph`, `bot connector`…), never the URL.
        service: String,
        /// HTTP status.
        status: u16,
        /// The service's error code (`error.code` in Graph / Bot Framework bodies).
        code: Option<String>,
        /// The service's error message, shortened.
        message: Option<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// No response: connection refused, reset, timeout.
    #[error("{service}: {detail}{}", retried(*attempts))]
    Transport {
        /// Service name.
        service: String,
        /// What happened (without the URL).
        detail: String,
        /// Whether it was a timeout.
        timeout: bool,
        /// Attempts made.
        attempts: u32,
    },
    /// No token for the call.
    #[error("{service}: {source}")]
    Token {
        /// Service name.
        service: String,
        /// The credential's error.
        source: TokenError,
    },
    /// A message post failed in a way that may still have delivered it (a timeout, a reset
    /// after the request was written, a 5xx). Never retried, never re-sent elsewhere.
    #[error("{service}: {detail}: the message may have been delivered{}", retried(*attempts))]
    MaybeDelivered {
        /// Service name.
        service: String,
        /// What happened (`timed out after 30 s`, `HTTP 502`…), without the URL.
        detail: String,
        /// The status, when the service answered.
        status: Option<u16>,
        /// Attempts made.
        attempts: u32,
    },
    /// The body is not what was expected.
    #[error("{service}: unexpected response: {detail}")]
    Decode {
        /// Service name.
        service: String,
        /// The decoding error.
        detail: String,
        /// Attempts made.
        attempts: u32,
    },
}

fn retried(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl HttpError {
    /// The HTTP status, when the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            HttpError::MaybeDelivered { status, .. } => *status,
            _ => None,
        }
    }

    /// The service's error code (`BotNotInConversationRoster`, `Request_ResourceNotFound`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            HttpError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            HttpError::Status { attempts, .. }
            | HttpError::Transport { attempts, .. }
            | HttpError::MaybeDelivered { attempts, .. }
            | HttpError::Decode { attempts, .. } => *attempts,
            HttpError::Token { .. } => 0,
        }
    }

    /// Whether a later run may succeed (throttling, 5xx, network, token service).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => is_retryable_status(*status),
            HttpError::Transport { .. }
            | HttpError::Token { .. }
            | HttpError::MaybeDelivered { .. } => true,
            HttpError::Decode { .. } => false,
        }
    }

    /// Whether the failed call was a message post that may have been delivered all the
    /// same: the caller records it as sent and never posts it again.
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, HttpError::MaybeDelivered { .. })
    }

    /// A short reason for a report line: `throttled: out of retries`, `HTTP 403`….
    pub fn reason(&self) -> String {
        match self {
            HttpError::Status {
                status: 429,
                attempts,
                ..
            } => format!("throttled: out of retries after {attempts} attempts"),
            HttpError::Status {
                status, attempts, ..
            } if *status >= 500 => {
                format!("service error HTTP {status}{}", retried(*attempts))
            }
            HttpError::Status {
                status, message, ..
            } => match message {
                Some(m) => format!("HTTP {status}: {m}"),
                None => format!("HTTP {status}"),
            },
            HttpError::Transport {
                detail, attempts, ..
            } => format!("{detail}{}", retried(*attempts)),
            HttpError::MaybeDelivered {
                detail, attempts, ..
            } => format!(
                "{detail}{}: may have been delivered, not re-sent",
                retried(*attempts)
            ),
            HttpError::Token { source, .. } => source.to_string(),
            HttpError::Decode { detail, .. } => format!("unexpected response: {detail}"),
        }
    }
}

/// 408, 412 (Teams: transient), 429 and 5xx (except 501 Not Implemented / 505) are worth
/// retrying.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 412 | 429) || (status >= 500 && status != 501 && status != 505)
}

/// Counters shared by the clones of a client (for the run report and the benchmark).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Attempts sent.
    pub attempts: AtomicU64,
    /// Attempts answered 429.
    pub throttled: AtomicU64,
    /// Retries made (any reason).
    pub retries: AtomicU64,
}

/// An HTTP client for one endpoint: its rate limit, retry policy and counters.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    service: String,
    policy: RetryPolicy,
    limiter: Option<Arc<RateLimiter>>,
    stats: Arc<HttpStats>,
}

impl HttpClient {
    /// A client for `service` (a name for errors and logs, never a URL) over `client`.
    pub fn new(service: impl Into<String>, client: reqwest::Client) -> Self {
        Self {
            client,
            service: service.into(),
            policy: RetryPolicy::default(),
            limiter: None,
            stats: Arc::new(HttpStats::default()),
        }
    }

    /// Uses this retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Paces every attempt through `limiter` (shareable between clients of one endpoint).
    pub fn with_rate_limit(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The underlying client, to build requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The counters.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Sends the request `build` makes (called again for each attempt), with a bearer token
    /// for `scope` from `tokens` when `auth` is given. Statuses below 400 are returned;
    /// anything else is an error once the policy gives up.
    pub async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        auth: Option<(&dyn AccessTokens, &str)>,
    ) -> Result<HttpOutcome, HttpError> {
        self.send_with(Replay::Safe, build, auth).await
    }

    /// Posts a message: like [`send`](Self::send) under [`Replay::NotIfMaybeDelivered`].
    pub(crate) async fn post_message(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        auth: Option<(&dyn AccessTokens, &str)>,
    ) -> Result<HttpOutcome, HttpError> {
        self.send_with(Replay::NotIfMaybeDelivered, build, auth)
            .await
    }

    /// Like [`send`](Self::send), with the given replay rule.
    pub(crate) async fn send_with(
        &self,
        replay: Replay,
        build: impl Fn() -> reqwest::RequestBuilder,
        auth: Option<(&dyn AccessTokens, &str)>,
    ) -> Result<HttpOutcome, HttpError> {
        let streamed = self.send_streaming_with(replay, build, auth).await?;
        let status = streamed.response.status().as_u16();
        let headers = streamed.response.headers().clone();
        // A body that cannot be read after a success is still a success: the
        // request was processed, and retrying could send a message twice.
        let body = streamed.response.bytes().await.unwrap_or_default();
        Ok(HttpOutcome {
            status,
            headers,
            body,
            attempts: streamed.attempts,
        })
    }

    /// Like [`send`](Self::send), with the same retries, but a success is returned with its
    /// body unread, for callers that stream it (a download with a size cap). The policy's
    /// `timeout` applies to each attempt **including** the body the caller reads later
    /// (reqwest's request timeout covers the body), so a streaming caller picks a policy
    /// whose timeout fits the whole transfer.
    pub(crate) async fn send_streaming(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        auth: Option<(&dyn AccessTokens, &str)>,
    ) -> Result<StreamedResponse, HttpError> {
        self.send_streaming_with(Replay::Safe, build, auth).await
    }

    async fn send_streaming_with(
        &self,
        replay: Replay,
        build: impl Fn() -> reqwest::RequestBuilder,
        auth: Option<(&dyn AccessTokens, &str)>,
    ) -> Result<StreamedResponse, HttpError> {
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            attempts += 1;
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            let mut request = build().timeout(self.policy.timeout);
            if let Some((tokens, scope)) = auth {
                let token = tokens
                    .token(scope)
                    .await
                    .map_err(|source| HttpError::Token {
                        service: self.service.clone(),
                        source,
                    })?;
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let retry_in = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if status < 400 {
                        if let Some(limiter) = &self.limiter {
                            limiter.succeeded();
                        }
                        return Ok(StreamedResponse { response, attempts });
                    }
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    if status == 401 && auth.is_some() && !refreshed {
                        // The token may have been revoked or expired early: fetch a new one once.
                        refreshed = true;
                        if let Some((tokens, scope)) = auth {
                            tokens.invalidate(scope);
                        }
                        debug!(service = %self.service, "401: refreshing the token once");
                        attempts -= 1;
                        continue;
                    }
                    let error = self.status_error(status, &body, attempts);
                    if status == 429 {
                        self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        // The pace is shared by every caller of this endpoint: all of them
                        // slow down and hold for the service's `Retry-After`.
                        if let Some(limiter) = &self.limiter {
                            let asked = retry_after(&headers, SystemTime::now())
                                .map(|d| d.min(self.policy.max_retry_after));
                            limiter.throttled(asked);
                        }
                    }
                    let attempt = Attempt::Status {
                        status,
                        retry_after: headers.contains_key(RETRY_AFTER),
                    };
                    if maybe_delivered(replay, attempt) {
                        return Err(HttpError::MaybeDelivered {
                            service: self.service.clone(),
                            detail: format!("HTTP {status}"),
                            status: Some(status),
                            attempts,
                        });
                    }
                    if !should_retry(replay, attempt) || attempts >= self.policy.max_attempts {
                        return Err(error);
                    }
                    let asked = retry_after(&headers, SystemTime::now())
                        .map(|d| d.min(self.policy.max_retry_after));
                    let wait = match (asked, &self.limiter) {
                        // The shared limiter now holds every caller, this one included, for
                        // the `Retry-After`: sleeping here too would wait twice.
                        (Some(_), Some(_)) if status == 429 => Duration::ZERO,
                        (Some(d), _) => d,
                        (None, _) => self.policy.backoff(attempts),
                    };
                    debug!(service = %self.service, status, attempt = attempts, wait_ms = wait.as_millis() as u64, "retrying");
                    wait
                }
                Err(e) => {
                    let timeout = e.is_timeout();
                    let e = e.without_url();
                    let detail = if timeout {
                        format!("timed out after {} s", self.policy.timeout.as_secs_f64())
                    } else if e.is_connect() {
                        format!("cannot connect: {}", error_chain(&e))
                    } else {
                        format!("request failed: {}", error_chain(&e))
                    };
                    // A connect error (refused, DNS, TLS handshake) never wrote the request.
                    let attempt = if e.is_connect() || e.is_builder() {
                        Attempt::NotConnected
                    } else {
                        Attempt::Broken
                    };
                    if maybe_delivered(replay, attempt) {
                        return Err(HttpError::MaybeDelivered {
                            service: self.service.clone(),
                            detail,
                            status: None,
                            attempts,
                        });
                    }
                    let error = HttpError::Transport {
                        service: self.service.clone(),
                        detail,
                        timeout,
                        attempts,
                    };
                    if attempts >= self.policy.max_attempts
                        || e.is_builder()
                        || !should_retry(replay, attempt)
                    {
                        return Err(error);
                    }
                    let wait = self.policy.backoff(attempts);
                    debug!(service = %self.service, error = %error, attempt = attempts, wait_ms = wait.as_millis() as u64, "retrying");
                    wait
                }
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            self.policy.waits.wait(retry_in).await;
        }
    }

    fn status_error(&self, status: u16, body: &[u8], attempts: u32) -> HttpError {
        let (code, message) = service_error(body);
        HttpError::Status {
            service: self.service.clone(),
            status,
            code,
            message,
            attempts,
        }
    }
}

/// The chain of an error's sources, for a one-line detail.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// `error.code` / `error.message` of a Graph or Bot Framework error body (also accepts a
/// top-level `code`/`message`, as Power Automate sometimes answers).
pub(crate) fn service_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let e = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let text = |key: &str| e.get(key).and_then(|x| x.as_str()).map(str::to_string);
    // Scrubbed once here, for every caller: Graph repeats the address it was asked for.
    let message = text("message")
        .map(|m| crate::domain::scrub_addresses(&m))
        .map(|m| {
            if m.chars().count() > 200 {
                format!("{}…", m.chars().take(200).collect::<String>())
            } else {
                m
            }
        });
    (text("code"), message)
}

/// Percent-encodes a path segment or query value (everything but `A-Z a-z 0-9 - . _ ~`),
/// so an address or an OData filter never changes the shape of the URL.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The wait a `Retry-After` header asks for: delta-seconds (`"5"`, `"1.5"`) or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // Clamped before converting: a hostile or broken `1e20` must not panic the run
        // (callers cap the wait further with their policy).
        const A_YEAR: f64 = 365.0 * 86_400.0;
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(A_YEAR)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn an_absurd_retry_after_is_clamped_not_a_panic() {
        let d = retry_after(&headers("1e20"), SystemTime::now()).unwrap();
        assert_eq!(d, Duration::from_secs(365 * 86_400));
        assert_eq!(retry_after(&headers("-3"), SystemTime::now()), None);
        assert_eq!(retry_after(&headers("NaN"), SystemTime::now()), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers("0.5"), now),
            Some(Duration::from_millis(500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            retry_after(&headers(&later), now),
            Some(Duration::from_secs(7))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&headers(&past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..50 {
            let b1 = p.backoff(1);
            assert!(
                b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100),
                "{b1:?}"
            );
            let b3 = p.backoff(3);
            assert!(
                b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400),
                "{b3:?}"
            );
            let b9 = p.backoff(9);
            assert!(
                b9 >= Duration::from_millis(500) && b9 <= Duration::from_millis(1000),
                "{b9:?}"
            );
        }
    }

    #[test]
    fn service_errors_give_code_and_message() {
        let body = br#"{"error":{"code":"BotNotInConversationRoster","message":"The bot is not part of the conversation roster."}}"#;
        let (code, msg) = service_error(body);
        assert_eq!(code.as_deref(), Some("BotNotInConversationRoster"));
        assert!(msg.unwrap().contains("roster"));
        assert_eq!(service_error(b"<html>"), (None, None));
    }

    #[test]
    fn only_throttling_timeouts_and_server_errors_are_retryable() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_paces_callers_at_the_rate() {
        let limiter = Arc::new(RateLimiter::new(10.0, 1));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..21 {
            let l = limiter.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut times: Vec<Duration> = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        // 21 slots at 10/s with one token to start: the last one two seconds in.
        assert_eq!(times[0], Duration::ZERO);
        let last = *times.last().unwrap();
        assert!(
            last >= Duration::from_millis(1990) && last <= Duration::from_millis(2010),
            "{last:?}"
        );
        // Never more than one slot per 100 ms window.
        for w in times.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(99), "{:?}", w);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_storm_cuts_the_pace_once_per_second_holds_everyone_and_never_below_the_floor() {
        let limiter = RateLimiter::new(50.0, 1);
        // 32 requests in flight all answered 429 at once: one cut, one pause.
        for _ in 0..32 {
            limiter.throttled(Some(Duration::from_secs(1)));
        }
        assert_eq!(limiter.backoffs(), 1);
        assert!((limiter.current_rate() - 35.0).abs() < 1e-9);
        let start = Instant::now();
        limiter.acquire().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1100),
            "the Retry-After holds the next request, once: {waited:?}"
        );
        // A storm lasting a minute: one cut per second, down to the floor and no further.
        for _ in 0..60 {
            tokio::time::advance(BACK_OFF_EVERY).await;
            limiter.throttled(None);
        }
        assert!((limiter.current_rate() - 50.0 * FLOOR_SHARE).abs() < 1e-9);
        // The floor still moves: 10 requests at 2.5/s take about 4 s, not for ever.
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() <= Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_storm_successes_creep_the_pace_back_to_the_ceiling_and_not_beyond() {
        let limiter = RateLimiter::new(40.0, 1);
        limiter.throttled(None);
        assert!(limiter.current_rate() < 40.0);
        let steps = ((40.0 - limiter.current_rate()) / (40.0 * CREEP)).ceil() as usize;
        for _ in 0..steps - 1 {
            limiter.succeeded();
        }
        assert!(limiter.current_rate() < 40.0, "creeps, does not jump");
        for _ in 0..100 {
            limiter.succeeded();
        }
        assert_eq!(limiter.current_rate(), 40.0);
        assert_eq!(limiter.rate(), 40.0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_conversation_is_paced_on_its_own_and_others_are_not_held_up() {
        let limiter = KeyedRateLimiter::new(0.5, 7);
        let start = Instant::now();
        for _ in 0..7 {
            limiter.acquire("a:1").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "a burst of 7 at once");
        limiter.acquire("a:2").await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "another conversation is free"
        );
        limiter.acquire("a:1").await;
        let eighth = start.elapsed();
        assert!(
            eighth >= Duration::from_millis(1990) && eighth <= Duration::from_millis(2010),
            "the 8th waits 2 s: {eighth:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_conversations_are_forgotten() {
        let limiter = KeyedRateLimiter::new(0.5, 7);
        for i in 0..1100 {
            limiter.acquire(&format!("a:{i}")).await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        limiter.acquire("a:new").await;
        assert!(limiter.tracked() < 10, "{}", limiter.tracked());
    }
}
