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

/// A token bucket: `rate` requests per second on average, at most `burst` at once.
///
/// Callers reserve a slot and sleep until it comes (the bucket may go negative), so waiting
/// callers are served in arrival order and the pace stays exact under contention.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` per second (must be > 0) with a burst of `burst` (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate > 0.0 { rate } else { 1.0 };
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            // Start with one token: a fresh process must not burst past a limit the
            // previous run may have just used up.
            state: Mutex::new(Bucket {
                tokens: 1.0f64.min(burst),
                last: Instant::now(),
            }),
        }
    }

    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        let wait = {
            let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            b.last = now;
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                None
            } else {
                Some(Duration::from_secs_f64(-b.tokens / self.rate))
            }
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
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
pub struct StreamedResponse {
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
            | HttpError::Decode { attempts, .. } => *attempts,
            HttpError::Token { .. } => 0,
        }
    }

    /// Whether a later run may succeed (throttling, 5xx, network, token service).
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => is_retryable_status(*status),
            HttpError::Transport { .. } | HttpError::Token { .. } => true,
            HttpError::Decode { .. } => false,
        }
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
            HttpError::Token { source, .. } => source.to_string(),
            HttpError::Decode { detail, .. } => format!("unexpected response: {detail}"),
        }
    }
}

/// 408, 429 and 5xx (except 501 Not Implemented / 505) are worth retrying.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (status >= 500 && status != 501 && status != 505)
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
        let streamed = self.send_streaming(build, auth).await?;
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
    pub async fn send_streaming(
        &self,
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
                    }
                    if !is_retryable_status(status) || attempts >= self.policy.max_attempts {
                        return Err(error);
                    }
                    let wait = retry_after(&headers, SystemTime::now())
                        .map(|d| d.min(self.policy.max_retry_after))
                        .unwrap_or_else(|| self.policy.backoff(attempts));
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
                    let error = HttpError::Transport {
                        service: self.service.clone(),
                        detail,
                        timeout,
                        attempts,
                    };
                    if attempts >= self.policy.max_attempts || e.is_builder() {
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
pub fn service_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let e = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
    let text = |key: &str| e.get(key).and_then(|x| x.as_str()).map(str::to_string);
    let message = text("message").map(|m| {
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
}
