//! The HTTP function (`function_http`): `GET` health, `GET ?runId=` a run's report, `POST`
//! an on-demand run. One core ([`handle`]) serves both the forwarded request
//! (`/api/function_http`) and the host's wrapped form (`POST /function_http`).
//!
//! Statuses: 200 done; 207 done but some reminders failed (`counts.failed > 0`, the body is
//! the full report); 202 started with `wait: false`; 400 bad request; 404 unknown run id;
//! 405 wrong method; 409 a run is in progress; 413 body too large; 429 too many dry runs at
//! once (with `Retry-After`); 422 unusable export (or
//! a plan over the owner cap); 502 the export store failed; 503 shutting down; 500
//! unexpected (a run that panicked: `JobError::Internal`), with a correlation id and nothing
//! internal.

use super::state::{AppState, Outcome, Refused, RunState, MAX_DRY_RUNS};
use crate::app::{SourceOverride, WiringError};
use crate::config::ChannelKind;
use crate::domain::OwnerEmail;
use crate::job::{JobError, RunRequest};
use crate::report::{RunReport, Trigger};
use crate::source::SourceError;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Largest accepted request body.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The forwarded route (the host's default `api` route prefix).
pub(crate) const ROUTE: &str = "/api/function_http";

/// One call of the HTTP function, whichever way it arrived.
#[derive(Clone, Debug)]
pub struct HttpCall {
    /// Method.
    pub method: Method,
    /// Query parameters (the `code` key parameter among them: never logged).
    pub query: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// The host's invocation id.
    pub invocation_id: Option<String>,
    /// The path the caller used (lower-case, no trailing slash; the host's route prefix
    /// included), for the URL to poll a background run. Never the query: it may hold the key.
    pub path: String,
}

/// The function's answer: status, JSON body and optional `Location`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    /// Status.
    pub status: StatusCode,
    /// JSON body, serialised (a report keeps its field order: `schema` first).
    pub body: String,
    /// `Location` (202 and polling answers).
    pub location: Option<String>,
    /// `Retry-After` in seconds (429 answers).
    pub retry_after: Option<u64>,
}

impl ApiResponse {
    fn new(status: StatusCode, body: Value) -> Self {
        Self::raw(status, body.to_string())
    }

    fn raw(status: StatusCode, body: String) -> Self {
        Self {
            status,
            body,
            location: None,
            retry_after: None,
        }
    }

    /// The body parsed back (tests, logs).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// An error answer `{"error": message}`.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, json!({ "error": message.into() }))
    }

    /// A 500 answer: the details go to the log under the correlation id, never to the caller.
    pub(crate) fn internal(correlation_id: &str, detail: &dyn std::fmt::Display) -> Self {
        error!(correlation_id, error = %detail, "unexpected error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": "unexpected error; the details are in the function's logs under this correlation id",
                "correlationId": correlation_id,
            }),
        )
    }

    /// 405 with the allowed methods.
    pub(crate) fn method_not_allowed(method: &Method, allowed: &str) -> Self {
        Self::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed here; use {allowed}"),
        )
    }

    /// The answer as the wrapped HTTP output binding (`Outputs.res`).
    pub(crate) fn into_wrapped(self) -> super::payload::WrappedHttpResponse {
        let mut headers = BTreeMap::new();
        headers.insert("Content-Type".to_string(), "application/json".to_string());
        if let Some(l) = self.location {
            headers.insert("Location".to_string(), l);
        }
        if let Some(s) = self.retry_after {
            headers.insert("Retry-After".to_string(), s.to_string());
        }
        super::payload::WrappedHttpResponse {
            status_code: self.status.as_u16(),
            body: self.body,
            headers,
        }
    }
}

impl IntoResponse for ApiResponse {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response();
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            res.headers_mut().insert(header::LOCATION, l);
        }
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        res
    }
}

/// The `POST` body. Every field is optional; unknown fields are refused so a typo
/// (`dryrun`) cannot silently become a real run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RunBody {
    /// Plan and render, send nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Only these owners.
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// Refused: split into `maxOwners` and `resend` (a 400 says so).
    #[serde(default)]
    pub force: Option<bool>,
    /// Send again to the `only` owners even if already reminded (needs `only`).
    #[serde(default)]
    pub resend: Option<bool>,
    /// The owner cap of this run instead of `REMINDERS_MAX_OWNERS_PER_RUN`.
    #[serde(default)]
    pub max_owners: Option<usize>,
    /// The run's "today", `YYYY-MM-DD`.
    #[serde(default)]
    pub as_of: Option<String>,
    /// Another export for this run.
    #[serde(default)]
    pub source: Option<SourceSpec>,
    /// Another channel (or fallback chain) for this run.
    #[serde(default)]
    pub channel: Option<ChannelSpec>,
    /// Wait for the report (default) or answer 202 at once.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// `source` in the `POST` body: exactly one member.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SourceSpec {
    /// A blob name in the configured container.
    #[serde(default)]
    pub blob: Option<String>,
    /// A path in the configured SharePoint library.
    #[serde(default)]
    pub(crate) sharepoint_path: Option<String>,
    /// A local file (only with `REMINDERS_SOURCE=local`).
    #[serde(default)]
    pub path: Option<String>,
}

impl SourceSpec {
    /// The override, or why the request is refused.
    pub(crate) fn to_override(&self) -> Result<SourceOverride, BadRequest> {
        let given: Vec<SourceOverride> = [
            self.blob.clone().map(SourceOverride::Blob),
            self.sharepoint_path
                .clone()
                .map(SourceOverride::SharePointPath),
            self.path.clone().map(|p| SourceOverride::Path(p.into())),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[SourceOverride; 1]>::try_from(given) {
            Ok([one]) => Ok(one),
            Err(_) => Err(BadRequest::SourceMembers),
        }
    }
}

/// `channel` in the `POST` body: one name or a list (primary first).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum ChannelSpec {
    /// One channel.
    One(String),
    /// A fallback chain.
    Many(Vec<String>),
}

impl ChannelSpec {
    fn names(&self) -> Vec<&str> {
        match self {
            ChannelSpec::One(s) => vec![s.as_str()],
            ChannelSpec::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// The 400 message of a `POST` that does not say whether it is a dry run.
pub(crate) const NO_INTENT: &str = "say what this run is for: send {\"dryRun\": true} to preview, or {\"dryRun\": false} to send the reminders (an empty body, null, {} or a null dryRun start nothing)";

/// The query parameters the function reads; any other is refused (a `?dryRun=true` in the
/// URL must not be silently ignored and start a live run).
pub(crate) const QUERY_PARAMETERS: [&str; 2] = ["code", "runId"];

/// Why a `POST` is refused with a 400; each message names the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum BadRequest {
    /// The body starts with a byte-order mark.
    #[error(
        "the request body starts with a UTF-8 byte-order mark (BOM): send the JSON without it"
    )]
    ByteOrderMark,
    /// The body does not say whether it is a dry run ([`NO_INTENT`]).
    #[error("{}", NO_INTENT)]
    NoIntent,
    /// The body is not JSON (serde's message: line and column).
    #[error("the request body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object (got {0}), e.g. {{\"dryRun\": true}}")]
    NotAnObject(&'static str),
    /// A field of the body has the wrong shape; `path` names it (empty: the body itself).
    #[error("invalid request body: {}{reason}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Field {
        /// The field's path (`source`, `only[1]`), or empty.
        path: String,
        /// Why.
        reason: String,
    },
    /// `force`, which is no longer accepted.
    #[error("force: no longer accepted (it lifted the owner cap and the cadence at once): use maxOwners to raise the owner cap for this run, or resend with only to message named owners again")]
    Force,
    /// `resend` without `only`.
    #[error("resend: needs only (the owners to message again); re-sending to everybody is never allowed")]
    ResendWithoutOnly,
    /// `asOf` is not a date.
    #[error("asOf: expected a date as YYYY-MM-DD, got '{0}'")]
    AsOf(String),
    /// `asOf` before today on a live run.
    #[error("asOf: {date} is before today ({today}): a live run sends for today only; asOf is for dry runs")]
    AsOfPast {
        /// The date asked for.
        date: NaiveDate,
        /// Today in the configured time zone.
        today: NaiveDate,
    },
    /// An `only` entry is not an e-mail address.
    #[error("only[{index}]: {reason}")]
    Only {
        /// Its position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// `source` without exactly one member.
    #[error("source: give exactly one of blob, sharepointPath or path")]
    SourceMembers,
    /// A `source` member refused by the wiring; `field` names it (`source.blob`…).
    #[error("{field}: {reason}")]
    SourceChoice {
        /// The request field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The chosen source could not be built.
    #[error("source: {0}")]
    Source(WiringError),
    /// An unknown channel name.
    #[error("channel: unknown channel '{0}'")]
    UnknownChannel(String),
    /// An empty channel list.
    #[error("channel: give at least one channel")]
    NoChannel,
    /// The chosen channels could not be built.
    #[error("channel: {0}")]
    Channel(WiringError),
}

impl BadRequest {
    /// The 400 answer, logged once.
    pub fn response(&self) -> ApiResponse {
        warn!(error = %self, "bad request");
        ApiResponse::error(StatusCode::BAD_REQUEST, self.to_string())
    }
}

/// Reads the `POST` body; the error names the field at fault.
///
/// The body must be a JSON object with an explicit boolean `dryRun`: a live run is sent
/// only on `"dryRun": false`. An empty body, `null`, `{}` and `"dryRun": null` (what a Power
/// Automate expression that evaluates to nothing gives) are refused with [`NO_INTENT`]. It
/// is checked as a [`Value`] first because serde's derived `Deserialize` also
/// accepts a sequence for a struct, fields by position: `[]` or `[true, null]` would
/// otherwise start a run with options nobody named. The struct is then read from the bytes
/// (not the `Value`) so a field given twice is still refused instead of the last one winning.
pub(crate) fn parse_body(bytes: &[u8]) -> Result<RunBody, BadRequest> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(BadRequest::ByteOrderMark);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BadRequest::NoIntent);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| BadRequest::NotJson(e.to_string()))?;
    match &value {
        Value::Null => return Err(BadRequest::NoIntent),
        Value::Object(fields) => {
            // `source` is a struct too: the same positional reading applies to it.
            if let Some(source) = fields.get("source") {
                if !matches!(source, Value::Object(_) | Value::Null) {
                    return Err(BadRequest::Field {
                        path: "source".into(),
                        reason: format!("must be a JSON object, got {}", json_kind(source)),
                    });
                }
            }
        }
        other => return Err(BadRequest::NotAnObject(json_kind(other))),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: RunBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            BadRequest::NotJson(inner.to_string())
        } else {
            BadRequest::Field {
                path: if path == "." { String::new() } else { path },
                reason: inner.to_string(),
            }
        }
    })?;
    de.end().map_err(|e| BadRequest::NotJson(e.to_string()))?;
    if body.dry_run.is_none() {
        return Err(BadRequest::NoIntent);
    }
    Ok(body)
}

/// A JSON value's kind, for messages (never the value: it may be long or sensitive).
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Turns the body into a run request and whether to wait; `Err` is a 400.
fn run_request(
    state: &AppState,
    body: &RunBody,
    invocation_id: Option<String>,
) -> Result<(RunRequest, bool), BadRequest> {
    let mut req = RunRequest::new(Trigger::Http);
    req.invocation_id = invocation_id;
    req.dry_run = body.dry_run.unwrap_or(false);
    if body.force.is_some() {
        return Err(BadRequest::Force);
    }
    req.resend = body.resend.unwrap_or(false);
    if req.resend && body.only.as_ref().is_none_or(|o| o.is_empty()) {
        return Err(BadRequest::ResendWithoutOnly);
    }
    req.max_owners = body.max_owners;
    if let Some(as_of) = &body.as_of {
        let date = NaiveDate::parse_from_str(as_of.trim(), "%Y-%m-%d")
            .map_err(|_| BadRequest::AsOf(as_of.clone()))?;
        // A live run sends for today: the ledger would record a backdated send under a
        // day the cadence has already passed.
        let today = crate::job::today(&state.deps().rules);
        if !req.dry_run && date < today {
            return Err(BadRequest::AsOfPast { date, today });
        }
        req.as_of = Some(date);
    }
    for (i, raw) in body.only.iter().flatten().enumerate() {
        req.only
            .push(OwnerEmail::parse(raw).map_err(|e| BadRequest::Only {
                index: i,
                reason: e.to_string(),
            })?);
    }
    if let Some(spec) = &body.source {
        let spec = spec.to_override()?;
        req.source = Some(state.wiring().source(Some(&spec)).map_err(|e| match e {
            WiringError::SourceChoice { field, reason } => {
                BadRequest::SourceChoice { field, reason }
            }
            other => BadRequest::Source(other),
        })?);
    }
    if let Some(spec) = &body.channel {
        let mut kinds = Vec::new();
        for name in spec.names() {
            kinds.push(
                ChannelKind::parse(name)
                    .ok_or_else(|| BadRequest::UnknownChannel(name.to_string()))?,
            );
        }
        if kinds.is_empty() {
            return Err(BadRequest::NoChannel);
        }
        req.notifier = Some(
            state
                .wiring()
                .notifier(&kinds)
                .map_err(BadRequest::Channel)?,
        );
    }
    Ok((req, body.wait.unwrap_or(true)))
}

/// Answers one call of the HTTP function.
pub async fn handle(state: &AppState, call: HttpCall) -> ApiResponse {
    let correlation = call
        .invocation_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if let Some((name, _)) = call
        .query
        .iter()
        .find(|(k, _)| !QUERY_PARAMETERS.contains(&k.as_str()))
    {
        // The name only, truncated: the value may be anything, including a key.
        let name: String = name.chars().take(40).collect();
        let msg = format!(
            "unknown query parameter '{name}': only code and runId are read; run options go in the JSON body, e.g. {{\"dryRun\": true}}"
        );
        warn!(error = %msg, "bad request");
        return ApiResponse::error(StatusCode::BAD_REQUEST, msg);
    }
    match call.method {
        Method::GET => match call.query.iter().find(|(k, _)| k == "runId") {
            Some((_, run_id)) => get_run(state, run_id, &call.path, &correlation).await,
            None => health(state).await,
        },
        Method::POST => post(state, call, &correlation).await,
        ref other => ApiResponse::method_not_allowed(other, "GET or POST"),
    }
}

async fn post(state: &AppState, call: HttpCall, correlation: &str) -> ApiResponse {
    if call.body.len() > MAX_BODY_BYTES {
        return too_large();
    }
    let body = match parse_body(&call.body) {
        Ok(b) => b,
        Err(bad) => return bad.response(),
    };
    let (req, wait) = match run_request(state, &body, call.invocation_id.clone()) {
        Ok(r) => r,
        Err(bad) => return bad.response(),
    };
    info!(
        dry_run = req.dry_run,
        resend = req.resend,
        max_owners = ?req.max_owners,
        only = req.only.len(),
        as_of = ?req.as_of,
        source_override = req.source.is_some(),
        channel_override = req.notifier.is_some(),
        wait,
        "run requested"
    );
    // A dry run holds the whole plan and its rendered messages in memory (~200 MB for a
    // 100k-row export): only a few at once, so repeated button presses cannot exhaust a
    // Consumption plan's memory. Real runs are one at a time anyway.
    let slot = if req.dry_run {
        match state.dry_run_slot() {
            Some(slot) => Some(slot),
            None => return too_many_dry_runs(),
        }
    } else {
        None
    };
    let ticket = match state.start_with(req, slot) {
        Ok(t) => t,
        Err(refused) => return refused_response(&refused),
    };
    if !wait {
        let run_id = ticket.run_id.clone();
        info!(run_id = %run_id, "run started in the background");
        let url = status_url(&call.path, &run_id);
        let mut res = ApiResponse::new(
            StatusCode::ACCEPTED,
            json!({ "runId": run_id, "status": "running", "statusUrl": url, "note": STATUS_URL_NOTE }),
        );
        res.location = Some(url);
        return res;
    }
    let run_id = ticket.run_id.clone();
    outcome_response(&run_id, ticket.outcome().await, correlation)
}

fn too_large() -> ApiResponse {
    ApiResponse::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
    )
}

/// Seconds a caller refused for too many dry runs is asked to wait.
pub(crate) const DRY_RUN_RETRY_AFTER_S: u64 = 5;

/// 429 for a dry run over the limit of dry runs at once.
fn too_many_dry_runs() -> ApiResponse {
    info!(
        limit = MAX_DRY_RUNS,
        "refused: too many dry runs in progress"
    );
    let mut res = ApiResponse::error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{MAX_DRY_RUNS} dry runs are already in progress in this instance; try again in {DRY_RUN_RETRY_AFTER_S} seconds"
        ),
    );
    res.retry_after = Some(DRY_RUN_RETRY_AFTER_S);
    res
}

/// Told with every URL to poll: the URL carries no key (the caller's key is never echoed).
pub(crate) const STATUS_URL_NOTE: &str = "statusUrl is relative to the function app's host and carries no key: when polling, send your function key as the code query parameter or the x-functions-key header";

/// The URL to poll for a background run: the path the caller used (so a changed host route
/// prefix keeps working) and the run id. Relative and keyless: the caller adds its own host
/// and key.
pub(crate) fn status_url(path: &str, run_id: &str) -> String {
    let path = if path.is_empty() { ROUTE } else { path };
    format!("{path}?runId={run_id}")
}

/// 409 / 503 for a run refused before starting.
pub(crate) fn refused_response(refused: &Refused) -> ApiResponse {
    match refused {
        Refused::InProgress(other) => {
            info!(active_run = %other, "refused: a run is in progress");
            ApiResponse::new(
                StatusCode::CONFLICT,
                json!({ "error": refused.to_string(), "status": "in_progress", "runId": other }),
            )
        }
        Refused::ShuttingDown => {
            ApiResponse::error(StatusCode::SERVICE_UNAVAILABLE, refused.to_string())
        }
    }
}

/// The status a finished report is answered with: 207 when some reminders failed.
pub(crate) fn report_status(report: &RunReport) -> StatusCode {
    if report.partial_failure() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::OK
    }
}

fn outcome_response(run_id: &str, outcome: Outcome, correlation: &str) -> ApiResponse {
    match outcome {
        Ok(report) => report_response(&report, correlation),
        Err(e) => job_error_response(run_id, &e, correlation),
    }
}

fn report_response(report: &RunReport, correlation: &str) -> ApiResponse {
    match serde_json::to_string(report) {
        Ok(v) => ApiResponse::raw(report_status(report), v),
        Err(e) => ApiResponse::internal(correlation, &e),
    }
}

/// The answer for a run that ended in an error.
pub(crate) fn job_error_response(run_id: &str, e: &JobError, correlation: &str) -> ApiResponse {
    let status = match e {
        JobError::Busy(_) => StatusCode::CONFLICT,
        JobError::AsOfInFuture { .. } | JobError::ResendWithoutOnly => StatusCode::BAD_REQUEST,
        JobError::Unusable(_) | JobError::TooManyOwners { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        JobError::Source(SourceError::NotFound { .. } | SourceError::TooLarge { .. }) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        JobError::Source(_) => StatusCode::BAD_GATEWAY,
        JobError::Cancelled { .. } => StatusCode::SERVICE_UNAVAILABLE,
        JobError::Ledger(_) => return ApiResponse::internal(correlation, e),
        JobError::Internal => {
            // The panic was logged where it happened; the caller gets the run and where to look.
            error!(run_id, correlation_id = correlation, error = %e, "run did not complete");
            return ApiResponse::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string(), "runId": run_id, "correlationId": correlation }),
            );
        }
    };
    warn!(run_id, status = status.as_u16(), error = %e, "run did not complete");
    let mut body = json!({ "error": e.to_string(), "runId": run_id });
    if matches!(e, JobError::Busy(_)) {
        body["status"] = json!("in_progress");
    }
    ApiResponse::new(status, body)
}

async fn get_run(state: &AppState, run_id: &str, path: &str, correlation: &str) -> ApiResponse {
    // The id reaches the ledger store as a file / blob name: keep it to what we generate.
    if run_id.is_empty()
        || run_id.len() > 64
        || !run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return ApiResponse::error(StatusCode::BAD_REQUEST, "runId: not a run id");
    }
    match state.run_state(run_id) {
        Some(RunState::Running(progress)) => {
            // `progress` is null while the export is read and planned.
            let progress = progress.latest().map(|p| p.to_json());
            let mut res = ApiResponse::new(
                StatusCode::ACCEPTED,
                json!({ "runId": run_id, "status": "running", "progress": progress, "note": STATUS_URL_NOTE }),
            );
            res.location = Some(status_url(path, run_id));
            res
        }
        Some(RunState::Finished(outcome)) => outcome_response(run_id, outcome, correlation),
        None => match state.deps().reports.report(run_id).await {
            Ok(Some(report)) => report_response(&report, correlation),
            Ok(None) => ApiResponse::error(
                StatusCode::NOT_FOUND,
                format!("no run {run_id}: unknown, or a dry run no longer kept in memory"),
            ),
            Err(e) => ApiResponse::internal(correlation, &e),
        },
    }
}

async fn health(state: &AppState) -> ApiResponse {
    let deps = state.deps();
    let stored = match deps.reports.last_report().await {
        Ok(r) => r.map(Arc::new),
        Err(e) => {
            warn!(error = %e, "health: cannot read the last run report");
            None
        }
    };
    let in_memory = state.last_finished_report();
    let last = match (stored, in_memory) {
        (Some(a), Some(b)) => Some(if b.finished_at > a.finished_at { b } else { a }),
        (a, b) => a.or(b),
    };
    ApiResponse::new(
        StatusCode::OK,
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "source": deps.source.describe(),
            "channel": deps.notifier.channel(),
            "channelDetail": deps.notifier.describe(),
            "ledger": deps.ledger.describe(),
            "runInProgress": state.active_run(),
            "lastRun": last.map(|r| json!({
                "runId": r.run_id,
                "trigger": r.trigger,
                "dryRun": r.dry_run,
                "asOf": r.as_of,
                "finishedAt": r.finished_at,
                "counts": r.counts,
                "summary": r.summary,
            })),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_an_explicit_dry_run_starts_nothing_and_says_what_to_send() {
        for body in [
            &b""[..],
            b"  ",
            b"null",
            b"{}",
            br#"{"dryRun": null}"#,
            br#"{"only": ["a@engie.com"]}"#,
        ] {
            let err = parse_body(body).unwrap_err();
            assert!(
                matches!(err, BadRequest::NoIntent),
                "{}",
                String::from_utf8_lossy(body)
            );
            let err = err.to_string();
            assert_eq!(err, NO_INTENT);
            assert!(err.contains(r#"{"dryRun": false}"#), "{err}");
        }
        assert_eq!(
            parse_body(br#"{"dryRun": false}"#).unwrap().dry_run,
            Some(false)
        );
        assert_eq!(
            parse_body(br#"{"dryRun": true}"#).unwrap().dry_run,
            Some(true)
        );
    }

    #[test]
    fn a_byte_order_mark_before_the_body_is_named() {
        let err = parse_body(b"\xEF\xBB\xBF{\"dryRun\": true}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("byte-order mark"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = parse_body(br#"{"dryrun": true}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `dryrun`"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let err = parse_body(br#"{"dryRun": "yes"}"#).unwrap_err().to_string();
        assert!(err.contains("dryRun: invalid type"), "{err}");
        let err = parse_body(br#"{"only": ["a@b.com", 3]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only[1]"), "{err}");
    }

    #[test]
    fn malformed_json_says_so() {
        let err = parse_body(br#"{"dryRun": tru"#).unwrap_err().to_string();
        assert!(
            err.starts_with("the request body is not valid JSON"),
            "{err}"
        );
        let err = parse_body(br#"{} {}"#).unwrap_err().to_string();
        assert!(
            err.starts_with("the request body is not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_whatever_its_fields_would_be_by_position() {
        for body in [
            &b"[]"[..],
            br#"[true, null, false, "2024-03-07"]"#,
            br#"["dryRun"]"#,
            b"true",
            b"3",
            br#""dryRun""#,
        ] {
            let err = parse_body(body).unwrap_err().to_string();
            assert!(
                err.starts_with("the body must be a JSON object"),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_body(br#"{"source": ["a.csv"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("source: must be a JSON object"), "{err}");
    }

    #[test]
    fn a_null_source_is_no_source() {
        assert!(parse_body(br#"{"dryRun": true, "source": null}"#)
            .unwrap()
            .source
            .is_none());
    }

    #[test]
    fn a_field_given_twice_is_refused_not_last_one_wins() {
        let err = parse_body(br#"{"dryRun": true, "dryRun": false}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate field `dryRun`"), "{err}");
    }

    #[test]
    fn the_status_url_keeps_the_callers_path_and_carries_no_key() {
        assert_eq!(
            status_url("/api/function_http", "r1"),
            "/api/function_http?runId=r1"
        );
        assert_eq!(status_url("", "r1"), "/api/function_http?runId=r1");
        assert!(STATUS_URL_NOTE.contains("x-functions-key"));
    }

    #[test]
    fn a_429_carries_retry_after_in_both_forms() {
        let r = too_many_dry_runs();
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.clone().into_response().headers()[header::RETRY_AFTER],
            "5"
        );
        assert_eq!(r.into_wrapped().headers["Retry-After"], "5");
    }

    #[test]
    fn a_source_needs_exactly_one_member() {
        let b = parse_body(br#"{"dryRun": true, "source": {"blob": "a.csv", "path": "b.csv"}}"#)
            .unwrap();
        assert!(b.source.unwrap().to_override().is_err());
        let b = parse_body(br#"{"dryRun": true, "source": {"sharepointPath": "General/x.xlsx"}}"#)
            .unwrap();
        assert_eq!(
            b.source.unwrap().to_override().unwrap(),
            SourceOverride::SharePointPath("General/x.xlsx".into())
        );
    }

    #[test]
    fn the_wrapped_answer_carries_status_body_and_location() {
        let mut r = ApiResponse::new(StatusCode::ACCEPTED, json!({"runId": "r1"}));
        r.location = Some(status_url("/reminders/function_http", "r1"));
        let w = r.into_wrapped();
        assert_eq!(w.status_code, 202);
        assert_eq!(w.headers["Location"], "/reminders/function_http?runId=r1");
        assert_eq!(
            serde_json::from_str::<Value>(&w.body).unwrap()["runId"],
            "r1"
        );
    }

    /// The state of a server whose export is `issues.csv` in a Blob container (nothing is
    /// fetched: the requests below are refused before).
    fn blob_server(state_dir: &std::path::Path) -> AppState {
        let dir = state_dir.display().to_string();
        let mut settings = crate::app::BLOB_SOURCE_SETTINGS.to_vec();
        settings.push(("REMINDERS_STATE_DIR", &dir));
        let config =
            crate::config::Config::from_env_map(&crate::config::Env::from_pairs(&settings))
                .unwrap();
        let wiring = crate::app::Wiring::new(config);
        let deps = wiring.deps(None).unwrap();
        AppState::new(wiring, deps, tokio_util::sync::CancellationToken::new())
    }

    fn post_call(body: &str) -> HttpCall {
        HttpCall {
            method: Method::POST,
            query: Vec::new(),
            body: body.as_bytes().to_vec(),
            invocation_id: None,
            path: ROUTE.into(),
        }
    }

    #[tokio::test]
    async fn a_bad_blob_name_in_a_request_is_a_400_naming_the_field_and_the_settings_stay() {
        let dir = tempfile::tempdir().unwrap();
        let state = blob_server(dir.path());
        for name in [
            "../secret.csv",
            "a/./b.csv",
            "",
            "x.csv?sv=1&sig=PASTEDSECRET",
        ] {
            let body = json!({"dryRun": true, "source": {"blob": name}}).to_string();
            let answer = handle(&state, post_call(&body)).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{name}: {}",
                answer.body
            );
            let error = answer.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(error.starts_with("source.blob: "), "{name}: {error}");
            assert!(!error.contains("PASTEDSECRET"), "{error}");
        }
        let answer = handle(
            &state,
            post_call(r#"{"dryRun": true, "source": {"sharepointPath": "General/a.xlsx"}}"#),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer.json()["error"],
            "source.sharepointPath: only accepted when REMINDERS_SOURCE=sharepoint"
        );
        // No request changed what the process reads.
        assert_eq!(
            state.config().azure.blob_export().unwrap().selector,
            crate::config::BlobSelector::Name("issues.csv".into())
        );
        assert!(state
            .deps()
            .source
            .describe()
            .ends_with("/exports/issues.csv"));
        assert!(state.active_run().is_none());
    }

    /// A channel with a bug: its first send panics; later sends go to the outbox.
    struct PanicsOnFirstSend {
        panicked: std::sync::atomic::AtomicBool,
        outbox: crate::deliver::OutboxNotifier,
    }

    #[async_trait::async_trait]
    impl crate::deliver::Notifier for PanicsOnFirstSend {
        fn channel(&self) -> &str {
            "outbox"
        }
        fn describe(&self) -> String {
            "a channel whose first send panics".into()
        }
        async fn send(
            &self,
            message: &crate::deliver::OutgoingReminder,
        ) -> Result<crate::deliver::Delivery, crate::deliver::DeliveryError> {
            if !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("a bug in the channel");
            }
            self.outbox.send(message).await
        }
    }

    /// A ledger with a bug: taking the run lock the first time panics (outside the run's
    /// own guard, which covers its work under the lock).
    struct PanicsOnFirstLock {
        panicked: std::sync::atomic::AtomicBool,
        inner: crate::ledger::LocalLedger,
    }

    #[async_trait::async_trait]
    impl crate::ledger::LedgerStore for PanicsOnFirstLock {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn lock(
            &self,
            run_id: &str,
        ) -> Result<Box<dyn crate::ledger::RunLock>, crate::ledger::LedgerError> {
            if !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("a bug in the ledger");
            }
            self.inner.lock(run_id).await
        }
        async fn load(&self) -> Result<crate::ledger::LedgerSnapshot, crate::ledger::LedgerError> {
            self.inner.load().await
        }
        async fn append(
            &self,
            events: &[crate::ledger::LedgerEvent],
        ) -> Result<(), crate::ledger::LedgerError> {
            self.inner.append(events).await
        }
    }

    /// A server on the sample export with a local ledger and outbox in `dir`, whose deps
    /// `adapt` may change.
    fn local_server(dir: &std::path::Path, adapt: impl FnOnce(&mut crate::job::Deps)) -> AppState {
        let export = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/issues-export.csv");
        let state_dir = dir.join("state").display().to_string();
        let outbox = dir.join("outbox").display().to_string();
        let config = crate::config::Config::from_env_map(&crate::config::Env::from_pairs(&[
            ("REMINDERS_EXPORT_PATH", export),
            ("REMINDERS_STATE_DIR", &state_dir),
            ("REMINDERS_OUTBOX_DIR", &outbox),
        ]))
        .unwrap();
        let wiring = crate::app::Wiring::new(config);
        let mut deps = wiring.deps(None).unwrap();
        adapt(&mut deps);
        AppState::new(wiring, deps, tokio_util::sync::CancellationToken::new())
    }

    /// Posts a live run and checks the answer is the panic's: a 500 naming the run, saying
    /// where to look, and nothing of the panic.
    async fn assert_live_run_stops_unexpectedly(state: &AppState) {
        let answer = handle(state, post_call(r#"{"dryRun": false}"#)).await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            answer.body
        );
        let body = answer.json();
        assert_eq!(body["error"], "the run stopped unexpectedly (see the logs)");
        assert!(!answer.body.contains("a bug in"), "{}", answer.body);
        assert!(!answer.body.contains("ledger"), "{}", answer.body);
        let run_id = body["runId"]
            .as_str()
            .expect("the run is named")
            .to_string();
        // The run is finished for this process: no run in progress, the poll says the same.
        assert_eq!(state.active_run(), None);
        let poll = handle(
            state,
            HttpCall {
                method: Method::GET,
                query: vec![("runId".into(), run_id)],
                ..post_call("")
            },
        )
        .await;
        assert_eq!(
            poll.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            poll.body
        );
        assert_eq!(poll.json()["error"], body["error"]);
    }

    /// The next live run starts (the lock was given back) and sends.
    async fn assert_next_live_run_sends(state: &AppState) {
        let answer = handle(state, post_call(r#"{"dryRun": false}"#)).await;
        assert!(
            answer.status == StatusCode::OK || answer.status == StatusCode::MULTI_STATUS,
            "{}: {}",
            answer.status,
            answer.body
        );
        assert!(
            answer.json()["counts"]["sent"].as_u64().unwrap_or(0) > 0,
            "{}",
            answer.body
        );
    }

    #[tokio::test]
    async fn a_run_whose_channel_panics_answers_internal_and_gives_the_lock_back_for_the_next_run()
    {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let state = local_server(dir.path(), |deps| {
            deps.notifier = Arc::new(PanicsOnFirstSend {
                panicked: Default::default(),
                outbox: crate::deliver::OutboxNotifier::new(outbox),
            })
        });
        assert_live_run_stops_unexpectedly(&state).await;
        // Not waiting for the local lock's two-hour TTL: the run gave it back.
        assert_next_live_run_sends(&state).await;
    }

    #[tokio::test]
    async fn a_run_task_that_panics_outside_the_run_answers_internal_and_frees_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(PanicsOnFirstLock {
            panicked: Default::default(),
            inner: crate::ledger::LocalLedger::new(
                dir.path().join("state"),
                std::time::Duration::from_secs(600),
            ),
        });
        let state = local_server(dir.path(), |deps| deps.ledger = ledger);
        assert_live_run_stops_unexpectedly(&state).await;
        assert_next_live_run_sends(&state).await;
    }
}
