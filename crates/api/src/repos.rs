//! `/api/project/{p}/repos/*`: the repos runs belong to.

use serde::{Deserialize, Serialize};

/// What a repo is, tagged by `repo_type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "repo_type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RepoInfo {
    Remote {
        repo_name: String,
    },
    Local {
        repo_dir: String,
    },
    /// No git repo: runs that bring their files another way.
    Virtual {},
}

impl RepoInfo {
    pub fn is_remote(&self) -> bool {
        matches!(self, RepoInfo::Remote { .. })
    }
}

/// Credentials for cloning a private remote repo (secret: stored encrypted, per user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteRepoCreds {
    pub clone_url: String,
    #[serde(default)]
    pub private_key: Option<String>,
    #[serde(default)]
    pub oauth_token: Option<String>,
}

/// `repos/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoHead {
    pub repo_id: String,
    pub repo_info: RepoInfo,
}

/// `repos/get`: the caller's own credentials, when asked for and the repo is remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoHeadWithCreds {
    pub repo_id: String,
    pub repo_info: RepoInfo,
    pub repo_creds: Option<RemoteRepoCreds>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRepoRequest {
    pub repo_id: String,
    pub include_creds: bool,
}

/// `repos/init`: create or update a repo, and set or clear the caller's credentials for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveRepoCredsRequest {
    pub repo_id: String,
    pub repo_info: RepoInfo,
    #[serde(default)]
    pub repo_creds: Option<RemoteRepoCreds>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteReposRequest {
    pub repos_ids: Vec<String>,
}

/// An uploaded archive of `files:` (`/api/files/upload_archive`), by its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArchive {
    pub id: uuid::Uuid,
    pub hash: String,
}

/// `/api/files/get_archive_by_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetFileArchiveByHashRequest {
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_info_is_tagged_by_repo_type() {
        let v: RepoInfo = serde_json::from_str(r#"{"repo_type":"virtual"}"#).unwrap();
        assert_eq!(v, RepoInfo::Virtual {});
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"repo_type":"virtual"}"#);
        let r: RepoInfo = serde_json::from_str(r#"{"repo_type":"remote","repo_name":"dstack"}"#).unwrap();
        assert!(r.is_remote());
        assert!(serde_json::from_str::<RepoInfo>(r#"{"repo_type":"svn"}"#).is_err());
    }
}
