//! `dstack fleet list|get|delete` (api.md §4.8).

use jiff::Timestamp;

use crate::common::{confirm, connect, stdout_color};
use crate::render::fleets_table;
use crate::{EXIT_INVALID, EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long, global = true)]
    pub project: Option<String>,
    #[command(subcommand)]
    pub command: Option<FleetCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// List the fleets and their instances (the default).
    List {
        /// Print the fleets as JSON.
        #[arg(long)]
        json: bool,
        /// Show resources, drivers and errors.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Show one fleet as JSON.
    Get {
        name: String,
        /// Print JSON (the only format; accepted for dstack's spelling).
        #[arg(long)]
        json: bool,
    },
    /// Delete a fleet, or some of its instances (they are terminated; the call does not wait).
    Delete {
        name: String,
        /// Delete only this instance (its number, as `dstack fleet` shows it); repeatable.
        #[arg(short = 'i', long = "instance", value_name = "INSTANCE_NUM")]
        instances: Vec<i64>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

pub fn run(args: &FleetArgs) -> u8 {
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (client, project) = (&session.client, session.project.as_str());
    match args.command.as_ref().unwrap_or(&FleetCommand::List { json: false, verbose: false }) {
        FleetCommand::List { json, verbose } => match client.list_fleets(project) {
            Ok(fleets) if *json => {
                out!("{}", serde_json::to_string(&fleets).unwrap_or_default());
                EXIT_OK
            }
            Ok(fleets) => {
                out!("{}", fleets_table(&fleets, project, Timestamp::now(), stdout_color(), *verbose));
                EXIT_OK
            }
            Err(e) => fail(e),
        },
        FleetCommand::Get { name, .. } => match client.get_fleet(project, name) {
            Ok(fleet) => {
                out!("{}", serde_json::to_string_pretty(&fleet).unwrap_or_default());
                EXIT_OK
            }
            Err(e) if e.is_not_found() => {
                out!("Fleet {name} not found");
                EXIT_INVALID
            }
            Err(e) => fail(e),
        },
        FleetCommand::Delete { name, instances, yes } => {
            match client.get_fleet(project, name) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    out!("Fleet {name} does not exist");
                    return EXIT_INVALID;
                }
                Err(e) => return fail(e),
            }
            if !instances.is_empty() {
                let nums = format!("{instances:?}");
                if !yes && !confirm(&format!("Delete the fleet {name} instances {nums}?")) {
                    out!("\nExiting...");
                    return EXIT_OK;
                }
                return match client.delete_fleet_instances(project, name, instances) {
                    Ok(()) => {
                        out!("Fleet {name} instances deleted");
                        EXIT_OK
                    }
                    Err(e) => fail(e),
                };
            }
            if !yes && !confirm(&format!("Delete the fleet {name}?")) {
                out!("\nExiting...");
                return EXIT_OK;
            }
            match client.delete_fleets(project, std::slice::from_ref(name)) {
                Ok(()) => {
                    out!("Fleet {name} deleted");
                    EXIT_OK
                }
                Err(e) => fail(e),
            }
        }
    }
}
