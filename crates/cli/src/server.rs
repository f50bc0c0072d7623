//! `dstack server`: runs the server in the foreground until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use dstack_server::ServerConfig;

use crate::{EXIT_INVALID, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The address to listen on.
    #[arg(long, env = "DSTACK_SERVER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// The port to listen on (0 picks a free one).
    #[arg(long, short = 'p', env = "DSTACK_SERVER_PORT", default_value_t = 3000)]
    pub port: u16,
    /// The admin user's token, used when the admin is first created.
    #[arg(long, env = "DSTACK_SERVER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Do not ask for confirmation (accepted for compatibility; the server never asks).
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Do not create the `local` fleet (this machine) on the first start.
    #[arg(long, env = "DSTACK_SERVER_NO_LOCAL_FLEET", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_local_fleet: bool,
    /// Split the local fleet's host into this many blocks, one job per block (`auto`: one per
    /// CPU, or per GPU on a GPU host); default 1.
    #[arg(long, env = "DSTACK_SERVER_LOCAL_FLEET_BLOCKS", default_value = "1",
          value_parser = dstack_server::config::parse_blocks)]
    pub local_fleet_blocks: dstack_model::fleet::Blocks,
    /// Threads serving the listener, each with a runtime of its own (0: one per CPU). A
    /// request to a service is proxied on the thread that read it; API requests go on to the
    /// server's main runtime.
    #[arg(long, env = "DSTACK_SERVER_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "DSTACK_SERVER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Builds the configuration from the flags and dstack's environment variables.
pub fn config_from(args: &ServerArgs) -> ServerConfig {
    let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
    let server_dir = std::env::var_os("DSTACK_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".dstack").join("server"));
    let skip_client_config = std::env::var_os("DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT").is_some();
    ServerConfig {
        host: args.host.clone(),
        port: args.port,
        admin_token: args.token.clone(),
        server_dir,
        database_url: std::env::var("DSTACK_DATABASE_URL").ok().filter(|u| !u.is_empty()),
        public_url: std::env::var("DSTACK_SERVER_URL").ok().filter(|u| !u.is_empty()),
        client_config: (!skip_client_config).then(|| home.join(".dstack").join("config.yml")),
        local_fleet: !args.no_local_fleet,
        local_fleet_blocks: args.local_fleet_blocks,
        shim_binary: None,
        runner_binary: None,
        instance_check_interval: seconds_var(
            "DSTACK_SERVER_INSTANCE_CHECK_INTERVAL",
            dstack_server::config::DEFAULT_INSTANCE_CHECK_INTERVAL,
        ),
        job_disconnected_timeout: seconds_var(
            "DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT",
            dstack_server::config::DEFAULT_JOB_DISCONNECTED_TIMEOUT,
        ),
        service_client_timeout: seconds_var(
            "DSTACK_SERVICE_CLIENT_TIMEOUT",
            dstack_server::config::DEFAULT_SERVICE_CLIENT_TIMEOUT,
        ),
        background: true,
        workers: args.workers,
    }
}

/// A positive number of seconds from `var`, else `default` (unset, unreadable, zero or
/// negative values are ignored).
fn seconds_var(var: &str, default: std::time::Duration) -> std::time::Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map_or(default, std::time::Duration::from_secs_f64)
}

pub fn run(args: &ServerArgs) -> u8 {
    let (runtime, shutdown) = match crate::common::start_daemon(&format!("{},sqlx=warn", args.log_level)) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let config = config_from(args);
    let result = runtime.block_on(dstack_server::run(
        config,
        |started| {
            println!("The admin token is {:?}", started.admin_token);
            println!("The server is running at {}/", started.url);
        },
        shutdown,
    ));
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
