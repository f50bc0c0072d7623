//! The clients against a throwaway HTTP server that answers like the Go agents.

use std::io::{Read, Write};
use std::net::TcpListener;

use dstack_agent_proto::{AgentError, RunnerClient, ShimClient};

/// Serves one canned answer per connection, in order, and returns the requests' heads.
fn serve(answers: Vec<(&'static str, &'static str)>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let mut heads = Vec::new();
        for (status, body) in answers {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; 65536];
            let n = stream.read(&mut buf).expect("read");
            heads.push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned());
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).expect("write");
        }
        heads
    });
    (url, handle)
}

#[tokio::test]
async fn errors_carry_status_and_text() {
    let (url, handle) = serve(vec![
        ("404 Not Found", "Not Found\n"),
        ("200 OK", "{\"service\":\"dstack-shim\",\"version\":\"0.22.5\"}\n"),
        ("200 OK", "\n"),
    ]);
    let shim = ShimClient::new(&url);
    let err = shim.get_task("nope").await.expect_err("404");
    assert!(
        matches!(&err, AgentError::Status { status: 404, message, .. } if message == "Not Found"),
        "{err}"
    );
    assert_eq!(shim.healthcheck().await.expect("health").service, "dstack-shim");
    shim.remove_task("x").await.expect("plain 200");
    let heads = handle.join().expect("server");
    assert_eq!(
        heads,
        [
            "GET /api/tasks/nope HTTP/1.1",
            "GET /api/healthcheck HTTP/1.1",
            "POST /api/tasks/x/remove HTTP/1.1"
        ]
    );
}

#[tokio::test]
async fn runner_run_without_body_and_missing_metrics() {
    let (url, handle) =
        serve(vec![("200 OK", "\n"), ("404 Not Found", "Metrics collector is not available\n")]);
    let runner = RunnerClient::new(&url);
    assert_eq!(runner.run().await.expect("run"), None);
    assert_eq!(runner.metrics().await.expect("metrics"), None);
    handle.join().expect("server");
}
