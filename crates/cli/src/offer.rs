//! `dstack offer [--gpu SPEC] [--json] [--max-offers N]`: what the project's backends and
//! fleets could run, cheapest first (api.md §4.9).

use dstack_api::runs::{GetRunPlanRequest, RunConfiguration, RunSpec};

use crate::apply::default_profile;
use crate::common::{connect, stdout_color};
use crate::render::{NO_OFFERS_WARNING, offers_table, spec_resources};
use crate::{EXIT_OK, fail};

#[derive(Debug, clap::Args)]
pub struct OfferArgs {
    /// GPU requirements, as in a configuration: `A100`, `24GB..`, `H100:8`, `amd:2`.
    #[arg(long, value_name = "SPEC")]
    pub gpu: Option<String>,
    /// CPU requirements: `4`, `8..`, `arm:4..`.
    #[arg(long, value_name = "SPEC")]
    pub cpu: Option<String>,
    /// Memory requirements: `16GB..`.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Disk requirements: `100GB..`.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// How many offers to ask for.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=10000))]
    pub max_offers: i64,
    /// Print the whole plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// The project (default: $DSTACK_PROJECT, then the default project).
    #[arg(long)]
    pub project: Option<String>,
}

/// The fixed task `dstack offer` plans: `commands: [":"]` on `scratch` (the server contacts
/// no registry for it) with the requested resources; unset ones are unconstrained.
pub fn offer_configuration(args: &OfferArgs) -> Result<RunConfiguration, String> {
    let or =
        |v: &Option<String>, default: serde_json::Value| v.as_ref().map_or(default, |s| s.as_str().into());
    let json = serde_json::json!({
        "type": "task",
        "commands": [":"],
        "image": "scratch",
        "user": "root",
        "resources": {
            "cpu": or(&args.cpu, "1..".into()),
            "memory": or(&args.memory, "0GB..".into()),
            "gpu": or(&args.gpu, "0..".into()),
            "disk": or(&args.disk, serde_json::Value::Null),
        },
    });
    serde_json::from_value(json).map_err(|e| format!("invalid resources: {e}"))
}

pub fn run(args: &OfferArgs) -> u8 {
    let configuration = match offer_configuration(args) {
        Ok(c) => c,
        Err(message) => return fail(message),
    };
    let session = match connect(args.project.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let req = GetRunPlanRequest {
        run_spec: RunSpec {
            run_name: None,
            repo_id: None,
            repo_data: None,
            repo_code_hash: None,
            repo_dir: None,
            file_archives: Vec::new(),
            working_dir: None,
            configuration_path: None,
            configuration,
            profile: Some(default_profile()),
            ssh_key_pub: None,
        },
        max_offers: Some(args.max_offers),
        reverse_offers: false,
        full_offers: false,
        unallocated_resources: false,
        for_offers_only: true,
    };
    let mut plan = match session.client.get_run_plan(&session.project, &req) {
        Ok(plan) => plan,
        Err(e) => return fail(e),
    };
    if args.json {
        out!("{}", serde_json::to_string(&plan).unwrap_or_default());
        return EXIT_OK;
    }
    let Some(job_plan) = plan.job_plans.first_mut() else {
        return fail("the server returned a plan without jobs");
    };
    job_plan.offers.sort_by(|a, b| a.price.total_cmp(&b.price));
    out!(" Project    {}", plan.project_name);
    out!(" Resources  {}\n", spec_resources(&job_plan.job_spec.requirements.resources));
    if job_plan.offers.is_empty() {
        out!("{NO_OFFERS_WARNING}");
    } else {
        out!("{}", offers_table(&job_plan.offers, job_plan.total_offers, job_plan.max_price, stdout_color()));
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(gpu: Option<&str>) -> OfferArgs {
        OfferArgs {
            gpu: gpu.map(str::to_owned),
            cpu: None,
            memory: None,
            disk: None,
            max_offers: 50,
            json: false,
            project: None,
        }
    }

    #[test]
    fn default_resources_are_unconstrained() {
        let conf = offer_configuration(&args(None)).unwrap();
        let json = serde_json::to_value(&conf).unwrap();
        assert_eq!(
            json["resources"],
            serde_json::json!({"cpu":{"arch":null,"count":{"min":1,"max":null}},"memory":{"min":0.0,"max":null},
                "shm_size":null,"gpu":{"vendor":null,"name":null,"count":{"min":0,"max":null},"memory":null,
                "total_memory":null,"compute_capability":null},"disk":null})
        );
        assert_eq!(json["image"], "scratch");
        assert_eq!(json["commands"], serde_json::json!([":"]));
    }

    #[test]
    fn gpu_flag_is_read_like_the_configuration() {
        let conf = offer_configuration(&args(Some("A100:80GB:2"))).unwrap();
        let json = serde_json::to_value(&conf).unwrap();
        assert_eq!(json["resources"]["gpu"]["name"], serde_json::json!(["A100"]));
        assert_eq!(json["resources"]["gpu"]["count"], serde_json::json!({"min":2,"max":2}));
        let err = offer_configuration(&args(Some("A100:lots"))).unwrap_err();
        assert!(err.starts_with("invalid resources:"), "{err}");
    }
}
