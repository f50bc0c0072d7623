//! Fleets as dstack 0.22.5 keeps them: the server-side checks of a submitted spec, the rows a
//! new fleet or host gets and what clients are shown (never a private key). SSH hosts are
//! deployed, checked and given back by the instances loop (`pipelines/instances.rs`).

use dstack_api::ApiError;
use dstack_api::fleets::{
    Fleet, FleetSpec, FleetStatus, HealthStatus, Instance, InstanceStatus, RemoteConnectionInfo,
};
use dstack_api::runs::{
    Disk, InstanceAvailability, InstanceOfferWithAvailability, InstanceRuntime, InstanceType,
    JobProvisioningData, Resources, SshConnectionParams,
};
use dstack_db::{FleetRow, InstanceRow, ProjectRow};
use dstack_model::common::BackendType;
use dstack_model::fleet::{Blocks, SshHost, SshKey, SshParams};
use uuid::Uuid;

use crate::crypto::Cipher;
use crate::state::AppState;

/// dstack's `_validate_fleet_spec_and_set_defaults`: the model's static checks, then the
/// keys the CLI must have read from every `identity_file`. The first failure, as dstack
/// words it.
pub fn validate_spec(spec: &FleetSpec) -> Result<(), ApiError> {
    let conf = &spec.configuration;
    if let Some(first) = conf.static_checks().into_iter().next() {
        return Err(ApiError::error(first));
    }
    let Some(ssh) = &conf.ssh_config else { return Ok(()) };
    for host in &ssh.hosts {
        let host_key = match host {
            SshHost::Name(_) => None,
            SshHost::Params(p) => p.ssh_key.as_ref(),
        };
        if ssh.ssh_key.is_none() && host_key.is_none() {
            return Err(ApiError::error(format!("No ssh key specified for host {}", host.hostname())));
        }
    }
    let mut keys: Vec<&SshKey> = ssh.ssh_key.iter().collect();
    for host in &ssh.hosts {
        if let SshHost::Params(p) = host {
            keys.extend(p.ssh_key.as_ref());
        }
    }
    for key in keys {
        let Some(private) = &key.private else {
            return Err(ApiError::error("Private key not provided"));
        };
        if !crate::crypto::is_usable_private_key(private) {
            return Err(ApiError::error(
                "Unsupported key type. The key type should be RSA, ECDSA, or Ed25519 and should not be \
                 encrypted with passphrase.",
            ));
        }
    }
    Ok(())
}

/// dstack's `_remove_fleet_spec_sensitive_info`: the spec without SSH keys (the proxy jump
/// keys stay, as in dstack).
pub fn strip_keys(spec: &mut FleetSpec) {
    if let Some(ssh) = &mut spec.configuration.ssh_config {
        ssh.ssh_key = None;
        for host in &mut ssh.hosts {
            if let SshHost::Params(p) = host {
                p.ssh_key = None;
            }
        }
    }
}

/// Whether `spec` holds anything [`strip_keys`] removes (or a proxy key).
fn has_keys(spec: &FleetSpec) -> bool {
    spec.configuration.ssh_config.is_some()
}

/// The stored (stripped) spec and, for SSH fleets, the full one encrypted.
pub fn stored_specs(spec: &FleetSpec, cipher: &Cipher) -> Result<(String, Option<String>), ApiError> {
    let mut stripped = spec.clone();
    strip_keys(&mut stripped);
    let json = serde_json::to_string(&stripped).map_err(|_| ApiError::Internal)?;
    let sensitive = if has_keys(spec) {
        Some(cipher.encrypt(&serde_json::to_string(spec).map_err(|_| ApiError::Internal)?))
    } else {
        None
    };
    Ok((json, sensitive))
}

/// The fleet's spec as submitted (keys included) when the server has it, else the stored one.
pub fn sensitive_spec(fleet: &FleetRow, cipher: &Cipher) -> Result<FleetSpec, ApiError> {
    let text = match &fleet.sensitive_spec {
        Some(enc) => cipher.decrypt(enc).ok_or_else(|| {
            tracing::error!(fleet = %fleet.name, "the fleet's stored spec does not decrypt");
            ApiError::Internal
        })?,
        None => fleet.spec.clone(),
    };
    serde_json::from_str(&text).map_err(|e| {
        tracing::error!(fleet = %fleet.name, error = %e, "stored fleet spec does not parse");
        ApiError::Internal
    })
}

/// An SSH instance's connection data, decrypted.
pub fn remote_connection_info(i: &InstanceRow, cipher: &Cipher) -> Option<RemoteConnectionInfo> {
    let enc = i.remote_connection_info.as_ref()?;
    let text = cipher.decrypt(enc)?;
    serde_json::from_str(&text).ok()
}

/// Where a new instance goes: its fleet, its number, when.
#[derive(Debug, Clone, Copy)]
pub struct InstanceSlot<'a> {
    pub project_id: Uuid,
    pub fleet_id: Uuid,
    pub fleet_name: &'a str,
    pub num: i64,
    pub now: jiff::Timestamp,
}

/// A new row for host `host` of an SSH fleet (dstack's `create_fleet_ssh_instance_model`):
/// `pending`, placeholder resources until the host is seen, the connection data encrypted.
pub fn ssh_instance_row(
    slot: &InstanceSlot<'_>,
    spec: &FleetSpec,
    ssh: &SshParams,
    host: &SshHost,
    cipher: &Cipher,
) -> Result<InstanceRow, ApiError> {
    let InstanceSlot { project_id, fleet_id, fleet_name, num, now } = *slot;
    let mut blocks = spec.configuration.blocks;
    let (hostname, user, key, port, proxy, internal_ip) = match host {
        SshHost::Name(h) => {
            (h.clone(), ssh.user.clone(), ssh.ssh_key.clone(), ssh.port, ssh.proxy_jump.clone(), None)
        }
        SshHost::Params(p) => {
            if let Some(b) = p.blocks {
                blocks = b;
            }
            (
                p.hostname.clone(),
                p.user.clone().or_else(|| ssh.user.clone()),
                p.ssh_key.clone().or_else(|| ssh.ssh_key.clone()),
                p.port.or(ssh.port),
                p.proxy_jump.clone().or_else(|| ssh.proxy_jump.clone()),
                p.internal_ip.clone(),
            )
        }
    };
    let (Some(user), Some(key)) = (user, key) else {
        return Err(ApiError::error("ssh key or user not specified"));
    };
    let port = port.unwrap_or(22);
    let (ssh_proxy, ssh_proxy_keys) = match proxy {
        Some(p) => (
            Some(SshConnectionParams { hostname: p.hostname, username: p.user, port: p.port.unwrap_or(22) }),
            Some(p.ssh_key.into_iter().collect::<Vec<_>>()),
        ),
        None => (None, None),
    };
    let name = format!("{fleet_name}-{num}");
    let instance = InstanceType {
        name: "ssh".to_owned(),
        resources: Resources {
            cpus: 2,
            memory_mib: 8,
            gpus: Vec::new(),
            spot: false,
            disk: Disk::default(),
            cpu_arch: None,
            description: String::new(),
        },
    };
    let jpd = JobProvisioningData {
        backend: BackendType::Remote,
        base_backend: None,
        instance_type: instance.clone(),
        instance_id: name.clone(),
        hostname: Some(hostname.clone()),
        internal_ip,
        public_ip_enabled: true,
        instance_network: ssh.network.clone(),
        region: "remote".to_owned(),
        availability_zone: None,
        reservation: None,
        price: 0.0,
        username: user.clone(),
        ssh_port: Some(port),
        dockerized: true,
        ssh_proxy: None,
        backend_data: Some(String::new()),
        gpu_driver: None,
    };
    let offer = crate::fleets::remote_offer(instance, "remote".to_owned());
    let rci = RemoteConnectionInfo {
        host: hostname,
        port,
        ssh_user: user,
        ssh_keys: vec![key],
        ssh_proxy,
        ssh_proxy_keys,
        env: spec.configuration.env.clone(),
    };
    let json = |v: serde_json::Result<String>| v.map_err(|_| ApiError::Internal);
    let pending = InstanceStatus::Pending.as_str();
    Ok(InstanceRow {
        offer: Some(json(serde_json::to_string(&offer))?),
        job_provisioning_data: Some(json(serde_json::to_string(&jpd))?),
        remote_connection_info: Some(cipher.encrypt(&json(serde_json::to_string(&rci))?)),
        total_blocks: blocks_count(blocks),
        ..InstanceRow::new(project_id, fleet_id, fleet_name, num, pending, now)
    })
}

/// What a host of ours offers: all of it, at no price, through its shim (`blocks` 1 of 1
/// until the jobs loop shares it out).
pub(crate) fn remote_offer(instance: InstanceType, region: String) -> InstanceOfferWithAvailability {
    InstanceOfferWithAvailability {
        backend: BackendType::Remote,
        instance,
        region,
        price: 0.0,
        backend_data: Default::default(),
        availability: InstanceAvailability::Available,
        availability_zones: None,
        instance_runtime: InstanceRuntime::Shim,
        blocks: 1,
        total_blocks: 1,
    }
}

/// A new `pending` instance of a backend fleet (no offer until provisioned).
pub fn cloud_instance_row(slot: &InstanceSlot<'_>, blocks: Blocks) -> InstanceRow {
    let InstanceSlot { project_id, fleet_id, fleet_name, num, now } = *slot;
    InstanceRow {
        total_blocks: blocks_count(blocks),
        ..InstanceRow::new(project_id, fleet_id, fleet_name, num, InstanceStatus::Pending.as_str(), now)
    }
}

fn blocks_count(blocks: Blocks) -> Option<i64> {
    match blocks {
        Blocks::Auto => None,
        Blocks::Count(n) => Some(n),
    }
}

/// The run statuses dstack counts as finished.
pub const FINISHED_RUN_STATUSES: &[&str] = &["terminated", "failed", "done"];

pub async fn instance_snapshots(
    state: &AppState,
    instances: &[InstanceRow],
) -> Result<Vec<dstack_decide::fleet::InstanceSnapshot>, dstack_db::DbError> {
    let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
    let busy = state.db.instances_with_jobs(&ids).await?;
    Ok(instances
        .iter()
        .map(|i| dstack_decide::fleet::InstanceSnapshot {
            id: i.id,
            instance_num: i.instance_num,
            status: InstanceStatus::from_wire(&i.status).unwrap_or(InstanceStatus::Idle),
            ssh: i.remote_connection_info.is_some(),
            has_jobs: busy.contains(&i.id),
        })
        .collect())
}

/// A fleet in dstack's shape (spec without keys).
pub fn fleet_to_wire(
    fleet: &FleetRow,
    instances: &[&InstanceRow],
    project: &ProjectRow,
) -> Result<Fleet, ApiError> {
    let mut spec: FleetSpec = serde_json::from_str(&fleet.spec).map_err(|e| {
        tracing::error!(fleet = %fleet.name, error = %e, "stored fleet spec does not parse");
        ApiError::Internal
    })?;
    strip_keys(&mut spec);
    let instances =
        instances.iter().map(|i| instance_to_wire(i, fleet, project)).collect::<Result<Vec<_>, _>>()?;
    Ok(Fleet {
        id: fleet.id,
        name: fleet.name.clone(),
        project_name: project.name.clone(),
        spec,
        created_at: fleet.created_at,
        status: FleetStatus::from_wire(&fleet.status).unwrap_or(FleetStatus::Active),
        status_message: fleet.status_message.clone(),
        instances,
    })
}

/// An instance in dstack's shape (`instance_model_to_instance`).
pub fn instance_to_wire(
    i: &InstanceRow,
    fleet: &FleetRow,
    project: &ProjectRow,
) -> Result<Instance, ApiError> {
    let parse_err = |e: serde_json::Error| {
        tracing::error!(instance = %i.name, error = %e, "stored instance data does not parse");
        ApiError::Internal
    };
    let jpd: Option<JobProvisioningData> =
        i.job_provisioning_data.as_deref().map(serde_json::from_str).transpose().map_err(parse_err)?;
    let offer: Option<InstanceOfferWithAvailability> =
        i.offer.as_deref().map(serde_json::from_str).transpose().map_err(parse_err)?;
    let status = InstanceStatus::from_wire(&i.status).unwrap_or(InstanceStatus::Idle);
    Ok(Instance {
        id: i.id,
        project_name: project.name.clone(),
        backend: offer.as_ref().map(|o| o.backend),
        instance_type: jpd.as_ref().map(|j| j.instance_type.clone()),
        name: i.name.clone(),
        fleet_id: Some(fleet.id),
        fleet_name: Some(fleet.name.clone()),
        instance_num: i.instance_num,
        job_name: None,
        hostname: jpd.as_ref().and_then(|j| j.hostname.clone()),
        status,
        unreachable: (i.unreachable || i.agent_url.is_none())
            && matches!(status, InstanceStatus::Idle | InstanceStatus::Busy),
        health_status: HealthStatus::Healthy,
        termination_reason: i.termination_reason.clone(),
        termination_reason_message: i.termination_reason_message.clone(),
        created: i.created_at,
        finished_at: i.finished_at,
        region: offer.as_ref().map(|o| o.region.clone()),
        availability_zone: jpd.as_ref().and_then(|j| j.availability_zone.clone()),
        price: offer.as_ref().map(|o| o.price),
        total_blocks: i.total_blocks,
        busy_blocks: i.busy_blocks,
        gpu_driver: jpd.and_then(|j| j.gpu_driver),
    })
}
