//! Database rows to wire types.

use dstack_api::projects::{Member, MemberPermissions, Project};
use dstack_api::users::{GlobalRole, ProjectRole, User, UserPermissions, UserTokenCreds, UserWithCreds};
use dstack_db::{ProjectRow, UserRow};

use crate::crypto::Cipher;

pub(crate) fn user(row: &UserRow) -> User {
    let global_role = GlobalRole::parse(&row.global_role).unwrap_or(GlobalRole::User);
    User {
        id: row.id,
        username: row.name.clone(),
        created_at: Some(row.created_at),
        global_role,
        email: row.email.clone(),
        active: row.active,
        // Any user may create projects (dstack's default_permissions).
        permissions: UserPermissions { can_create_projects: true },
        ssh_public_key: row.ssh_public_key.clone(),
    }
}

/// The user with their token: the caller's own (`known_token`) or the stored one.
pub(crate) fn user_with_creds(row: &UserRow, cipher: &Cipher, known_token: Option<&str>) -> UserWithCreds {
    let token = known_token
        .map(str::to_owned)
        .or_else(|| row.token_encrypted.as_deref().and_then(|t| cipher.decrypt(t)))
        .unwrap_or_default();
    UserWithCreds {
        user: user(row),
        creds: UserTokenCreds { token },
        ssh_private_key: row.ssh_private_key.as_deref().and_then(|k| cipher.decrypt(k)),
    }
}

/// A member with dstack's default permissions: everyone manages SSH fleets; secrets are for
/// project admins and global admins (managers too only with `allow_managers_manage_secrets`).
pub(crate) fn member(row: &UserRow, role: ProjectRole) -> Member {
    let secrets = role == ProjectRole::Admin || row.global_role == GlobalRole::Admin.as_str();
    Member {
        user: user(row),
        project_role: role,
        permissions: MemberPermissions { can_manage_ssh_fleets: true, can_manage_secrets: secrets },
    }
}

pub(crate) fn project(row: &ProjectRow, owner: &UserRow, members: Vec<Member>) -> Project {
    Project {
        project_id: row.id,
        project_name: row.name.clone(),
        owner: user(owner),
        created_at: Some(row.created_at),
        backends: Vec::new(),
        members,
        is_public: row.is_public,
        templates_repo: None,
    }
}
