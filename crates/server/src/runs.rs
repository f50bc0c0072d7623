//! Runs on the server side: plans, submissions, and rows turned into dstack's `Run`.

use dstack_api::runs::{
    ApplyAction, InstanceOfferWithAvailability, JobConnectionInfo, JobPlan, JobProvisioningData, JobRetry,
    JobRuntimeData, JobSpec, JobStatus, JobSubmission, JobTerminationReason, Run, RunConfiguration, RunFleet,
    RunPlan, RunSpec, RunStatus, RunTerminationReason, ServiceSpec,
};
use dstack_db::{JobRow, RunRow};
use dstack_decide::jobspec::{ImageConfig, ImageConfigs, JobSpecError};
use dstack_decide::offers::{FleetFilter, InstanceCandidate};
use dstack_model::profile::{ProfileParams, RetryEvent};
use dstack_model::run::BaseRunConfiguration;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The configuration's common part.
pub(crate) fn base(config: &RunConfiguration) -> &BaseRunConfiguration {
    match config {
        RunConfiguration::DevEnvironment(c) => &c.base,
        RunConfiguration::Task(c) => &c.base,
        RunConfiguration::Service(c) => &c.base,
    }
}

/// The configuration's profile parameters.
pub(crate) fn profile(config: &RunConfiguration) -> &ProfileParams {
    match config {
        RunConfiguration::DevEnvironment(c) => &c.profile,
        RunConfiguration::Task(c) => &c.profile,
        RunConfiguration::Service(c) => &c.profile,
    }
}

/// dstack's server-side checks that need no state, as messages.
pub(crate) fn static_checks(config: &RunConfiguration) -> Vec<String> {
    match config {
        RunConfiguration::DevEnvironment(c) => c.static_checks(),
        RunConfiguration::Task(c) => c.static_checks(),
        RunConfiguration::Service(c) => c.static_checks(),
    }
}

/// The job specs a run starts with (replica 0 of each replica group).
///
/// Custom images cannot be inspected in a registry from here; their configuration is taken
/// as unknown (no entrypoint, command or user from the image).
pub(crate) fn initial_job_specs(spec: &RunSpec) -> Result<Vec<JobSpec>, JobSpecError> {
    dstack_decide::jobspec::plan_job_specs(spec, &unknown_images(spec))
}

/// The spec's custom images, each with an unknown (default) configuration.
fn unknown_images(spec: &RunSpec) -> ImageConfigs {
    dstack_decide::jobspec::images_to_inspect(spec)
        .into_iter()
        .map(|image| (image, ImageConfig::default()))
        .collect()
}

/// The jobs a run is submitted with: a service's `replicas.min` replicas of each group, else
/// replica 0 (images as in [`initial_job_specs`]).
pub(crate) fn submission_job_specs(spec: &RunSpec) -> Result<Vec<JobSpec>, JobSpecError> {
    dstack_decide::jobspec::submission_job_specs(spec, &unknown_images(spec))
}

/// The jobs of replica `replica_num` of service group `group` (scaling up), images as in
/// [`initial_job_specs`].
pub(crate) fn replica_job_specs(
    spec: &RunSpec,
    replica_num: i64,
    group: &str,
) -> Result<Vec<JobSpec>, JobSpecError> {
    dstack_decide::jobspec::job_specs(spec, replica_num, Some(group), &unknown_images(spec))
}

/// A stored job spec as the API shows it: the inter-node private key is never sent (dstack
/// answers `"ssh_key": null`). The text is moved through unchanged when there is no key.
fn without_ssh_key(job_spec: String) -> Result<String, serde_json::Error> {
    if !job_spec.contains("\"ssh_key\":{") {
        return Ok(job_spec);
    }
    let mut value: serde_json::Value = serde_json::from_str(&job_spec)?;
    if let Some(key) = value.get_mut("ssh_key") {
        *key = serde_json::Value::Null;
    }
    serde_json::to_string(&value)
}

/// Gives the jobs of a multi-node replica their inter-node SSH key (dstack's `_ssh_key`:
/// one RSA pair, comment `dstack_job`, when `jobs_per_replica >= 2`; every job of the run
/// made in one call shares it). The runners write it to `~/.ssh/dstack_job` and authorize it.
pub(crate) fn with_job_ssh_key(specs: &mut [JobSpec]) -> Result<(), crate::ServerError> {
    if !specs.iter().any(|s| s.jobs_per_replica >= 2) {
        return Ok(());
    }
    let (public, private) = crate::crypto::generate_ssh_keypair("dstack_job")?;
    let key = dstack_api::runs::JobSshKey { private, public: public.trim_end().to_owned() };
    for spec in specs.iter_mut().filter(|s| s.jobs_per_replica >= 2) {
        spec.ssh_key = Some(key.clone());
    }
    Ok(())
}

/// The spec as the server stores it: what the client sent with the server's defaults.
pub(crate) fn effective_run_spec(
    spec: &RunSpec,
    ssh_public_key: Option<&str>,
) -> Result<RunSpec, JobSpecError> {
    dstack_decide::jobspec::effective_run_spec(spec, ssh_public_key, false)
}

/// A random run name, as dstack makes them (`<adjective>-<animal>-1`).
pub(crate) fn generate_run_name() -> String {
    const ADJECTIVES: &[&str] = &[
        "amber", "brave", "calm", "clever", "cool", "eager", "fast", "gentle", "happy", "keen", "lucky",
        "mighty", "nimble", "proud", "quick", "quiet", "shiny", "silent", "smart", "swift", "tidy", "witty",
    ];
    const ANIMALS: &[&str] = &[
        "badger", "beaver", "bison", "cat", "crab", "crow", "deer", "dog", "eagle", "fox", "frog", "goat",
        "hawk", "heron", "lion", "lynx", "moose", "otter", "owl", "panda", "seal", "wolf", "yak", "zebra",
    ];
    let bits = Uuid::new_v4().as_u128();
    let adjective = ADJECTIVES[(bits % ADJECTIVES.len() as u128) as usize];
    let animal = ANIMALS[((bits >> 32) % ANIMALS.len() as u128) as usize];
    format!("{adjective}-{animal}-1")
}

/// The offers of one job, cheapest first, and how many there are.
pub(crate) fn job_plan(
    job_spec: JobSpec,
    instances: &[InstanceCandidate],
    filter: &FleetFilter,
    max_offers: Option<i64>,
) -> JobPlan {
    let offers: Vec<InstanceOfferWithAvailability> =
        dstack_decide::offers::instance_offers(&job_spec.requirements, instances, filter)
            .into_iter()
            .map(|(_, o)| o)
            .collect();
    let total = i64::try_from(offers.len()).unwrap_or(i64::MAX);
    let max_price = offers.iter().map(|o| o.price).reduce(f64::max);
    let shown = usize::try_from(max_offers.unwrap_or(50).clamp(0, 50)).unwrap_or(50);
    JobPlan { job_spec, offers: offers.into_iter().take(shown).collect(), total_offers: total, max_price }
}

/// Builds the plan the client shows before `apply`.
pub(crate) fn run_plan(
    project_name: &str,
    user_name: &str,
    spec: RunSpec,
    effective: RunSpec,
    job_plans: Vec<JobPlan>,
    current: Option<Run>,
) -> RunPlan {
    // dstack's rule: an active run that the spec can update in place is updated (a service
    // by a rolling deployment), anything else is a new run.
    let updatable = current.as_ref().is_some_and(|run| {
        !run.status.is_finished() && dstack_decide::update::can_update_run_spec(&run.run_spec, &effective)
    });
    let action = if updatable { ApplyAction::Update } else { ApplyAction::Create };
    RunPlan {
        project_name: project_name.to_owned(),
        user: user_name.to_owned(),
        run_spec: spec,
        effective_run_spec: Some(effective),
        job_plans,
        current_resource: current,
        action,
    }
}

/// Names the run rows need beside the rows.
pub(crate) struct RunNames<'a> {
    pub project: &'a str,
    pub user: &'a str,
    pub fleet: Option<RunFleet>,
}

/// A run in dstack's `Run` shape, with the stored run and job specs passed through as they
/// were written (see [`StoredJson`]) instead of being parsed and validated again: listing 100
/// runs costs no configuration parsing.
///
/// The fields are `dstack_api::runs::Run`'s, in its order; a test holds the two to the same
/// bytes.
#[derive(Debug, Serialize)]
pub(crate) struct RunOut {
    pub id: Uuid,
    pub project_name: String,
    pub user: String,
    pub fleet: Option<RunFleet>,
    #[serde(with = "dstack_api::time::rfc3339")]
    pub submitted_at: Timestamp,
    #[serde(with = "dstack_api::time::rfc3339")]
    pub last_processed_at: Timestamp,
    pub status: RunStatus,
    pub status_message: String,
    pub termination_reason: Option<RunTerminationReason>,
    pub run_spec: StoredJson,
    pub jobs: Vec<JobOut>,
    pub latest_job_submission: Option<JobSubmission>,
    pub cost: f64,
    pub service: Option<ServiceSpec>,
    pub deployment_num: i64,
    pub error: Option<String>,
    pub deleted: Option<bool>,
    #[serde(with = "dstack_api::time::rfc3339_opt")]
    pub next_triggered_at: Option<Timestamp>,
}

/// A job in dstack's `Job` shape (see [`RunOut`]).
#[derive(Debug, Serialize)]
pub(crate) struct JobOut {
    pub job_spec: StoredJson,
    pub job_submissions: Vec<JobSubmission>,
    pub job_connection_info: Option<JobConnectionInfo>,
}

impl RunOut {
    /// The typed `Run` (parses the specs; for the few places that look inside them).
    pub(crate) fn to_typed(&self) -> Result<Run, serde_json::Error> {
        serde_json::from_str(&serde_json::to_string(self)?)
    }
}

/// A JSON object that this server serialized itself (a stored `run_spec` or `job_spec`
/// column), written into a response as it is, without being parsed again.
///
/// Why skipping validation is sound: the only writers of those columns are the server's
/// `serde_json::to_string` of a typed `RunSpec` or `JobSpec` (`routes::runs::apply`,
/// [`new_job_rows`], the pipelines' resubmissions) and [`without_ssh_key`], so the text is
/// JSON by construction; re-validating it was a quarter of the time of `runs/list`. Text that
/// does not even look like an object (a truncated or hand-edited row) is validated in full and
/// refused; debug builds validate everything.
pub(crate) struct StoredJson(String);

/// The struct name and field name by which `serde_json`'s serializers recognize a raw JSON value
/// (`serde_json::value::RawValue` serializes itself as exactly this struct) and write its one
/// field's text verbatim. The protocol is serde_json's, not public API; `stored_json_is_written_verbatim`
/// fails if a serde_json update changes it.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl StoredJson {
    /// `text` as written by this server's serializer (see the type's documentation).
    pub(crate) fn trusted(text: String) -> Result<StoredJson, serde_json::Error> {
        if !(text.starts_with('{') && text.ends_with('}')) {
            serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        }
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
            "stored JSON is not JSON: {text}"
        );
        Ok(StoredJson(text))
    }
}

impl std::fmt::Debug for StoredJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for StoredJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut raw = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, self.0.as_str())?;
        raw.end()
    }
}

/// The part of a job spec the run's status message and the runs loop need (read without
/// parsing the rest).
#[derive(Deserialize)]
struct RetryOnly {
    #[serde(default)]
    retry: Option<JobRetry>,
}

/// A stored job spec's effective retry policy.
pub(crate) fn job_retry(job_spec: &str) -> Result<Option<JobRetry>, serde_json::Error> {
    Ok(serde_json::from_str::<RetryOnly>(job_spec)?.retry)
}

/// The stored probes of job submissions, by job id, in probe order (dstack's
/// `JobSubmission.probes`).
pub(crate) type ProbesByJob = std::collections::HashMap<uuid::Uuid, Vec<dstack_api::runs::Probe>>;

/// What a run's answer knows of its replicas' readiness: the stored probes by job and, when
/// they were read, the registered jobs (a replica without probes is registered once its app
/// listens).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    pub(crate) probes: ProbesByJob,
    pub(crate) registered: Option<std::collections::HashSet<uuid::Uuid>>,
}

/// Groups probe rows by job for [`run_to_wire`].
pub(crate) fn probes_by_job(rows: Vec<dstack_db::ProbeRow>) -> ProbesByJob {
    let mut rows = rows;
    rows.sort_by_key(|p| (p.job_id, p.probe_num));
    let mut out = ProbesByJob::new();
    for p in rows {
        out.entry(p.job_id).or_default().push(dstack_api::runs::Probe { success_streak: p.success_streak });
    }
    out
}

/// A run row and its job rows in dstack's shape. `jobs` are all submissions of the run (the
/// stored specs move into the answer without being copied); `readiness` the stored probes of
/// (some of) them, and which are registered.
pub(crate) fn run_to_wire(
    run: RunRow,
    mut jobs: Vec<JobRow>,
    readiness: &Readiness,
    names: RunNames<'_>,
    include_jobs: bool,
    submissions_limit: Option<i64>,
    now: Timestamp,
) -> Result<RunOut, serde_json::Error> {
    let status = RunStatus::from_wire(&run.status).unwrap_or(RunStatus::Failed);
    let termination_reason = run.termination_reason.as_deref().and_then(RunTerminationReason::from_wire);
    jobs.sort_by_key(|j| (j.replica_num, j.job_num, j.submission_num));
    // The submissions of one job are a run of `jobs`; the last one is the latest.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match groups.last_mut() {
            Some(g)
                if jobs[g.start].replica_num == job.replica_num && jobs[g.start].job_num == job.job_num =>
            {
                g.end = i + 1;
            }
            _ => groups.push(i..i + 1),
        }
    }
    let group_rows: Vec<&[JobRow]> = groups.iter().map(|g| &jobs[g.clone()]).collect();
    let mut cost = 0.0;
    let mut job_submissions = Vec::with_capacity(groups.len());
    for group in &group_rows {
        let mut submissions = Vec::with_capacity(group.len());
        for row in *group {
            let mut sub = job_submission(row)?;
            sub.probes = readiness.probes.get(&row.id).cloned().unwrap_or_default();
            cost += submission_cost(&sub, now);
            submissions.push(sub);
        }
        if let Some(limit) = submissions_limit {
            let keep = usize::try_from(limit.max(0)).unwrap_or(0);
            let skip = submissions.len().saturating_sub(keep);
            submissions.drain(..skip);
        }
        job_submissions.push(submissions);
    }
    // Only a waiting run's status message depends on its retry policy.
    let waiting = matches!(status, RunStatus::Submitted | RunStatus::Pending);
    let retries_no_capacity = match group_rows.last().and_then(|g| g.last()) {
        Some(job) if waiting => {
            job_retry(&job.job_spec)?.is_some_and(|r| r.on_events.contains(&RetryEvent::NoCapacity))
        }
        _ => false,
    };
    let mut status_message = run_status_message(status, &group_rows, retries_no_capacity);
    if !status.is_finished()
        && run.service_spec.is_some()
        && let Some(message) = rollout_message(run.deployment_num, &group_rows, readiness)
    {
        status_message = message;
    }
    let mut wire_jobs: Vec<JobOut> = Vec::new();
    if include_jobs {
        wire_jobs.reserve(groups.len());
        for (group, submissions) in groups.iter().zip(job_submissions) {
            let latest = &mut jobs[group.end - 1];
            let job_spec = StoredJson::trusted(without_ssh_key(std::mem::take(&mut latest.job_spec))?)?;
            wire_jobs.push(JobOut { job_spec, job_submissions: submissions, job_connection_info: None });
        }
    }
    let latest_job_submission = wire_jobs.first().and_then(|j| j.job_submissions.last().cloned());
    Ok(RunOut {
        id: run.id,
        project_name: names.project.to_owned(),
        user: names.user.to_owned(),
        fleet: names.fleet,
        submitted_at: run.submitted_at,
        last_processed_at: run.last_processed_at,
        status,
        status_message,
        termination_reason,
        run_spec: StoredJson::trusted(run.run_spec)?,
        jobs: wire_jobs,
        latest_job_submission,
        cost: (cost * 10_000.0).round() / 10_000.0,
        service: run.service_spec.as_deref().map(serde_json::from_str).transpose()?,
        deployment_num: run.deployment_num,
        error: termination_reason.and_then(|r| r.to_error()).map(str::to_owned),
        deleted: Some(run.deleted),
        next_triggered_at: if status.is_finished() { None } else { run.next_triggered_at },
    })
}

fn submission_cost(sub: &JobSubmission, now: Timestamp) -> f64 {
    let Some(jpd) = &sub.job_provisioning_data else { return 0.0 };
    let end = sub.finished_at.unwrap_or(now);
    let hours = end.duration_since(sub.submitted_at).as_secs_f64().max(0.0) / 3600.0;
    jpd.price * hours
}

/// One job row as a submission.
pub(crate) fn job_submission(row: &JobRow) -> Result<JobSubmission, serde_json::Error> {
    let status = JobStatus::from_wire(&row.status).unwrap_or(JobStatus::Failed);
    let reason = row.termination_reason.as_deref().and_then(JobTerminationReason::from_wire);
    let jpd: Option<JobProvisioningData> =
        row.job_provisioning_data.as_deref().map(serde_json::from_str).transpose()?;
    let jrd: Option<JobRuntimeData> =
        row.job_runtime_data.as_deref().map(serde_json::from_str).transpose()?;
    Ok(JobSubmission {
        id: row.id,
        submission_num: row.submission_num,
        deployment_num: row.deployment_num,
        submitted_at: row.submitted_at,
        last_processed_at: row.last_processed_at,
        finished_at: row.finished_at,
        inactivity_secs: row.inactivity_secs,
        status,
        status_message: job_status_message(status, reason, row),
        termination_reason: reason,
        termination_reason_message: row.termination_reason_message.clone(),
        exit_status: row.exit_status,
        job_provisioning_data: jpd,
        job_runtime_data: jrd,
        error: reason.and_then(JobTerminationReason::to_error).map(str::to_owned),
        probes: Vec::new(),
        // Shown only while pulling, as dstack does.
        image_pull_progress: match (status, &row.image_pull_progress) {
            (JobStatus::Pulling, Some(text)) => Some(serde_json::from_str(text)?),
            _ => None,
        },
    })
}

/// What the CLI's STATUS column shows for a job (dstack's rules).
fn job_status_message(status: JobStatus, reason: Option<JobTerminationReason>, row: &JobRow) -> String {
    match (status, reason) {
        (JobStatus::Done, _) => "exited (0)".to_owned(),
        (JobStatus::Failed, Some(JobTerminationReason::ContainerExitedWithError)) => {
            format!("exited ({})", row.exit_status.map_or("None".to_owned(), |s| s.to_string()))
        }
        (JobStatus::Failed, Some(JobTerminationReason::FailedToStartDueToNoCapacity)) => {
            if row
                .termination_reason_message
                .as_deref()
                .is_some_and(|m| m.contains("No matching fleet found"))
            {
                "no fleets".to_owned()
            } else {
                "no capacity".to_owned()
            }
        }
        (JobStatus::Failed, Some(JobTerminationReason::InterruptedByNoCapacity)) => "interrupted".to_owned(),
        (JobStatus::Failed, _) => "error".to_owned(),
        (JobStatus::Terminated, Some(JobTerminationReason::TerminatedByUser)) => "stopped".to_owned(),
        (JobStatus::Terminated, Some(JobTerminationReason::AbortedByUser)) => "aborted".to_owned(),
        (status, _) => status.as_str().to_owned(),
    }
}

/// Why a service's rolling deployment does not go on, while its old replicas still serve:
/// its new version failed for good (`update failed: replica 2 exited with code 1`), or a new
/// replica runs but its probes do not pass (`update waiting: replica 2 probes not passing`),
/// or, without probes, its app does not listen (`update waiting: replica 2 not listening on
/// port 8000`). `None` when no deployment rolls or it makes progress.
fn rollout_message(deployment_num: i64, groups: &[&[JobRow]], readiness: &Readiness) -> Option<String> {
    let latest: Vec<&JobRow> = groups.iter().filter_map(|g| g.last()).collect();
    let rolling = latest.iter().any(|j| {
        j.deployment_num < deployment_num
            && !JobStatus::from_wire(&j.status).is_some_and(JobStatus::is_finished)
            && j.termination_reason.as_deref() != Some(JobTerminationReason::ScaledDown.as_str())
    });
    if !rolling {
        return None;
    }
    let new = latest.iter().filter(|j| j.deployment_num >= deployment_num);
    for job in new.clone() {
        let status = JobStatus::from_wire(&job.status);
        let reason = job.termination_reason.as_deref().and_then(JobTerminationReason::from_wire);
        // A failure is `terminating` with its reason before it is `failed`.
        let ending = status.is_some_and(JobStatus::is_finished)
            || (status == Some(JobStatus::Terminating) && reason.is_some());
        let failed = ending
            && !matches!(reason, Some(JobTerminationReason::ScaledDown | JobTerminationReason::DoneByRunner));
        if !failed {
            continue;
        }
        let why = match (&job.termination_reason_message, job.exit_status, reason) {
            (Some(message), _, _) if !message.is_empty() => message.clone(),
            (_, Some(code), _) => format!("exited with code {code}"),
            (_, _, Some(reason)) => reason.as_str().replace('_', " "),
            _ => "failed".to_owned(),
        };
        return Some(format!("update failed: replica {} {why}", job.replica_num));
    }
    for job in new {
        if job.job_num != 0 || job.status != JobStatus::Running.as_str() {
            continue;
        }
        let probes = readiness.probes.get(&job.id);
        if probes.is_some_and(|p| p.iter().any(|p| p.success_streak == 0)) {
            return Some(format!("update waiting: replica {} probes not passing", job.replica_num));
        }
        let unregistered = readiness.registered.as_ref().is_some_and(|r| !r.contains(&job.id));
        if unregistered && let Some(port) = probeless_service_port(&job.job_spec) {
            return Some(format!("update waiting: replica {} not listening on port {port}", job.replica_num));
        }
    }
    None
}

/// The service port of a job spec without probes; `None` if it has probes (or no port).
fn probeless_service_port(job_spec: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        probes: Vec<serde::de::IgnoredAny>,
        service_port: Option<i64>,
    }
    let spec: Spec = serde_json::from_str(job_spec).ok()?;
    if spec.probes.is_empty() { spec.service_port } else { None }
}

/// What the CLI's STATUS column shows for a run (dstack's rules: `pulling`, `retrying`).
fn run_status_message(status: RunStatus, groups: &[&[JobRow]], retries_no_capacity: bool) -> String {
    if groups.is_empty() {
        return status.as_str().to_owned();
    }
    if groups.iter().all(|g| g.last().is_some_and(|j| j.status == JobStatus::Pulling.as_str())) {
        return "pulling".to_owned();
    }
    if matches!(status, RunStatus::Submitted | RunStatus::Pending) {
        let no_capacity = groups.iter().any(|g| {
            g.iter().rev().find_map(|j| j.termination_reason.as_deref())
                == Some(JobTerminationReason::FailedToStartDueToNoCapacity.as_str())
        });
        if retries_no_capacity && no_capacity {
            return "retrying".to_owned();
        }
    }
    status.as_str().to_owned()
}

/// New job rows for one replica's jobs, as their first submission.
pub(crate) fn new_job_rows(
    run: &RunRow,
    specs: &[JobSpec],
    now: Timestamp,
) -> Result<Vec<JobRow>, serde_json::Error> {
    specs
        .iter()
        .map(|spec| {
            Ok(new_submission(
                run,
                JobKey { job_num: spec.job_num, replica_num: spec.replica_num, submission_num: 0 },
                spec.job_name.clone(),
                serde_json::to_string(spec)?,
                now,
            ))
        })
        .collect()
}

/// Which submission of which job a row is.
pub(crate) struct JobKey {
    pub job_num: i64,
    pub replica_num: i64,
    pub submission_num: i64,
}

/// A fresh `submitted` job row of `run` (first or next submission of a job).
pub(crate) fn new_submission(
    run: &RunRow,
    key: JobKey,
    job_name: String,
    job_spec: String,
    now: Timestamp,
) -> JobRow {
    JobRow {
        id: Uuid::new_v4(),
        project_id: run.project_id,
        run_id: run.id,
        run_name: run.run_name.clone(),
        job_num: key.job_num,
        replica_num: key.replica_num,
        submission_num: key.submission_num,
        deployment_num: run.deployment_num,
        job_name,
        submitted_at: now,
        last_processed_at: now,
        finished_at: None,
        status: JobStatus::Submitted.as_str().to_owned(),
        termination_reason: None,
        termination_reason_message: None,
        exit_status: None,
        job_spec,
        job_provisioning_data: None,
        job_runtime_data: None,
        instance_id: None,
        runner_timestamp: None,
        remove_at: None,
        graceful_termination_attempts: None,
        image_pull_progress: None,
        inactivity_secs: None,
        drain_started_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_json_is_written_verbatim() {
        let text = r#"{"b":[1,2.50,"\u00e9"],"a":{"x":null}}"#;
        let stored = StoredJson::trusted(text.to_owned()).expect("an object");
        let outer = serde_json::json!({"spec": serde_json::to_value(&stored).expect("a value")});
        assert_eq!(outer["spec"]["b"][2], "é");
        let wrapped = serde_json::to_string(&vec![&stored, &stored]).expect("serializes");
        assert_eq!(wrapped, format!("[{text},{text}]"));
    }

    #[test]
    fn stored_text_that_is_not_an_object_is_validated() {
        assert!(StoredJson::trusted(String::new()).is_err());
        assert!(StoredJson::trusted("[1,".to_owned()).is_err());
        assert!(StoredJson::trusted("[1]".to_owned()).is_ok());
    }
}
