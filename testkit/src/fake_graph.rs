//! A fake Microsoft Graph (v1.0) for the delivery channels: users and their managers, the
//! Teams app installations and their 1:1 chats, and `sendMail`.
//!
//! It checks strictly what the real one would refuse or what we promise to send: a bearer
//! token whose audience is Graph, the exact paths, `$select` / `$expand` / `$filter`, the
//! install and mail bodies. Every request is recorded; faults can be injected per route.
//!
//! Like Graph, it can enforce the Microsoft Teams service limit on the Teams endpoints
//! (`installed_apps`, `install`, `chat`): 30 requests per second per app per tenant, a token
//! bucket, answered 429 with `Retry-After` beyond
//! (<https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits>).

use crate::fake_identity::bearer_audience;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The audience Graph tokens must carry.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

/// The `$select` the bot must ask for.
pub const USER_SELECT: &str =
    "id,displayName,mail,userPrincipalName,preferredLanguage,accountEnabled";

/// The user fields the fake can answer; a user `$select` must name a non-empty set of
/// them, each once (the bot asks for [`USER_SELECT`], the e-mail channel for
/// `preferredLanguage` alone).
pub const USER_FIELDS: &[&str] = &[
    "id",
    "displayName",
    "mail",
    "userPrincipalName",
    "preferredLanguage",
    "accountEnabled",
];

/// Whether a user `$select` asks for known fields only, each once, and at least one.
fn user_select_ok(select: Option<&str>) -> bool {
    let Some(select) = select else {
        return false;
    };
    let fields: Vec<&str> = select.split(',').collect();
    let unique: std::collections::HashSet<&str> = fields.iter().copied().collect();
    // `split` yields at least one field; an empty `$select` is `""`, not a known field.
    unique.len() == fields.len() && fields.iter().all(|f| USER_FIELDS.contains(f))
}

/// The `$select` a manager lookup must ask for.
pub const MANAGER_SELECT: &str = "id,mail,displayName,userPrincipalName";

/// A user's manager in the fake directory.
#[derive(Clone, Debug)]
pub struct FakeManager {
    /// Object id.
    pub id: String,
    /// `mail` (absent: no mailbox).
    pub mail: Option<String>,
    /// UPN.
    pub upn: String,
}

/// A user in the fake directory.
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// Object id.
    pub id: String,
    /// `fr-FR`, `en-US`…
    pub preferred_language: Option<String>,
    /// Disabled accounts.
    pub account_enabled: bool,
    /// Installing the app for this user is refused (no Teams licence, app blocked).
    pub install_forbidden: bool,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Route name (`user`, `manager`, `installed_apps`, `install`, `chat`, `send_mail`,
    /// `unknown`).
    pub route: &'static str,
    /// Path, decoded.
    pub path: String,
    /// Raw query.
    pub query: String,
    /// The bearer token's audience.
    pub audience: Option<String>,
    /// The raw `Authorization` header (to check no token leaks).
    pub authorization: Option<String>,
    /// JSON body, if any.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

/// A fault answered instead of the normal response.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Status.
    pub status: u16,
    /// `Retry-After` header value.
    pub retry_after: Option<String>,
    /// `error.code`.
    pub code: &'static str,
}

#[derive(Default)]
struct State {
    base: String,
    catalog_app_id: String,
    users: HashMap<String, FakeUser>,
    /// user id → manager.
    managers: HashMap<String, FakeManager>,
    /// user id → installation id.
    installed: HashMap<String, String>,
    requests: Vec<Recorded>,
    /// Strictness violations (a test asserts none).
    violations: Vec<String>,
    mails: Vec<Value>,
    /// When each accepted `sendMail` arrived, to measure the pace per mailbox.
    mail_times: Vec<std::time::Instant>,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    delay: Option<Duration>,
    /// Keep no request records (the benchmark).
    skip_recording: bool,
    /// The Teams endpoints' token bucket: (requests per second, tokens, last refill).
    teams_limit: Option<(f64, f64, std::time::Instant)>,
    /// 429s answered by the Teams limit.
    teams_throttled: u64,
    /// Requests per route, recorded or not.
    route_counts: HashMap<&'static str, u64>,
}

/// The routes Graph's Microsoft Teams service limits apply to.
pub const TEAMS_ROUTES: &[&str] = &["installed_apps", "install", "chat"];

/// A running fake Graph.
#[derive(Clone)]
pub struct FakeGraph {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeGraph {
    /// Starts on `127.0.0.1:0`; `catalog_app_id` is the Teams app's catalog id.
    pub async fn start(catalog_app_id: &str) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake graph");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            base: format!("http://{addr}"),
            catalog_app_id: catalog_app_id.to_string(),
            ..Default::default()
        }));
        let app = Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(state, method, uri, headers, body).await }
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph { addr, state }
    }

    /// `REMINDERS_GRAPH_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a user (by UPN); returns its object id.
    pub fn add_user(&self, upn: &str, language: Option<&str>) -> String {
        let id = format!("user-{}", uuid::Uuid::new_v4().simple());
        self.state.lock().unwrap().users.insert(
            upn.to_lowercase(),
            FakeUser {
                id: id.clone(),
                preferred_language: language.map(str::to_string),
                account_enabled: true,
                install_forbidden: false,
            },
        );
        id
    }

    /// Changes a user.
    pub fn update_user(&self, upn: &str, f: impl FnOnce(&mut FakeUser)) {
        f(self
            .state
            .lock()
            .unwrap()
            .users
            .get_mut(&upn.to_lowercase())
            .expect("known user"));
    }

    /// Gives a user (by UPN) a manager with this `mail` (`None`: a manager without a
    /// mailbox); returns the manager's object id.
    pub fn set_manager(&self, upn: &str, mail: Option<&str>) -> String {
        let id = format!("manager-{}", uuid::Uuid::new_v4().simple());
        let mut s = self.state.lock().unwrap();
        let user_id = s.users[&upn.to_lowercase()].id.clone();
        s.managers.insert(
            user_id,
            FakeManager {
                id: id.clone(),
                mail: mail.map(str::to_string),
                upn: mail
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{id}@contoso.com")),
            },
        );
        id
    }

    /// Marks the app as already installed for a user.
    pub fn preinstall(&self, upn: &str) {
        let mut s = self.state.lock().unwrap();
        let id = s.users[&upn.to_lowercase()].id.clone();
        s.installed.insert(id.clone(), format!("inst-{id}"));
    }

    /// The chat id (conversation id) Graph hands out for a user.
    pub fn chat_id_for(&self, upn: &str) -> String {
        let s = self.state.lock().unwrap();
        chat_id(&s.users[&upn.to_lowercase()].id)
    }

    /// Answers the next `times` requests of `route` with `status`.
    pub fn fail_next(
        &self,
        route: &'static str,
        status: u16,
        times: usize,
        retry_after: Option<&str>,
        code: &'static str,
    ) {
        let mut s = self.state.lock().unwrap();
        let q = s.faults.entry(route).or_default();
        for _ in 0..times {
            q.push_back(Fault {
                status,
                retry_after: retry_after.map(str::to_string),
                code,
            });
        }
    }

    /// Delays every answer.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Enforces the Teams service limit: `per_second` requests per second (burst of one
    /// second's worth) on the Teams routes, 429 with `Retry-After: 1` beyond.
    pub fn set_teams_rate_limit(&self, per_second: u32) {
        let rate = f64::from(per_second.max(1));
        self.state.lock().unwrap().teams_limit = Some((rate, rate, std::time::Instant::now()));
    }

    /// 429s answered by the Teams limit.
    pub fn teams_throttled(&self) -> u64 {
        self.state.lock().unwrap().teams_throttled
    }

    /// Requests received on `route` (counted even when not recording).
    pub fn count(&self, route: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .route_counts
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Keeps no request records (the benchmark: 30,000 tokens would weigh on the memory).
    pub fn set_recording(&self, on: bool) {
        self.state.lock().unwrap().skip_recording = !on;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests of one route.
    pub fn requests_to(&self, route: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.route == route)
            .collect()
    }

    /// Strictness violations seen.
    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// When each accepted `sendMail` arrived, in order.
    pub fn mail_times(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().mail_times.clone()
    }

    /// The `sendMail` bodies accepted, with the sender mailbox in `_sender`.
    pub fn mails(&self) -> Vec<Value> {
        self.state.lock().unwrap().mails.clone()
    }
}

fn chat_id(user_id: &str) -> String {
    format!("19:{user_id}_bot@unq.gbl.spaces")
}

/// Percent-decoding for paths and query values.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query as decoded pairs.
pub fn query_pairs(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"code": code, "message": message, "innerError": {"request-id": uuid::Uuid::new_v4()}}})),
    )
        .into_response()
}

async fn handle(
    state: Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = state.lock().unwrap().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let raw_path = uri.path().to_string();
    let segments: Vec<String> = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let query = uri.query().unwrap_or("").to_string();
    let q = query_pairs(&query);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let audience = authorization.as_deref().and_then(bearer_audience);
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let route: &'static str = match (method.as_str(), seg.as_slice()) {
        ("GET", ["v1.0", "users", _]) => "user",
        ("GET", ["v1.0", "users", _, "manager"]) => "manager",
        ("GET", ["v1.0", "users", _, "teamwork", "installedApps"]) => "installed_apps",
        ("POST", ["v1.0", "users", _, "teamwork", "installedApps"]) => "install",
        ("GET", ["v1.0", "users", _, "teamwork", "installedApps", _, "chat"]) => "chat",
        ("POST", ["v1.0", "users", _, "sendMail"]) => "send_mail",
        _ => "unknown",
    };

    let mut s = state.lock().unwrap();
    let mut record = Recorded {
        method: method.to_string(),
        route,
        path: segments.join("/"),
        query: query.clone(),
        audience: audience.clone(),
        authorization: authorization.clone(),
        body: json_body.clone(),
        status: 0,
    };
    let response = (|| {
        if audience.as_deref() != Some(GRAPH_AUDIENCE) {
            s.violations
                .push(format!("{route}: bearer audience {audience:?}"));
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        *s.route_counts.entry(route).or_insert(0) += 1;
        if TEAMS_ROUTES.contains(&route) {
            if let Some((rate, tokens, last)) = s.teams_limit {
                let now = std::time::Instant::now();
                let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
                if tokens < 1.0 {
                    s.teams_limit = Some((rate, tokens, now));
                    s.teams_throttled += 1;
                    let mut r = graph_error(
                        429,
                        "TooManyRequests",
                        "Too many requests. Please retry after some time.",
                    );
                    r.headers_mut().insert("retry-after", "1".parse().unwrap());
                    return r;
                }
                s.teams_limit = Some((rate, tokens - 1.0, now));
            }
        }
        if let Some(f) = s.faults.get_mut(route).and_then(|q| q.pop_front()) {
            let mut r = graph_error(f.status, f.code, "injected fault");
            if let Some(ra) = f.retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            return r;
        }
        match route {
            "user" => {
                let select = q.get("$select").map(String::as_str);
                if !user_select_ok(select) {
                    s.violations.push(format!("user: $select {select:?}"));
                    return graph_error(400, "BadRequest", "unexpected $select");
                }
                match s.users.get(&seg[2].to_lowercase()) {
                    // Graph quotes the UPN asked for, which callers must not log.
                    None => graph_error(404, "Request_ResourceNotFound", &format!("Resource '{}' does not exist or one of its queried reference-property objects are not present.", seg[2])),
                    Some(u) => {
                        let all = json!({
                            "id": u.id, "displayName": "Someone", "mail": seg[2], "userPrincipalName": seg[2],
                            "preferredLanguage": u.preferred_language, "accountEnabled": u.account_enabled,
                        });
                        // Only the selected fields, as Graph answers.
                        let selected: serde_json::Map<String, Value> = select
                            .unwrap_or_default()
                            .split(',')
                            .map(|f| (f.to_string(), all[f].clone()))
                            .collect();
                        axum::Json(Value::Object(selected)).into_response()
                    }
                }
            }
            "manager" => {
                if q.get("$select").map(String::as_str) != Some(MANAGER_SELECT) {
                    s.violations
                        .push(format!("manager: $select {:?}", q.get("$select")));
                    return graph_error(400, "BadRequest", "unexpected $select");
                }
                // Graph accepts an object id or a UPN here, but the project looks managers up
                // by the owner's object id only: the export's address may not be the
                // sign-in name (https://learn.microsoft.com/graph/api/user-list-manager).
                if seg[2].contains('@') {
                    s.violations.push(format!(
                        "manager: looked up by address {}, not object id",
                        seg[2]
                    ));
                }
                let key = seg[2].to_lowercase();
                let user_id = s.users.get(&key).map(|u| u.id.clone()).or_else(|| {
                    s.users
                        .values()
                        .find(|u| u.id == seg[2])
                        .map(|u| u.id.clone())
                });
                let Some(user_id) = user_id else {
                    return graph_error(404, "Request_ResourceNotFound", "Resource does not exist or one of its queried reference-property objects are not present.");
                };
                match s.managers.get(&user_id) {
                    None => graph_error(404, "Request_ResourceNotFound", "Resource 'manager' does not exist or one of its queried reference-property objects are not present."),
                    Some(m) => axum::Json(json!({
                        "@odata.context": format!("{}/v1.0/$metadata#directoryObjects(id,mail,displayName,userPrincipalName)/$entity", s.base),
                        "@odata.type": "#microsoft.graph.user",
                        "id": m.id, "mail": m.mail, "displayName": "The Manager", "userPrincipalName": m.upn,
                    }))
                    .into_response(),
                }
            }
            "installed_apps" => {
                let want_filter = format!("teamsApp/id eq '{}'", s.catalog_app_id);
                if q.get("$expand").map(String::as_str) != Some("teamsApp")
                    || q.get("$filter") != Some(&want_filter)
                {
                    s.violations.push(format!("installed_apps: query {query}"));
                    return graph_error(400, "BadRequest", "unexpected query");
                }
                let value: Vec<Value> = s
                    .installed
                    .get(seg[2])
                    .map(|inst| vec![json!({"id": inst, "teamsApp": {"id": s.catalog_app_id, "displayName": "Lookout reminders"}})])
                    .unwrap_or_default();
                axum::Json(json!({ "value": value })).into_response()
            }
            "install" => {
                let want = format!("{}/v1.0/appCatalogs/teamsApps/{}", s.base, s.catalog_app_id);
                let bind = json_body
                    .as_ref()
                    .and_then(|b| b.get("teamsApp@odata.bind"))
                    .and_then(Value::as_str);
                if bind != Some(want.as_str()) {
                    s.violations.push(format!("install: body {json_body:?}"));
                    return graph_error(400, "BadRequest", "teamsApp@odata.bind expected");
                }
                let Some(user) = s.users.values().find(|u| u.id == seg[2]).cloned() else {
                    return graph_error(404, "NotFound", "user");
                };
                if user.install_forbidden {
                    return graph_error(
                        403,
                        "Forbidden",
                        "The user does not have a license for Teams.",
                    );
                }
                if s.installed.contains_key(&user.id) {
                    return graph_error(409, "Conflict", "App is already installed.");
                }
                s.installed
                    .insert(user.id.clone(), format!("inst-{}", user.id));
                StatusCode::CREATED.into_response()
            }
            "chat" => match s.installed.get(seg[2]) {
                Some(inst) if inst == seg[5] => {
                    axum::Json(json!({"id": chat_id(seg[2])})).into_response()
                }
                _ => graph_error(404, "NotFound", "installation not found"),
            },
            "send_mail" => {
                let m = json_body.clone().unwrap_or(Value::Null);
                let ok = m["message"]["subject"]
                    .as_str()
                    .is_some_and(|x| !x.is_empty())
                    && m["message"]["body"]["contentType"] == "HTML"
                    && m["message"]["body"]["content"]
                        .as_str()
                        .is_some_and(|x| x.contains('<'))
                    && m["message"]["toRecipients"][0]["emailAddress"]["address"]
                        .as_str()
                        .is_some_and(|x| x.contains('@'))
                    // `ccRecipients`, when given: a non-empty list of addresses.
                    && m["message"].get("ccRecipients").is_none_or(|cc| {
                        cc.as_array().is_some_and(|list| {
                            !list.is_empty()
                                && list.iter().all(|r| {
                                    r["emailAddress"]["address"]
                                        .as_str()
                                        .is_some_and(|x| x.contains('@'))
                                })
                        })
                    });
                if !ok {
                    s.violations.push(format!("send_mail: body {m}"));
                    return graph_error(400, "ErrorInvalidRequest", "bad message");
                }
                let mut stored = m;
                stored["_sender"] = json!(seg[2]);
                s.mails.push(stored);
                s.mail_times.push(std::time::Instant::now());
                StatusCode::ACCEPTED.into_response()
            }
            _ => {
                s.violations
                    .push(format!("unknown route {method} {raw_path}"));
                graph_error(400, "BadRequest", "unknown route")
            }
        }
    })();
    record.status = response.status().as_u16();
    if !s.skip_recording {
        s.requests.push(record);
    }
    response
}
