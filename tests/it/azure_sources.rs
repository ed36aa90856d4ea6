//! The Blob source on Azurite (real SDK client, real managed-identity credential fed by the
//! fake identity endpoint) and the SharePoint source against a fake Microsoft Graph that
//! checks the Graph audience and redirects downloads to another port that refuses any
//! Authorization header; the same fake takes the insights page's upload (`PUT …:/content`),
//! recording its path, content type and body.

use crate::azurite::Azurite;
use crate::fake_identity::FakeIdentity;
use crate::fake_sharepoint::{FakeSharePoint, SITE_ID};
use lookout_reminders::azure::{self, sdk_client_options, storage};
use lookout_reminders::config::{AzureSettings, Env};
use lookout_reminders::http::Waits;
use lookout_reminders::job;
use lookout_reminders::source::{BlobSource, SharePointSource, Source, SourceError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GRAPH: &str = "https://graph.microsoft.com";
const STORAGE: &str = "https://storage.azure.com";

fn env_of(pairs: Vec<(String, String)>) -> Env {
    Env(pairs.into_iter().collect())
}

/// Settings for a Blob source on `azurite`, container `container`.
async fn blob_settings(
    azurite: &Azurite,
    container: &str,
    extra: &[(&str, &str)],
) -> AzureSettings {
    let identity = FakeIdentity::shared().await;
    let mut pairs: Vec<(String, String)> = azurite
        .settings()
        .into_iter()
        .chain(identity.env())
        .collect();
    pairs.push(("REMINDERS_SOURCE".into(), "blob".into()));
    pairs.push(("REMINDERS_EXPORT_CONTAINER".into(), container.into()));
    for (k, v) in extra {
        pairs.push((k.to_string(), v.to_string()));
    }
    AzureSettings::from_env(&env_of(pairs)).unwrap()
}

/// Uploads test blobs with the SDK (as the export's producer would).
async fn upload(azurite: &Azurite, container: &str, blobs: &[(&str, Vec<u8>)]) {
    let settings = blob_settings(azurite, container, &[("REMINDERS_EXPORT_BLOB", "x")]).await;
    let export = settings.blob_export().unwrap();
    let client = storage::container_client(
        &export.account_url,
        container,
        azure::credential(&settings).unwrap(),
        sdk_client_options(&settings).unwrap(),
    )
    .unwrap();
    let _ = client.create(None).await;
    for (i, (name, bytes)) in blobs.iter().enumerate() {
        if i > 0 {
            // Distinct last-modified times (one-second resolution, Azurite on this machine's
            // clock): wait for the next whole second, not a fixed 1.1 s after each blob.
            let into_second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_millis();
            tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second) + 20)).await;
        }
        client
            .blob_client(name)
            .upload(azure_core::http::RequestContent::from(bytes.clone()), None)
            .await
            .unwrap();
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate::helpers::fixture(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_source_reads_an_exact_blob_and_the_newest_under_a_prefix() {
    let azurite = Azurite::shared().await;
    let csv = fixture("issues-export.csv");
    let xlsx = fixture("issues-export1.xlsx");
    upload(
        azurite,
        "exports",
        &[
            ("lookout/2024-03-01.csv", csv.clone()),
            ("lookout/2024-03-08.xlsx", xlsx.clone()),
            ("other/zzz.csv", csv.clone()),
        ],
    )
    .await;

    let settings = blob_settings(
        azurite,
        "exports",
        &[("REMINDERS_EXPORT_BLOB", "lookout/2024-03-01.csv")],
    )
    .await;
    let source = BlobSource::from_settings(&settings, 50 << 20).unwrap();
    let fetched = source.fetch().await.unwrap();
    assert_eq!(fetched.bytes, csv);
    assert_eq!(fetched.name, "2024-03-01.csv");
    assert_eq!(fetched.origin.kind, "blob");
    assert!(
        fetched
            .origin
            .location
            .ends_with("/exports/lookout/2024-03-01.csv"),
        "{}",
        fetched.origin.location
    );
    assert!(fetched.origin.etag.is_some() && fetched.origin.last_modified.is_some());
    let (report, parsed) = job::fetch_and_parse(&source, chrono_tz::Tz::UTC)
        .await
        .unwrap();
    assert_eq!(report.bytes, csv.len() as u64);
    assert!(parsed.total_rows > 0);

    let settings = blob_settings(
        azurite,
        "exports",
        &[("REMINDERS_EXPORT_PREFIX", "lookout/")],
    )
    .await;
    let newest = BlobSource::from_settings(&settings, 50 << 20)
        .unwrap()
        .fetch()
        .await
        .unwrap();
    assert_eq!(newest.name, "2024-03-08.xlsx");
    assert_eq!(newest.bytes, xlsx);
    let (_, parsed) = job::fetch_and_parse(
        &BlobSource::from_settings(&settings, 50 << 20).unwrap(),
        chrono_tz::Tz::UTC,
    )
    .await
    .unwrap();
    assert_eq!(
        parsed.format.map(|f| f.as_str().to_string()).as_deref(),
        Some("xlsx")
    );

    // Every storage call carried a storage-audience token from the managed identity.
    let asked: Vec<_> = FakeIdentity::shared().await.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.resource == STORAGE && r.client_id.is_none()),
        "{asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_source_refuses_bad_input_with_clear_errors() {
    let azurite = Azurite::shared().await;
    let big = vec![b'x'; 4096];
    upload(
        azurite,
        "bad",
        &[
            ("empty.csv", Vec::new()),
            ("big.csv", big),
            ("notes.txt", b"hello\x00\x01".to_vec()),
        ],
    )
    .await;

    // Over the cap: refused from the properties, before any download.
    let settings = blob_settings(azurite, "bad", &[("REMINDERS_EXPORT_BLOB", "big.csv")]).await;
    match BlobSource::from_settings(&settings, 1000)
        .unwrap()
        .fetch()
        .await
    {
        Err(SourceError::TooLarge {
            size,
            limit,
            location,
        }) => {
            assert_eq!((size, limit), (4096, 1000));
            assert!(location.ends_with("/bad/big.csv"), "{location}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }

    // Empty: the parse step says so.
    let settings = blob_settings(azurite, "bad", &[("REMINDERS_EXPORT_BLOB", "empty.csv")]).await;
    let err = job::fetch_and_parse(
        &BlobSource::from_settings(&settings, 1 << 20).unwrap(),
        chrono_tz::Tz::UTC,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    // Wrong format: the parse step refuses it.
    let settings = blob_settings(azurite, "bad", &[("REMINDERS_EXPORT_BLOB", "notes.txt")]).await;
    let err = job::fetch_and_parse(
        &BlobSource::from_settings(&settings, 1 << 20).unwrap(),
        chrono_tz::Tz::UTC,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, job::JobError::Unusable(_)), "{err}");

    // Missing blob, missing container, nothing under a prefix: NotFound naming the blob.
    let settings = blob_settings(azurite, "bad", &[("REMINDERS_EXPORT_BLOB", "nope.csv")]).await;
    let err = BlobSource::from_settings(&settings, 1 << 20)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope.csv"), "{err}");
    let settings = blob_settings(
        azurite,
        "no-such-container",
        &[("REMINDERS_EXPORT_BLOB", "a.csv")],
    )
    .await;
    let err = BlobSource::from_settings(&settings, 1 << 20)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    let settings = blob_settings(azurite, "bad", &[("REMINDERS_EXPORT_PREFIX", "2025/")]).await;
    let err = BlobSource::from_settings(&settings, 1 << 20)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("REMINDERS_EXPORT_PREFIX"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blob_source_fails_fast_and_clearly_when_storage_is_down() {
    // Storage that is down: a port that takes connections and closes them at once (bound
    // here and kept, so no other process can take it meanwhile), with the shared
    // emulator's CA and identity settings.
    let azurite = Azurite::shared().await;
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_url = format!(
        "https://{}/{}",
        down.local_addr().unwrap(),
        crate::azurite::ACCOUNT
    );
    tokio::spawn(async move {
        while let Ok((conn, _)) = down.accept().await {
            drop(conn);
        }
    });
    let settings = blob_settings(
        azurite,
        "down",
        &[
            ("REMINDERS_EXPORT_BLOB", "a.csv"),
            ("REMINDERS_BLOB_ACCOUNT_URL", down_url.as_str()),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let err = BlobSource::from_settings(&settings, 1 << 20)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains("a.csv") && text.contains("reading the blob's properties"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// SharePoint through a fake Graph (crate::fake_sharepoint).

#[tokio::test]
async fn the_sharepoint_source_resolves_site_library_and_file_and_downloads_without_the_token() {
    let xlsx = fixture("issues-export1.xlsx");
    let graph = FakeSharePoint::start(xlsx.clone()).await;
    let fetched = graph.source(&[]).await.fetch().await.unwrap();
    assert_eq!(fetched.bytes, xlsx);
    assert_eq!(fetched.name, "issues-export1.xlsx");
    assert_eq!(fetched.origin.kind, "sharepoint");
    assert_eq!(fetched.origin.etag.as_deref(), Some("\"{1234},5\""));
    assert_eq!(
        fetched.origin.location,
        "sharepoint://contoso.sharepoint.com/sites/Mobility/(default library)/General/Power Automate/issues-export1.xlsx"
    );

    {
        let state = graph.state.lock().unwrap();
        let paths: Vec<&str> = state.requests.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/v1.0/sites/contoso.sharepoint.com:/sites/Mobility".to_string(),
                format!("/v1.0/sites/{SITE_ID}/drive"),
                "/v1.0/drives/b!docs/root:/General/Power%20Automate/issues-export1.xlsx"
                    .to_string(),
                "/v1.0/drives/b!docs/root:/General/Power%20Automate/issues-export1.xlsx:/content"
                    .to_string(),
            ]
        );
        assert!(
            state
                .requests
                .iter()
                .all(|(_, aud)| aud.as_deref() == Some(GRAPH)),
            "{:?}",
            state.requests
        );
        assert_eq!(
            state.downloads,
            vec![false],
            "the bearer token went to the download host"
        );
    }
    assert!(FakeIdentity::shared()
        .await
        .requests()
        .iter()
        .any(|r| r.resource == GRAPH));
}

#[tokio::test]
async fn the_sharepoint_source_finds_a_library_by_name_and_names_the_missing_one() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph
        .source(&[("REMINDERS_SHAREPOINT_LIBRARY", "documents")])
        .await
        .fetch()
        .await
        .unwrap();
    assert!(graph
        .paths()
        .contains(&format!("/v1.0/sites/{SITE_ID}/drives")));

    let err = graph
        .source(&[("REMINDERS_SHAREPOINT_LIBRARY", "Archive")])
        .await
        .fetch()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::NotFound { .. }), "{text}");
    assert!(
        text.contains("library 'Archive' not found") && text.contains("Lookout Exports"),
        "{text}"
    );
}

#[tokio::test]
async fn the_sharepoint_source_says_which_step_was_not_found_or_forbidden() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    let err = graph
        .source(&[(
            "REMINDERS_SHAREPOINT_SITE_URL",
            "https://contoso.sharepoint.com/sites/Nope",
        )])
        .await
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::NotFound { .. }) && err.to_string().contains("site not found"),
        "{err}"
    );

    let err = graph
        .source(&[("REMINDERS_SHAREPOINT_FILE_PATH", "General/missing.xlsx")])
        .await
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::NotFound { .. }) && err.to_string().contains("file not found"),
        "{err}"
    );

    graph.state.lock().unwrap().forbidden = true;
    let err = graph.source(&[]).await.fetch().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SourceError::PermissionDenied { .. }),
        "{text}"
    );
    assert!(
        text.contains("resolving the site") && text.contains("Sites.Selected"),
        "{text}"
    );
}

#[tokio::test]
async fn the_sharepoint_source_waits_out_throttling_and_server_errors_within_bounds() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().throttle = 1;
    graph.state.lock().unwrap().unavailable = 2;
    let waits = Waits::recorded();
    let started = Instant::now();
    graph
        .source_waiting(waits.clone())
        .await
        .fetch()
        .await
        .unwrap();
    // The Retry-After of 1 s was honoured by the shared Graph pace, which holds every caller
    // (this one included) for it: the retry itself adds no second wait. The two 503s (no
    // Retry-After) were backed off from the 20 ms base (REMINDERS_AZURE_RETRY_DELAY_MS).
    // `>=` only: a slow machine can never make this fail.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let taken = waits.taken();
    assert_eq!(taken.len(), 3, "{taken:?}");
    assert_eq!(
        taken[0],
        Duration::ZERO,
        "held by the pace, not slept twice: {taken:?}"
    );
    assert!(
        taken[1..].iter().all(|d| *d < Duration::from_millis(500)),
        "{taken:?}"
    );

    graph.state.lock().unwrap().throttle = 100;
    let waits = Waits::recorded();
    let started = Instant::now();
    let err = graph
        .source_waiting(waits.clone())
        .await
        .fetch()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("throttled by Graph (HTTP 429)"),
        "{err}"
    );
    // REMINDERS_AZURE_MAX_RETRIES=3: three retries, each after the pace held the asked
    // second, then given up.
    assert_eq!(waits.taken(), [Duration::ZERO; 3]);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_sharepoint_source_honours_a_retry_after_given_as_an_http_date() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().throttle_until_date = 1;
    let waits = Waits::recorded();
    let started = Instant::now();
    graph
        .source_waiting(waits.clone())
        .await
        .fetch()
        .await
        .unwrap();
    // The date is two seconds on at one-second resolution: what is left of it (over half a
    // second) is held by the shared Graph pace before the retry, where the 20 ms backoff
    // alone would have retried at once. The retry adds no wait of its own.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waits.taken(), [Duration::ZERO]);
    assert_eq!(graph.paths().len(), 5, "{:?}", graph.paths());
}

#[tokio::test]
async fn the_sharepoint_source_retries_a_408_but_not_a_501() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().request_timeout = 1;
    graph.source(&[]).await.fetch().await.unwrap();
    let paths = graph.paths();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert_eq!(paths[0], paths[1], "the 408 was not retried: {paths:?}");

    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().not_implemented = 1;
    let err = graph.source(&[]).await.fetch().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SourceError::Failed { .. }), "{text}");
    assert!(
        text.contains("resolving the site") && text.contains("HTTP 501"),
        "{text}"
    );
    assert_eq!(graph.paths().len(), 1, "the 501 was retried");
}

#[tokio::test]
async fn a_stalled_sharepoint_download_stops_at_the_deadline() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().download_trickles = true;
    let source = graph.source_with_deadline(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let err = source.fetch().await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let text = err.to_string();
    assert!(matches!(err, SourceError::Failed { .. }), "{text}");
    assert!(
        text.contains("downloading the file") && text.contains("deadline"),
        "{text}"
    );
    assert!(
        !text.contains("tempauth"),
        "the download URL leaked: {text}"
    );
    assert_eq!(graph.state.lock().unwrap().downloads, vec![false]);
}

#[tokio::test]
async fn a_refused_download_url_is_not_blamed_on_the_graph_permission() {
    for status in [401, 403] {
        let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
        graph.state.lock().unwrap().download_status = Some(status);
        let err = graph.source(&[]).await.fetch().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SourceError::Failed { .. }), "{text}");
        assert!(
            text.contains("downloading the file")
                && text.contains("pre-authenticated download URL was refused")
                && text.contains(&format!("HTTP {status}")),
            "{text}"
        );
        assert!(!text.contains("Sites.Selected"), "{text}");
        assert!(
            !text.contains("tempauth"),
            "the download URL leaked: {text}"
        );
        // Not retried, and never with the token.
        assert_eq!(graph.state.lock().unwrap().downloads, vec![false]);
    }
}

#[tokio::test]
async fn the_sharepoint_source_refuses_a_file_over_the_cap_before_downloading() {
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    let settings = graph.settings(&[]).await;
    let err = SharePointSource::from_settings(&settings, &graph.graph_settings(), 100)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::TooLarge { limit: 100, .. }),
        "{err}"
    );
    assert!(graph.state.lock().unwrap().downloads.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_configured_for_blob_source_and_blob_ledger_sends_once_and_records_in_the_container()
{
    let azurite = Azurite::shared().await;
    upload(
        azurite,
        "exports-run",
        &[("lookout/latest.csv", fixture("issues-export.csv"))],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let identity = FakeIdentity::shared().await;
    let mut pairs: Vec<(String, String)> = azurite
        .settings()
        .into_iter()
        .chain(identity.env())
        .collect();
    // A user-assigned identity of its own, so this test's token requests can be told from
    // those of the tests running beside it on the shared identity endpoint.
    let client_id = format!("uami-{}", uuid::Uuid::new_v4().simple());
    pairs.push((
        "REMINDERS_MANAGED_IDENTITY_CLIENT_ID".into(),
        client_id.clone(),
    ));
    for (k, v) in [
        ("REMINDERS_SOURCE", "blob"),
        ("REMINDERS_LEDGER", "blob"),
        ("REMINDERS_EXPORT_CONTAINER", "exports-run"),
        ("REMINDERS_EXPORT_PREFIX", "lookout/"),
        ("REMINDERS_STATE_CONTAINER", "state-run"),
    ] {
        pairs.push((k.into(), v.into()));
    }
    pairs.push((
        "REMINDERS_OUTBOX_DIR".into(),
        tmp.path().join("outbox").display().to_string(),
    ));
    let config = lookout_reminders::config::Config::from_env_map(&env_of(pairs)).unwrap();
    let deps = lookout_reminders::app::deps(&config, None).unwrap();
    assert!(
        deps.source.describe().contains("newest blob under"),
        "{}",
        deps.source.describe()
    );
    assert!(
        deps.ledger.describe().contains("/state"),
        "{}",
        deps.ledger.describe()
    );
    let mut req = job::RunRequest::new(lookout_reminders::report::Trigger::Cli);
    req.as_of = Some(chrono::NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
    let first = job::run(
        &deps,
        req.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(first.counts.sent > 0);
    assert_eq!(
        first.source.location,
        format!("{}/exports-run/lookout/latest.csv", azurite.account_url())
    );
    let again = job::run(&deps, req, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.counts.sent, 0, "the same day's rerun sent again");
    let last = deps.reports.last_report().await.unwrap().unwrap();
    assert_eq!(last.run_id, again.run_id);
    // Issue 4: the source and the ledger share one credential, so two runs of both asked
    // the identity endpoint for one storage token between them.
    let mine: Vec<String> = identity
        .requests()
        .into_iter()
        .filter(|r| r.client_id.as_deref() == Some(client_id.as_str()))
        .map(|r| r.resource)
        .collect();
    assert_eq!(mine, vec![STORAGE.to_string()]);
}

// ---------------------------------------------------------------------------------------
// The insights page published to the SharePoint library (issue 13 item 4).

/// The decoded upload path of the page in `General/Power Automate/reports`.
const PAGE_UPLOAD_PATH: &str =
    "/v1.0/drives/b!docs/root:/General/Power Automate/reports/lookout-insights.html:/content";

/// Deps for a live run reading the export from `graph`, ledger and outbox in `dir`, the
/// digest posted to `hook`, with `extra` settings.
async fn sharepoint_run_deps(
    graph: &FakeSharePoint,
    dir: &std::path::Path,
    hook: &crate::deliver_channels::FakeWebhook,
    extra: &[(&str, &str)],
) -> job::Deps {
    let mut with_retries = vec![
        ("REMINDERS_AZURE_MAX_RETRIES", "2"),
        ("REMINDERS_AZURE_RETRY_DELAY_MS", "20"),
    ];
    with_retries.extend_from_slice(extra);
    let mut pairs = graph.env(&with_retries).await;
    pairs.push((
        "REMINDERS_STATE_DIR".into(),
        dir.join("state").display().to_string(),
    ));
    pairs.push((
        "REMINDERS_OUTBOX_DIR".into(),
        dir.join("outbox").display().to_string(),
    ));
    let config = lookout_reminders::config::Config::from_env_map(&env_of(pairs)).unwrap();
    let mut deps = lookout_reminders::app::deps(&config, None).unwrap();
    deps.digest = Some(Arc::new(lookout_reminders::deliver::DigestSender::new(
        lookout_reminders::config::Secret::new(hook.url.clone()),
        false,
        reqwest::Client::new(),
    )));
    deps
}

/// A run on the SharePoint source: the fake Graph serving the sample workbook, the digest's
/// Workflows trigger, a folder for state and outbox, and the job's dependencies with the
/// `extra` settings. One set-up for the publishing, dry-run and scope tests.
struct SharePointRun {
    graph: FakeSharePoint,
    hook: crate::deliver_channels::FakeWebhook,
    tmp: tempfile::TempDir,
    deps: job::Deps,
}

impl SharePointRun {
    async fn new(extra: &[(&str, &str)]) -> Self {
        let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
        let hook = crate::deliver_channels::webhook().await;
        let tmp = tempfile::tempdir().unwrap();
        let deps = sharepoint_run_deps(&graph, tmp.path(), &hook, extra).await;
        Self {
            graph,
            hook,
            tmp,
            deps,
        }
    }

    /// The page the run stored locally.
    fn stored_page(&self) -> std::path::PathBuf {
        self.tmp.path().join("state/reports/latest.html")
    }
}

async fn live_run(deps: &job::Deps) -> lookout_reminders::report::RunReport {
    let mut req = job::RunRequest::new(lookout_reminders::report::Trigger::Timer);
    req.as_of = Some(chrono::NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
    job::run(deps, req, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
}

/// The digest card's insights text (the only digest posted).
fn only_digest(hook: &crate::deliver_channels::FakeWebhook) -> String {
    let bodies = hook.bodies.lock().unwrap();
    assert_eq!(bodies.len(), 1, "one digest: {bodies:?}");
    bodies[0]["attachments"][0]["content"].to_string()
}

#[tokio::test]
async fn after_a_live_run_with_the_report_folder_the_page_is_put_once_and_the_digest_links_its_web_url(
) {
    let run = SharePointRun::new(&[(
        "REMINDERS_REPORT_SHAREPOINT_FOLDER",
        "/General/Power Automate/reports/",
    )])
    .await;
    let report = live_run(&run.deps).await;
    assert!(report.counts.sent > 0, "{}", report.summary);

    let stored = std::fs::read(run.stored_page()).unwrap();
    {
        let s = run.graph.state.lock().unwrap();
        assert_eq!(s.uploads.len(), 1, "exactly one upload");
        let (path, content_type, body) = &s.uploads[0];
        assert_eq!(path, PAGE_UPLOAD_PATH);
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert_eq!(body, &stored, "the upload is the stored page");
        assert!(
            String::from_utf8_lossy(body).contains("<html"),
            "not a page"
        );
        // Every Graph call, the upload included, carried a Graph token.
        assert!(
            s.requests
                .iter()
                .all(|(_, aud)| aud.as_deref() == Some(GRAPH)),
            "{:?}",
            s.requests
        );
    }
    let digest = only_digest(&run.hook);
    assert!(
        digest.contains(
            "https://contoso.sharepoint.com/sites/Mobility/Shared%20Documents/General/Power%20Automate/reports/lookout-insights.html"
        ) && digest.contains("Open the insights report"),
        "{digest}"
    );
}

#[tokio::test]
async fn without_the_report_folder_nothing_is_uploaded_and_the_digest_says_where_the_page_is_stored(
) {
    let run = SharePointRun::new(&[]).await;
    assert!(run.deps.page_publisher.is_none());
    let report = live_run(&run.deps).await;
    assert!(report.counts.sent > 0, "{}", report.summary);
    assert!(run.graph.state.lock().unwrap().uploads.is_empty());
    let digest = only_digest(&run.hook);
    assert!(
        digest.contains("Insights report: ") && !digest.contains("Open the insights report"),
        "{digest}"
    );
}

#[tokio::test]
async fn an_upload_that_fails_with_5xx_never_fails_the_run_and_the_digest_shows_the_stored_page() {
    let run = SharePointRun::new(&[(
        "REMINDERS_REPORT_SHAREPOINT_FOLDER",
        "General/Power Automate/reports",
    )])
    .await;
    // More failures than attempts (two retries after the first).
    run.graph.state.lock().unwrap().upload_failures = 10;
    let report = live_run(&run.deps).await;
    assert!(report.counts.sent > 0, "{}", report.summary);
    {
        let s = run.graph.state.lock().unwrap();
        assert!(s.uploads.is_empty());
        assert_eq!(s.upload_failures, 7, "three attempts, then given up");
    }
    let digest = only_digest(&run.hook);
    assert!(
        digest.contains("Insights report: ")
            && digest.contains("reports")
            && !digest.contains("Open the insights report"),
        "{digest}"
    );
    assert!(run.stored_page().exists());
}

#[tokio::test]
async fn a_dry_run_publishes_nothing() {
    let run = SharePointRun::new(&[("REMINDERS_REPORT_SHAREPOINT_FOLDER", "reports")]).await;
    let mut req = job::RunRequest::new(lookout_reminders::report::Trigger::Cli);
    req.as_of = Some(chrono::NaiveDate::from_ymd_opt(2024, 3, 7).unwrap());
    req.dry_run = true;
    job::run(&run.deps, req, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert!(run.graph.state.lock().unwrap().uploads.is_empty());
    assert!(run.hook.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_read_only_site_grant_refusing_the_upload_is_named_as_a_missing_write_grant() {
    use lookout_reminders::ledger::PagePublisher;
    let graph = FakeSharePoint::start(fixture("issues-export1.xlsx")).await;
    graph.state.lock().unwrap().upload_forbidden = true;
    let settings = graph
        .settings(&[("REMINDERS_REPORT_SHAREPOINT_FOLDER", "reports")])
        .await;
    let publisher = lookout_reminders::source::SharePointPagePublisher::from_settings_with(
        &settings,
        graph.graph_client(&settings),
    )
    .unwrap()
    .expect("the folder is set");
    let err = publisher.publish_page("<html></html>").await.unwrap_err();
    assert!(
        err.contains("write grant")
            && err.contains("HTTP 403")
            && err.contains("reports/lookout-insights.html"),
        "{err}"
    );
    assert!(graph.state.lock().unwrap().uploads.is_empty());
}

#[tokio::test]
async fn the_sharepoint_source_asks_for_the_configured_graph_scope_like_the_channels() {
    // A national cloud's Graph: the source once hard-coded the public cloud's scope and
    // ignored REMINDERS_GRAPH_SCOPE, which the channels honoured.
    let run = SharePointRun::new(&[(
        "REMINDERS_GRAPH_SCOPE",
        "https://graph.microsoft.us/.default",
    )])
    .await;
    let err = run.deps.source.fetch().await.unwrap_err();
    // The fake Graph, like the public cloud's, refuses another cloud's token: the token the
    // source sent was for the configured scope, not the hard-coded public one.
    assert!(
        matches!(err, SourceError::PermissionDenied { .. })
            && err.to_string().contains("Invalid audience"),
        "{err}"
    );
    assert!(FakeIdentity::shared()
        .await
        .requests()
        .iter()
        .any(|r| r.resource == "https://graph.microsoft.us"));
}
