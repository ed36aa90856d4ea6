//! Integration tests: one binary, one module per area. The fakes and the Azurite harness
//! live in the `testkit` crate (shared with the benchmark examples) and are named here as
//! `crate::fake_bot`, `crate::azurite`… like the test modules.

use testkit::{
    azurite, fake_bot, fake_graph, fake_identity, fake_sharepoint, fake_webhook, outage,
};

mod azure_ledger;
mod azure_sources;
mod chromium;
mod cli;
mod deliver_channels;
mod deliver_email_language;
mod deliver_escalation;
mod deliver_faults;
mod deliver_helpers;
mod deliver_job;
mod deliver_teams;
mod functions_files;
mod functions_host;
mod functions_requests;
mod functions_runs;
mod grant_permissions;
mod helpers;
mod infra_settings;
mod insights;
mod job;
mod job_progress;
mod layers;
mod ledger_checkpoint;
mod local_ledger;
mod package;
mod parse;
mod parse_robustness;
mod parse_zones;
mod preview;
mod teams_app;
