//! `dstack project add|list|set-default|delete`: the projects in `~/.dstack/config.yml`.
//!
//! Only `add` talks to the server (to check the project and token), as in dstack.

use dstack_client::Client;
use dstack_client::config::{CliConfig, ProjectConfig};

use crate::{EXIT_OK, config_path, fail};

#[derive(Debug, clap::Subcommand)]
pub enum ProjectCommand {
    /// Add a project (or update it) after checking it exists on the server.
    Add {
        #[arg(long)]
        name: String,
        /// The server URL, e.g. http://127.0.0.1:3000.
        #[arg(long)]
        url: String,
        #[arg(long, hide_env_values = true)]
        token: String,
        /// Make it the default project.
        #[arg(long)]
        default: bool,
        /// Replace an existing entry without asking.
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
    /// List the configured projects.
    List {
        /// Print JSON (tokens left out).
        #[arg(long)]
        json: bool,
    },
    /// Make a configured project the default.
    SetDefault { name: String },
    /// Remove a project from the configuration (the project on the server stays).
    Delete {
        #[arg(long)]
        name: String,
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
}

pub fn run(cmd: &ProjectCommand) -> u8 {
    let path = config_path();
    let (mut config, warning) = CliConfig::load(&path);
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
    match cmd {
        ProjectCommand::Add { name, url, token, default, yes } => {
            if config.get(name).is_some() && !yes {
                return fail(format!("project {name} is already configured; pass -y to replace it"));
            }
            let url = url.trim_end_matches('/');
            let client = match Client::new(url, token) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            if let Err(e) = client.get_project(name) {
                return fail(e);
            }
            config.upsert(
                ProjectConfig {
                    name: name.clone(),
                    url: url.to_owned(),
                    token: token.clone(),
                    default: false,
                },
                *default,
            );
            if let Err(e) = config.save(&path) {
                return fail(e);
            }
            println!("Configured the project {name} at {url}");
            EXIT_OK
        }
        ProjectCommand::List { json } => {
            if *json {
                let list: Vec<_> = config
                    .projects
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name, "url": p.url, "default": p.default}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
                return EXIT_OK;
            }
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::NOTHING).set_header(["PROJECT", "URL", "DEFAULT"]);
            for p in &config.projects {
                table.add_row([p.name.as_str(), p.url.as_str(), if p.default { "✓" } else { "" }]);
            }
            println!("{table}");
            EXIT_OK
        }
        ProjectCommand::SetDefault { name } => {
            if !config.set_default(name) {
                return fail(format!("Project {name} is not configured"));
            }
            match config.save(&path) {
                Ok(()) => EXIT_OK,
                Err(e) => fail(e),
            }
        }
        ProjectCommand::Delete { name, yes } => {
            if !yes {
                return fail(format!("pass -y to remove the project {name} from the configuration"));
            }
            if !config.remove(name) {
                return fail(format!("Project {name} is not configured"));
            }
            match config.save(&path) {
                Ok(()) => EXIT_OK,
                Err(e) => fail(e),
            }
        }
    }
}
