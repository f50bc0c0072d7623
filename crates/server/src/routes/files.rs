//! Uploads: `/api/project/{p}/repos/upload_code?repo_id=` (a repo's code blob) and
//! `/api/files/upload_archive` (an archive of `files:`), both `multipart/form-data` with one
//! `file` part named by the content's sha256; and `/api/files/get_archive_by_hash`.
//!
//! Blobs are stored once per repo (code) or per user (archives) and hash; the jobs loop hands
//! them to the runner.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Query, State};
use base64::Engine as _;
use dstack_api::repos::{FileArchive, GetFileArchiveByHashRequest};
use dstack_api::{ApiError, ValidationDetail};
use serde::Deserialize;

use super::{Body, Failure, Json, null};
use crate::auth::{Caller, Member, ProjectAccess};
use crate::state::AppState;

/// dstack's `DSTACK_SERVER_CODE_UPLOAD_LIMIT` default.
const CODE_UPLOAD_LIMIT: usize = 2 * 1024 * 1024;

#[derive(Debug, Deserialize)]
pub(super) struct UploadCodeQuery {
    repo_id: String,
}

pub(super) async fn upload_code(
    State(state): State<AppState>,
    access: ProjectAccess<Member>,
    Query(query): Query<UploadCodeQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<serde_json::Value>, Failure> {
    let (hash, blob) = the_file(multipart).await?;
    if blob.len() > CODE_UPLOAD_LIMIT {
        return Err(ApiError::error(format!(
            "Repo diff size is {:.1} MiB, which exceeds the limit of 2 MiB. Use .gitignore to exclude \
             large files from the repo.",
            blob.len() as f64 / (1024.0 * 1024.0)
        ))
        .into());
    }
    let repo = state
        .db
        .repo_by_name(access.project.id, &query.repo_id)
        .await?
        .ok_or_else(|| ApiError::not_exists(format!("Repo {} does not exist", query.repo_id)))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
    state.db.save_code(repo.id, &hash, &encoded).await?;
    Ok(null())
}

pub(super) async fn upload_archive(
    State(state): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<FileArchive>, Failure> {
    let (hash, blob) = the_file(multipart).await?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&blob);
    let id = state.db.save_file_archive(caller.user.id, &hash, &encoded).await?;
    Ok(Json(FileArchive { id, hash }))
}

pub(super) async fn get_archive_by_hash(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<GetFileArchiveByHashRequest>,
) -> Result<Json<FileArchive>, Failure> {
    match state.db.file_archive_id(caller.user.id, &req.hash).await? {
        Some(id) => Ok(Json(FileArchive { id, hash: req.hash })),
        None => Err(ApiError::not_exists("Resource not found").into()),
    }
}

/// The one `file` part: its file name (the sha256) and its bytes. Anything else is FastAPI's
/// 422 for a missing `file`.
async fn the_file(multipart: Result<Multipart, MultipartRejection>) -> Result<(String, Vec<u8>), Failure> {
    let missing = || {
        Failure(ApiError::Validation(Box::new(ValidationDetail {
            kind: "missing".to_owned(),
            loc: vec!["body".into(), "file".into()],
            msg: "Field required".to_owned(),
            input: serde_json::Value::Null,
            ctx: None,
        })))
    };
    let mut multipart = multipart.map_err(|_| missing())?;
    while let Some(field) = multipart.next_field().await.map_err(|_| missing())? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or_default().to_owned();
        let bytes =
            field.bytes().await.map_err(|e| Failure(ApiError::error(format!("reading the upload: {e}"))))?;
        if name.is_empty() {
            return Err(ApiError::error("The uploaded file has no name (its sha256 is expected)").into());
        }
        return Ok((name, bytes.to_vec()));
    }
    Err(missing())
}
