//! The dstack command-line interface.
//!
//! Commands live in their own modules; this file holds the argument grammar and the
//! exit-code conventions: 0 success, 1 the command ran and found a problem (an invalid
//! configuration), 2 a usage error (bad arguments, unreadable files).

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ignores a closed standard output (`dstack ps --json | head`) instead of
/// panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod apply;
pub mod attach;
pub mod common;
pub mod files;
pub mod fleet;
pub mod fleet_apply;
pub mod gateway;
pub mod init;
pub mod logs;
pub mod offer;
pub mod project;
pub mod render;
pub mod repo;
pub mod runs;
pub mod secret;
pub mod server;
pub mod validate;

/// dstack: GPU-native orchestration for ML teams.
#[derive(Debug, Parser)]
#[command(name = "dstack", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration, show the plan, submit the run and follow it.
    ///
    /// Without -d, shows the run's progress and then streams its logs until it finishes
    /// (exit 0 when it is done, 1 otherwise). Ctrl-C detaches; the run goes on.
    Apply(apply::ApplyArgs),
    /// Attach to a run: SSH host entries (`ssh RUN`), port forwarding, optionally its logs.
    ///
    /// Waits while the run provisions. Ctrl-C detaches; the run goes on.
    Attach(attach::AttachArgs),
    /// Print a shell completion script: `dstack completion bash > /etc/bash_completion.d/dstack`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Delete finished runs.
    #[command(alias = "destroy")]
    Delete(runs::DeleteArgs),
    /// List, show and delete fleets.
    Fleet(fleet::FleetArgs),
    /// Register the current Git repo with the project (optional: apply does not need it).
    Init(init::InitArgs),
    /// Show a run's logs.
    Logs(logs::LogsArgs),
    /// Show what the project's backends and fleets offer, cheapest first.
    Offer(offer::OfferArgs),
    /// Manage the projects the CLI knows (~/.dstack/config.yml).
    #[command(subcommand)]
    Project(project::ProjectCommand),
    /// List runs.
    Ps(runs::PsArgs),
    /// Manage a project's secrets.
    Secret(secret::SecretArgs),
    /// Run a gateway: services on their own domains over HTTP and HTTPS, registered by the
    /// server through the gateway API.
    Gateway(gateway::GatewayArgs),
    /// Start the dstack server (SQLite under ~/.dstack/server by default).
    Server(server::ServerArgs),
    /// Stop runs.
    Stop(runs::StopArgs),
    /// Check configuration files offline, without a server.
    ///
    /// Exits 0 when every file is valid, 1 when any is invalid, 2 on usage errors.
    Validate(validate::ValidateArgs),
}

/// Prints an error the way every command does and returns [`EXIT_INVALID`].
pub(crate) fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("{} {message}", console::style("error:").red().bold());
    EXIT_INVALID
}

/// The CLI's configuration file under the user's home directory.
pub(crate) fn config_path() -> std::path::PathBuf {
    let home = dirs::home_dir().unwrap_or_else(|| std::path::PathBuf::from("."));
    dstack_client::config::default_path(&home)
}

/// Exit code when every input was fine.
pub const EXIT_OK: u8 = 0;
/// Exit code when a command found a problem in its input.
pub const EXIT_INVALID: u8 = 1;
/// Exit code for usage errors (also what clap uses).
pub const EXIT_USAGE: u8 = 2;

/// Runs the CLI with the given arguments (the first is the program name).
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Server(args) => server::run(&args),
        Command::Gateway(args) => gateway::run(&args),
        Command::Project(cmd) => project::run(&cmd),
        Command::Secret(args) => secret::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Attach(args) => attach::run(&args),
        Command::Ps(args) => runs::ps(&args),
        Command::Logs(args) => logs::run(&args),
        Command::Stop(args) => runs::stop(&args),
        Command::Delete(args) => runs::delete(&args),
        Command::Offer(args) => offer::run(&args),
        Command::Fleet(args) => fleet::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dstack", &mut std::io::stdout());
            EXIT_OK
        }
    };
    ExitCode::from(code)
}
