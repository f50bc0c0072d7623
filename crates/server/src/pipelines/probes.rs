//! Readiness probes of service replicas (dstack's `scheduled_tasks/probes.py`), every 3 s:
//!
//! 1. Registration ([`dstack_decide::probes::registration`]): each running service replica
//!    that is not registered yet gets its probes' first state (due at once) or, once
//!    [`dstack_decide::probes::job_ready`], is registered for service traffic; a replica
//!    without probes is registered once its app listens on its service port
//!    ([`crate::services::replica_listens`], checked every [`probes::PORT_CHECK_INTERVAL`]
//!    while one waits), so that it never gets a request before it listens.
//! 2. Execution: up to 100 due probes; a probe of a job that no longer runs, or an
//!    `until_ready` probe that is satisfied, is deactivated; the others are claimed (their
//!    `due` moves past the execution's time limit: the lease) and run concurrently, each an
//!    HTTP request to the replica's service port, reached as the proxy reaches it
//!    ([`crate::services::replica_addr`]). The outcome is written only under the claim.
//!
//! The probe state lives in `job_probes`, which only this loop writes, so the jobs loop's
//! writes never undo it. After a crash, a claimed probe is due again when its lease ends.

use std::collections::HashMap;
use std::time::Duration;

use dstack_api::runs::{JobStatus, ProbeSpec};
use dstack_db::{DbError, JobRow, ProbeRow};
use dstack_decide::probes::{self, OnDue, ProbeState, Registration};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::state::AppState;

/// The part of a job spec the probes need.
#[derive(serde::Deserialize)]
struct ProbeSpecs {
    #[serde(default)]
    probes: Vec<ProbeSpec>,
}

fn probe_specs(job_spec: &str) -> Result<Vec<ProbeSpec>, serde_json::Error> {
    Ok(serde_json::from_str::<ProbeSpecs>(job_spec)?.probes)
}

/// The HTTP client of probe requests: redirects are not followed (a 3xx is a failure, as in
/// dstack); each request has its probe's timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The loop: a pass every [`probes::PASS_INTERVAL`] (sooner while a replica waits for its
/// port, [`probes::next_pass_in`]); executions run in the background.
pub(super) async fn run(state: AppState) {
    let client = http_client();
    let mut executions = JoinSet::new();
    loop {
        let waiting_for_port = match pass(&state, &client, &mut executions).await {
            Ok(pass) => pass.waiting_for_port > 0,
            Err(e) => {
                tracing::error!(error = %e, "probes loop");
                false
            }
        };
        while executions.try_join_next().is_some() {}
        let interval = probes::next_pass_in(waiting_for_port);
        tokio::time::sleep(Duration::try_from(interval).unwrap_or(Duration::from_secs(3))).await;
    }
}

/// What a pass saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Replicas without probes whose app did not listen yet.
    pub waiting_for_port: usize,
}

/// One pass: registration, then the due probes, whose executions go into `executions`.
pub async fn pass(
    state: &AppState,
    client: &reqwest::Client,
    executions: &mut JoinSet<()>,
) -> Result<Pass, DbError> {
    let waiting_for_port = register(state).await?;
    let now = jiff::Timestamp::now();
    let due = state.db.due_probes(now, probes::BATCH).await?;
    let mut jobs: HashMap<Uuid, Option<JobRow>> = HashMap::new();
    for probe in due {
        if let std::collections::hash_map::Entry::Vacant(e) = jobs.entry(probe.job_id) {
            e.insert(state.db.job_by_id(probe.job_id).await?);
        }
        let job = jobs[&probe.job_id].as_ref();
        let running = job.is_some_and(|j| j.status == JobStatus::Running.as_str());
        let spec = match job.map(|j| probe_specs(&j.job_spec)).transpose() {
            Ok(specs) => usize::try_from(probe.probe_num)
                .ok()
                .and_then(|num| specs.and_then(|mut s| (num < s.len()).then(|| s.swap_remove(num)))),
            Err(e) => {
                tracing::warn!(job_id = %probe.job_id, error = %e, "a job spec that does not parse");
                None
            }
        };
        let stored =
            ProbeState { success_streak: probe.success_streak, due: probe.due, active: probe.active };
        match probes::on_due(running, spec.as_ref(), &stored, now) {
            OnDue::Deactivate => {
                state.db.save_probe(&ProbeRow { active: false, ..probe }, probe.due).await?;
            }
            OnDue::Execute { lease_until } => {
                let (Some(job), Some(spec)) = (job, spec) else { continue };
                if !state.db.claim_probe(&probe, probe.due, lease_until).await? {
                    continue;
                }
                let (state, client, job) = (state.clone(), client.clone(), job.clone());
                let claimed = ProbeRow { due: lease_until, ..probe };
                executions.spawn(async move {
                    if let Err(e) = execute_and_record(&state, &client, &job, claimed, &spec).await {
                        tracing::error!(job = %job.job_name, error = %e, "recording a probe");
                    }
                });
            }
        }
    }
    Ok(Pass { waiting_for_port })
}

/// Runs one claimed probe, writes its outcome under the claim and registers the replica if it
/// became ready.
async fn execute_and_record(
    state: &AppState,
    client: &reqwest::Client,
    job: &JobRow,
    claimed: ProbeRow,
    spec: &ProbeSpec,
) -> Result<(), DbError> {
    let success = execute(state, client, job, spec).await;
    let stored =
        ProbeState { success_streak: claimed.success_streak, due: claimed.due, active: claimed.active };
    let next = probes::after_execution(spec, &stored, success, jiff::Timestamp::now());
    let row = ProbeRow { success_streak: next.success_streak, due: next.due, active: next.active, ..claimed };
    if !state.db.save_probe(&row, claimed.due).await? {
        tracing::debug!(job = %job.job_name, probe = claimed.probe_num, "probe claim lost; outcome dropped");
        return Ok(());
    }
    if success && next.success_streak >= spec.ready_after {
        // Registered now rather than on the next pass, if every other probe is ready too.
        let specs = probe_specs(&job.job_spec).unwrap_or_default();
        let streaks: Vec<(i64, i64)> = state
            .db
            .probes_of_jobs(&[job.id])
            .await?
            .iter()
            .map(|p| (p.probe_num, p.success_streak))
            .collect();
        if probes::job_ready(&specs, &streaks) {
            state.db.register_replica(job.id).await?;
        }
    }
    Ok(())
}

/// One HTTP request of a probe; `true` on a 2xx answer.
async fn execute(state: &AppState, client: &reqwest::Client, job: &JobRow, spec: &ProbeSpec) -> bool {
    let addr = match crate::services::replica_addr(state, job, None).await {
        Ok(addr) => addr,
        Err(e) => {
            tracing::debug!(job = %job.job_name, error = %e, "probe: replica not reachable");
            return false;
        }
    };
    let Ok(method) = reqwest::Method::from_bytes(spec.method.as_str().to_ascii_uppercase().as_bytes()) else {
        return false;
    };
    let mut req = client
        .request(method, format!("http://{addr}{}", spec.url))
        .timeout(Duration::from_secs(spec.timeout.max(1).unsigned_abs()))
        // dstack sends its probes to `http://dstack<url>`.
        .header(reqwest::header::HOST, "dstack");
    for h in &spec.headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    if let Some(body) = &spec.body {
        req = req.body(body.clone());
    }
    match req.send().await {
        Ok(resp) => {
            tracing::debug!(job = %job.job_name, url = %spec.url, status = resp.status().as_u16(), "probe");
            probes::is_success(resp.status().as_u16())
        }
        Err(e) => {
            tracing::debug!(job = %job.job_name, url = %spec.url, error = %e, "probe failed");
            false
        }
    }
}

/// How long a replica's port check may take (the connection, then half a second with it
/// open, [`crate::services::replica_listens`]).
const PORT_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Gives running service replicas that are not registered yet their probes, and registers
/// those that are ready: every probe ready or, without probes, its app listening on its
/// service port (the checks run concurrently). Returns how many replicas without probes do
/// not listen yet.
async fn register(state: &AppState) -> Result<usize, DbError> {
    let waiting = state.db.unregistered_replicas(probes::BATCH).await?;
    if waiting.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = waiting.iter().map(|r| r.job_id).collect();
    let mut streaks: HashMap<Uuid, Vec<(i64, i64)>> = HashMap::new();
    for p in state.db.probes_of_jobs(&ids).await? {
        streaks.entry(p.job_id).or_default().push((p.probe_num, p.success_streak));
    }
    let now = jiff::Timestamp::now();
    let mut port_checks = JoinSet::new();
    for replica in waiting {
        let specs = match probe_specs(&replica.job_spec) {
            Ok(specs) => specs,
            Err(e) => {
                tracing::warn!(job_id = %replica.job_id, error = %e, "a job spec that does not parse");
                continue;
            }
        };
        let stored = streaks.get(&replica.job_id).map(Vec::as_slice).unwrap_or_default();
        match probes::registration(&specs, stored) {
            Registration::Register => {
                state.db.register_replica(replica.job_id).await?;
            }
            Registration::StartProbes => {
                let first = ProbeState::initial(now);
                let rows: Vec<ProbeRow> = (0..specs.len())
                    .map(|num| ProbeRow {
                        job_id: replica.job_id,
                        probe_num: i64::try_from(num).unwrap_or(i64::MAX),
                        success_streak: first.success_streak,
                        due: first.due,
                        active: first.active,
                    })
                    .collect();
                match state.db.insert_probes(&rows).await {
                    // The job was deleted meanwhile.
                    Ok(()) | Err(DbError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Registration::AwaitProbes => {}
            Registration::WhenListening => {
                let state = state.clone();
                port_checks.spawn(async move {
                    let listens = match state.db.job_by_id(replica.job_id).await {
                        Ok(Some(job)) => {
                            crate::services::replica_listens(&state, &job, PORT_CHECK_TIMEOUT).await
                        }
                        Ok(None) => false,
                        Err(e) => return Err(e),
                    };
                    Ok((replica.job_id, listens))
                });
            }
        }
    }
    let mut not_listening = 0;
    while let Some(done) = port_checks.join_next().await {
        let Ok(checked) = done else { continue };
        match checked? {
            (job_id, true) => {
                state.db.register_replica(job_id).await?;
            }
            (_, false) => not_listening += 1,
        }
    }
    Ok(not_listening)
}
