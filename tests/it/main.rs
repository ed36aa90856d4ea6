//! Integration tests: one binary, one module per area.

mod azure_ledger;
mod azure_sources;
mod azurite;
mod chromium;
mod cli;
mod deliver_channels;
mod deliver_email_language;
mod deliver_escalation;
mod deliver_faults;
mod deliver_helpers;
mod deliver_job;
mod deliver_teams;
mod fake_bot;
mod fake_graph;
mod fake_identity;
mod functions_files;
mod functions_host;
mod functions_requests;
mod functions_runs;
mod helpers;
mod insights;
mod job;
mod local_ledger;
mod parse;
mod parse_robustness;
mod teams_app;
