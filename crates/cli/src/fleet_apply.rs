//! `dstack apply -f fleet.yml`: plan, confirm, create (or update, or re-create) a fleet and
//! wait for its instances (api.md §4.7).

use std::path::PathBuf;
use std::time::Duration;

use dstack_api::fleets::{
    ApplyFleetPlanInput, ApplyFleetPlanRequest, Fleet, FleetPlan, FleetSpec, GetFleetPlanRequest,
    InstanceStatus,
};
use dstack_api::runs::ApplyAction;
use dstack_model::fleet::{FleetConfiguration, SshHost, SshKey};
use jiff::Timestamp;

use crate::apply::{ApplyArgs, default_profile};
use crate::common::{Session, confirm, connect, interrupted, sleep_unless_interrupted, stdout_color};
use crate::render::{self, NO_OFFERS_WARNING};
use crate::{EXIT_INVALID, EXIT_OK, fail};

/// The fleet spec `dstack apply` submits: `-n` and `-e` applied, every `identity_file` read
/// into `ssh_key` (the server connects with the keys, not the paths).
pub fn build_fleet_spec(
    mut conf: FleetConfiguration,
    configuration_path: &str,
    name: Option<&str>,
    env: &[String],
    lookup: impl FnMut(&str) -> Option<String>,
    read_key: impl Fn(&str) -> Result<SshKey, String>,
) -> Result<FleetSpec, String> {
    if let Some(name) = name {
        conf.name = Some(name.to_owned());
    }
    for item in env {
        match item.split_once('=') {
            Some((key, value)) => conf.env.set(key, value),
            None => conf.env.set_required(item.as_str()),
        }
    }
    if conf.ssh_config.is_none() && !conf.env.is_empty() {
        return Err("`env` is currently supported for SSH fleets only".to_owned());
    }
    conf.env.resolve(lookup)?;
    if let Some(ssh) = &mut conf.ssh_config {
        if let Some(path) = &ssh.identity_file {
            ssh.ssh_key = Some(read_key(path)?);
        }
        if let Some(proxy) = &mut ssh.proxy_jump {
            proxy.ssh_key = Some(read_key(&proxy.identity_file)?);
        }
        for host in &mut ssh.hosts {
            if let SshHost::Params(params) = host {
                if let Some(path) = &params.identity_file {
                    params.ssh_key = Some(read_key(path)?);
                }
                if let Some(proxy) = &mut params.proxy_jump {
                    proxy.ssh_key = Some(read_key(&proxy.identity_file)?);
                }
            }
        }
    }
    Ok(FleetSpec {
        configuration: conf,
        configuration_path: Some(configuration_path.to_owned()),
        profile: default_profile(),
        autocreated: false,
    })
}

/// Reads a private key and its `.pub` next to it (`~` is the home directory).
pub fn read_ssh_key(path: &str) -> Result<SshKey, String> {
    let full: PathBuf = match path.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().unwrap_or_default().join(rest),
        None => PathBuf::from(path),
    };
    let private =
        std::fs::read_to_string(&full).map_err(|_| format!("Unable to read the SSH key at {path}"))?;
    if private.trim_start().starts_with("ssh-") || private.trim_start().starts_with("ecdsa-") {
        return Err(format!("Expected a private key at {path}, got a public key"));
    }
    if !private.contains("PRIVATE KEY") {
        return Err(format!("Unsupported or invalid SSH key at {path}"));
    }
    let public_path = PathBuf::from(format!("{}.pub", full.display()));
    let public = std::fs::read_to_string(&public_path).map_err(|_| {
        format!(
            "Unable to read the public key {path}.pub; create it with `ssh-keygen -y -f {path} > {path}.pub`"
        )
    })?;
    Ok(SshKey { public, private: Some(private) })
}

/// The fleet plan's properties, as dstack prints them.
pub fn fleet_plan_properties(plan: &FleetPlan) -> String {
    let spec = plan.effective_spec.as_ref().unwrap_or(&plan.spec);
    let conf = &spec.configuration;
    let mut rows = vec![
        ("Project", plan.project_name.clone()),
        ("User", plan.user.clone()),
        ("Configuration", spec.configuration_path.clone().unwrap_or_else(|| "?".to_owned())),
        ("Type", "fleet".to_owned()),
    ];
    let placement = conf.placement.map_or("any", |p| p.as_str()).to_owned();
    match &conf.ssh_config {
        Some(ssh) => {
            rows.push(("Fleet type", "ssh".to_owned()));
            rows.push(("Nodes", ssh.hosts.len().to_string()));
            rows.push(("Placement", placement));
        }
        None => {
            rows.push(("Fleet type", "cloud".to_owned()));
            let nodes = conf.nodes.as_ref().map_or("-".to_owned(), |n| match n.max {
                Some(max) if max == n.min => n.min.to_string(),
                Some(max) => format!("{}..{max}", n.min),
                None => format!("{}..", n.min),
            });
            rows.push(("Nodes", nodes));
            rows.push(("Placement", placement));
            if let Some(backends) = &conf.profile.backends {
                rows.push(("Backends", backends.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ")));
            }
            if let Some(regions) = &conf.profile.regions {
                rows.push(("Regions", regions.join(", ")));
            }
            if let Some(resources) = &conf.resources {
                rows.push(("Resources", render::spec_resources(resources)));
            }
            if let Some(spot) = conf.profile.spot_policy.or(spec.profile.params.spot_policy) {
                rows.push(("Spot policy", spot.as_str().to_owned()));
            }
        }
    }
    if let Some(reservation) = &conf.reservation {
        rows.push(("Reservation", reservation.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!(" {k:width$}  {v}")).collect::<Vec<_>>().join("\n")
}

/// dstack's `_render_fleet_spec_diff`: what changed between the fleet's spec and the applied
/// one, as a nested list (`- Configuration properties:` with the changed fields under it),
/// ending with a newline; `None` when nothing changed.
pub fn fleet_spec_diff(old: &FleetSpec, new: &FleetSpec) -> Option<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else { return None };
    render::spec_diff(&old, &new, &[])
}

pub fn run(conf: FleetConfiguration, args: &ApplyArgs) -> u8 {
    let path = args.file.display().to_string();
    let lookup = |k: &str| std::env::var(k).ok();
    let spec = match build_fleet_spec(conf, &path, args.name.as_deref(), &args.env, lookup, read_ssh_key) {
        Ok(spec) => spec,
        Err(message) => return fail(message),
    };
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let plan = match session.client.get_fleet_plan(&session.project, &GetFleetPlanRequest { spec }) {
        Ok(plan) => plan,
        Err(e) => return fail(e),
    };
    out!("{}\n", fleet_plan_properties(&plan));
    if !plan.offers.is_empty() {
        let shown = &plan.offers[..plan.offers.len().min(3)];
        out!("{}\n", render::offers_table(shown, plan.total_offers, plan.max_offer_price, stdout_color()));
    } else if plan.spec.configuration.ssh_config.is_none() {
        out!("{NO_OFFERS_WARNING}\n");
    }
    let name = plan.spec.configuration.name.clone().unwrap_or_default();
    let mut recreate = false;
    let prompt = match &plan.current_resource {
        None => {
            if !name.is_empty() {
                out!("Fleet {name} does not exist yet.");
            }
            "Create the fleet?"
        }
        Some(current) => {
            let effective = plan.effective_spec.as_ref().unwrap_or(&plan.spec);
            let diff = fleet_spec_diff(&current.spec, effective);
            if serde_json::to_value(&current.spec).ok() == serde_json::to_value(effective).ok() {
                if args.yes && !args.force {
                    out!("No configuration changes detected. Use --force to apply anyway.");
                    return EXIT_OK;
                }
                out!("Found fleet {name}. No configuration changes detected.");
                recreate = true;
                "Re-create the fleet?"
            } else if plan.action == Some(ApplyAction::Update) {
                match diff {
                    Some(diff) => {
                        out!("Found fleet {name}. Detected changes that can be updated in-place:\n{diff}")
                    }
                    None => out!("Found fleet {name}. Configuration changes detected."),
                }
                "Update the fleet in-place?"
            } else {
                match diff {
                    Some(diff) => {
                        out!("Found fleet {name}. Detected changes that cannot be updated in-place:\n{diff}")
                    }
                    None => out!(
                        "Found fleet {name}. Configuration changes detected. Cannot update the fleet in-place."
                    ),
                }
                recreate = true;
                "Re-create the fleet?"
            }
        }
    };
    if !args.yes && !confirm(prompt) {
        out!("\nExiting...");
        return EXIT_OK;
    }
    if recreate && let Err(code) = delete_and_wait(&session, &name) {
        return code;
    }
    let req = ApplyFleetPlanRequest {
        plan: ApplyFleetPlanInput { spec: plan.spec, current_resource: plan.current_resource },
        force: args.force,
    };
    let fleet = match session.client.apply_fleet_plan(&session.project, &req) {
        Ok(fleet) => fleet,
        Err(e) => return fail(e),
    };
    if args.detach {
        out!("Fleet configuration submitted. Exiting...");
        return EXIT_OK;
    }
    wait_for_instances(&session, fleet)
}

fn delete_and_wait(session: &Session, name: &str) -> Result<(), u8> {
    eprintln!("Deleting the existing fleet {name}...");
    session.client.delete_fleets(&session.project, &[name.to_owned()]).map_err(fail)?;
    loop {
        match session.client.get_fleet(&session.project, name) {
            Ok(_) => std::thread::sleep(Duration::from_secs(1)),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(fail(e)),
        }
    }
}

fn provisioning(fleet: &Fleet) -> bool {
    fleet.instances.iter().any(|i| {
        matches!(
            i.status,
            InstanceStatus::Pending | InstanceStatus::Provisioning | InstanceStatus::Terminating
        )
    })
}

fn wait_for_instances(session: &Session, mut fleet: Fleet) -> u8 {
    let flag = interrupted();
    eprintln!("Provisioning {}...", fleet.name);
    while provisioning(&fleet) {
        if sleep_unless_interrupted(Duration::from_secs(2), &flag) {
            out!("Exiting... Fleet provisioning will continue in the background.");
            return EXIT_OK;
        }
        fleet = match session.client.get_fleet(&session.project, &fleet.name) {
            Ok(fleet) => fleet,
            Err(e) => return fail(e),
        };
    }
    out!(
        "{}",
        render::fleets_table(
            std::slice::from_ref(&fleet),
            &session.project,
            Timestamp::now(),
            stdout_color(),
            fleet.instances.iter().any(|i| i.status == InstanceStatus::Terminated),
        )
    );
    if fleet.instances.iter().any(|i| i.status == InstanceStatus::Terminated) {
        out!("\nSome instances failed. Check the table above for errors.");
        return EXIT_INVALID;
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FleetConfiguration {
        match dstack_model::parse_configuration(text).configuration.unwrap() {
            dstack_model::configuration::AnyConfiguration::Fleet(c) => *c,
            other => panic!("not a fleet: {}", other.type_name()),
        }
    }

    #[test]
    fn ssh_keys_are_read_into_the_spec() {
        let conf = parse(
            "type: fleet\nname: sshf\nssh_config:\n  user: ubuntu\n  identity_file: ~/.ssh/k\n  hosts:\n    - 127.0.0.1\n    - hostname: 127.0.0.2\n      identity_file: /keys/other\n",
        );
        let read =
            |p: &str| Ok(SshKey { public: format!("pub of {p}\n"), private: Some(format!("priv of {p}")) });
        let spec = build_fleet_spec(conf, "fleet.yml", None, &[], |_| None, read).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["configuration"]["ssh_config"]["ssh_key"]["public"], "pub of ~/.ssh/k\n");
        assert_eq!(
            json["configuration"]["ssh_config"]["hosts"][1]["ssh_key"]["private"],
            "priv of /keys/other"
        );
        assert_eq!(json["configuration_path"], "fleet.yml");
        assert_eq!(json["profile"]["name"], "default");
    }

    #[test]
    fn key_problems_say_what_to_do() {
        let dir = tempfile::TempDir::new().unwrap();
        let key = dir.path().join("k");
        let key_text = key.display().to_string();
        assert_eq!(read_ssh_key(&key_text).unwrap_err(), format!("Unable to read the SSH key at {key_text}"));
        std::fs::write(&key, "ssh-ed25519 AAAA me\n").unwrap();
        assert_eq!(
            read_ssh_key(&key_text).unwrap_err(),
            format!("Expected a private key at {key_text}, got a public key")
        );
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
            .unwrap();
        assert!(read_ssh_key(&key_text).unwrap_err().contains("ssh-keygen -y -f"));
        std::fs::write(dir.path().join("k.pub"), "ssh-ed25519 AAAA me\n").unwrap();
        let pair = read_ssh_key(&key_text).unwrap();
        assert_eq!(pair.public, "ssh-ed25519 AAAA me\n");
    }

    #[test]
    fn env_is_for_ssh_fleets_only() {
        let conf = parse("type: fleet\nname: cloud1\nnodes: 1\n");
        let err =
            build_fleet_spec(conf, "f.yml", None, &["A=1".to_owned()], |_| None, read_ssh_key).unwrap_err();
        assert_eq!(err, "`env` is currently supported for SSH fleets only");
    }

    fn ssh_spec(hosts: &str, path: &str, env: &str) -> FleetSpec {
        let conf =
            parse(&format!("type: fleet\nname: hosts\n{env}ssh_config:\n  user: root\n  hosts: [{hosts}]\n"));
        build_fleet_spec(conf, path, None, &[], |_| None, read_ssh_key).unwrap()
    }

    /// The outputs of dstack 0.22.5's `_render_fleet_spec_diff` for the same specs.
    #[test]
    fn spec_diffs_as_dstack_renders_them() {
        let one = ssh_spec("10.0.0.1", "fleet.yml", "");
        assert_eq!(fleet_spec_diff(&one, &one.clone()), None);
        let two = ssh_spec("10.0.0.1, 10.0.0.2", "fleet.yml", "");
        assert_eq!(fleet_spec_diff(&one, &two).unwrap(), "- Configuration properties:\n  - ssh_config\n");
        let moved = ssh_spec("10.0.0.1", "other.yml", "env:\n  A: '1'\n");
        assert_eq!(
            fleet_spec_diff(&one, &moved).unwrap(),
            "- Configuration properties:\n  - env\n- Configuration path\n"
        );
    }

    #[test]
    fn plan_properties_of_an_ssh_fleet() {
        let conf =
            parse("type: fleet\nname: sshf\nssh_config:\n  user: ubuntu\n  hosts: [127.0.0.1, 127.0.0.2]\n");
        let spec = build_fleet_spec(conf, "fleet.yml", None, &[], |_| None, read_ssh_key).unwrap();
        let plan = FleetPlan {
            project_name: "main".to_owned(),
            user: "admin".to_owned(),
            spec,
            effective_spec: None,
            current_resource: None,
            offers: Vec::new(),
            total_offers: 0,
            max_offer_price: None,
            action: Some(ApplyAction::Create),
        };
        assert_eq!(
            fleet_plan_properties(&plan),
            " Project        main\n User           admin\n Configuration  fleet.yml\n Type           fleet\n Fleet type     ssh\n Nodes          2\n Placement      any"
        );
    }
}
