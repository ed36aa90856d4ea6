//! The Functions host's payloads: the invocation request a custom handler receives for
//! non-forwarded functions (`{"Data": …, "Metadata": …}`), the answer it expects
//! (`{"Outputs": …, "Logs": […], "ReturnValue": …}`), the timer's `TimerInfo` and the wrapped
//! HTTP request / response. See `functions-host-contract.md`.
//!
//! Parsing is liberal on purpose: unknown members are ignored, and a binding value may come as
//! an object or as a JSON string holding the object (the host serialises values it cannot
//! turn into objects as strings).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What the host posts to `/<function name>` for a non-forwarded invocation.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct InvokeRequest {
    /// Binding values, keyed by the binding's `name` in `function.json`.
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    /// Trigger metadata (`sys.MethodName`, `sys.UtcNow`…).
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

impl InvokeRequest {
    /// The value of binding `name`, decoded from an object or from a string holding JSON.
    pub fn binding<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        match self.data.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => decode_liberal(v)
                .map(Some)
                .map_err(|e| format!("Data.{name}: {e}")),
        }
    }

    /// `Metadata.sys.UtcNow`, when present.
    pub(crate) fn utc_now(&self) -> Option<&str> {
        self.metadata.get("sys")?.get("UtcNow")?.as_str()
    }
}

/// Decodes a value given as an object or as a JSON string holding the object.
pub(crate) fn decode_liberal<T: DeserializeOwned>(v: &Value) -> Result<T, serde_json::Error> {
    match v {
        Value::String(s) => serde_json::from_str(s),
        other => T::deserialize(other),
    }
}

/// The timer trigger's value (`TimerInfo`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(crate) struct TimerInfo {
    /// The host missed the scheduled time (restart, scale-in) and runs it late.
    #[serde(rename = "IsPastDue", default)]
    pub(crate) is_past_due: bool,
    /// `null` on the first run or with `useMonitor: false`.
    #[serde(rename = "ScheduleStatus", default)]
    pub(crate) schedule_status: Option<ScheduleStatus>,
}

/// The timer's schedule monitor status (times as the host writes them).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ScheduleStatus {
    /// The previous occurrence.
    #[serde(rename = "Last", default)]
    pub last: Option<String>,
    /// The next occurrence.
    #[serde(rename = "Next", default)]
    pub next: Option<String>,
    /// When the monitor last wrote.
    #[serde(rename = "LastUpdated", default)]
    pub(crate) last_updated: Option<String>,
}

/// The answer to a non-forwarded invocation.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InvokeResponse {
    /// Output binding values (`res` for the wrapped HTTP function).
    #[serde(rename = "Outputs")]
    pub(crate) outputs: Map<String, Value>,
    /// Lines shown in the invocation's logs.
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// The function's return value (a summary for the timer).
    #[serde(rename = "ReturnValue")]
    pub(crate) return_value: Value,
}

/// The HTTP trigger's value when the host does not forward the request (`Data.req`).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct WrappedHttpRequest {
    /// The original URL.
    #[serde(rename = "Url", default)]
    pub url: String,
    /// `GET`, `POST`…
    #[serde(rename = "Method", default)]
    pub method: String,
    /// Query parameters.
    #[serde(rename = "Query", default)]
    pub query: BTreeMap<String, QueryValue>,
    /// Request headers (values as one string or a list).
    #[serde(rename = "Headers", default)]
    pub headers: BTreeMap<String, QueryValue>,
    /// The body: text, or JSON the host already parsed.
    #[serde(rename = "Body", default)]
    pub body: Value,
}

/// A query or header value: the host writes one string or a list of strings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(crate) enum QueryValue {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl QueryValue {
    /// The first value.
    pub fn first(&self) -> Option<&str> {
        match self {
            QueryValue::One(s) => Some(s),
            QueryValue::Many(v) => v.first().map(String::as_str),
        }
    }
}

impl WrappedHttpRequest {
    /// The body as bytes: text as is, parsed JSON re-serialised, `null` as empty.
    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Value::Null => Vec::new(),
            Value::String(s) => s.as_bytes().to_vec(),
            other => serde_json::to_vec(other).unwrap_or_default(),
        }
    }

    /// A header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first())
    }
}

/// The wrapped HTTP function's output binding (`Outputs.res`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct WrappedHttpResponse {
    /// HTTP status.
    #[serde(rename = "statusCode")]
    pub(crate) status_code: u16,
    /// The body, as text.
    pub body: String,
    /// Response headers.
    pub headers: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMER: &str = r#"{
  "Data": {
    "timer": {
      "Schedule": { "AdjustForDST": true },
      "ScheduleStatus": {
        "Last": "2026-11-20T07:00:00.0047471+00:00",
        "Next": "2026-11-23T07:00:00+00:00",
        "LastUpdated": "2026-11-20T07:00:00.0047471+00:00"
      },
      "IsPastDue": false
    }
  },
  "Metadata": {
    "sys": {
      "MethodName": "function_timer",
      "UtcNow": "2026-11-23T07:00:00.0123456Z",
      "RandGuid": "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11"
    }
  }
}"#;

    #[test]
    fn the_hosts_timer_payload_parses() {
        let req: InvokeRequest = serde_json::from_str(TIMER).unwrap();
        let timer: TimerInfo = req.binding("timer").unwrap().unwrap();
        assert!(!timer.is_past_due);
        assert_eq!(
            timer.schedule_status.unwrap().next.as_deref(),
            Some("2026-11-23T07:00:00+00:00")
        );
        assert_eq!(req.utc_now(), Some("2026-11-23T07:00:00.0123456Z"));
    }

    #[test]
    fn a_timer_value_given_as_a_json_string_with_a_null_status_parses() {
        let body = serde_json::json!({
            "Data": { "timer": "{\"Schedule\":{\"AdjustForDST\":true},\"ScheduleStatus\":null,\"IsPastDue\":true}" },
            "Metadata": {}
        });
        let req: InvokeRequest = serde_json::from_value(body).unwrap();
        let timer: TimerInfo = req.binding("timer").unwrap().unwrap();
        assert!(timer.is_past_due);
        assert_eq!(timer.schedule_status, None);
    }

    #[test]
    fn a_timer_value_of_the_wrong_shape_is_an_error_naming_the_binding() {
        let req: InvokeRequest =
            serde_json::from_value(serde_json::json!({"Data": {"timer": {"IsPastDue": "often"}}}))
                .unwrap();
        let err = req.binding::<TimerInfo>("timer").unwrap_err();
        assert!(err.starts_with("Data.timer:"), "{err}");
    }

    #[test]
    fn a_wrapped_http_request_gives_its_body_and_headers() {
        let req: WrappedHttpRequest = serde_json::from_value(serde_json::json!({
            "Url": "https://x/api/function_http?code=k",
            "Method": "POST",
            "Query": { "code": "k" },
            "Headers": { "Content-Type": ["application/json"], "X-Azure-Functions-InvocationId": "abc" },
            "Params": {},
            "Identities": [],
            "Body": { "dryRun": true }
        }))
        .unwrap();
        assert_eq!(req.body_bytes(), br#"{"dryRun":true}"#);
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.query.get("code").and_then(QueryValue::first), Some("k"));
    }
}
