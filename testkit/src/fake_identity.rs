//! A fake App Service managed-identity endpoint (`IDENTITY_ENDPOINT` / `IDENTITY_HEADER`),
//! so the real `azure_identity::ManagedIdentityCredential` gets tokens in tests.
//!
//! It answers `GET ?api-version=2019-08-01&resource=…[&client_id=…]` like Azure Functions
//! does, requires the `x-identity-header` secret, records every request, and mints an
//! unsigned JWT whose `aud` is the resource asked for and whose `appid` / `azp` is the
//! client id asked for (or the system-assigned identity's). Every token is distinct (a `jti`
//! counter), so a fake service can tell a refreshed token from a refused one. Azurite's
//! `--oauth basic` mode checks exactly the claims minted here (aud, iss, nbf/iat/exp), and the
//! fake Graph / Bot servers check the audience with [`bearer_audience`] (the Bot Connector
//! also the app id, with [`bearer_app_id`]).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The tenant the fake tokens claim to come from.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The object / app id of the system-assigned identity in the fake tokens.
pub const SYSTEM_ASSIGNED_ID: &str = "0b5a7b1c-3f8e-4d4e-9c61-5a1f2b3c4d5e";

/// One token request the endpoint accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The `resource` asked for (`https://storage.azure.com`…).
    pub resource: String,
    /// The user-assigned identity's client id, when one was asked for.
    pub client_id: Option<String>,
}

/// One token the endpoint minted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    /// The request it answered.
    pub request: TokenRequest,
    /// Its `jti` claim (unique, increasing in the process).
    pub jti: u64,
}

#[derive(Default)]
struct Shared {
    requests: Vec<TokenRequest>,
    minted: Vec<Minted>,
    rejected: usize,
    /// Answer the next N requests with this status instead of a token.
    fail: Option<(u16, usize)>,
    /// Token lifetime in seconds (default one hour).
    lifetime_secs: Option<i64>,
}

/// A running fake identity endpoint.
pub struct FakeIdentity {
    addr: SocketAddr,
    header: String,
    state: Arc<Mutex<Shared>>,
}

#[derive(Clone)]
struct AppState {
    header: String,
    state: Arc<Mutex<Shared>>,
}

impl FakeIdentity {
    /// Starts an endpoint on `127.0.0.1:0` on the current runtime.
    pub async fn start() -> FakeIdentity {
        let (identity, listener, app) = Self::prepare().await;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        identity
    }

    async fn prepare() -> (FakeIdentity, tokio::net::TcpListener, Router) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake identity endpoint");
        let addr = listener.local_addr().unwrap();
        let header = format!("fake-identity-secret-{}", uuid::Uuid::new_v4().simple());
        let state = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new()
            .route("/msi/token", get(token))
            .with_state(AppState {
                header: header.clone(),
                state: state.clone(),
            });
        (
            FakeIdentity {
                addr,
                header,
                state,
            },
            listener,
            app,
        )
    }

    /// One endpoint for the whole test process, on its own thread (so it outlives each
    /// test's runtime), with `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` set in the process
    /// environment once, so in-process `ManagedIdentityCredential`s find it.
    pub async fn shared() -> &'static FakeIdentity {
        static SHARED: OnceLock<FakeIdentity> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("fake-identity".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let (identity, listener, app) = FakeIdentity::prepare().await;
                        tx.send(identity).unwrap();
                        let _ = axum::serve(listener, app).await;
                    });
                })
                .unwrap();
            let identity = rx.recv().expect("the fake identity endpoint starts");
            for (k, v) in identity.env() {
                // Set once, before any credential of this process reads them; tests that
                // need other values pass `env()` to a child process instead.
                std::env::set_var(k, v);
            }
            identity
        })
    }

    /// `IDENTITY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/msi/token", self.addr)
    }

    /// `IDENTITY_HEADER` (the secret the caller must send as `x-identity-header`).
    pub fn header(&self) -> String {
        self.header.clone()
    }

    /// The variables Azure Functions sets for the managed identity.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IDENTITY_ENDPOINT".to_string(), self.endpoint()),
            ("IDENTITY_HEADER".to_string(), self.header()),
        ]
    }

    /// Every accepted token request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every token minted so far, in order.
    pub fn minted(&self) -> Vec<Minted> {
        self.state.lock().unwrap().minted.clone()
    }

    /// Requests refused (wrong or missing secret header, bad query).
    pub fn rejected(&self) -> usize {
        self.state.lock().unwrap().rejected
    }

    /// Answers the next `times` requests with `status` (e.g. 500) instead of a token.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.state.lock().unwrap().fail = Some((status, times));
    }

    /// Lifetime of the tokens minted from now on.
    pub fn set_token_lifetime(&self, secs: i64) {
        self.state.lock().unwrap().lifetime_secs = Some(secs);
    }

    /// The `aud` claim of `Authorization: Bearer <jwt>` (see [`bearer_audience`]).
    pub fn bearer_audience(authorization_header: &str) -> Option<String> {
        bearer_audience(authorization_header)
    }
}

/// The `aud` claim of the JWT in an `Authorization: Bearer <jwt>` header value (or of a bare
/// JWT), so fake services can check a call carried a token meant for them.
pub fn bearer_audience(authorization_header: &str) -> Option<String> {
    let claims = bearer_claims(authorization_header)?;
    claims.get("aud")?.as_str().map(str::to_string)
}

/// The app the JWT in an `Authorization: Bearer <jwt>` header value was issued to: `appid`
/// (v1 tokens) or `azp` (v2 tokens), as the Bot Connector reads it.
pub fn bearer_app_id(authorization_header: &str) -> Option<String> {
    let claims = bearer_claims(authorization_header)?;
    claims
        .get("appid")
        .or_else(|| claims.get("azp"))?
        .as_str()
        .map(str::to_string)
}

/// The `jti` claim of the JWT in an `Authorization: Bearer <jwt>` header value.
pub fn bearer_jti(authorization_header: &str) -> Option<u64> {
    bearer_claims(authorization_header)?.get("jti")?.as_u64()
}

/// All claims of the JWT in an `Authorization: Bearer <jwt>` header value (or a bare JWT).
pub fn bearer_claims(authorization_header: &str) -> Option<serde_json::Value> {
    let v = authorization_header.trim();
    let jwt = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v);
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Mints an unsigned token shaped like an Entra ID access token; returns it, its expiry and
/// its `jti`. Two calls never mint the same token, even in the same second.
pub fn mint_jwt(resource: &str, client_id: Option<&str>, lifetime_secs: i64) -> (String, i64, u64) {
    static NEXT_JTI: AtomicU64 = AtomicU64::new(1);
    let jti = NEXT_JTI.fetch_add(1, Ordering::SeqCst);
    let now = chrono::Utc::now().timestamp();
    let exp = now + lifetime_secs;
    let id = client_id.unwrap_or(SYSTEM_ASSIGNED_ID);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "fake-identity"});
    let payload = serde_json::json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{TENANT_ID}/"),
        "iat": now - 60,
        "nbf": now - 60,
        "exp": exp,
        "appid": id,
        "azp": id,
        "jti": jti,
        "uti": format!("fake-{jti}"),
        "oid": id,
        "sub": id,
        "tid": TENANT_ID,
        "idtyp": "app",
        "ver": "1.0",
    });
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let token = format!(
        "{}.{}.{}",
        enc(&header),
        enc(&payload),
        URL_SAFE_NO_PAD.encode(b"not-signed")
    );
    (token, exp, jti)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"statusCode": status.as_u16(), "message": message})),
    )
        .into_response()
}

async fn token(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let secret_ok = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == app.header);
    let mut state = app.state.lock().unwrap();
    if !secret_ok {
        state.rejected += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong x-identity-header",
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        state.rejected += 1;
        return error(StatusCode::BAD_REQUEST, "api-version must be 2019-08-01");
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()).cloned() else {
        state.rejected += 1;
        return error(StatusCode::BAD_REQUEST, "resource is required");
    };
    if let Some((status, left)) = state.fail {
        state.fail = if left > 1 {
            Some((status, left - 1))
        } else {
            None
        };
        return error(StatusCode::from_u16(status).unwrap(), "injected failure");
    }
    let client_id = q.get("client_id").cloned();
    let request = TokenRequest {
        resource: resource.clone(),
        client_id: client_id.clone(),
    };
    state.requests.push(request.clone());
    let lifetime = state.lifetime_secs.unwrap_or(3600);
    let (access_token, exp, jti) = mint_jwt(&resource, client_id.as_deref(), lifetime);
    state.minted.push(Minted { request, jti });
    drop(state);
    Json(serde_json::json!({
        "access_token": access_token,
        "expires_on": exp.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": client_id.unwrap_or_else(|| SYSTEM_ASSIGNED_ID.to_string()),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_identity_mints_a_token_for_the_resource_asked_for() {
        let id = FakeIdentity::start().await;
        let http = reqwest::Client::new();
        let url = format!(
            "{}?api-version=2019-08-01&resource=https://storage.azure.com&client_id=abc",
            id.endpoint()
        );
        let body: serde_json::Value = http
            .get(&url)
            .header("x-identity-header", id.header())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            bearer_audience(&format!("Bearer {token}")).as_deref(),
            Some("https://storage.azure.com")
        );
        assert_eq!(bearer_app_id(token).as_deref(), Some("abc"));
        assert_eq!(bearer_claims(token).unwrap()["azp"], "abc");
        assert!(
            body["expires_on"].as_str().unwrap().parse::<i64>().unwrap()
                > chrono::Utc::now().timestamp()
        );
        assert_eq!(
            id.requests(),
            vec![TokenRequest {
                resource: "https://storage.azure.com".into(),
                client_id: Some("abc".into())
            }]
        );
    }

    #[test]
    fn two_tokens_minted_in_the_same_second_differ() {
        let (a, _, ja) = mint_jwt("https://api.botframework.com", None, 3600);
        let (b, _, jb) = mint_jwt("https://api.botframework.com", None, 3600);
        assert_ne!(a, b);
        assert!(jb > ja);
        assert_eq!(bearer_jti(&b), Some(jb));
        assert_eq!(bearer_app_id(&a).as_deref(), Some(SYSTEM_ASSIGNED_ID));
    }

    #[tokio::test]
    async fn the_fake_identity_refuses_a_request_without_the_secret_header() {
        let id = FakeIdentity::start().await;
        let url = format!(
            "{}?api-version=2019-08-01&resource=https://graph.microsoft.com",
            id.endpoint()
        );
        let status = reqwest::get(&url).await.unwrap().status();
        assert_eq!(status, 401);
        assert!(id.requests().is_empty());
        assert_eq!(id.rejected(), 1);
    }
}
