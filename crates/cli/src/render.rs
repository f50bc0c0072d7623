//! How runs, plans, offers and fleets look on a terminal: dstack 0.22.5's tables and phrases.
//!
//! Everything here is pure: the current time and whether to colour come in as arguments, and
//! every function returns text, so tests compare whole tables. Tables have no borders, bold
//! headers and trailing spaces trimmed; colours follow dstack's (status colours, secondary grey)
//! and are left out when `color` is false (not a terminal, `NO_COLOR`).

use comfy_table::{Attribute, Cell, Color, Table};
use dstack_api::fleets::{Fleet, FleetStatus, HealthStatus, Instance, InstanceStatus};
use dstack_api::runs::{
    ImagePullProgress, InstanceOfferWithAvailability, Job, JobStatus, JobSubmission, Resources, Run,
    RunConfiguration, RunPlan, RunStatus,
};
use dstack_model::common::BackendType;
use dstack_model::profile::{CreationPolicy, ProfileParams};
use dstack_model::resources::{ResourcesSpec, count_shorthand, memory_range_shorthand};
use dstack_model::run::BaseRunConfiguration;
use jiff::Timestamp;

/// dstack's warning when a plan has no offers but the project has fleets.
pub const NO_OFFERS_WARNING: &str = "No matching instance offers available. Possible reasons: \
     https://dstack.ai/docs/guides/troubleshooting/#no-offers";
/// dstack's error when a plan has no offers because the project has no fleets.
pub const NO_FLEETS_WARNING: &str = "The project has no fleets. Create one before submitting a run.\n\
     See https://dstack.ai/docs/guides/troubleshooting/#no-fleets";

const GREY58: Color = Color::AnsiValue(246);
const SEA_GREEN3: Color = Color::AnsiValue(78);
const DEEP_SKY_BLUE1: Color = Color::AnsiValue(39);
const INDIAN_RED1: Color = Color::AnsiValue(203);
const GOLD1: Color = Color::AnsiValue(220);

/// A cell's look: an optional colour and boldness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Look {
    pub color: Option<Color>,
    pub bold: bool,
}

impl Look {
    const PLAIN: Look = Look { color: None, bold: false };
    const SECONDARY: Look = Look { color: Some(GREY58), bold: false };

    fn cell(self, text: impl Into<String>) -> Cell {
        let mut cell = Cell::new(text.into());
        if let Some(color) = self.color {
            cell = cell.fg(color);
        }
        if self.bold {
            cell = cell.add_attribute(Attribute::Bold);
        }
        cell
    }
}

/// A borderless table with bold headers, styled only when `color`.
fn new_table(headers: &[&str], color: bool) -> Table {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    if color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(headers.iter().map(|h| Cell::new(*h).add_attribute(Attribute::Bold)));
    table
}

/// The table's text without trailing spaces.
fn finish(table: &Table) -> String {
    table.to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------
// Small formats
// ---------------------------------------------------------------------------------------------

/// `now`, `42 sec ago`, `3 mins ago`, `yesterday`, `2 weeks ago`, as dstack's `pretty_date`.
pub fn pretty_date(now: Timestamp, time: Timestamp) -> String {
    let diff = now.as_second() - time.as_second();
    if diff < 0 {
        return String::new();
    }
    let (days, seconds) = (diff / 86_400, diff % 86_400);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    // Python's round() on halves goes to the even neighbour; these quotients rarely hit one.
    let round = |x: f64| x.round_ties_even() as i64;
    match days {
        0 if seconds < 10 => "now".to_owned(),
        0 if seconds < 60 => format!("{seconds} sec ago"),
        0 if seconds < 120 => "1 min ago".to_owned(),
        0 if seconds < 3600 => format!("{} mins ago", round(seconds as f64 / 60.0)),
        0 if seconds < 7200 => "1 hour ago".to_owned(),
        0 => format!("{} hours ago", round(seconds as f64 / 3600.0)),
        1 => "yesterday".to_owned(),
        2..7 => format!("{days} days ago"),
        7..31 => plural(round(days as f64 / 7.0), "week"),
        31..365 => plural(round(days as f64 / 30.0), "month"),
        _ => plural(round(days as f64 / 365.0), "year"),
    }
}

/// `$0.1234` with trailing zeros dropped: `$2.5`, `$0`.
pub fn format_price(price: f64) -> String {
    format!("${}", trim_decimal(format!("{price:.4}")))
}

/// `$1.25` from six decimals, as dstack prints a max price.
fn format_max_price(price: f64) -> String {
    format!("${}", trim_decimal(format!("{price:.6}")))
}

fn trim_decimal(text: String) -> String {
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

/// `aws (us-east-1)`; SSH fleets' `remote` backend shows as `ssh`; `-` when unknown.
pub fn format_backend(backend: Option<BackendType>, region: Option<&str>) -> String {
    let Some(backend) = backend else { return "-".to_owned() };
    let name = if backend == BackendType::Remote { "ssh" } else { backend.as_str() };
    match region {
        Some(region) if !region.is_empty() => format!("{name} ({region})"),
        _ => name.to_owned(),
    }
}

/// MiB as GB with at most one decimal: `80GB`, `0.5GB`.
pub fn format_mib_as_gb(mib: i64) -> String {
    let gb = (mib as f64 / 1024.0 * 10.0).round() / 10.0;
    format!("{gb}GB")
}

/// `1d`, `5m`, `90s`: the largest unit that divides the duration.
pub fn format_pretty_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return "0s".to_owned();
    }
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if seconds % n == 0 {
            return format!("{}{unit}", seconds / n);
        }
    }
    format!("{seconds}s")
}

/// An instance's resources: `cpu=8 mem=32GB disk=100GB gpu=A100:80GB:1`.
pub fn offer_resources(r: &Resources, include_spot: bool, gpu_only: bool) -> String {
    let gpu = r.gpus.first().map(|g| {
        let mut parts = vec![g.name.clone()];
        if g.memory_mib > 0 {
            parts.push(format_mib_as_gb(g.memory_mib));
        }
        parts.push(r.gpus.len().to_string());
        format!("gpu={}", parts.join(":"))
    });
    let mut out = if gpu_only {
        match gpu {
            Some(gpu) => gpu,
            None => return "-".to_owned(),
        }
    } else {
        let mut parts = Vec::new();
        if r.cpus > 0 {
            let arch = r.cpu_arch.map(|a| format!("{}:", a.as_str())).unwrap_or_default();
            parts.push(format!("cpu={arch}{}", r.cpus));
        }
        if r.memory_mib > 0 {
            parts.push(format!("mem={}", format_mib_as_gb(r.memory_mib)));
        }
        if r.disk.size_mib > 0 {
            parts.push(format!("disk={}", format_mib_as_gb(r.disk.size_mib)));
        }
        parts.extend(gpu);
        parts.join(" ")
    };
    if include_spot && r.spot {
        out.push_str(" (spot)");
    }
    out
}

/// A resource spec as dstack's plan shows it: `cpu=x86:2.. mem=8GB.. disk=100GB.. gpu=0`.
pub fn spec_resources(spec: &ResourcesSpec) -> String {
    let mut parts = Vec::new();
    let arch = spec.cpu.arch.map(|a| format!("{}:", a.as_str())).unwrap_or_default();
    parts.push(format!("cpu={arch}{}", count_shorthand(&spec.cpu.count)));
    parts.push(format!("mem={}", memory_range_shorthand(&spec.memory).unwrap_or_default()));
    if let Some(disk) = &spec.disk {
        parts.push(format!("disk={}", memory_range_shorthand(&disk.size).unwrap_or_default()));
    }
    if let Some(gpu) = &spec.gpu {
        let mut gpu_parts = Vec::new();
        gpu_parts.extend(gpu.memory.as_ref().and_then(memory_range_shorthand));
        gpu_parts.push(count_shorthand(&gpu.count));
        gpu_parts.extend(gpu.total_memory.as_ref().and_then(memory_range_shorthand));
        gpu_parts.extend(gpu.compute_capability.map(|c| c.to_string()));
        let head = match (&gpu.name, gpu.vendor) {
            (Some(names), _) if !names.is_empty() => Some(names.join(",")),
            (_, Some(vendor)) => Some(vendor.as_str().to_owned()),
            _ => None,
        };
        parts.push(format!("gpu={}", head.into_iter().chain(gpu_parts).collect::<Vec<_>>().join(":")));
    }
    parts.join(" ")
}

/// `extracted/downloaded/total` in MB (GB from 1 GiB), `≥` while the total is a guess.
pub fn format_pull_progress(p: &ImagePullProgress) -> String {
    let (unit, f): (&str, fn(i64) -> String) = if p.total_bytes >= 1 << 30 {
        ("GB", |x| format!("{:.2}", x as f64 / f64::from(1u32 << 30)))
    } else {
        ("MB", |x| format!("{:.0}", x as f64 / f64::from(1u32 << 20)))
    };
    let sign = if p.is_total_bytes_final { "" } else { "≥" };
    format!("{}/{}/{sign}{}{unit}", f(p.extracted_bytes), f(p.downloaded_bytes), f(p.total_bytes))
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// The run's base configuration and its own profile parameters.
pub fn run_configuration_parts(conf: &RunConfiguration) -> (&BaseRunConfiguration, &ProfileParams) {
    match conf {
        RunConfiguration::DevEnvironment(c) => (&c.base, &c.profile),
        RunConfiguration::Task(c) => (&c.base, &c.profile),
        RunConfiguration::Service(c) => (&c.base, &c.profile),
    }
}

fn run_status_look(status: RunStatus, text: &str) -> Look {
    let color = match text {
        "no capacity" | "interrupted" => Some(GOLD1),
        "no fleets" => Some(INDIAN_RED1),
        "pulling" => Some(SEA_GREEN3),
        _ => match status {
            RunStatus::Provisioning | RunStatus::Terminating => Some(DEEP_SKY_BLUE1),
            RunStatus::Running => Some(SEA_GREEN3),
            RunStatus::Failed => Some(INDIAN_RED1),
            // dstack's "grey" is not a colour rich knows, so these print plain.
            RunStatus::Pending | RunStatus::Submitted | RunStatus::Terminated | RunStatus::Done => None,
        },
    };
    Look { color, bold: !status.is_finished() }
}

fn job_status_look(status: JobStatus, text: &str) -> Look {
    let color = match text {
        "no capacity" | "interrupted" => Some(GOLD1),
        "no fleets" => Some(INDIAN_RED1),
        "stopped" => None,
        _ => match status {
            JobStatus::Provisioning | JobStatus::Terminating => Some(DEEP_SKY_BLUE1),
            JobStatus::Pulling | JobStatus::Running => Some(SEA_GREEN3),
            JobStatus::Aborted => Some(GOLD1),
            JobStatus::Failed => Some(INDIAN_RED1),
            JobStatus::Submitted | JobStatus::Terminated | JobStatus::Done => None,
        },
    };
    Look { color, bold: !status.is_finished() }
}

/// The run's STATUS text: the last submission's message once finished, else the run's own.
pub fn run_status_text(run: &Run) -> String {
    let text = match &run.latest_job_submission {
        Some(sub) if run.status.is_finished() => sub.status_message.clone(),
        _ => run.status_message.clone(),
    };
    if text.is_empty() { run.status.as_str().to_owned() } else { text }
}

fn job_status_text(sub: &JobSubmission, verbose: bool) -> String {
    let mut text = if sub.status_message.is_empty() {
        sub.status.as_str().to_owned()
    } else {
        sub.status_message.clone()
    };
    if sub.status == JobStatus::Pulling
        && let Some(progress) = &sub.image_pull_progress
    {
        text.push(' ');
        text.push_str(&format_pull_progress(progress));
    }
    if verbose && let Some(secs) = sub.inactivity_secs.filter(|s| *s > 0) {
        text.push_str(&format!(" (inactive for {})", format_duration_multiunit(secs)));
    }
    text
}

fn format_duration_multiunit(mut seconds: i64) -> String {
    let mut out = Vec::new();
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds / n > 0 {
            out.push(format!("{}{unit}", seconds / n));
            seconds %= n;
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out.join(" ") }
}

/// dstack's `Run.is_deployment_in_progress`.
fn deployment_in_progress(run: &Run) -> bool {
    run.jobs
        .iter()
        .filter_map(|j| j.job_submissions.last())
        .any(|s| !s.status.is_finished() && s.deployment_num != run.deployment_num)
}

/// What `dstack ps` shows: one row per run, or a run row and one row per job.
pub fn runs_table(runs: &[Run], verbose: bool, now: Timestamp, color: bool) -> String {
    let mut headers = vec!["NAME", "BACKEND"];
    headers.extend(if verbose { &["RESOURCES", "INSTANCE TYPE"][..] } else { &["GPU"][..] });
    headers.extend(["PRICE", "STATUS"]);
    if verbose {
        headers.push("PROBES");
    }
    headers.push("SUBMITTED");
    if verbose {
        headers.push("ERROR");
    }
    let mut table = new_table(&headers, color);
    for run in runs {
        let is_service = matches!(run.run_spec.configuration, RunConfiguration::Service(_));
        let show_deployment = (verbose && is_service) || deployment_in_progress(run);
        let replicas: std::collections::BTreeSet<_> =
            run.jobs.iter().map(|j| j.job_spec.replica_num).collect();
        let show_replica = replicas.len() > 1;
        let show_job =
            replicas.iter().any(|r| run.jobs.iter().filter(|j| j.job_spec.replica_num == *r).count() > 1);
        let merge = run.jobs.len() == 1 && !show_deployment;
        let mut name = run.run_spec.run_name.clone().unwrap_or_default();
        if show_deployment {
            name.push_str(&format!(" deployment={}", run.deployment_num));
        }
        let status = run_status_text(run);
        let run_row = Row {
            name: Some(Look { color: None, bold: true }.cell(name.clone())),
            status: Some(run_status_look(run.status, &status).cell(status)),
            submitted: pretty_date(now, run.submitted_at),
            error: run.error.clone().unwrap_or_default(),
            resources: "-".to_owned(),
            gpu: "-".to_owned(),
            price: "-".to_owned(),
            ..Row::default()
        };
        if !merge {
            table.add_row(run_row.clone().cells(verbose));
        }
        let mut jobs: Vec<&Job> = run.jobs.iter().collect();
        jobs.sort_by_key(|j| j.job_spec.replica_num);
        for job in jobs {
            let Some(sub) = job.job_submissions.last() else { continue };
            let mut row = job_row(job, sub, verbose, now);
            if merge {
                row.name = run_row.name.clone();
                row.submitted = run_row.submitted.clone();
                row.error = run_row.error.clone();
            } else {
                let mut parts = Vec::new();
                if show_replica {
                    parts.push(format!("replica={}", job.job_spec.replica_num));
                }
                if show_job {
                    parts.push(format!("job={}", job.job_spec.job_num));
                }
                let mut name = format!("   {}", parts.join(" "));
                if show_deployment {
                    name.push_str(&format!(" deployment={}", sub.deployment_num));
                }
                row.name = Some(Look::SECONDARY.cell(name));
            }
            table.add_row(row.cells(verbose));
        }
    }
    finish(&table)
}

/// One line of the runs table, by column.
#[derive(Clone, Default)]
struct Row {
    name: Option<Cell>,
    backend: String,
    resources: String,
    gpu: String,
    instance_type: String,
    price: String,
    status: Option<Cell>,
    probes: String,
    submitted: String,
    error: String,
}

impl Row {
    fn cells(self, verbose: bool) -> Vec<Cell> {
        let grey = |s: String| Look::SECONDARY.cell(s);
        let blank = || Cell::new("");
        let mut cells = vec![self.name.unwrap_or_else(blank), grey(self.backend)];
        if verbose {
            cells.push(grey(self.resources));
            cells.push(grey(self.instance_type));
        } else {
            cells.push(Look::PLAIN.cell(self.gpu));
        }
        cells.push(grey(self.price));
        cells.push(self.status.unwrap_or_else(blank));
        if verbose {
            cells.push(Cell::new(self.probes));
        }
        cells.push(grey(self.submitted));
        if verbose {
            cells.push(Cell::new(self.error));
        }
        cells
    }
}

fn job_row(job: &Job, sub: &JobSubmission, verbose: bool, now: Timestamp) -> Row {
    let status = job_status_text(sub, verbose);
    let mut row = Row {
        status: Some(job_status_look(sub.status, &sub.status_message).cell(status)),
        submitted: pretty_date(now, sub.submitted_at),
        error: sub.error.clone().unwrap_or_default(),
        resources: "-".to_owned(),
        gpu: "-".to_owned(),
        price: "-".to_owned(),
        probes: job_probes(job, sub),
        ..Row::default()
    };
    if let Some(jpd) = &sub.job_provisioning_data {
        let mut instance_type = &jpd.instance_type;
        let mut price = jpd.price;
        let mut shared = None;
        if let Some(offer) = sub.job_runtime_data.as_ref().and_then(|d| d.offer.as_ref())
            && offer.total_blocks > 1
        {
            instance_type = &offer.instance;
            price = offer.price;
            shared = Some(offer);
        }
        let r = &instance_type.resources;
        row.backend = format_backend(Some(jpd.backend), Some(&jpd.region));
        row.resources = offer_resources(r, false, false);
        row.gpu = offer_resources(r, false, true);
        row.instance_type = instance_type.name.clone();
        if let Some(offer) = shared {
            row.instance_type.push_str(&format!(" ({}/{})", offer.blocks, offer.total_blocks));
        }
        if let Some(reservation) = &jpd.reservation {
            row.instance_type.push_str(&format!(" ({reservation})"));
        }
        row.price = format_price(price);
        if r.spot {
            row.price.push_str(" (spot)");
        }
    }
    row
}

/// `✓` ready, `~` passing but not ready yet, `×` failing, per probe, while running.
fn job_probes(job: &Job, sub: &JobSubmission) -> String {
    if sub.probes.is_empty() || sub.status != JobStatus::Running {
        return String::new();
    }
    let marks: Vec<&str> = job
        .job_spec
        .probes
        .iter()
        .zip(&sub.probes)
        .map(|(spec, probe)| match probe.success_streak {
            n if n >= spec.ready_after => "✓",
            n if n > 0 => "~",
            _ => "×",
        })
        .collect();
    marks.chunks(5).map(|c| c.concat()).collect::<Vec<_>>().join(" ")
}

/// The lines dstack prints when an attached run finishes, and whether it succeeded.
pub fn finished_message(run: &Run) -> (Vec<String>, bool) {
    let sub = run.latest_job_submission.as_ref().or_else(|| run.jobs.first()?.job_submissions.last());
    let status_message = sub.map_or(run.status_message.as_str(), |s| s.status_message.as_str());
    let status_message = if status_message.is_empty() { run.status.as_str() } else { status_message };
    if run.status == RunStatus::Done {
        return (vec![capitalize(status_message)], true);
    }
    let error = sub.map_or(run.error.as_deref(), |s| s.error.as_deref());
    let mut first = capitalize(status_message);
    if let Some(error) = error {
        first.push_str(&format!(" ({})", capitalize(error)));
    }
    let mut lines = vec![first];
    if let Some(message) = sub.and_then(|s| s.termination_reason_message.as_deref()) {
        lines.push(message.to_owned());
    }
    if let Some(reason) = sub.and_then(|s| s.termination_reason)
        && reason != dstack_api::runs::JobTerminationReason::FailedToStartDueToNoCapacity
    {
        let name = run.run_spec.run_name.as_deref().unwrap_or_default();
        lines.push(format!("Check `dstack logs -d {name}` for more details."));
    }
    (lines, false)
}

/// Python's `str.capitalize`: the first letter upper case, the rest lower case.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Plans and offers
// ---------------------------------------------------------------------------------------------

/// The plan's properties (`Project`, `User`, …) as dstack prints them before offers;
/// `verbose` adds the creation policy and reservation even when they are the defaults.
pub fn plan_properties(plan: &RunPlan, verbose: bool, color: bool) -> String {
    let spec = plan.effective_run_spec.as_ref().unwrap_or(&plan.run_spec);
    let Some(job_plan) = plan.job_plans.first() else { return String::new() };
    let job_spec = &job_plan.job_spec;
    let req = &job_spec.requirements;
    let (_, conf_profile) = run_configuration_parts(&spec.configuration);
    let base_profile = spec.profile.as_ref().map(|p| p.params.clone()).unwrap_or_default();
    let profile = conf_profile.merged_over(&base_profile);
    let mut kind = spec.configuration.type_name().to_owned();
    if let RunConfiguration::Task(task) = &spec.configuration {
        kind.push_str(&format!(" (nodes={})", task.nodes.unwrap_or(1)));
    }
    let idle = match profile.idle_duration {
        Some(d) if d < 0 => "-".to_owned(),
        Some(d) => format_pretty_duration(d),
        None => format_pretty_duration(300),
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("Project", plan.project_name.clone()),
        ("User", plan.user.clone()),
        ("Configuration", spec.configuration_path.clone().unwrap_or_else(|| "-".to_owned())),
        ("Type", kind),
        ("Resources", spec_resources(&req.resources)),
        (
            "Spot policy",
            match req.spot {
                None => "auto",
                Some(true) => "spot",
                Some(false) => "on-demand",
            }
            .to_owned(),
        ),
        ("Max price", req.max_price.filter(|p| *p != 0.0).map_or("off".to_owned(), format_max_price)),
        (
            "Retry policy",
            job_spec.retry.as_ref().map_or("off".to_owned(), |r| {
                let events: Vec<_> = r.on_events.iter().map(|e| e.as_str()).collect();
                format!("{}[{}]", format_pretty_duration(r.duration), events.join(", "))
            }),
        ),
    ];
    let creation_policy = profile.creation_policy.unwrap_or(CreationPolicy::ReuseOrCreate);
    if verbose || creation_policy != CreationPolicy::ReuseOrCreate {
        rows.push(("Creation policy", creation_policy.as_str().to_owned()));
    }
    rows.push(("Idle duration", idle));
    rows.push(("Max duration", job_spec.max_duration.map_or("off".to_owned(), format_pretty_duration)));
    if let RunConfiguration::DevEnvironment(dev) = &spec.configuration {
        let inactivity =
            dev.inactivity_duration.filter(|d| *d > 0).map_or("off".to_owned(), format_pretty_duration);
        rows.push(("Inactivity duration", inactivity));
    }
    if verbose || profile.reservation.is_some() {
        rows.push(("Reservation", profile.reservation.clone().unwrap_or_else(|| "no".to_owned())));
    }
    let mut table = new_table(&[], color);
    table.set_header(Vec::<Cell>::new());
    for (key, value) in rows {
        table.add_row([Look { color: None, bold: true }.cell(key), Cell::new(value)]);
    }
    finish(&table).lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join("\n")
}

/// The offers table (`#`, `BACKEND`, `RESOURCES`, `INSTANCE TYPE`, `PRICE`, availability), with
/// dstack's `Shown N of M offers` footer when there are more.
pub fn offers_table(
    offers: &[InstanceOfferWithAvailability],
    total_offers: i64,
    max_price: Option<f64>,
    color: bool,
) -> String {
    let mut table = new_table(&["#", "BACKEND", "RESOURCES", "INSTANCE TYPE", "PRICE", ""], color);
    for (i, offer) in offers.iter().enumerate() {
        let look = if i == 0 { Look::PLAIN } else { Look::SECONDARY };
        let grey = if i == 0 { Look::SECONDARY } else { look };
        let mut instance = offer.instance.name.clone();
        if offer.total_blocks > 1 {
            instance.push_str(&format!(" ({}/{})", offer.blocks, offer.total_blocks));
        }
        let availability = if offer.availability.is_available()
            && offer.availability != dstack_api::runs::InstanceAvailability::Idle
        {
            String::new()
        } else {
            offer.availability.as_str().replace('_', " ")
        };
        table.add_row([
            look.cell((i + 1).to_string()),
            grey.cell(format_backend(Some(offer.backend), Some(&offer.region))),
            look.cell(offer_resources(&offer.instance.resources, true, false)),
            grey.cell(instance),
            grey.cell(format_price(offer.price)),
            look.cell(availability),
        ]);
    }
    let shown = offers.len() as i64;
    if total_offers > shown {
        table.add_row([Cell::new(""), Look::SECONDARY.cell("...")]);
    }
    let mut out = finish(&table);
    if total_offers > shown {
        let max = format_max_price(max_price.unwrap_or(0.0));
        out.push_str(&format!("\n Shown {shown} of {total_offers} offers, {max} max"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Fleets
// ---------------------------------------------------------------------------------------------

/// What `dstack fleet list` shows: a row per fleet (newest first), a row per instance.
/// `verbose` (`-v`) shows RESOURCES and DRIVER instead of GPU, and an ERROR column: dstack's
/// termination reason of a terminated instance and (ours) why an SSH host is not added yet.
pub fn fleets_table(fleets: &[Fleet], project: &str, now: Timestamp, color: bool, verbose: bool) -> String {
    let headers: &[&str] = if verbose {
        &["NAME", "NODES", "RESOURCES", "DRIVER", "SPOT", "BACKEND", "PRICE", "STATUS", "CREATED", "ERROR"]
    } else {
        &["NAME", "NODES", "GPU", "SPOT", "BACKEND", "PRICE", "STATUS", "CREATED"]
    };
    let mut table = new_table(headers, color);
    let mut fleets: Vec<&Fleet> = fleets.iter().collect();
    fleets.sort_by_key(|f| std::cmp::Reverse(f.created_at));
    let grey = |s: String| Look::SECONDARY.cell(s);
    for fleet in fleets {
        let conf = &fleet.spec.configuration;
        let profile = &fleet.spec.profile.params;
        let (nodes, gpu, backend, spot, price) = match &conf.ssh_config {
            Some(ssh) => {
                (ssh.hosts.len().to_string(), String::new(), "ssh".to_owned(), String::new(), String::new())
            }
            None => {
                let nodes = conf.nodes.as_ref().map_or(String::new(), |n| match n.max {
                    Some(max) if max == n.min => n.min.to_string(),
                    Some(max) => format!("{}..{max}", n.min),
                    None => format!("{}..", n.min),
                });
                let backends =
                    conf.profile.backends.as_ref().filter(|b| !b.is_empty()).map_or("*".to_owned(), |b| {
                        b.iter().map(|b| format_backend(Some(*b), None)).collect::<Vec<_>>().join(", ")
                    });
                let spot = conf
                    .profile
                    .spot_policy
                    .or(profile.spot_policy)
                    .map_or(String::new(), |s| s.as_str().to_owned());
                let price =
                    conf.profile.max_price.or(profile.max_price).map_or(String::new(), |p| {
                        format!("$0..{}", format_price(p).trim_start_matches('$'))
                    });
                (nodes, fleet_gpu(conf.resources.as_ref()), backends, spot, price)
            }
        };
        let name = if fleet.project_name == project {
            fleet.name.clone()
        } else {
            format!("{}/{}", fleet.project_name, fleet.name)
        };
        let status_look = match fleet.status {
            FleetStatus::Terminating => Look { color: Some(DEEP_SKY_BLUE1), bold: true },
            FleetStatus::Failed => Look { color: Some(INDIAN_RED1), bold: true },
            _ => Look::SECONDARY,
        };
        let resources = match (&conf.ssh_config, &conf.resources) {
            (None, Some(r)) => spec_resources(r),
            _ => String::new(),
        };
        let mut row = vec![grey(name), grey(nodes)];
        if verbose {
            row.extend([grey(resources), Cell::new("")]);
        } else {
            row.push(grey(gpu));
        }
        row.extend([
            grey(spot),
            grey(backend),
            grey(price),
            status_look.cell(fleet.status.as_str()),
            grey(pretty_date(now, fleet.created_at)),
        ]);
        if verbose {
            row.push(Cell::new(""));
        }
        table.add_row(row);
        for instance in &fleet.instances {
            table.add_row(instance_row(instance, now, verbose));
        }
    }
    finish(&table)
}

fn fleet_gpu(resources: Option<&ResourcesSpec>) -> String {
    let Some(gpu) = resources.and_then(|r| r.gpu.as_ref()) else { return String::new() };
    if gpu.count.min.unwrap_or(0) == 0 && gpu.count.max.unwrap_or(0) == 0 {
        return String::new();
    }
    let mut parts =
        vec![gpu.name.as_ref().filter(|n| !n.is_empty()).map_or("gpu".to_owned(), |n| n.join(","))];
    parts.extend(gpu.memory.as_ref().and_then(memory_range_shorthand));
    parts.push(count_shorthand(&gpu.count));
    parts.join(":")
}

fn instance_row(instance: &Instance, now: Timestamp, verbose: bool) -> Vec<Cell> {
    let is_ssh = instance.backend == Some(BackendType::Remote);
    let (spot, price) = if is_ssh {
        (String::new(), String::new())
    } else {
        let spot = instance
            .instance_type
            .as_ref()
            .map_or(String::new(), |t| if t.resources.spot { "spot" } else { "on-demand" }.to_owned());
        (spot, instance.price.map_or(String::new(), format_price))
    };
    let pending = matches!(instance.status, InstanceStatus::Pending | InstanceStatus::Provisioning);
    let gpu = match &instance.instance_type {
        Some(t) if !(is_ssh && pending) => offer_resources(&t.resources, false, !verbose),
        _ => String::new(),
    };
    let look = match instance.status {
        InstanceStatus::Idle => Look { color: Some(SEA_GREEN3), bold: true },
        InstanceStatus::Terminated => Look::SECONDARY,
        _ => Look { color: Some(DEEP_SKY_BLUE1), bold: true },
    };
    let available = matches!(instance.status, InstanceStatus::Idle | InstanceStatus::Busy);
    let mut status = match instance.total_blocks {
        Some(total) if available && total > 1 => format!("{}/{total} busy", instance.busy_blocks),
        _ => instance.status.as_str().to_owned(),
    };
    if available {
        if instance.unreachable {
            status.push_str(" (unreachable)");
        } else if instance.health_status != HealthStatus::Healthy {
            status.push_str(&format!(" ({})", instance.health_status.as_str()));
        }
    }
    let mut row =
        vec![Cell::new(format!("   instance={}", instance.instance_num)), Cell::new(""), Cell::new(gpu)];
    if verbose {
        let driver = instance.gpu_driver.as_ref().map_or(String::new(), |d| d.version.clone());
        row.push(Cell::new(driver));
    }
    row.extend([
        Look::SECONDARY.cell(spot),
        Cell::new(format_backend(instance.backend, instance.region.as_deref())),
        Cell::new(price),
        look.cell(status),
        Look::SECONDARY.cell(pretty_date(now, instance.created)),
    ]);
    if verbose {
        let error = match instance.status {
            InstanceStatus::Terminated => instance.termination_reason.clone().unwrap_or_default(),
            // Ours: why an SSH host is not added yet (dstack only logs it).
            InstanceStatus::Pending => instance.termination_reason_message.clone().unwrap_or_default(),
            _ => String::new(),
        };
        row.push(Cell::new(error));
    }
    row
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

/// The keys of two JSON objects whose values differ: `old`'s order, then keys only `new` has
/// (an absent key and `null` are the same, as pydantic's `None` default).
fn changed_keys(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    use serde_json::{Map, Value};
    let empty = Map::new();
    let (old, new) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let get = |map: &Map<String, Value>, k: &str| map.get(k).cloned().unwrap_or(Value::Null);
    let mut keys: Vec<&String> = old.keys().collect();
    keys.extend(new.keys().filter(|k| !old.contains_key(*k)));
    keys.into_iter().filter(|k| get(old, k) != get(new, k)).cloned().collect()
}

/// dstack's `render_run_spec_diff` and `_render_fleet_spec_diff`: what changed between a
/// resource's spec and the applied one, as a nested list ending with a newline (`- Configuration
/// properties:` with the changed fields under it; a changed configuration type or a profile
/// added or removed is one line; `friendly` names some top-level fields); `None` when nothing
/// changed.
pub fn spec_diff(
    old: &serde_json::Value,
    new: &serde_json::Value,
    friendly: &[(&str, &str)],
) -> Option<String> {
    let mut out = String::new();
    for field in changed_keys(old, new) {
        let (o, n) = (&old[&field], &new[&field]);
        match field.as_str() {
            "merged_profile" => {}
            "configuration" if o["type"] != n["type"] => out.push_str("- Configuration type\n"),
            "profile" if o.is_null() || n.is_null() => out.push_str("- Profile\n"),
            "configuration" | "profile" => {
                let label = if field == "profile" { "Profile" } else { "Configuration" };
                out.push_str(&format!("- {label} properties:\n"));
                for key in changed_keys(o, n) {
                    out.push_str(&format!("  - {key}\n"));
                }
            }
            other => match friendly.iter().find(|(k, _)| *k == other) {
                Some((_, label)) => out.push_str(&format!("- {label}\n")),
                None => {
                    // Python's `str.capitalize`.
                    let words = other.replace('_', " ").to_lowercase();
                    let mut chars = words.chars();
                    let label: String =
                        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
                    out.push_str(&format!("- {label}\n"));
                }
            },
        }
    }
    (!out.is_empty()).then_some(out)
}
