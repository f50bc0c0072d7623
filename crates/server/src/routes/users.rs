//! `/api/users/*`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dstack_api::ApiError;
use dstack_api::users::{
    CreateUserRequest, DeleteUsersRequest, GetUserRequest, ListUsersRequest, RefreshTokenRequest, User,
    UsersInfoList,
};
use dstack_db::UserRow;
use uuid::Uuid;

use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Caller, GlobalAdmin};
use crate::convert;
use crate::crypto::token_hash;
use crate::state::AppState;

/// dstack keeps the first user, `admin`, forever.
pub(crate) const ADMIN_USERNAME: &str = "admin";

pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<ListUsersRequest>,
) -> Result<Response, Failure> {
    let rows = if caller.is_admin() { state.db.list_users().await? } else { vec![caller.user.clone()] };
    let pattern = req.name_pattern.as_deref().map(str::to_lowercase);
    let rows: Vec<UserRow> = rows
        .into_iter()
        .filter(|u| pattern.as_deref().is_none_or(|p| u.name.to_lowercase().contains(p)))
        .collect();
    let total = rows.len() as i64;
    let page = super::paginate(rows, |u| (u.created_at, u.id), req.prev_created_at, req.prev_id, req.limit, req.ascending);
    let users: Vec<User> = page.iter().map(convert::user).collect();
    Ok(if req.return_total_count {
        Json(UsersInfoList { total_count: Some(total), users }).into_response()
    } else {
        Json(users).into_response()
    })
}

pub(super) async fn get_my_user(State(state): State<AppState>, caller: Caller) -> Json<dstack_api::users::UserWithCreds> {
    Json(convert::user_with_creds(&caller.user, &state.cipher, Some(&caller.token)))
}

pub(super) async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<GetUserRequest>,
) -> Result<Response, Failure> {
    let user = state.db.user_by_name(&req.username).await?;
    match user {
        Some(user) if caller.is_admin() || user.id == caller.user.id => {
            let own = (user.id == caller.user.id).then_some(caller.token.as_str());
            Ok(Json(convert::user_with_creds(&user, &state.cipher, own)).into_response())
        }
        _ => Err(ApiError::not_exists("Resource not found").into()),
    }
}

pub(super) async fn create(
    State(state): State<AppState>,
    GlobalAdmin(_admin): GlobalAdmin,
    Body(req): Body<CreateUserRequest>,
) -> Result<Json<User>, Failure> {
    validate_username(&req.username)?;
    let taken = state.db.list_users().await?.iter().any(|u| u.name.eq_ignore_ascii_case(&req.username));
    if taken {
        return Err(ApiError::resource_exists().into());
    }
    let row = new_user(&state, &req.username, req.global_role.as_str(), req.email.clone(), req.active, None);
    state.db.insert_user(&row).await?;
    Ok(Json(convert::user(&row)))
}

pub(super) async fn update(
    State(state): State<AppState>,
    GlobalAdmin(_admin): GlobalAdmin,
    Body(req): Body<CreateUserRequest>,
) -> Result<Json<User>, Failure> {
    let row = state
        .db
        .update_user(&req.username, req.global_role.as_str(), req.email.as_deref(), req.active)
        .await?
        .ok_or_else(|| ApiError::not_exists("Resource not found"))?;
    Ok(Json(convert::user(&row)))
}

pub(super) async fn refresh_token(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<RefreshTokenRequest>,
) -> Result<Json<dstack_api::users::UserWithCreds>, Failure> {
    if !caller.is_admin() && caller.user.name != req.username {
        return Err(ApiError::forbidden().into());
    }
    let token = Uuid::new_v4().to_string();
    let row = state
        .db
        .set_user_token(&req.username, &token_hash(&token), &state.cipher.encrypt(&token))
        .await?
        .ok_or_else(|| ApiError::not_exists("Resource not found"))?;
    Ok(Json(convert::user_with_creds(&row, &state.cipher, Some(&token))))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    GlobalAdmin(_admin): GlobalAdmin,
    Body(req): Body<DeleteUsersRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    if req.users.iter().any(|u| u == ADMIN_USERNAME) {
        return Err(ApiError::error(format!("User '{ADMIN_USERNAME}' cannot be deleted")).into());
    }
    for name in &req.users {
        if state.db.user_by_name(name).await?.is_none() {
            return Err(ApiError::error("Failed to delete non-existent users").into());
        }
    }
    state.db.delete_users(&req.users).await?;
    Ok(null())
}

/// `^[a-zA-Z0-9-_]{1,60}$`.
pub(crate) fn validate_username(name: &str) -> Result<(), ApiError> {
    let ok = (1..=60).contains(&name.len()) && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok { Ok(()) } else { Err(ApiError::error("Username should match regex '^[a-zA-Z0-9-_]{1,60}$'")) }
}

/// A new user row with a token (the given one or a fresh UUID), stored hashed and encrypted.
pub(crate) fn new_user(
    state: &AppState,
    name: &str,
    global_role: &str,
    email: Option<String>,
    active: bool,
    token: Option<&str>,
) -> UserRow {
    let token = token.map(str::to_owned).unwrap_or_else(|| Uuid::new_v4().to_string());
    UserRow {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        created_at: jiff::Timestamp::now(),
        global_role: global_role.to_owned(),
        email,
        active,
        token_hash: token_hash(&token),
        token_encrypted: Some(state.cipher.encrypt(&token)),
        ssh_public_key: None,
        ssh_private_key: None,
    }
}
