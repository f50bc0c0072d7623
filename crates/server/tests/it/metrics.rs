//! `GET /api/project/{p}/metrics/job/{run_name}` over samples stored through the db layer.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use dstack_db::MetricsPointRow;
use serde_json::{Value, json};

use crate::support::{Reply, TestServer, isolated_server, unique};

async fn get(s: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let mut req = Request::get(path).header("x-api-version", "0.22.5");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    s.send(req.body(Body::empty()).expect("request")).await
}

fn apply_body(name: &str) -> Value {
    let text = include_str!("../../../api/tests/fixtures/task.runs_apply.request.json");
    let mut body: Value = serde_json::from_str(text).expect("fixture");
    body["plan"]["run_spec"]["run_name"] = json!(name);
    body["plan"]["run_spec"]["configuration"]["name"] = json!(name);
    body
}

fn point(job_id: uuid::Uuid, ts: i64, cpu: i64, mem: i64, gpus: &str, util: &str) -> MetricsPointRow {
    MetricsPointRow {
        job_id,
        timestamp_micro: ts,
        cpu_usage_micro: cpu,
        memory_usage_bytes: mem,
        memory_working_set_bytes: mem / 2,
        gpus_memory_usage_bytes: gpus.to_owned(),
        gpus_util_percent: util.to_owned(),
    }
}

/// Unix µs of 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000_000;

#[tokio::test]
async fn stored_samples_come_back_as_dstack_series() {
    let (s, _dir) = isolated_server().await;
    let p = unique("metrics");
    s.admin("/api/projects/create", Some(json!({"project_name": p}))).await;
    let run = s.admin(&format!("/api/project/{p}/runs/apply"), Some(apply_body("mrun"))).await;
    let run_id = run["id"].as_str().expect("a run id").to_owned();
    let base = format!("/api/project/{p}/metrics/job/mrun");

    // No samples yet.
    let reply = get(&s, &base, Some(&s.admin_token)).await;
    assert_eq!((reply.status, &reply.json), (StatusCode::OK, &json!({"metrics": []})));

    // The job runs on a 4-CPU, 16 GiB instance with 2 GPUs of 80 GiB.
    let (mut jobs, token) = s
        .state
        .db
        .lease_jobs(&["submitted"], 10, jiff::Timestamp::now(), jiff::SignedDuration::from_secs(20))
        .await
        .expect("db");
    assert_eq!(jobs.len(), 1);
    let mut job = jobs.remove(0);
    let gpu = json!({"name": "A100", "memory_mib": 81920, "vendor": "nvidia"});
    job.job_provisioning_data = Some(
        json!({
            "backend": "remote", "instance_type": {"name": "local", "resources": {
                "cpus": 4, "memory_mib": 16384, "gpus": [gpu, gpu], "spot": false,
                "disk": {"size_mib": 102400}, "description": ""}},
            "instance_id": "local-0", "hostname": "127.0.0.1", "region": "local", "price": 0.0,
            "username": "root", "dockerized": false
        })
        .to_string(),
    );
    s.state.db.save_job(&job, token, &[], None).await.expect("db");
    s.state.db.release_jobs(token).await.expect("db");

    let db = &s.state.db;
    db.insert_metrics_point(&point(job.id, T0, 0, 1000, "[0, 0]", "[0, 0]")).await.expect("insert");
    // One sample alone makes no window.
    assert_eq!(get(&s, &base, Some(&s.admin_token)).await.json, json!({"metrics": []}));
    // 10 s apart: 15 s, then 5.25 s, then 0.05 s of CPU (150 %, 52.5 % → 52, 0.5 % → 0).
    db.insert_metrics_point(&point(job.id, T0 + 10_000_000, 15_000_000, 2000, "[1048576, 0]", "[50, 0]"))
        .await
        .expect("insert");
    db.insert_metrics_point(&point(job.id, T0 + 20_000_000, 20_250_000, 3000, "[2097152, 0]", "[75, 0]"))
        .await
        .expect("insert");
    db.insert_metrics_point(&point(job.id, T0 + 30_000_000, 20_300_000, 4000, "[3145728, 1]", "[100, 1]"))
        .await
        .expect("insert");

    let ts = json!(["2026-01-01T00:00:30Z", "2026-01-01T00:00:20Z", "2026-01-01T00:00:10Z"]);
    let series = |name: &str, values: Value| json!({"name": name, "timestamps": ts, "values": values});
    let all = get(&s, &format!("{base}?limit=1000"), Some(&s.admin_token)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.json);
    let gib16 = 16384_i64 * 1024 * 1024;
    let gib80 = 81920_i64 * 1024 * 1024;
    assert_eq!(
        all.json,
        json!({"metrics": [
            series("cpu_usage_percent", json!([0, 52, 150])),
            series("memory_usage_bytes", json!([4000, 3000, 2000])),
            series("memory_working_set_bytes", json!([2000, 1500, 1000])),
            series("cpus_detected_num", json!([4, 4, 4])),
            series("memory_total_bytes", json!([gib16, gib16, gib16])),
            series("gpus_detected_num", json!([2, 2, 2])),
            series("gpu_memory_total_bytes", json!([gib80, gib80, gib80])),
            series("gpu_memory_usage_bytes_gpu0", json!([3145728, 2097152, 1048576])),
            series("gpu_memory_usage_bytes_gpu1", json!([1, 0, 0])),
            series("gpu_util_percent_gpu0", json!([100, 75, 50])),
            series("gpu_util_percent_gpu1", json!([1, 0, 0])),
        ]})
    );
    let typed: dstack_api::metrics::JobMetrics =
        serde_json::from_value(all.json.clone()).expect("JobMetrics");
    assert_eq!(serde_json::to_value(&typed).unwrap(), all.json);

    // The default limit is 1: the latest sample (and the one before it for the CPU rate).
    let latest = get(&s, &base, Some(&s.admin_token)).await.json;
    assert_eq!(
        latest["metrics"][0],
        json!({"name": "cpu_usage_percent", "timestamps": ["2026-01-01T00:00:30Z"], "values": [0]})
    );
    assert_eq!(latest["metrics"].as_array().map(Vec::len), Some(11));
    // `before` is exclusive, `after` inclusive (and the earliest point in the window only
    // serves the rate).
    let window = get(
        &s,
        &format!(
            "{base}?limit=10&after=2026-01-01T00:00:10Z&before=2026-01-01T00:00:30%2B00:00&run_id={run_id}"
        ),
        Some(&s.admin_token),
    )
    .await
    .json;
    assert_eq!(
        window["metrics"][0],
        json!({"name": "cpu_usage_percent", "timestamps": ["2026-01-01T00:00:20Z"], "values": [52]})
    );
    let two = get(&s, &format!("{base}?limit=2&job_num=0&replica_num=0"), Some(&s.admin_token)).await.json;
    assert_eq!(two["metrics"][1]["values"], json!([4000, 3000]));

    // A GPU that comes and goes drops the GPU series for the window.
    db.insert_metrics_point(&point(job.id, T0 + 40_000_000, 20_300_000, 5000, "[3145728]", "[100]"))
        .await
        .expect("insert");
    let names: Vec<Value> = get(&s, &format!("{base}?limit=2"), Some(&s.admin_token)).await.json["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(
        names,
        json!([
            "cpu_usage_percent",
            "memory_usage_bytes",
            "memory_working_set_bytes",
            "cpus_detected_num",
            "memory_total_bytes"
        ])
        .as_array()
        .cloned()
        .unwrap()
    );

    // No such job.
    let not_found =
        json!({"detail": [{"msg": "Found no job with given parameters", "code": "resource_not_exists"}]});
    for path in [
        format!("/api/project/{p}/metrics/job/nope"),
        format!("{base}?job_num=1"),
        format!("{base}?replica_num=1"),
        format!("{base}?run_id={}", uuid::Uuid::new_v4()),
    ] {
        let reply = get(&s, &path, Some(&s.admin_token)).await;
        assert_eq!((reply.status, &reply.json), (StatusCode::BAD_REQUEST, &not_found), "{path}");
    }
    // Bad parameters are FastAPI's 422s.
    let bad = get(&s, &format!("{base}?limit=many"), Some(&s.admin_token)).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.json["detail"][0]["loc"], json!(["query", "limit"]), "{}", bad.json);
    assert_eq!(bad.json["detail"][0]["type"], "int_parsing");
    // Members only.
    assert_eq!(get(&s, &base, None).await.status, StatusCode::UNAUTHORIZED);
    let (_, outsider) = s.new_user("user").await;
    assert_eq!(get(&s, &base, Some(&outsider)).await.status, StatusCode::FORBIDDEN);

    // Deleting the run deletes its samples (the foreign key cascades).
    s.admin(&format!("/api/project/{p}/runs/stop"), Some(json!({"runs_names": ["mrun"], "abort": true})))
        .await;
    let gone = db
        .job_metrics_points(job.id, &dstack_db::MetricsQuery { after: None, before: None, limit: 100 })
        .await
        .expect("db");
    assert_eq!(gone.len(), 5);
    assert_eq!(
        db.delete_old_metrics_points(T0, T0 + 25_000_000).await.expect("db"),
        0,
        "the job is not finished yet"
    );
}
