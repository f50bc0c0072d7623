//! `dstack gateway run` (or `dstack gateway` with the process' flags, as before): runs a
//! gateway (services on their own domains, over HTTP and HTTPS) in the foreground until
//! SIGTERM or Ctrl-C; all of it is `dstack_gateway::run`. `dstack gateway list|delete|update|get`
//! are dstack's commands for a project's gateways; `dstack apply -f gateway.yml` creates one.

use std::net::SocketAddr;
use std::path::PathBuf;

use dstack_api::gateways::{
    ApplyGatewayPlanInput, ApplyGatewayPlanRequest, Gateway, GatewayPlan, GatewaySpec, GetGatewayPlanRequest,
};
use dstack_gateway::Config;
use dstack_model::gateway::GatewayConfiguration;

use crate::{EXIT_INVALID, EXIT_OK};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    pub command: Option<GatewayCommand>,
    #[command(flatten)]
    pub process: ProcessArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum GatewayCommand {
    /// Run a gateway process (what the server starts for a `backend: local` gateway).
    Run(ProcessArgs),
    /// List the project's gateways.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete gateways.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
    /// Update a gateway: make it the project's default, or (deprecated) set its domain.
    Update {
        /// The name of the gateway.
        name: String,
        /// Set it the default gateway for the project.
        #[arg(long)]
        set_default: bool,
        /// (deprecated) Set the domain for the gateway.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Get a gateway (as JSON).
    Get {
        /// The name of the gateway.
        name: String,
        /// Output in JSON format (the only format, as in dstack).
        #[arg(long, required = true)]
        json: bool,
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
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
    /// Threads serving the services' listeners, each with its own event loop (as nginx's
    /// worker processes); 0: one per CPU.
    #[arg(long, env = "DSTACK_GATEWAY_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, env = "DSTACK_GATEWAY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The gateway's configuration from the flags.
pub fn config_from(args: &ProcessArgs) -> Config {
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
        workers: args.workers,
    }
}

pub fn run(args: &GatewayArgs) -> u8 {
    match &args.command {
        None => run_process(&args.process),
        Some(GatewayCommand::Run(process)) => run_process(process),
        Some(GatewayCommand::List { project, json }) => list(project.as_deref(), *json),
        Some(GatewayCommand::Delete { names, project, yes: _ }) => delete(project.as_deref(), names),
        Some(GatewayCommand::Update { name, set_default, domain, project }) => {
            update(project.as_deref(), name, *set_default, domain.as_deref())
        }
        Some(GatewayCommand::Get { name, json: _, project }) => get(project.as_deref(), name),
    }
}

fn fetch(session: &crate::common::Session, name: &str) -> Result<Gateway, u8> {
    let path = format!("/api/project/{}/gateways/get", session.project);
    session.client.post(&path, Some(&serde_json::json!({ "name": name }))).map_err(crate::fail)
}

/// dstack's `gateway update`: `--domain` (deprecated, with dstack's warning), then
/// `--set-default`, then the gateway's row.
fn update(project: Option<&str>, name: &str, set_default: bool, domain: Option<&str>) -> u8 {
    let session = match crate::common::connect(project) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let base = format!("/api/project/{}/gateways", session.project);
    if let Some(domain) = domain {
        eprintln!(
            "`dstack gateway update --domain` is deprecated and may be disallowed in the future. Use `dstack apply` to update domains or other gateway configuration properties"
        );
        let body = serde_json::json!({ "name": name, "wildcard_domain": domain });
        if let Err(e) = session.client.post::<_, Gateway>(&format!("{base}/set_wildcard_domain"), Some(&body))
        {
            return crate::fail(e);
        }
    }
    if set_default {
        let body = serde_json::json!({ "name": name });
        if let Err(e) =
            session.client.post::<_, serde_json::Value>(&format!("{base}/set_default"), Some(&body))
        {
            return crate::fail(e);
        }
    }
    match fetch(&session, name) {
        Ok(g) => {
            print_table(&[g]);
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// dstack's `gateway get NAME --json`: the gateway as JSON, two-space indented.
fn get(project: Option<&str>, name: &str) -> u8 {
    let session = match crate::common::connect(project) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match fetch(&session, name) {
        Ok(g) => {
            println!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
            EXIT_OK
        }
        Err(code) => code,
    }
}

fn list(project: Option<&str>, json: bool) -> u8 {
    let session = match crate::common::connect(project) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let path = format!("/api/project/{}/gateways/list", session.project);
    let gateways: Vec<Gateway> = match session.client.post::<(), _>(&path, None) {
        Ok(g) => g,
        Err(e) => return crate::fail(e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&gateways).unwrap_or_default());
        return EXIT_OK;
    }
    print_table(&gateways);
    EXIT_OK
}

fn print_table(gateways: &[Gateway]) {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(["NAME", "BACKEND", "DOMAIN", "DEFAULT", "STATUS"]);
    for g in gateways {
        table.add_row([
            g.name.clone(),
            g.configuration.backend.to_string(),
            g.wildcard_domain.clone().unwrap_or_default(),
            if g.default { "yes".to_owned() } else { String::new() },
            g.status.to_string(),
        ]);
    }
    println!("{table}");
}

fn delete(project: Option<&str>, names: &[String]) -> u8 {
    let session = match crate::common::connect(project) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let path = format!("/api/project/{}/gateways/delete", session.project);
    let body = serde_json::json!({ "names": names });
    match session.client.post::<_, serde_json::Value>(&path, Some(&body)) {
        Ok(_) => {
            println!("Gateway(s) {} deleted", names.join(", "));
            EXIT_OK
        }
        Err(e) => crate::fail(e),
    }
}

/// `dstack apply -f gateway.yml`: plan, then create or update in place.
pub fn apply(mut configuration: GatewayConfiguration, args: &crate::apply::ApplyArgs) -> u8 {
    // `local.ssh`: the server connects with the key, not the path (as for SSH fleets).
    if let Some(ssh) = configuration.local.as_mut().and_then(|l| l.ssh.as_mut())
        && let Some(path) = &ssh.identity_file
    {
        match crate::fleet_apply::read_ssh_key(path) {
            Ok(key) => ssh.ssh_key = Some(key),
            Err(e) => {
                eprintln!("{e}");
                return EXIT_INVALID;
            }
        }
    }
    let session = match crate::common::connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let base = format!("/api/project/{}/gateways", session.project);
    let spec = GatewaySpec { configuration, configuration_path: Some(args.file.display().to_string()) };
    let plan: GatewayPlan =
        match session.client.post(&format!("{base}/get_plan"), Some(&GetGatewayPlanRequest { spec })) {
            Ok(p) => p,
            Err(e) => return crate::fail(e),
        };
    let req = ApplyGatewayPlanRequest {
        plan: ApplyGatewayPlanInput { spec: plan.spec, current_resource: plan.current_resource },
        force: args.force,
    };
    match session.client.post::<_, Gateway>(&format!("{base}/apply"), Some(&req)) {
        Ok(g) => {
            println!(
                "Gateway {} {} (status: {})",
                g.name,
                if plan.action.as_str() == "update" { "updated" } else { "submitted" },
                g.status
            );
            EXIT_OK
        }
        Err(e) => crate::fail(e),
    }
}

fn run_process(args: &ProcessArgs) -> u8 {
    let (runtime, shutdown) = match crate::common::start_daemon(&args.log_level) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let config = config_from(args);
    match runtime.block_on(dstack_gateway::run(config, shutdown)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
