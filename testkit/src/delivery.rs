//! Delivery set-up shared by the delivery tests (`tests/it/deliver_*`) and the delivery
//! benchmarks (`testkit::bench`): the Teams app the fakes' catalog holds, settings aimed at
//! the fakes, and the built-in templates.

use crate::fake_bot::FakeBot;
use crate::fake_graph::FakeGraph;
use lookout_reminders::config::{DeliverySettings, GraphSettings};
use lookout_reminders::render::{MessageConstants, Renderer};

/// The Teams app's catalog id in the fake Graph.
pub const CATALOG_APP_ID: &str = "5f0b4d2e-3c1a-4b7e-9d8f-1a2b3c4d5e6f";

/// Delivery settings aimed at `graph` and `bot` with the catalog's Teams app; every other
/// setting (paces, ids, mailbox) at its default, for the caller to set.
pub fn aimed_at(graph: &FakeGraph, bot: &FakeBot) -> DeliverySettings {
    DeliverySettings {
        graph: GraphSettings::at(&graph.base_url()).expect("the fake Graph's URL"),
        bot_service_url: bot.service_url(),
        teams_app_id: Some(CATALOG_APP_ID.into()),
        ..Default::default()
    }
}

/// The built-in templates, French (the default) then English.
pub fn renderer() -> Renderer {
    Renderer::new(
        None,
        &["fr".to_string(), "en".to_string()],
        MessageConstants {
            contact: "help@contoso.com".into(),
            signature: "IT".into(),
            grace_days: 30,
            by_language: Default::default(),
            time_zone: chrono_tz::Europe::Paris,
        },
    )
    .expect("built-in templates render")
}
