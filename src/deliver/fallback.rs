//! A primary channel with fallbacks: when the Teams bot cannot reach an owner (app not
//! installable, blocked, no licence, throttled out of retries), the next channel tries.

use super::{Delivery, DeliveryError, Notifier, OutgoingReminder};
use async_trait::async_trait;
use std::sync::Arc;

/// Tries each channel in order until one delivers.
pub struct FallbackNotifier {
    chain: Vec<Arc<dyn Notifier>>,
}

impl FallbackNotifier {
    /// A chain: the first channel is the primary. Panics on an empty chain (a wiring bug).
    pub fn new(chain: Vec<Arc<dyn Notifier>>) -> Self {
        assert!(
            !chain.is_empty(),
            "a fallback chain needs at least one channel"
        );
        Self { chain }
    }
}

fn why(e: &DeliveryError) -> String {
    match &e.code {
        Some(code) => format!("{}: {} ({code})", e.channel, e.reason),
        None => format!("{}: {}", e.channel, e.reason),
    }
}

#[async_trait]
impl Notifier for FallbackNotifier {
    fn channel(&self) -> &str {
        self.chain[0].channel()
    }

    fn describe(&self) -> String {
        self.chain
            .iter()
            .map(|n| n.describe())
            .collect::<Vec<_>>()
            .join(", else ")
    }

    async fn send(&self, msg: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
        let mut failures: Vec<DeliveryError> = Vec::new();
        for notifier in &self.chain {
            match notifier.send(msg).await {
                Ok(mut d) => {
                    if !failures.is_empty() {
                        let reasons: Vec<String> = failures.iter().map(why).collect();
                        d.fell_back = Some(match d.fell_back.take() {
                            Some(inner) => format!("{}; {inner}", reasons.join("; ")),
                            None => reasons.join("; "),
                        });
                    }
                    return Ok(d);
                }
                // A disabled account is not reachable by any channel: skip, don't fall back.
                Err(e) if e.skip => return Err(e),
                // A transient failure (timeout, 5xx or throttling out of retries) may have
                // been delivered after all: another channel could make it two messages.
                // It fails now and the next run retries it on the primary channel.
                Err(e) if e.transient => {
                    failures.push(e);
                    break;
                }
                Err(e) => failures.push(e),
            }
        }
        let last = failures.pop().expect("the chain is not empty");
        if failures.is_empty() {
            return Err(last);
        }
        let earlier: Vec<String> = failures.iter().map(why).collect();
        Err(DeliveryError {
            reason: format!("{} (after {})", last.reason, earlier.join("; ")),
            transient: last.transient || failures.iter().any(|f| f.transient),
            ..last
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<(), DeliveryError>);

    #[async_trait]
    impl Notifier for Fixed {
        fn channel(&self) -> &str {
            self.0
        }
        fn describe(&self) -> String {
            self.0.into()
        }
        async fn send(&self, _: &OutgoingReminder) -> Result<Delivery, DeliveryError> {
            self.1.clone().map(|_| Delivery {
                channel: self.0.into(),
                attempts: 1,
                ..Default::default()
            })
        }
    }

    fn reminder() -> OutgoingReminder {
        use crate::plan::{PlannedReminder, Stage};
        OutgoingReminder {
            run_id: "r".into(),
            reminder: PlannedReminder {
                owner: crate::domain::OwnerEmail::parse("a@contoso.com").unwrap(),
                stage: Stage::First,
                escalate: false,
                team_told: false,
                devices: vec![],
            },
            messages: vec![],
            cached_conversation: None,
            verbose: false,
        }
    }

    fn failing(channel: &'static str, reason: &str, skip: bool) -> Arc<dyn Notifier> {
        let mut e = DeliveryError::permanent(channel, reason);
        e.skip = skip;
        e.code = Some("BotNotInConversationRoster".into()).filter(|_| channel == "teams_bot");
        Arc::new(Fixed(channel, Err(e)))
    }

    #[tokio::test]
    async fn the_fallback_delivers_and_says_why_the_primary_failed() {
        let chain = FallbackNotifier::new(vec![
            failing("teams_bot", "app not installed", false),
            Arc::new(Fixed("email", Ok(()))),
        ]);
        let d = chain.send(&reminder()).await.unwrap();
        assert_eq!(d.channel, "email");
        assert_eq!(
            d.fell_back.as_deref(),
            Some("teams_bot: app not installed (BotNotInConversationRoster)")
        );
    }

    #[tokio::test]
    async fn a_disabled_account_is_skipped_without_falling_back() {
        let chain = FallbackNotifier::new(vec![
            failing("teams_bot", "account disabled", true),
            Arc::new(Fixed("email", Ok(()))),
        ]);
        let e = chain.send(&reminder()).await.unwrap_err();
        assert!(e.skip);
        assert_eq!(e.reason, "account disabled");
    }

    #[tokio::test]
    async fn when_every_channel_fails_the_error_names_each_reason() {
        let chain = FallbackNotifier::new(vec![
            failing("teams_bot", "user not found", false),
            failing("email", "HTTP 400", false),
        ]);
        let e = chain.send(&reminder()).await.unwrap_err();
        assert_eq!(e.channel, "email");
        assert!(
            e.reason.contains("HTTP 400") && e.reason.contains("teams_bot: user not found"),
            "{}",
            e.reason
        );
    }

    #[tokio::test]
    async fn a_transient_failure_that_may_have_been_delivered_does_not_fall_back() {
        let mut timed_out = DeliveryError::permanent("teams_bot", "timed out");
        timed_out.transient = true;
        let chain = FallbackNotifier::new(vec![
            Arc::new(Fixed("teams_bot", Err(timed_out))),
            Arc::new(Fixed("email", Ok(()))),
        ]);
        let e = chain.send(&reminder()).await.unwrap_err();
        assert_eq!(e.channel, "teams_bot");
        assert!(e.transient);
    }
}
