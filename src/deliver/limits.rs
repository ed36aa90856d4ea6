//! The pace of each endpoint the channels call, shared by every channel and by escalation.
//!
//! A service limits a caller per endpoint (per app, per mailbox), not per client object: when
//! the Teams bot, its e-mail fallback and the managers' copies each paced themselves, one
//! mailbox got the configured rate several times over. The wiring builds one set of limits
//! per run and hands the same `Arc`s to everything that calls a given endpoint.

use crate::config::DeliverySettings;
use crate::http::RateLimiter;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Exchange Online's concurrent request limit per mailbox.
pub const MAX_CONCURRENT_SENDS: usize = 4;

/// One limiter per endpoint, plus the mailbox's concurrency limit.
#[derive(Clone, Debug)]
pub struct DeliveryLimits {
    /// Microsoft Graph reads and installs (`REMINDERS_GRAPH_RATE_PER_SECOND`).
    pub graph: Arc<RateLimiter>,
    /// The Bot Connector (`REMINDERS_RATE_PER_SECOND`).
    pub bot: Arc<RateLimiter>,
    /// The Workflows webhook (`REMINDERS_RATE_PER_SECOND`; another service than the bot's).
    pub webhook: Arc<RateLimiter>,
    /// Graph `sendMail` from the shared mailbox (`REMINDERS_MAIL_RATE_PER_SECOND`): the
    /// e-mail channel and the managers' copies alike.
    pub mail: Arc<RateLimiter>,
    /// `sendMail` requests in flight from the shared mailbox, at most [`MAX_CONCURRENT_SENDS`].
    pub mail_in_flight: Arc<Semaphore>,
}

impl DeliveryLimits {
    /// Fresh limits at the configured rates.
    pub fn from_settings(settings: &DeliverySettings) -> Self {
        Self {
            graph: Arc::new(RateLimiter::new(settings.graph_rate_per_second, 1)),
            bot: Arc::new(RateLimiter::new(settings.rate_per_second, 1)),
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
        assert_eq!(a.mail.rate(), 2.0);
    }
}
