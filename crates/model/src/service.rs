//! The parts only services have: `port`, `gateway`, `https`, `model`, `scaling`,
//! `rate_limits`, `probes`, `replicas` and replica `groups` (with their `router`).
//!
//! The configuration itself is [`crate::run::ServiceConfiguration`]; the deliberate
//! differences from dstack are listed there.

use serde::Serialize;

use crate::common::{Duration, EntityReference, PortMapping, Range, is_valid_group_name};
use crate::de::{Cx, FromNode, Object, choice, int_in, lax_bool, lax_float};
use crate::resources::ResourcesSpec;
use crate::run::{
    PythonVersion, duplicates, parse_docker, parse_named_groups, parse_nvcc, parse_python, py_str_list,
    string_choice, truthy,
};
use crate::string_enum;
use crate::yaml::{Node, Value, python_float_repr};

/// Reads the service `port`: `8000` (served as local port 80), `"80:8000"`, or a mapping.
pub(crate) fn parse_service_port(node: &Node, cx: &mut Cx) -> Option<PortMapping> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    match &node.value {
        Value::Map(_) => PortMapping::from_node(node, cx),
        Value::Str(s) if s.contains(':') => match s.split_once(':') {
            Some((local, container)) if digits(local) && digits(container) => {
                PortMapping::from_node(node, cx)
            }
            _ => {
                cx.error_help(
                    node,
                    format!("invalid service port {s:?}"),
                    "write the port the application listens on (`8000`) or `LOCAL:CONTAINER` (`\"80:8000\"`)",
                );
                None
            }
        },
        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Str(_) => {
            let port = int_in(node, cx, Some(1), Some(65535))?;
            Some(PortMapping { local_port: Some(80), container_port: port })
        }
        _ => {
            cx.expected(node, "a port (`8000`) or a mapping (`\"80:8000\"`)");
            None
        }
    }
}

/// The service `gateway`: `true`/`false` or a gateway reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ServiceGateway {
    Bool(bool),
    Ref(EntityReference),
}

impl FromNode for ServiceGateway {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        // dstack tries bool, then a reference mapping, then a string (numbers included).
        if let Some(b) = lax_bool(node) {
            return Some(ServiceGateway::Bool(b));
        }
        match &node.value {
            Value::Map(_) | Value::Str(_) => EntityReference::from_node(node, cx).map(ServiceGateway::Ref),
            Value::Int(_) | Value::Float(_) => {
                let name = String::from_node(node, cx)?;
                let as_str = Node::new(Value::Str(name), node.pos);
                EntityReference::from_node(&as_str, cx).map(ServiceGateway::Ref)
            }
            _ => {
                cx.expected(node, "`true`, `false`, a gateway name or `project/name`");
                None
            }
        }
    }
}

/// The service `https`: `true`, `false` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceHttps {
    Bool(bool),
    Auto,
}

impl Serialize for ServiceHttps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceHttps::Bool(b) => s.serialize_bool(*b),
            ServiceHttps::Auto => s.serialize_str("auto"),
        }
    }
}

impl FromNode for ServiceHttps {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let Some(b) = lax_bool(node) {
            return Some(ServiceHttps::Bool(b));
        }
        if node.as_str() == Some("auto") {
            return Some(ServiceHttps::Auto);
        }
        cx.expected(node, "`true`, `false` or `auto`");
        None
    }
}

string_enum! {
    /// The kind of model a service serves.
    pub enum ModelType {
        Chat = "chat",
    }
}

/// A model served with an OpenAI-compatible API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenAiChatModel {
    #[serde(rename = "type")]
    pub kind: ModelType,
    pub name: String,
    /// Always `openai`.
    pub format: &'static str,
    pub prefix: String,
}

/// A model served by Text Generation Inference (legacy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TgiChatModel {
    #[serde(rename = "type")]
    pub kind: ModelType,
    pub name: String,
    /// Always `tgi`.
    pub format: &'static str,
    pub chat_template: Option<String>,
    pub eos_token: Option<String>,
}

/// The service `model`: a name (OpenAI format, prefix `/v1`) or a mapping keyed by `format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ServiceModel {
    OpenAi(OpenAiChatModel),
    Tgi(TgiChatModel),
}

impl FromNode for ServiceModel {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(name) => Some(ServiceModel::OpenAi(OpenAiChatModel {
                kind: ModelType::Chat,
                name: name.clone(),
                format: "openai",
                prefix: "/v1".to_owned(),
            })),
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let Some(format_node) = obj.raw("format") else {
                    cx.error_help(
                        node,
                        "missing required field `format`",
                        "set `format: openai` (or `tgi`), or write just the model name",
                    );
                    return None;
                };
                let format = cx.at_field("format", |cx| choice(format_node, cx, &["openai", "tgi"]))?;
                let mark = cx.mark();
                let kind = obj.field(cx, "type", || ModelType::Chat);
                let name = obj.required(cx, "name");
                let model = if format == "openai" {
                    ServiceModel::OpenAi(OpenAiChatModel {
                        kind,
                        name,
                        format: "openai",
                        prefix: obj.field(cx, "prefix", || "/v1".to_owned()),
                    })
                } else {
                    ServiceModel::Tgi(TgiChatModel {
                        kind,
                        name,
                        format: "tgi",
                        chat_template: obj.opt(cx, "chat_template"),
                        eos_token: obj.opt(cx, "eos_token"),
                    })
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(model)
            }
            _ => {
                cx.expected(node, "a model name or a mapping with `name` and `format`");
                None
            }
        }
    }
}

string_enum! {
    /// The autoscaling metric. dstack knows `rps`; the others are our extension (see
    /// [`ScalingSpec`]).
    pub enum ScalingMetric {
        Rps = "rps",
        Inflight = "inflight",
        P95Latency = "p95_latency",
        Prometheus = "prometheus",
    }
}

/// The scaling windows the gateway supports, in seconds.
pub const SCALING_WINDOWS: [i64; 3] = [30, 60, 300];

/// Autoscaling rules (`scaling`).
///
/// Extension (a superset of dstack's: every dstack `scaling` reads and serializes the same):
/// `metric` may also be `inflight` (requests in progress per replica at the proxy, averaged
/// over `window`), `p95_latency` (the 95th percentile of request durations over `window`, in
/// seconds) or `prometheus`, a gauge each replica exposes at `/metrics`, named by
/// `prometheus_metric` and averaged over the group's replicas. `prometheus_metric` is
/// serialized only when set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingSpec {
    pub metric: ScalingMetric,
    pub target: f64,
    /// `None` means 60 s.
    pub window: Option<Duration>,
    pub scale_up_delay: Duration,
    pub scale_down_delay: Duration,
    /// The gauge of `metric: prometheus` (e.g. `vllm:num_requests_waiting`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_metric: Option<String>,
}

fn non_negative_duration(node: &Node, cx: &mut Cx) -> Option<Duration> {
    let d = Duration::parse(node, cx)?;
    if d.0 < 0 {
        cx.error(node, format!("expected a non-negative duration, found {}", d.0));
        return None;
    }
    Some(d)
}

/// Whether `name` is a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_prometheus_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl FromNode for ScalingSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let metric = obj.required_with(cx, "metric", |n, cx| ScalingMetric::from_node(n, cx).map(Some));
        let target = obj.required_with(cx, "target", crate::common::positive_f64);
        let window = obj.opt_with(cx, "window", |n, cx| {
            let d = Duration::parse(n, cx)?;
            if !SCALING_WINDOWS.contains(&d.0) {
                cx.error(n, "Window must be one of: `30s`, `60s`, `300s`");
                return None;
            }
            Some(d)
        });
        let scale_up_delay = obj.field_with(cx, "scale_up_delay", || Duration(300), non_negative_duration);
        let scale_down_delay =
            obj.field_with(cx, "scale_down_delay", || Duration(600), non_negative_duration);
        let prometheus_metric = obj.opt_with(cx, "prometheus_metric", |n, cx| {
            let name = String::from_node(n, cx)?;
            if metric.is_some() && metric != Some(ScalingMetric::Prometheus) {
                cx.error_help(
                    n,
                    "`prometheus_metric` is only used with `metric: prometheus`",
                    "remove it, or set `metric: prometheus`",
                );
                return None;
            }
            if !is_prometheus_metric_name(&name) {
                cx.error(
                    n,
                    format!("expected a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), found {name:?}"),
                );
                return None;
            }
            Some(name)
        });
        let named = obj.raw("prometheus_metric").is_some_and(|n| !n.is_null());
        if metric == Some(ScalingMetric::Prometheus) && !named {
            cx.at_field("prometheus_metric", |cx| {
                cx.error_help(
                    node,
                    "missing required field `prometheus_metric` (with `metric: prometheus`)",
                    "name the gauge each replica exposes at /metrics, e.g. `prometheus_metric: vllm:num_requests_waiting`",
                )
            });
        }
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(ScalingSpec {
            metric: metric.unwrap_or(ScalingMetric::Rps),
            target,
            window,
            scale_up_delay,
            scale_down_delay,
            prometheus_metric,
        })
    }
}

/// How requests are partitioned for rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartitioningKey {
    IpAddress,
    Header { header: String },
}

impl FromNode for PartitioningKey {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let Some(kind_node) = obj.raw("type") else {
            cx.error_help(
                node,
                "missing required field `type`",
                "set `type: ip_address` or `type: header` (with `header: NAME`)",
            );
            return None;
        };
        let kind = cx.at_field("type", |cx| choice(kind_node, cx, &["ip_address", "header"]))?;
        let mark = cx.mark();
        let key = if kind == "header" {
            PartitioningKey::Header {
                header: obj.required_with(cx, "header", |n, cx| {
                    let h = String::from_node(n, cx)?;
                    let ok = h.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
                    if h.is_empty() || !ok {
                        cx.error(n, "String should match pattern '^[a-zA-Z0-9-_]+$'");
                        return None;
                    }
                    if h.chars().count() > 500 {
                        cx.error(n, "String should have at most 500 characters");
                        return None;
                    }
                    Some(h)
                }),
            }
        } else {
            PartitioningKey::IpAddress
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(key)
    }
}

/// One rate limit (`rate_limits[i]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    pub prefix: String,
    pub key: PartitioningKey,
    pub rps: f64,
    pub burst: i64,
}

/// `MAX_INT64 // 60`: the largest `rps` that fits Nginx's requests-per-minute.
const MAX_RPS: f64 = 153_722_867_280_912_930.0;

impl FromNode for RateLimit {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let limit = RateLimit {
            prefix: obj.field_with(
                cx,
                "prefix",
                || "/".to_owned(),
                |n, cx| {
                    let p = String::from_node(n, cx)?;
                    let ok = p.starts_with('/')
                        && !p[1..].chars().any(|c| c.is_whitespace() || matches!(c, '\\' | '{' | '}'));
                    if !ok {
                        cx.error(n, "String should match pattern '^/[^\\s\\\\{}]*$'");
                        return None;
                    }
                    if p.chars().count() > 4094 {
                        cx.error(n, "String should have at most 4094 characters");
                        return None;
                    }
                    Some(p)
                },
            ),
            key: obj.field(cx, "key", || PartitioningKey::IpAddress),
            rps: obj.required_with(cx, "rps", |n, cx| {
                let v = lax_float(n, cx)?;
                if v < 1.0 / 60.0 || v.is_nan() {
                    cx.error(
                        n,
                        format!("Input should be greater than or equal to {}", python_float_repr(1.0 / 60.0)),
                    );
                    return None;
                }
                if v > MAX_RPS {
                    cx.error(n, "Input should be less than or equal to 153722867280912930");
                    return None;
                }
                Some(v)
            }),
            burst: obj.field_with(cx, "burst", || 0, |n, cx| int_in(n, cx, Some(0), None)),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(limit)
    }
}

/// Reads `rate_limits`, refusing repeated prefixes.
pub(crate) fn parse_rate_limits(node: &Node, cx: &mut Cx) -> Option<Vec<RateLimit>> {
    let limits = Vec::<RateLimit>::from_node(node, cx)?;
    let prefixes: Vec<&str> = limits.iter().map(|l| l.prefix.as_str()).collect();
    let repeated = duplicates(&prefixes);
    if !repeated.is_empty() {
        cx.error(
            node,
            format!(
                "Prefixes {} are used more than once. Each rate limit should have a unique path prefix",
                py_str_list(&repeated)
            ),
        );
        return None;
    }
    Some(limits)
}

string_enum! {
    /// The HTTP methods a probe can use.
    pub enum HttpMethod {
        Get = "get",
        Post = "post",
        Put = "put",
        Delete = "delete",
        Patch = "patch",
        Head = "head",
    }
}

string_enum! {
    /// The probe kinds.
    pub enum ProbeType {
        Http = "http",
    }
}

/// An HTTP header a probe sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

fn str_len_in(node: &Node, cx: &mut Cx, min: usize, max: usize) -> Option<String> {
    let s = String::from_node(node, cx)?;
    let n = s.chars().count();
    if n < min {
        cx.error(node, format!("String should have at least {min} character"));
        return None;
    }
    if n > max {
        cx.error(node, format!("String should have at most {max} characters"));
        return None;
    }
    Some(s)
}

impl FromNode for HttpHeader {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let header = HttpHeader {
            name: obj.required_with(cx, "name", |n, cx| str_len_in(n, cx, 1, 256)),
            value: obj.required_with(cx, "value", |n, cx| str_len_in(n, cx, 1, 2048)),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(header)
    }
}

/// A service health probe (`probes[i]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeConfig {
    #[serde(rename = "type")]
    pub kind: ProbeType,
    /// `None` means `/`.
    pub url: Option<String>,
    /// `None` means `get`.
    pub method: Option<HttpMethod>,
    pub headers: Vec<HttpHeader>,
    pub body: Option<String>,
    /// Seconds; `None` means 10.
    pub timeout: Option<Duration>,
    /// Seconds; `None` means 15.
    pub interval: Option<Duration>,
    /// `None` means 1.
    pub ready_after: Option<i64>,
    /// `None` means false.
    pub until_ready: Option<bool>,
}

/// Python's `str.isprintable()`, closely enough: no control, separator or format characters
/// other than the ASCII space.
fn is_printable(s: &str) -> bool {
    s.chars().all(|c| {
        c == ' '
            || !(c.is_control()
                || c.is_whitespace()
                || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
    })
}

fn at_least_one_second(what: &'static str) -> impl Fn(&Node, &mut Cx) -> Option<Duration> {
    move |node, cx| {
        let d = Duration::parse(node, cx)?;
        if d.0 < 1 {
            cx.error(node, format!("Probe {what} cannot be shorter than 1s"));
            return None;
        }
        Some(d)
    }
}

impl FromNode for ProbeConfig {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let kind = obj.required_with(cx, "type", |n, cx| ProbeType::from_node(n, cx).map(Some));
        let probe = ProbeConfig {
            kind: kind.unwrap_or(ProbeType::Http),
            url: obj.opt_with(cx, "url", |n, cx| {
                let url = String::from_node(n, cx)?;
                let problem = if !url.starts_with('/') {
                    Some("Must start with `/`".to_owned())
                } else if url.chars().count() > 2048 {
                    Some("Cannot be longer than 2048 characters".to_owned())
                } else if !is_printable(&url) {
                    Some("Cannot contain non-printable characters".to_owned())
                } else {
                    None
                };
                if let Some(p) = problem {
                    cx.error(n, p);
                    return None;
                }
                Some(url)
            }),
            method: obj.opt(cx, "method"),
            headers: obj.field_with(cx, "headers", Vec::new, |n, cx| {
                let headers = Vec::<HttpHeader>::from_node(n, cx)?;
                if headers.len() > 16 {
                    cx.error(n, format!("expected at most 16 headers, found {}", headers.len()));
                    return None;
                }
                Some(headers)
            }),
            body: obj.opt_with(cx, "body", |n, cx| str_len_in(n, cx, 1, 2048)),
            timeout: obj.opt_with(cx, "timeout", at_least_one_second("timeout")),
            interval: obj.opt_with(cx, "interval", at_least_one_second("interval")),
            ready_after: obj.opt_with(cx, "ready_after", |n, cx| int_in(n, cx, Some(1), None)),
            until_ready: obj.opt(cx, "until_ready"),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        if let (Some(_), Some(method @ (HttpMethod::Get | HttpMethod::Head))) = (&probe.body, probe.method) {
            cx.error(node, format!("Cannot set request body for the `{method}` method"));
            return None;
        }
        Some(probe)
    }
}

/// Reads `probes`, refusing identical probes.
pub(crate) fn parse_probes(node: &Node, cx: &mut Cx) -> Option<Vec<ProbeConfig>> {
    let probes = Vec::<ProbeConfig>::from_node(node, cx)?;
    let repeated = probes.iter().enumerate().any(|(i, p)| probes[..i].contains(p));
    if repeated {
        cx.error(node, "Probes must be unique");
        return None;
    }
    Some(probes)
}

/// `DSTACK_SERVER_MAX_PROBES_PER_JOB` and `DSTACK_SERVER_MAX_PROBE_TIMEOUT` defaults.
const MAX_PROBES_PER_JOB: usize = 10;
const MAX_PROBE_TIMEOUT: i64 = 300;

/// dstack's server checks of `probes` (with the default server settings).
pub(crate) fn probe_static_checks(probes: &[ProbeConfig], out: &mut Vec<String>) {
    if probes.len() > MAX_PROBES_PER_JOB {
        out.push(format!("Cannot configure more than {MAX_PROBES_PER_JOB} probes"));
    }
    if probes.iter().any(|p| p.timeout.is_some_and(|t| t.0 > MAX_PROBE_TIMEOUT)) {
        out.push(format!("Probe timeout cannot be longer than {MAX_PROBE_TIMEOUT}s"));
    }
}

/// Reads a replica count range: `max` is required, a missing `min` is 0.
pub(crate) fn parse_replicas(node: &Node, cx: &mut Cx) -> Option<Range<i64>> {
    let range = Range::<i64>::from_node(node, cx)?;
    let Some(max) = range.max else {
        cx.error_help(
            node,
            "The maximum number of replicas is required",
            "write a number (`2`) or a range with both ends (`0..4`)",
        );
        return None;
    };
    let min = range.min.unwrap_or(0);
    if min < 0 {
        cx.error(node, "The minimum number of replicas must be greater than or equal to 0");
        return None;
    }
    Some(Range { min: Some(min), max: Some(max) })
}

/// dstack's rule tying a replica range to `scaling`.
pub(crate) fn check_replicas_scaling(
    replicas: &Range<i64>,
    scaling: Option<&ScalingSpec>,
) -> Result<(), String> {
    let fixed = replicas.min == replicas.max;
    if !fixed && scaling.is_none() {
        return Err("When you set `replicas` to a range, ensure to specify `scaling`.".to_owned());
    }
    if fixed && scaling.is_some() {
        return Err("To use `scaling`, `replicas` must be set to a range.".to_owned());
    }
    Ok(())
}

/// The router implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterType {
    /// The Shepherd Model Gateway; written `sglang` on the wire (dstack 0.22 still sends the
    /// legacy value) and accepted as `smg` or `sglang`.
    Smg,
    Dynamo,
}

impl Serialize for RouterType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            RouterType::Smg => "sglang",
            RouterType::Dynamo => "dynamo",
        })
    }
}

/// The in-service router of a replica group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouterConfig {
    #[serde(rename = "type")]
    pub kind: RouterType,
}

impl FromNode for RouterConfig {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let kind = obj.field_with(
            cx,
            "type",
            || RouterType::Smg,
            |n, cx| match n.as_str() {
                Some("smg" | "sglang") => Some(RouterType::Smg),
                Some("dynamo") => Some(RouterType::Dynamo),
                _ => {
                    choice(n, cx, &["smg", "dynamo"]);
                    None
                }
            },
        );
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(RouterConfig { kind })
    }
}

/// The spot policies (`profile::SpotPolicy` values).
const SPOT_POLICIES: &[&str] = &["spot", "on-demand", "auto"];

/// One replica group of a service (`groups[i]`, or legacy `replicas[i]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaGroup {
    /// Filled with the list index when not given.
    pub name: String,
    pub replicas: Range<i64>,
    pub scaling: Option<ScalingSpec>,
    pub resources: ResourcesSpec,
    pub spot_policy: Option<String>,
    pub reservation: Option<String>,
    pub commands: Vec<String>,
    pub image: Option<String>,
    pub python: Option<PythonVersion>,
    pub nvcc: Option<bool>,
    pub docker: Option<bool>,
    pub privileged: Option<bool>,
    pub router: Option<RouterConfig>,
}

impl ReplicaGroup {
    fn read(node: &Node, cx: &mut Cx, index: usize) -> Option<ReplicaGroup> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let name = obj
            .opt_with(cx, "name", |n, cx| {
                let name = String::from_node(n, cx)?;
                if !is_valid_group_name(&name) {
                    cx.error(n, "Resource name should match regex '^[a-z0-9][a-z0-9-]{0,39}$'");
                    return None;
                }
                Some(name)
            })
            .unwrap_or_else(|| index.to_string());
        let has_count = obj.raw("count").is_some();
        let replicas = if obj.raw("replicas").is_some() {
            if let Some(count) = obj.raw("count") {
                cx.at_field("count", |cx| {
                    cx.error_help(
                        count,
                        "`count` is the old name of `replicas`; both are set",
                        "remove `count`",
                    )
                });
            }
            obj.required_with(cx, "replicas", |n, cx| parse_replicas(n, cx).map(Some))
        } else if has_count {
            obj.required_with(cx, "count", |n, cx| parse_replicas(n, cx).map(Some))
        } else {
            obj.required_with(cx, "replicas", |n, cx| parse_replicas(n, cx).map(Some))
        };
        let scaling = obj.opt(cx, "scaling");
        let resources = obj.field(cx, "resources", ResourcesSpec::default);
        let spot_policy = obj.opt_with(cx, "spot_policy", |n, cx| string_choice(n, cx, SPOT_POLICIES));
        let reservation = obj.opt(cx, "reservation");
        let commands = obj.field(cx, "commands", Vec::new);
        let image: Option<String> = obj.opt(cx, "image");
        let image_set = truthy(&image);
        let python = obj.opt_with(cx, "python", |n, cx| {
            if image_set {
                cx.error(n, "`image` and `python` are mutually exclusive within a replica group");
                return None;
            }
            parse_python(n, cx)
        });
        let nvcc = obj.opt_with(cx, "nvcc", |n, cx| parse_nvcc(n, cx, image_set));
        let docker = obj.opt_with(cx, "docker", |n, cx| {
            parse_docker(n, cx, image_set, python.is_some(), nvcc, "within a replica group")
        });
        let privileged = obj.opt_with(cx, "privileged", |n, cx| {
            let v = bool::from_node(n, cx)?;
            if !v && docker == Some(true) {
                cx.error(
                    n,
                    "`privileged: false` is incompatible with `docker: true` within a replica group (docker-in-docker requires privileged mode)",
                );
                return None;
            }
            Some(v)
        });
        let router = obj.opt(cx, "router");
        obj.finish(cx);
        cx.ok_since(mark)?;
        let replicas = replicas?;
        let scaling_ref: Option<&ScalingSpec> = scaling.as_ref();
        if let Err(message) = check_replicas_scaling(&replicas, scaling_ref) {
            cx.error(node, message);
            return None;
        }
        Some(ReplicaGroup {
            name,
            replicas,
            scaling,
            resources,
            spot_policy,
            reservation,
            commands,
            image,
            python,
            nvcc,
            docker,
            privileged,
            router,
        })
    }
}

/// Reads replica groups (`groups`, or the legacy list under `replicas`).
pub(crate) fn parse_groups(node: &Node, cx: &mut Cx) -> Option<Vec<ReplicaGroup>> {
    parse_named_groups(node, cx, "replica", ReplicaGroup::read, |g| &g.name)
}

/// Which of the fields groups may also set are set at the service level (dstack's sense of
/// "set": `docker`, `privileged` and `nvcc` count only when `true`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServiceLevel {
    pub(crate) scaling: bool,
    pub(crate) commands: bool,
    pub(crate) image: bool,
    pub(crate) docker: bool,
    pub(crate) privileged: bool,
    pub(crate) python: bool,
    pub(crate) nvcc: bool,
    pub(crate) spot_policy: bool,
    pub(crate) reservation: bool,
}

/// dstack's service-level rules for replica groups, first failure only.
pub(crate) fn check_groups_against_service(
    groups: &[ReplicaGroup],
    service: &ServiceLevel,
) -> Result<(), String> {
    if service.scaling {
        return Err("Top-level `scaling` is not allowed when `groups` is set. Specify `scaling` in each replica group instead.".to_owned());
    }
    if service.commands {
        return Err("Top-level `commands` is not allowed when `groups` is set. Specify `commands` in each replica group instead.".to_owned());
    }
    type GroupPred = fn(&ReplicaGroup) -> bool;
    let group_image: GroupPred = |g| g.image.is_some();
    let group_docker: GroupPred = |g| g.docker.is_some();
    let group_privileged: GroupPred = |g| g.privileged.is_some();
    let group_python: GroupPred = |g| g.python.is_some();
    let group_nvcc: GroupPred = |g| g.nvcc.is_some();
    let group_spot: GroupPred = |g| g.spot_policy.is_some();
    let group_reservation: GroupPred = |g| g.reservation.is_some();
    let names = |pred: GroupPred| -> Vec<&str> {
        groups.iter().filter(|g| pred(g)).map(|g| g.name.as_str()).collect()
    };
    let both_levels = [
        ("image", service.image, group_image),
        ("docker", service.docker, group_docker),
        ("privileged", service.privileged, group_privileged),
        ("python", service.python, group_python),
        ("nvcc", service.nvcc, group_nvcc),
        ("spot_policy", service.spot_policy, group_spot),
        ("reservation", service.reservation, group_reservation),
    ];
    for (field, service_set, pred) in both_levels {
        let conflicting = names(pred);
        if service_set && !conflicting.is_empty() {
            return Err(format!(
                "`{field}` is set at both the service level and in replica group(s) {}. Set `{field}` in one place only — either at the service level (all groups inherit) or per group, but not both.",
                py_str_list(&conflicting)
            ));
        }
    }
    let cross_level = [
        ("image", service.image, "docker", group_docker),
        ("image", service.image, "python", group_python),
        ("image", service.image, "nvcc", group_nvcc),
        ("docker", service.docker, "image", group_image),
        ("docker", service.docker, "python", group_python),
        ("docker", service.docker, "nvcc", group_nvcc),
        ("python", service.python, "image", group_image),
        ("python", service.python, "docker", group_docker),
        ("nvcc", service.nvcc, "image", group_image),
        ("nvcc", service.nvcc, "docker", group_docker),
    ];
    for (service_field, service_set, group_field, pred) in cross_level {
        let conflicting = names(pred);
        if service_set && !conflicting.is_empty() {
            return Err(format!(
                "Service-level `{service_field}` conflicts with group-level `{group_field}` in replica group(s) {}. These image-source fields are mutually exclusive.",
                py_str_list(&conflicting)
            ));
        }
    }
    for g in groups {
        if g.commands.is_empty() && g.image.is_none() && !service.image {
            return Err(format!(
                "Replica group '{}': either `commands` or `image` must be set in the group, or `image` at the service level.",
                g.name
            ));
        }
    }
    let routers: Vec<&ReplicaGroup> = groups.iter().filter(|g| g.router.is_some()).collect();
    if routers.len() > 1 {
        return Err("At most one replica group may specify `router`.".to_owned());
    }
    if let Some(r) = routers.first()
        && (r.replicas.min != Some(1) || r.replicas.max != Some(1))
    {
        return Err("For now replica group with `router` must have `replicas: 1`.".to_owned());
    }
    Ok(())
}

crate::deserialize_via_node!(HttpHeader);
