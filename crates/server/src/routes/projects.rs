//! `/api/projects/*`.

use std::collections::HashSet;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dstack_api::ApiError;
use dstack_api::projects::{
    CreateProjectRequest, DeleteProjectsRequest, ListProjectsRequest, Project, ProjectsInfoList,
    RemoveProjectMembersRequest, SetProjectMembersRequest, UpdateProjectRequest,
};
use dstack_api::users::ProjectRole;
use dstack_db::{ProjectRow, UserRow};
use uuid::Uuid;

use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Admin, Caller, Manager, ManagerOrPublic, MemberOrPublic, ProjectAccess};
use crate::convert;
use crate::state::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    OptBody(req): OptBody<ListProjectsRequest>,
) -> Result<Response, Failure> {
    let include_not_joined = req.include_not_joined.unwrap_or(true);
    let all = state.db.list_projects().await?;
    let mut rows = if caller.is_admin() {
        all
    } else {
        let joined: HashSet<Uuid> =
            state.db.list_projects_for_member(caller.user.id).await?.into_iter().map(|p| p.id).collect();
        all.into_iter().filter(|p| joined.contains(&p.id) || (include_not_joined && p.is_public)).collect()
    };
    let profile_user = match &req.username {
        Some(name) => Some(state.db.user_by_name(name).await?),
        None => None,
    };
    if let Some(profile_user) = &profile_user {
        // Projects the named user owns or belongs to.
        let theirs: HashSet<Uuid> = match profile_user {
            Some(u) => state.db.list_projects_for_member(u.id).await?.into_iter().map(|p| p.id).collect(),
            None => HashSet::new(),
        };
        rows.retain(|p| profile_user.as_ref().is_some_and(|u| p.owner_id == u.id) || theirs.contains(&p.id));
    }
    if let Some(pattern) = req.name_pattern.as_deref().map(str::to_lowercase) {
        rows.retain(|p| p.name.to_lowercase().contains(&pattern));
    }
    let total = rows.len() as i64;
    let page = super::paginate(
        rows,
        |p| (p.created_at, p.id),
        req.prev_created_at,
        req.prev_id,
        req.limit,
        req.ascending,
    );
    let mut projects = Vec::with_capacity(page.len());
    let mut owners: std::collections::HashMap<Uuid, UserRow> = std::collections::HashMap::new();
    for row in &page {
        // Without `username` members are left out; with it, only that user's membership.
        let members = match &profile_user {
            Some(Some(u)) => state
                .db
                .project_members(row.id)
                .await?
                .into_iter()
                .filter(|(m, _)| m.id == u.id)
                .filter_map(|(m, role)| ProjectRole::parse(&role).map(|r| convert::member(&m, r)))
                .collect(),
            _ => Vec::new(),
        };
        let owner = match owners.entry(row.owner_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(owner_of(&state, row).await?),
        };
        projects.push(convert::project(row, owner, members));
    }
    Ok(if req.return_total_count {
        Json(ProjectsInfoList { total_count: Some(total), projects }).into_response()
    } else {
        Json(projects).into_response()
    })
}

pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateProjectRequest>,
) -> Result<Json<Project>, Failure> {
    validate_project_name(&req.project_name)?;
    if state.db.project_by_name(&req.project_name).await?.is_some() {
        return Err(ApiError::resource_exists().into());
    }
    let row = ProjectRow {
        id: Uuid::new_v4(),
        name: req.project_name.clone(),
        owner_id: caller.user.id,
        created_at: jiff::Timestamp::now(),
        is_public: req.is_public,
    };
    state.db.insert_project(&row, ProjectRole::Admin.as_str()).await?;
    Ok(Json(full_project(&state, &row).await?))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<DeleteProjectsRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    let mut found = Vec::new();
    for name in &req.projects_names {
        if let Some(row) = state.db.project_by_name(name).await? {
            found.push(row);
        }
    }
    for row in &found {
        let role = state.db.member_role(row.id, caller.user.id).await?;
        if !caller.is_admin() && role.as_deref() != Some(ProjectRole::Admin.as_str()) {
            return Err(forbidden("Access denied"));
        }
    }
    if found.len() != req.projects_names.len() {
        return Err(ApiError::error("Failed to delete non-existent projects").into());
    }
    state.db.delete_projects(&req.projects_names).await?;
    Ok(null())
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<MemberOrPublic>,
) -> Result<Json<Project>, Failure> {
    Ok(Json(full_project(&state, &access.project).await?))
}

pub(super) async fn update(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    OptBody(req): OptBody<UpdateProjectRequest>,
) -> Result<Json<Project>, Failure> {
    if let Some(is_public) = req.is_public {
        state.db.set_project_public(access.project.id, is_public).await?;
    }
    let row = state.db.project_by_name(&access.project.name).await?.ok_or(ApiError::ProjectNotFound)?;
    Ok(Json(full_project(&state, &row).await?))
}

pub(super) async fn set_members(
    State(state): State<AppState>,
    access: ProjectAccess<Manager>,
    Body(req): Body<SetProjectMembersRequest>,
) -> Result<Json<Project>, Failure> {
    check_unique(req.members.iter().map(|m| m.username.as_str()))?;
    if !access.caller.is_admin() && access.role == Some(ProjectRole::Manager) {
        let current: HashSet<String> = state
            .db
            .project_members(access.project.id)
            .await?
            .into_iter()
            .filter(|(_, role)| role == ProjectRole::Admin.as_str())
            .map(|(u, _)| u.name)
            .collect();
        let wanted: HashSet<String> = req
            .members
            .iter()
            .filter(|m| m.project_role == ProjectRole::Admin)
            .map(|m| m.username.clone())
            .collect();
        if current != wanted {
            return Err(forbidden("Access denied: changing project admins"));
        }
    }
    let mut members = Vec::new();
    for m in &req.members {
        // dstack skips unknown names here (set_members replaces what it can).
        if let Some(user) = find_user(&state, &m.username).await? {
            members.push((user.id, m.project_role.as_str().to_owned()));
        }
    }
    state.db.set_members(access.project.id, &members).await?;
    Ok(Json(full_project(&state, &access.project).await?))
}

pub(super) async fn add_members(
    State(state): State<AppState>,
    access: ProjectAccess<ManagerOrPublic>,
    Body(req): Body<SetProjectMembersRequest>,
) -> Result<Json<Project>, Failure> {
    check_unique(req.members.iter().map(|m| m.username.as_str()))?;
    let caller = &access.caller;
    let self_join = req.members.len() == 1
        && access.project.is_public
        && (req.members[0].username == caller.user.name
            || Some(&req.members[0].username) == caller.user.email.as_ref())
        && access.role.is_none();
    if self_join {
        if req.members[0].project_role != ProjectRole::User {
            return Err(forbidden("Access denied: can only join public projects as user role"));
        }
    } else {
        if !caller.is_admin() && !matches!(access.role, Some(ProjectRole::Admin | ProjectRole::Manager)) {
            return Err(forbidden("Access denied: insufficient permissions to add members"));
        }
        if !caller.is_admin()
            && access.role == Some(ProjectRole::Manager)
            && req.members.iter().any(|m| m.project_role == ProjectRole::Admin)
        {
            return Err(forbidden("Access denied: only global admins can add project admins"));
        }
    }
    let mut members = Vec::new();
    for m in &req.members {
        let user = find_user(&state, &m.username)
            .await?
            .ok_or_else(|| ApiError::error(format!("User not found: {}", m.username)))?;
        members.push((user.id, m.project_role.as_str().to_owned()));
    }
    state.db.add_members(access.project.id, &members).await?;
    Ok(Json(full_project(&state, &access.project).await?))
}

pub(super) async fn remove_members(
    State(state): State<AppState>,
    access: ProjectAccess<MemberOrPublic>,
    Body(req): Body<RemoveProjectMembersRequest>,
) -> Result<Json<Project>, Failure> {
    let caller = &access.caller;
    let manages = caller.is_admin() || matches!(access.role, Some(ProjectRole::Admin | ProjectRole::Manager));
    let self_leave = req.usernames.len() == 1 && req.usernames[0] == caller.user.name;
    if !manages && !self_leave {
        return Err(forbidden("Access denied: insufficient permissions to remove members"));
    }
    let current = state.db.project_members(access.project.id).await?;
    let mut ids = Vec::new();
    for name in &req.usernames {
        let user = find_user(&state, name)
            .await?
            .ok_or_else(|| ApiError::error(format!("User not found: {name}")))?;
        let Some((_, role)) = current.iter().find(|(u, _)| u.id == user.id) else {
            return Err(ApiError::error(format!("User is not a member of this project: {name}")).into());
        };
        if role == ProjectRole::Admin.as_str()
            && !caller.is_admin()
            && access.role == Some(ProjectRole::Manager)
        {
            return Err(forbidden("Access denied: only global admins can remove project admins"));
        }
        ids.push(user.id);
    }
    let admins_left = current
        .iter()
        .filter(|(u, role)| role == ProjectRole::Admin.as_str() && !ids.contains(&u.id))
        .count();
    let had_admins = current.iter().any(|(_, role)| role == ProjectRole::Admin.as_str());
    if had_admins && admins_left == 0 {
        let msg = if self_leave {
            "Cannot leave project: you are the last admin"
        } else {
            "Cannot remove all project admins"
        };
        return Err(ApiError::error(msg).into());
    }
    state.db.remove_members(access.project.id, &ids).await?;
    Ok(Json(full_project(&state, &access.project).await?))
}

/// A refusal from inside a handler (dstack's unwrapped `ForbiddenError` body).
fn forbidden(msg: &str) -> Failure {
    ApiError::ForbiddenAction { msg: msg.to_owned() }.into()
}

fn check_unique<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(ApiError::error("Cannot add same user multiple times"));
        }
    }
    Ok(())
}

/// A user by name or email (dstack accepts either in member settings).
async fn find_user(state: &AppState, name_or_email: &str) -> Result<Option<UserRow>, Failure> {
    if let Some(user) = state.db.user_by_name(name_or_email).await? {
        return Ok(Some(user));
    }
    Ok(state.db.user_by_email(name_or_email).await?)
}

async fn owner_of(state: &AppState, row: &ProjectRow) -> Result<UserRow, Failure> {
    state.db.user_by_id(row.owner_id).await?.ok_or(Failure(ApiError::Internal))
}

/// The project with its owner and every member.
pub(crate) async fn full_project(state: &AppState, row: &ProjectRow) -> Result<Project, Failure> {
    let members = state
        .db
        .project_members(row.id)
        .await?
        .into_iter()
        .filter_map(|(user, role)| ProjectRole::parse(&role).map(|r| convert::member(&user, r)))
        .collect();
    Ok(convert::project(row, &owner_of(state, row).await?, members))
}

/// `^[a-zA-Z0-9-_]{1,50}$`.
pub(crate) fn validate_project_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=50).contains(&name.len())
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok { Ok(()) } else { Err(ApiError::error("Project name should match regex '^[a-zA-Z0-9-_]{1,50}$'")) }
}
