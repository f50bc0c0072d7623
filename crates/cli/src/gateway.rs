//! `dstack gateway`: runs a gateway (services on their own domains, over HTTP and HTTPS) in the
//! foreground until SIGTERM or Ctrl-C. All of it is `dstack_gateway::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use dstack_gateway::Config;

use crate::{EXIT_INVALID, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Where the gateway keeps its state (state.json); default ~/.dstack/gateway.
    #[arg(long, env = "DSTACK_GATEWAY_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The gateway API, which the dstack server calls (keep it private).
    #[arg(long, env = "DSTACK_GATEWAY_API_LISTEN", default_value = "127.0.0.1:8000")]
    pub api_listen: SocketAddr,
    /// Plain HTTP for the services.
    #[arg(long, env = "DSTACK_GATEWAY_HTTP_LISTEN", default_value = "0.0.0.0:80")]
    pub http_listen: SocketAddr,
    /// HTTPS for the services (off unless given; `https` services need it).
    #[arg(long, env = "DSTACK_GATEWAY_HTTPS_LISTEN")]
    pub https_listen: Option<SocketAddr>,
    /// Certificates: <DIR>/<domain>/fullchain.pem and privkey.pem, or <DIR>/*.<parent domain>/
    /// for a wildcard; default <state-dir>/certs.
    #[arg(long, env = "DSTACK_GATEWAY_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The dstack server's URL, asked whether a caller's token belongs to a project member.
    #[arg(long, env = "DSTACK_GATEWAY_SERVER_URL")]
    pub server_url: Option<String>,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "DSTACK_GATEWAY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The gateway's configuration from the flags.
pub fn config_from(args: &GatewayArgs) -> Config {
    let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
    let state_dir = args.state_dir.clone().unwrap_or_else(|| home.join(".dstack").join("gateway"));
    Config {
        cert_dir: args.cert_dir.clone().unwrap_or_else(|| state_dir.join("certs")),
        state_dir,
        api_listen: args.api_listen,
        http_listen: Some(args.http_listen),
        https_listen: args.https_listen,
        server_url: args.server_url.clone().filter(|u| !u.is_empty()),
        proxy: dstack_gateway::ProxyOptions::default(),
    }
}

pub fn run(args: &GatewayArgs) -> u8 {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let config = config_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_INVALID;
        }
    };
    let shutdown = {
        let _entered = runtime.enter();
        dstack_server::shutdown_signal()
    };
    match runtime.block_on(dstack_gateway::run(config, shutdown)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
