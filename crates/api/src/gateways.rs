//! `/api/project/{p}/gateways/*`: gateways with dstack 0.22.5's field names and JSON shapes
//! (api.md §3.8). The configuration is a `dstack_model` type, including our `backend: local`.

use dstack_model::common::BackendType;
use dstack_model::gateway::GatewayConfiguration;
use dstack_model::string_enum;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runs::ApplyAction;

string_enum! {
    /// The status of a gateway.
    ///
    /// ```text
    ///   SUBMITTED --> PROVISIONING --> RUNNING
    ///       |              |
    ///       +--------------+--> FAILED
    /// ```
    pub enum GatewayStatus {
        Submitted = "submitted",
        Provisioning = "provisioning",
        Running = "running",
        Failed = "failed",
    }
}

string_enum! {
    /// The status of one gateway replica.
    pub enum GatewayReplicaStatus {
        Submitted = "submitted",
        Provisioning = "provisioning",
        Running = "running",
        Terminating = "terminating",
        Terminated = "terminated",
    }
}

/// What the client submits for a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySpec {
    pub configuration: GatewayConfiguration,
    #[serde(default)]
    pub configuration_path: Option<String>,
}

/// One replica of a gateway (a local gateway has one: its process).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayReplica {
    #[serde(default)]
    pub hostname: Option<String>,
    pub replica_num: i64,
    #[serde(default)]
    pub backend: Option<BackendType>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: Timestamp,
    pub status: GatewayReplicaStatus,
    #[serde(default)]
    pub status_message: Option<String>,
}

/// A gateway as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub id: Uuid,
    pub name: String,
    pub project_name: String,
    pub configuration: GatewayConfiguration,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: Timestamp,
    pub status: GatewayStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    /// The load balancer's hostname; never set here (no load balancers).
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub wildcard_domain: Option<String>,
    pub default: bool,
    #[serde(default)]
    pub replicas: Vec<GatewayReplica>,
    /// Never set since dstack 0.21; pre-0.21 clients echo it back.
    #[serde(default)]
    pub backend: Option<BackendType>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// `gateways/get_plan`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayPlan {
    pub project_name: String,
    pub user: String,
    pub spec: GatewaySpec,
    pub effective_spec: GatewaySpec,
    #[serde(default)]
    pub current_resource: Option<Gateway>,
    pub action: ApplyAction,
}

/// `gateways/get_plan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetGatewayPlanRequest {
    pub spec: GatewaySpec,
}

/// The plan turned back into input: `current_resource` is what the client expects to update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyGatewayPlanInput {
    pub spec: GatewaySpec,
    #[serde(default)]
    pub current_resource: Option<Gateway>,
}

/// `gateways/apply`; answered with the [`Gateway`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyGatewayPlanRequest {
    pub plan: ApplyGatewayPlanInput,
    pub force: bool,
}

/// `gateways/create` (deprecated in dstack for `apply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGatewayRequest {
    pub configuration: GatewayConfiguration,
}

/// `gateways/list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListGatewaysRequest {
    pub include_imported: bool,
}

/// `gateways/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetGatewayRequest {
    pub name: String,
}

/// `gateways/delete`; answered with `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteGatewaysRequest {
    pub names: Vec<String>,
}

/// `gateways/set_default`; answered with `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetDefaultGatewayRequest {
    pub name: String,
    /// Another project's (imported) gateway; only this project's own are served here.
    #[serde(default)]
    pub gateway_project: Option<String>,
}

/// `gateways/set_wildcard_domain`; answered with the [`Gateway`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWildcardDomainRequest {
    pub name: String,
    pub wildcard_domain: String,
}
