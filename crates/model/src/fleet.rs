//! `type: fleet`: backend fleets (`nodes`) and SSH fleets (`ssh_config`) in one model, as
//! dstack 0.22.5's `FleetConfiguration`.
//!
//! Which kind a fleet is gets decided by the server, not the parser; the server's rules that
//! need no server state are in [`FleetConfiguration::static_checks`].
//!
//! Deliberate differences from dstack:
//! - `nodes: 3.0` (a float) or `nodes: [1]` (a list) crash dstack with an `AttributeError`;
//!   they are refused here with a clean error.
//! - `nodes: 1..2..3` leaks Python's "too many values to unpack" message in dstack; here it is
//!   an "invalid range" error.
//! - `nodes: x` gives three errors in dstack (`min`, `target`, `max`); here it is one.

use serde::Serialize;
use serde::ser::{Error as _, SerializeMap};

use crate::common::{RESOURCE_NAME_ERROR, check_type_tag, is_valid_resource_name};
use crate::de::{Cx, FromNode, Object, lax_int, seq_with};
use crate::env::Env;
use crate::profile::{FleetProfileParams, ProfileParams, ProfileScope};
use crate::resources::ResourcesSpec;
use crate::string_enum;
use crate::yaml::{Node, Value};

/// The profile parameters a fleet accepts, in the order dstack serializes them (after
/// `resources`). `reservation` is a fleet field of its own and comes earlier.
pub const FLEET_PROFILE_FIELDS: &[&str] = &[
    "backends",
    "regions",
    "availability_zones",
    "instance_types",
    "spot_policy",
    "retry",
    "max_price",
    "idle_duration",
    "tags",
    "backend_options",
];

string_enum! {
    /// How a fleet's instances are placed: `cluster` means interconnected.
    pub enum InstanceGroupPlacement {
        Any = "any",
        Cluster = "cluster",
    }
}

/// `blocks`: `auto` or a number of equal shares (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocks {
    Auto,
    Count(i64),
}

impl Default for Blocks {
    fn default() -> Blocks {
        Blocks::Count(1)
    }
}

impl Serialize for Blocks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Blocks::Auto => s.serialize_str("auto"),
            Blocks::Count(n) => s.serialize_i64(*n),
        }
    }
}

impl FromNode for Blocks {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        if node.as_str() == Some("auto") {
            return Some(Blocks::Auto);
        }
        let integral = match &node.value {
            Value::Int(_) | Value::Bool(_) => true,
            Value::Float(f) => f.fract() == 0.0,
            Value::Str(s) => s.trim().parse::<i64>().is_ok(),
            _ => false,
        };
        if !integral {
            cx.expected(node, "`auto` or a whole number of blocks (1 or more)");
            return None;
        }
        let n = lax_int(node, cx)?;
        if n < 1 {
            cx.error(node, format!("expected `auto` or an integer greater than or equal to 1, found {n}"));
            return None;
        }
        Some(Blocks::Count(n))
    }
}

/// `nodes`: how many instances a backend fleet keeps (`min`), provisions at apply
/// (`target`) and may grow to (`max`, unlimited when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetNodes {
    pub min: i64,
    pub target: i64,
    pub max: Option<i64>,
}

/// dstack drops `target` when it equals `min` (for old clients).
impl Serialize for FleetNodes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("min", &self.min)?;
        if self.target != self.min {
            m.serialize_entry("target", &self.target)?;
        }
        m.serialize_entry("max", &self.max)?;
        m.end()
    }
}

const NODES_EXPECTED: &str =
    "a number of nodes (`2`), a range (`0..4`) or a mapping with `min`, `target`, `max`";

impl FromNode for FleetNodes {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let (min, target, max) = match &node.value {
            Value::Str(s) if s.contains("..") => {
                let v: String = s.chars().filter(|c| *c != ' ').collect();
                let parts: Vec<&str> = v.split("..").collect();
                let [lo, hi] = parts.as_slice() else {
                    cx.error_help(
                        node,
                        format!("invalid range {s:?}"),
                        "write `min..max`, `min..` or `..max`",
                    );
                    return None;
                };
                let side = |p: &str, cx: &mut Cx| -> Option<Option<i64>> {
                    if p.is_empty() {
                        return Some(None);
                    }
                    lax_int(&Node::new(Value::Str(p.to_owned()), node.pos), cx).map(Some)
                };
                let mark = cx.mark();
                let lo = side(lo, cx);
                let hi = side(hi, cx);
                cx.ok_since(mark)?;
                let min = lo.flatten().unwrap_or(0);
                (min, min, hi.flatten())
            }
            Value::Str(_) | Value::Int(_) | Value::Bool(_) => {
                let n = lax_int(node, cx)?;
                (n, n, Some(n))
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let min: Option<i64> = obj.opt(cx, "min");
                let target: Option<i64> = obj.opt(cx, "target");
                let max: Option<i64> = obj.opt(cx, "max");
                obj.finish(cx);
                cx.ok_since(mark)?;
                let min = min.unwrap_or(0);
                (min, target.unwrap_or(min), max)
            }
            _ => {
                cx.expected(node, NODES_EXPECTED);
                return None;
            }
        };
        if min < 0 {
            cx.error(node, "min cannot be negative");
            return None;
        }
        let message = if target < min {
            Some("target must not be be less than min")
        } else if max.is_some_and(|m| m < min) {
            Some("max must not be less than min")
        } else if max.is_some_and(|m| m < target) {
            Some("max must not be less than target")
        } else {
            None
        };
        if let Some(message) = message {
            cx.error(node, message);
            return None;
        }
        Some(FleetNodes { min, target, max })
    }
}

/// An SSH key as the CLI fills it in from `identity_file`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SshKey {
    pub public: String,
    pub private: Option<String>,
}

impl FromNode for SshKey {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let key = SshKey { public: obj.required(cx, "public"), private: obj.opt(cx, "private") };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(key)
    }
}

/// `proxy_jump`: a bastion host, at the fleet or the host level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SshProxyParams {
    pub hostname: String,
    pub port: Option<i64>,
    pub user: String,
    pub identity_file: String,
    pub ssh_key: Option<SshKey>,
}

impl FromNode for SshProxyParams {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let proxy = SshProxyParams {
            hostname: obj.required(cx, "hostname"),
            port: obj.opt(cx, "port"),
            user: obj.required(cx, "user"),
            identity_file: obj.required(cx, "identity_file"),
            ssh_key: obj.opt(cx, "ssh_key"),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(proxy)
    }
}

/// One host of an SSH fleet with its own connection parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SshHostParams {
    pub hostname: String,
    pub port: Option<i64>,
    pub user: Option<String>,
    pub identity_file: Option<String>,
    pub proxy_jump: Option<SshProxyParams>,
    /// A private IP for traffic inside the cluster.
    pub internal_ip: Option<String>,
    pub ssh_key: Option<SshKey>,
    /// Defaults to the fleet-level `blocks`.
    pub blocks: Option<Blocks>,
}

impl FromNode for SshHostParams {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let host = SshHostParams {
            hostname: obj.required(cx, "hostname"),
            port: obj.opt(cx, "port"),
            user: obj.opt(cx, "user"),
            identity_file: obj.opt(cx, "identity_file"),
            proxy_jump: obj.opt(cx, "proxy_jump"),
            internal_ip: obj.opt_with(cx, "internal_ip", internal_ip),
            ssh_key: obj.opt(cx, "ssh_key"),
            blocks: obj.opt(cx, "blocks"),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(host)
    }
}

fn internal_ip(node: &Node, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(node, cx)?;
    match ip::parse_address(&s) {
        None => {
            cx.error(node, "Invalid IP address");
            None
        }
        Some(addr) if !ip::is_private(addr) => {
            cx.error(node, "IP address is not private");
            None
        }
        Some(_) => Some(s),
    }
}

fn network(node: &Node, cx: &mut Cx) -> Option<String> {
    let s = String::from_node(node, cx)?;
    match ip::parse_network(&s) {
        None => {
            cx.error(node, format!("Failed to parse network: {s}"));
            None
        }
        Some((first, last)) if !ip::network_is_private(first, last) => {
            cx.error(node, "Public network is specified when private network is required");
            None
        }
        Some(_) => Some(s),
    }
}

/// A host: a hostname or IP, or a mapping that overrides the fleet-level parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SshHost {
    Name(String),
    Params(Box<SshHostParams>),
}

impl SshHost {
    pub fn hostname(&self) -> &str {
        match self {
            SshHost::Name(name) => name,
            SshHost::Params(params) => &params.hostname,
        }
    }

    fn params(&self) -> Option<&SshHostParams> {
        match self {
            SshHost::Name(_) => None,
            SshHost::Params(params) => Some(params),
        }
    }
}

impl FromNode for SshHost {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(_) => SshHostParams::from_node(node, cx).map(|p| SshHost::Params(Box::new(p))),
            Value::Str(_) | Value::Int(_) | Value::Float(_) => String::from_node(node, cx).map(SshHost::Name),
            _ => {
                cx.expected(node, "a hostname or a mapping with `hostname` and per-host parameters");
                None
            }
        }
    }
}

/// `ssh_config`: the hosts of an SSH fleet and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SshParams {
    pub user: Option<String>,
    pub port: Option<i64>,
    pub identity_file: Option<String>,
    pub ssh_key: Option<SshKey>,
    pub proxy_jump: Option<SshProxyParams>,
    pub hosts: Vec<SshHost>,
    /// A private CIDR for traffic between hosts (parsed non-strictly, kept as written).
    pub network: Option<String>,
}

impl FromNode for SshParams {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let params = SshParams {
            user: obj.opt(cx, "user"),
            port: obj.opt(cx, "port"),
            identity_file: obj.opt(cx, "identity_file"),
            ssh_key: obj.opt(cx, "ssh_key"),
            proxy_jump: obj.opt(cx, "proxy_jump"),
            hosts: obj.required_with(cx, "hosts", |n, cx| seq_with(n, cx, SshHost::from_node)),
            network: obj.opt_with(cx, "network", network),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(params)
    }
}

/// A fleet configuration (`type: fleet`).
///
/// Serializes as dstack does: the fleet fields, then the fleet subset of the profile
/// parameters ([`FLEET_PROFILE_FIELDS`]) after `resources`, then `ssh_config` and `env`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetConfiguration {
    pub name: Option<String>,
    pub placement: Option<InstanceGroupPlacement>,
    pub blocks: Blocks,
    pub nodes: Option<FleetNodes>,
    pub reservation: Option<String>,
    /// Unset means unconstrained.
    pub resources: Option<ResourcesSpec>,
    /// The fleet subset of the profile parameters (`ProfileScope::Fleet`).
    pub profile: FleetProfileParams,
    pub ssh_config: Option<SshParams>,
    pub env: Env,
}

impl FromNode for FleetConfiguration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        check_type_tag(&mut obj, cx, "fleet");
        let name = obj.opt(cx, "name");
        let placement = obj.opt(cx, "placement");
        let blocks = obj.field(cx, "blocks", Blocks::default);
        let nodes = obj.opt(cx, "nodes");
        let resources = obj.opt(cx, "resources");
        let (reservation, profile) = ProfileParams::read(&mut obj, cx, ProfileScope::Fleet).into_fleet();
        let ssh_config = obj.opt(cx, "ssh_config");
        let env = obj.field(cx, "env", Env::default);
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(FleetConfiguration {
            name,
            placement,
            blocks,
            nodes,
            reservation,
            resources,
            profile,
            ssh_config,
            env,
        })
    }
}

crate::deserialize_via_node!(FleetConfiguration, SshKey);

impl FleetConfiguration {
    /// The profile fields of [`FLEET_PROFILE_FIELDS`] as JSON (null when unset).
    fn profile_json(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        match serde_json::to_value(&self.profile) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(other) => Err(format!("profile parameters serialized to {other}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The checks dstack's server runs on a fleet spec that need no server state, with
    /// dstack's messages, in dstack's order (dstack stops at the first).
    ///
    /// The per-host key check counts `identity_file` as a key, since the CLI reads it into
    /// `ssh_key` before the server sees the spec.
    pub fn static_checks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = &self.name
            && !is_valid_resource_name(name)
        {
            out.push(RESOURCE_NAME_ERROR.to_owned());
        }
        let ssh = match (&self.ssh_config, &self.nodes) {
            (None, None) => {
                out.push("No ssh_config or nodes specified".to_owned());
                return out;
            }
            (Some(_), Some(_)) => {
                out.push("ssh_config and nodes are mutually exclusive".to_owned());
                return out;
            }
            (Some(ssh), None) => ssh,
            (None, Some(_)) => {
                if self.env != Env::default() {
                    out.push(
                        "Backend fleet configuration does not support the following fields: ['env']"
                            .to_owned(),
                    );
                }
                return out;
            }
        };
        let mut backend_fields: Vec<&str> = Vec::new();
        if self.reservation.is_some() {
            backend_fields.push("reservation");
        }
        if self.resources.is_some() {
            backend_fields.push("resources");
        }
        let profile = self.profile_json().unwrap_or_default();
        for key in FLEET_PROFILE_FIELDS {
            if profile.get(*key).is_some_and(|v| !v.is_null()) {
                backend_fields.push(key);
            }
        }
        if !backend_fields.is_empty() {
            let list: Vec<String> = backend_fields.iter().map(|f| format!("'{f}'")).collect();
            out.push(format!(
                "SSH fleet configuration does not support the following fields: [{}]",
                list.join(", ")
            ));
        }
        let top_key = ssh.ssh_key.is_some() || ssh.identity_file.is_some();
        for host in &ssh.hosts {
            let params = host.params();
            let host_key = params.is_some_and(|p| p.ssh_key.is_some() || p.identity_file.is_some());
            let host_user = params.is_some_and(|p| p.user.is_some());
            if !top_key && !host_key {
                out.push(format!("No ssh key specified for host {}", host.hostname()));
                break;
            }
            if ssh.user.is_none() && !host_user {
                out.push(format!("No ssh user specified for host {}", host.hostname()));
                break;
            }
        }
        let n_internal =
            ssh.hosts.iter().filter(|h| h.params().is_some_and(|p| p.internal_ip.is_some())).count();
        if n_internal != 0 && n_internal != ssh.hosts.len() {
            out.push("internal_ip must be specified for all hosts".to_owned());
        } else if n_internal > 0 && ssh.network.is_some() {
            out.push("internal_ip is mutually exclusive with network".to_owned());
        }
        out
    }
}

impl Serialize for FleetConfiguration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let profile = self.profile_json().map_err(S::Error::custom)?;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", "fleet")?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("placement", &self.placement)?;
        m.serialize_entry("blocks", &self.blocks)?;
        m.serialize_entry("nodes", &self.nodes)?;
        m.serialize_entry("reservation", &self.reservation)?;
        m.serialize_entry("resources", &self.resources)?;
        for key in FLEET_PROFILE_FIELDS {
            m.serialize_entry(key, profile.get(*key).unwrap_or(&serde_json::Value::Null))?;
        }
        m.serialize_entry("ssh_config", &self.ssh_config)?;
        m.serialize_entry("env", &self.env)?;
        m.end()
    }
}

/// Python's `ipaddress` as dstack uses it (Python 3.11.7 rules for `is_private`).
mod ip {
    use std::net::Ipv6Addr;

    /// An address: IPv4 as a 32-bit value, IPv6 as a 128-bit one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Addr {
        V4(u32),
        V6(u128),
    }

    const V4_PRIVATE: &[(u32, u32)] = &[
        (0x0000_0000, 8),
        (0x0a00_0000, 8),
        (0x7f00_0000, 8),
        (0xa9fe_0000, 16),
        (0xac10_0000, 12),
        (0xc000_0000, 29),
        (0xc000_00aa, 31),
        (0xc000_0200, 24),
        (0xc0a8_0000, 16),
        (0xc612_0000, 15),
        (0xc633_6400, 24),
        (0xcb00_7100, 24),
        (0xf000_0000, 4),
        (0xffff_ffff, 32),
    ];

    const V6_PRIVATE: &[(u128, u32)] = &[
        (1, 128),
        (0, 128),
        (0xffff_0000_0000, 96),
        (0x0100_0000_0000_0000 << 64, 64),
        (0x2001_0000_0000_0000 << 64, 23),
        (0x2001_0002_0000_0000 << 64, 48),
        (0x2001_0db8_0000_0000 << 64, 32),
        (0x2001_0010_0000_0000 << 64, 28),
        (0xfc00_0000_0000_0000 << 64, 7),
        (0xfe80_0000_0000_0000 << 64, 10),
    ];

    fn in_v4(a: u32, (net, prefix): (u32, u32)) -> bool {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        a & mask == net
    }

    fn in_v6(a: u128, (net, prefix): (u128, u32)) -> bool {
        let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        a & mask == net
    }

    /// `ip_address(s).is_private`.
    pub(super) fn is_private(addr: Addr) -> bool {
        match addr {
            Addr::V4(a) => V4_PRIVATE.iter().any(|n| in_v4(a, *n)),
            Addr::V6(a) => {
                if a >> 32 == 0xffff {
                    // An IPv4-mapped address is judged as its IPv4 address.
                    return is_private(Addr::V4(a as u32));
                }
                V6_PRIVATE.iter().any(|n| in_v6(a, *n))
            }
        }
    }

    /// `ip_network(s, strict=False).is_private`: both ends in one private network.
    pub(super) fn network_is_private(first: Addr, last: Addr) -> bool {
        match (first, last) {
            (Addr::V4(f), Addr::V4(l)) => V4_PRIVATE.iter().any(|n| in_v4(f, *n) && in_v4(l, *n)),
            (Addr::V6(f), Addr::V6(l)) => V6_PRIVATE.iter().any(|n| in_v6(f, *n) && in_v6(l, *n)),
            _ => false,
        }
    }

    /// Four decimal octets, no leading zeros, as Python's `IPv4Address`.
    fn parse_v4(s: &str) -> Option<u32> {
        let octets: Vec<&str> = s.split('.').collect();
        if octets.len() != 4 {
            return None;
        }
        let mut out = 0u32;
        for octet in octets {
            if octet.is_empty()
                || octet.len() > 3
                || !octet.bytes().all(|c| c.is_ascii_digit())
                || (octet != "0" && octet.starts_with('0'))
            {
                return None;
            }
            let v: u32 = octet.parse().ok()?;
            if v > 255 {
                return None;
            }
            out = (out << 8) | v;
        }
        Some(out)
    }

    /// An IPv6 address with an optional `%scope` suffix.
    fn parse_v6(s: &str) -> Option<u128> {
        let addr = match s.split_once('%') {
            Some((addr, scope)) if !scope.is_empty() && !scope.contains('%') => addr,
            Some(_) => return None,
            None => s,
        };
        addr.parse::<Ipv6Addr>().ok().map(u128::from)
    }

    /// `ipaddress.ip_address(s)`.
    pub(super) fn parse_address(s: &str) -> Option<Addr> {
        if let Some(a) = parse_v4(s) {
            return Some(Addr::V4(a));
        }
        parse_v6(s).map(Addr::V6)
    }

    /// The prefix length of a netmask (`1*0*`) or a hostmask (`0*1*`).
    fn prefix_from_mask(mask: u32) -> Option<u32> {
        let as_netmask = |m: u32| -> Option<u32> {
            let ones = m.leading_ones();
            (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
        };
        as_netmask(mask).or_else(|| as_netmask(!mask))
    }

    fn prefix_len(p: &str, max: u32) -> Option<u32> {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        p.parse::<u32>().ok().filter(|n| *n <= max)
    }

    /// `ipaddress.ip_network(s, strict=False)` as its first and last address.
    pub(super) fn parse_network(s: &str) -> Option<(Addr, Addr)> {
        let parts: Vec<&str> = s.split('/').collect();
        let (addr, mask) = match parts.as_slice() {
            [addr] => (*addr, None),
            [addr, mask] => (*addr, Some(*mask)),
            _ => return None,
        };
        if let Some(a) = parse_v4(addr) {
            let prefix = match mask {
                None => 32,
                Some(m) => match prefix_len(m, 32) {
                    Some(p) => p,
                    None => prefix_from_mask(parse_v4(m)?)?,
                },
            };
            let netmask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            let first = a & netmask;
            return Some((Addr::V4(first), Addr::V4(first | !netmask)));
        }
        let a = parse_v6(addr)?;
        let prefix = match mask {
            None => 128,
            Some(m) => prefix_len(m, 128)?,
        };
        let netmask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
        let first = a & netmask;
        Some((Addr::V6(first), Addr::V6(first | !netmask)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::test_support::{check_err, check_json};

    // Spec §13 E5, E6 and I7, verbatim.
    const E5: &str = r#"type: fleet
name: onprem
placement: cluster
blocks: auto                    # default for hosts without their own `blocks`
env:
  - HTTP_PROXY=http://proxy.corp.example:3128
  - NO_PROXY=localhost,127.0.0.1,10.0.0.0/8
ssh_config:
  user: ubuntu
  identity_file: ~/.ssh/onprem_ed25519
  network: 10.10.0.0/16         # private CIDR for inter-node traffic
  proxy_jump:
    hostname: bastion.corp.example
    port: 2222
    user: jump
    identity_file: ~/.ssh/bastion_ed25519
  hosts:
    - 10.10.0.11
    - hostname: 10.10.0.12
      blocks: 4
    - hostname: 10.10.0.13
      user: admin
      identity_file: ~/.ssh/admin_ed25519
      port: 2200
"#;

    const I7: &str = r#"type: fleet
name: mixed
nodes: 2
ssh_config:
  user: ubuntu
  identity_file: ~/.ssh/id_ed25519
  hosts: [10.0.0.1, 10.0.0.2]
"#;

    const E6: &str = r#"type: fleet
name: h100-cluster
nodes: 0..4                     # min 0 (template only), max 4, target 0
placement: cluster
resources:
  gpu: H100:8
  disk: 1TB..
backends: [aws]
regions: [us-east-1]
availability_zones: [us-east-1a]
instance_types: [p5.48xlarge]
spot_policy: on-demand
reservation: cr-0123456789abcdef0
idle_duration: 1h               # instances above nodes.min are terminated after 1h idle
max_price: 120
retry:
  on_events: [no-capacity]
  duration: 6h
tags:
  cost-center: ml-infra
"#;

    #[test]
    fn fleets_parse_as_dstack_does() {
        let cases: &[(&str, &str)] = &[
            (
                "type: fleet\nnodes: 1",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":1,"max":1},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: \"3\"",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":3,"max":3},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: ..",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":0,"max":null},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: \" 1 .. 2 \"",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":1,"max":2},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: {target: 2}",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":0,"target":2,"max":null},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: {min: null, target: null}",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":{"min":0,"max":null},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nnodes: true\nblocks: \"4\"",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":4,"nodes":{"min":1,"max":1},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nblocks: 2.0\nplacement: any",
                r#"{"type":"fleet","name":null,"placement":"any","blocks":2,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [1, \"a\", {hostname: b, blocks: auto, internal_ip: 10.0.0.1, port: \"22\"}]\n  network: 10.0.0.1/8",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":null,"port":null,"identity_file":null,"ssh_key":null,"proxy_jump":null,"hosts":["1","a",{"hostname":"b","port":22,"user":null,"identity_file":null,"proxy_jump":null,"internal_ip":"10.0.0.1","ssh_key":null,"blocks":"auto"}],"network":"10.0.0.1/8"},"env":{}}"#,
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [a]\n  proxy_jump: {hostname: b, user: u, identity_file: f, port: 2}\n  ssh_key: {public: x}",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":null,"port":null,"identity_file":null,"ssh_key":{"public":"x","private":null},"proxy_jump":{"hostname":"b","port":2,"user":"u","identity_file":"f","ssh_key":null},"hosts":["a"],"network":null},"env":{}}"#,
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [a]\n  network: 10.0.0.0/255.0.0.0",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":null,"port":null,"identity_file":null,"ssh_key":null,"proxy_jump":null,"hosts":["a"],"network":"10.0.0.0/255.0.0.0"},"env":{}}"#,
            ),
            (
                "type: fleet\nssh_config:\n  hosts: []\n  network: fd00::/8",
                r#"{"type":"fleet","name":null,"placement":null,"blocks":1,"nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":null,"port":null,"identity_file":null,"ssh_key":null,"proxy_jump":null,"hosts":[],"network":"fd00::/8"},"env":{}}"#,
            ),
            // Spec §13 E5.
            (
                E5,
                r#"{"type":"fleet","name":"onprem","placement":"cluster","blocks":"auto","nodes":null,"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":"ubuntu","port":null,"identity_file":"~/.ssh/onprem_ed25519","ssh_key":null,"proxy_jump":{"hostname":"bastion.corp.example","port":2222,"user":"jump","identity_file":"~/.ssh/bastion_ed25519","ssh_key":null},"hosts":["10.10.0.11",{"hostname":"10.10.0.12","port":null,"user":null,"identity_file":null,"proxy_jump":null,"internal_ip":null,"ssh_key":null,"blocks":4},{"hostname":"10.10.0.13","port":2200,"user":"admin","identity_file":"~/.ssh/admin_ed25519","proxy_jump":null,"internal_ip":null,"ssh_key":null,"blocks":null}],"network":"10.10.0.0/16"},"env":{"HTTP_PROXY":"http://proxy.corp.example:3128","NO_PROXY":"localhost,127.0.0.1,10.0.0.0/8"}}"#,
            ),
            // Spec §13 E6.
            (
                E6,
                r#"{"type":"fleet","name":"h100-cluster","placement":"cluster","blocks":1,"nodes":{"min":0,"max":4},"reservation":"cr-0123456789abcdef0","resources":{"cpu":{"arch":null,"count":{"min":2,"max":null}},"memory":{"min":8.0,"max":null},"shm_size":null,"gpu":{"vendor":null,"name":["H100"],"count":{"min":8,"max":8},"memory":null,"total_memory":null,"compute_capability":null},"disk":{"size":{"min":1024.0,"max":null}}},"backends":["aws"],"regions":["us-east-1"],"availability_zones":["us-east-1a"],"instance_types":["p5.48xlarge"],"spot_policy":"on-demand","retry":{"on_events":["no-capacity"],"duration":21600},"max_price":120.0,"idle_duration":3600,"tags":{"cost-center":"ml-infra"},"backend_options":null,"ssh_config":null,"env":{}}"#,
            ),
            // Spec §13 I7 parses (the server refuses it).
            (
                I7,
                r#"{"type":"fleet","name":"mixed","placement":null,"blocks":1,"nodes":{"min":2,"max":2},"reservation":null,"resources":null,"backends":null,"regions":null,"availability_zones":null,"instance_types":null,"spot_policy":null,"retry":null,"max_price":null,"idle_duration":null,"tags":null,"backend_options":null,"ssh_config":{"user":"ubuntu","port":null,"identity_file":"~/.ssh/id_ed25519","ssh_key":null,"proxy_jump":null,"hosts":["10.0.0.1","10.0.0.2"],"network":null},"env":{}}"#,
            ),
        ];
        for (yaml, json) in cases {
            check_json(yaml, json);
        }
    }

    #[test]
    fn fleet_errors() {
        let cases: &[(&str, &str)] = &[
            ("type: fleet\nnodes: {min: 2, target: 1}", "`nodes`: target must not be be less than min"),
            ("type: fleet\nnodes: -1", "`nodes`: min cannot be negative"),
            ("type: fleet\nnodes: {max: 1, target: 2}", "max must not be less than target"),
            ("type: fleet\nnodes: 2..1", "max must not be less than min"),
            ("type: fleet\nnodes: 1..2..3", "invalid range \"1..2..3\""),
            ("type: fleet\nnodes: 3.0", "expected a number of nodes"),
            ("type: fleet\nnodes: [1]", "expected a number of nodes"),
            ("type: fleet\nnodes: x", "`nodes`: expected an integer"),
            (
                "type: fleet\nblocks: 0",
                "`blocks`: expected `auto` or an integer greater than or equal to 1, found 0",
            ),
            ("type: fleet\nblocks: Auto", "`blocks`: expected `auto`"),
            ("type: fleet\nplacement: x", "`placement`: expected one of `any`, `cluster`"),
            (
                "type: fleet\nssh_config:\n  hosts: [a]\n  network: 8.8.8.0/24",
                "`ssh_config.network`: Public network is specified when private network is required",
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [a]\n  network: foo",
                "`ssh_config.network`: Failed to parse network: foo",
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [{hostname: a, internal_ip: 8.8.8.8}]",
                "`ssh_config.hosts[0].internal_ip`: IP address is not private",
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [{hostname: a, internal_ip: x}]",
                "`ssh_config.hosts[0].internal_ip`: Invalid IP address",
            ),
            (
                "type: fleet\nssh_config:\n  hosts: [{hostname: a, proxy_jump: {hostname: b}}]",
                "`ssh_config.hosts[0].proxy_jump.user`: missing required field `user`",
            ),
            ("type: fleet\nssh_config: {}", "`ssh_config.hosts`: missing required field `hosts`"),
            ("type: fleet\nssh_config:\n  hosts: [{hostnme: a}]", "help: did you mean `hostname`?"),
            ("type: fleet\nssh_config:\n  hosts: [true]", "`ssh_config.hosts[0]`: expected a hostname"),
            ("type: fleet\nnodes: 1\nmax_duration: 1h", "unknown field `max_duration`"),
        ];
        for (yaml, err) in cases {
            check_err(yaml, err);
        }
    }

    #[test]
    fn ip_rules_follow_python() {
        use ip::{is_private, network_is_private, parse_address, parse_network};
        let private = |s: &str| parse_address(s).map(is_private);
        assert_eq!(private("10.1.2.3"), Some(true));
        assert_eq!(private("172.31.255.255"), Some(true));
        assert_eq!(private("172.32.0.1"), Some(false));
        assert_eq!(private("100.64.0.1"), Some(false));
        assert_eq!(private("fd12::1"), Some(true));
        assert_eq!(private("::ffff:10.0.0.1"), Some(true));
        assert_eq!(private("fe80::1%eth0"), Some(true));
        assert_eq!(private("010.0.0.1"), None);
        assert_eq!(private("10.0.0.256"), None);
        let net = |s: &str| parse_network(s).map(|(a, b)| network_is_private(a, b));
        assert_eq!(net("10.0.0.0/0.255.255.255"), Some(true));
        assert_eq!(net("10.0.0.0/7"), Some(false));
        assert_eq!(net("192.168.1.7/16"), Some(true));
        assert_eq!(net("10.0.0.0/33"), None);
        assert_eq!(net("10.0.0.0/255.0.255.0"), None);
        assert_eq!(net("10.0.0.0/8/8"), None);
    }

    #[test]
    fn fleet_static_checks() {
        let cases: &[(&str, &[&str])] = &[
            ("type: fleet", &["No ssh_config or nodes specified"]),
            (I7, &["ssh_config and nodes are mutually exclusive"]),
            (
                "type: fleet\nname: Bad_Name\nnodes: 1",
                &["Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'"],
            ),
            (
                "type: fleet\nnodes: 1\nenv: [A=1]",
                &["Backend fleet configuration does not support the following fields: ['env']"],
            ),
            (
                "type: fleet\nreservation: r\nresources: {gpu: 1}\nssh_config:\n  user: u\n  identity_file: k\n  hosts: [a]",
                &[
                    "SSH fleet configuration does not support the following fields: ['reservation', 'resources']",
                ],
            ),
            (
                "type: fleet\nssh_config:\n  identity_file: k\n  hosts: [a]",
                &["No ssh user specified for host a"],
            ),
            (
                "type: fleet\nssh_config:\n  user: u\n  hosts: [a, {hostname: b, identity_file: k}]",
                &["No ssh key specified for host a"],
            ),
            (
                "type: fleet\nssh_config:\n  user: u\n  identity_file: k\n  hosts: [a, {hostname: b, internal_ip: 10.0.0.2}]",
                &["internal_ip must be specified for all hosts"],
            ),
            (
                "type: fleet\nssh_config:\n  user: u\n  identity_file: k\n  network: 10.0.0.0/24\n  hosts: [{hostname: b, internal_ip: 10.0.0.2}]",
                &["internal_ip is mutually exclusive with network"],
            ),
            (E5, &[]),
            (E6, &[]),
        ];
        for (yaml, expected) in cases {
            let parsed = crate::parse_configuration(yaml);
            let Some(crate::AnyConfiguration::Fleet(fleet)) = parsed.configuration else {
                panic!("{yaml}: {:?}", parsed.diagnostics);
            };
            assert_eq!(fleet.static_checks(), *expected, "{yaml}");
        }
    }
}

/// Table-test helpers shared by the fleet, gateway, volume and preset tests.
#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::Value;

    use crate::parse_configuration;

    /// Parses `yaml` and compares the JSON with `expected` (dstack's `model_dump_json()`),
    /// key order included.
    pub(crate) fn check_json(yaml: &str, expected: &str) {
        let parsed = parse_configuration(yaml);
        let Some(conf) = parsed.configuration else {
            panic!("{yaml}\nfailed: {:#?}", parsed.diagnostics);
        };
        let got = serde_json::to_value(&conf).expect("serializes");
        let want: Value = serde_json::from_str(expected).expect("expected JSON is valid");
        assert_eq!(
            serde_json::to_string(&got).expect("serializes"),
            serde_json::to_string(&want).expect("serializes"),
            "\n{yaml}"
        );
        // The wire JSON must read back to the same configuration.
        let back: crate::AnyConfiguration =
            serde_json::from_value(want.clone()).expect("wire JSON deserializes");
        assert_eq!(serde_json::to_value(&back).expect("serializes"), want);
    }

    /// Parses `yaml`, expects it to fail, and looks for `needle` in the rendered errors.
    pub(crate) fn check_err(yaml: &str, needle: &str) {
        let parsed = parse_configuration(yaml);
        let rendered: Vec<String> = parsed.errors().map(|d| d.render("f.yml")).collect();
        assert!(parsed.configuration.is_none(), "{yaml}\nparsed, expected {needle:?}");
        assert!(rendered.iter().any(|r| r.contains(needle)), "{yaml}\nexpected {needle:?} in {rendered:#?}");
    }
}
