//! Keeping a running gateway's registrations in sync (spec agents.md §4.7), every pass of the
//! gateways loop: each active service of the gateway's project whose `Run.service` URL is on
//! this gateway is registered, with its ready replicas (running and registered by the probes
//! loop, as the in-server proxy's ready set, [`crate::services::ready_upstreams`]); services
//! and replicas that are gone are unregistered. For a gateway on the server's machine a
//! replica is registered without SSH (our extension of the gateway API): the gateway reaches
//! the replica where the server does (`internal_ip:app_port`). A gateway on an SSH host
//! (`local.ssh`) reaches a replica on an SSH-fleet host through that host's sshd, as the
//! fleet's user with the fleet's key (our `ssh_private_key` of a replica; the fleet's proxy
//! jump as the head proxy), to the port the replica's service port is published on there
//! (`127.0.0.1:<host port>`, where the shim publishes it); a replica on the server's own
//! machine (the `local` fleet) through a reverse tunnel of the server's connection to the
//! gateway host (a port of that host's loopback picked by its sshd, registered as the
//! replica's address there), closed once the replica is no longer ready. Such a tunnel lives
//! as long as the connection: a replica registered with another port than its tunnel's now
//! (by this server before a restart, or before a reconnect that did not get the port back)
//! is registered again (`SshHosts::tunneled_replicas` remembers what this process registered).
//!
//! Each pass also collects the gateway's per-service stats into `AppState::gateway_load`,
//! which the runs loop adds to the in-server proxy's load for the autoscaler.
//! A service's `rate_limits` go with its registration (the gateway enforces them as dstack's
//! nginx does); a registration is not changed while the run lives, so a rolling update that
//! changes them takes effect on the next run of that name.

use std::collections::{BTreeMap, BTreeSet};

use dstack_agent_proto::client::GatewayClient;
use dstack_agent_proto::gateway::{RegisterReplicaRequest, RegisterServiceRequest, Secret, ServiceOptions};
use dstack_api::runs::{RunConfiguration, RunSpec, ServiceSpec};
use dstack_db::{GatewayRow, JobRow, RunFilter};
use dstack_hostssh::Connection;

use crate::state::{AppState, lock};

/// dstack's default `client_max_body_size` of a gateway service (64 MiB).
const CLIENT_MAX_BODY_SIZE: u64 = 64 * 1024 * 1024;

/// Syncs `gateway` through `client`; `remote` is the connection to its host when it runs on
/// one (`local.ssh`).
pub(crate) async fn sync(
    state: &AppState,
    gateway: &GatewayRow,
    client: &GatewayClient,
    remote: Option<&Connection>,
) {
    if let Err(e) = try_sync(state, gateway, client, remote).await {
        tracing::warn!(gateway = %gateway.name, error = %e, "gateway sync");
    }
}

/// The URL prefix of services on `gateway` for `run`, as `services::service_spec` writes it.
fn on_gateway(url: &str, run_name: &str, domain: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    rest.and_then(|r| r.strip_prefix(run_name))
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.strip_prefix(domain))
        .is_some_and(|r| r.is_empty() || r.starts_with(':'))
}

async fn try_sync(
    state: &AppState,
    gateway: &GatewayRow,
    client: &GatewayClient,
    remote: Option<&Connection>,
) -> Result<(), String> {
    let projects = state.db.list_projects().await.map_err(|e| e.to_string())?;
    let Some(project) = projects.into_iter().find(|p| p.id == gateway.project_id) else { return Ok(()) };
    let domain = gateway.wildcard_domain.as_deref().unwrap_or_default().trim_start_matches("*.");
    let domain = domain.replace("${{ run.project_name }}", &project.name);
    let filter = RunFilter {
        project_id: project.id,
        user_id: None,
        repo_id: None,
        only_active: true,
        prev: None,
        limit: 1000,
        ascending: true,
    };
    let runs = state.db.list_runs(&filter).await.map_err(|e| e.to_string())?;
    let listed = client.list_services().await.map_err(|e| e.to_string())?;
    let mut registered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ids: BTreeMap<String, Option<String>> = BTreeMap::new();
    for s in listed.services.into_iter().filter(|s| s.project_name == project.name) {
        ids.insert(s.run_name.clone(), s.id);
        registered.insert(s.run_name, s.replicas.into_iter().map(|r| r.id).collect());
    }
    let mut wanted = BTreeSet::new();
    // The host ports of the reverse tunnels to this server's ready local replicas.
    let mut tunnels: BTreeSet<u16> = BTreeSet::new();
    let mut run_ids: BTreeMap<String, String> = BTreeMap::new();
    for listing in runs {
        let run = &listing.run;
        let Some(service) =
            run.service_spec.as_deref().and_then(|s| serde_json::from_str::<ServiceSpec>(s).ok())
        else {
            continue;
        };
        if domain.is_empty() || !on_gateway(&service.url, &run.run_name, &domain) {
            continue;
        }
        let Ok(spec) = serde_json::from_str::<RunSpec>(&run.run_spec) else { continue };
        let RunConfiguration::Service(conf) = &spec.configuration else { continue };
        wanted.insert(run.run_name.clone());
        run_ids.insert(run.run_name.clone(), run.id.to_string());
        let run_id = run.id.simple().to_string();
        if ids.get(&run.run_name).is_some_and(|id| id.as_ref().is_some_and(|id| *id != run_id)) {
            // An earlier run of the same name: replace its registration.
            client.unregister_service(&project.name, &run.run_name).await.map_err(|e| e.to_string())?;
            registered.remove(&run.run_name);
        }
        let current = match registered.get(&run.run_name) {
            Some(replicas) => replicas.clone(),
            None => {
                let options: ServiceOptions =
                    serde_json::from_value(serde_json::Value::Object(service.options.clone()))
                        .unwrap_or_default();
                let body = RegisterServiceRequest {
                    id: Some(run_id.clone()),
                    run_name: run.run_name.clone(),
                    domain: format!("{}.{domain}", run.run_name),
                    https: service.url.starts_with("https://"),
                    auth: conf.auth,
                    client_max_body_size: CLIENT_MAX_BODY_SIZE,
                    options,
                    ssh_private_key: Secret(String::new()),
                    rate_limits: conf.rate_limits.iter().map(rate_limit).collect(),
                    has_router_replica: false,
                    read_timeout: dstack_agent_proto::gateway::DEFAULT_READ_TIMEOUT,
                };
                client.register_service(&project.name, &body).await.map_err(|e| e.to_string())?;
                tracing::info!(gateway = %gateway.name, run = %run.run_name, "service registered on the gateway");
                BTreeSet::new()
            }
        };
        let replicas = match remote {
            None => direct_replicas(state, run.id, conf.port.container_port).await?,
            Some(conn) => ssh_replicas(state, conn, run.id, conf.port.container_port, &mut tunnels).await?,
        };
        let ready: BTreeSet<String> = replicas.iter().map(|r| r.job_id.clone()).collect();
        for body in &replicas {
            // A replica behind a reverse tunnel is registered with the tunnel's port, which
            // lives as long as this process's connection: one registered by an earlier server
            // process, or with a port the host did not give back after a reconnect, names a
            // port nobody listens on any more, so it is registered again.
            let tunneled = remote.is_some() && body.ssh_host.is_empty();
            if current.contains(&body.job_id) {
                if !tunneled || tunneled_port(state, gateway, &body.job_id) == Some(body.app_port) {
                    continue;
                }
                client
                    .unregister_replica(&project.name, &run.run_name, &body.job_id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            client.register_replica(&project.name, &run.run_name, body).await.map_err(|e| e.to_string())?;
            if tunneled {
                let mut known = lock(&state.ssh.tunneled_replicas);
                known.entry(gateway.id).or_default().insert(body.job_id.clone(), body.app_port);
            }
        }
        for gone in current.difference(&ready) {
            client.unregister_replica(&project.name, &run.run_name, gone).await.map_err(|e| e.to_string())?;
        }
    }
    // The gateway's load per service, for the autoscaler (by run id, as the proxy's).
    if let Ok(stats) = client.collect_stats().await {
        for s in stats.into_iter().filter(|s| s.project_name == project.name) {
            if let Some(run_id) = run_ids.get(&s.run_name) {
                state.gateway_load.set(run_id, s.stats);
            }
        }
    }
    for run_name in registered.keys().filter(|r| !wanted.contains(*r)) {
        client.unregister_service(&project.name, run_name).await.map_err(|e| e.to_string())?;
        tracing::info!(gateway = %gateway.name, run = %run_name, "service unregistered from the gateway");
    }
    if let Some(conn) = remote {
        if let Some(known) = lock(&state.ssh.tunneled_replicas).get_mut(&gateway.id) {
            known.retain(|_, port| tunnels.contains(port));
        }
        conn.retain_reverse(|port| port == dstack_hostssh::GATEWAY_SERVER_PORT || tunnels.contains(&port))
            .await;
    }
    Ok(())
}

/// The tunnel port this process registered `job_id` with on `gateway`, if it did.
fn tunneled_port(state: &AppState, gateway: &GatewayRow, job_id: &str) -> Option<u16> {
    lock(&state.ssh.tunneled_replicas).get(&gateway.id)?.get(job_id).copied()
}

/// A service's rate limit as the gateway API carries it.
fn rate_limit(limit: &dstack_model::service::RateLimit) -> dstack_agent_proto::gateway::RateLimit {
    use dstack_agent_proto::gateway::RateLimitKey;
    use dstack_model::service::PartitioningKey;
    dstack_agent_proto::gateway::RateLimit {
        prefix: limit.prefix.clone(),
        key: match &limit.key {
            PartitioningKey::IpAddress => RateLimitKey::IpAddress,
            PartitioningKey::Header { header } => RateLimitKey::Header { header: header.clone() },
        },
        rps: limit.rps,
        burst: u64::try_from(limit.burst).unwrap_or(0),
    }
}

fn replica(job_id: String, app_port: u16) -> RegisterReplicaRequest {
    RegisterReplicaRequest {
        job_id,
        app_port,
        ssh_host: String::new(),
        ssh_port: 0,
        ssh_proxy: None,
        ssh_proxy_private_key: None,
        ssh_head_proxy: None,
        ssh_head_proxy_private_key: None,
        internal_ip: None,
        ssh_private_key: None,
    }
}

/// The ready replicas as a gateway on the server's machine reaches them: where the server does.
async fn direct_replicas(
    state: &AppState,
    run_id: uuid::Uuid,
    service_port: i64,
) -> Result<Vec<RegisterReplicaRequest>, String> {
    let upstreams =
        crate::services::ready_upstreams(state, run_id, service_port).await.map_err(|e| format!("{e:?}"))?;
    Ok(upstreams
        .into_iter()
        .map(|u| RegisterReplicaRequest {
            internal_ip: Some(u.addr.ip().to_string()),
            ..replica(u.id, u.addr.port())
        })
        .collect())
}

/// The ready replicas as a gateway on an SSH host reaches them: through the sshd of their
/// SSH-fleet host, or through a reverse tunnel of `conn` (the server's connection to the
/// gateway host) when they run on the server's own machine; the tunnels' host ports are added
/// to `tunnels`.
async fn ssh_replicas(
    state: &AppState,
    conn: &Connection,
    run_id: uuid::Uuid,
    service_port: i64,
    tunnels: &mut BTreeSet<u16>,
) -> Result<Vec<RegisterReplicaRequest>, String> {
    let jobs = crate::services::ready_replicas(state, run_id).await.map_err(|e| format!("{e:?}"))?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let key = format!("gateway replica {}", job.id);
        match ssh_replica(state, conn, job, service_port, tunnels).await {
            Ok(body) => {
                state.ssh.repeats.clear(&key);
                out.push(body);
            }
            Err(e) if state.ssh.repeats.is_new(&key, &e) => {
                tracing::warn!(job = %job.job_name, error = %e, "replica left off the gateway");
            }
            Err(e) => tracing::debug!(job = %job.job_name, error = %e, "replica still left off the gateway"),
        }
    }
    Ok(out)
}

async fn ssh_replica(
    state: &AppState,
    conn: &Connection,
    job: &JobRow,
    service_port: i64,
    tunnels: &mut BTreeSet<u16>,
) -> Result<RegisterReplicaRequest, String> {
    let app_port = crate::services::published_port(job, Some(service_port))?;
    let instance_id = job.instance_id.ok_or("the job has no instance")?;
    let instance = state
        .db
        .instance_by_id(instance_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the job's instance is gone")?;
    let Some(rci) = crate::fleets::remote_connection_info(&instance, &state.cipher) else {
        // On the server's own machine: where the server reaches it, through a reverse tunnel.
        let addr = crate::services::replica_addr(state, job, Some(service_port)).await?;
        let port = conn.reverse_forward_any(addr).await.map_err(|e| e.to_string())?;
        tunnels.insert(port);
        return Ok(RegisterReplicaRequest {
            internal_ip: Some("127.0.0.1".to_owned()),
            ..replica(job.id.to_string(), port)
        });
    };
    let private =
        |keys: &[dstack_model::fleet::SshKey]| keys.iter().find_map(|k| k.private.clone()).map(Secret);
    let key = private(&rci.ssh_keys).ok_or_else(|| format!("{}: the fleet has no private key", rci.host))?;
    let port = crate::ssh_hosts::port(rci.port, &rci.host)?;
    let head = match &rci.ssh_proxy {
        None => None,
        Some(p) => Some((
            dstack_agent_proto::gateway::SshConnectionParams {
                hostname: p.hostname.clone(),
                username: p.username.clone(),
                port: crate::ssh_hosts::port(p.port, &p.hostname)?,
            },
            private(rci.ssh_proxy_keys.as_deref().unwrap_or_default())
                .ok_or_else(|| format!("{}: the proxy jump has no private key", rci.host))?,
        )),
    };
    let (ssh_head_proxy, ssh_head_proxy_private_key) = head.unzip();
    Ok(RegisterReplicaRequest {
        ssh_host: format!("{}@{}", rci.ssh_user, rci.host),
        ssh_port: port,
        ssh_head_proxy,
        ssh_head_proxy_private_key,
        ssh_private_key: Some(key),
        ..replica(job.id.to_string(), app_port)
    })
}

#[cfg(test)]
mod tests {
    use super::on_gateway;

    #[test]
    fn service_urls_on_a_gateway() {
        assert!(on_gateway("http://svc.gw.example:8080", "svc", "gw.example"));
        assert!(on_gateway("https://svc.gw.example", "svc", "gw.example"));
        assert!(!on_gateway("https://svc.gw.example.org", "svc", "gw.example"));
        assert!(!on_gateway("/proxy/services/main/svc/", "svc", "gw.example"));
        assert!(!on_gateway("http://svc2.gw.example", "svc", "gw.example"));
    }
}
