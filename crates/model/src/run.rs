//! Run configurations: `dev-environment`, `task` and `service`, as dstack 0.22.5 reads them.
//!
//! Each configuration serializes with its type-specific fields first, then the fields shared
//! by every run (`type` … `setup`), then the 20 profile parameters: exactly the key order of
//! dstack's `model_dump_json()`. Validation follows dstack's field validators in declaration
//! order and then its model validators in dstack's order, reporting the first cross-field
//! problem only (as dstack does). Unknown keys are reported after the cross-field checks, so a
//! misspelt required key gives both dstack's message and the "did you mean" hint.
//!
//! [`TaskConfiguration::static_checks`] and friends run the rules dstack's server applies at
//! `get_plan`/`apply` that need no server state.
//!
//! Deliberate differences from dstack:
//! - `nvcc: true` together with `image` (at the run level or within a replica group) is
//!   refused; dstack accepts it and silently ignores `nvcc`.
//! - `docker: true` given as a string (`"true"`) takes part in the `image`/`python`/`nvcc`
//!   exclusions; dstack checks the raw value with `is True`, so a quoted `"true"` slipped past
//!   its check and was then coerced to `true`.
//! - A replica group with both `replicas` and its old spelling `count` is refused; dstack
//!   silently drops `count`.
//! - Negative scaling delays (`scale_up_delay`, `scale_down_delay`) are refused; dstack keeps
//!   them and they act as no delay.
//! - Name patterns (group names, rate-limit prefixes) do not accept a trailing newline, which
//!   Python's `$` lets through.
//! - Errors in the legacy `replicas: [...]` group list are reported under `replicas[i]`, where
//!   they were written, not under `groups.i`.
//! - Only the first failing cross-field (model) rule is reported, as in dstack; field errors
//!   are all reported.

use serde::Serialize;

use crate::common::{
    OffDuration, PortMapping, RESOURCE_NAME_ERROR, Range, is_valid_group_name, is_valid_resource_name,
};
use crate::de::{Cx, FromNode, Object, choice, int_in, seq_with};
use crate::env::Env;
use crate::profile::{ProfileParams, ProfileScope};
use crate::resources::{CpuArch, ResourcesSpec};
use crate::service::{
    ProbeConfig, RateLimit, ReplicaGroup, ScalingSpec, ServiceGateway, ServiceHttps, ServiceModel,
    parse_groups, parse_replicas, parse_service_port,
};
use crate::string_enum;
use crate::yaml::{Node, Value};

string_enum! {
    /// The `type` of a run configuration.
    pub enum RunConfigurationType {
        DevEnvironment = "dev-environment",
        Task = "task",
        Service = "service",
    }
}

string_enum! {
    /// The Python versions of dstack's base image.
    pub enum PythonVersion {
        Py39 = "3.9",
        Py310 = "3.10",
        Py311 = "3.11",
        Py312 = "3.12",
        Py313 = "3.13",
        Py314 = "3.14",
        Py315 = "3.15",
    }
}

string_enum! {
    /// The IDEs a dev environment can pre-install.
    pub enum Ide {
        Vscode = "vscode",
        Cursor = "cursor",
        Windsurf = "windsurf",
        Zed = "zed",
    }
}

string_enum! {
    /// What to do when a repo's `path` exists and is not empty.
    pub enum RepoExistsAction {
        Error = "error",
        Skip = "skip",
    }
}

/// The credentials for pulling a private image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl FromNode for RegistryAuth {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let auth =
            RegistryAuth { username: obj.required(cx, "username"), password: obj.required(cx, "password") };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(auth)
    }
}

/// A network volume name, or a list of names of which any one will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VolumeName {
    One(String),
    AnyOf(Vec<String>),
}

/// A network volume mounted into the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMountPoint {
    pub name: VolumeName,
    pub path: String,
}

/// A directory of the host (instance) bind-mounted into the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceMountPoint {
    pub instance_path: String,
    pub path: String,
    pub optional: bool,
}

/// One entry of a run's `volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MountPoint {
    Volume(VolumeMountPoint),
    Instance(InstanceMountPoint),
}

impl MountPoint {
    /// The path in the container.
    pub fn path(&self) -> &str {
        match self {
            MountPoint::Volume(v) => &v.path,
            MountPoint::Instance(i) => &i.path,
        }
    }
}

/// dstack's mount path rule: absolute, no `..`, normalized as `PurePosixPath` does.
fn normalize_mount_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("empty path".to_owned());
    }
    if !path.starts_with('/') {
        return Err(format!("path must be absolute: {path}"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!(".. are not allowed: {path}"));
    }
    // POSIX keeps exactly two leading slashes; one or three and more collapse to one.
    let root = if path.starts_with("//") && !path.starts_with("///") { "//" } else { "/" };
    Ok(format!("{root}{}", parts.join("/")))
}

fn mount_path(node: &Node, cx: &mut Cx) -> Option<String> {
    let path = String::from_node(node, cx)?;
    match normalize_mount_path(&path) {
        Ok(p) => Some(p),
        Err(e) => {
            cx.error(node, e);
            None
        }
    }
}

fn volume_name(node: &Node, cx: &mut Cx) -> Option<VolumeName> {
    match &node.value {
        Value::Seq(_) => Vec::<String>::from_node(node, cx).map(VolumeName::AnyOf),
        _ => String::from_node(node, cx).map(VolumeName::One),
    }
}

impl FromNode for MountPoint {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                let [src, dst] = parts.as_slice() else {
                    cx.error_help(
                        node,
                        format!("invalid mount point format: {s}"),
                        "write `VOLUME_NAME:/container/path` or `/instance/path:/container/path`",
                    );
                    return None;
                };
                let mark = cx.mark();
                let checked = |field: &str, p: &str, cx: &mut Cx| -> String {
                    match normalize_mount_path(p) {
                        Ok(p) => p,
                        Err(e) => {
                            cx.at_field(field, |cx| cx.error(node, e));
                            String::new()
                        }
                    }
                };
                let mount = if src.contains('/') {
                    let instance_path = checked("instance_path", src, cx);
                    let path = checked("path", dst, cx);
                    MountPoint::Instance(InstanceMountPoint { instance_path, path, optional: false })
                } else {
                    let path = checked("path", dst, cx);
                    MountPoint::Volume(VolumeMountPoint { name: VolumeName::One((*src).to_owned()), path })
                };
                cx.ok_since(mark)?;
                Some(mount)
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let has_name = obj.raw("name").is_some();
                let has_instance_path = obj.raw("instance_path").is_some();
                if has_name && has_instance_path {
                    cx.error(
                        node,
                        "`name` (a network volume) and `instance_path` (an instance volume) are mutually exclusive",
                    );
                    return None;
                }
                let mark = cx.mark();
                let mount = if has_name {
                    let name = obj.required_with(cx, "name", |n, cx| volume_name(n, cx).map(Some));
                    let path = obj.required_with(cx, "path", mount_path);
                    name.map(|name| MountPoint::Volume(VolumeMountPoint { name, path }))
                } else if has_instance_path {
                    Some(MountPoint::Instance(InstanceMountPoint {
                        instance_path: obj.required_with(cx, "instance_path", mount_path),
                        path: obj.required_with(cx, "path", mount_path),
                        optional: obj.field(cx, "optional", || false),
                    }))
                } else {
                    cx.error_help(
                        node,
                        "a mount needs `name` (a network volume) or `instance_path` (an instance volume)",
                        "write `{name: VOLUME, path: /data}` or `{instance_path: /mnt/x, path: /data}`",
                    );
                    obj.allow(&["path", "optional"]);
                    return None;
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                mount
            }
            _ => {
                cx.expected(node, "a mount: `VOLUME:/path`, `/instance/path:/path` or a mapping");
                None
            }
        }
    }
}

/// The parts of the repo shorthand: `(local_path, url, path)`.
type RepoParts = (Option<String>, Option<String>, Option<String>);

/// A Git repo to clone into the run (`repos[0]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoSpec {
    pub local_path: Option<String>,
    pub url: Option<String>,
    pub branch: Option<String>,
    pub hash: Option<String>,
    pub path: String,
    pub if_exists: RepoExistsAction,
}

fn is_windows_drive(first: &str, second: &str) -> bool {
    first.len() == 1
        && first.bytes().all(|c| c.is_ascii_alphabetic())
        && (second.starts_with('\\') || second.starts_with('/'))
}

impl RepoSpec {
    /// The `SRC[:PATH]` shorthand: `(local_path, url, path)`.
    fn parse_shorthand(v: &str) -> Result<RepoParts, String> {
        let mut parts: Vec<String> = v.split(':').map(str::to_owned).collect();
        let mut is_url = false;
        if parts.len() > 1 {
            if parts[0].contains('@') || parts[1].starts_with("//") {
                let joined = format!("{}:{}", parts[0], parts[1]);
                parts.splice(0..2, [joined]);
                is_url = true;
            } else if is_windows_drive(&parts[0], &parts[1]) {
                let joined = format!("{}:{}", parts[0], parts[1]);
                parts.splice(0..2, [joined]);
            }
        }
        let mut it = parts.into_iter();
        match (it.next(), it.next(), it.next()) {
            (Some(src), path, None) => {
                Ok(if is_url { (None, Some(src), path) } else { (Some(src), None, path) })
            }
            _ => Err(format!("Invalid repo: {v}")),
        }
    }

    fn check_path(node: &Node, cx: &mut Cx, path: String) -> Option<String> {
        let first = path.split('/').find(|p| !p.is_empty()).unwrap_or("");
        if path.starts_with('~') && first != "~" {
            cx.error(node, "`~username` syntax is not supported");
            return None;
        }
        Some(path)
    }

    fn check_source(self, node: &Node, cx: &mut Cx) -> Option<RepoSpec> {
        let local = self.local_path.as_deref().is_some_and(|s| !s.is_empty());
        let url = self.url.as_deref().is_some_and(|s| !s.is_empty());
        if local && url {
            cx.error(node, "`local_path` and `url` are mutually exclusive");
            return None;
        }
        if !local && !url {
            cx.error(node, "Either `local_path` or `url` must be specified");
            return None;
        }
        Some(self)
    }
}

impl FromNode for RepoSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => {
                let (local_path, url, path) = match RepoSpec::parse_shorthand(s) {
                    Ok(parts) => parts,
                    Err(e) => {
                        cx.error_help(
                            node,
                            e,
                            "write `LOCAL_PATH[:PATH]` or `URL[:PATH]` with at most one `:` outside the URL",
                        );
                        return None;
                    }
                };
                let path = match path {
                    Some(p) => cx.at_field("path", |cx| RepoSpec::check_path(node, cx, p))?,
                    None => ".".to_owned(),
                };
                RepoSpec {
                    local_path,
                    url,
                    branch: None,
                    hash: None,
                    path,
                    if_exists: RepoExistsAction::Error,
                }
                .check_source(node, cx)
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let spec = RepoSpec {
                    local_path: obj.opt(cx, "local_path"),
                    url: obj.opt(cx, "url"),
                    branch: obj.opt(cx, "branch"),
                    hash: obj.opt(cx, "hash"),
                    path: obj.field_with(
                        cx,
                        "path",
                        || ".".to_owned(),
                        |n, cx| {
                            let p = String::from_node(n, cx)?;
                            RepoSpec::check_path(n, cx, p)
                        },
                    ),
                    if_exists: obj.field(cx, "if_exists", || RepoExistsAction::Error),
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                spec.check_source(node, cx)
            }
            _ => {
                cx.expected(node, "a repo: a path, a URL, or a mapping");
                None
            }
        }
    }
}

/// A local file or directory uploaded into the run (`files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePathMapping {
    pub local_path: String,
    pub path: String,
}

/// Python's `PureWindowsPath(p).is_absolute()` (3.11): a drive letter with a root, or a UNC
/// share.
fn is_windows_absolute(p: &str) -> bool {
    let p = p.replace('/', "\\");
    let b = p.as_bytes();
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\' {
        return true;
    }
    if let Some(rest) = p.strip_prefix("\\\\") {
        if rest.starts_with('\\') {
            return false;
        }
        if let Some((_server, after)) = rest.split_once('\\') {
            return !after.starts_with('\\');
        }
    }
    false
}

fn unix_file_path(node: &Node, cx: &mut Cx, path: String) -> Option<String> {
    if is_windows_absolute(&path) {
        cx.error(node, format!("path must be a Unix file path: {path}"));
        return None;
    }
    Some(path)
}

impl FromNode for FilePathMapping {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(s) => {
                let mut parts: Vec<String> = s.split(':').map(str::to_owned).collect();
                if parts.len() > 1 && is_windows_drive(&parts[0], &parts[1]) {
                    let joined = format!("{}:{}", parts[0], parts[1]);
                    parts.splice(0..2, [joined]);
                }
                let (local_path, path) = match parts.as_slice() {
                    [one] => (one.clone(), one.clone()),
                    [local, path] => (local.clone(), path.clone()),
                    _ => {
                        cx.error_help(
                            node,
                            format!("invalid file path mapping: {s}"),
                            "write `LOCAL_PATH` or `LOCAL_PATH:CONTAINER_PATH`",
                        );
                        return None;
                    }
                };
                let path = cx.at_field("path", |cx| unix_file_path(node, cx, path))?;
                Some(FilePathMapping { local_path, path })
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let m = FilePathMapping {
                    local_path: obj.required(cx, "local_path"),
                    path: obj.required_with(cx, "path", |n, cx| {
                        let p = String::from_node(n, cx)?;
                        unix_file_path(n, cx, p)
                    }),
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(m)
            }
            _ => {
                cx.expected(node, "a file mapping: `LOCAL[:PATH]` or a mapping");
                None
            }
        }
    }
}

/// Python's `int(s)` for the user/group parts (whitespace, sign, single underscores).
fn python_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let ok = !body.is_empty()
        && !body.starts_with('_')
        && !body.ends_with('_')
        && !body.contains("__")
        && body.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    if !ok {
        return None;
    }
    t.replace('_', "").parse().ok()
}

/// Checks the `user[:group]` format; the value is kept as written.
fn parse_user(node: &Node, cx: &mut Cx) -> Option<String> {
    let v = String::from_node(node, cx)?;
    let problem = (|| {
        let parts: Vec<&str> = v.split(':').collect();
        if parts.len() > 2 {
            return Some("too many parts".to_owned());
        }
        if parts[0].is_empty() {
            return Some("empty user name or id".to_owned());
        }
        if let Some(uid) = python_int(parts[0]).filter(|u| *u < 0) {
            return Some(format!("negative uid {uid}"));
        }
        if let Some(group) = parts.get(1) {
            if group.is_empty() {
                return Some("empty group name or id".to_owned());
            }
            if let Some(gid) = python_int(group).filter(|g| *g < 0) {
                return Some(format!("negative gid {gid}"));
            }
        }
        None
    })();
    match problem {
        Some(p) => {
            cx.error_help(
                node,
                format!("invalid user format: {p}"),
                "write `USER` or `USER:GROUP`, each a name or a non-negative id (`ubuntu`, `1000:1000`)",
            );
            None
        }
        None => Some(v),
    }
}

fn parse_shell(node: &Node, cx: &mut Cx) -> Option<String> {
    let v = String::from_node(node, cx)?;
    if v == "sh" || v == "bash" || v.starts_with('/') {
        return Some(v);
    }
    cx.error(node, "The value must be `sh`, `bash`, or an absolute path");
    None
}

/// Reads a Python version: a string, or a YAML float (`3.10` loads as 3.1 and means `3.10`).
pub(crate) fn parse_python(node: &Node, cx: &mut Cx) -> Option<PythonVersion> {
    let text = match &node.value {
        Value::Str(s) => s.clone(),
        Value::Float(f) => {
            let s = crate::yaml::python_float_repr(*f);
            if s == "3.1" { "3.10".to_owned() } else { s }
        }
        _ => String::new(),
    };
    if let Some(v) = PythonVersion::from_wire(&text) {
        return Some(v);
    }
    let message =
        format!("expected a Python version ({}), found {}", list(PythonVersion::ALL), node.describe());
    if matches!(node.value, Value::Float(_)) {
        cx.error_help(node, message, "quote the version: `python: \"3.12\"`");
    } else {
        cx.error(node, message);
    }
    None
}

pub(crate) fn list(items: &[&str]) -> String {
    items.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

/// Python's `repr` of a list of strings, as dstack puts it in messages: `['a', 'b']`.
pub(crate) fn py_str_list<S: AsRef<str>>(items: &[S]) -> String {
    let reprs: Vec<String> = items.iter().map(|s| py_str_repr(s.as_ref())).collect();
    format!("[{}]", reprs.join(", "))
}

fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python truthiness of an optional string.
pub(crate) fn truthy(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// The message for `nvcc: true` with an image, which dstack silently ignores.
const NVCC_WITH_IMAGE: &str =
    "`nvcc` has no effect with `image`: only dstack's default image has a variant with the CUDA compiler";
const NVCC_WITH_IMAGE_HELP: &str =
    "remove `nvcc` and use an image that includes nvcc, or remove `image` to use dstack's default image";

/// Reads `nvcc`, refusing `true` together with an image.
pub(crate) fn parse_nvcc(node: &Node, cx: &mut Cx, image_set: bool) -> Option<bool> {
    let v = bool::from_node(node, cx)?;
    if v && image_set {
        cx.error_help(node, NVCC_WITH_IMAGE, NVCC_WITH_IMAGE_HELP);
        return None;
    }
    Some(v)
}

/// The fields every run configuration has, in dstack's order (`type` … `setup`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseRunConfiguration {
    #[serde(rename = "type")]
    pub kind: RunConfigurationType,
    pub name: Option<String>,
    pub image: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub entrypoint: Option<String>,
    pub working_dir: Option<String>,
    pub home_dir: String,
    pub registry_auth: Option<RegistryAuth>,
    pub python: Option<PythonVersion>,
    pub nvcc: Option<bool>,
    pub single_branch: Option<bool>,
    pub env: Env,
    pub shell: Option<String>,
    pub resources: ResourcesSpec,
    pub priority: Option<i64>,
    pub volumes: Vec<MountPoint>,
    pub docker: Option<bool>,
    pub repos: Vec<RepoSpec>,
    pub files: Vec<FilePathMapping>,
    pub dstack: bool,
    pub setup: Vec<String>,
}

impl BaseRunConfiguration {
    /// The whole run as the target of the image checks (no groups).
    fn image_target(&self) -> ImageTarget<'_> {
        ImageTarget {
            group: None,
            resources: &self.resources,
            image: self.image.as_deref(),
            docker: self.docker == Some(true),
        }
    }

    /// Reads the shared fields from an open mapping, with dstack's field validators.
    fn read(obj: &mut Object<'_>, cx: &mut Cx, kind: RunConfigurationType) -> Self {
        let kind = obj.field_with(
            cx,
            "type",
            || kind,
            |n, cx| {
                if n.as_str() == Some(kind.as_str()) {
                    Some(kind)
                } else {
                    cx.expected(n, &format!("`{kind}`"));
                    None
                }
            },
        );
        let name = obj.opt(cx, "name");
        let image: Option<String> = obj.opt(cx, "image");
        let image_set = truthy(&image);
        let user = obj.opt_with(cx, "user", parse_user);
        let privileged = obj.field(cx, "privileged", || false);
        let entrypoint = obj.opt_with(cx, "entrypoint", |n, cx| {
            let v = String::from_node(n, cx)?;
            if kind == RunConfigurationType::DevEnvironment {
                cx.error_help(
                    n,
                    "entrypoint is not supported for dev-environment",
                    "use `init` to run commands when the dev environment starts",
                );
                return None;
            }
            Some(v)
        });
        let working_dir = obj.opt(cx, "working_dir");
        let home_dir = obj.field(cx, "home_dir", || "/root".to_owned());
        let registry_auth = obj.opt(cx, "registry_auth");
        let python = obj.opt_with(cx, "python", |n, cx| {
            if image_set {
                cx.error(n, "`image` and `python` are mutually exclusive fields");
                return None;
            }
            parse_python(n, cx)
        });
        let nvcc = obj.opt_with(cx, "nvcc", |n, cx| parse_nvcc(n, cx, image_set));
        let single_branch = obj.opt(cx, "single_branch");
        let env = obj.field(cx, "env", Env::default);
        let shell = obj.opt_with(cx, "shell", parse_shell);
        let resources = obj.field(cx, "resources", ResourcesSpec::default);
        let priority = obj.opt_with(cx, "priority", |n, cx| int_in(n, cx, Some(0), Some(100)));
        let volumes = obj.field(cx, "volumes", Vec::new);
        let docker = obj
            .opt_with(cx, "docker", |n, cx| parse_docker(n, cx, image_set, python.is_some(), nvcc, "fields"));
        let repos = obj.field_with(cx, "repos", Vec::new, |n, cx| {
            let repos = Vec::<RepoSpec>::from_node(n, cx)?;
            if repos.len() > 1 {
                cx.error(n, "A maximum of one repo is currently supported");
                return None;
            }
            Some(repos)
        });
        let files = obj.field(cx, "files", Vec::new);
        let dstack = obj.field(cx, "dstack", || false);
        let setup: Vec<String> = obj.field(cx, "setup", Vec::new);
        if !setup.is_empty()
            && kind != RunConfigurationType::DevEnvironment
            && let Some(n) = obj.raw("setup")
        {
            cx.at_field("setup", |cx| {
                cx.warn(
                    n,
                    "`setup` is deprecated and has no effect for tasks and services; move these commands to `commands`",
                )
            });
        }
        BaseRunConfiguration {
            kind,
            name,
            image,
            user,
            privileged,
            entrypoint,
            working_dir,
            home_dir,
            registry_auth,
            python,
            nvcc,
            single_branch,
            env,
            shell,
            resources,
            priority,
            volumes,
            docker,
            repos,
            files,
            dstack,
            setup,
        }
    }

    /// dstack's server-side checks of the shared fields that need no server state.
    fn static_checks(&self, out: &mut Vec<String>) {
        if let Some(name) = &self.name
            && !is_valid_resource_name(name)
        {
            out.push(RESOURCE_NAME_ERROR.to_owned());
        }
        for mount in &self.volumes {
            if !is_valid_docker_volume_target(mount.path()) {
                out.push(format!("Invalid volume mount path: {}", mount.path()));
            }
        }
    }
}

/// dstack's Docker mount target rule: absolute, no trailing `/` (except `/`), no NUL.
fn is_valid_docker_volume_target(path: &str) -> bool {
    path.starts_with('/') && (path == "/" || !path.ends_with('/')) && !path.contains('\0')
}

/// The profile rules dstack's server checks (`retry.duration`, `utilization_policy`).
///
/// They are read through the profile's JSON form so this module does not depend on how the
/// profile module types those fields.
/// Where a run's jobs take their resources, image and Docker-in-Docker setting from: the
/// whole run, or each group (with its index).
struct ImageTarget<'a> {
    group: Option<usize>,
    resources: &'a ResourcesSpec,
    image: Option<&'a str>,
    docker: bool,
}

/// dstack's `image` checks for accelerators and ARM CPUs the default image cannot serve
/// (`_validate_gpu_vendor_and_image`, `_validate_cpu_arch_and_image`).
fn image_static_checks(targets: &[ImageTarget<'_>], out: &mut Vec<String>) {
    let mut vendors = std::collections::BTreeSet::new();
    let mut gpu_groups = Vec::new();
    for t in targets {
        let found = crate::gpus::vendors_requiring_image(t.resources.gpu.as_ref(), t.image, t.docker);
        if !found.is_empty() {
            vendors.extend(found.iter().map(|v| v.as_str()));
            gpu_groups.extend(t.group);
        }
    }
    if !vendors.is_empty() {
        let list: Vec<String> = vendors.iter().map(|v| format!("'{v}'")).collect();
        let message = format!(
            "`image` must be set when the requested accelerator is not supported by the default image: [{}]",
            list.join(", ")
        );
        out.push(with_groups(&gpu_groups, message));
        return;
    }
    let arm: Vec<&ImageTarget<'_>> =
        targets.iter().filter(|t| t.resources.cpu.arch == Some(CpuArch::Arm)).collect();
    let with_docker: Vec<usize> = arm.iter().filter(|t| t.docker).filter_map(|t| t.group).collect();
    let without_image: Vec<usize> =
        arm.iter().filter(|t| !t.docker && t.image.is_none()).filter_map(|t| t.group).collect();
    match targets {
        [ImageTarget { group: None, .. }] => {
            if let Some(t) = arm.first() {
                if t.docker {
                    out.push("`docker: true` is not supported on ARM CPU".to_owned());
                } else if t.image.is_none() {
                    out.push("`image` must be set when ARM CPU requested".to_owned());
                }
            }
        }
        _ => {
            if !without_image.is_empty() {
                out.push(with_groups(
                    &without_image,
                    "`image` must be set when ARM CPU requested".to_owned(),
                ));
            }
            if !with_docker.is_empty() {
                out.push(with_groups(&with_docker, "`docker: true` is not supported on ARM CPU".to_owned()));
            }
        }
    }
}

/// One image-check target per group: `parts` gives a group's resources, image and Docker flag.
fn group_targets<'a, G>(
    groups: &'a [G],
    parts: impl Fn(&'a G) -> (&'a ResourcesSpec, Option<&'a str>, bool),
) -> Vec<ImageTarget<'a>> {
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let (resources, image, docker) = parts(g);
            ImageTarget { group: Some(i), resources, image, docker }
        })
        .collect()
}

/// Prefixes `groups[0, 2]: ` (dstack's Python list repr) when the message is about groups.
fn with_groups(groups: &[usize], message: String) -> String {
    if groups.is_empty() {
        return message;
    }
    let list: Vec<String> = groups.iter().map(ToString::to_string).collect();
    format!("groups[{}]: {message}", list.join(", "))
}

/// `docker: true` excludes `image`, `python` and `nvcc: true`; `scope` ends dstack's message
/// (`fields` at the top level, `within a replica group` in a group).
pub(crate) fn parse_docker(
    node: &Node,
    cx: &mut Cx,
    image_set: bool,
    python_set: bool,
    nvcc: Option<bool>,
    scope: &str,
) -> Option<bool> {
    let v = bool::from_node(node, cx)?;
    let conflict = if !v {
        None
    } else if image_set {
        Some("image")
    } else if python_set {
        Some("python")
    } else if nvcc == Some(true) {
        Some("nvcc")
    } else {
        None
    };
    if let Some(other) = conflict {
        cx.error(node, format!("`{other}` and `docker` are mutually exclusive {scope}"));
        return None;
    }
    Some(v)
}

fn profile_static_checks(profile: &ProfileParams, out: &mut Vec<String>) {
    if let Some(crate::profile::Retry::Policy(policy)) = &profile.retry
        && policy.duration.is_some_and(|d| d.0 < 0)
    {
        out.push("retry.duration cannot be negative".to_owned());
    }
    if let Some(policy) = &profile.utilization_policy
        && policy.time_window.0 > METRICS_RUNNING_TTL_SECONDS
    {
        out.push(format!("Maximum utilization_policy.time_window is {METRICS_RUNNING_TTL_SECONDS}s"));
    }
}

/// `DSTACK_SERVER_METRICS_RUNNING_TTL_SECONDS` default.
const METRICS_RUNNING_TTL_SECONDS: i64 = 3600;

/// Runs dstack's model (cross-field) rules once every field is valid, then reports unknown
/// keys. Returns the model only if nothing was wrong since `mark`.
fn finish<T>(
    obj: Object<'_>,
    cx: &mut Cx,
    mark: crate::de::Mark,
    model: T,
    check: impl FnOnce(&T, &mut Cx) -> Result<(), String>,
) -> Option<T> {
    let node = obj.node();
    if cx.ok_since(mark).is_some()
        && let Err(message) = check(&model, cx)
    {
        cx.error(node, message);
    }
    obj.finish(cx);
    cx.ok_since(mark)?;
    Some(model)
}

/// `Either commands or image must be set` (dstack's `ConfigurationWithCommandsParams`).
fn check_commands_or_image(commands: &[String], base: &BaseRunConfiguration) -> Result<(), String> {
    if commands.is_empty() && !truthy(&base.image) {
        return Err("Either `commands` or `image` must be set".to_owned());
    }
    Ok(())
}

fn is_present(obj: &mut Object<'_>, key: &'static str) -> bool {
    obj.raw(key).is_some_and(|n| !n.is_null())
}

/// A `type: dev-environment` configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevEnvironmentConfiguration {
    pub ide: Option<Ide>,
    pub version: Option<String>,
    pub init: Vec<String>,
    /// Seconds; `None` means off.
    pub inactivity_duration: Option<i64>,
    pub ports: Vec<PortMapping>,
    #[serde(flatten)]
    pub base: BaseRunConfiguration,
    #[serde(flatten)]
    pub profile: ProfileParams,
}

fn parse_inactivity_duration(node: &Node, cx: &mut Cx) -> Option<Option<i64>> {
    Some(match OffDuration::parse_field(node, cx)? {
        Some(OffDuration::Seconds(s)) => Some(s),
        Some(OffDuration::Off) | None => None,
    })
}

/// `^.+@[a-f0-9]+$`.
fn is_windsurf_version(v: &str) -> bool {
    match v.rsplit_once('@') {
        Some((head, tail)) => {
            !head.is_empty()
                && !head.contains('\n')
                && !tail.is_empty()
                && tail.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        }
        None => false,
    }
}

impl FromNode for DevEnvironmentConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let conf = DevEnvironmentConfiguration {
            ide: obj.opt(cx, "ide"),
            version: obj.opt(cx, "version"),
            init: obj.field(cx, "init", Vec::new),
            inactivity_duration: obj.opt_with(cx, "inactivity_duration", parse_inactivity_duration).flatten(),
            ports: obj.field(cx, "ports", Vec::new),
            base: BaseRunConfiguration::read(&mut obj, cx, RunConfigurationType::DevEnvironment),
            profile: ProfileParams::read(&mut obj, cx, ProfileScope::Run),
        };
        finish(obj, cx, mark, conf, |c, _| c.check())
    }
}

impl DevEnvironmentConfiguration {
    fn check(&self) -> Result<(), String> {
        if truthy(&self.version) && self.ide.is_none() {
            return Err("`version` requires `ide` to be set".to_owned());
        }
        if let (Some(Ide::Windsurf), Some(version)) = (self.ide, &self.version)
            && !version.is_empty()
            && !is_windsurf_version(version)
        {
            return Err(format!(
                "Invalid Windsurf version format: `{version}`. Expected format: `version@commit` (e.g., `1.106.0@8951cd3ad688e789573d7f51750d67ae4a0bea7d`)"
            ));
        }
        if self.base.dstack && self.inactivity_duration.is_some() {
            return Err("`dstack` is not supported together with `inactivity_duration`".to_owned());
        }
        Ok(())
    }

    /// dstack's server-side run checks that need no server state, with dstack's messages.
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.base.static_checks(&mut out);
        profile_static_checks(&self.profile, &mut out);
        image_static_checks(&[self.base.image_target()], &mut out);
        out
    }
}

/// One node group of a heterogeneous multi-node task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeGroup {
    /// Filled with the list index when not given.
    pub name: String,
    pub nodes: i64,
    pub resources: ResourcesSpec,
    pub commands: Vec<String>,
    pub ports: Vec<PortMapping>,
}

impl NodeGroup {
    fn read(node: &Node, cx: &mut Cx, index: usize) -> Option<NodeGroup> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let group = NodeGroup {
            name: obj
                .opt_with(cx, "name", |n, cx| {
                    let name = String::from_node(n, cx)?;
                    if !is_valid_group_name(&name) {
                        cx.error(n, "Node group name should match regex '^[a-z0-9][a-z0-9-]{0,39}$'");
                        return None;
                    }
                    Some(name)
                })
                .unwrap_or_else(|| index.to_string()),
            nodes: obj.field_with(cx, "nodes", || 1, |n, cx| int_in(n, cx, Some(1), None)),
            resources: obj.field(cx, "resources", ResourcesSpec::default),
            commands: obj.field(cx, "commands", Vec::new),
            ports: obj.field(cx, "ports", Vec::new),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(group)
    }
}

fn parse_node_groups(node: &Node, cx: &mut Cx) -> Option<Vec<NodeGroup>> {
    parse_named_groups(node, cx, "node", NodeGroup::read, |g| &g.name)
}

/// Reads a non-empty list of groups whose names (defaulting to the index) are unique;
/// `kind` is `node` or `replica` for the messages.
pub(crate) fn parse_named_groups<T>(
    node: &Node,
    cx: &mut Cx,
    kind: &str,
    read: impl Fn(&Node, &mut Cx, usize) -> Option<T>,
    name: impl Fn(&T) -> &str,
) -> Option<Vec<T>> {
    let mut index = 0;
    let groups = seq_with(node, cx, |n, cx| {
        let g = read(n, cx, index);
        index += 1;
        g
    })?;
    if groups.is_empty() {
        cx.error(node, "`groups` cannot be an empty list");
        return None;
    }
    let names: Vec<&str> = groups.iter().map(&name).collect();
    let repeated = duplicates(&names);
    if !repeated.is_empty() {
        cx.error(
            node,
            format!(
                "Duplicate {kind} group names found: {}. Each {kind} group must have a unique name.",
                py_str_list(&repeated)
            ),
        );
        return None;
    }
    Some(groups)
}

/// The names that occur more than once, in order of first occurrence.
pub(crate) fn duplicates<'a>(names: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) && !out.contains(name) {
            out.push(name);
        }
    }
    // Python's Counter keeps first-occurrence order.
    out.sort_by_key(|n| names.iter().position(|m| m == n));
    out
}

/// A `type: task` configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskConfiguration {
    pub nodes: Option<i64>,
    pub groups: Option<Vec<NodeGroup>>,
    pub ports: Vec<PortMapping>,
    pub commands: Vec<String>,
    #[serde(flatten)]
    pub base: BaseRunConfiguration,
    #[serde(flatten)]
    pub profile: ProfileParams,
}

impl FromNode for TaskConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let both = is_present(&mut obj, "nodes") && is_present(&mut obj, "groups");
        let conf = TaskConfiguration {
            nodes: obj.opt_with(cx, "nodes", |n, cx| int_in(n, cx, Some(1), None)),
            groups: obj.opt_with(cx, "groups", parse_node_groups),
            ports: obj.field(cx, "ports", Vec::new),
            commands: obj.field(cx, "commands", Vec::new),
            base: BaseRunConfiguration::read(&mut obj, cx, RunConfigurationType::Task),
            profile: ProfileParams::read(&mut obj, cx, ProfileScope::Run),
        };
        finish(obj, cx, mark, conf, |c, _| {
            if both {
                return Err("`nodes` and `groups` are mutually exclusive".to_owned());
            }
            c.check()
        })
    }
}

impl TaskConfiguration {
    fn check(&self) -> Result<(), String> {
        let Some(groups) = &self.groups else {
            return check_commands_or_image(&self.commands, &self.base);
        };
        if !self.commands.is_empty() {
            return Err("Top-level `commands` is not allowed when `groups` is set. Specify `commands` in each node group instead.".to_owned());
        }
        if !self.ports.is_empty() {
            return Err("Top-level `ports` is not allowed when `groups` is set. Specify `ports` in each node group instead.".to_owned());
        }
        if self.base.entrypoint.is_some() {
            return Err("Top-level `entrypoint` is not allowed when `groups` is set. Specify `commands` in each node group instead.".to_owned());
        }
        for group in groups {
            if group.commands.is_empty() && self.base.image.is_none() {
                return Err(format!(
                    "Node group '{}': either `commands` must be set in the group, or `image` at the task level.",
                    group.name
                ));
            }
        }
        Ok(())
    }

    /// dstack's server-side run checks that need no server state, with dstack's messages.
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.base.static_checks(&mut out);
        profile_static_checks(&self.profile, &mut out);
        // Node groups take the image from the task.
        let targets = match &self.groups {
            Some(groups) => group_targets(groups, |g| {
                (&g.resources, self.base.image.as_deref(), self.base.docker == Some(true))
            }),
            None => vec![self.base.image_target()],
        };
        image_static_checks(&targets, &mut out);
        out
    }

    /// The total number of nodes (jobs) of the task.
    pub fn nodes_num(&self) -> i64 {
        match &self.groups {
            Some(groups) => groups.iter().map(|g| g.nodes).sum(),
            None => self.nodes.unwrap_or(1),
        }
    }
}

/// A `type: service` configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceConfiguration {
    /// Only `container_port` is used; an integer gives `local_port: 80`.
    pub port: PortMapping,
    pub gateway: Option<ServiceGateway>,
    pub strip_prefix: bool,
    pub model: Option<ServiceModel>,
    pub https: Option<ServiceHttps>,
    pub auth: bool,
    pub scaling: Option<ScalingSpec>,
    pub rate_limits: Vec<RateLimit>,
    /// `None` = omitted (a model may add a default probe server-side); `[]` = no probes.
    pub probes: Option<Vec<ProbeConfig>>,
    pub replicas: Option<Range<i64>>,
    pub groups: Option<Vec<ReplicaGroup>>,
    pub commands: Vec<String>,
    #[serde(flatten)]
    pub base: BaseRunConfiguration,
    #[serde(flatten)]
    pub profile: ProfileParams,
}

impl FromNode for ServiceConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        // dstack checks this before any field, on the raw values.
        let both = is_present(&mut obj, "replicas") && is_present(&mut obj, "groups");
        if both {
            cx.error_help(
                node,
                "`replicas` and `groups` are mutually exclusive",
                "with `groups`, set `replicas` in each group",
            );
        }
        // The legacy spelling: a list under `replicas` is the groups.
        let legacy_groups = !both && obj.raw("replicas").is_some_and(|n| matches!(n.value, Value::Seq(_)));
        let port = obj.required_with(cx, "port", |n, cx| parse_service_port(n, cx).map(Some));
        let gateway = obj.opt(cx, "gateway");
        let strip_prefix = obj.field(cx, "strip_prefix", || true);
        let model = obj.opt(cx, "model");
        let https = obj.opt(cx, "https");
        let auth = obj.field(cx, "auth", || true);
        let scaling = obj.opt(cx, "scaling");
        let rate_limits = obj.field_with(cx, "rate_limits", Vec::new, crate::service::parse_rate_limits);
        let probes = obj.opt_with(cx, "probes", crate::service::parse_probes);
        let (replicas, groups) = if both {
            obj.allow(&["replicas"]);
            (None, obj.opt_with(cx, "groups", parse_groups))
        } else if legacy_groups {
            (None, obj.opt_with(cx, "replicas", parse_groups))
        } else {
            (obj.opt_with(cx, "replicas", parse_replicas), obj.opt_with(cx, "groups", parse_groups))
        };
        let commands = obj.field(cx, "commands", Vec::new);
        let base = BaseRunConfiguration::read(&mut obj, cx, RunConfigurationType::Service);
        let spot_policy_set = is_present(&mut obj, "spot_policy");
        let reservation_set = is_present(&mut obj, "reservation");
        let profile = ProfileParams::read(&mut obj, cx, ProfileScope::Run);
        let conf = ServiceConfiguration {
            port: port.unwrap_or_default(),
            gateway,
            strip_prefix,
            model,
            https,
            auth,
            scaling,
            rate_limits,
            probes,
            replicas,
            groups,
            commands,
            base,
            profile,
        };
        finish(obj, cx, mark, conf, |c, _| c.check(spot_policy_set, reservation_set))
    }
}

impl ServiceConfiguration {
    fn check(&self, spot_policy_set: bool, reservation_set: bool) -> Result<(), String> {
        if let Some(replicas) = &self.replicas {
            crate::service::check_replicas_scaling(replicas, self.scaling.as_ref())?;
        }
        if let Some(groups) = &self.groups {
            crate::service::check_groups_against_service(
                groups,
                &crate::service::ServiceLevel {
                    scaling: self.scaling.is_some(),
                    commands: !self.commands.is_empty(),
                    image: self.base.image.is_some(),
                    docker: self.base.docker == Some(true),
                    privileged: self.base.privileged,
                    python: self.base.python.is_some(),
                    nvcc: self.base.nvcc == Some(true),
                    spot_policy: spot_policy_set,
                    reservation: reservation_set,
                },
            )?;
            return Ok(());
        }
        check_commands_or_image(&self.commands, &self.base)
    }

    /// The replica groups: `groups`, or one group `"0"` made of the top-level fields.
    pub fn replica_ranges(&self) -> Vec<Range<i64>> {
        match &self.groups {
            Some(groups) => groups.iter().map(|g| g.replicas).collect(),
            None => vec![self.replicas.unwrap_or(Range::exact(1))],
        }
    }

    /// With `gateway: false` the service certainly runs without a gateway, so dstack's
    /// gateway-less rules apply (otherwise the project's default gateway decides, which
    /// needs server state). dstack stops at the first; so do we.
    fn gateway_static_checks(&self, out: &mut Vec<String>) {
        let dynamo = self
            .groups
            .iter()
            .flatten()
            .any(|g| g.router.as_ref().is_some_and(|r| r.kind == crate::service::RouterType::Dynamo));
        if self.profile.retry.is_some() && dynamo {
            out.push(
                "Retry cannot be configured for services with a Dynamo router replica group. \
                 The router's address must remain stable for the life of the run; allowing retry \
                 would leave workers bound to a router that no longer exists. Remove `retry` from \
                 the profile/configuration and re-apply."
                    .to_owned(),
            );
        }
        if self.gateway != Some(ServiceGateway::Bool(false)) {
            return;
        }
        if self.https == Some(ServiceHttps::Bool(false)) {
            out.push(
                "Setting `https: False` is not allowed without a gateway. Please configure a \
                 gateway or remove the `https` property from the service configuration"
                    .to_owned(),
            );
        } else if self.replica_ranges().iter().any(|r| r.min != r.max) {
            out.push(
                "Auto-scaling is not supported when running services without a gateway. Please \
                 configure a gateway or set `replicas` to a fixed value in the service configuration"
                    .to_owned(),
            );
        } else if !self.rate_limits.is_empty() {
            out.push(
                "Rate limits are not supported when running services without a gateway. Please \
                 configure a gateway or remove `rate_limits` from the service configuration"
                    .to_owned(),
            );
        }
    }

    /// dstack's server-side run checks that need no server state, with dstack's messages.
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.base.static_checks(&mut out);
        profile_static_checks(&self.profile, &mut out);
        // Replica groups may set their own image and docker, falling back to the service's.
        let targets = match &self.groups {
            Some(groups) => group_targets(groups, |g| {
                let image = g.image.as_deref().or(self.base.image.as_deref());
                (&g.resources, image, g.docker.or(self.base.docker) == Some(true))
            }),
            None => vec![self.base.image_target()],
        };
        image_static_checks(&targets, &mut out);
        self.gateway_static_checks(&mut out);
        if self.profile.schedule.is_some() && self.replica_ranges().iter().all(|r| r.min == Some(0)) {
            out.push("Scheduled services with autoscaling to zero are not supported".to_owned());
        }
        crate::service::probe_static_checks(self.probes.as_deref().unwrap_or(&[]), &mut out);
        out
    }
}

crate::deserialize_via_node!(
    DevEnvironmentConfiguration,
    TaskConfiguration,
    ServiceConfiguration,
    RegistryAuth,
    MountPoint
);

/// Reads a string from a fixed set (for the profile-owned enums used in replica groups).
pub(crate) fn string_choice(node: &Node, cx: &mut Cx, choices: &[&str]) -> Option<String> {
    choice(node, cx, choices).map(str::to_owned)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{AnyConfiguration, parse_configuration};

    /// Valid inputs and the JSON dstack 0.22.5 produces for them (`model_dump_json()`), with
    /// the keys other modules own (`env`, `resources`, the profile) left out. Generated by
    /// running dstack's `parse_apply_configuration` on each input.
    const VALID: &[(&str, &str, &str)] = &[
        (
            "e1_dev_environment",
            r##"type: dev-environment
name: cuda-dev
python: "3.12"
nvcc: true
ide: vscode
init:
  - uv pip install -r requirements.txt
env:
  - HF_TOKEN
  - WANDB_MODE=offline
repos:
  - .:/workspace/project
files:
  - ~/.gitconfig:/root/.gitconfig
volumes:
  - name: [hf-cache-eu, hf-cache-us]
    path: /cache
  - instance_path: /mnt/pip-cache
    path: /root/.cache/pip
    optional: true
resources:
  cpu: x86:8..
  memory: 32GB..
  gpu: L40S,A6000,RTX4090:1
  disk: 200GB..
  shm_size: 8GB
spot_policy: auto
inactivity_duration: 2h
max_duration: 1d
idle_duration: 30m
"##,
            r##"{"ide": "vscode", "version": null, "init": ["uv pip install -r requirements.txt"], "inactivity_duration": 7200, "ports": [], "type": "dev-environment", "name": "cuda-dev", "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": "3.12", "nvcc": true, "single_branch": null, "shell": null, "priority": null, "volumes": [{"name": ["hf-cache-eu", "hf-cache-us"], "path": "/cache"}, {"instance_path": "/mnt/pip-cache", "path": "/root/.cache/pip", "optional": true}], "docker": null, "repos": [{"local_path": ".", "url": null, "branch": null, "hash": null, "path": "/workspace/project", "if_exists": "error"}], "files": [{"local_path": "~/.gitconfig", "path": "/root/.gitconfig"}], "dstack": false, "setup": []}"##,
        ),
        (
            "e2_task",
            r##"type: task
name: sft-qwen
image: nvcr.io/nvidia/pytorch:25.01-py3
registry_auth:
  username: $oauthtoken
  password: ${{ secrets.ngc_api_key }}
env:
  HF_TOKEN: ${{ secrets.hf_token }}
  MODEL: Qwen/Qwen2.5-7B
  EPOCHS: 3
working_dir: /workspace
commands:
  - pip install -r requirements.txt
  - python train.py --model "$MODEL" --epochs "$EPOCHS" ${{ run.args }}
ports:
  - 6006
resources:
  gpu: H100:80GB:1..2
  shm_size: 16GB
  disk: 300GB..
retry:
  on_events: [no-capacity, interruption]
  duration: 3h
priority: 60
max_price: 12.5
backends: [aws, gcp, runpod]
tags:
  team: research
"##,
            r##"{"nodes": null, "groups": null, "ports": [{"local_port": 6006, "container_port": 6006}], "commands": ["pip install -r requirements.txt", "python train.py --model \"$MODEL\" --epochs \"$EPOCHS\" ${{ run.args }}"], "type": "task", "name": "sft-qwen", "image": "nvcr.io/nvidia/pytorch:25.01-py3", "user": null, "privileged": false, "entrypoint": null, "working_dir": "/workspace", "home_dir": "/root", "registry_auth": {"username": "$oauthtoken", "password": "${{ secrets.ngc_api_key }}"}, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": 60, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "e3_multinode_task",
            r##"type: task
name: ddp-train
nodes: 2
python: "3.12"
env:
  - NCCL_DEBUG=INFO
  - HF_TOKEN=${{ secrets.hf_token }}
commands:
  - uv pip install -r requirements.txt
  - |
    torchrun \
      --nnodes=$DSTACK_NODES_NUM \
      --master-port=29500 \
      train.py --epochs 10
resources:
  gpu: H100:8
  shm_size: 64GB
volumes:
  - name: ckpt-${{ dstack.node_rank }}
    path: /checkpoints
fleets: [h100-cluster]
startup_order: master-first
stop_criteria: master-done
max_duration: 3d
"##,
            r##"{"nodes": 2, "groups": null, "ports": [], "commands": ["uv pip install -r requirements.txt", "torchrun \\\n  --nnodes=$DSTACK_NODES_NUM \\\n  --master-port=29500 \\\n  train.py --epochs 10\n"], "type": "task", "name": "ddp-train", "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": "3.12", "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [{"name": "ckpt-${{ dstack.node_rank }}", "path": "/checkpoints"}], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "e4_service",
            r##"type: service
name: llama-8b
image: vllm/vllm-openai:v0.10.1
env:
  - HF_TOKEN=${{ secrets.hf_token }}
  - MODEL_ID=meta-llama/Llama-3.1-8B-Instruct
commands:
  - vllm serve $MODEL_ID --port 8000 --tensor-parallel-size $DSTACK_GPUS_NUM
port: 8000
model:
  type: chat
  name: meta-llama/Llama-3.1-8B-Instruct
  format: openai
  prefix: /v1
gateway: prod-gw
https: auto
auth: true
replicas: 0..4
scaling:
  metric: rps
  target: 8
  window: 60s
  scale_up_delay: 2m
  scale_down_delay: 15m
rate_limits:
  - prefix: /v1/chat/completions
    rps: 20
    burst: 40
    key:
      type: header
      header: Authorization
  - rps: 100
probes:
  - type: http
    url: /health
    interval: 10s
    timeout: 5s
    ready_after: 2
resources:
  gpu: 24GB..80GB:1
spot_policy: auto
"##,
            r##"{"port": {"local_port": 80, "container_port": 8000}, "gateway": {"project": null, "name": "prod-gw"}, "strip_prefix": true, "model": {"type": "chat", "name": "meta-llama/Llama-3.1-8B-Instruct", "format": "openai", "prefix": "/v1"}, "https": "auto", "auth": true, "scaling": {"metric": "rps", "target": 8.0, "window": 60, "scale_up_delay": 120, "scale_down_delay": 900}, "rate_limits": [{"prefix": "/v1/chat/completions", "key": {"type": "header", "header": "Authorization"}, "rps": 20.0, "burst": 40}, {"prefix": "/", "key": {"type": "ip_address"}, "rps": 100.0, "burst": 0}], "probes": [{"type": "http", "url": "/health", "method": null, "headers": [], "body": null, "timeout": 5, "interval": 10, "ready_after": 2, "until_ready": null}], "replicas": {"min": 0, "max": 4}, "groups": null, "commands": ["vllm serve $MODEL_ID --port 8000 --tensor-parallel-size $DSTACK_GPUS_NUM"], "type": "service", "name": "llama-8b", "image": "vllm/vllm-openai:v0.10.1", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "task_defaults",
            r##"type: task
commands: [echo hi]
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": ["echo hi"], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "dev_environment_defaults",
            r##"type: dev-environment
"##,
            r##"{"ide": null, "version": null, "init": [], "inactivity_duration": null, "ports": [], "type": "dev-environment", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "python_float_3_10",
            r##"type: task
commands: [x]
python: 3.10
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": ["x"], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": "3.10", "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "python_float_3_9",
            r##"type: task
commands: [x]
python: 3.9
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": ["x"], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": "3.9", "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "python_3_15_string",
            r##"type: task
commands: [x]
python: '3.15'
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": ["x"], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": "3.15", "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "mount_shorthands_and_normalization",
            r##"type: task
image: i
volumes:
  - my-vol:/data
  - /mnt/x:/y/
  - name: 12
    path: //a/./b
  - instance_path: /i///j/
    path: ///k
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [{"name": "my-vol", "path": "/data"}, {"instance_path": "/mnt/x", "path": "/y", "optional": false}, {"name": "12", "path": "//a/b"}, {"instance_path": "/i/j", "path": "/k", "optional": false}], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "repo_url_shorthand_with_path",
            r##"type: task
image: i
repos: ['git@github.com:org/repo.git:data/repo']
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [{"local_path": null, "url": "git@github.com:org/repo.git", "branch": null, "hash": null, "path": "data/repo", "if_exists": "error"}], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "repo_https_url",
            r##"type: task
image: i
repos: ['https://github.com/a/b']
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [{"local_path": null, "url": "https://github.com/a/b", "branch": null, "hash": null, "path": ".", "if_exists": "error"}], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "repo_windows_drive",
            r##"type: task
image: i
repos: ['C:\\x\\y:/p']
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [{"local_path": "C:\\\\x\\\\y", "url": null, "branch": null, "hash": null, "path": "/p", "if_exists": "error"}], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "repo_mapping",
            r##"type: task
image: i
repos: [{url: u, branch: main, hash: abc, path: ~/r, if_exists: skip}]
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [{"local_path": null, "url": "u", "branch": "main", "hash": "abc", "path": "~/r", "if_exists": "skip"}], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "files_shorthands",
            r##"type: task
image: i
files: [a, 'a:b', 'C:\\x:/y', {local_path: l, path: 'C:'}]
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [{"local_path": "a", "path": "a"}, {"local_path": "a", "path": "b"}, {"local_path": "C:\\\\x", "path": "/y"}, {"local_path": "l", "path": "C:"}], "dstack": false, "setup": []}"##,
        ),
        (
            "dev_environment_fields",
            r##"type: dev-environment
ide: vscode
version: 1.2
init: [a]
inactivity_duration: 2h
ports: [8080, "80:81", "*:90", {container_port: 5, local_port: 6}]
"##,
            r##"{"ide": "vscode", "version": "1.2", "init": ["a"], "inactivity_duration": 7200, "ports": [{"local_port": 8080, "container_port": 8080}, {"local_port": 80, "container_port": 81}, {"local_port": null, "container_port": 90}, {"local_port": 6, "container_port": 5}], "type": "dev-environment", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "dev_environment_inactivity_off_with_dstack",
            r##"type: dev-environment
dstack: true
inactivity_duration: off
"##,
            r##"{"ide": null, "version": null, "init": [], "inactivity_duration": null, "ports": [], "type": "dev-environment", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": true, "setup": []}"##,
        ),
        (
            "windsurf_version",
            r##"type: dev-environment
ide: windsurf
version: 1.2.3@abc
"##,
            r##"{"ide": "windsurf", "version": "1.2.3@abc", "init": [], "inactivity_duration": null, "ports": [], "type": "dev-environment", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_port_mapping_gateway_false",
            r##"type: service
image: i
port: '8080:80'
gateway: false
https: 'yes'
strip_prefix: no
auth: off
"##,
            r##"{"port": {"local_port": 8080, "container_port": 80}, "gateway": false, "strip_prefix": false, "model": null, "https": true, "auth": false, "scaling": null, "rate_limits": [], "probes": null, "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_gateway_ref_tgi_model",
            r##"type: service
image: i
port: 80
gateway: p/g
model: {name: m, format: tgi, eos_token: </s>}
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": {"project": "p", "name": "g"}, "strip_prefix": true, "model": {"type": "chat", "name": "m", "format": "tgi", "chat_template": null, "eos_token": "</s>"}, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": null, "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_gateway_number_and_model_name",
            r##"type: service
image: i
port: '8000'
gateway: 123
model: llama
"##,
            r##"{"port": {"local_port": 80, "container_port": 8000}, "gateway": {"project": null, "name": "123"}, "strip_prefix": true, "model": {"type": "chat", "name": "llama", "format": "openai", "prefix": "/v1"}, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": null, "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_replicas_upper_bound_only",
            r##"type: service
image: i
port: 80
replicas: ..3
scaling: {metric: rps, target: 2, window: 30s}
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": {"metric": "rps", "target": 2.0, "window": 30, "scale_up_delay": 300, "scale_down_delay": 600}, "rate_limits": [], "probes": null, "replicas": {"min": 0, "max": 3}, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_legacy_replica_list",
            r##"type: service
port: 80
replicas:
  - count: 1..2
    scaling: {metric: rps, target: 2}
    commands: [a]
  - name: r
    count: 1
    image: foo
    router: {type: sglang}
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": null, "replicas": null, "groups": [{"name": "0", "replicas": {"min": 1, "max": 2}, "scaling": {"metric": "rps", "target": 2.0, "window": null, "scale_up_delay": 300, "scale_down_delay": 600}, "spot_policy": null, "reservation": null, "commands": ["a"], "image": null, "python": null, "nvcc": null, "docker": null, "privileged": null, "router": null}, {"name": "r", "replicas": {"min": 1, "max": 1}, "scaling": null, "spot_policy": null, "reservation": null, "commands": [], "image": "foo", "python": null, "nvcc": null, "docker": null, "privileged": null, "router": {"type": "sglang"}}], "commands": [], "type": "service", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_groups_router_smg",
            r##"type: service
port: 80
groups:
  - replicas: 1
    commands: [router]
    router: {type: smg}
    privileged: true
  - name: workers
    replicas: 2
    python: 3.10
    nvcc: true
    spot_policy: spot
    reservation: r1
    commands: [serve]
  - replicas: 0
    docker: true
    commands: [x]
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": null, "replicas": null, "groups": [{"name": "0", "replicas": {"min": 1, "max": 1}, "scaling": null, "spot_policy": null, "reservation": null, "commands": ["router"], "image": null, "python": null, "nvcc": null, "docker": null, "privileged": true, "router": {"type": "sglang"}}, {"name": "workers", "replicas": {"min": 2, "max": 2}, "scaling": null, "spot_policy": "spot", "reservation": "r1", "commands": ["serve"], "image": null, "python": "3.10", "nvcc": true, "docker": null, "privileged": null, "router": null}, {"name": "2", "replicas": {"min": 0, "max": 0}, "scaling": null, "spot_policy": null, "reservation": null, "commands": ["x"], "image": null, "python": null, "nvcc": null, "docker": true, "privileged": null, "router": null}], "commands": [], "type": "service", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "task_node_groups",
            r##"type: task
groups:
  - commands: [a]
  - name: w
    nodes: 3
    commands: [b]
    ports: [8080]
"##,
            r##"{"nodes": null, "groups": [{"name": "0", "nodes": 1, "commands": ["a"], "ports": []}, {"name": "w", "nodes": 3, "commands": ["b"], "ports": [{"local_port": 8080, "container_port": 8080}]}], "ports": [], "commands": [], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_probes",
            r##"type: service
image: i
port: 80
probes:
  - type: http
  - type: http
    url: /h
    method: post
    headers: [{name: a, value: b}]
    body: x
    timeout: 5s
    interval: 1m
    ready_after: 2
    until_ready: yes
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": [{"type": "http", "url": null, "method": null, "headers": [], "body": null, "timeout": null, "interval": null, "ready_after": null, "until_ready": null}, {"type": "http", "url": "/h", "method": "post", "headers": [{"name": "a", "value": "b"}], "body": "x", "timeout": 5, "interval": 60, "ready_after": 2, "until_ready": true}], "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_probes_explicit_empty",
            r##"type: service
image: i
port: 80
probes: []
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": null, "rate_limits": [], "probes": [], "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "service_rate_limit_header_key",
            r##"type: service
image: i
port: 80
rate_limits: [{prefix: /a, key: {type: header, header: X-Key}, rps: 2.5, burst: 3}, {rps: 1}]
"##,
            r##"{"port": {"local_port": 80, "container_port": 80}, "gateway": null, "strip_prefix": true, "model": null, "https": null, "auth": true, "scaling": null, "rate_limits": [{"prefix": "/a", "key": {"type": "header", "header": "X-Key"}, "rps": 2.5, "burst": 3}, {"prefix": "/", "key": {"type": "ip_address"}, "rps": 1.0, "burst": 0}], "probes": null, "replicas": null, "groups": null, "commands": [], "type": "service", "name": null, "image": "i", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "base_fields",
            r##"type: task
image: i
name: 123
user: '1000:1000'
privileged: yes
entrypoint: bash -c
working_dir: w
home_dir: /h
registry_auth: {username: u, password: 1}
single_branch: 0
shell: sh
priority: '50'
docker: false
dstack: on
setup: [a]
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": "123", "image": "i", "user": "1000:1000", "privileged": true, "entrypoint": "bash -c", "working_dir": "w", "home_dir": "/h", "registry_auth": {"username": "u", "password": "1"}, "python": null, "nvcc": null, "single_branch": false, "shell": "sh", "priority": 50, "volumes": [], "docker": false, "repos": [], "files": [], "dstack": true, "setup": ["a"]}"##,
        ),
        (
            "docker_true_without_image",
            r##"type: task
docker: true
commands: [docker ps]
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": ["docker ps"], "type": "task", "name": null, "image": null, "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": true, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
        (
            "task_image_only_no_commands",
            r##"type: task
image: busybox
"##,
            r##"{"nodes": null, "groups": null, "ports": [], "commands": [], "type": "task", "name": null, "image": "busybox", "user": null, "privileged": false, "entrypoint": null, "working_dir": null, "home_dir": "/root", "registry_auth": null, "python": null, "nvcc": null, "single_branch": null, "shell": null, "priority": null, "volumes": [], "docker": null, "repos": [], "files": [], "dstack": false, "setup": []}"##,
        ),
    ];

    /// Invalid inputs and a substring of the error. Each is refused by dstack too, except
    /// the deliberate differences listed in the module docs.
    const INVALID: &[(&str, &str, &str)] = &[
        (
            "i1_typo_in_required_key",
            r##"type: task
name: train
python: '3.12'
comands:
  - python train.py
"##,
            r##"Either `commands` or `image` must be set"##,
        ),
        (
            "i1_typo_is_also_reported",
            r##"type: task
name: train
python: '3.12'
comands:
  - python train.py
"##,
            r##"unknown field `comands`"##,
        ),
        (
            "i2_replica_range_without_scaling",
            r##"type: service
name: api
image: ghcr.io/acme/api:1.4
port: 8080
replicas: 1..4
"##,
            r##"When you set `replicas` to a range, ensure to specify `scaling`."##,
        ),
        (
            "i3_image_with_python",
            r##"type: dev-environment
name: dev
image: pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
python: '3.11'
ide: vscode
"##,
            r##"`image` and `python` are mutually exclusive fields"##,
        ),
        (
            "i5_sexagesimal_port",
            r##"type: task
name: notebook
image: jupyter/base-notebook
commands:
  - start-notebook.sh
ports:
  - 8888
  - 3000:30
"##,
            r##"less than or equal to 65535"##,
        ),
        (
            "nvcc_with_image_refused",
            r##"type: task
image: i
nvcc: true
"##,
            r##"`nvcc` has no effect with `image`"##,
        ),
        (
            "nvcc_with_image_in_group_refused",
            r##"type: service
port: 80
groups: [{replicas: 1, image: i, nvcc: true}]
"##,
            r##"`nvcc` has no effect with `image`"##,
        ),
        (
            "python_3_8",
            r##"type: task
commands: [x]
python: 3.8
"##,
            r##"expected a Python version"##,
        ),
        (
            "python_integer",
            r##"type: task
commands: [x]
python: 3
"##,
            r##"expected a Python version"##,
        ),
        (
            "docker_with_image",
            r##"type: task
image: i
docker: true
"##,
            r##"`image` and `docker` are mutually exclusive fields"##,
        ),
        (
            "docker_with_python",
            r##"type: task
python: '3.11'
docker: true
commands: [x]
"##,
            r##"`python` and `docker` are mutually exclusive fields"##,
        ),
        (
            "docker_with_nvcc",
            r##"type: task
nvcc: true
docker: true
commands: [x]
"##,
            r##"`nvcc` and `docker` are mutually exclusive fields"##,
        ),
        (
            "user_too_many_parts",
            r##"type: task
image: i
user: a:b:c
"##,
            r##"invalid user format: too many parts"##,
        ),
        (
            "user_negative_uid",
            r##"type: task
image: i
user: '-1'
"##,
            r##"invalid user format: negative uid -1"##,
        ),
        (
            "user_empty_group",
            r##"type: task
image: i
user: 'a:'
"##,
            r##"invalid user format: empty group name or id"##,
        ),
        (
            "shell_relative",
            r##"type: task
image: i
shell: zsh
"##,
            r##"The value must be `sh`, `bash`, or an absolute path"##,
        ),
        (
            "registry_auth_without_password",
            r##"type: task
image: i
registry_auth: {username: u}
"##,
            r##"missing required field `password`"##,
        ),
        (
            "priority_over_100",
            r##"type: task
image: i
priority: 101
"##,
            r##"less than or equal to 100"##,
        ),
        (
            "privileged_null",
            r##"type: task
image: i
privileged: null
"##,
            r##"expected a boolean"##,
        ),
        (
            "mount_without_colon",
            r##"type: task
image: i
volumes: [my-vol]
"##,
            r##"invalid mount point format: my-vol"##,
        ),
        (
            "mount_relative_path",
            r##"type: task
image: i
volumes: ['v:data']
"##,
            r##"path must be absolute: data"##,
        ),
        (
            "mount_dot_dot",
            r##"type: task
image: i
volumes: ['v:/a/../b']
"##,
            r##".. are not allowed: /a/../b"##,
        ),
        (
            "mount_empty_path",
            r##"type: task
image: i
volumes: ['v:']
"##,
            r##"empty path"##,
        ),
        (
            "mount_name_and_instance_path",
            r##"type: task
image: i
volumes: [{name: v, instance_path: /x, path: /x}]
"##,
            r##"mutually exclusive"##,
        ),
        (
            "mount_optional_on_network_volume",
            r##"type: task
image: i
volumes: [{name: v, path: /x, optional: true}]
"##,
            r##"unknown field `optional`"##,
        ),
        (
            "two_repos",
            r##"type: task
image: i
repos: ['.', 'https://github.com/a/b']
"##,
            r##"A maximum of one repo is currently supported"##,
        ),
        (
            "repo_three_parts",
            r##"type: task
image: i
repos: ['a:b:c']
"##,
            r##"Invalid repo: a:b:c"##,
        ),
        (
            "repo_local_path_and_url",
            r##"type: task
image: i
repos: [{url: u, local_path: l}]
"##,
            r##"`local_path` and `url` are mutually exclusive"##,
        ),
        (
            "repo_without_source",
            r##"type: task
image: i
repos: [{branch: b}]
"##,
            r##"Either `local_path` or `url` must be specified"##,
        ),
        (
            "repo_tilde_user",
            r##"type: task
image: i
repos: [{url: u, path: '~user/x'}]
"##,
            r##"`~username` syntax is not supported"##,
        ),
        (
            "file_three_parts",
            r##"type: task
image: i
files: ['a:b:c']
"##,
            r##"invalid file path mapping: a:b:c"##,
        ),
        (
            "file_windows_container_path",
            r##"type: task
image: i
files: ['a:C:/y']
"##,
            r##"invalid file path mapping: a:C:/y"##,
        ),
        (
            "file_windows_absolute_path",
            r##"type: task
image: i
files: [{local_path: l, path: '//srv/share/x'}]
"##,
            r##"path must be a Unix file path: //srv/share/x"##,
        ),
        (
            "dev_version_without_ide",
            r##"type: dev-environment
version: '1'
"##,
            r##"`version` requires `ide` to be set"##,
        ),
        (
            "windsurf_version_format",
            r##"type: dev-environment
ide: windsurf
version: 1.2.3
"##,
            r##"Invalid Windsurf version format: `1.2.3`"##,
        ),
        (
            "dev_entrypoint",
            r##"type: dev-environment
entrypoint: x
"##,
            r##"entrypoint is not supported for dev-environment"##,
        ),
        (
            "dev_dstack_with_inactivity",
            r##"type: dev-environment
dstack: true
inactivity_duration: 0
"##,
            r##"`dstack` is not supported together with `inactivity_duration`"##,
        ),
        (
            "dev_negative_inactivity",
            r##"type: dev-environment
inactivity_duration: -5
"##,
            r##"Duration cannot be negative"##,
        ),
        (
            "dev_commands_unknown",
            r##"type: dev-environment
commands: [x]
"##,
            r##"unknown field `commands`"##,
        ),
        (
            "task_empty_image",
            r##"type: task
image: ''
"##,
            r##"Either `commands` or `image` must be set"##,
        ),
        (
            "task_nodes_and_groups",
            r##"type: task
nodes: 2
groups: [{commands: [a]}]
"##,
            r##"`nodes` and `groups` are mutually exclusive"##,
        ),
        (
            "task_groups_empty",
            r##"type: task
groups: []
"##,
            r##"`groups` cannot be an empty list"##,
        ),
        (
            "task_groups_duplicate",
            r##"type: task
groups: [{name: a, commands: [x]}, {name: a, commands: [y]}]
"##,
            r##"Duplicate node group names found: ['a']. Each node group must have a unique name."##,
        ),
        (
            "task_groups_default_name_duplicate",
            r##"type: task
groups: [{commands: [x]}, {name: '0', commands: [y]}]
"##,
            r##"Duplicate node group names found: ['0']"##,
        ),
        (
            "task_group_bad_name",
            r##"type: task
groups: [{name: A_b, commands: [x]}]
"##,
            r##"Node group name should match regex"##,
        ),
        (
            "task_groups_with_commands",
            r##"type: task
groups: [{commands: [x]}]
commands: [y]
"##,
            r##"Top-level `commands` is not allowed when `groups` is set. Specify `commands` in each node group instead."##,
        ),
        (
            "task_groups_with_ports",
            r##"type: task
groups: [{commands: [x]}]
ports: [1]
"##,
            r##"Top-level `ports` is not allowed when `groups` is set."##,
        ),
        (
            "task_groups_with_entrypoint",
            r##"type: task
groups: [{commands: [x]}]
entrypoint: e
"##,
            r##"Top-level `entrypoint` is not allowed when `groups` is set. Specify `commands` in each node group instead."##,
        ),
        (
            "task_group_without_commands",
            r##"type: task
groups: [{nodes: 2}]
"##,
            r##"Node group '0': either `commands` must be set in the group, or `image` at the task level."##,
        ),
        (
            "task_nodes_zero",
            r##"type: task
image: i
nodes: 0
"##,
            r##"greater than or equal to 1"##,
        ),
        (
            "service_missing_port",
            r##"type: service
image: i
"##,
            r##"missing required field `port`"##,
        ),
        (
            "service_port_any_local",
            r##"type: service
image: i
port: '*:8000'
"##,
            r##"invalid service port"##,
        ),
        (
            "service_gateway_bad_reference",
            r##"type: service
image: i
port: 80
gateway: a/b/c
"##,
            r##"Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowed"##,
        ),
        (
            "service_https_bad",
            r##"type: service
image: i
port: 80
https: foo
"##,
            r##"expected `true`, `false` or `auto`"##,
        ),
        (
            "service_model_without_format",
            r##"type: service
image: i
port: 80
model: {name: m}
"##,
            r##"missing required field `format`"##,
        ),
        (
            "service_replicas_without_max",
            r##"type: service
image: i
port: 80
replicas: 1..
"##,
            r##"The maximum number of replicas is required"##,
        ),
        (
            "service_replicas_negative_min",
            r##"type: service
image: i
port: 80
replicas: -1..2
"##,
            r##"The minimum number of replicas must be greater than or equal to 0"##,
        ),
        (
            "service_fixed_replicas_with_scaling",
            r##"type: service
image: i
port: 80
replicas: 2
scaling: {metric: rps, target: 1}
"##,
            r##"To use `scaling`, `replicas` must be set to a range."##,
        ),
        (
            "service_scaling_window",
            r##"type: service
image: i
port: 80
replicas: 1..3
scaling: {metric: rps, target: 1, window: 45}
"##,
            r##"Window must be one of: `30s`, `60s`, `300s`"##,
        ),
        (
            "service_scaling_target_zero",
            r##"type: service
image: i
port: 80
replicas: 1..3
scaling: {metric: rps, target: 0}
"##,
            r##"Input should be greater than 0"##,
        ),
        (
            "service_scaling_negative_delay",
            r##"type: service
image: i
port: 80
replicas: 1..3
scaling: {metric: rps, target: 1, scale_down_delay: -5}
"##,
            r##"expected a non-negative duration"##,
        ),
        (
            "service_replicas_and_groups",
            r##"type: service
port: 80
replicas: 2
groups: [{replicas: 1, commands: [a]}]
"##,
            r##"`replicas` and `groups` are mutually exclusive"##,
        ),
        (
            "service_legacy_list_and_groups",
            r##"type: service
port: 80
replicas: [{count: 1, commands: [a]}]
groups: [{replicas: 1, commands: [a]}]
"##,
            r##"`replicas` and `groups` are mutually exclusive"##,
        ),
        (
            "service_groups_with_scaling",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a]}]
scaling: {metric: rps, target: 1}
"##,
            r##"Top-level `scaling` is not allowed when `groups` is set."##,
        ),
        (
            "service_groups_with_commands",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a]}]
commands: [b]
"##,
            r##"Top-level `commands` is not allowed when `groups` is set. Specify `commands` in each replica group instead."##,
        ),
        (
            "service_image_both_levels",
            r##"type: service
port: 80
image: i
groups: [{replicas: 1, image: j}]
"##,
            r##"`image` is set at both the service level and in replica group(s) ['0']. Set `image` in one place only"##,
        ),
        (
            "service_spot_policy_both_levels",
            r##"type: service
port: 80
spot_policy: auto
groups: [{replicas: 1, commands: [a], spot_policy: spot}]
"##,
            r##"`spot_policy` is set at both the service level"##,
        ),
        (
            "service_image_conflicts_group_docker",
            r##"type: service
port: 80
image: i
groups: [{replicas: 1, docker: false}]
"##,
            r##"Service-level `image` conflicts with group-level `docker` in replica group(s) ['0']. These image-source fields are mutually exclusive."##,
        ),
        (
            "service_group_without_commands",
            r##"type: service
port: 80
groups: [{replicas: 1}]
"##,
            r##"Replica group '0': either `commands` or `image` must be set in the group, or `image` at the service level."##,
        ),
        (
            "service_two_routers",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a], router: {}}, {name: b, replicas: 1, commands: [a], router: {type: dynamo}}]
"##,
            r##"At most one replica group may specify `router`."##,
        ),
        (
            "service_router_replicas",
            r##"type: service
port: 80
groups: [{replicas: 2, commands: [a], router: {type: smg}}]
"##,
            r##"For now replica group with `router` must have `replicas: 1`."##,
        ),
        (
            "service_group_range_without_scaling",
            r##"type: service
port: 80
groups: [{replicas: 0..2, commands: [a]}]
"##,
            r##"When you set `replicas` to a range, ensure to specify `scaling`."##,
        ),
        (
            "service_group_missing_replicas",
            r##"type: service
port: 80
groups: [{commands: [a]}]
"##,
            r##"missing required field `replicas`"##,
        ),
        (
            "service_group_image_and_python",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a], image: i, python: '3.11'}]
"##,
            r##"`image` and `python` are mutually exclusive within a replica group"##,
        ),
        (
            "service_group_docker_unprivileged",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a], privileged: false, docker: true}]
"##,
            r##"`privileged: false` is incompatible with `docker: true` within a replica group"##,
        ),
        (
            "service_group_bad_name",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a], name: '-x'}]
"##,
            r##"Resource name should match regex '^[a-z0-9][a-z0-9-]{0,39}$'"##,
        ),
        (
            "service_group_count_and_replicas",
            r##"type: service
port: 80
groups: [{replicas: 1, count: 2, commands: [a]}]
"##,
            r##"`count` is the old name of `replicas`"##,
        ),
        (
            "service_router_bad_type",
            r##"type: service
port: 80
groups: [{replicas: 1, commands: [a], router: {type: foo}}]
"##,
            r##"expected one of `smg`, `dynamo`"##,
        ),
        (
            "service_rate_limit_duplicate_prefix",
            r##"type: service
image: i
port: 80
rate_limits: [{rps: 1}, {prefix: /, rps: 2}]
"##,
            r##"Prefixes ['/'] are used more than once. Each rate limit should have a unique path prefix"##,
        ),
        (
            "service_rate_limit_low_rps",
            r##"type: service
image: i
port: 80
rate_limits: [{rps: 0.01}]
"##,
            r##"Input should be greater than or equal to 0.016666666666666666"##,
        ),
        (
            "service_rate_limit_bad_prefix",
            r##"type: service
image: i
port: 80
rate_limits: [{rps: 1, prefix: a}]
"##,
            r##"String should match pattern"##,
        ),
        (
            "service_rate_limit_key_without_type",
            r##"type: service
image: i
port: 80
rate_limits: [{rps: 1, key: {header: x}}]
"##,
            r##"missing required field `type`"##,
        ),
        (
            "service_probes_not_unique",
            r##"type: service
image: i
port: 80
probes: [{type: http}, {type: http}]
"##,
            r##"Probes must be unique"##,
        ),
        (
            "service_probe_url_relative",
            r##"type: service
image: i
port: 80
probes: [{type: http, url: x}]
"##,
            r##"Must start with `/`"##,
        ),
        (
            "service_probe_body_with_head",
            r##"type: service
image: i
port: 80
probes: [{type: http, body: x, method: head}]
"##,
            r##"Cannot set request body for the `head` method"##,
        ),
        (
            "service_probe_timeout_zero",
            r##"type: service
image: i
port: 80
probes: [{type: http, timeout: 0}]
"##,
            r##"Probe timeout cannot be shorter than 1s"##,
        ),
        (
            "service_probe_interval_zero",
            r##"type: service
image: i
port: 80
probes: [{type: http, interval: 0}]
"##,
            r##"Probe interval cannot be shorter than 1s"##,
        ),
        (
            "service_probe_without_type",
            r##"type: service
image: i
port: 80
probes: [{url: /}]
"##,
            r##"missing required field `type`"##,
        ),
        (
            "service_top_level_router",
            r##"type: service
image: i
port: 80
router: {type: sglang}
"##,
            r##"unknown field `router`"##,
        ),
        (
            "service_without_commands_or_image",
            r##"type: service
port: 80
"##,
            r##"Either `commands` or `image` must be set"##,
        ),
    ];

    fn parse(text: &str) -> (Option<AnyConfiguration>, Vec<String>) {
        let parsed = parse_configuration(text);
        let messages = parsed.diagnostics.iter().map(|d| d.render("f.yml")).collect();
        (parsed.configuration, messages)
    }

    /// The configuration's JSON with each group's `resources` (owned elsewhere) removed.
    fn own_json(conf: &AnyConfiguration) -> serde_json::Value {
        let mut json = serde_json::to_value(conf).unwrap_or_default();
        if let Some(groups) = json.get_mut("groups").and_then(|g| g.as_array_mut()) {
            for group in groups {
                if let Some(group) = group.as_object_mut() {
                    group.shift_remove("resources");
                }
            }
        }
        json
    }

    #[test]
    fn valid_configurations_serialize_as_dstack_does() {
        let mut failures = Vec::new();
        for (name, text, expected) in VALID {
            let (conf, messages) = parse(text);
            let Some(conf) = conf else {
                failures.push(format!("{name}: refused: {messages:?}"));
                continue;
            };
            let actual = own_json(&conf);
            let expected: serde_json::Value = serde_json::from_str(expected).unwrap_or_default();
            let Some(expected) = expected.as_object() else {
                failures.push(format!("{name}: bad expected JSON"));
                continue;
            };
            for (key, want) in expected {
                let got = actual.get(key).cloned().unwrap_or_default();
                if got != *want {
                    failures.push(format!("{name}: `{key}`: expected {want}, got {got}"));
                }
            }
            // Same relative key order as dstack.
            let order: Vec<&String> = actual
                .as_object()
                .map(|o| o.keys().filter(|k| expected.contains_key(*k)).collect())
                .unwrap_or_default();
            let want_order: Vec<&String> = expected.keys().collect();
            if order != want_order {
                failures.push(format!("{name}: key order {order:?}, expected {want_order:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn valid_configurations_round_trip_through_json() {
        for (name, text, _) in VALID {
            let (conf, messages) = parse(text);
            let conf = conf.unwrap_or_else(|| panic!("{name}: {messages:?}"));
            let json = serde_json::to_value(&conf).unwrap_or_default();
            let back: Result<AnyConfiguration, _> = serde_json::from_value(json);
            assert_eq!(back.ok().as_ref(), Some(&conf), "{name}");
        }
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let mut failures = Vec::new();
        for (name, text, want) in INVALID {
            let (conf, messages) = parse(text);
            if conf.is_some() {
                failures.push(format!("{name}: accepted"));
            } else if !messages.iter().any(|m| m.contains(want)) {
                failures.push(format!("{name}: no error containing {want:?} in {messages:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn errors_carry_path_position_and_help() {
        let (_, messages) = parse("type: task\nimage: i\nvolumes:\n  - name: v\n    path: data\n");
        assert_eq!(messages, vec!["f.yml:5:11: error: `volumes[0].path`: path must be absolute: data"]);
        let (_, messages) = parse("type: task\nimage: i\nnvcc: true\n");
        assert_eq!(
            messages,
            vec![format!("f.yml:3:7: error: `nvcc`: {NVCC_WITH_IMAGE}\n  help: {NVCC_WITH_IMAGE_HELP}")]
        );
        let (_, messages) = parse("type: service\nport: 80\nimage: i\nreplicas: 1..4\n");
        assert_eq!(
            messages,
            vec!["f.yml:1:1: error: When you set `replicas` to a range, ensure to specify `scaling`."]
        );
    }

    /// Our extension of `scaling.metric` (dstack knows only `rps`, whose JSON is unchanged:
    /// no `prometheus_metric` key unless one is set).
    #[test]
    fn scaling_extension_metrics() {
        let service = |scaling: &str| {
            format!("type: service\nimage: i\nport: 80\nreplicas: 0..4\nscaling: {scaling}\n")
        };
        let scaling_json = |text: &str| {
            let (conf, messages) = parse(text);
            let conf = conf.unwrap_or_else(|| panic!("{messages:?}"));
            let back: AnyConfiguration =
                serde_json::from_value(serde_json::to_value(&conf).unwrap()).unwrap();
            assert_eq!(back, conf, "round trip");
            serde_json::to_value(&conf).unwrap()["scaling"].clone()
        };
        assert_eq!(
            scaling_json(&service("{metric: rps, target: 2}")),
            serde_json::json!({"metric": "rps", "target": 2.0, "window": null, "scale_up_delay": 300, "scale_down_delay": 600})
        );
        assert_eq!(
            scaling_json(&service("{metric: inflight, target: 4, window: 30s}"))["metric"],
            "inflight"
        );
        assert_eq!(scaling_json(&service("{metric: p95_latency, target: 0.5}"))["metric"], "p95_latency");
        assert_eq!(
            scaling_json(&service(
                "{metric: prometheus, prometheus_metric: \"vllm:num_requests_waiting\", target: 8}"
            )),
            serde_json::json!({"metric": "prometheus", "target": 8.0, "window": null, "scale_up_delay": 300,
                "scale_down_delay": 600, "prometheus_metric": "vllm:num_requests_waiting"})
        );
        let refused = |scaling: &str| parse(&service(scaling)).1;
        assert_eq!(
            refused("{metric: prometheus, target: 8}"),
            [
                "f.yml:5:10: error: `scaling.prometheus_metric`: missing required field `prometheus_metric` (with \
              `metric: prometheus`)\n  help: name the gauge each replica exposes at /metrics, e.g. \
              `prometheus_metric: vllm:num_requests_waiting`"
            ]
        );
        assert_eq!(
            refused("{metric: rps, target: 8, prometheus_metric: q}"),
            ["f.yml:5:54: error: `scaling.prometheus_metric`: `prometheus_metric` is only used with \
              `metric: prometheus`\n  help: remove it, or set `metric: prometheus`"]
        );
        assert_eq!(
            refused("{metric: prometheus, target: 8, prometheus_metric: 9x}"),
            ["f.yml:5:61: error: `scaling.prometheus_metric`: expected a Prometheus metric name \
              ([a-zA-Z_:][a-zA-Z0-9_:]*), found \"9x\""]
        );
        assert_eq!(
            refused("{metric: qps, target: 8}"),
            ["f.yml:5:19: error: `scaling.metric`: expected one of `rps`, `inflight`, `p95_latency`, \
              `prometheus`, found a string \"qps\"\n  help: did you mean `rps`?"]
        );
    }

    #[test]
    fn setup_in_a_task_is_accepted_with_a_warning() {
        let parsed = parse_configuration("type: task\nimage: i\nsetup: [a]\n");
        assert!(parsed.configuration.is_some());
        let warnings: Vec<&str> =
            parsed.diagnostics.iter().filter(|d| !d.is_error()).map(|d| d.message.as_str()).collect();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`setup` is deprecated"), "{warnings:?}");
    }

    fn static_checks(text: &str) -> Vec<String> {
        match parse(text) {
            (Some(AnyConfiguration::DevEnvironment(c)), _) => c.static_checks(),
            (Some(AnyConfiguration::Task(c)), _) => c.static_checks(),
            (Some(AnyConfiguration::Service(c)), _) => c.static_checks(),
            (other, messages) => vec![format!("not a run configuration: {other:?} {messages:?}")],
        }
    }

    #[test]
    fn static_checks_use_dstack_server_messages() {
        let probes = |n: usize, timeout: &str| {
            let items: Vec<String> =
                (0..n).map(|i| format!("{{type: http, url: /p{i}, timeout: {timeout}}}")).collect();
            format!("type: service\nimage: i\nport: 80\nprobes: [{}]\n", items.join(", "))
        };
        let table: Vec<(String, Vec<&str>)> = vec![
            ("type: task\nimage: i\nname: my-run\n".to_owned(), vec![]),
            (
                "type: task\nimage: i\nname: My_Run\n".to_owned(),
                vec!["Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'"],
            ),
            (
                "type: dev-environment\nname: a\n".to_owned(),
                vec!["Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'"],
            ),
            (
                "type: task\nimage: i\nvolumes: [\"v:/a\\0b\"]\n".to_owned(),
                vec!["Invalid volume mount path: /a\0b"],
            ),
            (probes(10, "300"), vec![]),
            (probes(11, "5"), vec!["Cannot configure more than 10 probes"]),
            (probes(1, "301"), vec!["Probe timeout cannot be longer than 300s"]),
        ];
        for (text, want) in table {
            assert_eq!(static_checks(&text), want, "{text}");
        }
    }

    #[test]
    fn helpers_match_python() {
        assert_eq!(py_str_list(&["a", "it's"]), r#"['a', "it's"]"#);
        assert_eq!(duplicates(&["b", "a", "b", "a", "c"]), vec!["b", "a"]);
        assert!(is_windows_absolute("C:\\x") && is_windows_absolute("c:/"));
        assert!(is_windows_absolute("//server/share") && is_windows_absolute("//server/"));
        assert!(!is_windows_absolute("//server") && !is_windows_absolute("///x"));
        assert!(!is_windows_absolute("C:") && !is_windows_absolute("/C:/x"));
        assert_eq!(normalize_mount_path("//a/./b/"), Ok("//a/b".to_owned()));
        assert_eq!(normalize_mount_path("///a//b"), Ok("/a/b".to_owned()));
        assert_eq!(normalize_mount_path("/"), Ok("/".to_owned()));
        assert!(is_valid_resource_name("ab") && !is_valid_resource_name("a"));
        assert!(is_valid_group_name("0") && !is_valid_group_name("-a"));
    }
}
