//! `/api/users/*`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dstack_api::ApiError;
use dstack_api::users::{
    CreateUserRequest, DeleteUsersRequest, GetUserRequest, GlobalRole, ListUsersRequest,
    RefreshSshKeyRequest, RefreshTokenRequest, User, UsersInfoList,
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
    let page = super::paginate(
        rows,
        |u| (u.created_at, u.id),
        req.prev_created_at,
        req.prev_id,
        req.limit,
        req.ascending,
    );
    let users: Vec<User> = page.iter().map(convert::user).collect();
    Ok(if req.return_total_count {
        Json(UsersInfoList { total_count: Some(total), users }).into_response()
    } else {
        Json(users).into_response()
    })
}

pub(super) async fn get_my_user(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<dstack_api::users::UserWithCreds>, Failure> {
    let user = ensure_ssh_keys(&state, caller.user).await?;
    Ok(Json(convert::user_with_creds(&user, &state.cipher, Some(&caller.token))))
}

pub(super) async fn refresh_ssh_key(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<RefreshSshKeyRequest>,
) -> Result<Json<dstack_api::users::UserWithCreds>, Failure> {
    let name = req.username.unwrap_or_else(|| caller.user.name.clone());
    if !caller.is_admin() && caller.user.name != name {
        return Err(ApiError::forbidden().into());
    }
    let user =
        state.db.user_by_name(&name).await?.ok_or_else(|| ApiError::not_exists("Resource not found"))?;
    let user = refresh_keys(&state, user).await?;
    let own = (user.id == caller.user.id).then_some(caller.token.as_str());
    Ok(Json(convert::user_with_creds(&user, &state.cipher, own)))
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
    if state.db.user_by_name_ignore_case(&req.username).await?.is_some() {
        return Err(ApiError::resource_exists().into());
    }
    let new = NewUser {
        name: &req.username,
        global_role: req.global_role,
        email: req.email.clone(),
        active: req.active,
        token: None,
        ssh_keys: true,
    };
    let row = new_user(&state, new).await.map_err(|e| {
        tracing::error!(error = %e, "creating a user");
        Failure(ApiError::Internal)
    })?;
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
    let ok = (1..=60).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok { Ok(()) } else { Err(ApiError::error("Username should match regex '^[a-zA-Z0-9-_]{1,60}$'")) }
}

/// What a new user starts with.
pub(crate) struct NewUser<'a> {
    pub(crate) name: &'a str,
    pub(crate) global_role: GlobalRole,
    pub(crate) email: Option<String>,
    pub(crate) active: bool,
    /// The token to give; a fresh UUID when `None`.
    pub(crate) token: Option<&'a str>,
    /// Generate the SSH key pair now (otherwise on the first `get_my_user`).
    pub(crate) ssh_keys: bool,
}

/// A new user row with a token stored hashed and encrypted, and maybe an SSH key pair (the
/// private key encrypted).
pub(crate) async fn new_user(state: &AppState, new: NewUser<'_>) -> Result<UserRow, crate::ServerError> {
    let NewUser { name, global_role, email, active, token, ssh_keys } = new;
    let token = token.map(str::to_owned).unwrap_or_else(|| Uuid::new_v4().to_string());
    let (public, private) = if ssh_keys {
        let (public, private) = ssh_keypair(name).await?;
        (Some(public), Some(state.cipher.encrypt(&private)))
    } else {
        (None, None)
    };
    Ok(UserRow {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        created_at: jiff::Timestamp::now(),
        global_role: global_role.as_str().to_owned(),
        email,
        active,
        token_hash: token_hash(&token),
        token_encrypted: Some(state.cipher.encrypt(&token)),
        ssh_public_key: public,
        ssh_private_key: private,
    })
}

/// Generates a key pair off the async threads (RSA generation takes a while).
async fn ssh_keypair(username: &str) -> Result<(String, String), crate::ServerError> {
    let username = username.to_owned();
    tokio::task::spawn_blocking(move || crate::crypto::generate_ssh_keypair(&username))
        .await
        .map_err(|e| crate::ServerError::Crypto(format!("key generation stopped: {e}")))?
}

/// `user` with an SSH key pair, made now if they have none (keys are made on first use).
/// Serialized, so concurrent first requests agree on one pair.
pub(crate) async fn ensure_ssh_keys(state: &AppState, user: UserRow) -> Result<UserRow, Failure> {
    if user.ssh_public_key.is_some() && user.ssh_private_key.is_some() {
        return Ok(user);
    }
    let _guard = state.key_lock.lock().await;
    let current = state.db.user_by_id(user.id).await?.unwrap_or(user);
    if current.ssh_public_key.is_some() && current.ssh_private_key.is_some() {
        return Ok(current);
    }
    refresh_keys(state, current).await
}

/// Gives `user` a fresh SSH key pair; returns the updated row.
async fn refresh_keys(state: &AppState, mut user: UserRow) -> Result<UserRow, Failure> {
    let (public, private) = ssh_keypair(&user.name).await.map_err(|e| {
        tracing::error!(error = %e, "generating an SSH key pair");
        Failure(ApiError::Internal)
    })?;
    let private = state.cipher.encrypt(&private);
    state.db.set_user_ssh_keys(user.id, &public, &private).await?;
    user.ssh_public_key = Some(public);
    user.ssh_private_key = Some(private);
    Ok(user)
}
