//! `/api/users/*`: users, their roles and credentials.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user's server-wide role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalRole {
    Admin,
    User,
}

impl GlobalRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalRole::Admin => "admin",
            GlobalRole::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<GlobalRole> {
        match s {
            "admin" => Some(GlobalRole::Admin),
            "user" => Some(GlobalRole::User),
            _ => None,
        }
    }
}

/// A user's role in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectRole {
    Admin,
    Manager,
    User,
}

impl ProjectRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Admin => "admin",
            ProjectRole::Manager => "manager",
            ProjectRole::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<ProjectRole> {
        match s {
            "admin" => Some(ProjectRole::Admin),
            "manager" => Some(ProjectRole::Manager),
            "user" => Some(ProjectRole::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPermissions {
    pub can_create_projects: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub created_at: Option<Timestamp>,
    pub global_role: GlobalRole,
    #[serde(default)]
    pub email: Option<String>,
    pub active: bool,
    pub permissions: UserPermissions,
    #[serde(default)]
    pub ssh_public_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokenCreds {
    pub token: String,
}

/// A user with their token and SSH private key (their own, or any user's for an admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserWithCreds {
    #[serde(flatten)]
    pub user: User,
    pub creds: UserTokenCreds,
    #[serde(default)]
    pub ssh_private_key: Option<String>,
}

/// `users/list` with `return_total_count: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersInfoList {
    pub total_count: Option<i64>,
    pub users: Vec<User>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ListUsersRequest {
    pub return_total_count: bool,
    pub name_pattern: Option<String>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub prev_created_at: Option<Timestamp>,
    pub prev_id: Option<Uuid>,
    pub limit: Option<i64>,
    pub ascending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetUserRequest {
    pub username: String,
}

/// `users/create` and `users/update`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub username: String,
    pub global_role: GlobalRole,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenRequest {
    pub username: String,
}

/// `users/refresh_ssh_key`: the caller's own keys when `username` is absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct RefreshSshKeyRequest {
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteUsersRequest {
    pub users: Vec<String>,
}
