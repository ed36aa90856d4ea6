//! Functions: the Azure Functions custom handler. One server answers the host for the daily
//! timer function ([`timer`]) and the on-demand HTTP function ([`http`]); [`payload`] holds
//! the host's request / response shapes and [`state`] the runs in progress.

pub mod http;
pub mod payload;
mod server;
pub mod state;
pub mod timer;

pub use server::{app, serve, InvocationId};

pub use server::ServeError;

pub use state::AppState;
