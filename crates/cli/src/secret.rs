//! `dstack secret list|get|set|delete`.

use dstack_client::Client;
use dstack_client::config::{CliConfig, ProjectEnv};

use crate::{EXIT_OK, config_path, fail};

#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long, global = true)]
    pub project: Option<String>,
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// List the secrets (names only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a secret's value.
    Get { name: String },
    /// Create or update a secret.
    Set { name: String, value: String },
    /// Delete secrets.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
}

pub fn run(args: &SecretArgs) -> u8 {
    let (config, warning) = CliConfig::load(&config_path());
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    let project = match config.resolve(args.project.as_deref(), &ProjectEnv::from_process()) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let client = match Client::new(&project.url, &project.token) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let p = project.name.as_str();
    let result = match &args.command {
        SecretCommand::List { json } => client.list_secrets(p).map(|secrets| {
            if *json {
                let names: Vec<_> = secrets.iter().map(|s| serde_json::json!({"name": s.name})).collect();
                println!("{}", serde_json::Value::Array(names));
            } else {
                let mut table = comfy_table::Table::new();
                table.load_style(comfy_table::presets::NOTHING).set_header(["NAME", "VALUE"]);
                for s in &secrets {
                    table.add_row([s.name.as_str(), "*****"]);
                }
                println!("{table}");
            }
        }),
        SecretCommand::Get { name } => {
            client.get_secret(p, name).map(|s| println!("{}", s.value.unwrap_or_default()))
        }
        SecretCommand::Set { name, value } => {
            client.set_secret(p, name, value).map(|_| println!("Secret {name} set"))
        }
        SecretCommand::Delete { names, yes } => {
            if !yes {
                return fail(format!("pass -y to delete {}", names.join(", ")));
            }
            client.delete_secrets(p, names).map(|()| println!("Deleted {}", names.join(", ")))
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) if e.is_not_found() => fail(format!("{e} (project {p})")),
        Err(e) => fail(e),
    }
}
