//! `dstack ps`, `dstack stop` and `dstack delete` (api.md §4.4, §4.6).

use std::path::PathBuf;
use std::time::Duration;

use dstack_api::runs::{ListRunsRequest, Run};
use dstack_model::configuration::AnyConfiguration;
use jiff::Timestamp;

use crate::common::{Session, confirm, connect, interrupted, sleep_unless_interrupted, stdout_color};
use crate::render::runs_table;
use crate::{EXIT_INVALID, EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all runs. By default only unfinished runs, or the last finished one.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Show more about each run (resources, instance type, probes, errors).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Refresh the table every 2 seconds until Ctrl-C.
    #[arg(short = 'w', long, conflicts_with = "json")]
    pub watch: bool,
    /// Show only the last N runs (implies --all).
    #[arg(short = 'n', long = "last", value_name = "N", value_parser = clap::value_parser!(i64).range(1..=100))]
    pub last: Option<i64>,
    /// Print `{"project": ..., "runs": [...]}` with the runs as the API returns them.
    #[arg(long)]
    pub json: bool,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

/// The requests `dstack ps` sends: the listing, and the "last run" fallback when it is empty.
pub fn ps_requests(
    project: &str,
    all: bool,
    last: Option<i64>,
) -> (ListRunsRequest, Option<ListRunsRequest>) {
    let only_active = !all && last.is_none();
    let main = ListRunsRequest {
        project_name: Some(project.to_owned()),
        only_active,
        include_jobs: true,
        job_submissions_limit: Some(1),
        limit: last.unwrap_or(100),
        ..ListRunsRequest::default()
    };
    let fallback = only_active.then(|| ListRunsRequest { only_active: false, limit: 1, ..main.clone() });
    (main, fallback)
}

fn list_runs(session: &Session, args: &PsArgs) -> Result<Vec<Run>, dstack_client::ClientError> {
    let (main, fallback) = ps_requests(&session.project, args.all, args.last);
    let runs = session.client.list_runs(&main)?;
    match fallback {
        Some(fallback) if runs.is_empty() => session.client.list_runs(&fallback),
        _ => Ok(runs),
    }
}

pub fn ps(args: &PsArgs) -> u8 {
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if !args.watch {
        let runs = match list_runs(&session, args) {
            Ok(runs) => runs,
            Err(e) => return fail(e),
        };
        if args.json {
            out!("{}", serde_json::json!({"project": session.project, "runs": runs}));
        } else {
            out!("{}", runs_table(&runs, args.verbose, Timestamp::now(), stdout_color()));
        }
        return EXIT_OK;
    }
    let flag = interrupted();
    let term = console::Term::stdout();
    let mut drawn = 0;
    loop {
        let runs = match list_runs(&session, args) {
            Ok(runs) => runs,
            Err(e) => return fail(e),
        };
        let table = runs_table(&runs, args.verbose, Timestamp::now(), stdout_color());
        if term.is_term() {
            let _ = term.clear_last_lines(drawn);
        }
        let _ = term.write_line(&table);
        drawn = table.lines().count();
        if sleep_unless_interrupted(Duration::from_secs(2), &flag) {
            return EXIT_OK;
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The runs to stop.
    #[arg(required = true, value_name = "RUN")]
    pub run_names: Vec<String>,
    /// Abort: do not wait for a graceful shutdown.
    #[arg(short = 'x', long)]
    pub abort: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

pub fn stop(args: &StopArgs) -> u8 {
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for name in &args.run_names {
        match session.client.get_run(&session.project, name) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return fail(format!("Run {name} not found")),
            Err(e) => return fail(e),
        }
    }
    let prompt = match args.run_names.as_slice() {
        [_] => "Are you sure you want to stop the run?".to_owned(),
        names => format!("Are you sure you want to stop the runs {}?", names.join(", ")),
    };
    if !args.yes && !confirm(&prompt) {
        out!("\nExiting...");
        return EXIT_OK;
    }
    match session.client.stop_runs(&session.project, &args.run_names, args.abort) {
        Ok(()) => {
            out!("{}", if args.abort { "Aborted" } else { "Stopped" });
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The runs to delete (finished runs only; stop an active run first).
    #[arg(value_name = "RUN", required_unless_present = "file", conflicts_with = "file")]
    pub run_names: Vec<String>,
    /// Delete the run a configuration file names.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

pub fn delete(args: &DeleteArgs) -> u8 {
    let names = match &args.file {
        Some(path) => match run_name_of_file(path) {
            Ok(name) => vec![name],
            Err(code) => return code,
        },
        None => args.run_names.clone(),
    };
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    for name in &names {
        match session.client.get_run(&session.project, name) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                out!("Run {name} does not exist");
                return EXIT_INVALID;
            }
            Err(e) => return fail(e),
        }
        if !args.yes && !confirm(&format!("Delete the run {name}?")) {
            out!("\nExiting...");
            return EXIT_OK;
        }
        if let Err(e) = session.client.delete_runs(&session.project, std::slice::from_ref(name)) {
            return fail(e);
        }
        out!("Run {name} deleted");
    }
    EXIT_OK
}

/// The `name` of the run configuration in `path`.
fn run_name_of_file(path: &std::path::Path) -> Result<String, u8> {
    let configuration = crate::apply::load(path)?;
    let name = match &configuration {
        AnyConfiguration::Task(c) => c.base.name.clone(),
        AnyConfiguration::Service(c) => c.base.name.clone(),
        AnyConfiguration::DevEnvironment(c) => c.base.name.clone(),
        other => {
            return Err(fail(format!(
                "{}: deleting {} configurations is not supported yet; use `dstack fleet delete NAME` for fleets",
                path.display(),
                other.type_name()
            )));
        }
    };
    name.ok_or_else(|| fail("Configuration specifies no run to delete"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_sends_what_dstack_sends() {
        let (main, fallback) = ps_requests("main", false, None);
        assert_eq!(
            serde_json::to_value(&main).unwrap(),
            serde_json::json!({"project_name":"main","repo_id":null,"username":null,"only_active":true,
                "include_jobs":true,"job_submissions_limit":1,"prev_submitted_at":null,"prev_run_id":null,
                "limit":100,"ascending":false})
        );
        let fallback = fallback.unwrap();
        assert!(!fallback.only_active);
        assert_eq!(fallback.limit, 1);
        // `dstack ps -a`, as captured.
        let (all, fallback) = ps_requests("main", true, None);
        let path = format!("{}/../api/tests/fixtures/ps.runs_list.request.json", env!("CARGO_MANIFEST_DIR"));
        let captured: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&all).unwrap(), captured);
        assert!(fallback.is_none());
        let (last, fallback) = ps_requests("main", false, Some(5));
        assert!(!last.only_active);
        assert_eq!(last.limit, 5);
        assert!(fallback.is_none());
    }
}
