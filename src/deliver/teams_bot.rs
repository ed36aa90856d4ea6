//! Teams bot, proactive 1:1: resolve the owner in Graph, make sure the bot's Teams app is
//! installed for them, get the 1:1 conversation and post the Adaptive Card through the Bot
//! Connector.
//!
//! Calls per new owner, fewest on Graph's throttled Teams endpoints (30/s per app per
//! tenant): the user lookup (Graph directory), `POST …/installedApps` (409 = already there,
//! no listing first), `POST {serviceUrl}v3/conversations` (Bot Connector, idempotent) and
//! the activity. An owner whose conversation id is in the ledger costs the lookup and the
//! activity. Without `REMINDERS_BOT_APP_ID` and `REMINDERS_TENANT_ID`, the conversation is
//! Graph's 1:1 chat instead (installation listing + chat lookup: two more Teams calls).
//! An escalated reminder names the owner's manager (looked up by the owner's object id
//! after the owner's message is posted); the job then e-mails each manager one summary of
//! all their reports (see `escalation`).
//!
//! Each documented limit has its own limiter, from the run's [`DeliveryLimits`] shared with
//! the other channels and escalation: Graph directory, Graph Teams, the Bot Connector per
//! app and per conversation.

use super::escalation::{Escalation, Escalator, ManagerSummary};
use super::{
    failure_for, Delivery, DeliveryError, DeliveryLimits, Notifier, OutgoingReminder, ADAPTIVE_CARD,
};
use crate::config::DeliverySettings;
use crate::graph::{GraphClient, GraphError, Pace};
use crate::http::{
    encode_segment, AccessTokens, HttpClient, HttpError, KeyedRateLimiter, RetryPolicy,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tracing::{debug, instrument, warn};

const CHANNEL: &str = "teams_bot";

/// Teams keeps a bot message under about 28 KB; bigger ones are refused with 413.
pub(crate) const MAX_ACTIVITY_BYTES: usize = 28 * 1024;

/// Sends reminders as a proactive 1:1 message from the Teams bot.
#[derive(Clone)]
pub struct TeamsBotNotifier {
    /// Directory lookups, app installs and chats, through the run's one Graph client.
    graph: GraphClient,
    bot: HttpClient,
    bot_conversation: Arc<KeyedRateLimiter>,
    /// Bot Connector tokens (the Graph client holds its own reference for Graph's scope).
    tokens: Arc<dyn AccessTokens>,
    bot_url: String,
    bot_scope: String,
    teams_app_id: String,
    bot_app_id: Option<String>,
    tenant_id: Option<String>,
    escalator: Option<Escalator>,
}

/// The Graph user fields the bot needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GraphUser {
    /// Entra object id.
    pub id: String,
    /// `fr-FR`…, when set.
    #[serde(default)]
    pub preferred_language: Option<String>,
    /// `false` for a disabled account.
    #[serde(default)]
    pub account_enabled: Option<bool>,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<String>,
}

/// The `$select` of the bot's user lookup.
const USER_SELECT: &[&str] = &[
    "id",
    "displayName",
    "mail",
    "userPrincipalName",
    "preferredLanguage",
    "accountEnabled",
];

impl TeamsBotNotifier {
    /// A notifier from the delivery settings (`REMINDERS_TEAMS_APP_ID` is required), with
    /// tokens from `tokens`, connections from `client` and a Graph client and limits of its
    /// own (a run shares them: [`Self::with_graph`]).
    pub fn new(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
    ) -> Result<Self, crate::config::ConfigError> {
        let limits = DeliveryLimits::from_settings(settings);
        Self::new_with_limits(settings, tokens, client, &limits)
    }

    /// A notifier paced by `limits`, shared with the other channels of the run (a Graph
    /// client over them is built here; the wiring passes its own to [`Self::with_graph`]).
    pub fn new_with_limits(
        settings: &DeliverySettings,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
        limits: &DeliveryLimits,
    ) -> Result<Self, crate::config::ConfigError> {
        let graph = GraphClient::new(
            &settings.graph,
            tokens.clone(),
            client.clone(),
            limits.graph_limits(),
        );
        Self::with_graph(settings, graph, tokens, client, limits)
    }

    /// A notifier calling Graph through the run's `graph` client and the Bot Connector with
    /// `tokens` over `client`, paced by the run's `limits`.
    pub(crate) fn with_graph(
        settings: &DeliverySettings,
        graph: GraphClient,
        tokens: Arc<dyn AccessTokens>,
        client: reqwest::Client,
        limits: &DeliveryLimits,
    ) -> Result<Self, crate::config::ConfigError> {
        let teams_app_id = settings.teams_app_id.clone().ok_or_else(|| {
            crate::config::ConfigError::missing(
                "REMINDERS_TEAMS_APP_ID",
                "when REMINDERS_CHANNEL includes teams_bot",
            )
        })?;
        Ok(Self {
            escalator: Escalator::from_settings(settings, graph.clone()),
            graph,
            bot: HttpClient::new("bot connector", client).with_rate_limit(limits.bot.clone()),
            bot_conversation: limits.bot_conversation.clone(),
            tokens,
            bot_url: settings.bot_service_url.trim_end_matches('/').to_string(),
            bot_scope: settings.bot_scope.clone(),
            teams_app_id,
            bot_app_id: settings.bot_app_id.clone(),
            tenant_id: settings.tenant_id.clone(),
        })
    }

    /// Uses `policy` for Graph and Bot Connector calls (tests shorten the delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.graph = self.graph.with_policy(policy.clone());
        self.escalator = self.escalator.map(|e| e.with_policy(policy.clone()));
        self.bot = self.bot.with_policy(policy);
        self
    }

    /// The Bot Connector client (its counters: attempts, 429s, retries).
    pub fn bot_client(&self) -> &HttpClient {
        &self.bot
    }

    /// The Graph client for the Teams endpoints (installations, chats).
    pub fn graph_teams_client(&self) -> &HttpClient {
        self.graph.http(Pace::Teams)
    }

    /// `GET /users/{upn}` with the fields the bot needs.
    #[instrument(skip_all)]
    pub(crate) async fn resolve_user(&self, upn: &str) -> Result<GraphUser, GraphError> {
        self.graph.user(upn, USER_SELECT).await
    }

    /// The 1:1 conversation with the user, the app installed first when `install`.
    ///
    /// With the bot's app id and the tenant known, the conversation comes from the Bot
    /// Connector (`POST v3/conversations`, idempotent): one call on Graph's Teams endpoints
    /// (the install) per new owner. Without them, Graph's installation listing and chat
    /// lookup give it, two more Teams calls.
    async fn conversation(&self, user_id: &str, install: bool) -> Result<String, DeliveryError> {
        if install {
            self.graph
                .install_app(user_id, &self.teams_app_id)
                .await
                .map_err(|e| failure("cannot install the Teams app for the user", e.http()))?;
        }
        if let Some((bot_app_id, tenant_id)) =
            self.bot_app_id.as_deref().zip(self.tenant_id.as_deref())
        {
            return self
                .create_conversation(user_id, bot_app_id, tenant_id)
                .await
                .map_err(|e| failure("cannot create the 1:1 conversation with the bot", &e))?
                .ok_or_else(|| {
                    DeliveryError::permanent(
                        CHANNEL,
                        "the bot connector created a conversation without an id",
                    )
                });
        }
        let installation_id = self
            .graph
            .installation(user_id, &self.teams_app_id)
            .await
            .map_err(|e| failure("cannot list the user's Teams apps", e.http()))?
            .ok_or_else(|| {
                DeliveryError::permanent(
                    CHANNEL,
                    "the Teams app is not installed after installing it",
                )
            })?;
        self.graph
            .chat(user_id, &installation_id)
            .await
            .map_err(|e| failure("cannot get the 1:1 chat with the bot", e.http()))?
            .ok_or_else(|| DeliveryError::permanent(CHANNEL, "graph returned a chat without an id"))
    }

    /// `POST {serviceUrl}/v3/conversations`: the 1:1 conversation between the bot and the
    /// user, created (or found: Teams answers the same id again) by the Bot Connector.
    #[instrument(skip_all)]
    async fn create_conversation(
        &self,
        user_id: &str,
        bot_app_id: &str,
        tenant_id: &str,
    ) -> Result<Option<String>, HttpError> {
        let url = format!("{}/v3/conversations", self.bot_url);
        let body = conversation_parameters(bot_app_id, tenant_id, user_id);
        let out = self
            .bot
            .send(
                || self.bot.client().post(&url).json(&body),
                Some((self.tokens.as_ref(), self.bot_scope.as_str())),
            )
            .await?;
        let created: IdOnly = out.json("bot connector")?;
        Ok(created.id.filter(|id| !id.is_empty()))
    }

    /// After the owner's message: the manager to tell (by the owner's object id) and the
    /// report text; the manager is told once per run in their summary, not here.
    async fn escalate(
        &self,
        msg: &OutgoingReminder,
        user_id: &str,
    ) -> (Option<String>, Option<crate::domain::OwnerEmail>) {
        let Some(escalator) = self.escalator.as_ref() else {
            return (None, None);
        };
        match escalator.find(msg, user_id).await {
            None => (None, None),
            Some(Escalation::Manager(manager)) => {
                let note = if escalator.can_mail() {
                    "told in the manager's summary"
                } else {
                    "not told: no REMINDERS_SENDER_MAILBOX to send from"
                };
                (
                    Some(Escalation::Manager(manager.clone()).report(note)),
                    escalator.can_mail().then_some(manager),
                )
            }
            Some(nobody) => (Some(nobody.report("")), None),
        }
    }

    async fn post_activity(
        &self,
        conversation: &str,
        activity: &serde_json::Value,
    ) -> Result<(Option<String>, u32), HttpError> {
        let url = format!(
            "{}/v3/conversations/{}/activities",
            self.bot_url,
            encode_segment(conversation)
        );
        // One conversation has its own, much lower limit (a retry after a 429 waits the
        // service's Retry-After, longer than this pace's interval).
        self.bot_conversation.acquire(conversation).await;
        let out = self
            .bot
            .post_message(
                || self.bot.client().post(&url).json(activity),
                Some((self.tokens.as_ref(), self.bot_scope.as_str())),
            )
            .await?;
        let id: IdOnly = serde_json::from_slice(&out.body).unwrap_or(IdOnly { id: None });
        Ok((id.id, out.attempts))
    }
}

/// The Bot Framework activity for a rendered message: the card, with the subject as the
/// notification `summary` and as `text` for clients that cannot show cards. (The full plain
/// text is not used as `text`: Teams would show it above the card, saying everything twice.)
pub fn activity(message: &crate::render::RenderedMessage) -> serde_json::Value {
    json!({
        "type": "message",
        "summary": message.subject,
        "text": message.subject,
        "attachments": [{ "contentType": ADAPTIVE_CARD, "content": message.card }],
    })
}

/// The Bot Connector `ConversationParameters` of a 1:1 conversation with `user_id` (the
/// Entra object id, which Teams accepts as the member id). The tenant is given both ways
/// Teams reads it: `channelData.tenant.id` and `tenantId`.
pub(crate) fn conversation_parameters(
    bot_app_id: &str,
    tenant_id: &str,
    user_id: &str,
) -> serde_json::Value {
    let bot_id = if bot_app_id.starts_with("28:") {
        bot_app_id.to_string()
    } else {
        format!("28:{bot_app_id}")
    };
    json!({
        "bot": { "id": bot_id },
        "members": [{ "id": user_id }],
        "channelData": { "tenant": { "id": tenant_id } },
        "tenantId": tenant_id,
        "isGroup": false,
    })
}

fn failure(context: &str, e: &HttpError) -> DeliveryError {
    failure_for(CHANNEL, context, e)
}

#[async_trait]
impl Notifier for TeamsBotNotifier {
    fn channel(&self) -> &str {
        CHANNEL
    }

    async fn send_manager_summary(
        &self,
        summary: &ManagerSummary,
    ) -> Option<Result<bool, DeliveryError>> {
        let escalator = self.escalator.as_ref()?;
        Some(
            escalator
                .send_summary(summary)
                .await
                .map_err(|e| failure_for("email", "cannot e-mail the manager's summary", e.http())),
        )
    }

    fn describe(&self) -> String {
        format!(
            "Teams bot via {} (Teams app {})",
            self.bot_url, self.teams_app_id
        )
    }

    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let user = match self.resolve_user(msg.owner().as_str()).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => {
                // The ordinary "not in Teams" case: the fallback channel takes it.
                warn!(owner = %msg.owner().for_log(msg.verbose), "user not found in the directory");
                return Err(DeliveryError {
                    code: e.http().code().map(str::to_string),
                    ..DeliveryError::permanent(CHANNEL, "user not found")
                });
            }
            Err(e) => return Err(failure("cannot look the user up", e.http())),
        };
        if user.account_enabled == Some(false) {
            return Err(DeliveryError {
                skip: true,
                ..DeliveryError::permanent(CHANNEL, "account disabled")
            });
        }
        let rendered = msg.message_for(user.preferred_language.as_deref());
        let activity = activity(rendered);
        let size = serde_json::to_vec(&activity)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_ACTIVITY_BYTES {
            return Err(DeliveryError::permanent(
                CHANNEL,
                format!(
                    "message too large for Teams: {} KB (limit 28 KB)",
                    size.div_ceil(1024)
                ),
            ));
        }

        let (mut conversation, mut cached) = match &msg.cached_conversation {
            Some(c) => (c.clone(), true),
            None => (self.conversation(&user.id, true).await?, false),
        };
        let mut attempts = 0;
        let mut reinstalled = false;
        loop {
            match self.post_activity(&conversation, &activity).await {
                Ok((message_id, n)) => {
                    attempts += n;
                    let (escalated_to, manager) = self.escalate(msg, &user.id).await;
                    return Ok(Delivery {
                        channel: CHANNEL.into(),
                        message_id,
                        conversation_id: Some(conversation),
                        language: Some(rendered.language.clone()),
                        fell_back: None,
                        attempts,
                        escalated_to,
                        manager,
                    });
                }
                Err(e) => {
                    attempts += e.attempts();
                    match e.status() {
                        // The cached conversation is gone (chat deleted, app reinstalled):
                        // look it up afresh once.
                        Some(404) if cached => {
                            debug!("cached conversation not found: looking it up again");
                            cached = false;
                            // The app is most likely still installed: Bot Connector
                            // creation needs no install; Graph's chat lookup lists it anyway.
                            conversation = self.conversation(&user.id, false).await?;
                        }
                        // The app was uninstalled or blocked: install it again once.
                        Some(403)
                            if !reinstalled
                                && e.code().is_none_or(|c| c == "BotNotInConversationRoster") =>
                        {
                            debug!(
                                code = e.code().unwrap_or(""),
                                "bot not in the conversation: reinstalling the app once"
                            );
                            reinstalled = true;
                            cached = false;
                            conversation = self.conversation(&user.id, true).await?;
                        }
                        Some(403) => return Err(failure(
                            "the bot cannot message the user (Teams app not installed or blocked)",
                            &e,
                        )),
                        _ => return Err(failure("cannot post the message", &e)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_parameters_name_the_bot_the_member_by_object_id_and_the_tenant() {
        let p = conversation_parameters("bot-app", "tenant-1", "user-oid");
        assert_eq!(p["bot"]["id"], "28:bot-app");
        assert_eq!(p["members"], json!([{ "id": "user-oid" }]));
        assert_eq!(p["channelData"]["tenant"]["id"], "tenant-1");
        assert_eq!(p["tenantId"], "tenant-1");
        assert_eq!(p["isGroup"], false);
        // An id already in `28:` form is not prefixed twice.
        let p = conversation_parameters("28:bot-app", "t", "u");
        assert_eq!(p["bot"]["id"], "28:bot-app");
    }
}
