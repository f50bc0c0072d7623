//! The state every handler shares.

use std::sync::Arc;

use dstack_db::Db;

use crate::ServerError;
use crate::config::ServerConfig;
use crate::crypto::Cipher;

/// Cheap to clone: the database pool and the secrets cipher.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub cipher: Arc<Cipher>,
}

impl AppState {
    /// Opens (and migrates) the database and loads or creates the encryption key.
    pub async fn open(config: &ServerConfig) -> Result<AppState, ServerError> {
        let cipher = Cipher::load_or_create(&config.server_dir.join("data").join("encryption.key"))?;
        let db = Db::connect(&config.database_url()).await?;
        Ok(AppState { db, cipher: Arc::new(cipher) })
    }
}
