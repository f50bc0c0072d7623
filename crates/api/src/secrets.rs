//! `/api/project/{p}/secrets/*`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A secret; `value` is present only where dstack returns it (`get`, `create_or_update`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub id: Uuid,
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetSecretRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrUpdateSecretRequest {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSecretsRequest {
    pub secrets_names: Vec<String>,
}
