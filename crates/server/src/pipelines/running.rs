//! Active jobs on their hosts: the shim task (provisioning → pulling), the runner job
//! (pulling → running), logs and the end of the job (running → terminating), and the stop of
//! a terminating job. Every call to an agent is idempotent, so a pass repeated after a crash
//! (a task that already exists, a job already submitted) does no harm.

use std::collections::BTreeMap;

use base64::Engine as _;
use dstack_agent_proto::client::{AgentError, RunnerClient, ShimClient};
use dstack_agent_proto::runner::{ClusterInfo, RepoCredentials, SubmitBody, SubmitJobSubmission, SubmitRun};
use dstack_agent_proto::shim::{TaskConfig, TaskStatus, TerminateBody};
use dstack_api::repos::RemoteRepoCreds;
use dstack_api::runs::{
    JobProvisioningData, JobRuntimeData, JobSpec, JobStatus, JobTerminationReason, RunConfiguration, RunSpec,
};
use dstack_db::{DbError, JobRow, LogRow, SaveJob};
use dstack_decide::job::{Ended, RunnerState};
use uuid::Uuid;

use super::{BATCH, LEASE};
use crate::state::AppState;

/// One pass over active jobs. Returns (whether any job changed, whether any job is active).
pub(super) async fn pass(state: &AppState) -> Result<(bool, bool), DbError> {
    let now = jiff::Timestamp::now();
    let (leased, token) =
        state.db.lease_jobs(&["provisioning", "pulling", "running"], BATCH, now, LEASE).await?;
    let any = !leased.is_empty();
    let mut changed = false;
    for job in leased {
        let mut next = job.clone();
        let logs = match step(state, &mut next).await {
            Ok(logs) => {
                // Reached the host: the unreachable clock starts over.
                next.last_processed_at = now;
                logs
            }
            Err(StepError::Terminate(reason, message)) => {
                terminate(&mut next, reason, Some(message));
                next.last_processed_at = now;
                Vec::new()
            }
            Err(e) if e.is_unreachable() => {
                let status = JobStatus::from_wire(&job.status).unwrap_or(JobStatus::Failed);
                let timeout = state.job_disconnected_timeout;
                match dstack_decide::job::after_unreachable(
                    status,
                    is_spot(&job),
                    job.last_processed_at,
                    now,
                    timeout,
                ) {
                    Some(ended) => {
                        tracing::warn!(job = %job.job_name, error = %e, reason = ended.reason.as_str(), "job's host unreachable for too long");
                        terminate(&mut next, ended.reason, ended.message);
                        next.last_processed_at = now;
                    }
                    None => {
                        let secs = now.duration_since(job.last_processed_at).as_secs();
                        tracing::warn!(job = %job.job_name, error = %e, secs, "job's host unreachable; waiting for it to come back");
                    }
                }
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(job = %job.job_name, error = %e, "job step failed");
                Vec::new()
            }
        };
        let status_changed = next.status != job.status;
        if status_changed {
            tracing::info!(job = %job.job_name, from = %job.status, to = %next.status, "job status");
        }
        if state.db.save_job(&next, token, &logs, None).await? == SaveJob::Saved && status_changed {
            changed = true;
        }
    }
    if any {
        state.db.release_jobs(token).await?;
    }
    Ok((changed, any))
}

/// What went wrong in a step; the job stays as it is and is tried again.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("stored job data: {0}")]
    Data(#[from] serde_json::Error),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    Other(String),
    /// The job cannot go on (a bad secret reference, say): it ends with this reason and message.
    #[error("{1}")]
    Terminate(JobTerminationReason, String),
    /// The host's SSH connection or tunnel cannot be opened.
    #[error("{0}")]
    Tunnel(String),
}

impl StepError {
    /// Whether the job's host did not answer (dstack's `PeerConnectionError` and
    /// `RunnerResponseError`): counted against the disconnected timeout.
    fn is_unreachable(&self) -> bool {
        matches!(self, StepError::Agent(_) | StepError::Tunnel(_))
    }
}

/// Whether the job's instance is a spot one (its loss is then an interruption).
fn is_spot(job: &JobRow) -> bool {
    job.job_provisioning_data
        .as_deref()
        .and_then(|text| serde_json::from_str::<JobProvisioningData>(text).ok())
        .is_some_and(|jpd| jpd.instance_type.resources.spot)
}

/// The job's spec with `${{ secrets.* }}` filled in (env and registry_auth, as dstack does);
/// a missing secret ends the job.
async fn interpolated_spec(state: &AppState, job: &JobRow) -> Result<JobSpec, StepError> {
    let mut spec: JobSpec = serde_json::from_str(&job.job_spec)?;
    let secrets = project_secrets(state, job.project_id).await?;
    let fail = |e: dstack_decide::jobspec::JobSpecError| {
        StepError::Terminate(
            JobTerminationReason::TerminatedByServer,
            format!("Secrets interpolation error: {e}"),
        )
    };
    spec.env = dstack_decide::jobspec::interpolate_secrets(&spec.env, &secrets).map_err(fail)?;
    if let Some(auth) = &mut spec.registry_auth {
        let fields = BTreeMap::from([
            ("username".to_owned(), std::mem::take(&mut auth.username)),
            ("password".to_owned(), std::mem::take(&mut auth.password)),
        ]);
        let mut filled = dstack_decide::jobspec::interpolate_secrets(&fields, &secrets).map_err(fail)?;
        auth.username = filled.remove("username").unwrap_or_default();
        auth.password = filled.remove("password").unwrap_or_default();
    }
    Ok(spec)
}

pub(super) type Logs = Vec<(&'static str, LogRow)>;

async fn step(state: &AppState, job: &mut JobRow) -> Result<Logs, StepError> {
    let Some(instance_id) = job.instance_id else {
        return Err(StepError::Other("active job without an instance".into()));
    };
    let shim = shim_for(state, instance_id).await?;
    let status = JobStatus::from_wire(&job.status).unwrap_or(JobStatus::Failed);
    match status {
        JobStatus::Provisioning => {
            let spec = interpolated_spec(state, job).await?;
            let run_spec = run_spec_of(state, job).await?;
            if spec.jobs_per_replica > 1
                && let Some(why) = wait_for_other_nodes(state, job, &run_spec).await?
            {
                tracing::debug!(job = %job.job_name, why, "multi-node job waits");
                return Ok(Vec::new());
            }
            let config = task_config(job, &spec, &run_spec)?;
            match shim.submit_task(&config).await {
                Ok(()) => {}
                // Submitted by an earlier pass that did not get to record it.
                Err(e) if e.status() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
            job.status = JobStatus::Pulling.as_str().to_owned();
            Ok(Vec::new())
        }
        JobStatus::Pulling => {
            let task = shim.get_task(&job.id.to_string()).await?;
            if let Some(progress) = &task.image_pull_progress {
                job.image_pull_progress = Some(serde_json::to_string(progress)?);
            }
            if task.status == TaskStatus::Terminated {
                terminate(
                    job,
                    dstack_decide::job::agent_reason(
                        &task.termination_reason,
                        JobTerminationReason::ExecutorError,
                    ),
                    Some(task.termination_message.clone()).filter(|m| !m.is_empty()),
                );
                return Ok(Vec::new());
            }
            if task.status != TaskStatus::Running {
                return Ok(Vec::new());
            }
            let Some(port) = task.host_port(dstack_agent_proto::RUNNER_HTTP_PORT) else {
                return Ok(Vec::new());
            };
            let mut jrd: JobRuntimeData = match &job.job_runtime_data {
                Some(text) => serde_json::from_str(text)?,
                None => return Err(StepError::Other("job without runtime data".into())),
            };
            // Every published port: the runner's, its sshd's and a service's app port.
            let mut ports: BTreeMap<i64, i64> =
                task.ports.iter().flatten().map(|p| (i64::from(p.container), i64::from(p.host))).collect();
            ports.insert(i64::from(dstack_agent_proto::RUNNER_HTTP_PORT), i64::from(port));
            jrd.ports = Some(ports);
            let runner = runner_for(state, job, port).await?;
            start_job(state, job, &runner).await?;
            match runner.run().await {
                Ok(Some(resp)) => {
                    jrd.working_dir = Some(resp.working_dir);
                    jrd.username = Some(resp.username);
                }
                Ok(None) => {}
                // Started by an earlier pass that did not get to record it.
                Err(e) if e.status() == Some(409) => {}
                Err(e) => return Err(e.into()),
            }
            job.job_runtime_data = Some(serde_json::to_string(&jrd)?);
            job.status = JobStatus::Running.as_str().to_owned();
            job.runner_timestamp = Some(0);
            Ok(Vec::new())
        }
        JobStatus::Running => {
            let port = runner_port(job)?;
            let runner = runner_for(state, job, port).await?;
            let pulled = match runner.pull(job.runner_timestamp.unwrap_or(0)).await {
                Ok(p) => p,
                Err(e) => {
                    // The runner may be gone for good: then the shim's task says how it ended.
                    if let Ok(task) = shim.get_task(&job.id.to_string()).await
                        && task.status == TaskStatus::Terminated
                    {
                        let reason = dstack_decide::job::agent_reason(
                            &task.termination_reason,
                            JobTerminationReason::ContainerExitedWithError,
                        );
                        terminate(job, reason, Some(task.termination_message).filter(|m| !m.is_empty()));
                        return Ok(Vec::new());
                    }
                    // Unreachable: the pass decides whether it has been so for too long.
                    return Err(e.into());
                }
            };
            let logs = pulled_logs(&pulled);
            job.runner_timestamp = Some(pulled.last_updated.max(job.runner_timestamp.unwrap_or(0)));
            let mut ended = false;
            if let Some(last) = pulled.job_states.last() {
                let state = RunnerState {
                    state: last.state.as_str(),
                    termination_reason: &last.termination_reason,
                    termination_message: &last.termination_message,
                    exit_status: last.exit_status.map(i64::from),
                };
                if let Some(Ended { reason, message, exit_status }) =
                    dstack_decide::job::runner_outcome(&state)
                {
                    terminate(job, reason, message);
                    job.exit_status = exit_status;
                    // The runner has finished: nothing to stop gracefully.
                    job.graceful_termination_attempts = None;
                    ended = true;
                }
            }
            if !ended {
                let limit = match run_spec_of(state, job).await?.configuration {
                    RunConfiguration::DevEnvironment(c) => c.inactivity_duration,
                    _ => None,
                };
                let (secs, outcome) = dstack_decide::job::inactivity(limit, pulled.no_connections_secs);
                job.inactivity_secs = secs;
                if let Some(Ended { reason, message, .. }) = outcome {
                    tracing::info!(job = %job.job_name, ?secs, "dev environment inactive");
                    terminate(job, reason, message);
                    ended = true;
                }
            }
            if !ended
                && let Some(Ended { reason, message, .. }) =
                    low_utilization(state, job, jiff::Timestamp::now()).await?
            {
                tracing::info!(job = %job.job_name, "GPUs under the utilization policy");
                terminate(job, reason, message);
            }
            Ok(logs)
        }
        _ => Ok(Vec::new()),
    }
}

/// The job's `utilization_policy` against its stored metrics samples of the policy's window
/// ([`dstack_decide::job::low_gpu_utilization`]); `None` without a policy.
async fn low_utilization(
    state: &AppState,
    job: &JobRow,
    now: jiff::Timestamp,
) -> Result<Option<Ended>, StepError> {
    #[derive(serde::Deserialize)]
    struct PolicyOnly {
        #[serde(default)]
        utilization_policy: Option<dstack_model::profile::UtilizationPolicy>,
    }
    let PolicyOnly { utilization_policy } = serde_json::from_str(&job.job_spec)?;
    let Some(policy) = utilization_policy else { return Ok(None) };
    let window = policy.time_window.0;
    let query = dstack_db::MetricsQuery {
        after: Some(now.as_microsecond() - window * 1_000_000),
        before: None,
        limit: 10_000,
    };
    let samples: Vec<(i64, Vec<i64>)> = state
        .db
        .job_metrics_points(job.id, &query)
        .await?
        .into_iter()
        .map(|p| (p.timestamp_micro, serde_json::from_str(&p.gpus_util_percent).unwrap_or_default()))
        .collect();
    Ok(dstack_decide::job::low_gpu_utilization(policy.min_gpu_utilization, window, now, &samples))
}

fn terminate(job: &mut JobRow, reason: JobTerminationReason, message: Option<String>) {
    job.status = JobStatus::Terminating.as_str().to_owned();
    job.termination_reason = Some(reason.as_str().to_owned());
    job.termination_reason_message = message;
}

/// Submits the job (and its code) to a runner in `wait_submit`/`wait_run`.
async fn start_job(state: &AppState, job: &JobRow, runner: &RunnerClient) -> Result<(), StepError> {
    let run = state.db.run_by_id(job.run_id).await?.ok_or_else(|| StepError::Other("run is gone".into()))?;
    let run_spec: RunSpec = serde_json::from_str(&run.run_spec)?;
    let mut spec = interpolated_spec(state, job).await?;
    if runs_as_host_process(&run_spec) {
        let group = (!spec.replica_group.is_empty()).then_some(spec.replica_group.as_str());
        spec.commands = dstack_decide::jobspec::host_commands(&run_spec.configuration, group)
            .map_err(|e| StepError::Other(e.to_string()))?;
    }
    let repo = match run.repo_id.as_deref() {
        Some(name) => state.db.repo_by_name(run.project_id, name).await?,
        None => None,
    };
    let repo_credentials = match &repo {
        Some(repo) => repo_credentials(state, repo.id, run.user_id).await?,
        None => None,
    };
    let body = SubmitBody {
        run: SubmitRun { id: run.id, run_spec: run_spec.clone() },
        job_spec: spec,
        job_submission: SubmitJobSubmission { id: job.id },
        cluster_info: cluster_info_of(state, job).await?,
        secrets: BTreeMap::new(),
        repo_credentials,
        log_quota_hour: Some(50 * 1024 * 1024),
        run_spec: Some(run_spec),
    };
    let archives = body.job_spec.file_archives.clone();
    let code_hash = run_spec_code_hash(&body);
    match runner.submit(&body).await {
        Ok(()) => {}
        // Submitted by an earlier pass: the uploads below may still be missing.
        Err(e) if e.status() == Some(409) => {}
        Err(e) => return Err(e.into()),
    }
    // A 409 from an upload means the job has already started: nothing left to upload.
    let already_started = |e: &AgentError| e.status() == Some(409);
    let b64 = base64::engine::general_purpose::STANDARD;
    for archive in archives {
        let blob = state
            .db
            .file_archive(archive.id)
            .await?
            .ok_or_else(|| StepError::Other(format!("file archive {} is gone", archive.id)))?;
        let bytes = b64.decode(blob).map_err(|e| StepError::Other(format!("stored archive: {e}")))?;
        match runner.upload_archive(archive.id, bytes).await {
            Err(e) if already_started(&e) => return Ok(()),
            other => other?,
        }
    }
    if let Some(hash) = code_hash {
        let blob = match repo {
            Some(repo) => state.db.code(repo.id, &hash).await?,
            None => None,
        };
        let blob = blob.ok_or_else(|| StepError::Other(format!("the code {hash} was never uploaded")))?;
        let bytes = b64.decode(blob).map_err(|e| StepError::Other(format!("stored code: {e}")))?;
        match runner.upload_code(bytes).await {
            Err(e) if already_started(&e) => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

/// The run's user's credentials for the run's repo (dstack's `get_repo_creds`), as the runner
/// needs them to clone a remote repo; `None` when that user stored none.
async fn repo_credentials(
    state: &AppState,
    repo_id: Uuid,
    user_id: Uuid,
) -> Result<Option<RepoCredentials>, StepError> {
    let Some(stored) = state.db.repo_creds(repo_id, user_id).await? else {
        return Ok(None);
    };
    let creds: RemoteRepoCreds = state
        .cipher
        .decrypt(&stored)
        .and_then(|json| serde_json::from_str(&json).ok())
        .ok_or_else(|| StepError::Other("stored repo credentials cannot be decrypted".into()))?;
    Ok(Some(RepoCredentials {
        clone_url: Some(creds.clone_url),
        private_key: creds.private_key,
        oauth_token: creds.oauth_token,
    }))
}

/// Whether a multi-node job must wait before its task starts (see
/// [`dstack_decide::job::wait_for_other_nodes`]), from the latest submissions of its replica.
async fn wait_for_other_nodes(
    state: &AppState,
    job: &JobRow,
    run_spec: &RunSpec,
) -> Result<Option<&'static str>, StepError> {
    let mut nodes = Vec::new();
    for j in &replica_nodes(state, job).await? {
        let jpd: Option<JobProvisioningData> =
            j.job_provisioning_data.as_deref().map(serde_json::from_str).transpose()?;
        nodes.push(dstack_decide::job::Node {
            job_num: j.job_num,
            status: JobStatus::from_wire(&j.status).unwrap_or(JobStatus::Failed),
            placed: jpd.is_some_and(|p| p.hostname.is_some()),
        });
    }
    let order = dstack_decide::jobspec::merged_profile(run_spec).startup_order;
    Ok(dstack_decide::job::wait_for_other_nodes(job.job_num, order, &nodes))
}

/// The latest submission of every job of `job`'s replica, by job number.
async fn replica_nodes(state: &AppState, job: &JobRow) -> Result<Vec<JobRow>, StepError> {
    let mut latest: BTreeMap<i64, JobRow> = BTreeMap::new();
    for j in state.db.jobs_of_runs(&[job.run_id]).await? {
        if j.replica_num == job.replica_num {
            // Ordered by submission: the last one wins.
            latest.insert(j.job_num, j);
        }
    }
    Ok(latest.into_values().collect())
}

/// The replica's nodes as dstack's `_get_cluster_info` sees them: each job's (latest
/// submission's) internal IP, else its host name, by job number; the master is job 0.
async fn cluster_info_of(state: &AppState, job: &JobRow) -> Result<ClusterInfo, StepError> {
    let mut nodes = Vec::new();
    for j in &replica_nodes(state, job).await? {
        let jpd: Option<JobProvisioningData> =
            j.job_provisioning_data.as_deref().map(serde_json::from_str).transpose()?;
        let jrd: Option<JobRuntimeData> =
            j.job_runtime_data.as_deref().map(serde_json::from_str).transpose()?;
        nodes.push((j.job_num, jpd, jrd));
    }
    Ok(cluster_info(job.job_num, &nodes))
}

/// [`cluster_info_of`] on loaded data: (job number, provisioning data, runtime data).
fn cluster_info(
    job_num: i64,
    nodes: &[(i64, Option<JobProvisioningData>, Option<JobRuntimeData>)],
) -> ClusterInfo {
    let ip = |jpd: &Option<JobProvisioningData>| {
        jpd.as_ref()
            .and_then(|p| p.internal_ip.clone().filter(|ip| !ip.is_empty()).or_else(|| p.hostname.clone()))
            .unwrap_or_default()
    };
    // A job's GPUs: its share when it has one, else the whole instance's.
    let gpus = |jpd: &Option<JobProvisioningData>, jrd: &Option<JobRuntimeData>| {
        jrd.as_ref().and_then(|r| r.gpu).unwrap_or_else(|| {
            jpd.as_ref().map_or(0, |p| i64::try_from(p.instance_type.resources.gpus.len()).unwrap_or(0))
        })
    };
    let job_ips: Vec<String> = nodes.iter().map(|(_, jpd, _)| ip(jpd)).collect();
    let gpus_per_node: Vec<i64> = nodes.iter().map(|(_, jpd, jrd)| gpus(jpd, jrd)).collect();
    let gpus_per_job = nodes.iter().position(|(n, _, _)| *n == job_num).map_or(0, |i| gpus_per_node[i]);
    ClusterInfo {
        master_job_ip: job_ips.first().cloned().unwrap_or_default(),
        job_ips,
        gpus_per_job,
        gpus_per_node,
    }
}

fn run_spec_code_hash(body: &SubmitBody) -> Option<String> {
    body.run.run_spec.repo_code_hash.clone()
}

async fn project_secrets(state: &AppState, project_id: Uuid) -> Result<BTreeMap<String, String>, StepError> {
    let mut out = BTreeMap::new();
    for row in state.db.list_secrets(project_id).await? {
        match state.cipher.decrypt(&row.value) {
            Some(value) => {
                out.insert(row.name, value);
            }
            None => tracing::error!(secret = %row.name, "a stored secret cannot be decrypted"),
        }
    }
    Ok(out)
}

/// A run without `image:` runs as host processes (the local fleet has no dstack base image).
fn runs_as_host_process(run_spec: &RunSpec) -> bool {
    crate::runs::base(&run_spec.configuration).image.is_none()
}

async fn run_spec_of(state: &AppState, job: &JobRow) -> Result<RunSpec, StepError> {
    let run = state.db.run_by_id(job.run_id).await?.ok_or_else(|| StepError::Other("run is gone".into()))?;
    Ok(serde_json::from_str(&run.run_spec)?)
}

/// The shim task of a job, from its spec and the instance share it was given (dstack's
/// `_process_provisioning_with_shim`).
fn task_config(job: &JobRow, spec: &JobSpec, run_spec: &RunSpec) -> Result<TaskConfig, StepError> {
    let jrd: Option<JobRuntimeData> =
        job.job_runtime_data.as_deref().map(serde_json::from_str).transpose()?;
    let jpd: Option<JobProvisioningData> =
        job.job_provisioning_data.as_deref().map(serde_json::from_str).transpose()?;
    // Only a host with an sshd of its own is a jump host for `ssh <run>`: the local fleet
    // (the server's machine, no SSH port) gets no host keys.
    let host_user = jpd.filter(|p| p.ssh_port.is_some()).map(|p| p.username);
    Ok(shim_task(job.id.to_string(), job.job_name.clone(), spec, run_spec, jrd.as_ref(), host_user))
}

/// [`task_config`] on parsed data. A job without runtime data gets the whole instance on the
/// host network, as in dstack. The user's key opens the container and, with a `host_user`
/// (the SSH user of a host with its own sshd), the host as `host_user` while the task lives
/// (dstack's default, the SSH proxy not being enforced): the dstack CLI's `ssh <run>` jumps
/// through the host. dstack also adds the project's key to the container, which projects
/// here do not have yet.
fn shim_task(
    id: String,
    name: String,
    spec: &JobSpec,
    run_spec: &RunSpec,
    jrd: Option<&JobRuntimeData>,
    host_user: Option<String>,
) -> TaskConfig {
    use dstack_model::run::{MountPoint, VolumeName};
    let image =
        if spec.image_name.starts_with("dstackai/") { String::new() } else { spec.image_name.clone() };
    // GB as dstack's `_memory_to_bytes`: int(GB * 1024**3); None is 0.
    let bytes = |gb: Option<f64>| gb.map_or(0, |gb| (gb * 1024f64.powi(3)) as i64);
    let mut volume_mounts = Vec::new();
    let mut instance_mounts = Vec::new();
    for mount in spec.volumes.iter().flatten() {
        match mount {
            // No network volumes are attached here, so a name stays as configured (the first
            // of a list); the shim says the volume is not mounted.
            MountPoint::Volume(v) => volume_mounts.push(dstack_agent_proto::shim::VolumeMountPoint {
                name: match &v.name {
                    VolumeName::One(n) => n.clone(),
                    VolumeName::AnyOf(names) => names.first().cloned().unwrap_or_default(),
                },
                path: v.path.clone(),
            }),
            MountPoint::Instance(i) => instance_mounts.push(dstack_agent_proto::shim::InstanceMountPoint {
                instance_path: i.instance_path.clone(),
                path: i.path.clone(),
                optional: i.optional,
            }),
        }
    }
    let user_key = run_spec.ssh_key_pub.as_deref().map(str::trim).filter(|k| !k.is_empty());
    TaskConfig {
        id,
        name,
        registry_username: spec.registry_auth.as_ref().map(|a| a.username.clone()).unwrap_or_default(),
        registry_password: spec.registry_auth.as_ref().map(|a| a.password.clone()).unwrap_or_default(),
        image_name: image,
        container_user: "root".to_owned(),
        privileged: spec.privileged,
        // None is -1: all the instance's GPUs (the local fleet's jobs take the whole host).
        gpu: jrd.and_then(|r| r.gpu).unwrap_or(-1),
        cpu: jrd.and_then(|r| r.cpu).unwrap_or(0.0),
        memory: bytes(jrd.and_then(|r| r.memory)),
        shm_size: bytes(spec.requirements.resources.shm_size.map(|m| m.0)),
        network_mode: jrd.map_or(dstack_api::runs::NetworkMode::Host, |r| r.network_mode).as_str().to_owned(),
        volumes: Vec::new(),
        volume_mounts,
        instance_mounts,
        gpu_devices: Vec::new(),
        host_ssh_keys: user_key.filter(|_| host_user.is_some()).map(str::to_owned).into_iter().collect(),
        host_ssh_user: host_user.unwrap_or_default(),
        container_ssh_keys: user_key.map(str::to_owned).into_iter().collect(),
        app_ports: spec.service_port.and_then(|p| u16::try_from(p).ok()).into_iter().collect(),
    }
}

/// The instance's shim: the stored URL of the local fleet's shim, or, for an SSH host, a
/// tunnel of the host's one SSH connection (never the host's port directly).
async fn shim_for(state: &AppState, instance_id: Uuid) -> Result<ShimClient, StepError> {
    let instance = state
        .db
        .instance_by_id(instance_id)
        .await?
        .ok_or_else(|| StepError::Other("instance is gone".into()))?;
    let url = instance
        .agent_url
        .as_deref()
        .ok_or_else(|| StepError::Other("the instance's shim is not up yet".into()))?;
    let url = if crate::ssh_hosts::is_ssh(&instance) {
        crate::ssh_hosts::shim_url(state, &instance).await.map_err(StepError::Tunnel)?
    } else {
        url.to_owned()
    };
    Ok(ShimClient::with_client(&url, state.agent_http.clone()))
}

fn runner_port(job: &JobRow) -> Result<u16, StepError> {
    let jrd: JobRuntimeData = serde_json::from_str(job.job_runtime_data.as_deref().unwrap_or("null"))?;
    jrd.ports
        .and_then(|p| p.get(&i64::from(dstack_agent_proto::RUNNER_HTTP_PORT)).copied())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| StepError::Other("the runner's port is not known".into()))
}

/// The job's runner, if its address is known (and, on an SSH host, its tunnel opens).
pub(super) async fn runner_client(state: &AppState, job: &JobRow) -> Option<RunnerClient> {
    let port = runner_port(job).ok()?;
    runner_for(state, job, port).await.ok()
}

/// The runner at host port `port`: through the host's SSH connection for an SSH instance,
/// else at the job's hostname.
async fn runner_for(state: &AppState, job: &JobRow, port: u16) -> Result<RunnerClient, StepError> {
    if let Some(instance_id) = job.instance_id
        && let Some(instance) = state.db.instance_by_id(instance_id).await?
        && crate::ssh_hosts::is_ssh(&instance)
    {
        let url =
            crate::ssh_hosts::agent_base_url(state, &instance, port).await.map_err(StepError::Tunnel)?;
        return Ok(RunnerClient::with_client(&url, state.agent_http.clone()));
    }
    let jpd: JobProvisioningData =
        serde_json::from_str(job.job_provisioning_data.as_deref().unwrap_or("null"))?;
    let host = jpd.hostname.unwrap_or_else(|| "127.0.0.1".to_owned());
    Ok(RunnerClient::with_client(&format!("http://{host}:{port}"), state.agent_http.clone()))
}

/// Where the stop of a terminating job stands.
pub(super) enum Stopping {
    /// Asked the runner to stop; come back after `remove_at` (or once the job has ended).
    Later,
    /// The task is gone from the host (or never was).
    Done,
}

/// Stops a terminating job on its host: first the runner (graceful); while the job winds
/// down its last output is pulled; once it has ended, or after
/// [`dstack_decide::job::GRACEFUL_STOP`], the shim task is terminated and removed. An
/// unreachable host does not hold the job back.
pub(super) async fn stop_on_host(
    state: &AppState,
    job: &mut JobRow,
    instance_id: Uuid,
    now: jiff::Timestamp,
) -> (Stopping, Logs) {
    // A host marked unreachable cannot be asked anything: each call would only wait for its
    // connect timeout. The job ends now; what it left there is removed by the first health
    // check after the host is back (`dstack_decide::instance::dangling_tasks`).
    if let Ok(Some(instance)) = state.db.instance_by_id(instance_id).await
        && instance.unreachable
    {
        tracing::info!(job = %job.job_name, "the host is unreachable; the job is stopped without it");
        return (Stopping::Done, Vec::new());
    }
    let runner = runner_client(state, job).await;
    if job.graceful_termination_attempts == Some(0) {
        if let Some(runner) = &runner
            && let Err(e) = runner.stop().await
        {
            tracing::warn!(job = %job.job_name, error = %e, "runner stop");
        }
        job.graceful_termination_attempts = Some(1);
        job.remove_at = Some(now + dstack_decide::job::GRACEFUL_STOP);
        return (Stopping::Later, Vec::new());
    }
    let mut logs = Vec::new();
    if let Some(remove_at) = job.remove_at
        && remove_at > now
    {
        let mut ended = false;
        if let Some(runner) = &runner
            && let Ok(pulled) = runner.pull(job.runner_timestamp.unwrap_or(0)).await
        {
            logs = pulled_logs(&pulled);
            job.runner_timestamp = Some(pulled.last_updated.max(job.runner_timestamp.unwrap_or(0)));
            ended = !pulled.has_more;
        }
        if !ended {
            return (Stopping::Later, logs);
        }
    }
    if let Ok(shim) = shim_for(state, instance_id).await {
        let id = job.id.to_string();
        let body = TerminateBody {
            termination_reason: job.termination_reason.clone().unwrap_or_default(),
            termination_message: job.termination_reason_message.clone().unwrap_or_default(),
            timeout: 0,
        };
        match shim.terminate_task(&id, &body).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => tracing::warn!(job = %job.job_name, error = %e, "shim terminate"),
        }
        match shim.remove_task(&id).await {
            Ok(()) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(e) => tracing::warn!(job = %job.job_name, error = %e, "shim remove"),
        }
    }
    (Stopping::Done, logs)
}

fn pulled_logs(pulled: &dstack_agent_proto::runner::PullResponse) -> Logs {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut logs: Logs = Vec::new();
    for event in &pulled.job_logs {
        logs.push(("stdout", LogRow { ts: event.timestamp, message: b64.encode(&event.message) }));
    }
    for event in &pulled.runner_logs {
        logs.push(("runner", LogRow { ts: event.timestamp, message: b64.encode(&event.message) }));
    }
    logs
}

#[cfg(test)]
mod task_config_tests {
    use super::*;

    fn specs(configuration: serde_json::Value) -> (JobSpec, RunSpec) {
        let run_spec: RunSpec = serde_json::from_value(serde_json::json!({
            "run_name": "box", "configuration": configuration, "ssh_key_pub": "ssh-ed25519 AAAA user\n"
        }))
        .expect("a run spec");
        let run_spec = crate::runs::effective_run_spec(&run_spec, None).expect("effective");
        let job = crate::runs::initial_job_specs(&run_spec).expect("job specs").remove(0);
        (job, run_spec)
    }

    #[test]
    fn a_whole_instance_job_gets_everything_on_the_host_network() {
        let (spec, run_spec) = specs(serde_json::json!({
            "type": "task", "image": "ubuntu:22.04", "commands": ["true"], "privileged": true,
            "resources": {"shm_size": "1.5GB"},
            "volumes": ["/mnt/cache:/cache", {"instance_path": "/srv/data", "path": "/data", "optional": true},
                        {"name": ["vol-a", "vol-b"], "path": "/vol"}],
        }));
        let jrd: JobRuntimeData =
            serde_json::from_value(serde_json::json!({"network_mode": "host"})).expect("jrd");
        let config =
            shim_task("id".into(), "box-0-0".into(), &spec, &run_spec, Some(&jrd), Some("ubuntu".into()));
        assert_eq!(config.image_name, "ubuntu:22.04");
        assert_eq!(config.container_user, "root");
        assert!(config.privileged);
        assert_eq!((config.gpu, config.cpu, config.memory), (-1, 0.0, 0));
        assert_eq!(config.shm_size, 1_610_612_736);
        assert_eq!(config.network_mode, "host");
        let mounts: Vec<_> = config
            .instance_mounts
            .iter()
            .map(|m| (m.instance_path.as_str(), m.path.as_str(), m.optional))
            .collect();
        assert_eq!(mounts, [("/mnt/cache", "/cache", false), ("/srv/data", "/data", true)]);
        assert_eq!(config.volume_mounts.len(), 1);
        assert_eq!(
            (config.volume_mounts[0].name.as_str(), config.volume_mounts[0].path.as_str()),
            ("vol-a", "/vol")
        );
        assert!(config.volumes.is_empty());
        assert_eq!(config.host_ssh_user, "ubuntu");
        assert_eq!(config.host_ssh_keys, ["ssh-ed25519 AAAA user"]);
        assert_eq!(config.container_ssh_keys, ["ssh-ed25519 AAAA user"]);
    }

    #[test]
    fn a_block_gets_its_share_on_a_bridge() {
        let (spec, run_spec) =
            specs(serde_json::json!({"type": "task", "image": "ubuntu:22.04", "commands": ["true"]}));
        let jrd: JobRuntimeData = serde_json::from_value(serde_json::json!({
            "network_mode": "bridge", "gpu": 2, "cpu": 16.0, "memory": 64.0
        }))
        .expect("jrd");
        let config = shim_task("id".into(), "box-0-0".into(), &spec, &run_spec, Some(&jrd), None);
        assert_eq!((config.gpu, config.cpu, config.memory), (2, 16.0, 64 << 30));
        assert_eq!(config.network_mode, "bridge");
        assert_eq!((config.shm_size, config.privileged), (0, false));
        // No host user (the local fleet): the key opens the container only.
        assert_eq!((config.host_ssh_user.as_str(), config.host_ssh_keys.len()), ("", 0));
        assert_eq!(config.container_ssh_keys, ["ssh-ed25519 AAAA user"]);
        // No runtime data: dstack's defaults.
        let config = shim_task("id".into(), "box-0-0".into(), &spec, &run_spec, None, None);
        assert_eq!((config.gpu, config.network_mode.as_str()), (-1, "host"));
    }
}

#[cfg(test)]
mod cluster_info_tests {
    use super::*;

    fn jpd(host: &str, internal_ip: Option<&str>, gpus: usize) -> Option<JobProvisioningData> {
        let gpu = serde_json::json!({"name": "A100", "memory_mib": 81920, "vendor": "nvidia"});
        Some(
            serde_json::from_value(serde_json::json!({
                "backend": "remote", "instance_id": "i", "hostname": host, "internal_ip": internal_ip,
                "region": "remote", "price": 0.0, "username": "root", "dockerized": true,
                "instance_type": {"name": "instance", "resources": {
                    "cpus": 8, "memory_mib": 65536, "gpus": vec![gpu; gpus], "spot": false,
                    "disk": {"size_mib": 102400}}},
            }))
            .expect("a JPD"),
        )
    }

    #[test]
    fn nodes_are_listed_by_job_number_with_their_ips_and_gpus() {
        let share: JobRuntimeData =
            serde_json::from_value(serde_json::json!({"network_mode": "bridge", "gpu": 2})).expect("jrd");
        let nodes = vec![
            (0, jpd("10.0.0.5", None, 8), None),
            (1, jpd("gpu-2.example", Some("10.0.0.6"), 8), Some(share)),
        ];
        let info = cluster_info(1, &nodes);
        assert_eq!(info.job_ips, ["10.0.0.5", "10.0.0.6"]);
        assert_eq!(info.master_job_ip, "10.0.0.5");
        assert_eq!(info.gpus_per_node, [8, 2]);
        assert_eq!(info.gpus_per_job, 2);
        // A node not placed yet has no IP (the runner is not started before all are placed).
        let info = cluster_info(0, &[(0, jpd("10.0.0.5", None, 0), None), (1, None, None)]);
        assert_eq!(info.job_ips, ["10.0.0.5", ""]);
        assert_eq!(info.gpus_per_job, 0);
    }
}
