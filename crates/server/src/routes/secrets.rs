//! `/api/project/{p}/secrets/*`: encrypted at rest, shown only to those who manage secrets.
//!
//! dstack's rule: the route needs a project manager, and then the member must be allowed to
//! manage secrets (global admins and project admins; managers only when the server allows it,
//! which by default it does not).

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::secrets::{CreateOrUpdateSecretRequest, DeleteSecretsRequest, GetSecretRequest, Secret};
use dstack_api::users::ProjectRole;
use dstack_db::SecretRow;

use super::{Body, Failure, Json, null};
use crate::auth::{Manager, ProjectAccess};
use crate::state::AppState;

/// dstack's `^[A-Za-z0-9-_]{1,200}$`.
const MAX_NAME_LEN: usize = 200;
const MAX_VALUE_LEN: usize = 5000;

fn check_can_manage(access: &ProjectAccess<Manager>) -> Result<(), Failure> {
    if access.caller.is_admin() || access.role == Some(ProjectRole::Admin) {
        Ok(())
    } else {
        Err(ApiError::ForbiddenAction { msg: "Access denied".to_owned() }.into())
    }
}

fn to_wire(row: &SecretRow, value: Option<String>) -> Secret {
    Secret { id: row.id, name: row.name.clone(), value }
}

pub(super) async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Manager>,
) -> Result<Json<Vec<Secret>>, Failure> {
    check_can_manage(&access)?;
    let rows = state.db.list_secrets(access.project.id).await?;
    Ok(Json(rows.iter().map(|r| to_wire(r, None)).collect()))
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Manager>,
    Body(req): Body<GetSecretRequest>,
) -> Result<Json<Secret>, Failure> {
    check_can_manage(&access)?;
    let row = state
        .db
        .secret_by_name(access.project.id, &req.name)
        .await?
        .ok_or_else(|| ApiError::not_exists("Resource not found"))?;
    let value = decrypt(&state, &row)?;
    Ok(Json(to_wire(&row, Some(value))))
}

pub(super) async fn create_or_update(
    State(state): State<AppState>,
    access: ProjectAccess<Manager>,
    Body(req): Body<CreateOrUpdateSecretRequest>,
) -> Result<Json<Secret>, Failure> {
    check_can_manage(&access)?;
    let name_ok = (1..=MAX_NAME_LEN).contains(&req.name.len())
        && req.name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if !name_ok {
        // dstack's message, missing closing quote included.
        return Err(ApiError::error("Secret name should match regex '^[A-Za-z0-9-_]{1,200}$").into());
    }
    if req.value.chars().count() > MAX_VALUE_LEN {
        return Err(ApiError::error(format!("Secret value length must not exceed {MAX_VALUE_LEN}")).into());
    }
    let stored = state.cipher.encrypt(&req.value);
    let row = state.db.upsert_secret(access.project.id, &req.name, &stored, jiff::Timestamp::now()).await?;
    Ok(Json(to_wire(&row, Some(req.value))))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Manager>,
    Body(req): Body<DeleteSecretsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    check_can_manage(&access)?;
    let existing: Vec<String> =
        state.db.list_secrets(access.project.id).await?.into_iter().map(|s| s.name).collect();
    let mut missing: Vec<&str> =
        req.secrets_names.iter().map(String::as_str).filter(|n| !existing.iter().any(|e| e == n)).collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        missing.dedup();
        return Err(ApiError::not_exists(format!("Secrets not found: {}", missing.join(", "))).into());
    }
    state.db.delete_secrets(access.project.id, &req.secrets_names).await?;
    Ok(null())
}

fn decrypt(state: &AppState, row: &SecretRow) -> Result<String, Failure> {
    state.cipher.decrypt(&row.value).ok_or_else(|| {
        tracing::error!(secret = %row.name, "a stored secret cannot be decrypted with the server key");
        Failure(ApiError::Internal)
    })
}
