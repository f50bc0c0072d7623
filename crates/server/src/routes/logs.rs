//! `/api/project/{p}/logs/poll`: a job submission's stored logs, a page at a time.
//!
//! `next_token` is the timestamp (unix ms) of the last event returned; the next page starts
//! after it. `start_time` and `end_time` are exclusive, as in dstack.

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::runs::{JobSubmissionLogs, LogEvent, LogEventSource, PollLogsRequest};
use dstack_db::LogQuery;

use super::{Body, Failure, Json};
use crate::auth::{Member, ProjectAccess};
use crate::state::AppState;

pub(super) async fn poll(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<PollLogsRequest>,
) -> Result<Json<JobSubmissionLogs>, Failure> {
    if !(0..=1000).contains(&req.limit) {
        return Err(ApiError::error("limit must be between 0 and 1000").into());
    }
    let job = state
        .db
        .job_by_id(req.job_submission_id)
        .await?
        .filter(|j| j.project_id == access.project.id && j.run_name == req.run_name)
        .ok_or_else(|| ApiError::not_exists("Job submission not found"))?;
    let token = match req.next_token.as_deref() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| ApiError::error(format!("Invalid next_token: {t}. Must be a valid integer.")))?,
        ),
        None => None,
    };
    let start = req.start_time.map(|t| t.as_millisecond());
    let end = req.end_time.map(|t| t.as_millisecond());
    let (after, before) = if req.descending {
        (
            start,
            match (token, end) {
                (Some(t), Some(e)) => Some(t.min(e)),
                (t, e) => t.or(e),
            },
        )
    } else {
        (
            match (token, start) {
                (Some(t), Some(s)) => Some(t.max(s)),
                (t, s) => t.or(s),
            },
            end,
        )
    };
    let source = if req.diagnose { "runner" } else { "stdout" };
    let query = LogQuery { after, before, descending: req.descending, limit: req.limit };
    let rows = state.db.job_logs(job.id, source, &query).await?;
    let next_token = if rows.len() as i64 == req.limit && req.limit > 0 {
        rows.last().map(|r| r.ts.to_string())
    } else {
        None
    };
    let logs = rows
        .into_iter()
        .map(|r| LogEvent {
            timestamp: jiff::Timestamp::from_millisecond(r.ts).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            log_source: LogEventSource::Stdout,
            message: r.message,
        })
        .collect();
    Ok(Json(JobSubmissionLogs { logs, external_url: None, next_token }))
}
