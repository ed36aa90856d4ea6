//! The CLI's progress bar over a run's sends (part of the binary): sent / failed /
//! remaining, pace and time left, drawn on stderr while the library publishes [`Progress`].

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lookout_reminders::job::{Progress, ProgressSender};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Whether a run shows the bar: only for a person watching a terminal. Never with `--json`
/// (a script reads the output) and never for a dry run (it sends nothing).
pub fn show_bar(json: bool, dry_run: bool, stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && !json && !dry_run
}

/// The bar's text: `sent 120, failed 2, remaining 9878`.
pub fn figures(p: &Progress) -> String {
    format!(
        "sent {}, failed {}, remaining {}",
        p.sent,
        p.failed,
        p.remaining()
    )
}

/// The bar being drawn, if any: log lines are written around it, not through it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The log writer of the CLI: stderr, with the bar lifted while a line is written so the
/// two never garble each other.
pub struct StderrAroundBar;

impl Write for StderrAroundBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A bar fed by a run's progress, or nothing when hidden.
pub struct SendBar {
    shown: Option<(ProgressBar, ProgressSender, tokio::task::JoinHandle<bool>)>,
}

impl SendBar {
    /// A bar on stderr when `show`, else an inert one.
    pub fn new(show: bool) -> Self {
        if !show {
            return Self { shown: None };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        // A spinner until the plan says how many sends there are, then the bar.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message("reading the export and planning");
        let sending = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} · {msg} · {per_sec} · ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.enable_steady_tick(Duration::from_millis(200));
        let (tx, mut rx) = watch::channel(Progress::default());
        let fed = bar.clone();
        let task = tokio::spawn(async move {
            // A run that stops before sending (refused export, owner cap) shows no bar.
            if rx.changed().await.is_err() {
                return false;
            }
            fed.set_style(sending);
            loop {
                let p = *rx.borrow_and_update();
                fed.set_length(p.total as u64);
                fed.set_position(p.done as u64);
                fed.set_message(figures(&p));
                if rx.changed().await.is_err() {
                    return true;
                }
            }
        });
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        Self {
            shown: Some((bar, Arc::new(tx), task)),
        }
    }

    /// Where the run publishes its progress (`None` when the bar is hidden).
    pub fn sender(&self) -> Option<ProgressSender> {
        self.shown.as_ref().map(|(_, tx, _)| tx.clone())
    }

    /// Draws the last figures and leaves the bar on screen (or clears the spinner of a run
    /// that sent nothing). Call after the run returned (it holds the other end of the sender).
    pub async fn finish(self) {
        let Some((bar, tx, task)) = self.shown else {
            return;
        };
        drop(tx);
        let sending_began = task.await.unwrap_or(false);
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
        }
        if sending_began {
            bar.finish();
        } else {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_only_for_a_live_run_on_a_terminal_without_json() {
        assert!(show_bar(false, false, true));
        assert!(!show_bar(false, false, false), "stderr is not a terminal");
        assert!(!show_bar(true, false, true), "--json");
        assert!(!show_bar(false, true, true), "a dry run sends nothing");
    }

    #[test]
    fn the_bar_names_sent_failed_and_remaining() {
        let p = Progress {
            total: 10,
            done: 4,
            sent: 3,
            failed: 1,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(figures(&p), "sent 3, failed 1, remaining 6");
    }

    #[tokio::test]
    async fn a_hidden_bar_takes_no_progress_and_finishes_quietly() {
        let bar = SendBar::new(false);
        assert!(bar.sender().is_none());
        bar.finish().await;
        assert!(ACTIVE.lock().unwrap().is_none());
    }
}
