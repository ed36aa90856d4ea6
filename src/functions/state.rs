//! The server's shared state: the run's dependencies, the run in progress in this process
//! and the recent runs' outcomes (so `wait: false` callers can fetch a report later).
//!
//! Every run is a task of its own, never the request's future: a caller that hangs up (or
//! the host timing out) must not abort a run half-way with the lock still held.

use crate::app::Wiring;
use crate::config::Config;
use crate::job::{self, Deps, JobError, Progress, RunRequest};
use crate::report::RunReport;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Finished runs kept in memory for `GET ?runId=`; older ones are read from the ledger store
/// (which keeps real runs, not dry runs).
const KEPT_RUNS: usize = 8;

/// Dry runs at once in this process. A dry run holds the parsed export, the plan and every
/// rendered message (~200 MB for a 100k-row export); real runs are one at a time already.
pub(crate) const MAX_DRY_RUNS: usize = 2;

/// How a run ended, shared by the waiting request and the runs table.
pub type Outcome = Result<Arc<RunReport>, Arc<JobError>>;

/// Where a run is.
#[derive(Clone)]
pub(crate) enum RunState {
    /// Still going; how far its sends are.
    Running(RunProgress),
    /// Ended (report or error).
    Finished(Outcome),
}

/// How far a run in progress is, as its sends publish it.
#[derive(Clone)]
pub(crate) struct RunProgress(watch::Receiver<Progress>);

impl RunProgress {
    /// The latest figures, or `None` while the run still reads the export and plans (no
    /// send has started).
    pub fn latest(&self) -> Option<Progress> {
        // The run publishes once when sending begins: before that the value is unchanged.
        match self.0.has_changed() {
            Ok(false) => None,
            _ => Some(*self.0.borrow()),
        }
    }
}

/// A run was refused before it started.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A real run is already going in this process.
    #[error("a run is already in progress in this instance (run {0})")]
    InProgress(String),
    /// The server is shutting down.
    #[error("the handler is shutting down")]
    ShuttingDown,
}

/// One of the [`MAX_DRY_RUNS`] places for a dry run, held by the run's task until it ends.
pub(crate) struct DryRunSlot {
    _permit: OwnedSemaphorePermit,
}

/// A started run: its id and a way to wait for its end.
pub struct Ticket {
    /// The run id.
    pub run_id: String,
    rx: watch::Receiver<Option<Outcome>>,
}

impl Ticket {
    /// Waits for the run to end.
    pub async fn outcome(mut self) -> Outcome {
        loop {
            if let Some(o) = self.rx.borrow_and_update().clone() {
                return o;
            }
            if self.rx.changed().await.is_err() {
                // The task ended without an outcome: only a panic outside the run's own
                // guard does that (it was logged where it happened).
                return Err(Arc::new(JobError::Internal));
            }
        }
    }
}

/// Shared server state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    wiring: Wiring,
    deps: Deps,
    cancel: CancellationToken,
    tasks: TaskTracker,
    active: Mutex<Option<String>>,
    /// Told when a real run of this process ends (a waiting timer starts at once).
    real_run_ended: tokio::sync::Notify,
    runs: Mutex<VecDeque<(String, RunState)>>,
    dry_runs: Arc<Semaphore>,
}

impl AppState {
    /// State over the process's `wiring` and the run dependencies it built once at start;
    /// `cancel` stops runs between batches at shutdown.
    pub fn new(wiring: Wiring, deps: Deps, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                wiring,
                deps,
                cancel,
                tasks: TaskTracker::new(),
                active: Mutex::new(None),
                real_run_ended: tokio::sync::Notify::new(),
                runs: Mutex::new(VecDeque::new()),
                dry_runs: Arc::new(Semaphore::new(MAX_DRY_RUNS)),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        self.inner.wiring.config()
    }

    /// The process's wiring: per-request choices of source or channel are built from it,
    /// sharing its credential, limits and Graph client.
    pub fn wiring(&self) -> &Wiring {
        &self.inner.wiring
    }

    /// The run's dependencies.
    pub fn deps(&self) -> &Deps {
        &self.inner.deps
    }

    /// The shutdown token.
    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// The run in progress in this process, if any.
    pub(crate) fn active_run(&self) -> Option<String> {
        self.inner.active.lock().expect("active lock").clone()
    }

    /// Resolves when a real run of this process ends after this call (registered at once,
    /// before it is awaited, so an end between a refused start and the wait is not missed).
    pub(crate) fn real_run_ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.real_run_ended.notified()
    }

    /// Where a run known to this process is.
    pub(crate) fn run_state(&self, run_id: &str) -> Option<RunState> {
        let runs = self.inner.runs.lock().expect("runs lock");
        runs.iter()
            .find(|(id, _)| id == run_id)
            .map(|(_, s)| s.clone())
    }

    /// The most recently finished run of this process with a report.
    pub(crate) fn last_finished_report(&self) -> Option<Arc<RunReport>> {
        let runs = self.inner.runs.lock().expect("runs lock");
        runs.iter()
            .filter_map(|(_, s)| match s {
                RunState::Finished(Ok(r)) => Some(r.clone()),
                _ => None,
            })
            .max_by_key(|r| r.finished_at)
    }

    /// A place for one more dry run, or `None` when [`MAX_DRY_RUNS`] are going.
    pub(crate) fn dry_run_slot(&self) -> Option<DryRunSlot> {
        self.inner
            .dry_runs
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| DryRunSlot { _permit: permit })
    }

    /// Starts a run as a task of its own, in the current span. Real runs are one at a time
    /// per process (the ledger lock covers other processes); dry runs change nothing and
    /// may overlap. A dry run takes a free [`DryRunSlot`] if there is one; callers that
    /// must stay within [`MAX_DRY_RUNS`] (the HTTP function) take the slot first and use
    /// [`AppState::start_with`].
    pub fn start(&self, req: RunRequest) -> Result<Ticket, Refused> {
        let slot = if req.dry_run {
            self.dry_run_slot()
        } else {
            None
        };
        self.start_with(req, slot)
    }

    /// [`AppState::start`] with the dry run's slot already taken; the run's task holds it
    /// until the run ends (whether or not anyone waits for it).
    pub(crate) fn start_with(
        &self,
        mut req: RunRequest,
        slot: Option<DryRunSlot>,
    ) -> Result<Ticket, Refused> {
        if self.inner.cancel.is_cancelled() {
            return Err(Refused::ShuttingDown);
        }
        let run_id = req
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        req.run_id = Some(run_id.clone());
        // The run publishes its progress here for `GET ?runId=` while it runs.
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        req.progress = Some(Arc::new(progress_tx));
        let real = !req.dry_run;
        if real {
            let mut active = self.inner.active.lock().expect("active lock");
            if let Some(other) = active.as_ref() {
                return Err(Refused::InProgress(other.clone()));
            }
            *active = Some(run_id.clone());
        }
        {
            let mut runs = self.inner.runs.lock().expect("runs lock");
            runs.push_back((run_id.clone(), RunState::Running(RunProgress(progress_rx))));
            // Forget the oldest finished runs; running ones stay whatever their age.
            while runs.len() > KEPT_RUNS {
                match runs
                    .iter()
                    .position(|(_, s)| matches!(s, RunState::Finished(_)))
                {
                    Some(i) => {
                        runs.remove(i);
                    }
                    None => break,
                }
            }
        }
        let (tx, rx) = watch::channel(None);
        let state = self.clone();
        let id = run_id.clone();
        let span = tracing::Span::current();
        self.inner.tasks.spawn(async move {
            let run = job::run(&state.inner.deps, req, state.inner.cancel.child_token())
                .instrument(span.clone());
            // A panic anywhere in the run (the run guards its own work and gives its lock
            // back; this covers the rest) must still end the run here: mark it finished,
            // free this process's run slot and answer the waiting caller, or every later
            // run of the process would be refused as "in progress".
            let outcome: Outcome =
                match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
                    Ok(result) => result.map(Arc::new).map_err(Arc::new),
                    Err(panic) => {
                        tracing::error!(parent: &span, run_id = %id, panic = %job::panic_message(panic.as_ref()), "the run task panicked");
                        Err(Arc::new(JobError::Internal))
                    }
                };
            let _in_span = span.enter();
            if let Err(e) = &outcome {
                if let JobError::Cancelled { sent } = e.as_ref() {
                    tracing::warn!(run_id = %id, sent, "run stopped by the shutdown; what it sent is recorded");
                }
            }
            {
                let mut runs = state.inner.runs.lock().expect("runs lock");
                if let Some(entry) = runs.iter_mut().find(|(rid, _)| *rid == id) {
                    entry.1 = RunState::Finished(outcome.clone());
                }
            }
            if real {
                let mut active = state.inner.active.lock().expect("active lock");
                if active.as_deref() == Some(id.as_str()) {
                    *active = None;
                }
                drop(active);
                state.inner.real_run_ended.notify_waiters();
            }
            // Give the dry run's place back before anyone learns the run ended.
            drop(slot);
            let _ = tx.send(Some(outcome));
        });
        Ok(Ticket { run_id, rx })
    }

    /// Stops taking runs and waits for the runs in progress to end (they stop between
    /// batches once the token is cancelled), at most `grace`. Returns whether they all ended.
    pub(crate) async fn drain(&self, grace: std::time::Duration) -> bool {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_shows_no_progress_before_its_sends_begin_then_the_latest_figures() {
        let (tx, rx) = watch::channel(Progress::default());
        let seen = RunProgress(rx);
        assert_eq!(seen.latest(), None, "still reading the export and planning");
        let first = Progress {
            total: 40,
            ..Default::default()
        };
        tx.send_replace(first);
        assert_eq!(seen.latest(), Some(first), "0 of 40 is progress too");
        let later = Progress {
            done: 12,
            sent: 11,
            failed: 1,
            ..first
        };
        tx.send_replace(later);
        // Every poll reads the latest figures; reading never marks them seen.
        assert_eq!(seen.clone().latest(), Some(later));
        assert_eq!(seen.latest(), Some(later));
    }
}
