//! `dstack-shim`: parses flags and runs [`dstack_shim::run`].

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "dstack-shim", disable_version_flag = true)]
struct Cli {
    /// Prints `dstack-shim version <V>`.
    #[arg(long)]
    version: bool,
    /// Holds tasks.json and the runner dirs (default `~/.dstack`).
    #[arg(long, env = "DSTACK_SHIM_HOME")]
    shim_home: Option<PathBuf>,
    /// 0 picks a free port; the chosen one is printed as `listening on 127.0.0.1:PORT`.
    #[arg(long, default_value_t = 10998, env = "DSTACK_SHIM_HTTP_PORT")]
    shim_http_port: u16,
    /// Writes the bound port here (atomically) once the API accepts connections.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// The runner binary (default: `dstack-runner` next to this executable).
    #[arg(long, env = "DSTACK_RUNNER_BINARY_PATH")]
    runner_binary_path: Option<PathBuf>,
    /// Never use Docker: every task runs as a process.
    #[arg(long, env = "DSTACK_SHIM_NO_DOCKER")]
    no_docker: bool,
    /// Service mode: write `<home>/host_info.json` at start unless it exists. The env var
    /// takes dstack's `1` as well as `true` (and `0`/`false`).
    #[arg(long, env = "DSTACK_SERVICE_MODE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    service: bool,
    /// Log level: a name or logrus' 1–6.
    #[arg(long, default_value = "info", env = "DSTACK_SHIM_LOG_LEVEL")]
    shim_log_level: String,
    /// The runner's log level in containers.
    #[arg(long, default_value = "info", env = "DSTACK_RUNNER_LOG_LEVEL")]
    runner_log_level: String,
    /// Variables passed from this environment into containers (comma-separated).
    #[arg(
        long,
        env = "DSTACK_DOCKER_PASS_ENV",
        value_delimiter = ',',
        default_value = "http_proxy,https_proxy,no_proxy,HTTP_PROXY,HTTPS_PROXY,NO_PROXY"
    )]
    pass_env: Vec<String>,
    /// Every container privileged.
    #[arg(long, env = "DSTACK_DOCKER_PRIVILEGED", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    privileged: bool,
    /// Looks up /dev, /sys and /mnt/disks under this directory (tests fake GPU hosts with it).
    #[arg(long, default_value = "/", env = "DSTACK_SHIM_DEVICE_ROOT", hide = true)]
    device_root: PathBuf,
    /// On shutdown, stop and remove every task (containers, runner dirs).
    #[arg(long, env = "DSTACK_SHIM_REMOVE_TASKS_ON_SHUTDOWN")]
    remove_tasks_on_shutdown: bool,
    /// This shim runs in the container NAME of the Docker engine it drives (a host that is
    /// itself a container): task containers join its network, and the paths they mount are
    /// translated to where the engine sees them (through this container's volumes). `auto`:
    /// the container this shim runs in, found by its host name (Docker's default, its ID).
    #[arg(long, env = "DSTACK_SHIM_DOCKER_SELF", value_name = "NAME")]
    docker_self: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.version {
        println!("dstack-shim version {}", dstack_agent_proto::AGENT_VERSION);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(dstack_agent_proto::log_level_name(
            &cli.shim_log_level,
        )))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let home = match cli.shim_home {
        Some(home) => home,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".dstack"),
    };
    let runner_binary = match cli.runner_binary_path {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("dstack-runner"),
    };
    let config = dstack_shim::Config {
        http_port: cli.shim_http_port,
        docker: !cli.no_docker,
        service: cli.service,
        runner_log_level: cli.runner_log_level,
        pass_env: cli.pass_env.into_iter().filter(|v| !v.is_empty()).collect(),
        privileged: cli.privileged,
        device_root: cli.device_root,
        remove_tasks_on_shutdown: cli.remove_tasks_on_shutdown,
        docker_self: cli.docker_self.filter(|s| !s.is_empty()),
        ..dstack_shim::Config::new(home, runner_binary)
    };
    let port_file = cli.port_file;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(dstack_shim::run(config, move |addr| {
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
    }))?;
    Ok(())
}
