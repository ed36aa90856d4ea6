//! `spawn_app()`: starts the real custom handler binary the way the Functions host does
//! (`FUNCTIONS_CUSTOMHANDLER_PORT`, working directory = the app root, settings as
//! environment variables), waits for `GET /` to answer, and kills it on drop. Typed helpers
//! send the host's requests and read what the handler left on disk (outbox, ledger, logs).

#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The invocation id the host would send (the contract document's example GUID).
pub const INVOCATION_ID: &str = "0f4a3a8e-8f5e-4c8b-9a57-0b7c2a1e5d11";

/// The bundled sample export.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The job's dependencies as `app::deps` wires them from the default settings plus `extra`,
/// reading `export`, with the local ledger, lock, reports and outbox under `state`: never in
/// the working directory, which every test of the binary shares (a test that replaced only
/// the ledger once left its reports in the repository's `state/`).
pub fn local_deps(
    state: &Path,
    export: &Path,
    extra: &[(&str, &str)],
) -> lookout_reminders::job::Deps {
    use lookout_reminders::config::{Config, Env};
    let state_dir = state.display().to_string();
    let outbox_dir = state.join("outbox").display().to_string();
    let mut pairs = vec![
        ("REMINDERS_STATE_DIR", state_dir.as_str()),
        ("REMINDERS_OUTBOX_DIR", outbox_dir.as_str()),
    ];
    pairs.extend_from_slice(extra);
    let config = Config::from_env_map(&Env::from_pairs(&pairs)).expect("test settings");
    lookout_reminders::app::deps(
        &config,
        Some(Arc::new(lookout_reminders::source::LocalFileSource::new(
            export,
            1 << 20,
        ))),
    )
    .expect("test wiring")
}

/// Writes a Lookout CSV export with `owners` owners, one active Chrome vulnerability each,
/// detected on 2024-03-01 (overdue whatever "today" is, so everyone is due).
pub fn write_export(path: &Path, owners: usize) {
    use std::fmt::Write;
    let mut csv = String::from(
        "Device Owner,Lookout ID,MDM Device ID,Profile,Device Model,Device Platform,Issue Type,Issue,Classifications,Status,Risk,Date Detected,Date Resolved,Resolution Time,Details\r\n",
    );
    for i in 0..owners {
        let _ = write!(
            csv,
            "u{i:06}@engie.com,00000000-0000-4000-8000-{i:012},m-{i},Work,SM-A528B,Android,Application,Chrome(com.android.chrome),Vulnerability,Active,Moderate,2024-03-01T10:00:00Z,,,\r\n"
        );
    }
    std::fs::write(path, csv).expect("write the generated export");
}

/// The app root shared by successive handler processes (restart tests).
pub struct Root {
    dir: tempfile::TempDir,
    starts: AtomicUsize,
}

impl Root {
    /// A fresh, empty app root.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            dir: tempfile::tempdir().expect("temp dir"),
            starts: AtomicUsize::new(0),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// How to start the handler: extra or overriding settings.
#[derive(Clone, Default)]
pub struct Spawn {
    env: Vec<(String, String)>,
}

impl Spawn {
    /// The default settings: local source on the sample export, local ledger, outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a setting.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_string(), value.into()));
        self
    }

    /// Starts the handler in a fresh root.
    pub async fn start(self) -> TestApp {
        self.start_in(Root::new()).await
    }

    /// Starts the handler in `root` (whose state / outbox may hold an earlier run's).
    pub async fn start_in(self, root: Arc<Root>) -> TestApp {
        // Port 0: the handler binds a free port itself and logs it (no pick-then-bind race).
        let port = 0;
        let n = root.starts.fetch_add(1, Ordering::SeqCst);
        let log_path = root.path().join(format!("handler-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout-reminders"));
        // Only what the host would pass: the app settings and the port.
        cmd.env_clear()
            .current_dir(root.path())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .env("RUST_LOG", "info")
            .env("REMINDERS_SOURCE", "local")
            .env("REMINDERS_LEDGER", "local")
            .env("REMINDERS_CHANNEL", "outbox")
            .env("REMINDERS_EXPORT_PATH", fixture("issues-export.csv"))
            .env("REMINDERS_STATE_DIR", root.path().join("state"))
            .env("REMINDERS_OUTBOX_DIR", root.path().join("outbox"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log));
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("the handler binary starts");
        let mut app = TestApp {
            port,
            root,
            child,
            log_path,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            ready_after: Duration::ZERO,
        };
        app.wait_ready().await;
        app.ready_after = started.elapsed();
        app
    }
}

/// Starts the handler with the default settings.
pub async fn spawn_app() -> TestApp {
    Spawn::new().start().await
}

/// A running handler process.
pub struct TestApp {
    /// Its port.
    pub port: u16,
    /// Its app root.
    pub root: Arc<Root>,
    child: Child,
    log_path: PathBuf,
    /// A client for requests.
    pub client: reqwest::Client,
    /// From spawn to the first answer of `GET /`.
    pub ready_after: Duration,
}

/// A JSON answer.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body parsed as JSON (`Null` when not JSON).
    pub json: Value,
    /// Raw body.
    pub text: String,
}

impl TestApp {
    /// The port the handler logged at start (`"address":"127.0.0.1:PORT"`), once it has.
    fn logged_port(&self) -> Option<u16> {
        let logs = self.logs();
        let at = logs.find("\"address\":\"127.0.0.1:")? + "\"address\":\"127.0.0.1:".len();
        let digits: String = logs[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|p| *p != 0)
    }

    async fn wait_ready(&mut self) {
        // A safety net for a hung start, not a speed requirement: generous on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the handler exited before it was ready ({status}):\n{}",
                    self.logs()
                );
            }
            if self.port == 0 {
                match self.logged_port() {
                    Some(port) => self.port = port,
                    None => {
                        assert!(
                            Instant::now() < deadline,
                            "the handler never logged its address:\n{}",
                            self.logs()
                        );
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                }
            }
            if let Ok(r) = self
                .client
                .get(self.url("/"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the handler never answered GET /:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the handler logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log lines that are JSON objects.
    pub fn log_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn answer(res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    /// Sends a request like the host: the three `X-Azure-Functions` / user-agent headers.
    pub async fn host_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("X-Azure-Functions-InvocationId", INVOCATION_ID)
            .header("X-Azure-Functions-HostVersion", "4.1036.1.23224")
            .header("User-Agent", "Azure-Functions-Host/4.1036.1.23224");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        Self::answer(req.send().await.expect("the request reaches the handler")).await
    }

    /// Same with a given invocation id.
    pub async fn host_request_as(
        &self,
        invocation_id: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, self.url(path))
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .header("User-Agent", "Azure-Functions-Host/4.1036.1.23224");
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        Self::answer(req.send().await.expect("the request reaches the handler")).await
    }

    /// `POST /function_timer` with this payload (bytes as given).
    pub async fn timer(&self, payload: &str) -> Answer {
        self.host_request(
            reqwest::Method::POST,
            "/function_timer",
            Some(payload.as_bytes().to_vec()),
        )
        .await
    }

    /// Forwarded `POST /api/function_http` with a JSON body.
    pub async fn run(&self, body: &Value) -> Answer {
        self.host_request(
            reqwest::Method::POST,
            "/api/function_http",
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// Forwarded `POST /api/function_http` with raw bytes.
    pub async fn run_raw(&self, body: impl Into<Vec<u8>>) -> Answer {
        self.host_request(
            reqwest::Method::POST,
            "/api/function_http",
            Some(body.into()),
        )
        .await
    }

    /// Forwarded `GET /api/function_http` (health).
    pub async fn health(&self) -> Answer {
        self.host_request(reqwest::Method::GET, "/api/function_http", None)
            .await
    }

    /// Forwarded `GET /api/function_http?runId=…`.
    pub async fn run_report(&self, run_id: &str) -> Answer {
        self.host_request(
            reqwest::Method::GET,
            &format!("/api/function_http?runId={run_id}"),
            None,
        )
        .await
    }

    /// Polls `GET ?runId=` until it is no longer 202.
    pub async fn wait_for_run(&self, run_id: &str, within: Duration) -> Answer {
        let deadline = Instant::now() + within;
        loop {
            let a = self.run_report(run_id).await;
            if a.status != 202 {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} still running after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /` answers 200.
    /// A fresh connection each time: a refused oversized body makes the server close the
    /// connection it arrived on, and that says nothing about the server itself.
    pub async fn is_serving(&self) -> bool {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        matches!(client.get(self.url("/")).send().await, Ok(r) if r.status().is_success())
    }

    /// Returns once the handler has logged `text`: a known point in a run (the log is the
    /// handler's own account of where it is). The bound is a safety net, not a speed target.
    pub async fn wait_logged(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.logs().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the handler never logged {text:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM, as the platform does when it stops an instance.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the handler did not exit within {within:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident memory, KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Owners with a message in the outbox, one entry per message file, over every run.
    pub fn outbox_messages(&self) -> Vec<String> {
        let mut owners = Vec::new();
        let Ok(runs) = std::fs::read_dir(self.root.path().join("outbox")) else {
            return owners;
        };
        for run in runs.flatten() {
            for f in std::fs::read_dir(run.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().to_string();
                if let Some(owner) = name.strip_suffix(".json") {
                    owners.push(owner.to_string());
                }
            }
        }
        owners.sort();
        owners
    }

    /// The ledger's `sent` events as (owner, run id).
    pub fn ledger_sent(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.root.path().join("state").join("ledger.jsonl"))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "sent")
            .map(|e| {
                (
                    e["owner"].as_str().unwrap_or("").to_string(),
                    e["run_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Whether the run lock file exists.
    pub fn lock_held(&self) -> bool {
        self.root.path().join("state").join("run.lock").exists()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts that no owner appears twice.
pub fn assert_each_once(owners: &[String], what: &str) {
    let mut seen = std::collections::HashSet::new();
    let dupes: Vec<&String> = owners.iter().filter(|o| !seen.insert(o.as_str())).collect();
    assert!(
        dupes.is_empty(),
        "{what}: owners present more than once: {dupes:?}"
    );
}
