//! The CLI's `~/.dstack/config.yml`: which servers and projects it knows, and which is the
//! default, in dstack's format (`projects: [{name, url, token, default}]`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One configured project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectConfig {
    pub name: String,
    pub url: String,
    pub token: String,
    #[serde(default)]
    pub default: bool,
}

/// The whole file. `repos` (pre-0.20) is accepted and dropped on save, as dstack does.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CliConfig {
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    #[serde(default, skip_serializing)]
    pub repos: Option<serde_json::Value>,
}

/// Why the file could not be written or a project not chosen.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Resolve(String),
}

/// The environment variables that pick a project (`DSTACK_PROJECT`, `DSTACK_SERVER_URL`,
/// `DSTACK_TOKEN`); passed in so resolution stays testable.
#[derive(Debug, Clone, Default)]
pub struct ProjectEnv {
    pub project: Option<String>,
    pub server_url: Option<String>,
    pub token: Option<String>,
}

impl ProjectEnv {
    pub fn from_process() -> ProjectEnv {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        ProjectEnv {
            project: var("DSTACK_PROJECT"),
            server_url: var("DSTACK_SERVER_URL"),
            token: var("DSTACK_TOKEN"),
        }
    }
}

/// `~/.dstack/config.yml`.
pub fn default_path(home: &Path) -> PathBuf {
    home.join(".dstack").join("config.yml")
}

impl CliConfig {
    /// Reads the file; a missing file is an empty config, and so is an invalid one (dstack logs
    /// it and carries on), reported through the returned warning.
    pub fn load(path: &Path) -> (CliConfig, Option<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => (CliConfig::default(), None),
            Ok(text) => match serde_saphyr::from_str::<CliConfig>(&text) {
                Ok(config) => (config, None),
                Err(e) => {
                    (CliConfig::default(), Some(format!("ignoring the invalid {}: {e}", path.display())))
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (CliConfig::default(), None),
            Err(e) => (CliConfig::default(), Some(format!("cannot read {}: {e}", path.display()))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |source| ConfigError::Write { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = serde_saphyr::to_string(self).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        std::fs::write(path, text).map_err(err)
    }

    pub fn get(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// Adds or replaces a project. It becomes the default when asked, or when it is the only
    /// one (the first project added is the default, as in dstack).
    pub fn upsert(&mut self, mut project: ProjectConfig, make_default: bool) {
        let make_default = make_default || self.projects.iter().all(|p| p.name == project.name);
        if make_default {
            for p in &mut self.projects {
                p.default = false;
            }
        }
        match self.projects.iter_mut().find(|p| p.name == project.name) {
            Some(existing) => {
                project.default = make_default || existing.default;
                *existing = project;
            }
            None => {
                project.default = make_default;
                self.projects.push(project);
            }
        }
    }

    /// Makes `name` the default; false if it is not configured.
    pub fn set_default(&mut self, name: &str) -> bool {
        if self.get(name).is_none() {
            return false;
        }
        for p in &mut self.projects {
            p.default = p.name == name;
        }
        true
    }

    /// Removes `name`; false if it is not configured.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.projects.len();
        self.projects.retain(|p| p.name != name);
        before != self.projects.len()
    }

    /// The project a command works on, by dstack's rules: `--project`, then `DSTACK_PROJECT`;
    /// `DSTACK_SERVER_URL` with `DSTACK_TOKEN` bypasses the file; otherwise the named or
    /// default project from the file, with `DSTACK_TOKEN` overriding its token.
    pub fn resolve(&self, flag: Option<&str>, env: &ProjectEnv) -> Result<ProjectConfig, ConfigError> {
        let name = flag.map(str::to_owned).or_else(|| env.project.clone());
        match (&env.server_url, &env.token) {
            (Some(url), Some(token)) => {
                let name = name.ok_or_else(|| {
                    ConfigError::Resolve(
                        "DSTACK_SERVER_URL and DSTACK_TOKEN are set, but the project is not specified. \
                         Set DSTACK_PROJECT or use --project"
                            .to_owned(),
                    )
                })?;
                return Ok(ProjectConfig { name, url: url.clone(), token: token.clone(), default: false });
            }
            (Some(_), None) => {
                return Err(ConfigError::Resolve(
                    "DSTACK_SERVER_URL is set, but DSTACK_TOKEN is not set".to_owned(),
                ));
            }
            _ => {}
        }
        let mut project =
            match &name {
                Some(name) => self
                    .get(name)
                    .cloned()
                    .ok_or_else(|| ConfigError::Resolve(format!("Project {name} is not configured")))?,
                None => self.projects.iter().find(|p| p.default).cloned().ok_or_else(|| {
                    ConfigError::Resolve("No default project, specify project name".to_owned())
                })?,
            };
        if let Some(token) = &env.token {
            project.token = token.clone();
        }
        Ok(project)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(name: &str) -> ProjectConfig {
        ProjectConfig {
            name: name.into(),
            url: "http://s".into(),
            token: format!("t-{name}"),
            default: false,
        }
    }

    #[test]
    fn first_project_becomes_default_and_defaults_move() {
        let mut c = CliConfig::default();
        c.upsert(project("a"), false);
        assert!(c.get("a").unwrap().default);
        c.upsert(project("b"), false);
        assert!(c.get("a").unwrap().default && !c.get("b").unwrap().default);
        assert!(c.set_default("b"));
        assert!(!c.get("a").unwrap().default && c.get("b").unwrap().default);
        assert!(!c.set_default("zzz"));
        assert!(c.remove("b") && !c.remove("b"));
    }

    #[test]
    fn resolution_follows_dstack() {
        let mut c = CliConfig::default();
        c.upsert(project("main"), false);
        c.upsert(project("other"), false);
        let none = ProjectEnv::default();
        assert_eq!(c.resolve(None, &none).unwrap().name, "main");
        assert_eq!(c.resolve(Some("other"), &none).unwrap().token, "t-other");
        let env = ProjectEnv { project: Some("other".into()), ..ProjectEnv::default() };
        assert_eq!(c.resolve(None, &env).unwrap().name, "other");
        assert_eq!(c.resolve(Some("x"), &none).unwrap_err().to_string(), "Project x is not configured");
        let token = ProjectEnv { token: Some("override".into()), ..ProjectEnv::default() };
        assert_eq!(c.resolve(None, &token).unwrap().token, "override");
        let url_only = ProjectEnv { server_url: Some("http://u".into()), ..ProjectEnv::default() };
        assert!(c.resolve(None, &url_only).unwrap_err().to_string().contains("DSTACK_TOKEN is not set"));
        let both = ProjectEnv { server_url: Some("http://u".into()), token: Some("t".into()), project: None };
        assert!(c.resolve(None, &both).unwrap_err().to_string().contains("project is not specified"));
        assert!(CliConfig::default().resolve(None, &none).is_err());
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path(dir.path());
        let (empty, warning) = CliConfig::load(&path);
        assert_eq!((empty, warning), (CliConfig::default(), None));
        let mut c = CliConfig::default();
        c.upsert(project("main"), true);
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("name: main") && text.contains("default: true"), "{text}");
        assert_eq!(CliConfig::load(&path).0, c);
        std::fs::write(&path, "projects: 5\n").unwrap();
        let (bad, warning) = CliConfig::load(&path);
        assert_eq!(bad, CliConfig::default());
        assert!(warning.unwrap().contains("ignoring the invalid"));
    }
}
