//! A fake Bot Connector (`{serviceUrl}/v3/conversations/{id}/activities`) that behaves like
//! Teams': checks the bearer token (audience, and the app it was issued to: `appid` / `azp`
//! must be the bot's app id, answered 401 otherwise), the activity (type, Adaptive Card 1.5 with a body,
//! under 28 KB), enforces a requests-per-second limit per app (every operation counted,
//! conversation creation included) answering 429 with `Retry-After` beyond it, always
//! enforces the documented per-conversation limits (7 / 1 s, 8 / 2 s, 60 / 30 s,
//! 1,800 / 3,600 s, <https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit>),
//! and can inject 403 `BotNotInConversationRoster`, 404, 5xx and slow answers.
//!
//! It also creates 1:1 conversations (`POST {serviceUrl}/v3/conversations`) once a test
//! says which bot and tenant to expect, checking the body strictly; activities to an `a:`
//! conversation it did not create are answered 404, as Teams would.
//!
//! A test can revoke the next token it sees: that token is then refused with 401 every time
//! it comes back, so only a really new token gets through (as after a key rollover).
//!
//! It can also accept an activity and then lose the answer — a 502 from a gateway after the
//! message was stored, or no answer within the client's timeout — the "delivered, answer
//! lost" case of the Bot Framework docs, which a client must never turn into a second message
//! (https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit: retry only
//! what surely was not taken).
//!
//! It counts accepted activities per conversation, so tests and the benchmark can prove that
//! no reminder was sent twice and none was lost.

use crate::fake_identity::{bearer_app_id, bearer_audience, SYSTEM_ASSIGNED_ID};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The audience Bot Connector tokens must carry.
pub const BOT_AUDIENCE: &str = "https://api.botframework.com";

/// Largest activity accepted.
pub const MAX_BYTES: usize = 28 * 1024;

/// How the `Retry-After` of a 429 is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfterStyle {
    /// Delta-seconds (`1`).
    Seconds,
    /// An HTTP date.
    HttpDate,
}

/// A fault answered instead of accepting.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Status.
    pub status: u16,
    /// `error.code`.
    pub code: &'static str,
    /// `Retry-After` header.
    pub retry_after: Option<String>,
}

/// One request the fake received (bodies only when recording them).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Arrival time since start.
    pub at: Duration,
    /// Conversation id (decoded).
    pub conversation: String,
    /// Status answered.
    pub status: u16,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
    /// The activity.
    pub body: Option<Value>,
}

/// What happens to the answer after an activity was accepted and counted.
#[derive(Clone, Copy, Debug)]
pub enum LostAnswer {
    /// A gateway answers this status instead of the `201`.
    Status(u16),
    /// No answer for this long (longer than the client's timeout).
    Hang(Duration),
}

struct State {
    started: Instant,
    lost_answers: VecDeque<LostAnswer>,
    limit: Option<(u32, RetryAfterStyle)>,
    window: (u64, u32),
    /// Accepted requests per conversation in the last hour (the per-thread limits).
    thread_times: HashMap<String, VecDeque<Duration>>,
    /// 429s answered for a conversation's own limits.
    thread_throttled: u64,
    delay: Option<Duration>,
    faults: VecDeque<Fault>,
    per_conversation_faults: HashMap<String, VecDeque<Fault>>,
    gone: HashSet<String>,
    /// Accepted activities per conversation.
    accepted: HashMap<String, u32>,
    throttled: u64,
    requests: Vec<Recorded>,
    record: bool,
    violations: Vec<String>,
    next_id: u64,
    /// The bot app id and tenant conversation creation expects (none: refused).
    creation: Option<(String, String)>,
    /// Member id → created conversation id.
    created: HashMap<String, String>,
    /// Conversation creation bodies received, with the status answered.
    creations: Vec<(Value, u16)>,
    /// The bot's app id (`REMINDERS_BOT_APP_ID`): tokens must be issued to it.
    app_id: String,
    /// Revoke the next bearer token seen.
    revoke_next: bool,
    /// Revoked bearer tokens (raw JWTs), refused for ever.
    revoked: HashSet<String>,
    /// Requests refused because they carried a revoked token.
    revoked_hits: u32,
}

/// A running fake Bot Connector.
#[derive(Clone)]
pub struct FakeBot {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeBot {
    /// Starts on `127.0.0.1:0`, serving under `/teams` like the public service URL, for a
    /// bot registered with the system-assigned identity of the fake identity endpoint.
    pub async fn start() -> FakeBot {
        Self::start_for_app(SYSTEM_ASSIGNED_ID).await
    }

    /// Starts for the bot `app_id`: bearer tokens issued to any other app get 401.
    pub async fn start_for_app(app_id: &str) -> FakeBot {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake bot");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            started: Instant::now(),
            lost_answers: VecDeque::new(),
            limit: None,
            window: (0, 0),
            thread_times: HashMap::new(),
            thread_throttled: 0,
            delay: None,
            faults: VecDeque::new(),
            per_conversation_faults: HashMap::new(),
            gone: HashSet::new(),
            accepted: HashMap::new(),
            throttled: 0,
            requests: Vec::new(),
            record: true,
            violations: Vec::new(),
            next_id: 0,
            creation: None,
            created: HashMap::new(),
            creations: Vec::new(),
            app_id: app_id.to_string(),
            revoke_next: false,
            revoked: HashSet::new(),
            revoked_hits: 0,
        }));
        let app = Router::new()
            .route(
                "/teams/v3/conversations/{conversation}/activities",
                post({
                    let state = state.clone();
                    move |uri: Uri, headers: HeaderMap, body: Bytes| {
                        let state = state.clone();
                        async move { activity(state, uri, headers, body).await }
                    }
                }),
            )
            .route(
                "/teams/v3/conversations",
                post({
                    let state = state.clone();
                    move |headers: HeaderMap, body: Bytes| {
                        let state = state.clone();
                        async move { create_conversation(state, headers, body).await }
                    }
                }),
            )
            .fallback(|uri: Uri| async move {
                (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"code": "NotFound", "message": format!("no route {}", uri.path())}})))
            });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeBot { addr, state }
    }

    /// `REMINDERS_BOT_SERVICE_URL`.
    pub fn service_url(&self) -> String {
        format!("http://{}/teams/", self.addr)
    }

    /// Accepts at most `per_second` requests per clock second; 429 beyond.
    pub fn set_rate_limit(&self, per_second: u32, style: RetryAfterStyle) {
        self.state.lock().unwrap().limit = Some((per_second, style));
    }

    /// Delays every answer (slow service).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Keeps only counts, not bodies (the benchmark).
    pub fn set_recording(&self, on: bool) {
        self.state.lock().unwrap().record = on;
    }

    /// Answers the next `times` requests (any conversation) with `status`.
    pub fn fail_next(
        &self,
        status: u16,
        times: usize,
        code: &'static str,
        retry_after: Option<&str>,
    ) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.faults.push_back(Fault {
                status,
                code,
                retry_after: retry_after.map(str::to_string),
            });
        }
    }

    /// Accepts the next `times` activities (counted in [`accepted`](Self::accepted)) and then
    /// answers `status` instead of `201`, like a gateway that lost the service's answer.
    pub fn accept_then_fail(&self, status: u16, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.lost_answers.push_back(LostAnswer::Status(status));
        }
    }

    /// Accepts the next `times` activities and then does not answer for `hang`.
    pub fn accept_then_hang(&self, hang: Duration, times: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..times {
            s.lost_answers.push_back(LostAnswer::Hang(hang));
        }
    }

    /// Answers the next `times` requests to `conversation` with `status`.
    pub fn fail_conversation(
        &self,
        conversation: &str,
        status: u16,
        times: usize,
        code: &'static str,
    ) {
        let mut s = self.state.lock().unwrap();
        let q = s
            .per_conversation_faults
            .entry(conversation.to_string())
            .or_default();
        for _ in 0..times {
            q.push_back(Fault {
                status,
                code,
                retry_after: None,
            });
        }
    }

    /// Makes a conversation unknown (404 for ever).
    pub fn forget(&self, conversation: &str) {
        self.state
            .lock()
            .unwrap()
            .gone
            .insert(conversation.to_string());
    }

    /// Accepted activities per conversation.
    pub fn accepted(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.state.lock().unwrap().throttled
    }

    /// 429s answered because one conversation went over its own limits.
    pub fn thread_throttled(&self) -> u64 {
        self.state.lock().unwrap().thread_throttled
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Strictness violations seen.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Accepts conversation creation for this bot (`REMINDERS_BOT_APP_ID`) and tenant.
    pub fn expect_conversation_creation(&self, bot_app_id: &str, tenant_id: &str) {
        self.state.lock().unwrap().creation = Some((bot_app_id.into(), tenant_id.into()));
    }

    /// Conversation creation bodies received, with the status answered.
    pub fn creations(&self) -> Vec<(Value, u16)> {
        self.state.lock().unwrap().creations.clone()
    }

    /// Refuses the next bearer token seen with 401, and again every time it comes back.
    pub fn revoke_next_token(&self) {
        self.state.lock().unwrap().revoke_next = true;
    }

    /// The tokens revoked so far.
    pub fn revoked(&self) -> HashSet<String> {
        self.state.lock().unwrap().revoked.clone()
    }

    /// Requests refused because they carried an already revoked token.
    pub fn revoked_hits(&self) -> u32 {
        self.state.lock().unwrap().revoked_hits
    }

    /// The conversation id created for a member, if any.
    pub fn created_conversation(&self, member_id: &str) -> Option<String> {
        self.state.lock().unwrap().created.get(member_id).cloned()
    }
}

/// What a valid 1:1 `ConversationParameters` for `bot_app_id` in `tenant_id` looks like;
/// `Err` says what is wrong. Returns the member id.
pub fn check_conversation_parameters(
    v: &Value,
    bot_app_id: &str,
    tenant_id: &str,
) -> Result<String, String> {
    if v["isGroup"] != Value::Bool(false) {
        return Err(format!("isGroup must be false, got {}", v["isGroup"]));
    }
    if v["bot"]["id"] != format!("28:{bot_app_id}").as_str() {
        return Err(format!(
            "bot.id must be 28:<bot app id>, got {}",
            v["bot"]["id"]
        ));
    }
    let members = v["members"].as_array().ok_or("members must be an array")?;
    if members.len() != 1 {
        return Err(format!(
            "exactly one member expected, got {}",
            members.len()
        ));
    }
    let member = members[0]["id"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or("members[0].id must be a non-empty string")?;
    // Our contract: the member is named by its Entra object id (a bare id). A `29:` prefix
    // on an object id is a pairwise id Teams refuses.
    if member.contains(':') {
        return Err(format!(
            "members[0].id must be the user's Entra object id, got {member}"
        ));
    }
    if v["channelData"]["tenant"]["id"] != tenant_id {
        return Err(format!(
            "channelData.tenant.id must be the tenant, got {}",
            v["channelData"]["tenant"]["id"]
        ));
    }
    if v.get("tenantId").is_some_and(|t| t != tenant_id) {
        return Err(format!(
            "tenantId must be the tenant, got {}",
            v["tenantId"]
        ));
    }
    Ok(member.to_string())
}

/// Documented per-thread limits: (window, requests allowed in it).
pub const THREAD_LIMITS: [(Duration, usize); 4] = [
    (Duration::from_secs(1), 7),
    (Duration::from_secs(2), 8),
    (Duration::from_secs(30), 60),
    (Duration::from_secs(3600), 1800),
];

fn too_many(style: RetryAfterStyle) -> Response {
    let mut r = bot_error(429, "TooManyRequests", "Too many requests");
    let value = match style {
        RetryAfterStyle::Seconds => "1".to_string(),
        RetryAfterStyle::HttpDate => {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(1))
        }
    };
    r.headers_mut()
        .insert("retry-after", value.parse().unwrap());
    r
}

/// The per-app limit (requests per clock second), when set: a 429 beyond it.
fn app_throttle(s: &mut State, at: Duration) -> Option<Response> {
    let (limit, style) = s.limit?;
    let second = at.as_secs();
    if s.window.0 != second {
        s.window = (second, 0);
    }
    if s.window.1 >= limit {
        s.throttled += 1;
        return Some(too_many(style));
    }
    s.window.1 += 1;
    None
}

/// The per-conversation limits: a 429 when one more request would break any of them.
fn thread_throttle(s: &mut State, conversation: &str, at: Duration) -> Option<Response> {
    let times = s.thread_times.entry(conversation.to_string()).or_default();
    while times
        .front()
        .is_some_and(|t| at.saturating_sub(*t) >= Duration::from_secs(3600))
    {
        times.pop_front();
    }
    let over = THREAD_LIMITS.iter().any(|(window, allowed)| {
        times
            .iter()
            .rev()
            .take_while(|t| at.saturating_sub(**t) < *window)
            .count()
            >= *allowed
    });
    if over {
        s.throttled += 1;
        s.thread_throttled += 1;
        let style = s
            .limit
            .map(|(_, st)| st)
            .unwrap_or(RetryAfterStyle::Seconds);
        return Some(too_many(style));
    }
    times.push_back(at);
    None
}

async fn create_conversation(
    state: Arc<Mutex<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = state.lock().unwrap().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    let mut s = state.lock().unwrap();
    let at = s.started.elapsed();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let response = (|| {
        if let Err(violation) = check_bearer(&mut s, authorization) {
            if let Some(v) = violation {
                s.violations.push(format!("create conversation: {v}"));
            }
            return unauthorized();
        }
        if let Some(r) = app_throttle(&mut s, at) {
            return r;
        }
        let Some((bot, tenant)) = s.creation.clone() else {
            s.violations
                .push("create conversation: not expected by this test".into());
            return bot_error(400, "BadSyntax", "conversation creation not expected");
        };
        match check_conversation_parameters(&v, &bot, &tenant) {
            Err(why) => {
                s.violations.push(format!("create conversation: {why}"));
                bot_error(400, "BadSyntax", &why)
            }
            Ok(member) => {
                // Teams answers the same id for the same member (idempotent).
                let id = s
                    .created
                    .entry(member.clone())
                    .or_insert_with(|| format!("a:1{}", member.replace('-', "")))
                    .clone();
                (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
            }
        }
    })();
    let status = response.status().as_u16();
    s.creations.push((v, status));
    response
}

/// What the real service checks of the bearer token: audience, the app it was issued to, and
/// (here) revocation. `Err` is the violation to record, `Ok(None)` a revoked token (refused,
/// but not a client bug).
fn check_bearer(s: &mut State, authorization: Option<&str>) -> Result<(), Option<String>> {
    let audience = authorization.and_then(bearer_audience);
    if audience.as_deref() != Some(BOT_AUDIENCE) {
        return Err(Some(format!("bearer audience {audience:?}")));
    }
    let app_id = authorization.and_then(bearer_app_id);
    if app_id.as_deref() != Some(s.app_id.as_str()) {
        return Err(Some(format!(
            "bearer appid {app_id:?}, expected the bot's {}",
            s.app_id
        )));
    }
    let token = authorization
        .unwrap_or("")
        .trim()
        .trim_start_matches("Bearer ")
        .to_string();
    if s.revoked.contains(&token) {
        s.revoked_hits += 1;
        return Err(None);
    }
    if std::mem::take(&mut s.revoke_next) {
        s.revoked.insert(token);
        return Err(None);
    }
    Ok(())
}

fn unauthorized() -> Response {
    bot_error(
        401,
        "Unauthorized",
        "Authorization has been denied for this request.",
    )
}

fn bot_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// What a valid Teams activity with an Adaptive Card looks like; `Err` says what is wrong.
pub fn check_activity(body: &[u8]) -> Result<Value, String> {
    if body.len() >= MAX_BYTES {
        return Err(format!("activity of {} bytes exceeds 28 KB", body.len()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["type"] != "message" {
        return Err("type must be message".into());
    }
    for field in ["summary", "text"] {
        if v[field].as_str().is_none_or(|t| t.trim().is_empty()) {
            return Err(format!("{field} must be a non-empty string"));
        }
    }
    let attachments = v["attachments"]
        .as_array()
        .ok_or("attachments must be an array")?;
    if attachments.len() != 1 {
        return Err("exactly one attachment expected".into());
    }
    let a = &attachments[0];
    if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
        return Err(format!("contentType {}", a["contentType"]));
    }
    let card = &a["content"];
    if card["type"] != "AdaptiveCard" || card["version"] != "1.5" {
        return Err(format!(
            "card type {} version {}",
            card["type"], card["version"]
        ));
    }
    if !card["body"]
        .as_array()
        .is_some_and(|b| !b.is_empty() && b.iter().all(|e| e["type"].is_string()))
    {
        return Err("card body must be a non-empty array of typed elements".into());
    }
    Ok(v)
}

async fn activity(state: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let delay = state.lock().unwrap().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let conversation = crate::fake_graph::decode(
        uri.path()
            .trim_start_matches("/teams/v3/conversations/")
            .trim_end_matches("/activities"),
    );
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (response, lost) = answer_activity(&state, conversation, authorization, &body);
    if let Some(LostAnswer::Hang(hang)) = lost {
        tokio::time::sleep(hang).await;
    }
    response
}

/// The answer to an activity, and what happens to it afterwards (the lock is not held
/// across an await).
fn answer_activity(
    state: &Mutex<State>,
    conversation: String,
    authorization: Option<String>,
    body: &[u8],
) -> (Response, Option<LostAnswer>) {
    let mut s = state.lock().unwrap();
    let at = s.started.elapsed();
    let checked = check_activity(body);
    let mut lost = None;
    let response = (|| {
        if let Err(violation) = check_bearer(&mut s, authorization.as_deref()) {
            if let Some(v) = violation {
                s.violations.push(v);
            }
            return unauthorized();
        }
        if let Some(r) = app_throttle(&mut s, at) {
            return r;
        }
        if let Some(r) = thread_throttle(&mut s, &conversation, at) {
            return r;
        }
        let fault = s.faults.pop_front().or_else(|| {
            s.per_conversation_faults
                .get_mut(&conversation)
                .and_then(|q| q.pop_front())
        });
        if let Some(f) = fault {
            if f.status == 429 {
                s.throttled += 1;
            }
            let mut r = bot_error(f.status, f.code, "injected fault");
            if let Some(ra) = f.retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            return r;
        }
        if s.gone.contains(&conversation)
            || (conversation.starts_with("a:") && !s.created.values().any(|c| *c == conversation))
        {
            return bot_error(404, "ConversationNotFound", "Conversation not found.");
        }
        if let Err(why) = &checked {
            s.violations.push(why.clone());
            return bot_error(400, "BadSyntax", why);
        }
        *s.accepted.entry(conversation.clone()).or_insert(0) += 1;
        s.next_id += 1;
        let id = format!("1:{}", s.next_id);
        lost = s.lost_answers.pop_front();
        if let Some(LostAnswer::Status(status)) = lost {
            return bot_error(status, "BadGateway", "upstream answer lost");
        }
        (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
    })();
    if s.record {
        s.requests.push(Recorded {
            at,
            conversation,
            status: response.status().as_u16(),
            authorization,
            body: checked.ok(),
        });
    }
    (response, lost)
}
