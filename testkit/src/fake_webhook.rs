//! A fake Workflows trigger ("When a Teams webhook request is received") that answers 202
//! to the first `hold_at - 1` posts and holds every later one until [`HoldingWebhook::release`]:
//! a test knows where a run is (a send in flight, the run lock held) instead of hoping the
//! machine is slow enough for a signal or a second request to land mid-run.
//!
//! Like the real trigger it takes any path under its URL and needs no auth header (the
//! `sig` query parameter is the secret), and the body must name its `recipient`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running holding webhook.
#[derive(Clone)]
pub struct HoldingWebhook {
    url: String,
    accepted: Arc<Mutex<Vec<String>>>,
    holding: Arc<tokio::sync::Notify>,
    released: tokio::sync::watch::Sender<bool>,
}

impl HoldingWebhook {
    /// Accepts posts 1..hold_at at once and holds post `hold_at` and every later one.
    pub async fn start(hold_at: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = HoldingWebhook {
            url: format!(
                "http://{}/workflows/abc/triggers/manual/paths/invoke?api-version=1&sig=s3cret",
                listener.local_addr().unwrap()
            ),
            accepted: Default::default(),
            holding: Default::default(),
            released: tokio::sync::watch::channel(false).0,
        };
        let seen = Arc::new(AtomicUsize::new(0));
        let h = hook.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (h, seen) = (h.clone(), seen.clone());
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= hold_at {
                    let mut released = h.released.subscribe();
                    if !*released.borrow() {
                        h.holding.notify_one();
                    }
                    let _ = released.wait_for(|r| *r).await;
                }
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let recipient = body["recipient"].as_str().expect("a recipient").to_string();
                h.accepted.lock().unwrap().push(recipient.to_lowercase());
                axum::http::StatusCode::ACCEPTED
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        hook
    }

    /// The trigger URL (`REMINDERS_WORKFLOWS_URL`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Returns once a post is held (at once if one was held earlier and not yet waited for).
    /// The bound is a safety net for a hung run, not a speed requirement.
    pub async fn wait_held(&self) {
        tokio::time::timeout(std::time::Duration::from_secs(120), self.holding.notified())
            .await
            .expect("no post reached the webhook's hold point within 120 s");
    }

    /// Answers the held posts and every later one at once.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// The recipients of the answered posts, lower-cased, in answer order.
    pub fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }
}
