//! The timer function (`function_timer`): the host posts its invocation payload, the job
//! runs, and the answer is `{"Outputs": {}, "Logs": [...], "ReturnValue": {summary…}}`.
//!
//! A past-due or duplicate invocation on the same day runs the job again and sends nothing:
//! the ledger's cadence never reminds an owner twice on one day. A run already in progress
//! (an HTTP run, or another instance holding the lock) is a normal outcome, answered 200
//! with `ReturnValue.status = "in_progress"` so the host does not record a failure.

use super::payload::{InvokeRequest, InvokeResponse, TimerInfo};
use super::state::{AppState, Refused};
use crate::job::{JobError, RunRequest};
use crate::report::{RunReport, Trigger};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tracing::{error, info, warn};

/// The trigger binding's name in `function_timer/function.json`.
pub(crate) const BINDING: &str = "timer";

/// Answers one timer invocation.
pub async fn invoke(
    state: &AppState,
    body: &[u8],
    invocation_id: Option<String>,
) -> (StatusCode, InvokeResponse) {
    let mut logs = Vec::new();
    let payload: InvokeRequest = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("the timer invocation payload is not the host's JSON: {e}");
            warn!(error = %msg, "bad timer payload");
            return (
                StatusCode::BAD_REQUEST,
                answer(vec![msg], json!({ "status": "bad_request" })),
            );
        }
    };
    // Liberal: a timer value we cannot read does not stop the daily run.
    let timer = match payload.binding::<TimerInfo>(BINDING) {
        Ok(Some(t)) => t,
        Ok(None) => {
            warn!("no timer value in the payload (Data.{BINDING}); running anyway");
            TimerInfo::default()
        }
        Err(e) => {
            warn!(error = %e, "unreadable timer value; running anyway");
            TimerInfo::default()
        }
    };
    let status = timer.schedule_status.clone().unwrap_or_default();
    info!(
        past_due = timer.is_past_due,
        last = status.last.as_deref().unwrap_or("-"),
        next = status.next.as_deref().unwrap_or("-"),
        utc_now = payload.utc_now().unwrap_or("-"),
        "timer fired"
    );
    if timer.is_past_due {
        let msg = "the timer is past due (a missed occurrence, e.g. after a restart): running now; owners already reminded today are not reminded again";
        warn!("{msg}");
        logs.push(msg.to_string());
    }

    // A run in progress (a button press, even for one owner) must not cost the day's
    // reminders: wait for it within a bound, then run (the cadence makes the overlap
    // harmless). Past the bound, fail the invocation so the retry policy in
    // function_timer/function.json runs it again.
    let wait = Duration::from_secs(state.config().timer_lock_wait_seconds);
    let give_up_at = tokio::time::Instant::now() + wait;
    let mut waited = false;
    let outcome = loop {
        let mut req = RunRequest::new(Trigger::Timer);
        req.invocation_id = invocation_id.clone();
        // Registered before the attempt: a run of this process ending after it wakes the wait.
        let ended = state.real_run_ended();
        let mut in_this_process = false;
        let busy = match state.start(req) {
            Ok(ticket) => {
                let run_id = ticket.run_id.clone();
                match ticket.outcome().await {
                    Err(e) if matches!(*e, JobError::Busy(_)) => e.to_string(),
                    other => break (run_id, other),
                }
            }
            Err(refused @ Refused::InProgress(_)) => {
                in_this_process = true;
                refused.to_string()
            }
            Err(Refused::ShuttingDown) => {
                logs.push("the handler is shutting down; the run did not start".into());
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    answer(logs, json!({ "status": "shutting_down" })),
                );
            }
        };
        if tokio::time::Instant::now() >= give_up_at {
            return in_progress(logs, &busy, timer.is_past_due, wait);
        }
        if !waited {
            info!(reason = %busy, wait_s = wait.as_secs(), "a run is in progress: the timer waits for it");
            logs.push(format!(
                "waiting up to {} s for the run in progress: {busy}",
                wait.as_secs()
            ));
            waited = true;
        }
        // Another instance's lock (the ledger's) is polled; a run of this process wakes the
        // timer when it ends (the timer's own failed attempt also "ended": not waited on).
        let poll = tokio::time::sleep(LOCK_POLL.min(give_up_at - tokio::time::Instant::now()));
        if in_this_process {
            tokio::select! {
                () = ended => {}
                () = poll => {}
            }
        } else {
            poll.await;
        }
    };
    let (run_id, outcome) = outcome;
    logs.push(format!("run {run_id} started"));
    match outcome {
        Ok(report) => {
            summarise(&report, &mut logs);
            let status = if report.partial_failure() {
                "partial"
            } else {
                "done"
            };
            let value = json!({
                "status": status,
                "runId": report.run_id,
                "pastDue": timer.is_past_due,
                "summary": report.summary,
                "counts": report.counts,
            });
            (StatusCode::OK, answer(logs, value))
        }
        Err(e) => {
            // A non-2xx fails the invocation in the host, which is what the operator's
            // alerts watch; the reason is in `Logs` and in our own log line.
            error!(run_id = %run_id, error = %e, "timer run failed");
            logs.push(format!("run {run_id} failed: {e}"));
            let value = json!({ "status": "failed", "runId": run_id, "error": e.to_string() });
            (StatusCode::INTERNAL_SERVER_ERROR, answer(logs, value))
        }
    }
}

/// How often a waiting timer tries the lock again.
const LOCK_POLL: Duration = Duration::from_secs(2);

/// A run was still in progress after the wait: a failed invocation (500), so the host's
/// retry policy (function_timer/function.json) runs the day's reminders again later.
fn in_progress(
    mut logs: Vec<String>,
    why: &str,
    past_due: bool,
    waited: Duration,
) -> (StatusCode, InvokeResponse) {
    warn!(reason = %why, waited_s = waited.as_secs(), "timer run not started: a run is still in progress; the host will retry");
    logs.push(format!(
        "not run after waiting {} s: {why}; failing so the host retries",
        waited.as_secs()
    ));
    let value = json!({ "status": "in_progress", "pastDue": past_due, "summary": format!("not run: {why}") });
    (StatusCode::INTERNAL_SERVER_ERROR, answer(logs, value))
}

fn summarise(report: &RunReport, logs: &mut Vec<String>) {
    logs.push(report.summary.clone());
    if report.counts.sent == 0 && report.owners.not_due > 0 && report.owners.planned == 0 {
        let msg = format!(
            "nothing due: {} owners were already reminded recently (a duplicate or past-due invocation sends nothing twice)",
            report.owners.not_due
        );
        info!("{msg}");
        logs.push(msg);
    }
    if !report.rejected.is_empty() {
        logs.push(format!(
            "{} export rows rejected (see the run report)",
            report.rejected.len()
        ));
    }
    for w in report.warnings.iter().take(10) {
        logs.push(format!("warning: {w}"));
    }
}

fn answer(logs: Vec<String>, return_value: Value) -> InvokeResponse {
    InvokeResponse {
        outputs: Map::new(),
        logs,
        return_value,
    }
}
