//! `/api/server/*` and non-API routes.

use serde::{Deserialize, Serialize};

/// `POST /api/server/get_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub server_version: String,
}

/// `GET /healthcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    pub status: String,
}
