//! Value types shared by every configuration: durations, ranges, memory sizes, entity
//! references, port mappings, backend names and tags.

use indexmap::IndexMap;
use serde::Serialize;

use crate::de::{Cx, FromNode, Object, int_in, lax_float, lax_int, parse_python_float};
use crate::string_enum;
use crate::yaml::{Node, Value, python_float_repr};

/// A duration in whole seconds, written as seconds (`90`) or `<n><s|m|h|d|w>` (`30m`).
///
/// A float is truncated and `true` counts as 1, as in dstack. Negative numbers pass; the
/// fields that forbid them check separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Duration(pub i64);

impl Duration {
    /// Reads a duration; the error names what was found.
    pub fn parse(node: &Node, cx: &mut Cx) -> Option<Duration> {
        match &node.value {
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => Some(Duration(i)),
                Err(_) => {
                    cx.error(node, "duration is out of range");
                    None
                }
            },
            Value::Bool(b) => Some(Duration(i64::from(*b))),
            Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(Duration(f.trunc() as i64)),
            Value::Str(s) => match parse_duration_str(s) {
                Some(d) => Some(Duration(d)),
                None => {
                    cx.error_help(
                        node,
                        format!("cannot parse the duration {s:?}"),
                        "write seconds (`90`) or a number with one unit: `30s`, `15m`, `2h`, `1d`, `1w`",
                    );
                    None
                }
            },
            _ => {
                cx.expected(node, "a duration (`90`, `30s`, `15m`, `2h`, `1d`, `1w`)");
                None
            }
        }
    }
}

/// `int(v)` or `^(\d+) *([smhdw])$` (a match at the start, so leading text is refused).
fn parse_duration_str(s: &str) -> Option<i64> {
    if let Ok(i) = python_int(s) {
        return Some(i);
    }
    let digits_end = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits_end == 0 {
        return None;
    }
    let amount: i64 = s[..digits_end].parse().ok()?;
    let rest = s[digits_end..].trim_start_matches(' ');
    let multiplier = match rest {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    amount.checked_mul(multiplier)
}

/// Python's `int(str)`: optional surrounding whitespace, sign, digits with single underscores.
fn python_int(s: &str) -> Result<i64, ()> {
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    if body.is_empty()
        || body.starts_with('_')
        || body.ends_with('_')
        || body.contains("__")
        || !body.bytes().all(|c| c.is_ascii_digit() || c == b'_')
    {
        return Err(());
    }
    t.replace('_', "").parse().map_err(|_| ())
}

impl FromNode for Duration {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        Duration::parse(node, cx)
    }
}

/// `max_duration` / `stop_duration`: `"off"` or a non-negative number of seconds.
///
/// In a field, `off`/`false` give [`OffDuration::Off`]; `true`/null give `None` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffDuration {
    Off,
    Seconds(i64),
}

impl Serialize for OffDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OffDuration::Off => s.serialize_str("off"),
            OffDuration::Seconds(secs) => s.serialize_i64(*secs),
        }
    }
}

impl OffDuration {
    /// Reads an off-able duration field value: `None` means "use the default".
    pub fn parse_field(node: &Node, cx: &mut Cx) -> Option<Option<OffDuration>> {
        match &node.value {
            Value::Null | Value::Bool(true) => Some(None),
            Value::Bool(false) => Some(Some(OffDuration::Off)),
            Value::Str(s) if s == "off" => Some(Some(OffDuration::Off)),
            _ => {
                let d = Duration::parse(node, cx)?;
                if d.0 < 0 {
                    cx.error(node, "Duration cannot be negative");
                    return None;
                }
                Some(Some(OffDuration::Seconds(d.0)))
            }
        }
    }
}

impl FromNode for Option<OffDuration> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        OffDuration::parse_field(node, cx)
    }
}

/// `idle_duration` / `auto_cleanup_duration`: seconds, with `-1` meaning off.
///
/// `off`/`false`/`-1` give `Some(-1)`; `true`/null give `None` (the default); other negative
/// numbers are kept (older clients stored them to mean off).
pub fn parse_idle_duration(node: &Node, cx: &mut Cx) -> Option<Option<i64>> {
    match &node.value {
        Value::Null | Value::Bool(true) => Some(None),
        Value::Bool(false) => Some(Some(-1)),
        Value::Str(s) if s == "off" => Some(Some(-1)),
        _ => Duration::parse(node, cx).map(|d| Some(d.0)),
    }
}

/// A memory or disk size in GB: a number, or a string with an optional `MB`/`GB`/`TB` suffix.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
#[serde(transparent)]
pub struct Memory(pub f64);

impl Memory {
    /// Parses the text form (`16GB`, `512MB`, `1.5TB`, `24`): spaces removed, case ignored.
    pub fn parse_str(s: &str) -> Result<Memory, String> {
        let v: String = s.chars().filter(|c| *c != ' ').collect::<String>().to_lowercase();
        let (number, factor) = if let Some(n) = v.strip_suffix("tb") {
            (n, 1024.0)
        } else if let Some(n) = v.strip_suffix("gb") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("mb") {
            (n, 1.0 / 1024.0)
        } else {
            (v.as_str(), 1.0)
        };
        match parse_python_float(number) {
            Some(f) => Ok(Memory(f * factor)),
            None => Err(format!(
                "cannot read {s:?} as a memory size: write a number of GB or use an `MB`, `GB` or `TB` suffix (`512MB`, `16GB`, `1TB`)"
            )),
        }
    }

    /// dstack's display form: `%g` followed by `GB`.
    pub fn display(self) -> String {
        format!("{}GB", format_g(self.0))
    }
}

/// Python's `'%g' % f`: 6 significant digits, trailing zeros dropped.
pub fn format_g(f: f64) -> String {
    if f == 0.0 {
        return "0".to_owned();
    }
    if !f.is_finite() {
        return python_float_repr(f);
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..6).contains(&exp) {
        let decimals = (5 - exp).max(0) as usize;
        let s = format!("{f:.decimals$}");

        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
    } else {
        let s = format!("{f:.5e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        let e: i32 = e.parse().unwrap_or(0);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
}

impl FromNode for Memory {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Int(i) => Some(Memory(*i as f64)),
            Value::Float(f) => Some(Memory(*f)),
            Value::Bool(b) => Some(Memory(if *b { 1.0 } else { 0.0 })),
            Value::Str(s) => match Memory::parse_str(s) {
                Ok(m) => Some(m),
                Err(e) => {
                    cx.error(node, e);
                    None
                }
            },
            _ => {
                cx.expected(node, "a memory size (`16GB`, `512MB`, `1TB`)");
                None
            }
        }
    }
}

/// A value that [`Range`] can hold.
pub trait RangeValue: Copy + PartialOrd + Serialize {
    /// Parses one side of a `min..max` string.
    fn parse_bound(s: &str) -> Result<Self, String>;
    /// Validates a scalar or mapping value.
    fn from_value(node: &Node, cx: &mut Cx) -> Option<Self>;
    /// How the value reads in messages.
    fn display(self) -> String;
}

impl RangeValue for i64 {
    fn parse_bound(s: &str) -> Result<Self, String> {
        python_int(s).map_err(|()| format!("expected an integer, found {s:?}"))
    }
    fn from_value(node: &Node, cx: &mut Cx) -> Option<Self> {
        lax_int(node, cx)
    }
    fn display(self) -> String {
        self.to_string()
    }
}

impl RangeValue for Memory {
    fn parse_bound(s: &str) -> Result<Self, String> {
        Memory::parse_str(s)
    }
    fn from_value(node: &Node, cx: &mut Cx) -> Option<Self> {
        Memory::from_node(node, cx)
    }
    fn display(self) -> String {
        Memory::display(self)
    }
}

/// An inclusive range with optional ends: `8`, `2..8`, `2..`, `..8`, `24GB..80GB`, or
/// `{min, max}`. At least one end is set and `min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Range<T> {
    pub min: Option<T>,
    pub max: Option<T>,
}

impl<T: RangeValue> Range<T> {
    pub fn exact(v: T) -> Range<T> {
        Range { min: Some(v), max: Some(v) }
    }

    pub fn at_least(v: T) -> Range<T> {
        Range { min: Some(v), max: None }
    }

    /// The text form: `8`, `2..8`, `2..`.
    pub fn display(&self) -> String {
        let min = self.min.map(T::display).unwrap_or_default();
        let max = self.max.map(T::display).unwrap_or_default();
        if min == max { min } else { format!("{min}..{max}") }
    }

    /// Parses the `a..b` text form (spaces removed); `None` when the text has no `..`.
    pub fn parse_str(s: &str) -> Option<Result<Range<T>, String>> {
        if !s.contains("..") {
            return None;
        }
        let v: String = s.chars().filter(|c| *c != ' ').collect();
        let parts: Vec<&str> = v.split("..").collect();
        if parts.len() != 2 {
            return Some(Err(format!("invalid range {s:?}: use `min..max`, `min..` or `..max`")));
        }
        let side = |p: &str| -> Result<Option<T>, String> {
            if p.is_empty() { Ok(None) } else { T::parse_bound(p).map(Some) }
        };
        Some(side(parts[0]).and_then(|min| Ok(Range { min, max: side(parts[1])? })))
    }

    fn check(self, node: &Node, cx: &mut Cx) -> Option<Range<T>> {
        match (self.min, self.max) {
            (None, None) => {
                cx.error(node, "Invalid empty range: ..");
                None
            }
            (Some(min), Some(max)) if min > max => {
                cx.error(node, format!("Invalid range order: {}..{}", min.display(), max.display()));
                None
            }
            _ => Some(self),
        }
    }
}

impl<T: RangeValue> FromNode for Range<T> {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let range = match &node.value {
            Value::Str(s) => match Range::<T>::parse_str(s) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    cx.error(node, e);
                    return None;
                }
                None => Range::exact(T::from_value(node, cx)?),
            },
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Range::exact(T::from_value(node, cx)?),
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let min = obj.opt_with(cx, "min", T::from_value);
                let max = obj.opt_with(cx, "max", T::from_value);
                obj.finish(cx);
                cx.ok_since(mark)?;
                Range { min, max }
            }
            _ => {
                cx.expected(node, "a number or a range (`2..8`, `2..`, `..8`)");
                return None;
            }
        };
        range.check(node, cx)
    }
}

/// A reference to a fleet or gateway, maybe in another project: `name` or `project/name`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EntityReference {
    pub project: Option<String>,
    pub name: String,
}

const INVALID_REF: &str = "Invalid entity reference. Only `<name>` or `<project>/<name>` formats are allowed";

impl EntityReference {
    pub fn parse_str(s: &str) -> Option<EntityReference> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        match parts.as_slice() {
            [name] => Some(EntityReference { project: None, name: (*name).to_owned() }),
            [project, name] => {
                Some(EntityReference { project: Some((*project).to_owned()), name: (*name).to_owned() })
            }
            _ => None,
        }
    }
}

impl FromNode for EntityReference {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let r = EntityReference { project: obj.opt(cx, "project"), name: obj.required(cx, "name") };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(r)
            }
            Value::Str(s) => {
                let r = EntityReference::parse_str(s);
                if r.is_none() {
                    cx.error(node, INVALID_REF);
                }
                r
            }
            _ => {
                cx.expected(node, "a name or `project/name`");
                None
            }
        }
    }
}

/// A forwarded port: `8080` (same port locally), `"80:8080"` (local 80), `"*:8080"` (any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PortMapping {
    pub local_port: Option<i64>,
    pub container_port: i64,
}

fn port(node: &Node, cx: &mut Cx) -> Option<i64> {
    int_in(node, cx, Some(1), Some(65535))
}

impl PortMapping {
    /// `^(?:(\d+|\*):)?(\d+)$`; unlike dstack, `"8080:"` is refused cleanly.
    pub fn parse_str(s: &str) -> Result<(Option<&str>, &str), String> {
        let (local, container) = match s.split_once(':') {
            Some((l, c)) => (Some(l), c),
            None => (None, s),
        };
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        let local_ok = local.is_none_or(|l| l == "*" || digits(l));
        if !local_ok || !digits(container) {
            return Err(format!(
                "invalid port mapping {s:?}: write `PORT`, `LOCAL:CONTAINER` or `*:CONTAINER` (quote it in YAML)"
            ));
        }
        Ok((local, container))
    }
}

impl FromNode for PortMapping {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Int(_) => {
                let p = port(node, cx)?;
                Some(PortMapping { local_port: Some(p), container_port: p })
            }
            Value::Str(s) => {
                let (local, container) = match PortMapping::parse_str(s) {
                    Ok(parts) => parts,
                    Err(e) => {
                        cx.error(node, e);
                        return None;
                    }
                };
                let num = |t: &str, cx: &mut Cx| -> Option<i64> {
                    let n = Node::new(Value::Int(t.parse().unwrap_or(i128::MAX)), node.pos);
                    port(&n, cx)
                };
                let container_port = num(container, cx)?;
                let local_port = match local {
                    None => Some(container_port),
                    Some("*") => None,
                    Some(l) => Some(num(l, cx)?),
                };
                Some(PortMapping { local_port, container_port })
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let m = PortMapping {
                    local_port: obj.opt_with(cx, "local_port", port),
                    container_port: obj.required_with(cx, "container_port", port),
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(m)
            }
            _ => {
                cx.expected(node, "a port (`8080`) or a mapping (`\"80:8080\"`)");
                None
            }
        }
    }
}

string_enum! {
    /// The backends dstack 0.22.5 knows (`remote` = SSH fleets, `datacrunch` = old `verda`).
    pub enum BackendType {
        AmdDevCloud = "amddevcloud",
        Aws = "aws",
        Azure = "azure",
        CloudRift = "cloudrift",
        Crusoe = "crusoe",
        Cudo = "cudo",
        DataCrunch = "datacrunch",
        Daytona = "daytona",
        DigitalOcean = "digitalocean",
        Dstack = "dstack",
        Gcp = "gcp",
        HotAisle = "hotaisle",
        JarvisLabs = "jarvislabs",
        Kubernetes = "kubernetes",
        Lambda = "lambda",
        Lium = "lium",
        Remote = "remote",
        Nebius = "nebius",
        Oci = "oci",
        RunPod = "runpod",
        Seeweb = "seeweb",
        TensorDock = "tensordock",
        VastAi = "vastai",
        Verda = "verda",
        Vultr = "vultr",
        Slurm = "slurm",
    }
}

/// Resource tags: keys `^[_\-a-zA-Z0-9]{1,60}$`, values `^[a-zA-Z0-9 .:/=_\-+@]{0,256}$`.
///
/// Names and values must be strings: dstack crashes on a number or null there, so we refuse it.
pub fn parse_tags(node: &Node, cx: &mut Cx) -> Option<IndexMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        cx.expected(node, "a mapping of tag names to values");
        return None;
    };
    let mark = cx.mark();
    for (k, v) in entries {
        if k.as_str().is_none() {
            cx.expected(k, "a string tag name");
        } else if !matches!(v.value, Value::Str(_)) {
            cx.at_field(&k.key_string(), |cx| cx.expected(v, "a string (quote numbers and booleans)"));
        }
    }
    cx.ok_since(mark)?;
    let tags = IndexMap::<String, String>::from_node(node, cx)?;
    let key_ok = |k: &str| {
        (1..=60).contains(&k.chars().count())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let value_ok = |v: &str| {
        v.chars().count() <= 256 && v.chars().all(|c| c.is_ascii_alphanumeric() || " .:/=_-+@".contains(c))
    };
    let mark = cx.mark();
    for (k, v) in &tags {
        if !key_ok(k) {
            cx.error(
                node,
                format!("Invalid tag key {k}. The key must match regex '^[_\\-a-zA-Z0-9]{{1,60}}$'"),
            );
        } else if !value_ok(v) {
            cx.error(
                node,
                format!(
                    "Invalid tag value {v}. The value must match regex '^[a-zA-Z0-9 .:/=_\\-+@]{{0,256}}$'"
                ),
            );
        }
    }
    cx.ok_since(mark)?;
    Some(tags)
}

/// A float that must be greater than zero (`max_price`, scaling `target`).
pub fn positive_f64(node: &Node, cx: &mut Cx) -> Option<f64> {
    let v = lax_float(node, cx)?;
    if v.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        cx.error(node, "Input should be greater than 0");
        return None;
    }
    Some(v)
}

/// `^[a-z][a-z0-9-]{1,40}$`: run, fleet, gateway and volume names (checked by dstack's server).
pub fn is_valid_resource_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=41).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// dstack's message for a name that fails [`is_valid_resource_name`].
pub const RESOURCE_NAME_ERROR: &str = "Resource name should match regex '^[a-z][a-z0-9-]{1,40}$'";

/// `^[a-z0-9][a-z0-9-]{0,39}$`: replica group and node group names.
pub fn is_valid_group_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=40).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Reads the `type` key of a configuration read directly (wire JSON): absent is fine, any
/// value other than `expected` is an error.
pub fn check_type_tag(obj: &mut Object<'_>, cx: &mut Cx, expected: &str) {
    if let Some(node) = obj.raw("type")
        && node.as_str() != Some(expected)
    {
        cx.at_field("type", |cx| cx.expected(node, &format!("`{expected}`")));
    }
}

/// Reads the `type` discriminator of a tagged mapping; `None` after an error.
pub fn read_tag<'c>(node: &Node, cx: &mut Cx, tags: &[&'c str]) -> Option<&'c str> {
    if !matches!(node.value, Value::Map(_)) {
        cx.expected(node, "a mapping with a `type` field");
        return None;
    }
    let Some(tag) = node.get("type") else {
        let list: Vec<String> = tags.iter().map(|t| format!("`{t}`")).collect();
        cx.error_help(
            node,
            "missing required field `type`",
            format!("set `type` to one of {}", list.join(", ")),
        );
        return None;
    };
    cx.at_field("type", |cx| crate::de::choice(tag, cx, tags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::load;

    fn parse<T: FromNode>(text: &str) -> Result<T, String> {
        let node = load(text).unwrap();
        let mut cx = Cx::new();
        T::from_node(&node, &mut cx).ok_or_else(|| {
            cx.into_diagnostics().iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; ")
        })
    }

    #[test]
    fn durations() {
        assert_eq!(parse::<Duration>("90"), Ok(Duration(90)));
        assert_eq!(parse::<Duration>("30m"), Ok(Duration(1800)));
        assert_eq!(parse::<Duration>("1 w"), Ok(Duration(604_800)));
        assert_eq!(parse::<Duration>("'15'"), Ok(Duration(15)));
        assert!(parse::<Duration>("1h30m").unwrap_err().contains("cannot parse the duration"));
        assert!(parse::<Duration>("10 min").is_err());
        assert_eq!(parse::<Option<OffDuration>>("off"), Ok(Some(OffDuration::Off)));
        assert_eq!(parse::<Option<OffDuration>>("true"), Ok(None));
        assert_eq!(parse::<Option<OffDuration>>("-5"), Err("Duration cannot be negative".into()));
    }

    #[test]
    fn ranges_and_memory() {
        assert_eq!(parse::<Range<i64>>("2..8"), Ok(Range { min: Some(2), max: Some(8) }));
        assert_eq!(parse::<Range<i64>>("'..8'"), Ok(Range { min: None, max: Some(8) }));
        assert_eq!(parse::<Range<Memory>>("1.5TB"), Ok(Range::exact(Memory(1536.0))));
        assert_eq!(parse::<Range<Memory>>("24GB.."), Ok(Range::at_least(Memory(24.0))));
        assert_eq!(parse::<Range<Memory>>("512MB"), Ok(Range::exact(Memory(0.5))));
        assert_eq!(parse::<Range<i64>>("'..'"), Err("Invalid empty range: ..".into()));
        assert_eq!(parse::<Range<Memory>>("64GB..16GB"), Err("Invalid range order: 64GB..16GB".into()));
        assert!(parse::<Range<Memory>>("16GiB").unwrap_err().contains("memory size"));
        assert!(parse::<Range<i64>>("2..4..8").unwrap_err().contains("invalid range"));
        assert_eq!(Range::<Memory>::at_least(Memory(24.0)).display(), "24GB..");
    }

    #[test]
    fn ports_and_references() {
        assert_eq!(
            parse::<PortMapping>("8080"),
            Ok(PortMapping { local_port: Some(8080), container_port: 8080 })
        );
        assert_eq!(parse::<PortMapping>("'*:90'"), Ok(PortMapping { local_port: None, container_port: 90 }));
        assert!(parse::<PortMapping>("'8080:'").unwrap_err().contains("invalid port mapping"));
        assert!(parse::<PortMapping>("3000:30").unwrap_err().contains("less than or equal to 65535"));
        assert_eq!(
            parse::<EntityReference>("p/b"),
            Ok(EntityReference { project: Some("p".into()), name: "b".into() })
        );
        assert_eq!(parse::<EntityReference>("a/b/c"), Err(INVALID_REF.into()));
    }

    #[test]
    fn format_g_matches_python() {
        assert_eq!(format_g(64.0), "64");
        assert_eq!(format_g(0.5), "0.5");
        assert_eq!(format_g(1536.0), "1536");
        assert_eq!(format_g(1234567.0), "1.23457e+06");
    }
}
