//! A fake Microsoft Graph for the SharePoint source: site by path, the site's drives, the
//! file's driveItem, `:/content` answered with a 302 to a pre-authenticated download host
//! that refuses a bearer token (as the real one does), the simple upload, and faults
//! (throttling with Retry-After in seconds or as a date, 5xx, 403, a trickling download,
//! a held download).
//! <https://learn.microsoft.com/graph/api/driveitem-get-content>,
//! <https://learn.microsoft.com/graph/api/site-getbypath>.

use crate::fake_identity::{bearer_audience, FakeIdentity};
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lookout_reminders::azure;
use lookout_reminders::config::{AzureSettings, DeliverySettings, Env, GraphSettings};
use lookout_reminders::graph::{GraphClient, GraphLimits};
use lookout_reminders::http::{RetryPolicy, Waits};
use lookout_reminders::source::SharePointSource;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const GRAPH: &str = "https://graph.microsoft.com";

/// The source's own download deadline (`source::sharepoint::DOWNLOAD_DEADLINE`, 10 min).
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(10 * 60);

fn env_of(pairs: Vec<(String, String)>) -> Env {
    Env(pairs.into_iter().collect())
}

pub const SITE_ID: &str = "contoso.sharepoint.com,2f1e2d3c-0000-4000-8000-000000000001,7a6b5c4d-0000-4000-8000-000000000002";

#[derive(Default)]
pub struct GraphState {
    /// Raw request paths with the audience of their token.
    pub requests: Vec<(String, Option<String>)>,
    /// Answer the next N Graph calls with 429 + Retry-After: 1.
    pub throttle: usize,
    /// Answer the next N Graph calls with 503 (no Retry-After).
    pub unavailable: usize,
    /// Answer every call with 403.
    pub forbidden: bool,
    /// Answer the next N Graph calls with 429 + Retry-After as an HTTP date two seconds on.
    pub throttle_until_date: usize,
    /// Answer the next N Graph calls with 408 Request Timeout.
    pub request_timeout: usize,
    /// Answer the next N Graph calls with 501 Not Implemented.
    pub not_implemented: usize,
    /// The download host answers with this status instead of the file.
    pub download_status: Option<u16>,
    /// The download host sends one byte every 100 ms, forever.
    pub download_trickles: bool,
    /// The download port.
    pub download_port: u16,
    /// While set, the download host holds each download until released (the export is
    /// "being fetched": a run is at a known point); see [`FakeSharePoint::hold_downloads`].
    /// and a permit added per held download.
    pub hold: Option<(
        tokio::sync::watch::Receiver<bool>,
        Arc<tokio::sync::Semaphore>,
    )>,
    /// Download requests: whether an Authorization header came along.
    pub downloads: Vec<bool>,
    pub file: Vec<u8>,
    /// Uploads accepted (`PUT …:/content`): decoded path, content type, body.
    pub uploads: Vec<(String, String, Vec<u8>)>,
    /// Answer the next N uploads with 500 (after the auth check, like Graph).
    pub upload_failures: usize,
    /// Refuse uploads with 403, as Graph does for a `Sites.Selected` read-only grant.
    pub upload_forbidden: bool,
}

pub struct FakeSharePoint {
    /// The Graph base URL (`REMINDERS_GRAPH_BASE_URL`).
    pub base: String,
    /// What it answers and what it saw; tests set faults here directly.
    pub state: Arc<Mutex<GraphState>>,
}

fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn graph(
    state: axum::extract::State<Arc<Mutex<GraphState>>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let audience = bearer_audience(auth);
    let raw = uri.path().to_string();
    let mut s = state.lock().unwrap();
    s.requests.push((raw.clone(), audience.clone()));
    if audience.as_deref() != Some(GRAPH) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        let mut r = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "activityLimitReached",
            "throttled",
        );
        r.headers_mut().insert("retry-after", "1".parse().unwrap());
        return r;
    }
    if s.throttle_until_date > 0 {
        s.throttle_until_date -= 1;
        let mut r = graph_error(
            StatusCode::TOO_MANY_REQUESTS,
            "activityLimitReached",
            "throttled",
        );
        let at = std::time::SystemTime::now() + Duration::from_secs(2);
        r.headers_mut()
            .insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        return r;
    }
    if s.request_timeout > 0 {
        s.request_timeout -= 1;
        return graph_error(StatusCode::REQUEST_TIMEOUT, "timeout", "request timed out");
    }
    if s.not_implemented > 0 {
        s.not_implemented -= 1;
        return graph_error(
            StatusCode::NOT_IMPLEMENTED,
            "notSupported",
            "not implemented",
        );
    }
    if s.unavailable > 0 {
        s.unavailable -= 1;
        return graph_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            "try later",
        );
    }
    if s.forbidden {
        return graph_error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Either scp or roles claim need to be present in the token.",
        );
    }
    let path = decode(&raw);
    if method == Method::PUT {
        return graph_upload(&mut s, &path, &headers, body);
    }
    if method != Method::GET {
        return graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            "method not allowed",
        );
    }
    let file_path = "/v1.0/drives/b!docs/root:/General/Power Automate/issues-export1.xlsx";
    match path.as_str() {
        "/v1.0/sites/contoso.sharepoint.com:/sites/Mobility" => axum::Json(serde_json::json!({"id": SITE_ID, "name": "Mobility"})).into_response(),
        p if p == format!("/v1.0/sites/{SITE_ID}/drive") => {
            axum::Json(serde_json::json!({"id": "b!docs", "name": "Documents", "driveType": "documentLibrary"})).into_response()
        }
        p if p == format!("/v1.0/sites/{SITE_ID}/drives") => axum::Json(serde_json::json!({"value": [
            {"id": "b!docs", "name": "Documents", "driveType": "documentLibrary"},
            {"id": "b!exports", "name": "Lookout Exports", "driveType": "documentLibrary"}
        ]}))
        .into_response(),
        p if p == file_path => axum::Json(serde_json::json!({
            "id": "01ABC", "name": "issues-export1.xlsx", "size": s.file.len(),
            "eTag": "\"{1234},5\"", "lastModifiedDateTime": "2024-03-08T06:00:00Z", "file": {"mimeType": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
        }))
        .into_response(),
        p if p == format!("{file_path}:/content") => {
            // Graph answers with a 302 to a pre-authenticated URL on another host.
            let location = format!("http://127.0.0.1:{}/download/01ABC?tempauth=pre-authenticated", s.download_port);
            Response::builder().status(StatusCode::FOUND).header("location", location).body(Body::empty()).unwrap()
        }
        p if p.starts_with("/v1.0/sites/") && p.contains(':') => graph_error(StatusCode::NOT_FOUND, "itemNotFound", "Requested site could not be found"),
        _ => graph_error(StatusCode::NOT_FOUND, "itemNotFound", "The resource could not be found."),
    }
}

/// `PUT /drives/{drive}/root:/{path}:/content`, the simple upload
/// (<https://learn.microsoft.com/graph/api/driveitem-put-content>): a known drive, a path
/// ending `:/content`, a body of at most 250 MB; answers 201 with the driveItem and its
/// `webUrl` (the SharePoint address of the file).
fn graph_upload(
    s: &mut GraphState,
    path: &str,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(item) = path
        .strip_prefix("/v1.0/drives/b!docs/root:/")
        .and_then(|p| p.strip_suffix(":/content"))
    else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "The resource could not be found.",
        );
    };
    if item.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid path");
    }
    if body.len() > 250 << 20 {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "maxFileSizeExceeded",
            "too large",
        );
    }
    if s.upload_forbidden {
        return graph_error(StatusCode::FORBIDDEN, "accessDenied", "Access denied");
    }
    if s.upload_failures > 0 {
        s.upload_failures -= 1;
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "injected",
        );
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    s.uploads
        .push((path.to_string(), content_type, body.to_vec()));
    let name = item.rsplit('/').next().unwrap_or(item);
    let web_url = format!(
        "https://contoso.sharepoint.com/sites/Mobility/Shared%20Documents/{}",
        item.replace(' ', "%20")
    );
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "id": "01PAGE", "name": name, "size": body.len(), "webUrl": web_url,
            "file": {"mimeType": "text/html"}
        })),
    )
        .into_response()
}

async fn download(
    state: axum::extract::State<Arc<Mutex<GraphState>>>,
    headers: HeaderMap,
) -> Response {
    let hold = {
        let s = state.lock().unwrap();
        s.hold.clone()
    };
    if let Some((mut released, held)) = hold {
        held.add_permits(1);
        let _ = released.wait_for(|r| *r).await;
    }
    let mut s = state.lock().unwrap();
    let with_auth = headers.contains_key("authorization");
    s.downloads.push(with_auth);
    if with_auth {
        // The real download host rejects bearer tokens it did not issue.
        return (
            StatusCode::BAD_REQUEST,
            "Authorization header not allowed on a pre-authenticated URL",
        )
            .into_response();
    }
    if let Some(status) = s.download_status {
        return (
            StatusCode::from_u16(status).unwrap(),
            "the pre-authenticated URL has expired",
        )
            .into_response();
    }
    if s.download_trickles {
        // Never silent long enough for a read timeout, never done.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((
                Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"x")),
                (),
            ))
        });
        return Response::new(Body::from_stream(trickle));
    }
    (StatusCode::OK, s.file.clone()).into_response()
}

impl FakeSharePoint {
    /// A fake Graph (site, drives, item, `:/content` redirect) and download host serving `file`.
    pub async fn start(file: Vec<u8>) -> FakeSharePoint {
        let state = Arc::new(Mutex::new(GraphState {
            file,
            ..Default::default()
        }));
        let dl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        state.lock().unwrap().download_port = dl.local_addr().unwrap().port();
        let dl_app = Router::new()
            .route("/download/{id}", axum::routing::get(download))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(dl, dl_app).await.unwrap() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(graph).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeSharePoint { base, state }
    }

    /// The settings of the SharePoint source on this fake with the shared fake identity's
    /// managed-identity settings, then `extra` (later settings win): one list for the
    /// in-process source, a spawned handler and a whole run's wiring.
    pub async fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let identity = FakeIdentity::shared().await;
        let mut env = identity.env();
        for (k, v) in [
            ("REMINDERS_SOURCE", "sharepoint"),
            ("REMINDERS_CREDENTIAL", "managed_identity"),
            ("REMINDERS_GRAPH_BASE_URL", self.base.as_str()),
            (
                "REMINDERS_SHAREPOINT_SITE_URL",
                "https://contoso.sharepoint.com/sites/Mobility",
            ),
            (
                "REMINDERS_SHAREPOINT_FILE_PATH",
                "General/Power Automate/issues-export1.xlsx",
            ),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            env.push((k.into(), v.into()));
        }
        env
    }

    /// Azure settings for the SharePoint source on this fake, with short retries, plus `extra`.
    pub async fn settings(&self, extra: &[(&str, &str)]) -> AzureSettings {
        let mut with_retries = vec![
            ("REMINDERS_AZURE_MAX_RETRIES", "3"),
            ("REMINDERS_AZURE_RETRY_DELAY_MS", "20"),
        ];
        with_retries.extend_from_slice(extra);
        let pairs = self.env(&with_retries).await;
        AzureSettings::from_env(&env_of(pairs)).unwrap()
    }

    /// Graph at this fake, with the default scope.
    pub fn graph_settings(&self) -> GraphSettings {
        GraphSettings::at(&self.base).unwrap()
    }

    /// A Graph client at this fake with the credential of `settings`, as the wiring builds it.
    pub fn graph_client(&self, settings: &AzureSettings) -> GraphClient {
        GraphClient::new(
            &self.graph_settings(),
            Arc::new(azure::CredentialTokens::from_settings(settings).unwrap()),
            SharePointSource::client(settings).unwrap(),
            GraphLimits::from_settings(&DeliverySettings::default()),
        )
    }

    /// A SharePoint source on this fake.
    pub async fn source(&self, extra: &[(&str, &str)]) -> SharePointSource {
        SharePointSource::from_settings(
            &self.settings(extra).await,
            &self.graph_settings(),
            50 << 20,
        )
        .unwrap()
    }

    /// A source built by hand, with a download deadline of `deadline`.
    pub async fn source_with_deadline(&self, deadline: Duration) -> SharePointSource {
        self.source_built(deadline, Waits::default()).await
    }

    /// A source whose waits between attempts (Retry-After, backoff) are `waits`: a test
    /// passes [`Waits::recorded`] and asserts what was waited for, without the clock.
    pub async fn source_waiting(&self, waits: Waits) -> SharePointSource {
        self.source_built(DOWNLOAD_DEADLINE, waits).await
    }

    async fn source_built(&self, deadline: Duration, waits: Waits) -> SharePointSource {
        let settings = self.settings(&[]).await;
        let client = azure::http_client_builder(&settings)
            .unwrap()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        SharePointSource::new(
            self.graph_client(&settings),
            client,
            settings.sharepoint().unwrap(),
            50 << 20,
            RetryPolicy {
                waits,
                ..SharePointSource::retry_policy(&settings)
            },
            deadline,
        )
    }

    /// From now on each download is held until the returned sender sends `true`.
    pub fn hold_downloads(&self) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.state.lock().unwrap().hold = Some((rx, Arc::new(tokio::sync::Semaphore::new(0))));
        tx
    }

    /// Returns once `n` downloads (in all) are being held. The bound is a safety net.
    pub async fn wait_downloads_held(&self, n: u32) {
        let held = (self.state.lock().unwrap().hold.clone())
            .expect("hold_downloads() first")
            .1;
        let permits = tokio::time::timeout(Duration::from_secs(120), held.acquire_many(n))
            .await
            .expect("the downloads never reached the hold point within 120 s")
            .unwrap();
        // Given back: a later call waits for a total, not for n more.
        drop(permits);
    }

    /// The settings a spawned handler needs to read its export from this fake (with the
    /// shared fake identity's managed-identity settings).
    pub async fn app_env(&self) -> Vec<(String, String)> {
        self.env(&[]).await
    }

    /// The Graph paths requested, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}
