//! `dstack apply -f FILE`: check the configuration offline, show the plan, submit the run and
//! (unless `-d`) follow it (api.md §4.2, §4.3).
//!
//! Attached mode is our own: instead of dstack's SSH tunnel and runner WebSocket, it shows the
//! run's progress (a spinner with the status and image pull progress) and then streams the
//! job's logs from the server (`logs/poll`) until the run finishes. Ctrl-C detaches and leaves
//! the run going.

use std::path::{Path, PathBuf};
use std::time::Duration;

use console::Term;
use dstack_api::repos::{RepoInfo, SaveRepoCredsRequest};
use dstack_api::runs::{
    ApplyAction, ApplyRunPlanInput, ApplyRunPlanRequest, GetRunPlanRequest, JobStatus, RepoData, Run,
    RunConfiguration, RunPlan, RunSpec, RunStatus,
};
use dstack_model::configuration::AnyConfiguration;
use dstack_model::profile::{Profile, ProfileParams};
use jiff::Timestamp;

use crate::common::{
    Session, confirm, connect, interrupted, poll_interval, sleep_unless_interrupted, stdout_color,
};
use crate::logs::{Cursor, Followed, exit_code, follow, pick_job};
use crate::render::{self, NO_FLEETS_WARNING, NO_OFFERS_WARNING};
use crate::repo::Repo;
use crate::{EXIT_INVALID, EXIT_OK, EXIT_USAGE, fail};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The configuration file.
    #[arg(short = 'f', long, value_name = "FILE", default_value = ".dstack.yml")]
    pub file: PathBuf,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Re-submit even when an active run with the same configuration exists.
    #[arg(long)]
    pub force: bool,
    /// Exit right after submitting.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Show every plan property, defaults included.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The run name (overrides `name` in the file).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// How many offers to show.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(i64).range(1..=10000))]
    pub max_offers: i64,
    /// An environment variable for the run: VAR=VALUE, or VAR to take it from this shell.
    #[arg(short = 'e', long = "env", value_name = "VAR[=VALUE]")]
    pub env: Vec<String>,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
    #[command(flatten)]
    pub repo: crate::repo::RepoArgs,
}

/// Reads and checks a configuration file, printing problems as `dstack validate` does.
/// Errors: 1 for an invalid configuration, 2 for an unreadable file.
pub fn load(path: &Path) -> Result<AnyConfiguration, u8> {
    let name = path.display().to_string();
    let stderr = Term::stderr();
    let text = crate::validate::read_input(&path.to_path_buf()).map_err(|message| {
        let _ = stderr.write_line(&format!("{name}: {} {message}", console::style("error:").red().bold()));
        EXIT_USAGE
    })?;
    crate::validate::check(&name, &text, &stderr).ok_or(EXIT_INVALID)
}

/// The run spec `dstack apply` submits for a run configuration: the virtual repo (see
/// [`with_repo`] for a Git one), `repo_dir` from `repos[0].path`, the default profile, `-n`
/// and `-e` applied, variables without a value taken from `lookup`.
pub fn build_run_spec(
    configuration: AnyConfiguration,
    configuration_path: &str,
    name: Option<&str>,
    env: &[String],
    lookup: impl FnMut(&str) -> Option<String>,
) -> Result<RunSpec, String> {
    let mut configuration = match configuration {
        AnyConfiguration::Task(c) => RunConfiguration::Task(c),
        AnyConfiguration::Service(c) => RunConfiguration::Service(c),
        AnyConfiguration::DevEnvironment(c) => RunConfiguration::DevEnvironment(c),
        other => {
            return Err(format!(
                "{configuration_path}: this CLI applies run and fleet configurations; \
                 `{}` configurations are not supported yet",
                other.type_name()
            ));
        }
    };
    let base = match &mut configuration {
        RunConfiguration::Task(c) => &mut c.base,
        RunConfiguration::Service(c) => &mut c.base,
        RunConfiguration::DevEnvironment(c) => &mut c.base,
    };
    if let Some(name) = name {
        base.name = Some(name.to_owned());
    }
    for item in env {
        match item.split_once('=') {
            Some((key, value)) => base.env.set(key, value),
            None => base.env.set_required(item.as_str()),
        }
    }
    base.env.resolve(lookup)?;
    let run_name = base.name.clone();
    let repo_dir = base.repos.first().map(|r| r.path.clone());
    Ok(RunSpec {
        run_name,
        repo_id: Some("none".to_owned()),
        repo_data: Some(RepoData::Virtual),
        repo_code_hash: None,
        repo_dir,
        file_archives: Vec::new(),
        working_dir: None,
        configuration_path: Some(configuration_path.to_owned()),
        configuration,
        profile: Some(default_profile()),
        ssh_key_pub: None,
    })
}

/// dstack's profile when none is selected.
pub fn default_profile() -> Profile {
    Profile { params: ProfileParams::default(), name: "default".to_owned(), default: false }
}

pub fn run(args: &ApplyArgs) -> u8 {
    let configuration = match load(&args.file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let configuration = match configuration {
        AnyConfiguration::Fleet(conf) => return crate::fleet_apply::run(*conf, args),
        AnyConfiguration::Gateway(conf) => return crate::gateway::apply(*conf, args),
        other => other,
    };
    let path = args.file.display().to_string();
    let spec = match build_run_spec(configuration, &path, args.name.as_deref(), &args.env, |k| {
        std::env::var(k).ok()
    }) {
        Ok(spec) => spec,
        Err(message) => return fail(message),
    };
    if args.repo.repo.is_some() && args.repo.no_repo {
        return fail("Either --repo or --no-repo can be specified");
    }
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut spec = spec;
    let base = match &spec.configuration {
        RunConfiguration::Task(c) => &c.base,
        RunConfiguration::Service(c) => &c.base,
        RunConfiguration::DevEnvironment(c) => &c.base,
    };
    let (files, repos) = (base.files.clone(), base.repos.clone());
    let config_dir = std::path::absolute(&args.file)
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_default();
    let repo = match crate::repo::get_repo(&session.client, &session.project, &repos, &config_dir, &args.repo)
    {
        Ok(repo) => repo,
        // A problem with `repos[0]` points at it; one with `-P` is about the flag.
        Err(message) if args.repo.repo.is_none() => {
            return fail(format!("{}{message}", repos_location(&args.file)));
        }
        Err(message) => return fail(message),
    };
    if let Some(repo) = &repo {
        spec = with_repo(spec, repo);
    }
    if !files.is_empty() {
        match crate::files::upload(&session.client, &config_dir, &files) {
            Ok(archives) => spec.file_archives = archives,
            Err(message) => return fail(message),
        }
    }
    match submit(&session, spec, repo.as_ref(), args) {
        Ok(Some(run)) if !args.detach => attach(&session, run),
        Ok(_) => EXIT_OK,
        Err(code) => code,
    }
}

/// The run spec with a Git repo instead of the virtual one.
pub fn with_repo(mut spec: RunSpec, repo: &Repo) -> RunSpec {
    spec.repo_id = Some(repo.repo_id.clone());
    spec.repo_data = Some(RepoData::Remote(repo.data.clone()));
    spec.repo_code_hash = repo.code_hash();
    spec
}

/// `FILE:LINE: \`repos[0]\`: ` for messages about the configuration's repo (the line of
/// `repos:`, when it can be found).
fn repos_location(file: &Path) -> String {
    let line = std::fs::read_to_string(file).ok().and_then(|text| {
        text.lines().position(|l| l.strip_prefix("repos").is_some_and(|r| r.trim_start().starts_with(':')))
    });
    match line {
        Some(i) => format!("{}:{}: `repos[0]`: ", file.display(), i + 1),
        None => format!("{}: `repos[0]`: ", file.display()),
    }
}

/// Plans, confirms, uploads the repo's local changes and submits; `None` when the user
/// declined or nothing was to be done.
fn submit(
    session: &Session,
    spec: RunSpec,
    repo: Option<&Repo>,
    args: &ApplyArgs,
) -> Result<Option<Run>, u8> {
    let (client, project) = (&session.client, session.project.as_str());
    if repo.is_none() {
        let virtual_repo = SaveRepoCredsRequest {
            repo_id: "none".to_owned(),
            repo_info: RepoInfo::Virtual {},
            repo_creds: None,
        };
        client.init_repo(project, &virtual_repo).map_err(fail)?;
    }
    let req = GetRunPlanRequest {
        run_spec: spec,
        max_offers: Some(args.max_offers),
        reverse_offers: false,
        full_offers: false,
        unallocated_resources: false,
        for_offers_only: false,
    };
    let plan = client.get_run_plan(project, &req).map_err(fail)?;
    let no_offers = plan.job_plans.first().is_none_or(|j| j.offers.is_empty());
    // Only to word the warning: a server without `fleets/list` gets the plain "no offers".
    let no_fleets = no_offers && client.list_fleets(project).is_ok_and(|fleets| fleets.is_empty());
    print_plan(&plan, args, no_offers, no_fleets);

    let run_name = plan.run_spec.run_name.clone();
    let mut prompt = match &run_name {
        Some(name) => format!("Submit the run {name}?"),
        None => "Submit a new run?".to_owned(),
    };
    let mut stop_first = None;
    if let Some(current) = &plan.current_resource {
        let name = run_name.as_deref().unwrap_or_default();
        let effective = plan.effective_run_spec.as_ref().unwrap_or(&plan.run_spec);
        let diff = run_spec_diff(&current.run_spec, effective);
        if let (ApplyAction::Update, Some(diff)) = (plan.action, &diff) {
            out!("Active run {name} already exists. Detected changes that can be updated in-place:\n{diff}");
            prompt = "Update the run?".to_owned();
        } else if plan.action == ApplyAction::Update {
            out!("Active run {name} already exists. Detected no changes.");
            if args.yes && !args.force {
                out!("Use --force to apply anyway.");
                return Ok(None);
            }
            stop_first = Some(name.to_owned());
            prompt = "Stop and override the run?".to_owned();
        } else if !current.status.is_finished() {
            let diff = diff.unwrap_or_default();
            out!(
                "Active run {name} already exists. Detected changes that cannot be updated in-place:\n{diff}"
            );
            stop_first = Some(name.to_owned());
            prompt = "Stop and override the run?".to_owned();
        }
    }
    if !args.yes && !confirm(&prompt) {
        out!("\nExiting...");
        return Ok(None);
    }
    if let Some(name) = stop_first {
        stop_and_wait(session, &name)?;
    }
    if let Some(repo) = repo
        && let (Some(hash), Some(diff)) = (repo.code_hash(), repo.diff.clone())
    {
        client.upload_code(project, &repo.repo_id, &hash, diff).map_err(fail)?;
    }
    let action = plan.action;
    let apply = ApplyRunPlanRequest {
        plan: ApplyRunPlanInput { run_spec: plan.run_spec, current_resource: plan.current_resource },
        force: args.force,
    };
    let run = client.apply_run_plan(project, &apply).map_err(fail)?;
    if args.detach {
        let name = run.run_spec.run_name.as_deref().unwrap_or_default();
        let verb = if action == ApplyAction::Update { "updated" } else { "submitted" };
        out!("Run {name} {verb}, detaching...");
    }
    Ok(Some(run))
}

/// dstack's `render_run_spec_diff` of an active run's spec and the applied one.
pub fn run_spec_diff(old: &RunSpec, new: &RunSpec) -> Option<String> {
    const FRIENDLY: &[(&str, &str)] = &[
        ("repo_id", "Repo ID"),
        ("repo_code_hash", "Repo files"),
        ("repo_data", "Repo state (branch, commit, or other)"),
        ("ssh_key_pub", "Public SSH key"),
    ];
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else { return None };
    render::spec_diff(&old, &new, FRIENDLY)
}

fn print_plan(plan: &RunPlan, args: &ApplyArgs, no_offers: bool, no_fleets: bool) {
    let color = stdout_color();
    out!("{}\n", render::plan_properties(plan, args.verbose, color));
    if no_offers {
        let (text, style) = if no_fleets {
            (NO_FLEETS_WARNING, console::style(NO_FLEETS_WARNING).red())
        } else {
            (NO_OFFERS_WARNING, console::style(NO_OFFERS_WARNING).yellow())
        };
        out!("{}\n", if color { style.to_string() } else { text.to_owned() });
        return;
    }
    if let Some(job_plan) = plan.job_plans.first() {
        let shown = &job_plan.offers[..job_plan.offers.len().min(args.max_offers as usize)];
        out!("{}\n", render::offers_table(shown, job_plan.total_offers, job_plan.max_price, color));
    }
}

/// Stops the active run and waits until it has finished (dstack's "stop and override").
fn stop_and_wait(session: &Session, name: &str) -> Result<(), u8> {
    eprintln!("Stopping run {name}...");
    session.client.stop_runs(&session.project, &[name.to_owned()], false).map_err(fail)?;
    loop {
        match session.client.get_run(&session.project, name) {
            Ok(run) if !run.status.is_finished() => std::thread::sleep(Duration::from_secs(1)),
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(fail(e)),
        }
    }
}

/// Whether the run is past provisioning: dstack's `_is_ready_to_attach`, plus finished runs.
pub fn past_provisioning(run: &Run) -> bool {
    if run.status.is_finished() {
        return true;
    }
    let waiting_run = matches!(
        run.status,
        RunStatus::Submitted | RunStatus::Pending | RunStatus::Provisioning | RunStatus::Terminating
    );
    let waiting_job = run.jobs.first().and_then(|j| j.job_submissions.last()).is_some_and(|s| {
        matches!(s.status, JobStatus::Submitted | JobStatus::Provisioning | JobStatus::Pulling)
    });
    !waiting_run && !waiting_job
}

/// The spinner's text: `t1: provisioning`, `t1: pulling 100/300/≥500MB`.
pub fn progress_text(run: &Run) -> String {
    let name = run.run_spec.run_name.as_deref().unwrap_or_default();
    let mut text = format!("{name}: {}", render::run_status_text(run));
    if let Some(sub) = run.jobs.first().and_then(|j| j.job_submissions.last())
        && sub.status == JobStatus::Pulling
        && let Some(progress) = &sub.image_pull_progress
    {
        text.push_str(&format!(" {}", render::format_pull_progress(progress)));
    }
    if run.status == RunStatus::Pending
        && let Some(next) = run.next_triggered_at
    {
        text.push_str(&format!(" (next run {})", next.strftime("%Y-%m-%d %H:%M UTC")));
    }
    text
}

/// A service's URL; the server may give a path relative to itself.
pub fn service_url(run: &Run, server_url: &str) -> Option<String> {
    let url = &run.service.as_ref()?.url;
    Some(if url.starts_with('/') { format!("{server_url}{url}") } else { url.clone() })
}

/// Follows a submitted run: progress until it runs, then its logs until it finishes.
fn attach(session: &Session, mut run: Run) -> u8 {
    let flag = interrupted();
    let name = run.run_spec.run_name.clone().unwrap_or_default();
    let progress = Progress::new();
    let mut attempt = 0;
    while !past_provisioning(&run) {
        progress.show(&progress_text(&run));
        if sleep_unless_interrupted(poll_interval(attempt), &flag) {
            progress.clear();
            return detached(&name);
        }
        attempt += 1;
        run = match crate::logs::with_retries(|| session.client.get_run(&session.project, &name)) {
            Ok(run) => run,
            Err(e) => {
                progress.clear();
                return fail(e);
            }
        };
    }
    progress.clear();
    let started = run.jobs.iter().flat_map(|j| &j.job_submissions).any(|s| s.job_provisioning_data.is_some());
    if run.status.is_finished() && !started {
        out!(
            "{}\n",
            render::runs_table(
                std::slice::from_ref(&run),
                run.status == RunStatus::Failed,
                Timestamp::now(),
                stdout_color()
            )
        );
        return finished(&run);
    }
    if !run.status.is_finished() {
        eprintln!("{name} provisioning completed ({})", run.status.as_str());
    }
    if let Some(url) = service_url(&run, session.client.base_url()) {
        out!("Service is published at:\n  {url}\n");
    }
    // A dev environment is attached over SSH, as dstack does, with its logs from the runner.
    if matches!(run.run_spec.configuration, RunConfiguration::DevEnvironment(_)) && !run.status.is_finished()
    {
        let options = crate::attach::Options {
            identity: None,
            logs: true,
            bind: "localhost".to_owned(),
            overrides: Vec::new(),
            replica: None,
            job: 0,
            start_time: None,
        };
        return crate::attach::attach(session, run, &options);
    }
    let Some(sub) = pick_job(&run, None, 0).and_then(|j| j.job_submissions.last()) else {
        return finished(&run);
    };
    let mut cursor = Cursor { submission_id: sub.id, start_time: None, diagnose: false };
    let mut out = std::io::stdout().lock();
    match follow(session, &name, &mut cursor, (None, 0), &mut out, &flag) {
        Ok(Followed::Finished(run)) => finished(&run),
        Ok(Followed::Interrupted) => detached(&name),
        Err(e) => fail(e),
    }
}

fn finished(run: &Run) -> u8 {
    let (lines, ok) = render::finished_message(run);
    for (i, line) in lines.iter().enumerate() {
        let styled = match (i, ok) {
            (_, true) => console::style(line).green().bold(),
            (0, false) => console::style(line).red(),
            _ => console::style(line),
        };
        out!("{styled}");
    }
    exit_code(run)
}

fn detached(name: &str) -> u8 {
    out!();
    out!("Detached; the run {name} goes on.");
    out!("  Follow its logs: dstack logs -f {name}");
    out!("  Stop it:         dstack stop {name}");
    EXIT_OK
}

/// A one-line status with a spinner on a terminal; plain lines when the status changes
/// otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: std::cell::RefCell<String>,
}

impl Progress {
    fn new() -> Progress {
        let bar = Term::stderr().is_term().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress { bar, last: std::cell::RefCell::new(String::new()) }
    }

    fn show(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_owned()),
            None if *self.last.borrow() != text => {
                eprintln!("{text}");
                *self.last.borrow_mut() = text.to_owned();
            }
            None => {}
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            let _ = Term::stderr().show_cursor();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/../api/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn parse(text: &str) -> AnyConfiguration {
        dstack_model::parse_configuration(text).configuration.unwrap()
    }

    /// What dstack 0.22.5's `render_run_spec_diff` prints for the same changes.
    #[test]
    fn run_spec_diffs_as_dstack_renders_them() {
        let spec = |edit: &dyn Fn(&mut serde_json::Value)| -> RunSpec {
            let mut body = fixture("service.runs_apply.request");
            edit(&mut body["plan"]["run_spec"]);
            serde_json::from_value(body["plan"]["run_spec"].clone()).unwrap()
        };
        let old = spec(&|_| {});
        assert_eq!(run_spec_diff(&old, &old.clone()), None);
        let env = spec(&|s| s["configuration"]["env"] = serde_json::json!({"VERSION": "2"}));
        assert_eq!(run_spec_diff(&old, &env).as_deref(), Some("- Configuration properties:\n  - env\n"));
        let many = spec(&|s| {
            s["configuration"]["commands"] = serde_json::json!(["serve"]);
            s["configuration"]["replicas"] = serde_json::json!({"min": 2, "max": 2});
            s["repo_code_hash"] = serde_json::json!("abc");
            s["ssh_key_pub"] = serde_json::json!("ssh-rsa AAAA");
            s["configuration_path"] = serde_json::json!("other.yml");
        });
        assert_eq!(
            run_spec_diff(&old, &many).as_deref(),
            Some(
                "- Repo files\n- Configuration path\n- Configuration properties:\n  - replicas\n  - commands\n\
                 - Public SSH key\n"
            )
        );
        let task = spec(&|s| s["configuration"] = serde_json::json!({"type": "task", "commands": ["true"]}));
        assert_eq!(run_spec_diff(&old, &task).as_deref(), Some("- Configuration type\n"));
    }

    #[test]
    fn get_plan_body_is_the_captured_one() {
        // The captured task asked for no GPU.
        let conf = parse("type: task\nname: t1\ncommands:\n  - echo hello\nresources:\n  gpu: 0\n");
        let spec = build_run_spec(conf, "task.yml", None, &[], |_| None).unwrap();
        let req = GetRunPlanRequest {
            run_spec: spec,
            max_offers: Some(3),
            reverse_offers: false,
            full_offers: false,
            unallocated_resources: false,
            for_offers_only: false,
        };
        assert_eq!(req.to_client_json(), fixture("task.runs_get_plan.request"));
    }

    #[test]
    fn apply_body_is_the_plan_turned_back_into_input() {
        for case in ["task", "reapply", "service", "dev"] {
            let plan: RunPlan =
                serde_json::from_value(fixture(&format!("{case}.runs_get_plan.response"))).unwrap();
            let req = ApplyRunPlanRequest {
                plan: ApplyRunPlanInput { run_spec: plan.run_spec, current_resource: plan.current_resource },
                force: false,
            };
            assert_eq!(req.to_client_json(), fixture(&format!("{case}.runs_apply.request")), "{case}");
        }
    }

    #[test]
    fn name_and_env_flags_override_the_file() {
        let conf = parse("type: task\nname: t1\ncommands: [env]\nenv:\n  - A=1\n  - TOKEN\n");
        let spec = build_run_spec(conf, "t.yml", Some("t2"), &["B=2".to_owned(), "A=3".to_owned()], |k| {
            (k == "TOKEN").then(|| "s3cr3t".to_owned())
        })
        .unwrap();
        assert_eq!(spec.run_name.as_deref(), Some("t2"));
        let json = serde_json::to_value(&spec.configuration).unwrap();
        assert_eq!(json["name"], "t2");
        assert_eq!(json["env"], serde_json::json!({"A": "3", "TOKEN": "s3cr3t", "B": "2"}));

        let conf = parse("type: task\ncommands: [env]\n");
        let err = build_run_spec(conf, "t.yml", None, &["MISSING".to_owned()], |_| None).unwrap_err();
        assert_eq!(err, "Environment variable MISSING is not set");
    }

    #[test]
    fn non_run_configurations_are_refused_and_repos_set_the_repo_dir() {
        let gateway = parse("type: gateway\nname: gw\nbackend: aws\nregion: us-east-1\n");
        let err = build_run_spec(gateway, "g.yml", None, &[], |_| None).unwrap_err();
        assert!(err.contains("`gateway` configurations are not supported yet"), "{err}");
        let task = parse("type: task\ncommands: [ls]\nrepos:\n  - .:/workflow/src\n");
        let spec = build_run_spec(task, "t.yml", None, &[], |_| None).unwrap();
        assert_eq!(spec.repo_dir.as_deref(), Some("/workflow/src"));
    }

    #[test]
    fn progress_follows_the_run() {
        let runs: Vec<Run> = serde_json::from_value(fixture("ps.runs_list.response")).unwrap();
        let by_name = |n: &str| runs.iter().find(|r| r.run_spec.run_name.as_deref() == Some(n)).unwrap();
        // t1 failed: past provisioning; cron1 is pending, waiting for its schedule.
        assert!(past_provisioning(by_name("t1")));
        assert!(!past_provisioning(by_name("cron1")));
        assert_eq!(progress_text(by_name("t2")), "t2: retrying");
        let cron = by_name("cron1");
        let next = cron.next_triggered_at.unwrap().strftime("%Y-%m-%d %H:%M UTC").to_string();
        assert_eq!(progress_text(cron), format!("cron1: pending (next run {next})"));
        assert_eq!(service_url(cron, "http://s"), None);
        let mut service = cron.clone();
        service.service =
            Some(serde_json::from_value(serde_json::json!({"url": "/proxy/services/main/s1/"})).unwrap());
        assert_eq!(service_url(&service, "http://s").unwrap(), "http://s/proxy/services/main/s1/");
    }
}
