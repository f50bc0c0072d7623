//! `/api/project/{p}/gateways/*`, as dstack 0.22.5's `services/gateways`: members (or anyone,
//! for a public project) list and get; project admins plan, apply, create, delete and set the
//! default or the wildcard domain. A gateway is recorded `submitted`; the gateways loop
//! (`pipelines/gateways.rs`) starts and supervises it.
//!
//! Ours: only `backend: local` gateways are served (the server's own machine); every dstack
//! backend is refused as dstack refuses a backend the project has not configured.

use axum::extract::State;
use dstack_api::gateways::{
    ApplyGatewayPlanRequest, CreateGatewayRequest, DeleteGatewaysRequest, Gateway, GatewayPlan,
    GatewayReplica, GatewayReplicaStatus, GatewaySpec, GatewayStatus, GetGatewayPlanRequest,
    GetGatewayRequest, ListGatewaysRequest, SetDefaultGatewayRequest, SetWildcardDomainRequest,
};
use dstack_api::runs::ApplyAction;
use dstack_api::{ApiError, ErrorCode};
use dstack_db::{GatewayRow, ProjectRow};
use dstack_model::gateway::{GatewayBackend, GatewayConfiguration};

use super::{Body, Failure, Json, OptBody, null};
use crate::auth::{Admin, MemberOrPublic, ProjectAccess};
use crate::state::AppState;

/// The configuration fields an apply may change in place (dstack's `_CONF_UPDATABLE_FIELDS`).
const UPDATABLE_FIELDS: &[&str] = &["domain", "default", "replicas"];

/// The configuration as stored: a `local.ssh` key's private part is encrypted.
pub(crate) fn stored_configuration(row: &GatewayRow) -> Result<GatewayConfiguration, Failure> {
    serde_json::from_str(&row.configuration).map_err(|e| {
        tracing::error!(gateway = %row.name, error = %e, "stored gateway configuration does not parse");
        Failure(ApiError::Internal)
    })
}

/// The configuration as the API shows it: without the private key of `local.ssh`.
pub(crate) fn configuration(row: &GatewayRow) -> Result<GatewayConfiguration, Failure> {
    Ok(without_private_key(stored_configuration(row)?))
}

/// The key of a `local.ssh` gateway's host, if there is one.
fn ssh_key_mut(conf: &mut GatewayConfiguration) -> Option<&mut dstack_model::fleet::SshKey> {
    conf.local.as_mut().and_then(|l| l.ssh.as_mut()).and_then(|s| s.ssh_key.as_mut())
}

fn without_private_key(mut conf: GatewayConfiguration) -> GatewayConfiguration {
    if let Some(key) = ssh_key_mut(&mut conf) {
        key.private = None;
    }
    conf
}

/// The JSON to store: `conf` with its `local.ssh` private key encrypted.
fn to_stored_json(state: &AppState, mut conf: GatewayConfiguration) -> Result<String, Failure> {
    if let Some(key) = ssh_key_mut(&mut conf) {
        key.private = key.private.as_deref().map(|p| state.cipher.encrypt(p));
    }
    serde_json::to_string(&conf).map_err(|_| Failure(ApiError::Internal))
}

/// A `local.ssh` gateway needs the private key (the CLI reads `identity_file` into
/// `ssh_key`), in a format the server reads; the error never quotes the key.
fn check_ssh_key(configuration: &GatewayConfiguration) -> Result<(), Failure> {
    let Some(ssh) = configuration.local.as_ref().and_then(|l| l.ssh.as_ref()) else { return Ok(()) };
    let Some(private) = ssh.ssh_key.as_ref().and_then(|k| k.private.as_deref()) else {
        return Err(ApiError::error(
            "`local.ssh` needs `ssh_key.private`: the private key the server connects with (`dstack apply` reads `identity_file` into it)",
        )
        .into());
    };
    dstack_hostssh::parse_private_key(private, "of `local.ssh`")
        .map_err(|e| Failure(ApiError::error(e.to_string())))?;
    Ok(())
}

pub(crate) fn to_wire(project: &ProjectRow, row: &GatewayRow) -> Result<Gateway, Failure> {
    let configuration = configuration(row)?;
    let status = GatewayStatus::from_wire(&row.status).unwrap_or(GatewayStatus::Failed);
    let replica_status = match status {
        GatewayStatus::Submitted => GatewayReplicaStatus::Submitted,
        GatewayStatus::Provisioning => GatewayReplicaStatus::Provisioning,
        GatewayStatus::Running => GatewayReplicaStatus::Running,
        GatewayStatus::Failed => GatewayReplicaStatus::Terminated,
    };
    let hostname = configuration
        .local
        .as_ref()
        .map(|l| l.ssh.as_ref().map_or_else(|| l.host.clone(), |ssh| ssh.hostname.clone()));
    let replica = GatewayReplica {
        hostname,
        replica_num: 0,
        backend: None,
        region: Some(configuration.region.clone()),
        created_at: row.created_at,
        status: replica_status,
        status_message: row.status_message.clone(),
    };
    Ok(Gateway {
        id: row.id,
        name: row.name.clone(),
        project_name: project.name.clone(),
        configuration,
        created_at: row.created_at,
        status,
        status_message: row.status_message.clone(),
        hostname: None,
        wildcard_domain: row.wildcard_domain.clone(),
        default: row.is_default,
        replicas: vec![replica],
        backend: None,
        region: None,
        ip_address: None,
        instance_id: None,
    })
}

/// dstack's `_validate_gateway_configuration`: the first failing check is the error.
fn validate(configuration: &GatewayConfiguration) -> Result<(), Failure> {
    match configuration.static_checks().into_iter().next() {
        Some(msg) => Err(ApiError::error(msg).into()),
        None => Ok(()),
    }
}

/// Creating needs the backend configured in the project: only `local` is, here.
fn check_backend(configuration: &GatewayConfiguration) -> Result<(), Failure> {
    match configuration.backend {
        GatewayBackend::Local => Ok(()),
        GatewayBackend::Backend(_) => Err(ApiError::Client {
            code: ErrorCode::BackendNotAvailable,
            msg: "Backend not available".to_owned(),
        }
        .into()),
    }
}

/// Whether only the in-place updatable fields differ.
fn can_update_in_place(current: &GatewayConfiguration, new: &GatewayConfiguration) -> bool {
    let strip = |c: &GatewayConfiguration| {
        let mut v = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
        if let Some(map) = v.as_object_mut() {
            for field in UPDATABLE_FIELDS {
                map.remove(*field);
            }
        }
        v
    };
    strip(current) == strip(new)
}

fn being_deleted(name: &str) -> Failure {
    ApiError::error(format!("Gateway '{name}' is being deleted. Try again later.")).into()
}

fn failed_cannot_update(name: &str) -> Failure {
    ApiError::error(format!(
        "Gateway '{name}' is in FAILED status and cannot be updated in-place. Delete it and re-apply."
    ))
    .into()
}

pub(super) async fn list(
    State(state): State<AppState>,
    access: ProjectAccess<MemberOrPublic>,
    OptBody(req): OptBody<ListGatewaysRequest>,
) -> Result<Json<Vec<Gateway>>, Failure> {
    let _ = req.include_imported;
    let rows = state.db.list_gateways(access.project.id).await?;
    let gateways = rows.iter().map(|r| to_wire(&access.project, r)).collect::<Result<_, _>>()?;
    Ok(Json(gateways))
}

pub(super) async fn get(
    State(state): State<AppState>,
    access: ProjectAccess<MemberOrPublic>,
    Body(req): Body<GetGatewayRequest>,
) -> Result<Json<Gateway>, Failure> {
    let row = existing(&state, &access.project, &req.name).await?;
    Ok(Json(to_wire(&access.project, &row)?))
}

pub(super) async fn get_plan(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<GetGatewayPlanRequest>,
) -> Result<Json<GatewayPlan>, Failure> {
    let configuration = &req.spec.configuration;
    validate(configuration)?;
    let mut action = ApplyAction::Create;
    let mut current_resource = None;
    if let Some(name) = &configuration.name
        && let Some(row) = state.db.gateway_by_name(access.project.id, name).await?
    {
        if row.to_be_deleted {
            return Err(being_deleted(name));
        }
        if row.status == GatewayStatus::Failed.as_str() {
            return Err(failed_cannot_update(name));
        }
        let current = to_wire(&access.project, &row)?;
        if can_update_in_place(&current.configuration, &without_private_key(configuration.clone())) {
            action = ApplyAction::Update;
        }
        current_resource = Some(current);
    }
    Ok(Json(GatewayPlan {
        project_name: access.project.name.clone(),
        user: access.caller.user.name.clone(),
        spec: req.spec.clone(),
        effective_spec: req.spec,
        current_resource,
        action,
    }))
}

pub(super) async fn apply(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<ApplyGatewayPlanRequest>,
) -> Result<Json<Gateway>, Failure> {
    let new = req.plan.spec.configuration;
    validate(&new)?;
    let Some(name) = new.name.clone() else {
        return Ok(Json(create(&state, &access.project, new).await?));
    };
    let Some(row) = state.db.gateway_by_name(access.project.id, &name).await? else {
        return Ok(Json(create(&state, &access.project, new).await?));
    };
    if row.to_be_deleted {
        return Err(being_deleted(&name));
    }
    if row.status == GatewayStatus::Failed.as_str() {
        return Err(failed_cannot_update(&name));
    }
    let current = configuration(&row)?;
    if !req.force {
        let matches =
            req.plan.current_resource.as_ref().is_some_and(|c| c.id == row.id && c.configuration == current);
        if !matches {
            return Err(ApiError::error(
                "Failed to apply plan. Resource has been changed. Try again or use force apply.",
            )
            .into());
        }
    }
    if !can_update_in_place(&current, &without_private_key(new.clone())) {
        return Err(ApiError::error(format!(
            "Gateway '{name}' cannot be updated in-place. Delete it and re-apply."
        ))
        .into());
    }
    // Only the updatable fields change; the stored (encrypted) key stays.
    let mut stored = stored_configuration(&row)?;
    stored.domain = new.domain.clone();
    stored.default = new.default;
    stored.replicas = new.replicas;
    let json = serde_json::to_string(&stored).map_err(|_| Failure(ApiError::Internal))?;
    state.db.update_gateway_configuration(row.id, &json, new.domain.as_deref()).await?;
    match new.default {
        Some(true) => state.db.set_default_gateway(access.project.id, Some(row.id)).await?,
        Some(false) if row.is_default => state.db.set_default_gateway(access.project.id, None).await?,
        _ => {}
    }
    let row = state.db.gateway_by_id(row.id).await?.ok_or(DbGone)?;
    Ok(Json(to_wire(&access.project, &row)?))
}

/// A row that vanished between two queries (deleted meanwhile).
struct DbGone;

impl From<DbGone> for Failure {
    fn from(_: DbGone) -> Failure {
        ApiError::not_exists("Resource not found").into()
    }
}

pub(super) async fn create_route(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<CreateGatewayRequest>,
) -> Result<Json<Gateway>, Failure> {
    validate(&req.configuration)?;
    Ok(Json(create(&state, &access.project, req.configuration).await?))
}

/// dstack's `create_gateway`: a new `submitted` row; it becomes the project's default when
/// `default: true`, or when `default` is unset and the project has no default yet.
async fn create(
    state: &AppState,
    project: &ProjectRow,
    mut configuration: GatewayConfiguration,
) -> Result<Gateway, Failure> {
    check_backend(&configuration)?;
    check_ssh_key(&configuration)?;
    let name = match &configuration.name {
        Some(name) => name.clone(),
        None => {
            let existing = state.db.list_gateways(project.id).await?;
            let mut name = crate::runs::generate_run_name();
            while existing.iter().any(|g| g.name == name) {
                name = crate::runs::generate_run_name();
            }
            name
        }
    };
    configuration.name = Some(name.clone());
    let json = to_stored_json(state, configuration.clone())?;
    let now = jiff::Timestamp::now();
    let row = state.db.insert_gateway(project.id, &name, configuration.domain.as_deref(), &json, now).await?;
    let has_default = state.db.default_gateway(project.id).await?.is_some();
    if configuration.default == Some(true) || (configuration.default.is_none() && !has_default) {
        state.db.set_default_gateway(project.id, Some(row.id)).await?;
    }
    state.hints.gateways.notify_one();
    let row = state.db.gateway_by_id(row.id).await?.ok_or(DbGone)?;
    to_wire(project, &row)
}

pub(super) async fn delete(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<DeleteGatewaysRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    for name in &req.names {
        if let Some(row) = state.db.gateway_by_name(access.project.id, name).await? {
            state.db.mark_gateway_deleted(row.id).await?;
        }
    }
    state.hints.gateways.notify_one();
    Ok(null())
}

pub(super) async fn set_default(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<SetDefaultGatewayRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    if req.gateway_project.as_ref().is_some_and(|p| *p != access.project.name) {
        // Imported gateways (another project's) are not served here.
        return Err(ApiError::not_exists("Resource not found").into());
    }
    let row = existing(&state, &access.project, &req.name).await?;
    if row.to_be_deleted {
        return Err(ApiError::error("Cannot set gateway marked for deletion as default").into());
    }
    state.db.set_default_gateway(access.project.id, Some(row.id)).await?;
    Ok(null())
}

pub(super) async fn set_wildcard_domain(
    State(state): State<AppState>,
    access: ProjectAccess<Admin>,
    Body(req): Body<SetWildcardDomainRequest>,
) -> Result<Json<Gateway>, Failure> {
    let row = existing(&state, &access.project, &req.name).await?;
    if row.wildcard_domain.as_deref() != Some(req.wildcard_domain.as_str()) {
        let mut conf = stored_configuration(&row)?;
        conf.domain = Some(req.wildcard_domain.clone());
        let json = serde_json::to_string(&conf).map_err(|_| Failure(ApiError::Internal))?;
        state.db.update_gateway_configuration(row.id, &json, Some(&req.wildcard_domain)).await?;
    }
    let row = state.db.gateway_by_id(row.id).await?.ok_or(DbGone)?;
    Ok(Json(to_wire(&access.project, &row)?))
}

/// The spec the plan echoes (kept for callers that build plans themselves).
#[allow(dead_code)]
pub(crate) fn spec(configuration: GatewayConfiguration) -> GatewaySpec {
    GatewaySpec { configuration, configuration_path: None }
}

/// The project's gateway `name`, or dstack's "Resource not found".
async fn existing(state: &AppState, project: &ProjectRow, name: &str) -> Result<GatewayRow, Failure> {
    Ok(state
        .db
        .gateway_by_name(project.id, name)
        .await?
        .ok_or_else(|| ApiError::not_exists("Resource not found"))?)
}
