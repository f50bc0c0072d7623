//! `dstack logs RUN [-f] [--since] [--replica N] [--job N] [-d]`, and the log streaming that
//! `dstack apply` uses while attached (api.md §4.5).
//!
//! Logs come from the server (`logs/poll`), page by page with `next_token`; following polls
//! again from the last event's timestamp (the server's `start_time` is exclusive) and switches
//! to a newer submission when the job is retried.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use dstack_api::runs::{Job, JobStatus, PollLogsRequest, Run};
use dstack_client::ClientError;
use jiff::Timestamp;
use uuid::Uuid;

use crate::common::{Session, connect_to_run, interrupted, sleep_unless_interrupted};
use crate::{EXIT_INVALID, EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run.
    pub run_name: String,
    /// Keep printing new logs until the run finishes (Ctrl-C stops following).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only logs newer than this: a duration (10s, 5m, 2h, 1d, 1w) or an RFC 3339 time
    /// (2023-09-24T15:30:00Z).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Since>,
    /// The replica number (default: a running replica, else 0).
    #[arg(long)]
    pub replica: Option<i64>,
    /// The job number inside the replica.
    #[arg(long, default_value_t = 0)]
    pub job: i64,
    /// Show the runner's diagnostic logs instead of the job's.
    #[arg(short = 'd', long)]
    pub diagnose: bool,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

/// `--since`: a time, or a duration back from when the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(i64),
    At(Timestamp),
}

impl Since {
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Since::At(ts) => ts,
            Since::Ago(secs) => now - jiff::SignedDuration::from_secs(secs),
        }
    }
}

/// `10m`, `1h30m`, `90` (seconds) or an RFC 3339 time with an offset.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Some(secs) = parse_duration(text) {
        return Ok(Since::Ago(secs));
    }
    text.parse::<Timestamp>().map(Since::At).map_err(|_| {
        format!("expected a duration like 10m or an RFC 3339 time like 2023-09-24T15:30:00Z, found `{text}`")
    })
}

fn parse_duration(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return (secs >= 0).then_some(secs);
    }
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && !text.is_empty()).then_some(total)
}

pub fn run(args: &LogsArgs) -> u8 {
    let (session, run) = match connect_to_run(args.project.as_deref(), &args.run_name) {
        Ok(found) => found,
        Err(code) => return code,
    };
    // Only following catches Ctrl-C; a one-off listing stops at once as usual.
    let flag = if args.follow { interrupted() } else { Arc::new(AtomicBool::new(false)) };
    let mut run = run;
    let submission = loop {
        if let Some(sub) = pick_job(&run, args.replica, args.job).and_then(|j| j.job_submissions.last()) {
            break sub.clone();
        }
        // No such job (yet): nothing to show, as in dstack; with -f, wait for it.
        if !args.follow || run.status.is_finished() || sleep_unless_interrupted(Duration::from_secs(2), &flag)
        {
            return EXIT_OK;
        }
        run = match session.client.get_run(&session.project, &args.run_name) {
            Ok(run) => run,
            Err(e) => return fail(e),
        };
    };
    let mut cursor = Cursor {
        submission_id: submission.id,
        start_time: args.since.map(|s| s.resolve(Timestamp::now())),
        diagnose: args.diagnose,
    };
    let mut out = std::io::stdout().lock();
    if !args.follow {
        return match drain(&session, &args.run_name, &mut cursor, &mut out, &flag) {
            Ok(_) => EXIT_OK,
            Err(e) => fail(e),
        };
    }
    match follow(&session, &args.run_name, &mut cursor, (args.replica, args.job), &mut out, &flag) {
        Ok(Followed::Finished(_)) | Ok(Followed::Interrupted) => EXIT_OK,
        Err(e) => fail(e),
    }
}

/// The job `dstack logs` reads: `job_num` of replica `replica`, or of the lowest running
/// replica (else the lowest) when no replica is given.
pub fn pick_job(run: &Run, replica: Option<i64>, job_num: i64) -> Option<&Job> {
    let mut jobs = run.jobs.iter().filter(|j| j.job_spec.job_num == job_num);
    match replica {
        Some(r) => jobs.find(|j| j.job_spec.replica_num == r),
        None => {
            let jobs: Vec<&Job> = jobs.collect();
            let running =
                |j: &&&Job| j.job_submissions.last().is_some_and(|s| s.status == JobStatus::Running);
            jobs.iter()
                .filter(running)
                .min_by_key(|j| j.job_spec.replica_num)
                .copied()
                .or_else(|| jobs.iter().min_by_key(|j| j.job_spec.replica_num).copied())
        }
    }
}

/// Where reading stopped.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub submission_id: Uuid,
    /// Exclusive: only events after it.
    pub start_time: Option<Timestamp>,
    pub diagnose: bool,
}

/// Writes every log event available now, page by page, and moves the cursor past them.
/// Returns how many events were written.
pub fn drain(
    session: &Session,
    run_name: &str,
    cursor: &mut Cursor,
    out: &mut impl Write,
    flag: &AtomicBool,
) -> Result<usize, ClientError> {
    let mut next_token = None;
    let mut n_events = 0;
    let mut last_seen = None;
    loop {
        let req = PollLogsRequest {
            run_name: run_name.to_owned(),
            job_submission_id: cursor.submission_id,
            start_time: cursor.start_time,
            end_time: None,
            descending: false,
            next_token: next_token.take(),
            limit: 1000,
            diagnose: cursor.diagnose,
        };
        let page = with_retries(|| session.client.poll_logs(&session.project, &req))?;
        for event in &page.logs {
            // A message that is not base64 is shown as it came.
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&event.message)
                .unwrap_or_else(|_| event.message.clone().into_bytes());
            let _ = out.write_all(&bytes);
        }
        let _ = out.flush();
        n_events += page.logs.len();
        if let Some(last) = page.logs.last() {
            last_seen = Some(last.timestamp);
        }
        match page.next_token {
            Some(token) if !page.logs.is_empty() && !flag.load(Ordering::SeqCst) => next_token = Some(token),
            _ => {
                // The next walk starts after the newest event seen (`start_time` is exclusive).
                if last_seen.is_some() {
                    cursor.start_time = last_seen;
                }
                return Ok(n_events);
            }
        }
    }
}

/// How following ended.
#[derive(Debug)]
pub enum Followed {
    /// The run finished; its last state.
    Finished(Box<Run>),
    /// Ctrl-C.
    Interrupted,
}

/// Streams logs until the run finishes, switching to a newer submission of the same job when
/// the job is retried.
pub fn follow(
    session: &Session,
    run_name: &str,
    cursor: &mut Cursor,
    (replica, job): (Option<i64>, i64),
    out: &mut impl Write,
    flag: &AtomicBool,
) -> Result<Followed, ClientError> {
    loop {
        drain(session, run_name, cursor, out, flag)?;
        if flag.load(Ordering::SeqCst) {
            return Ok(Followed::Interrupted);
        }
        let run = with_retries(|| session.client.get_run(&session.project, run_name))?;
        let latest = pick_job(&run, replica, job).and_then(|j| j.job_submissions.last()).map(|s| s.id);
        if let Some(id) = latest.filter(|id| *id != cursor.submission_id) {
            drain(session, run_name, cursor, out, flag)?;
            cursor.submission_id = id;
            cursor.start_time = None;
        }
        if run.status.is_finished() {
            drain(session, run_name, cursor, out, flag)?;
            return Ok(Followed::Finished(Box::new(run)));
        }
        if sleep_unless_interrupted(Duration::from_secs(1), flag) {
            return Ok(Followed::Interrupted);
        }
    }
}

/// Calls `f`, retrying up to four times, a second apart, when the server cannot be reached
/// (a restart, a network blip) so that following a long run survives it.
pub fn with_retries<T>(mut f: impl FnMut() -> Result<T, ClientError>) -> Result<T, ClientError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(ClientError::Transport { .. }) if attempt < 4 => {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Exit code for a finished run: 0 when `done`.
pub fn exit_code(run: &Run) -> u8 {
    if run.status == dstack_api::runs::RunStatus::Done { EXIT_OK } else { EXIT_INVALID }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(600)));
        assert_eq!(parse_since("1h30m"), Ok(Since::Ago(5400)));
        assert_eq!(parse_since("45"), Ok(Since::Ago(45)));
        assert_eq!(parse_since("1d"), Ok(Since::Ago(86_400)));
        assert_eq!(
            parse_since("2023-09-24T15:30:00Z"),
            Ok(Since::At("2023-09-24T15:30:00Z".parse().unwrap()))
        );
        let err = parse_since("yesterday").unwrap_err();
        assert_eq!(
            err,
            "expected a duration like 10m or an RFC 3339 time like 2023-09-24T15:30:00Z, found `yesterday`"
        );
        assert!(parse_since("10x").is_err());
        assert!(parse_since("m").is_err());
        let now: Timestamp = "2026-11-24T12:20:00Z".parse().unwrap();
        assert_eq!(Since::Ago(600).resolve(now), "2026-11-24T12:10:00Z".parse::<Timestamp>().unwrap());
    }
}
