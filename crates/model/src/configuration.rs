//! The entry point: a configuration file's text in, a typed configuration and every
//! diagnostic out.
//!
//! Dispatch is on `type` (`dev-environment`, `task`, `service`, `fleet`, `gateway`, `volume`,
//! `preset`), as in dstack's `parse_apply_configuration`.

use serde::Serialize;

use crate::de::{Cx, Diagnostic, FromNode, Severity, suggest};
use crate::fleet::FleetConfiguration;
use crate::gateway::GatewayConfiguration;
use crate::preset::PresetConfiguration;
use crate::run::{DevEnvironmentConfiguration, ServiceConfiguration, TaskConfiguration};
use crate::volume::VolumeConfiguration;
use crate::yaml::{self, Node, Value};

/// Any configuration `dstack apply` accepts.
///
/// Serializes to the normalized JSON dstack 0.22.5 produces (each variant carries its `type`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyConfiguration {
    DevEnvironment(Box<DevEnvironmentConfiguration>),
    Task(Box<TaskConfiguration>),
    Service(Box<ServiceConfiguration>),
    Fleet(Box<FleetConfiguration>),
    Gateway(Box<GatewayConfiguration>),
    Volume(Box<VolumeConfiguration>),
    Preset(Box<PresetConfiguration>),
}

/// The values of the `type` discriminator, in dstack's order.
pub const CONFIGURATION_TYPES: &[&str] =
    &["dev-environment", "task", "service", "fleet", "gateway", "preset", "volume"];

impl AnyConfiguration {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            AnyConfiguration::DevEnvironment(_) => "dev-environment",
            AnyConfiguration::Task(_) => "task",
            AnyConfiguration::Service(_) => "service",
            AnyConfiguration::Fleet(_) => "fleet",
            AnyConfiguration::Gateway(_) => "gateway",
            AnyConfiguration::Volume(_) => "volume",
            AnyConfiguration::Preset(_) => "preset",
        }
    }
}

impl FromNode for AnyConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if !matches!(node.value, Value::Map(_)) {
            cx.expected(node, "a mapping with a `type` field (the configuration)");
            return None;
        }
        let Some(type_node) = node.get("type") else {
            cx.error_help(
                node,
                "missing required field `type`",
                format!("set `type` to one of {}", list(CONFIGURATION_TYPES)),
            );
            return None;
        };
        let kind = match &type_node.value {
            Value::Str(s) => s.as_str(),
            _ => "",
        };
        Some(match kind {
            "dev-environment" => {
                AnyConfiguration::DevEnvironment(Box::new(DevEnvironmentConfiguration::from_node(node, cx)?))
            }
            "task" => AnyConfiguration::Task(Box::new(TaskConfiguration::from_node(node, cx)?)),
            "service" => AnyConfiguration::Service(Box::new(ServiceConfiguration::from_node(node, cx)?)),
            "fleet" => AnyConfiguration::Fleet(Box::new(FleetConfiguration::from_node(node, cx)?)),
            "gateway" => AnyConfiguration::Gateway(Box::new(GatewayConfiguration::from_node(node, cx)?)),
            "volume" => AnyConfiguration::Volume(Box::new(VolumeConfiguration::from_node(node, cx)?)),
            "preset" => AnyConfiguration::Preset(Box::new(PresetConfiguration::from_node(node, cx)?)),
            _ => {
                let message =
                    format!("expected one of {}, found {}", list(CONFIGURATION_TYPES), type_node.describe());
                cx.at_field("type", |cx| {
                    match type_node.as_str().and_then(|s| suggest(s, CONFIGURATION_TYPES)) {
                        Some(near) => cx.error_help(type_node, message, format!("did you mean `{near}`?")),
                        None => cx.error(type_node, message),
                    }
                });
                return None;
            }
        })
    }
}

crate::deserialize_via_node!(AnyConfiguration);

fn list(items: &[&str]) -> String {
    items.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
}

/// The outcome of parsing one configuration file.
#[derive(Debug)]
pub struct Parsed {
    /// Present only when there are no errors.
    pub configuration: Option<AnyConfiguration>,
    /// Errors and warnings, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }
}

/// Parses and validates a configuration file's text. Never panics; every problem is a
/// diagnostic with a position.
pub fn parse_configuration(text: &str) -> Parsed {
    let node = match yaml::load(text) {
        Ok(node) => node,
        Err(e) => {
            let diagnostic = Diagnostic {
                severity: Severity::Error,
                path: String::new(),
                pos: e.pos,
                message: format!("invalid YAML: {}", e.message),
                help: None,
            };
            return Parsed { configuration: None, diagnostics: vec![diagnostic] };
        }
    };
    let mut cx = Cx::new();
    let configuration = AnyConfiguration::from_node(&node, &mut cx);
    let configuration = if cx.has_errors() { None } else { configuration };
    Parsed { configuration, diagnostics: cx.into_diagnostics() }
}

/// dstack's server-side rules that need no server state (names, mutually exclusive fields
/// checked at plan time, limits), so `dstack validate` gives the verdict `dstack apply` would.
pub fn static_checks(configuration: &AnyConfiguration) -> Vec<String> {
    match configuration {
        AnyConfiguration::Fleet(c) => c.static_checks(),
        AnyConfiguration::Gateway(c) => c.static_checks(),
        AnyConfiguration::Volume(c) => c.static_checks(),
        AnyConfiguration::DevEnvironment(c) => c.static_checks(),
        AnyConfiguration::Task(c) => c.static_checks(),
        AnyConfiguration::Service(c) => c.static_checks(),
        // Presets are used locally by the CLI; the server never sees them.
        AnyConfiguration::Preset(_) => Vec::new(),
    }
}
