//! Server settings: one struct, filled from flags and dstack's environment variables by the
//! CLI (flags win over the environment).

use std::net::SocketAddr;
use std::path::PathBuf;

use dstack_model::fleet::Blocks;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `DSTACK_SERVER_HOST`, `--host`; default `127.0.0.1`.
    pub host: String,
    /// `DSTACK_SERVER_PORT`, `--port`; default 3000 (0 picks a free port).
    pub port: u16,
    /// `DSTACK_SERVER_ADMIN_TOKEN`, `--token`: the admin's token, applied when the admin is
    /// first created.
    pub admin_token: Option<String>,
    /// `DSTACK_SERVER_DIR`; default `~/.dstack/server`.
    pub server_dir: PathBuf,
    /// `DSTACK_DATABASE_URL`; default SQLite at `<server_dir>/data/sqlite.db`.
    pub database_url: Option<String>,
    /// `DSTACK_SERVER_URL`: the URL clients use; default `http://<host>:<port>`.
    pub public_url: Option<String>,
    /// Where to record the admin's project for the CLI (`~/.dstack/config.yml`); `None` skips
    /// it (tests, `DSTACK_DO_NOT_UPDATE_DEFAULT_PROJECT`).
    pub client_config: Option<PathBuf>,
    /// Create the `local` fleet (this machine) in `main` on the first start; default true
    /// (`--no-local-fleet`, `DSTACK_SERVER_NO_LOCAL_FLEET` turn it off).
    pub local_fleet: bool,
    /// `DSTACK_SERVER_LOCAL_FLEET_BLOCKS`, `--local-fleet-blocks`: how many blocks the local
    /// fleet's host is split into (`auto`: one per CPU, or per GPU on a GPU host); default 1,
    /// the whole machine per job. Applied at every start while no job is on the host.
    pub local_fleet_blocks: Blocks,
    /// The `dstack-shim` binary the local fleet runs; default `dstack-shim` next to the server
    /// executable (or `DSTACK_SHIM_BINARY`).
    pub shim_binary: Option<PathBuf>,
    /// The `dstack-runner` binary SSH-fleet hosts get; default `DSTACK_RUNNER_BINARY`, else
    /// `dstack-runner` next to the shim binary.
    pub runner_binary: Option<PathBuf>,
    /// How often idle and busy SSH-fleet hosts get a health check through their tunnel;
    /// `DSTACK_SERVER_INSTANCE_CHECK_INTERVAL` (seconds, ours), default 5 s.
    pub instance_check_interval: std::time::Duration,
    /// How long a running job's host may stay unreachable before the job ends with
    /// `instance_unreachable`; `DSTACK_SERVER_JOB_DISCONNECTED_TIMEOUT` (seconds, ours, for
    /// tests), default dstack's 2 minutes (`JOB_DISCONNECTED_RETRY_TIMEOUT`).
    pub job_disconnected_timeout: std::time::Duration,
    /// How long the service proxy waits for a replica's response headers;
    /// `DSTACK_SERVICE_CLIENT_TIMEOUT` (seconds), default dstack's 300.
    pub service_client_timeout: std::time::Duration,
    /// Run the background loops (off only in tests that drive the API alone).
    pub background: bool,
    /// `DSTACK_SERVER_WORKERS`, `--workers` (ours): threads serving the listener, each with a
    /// single-thread runtime of its own (see [`crate::serve`]); 0, the default, is one per CPU.
    pub workers: usize,
}

/// The default of [`ServerConfig::instance_check_interval`].
pub const DEFAULT_INSTANCE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The default of [`ServerConfig::service_client_timeout`].
pub const DEFAULT_SERVICE_CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The default of [`ServerConfig::job_disconnected_timeout`]: dstack's 2 minutes.
pub const DEFAULT_JOB_DISCONNECTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl ServerConfig {
    /// Defaults for a server rooted at `server_dir`, on a free loopback port, writing no
    /// client config (what tests use).
    pub fn for_dir(server_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
            admin_token: None,
            server_dir,
            database_url: None,
            public_url: None,
            client_config: None,
            local_fleet: false,
            local_fleet_blocks: Blocks::default(),
            shim_binary: None,
            runner_binary: None,
            instance_check_interval: DEFAULT_INSTANCE_CHECK_INTERVAL,
            job_disconnected_timeout: DEFAULT_JOB_DISCONNECTED_TIMEOUT,
            service_client_timeout: DEFAULT_SERVICE_CLIENT_TIMEOUT,
            background: true,
            workers: 0,
        }
    }

    /// The database URL: the configured one or the SQLite file under the server dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.server_dir.join("data").join("sqlite.db").display()),
        }
    }

    /// The URL clients reach the server at.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host =
                    if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
                format!("http://{host}:{}", bound.port())
            }
        }
    }
}

/// A `blocks` setting as the fleet configuration writes it: `auto` or a whole number of at
/// least 1.
pub fn parse_blocks(value: &str) -> Result<Blocks, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("auto") {
        return Ok(Blocks::Auto);
    }
    match value.parse::<i64>() {
        Ok(n) if n >= 1 => Ok(Blocks::Count(n)),
        _ => Err(format!("blocks must be `auto` or a whole number of at least 1, not {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_settings() {
        assert_eq!(parse_blocks("auto"), Ok(Blocks::Auto));
        assert_eq!(parse_blocks(" 4 "), Ok(Blocks::Count(4)));
        for bad in ["0", "-1", "1.5", "", "many"] {
            assert!(parse_blocks(bad).unwrap_err().starts_with("blocks must be `auto`"), "{bad}");
        }
    }
}
