//! `dstack-runner`: parses flags and runs [`dstack_runner::run`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dstack-runner", disable_version_flag = true)]
struct Cli {
    /// Prints `dstack-runner version <V>`.
    #[arg(long)]
    version: bool,
    /// Log level: a name (error, warn, info, debug, trace) or logrus' 1–6.
    #[arg(long, global = true, default_value = "info", env = "DSTACK_RUNNER_LOG_LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the API and runs one job.
    Start(Start),
}

#[derive(clap::Args)]
struct Start {
    #[arg(long, default_value = "/tmp/runner")]
    temp_dir: PathBuf,
    /// Empty: all interfaces.
    #[arg(long, default_value = "")]
    http_address: String,
    /// 0 picks a free port; the chosen one is printed as `listening on ADDR:PORT`.
    #[arg(long, default_value_t = 10999, env = "DSTACK_RUNNER_HTTP_PORT")]
    http_port: u16,
    /// Writes the bound port here (atomically) once the API accepts connections.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Where dstack's `/workflow` paths are re-rooted (default `<temp-dir>/workflow`).
    #[arg(long)]
    workflow_dir: Option<PathBuf>,
    /// Seconds to wait for `/api/run`.
    #[arg(long, default_value_t = 300)]
    job_start_timeout: u64,
    /// Seconds to wait for the final `/api/pull` after the job ended.
    #[arg(long, default_value_t = 300)]
    logs_finished_timeout: u64,
    /// Seconds between SIGTERM and SIGKILL when the job is stopped.
    #[arg(long, default_value_t = 10)]
    stop_grace: u64,
    /// Accepted for compatibility; unused.
    #[arg(long, hide = true)]
    home_dir: Option<PathBuf>,
    /// The job's sshd port; 0 starts no sshd.
    #[arg(long, default_value_t = 10022, env = "DSTACK_RUNNER_SSH_PORT")]
    ssh_port: u16,
    /// A public key allowed to log in over SSH (repeatable).
    #[arg(long)]
    ssh_authorized_key: Vec<String>,
    /// sshd's LogLevel.
    #[arg(long, default_value = "INFO")]
    ssh_log_level: String,
    /// sshd's ListenAddress (default: all interfaces).
    #[arg(long)]
    ssh_address: Option<String>,
    /// Milliseconds between two checks of the SSH connections (tests shorten it).
    #[arg(long, default_value_t = 2500, hide = true)]
    ssh_tracker_interval_ms: u64,
    /// Milliseconds a connection must last to count as a user (tests shorten it).
    #[arg(long, default_value_t = 10_000, hide = true)]
    ssh_min_connection_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.version {
        println!("dstack-runner version {}", dstack_agent_proto::AGENT_VERSION);
        return Ok(());
    }
    let Some(Command::Start(start)) = cli.command else {
        anyhow::bail!("usage: dstack-runner start [flags]; see --help");
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(dstack_agent_proto::log_level_name(
            &cli.log_level,
        )))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let http_address = if start.http_address.is_empty() { "0.0.0.0".to_owned() } else { start.http_address };
    let http_address = if http_address == "localhost" { "127.0.0.1".to_owned() } else { http_address };
    let config = dstack_runner::Config {
        http_address,
        http_port: start.http_port,
        workflow_dir: start.workflow_dir,
        job_start_timeout: Duration::from_secs(start.job_start_timeout),
        logs_finished_timeout: Duration::from_secs(start.logs_finished_timeout),
        stop_grace: Duration::from_secs(start.stop_grace),
        ssh: dstack_runner::SshConfig {
            port: start.ssh_port,
            address: start.ssh_address,
            authorized_keys: start.ssh_authorized_key,
            log_level: start.ssh_log_level,
            tracker: dstack_runner::TrackerConfig {
                interval: Duration::from_millis(start.ssh_tracker_interval_ms.max(10)),
                min_age: Duration::from_millis(start.ssh_min_connection_ms),
            },
        },
        ..dstack_runner::Config::new(start.temp_dir)
    };
    let port_file = start.port_file;
    let temp_dir = config.temp_dir.clone();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(dstack_runner::run(config, move |addr| {
        println!("listening on {addr}");
        let _ = std::io::stdout().flush();
        if let Some(path) = port_file {
            let tmp = path.with_extension("tmp");
            if let Err(e) =
                std::fs::write(&tmp, addr.port().to_string()).and_then(|()| std::fs::rename(&tmp, &path))
            {
                tracing::error!(%e, path = %path.display(), "cannot write the port file");
            }
        }
    }));
    dstack_runner::write_exit_status(&temp_dir, i32::from(result.is_err()));
    Ok(result?)
}
