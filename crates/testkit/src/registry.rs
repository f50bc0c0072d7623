//! A local container registry for pull tests — this machine has no registry to pull from. It
//! speaks the part of the Docker Registry HTTP API V2 an engine uses to pull (`GET /v2/`,
//! manifests by tag or digest, blobs by digest) and serves one image, built from a local one
//! with `docker save`; layers go out gzip-compressed and slowly, so that a pull has progress to
//! show. With credentials it asks for HTTP Basic auth, as a private registry does.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

struct Image {
    manifest: Vec<u8>,
    manifest_digest: String,
    /// `sha256:…` → (bytes, served slowly).
    blobs: Vec<(String, Vec<u8>, bool)>,
    credentials: Option<(String, String)>,
}

/// A running registry; it stops when dropped. It runs on a thread of its own, so that sync
/// and async tests alike can use it.
pub struct TestRegistry {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The config and layers of a local image, from `docker save` (its `manifest.json` names them).
fn saved_image(image: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let out = std::process::Command::new("docker").args(["save", image]).output().expect("docker save runs");
    assert!(out.status.success(), "docker save {image}: {}", String::from_utf8_lossy(&out.stderr));
    let mut files = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(out.stdout.as_slice());
    for entry in archive.entries().expect("a tar") {
        let mut entry = entry.expect("an entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        files.insert(path, bytes);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let config = files[manifest[0]["Config"].as_str().expect("Config")].clone();
    let layers = manifest[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| files[l.as_str().expect("a layer path")].clone())
        .collect();
    (config, layers)
}

/// A tar holding one file of 3 MB that does not compress, different on every call.
fn unique_layer() -> Vec<u8> {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let mut data = Vec::with_capacity(3 << 20);
    let mut block = Sha256::digest(seed.as_bytes());
    while data.len() < 3 << 20 {
        data.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "pull-test.bin", data.as_slice()).expect("tar");
    builder.into_inner().expect("tar")
}

impl TestRegistry {
    /// Serves `source` (a local image) as every repository and tag asked for, plus one layer
    /// of random bytes of its own.
    pub fn serve(source: &str, credentials: Option<(&str, &str)>) -> TestRegistry {
        let (config, mut layers) = saved_image(source);
        // A layer of its own, so that the engine has something to download although it holds
        // the source image's layers already.
        let extra = unique_layer();
        let mut config: serde_json::Value = serde_json::from_slice(&config).expect("image config");
        let diff_ids = config["rootfs"]["diff_ids"].as_array_mut().expect("rootfs.diff_ids");
        diff_ids.push(digest(&extra).into());
        if let Some(history) = config["history"].as_array_mut() {
            history.push(serde_json::json!({"created_by": "dstack-rs test registry"}));
        }
        let config = serde_json::to_vec(&config).expect("json");
        layers.push(extra);
        let mut blobs = vec![(digest(&config), config.clone(), false)];
        let mut layer_entries = Vec::new();
        for layer in layers {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&layer).expect("gzip");
            let gz = gz.finish().expect("gzip");
            layer_entries.push(serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": gz.len(),
                "digest": digest(&gz),
            }));
            blobs.push((digest(&gz), gz, true));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": digest(&config),
            },
            "layers": layer_entries,
        }))
        .expect("json");
        let image = Arc::new(Image {
            manifest_digest: digest(&manifest),
            manifest,
            blobs,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let image = image.clone();
            async move { answer(&image, &method, uri.path(), &headers) }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        TestRegistry { addr, stop: Some(stop) }
    }
}

fn authorized(image: &Image, headers: &HeaderMap) -> bool {
    let Some((user, password)) = &image.credentials else { return true };
    let expected = format!("Basic {}", BASE64_STANDARD.encode(format!("{user}:{password}")));
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn answer(image: &Image, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let status = |code: StatusCode| Response::builder().status(code).body(Body::empty()).expect("response");
    if !authorized(image, headers) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"dstack-rs test registry\"")
            .body(Body::from(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#))
            .expect("response");
    }
    if path == "/v2/" || path == "/v2" {
        return Response::builder().body(Body::from("{}")).expect("response");
    }
    let Some(rest) = path.strip_prefix("/v2/") else { return status(StatusCode::NOT_FOUND) };
    if let Some((_, _reference)) = rest.rsplit_once("/manifests/") {
        let body = if method == Method::HEAD { Body::empty() } else { Body::from(image.manifest.clone()) };
        return Response::builder()
            .header(header::CONTENT_TYPE, MANIFEST_TYPE)
            .header(header::CONTENT_LENGTH, image.manifest.len())
            .header("Docker-Content-Digest", &image.manifest_digest)
            .body(body)
            .expect("response");
    }
    if let Some((_, wanted)) = rest.rsplit_once("/blobs/") {
        let Some((digest, bytes, slow)) = image.blobs.iter().find(|(d, _, _)| d == wanted) else {
            return status(StatusCode::NOT_FOUND);
        };
        let builder = Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, bytes.len())
            .header("Docker-Content-Digest", digest.as_str());
        if method == Method::HEAD {
            return builder.body(Body::empty()).expect("response");
        }
        if !slow {
            return builder.body(Body::from(bytes.clone())).expect("response");
        }
        // About 2 s per layer, in 40 steps: the engine reports progress in between.
        let chunk = bytes.len().div_ceil(40).max(1);
        let chunks: Vec<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
        let stream = futures_util::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(c)
        });
        return builder.body(Body::from_stream(stream)).expect("response");
    }
    status(StatusCode::NOT_FOUND)
}
