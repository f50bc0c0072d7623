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
    JobProvisioningData, JobRuntimeData, JobSpec, JobStatus, JobTerminationReason, RunSpec,
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
        let logs = match step(state, &mut next, now).await {
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
    state.db.release_jobs(token).await?;
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

async fn step(state: &AppState, job: &mut JobRow, now: jiff::Timestamp) -> Result<Logs, StepError> {
    let Some(instance_id) = job.instance_id else {
        return Err(StepError::Other("active job without an instance".into()));
    };
    let shim = shim_for(state, instance_id).await?;
    let status = JobStatus::from_wire(&job.status).unwrap_or(JobStatus::Failed);
    match status {
        JobStatus::Provisioning => {
            let spec = interpolated_spec(state, job).await?;
            let config = task_config(job, &spec);
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
            jrd.ports =
                Some(BTreeMap::from([(i64::from(dstack_agent_proto::RUNNER_HTTP_PORT), i64::from(port))]));
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
                    if dstack_decide::job::unreachable_for_too_long(job.last_processed_at, now) {
                        terminate(job, JobTerminationReason::InstanceUnreachable, None);
                        return Ok(Vec::new());
                    }
                    return Err(e.into());
                }
            };
            let logs = pulled_logs(&pulled);
            job.runner_timestamp = Some(pulled.last_updated.max(job.runner_timestamp.unwrap_or(0)));
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
                }
            }
            Ok(logs)
        }
        _ => Ok(Vec::new()),
    }
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
        cluster_info: ClusterInfo {
            job_ips: vec!["127.0.0.1".to_owned()],
            master_job_ip: "127.0.0.1".to_owned(),
            gpus_per_job: 0,
            gpus_per_node: Vec::new(),
        },
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

fn task_config(job: &JobRow, spec: &JobSpec) -> TaskConfig {
    let image =
        if spec.image_name.starts_with("dstackai/") { String::new() } else { spec.image_name.clone() };
    TaskConfig {
        id: job.id.to_string(),
        name: job.job_name.clone(),
        image_name: image,
        privileged: spec.privileged,
        registry_username: spec.registry_auth.as_ref().map(|a| a.username.clone()).unwrap_or_default(),
        registry_password: spec.registry_auth.as_ref().map(|a| a.password.clone()).unwrap_or_default(),
        // All the host's GPUs: a local-fleet job has the whole instance.
        gpu: -1,
        ..TaskConfig::default()
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
        crate::ssh_hosts::shim_url(state, &instance).await.map_err(StepError::Other)?
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
        let url = crate::ssh_hosts::agent_base_url(state, &instance, port).await.map_err(StepError::Other)?;
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
