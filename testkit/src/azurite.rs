//! Azurite (the Blob Storage emulator, npm `azurite`, pinned in package.json) started for a
//! test over HTTPS with `--oauth basic`, so the real SDK clients authenticate with bearer
//! tokens from the fake managed identity. A throwaway CA and a leaf certificate for
//! 127.0.0.1 are made with rcgen (rustls refuses a self-signed certificate used directly
//! as the server's). The process is killed on drop.
//!
//! Azurite missing is a failure, never a skip: run `npm ci` in the crate folder.
//!
//! Tests share one in-memory emulator per test binary ([`Azurite::shared`]), each in
//! containers of its own. A storage outage is a relay in front of it that the test cuts
//! (`crate::outage`), not a stopped emulator.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";

/// A running Azurite blob service.
pub struct Azurite {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Shared by the whole binary: never dropped, so it must end with the process.
    shared: bool,
}

/// The emulator's executable, or a failure telling how to install it.
pub fn azurite_bin() -> PathBuf {
    // The main crate's folder, where `npm ci` installs it (this crate sits in `testkit/`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits inside the main crate");
    let bin = root.join("node_modules").join(".bin").join("azurite-blob");
    assert!(
        bin.exists(),
        "Azurite is not installed ({} is missing): run `npm ci` in {} (Node.js 18+), then rerun the tests",
        bin.display(),
        root.display()
    );
    bin
}

/// Azurite's start-up line on stdout, which names the address it bound (port 0 included).
const LISTENING: &str = "Azurite Blob service successfully listens on https://127.0.0.1:";

/// Writes `ca.pem`, `leaf.pem`, `leaf.key` into `dir`.
fn make_certificates(dir: &Path) {
    let day = time::Duration::days(1);
    let now = time::OffsetDateTime::now_utc();

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "lookout-reminders test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - day;
    ca.not_after = now + day * 7;
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - day;
    leaf.not_after = now + day * 7;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("leaf.key"), leaf_key.serialize_pem()).unwrap();
}

impl Azurite {
    /// The binary's one in-memory Azurite, started on first use, on its own thread so that
    /// it outlives each test's runtime. Tests on it use containers of their own names.
    pub async fn shared() -> &'static Azurite {
        static SHARED: std::sync::OnceLock<Azurite> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(Self::launch_as(true))
            })
            .join()
            .expect("the shared Azurite starts")
        })
    }

    /// Starts an in-memory Azurite of its own (data lost when it stops), stopped on drop: for
    /// a benchmark that wants a quiet one; tests use [`Azurite::shared`].
    pub async fn start() -> Azurite {
        Self::launch_as(false).await
    }

    async fn launch_as(shared: bool) -> Azurite {
        azurite_bin();
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let mut azurite = Azurite {
            child: None,
            // Port 0: Azurite binds a free port itself and prints it (no pick-then-bind
            // race with other processes).
            port: 0,
            dir,
            shared,
        };
        azurite.spawn().await;
        azurite
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        let data = d.join("data");
        std::fs::create_dir_all(&data).unwrap();
        // A static is never dropped: the shared emulator runs under a shell that stops it when
        // this process's end of its stdin closes, i.e. when the test binary exits.
        let mut cmd = if self.shared {
            let mut sh = Command::new("sh");
            sh.args([
                "-c",
                "\"$0\" \"$@\" </dev/null & pid=$!; cat >/dev/null; kill $pid",
            ])
            .arg(azurite_bin());
            sh
        } else {
            Command::new(azurite_bin())
        };
        cmd.args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &self.port.to_string(),
        ])
        .args([
            "--oauth",
            "basic",
            "--skipApiVersionCheck",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ])
        .arg("--cert")
        .arg(d.join("leaf.pem"))
        .arg("--key")
        .arg(d.join("leaf.key"))
        .current_dir(&data)
        .arg("--debug")
        .arg(d.join("azurite-debug.log"))
        .stdin(if self.shared {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .arg("--inMemoryPersistence");
        let mut child = cmd.spawn().expect("start azurite-blob (run `npm ci`)");
        // Azurite prints its address once listening, then an access log line per request:
        // a thread reads the first and drains the rest so the pipe never fills.
        let stdout = child.stdout.take().expect("piped stdout");
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<u16>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut bound_tx = Some(bound_tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split(LISTENING).nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let (Some(tx), Ok(port)) = (bound_tx.take(), digits.parse()) {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        self.child = Some(child);
        // A safety net for a hung start, not a speed requirement.
        match tokio::time::timeout(Duration::from_secs(60), bound_rx).await {
            Ok(Ok(port)) => {
                self.port = port;
            }
            outcome => {
                let child = self.child.as_mut().unwrap();
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "azurite-blob never said it was listening ({}; exit {status:?}): {err}",
                    if outcome.is_err() {
                        "60 s"
                    } else {
                        "stdout closed"
                    }
                );
            }
        }
    }

    /// Stops the emulator: SIGTERM first (a clean exit), SIGKILL if it lingers.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The account URL, as `REMINDERS_BLOB_ACCOUNT_URL` expects it.
    pub fn account_url(&self) -> String {
        format!("https://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// The throwaway CA, PEM file (for `REMINDERS_EXTRA_CA_FILE`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The emulator's debug log (every request it served), for assertions and diagnosis.
    pub fn debug_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azurite-debug.log")).unwrap_or_default()
    }

    /// Settings pointing the app at this emulator with the shared fake identity.
    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("REMINDERS_BLOB_ACCOUNT_URL".into(), self.account_url()),
            (
                "REMINDERS_EXTRA_CA_FILE".into(),
                self.ca_file().display().to_string(),
            ),
            ("REMINDERS_CREDENTIAL".into(), "managed_identity".into()),
            // Short retries: a test must fail in seconds, not minutes.
            ("REMINDERS_AZURE_MAX_RETRIES".into(), "2".into()),
            ("REMINDERS_AZURE_RETRY_DELAY_MS".into(), "50".into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}
