//! `/api/projects/*`: projects and their members.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::users::{ProjectRole, User};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPermissions {
    pub can_manage_ssh_fleets: bool,
    pub can_manage_secrets: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: User,
    pub project_role: ProjectRole,
    pub permissions: MemberPermissions,
}

/// A configured backend of a project (`{name, config}`; the config is tagged by `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub name: String,
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub project_id: Uuid,
    pub project_name: String,
    pub owner: User,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub created_at: Option<Timestamp>,
    pub backends: Vec<BackendInfo>,
    pub members: Vec<Member>,
    pub is_public: bool,
    pub templates_repo: Option<String>,
}

/// `projects/list` with `return_total_count: true`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectsInfoList {
    pub total_count: Option<i64>,
    pub projects: Vec<Project>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct ListProjectsRequest {
    pub include_not_joined: Option<bool>,
    pub username: Option<String>,
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
pub struct CreateProjectRequest {
    pub project_name: String,
    #[serde(default)]
    pub is_public: bool,
    #[serde(default)]
    pub templates_repo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
#[serde(deny_unknown_fields)]
pub struct UpdateProjectRequest {
    pub is_public: Option<bool>,
    pub templates_repo: Option<String>,
    pub reset_templates_repo: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteProjectsRequest {
    pub projects_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSetting {
    pub username: String,
    pub project_role: ProjectRole,
}

/// `set_members` and `add_members`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetProjectMembersRequest {
    pub members: Vec<MemberSetting>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveProjectMembersRequest {
    pub usernames: Vec<String>,
}
