//! Test support shared by the integration tests (`tests/it`) and the benchmark examples:
//! local fakes of the cloud services that check each request as the real service would and
//! can throttle or fail, the Azurite harness, and the delivery benchmarks' set-up. One copy,
//! used through `testkit::…` (it was included file by file with `#[path]` before).

pub mod azurite;
pub mod bench;
pub mod delivery;
pub mod fake_bot;
pub mod fake_graph;
pub mod fake_identity;
pub mod fake_sharepoint;
pub mod fake_webhook;
pub mod outage;
