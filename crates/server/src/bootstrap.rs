//! The first start: the `admin` user, the `main` project, and the CLI's project entry.
//!
//! Idempotent: on a later start nothing is created again, the admin's stored token is
//! reported, and the CLI entry is refreshed (the URL may have changed).

use std::path::Path;

use dstack_api::users::{GlobalRole, ProjectRole};
use dstack_client::config::{CliConfig, ProjectConfig};
use dstack_db::ProjectRow;
use uuid::Uuid;

use crate::ServerError;
use crate::config::ServerConfig;
use crate::routes::users::{ADMIN_USERNAME, NewUser, new_user};
use crate::state::AppState;

/// The default project every server starts with.
pub const DEFAULT_PROJECT: &str = "main";

/// Creates what a first start needs; returns the admin's token.
pub async fn first_start(state: &AppState, config: &ServerConfig, url: &str) -> Result<String, ServerError> {
    let admin = match state.db.user_by_name(ADMIN_USERNAME).await? {
        Some(admin) => admin,
        None => {
            // The admin's SSH keys are made on first use: a first start stays fast.
            let new = NewUser {
                name: ADMIN_USERNAME,
                global_role: GlobalRole::Admin,
                email: None,
                active: true,
                token: config.admin_token.as_deref(),
                ssh_keys: false,
            };
            let row = new_user(state, new).await?;
            state.db.insert_user(&row).await?;
            row
        }
    };
    let token = admin.token_encrypted.as_deref().and_then(|t| state.cipher.decrypt(t)).ok_or_else(|| {
        ServerError::Crypto("the admin token cannot be decrypted with the current key".into())
    })?;
    if state.db.project_by_name(DEFAULT_PROJECT).await?.is_none() {
        let project = ProjectRow {
            id: Uuid::new_v4(),
            name: DEFAULT_PROJECT.to_owned(),
            owner_id: admin.id,
            created_at: jiff::Timestamp::now(),
            is_public: false,
        };
        state.db.insert_project(&project, ProjectRole::Admin.as_str()).await?;
        if config.local_fleet {
            crate::local_fleet::create(state, &project).await?;
        }
    }
    if let Some(path) = &config.client_config {
        write_client_config(path, DEFAULT_PROJECT, url, &token)?;
    }
    Ok(token)
}

/// Adds or updates `project` in the CLI's `~/.dstack/config.yml` and makes it the default,
/// keeping the other entries (what `dstack server` does).
pub fn write_client_config(path: &Path, project: &str, url: &str, token: &str) -> Result<(), ServerError> {
    let (mut config, _ignored_warning) = CliConfig::load(path);
    let entry = ProjectConfig {
        name: project.to_owned(),
        url: url.to_owned(),
        token: token.to_owned(),
        default: true,
    };
    config.upsert(entry, true);
    config.save(path).map_err(|e| ServerError::Config(e.to_string()))
}
