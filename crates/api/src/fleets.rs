//! `/api/project/{p}/fleets/*` and `/api/instances/list`: fleets and their instances, with
//! dstack 0.22.5's field names and JSON shapes (api.md §3.7).
//!
//! The fleet configuration inside a [`FleetSpec`] is a `dstack_model` type. Every struct
//! refuses unknown fields, as dstack's `CoreModel` does.

use dstack_model::common::BackendType;
use dstack_model::fleet::FleetConfiguration;
use dstack_model::profile::Profile;
use dstack_model::string_enum;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runs::{ApplyAction, GpuDriverInfo, InstanceOfferWithAvailability, InstanceType};

string_enum! {
    /// The status of a fleet.
    ///
    /// ```text
    ///   SUBMITTED --> ACTIVE --(delete)--> TERMINATING --> TERMINATED
    ///       |                                                  ^
    ///       +-----------------------> FAILED ------------------+ (never shown once deleted)
    /// ```
    pub enum FleetStatus {
        Submitted = "submitted",
        Active = "active",
        Terminating = "terminating",
        Terminated = "terminated",
        Failed = "failed",
    }
}

string_enum! {
    /// The status of an instance.
    ///
    /// ```text
    ///   PENDING --> PROVISIONING --> IDLE <--> BUSY
    ///      |             |            |         |
    ///      +-------------+------------+---------+--> TERMINATING --> TERMINATED
    /// ```
    pub enum InstanceStatus {
        Pending = "pending",
        Provisioning = "provisioning",
        Idle = "idle",
        Busy = "busy",
        Terminating = "terminating",
        Terminated = "terminated",
    }
}

string_enum! {
    /// An instance's health, from its health checks.
    pub enum HealthStatus {
        Healthy = "healthy",
        Warning = "warning",
        Failure = "failure",
    }
}

/// What the client submits for a fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    pub configuration: FleetConfiguration,
    #[serde(default)]
    pub configuration_path: Option<String>,
    pub profile: Profile,
    /// The client never sends it; the server sets it for fleets it creates itself.
    #[serde(default)]
    pub autocreated: bool,
}

/// A fleet as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub id: Uuid,
    pub name: String,
    pub project_name: String,
    pub spec: FleetSpec,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: Timestamp,
    pub status: FleetStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    pub instances: Vec<Instance>,
}

/// One instance of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub id: Uuid,
    pub project_name: String,
    #[serde(default)]
    pub backend: Option<BackendType>,
    #[serde(default)]
    pub instance_type: Option<InstanceType>,
    /// `<fleet>-<num>`.
    pub name: String,
    #[serde(default)]
    pub fleet_id: Option<Uuid>,
    #[serde(default)]
    pub fleet_name: Option<String>,
    pub instance_num: i64,
    #[serde(default)]
    pub job_name: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    pub status: InstanceStatus,
    #[serde(default)]
    pub unreachable: bool,
    #[serde(default = "default_healthy")]
    pub health_status: HealthStatus,
    #[serde(default)]
    pub termination_reason: Option<String>,
    #[serde(default)]
    pub termination_reason_message: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub created: Timestamp,
    #[serde(with = "crate::time::rfc3339_opt", default)]
    pub finished_at: Option<Timestamp>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub price: Option<f64>,
    #[serde(default)]
    pub total_blocks: Option<i64>,
    #[serde(default)]
    pub busy_blocks: i64,
    #[serde(default)]
    pub gpu_driver: Option<GpuDriverInfo>,
}

fn default_healthy() -> HealthStatus {
    HealthStatus::Healthy
}

/// `fleets/get_plan`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPlan {
    pub project_name: String,
    pub user: String,
    /// The request's spec, echoed with the SSH keys: the client sends it back in `fleets/apply`.
    pub spec: FleetSpec,
    #[serde(default)]
    pub effective_spec: Option<FleetSpec>,
    #[serde(default)]
    pub current_resource: Option<Fleet>,
    pub offers: Vec<InstanceOfferWithAvailability>,
    pub total_offers: i64,
    #[serde(default)]
    pub max_offer_price: Option<f64>,
    /// `None` from servers older than in-place updates.
    #[serde(default)]
    pub action: Option<ApplyAction>,
}

/// `fleets/get_plan`. The client leaves `spec.autocreated` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetFleetPlanRequest {
    pub spec: FleetSpec,
}

/// The plan turned back into input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFleetPlanInput {
    pub spec: FleetSpec,
    #[serde(default)]
    pub current_resource: Option<Fleet>,
}

/// `fleets/apply`; answered with the [`Fleet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFleetPlanRequest {
    pub plan: ApplyFleetPlanInput,
    pub force: bool,
}

/// `fleets/list` (project-scoped).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListProjectFleetsRequest {
    pub include_imported: bool,
}

/// `fleets/get`: by name or by id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GetFleetRequest {
    pub name: Option<String>,
    pub id: Option<Uuid>,
}

/// `fleets/delete`; answered with `null`. The fleets go `terminating`, then disappear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteFleetsRequest {
    pub names: Vec<String>,
}

/// `fleets/delete_instances`; answered with `null`. The instances go `terminating`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteFleetInstancesRequest {
    pub name: String,
    pub instance_nums: Vec<i64>,
}

/// How the server reaches an SSH fleet's host (dstack's `RemoteConnectionInfo`): stored with
/// the instance, encrypted, since `ssh_keys` holds private keys. Never sent to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConnectionInfo {
    pub host: String,
    pub port: i64,
    pub ssh_user: String,
    pub ssh_keys: Vec<dstack_model::fleet::SshKey>,
    #[serde(default)]
    pub ssh_proxy: Option<crate::runs::SshConnectionParams>,
    #[serde(default)]
    pub ssh_proxy_keys: Option<Vec<dstack_model::fleet::SshKey>>,
    #[serde(default)]
    pub env: dstack_model::env::Env,
}

/// `POST /api/instances/list` (not project-scoped); answered with `[Instance]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListInstancesRequest {
    pub project_names: Option<Vec<String>>,
    pub fleet_ids: Option<Vec<Uuid>>,
    pub only_active: bool,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub prev_created_at: Option<Timestamp>,
    pub prev_id: Option<Uuid>,
    pub limit: i64,
    pub ascending: bool,
}

impl Default for ListInstancesRequest {
    fn default() -> ListInstancesRequest {
        ListInstancesRequest {
            project_names: None,
            fleet_ids: None,
            only_active: false,
            prev_created_at: None,
            prev_id: None,
            limit: 1000,
            ascending: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured `fleets/apply` answer of api.md §3.7, one instance.
    pub(crate) const FLEET: &str = r#"{"id":"b9769d0a-7d8e-4b8e-9a55-0d7c2f1c3a10","name":"sshf","project_name":"main","spec":{"configuration":{"type":"fleet","name":"sshf","placement":"any",
 "blocks":1,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,
 "instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,
 "ssh_config":{"user":"ubuntu","port":null,"identity_file":"~/.ssh/fleet_key","ssh_key":null,"proxy_jump":null,
 "hosts":["127.0.0.1"],"network":null},"env":{}},"configuration_path":"fleet.yml",
 "profile":{"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"reservation":null,"spot_policy":null,"retry":null,"max_duration":null,"stop_duration":null,"max_price":null,"creation_policy":null,"idle_duration":null,"utilization_policy":null,"startup_order":null,"stop_criteria":null,"schedule":null,"fleets":null,"instances":null,"tags":null,"backend_options":null,"name":"default","default":false},"autocreated":false},
 "created_at":"2026-11-23T08:25:56.840967Z","status":"active","status_message":null,
 "instances":[{"id":"eda286bb-1111-4222-8333-444455556666","project_name":"main","backend":"remote","instance_type":{"name":"ssh","resources":{"cpus":2,
 "memory_mib":8,"gpus":[],"spot":false,"disk":{"size_mib":102400},"cpu_arch":null,"description":""}},"name":"sshf-0",
 "fleet_id":"b9769d0a-7d8e-4b8e-9a55-0d7c2f1c3a10","fleet_name":"sshf","instance_num":0,"job_name":null,"hostname":"127.0.0.1","status":"pending",
 "unreachable":false,"health_status":"healthy","termination_reason":null,"termination_reason_message":null,
 "created":"2026-11-23T08:25:56.844490Z","finished_at":null,"region":"remote","availability_zone":null,"price":0.0,
 "total_blocks":1,"busy_blocks":0,"gpu_driver":null}]}"#;

    #[test]
    fn captured_fleet_round_trips() {
        let fleet: Fleet = serde_json::from_str(FLEET).unwrap();
        assert_eq!(fleet.status, FleetStatus::Active);
        assert_eq!(fleet.instances[0].status, InstanceStatus::Pending);
        let again: Fleet = serde_json::from_value(serde_json::to_value(&fleet).unwrap()).unwrap();
        assert_eq!(again, fleet);
        let original: serde_json::Value = serde_json::from_str(FLEET).unwrap();
        assert_eq!(serde_json::to_value(&fleet).unwrap(), original);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut json: serde_json::Value = serde_json::from_str(FLEET).unwrap();
        json["instances"][0]["bogus"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Fleet>(json).is_err());
    }
}
