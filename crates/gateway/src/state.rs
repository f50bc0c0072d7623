//! What the gateway remembers across restarts: one JSON file (`state.json` in the state dir),
//! rewritten atomically (temp file, fsync, rename) after every change, readable only by its
//! owner because it holds the projects' SSH keys.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dstack_agent_proto::gateway::{ConfigRequest, ModelFormat, RateLimit, RegisterReplicaRequest, Secret};
use serde::{Deserialize, Serialize};

use crate::GatewayError;

/// The file name in the state dir.
pub(crate) const STATE_FILE: &str = "state.json";

/// The whole state (dstack's `state-v2.json` holds the same things).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// Project → run name → service.
    #[serde(default)]
    pub(crate) services: BTreeMap<String, BTreeMap<String, Service>>,
    /// Project → model name → model.
    #[serde(default)]
    pub(crate) models: BTreeMap<String, BTreeMap<String, Model>>,
    /// Project → its model entrypoint (`gateway.<domain>`).
    #[serde(default)]
    pub(crate) entrypoints: BTreeMap<String, Entrypoint>,
    /// Project → its SSH key (the last one a service registration sent).
    #[serde(default)]
    pub(crate) projects: BTreeMap<String, Project>,
    #[serde(default)]
    pub(crate) config: ConfigRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Service {
    pub(crate) id: Option<String>,
    pub(crate) project_name: String,
    pub(crate) run_name: String,
    pub(crate) domain: String,
    pub(crate) https: bool,
    pub(crate) auth: bool,
    pub(crate) client_max_body_size: u64,
    #[serde(default)]
    pub(crate) rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub(crate) has_router_replica: bool,
    /// Set for services whose model speaks the OpenAI format.
    #[serde(default)]
    pub(crate) cors_enabled: bool,
    pub(crate) read_timeout: u64,
    #[serde(default)]
    pub(crate) replicas: Vec<RegisterReplicaRequest>,
}

impl Service {
    pub(crate) fn fmt(&self) -> String {
        format!("{}/{}", self.project_name, self.run_name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Model {
    pub(crate) name: String,
    pub(crate) run_name: String,
    /// Unix seconds of the registration (OpenAI's `created`).
    pub(crate) created: i64,
    pub(crate) format: ModelFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entrypoint {
    pub(crate) project_name: String,
    pub(crate) domain: String,
    pub(crate) https: bool,
    pub(crate) read_timeout: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Project {
    pub(crate) name: String,
    pub(crate) ssh_private_key: Secret,
}

impl State {
    /// Reads `path`; a missing file is an empty state.
    pub(crate) fn load(path: &Path) -> Result<State, GatewayError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(GatewayError::ReadState { path: path.to_owned(), source }),
        };
        serde_json::from_slice(&text).map_err(|e| GatewayError::BadState {
            path: path.to_owned(),
            cause: format!("line {} column {}: {}", e.line(), e.column(), e.classify_text()),
        })
    }

    /// Writes the state to `path` atomically: a reader sees the old file or the new one.
    pub(crate) fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = tmp_path(path);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent()
            && let Ok(dir) = std::fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    pub(crate) fn service(&self, project: &str, run: &str) -> Option<&Service> {
        self.services.get(project)?.get(run)
    }

    pub(crate) fn service_mut(&mut self, project: &str, run: &str) -> Option<&mut Service> {
        self.services.get_mut(project)?.get_mut(run)
    }

    pub(crate) fn all_services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().flat_map(|runs| runs.values())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The category of a JSON error, without the input's text.
trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "cannot be read",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the gateway's state format",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}
