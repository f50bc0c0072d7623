//! Who is calling and what they may do, as axum extractors: a handler that takes
//! [`Caller`], [`GlobalAdmin`] or [`ProjectAccess<L>`] cannot run for anyone else.
//!
//! The rules are dstack's: a global admin passes every project check; project roles are
//! `admin`, `manager`, `user`; an unknown project is a 404, a missing token a 401, a wrong
//! token or a missing permission a 403.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use dstack_api::ApiError;
use dstack_api::users::{GlobalRole, ProjectRole};
use dstack_db::{ProjectRow, UserRow};

use crate::crypto::token_hash;
use crate::routes::Failure;
use crate::state::AppState;

/// An authenticated user and the token they came with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRow,
    pub token: String,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.global_role == GlobalRole::Admin.as_str()
    }

    /// The projects whose runs and fleets the caller sees in cross-project listings: every
    /// project for a global admin, the caller's own otherwise.
    pub async fn visible_projects(&self, state: &AppState) -> Result<Vec<ProjectRow>, dstack_db::DbError> {
        if self.is_admin() {
            state.db.list_projects().await
        } else {
            state.db.list_projects_for_member(self.user.id).await
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        match state.db.user_by_token_hash(&token_hash(&token)).await? {
            Some(user) if user.active => Ok(Caller { user, token }),
            _ => Err(ApiError::InvalidToken.into()),
        }
    }
}

/// The `Authorization: Bearer <token>` token; dstack's 401 without one.
fn bearer_token(parts: &Parts) -> Result<String, Failure> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match header.map(str::trim).and_then(|value| value.split_once(' ')) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim().to_owned())
        }
        _ => Err(ApiError::NotAuthenticated.into()),
    }
}

/// A caller with the global `admin` role.
#[derive(Debug, Clone)]
pub struct GlobalAdmin(pub Caller);

impl FromRequestParts<AppState> for GlobalAdmin {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.is_admin() { Ok(GlobalAdmin(caller)) } else { Err(ApiError::forbidden().into()) }
    }
}

/// A project permission level (dstack's permission classes).
pub trait AccessLevel: Send + Sync + 'static {
    fn allows(role: Option<ProjectRole>, is_public: bool) -> bool;
}

/// `ProjectMember`: any member.
pub struct Member;
/// `ProjectMemberOrPublicAccess`: any member, or anyone for a public project.
pub struct MemberOrPublic;
/// `ProjectManager`: admins and managers.
pub struct Manager;
/// `ProjectManagerOrPublicProject`: admins and managers, or anyone for a public project.
pub struct ManagerOrPublic;
/// `ProjectAdmin`: project admins.
pub struct Admin;

impl AccessLevel for Member {
    fn allows(role: Option<ProjectRole>, _: bool) -> bool {
        role.is_some()
    }
}

impl AccessLevel for MemberOrPublic {
    fn allows(role: Option<ProjectRole>, is_public: bool) -> bool {
        role.is_some() || is_public
    }
}

impl AccessLevel for Manager {
    fn allows(role: Option<ProjectRole>, _: bool) -> bool {
        matches!(role, Some(ProjectRole::Admin | ProjectRole::Manager))
    }
}

impl AccessLevel for ManagerOrPublic {
    fn allows(role: Option<ProjectRole>, is_public: bool) -> bool {
        matches!(role, Some(ProjectRole::Admin | ProjectRole::Manager)) || is_public
    }
}

impl AccessLevel for Admin {
    fn allows(role: Option<ProjectRole>, _: bool) -> bool {
        role == Some(ProjectRole::Admin)
    }
}

/// The project named in the path (`{project_name}`), reached by a caller at level `L`.
pub struct ProjectAccess<L> {
    pub caller: Caller,
    pub project: ProjectRow,
    /// The caller's own role (`None` for a global admin or public access without membership).
    pub role: Option<ProjectRole>,
    level: PhantomData<L>,
}

impl<L: AccessLevel> FromRequestParts<AppState> for ProjectAccess<L> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::NoRoute)?;
        let name = params
            .iter()
            .find(|(key, _)| *key == "project_name")
            .map(|(_, value)| value.to_owned())
            .ok_or(ApiError::NoRoute)?;
        // The caller and the project in one statement: every project route (two per
        // submitted run) makes it.
        let (user, project) = match state.db.caller_in_project(&token_hash(&token), &name).await? {
            Some((user, project)) if user.active => (user, project),
            _ => return Err(ApiError::InvalidToken.into()),
        };
        let caller = Caller { user, token };
        let (project, role) = project.ok_or(ApiError::ProjectNotFound)?;
        let role = role.as_deref().and_then(ProjectRole::parse);
        if caller.is_admin() || L::allows(role, project.is_public) {
            Ok(ProjectAccess { caller, project, role, level: PhantomData })
        } else {
            Err(ApiError::forbidden().into())
        }
    }
}
