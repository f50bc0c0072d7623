//! `GET /api/project/{p}/metrics/job/{run_name}`: a job's stored metrics samples as dstack's
//! series (`services/metrics.py`).
//!
//! The job is `(replica_num, job_num)` (default `0, 0`) of the live run of that name, or of
//! the run `run_id`; its latest submission. Samples are latest first; `limit` (default 1),
//! `after` (inclusive) and `before` (exclusive) pick them. CPU usage is a rate, so one more
//! sample than `limit` is read and a window needs at least two: `cpu_usage_percent =
//! round(Δcpu_usage_micro / Δtimestamp_micro × 100)` (Python's `round`, ties to even).
//! The constant series come from the job's instance resources; GPU series are left out if
//! the number of GPUs changed within the window.
//!
//! A malformed query parameter is a 422 in FastAPI's shape (`loc: ["query", name]`); datetime
//! errors carry our own wording after pydantic's prefix.

use axum::extract::{Path, Query, State};
use dstack_api::metrics::{JobMetrics, Metric};
use dstack_api::runs::{JobProvisioningData, JobRuntimeData, Resources};
use dstack_api::{ApiError, ValidationDetail};
use dstack_db::{JobRow, MetricsPointRow, MetricsQuery};
use serde_json::Number;
use uuid::Uuid;

use super::{Failure, Json, validation};
use crate::auth::{Member, ProjectAccess};
use crate::state::AppState;

/// The query parameters, as dstack's router takes them.
#[derive(Debug, Clone, PartialEq)]
struct Params {
    run_id: Option<Uuid>,
    replica_num: i64,
    job_num: i64,
    limit: i64,
    after: Option<jiff::Timestamp>,
    before: Option<jiff::Timestamp>,
}

pub(super) async fn job(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Path((_, run_name)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<JobMetrics>, Failure> {
    let p = params(&query).map_err(|d| Failure(ApiError::Validation(d)))?;
    let run = match p.run_id {
        Some(id) => state
            .db
            .run_by_id(id)
            .await?
            .filter(|r| r.project_id == access.project.id && r.run_name == run_name),
        None => state.db.run_by_name(access.project.id, &run_name).await?,
    };
    let not_found = || Failure(ApiError::not_exists("Found no job with given parameters"));
    let run = run.ok_or_else(not_found)?;
    let job = state
        .db
        .jobs_of_runs(&[run.id])
        .await?
        .into_iter()
        .filter(|j| j.replica_num == p.replica_num && j.job_num == p.job_num)
        .max_by_key(|j| j.submission_num)
        .ok_or_else(not_found)?;
    let query = MetricsQuery {
        after: p.after.map(|t| t.as_microsecond()),
        before: p.before.map(|t| t.as_microsecond()),
        // One more for the CPU rate.
        limit: p.limit.saturating_add(1),
    };
    let points = state.db.job_metrics_points(job.id, &query).await?;
    Ok(Json(job_metrics(&points, resources(&job).as_ref())))
}

fn params(query: &[(String, String)]) -> Result<Params, Box<ValidationDetail>> {
    // FastAPI reads the last value of a repeated scalar parameter.
    let get = |name: &str| query.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let int = |name: &str, default: i64| -> Result<i64, Box<ValidationDetail>> {
        match get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                invalid(
                    "int_parsing",
                    name,
                    "Input should be a valid integer, unable to parse string as an integer",
                    v,
                )
            }),
        }
    };
    let datetime = |name: &str| -> Result<Option<jiff::Timestamp>, Box<ValidationDetail>> {
        get(name)
            .map(|v| {
                parse_datetime(v).ok_or_else(|| {
                    invalid(
                        "datetime_from_date_parsing",
                        name,
                        "Input should be a valid datetime or date, expected an RFC 3339 datetime or a unix time",
                        v,
                    )
                })
            })
            .transpose()
    };
    let run_id = get("run_id")
        .map(|v| {
            Uuid::parse_str(v.trim()).map_err(|e| {
                invalid("uuid_parsing", "run_id", &format!("Input should be a valid UUID, {e}"), v)
            })
        })
        .transpose()?;
    Ok(Params {
        run_id,
        replica_num: int("replica_num", 0)?,
        job_num: int("job_num", 0)?,
        limit: int("limit", 1)?,
        after: datetime("after")?,
        before: datetime("before")?,
    })
}

fn invalid(kind: &str, name: &str, msg: &str, input: &str) -> Box<ValidationDetail> {
    Box::new(validation(kind, vec!["query".into(), name.into()], msg, input.into()))
}

/// RFC 3339 (naive means UTC), or a unix time in seconds (milliseconds above 2·10¹⁰), as
/// pydantic reads a datetime from a string.
fn parse_datetime(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if let Ok(ts) = dstack_api::time::parse(text) {
        return Some(ts);
    }
    let number: f64 = text.parse().ok().filter(|n: &f64| n.is_finite())?;
    let seconds = if number.abs() > 2e10 { number / 1000.0 } else { number };
    jiff::Timestamp::from_microsecond((seconds * 1e6).round() as i64).ok()
}

/// The job's instance resources: the runtime offer's, else the provisioning data's.
fn resources(job: &JobRow) -> Option<Resources> {
    let jrd = job.job_runtime_data.as_deref().and_then(|t| serde_json::from_str::<JobRuntimeData>(t).ok());
    if let Some(offer) = jrd.and_then(|r| r.offer) {
        return Some(offer.instance.resources);
    }
    let jpd = job.job_provisioning_data.as_deref()?;
    serde_json::from_str::<JobProvisioningData>(jpd).ok().map(|p| p.instance_type.resources)
}

/// dstack's series from samples ordered latest first.
fn job_metrics(points: &[MetricsPointRow], resources: Option<&Resources>) -> JobMetrics {
    if points.len() < 2 {
        return JobMetrics { metrics: Vec::new() };
    }
    let gpu_list = |text: &str| serde_json::from_str::<Vec<Number>>(text).unwrap_or_default();
    let mut timestamps = Vec::new();
    let mut cpu = Vec::new();
    let mut memory = Vec::new();
    let mut working_set = Vec::new();
    let mut gpus_memory: Vec<Vec<Number>> = Vec::new();
    let mut gpus_util: Vec<Vec<Number>> = Vec::new();
    let mut gpus_detected: Option<usize> = None;
    let mut mismatch = false;
    for pair in points.windows(2) {
        let (point, prev) = (&pair[0], &pair[1]);
        timestamps.push(
            jiff::Timestamp::from_microsecond(point.timestamp_micro).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        );
        cpu.push(Number::from(cpu_usage_percent(point, prev)));
        memory.push(Number::from(point.memory_usage_bytes));
        working_set.push(Number::from(point.memory_working_set_bytes));
        let (mem, util) = (gpu_list(&point.gpus_memory_usage_bytes), gpu_list(&point.gpus_util_percent));
        let n = *gpus_detected.get_or_insert(mem.len());
        if mem.len() != n || util.len() != n {
            mismatch = true;
        }
        if !mismatch {
            gpus_memory.resize(n, Vec::new());
            gpus_util.resize(n, Vec::new());
            for (i, (m, u)) in mem.into_iter().zip(util).enumerate() {
                gpus_memory[i].push(m);
                gpus_util[i].push(u);
            }
        }
    }
    let series = |name: String, values: Vec<Number>| Metric { name, timestamps: timestamps.clone(), values };
    let constant =
        |name: &str, value: i64| series(name.to_owned(), vec![Number::from(value); timestamps.len()]);
    let mut metrics = vec![
        series("cpu_usage_percent".to_owned(), cpu),
        series("memory_usage_bytes".to_owned(), memory),
        series("memory_working_set_bytes".to_owned(), working_set),
    ];
    if let Some(r) = resources {
        metrics.push(constant("cpus_detected_num", r.cpus));
        metrics.push(constant("memory_total_bytes", r.memory_mib * 1024 * 1024));
    }
    if mismatch {
        tracing::warn!("gpus_detected_num mismatch, skipping GPU metrics");
    } else {
        metrics.push(constant("gpus_detected_num", gpus_detected.unwrap_or(0) as i64));
        if let Some(gpu) = resources.and_then(|r| r.gpus.first()) {
            metrics.push(constant("gpu_memory_total_bytes", gpu.memory_mib * 1024 * 1024));
        }
        for (i, values) in gpus_memory.into_iter().enumerate() {
            metrics.push(series(format!("gpu_memory_usage_bytes_gpu{i}"), values));
        }
        for (i, values) in gpus_util.into_iter().enumerate() {
            metrics.push(series(format!("gpu_util_percent_gpu{i}"), values));
        }
    }
    JobMetrics { metrics }
}

fn cpu_usage_percent(point: &MetricsPointRow, prev: &MetricsPointRow) -> i64 {
    let window = point.timestamp_micro - prev.timestamp_micro;
    if window == 0 {
        return 0;
    }
    let used = (point.cpu_usage_micro - prev.cpu_usage_micro) as f64;
    (used / window as f64 * 100.0).round_ties_even() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, cpu: i64) -> MetricsPointRow {
        MetricsPointRow {
            job_id: Uuid::nil(),
            timestamp_micro: ts,
            cpu_usage_micro: cpu,
            memory_usage_bytes: 0,
            memory_working_set_bytes: 0,
            gpus_memory_usage_bytes: "[]".into(),
            gpus_util_percent: "[]".into(),
        }
    }

    #[test]
    fn cpu_percent_rounds_like_python() {
        assert_eq!(cpu_usage_percent(&point(2_000_000, 1_025_000), &point(1_000_000, 0)), 102);
        // round(2.5) == 2, round(3.5) == 4 in Python.
        assert_eq!(cpu_usage_percent(&point(1_000_000, 25_000), &point(0, 0)), 2);
        assert_eq!(cpu_usage_percent(&point(1_000_000, 35_000), &point(0, 0)), 4);
        assert_eq!(cpu_usage_percent(&point(5, 10), &point(5, 0)), 0);
    }

    #[test]
    fn a_window_needs_two_points_and_gpu_changes_drop_gpu_series() {
        assert_eq!(job_metrics(&[point(1, 1)], None), JobMetrics { metrics: Vec::new() });
        let mut a = point(3_000_000, 10);
        a.gpus_memory_usage_bytes = "[1, 2]".into();
        a.gpus_util_percent = "[3, 4]".into();
        let b = point(2_000_000, 5);
        let names: Vec<String> = job_metrics(&[a, b.clone(), point(1_000_000, 0)], None)
            .metrics
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["cpu_usage_percent", "memory_usage_bytes", "memory_working_set_bytes"]);
        let names: Vec<String> =
            job_metrics(&[b, point(1_000_000, 0)], None).metrics.into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            ["cpu_usage_percent", "memory_usage_bytes", "memory_working_set_bytes", "gpus_detected_num"]
        );
    }

    #[test]
    fn query_parameters_parse_like_fastapi() {
        let q = |pairs: &[(&str, &str)]| {
            params(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>())
        };
        let defaults = q(&[]).unwrap();
        assert_eq!((defaults.replica_num, defaults.job_num, defaults.limit), (0, 0, 1));
        let p =
            q(&[("limit", "5"), ("limit", "7"), ("after", "2026-01-01T00:00:00"), ("before", "1767225600")])
                .unwrap();
        assert_eq!(p.limit, 7);
        assert_eq!(p.after, p.before);
        let e = q(&[("limit", "x")]).unwrap_err();
        assert_eq!((e.kind.as_str(), e.loc.clone()), ("int_parsing", vec!["query".into(), "limit".into()]));
        assert_eq!(q(&[("run_id", "nope")]).unwrap_err().kind, "uuid_parsing");
        assert_eq!(q(&[("after", "yesterday")]).unwrap_err().kind, "datetime_from_date_parsing");
    }
}
