//! The custom handler's HTTP server: routes, the per-invocation span, start-up and graceful
//! shutdown. [`app`] builds the router (tested with `oneshot`); [`Server`] binds and runs it;
//! [`serve`] is what `lookout-reminders serve` calls.

use super::http::{self, ApiResponse, HttpCall};
use super::payload::{InvokeRequest, InvokeResponse, WrappedHttpRequest};
use super::state::AppState;
use super::timer;
use crate::app::{Wiring, WiringError};
use crate::config::Config;
use crate::telemetry;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tracing::{debug, info, warn, Instrument};

/// Host payloads (timer, wrapped HTTP) are small JSON; this bounds them.
const HOST_PAYLOAD_LIMIT: usize = 256 * 1024;

/// How long a shutdown waits for the run in progress to stop between batches.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// The server could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Neither port setting is set.
    #[error("setting FUNCTIONS_CUSTOMHANDLER_PORT is required to serve (the Functions host sets it; or set REMINDERS_PORT)")]
    NoPort,
    /// The port setting is not a port number.
    #[error("setting {name}: invalid value '{value}': expected a port number")]
    BadPort {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The run's parts could not be built from the settings.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// The address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// The host's invocation id of the request being served (absent off the host).
#[derive(Clone, Debug, Default)]
pub struct InvocationId(pub Option<String>);

/// The path the caller used, normalised (lower-case, no trailing slash), before any route
/// prefix other than `api` is mapped onto [`http::ROUTE`].
#[derive(Clone, Debug)]
pub(crate) struct CalledPath(pub String);

/// The path to route a request on, and the normalised path the caller used.
///
/// Azure Functions routes are case-insensitive and the host forwards the path as the caller
/// typed it (`/api/Function_Http/`), so the path is lower-cased (our routes carry no
/// case-sensitive parameters) and a trailing slash dropped. A forwarded HTTP call under
/// another route prefix (`routePrefix` in `host.json`, e.g. `/reminders/function_http`) is
/// routed as `/api/function_http`; `/function_http` alone is left to [`normalise_request`],
/// which tells the wrapped form from a call forwarded with an empty prefix.
pub(crate) fn normalise_path(path: &str) -> (String, String) {
    let mut called = path.to_ascii_lowercase();
    while called.len() > 1 && called.ends_with('/') {
        called.pop();
    }
    let routed = if called != WRAPPED_HTTP_ROUTE && called.ends_with(WRAPPED_HTTP_ROUTE) {
        http::ROUTE.to_string()
    } else {
        called.clone()
    };
    (routed, called)
}

/// Rewrites the request's path to its [`normalise_path`] form before routing (the query is
/// kept as sent) and records the [`CalledPath`].
///
/// With `extensions.http.routePrefix: ""` in `host.json` the host forwards HTTP calls to
/// `/function_http`, the wrapped form's path too. The wrapped form is always a `POST` whose
/// body is the host's invocation payload (a JSON object with `Data`), which no forwarded
/// call's body can be (a run request has no `Data` field), so the body tells them apart:
/// any other request at `/function_http` is routed as a forwarded call.
async fn normalise_request(mut req: Request) -> Result<Request, Response> {
    let (mut routed, called) = normalise_path(req.uri().path());
    if routed == WRAPPED_HTTP_ROUTE {
        if req.method() == Method::POST {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, HOST_PAYLOAD_LIMIT)
                .await
                .map_err(|_| {
                    ApiResponse::error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the request body is unreadable or over the limit of {HOST_PAYLOAD_LIMIT} bytes"
                        ),
                    )
                    .into_response()
                })?;
            if !is_invocation_payload(&bytes) {
                routed = http::ROUTE.to_string();
            }
            req = Request::from_parts(parts, axum::body::Body::from(bytes));
        } else {
            routed = http::ROUTE.to_string();
        }
    }
    if routed != req.uri().path() {
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{routed}?{q}"),
            None => routed,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req.extensions_mut().insert(CalledPath(called));
    Ok(req)
}

/// Whether a body is the host's invocation payload (`{"Data": {...}, "Metadata": {...}}`).
fn is_invocation_payload(body: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<Value>(body),
        Ok(Value::Object(map)) if map.contains_key("Data")
    )
}

/// The wrapped HTTP function's route (the host's `POST /<function name>`).
const WRAPPED_HTTP_ROUTE: &str = "/function_http";

/// The router: `GET /` readiness, `POST /function_timer`, `/api/function_http` (forwarded)
/// and `POST /function_http` (wrapped), each request in its invocation span. Paths are
/// normalised first ([`normalise_path`]): a layer on the routes would run after routing,
/// so the routes sit behind an outer router whose only service is the rewrite.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .route("/", get(ready))
        .route(
            "/function_timer",
            post(timer_invocation)
                .fallback(not_allowed_post)
                .layer(DefaultBodyLimit::max(HOST_PAYLOAD_LIMIT)),
        )
        .route(
            http::ROUTE,
            get(http_forwarded)
                .post(http_forwarded)
                .fallback(not_allowed_get_post)
                .layer(DefaultBodyLimit::max(http::MAX_BODY_BYTES)),
        )
        .route(
            WRAPPED_HTTP_ROUTE,
            post(http_wrapped)
                .fallback(not_allowed_post)
                .layer(DefaultBodyLimit::max(HOST_PAYLOAD_LIMIT)),
        )
        .fallback(any(not_found))
        .layer(middleware::from_fn(invocation))
        .with_state(state);
    Router::new().fallback_service(middleware::map_request(normalise_request).layer(routes))
}

/// Opens the invocation span and logs the start and end of each invocation. Only the path
/// is logged: the query may hold the function key (`code`), and headers are never logged.
async fn invocation(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/" {
        // The host's readiness and liveness pings: cheap and quiet.
        return next.run(req).await;
    }
    // A plain fn, not a closure: a closure borrowing the request would be held across the
    // await below, and `&Request` is not `Send`.
    let id = header_value(
        &req,
        telemetry::INVOCATION_ID_HEADER,
        telemetry::valid_invocation_id,
    );
    let host_version = header_value(
        &req,
        telemetry::HOST_VERSION_HEADER,
        telemetry::valid_host_version,
    );
    let function = path
        .trim_start_matches("/api/")
        .trim_start_matches('/')
        .to_string();
    let span = telemetry::invocation_span(id.as_deref(), &function, host_version.as_deref());
    req.extensions_mut().insert(InvocationId(id));
    let method = req.method().clone();
    async move {
        let started = Instant::now();
        info!(method = %method, path = %path, "invocation started");
        let res = next.run(req).await;
        info!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "invocation done"
        );
        res
    }
    .instrument(span)
    .await
}

fn header_value(req: &Request, name: &str, valid: fn(&str) -> bool) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| valid(v))
        .map(str::to_string)
}

async fn ready() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> ApiResponse {
    debug!(path = uri.path(), "no such route");
    ApiResponse::error(
        StatusCode::NOT_FOUND,
        format!("no function at {}", uri.path()),
    )
}

async fn not_allowed_post(method: Method) -> ApiResponse {
    ApiResponse::method_not_allowed(&method, "POST")
}

async fn not_allowed_get_post(method: Method) -> ApiResponse {
    ApiResponse::method_not_allowed(&method, "GET or POST")
}

/// The answer to a body the server refused to read; `limit` is the route's body limit.
fn rejection_response(rejection: &BytesRejection, limit: usize) -> ApiResponse {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiResponse::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes"),
        )
    } else {
        ApiResponse::error(
            rejection.status(),
            format!("cannot read the request body: {}", rejection.body_text()),
        )
    }
}

async fn timer_invocation(
    State(state): State<AppState>,
    Extension(id): Extension<InvocationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let res = rejection_response(&rejection, HOST_PAYLOAD_LIMIT);
            let logs = vec![res.json()["error"].as_str().unwrap_or_default().to_string()];
            let answer = InvokeResponse {
                outputs: Map::new(),
                logs,
                return_value: Value::Null,
            };
            return (res.status, Json(answer)).into_response();
        }
    };
    let (status, answer) = timer::invoke(&state, &body, id.0).await;
    (status, Json(answer)).into_response()
}

async fn http_forwarded(
    State(state): State<AppState>,
    Extension(id): Extension<InvocationId>,
    Extension(CalledPath(path)): Extension<CalledPath>,
    method: Method,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> ApiResponse {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            warn!(status = rejection.status().as_u16(), "request body refused");
            return rejection_response(&rejection, http::MAX_BODY_BYTES);
        }
    };
    let query = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let call = HttpCall {
        method,
        query,
        body: body.to_vec(),
        invocation_id: id.0,
        path,
    };
    http::handle(&state, call).await
}

/// The non-forwarded form: the request arrives inside `Data.req` and the answer goes in
/// `Outputs.res`. Always 200 to the host; the caller's status is `res.statusCode`.
async fn http_wrapped(
    State(state): State<AppState>,
    Extension(id): Extension<InvocationId>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let res = match body {
        Err(rejection) => rejection_response(&rejection, HOST_PAYLOAD_LIMIT),
        Ok(body) => match serde_json::from_slice::<InvokeRequest>(&body)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                p.binding::<WrappedHttpRequest>("req")?
                    .ok_or_else(|| "Data.req is missing".to_string())
            }) {
            Err(e) => ApiResponse::error(
                StatusCode::BAD_REQUEST,
                format!("not the host's HTTP invocation payload: {e}"),
            ),
            Ok(req) => {
                let method = Method::from_bytes(req.method.trim().to_uppercase().as_bytes())
                    .unwrap_or(Method::GET);
                let query = req
                    .query
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.first()?.to_string())))
                    .collect();
                // The header copy inside the payload is a fallback when the host's own
                // header is absent.
                let invocation_id = id.0.or_else(|| {
                    req.header("X-Azure-Functions-InvocationId")
                        .filter(|v| telemetry::valid_invocation_id(v))
                        .map(str::to_string)
                });
                // The caller's path is in the original URL; the host called us on its own.
                let path = url::Url::parse(&req.url)
                    .map(|u| normalise_path(u.path()).1)
                    .unwrap_or_else(|_| http::ROUTE.to_string());
                let call = HttpCall {
                    method,
                    query,
                    body: req.body_bytes(),
                    invocation_id,
                    path,
                };
                http::handle(&state, call).await
            }
        },
    };
    let answer = InvokeResponse {
        outputs: Map::from_iter([("res".to_string(), json!(res.into_wrapped()))]),
        logs: Vec::new(),
        return_value: Value::Null,
    };
    (StatusCode::OK, Json(answer)).into_response()
}

/// The port from `FUNCTIONS_CUSTOMHANDLER_PORT` (set by the host), else `REMINDERS_PORT`.
pub(crate) fn port_from_env(env: &crate::config::Env) -> Result<u16, ServeError> {
    for name in ["FUNCTIONS_CUSTOMHANDLER_PORT", "REMINDERS_PORT"] {
        if let Some(v) = env.get(name) {
            return v.parse().map_err(|_| ServeError::BadPort {
                name,
                value: v.to_string(),
            });
        }
    }
    Err(ServeError::NoPort)
}

/// A bound server, not yet serving (port 0 gives a free port, for tests).
pub(crate) struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Builds the dependencies and binds `127.0.0.1:port`.
    pub async fn bind(config: Config, port: u16) -> Result<Self, ServeError> {
        // Built once for the process: every run and every per-request override shares its
        // credential, limits and Graph client.
        let wiring = Wiring::new(config);
        let deps = wiring.deps(None)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = AppState::new(wiring, deps, CancellationToken::new());
        Ok(Self { listener, state })
    }

    /// Serves until `signal` resolves, then stops accepting, asks the run in progress to
    /// stop after its current batch (it records what it sent and releases the lock) and
    /// waits for it, at most [`SHUTDOWN_GRACE`].
    pub(crate) async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server { listener, state } = self;
        log_start(&state, listener.local_addr().ok());
        let cancel = state.cancel_token().clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            signal.await;
            cancel.cancel();
            // Logged once the run is told, so a reader of the log (tests too) knows it is.
            info!("shutdown requested: no new invocations; a run in progress stops after its current batch");
            let _ = stopping_tx.send(());
        };
        let serving = axum::serve(listener, app(state.clone())).with_graceful_shutdown(shutdown);
        let grace_over = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = serving => r.map_err(ServeError::Serve)?,
            () = grace_over => warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "requests still open after the shutdown grace; exiting"),
        }
        if !state.drain(SHUTDOWN_GRACE).await {
            warn!("a run did not stop within the shutdown grace; its lock will expire");
        }
        info!("custom handler stopped");
        Ok(())
    }
}

fn log_start(state: &AppState, addr: Option<SocketAddr>) {
    let c = state.config();
    let d = state.deps();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        address = %addr.map(|a| a.to_string()).unwrap_or_default(),
        source = %d.source.describe(),
        ledger = %d.ledger.describe(),
        channel = %d.notifier.describe(),
        credential = %c.azure.describe_credential(),
        allowed_domains = %if c.rules.allowed_domains.is_empty() { "(any)".to_string() } else { c.rules.allowed_domains.join(",") },
        time_zone = %c.rules.time_zone,
        grace_days = c.rules.grace_days,
        remind_every_days = c.cadence.remind_every_days,
        daily_in_last_days = c.cadence.daily_in_last_days,
        concurrency = c.delivery.concurrency,
        max_owners_per_run = c.delivery.max_owners_per_run,
        language = %c.message.default_language,
        verbose = c.verbose,
        log_format = telemetry::LogFormat::from_env().as_str(),
        "custom handler ready"
    );
}

/// Resolves on SIGTERM (the host / platform stopping us) or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves the custom handler on `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` (or
/// `REMINDERS_PORT`) until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let port = port_from_env(&crate::config::Env::from_process())?;
    let server = Server::bind(config, port).await?;
    server.run_until_stopped(shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state(dir: &std::path::Path) -> AppState {
        let export = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/issues-export.csv");
        let env = Env([
            ("REMINDERS_SOURCE", "local"),
            ("REMINDERS_EXPORT_PATH", export),
            (
                "REMINDERS_STATE_DIR",
                &dir.join("state").display().to_string(),
            ),
            (
                "REMINDERS_OUTBOX_DIR",
                &dir.join("outbox").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect());
        let config = Config::from_env_map(&env).unwrap();
        let wiring = crate::app::Wiring::new(config);
        let deps = wiring.deps(None).unwrap();
        AppState::new(wiring, deps, CancellationToken::new())
    }

    async fn call(state: &AppState, req: axum::http::Request<Body>) -> (StatusCode, Value) {
        let res = app(state.clone()).oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn post(uri: &str, body: &str) -> axum::http::Request<Body> {
        axum::http::Request::post(uri)
            .header("content-type", "application/json")
            .header(
                "x-azure-functions-invocationid",
                "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11",
            )
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_readiness_probe_answers_ok() {
        let dir = tempfile::tempdir().unwrap();
        let res = app(state(dir.path()))
            .oneshot(axum::http::Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forwarded_dry_run_answers_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let (status, body) = call(
            &state(dir.path()),
            post(http::ROUTE, r#"{"dryRun": true, "asOf": "2024-03-07"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["counts"]["planned"], 23);
        assert_eq!(
            body["invocation_id"],
            "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wrapped_form_answers_in_outputs_res() {
        let dir = tempfile::tempdir().unwrap();
        let payload = json!({
            "Data": { "req": { "Url": "http://localhost:7071/api/function_http", "Method": "POST", "Query": {},
                "Headers": { "Content-Type": ["application/json"] }, "Params": {}, "Identities": [],
                "Body": "{\"dryRun\":true,\"asOf\":\"2024-03-07\",\"bogus\":1}" } },
            "Metadata": {}
        });
        let (status, body) = call(
            &state(dir.path()),
            post("/function_http", &payload.to_string()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Outputs"]["res"]["statusCode"], 400);
        let inner: Value =
            serde_json::from_str(body["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert!(
            inner["error"].as_str().unwrap().contains("bogus"),
            "{inner}"
        );
    }

    /// `extensions.http.routePrefix: ""`: the host forwards the caller's request to
    /// `/function_http` as sent, the wrapped form's path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_an_empty_route_prefix_forwarded_calls_at_the_bare_route_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        // The host's forwarded copy of `GET /function_http?code=…` (health).
        let get = axum::http::Request::get("/function_http?code=k")
            .header(
                "x-azure-functions-invocationid",
                "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11",
            )
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&s, get).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
        let get = axum::http::Request::get("/Function_Http/?runId=no-such-run")
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&s, get).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body["error"].as_str().unwrap().contains("no-such-run"));
        // A forwarded POST: the caller's run request, answered as a report, not refused as
        // a malformed invocation payload.
        let (status, body) = call(
            &s,
            post(
                "/function_http?code=k",
                r#"{"dryRun": true, "asOf": "2024-03-07"}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["counts"]["planned"], 23, "{body}");
        assert!(body.get("Outputs").is_none(), "{body}");
        // A forwarded body with an unknown field is the forwarded route's 400, said plainly.
        let (status, body) = call(&s, post("/function_http", r#"{"bogus": 1}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().contains("bogus"), "{body}");
        assert!(body.get("Outputs").is_none(), "{body}");
        // The wrapped payload at the same path is still the wrapped form.
        let payload = json!({
            "Data": { "req": { "Url": "http://localhost:7071/function_http", "Method": "GET", "Query": {},
                "Headers": {}, "Params": {}, "Identities": [], "Body": "" } },
            "Metadata": {}
        });
        let (status, body) = call(&s, post("/function_http", &payload.to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["Outputs"]["res"]["statusCode"], 200, "{body}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_method_is_405_and_an_unknown_path_404() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let put = axum::http::Request::put(http::ROUTE)
            .body(Body::empty())
            .unwrap();
        let (status, body) = call(&s, put).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body["error"].as_str().unwrap().contains("PUT"), "{body}");
        let get = axum::http::Request::get("/function_timer")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&s, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
        let get = axum::http::Request::get("/nope")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&s, get).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_over_the_cap_is_413() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!(
            r#"{{"only": ["{}@x.com"]}}"#,
            "a".repeat(http::MAX_BODY_BYTES)
        );
        let (status, body) = call(&state(dir.path()), post(http::ROUTE, &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    }

    #[test]
    fn paths_are_lower_cased_and_lose_a_trailing_slash_and_other_prefixes_map_to_the_route() {
        let n = |p: &str| normalise_path(p);
        let same = |p: &str| (p.to_string(), p.to_string());
        assert_eq!(n("/api/function_http"), same("/api/function_http"));
        assert_eq!(n("/API/Function_Http/"), same("/api/function_http"));
        assert_eq!(n("/function_timer//"), same("/function_timer"));
        assert_eq!(n("/Function_Http"), same("/function_http"));
        assert_eq!(n("/"), same("/"));
        assert_eq!(
            n("/Reminders/function_http/"),
            (
                "/api/function_http".to_string(),
                "/reminders/function_http".to_string()
            )
        );
        assert_eq!(n("/api/xfunction_http"), same("/api/xfunction_http"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_route_in_another_case_or_with_a_trailing_slash_is_served_with_its_query() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        for uri in [
            "/API/Function_Http",
            "/api/function_http/",
            "/Api/FUNCTION_HTTP/",
        ] {
            let get = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            let (status, body) = call(&s, get).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            assert_eq!(body["status"], "ok", "{uri}: {body}");
            // The query survives the rewrite: a run id is looked up, not health answered.
            let get = axum::http::Request::get(format!("{uri}?runId=no-such-run&code=k"))
                .body(Body::empty())
                .unwrap();
            let (status, body) = call(&s, get).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
            assert!(body["error"].as_str().unwrap().contains("no-such-run"));
        }
        // The timer's route too: a GET reaches it (405), not the 404 fallback.
        let get = axum::http::Request::get("/Function_Timer/")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&s, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_third_dry_run_at_once_is_429_with_retry_after_and_a_freed_place_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        // Two dry runs in progress, held here for as long as the test needs.
        let first = s.dry_run_slot().unwrap();
        let _second = s.dry_run_slot().unwrap();
        assert!(s.dry_run_slot().is_none());
        let body = r#"{"dryRun": true, "asOf": "2024-03-07"}"#;
        let res = app(s.clone())
            .oneshot(post(http::ROUTE, body))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["retry-after"], "5");
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("2 dry runs are already in progress"),
            "{json}"
        );
        drop(first);
        let (status, body) = call(&s, post(http::ROUTE, body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["counts"]["planned"], 23);
        // The finished run gave its place back.
        let third = s.dry_run_slot();
        assert!(third.is_some());
    }

    #[test]
    fn the_port_comes_from_the_hosts_setting_first() {
        let env = |pairs: &[(&str, &str)]| {
            Env(pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect())
        };
        assert_eq!(
            port_from_env(&env(&[
                ("FUNCTIONS_CUSTOMHANDLER_PORT", "7071"),
                ("REMINDERS_PORT", "1")
            ]))
            .unwrap(),
            7071
        );
        assert_eq!(
            port_from_env(&env(&[("REMINDERS_PORT", "8080")])).unwrap(),
            8080
        );
        assert!(matches!(port_from_env(&env(&[])), Err(ServeError::NoPort)));
        let err = port_from_env(&env(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "http")])).unwrap_err();
        assert!(
            err.to_string().contains("FUNCTIONS_CUSTOMHANDLER_PORT"),
            "{err}"
        );
    }
}
