//! The pace of each endpoint the channels call, shared by every channel and by escalation.
//!
//! A service limits a caller per endpoint (per app, per mailbox), not per client object: when
//! the Teams bot, its e-mail fallback and the managers' copies each paced themselves, one
//! mailbox got the configured rate several times over. The wiring builds one set of limits
//! per run and hands the same `Arc`s to everything that calls a given endpoint.
//!
//! One limiter per documented limit (each adaptive: it backs off on 429 and creeps back):
//!
//! | limiter | default | Microsoft's documented limit |
//! |---|---|---|
//! | `graph_teams` | 30/s | Graph, Microsoft Teams service limits: 30 rps per app per tenant for `GET`/`POST …/installedApps` and other Teams GET calls (`…/installedApps/{id}/chat`) — <https://learn.microsoft.com/graph/throttling-limits#microsoft-teams-service-limits> |
//! | `graph` | 150/s | Graph global limit 130,000 requests / 10 s per app; directory reads far above 150/s — same page |
//! | `bot` | 50/s | Bot Connector global limit, 50 rps per app per tenant, every operation counted — <https://learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit> |
//! | `bot_conversation` | 7 at once, then 1 per 2 s | per bot per thread: 7 / 1 s, 8 / 2 s, 60 / 30 s, 1,800 / 3,600 s — same page |
//! | `mail` | 10/s, 4 in flight | Exchange Online via Graph: 10,000 requests / 10 min and 4 concurrent per app per mailbox — <https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits> |

use crate::config::DeliverySettings;
use crate::http::{KeyedRateLimiter, RateLimiter};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub(crate) use crate::graph::MAX_CONCURRENT_SENDS;

/// Bot Connector requests one conversation may take at once (7 per second documented).
pub(crate) const CONVERSATION_BURST: u32 = 7;

/// Bot Connector requests per second one conversation sustains: 1,800 per hour documented
/// is 0.5/s; a burst of 7 then 0.5/s also keeps 8 per 2 s and 60 per 30 s.
pub(crate) const CONVERSATION_RATE: f64 = 0.5;

/// One limiter per endpoint, plus the mailbox's concurrency limit.
#[derive(Clone, Debug)]
pub struct DeliveryLimits {
    /// Microsoft Graph directory reads: users, managers (`REMINDERS_GRAPH_RATE_PER_SECOND`).
    pub graph: Arc<RateLimiter>,
    /// Graph's Teams endpoints: app installations and their chats
    /// (`REMINDERS_GRAPH_TEAMS_RATE_PER_SECOND`).
    pub graph_teams: Arc<RateLimiter>,
    /// The Bot Connector, every operation (`REMINDERS_RATE_PER_SECOND`).
    pub bot: Arc<RateLimiter>,
    /// The Bot Connector per conversation ([`CONVERSATION_BURST`], [`CONVERSATION_RATE`]).
    pub(crate) bot_conversation: Arc<KeyedRateLimiter>,
    /// The Workflows webhook (`REMINDERS_RATE_PER_SECOND`; another service than the bot's).
    pub webhook: Arc<RateLimiter>,
    /// Graph `sendMail` from the shared mailbox (`REMINDERS_MAIL_RATE_PER_SECOND`): the
    /// e-mail channel and the managers' copies alike.
    pub mail: Arc<RateLimiter>,
    /// `sendMail` requests in flight from the shared mailbox, at most [`MAX_CONCURRENT_SENDS`].
    pub(crate) mail_in_flight: Arc<Semaphore>,
}

impl DeliveryLimits {
    /// The Graph limiters among these (the same `Arc`s), for the run's [`GraphClient`].
    ///
    /// [`GraphClient`]: crate::graph::GraphClient
    pub(crate) fn graph_limits(&self) -> crate::graph::GraphLimits {
        crate::graph::GraphLimits {
            directory: self.graph.clone(),
            teams: self.graph_teams.clone(),
            mail: self.mail.clone(),
            mail_in_flight: self.mail_in_flight.clone(),
        }
    }

    /// Fresh limits at the configured rates.
    pub fn from_settings(settings: &DeliverySettings) -> Self {
        Self {
            graph: Arc::new(RateLimiter::new(settings.graph_rate_per_second, 1)),
            graph_teams: Arc::new(RateLimiter::new(settings.graph_teams_rate_per_second, 1)),
            bot: Arc::new(RateLimiter::new(settings.rate_per_second, 1)),
            bot_conversation: Arc::new(KeyedRateLimiter::new(
                CONVERSATION_RATE,
                CONVERSATION_BURST,
            )),
            webhook: Arc::new(RateLimiter::new(settings.rate_per_second, 1)),
            mail: Arc::new(RateLimiter::new(settings.mail_rate_per_second, 1)),
            mail_in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_same_limiters() {
        let settings = DeliverySettings {
            mail_rate_per_second: 2.0,
            ..Default::default()
        };
        let a = DeliveryLimits::from_settings(&settings);
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.mail, &b.mail));
        assert!(Arc::ptr_eq(&a.mail_in_flight, &b.mail_in_flight));
        assert!(!Arc::ptr_eq(&a.bot, &a.webhook));
        assert!(!Arc::ptr_eq(&a.graph, &a.graph_teams));
        assert!(Arc::ptr_eq(&a.graph_teams, &b.graph_teams));
        assert!(Arc::ptr_eq(&a.bot_conversation, &b.bot_conversation));
        assert_eq!(a.graph_teams.rate(), 30.0);
        assert_eq!(a.bot.rate(), 47.5);
        assert_eq!(a.mail.rate(), 2.0);
        let graph = a.graph_limits();
        assert!(Arc::ptr_eq(&graph.directory, &b.graph));
        assert!(Arc::ptr_eq(&graph.teams, &b.graph_teams));
        assert!(Arc::ptr_eq(&graph.mail, &b.mail));
        assert!(Arc::ptr_eq(&graph.mail_in_flight, &b.mail_in_flight));
    }
}
