//! Workflows webhook: POST the card to a Power Automate "When a Teams webhook request is
//! received" flow, with the recipient as a top-level field the flow reads.
//!
//! The URL carries its signature (`sig=`): it is a [`Secret`], never logged, and every error
//! text is passed through [`Secret::redact`] in case a service echoes it back.

use super::{failure_for, ADAPTIVE_CARD};
use super::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use crate::config::{DeliverySettings, Secret};
use crate::http::{HttpClient, RateLimiter, RetryPolicy};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;

const CHANNEL: &str = "workflows";

/// Posts reminders to a Workflows webhook.
#[derive(Clone)]
pub struct WorkflowsNotifier {
    http: HttpClient,
    url: Secret,
}

impl WorkflowsNotifier {
    /// A notifier from the delivery settings (`REMINDERS_WORKFLOWS_URL` is required).
    pub fn new(
        settings: &DeliverySettings,
        client: reqwest::Client,
    ) -> Result<Self, crate::config::ConfigError> {
        let url = settings.workflows_url.clone().ok_or_else(|| {
            crate::config::ConfigError::missing(
                "REMINDERS_WORKFLOWS_URL",
                "when REMINDERS_CHANNEL includes workflows",
            )
        })?;
        Ok(Self::with_url(url, settings.rate_per_second, client))
    }

    /// A notifier from the delivery settings paced by the run's shared webhook limiter.
    pub fn new_with_limits(
        settings: &DeliverySettings,
        client: reqwest::Client,
        limits: &super::DeliveryLimits,
    ) -> Result<Self, crate::config::ConfigError> {
        let mut notifier = Self::new(settings, client)?;
        notifier.http = notifier.http.with_rate_limit(limits.webhook.clone());
        Ok(notifier)
    }

    /// A notifier posting to `url`, at most `rate_per_second`.
    pub fn with_url(url: Secret, rate_per_second: f64, client: reqwest::Client) -> Self {
        let limiter = Arc::new(RateLimiter::new(rate_per_second, 1));
        Self {
            http: HttpClient::new("workflows webhook", client).with_rate_limit(limiter),
            url,
        }
    }

    /// Uses `policy` (tests shorten the delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.http = self.http.with_policy(policy);
        self
    }
}

/// The body a Workflows flow expects: a message with one Adaptive Card attachment, plus the
/// recipient the flow posts to.
pub(crate) fn webhook_body(recipient: Option<&str>, card: &serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "type": "message",
        "attachments": [{ "contentType": ADAPTIVE_CARD, "contentUrl": null, "content": card }],
    });
    if let Some(r) = recipient {
        body["recipient"] = json!(r);
    }
    body
}

/// Posts `body` to the secret `url` through `http`; errors are redacted.
pub(super) async fn post_webhook(
    http: &HttpClient,
    url: &Secret,
    body: &serde_json::Value,
    channel: &str,
) -> Result<u32, DeliveryError> {
    match http
        .post_message(|| http.client().post(url.expose()).json(body), None)
        .await
    {
        Ok(out) => Ok(out.attempts),
        Err(e) => {
            let mut err = failure_for(channel, "the webhook refused the message", &e);
            err.reason = url.redact(&err.reason);
            err.code = err.code.map(|c| url.redact(&c));
            Err(err)
        }
    }
}

#[async_trait]
impl Notifier for WorkflowsNotifier {
    fn channel(&self) -> &str {
        CHANNEL
    }

    fn describe(&self) -> String {
        // Never the URL: it carries the signature.
        "Workflows webhook (URL hidden)".into()
    }

    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let rendered = msg.message_for(None);
        let body = webhook_body(Some(msg.owner().as_str()), &rendered.card);
        let attempts = post_webhook(&self.http, &self.url, &body, CHANNEL).await?;
        Ok(Delivery {
            channel: CHANNEL.into(),
            language: Some(rendered.language.clone()),
            attempts,
            ..Default::default()
        })
    }
}
