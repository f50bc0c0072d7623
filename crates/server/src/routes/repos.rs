//! `/api/project/{p}/repos/*`: list, get, init, delete. Credentials are per user and stored
//! encrypted; `get` returns only the caller's own, and only when asked for.

use axum::extract::State;
use dstack_api::ApiError;
use dstack_api::repos::{
    DeleteReposRequest, GetRepoRequest, RemoteRepoCreds, RepoHead, RepoHeadWithCreds, RepoInfo,
    SaveRepoCredsRequest,
};
use dstack_db::RepoRow;

use super::{Body, Failure, Json, null};
use crate::auth::{Member, ProjectAccess};
use crate::state::AppState;

fn info(row: &RepoRow) -> Result<RepoInfo, Failure> {
    serde_json::from_str(&row.info).map_err(|e| {
        tracing::error!(repo = %row.name, error = %e, "stored repo info is not readable");
        Failure(ApiError::Internal)
    })
}

pub(super) async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
) -> Result<Json<Vec<RepoHead>>, Failure> {
    let rows = state.db.list_repos(access.project.id).await?;
    let heads = rows
        .iter()
        .map(|r| Ok(RepoHead { repo_id: r.name.clone(), repo_info: info(r)? }))
        .collect::<Result<_, Failure>>()?;
    Ok(Json(heads))
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<GetRepoRequest>,
) -> Result<Json<RepoHeadWithCreds>, Failure> {
    let row = state
        .db
        .repo_by_name(access.project.id, &req.repo_id)
        .await?
        .ok_or_else(|| ApiError::not_exists("Resource not found"))?;
    let repo_info = info(&row)?;
    let repo_creds = if req.include_creds && repo_info.is_remote() {
        match state.db.repo_creds(row.id, access.caller.user.id).await? {
            Some(stored) => Some(decrypt_creds(&state, &stored)?),
            None => None,
        }
    } else {
        None
    };
    Ok(Json(RepoHeadWithCreds { repo_id: row.name, repo_info, repo_creds }))
}

pub(super) async fn init(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<SaveRepoCredsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    let info = serde_json::to_string(&req.repo_info).map_err(|_| Failure(ApiError::Internal))?;
    // Only remote repos carry credentials; for them, no credentials means "forget mine".
    let creds = match (&req.repo_info, &req.repo_creds) {
        (RepoInfo::Remote { .. }, Some(creds)) => {
            let json = serde_json::to_string(creds).map_err(|_| Failure(ApiError::Internal))?;
            Some(state.cipher.encrypt(&json))
        }
        _ => None,
    };
    state
        .db
        .init_repo(
            access.project.id,
            &req.repo_id,
            &info,
            access.caller.user.id,
            creds.as_deref(),
            jiff::Timestamp::now(),
        )
        .await?;
    Ok(null())
}

pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Body(req): Body<DeleteReposRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    state.db.delete_repos(access.project.id, &req.repos_ids).await?;
    Ok(null())
}

fn decrypt_creds(state: &AppState, stored: &str) -> Result<RemoteRepoCreds, Failure> {
    state.cipher.decrypt(stored).and_then(|json| serde_json::from_str(&json).ok()).ok_or_else(|| {
        tracing::error!("stored repo credentials cannot be decrypted with the server key");
        Failure(ApiError::Internal)
    })
}
