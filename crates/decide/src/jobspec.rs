//! The job specs of a run: what each job runs, where and with what (dstack's job configurators).
//!
//! dstack 0.22.5 turns a run spec into job specs in two steps, and so do we:
//!
//! 1. [`effective_run_spec`]: the server's defaults on the submitted spec (what `runs/get_plan`
//!    returns as `effective_run_spec` and what is stored): `repo_id`/`repo_data` of the
//!    virtual repo, `configuration.priority` 0, `nodes: 1` for a task without `groups`, the
//!    GPU defaults (`gpu: 0..` and the vendor inferred from names or the default image) and
//!    the user's `ssh_key_pub`.
//! 2. [`job_specs`]: the jobs of one replica of one replica group, from an effective spec.
//!    [`plan_job_specs`] is what `runs/get_plan` shows: replica 0 of every replica group.
//!
//! What dstack does with I/O is an input here: the configuration of a custom image (its
//! entrypoint, command, user and CPU architectures, read from the registry) comes in an
//! [`ImageConfigs`] map that the caller fills for [`images_to_inspect`]. Neither step
//! interpolates secrets (dstack does that when it submits a job, not in the plan), and the
//! per-replica SSH key of multi-node jobs is left `None` for the caller to generate (the API
//! never shows it).
//!
//! [`host_commands`] is our own second form of a job's command, for fleets that run jobs as
//! host processes without dstack's base image.

use std::collections::{BTreeMap, BTreeSet};

use dstack_api::runs::{
    AppSpec, JobRetry, JobSpec, ProbeSpec, RepoData, Requirements, RunConfiguration, RunSpec, UnixUser,
};
use dstack_model::common::OffDuration;
use dstack_model::env::EnvValue;
use dstack_model::gpus::infer_vendor;
use dstack_model::profile::{ProfileParams, SpotPolicy};
use dstack_model::resources::{CpuArch, GpuSpec, ResourcesSpec};
use dstack_model::run::{
    BaseRunConfiguration, Ide, MountPoint, NodeGroup, PythonVersion, VolumeMountPoint, VolumeName,
};
use dstack_model::service::{HttpHeader, HttpMethod, ProbeType, ReplicaGroup, ServiceModel};

/// dstack's base image (`dstackai/base`), its version and Ubuntu release in 0.22.5.
pub const BASE_IMAGE: &str = "dstackai/base";
pub const BASE_IMAGE_VERSION: &str = "0.16";
pub const BASE_IMAGE_UBUNTU: &str = "24.04";
/// The Docker-in-Docker image of `docker: true`.
pub const DIND_IMAGE: &str = "dstackai/dind";
/// The image name that means "never ask a registry" (offers only): no commands, no arch.
pub const DUMMY_IMAGE: &str = "scratch";
/// The Python of the base image's venv when `python` is not set. dstack uses the server's
/// own Python version; the servers the fixtures were captured from ran 3.11.
pub const DEFAULT_PYTHON: PythonVersion = PythonVersion::Py311;
/// Where the repo goes when neither `repos[0].path` nor the legacy `repo_dir` is set.
pub const LEGACY_REPO_DIR: &str = "/workflow";
/// The name of the implicit replica group and node group.
pub const DEFAULT_GROUP_NAME: &str = "0";
/// The run name job names use in a plan for a run that has none yet.
pub const PLAN_RUN_NAME: &str = "dry-run";
/// `repo_id` of the virtual repo (no code).
pub const VIRTUAL_REPO_ID: &str = "none";
/// `DSTACK_SERVER_URL` in jobs with `dstack: true`: the server socket inside the container.
pub const RUN_SERVER_URL: &str = "http+unix://%2Frun%2Fdstack%2Fserver.sock";
/// Ports dstack keeps for its own agents; never forwarded as apps.
pub const RESERVED_PORTS: std::ops::RangeInclusive<i64> = 10000..=10999;
/// `stop_duration` when not set: five minutes.
pub const DEFAULT_STOP_DURATION: i64 = dstack_model::profile::DEFAULT_STOP_DURATION;

const DSTACK_DIR: &str = "/dstack";
const UV_PYTHON_INSTALL_DIR: &str = "/opt/uv/python";
const INSTALL_IPYKERNEL: &str = "(echo 'uv pip install ipykernel...' && uv pip install -q --no-cache-dir ipykernel 2> /dev/null) || \
(echo 'pip install ipykernel...' && pip install -q --no-cache-dir ipykernel 2> /dev/null) || \
echo 'no uv or pip found, ipykernel was not installed'";
const IDE_EXTENSIONS: &[&str] = &["ms-python.python", "ms-toolsai.jupyter"];

/// Why job specs could not be computed; the messages are dstack's where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecError {
    #[error("ssh_key_pub must be set if the user has no ssh_public_key")]
    NoSshKey,
    /// The caller did not provide the registry configuration of an image that is needed.
    #[error("the configuration of image {0:?} is needed: inspect it in the registry first")]
    ImageConfigMissing(String),
    #[error(
        "Could not determine what command to run. Please specify either `commands` or `entrypoint` in your run configuration"
    )]
    NoCommand,
    #[error("invalid entrypoint: {0}")]
    Entrypoint(String),
    #[error("environment variables are not resolved: {0:?}")]
    UnresolvedEnv(Vec<String>),
    #[error("{0}")]
    Interpolation(String),
    #[error("invalid user format: {0}")]
    User(String),
    #[error("no replica group named {0:?}")]
    UnknownReplicaGroup(String),
}

/// What a registry says about an image (dstack's `ImageConfig` plus the platforms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `USER`, as `user[:group]`.
    pub user: Option<String>,
    /// The CPU architectures the image is built for (one for a single-arch image).
    pub architectures: Vec<CpuArch>,
}

/// Image configurations by image name as written in the configuration.
pub type ImageConfigs = BTreeMap<String, ImageConfig>;

// ---------------------------------------------------------------------------------------------
// The effective run spec
// ---------------------------------------------------------------------------------------------

/// The submitted spec with dstack's server defaults (`validate_run_spec_and_set_defaults`,
/// without its checks, which `static_checks` of the model makes).
///
/// `user_ssh_public_key` is the submitting user's key (used when the spec has none);
/// `legacy_repo_dir` is dstack's flag for clients older than 0.19, which sets
/// `working_dir: /workflow` when none is given.
pub fn effective_run_spec(
    run_spec: &RunSpec,
    user_ssh_public_key: Option<&str>,
    legacy_repo_dir: bool,
) -> Result<RunSpec, JobSpecError> {
    let mut spec = run_spec.clone();
    if spec.repo_id.is_none() {
        spec.repo_id = Some(VIRTUAL_REPO_ID.to_owned());
    }
    if spec.repo_data.is_none() {
        spec.repo_data = Some(RepoData::Virtual);
    }
    match &mut spec.configuration {
        RunConfiguration::DevEnvironment(c) => {
            set_resources_defaults(&mut c.base.resources, c.base.image.as_deref(), c.base.docker);
        }
        RunConfiguration::Task(c) => {
            if c.groups.is_none() && c.nodes.is_none() {
                c.nodes = Some(1);
            }
            let (image, docker) = (c.base.image.clone(), c.base.docker);
            set_resources_defaults(&mut c.base.resources, image.as_deref(), docker);
            for group in c.groups.iter_mut().flatten() {
                set_resources_defaults(&mut group.resources, image.as_deref(), docker);
            }
        }
        RunConfiguration::Service(c) => {
            let (image, docker) = (c.base.image.clone(), c.base.docker);
            set_resources_defaults(&mut c.base.resources, image.as_deref(), docker);
            for group in c.groups.iter_mut().flatten() {
                let group_image = group.image.clone().or_else(|| image.clone());
                let group_docker = group.docker.or(docker);
                set_resources_defaults(&mut group.resources, group_image.as_deref(), group_docker);
            }
        }
    }
    let base = base_mut(&mut spec.configuration);
    if base.priority.is_none() {
        base.priority = Some(0);
    }
    if spec.ssh_key_pub.is_none() {
        match user_ssh_public_key.filter(|k| !k.is_empty()) {
            Some(key) => spec.ssh_key_pub = Some(key.to_owned()),
            None => return Err(JobSpecError::NoSshKey),
        }
    }
    let base = base_mut(&mut spec.configuration);
    if base.working_dir.is_none() && legacy_repo_dir {
        base.working_dir = Some(LEGACY_REPO_DIR.to_owned());
    }
    Ok(spec)
}

fn set_resources_defaults(resources: &mut ResourcesSpec, image: Option<&str>, docker: Option<bool>) {
    let gpu = resources.gpu.get_or_insert_with(GpuSpec::zero_or_more);
    gpu.vendor = infer_vendor(gpu, image, docker == Some(true));
}

fn base_mut(conf: &mut RunConfiguration) -> &mut BaseRunConfiguration {
    match conf {
        RunConfiguration::DevEnvironment(c) => &mut c.base,
        RunConfiguration::Task(c) => &mut c.base,
        RunConfiguration::Service(c) => &mut c.base,
    }
}

fn base(conf: &RunConfiguration) -> &BaseRunConfiguration {
    match conf {
        RunConfiguration::DevEnvironment(c) => &c.base,
        RunConfiguration::Task(c) => &c.base,
        RunConfiguration::Service(c) => &c.base,
    }
}

fn conf_profile(conf: &RunConfiguration) -> &ProfileParams {
    match conf {
        RunConfiguration::DevEnvironment(c) => &c.profile,
        RunConfiguration::Task(c) => &c.profile,
        RunConfiguration::Service(c) => &c.profile,
    }
}

/// dstack's `merged_profile`: the configuration's profile parameters over the spec's profile.
pub fn merged_profile(run_spec: &RunSpec) -> ProfileParams {
    let default = ProfileParams::default();
    let base = run_spec.profile.as_ref().map_or(&default, |p| &p.params);
    conf_profile(&run_spec.configuration).merged_over(base)
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

/// The names of the replica groups of a run: a service's `groups` (or the implicit `"0"`);
/// `["0"]` for the other types.
pub fn replica_group_names(run_spec: &RunSpec) -> Vec<String> {
    match &run_spec.configuration {
        RunConfiguration::Service(c) => match &c.groups {
            Some(groups) => groups.iter().map(|g| g.name.clone()).collect(),
            None => vec![DEFAULT_GROUP_NAME.to_owned()],
        },
        _ => vec![DEFAULT_GROUP_NAME.to_owned()],
    }
}

/// A task's node groups: `groups`, or one group `"0"` made of the top-level fields.
fn node_groups(c: &dstack_model::run::TaskConfiguration) -> Vec<NodeGroup> {
    match &c.groups {
        Some(groups) => groups.clone(),
        None => vec![NodeGroup {
            name: DEFAULT_GROUP_NAME.to_owned(),
            nodes: c.nodes.unwrap_or(1),
            resources: c.base.resources.clone(),
            commands: c.commands.clone(),
            ports: c.ports.clone(),
        }],
    }
}

/// A service's replica groups: `groups`, or one group `"0"` made of the top-level fields.
pub fn replica_groups(c: &dstack_model::run::ServiceConfiguration) -> Vec<ReplicaGroup> {
    match &c.groups {
        Some(groups) => groups.clone(),
        None => vec![ReplicaGroup {
            name: DEFAULT_GROUP_NAME.to_owned(),
            replicas: c.replicas.unwrap_or(dstack_model::common::Range::exact(1)),
            scaling: c.scaling.clone(),
            resources: c.base.resources.clone(),
            spot_policy: None,
            reservation: None,
            commands: c.commands.clone(),
            image: None,
            python: None,
            nvcc: None,
            docker: None,
            privileged: None,
            router: None,
        }],
    }
}

// ---------------------------------------------------------------------------------------------
// Job specs
// ---------------------------------------------------------------------------------------------

/// The job specs `runs/get_plan` shows for an effective spec: replica 0 of each replica group,
/// in group order (one job per replica, or a task's nodes).
pub fn plan_job_specs(run_spec: &RunSpec, images: &ImageConfigs) -> Result<Vec<JobSpec>, JobSpecError> {
    let mut out = Vec::new();
    if let RunConfiguration::Service(_) = run_spec.configuration {
        for group in replica_group_names(run_spec) {
            out.extend(job_specs(run_spec, 0, Some(&group), images)?);
        }
    } else {
        out = job_specs(run_spec, 0, None, images)?;
    }
    Ok(out)
}

/// The jobs a run is submitted with (dstack's `submit_run`): a service starts `replicas.min`
/// replicas of each replica group, numbered by one counter across the groups (a scheduled
/// service starts none); the other types start replica 0.
pub fn submission_job_specs(run_spec: &RunSpec, images: &ImageConfigs) -> Result<Vec<JobSpec>, JobSpecError> {
    let RunConfiguration::Service(c) = &run_spec.configuration else {
        return job_specs(run_spec, 0, None, images);
    };
    let scheduled = merged_profile(run_spec).schedule.is_some();
    let mut out = Vec::new();
    let mut replica_num = 0;
    for group in replica_groups(c) {
        let initial = if scheduled { 0 } else { group.replicas.min.unwrap_or(0).max(0) };
        for _ in 0..initial {
            out.extend(job_specs(run_spec, replica_num, Some(&group.name), images)?);
            replica_num += 1;
        }
    }
    Ok(out)
}

/// The images whose registry configuration [`job_specs`] needs for this spec (custom images
/// other than `scratch`), to be put into [`ImageConfigs`] by the caller.
pub fn images_to_inspect(run_spec: &RunSpec) -> Vec<String> {
    let mut out = BTreeSet::new();
    let none = ImageConfigs::new();
    for group in replica_group_names(run_spec) {
        let cx = Configurator::new(run_spec, Some(&group), &none);
        let image = cx.image_name();
        if cx.custom_image().is_some() && image != DUMMY_IMAGE {
            out.insert(image);
        }
    }
    out.into_iter().collect()
}

/// The jobs of replica `replica_num` of `replica_group` (a service's group name; `None`: the
/// default group, as dstack for the other run types), from an effective spec (see
/// [`effective_run_spec`]). A task gives one job per node, in node-group order; the others
/// one job.
///
/// Job names are `<run>-<job_num>-<replica_num>` (dstack's order), with the run name
/// [`PLAN_RUN_NAME`] while the spec has none.
pub fn job_specs(
    run_spec: &RunSpec,
    replica_num: i64,
    replica_group: Option<&str>,
    images: &ImageConfigs,
) -> Result<Vec<JobSpec>, JobSpecError> {
    let cx = Configurator::new(run_spec, replica_group, images);
    match &run_spec.configuration {
        RunConfiguration::Task(c) => {
            let groups = node_groups(c);
            let total: i64 = groups.iter().map(|g| g.nodes).sum();
            let mut out = Vec::new();
            let mut job_num = 0;
            for (group_index, group) in groups.iter().enumerate() {
                for local in 0..group.nodes {
                    let node = NodeCx { group, index: group_index as i64, job_index: local };
                    out.push(cx.job_spec(replica_num, job_num, total, Some(node))?);
                    job_num += 1;
                }
            }
            Ok(out)
        }
        RunConfiguration::Service(c) => {
            if let Some(name) = replica_group
                && !replica_groups(c).iter().any(|g| g.name == name)
            {
                return Err(JobSpecError::UnknownReplicaGroup(name.to_owned()));
            }
            Ok(vec![cx.job_spec(replica_num, 0, 1, None)?])
        }
        RunConfiguration::DevEnvironment(_) => Ok(vec![cx.job_spec(replica_num, 0, 1, None)?]),
    }
}

#[derive(Clone, Copy)]
struct NodeCx<'a> {
    group: &'a NodeGroup,
    index: i64,
    job_index: i64,
}

/// One run spec and replica group: dstack's `JobConfigurator` and its three subclasses.
struct Configurator<'a> {
    spec: &'a RunSpec,
    conf: &'a BaseRunConfiguration,
    profile: ProfileParams,
    group_name: Option<&'a str>,
    /// The current replica group of a service (found by name).
    group: Option<ReplicaGroup>,
    images: &'a ImageConfigs,
}

impl<'a> Configurator<'a> {
    fn new(spec: &'a RunSpec, group_name: Option<&'a str>, images: &'a ImageConfigs) -> Self {
        let group = match &spec.configuration {
            RunConfiguration::Service(c) => {
                replica_groups(c).into_iter().find(|g| Some(g.name.as_str()) == group_name)
            }
            _ => None,
        };
        Configurator {
            spec,
            conf: base(&spec.configuration),
            profile: merged_profile(spec),
            group_name,
            group,
            images,
        }
    }

    fn run_name(&self) -> &str {
        self.spec.run_name.as_deref().unwrap_or(PLAN_RUN_NAME)
    }

    fn job_spec(
        &self,
        replica_num: i64,
        job_num: i64,
        jobs_per_replica: i64,
        node: Option<NodeCx<'_>>,
    ) -> Result<JobSpec, JobSpecError> {
        Ok(JobSpec {
            replica_num,
            job_num,
            job_name: format!("{}-{job_num}-{replica_num}", self.run_name()),
            jobs_per_replica,
            replica_group: self.group_name.unwrap_or(DEFAULT_GROUP_NAME).to_owned(),
            app_specs: Some(self.app_specs(node)),
            user: self.user()?,
            commands: self.commands(node)?,
            env: self.env()?,
            home_dir: Some(self.conf.home_dir.clone()),
            image_name: self.image_name(),
            privileged: self.privileged(),
            single_branch: Some(self.conf.single_branch.unwrap_or(!self.is_dev())),
            max_duration: match self.profile.max_duration {
                Some(OffDuration::Seconds(s)) => Some(s),
                Some(OffDuration::Off) | None => None,
            },
            stop_duration: match self.profile.stop_duration {
                Some(OffDuration::Seconds(s)) => Some(s),
                Some(OffDuration::Off) => None,
                None => Some(DEFAULT_STOP_DURATION),
            },
            utilization_policy: self.profile.utilization_policy.clone(),
            registry_auth: self.conf.registry_auth.clone(),
            requirements: self.requirements(jobs_per_replica, node)?,
            retry: self
                .profile
                .retry
                .as_ref()
                .and_then(|r| r.effective())
                .map(|(on_events, duration)| JobRetry { on_events, duration }),
            volumes: Some(job_volumes(&self.conf.volumes, job_num)?),
            ssh_key: None,
            working_dir: self.working_dir(),
            repo_data: self.spec.repo_data.clone(),
            repo_code_hash: self.spec.repo_code_hash.clone(),
            repo_dir: self.repo_dir(),
            repo_exists_action: self.conf.repos.first().map(|r| r.if_exists),
            file_archives: self.spec.file_archives.clone(),
            service_port: match &self.spec.configuration {
                RunConfiguration::Service(c) => Some(c.port.container_port),
                _ => None,
            },
            probes: self.probes(),
            node_group_index: node.map_or(0, |n| n.index),
            node_group_name: node.map_or_else(|| DEFAULT_GROUP_NAME.to_owned(), |n| n.group.name.clone()),
            node_group_job_index: node.map_or(0, |n| n.job_index),
        })
    }

    fn is_dev(&self) -> bool {
        matches!(self.spec.configuration, RunConfiguration::DevEnvironment(_))
    }

    fn docker(&self) -> bool {
        self.conf.docker == Some(true)
    }

    fn group_docker(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.docker == Some(true))
    }

    fn group_image(&self) -> Option<&str> {
        self.group.as_ref().and_then(|g| g.image.as_deref())
    }

    /// The custom image whose registry configuration matters: the group's, else the run's.
    fn custom_image(&self) -> Option<&str> {
        self.group_image().or(self.conf.image.as_deref())
    }

    fn image_name(&self) -> String {
        if let Some(group) = &self.group {
            if group.docker == Some(true) {
                return DIND_IMAGE.to_owned();
            }
            if let Some(image) = &group.image {
                return image.clone();
            }
            if group.nvcc == Some(true) {
                return default_image(true);
            }
        }
        if self.docker() {
            DIND_IMAGE.to_owned()
        } else if let Some(image) = &self.conf.image {
            image.clone()
        } else {
            default_image(self.conf.nvcc == Some(true))
        }
    }

    fn image_config(&self) -> Result<&'a ImageConfig, JobSpecError> {
        let name = self.image_name();
        self.images.get(&name).ok_or(JobSpecError::ImageConfigMissing(name))
    }

    fn shell(&self) -> String {
        if let Some(shell) = &self.conf.shell {
            return if shell.starts_with('/') { shell.clone() } else { format!("/bin/{shell}") };
        }
        if self.group_docker() {
            return "/bin/bash".to_owned();
        }
        if self.group_image().is_some() {
            return "/bin/sh".to_owned();
        }
        if self.conf.image.is_none() { "/bin/bash" } else { "/bin/sh" }.to_owned()
    }

    fn python(&self) -> PythonVersion {
        self.group.as_ref().and_then(|g| g.python).or(self.conf.python).unwrap_or(DEFAULT_PYTHON)
    }

    /// The commands of the job (or node group), before any prelude.
    fn shell_commands(&self, node: Option<NodeCx<'_>>) -> Vec<String> {
        match &self.spec.configuration {
            RunConfiguration::Task(_) => node.map(|n| n.group.commands.clone()).unwrap_or_default(),
            RunConfiguration::Service(c) => match &self.group {
                Some(g) => g.commands.clone(),
                None => c.commands.clone(),
            },
            RunConfiguration::DevEnvironment(c) => {
                let mut out = Vec::new();
                if let Some(ide) = c.ide {
                    out.extend(ide_install_commands(ide, c.version.as_deref()));
                }
                out.push(INSTALL_IPYKERNEL.to_owned());
                out.extend(self.conf.setup.iter().cloned());
                out.push("echo".to_owned());
                out.extend(c.init.iter().cloned());
                let run_name = self.run_name();
                if let Some(ide) = c.ide {
                    out.extend(ide_readme_commands(ide, run_name));
                }
                out.push(format!("echo 'To connect via SSH, use: `ssh {run_name}`'"));
                out.push("echo".to_owned());
                out.push("echo -n 'To exit, press Ctrl+C.'".to_owned());
                out.push("tail -f /dev/null".to_owned());
                out
            }
        }
    }

    /// The prelude dstack runs before the user's commands on its own images.
    fn image_prelude(&self) -> Vec<String> {
        if let Some(group) = &self.group {
            if group.docker == Some(true) {
                return vec!["start-dockerd".to_owned()];
            }
            if group.image.is_some() {
                return Vec::new();
            }
        }
        if self.docker() {
            return vec!["start-dockerd".to_owned()];
        }
        if self.conf.image.is_some() || self.conf.entrypoint.is_some() {
            return Vec::new();
        }
        let python = self.python();
        let profile = format!("{DSTACK_DIR}/profile");
        vec![
            format!("eval $(echo 'export DSTACK_VENV_DIR={DSTACK_DIR}/venv' | sudo tee -a {profile})"),
            "sudo rm -rf $DSTACK_VENV_DIR".to_owned(),
            "sudo mkdir $DSTACK_VENV_DIR".to_owned(),
            "sudo chown $(id -u):$(id -g) $DSTACK_VENV_DIR".to_owned(),
            format!(
                "(if UV_PYTHON_INSTALL_DIR={UV_PYTHON_INSTALL_DIR} uv python find {python} > /dev/null 2>&1; \
                 then export UV_PYTHON_INSTALL_DIR={UV_PYTHON_INSTALL_DIR} UV_PYTHON_DOWNLOADS=never; fi; \
                 uv venv -q --prompt dstack -p {python} --seed $DSTACK_VENV_DIR)"
            ),
            format!("eval $(echo '. $DSTACK_VENV_DIR/bin/activate' | sudo tee -a {profile})"),
        ]
    }

    fn commands(&self, node: Option<NodeCx<'_>>) -> Result<Vec<String>, JobSpecError> {
        let mut result;
        if let Some(entrypoint) = &self.conf.entrypoint {
            result = shlex_split(entrypoint).map_err(JobSpecError::Entrypoint)?;
            result.extend(top_level_commands(&self.spec.configuration).iter().cloned());
        } else {
            let shell_commands = self.shell_commands(node);
            if !shell_commands.is_empty() {
                let mut all = self.image_prelude();
                all.extend(shell_commands);
                result = vec![self.shell(), "-i".to_owned(), "-c".to_owned(), join_shell_commands(&all)];
            } else if self.image_name() == DUMMY_IMAGE {
                result = vec![":".to_owned()];
            } else {
                let config = self.image_config()?;
                result = config.entrypoint.clone().unwrap_or_default();
                result.extend(config.cmd.clone().unwrap_or_default());
            }
        }
        if result.is_empty() {
            return Err(JobSpecError::NoCommand);
        }
        Ok(result)
    }

    fn user(&self) -> Result<Option<UnixUser>, JobSpecError> {
        let user = match &self.conf.user {
            Some(user) => Some(user.clone()),
            None => match self.custom_image() {
                Some(DUMMY_IMAGE) | None => None,
                Some(_) => self.image_config()?.user.clone(),
            },
        };
        user.map(|u| parse_unix_user(&u)).transpose()
    }

    fn privileged(&self) -> bool {
        if let Some(group) = &self.group {
            if group.docker == Some(true) {
                return true;
            }
            if let Some(p) = group.privileged {
                return p;
            }
        }
        self.docker() || self.conf.privileged
    }

    fn env(&self) -> Result<BTreeMap<String, String>, JobSpecError> {
        let mut env = BTreeMap::new();
        let mut unresolved = Vec::new();
        for (k, v) in self.conf.env.iter() {
            match v {
                EnvValue::Value(v) => {
                    env.insert(k.to_owned(), v.clone());
                }
                EnvValue::Required { .. } => unresolved.push(k.to_owned()),
            }
        }
        if !unresolved.is_empty() {
            return Err(JobSpecError::UnresolvedEnv(unresolved));
        }
        if self.conf.dstack {
            env.entry("DSTACK_SERVER_URL".to_owned()).or_insert_with(|| RUN_SERVER_URL.to_owned());
        }
        Ok(env)
    }

    fn app_specs(&self, node: Option<NodeCx<'_>>) -> Vec<AppSpec> {
        let ports = match &self.spec.configuration {
            RunConfiguration::DevEnvironment(c) => c.ports.clone(),
            RunConfiguration::Task(_) => node.map(|n| n.group.ports.clone()).unwrap_or_default(),
            RunConfiguration::Service(_) => Vec::new(),
        };
        ports
            .iter()
            .filter(|p| !RESERVED_PORTS.contains(&p.container_port))
            .enumerate()
            .map(|(i, p)| AppSpec {
                port: p.container_port,
                map_to_port: p.local_port,
                app_name: format!("app_{i}"),
                url_path: None,
                url_query_params: None,
            })
            .collect()
    }

    fn requirements(
        &self,
        jobs_per_replica: i64,
        node: Option<NodeCx<'_>>,
    ) -> Result<Requirements, JobSpecError> {
        let mut resources = self.conf.resources.clone();
        let mut image = self.conf.image.as_deref();
        match &self.spec.configuration {
            RunConfiguration::Service(_) => {
                if let Some(group) = &self.group {
                    resources = group.resources.clone();
                    if group.image.is_some() {
                        image = group.image.as_deref();
                    }
                }
            }
            RunConfiguration::Task(_) => {
                if let Some(node) = node {
                    resources = node.group.resources.clone();
                }
            }
            RunConfiguration::DevEnvironment(_) => {}
        }
        if resources.cpu.arch.is_none() && image != Some(DUMMY_IMAGE) {
            match image {
                None => resources.cpu.arch = Some(CpuArch::X86),
                Some(_) => {
                    // A multi-arch image leaves the arch open: any the image supports.
                    let archs = &self.image_config()?.architectures;
                    if let Some(&first) = archs.first()
                        && archs.iter().all(|a| *a == first)
                    {
                        resources.cpu.arch = Some(first);
                    }
                }
            }
        }
        let spot_policy = self
            .group
            .as_ref()
            .and_then(|g| g.spot_policy.as_deref())
            .and_then(SpotPolicy::from_wire)
            .or(self.profile.spot_policy)
            .unwrap_or(SpotPolicy::OnDemand);
        let reservation = self
            .group
            .as_ref()
            .and_then(|g| g.reservation.clone())
            .or_else(|| self.profile.reservation.clone());
        Ok(Requirements {
            resources,
            max_price: self.profile.max_price,
            spot: match spot_policy {
                SpotPolicy::Auto => None,
                other => Some(other == SpotPolicy::Spot),
            },
            reservation,
            multinode: Some(jobs_per_replica > 1),
            backend_options: self.profile.backend_options.clone(),
        })
    }

    fn working_dir(&self) -> Option<String> {
        let wd = self.conf.working_dir.as_deref()?;
        // `~` and `~/…` count as absolute (the runner expands them).
        if wd.starts_with('/') || wd.starts_with('~') {
            return Some(wd.to_owned());
        }
        Some(posix_join(LEGACY_REPO_DIR, wd))
    }

    fn repo_dir(&self) -> String {
        if let Some(repo) = self.conf.repos.first() {
            return repo.path.clone();
        }
        self.spec.repo_dir.clone().unwrap_or_else(|| LEGACY_REPO_DIR.to_owned())
    }

    fn probes(&self) -> Vec<ProbeSpec> {
        let RunConfiguration::Service(c) = &self.spec.configuration else { return Vec::new() };
        if let Some(probes) = &c.probes {
            return probes
                .iter()
                .map(|p| ProbeSpec {
                    kind: p.kind,
                    url: p.url.clone().unwrap_or_else(|| "/".to_owned()),
                    method: p.method.unwrap_or(HttpMethod::Get),
                    headers: p.headers.clone(),
                    body: p.body.clone(),
                    timeout: p.timeout.map_or(10, |d| d.0),
                    interval: p.interval.map_or(15, |d| d.0),
                    ready_after: p.ready_after.unwrap_or(1),
                    until_ready: p.until_ready.unwrap_or(false),
                })
                .collect();
        }
        let Some(ServiceModel::OpenAi(model)) = &c.model else { return Vec::new() };
        if replica_groups(c).iter().any(|g| g.router.is_some()) {
            let name = self.group_name.unwrap_or(DEFAULT_GROUP_NAME);
            let group = replica_groups(c).into_iter().find(|g| g.name == name);
            if group.is_none_or(|g| g.router.is_none()) {
                return Vec::new();
            }
        }
        let body = format!(
            "{{\"model\": {}, \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], \"max_tokens\": 1}}",
            py_json_str(&model.name)
        );
        vec![ProbeSpec {
            kind: ProbeType::Http,
            url: format!("{}/chat/completions", model.prefix.trim_end_matches('/')),
            method: HttpMethod::Post,
            headers: vec![HttpHeader {
                name: "Content-Type".to_owned(),
                value: "application/json".to_owned(),
            }],
            body: Some(body),
            timeout: 30,
            interval: 15,
            ready_after: 1,
            until_ready: false,
        }]
    }
}

fn top_level_commands(conf: &RunConfiguration) -> &[String] {
    match conf {
        RunConfiguration::Task(c) => &c.commands,
        RunConfiguration::Service(c) => &c.commands,
        RunConfiguration::DevEnvironment(_) => &[],
    }
}

/// `dstackai/base:<version>-base-ubuntu<release>` (`-devel-` with nvcc).
pub fn default_image(nvcc: bool) -> String {
    let variant = if nvcc { "devel" } else { "base" };
    format!("{BASE_IMAGE}:{BASE_IMAGE_VERSION}-{variant}-ubuntu{BASE_IMAGE_UBUNTU}")
}

/// Joins commands with ` && `, each trimmed, a background command (`cmd &`) wrapped in
/// `{ cmd & }` so that the chain goes on.
pub fn join_shell_commands(commands: &[String]) -> String {
    commands
        .iter()
        .map(|c| {
            let c = c.trim();
            if c.ends_with('&') { format!("{{ {c} }}") } else { c.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The command of a job run as a host process (our local fleets), without dstack's images:
/// with `entrypoint`, its words and then `commands` as they are (as dstack does); otherwise
/// `[shell, "-c", joined]` with the user's commands joined as [`join_shell_commands`] does,
/// without the base image's venv, `sudo` and `start-dockerd` prelude. The shell is `shell:`
/// (`bash`/`sh` under `/bin`) or `/bin/bash`; there is no `-i`, since a host process has no
/// terminal and an interactive shell would only print job-control warnings.
///
/// `group` picks a task's node group or a service's replica group (the first when `None`);
/// a dev environment runs `setup` and `init` and then stays up (`tail -f /dev/null`),
/// without the IDE installation and banners. Empty when there is nothing to run.
pub fn host_commands(config: &RunConfiguration, group: Option<&str>) -> Result<Vec<String>, JobSpecError> {
    let base = base(config);
    if let Some(entrypoint) = &base.entrypoint {
        let mut out = shlex_split(entrypoint).map_err(JobSpecError::Entrypoint)?;
        out.extend(top_level_commands(config).iter().cloned());
        return Ok(out);
    }
    let commands: Vec<String> = match config {
        RunConfiguration::Task(c) => {
            let groups = node_groups(c);
            let g = match group {
                Some(name) => groups.iter().find(|g| g.name == name),
                None => groups.first(),
            };
            g.map(|g| g.commands.clone()).unwrap_or_default()
        }
        RunConfiguration::Service(c) => {
            let groups = replica_groups(c);
            let g = match group {
                Some(name) => groups.iter().find(|g| g.name == name),
                None => groups.first(),
            };
            g.map(|g| g.commands.clone()).unwrap_or_default()
        }
        RunConfiguration::DevEnvironment(c) => {
            let mut out: Vec<String> = base.setup.clone();
            out.extend(c.init.iter().cloned());
            out.push("tail -f /dev/null".to_owned());
            out
        }
    };
    if commands.is_empty() {
        return Ok(Vec::new());
    }
    let shell = match &base.shell {
        Some(s) if s.starts_with('/') => s.clone(),
        Some(s) => format!("/bin/{s}"),
        None => "/bin/bash".to_owned(),
    };
    Ok(vec![shell, "-c".to_owned(), join_shell_commands(&commands)])
}

// ---------------------------------------------------------------------------------------------
// IDEs
// ---------------------------------------------------------------------------------------------

fn ide_install_commands(ide: Ide, version: Option<&str>) -> Vec<String> {
    let Some(version) = version else { return Vec::new() };
    let (url, archive, target, server) = match ide {
        Ide::Zed => return Vec::new(),
        Ide::Vscode => (
            format!("https://update.code.visualstudio.com/commit:{version}/server-linux-$arch/stable"),
            "vscode-server-linux-$arch.tar.gz",
            format!("~/.vscode-server/bin/\"{version}\""),
            "code-server",
        ),
        Ide::Cursor => (
            format!(
                "https://cursor.blob.core.windows.net/remote-releases/{version}/vscode-reh-linux-$arch.tar.gz"
            ),
            "vscode-reh-linux-$arch.tar.gz",
            format!("~/.cursor-server/cli/servers/\"Stable-{version}\"/server"),
            "cursor-server",
        ),
        Ide::Windsurf => {
            let (v, commit) = version.split_once('@').unwrap_or((version, ""));
            (
                format!(
                    "https://windsurf-stable.codeiumdata.com/linux-reh-$arch/stable/{commit}/windsurf-reh-linux-$arch-{v}.tar.gz"
                ),
                "windsurf-reh-linux-$arch.tar.gz",
                format!("~/.windsurf-server/bin/\"{commit}\""),
                "windsurf-server",
            )
        }
    };
    let extensions =
        IDE_EXTENSIONS.iter().map(|e| format!("--install-extension \"{e}\"")).collect::<Vec<_>>().join(" ");
    vec![
        "if [ $(uname -m) = \"aarch64\" ]; then arch=\"arm64\"; else arch=\"x64\"; fi".to_owned(),
        "mkdir -p /tmp".to_owned(),
        format!("wget -q --show-progress \"{url}\" -O \"/tmp/{archive}\""),
        format!("mkdir -vp {target}"),
        format!("tar --no-same-owner -xz --strip-components=1 -C {target} -f \"/tmp/{archive}\""),
        format!("rm \"/tmp/{archive}\""),
        format!("PATH=\"$PATH\":{target}/bin {server} {extensions}"),
    ]
}

/// The IDE's display name and the link to open the dev environment at `authority`.
pub fn ide_url(ide: Ide, authority: &str, working_dir: &str) -> (&'static str, String) {
    match ide {
        Ide::Vscode => ("VS Code", format!("vscode://vscode-remote/ssh-remote+{authority}{working_dir}")),
        Ide::Cursor => ("Cursor", format!("cursor://vscode-remote/ssh-remote+{authority}{working_dir}")),
        Ide::Windsurf => {
            ("Windsurf", format!("windsurf://vscode-remote/ssh-remote+{authority}{working_dir}"))
        }
        Ide::Zed => ("Zed", format!("zed://ssh/{authority}{working_dir}")),
    }
}

fn ide_readme_commands(ide: Ide, authority: &str) -> Vec<String> {
    let (name, url) = ide_url(ide, authority, "$DSTACK_WORKING_DIR");
    vec![
        format!("echo 'To open in {name}, use link below:'"),
        "echo".to_owned(),
        format!("echo \"  {url}\""),
        "echo".to_owned(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Small helpers with Python's semantics
// ---------------------------------------------------------------------------------------------

/// The volumes of job `job_num`: `${{ dstack.job_num }}` and `${{ dstack.node_rank }}` in
/// network volume names replaced (names always become a list, as in dstack).
fn job_volumes(volumes: &[MountPoint], job_num: i64) -> Result<Vec<MountPoint>, JobSpecError> {
    let vars = [("dstack.job_num", job_num.to_string()), ("dstack.node_rank", job_num.to_string())];
    volumes
        .iter()
        .map(|m| match m {
            MountPoint::Instance(_) => Ok(m.clone()),
            MountPoint::Volume(v) => {
                let names: Vec<&String> = match &v.name {
                    VolumeName::One(n) => vec![n],
                    VolumeName::AnyOf(ns) => ns.iter().collect(),
                };
                let names =
                    names.into_iter().map(|n| interpolate(n, &vars)).collect::<Result<Vec<_>, _>>()?;
                Ok(MountPoint::Volume(VolumeMountPoint {
                    name: VolumeName::AnyOf(names),
                    path: v.path.clone(),
                }))
            }
        })
        .collect()
}

/// dstack's `VariablesInterpolator.interpolate_or_error`: `${{ ns.name }}` references
/// replaced and `$$` read as `$`; an unknown or malformed reference is an error.
fn interpolate(s: &str, vars: &[(&str, String)]) -> Result<String, JobSpecError> {
    let mut out = String::new();
    let mut missing = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let Some(dollar) = s[start..].find('$').map(|i| i + start) else {
            out.push_str(&s[start..]);
            break;
        };
        if dollar == s.len() - 1 {
            out.push_str(&s[start..]);
            break;
        }
        if s.as_bytes()[dollar + 1] == b'$' {
            out.push_str(&s[start..=dollar]);
            start = dollar + 2;
            continue;
        }
        let Some(opening) = s[start..].find("${{").map(|i| i + start) else {
            out.push_str(&s[start..]);
            break;
        };
        out.push_str(&s[start..opening]);
        let Some(closing) = s[opening..].find("}}").map(|i| i + opening) else {
            return Err(JobSpecError::Interpolation(format!("No pattern closing: {}", &s[opening..])));
        };
        let name = s[opening + 3..closing].trim();
        if !valid_reference_name(name) {
            return Err(JobSpecError::Interpolation(format!("Illegal reference name: {name}")));
        }
        match vars.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => out.push_str(v),
            None => missing.push(name.to_owned()),
        }
        start = closing + 2;
    }
    if !missing.is_empty() {
        let list = missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ");
        return Err(JobSpecError::Interpolation(format!(
            "Failed to interpolate due to missing vars: [{list}]"
        )));
    }
    Ok(out)
}

fn valid_reference_name(s: &str) -> bool {
    let Some(dot) = s.find('.') else { return false };
    if s.matches('.').count() != 1 || dot == 0 || dot == s.len() - 1 {
        return false;
    }
    let first = |c: char| c.is_ascii_alphabetic() || c == '_';
    let rest = |c: char| first(c) || c.is_ascii_digit() || c == '.';
    s.chars().next().is_some_and(first)
        && s[dot + 1..].chars().next().is_some_and(first)
        && s.chars().all(rest)
}

/// `<user>[:<group>]`, each a name or a non-negative id (dstack's `UnixUser.parse`).
fn parse_unix_user(v: &str) -> Result<UnixUser, JobSpecError> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() > 2 {
        return Err(JobSpecError::User("too many parts".to_owned()));
    }
    let mut user = UnixUser::default();
    if parts[0].is_empty() {
        return Err(JobSpecError::User("empty user name or id".to_owned()));
    }
    match py_int(parts[0]) {
        Some(uid) if uid < 0 => return Err(JobSpecError::User(format!("negative uid {uid}"))),
        Some(uid) => user.uid = Some(uid),
        None => user.username = Some(parts[0].to_owned()),
    }
    if let Some(group) = parts.get(1) {
        if group.is_empty() {
            return Err(JobSpecError::User("empty group name or id".to_owned()));
        }
        match py_int(group) {
            Some(gid) if gid < 0 => return Err(JobSpecError::User(format!("negative gid {gid}"))),
            Some(gid) => user.gid = Some(gid),
            None => user.groupname = Some((*group).to_owned()),
        }
    }
    Ok(user)
}

/// Python's `int(s)` for plain decimal text (surrounding whitespace, sign, `_` separators).
fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// `PurePosixPath(base) / rel` for a relative `rel`: empty and `.` parts dropped.
fn posix_join(base: &str, rel: &str) -> String {
    let mut out = base.trim_end_matches('/').to_owned();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

/// Python's `json.dumps` of a string (ASCII only, `\uXXXX` escapes).
fn py_json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Python's `shlex.split` (POSIX mode, no comments).
pub fn shlex_split(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut token = String::new();
    let mut in_token = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                if in_token {
                    out.push(std::mem::take(&mut token));
                    in_token = false;
                }
            }
            '\\' => {
                in_token = true;
                match chars.next() {
                    Some(next) => token.push(next),
                    None => return Err("No escaped character".to_owned()),
                }
            }
            '\'' => {
                in_token = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => token.push(c),
                        None => return Err("No closing quotation".to_owned()),
                    }
                }
            }
            '"' => {
                in_token = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => token.push(e),
                            Some(e) => {
                                token.push('\\');
                                token.push(e);
                            }
                            None => return Err("No closing quotation".to_owned()),
                        },
                        Some(c) => token.push(c),
                        None => return Err("No closing quotation".to_owned()),
                    }
                }
            }
            c => {
                in_token = true;
                token.push(c);
            }
        }
    }
    if in_token {
        out.push(token);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shlex_splits_like_python() {
        let split = |s: &str| shlex_split(s).unwrap();
        assert_eq!(split("python -m  http.server"), ["python", "-m", "http.server"]);
        assert_eq!(split(r#"sh -c "echo \"a b\" \$x" 'c d'"#), ["sh", "-c", r#"echo "a b" \$x"#, "c d"]);
        assert_eq!(split("a '' b"), ["a", "", "b"]);
        assert_eq!(split(r"a\ b"), ["a b"]);
        assert!(shlex_split("'open").is_err());
        assert!(shlex_split("end\\").is_err());
    }

    #[test]
    fn background_commands_are_wrapped() {
        let cmds = vec!["  sleep 1 & ".to_owned(), "echo b".to_owned()];
        assert_eq!(join_shell_commands(&cmds), "{ sleep 1 & } && echo b");
    }

    #[test]
    fn users_parse_like_dstack() {
        assert_eq!(
            parse_unix_user("1000:1000").unwrap(),
            UnixUser { uid: Some(1000), gid: Some(1000), ..UnixUser::default() }
        );
        assert_eq!(parse_unix_user("app").unwrap().username.as_deref(), Some("app"));
        assert!(parse_unix_user("a:b:c").is_err());
        assert!(parse_unix_user("-1").is_err());
    }

    #[test]
    fn interpolation_replaces_job_variables() {
        let vars = [("dstack.job_num", "3".to_owned())];
        assert_eq!(interpolate("data-${{ dstack.job_num }}", &vars).unwrap(), "data-3");
        assert_eq!(interpolate("a$$b", &vars).unwrap(), "a$b");
        assert!(interpolate("${{ dstack.nope }}", &vars).is_err());
        assert!(interpolate("${{ bad }}", &vars).is_err());
    }

    #[test]
    fn paths_and_json_follow_python() {
        assert_eq!(posix_join("/workflow", "./src/"), "/workflow/src");
        assert_eq!(posix_join("/workflow", "."), "/workflow");
        assert_eq!(py_json_str("llama \"3\" é"), "\"llama \\\"3\\\" \\u00e9\"");
    }

    #[test]
    fn host_commands_drop_the_prelude() {
        let conf: RunConfiguration = serde_json::from_value(serde_json::json!({
            "type": "task", "commands": ["echo a", "sleep 1 &"]
        }))
        .unwrap();
        assert_eq!(host_commands(&conf, None).unwrap(), ["/bin/bash", "-c", "echo a && { sleep 1 & }"]);
        let conf: RunConfiguration = serde_json::from_value(serde_json::json!({
            "type": "task", "image": "alpine", "entrypoint": "sh -c", "commands": ["echo a"]
        }))
        .unwrap();
        assert_eq!(host_commands(&conf, None).unwrap(), ["sh", "-c", "echo a"]);
    }
}

/// A job's environment with `${{ secrets.NAME }}` replaced (what dstack does when it submits
/// a job); a missing secret or a malformed reference is an error that names it.
pub fn interpolate_secrets(
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, JobSpecError> {
    let vars: Vec<(String, String)> =
        secrets.iter().map(|(k, v)| (format!("secrets.{k}"), v.clone())).collect();
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    env.iter().map(|(k, v)| Ok((k.clone(), interpolate(v, &vars)?))).collect()
}

#[cfg(test)]
mod secrets_tests {
    use super::*;

    #[test]
    fn secrets_are_interpolated_into_env() {
        let env = BTreeMap::from([
            ("A".to_owned(), "${{ secrets.token }}".to_owned()),
            ("B".to_owned(), "x$${{ y }}".to_owned()),
        ]);
        let secrets = BTreeMap::from([("token".to_owned(), "s3cr3t".to_owned())]);
        let out = interpolate_secrets(&env, &secrets).unwrap();
        assert_eq!(out["A"], "s3cr3t");
        assert_eq!(out["B"], "x${{ y }}");
        let err = interpolate_secrets(&env, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "Failed to interpolate due to missing vars: ['secrets.token']");
    }
}
