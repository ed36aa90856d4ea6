//! Settings of the delivery channels (outbox, Teams bot, Workflows webhook, e-mail, digest).
//! (Owned by the Teams delivery work; the core only needs the outbox.)

use super::{ConfigError, Env};

/// A delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// Local folder.
    Outbox,
}

impl ChannelKind {
    /// Reads a channel name.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_lowercase().as_str() {
            "outbox" => Some(ChannelKind::Outbox),
            _ => None,
        }
    }
}

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Primary channel then fallbacks.
    pub channels: Vec<ChannelKind>,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Refuse to message more owners than this in one run unless forced.
    pub max_owners_per_run: usize,
}

impl DeliverySettings {
    /// Reads `REMINDERS_CHANNEL`, `REMINDERS_CONCURRENCY`, `REMINDERS_MAX_OWNERS_PER_RUN`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut channels = Vec::new();
        for name in env.list("REMINDERS_CHANNEL") {
            channels.push(ChannelKind::parse(&name).ok_or_else(|| {
                ConfigError::invalid("REMINDERS_CHANNEL", &name, "expected outbox")
            })?);
        }
        if channels.is_empty() {
            channels.push(ChannelKind::Outbox);
        }
        let concurrency = env.parse_or("REMINDERS_CONCURRENCY", 16usize)?;
        if concurrency == 0 {
            return Err(ConfigError::invalid("REMINDERS_CONCURRENCY", "0", "must be greater than zero"));
        }
        Ok(Self {
            channels,
            concurrency,
            max_owners_per_run: env.parse_or("REMINDERS_MAX_OWNERS_PER_RUN", 2000usize)?,
        })
    }
}
