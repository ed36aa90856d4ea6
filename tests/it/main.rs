//! Integration tests: one binary, one module per area.

mod cli;
mod job;
mod fake_identity;
mod parse;
mod deliver_channels;
mod deliver_helpers;
mod deliver_teams;
mod fake_bot;
mod fake_graph;
