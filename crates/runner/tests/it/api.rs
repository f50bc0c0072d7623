//! Bad requests get an error answer and never break the runner.

use reqwest::StatusCode;
use serde_json::json;

use crate::{Runner, submit_body};

async fn status(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.expect("answer");
    (resp.status(), resp.text().await.expect("text"))
}

#[tokio::test]
async fn wrong_states_and_bad_inputs_are_refused() {
    let runner = Runner::start();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", runner.url);
    assert_eq!(runner.client.run().await.expect_err("run first").status(), Some(409));
    assert_eq!(runner.client.upload_code(b"x".to_vec()).await.expect_err("code first").status(), Some(409));
    assert_eq!(status(http.post(url("/api/submit")).body("{nope")).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(status(http.post(url("/api/submit"))).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        status(http.post(url("/api/submit")).json(&json!({"run": 1}))).await.0,
        StatusCode::BAD_REQUEST
    );
    let (code, text) = status(http.get(url("/api/pull?timestamp=abc"))).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(status(http.get(url("/api/pull"))).await.0, StatusCode::BAD_REQUEST);
    // Before any job the metrics are zeros (the job's process group does not exist yet).
    let (code, text) = status(http.get(url("/api/metrics"))).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let before: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(before["cpu_usage_micro"], 0, "{text}");

    runner.client.submit(&submit_body("true", json!({}))).await.expect("submit");
    runner.client.submit(&submit_body("echo resubmitted", json!({}))).await.expect("resubmit is allowed");
    let (code, text) = status(http.post(url("/api/upload_archive")).body("x")).await;
    assert_eq!((code, text.as_str()), (StatusCode::BAD_REQUEST, "missing content-type header\n"));
    let (code, _) =
        status(http.post(url("/api/upload_archive")).header("content-type", "text/plain").body("x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) =
        status(http.post(url("/api/upload_archive")).header("content-type", "multipart/form-data").body("x"))
            .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let form = reqwest::multipart::Form::new()
        .part("other", reqwest::multipart::Part::bytes(vec![1]).file_name("f"));
    let (code, text) = status(http.post(url("/api/upload_archive")).multipart(form)).await;
    assert_eq!((code, text.as_str()), (StatusCode::BAD_REQUEST, "unexpected field other\n"));
    let form = reqwest::multipart::Form::new().part("archive", reqwest::multipart::Part::bytes(vec![1]));
    let (code, text) = status(http.post(url("/api/upload_archive")).multipart(form)).await;
    assert_eq!((code, text.as_str()), (StatusCode::BAD_REQUEST, "missing file name\n"));
    let form = reqwest::multipart::Form::new()
        .part("archive", reqwest::multipart::Part::bytes(vec![1]).file_name("a"))
        .part("archive", reqwest::multipart::Part::bytes(vec![1]).file_name("b"));
    let (code, text) = status(http.post(url("/api/upload_archive")).multipart(form)).await;
    assert_eq!((code, text.as_str()), (StatusCode::BAD_REQUEST, "extra form field(s)\n"));

    runner.client.run().await.expect("run");
    assert_eq!(runner.client.run().await.expect_err("run twice").status(), Some(409));
    assert_eq!(
        runner.client.submit(&submit_body("true", json!({}))).await.expect_err("late").status(),
        Some(409)
    );
    let pull = runner.pull_to_end(std::time::Duration::from_secs(10)).await;
    assert_eq!(crate::job_output(&pull), "resubmitted\n");
}
