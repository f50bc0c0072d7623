//! Image pull progress: the Docker engine's pull stream folded into one
//! [`ImagePullProgress`] (spec agents.md §1.8), as a pure tracker fed one message at a time.
//!
//! Per layer the tracker keeps what was downloaded, what was extracted and the layer's size:
//! `Downloading` sets downloaded and size, `Download complete` makes downloaded the size,
//! `Extracting` sets extracted (and downloaded = size), `Pull complete` sets both to the size.
//! The totals are sums over layers; the total is final once no layer of unknown size is still
//! on its way (`Already exists` and `Pull complete` layers count as known).

use std::collections::BTreeMap;

use dstack_api::runs::ImagePullProgress;

#[derive(Debug, Default, Clone)]
struct Layer {
    downloaded: i64,
    extracted: i64,
    total: i64,
    settled: bool,
}

/// One message of the engine's pull stream, as far as progress goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PullEvent<'a> {
    pub(crate) layer: Option<&'a str>,
    pub(crate) status: &'a str,
    pub(crate) current: Option<i64>,
    pub(crate) total: Option<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct PullTracker {
    layers: BTreeMap<String, Layer>,
    finished: bool,
}

impl PullTracker {
    pub(crate) fn observe(&mut self, event: PullEvent<'_>) {
        if event.status.starts_with("Status:") {
            self.finished = true;
            return;
        }
        let Some(id) = event.layer else { return };
        // The engine also reports the tag itself (`latest: Pulling from …`); only layers count.
        if event.status.starts_with("Pulling from") {
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_default();
        let total = event.total.filter(|t| *t > 0);
        match event.status {
            "Downloading" => {
                if let Some(total) = total {
                    layer.total = total;
                }
                if let Some(current) = event.current {
                    layer.downloaded = current.max(layer.downloaded);
                }
            }
            "Download complete" | "Verifying Checksum" => layer.downloaded = layer.total,
            "Extracting" => {
                if let Some(total) = total {
                    layer.total = total;
                }
                layer.downloaded = layer.total;
                if let Some(current) = event.current {
                    layer.extracted = current.max(layer.extracted);
                }
            }
            "Pull complete" => {
                layer.downloaded = layer.total;
                layer.extracted = layer.total;
                layer.settled = true;
            }
            "Already exists" => layer.settled = true,
            _ => {}
        }
    }

    /// Whether the engine said the pull is over (`Status: Downloaded newer image …`).
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }

    pub(crate) fn progress(&self) -> ImagePullProgress {
        let sum = |f: fn(&Layer) -> i64| self.layers.values().map(f).sum::<i64>();
        ImagePullProgress {
            downloaded_bytes: sum(|l| l.downloaded),
            extracted_bytes: sum(|l| l.extracted),
            total_bytes: sum(|l| l.total),
            is_total_bytes_final: self.layers.values().all(|l| l.total > 0 || l.settled),
        }
    }
}

/// Whether a task's image must be pulled although one of that name is present: dstack pulls
/// `:latest` (spelled or implied) again and trusts any other local tag.
pub(crate) fn repull_when_present(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    !last.contains(':') && !last.contains('@') || last.ends_with(":latest")
}

/// The reference to pull: `:latest` added when no tag or digest is given.
pub(crate) fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') { image.to_owned() } else { format!("{image}:latest") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds recorded engine messages (`docker pull` JSON lines) to a tracker.
    fn feed(tracker: &mut PullTracker, lines: &str) {
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let detail = &v["progressDetail"];
            tracker.observe(PullEvent {
                layer: v["id"].as_str(),
                status: v["status"].as_str().unwrap_or(""),
                current: detail["current"].as_i64(),
                total: detail["total"].as_i64(),
            });
        }
    }

    const START: &str = r#"
{"status":"Pulling from library/python","id":"3.12"}
{"status":"Pulling fs layer","progressDetail":{},"id":"aaa"}
{"status":"Pulling fs layer","progressDetail":{},"id":"bbb"}
{"status":"Already exists","progressDetail":{},"id":"ccc"}
{"status":"Waiting","progressDetail":{},"id":"bbb"}
{"status":"Downloading","progressDetail":{"current":1000,"total":4000},"id":"aaa"}
"#;

    #[test]
    fn totals_are_not_final_while_a_layer_has_no_size() {
        let mut t = PullTracker::default();
        feed(&mut t, START);
        let p = t.progress();
        assert_eq!((p.downloaded_bytes, p.extracted_bytes, p.total_bytes), (1000, 0, 4000));
        assert!(!p.is_total_bytes_final, "layer bbb has no size yet");
        assert!(!t.finished());
    }

    #[test]
    fn a_whole_pull_ends_with_everything_extracted() {
        let mut t = PullTracker::default();
        feed(&mut t, START);
        feed(
            &mut t,
            r#"
{"status":"Downloading","progressDetail":{"current":500,"total":2000},"id":"bbb"}
{"status":"Downloading","progressDetail":{"current":3000,"total":4000},"id":"aaa"}
"#,
        );
        let p = t.progress();
        assert_eq!((p.downloaded_bytes, p.total_bytes, p.is_total_bytes_final), (3500, 6000, true));
        feed(
            &mut t,
            r#"
{"status":"Verifying Checksum","progressDetail":{},"id":"aaa"}
{"status":"Download complete","progressDetail":{},"id":"aaa"}
{"status":"Extracting","progressDetail":{"current":2048,"total":4000},"id":"aaa"}
"#,
        );
        let p = t.progress();
        assert_eq!((p.downloaded_bytes, p.extracted_bytes), (4500, 2048));
        feed(
            &mut t,
            r#"
{"status":"Pull complete","progressDetail":{},"id":"aaa"}
{"status":"Download complete","progressDetail":{},"id":"bbb"}
{"status":"Pull complete","progressDetail":{},"id":"bbb"}
{"status":"Digest: sha256:0123"}
{"status":"Status: Downloaded newer image for python:3.12"}
"#,
        );
        let p = t.progress();
        assert_eq!((p.downloaded_bytes, p.extracted_bytes, p.total_bytes), (6000, 6000, 6000));
        assert!(p.is_total_bytes_final);
        assert!(t.finished());
    }

    #[test]
    fn progress_never_goes_back_within_a_layer() {
        let mut t = PullTracker::default();
        feed(
            &mut t,
            r#"
{"status":"Downloading","progressDetail":{"current":300,"total":1000},"id":"aaa"}
{"status":"Downloading","progressDetail":{"current":100,"total":1000},"id":"aaa"}
"#,
        );
        assert_eq!(t.progress().downloaded_bytes, 300);
    }

    #[test]
    fn latest_is_pulled_again_other_tags_are_trusted() {
        assert!(repull_when_present("ubuntu"));
        assert!(repull_when_present("ubuntu:latest"));
        assert!(repull_when_present("localhost:5000/img"));
        assert!(!repull_when_present("localhost:5000/img:1.0"));
        assert!(!repull_when_present("python:3.12"));
        assert!(!repull_when_present("img@sha256:abcd"));
        assert_eq!(pull_reference("ubuntu"), "ubuntu:latest");
        assert_eq!(pull_reference("localhost:5000/img"), "localhost:5000/img:latest");
        assert_eq!(pull_reference("python:3.12"), "python:3.12");
    }
}
