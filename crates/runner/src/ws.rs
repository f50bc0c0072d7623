//! `GET /logs_ws?start_time=<RFC 3339>` (spec agents.md §2.3): the job's output as binary
//! WebSocket messages, from the first event at or after `start_time` (second precision; all
//! of it without one), sent as soon as the job writes it, then a normal close once the job
//! has finished and everything was sent. A bad `start_time` gets close code 1003
//! `failed to parse start_time value`. Pings are answered; the client's close ends the stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;

use crate::state::Shared;

pub(crate) async fn logs_ws(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let start_time = query.get("start_time").cloned();
    ws.on_upgrade(move |socket| async move {
        shared.ws_streams.fetch_add(1, Ordering::SeqCst);
        stream(&shared, socket, start_time.as_deref()).await;
        shared.ws_streams.fetch_sub(1, Ordering::SeqCst);
    })
}

/// `start_time` as unix milliseconds, truncated to the second (as dstack's runner compares).
pub(crate) fn start_ms(raw: Option<&str>) -> Result<i64, ()> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(0) };
    let ts: jiff::Timestamp = raw.parse().map_err(|_| ())?;
    Ok(ts.as_second() * 1000)
}

async fn stream(shared: &Shared, mut socket: WebSocket, start_time: Option<&str>) {
    let Ok(start) = start_ms(start_time) else {
        let frame = CloseFrame { code: 1003, reason: "failed to parse start_time value".into() };
        let _ = socket.send(Message::Close(Some(frame))).await;
        return;
    };
    let mut next = shared.job_log_index(start);
    loop {
        // Armed before reading, so an event between the read and the wait is not missed.
        let changed = shared.logs_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (logs, finished) = shared.job_logs_from(next);
        let done = finished && logs.is_empty();
        next += logs.len();
        for message in logs {
            if socket.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        if done {
            let frame = CloseFrame { code: 1000, reason: "".into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
        // Reading answers pings; a close or an error from the client ends the stream.
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            () = &mut changed => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::start_ms;

    #[test]
    fn start_time_is_rfc3339_to_the_second() {
        assert_eq!(start_ms(None), Ok(0));
        assert_eq!(start_ms(Some("")), Ok(0));
        assert_eq!(start_ms(Some("2025-08-21T12:00:00Z")), Ok(1_755_777_600_000));
        // Python's `datetime.isoformat()` of an aware datetime.
        assert_eq!(start_ms(Some("2025-08-21T12:00:00.750000+00:00")), Ok(1_755_777_600_000));
        assert_eq!(start_ms(Some("yesterday")), Err(()));
    }
}
