//! lookout-reminders: reminds Lookout for Work device owners to update their phones and
//! tablets before access to corporate apps is cut.
//!
//! The pipeline, one module per step:
//! [`source`] → [`parse`] → [`policy`] → [`plan`] → [`render`] → [`deliver`] → [`ledger`] /
//! [`report`]. [`job`] runs it; [`functions`] serves it as an Azure Functions custom
//! handler; [`config`] reads the settings; [`telemetry`] sets up logs; [`insights`] turns
//! the ledger's history into the security team's figures and report page.
#![warn(missing_docs)]

pub mod app;
pub mod azure;
pub mod config;
pub mod deliver;
pub mod domain;
pub(crate) mod end_of_support;
pub(crate) mod fsutil;
pub mod functions;
pub mod graph;
pub(crate) mod history;
pub mod http;
pub mod insights;
pub mod job;
pub mod ledger;
pub mod parse;
pub mod plan;
pub mod policy;
pub mod render;
pub mod report;
pub mod source;
pub mod telemetry;
