//! The `resources` mini-language: CPU, memory, shared memory, GPU and disk requirements.
//!
//! Each spec accepts dstack 0.22.5's forms: a count (`gpu: 2`), a `:`-separated shorthand
//! (`cpu: x86:8..`, `gpu: A100:80GB:2`) or a mapping (`gpu: {name: [A100], count: 2}`). The
//! shorthand tokens are classified in dstack's order (GPU: vendor, then names, then memory,
//! then count), and the `*_shorthand` functions print a normalized spec back in that form so
//! that parsing the text gives the same spec again.
//!
//! Deliberate differences from dstack:
//! - `gpu: true`/`gpu: false` are refused; dstack reads them as a GPU named `True`/`False`.
//! - `cpu: true` is refused with "expected a CPU spec"; dstack says "Invalid CPU architecture:
//!   True".
//! - A range with more than one `..` (`gpu: 2..4..8`) gets a clean "invalid range" message
//!   instead of Python's "too many values to unpack".
//! - Memory sizes that are not finite (`inf`, `nan`, `1e400`) are refused; dstack keeps them
//!   and serializes them as `null`, which turns `memory: inf` into an empty range.
//! - Empty GPU names (`name: ""`, or `tpu-` with the prefix stripped) are refused; dstack keeps
//!   a name that matches no GPU.
//! - A fractional number inside a `compute_capability` list (`[8.5, 0]`) is refused; dstack
//!   truncates it to `8`.
//! - Counts beyond the 64-bit range are refused; dstack keeps Python's big integers.
//! - A bad memory size inside a range is reported once, not once for `min` and once for `max`.

use std::fmt;

use serde::Serialize;

use crate::common::{Memory, Range};
use crate::de::{Cx, FromNode, Object, lax_int, suggest};
use crate::deserialize_via_node;
use crate::yaml::{Node, Value, python_float_repr};

/// The requirements a run (or fleet) puts on an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourcesSpec {
    pub cpu: CpuSpec,
    /// RAM in GB.
    pub memory: Range<Memory>,
    /// The size of `/dev/shm`; `None` keeps Docker's default.
    pub shm_size: Option<Memory>,
    /// `None` when the configuration says `gpu: null` (the server then reads it as `0..`).
    pub gpu: Option<GpuSpec>,
    /// `None` when the configuration says `disk: null` (no disk requirement).
    pub disk: Option<DiskSpec>,
}

/// dstack's defaults: cpu `2..`, memory `8GB..`, gpu `0..`, disk `100GB..`.
impl Default for ResourcesSpec {
    fn default() -> ResourcesSpec {
        ResourcesSpec {
            cpu: CpuSpec::default(),
            memory: Range::at_least(Memory(8.0)),
            shm_size: None,
            gpu: Some(GpuSpec::zero_or_more()),
            disk: Some(DiskSpec::default()),
        }
    }
}

impl ResourcesSpec {
    /// The spec of a fleet that sets no `resources`: cpu `1..`, memory `0GB..`, gpu `0..`,
    /// no disk requirement.
    pub fn unconstrained() -> ResourcesSpec {
        ResourcesSpec {
            cpu: CpuSpec { arch: None, count: Range::at_least(1) },
            memory: Range::at_least(Memory(0.0)),
            shm_size: None,
            gpu: Some(GpuSpec::zero_or_more()),
            disk: None,
        }
    }
}

impl FromNode for ResourcesSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut obj = Object::new(node, cx)?;
        let mark = cx.mark();
        let defaults = ResourcesSpec::default();
        let spec = ResourcesSpec {
            cpu: obj.field(cx, "cpu", || defaults.cpu.clone()),
            memory: obj.field_with(cx, "memory", || defaults.memory, memory_range),
            shm_size: obj.opt_with(cx, "shm_size", memory_size),
            gpu: obj.field(cx, "gpu", || defaults.gpu.clone()),
            disk: obj.field(cx, "disk", || defaults.disk.clone()),
        };
        obj.finish(cx);
        cx.ok_since(mark)?;
        Some(spec)
    }
}

/// A CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuArch {
    X86,
    Arm,
}

impl CpuArch {
    pub fn as_str(self) -> &'static str {
        match self {
            CpuArch::X86 => "x86",
            CpuArch::Arm => "arm",
        }
    }

    /// Case-insensitive, as dstack's `CPUArchitecture.cast`.
    pub fn parse(s: &str) -> Option<CpuArch> {
        match s.to_lowercase().as_str() {
            "x86" => Some(CpuArch::X86),
            "arm" => Some(CpuArch::Arm),
            _ => None,
        }
    }
}

impl Serialize for CpuArch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromNode for CpuArch {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let arch = node.as_str().and_then(CpuArch::parse);
        if arch.is_none() {
            cx.expected(node, "a CPU architecture (`x86` or `arm`)");
        }
        arch
    }
}

/// A GPU or accelerator vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Google,
    Intel,
    Tenstorrent,
}

const VENDOR_HELP: &str = "use one of `nvidia`, `amd`, `google` (or `tpu`), `intel`, `tenstorrent` (or `tt`)";

impl GpuVendor {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Google => "google",
            GpuVendor::Intel => "intel",
            GpuVendor::Tenstorrent => "tenstorrent",
        }
    }

    /// Case-insensitive, with dstack's aliases `tpu` (google) and `tt` (tenstorrent).
    pub fn parse(s: &str) -> Option<GpuVendor> {
        match s.to_lowercase().as_str() {
            "nvidia" => Some(GpuVendor::Nvidia),
            "amd" => Some(GpuVendor::Amd),
            "google" | "tpu" => Some(GpuVendor::Google),
            "intel" => Some(GpuVendor::Intel),
            "tenstorrent" | "tt" => Some(GpuVendor::Tenstorrent),
            _ => None,
        }
    }
}

impl Serialize for GpuVendor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl FromNode for GpuVendor {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let Some(s) = node.as_str() else {
            cx.error_help(node, format!("expected a GPU vendor, found {}", node.describe()), VENDOR_HELP);
            return None;
        };
        let vendor = GpuVendor::parse(s);
        if vendor.is_none() {
            const KNOWN: &[&str] = &["nvidia", "amd", "google", "intel", "tenstorrent"];
            let help = match suggest(s, KNOWN) {
                Some(near) => format!("did you mean `{near}`? {VENDOR_HELP}"),
                None => VENDOR_HELP.to_owned(),
            };
            cx.error_help(node, format!("unknown GPU vendor {s:?}"), help);
        }
        vendor
    }
}

/// CPU requirements: an architecture and a core count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuSpec {
    pub arch: Option<CpuArch>,
    pub count: Range<i64>,
}

/// Any architecture, at least 2 cores.
impl Default for CpuSpec {
    fn default() -> CpuSpec {
        CpuSpec { arch: None, count: Range::at_least(2) }
    }
}

const CPU_FORMS: &str =
    "a CPU spec: a count (`8`), a shorthand (`x86:8..`, `arm:4`) or a mapping (`{arch: arm, count: 4..}`)";

impl CpuSpec {
    /// Parses the shorthand text form (`8`, `x86:8..`, `16..:arm`).
    pub fn from_shorthand(s: &str) -> Result<CpuSpec, String> {
        parse_text(s)
    }

    /// The shorthand form; [`CpuSpec::from_shorthand`] reads it back as the same spec.
    pub fn shorthand(&self) -> String {
        // A count token must contain `..` or be all digits, so a single negative count is
        // written as a range.
        let count = match (self.count.min, self.count.max) {
            (Some(min), Some(max)) if min == max && min >= 0 => min.to_string(),
            (Some(min), Some(max)) if min == max => format!("{min}..{max}"),
            _ => count_shorthand(&self.count),
        };
        match self.arch {
            None => count,
            Some(arch) if self.count == CpuSpec::default().count => arch.as_str().to_owned(),
            Some(arch) => format!("{}:{count}", arch.as_str()),
        }
    }

    fn parse_tokens(node: &Node, text: &str, cx: &mut Cx) -> Option<CpuSpec> {
        let mut arch = None;
        let mut count: Option<String> = None;
        for token in text.split(' ').collect::<String>().split(':') {
            if token.is_empty() {
                cx.error(node, format!("CPU spec contains empty token: {text}"));
                return None;
            }
            if token.contains("..") || token.bytes().all(|b| b.is_ascii_digit()) {
                if count.is_some() {
                    cx.error(node, format!("CPU spec count conflict: {text}"));
                    return None;
                }
                count = Some(token.to_owned());
            } else {
                let Some(a) = CpuArch::parse(token) else {
                    cx.error_help(
                        node,
                        format!("Invalid CPU architecture: {text}"),
                        "the architecture is `x86` or `arm`; the count is a number or a range (`8`, `4..16`)",
                    );
                    return None;
                };
                if arch.is_some() {
                    cx.error(node, format!("CPU spec arch conflict: {text}"));
                    return None;
                }
                arch = Some(a);
            }
        }
        let count = match count {
            Some(token) => {
                let token_node = Node::new(Value::Str(token), node.pos);
                cx.at_field("count", |cx| Range::from_node(&token_node, cx))?
            }
            None => CpuSpec::default().count,
        };
        Some(CpuSpec { arch, count })
    }
}

impl fmt::Display for CpuSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shorthand())
    }
}

impl FromNode for CpuSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Int(i) => CpuSpec::parse_tokens(node, &i.to_string(), cx),
            Value::Str(s) => CpuSpec::parse_tokens(node, s, cx),
            // The legacy form: a mapping of only `min`/`max` is the count range.
            Value::Map(entries)
                if !entries.is_empty()
                    && entries.iter().all(|(k, _)| matches!(k.as_str(), Some("min" | "max"))) =>
            {
                let count = cx.at_field("count", |cx| Range::from_node(node, cx))?;
                Some(CpuSpec { arch: None, count })
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let spec = CpuSpec {
                    arch: obj.opt(cx, "arch"),
                    count: obj.field(cx, "count", || CpuSpec::default().count),
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(spec)
            }
            _ => {
                cx.expected(node, CPU_FORMS);
                None
            }
        }
    }
}

/// A minimum CUDA compute capability, `major.minor`; serialized as `[major, minor]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ComputeCapability(pub i64, pub i64);

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl FromNode for ComputeCapability {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        let invalid = |cx: &mut Cx| {
            cx.error_help(
                node,
                format!("Invalid compute capability: {}", python_repr(node)),
                "write `major.minor`, such as `7.5` or `[7, 5]`",
            );
        };
        // A float is read through its Python text (`7.5` -> "7.5"), as dstack does.
        let text = match &node.value {
            Value::Float(f) => Some(python_float_repr(*f)),
            Value::Str(s) => Some(s.trim().to_owned()),
            _ => None,
        };
        if let Some(text) = text {
            let parts: Vec<&str> = text.split('.').collect();
            let [major, minor] = parts.as_slice() else {
                invalid(cx);
                return None;
            };
            let part = |p: &str| {
                let part_node = Node::new(Value::Str(p.to_owned()), node.pos);
                let mut scratch = Cx::new();
                lax_int(&part_node, &mut scratch)
            };
            return match (part(major), part(minor)) {
                (Some(major), Some(minor)) => Some(ComputeCapability(major, minor)),
                _ => {
                    invalid(cx);
                    None
                }
            };
        }
        match &node.value {
            Value::Seq(items) if items.len() == 2 => {
                let mark = cx.mark();
                let major = cx.at_index(0, |cx| lax_int(&items[0], cx));
                let minor = cx.at_index(1, |cx| lax_int(&items[1], cx));
                cx.ok_since(mark)?;
                Some(ComputeCapability(major?, minor?))
            }
            _ => {
                invalid(cx);
                None
            }
        }
    }
}

/// GPU (or accelerator) requirements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSpec {
    pub vendor: Option<GpuVendor>,
    /// Any of these names (matched case-insensitively).
    pub name: Option<Vec<String>>,
    pub count: Range<i64>,
    /// Memory per GPU, GB.
    pub memory: Option<Range<Memory>>,
    /// Memory of all GPUs together, GB.
    pub total_memory: Option<Range<Memory>>,
    pub compute_capability: Option<ComputeCapability>,
}

/// A spec that sets only what it names: at least one GPU of any kind.
impl Default for GpuSpec {
    fn default() -> GpuSpec {
        GpuSpec {
            vendor: None,
            name: None,
            count: Range::at_least(1),
            memory: None,
            total_memory: None,
            compute_capability: None,
        }
    }
}

const GPU_FORMS: &str = "a GPU spec: a count (`2`), a shorthand (`A100:80GB:2`, `nvidia:24GB..`) or a mapping (`{name: [A100, H100], count: 2}`)";

const TPU_PREFIX_WARNING: &str = "`tpu-` prefix is deprecated, specify gpu_vendor instead";

impl GpuSpec {
    /// The default of `resources.gpu`: any number of GPUs, including none.
    pub fn zero_or_more() -> GpuSpec {
        GpuSpec { count: Range::at_least(0), ..GpuSpec::default() }
    }

    /// Parses the shorthand text form (`A100:80GB:2`, `nvidia:2`, `24GB..`).
    pub fn from_shorthand(s: &str) -> Result<GpuSpec, String> {
        parse_text(s)
    }

    /// The shorthand form (`vendor:names:memory:count`), or `None` when the spec cannot be
    /// written that way: it sets `total_memory` or `compute_capability`, or has a name that
    /// the shorthand would read differently (empty, not starting with a letter, holding `:`,
    /// `,` or a space, starting with `tpu-`, or a lone name that is a vendor).
    pub fn shorthand(&self) -> Option<String> {
        if self.total_memory.is_some() || self.compute_capability.is_some() {
            return None;
        }
        let mut tokens = Vec::new();
        if let Some(vendor) = self.vendor {
            tokens.push(vendor.as_str().to_owned());
        }
        if let Some(names) = &self.name {
            let name_ok = |n: &String| {
                n.chars().next().is_some_and(char::is_alphabetic)
                    && !n.contains([':', ',', ' '])
                    && !n.starts_with("tpu-")
            };
            let lone_vendor = matches!(names.as_slice(), [n] if GpuVendor::parse(n).is_some());
            if names.is_empty() || lone_vendor || !names.iter().all(name_ok) {
                return None;
            }
            tokens.push(names.join(","));
        }
        if let Some(memory) = &self.memory {
            tokens.push(memory_range_shorthand(memory)?);
        }
        if tokens.is_empty() || self.count != GpuSpec::default().count {
            tokens.push(count_shorthand(&self.count));
        }
        Some(tokens.join(":"))
    }

    fn parse_tokens(node: &Node, text: &str, cx: &mut Cx) -> Option<GpuSpec> {
        let mut vendor = None;
        let mut names: Option<Vec<String>> = None;
        let mut memory: Option<String> = None;
        let mut count: Option<String> = None;
        let conflict = |cx: &mut Cx, what: &str| {
            cx.error_help(
                node,
                format!("GPU spec {what} conflict: {text}"),
                "write each of vendor, names, memory and count at most once; list several names with commas (`A100,H100:80GB:2`)",
            );
        };
        for token in text.split(' ').collect::<String>().split(':') {
            if token.is_empty() {
                cx.error(node, format!("GPU spec contains empty token: {text}"));
                return None;
            }
            if let Some(v) = GpuVendor::parse(token) {
                if vendor.is_some() {
                    conflict(cx, "vendor");
                    return None;
                }
                vendor = Some(v);
            } else if token.chars().next().is_some_and(char::is_alphabetic) {
                if names.is_some() {
                    conflict(cx, "name");
                    return None;
                }
                let list: Vec<String> = token.split(',').map(str::to_owned).collect();
                if list.iter().any(String::is_empty) {
                    cx.error(node, format!("GPU name can not be empty: {text}"));
                    return None;
                }
                names = Some(list);
            } else if token.chars().any(char::is_alphabetic) {
                // Memory needs a unit, so a token with a letter that is not a name is memory.
                if memory.is_some() {
                    conflict(cx, "memory");
                    return None;
                }
                memory = Some(token.to_owned());
            } else {
                if count.is_some() {
                    conflict(cx, "count");
                    return None;
                }
                count = Some(token.to_owned());
            }
        }
        let mark = cx.mark();
        let token_node = |t: String| Node::new(Value::Str(t), node.pos);
        let name = match names {
            Some(list) => Some(strip_tpu_prefixes(node, list, cx)?),
            None => None,
        };
        let memory = match memory {
            Some(t) => cx.at_field("memory", |cx| memory_range(&token_node(t), cx)),
            None => None,
        };
        let count = match count {
            Some(t) => cx.at_field("count", |cx| Range::from_node(&token_node(t), cx)).unwrap_or_default(),
            None => GpuSpec::default().count,
        };
        cx.ok_since(mark)?;
        Some(GpuSpec { vendor, name, count, memory, ..GpuSpec::default() })
    }
}

/// Strips the deprecated `tpu-` prefix from names, warning once; an empty result is refused.
fn strip_tpu_prefixes(node: &Node, names: Vec<String>, cx: &mut Cx) -> Option<Vec<String>> {
    let mut stripped = false;
    let names: Vec<String> = names
        .into_iter()
        .map(|n| match n.strip_prefix("tpu-") {
            Some(rest) => {
                stripped = true;
                rest.to_owned()
            }
            None => n,
        })
        .collect();
    if stripped {
        cx.warn(node, TPU_PREFIX_WARNING);
    }
    if names.iter().any(String::is_empty) {
        cx.error_help(
            node,
            "GPU name can not be empty",
            "write a GPU name such as `A100`, or leave `name` out to accept any GPU",
        );
        return None;
    }
    Some(names)
}

/// `name`: a string or a list of strings.
fn gpu_names(node: &Node, cx: &mut Cx) -> Option<Vec<String>> {
    let names = match &node.value {
        Value::Seq(_) => Vec::<String>::from_node(node, cx)?,
        Value::Str(_) | Value::Int(_) | Value::Float(_) => vec![String::from_node(node, cx)?],
        _ => {
            cx.expected(node, "a GPU name or a list of names");
            return None;
        }
    };
    strip_tpu_prefixes(node, names, cx)
}

impl FromNode for GpuSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Int(i) => GpuSpec::parse_tokens(node, &i.to_string(), cx),
            Value::Str(s) => GpuSpec::parse_tokens(node, s, cx),
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let spec = GpuSpec {
                    vendor: obj.opt(cx, "vendor"),
                    name: obj.opt_with(cx, "name", gpu_names),
                    count: obj.field(cx, "count", || GpuSpec::default().count),
                    memory: obj.opt_with(cx, "memory", memory_range),
                    total_memory: obj.opt_with(cx, "total_memory", memory_range),
                    compute_capability: obj.opt(cx, "compute_capability"),
                };
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(spec)
            }
            _ => {
                cx.expected(node, GPU_FORMS);
                None
            }
        }
    }
}

impl fmt::Display for GpuSpec {
    /// The shorthand where there is one, otherwise `key=value` pairs for what is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(s) = self.shorthand() {
            return f.write_str(&s);
        }
        let mut parts = Vec::new();
        if let Some(v) = self.vendor {
            parts.push(format!("vendor={}", v.as_str()));
        }
        if let Some(names) = &self.name {
            parts.push(format!("name={names:?}"));
        }
        parts.push(format!("count={}", count_shorthand(&self.count)));
        for (key, range) in [("memory", &self.memory), ("total_memory", &self.total_memory)] {
            if let Some(r) = range {
                parts.push(format!("{key}={}", range_text(r, memory_text)));
            }
        }
        if let Some(cc) = self.compute_capability {
            parts.push(format!("compute_capability={cc}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// Disk requirements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskSpec {
    /// GB.
    pub size: Range<Memory>,
}

/// At least 100GB.
impl Default for DiskSpec {
    fn default() -> DiskSpec {
        DiskSpec { size: Range::at_least(Memory(100.0)) }
    }
}

impl DiskSpec {
    /// The shorthand form (`100GB..`), or `None` for a size that is not finite.
    pub fn shorthand(&self) -> Option<String> {
        memory_range_shorthand(&self.size)
    }
}

impl FromNode for DiskSpec {
    fn from_node(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
                cx.at_field("size", |cx| memory_range(node, cx)).map(|size| DiskSpec { size })
            }
            Value::Map(_) => {
                let mut obj = Object::new(node, cx)?;
                let mark = cx.mark();
                let size = obj.required_with(cx, "size", |n, cx| memory_range(n, cx).map(Some));
                obj.finish(cx);
                cx.ok_since(mark)?;
                Some(DiskSpec { size: size? })
            }
            _ => {
                cx.expected(
                    node,
                    "a disk size (`100GB`), a range (`100GB..`) or a mapping (`{size: 100GB..}`)",
                );
                None
            }
        }
    }
}

deserialize_via_node!(ResourcesSpec, CpuSpec, GpuSpec, DiskSpec, CpuArch, GpuVendor);

/// The shorthand of a count range: `8`, `2..8`, `2..`, `..8`.
pub fn count_shorthand(range: &Range<i64>) -> String {
    range_text(range, |i: i64| i.to_string())
}

/// The shorthand of a memory size that reads back exactly: `80GB`, `0.5GB`; `None` when the
/// size is not finite.
pub fn memory_shorthand(memory: Memory) -> Option<String> {
    memory.0.is_finite().then(|| memory_text(memory))
}

/// The shorthand of a memory range: `80GB`, `24GB..`, `40GB..80GB`; `None` when an end is
/// not finite.
pub fn memory_range_shorthand(range: &Range<Memory>) -> Option<String> {
    let finite = [range.min, range.max].iter().flatten().all(|m| m.0.is_finite());
    finite.then(|| range_text(range, memory_text))
}

/// Rust's shortest round-trip decimal form (never an exponent), then `GB`.
fn memory_text(memory: Memory) -> String {
    format!("{}GB", memory.0)
}

fn range_text<T: Copy + PartialEq>(range: &Range<T>, text: impl Fn(T) -> String) -> String {
    match (range.min, range.max) {
        (Some(min), Some(max)) if min == max => text(min),
        (min, max) => {
            format!("{}..{}", min.map(&text).unwrap_or_default(), max.map(&text).unwrap_or_default())
        }
    }
}

/// A memory range whose ends are finite numbers.
fn memory_range(node: &Node, cx: &mut Cx) -> Option<Range<Memory>> {
    let range = Range::<Memory>::from_node(node, cx)?;
    if [range.min, range.max].iter().flatten().any(|m| !m.0.is_finite()) {
        not_finite(node, cx);
        return None;
    }
    Some(range)
}

/// A single finite memory size (`shm_size`).
fn memory_size(node: &Node, cx: &mut Cx) -> Option<Memory> {
    let memory = Memory::from_node(node, cx)?;
    if !memory.0.is_finite() {
        not_finite(node, cx);
        return None;
    }
    Some(memory)
}

fn not_finite(node: &Node, cx: &mut Cx) {
    cx.error_help(
        node,
        format!("expected a finite memory size, found {}", node.describe()),
        "write a number of GB or use an `MB`, `GB` or `TB` suffix (`512MB`, `16GB`, `1TB`)",
    );
}

/// Parses a shorthand string through the same code as YAML input; errors joined by `; `.
fn parse_text<T: FromNode>(s: &str) -> Result<T, String> {
    crate::de::validate(&Node::new(Value::Str(s.to_owned()), None))
        .map_err(|errors| errors.iter().map(|d| d.message.clone()).collect::<Vec<_>>().join("; "))
}

/// A value as Python's `repr` shows it, for messages that quote dstack's wording.
fn python_repr(node: &Node) -> String {
    match &node.value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float_repr(*f),
        Value::Str(s) | Value::Timestamp(s) => format!("'{s}'"),
        Value::Seq(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        Value::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr(k), python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as J, json};

    use super::*;
    use crate::de::Diagnostic;
    use crate::yaml::load;

    fn parse(text: &str) -> (Option<ResourcesSpec>, Vec<Diagnostic>) {
        let node = load(text).unwrap();
        let mut cx = Cx::new();
        let spec = ResourcesSpec::from_node(&node, &mut cx);
        let spec = spec.filter(|_| !cx.has_errors());
        (spec, cx.into_diagnostics())
    }

    /// dstack's `ResourcesSpec().model_dump_json()`.
    fn default_json() -> J {
        json!({"cpu":{"arch":null,"count":{"min":2,"max":null}},"memory":{"min":8.0,"max":null},
            "shm_size":null,"gpu":{"vendor":null,"name":null,"count":{"min":0,"max":null},"memory":null,
            "total_memory":null,"compute_capability":null},"disk":{"size":{"min":100.0,"max":null}}})
    }

    /// `resources` value -> the keys whose JSON differs from dstack's defaults, from
    /// dstack 0.22.5 (`type: task`, `commands: [x]`, `resources: ...`, `model_dump_json()`).
    const OK: &[(&str, &str)] = &[
        (r#"{}"#, r#"{}"#),
        (
            r#"{gpu: A100}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:80GB:2"}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":2,"max":2},"memory":{"min":80.0,"max":80.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "H100,H200:8"}"#,
            r#"{"gpu":{"vendor":null,"name":["H100","H200"],"count":{"min":8,"max":8},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "nvidia:2"}"#,
            r#"{"gpu":{"vendor":"nvidia","name":null,"count":{"min":2,"max":2},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: nvidia}"#,
            r#"{"gpu":{"vendor":"nvidia","name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "amd:MI300X"}"#,
            r#"{"gpu":{"vendor":"amd","name":["MI300X"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "MI300X:192GB:8"}"#,
            r#"{"gpu":{"vendor":null,"name":["MI300X"],"count":{"min":8,"max":8},"memory":{"min":192.0,"max":192.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "24GB.."}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":{"min":24.0,"max":null},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "24GB..:2"}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":2,"max":2},"memory":{"min":24.0,"max":null},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "40GB..80GB:4"}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":4,"max":4},"memory":{"min":40.0,"max":80.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "H100:80GB:1..2"}"#,
            r#"{"gpu":{"vendor":null,"name":["H100"],"count":{"min":1,"max":2},"memory":{"min":80.0,"max":80.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:80GB:2:nvidia"}"#,
            r#"{"gpu":{"vendor":"nvidia","name":["A100"],"count":{"min":2,"max":2},"memory":{"min":80.0,"max":80.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "tpu:v5litepod-8"}"#,
            r#"{"gpu":{"vendor":"google","name":["v5litepod-8"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: tpu-v5e-8}"#,
            r#"{"gpu":{"vendor":null,"name":["v5e-8"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: v5litepod-8}"#,
            r#"{"gpu":{"vendor":null,"name":["v5litepod-8"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: 2}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":2,"max":2},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: 0}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":0,"max":0},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: 1:2}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":62,"max":62},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (r#"{gpu: null}"#, r#"{"gpu":null}"#),
        (
            r#"{gpu: "TT:n150"}"#,
            r#"{"gpu":{"vendor":"tenstorrent","name":["n150"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: Nvidia}"#,
            r#"{"gpu":{"vendor":"nvidia","name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "a100 : 80 GB : 2"}"#,
            r#"{"gpu":{"vendor":null,"name":["a100"],"count":{"min":2,"max":2},"memory":{"min":80.0,"max":80.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:24"}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":24,"max":24},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:1e3"}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":1,"max":null},"memory":{"min":1000.0,"max":1000.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:24MB"}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":1,"max":null},"memory":{"min":0.0234375,"max":0.0234375},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "A100:..1TB"}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":1,"max":null},"memory":{"min":null,"max":1024.0},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "nvidia:A100:80GB..:2..8"}"#,
            r#"{"gpu":{"vendor":"nvidia","name":["A100"],"count":{"min":2,"max":8},"memory":{"min":80.0,"max":null},"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "-1"}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":-1,"max":-1},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: "..2"}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":null,"max":2},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {name: A100}}"#,
            r#"{"gpu":{"vendor":null,"name":["A100"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {name: [A100, H100], count: 2..}}"#,
            r#"{"gpu":{"vendor":null,"name":["A100","H100"],"count":{"min":2,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {name: "A100,H100"}}"#,
            r#"{"gpu":{"vendor":null,"name":["A100,H100"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {name: [tpu-v5e-8]}}"#,
            r#"{"gpu":{"vendor":null,"name":["v5e-8"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {name: [1, 2.5]}}"#,
            r#"{"gpu":{"vendor":null,"name":["1","2.5"],"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {vendor: TPU}}"#,
            r#"{"gpu":{"vendor":"google","name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {count: {min: 1}}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {memory: 24GB.., total_memory: 80GB}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":{"min":24.0,"max":null},"total_memory":{"min":80.0,"max":80.0},"compute_capability":null}}"#,
        ),
        (
            r#"{gpu: {compute_capability: 7.5}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":[7,5]}}"#,
        ),
        (
            r#"{gpu: {compute_capability: "7.5"}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":[7,5]}}"#,
        ),
        (
            r#"{gpu: {compute_capability: [7, 5]}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":[7,5]}}"#,
        ),
        (
            r#"{gpu: {compute_capability: " 8.0 "}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":[8,0]}}"#,
        ),
        (
            r#"{gpu: {compute_capability: ["8", "0"]}}"#,
            r#"{"gpu":{"vendor":null,"name":null,"count":{"min":1,"max":null},"memory":null,"total_memory":null,"compute_capability":[8,0]}}"#,
        ),
        (r#"{cpu: 8}"#, r#"{"cpu":{"arch":null,"count":{"min":8,"max":8}}}"#),
        (r#"{cpu: "8"}"#, r#"{"cpu":{"arch":null,"count":{"min":8,"max":8}}}"#),
        (r#"{cpu: x86}"#, r#"{"cpu":{"arch":"x86","count":{"min":2,"max":null}}}"#),
        (r#"{cpu: "x86:8.."}"#, r#"{"cpu":{"arch":"x86","count":{"min":8,"max":null}}}"#),
        (r#"{cpu: "arm:4"}"#, r#"{"cpu":{"arch":"arm","count":{"min":4,"max":4}}}"#),
        (r#"{cpu: "16..:x86"}"#, r#"{"cpu":{"arch":"x86","count":{"min":16,"max":null}}}"#),
        (r#"{cpu: "ARM:4"}"#, r#"{"cpu":{"arch":"arm","count":{"min":4,"max":4}}}"#),
        (r#"{cpu: "..8"}"#, r#"{"cpu":{"arch":null,"count":{"min":null,"max":8}}}"#),
        (r#"{cpu: " 2 .. 8 "}"#, r#"{"cpu":{"arch":null,"count":{"min":2,"max":8}}}"#),
        (r#"{cpu: 2:30}"#, r#"{"cpu":{"arch":null,"count":{"min":150,"max":150}}}"#),
        (r#"{cpu: {arch: arm, count: 4}}"#, r#"{"cpu":{"arch":"arm","count":{"min":4,"max":4}}}"#),
        (r#"{cpu: {arch: ARM}}"#, r#"{"cpu":{"arch":"arm","count":{"min":2,"max":null}}}"#),
        (r#"{cpu: {min: 4}}"#, r#"{"cpu":{"arch":null,"count":{"min":4,"max":null}}}"#),
        (r#"{cpu: {max: 8}}"#, r#"{"cpu":{"arch":null,"count":{"min":null,"max":8}}}"#),
        (r#"{cpu: {min: 4, max: 8}}"#, r#"{"cpu":{"arch":null,"count":{"min":4,"max":8}}}"#),
        (r#"{cpu: {count: {min: 2, max: 4}}}"#, r#"{"cpu":{"arch":null,"count":{"min":2,"max":4}}}"#),
        (r#"{cpu: {}}"#, r#"{}"#),
        (r#"{cpu: {arch: null}}"#, r#"{}"#),
        (r#"{cpu: "x86:-1..4"}"#, r#"{"cpu":{"arch":"x86","count":{"min":-1,"max":4}}}"#),
        (r#"{memory: 16GB}"#, r#"{"memory":{"min":16.0,"max":16.0}}"#),
        (r#"{memory: "16GB..64GB"}"#, r#"{"memory":{"min":16.0,"max":64.0}}"#),
        (r#"{memory: 1.5TB}"#, r#"{"memory":{"min":1536.0,"max":1536.0}}"#),
        (r#"{memory: 512MB..}"#, r#"{"memory":{"min":0.5,"max":null}}"#),
        (r#"{memory: {min: 8GB}}"#, r#"{}"#),
        (r#"{memory: 24}"#, r#"{"memory":{"min":24.0,"max":24.0}}"#),
        (r#"{memory: true}"#, r#"{"memory":{"min":1.0,"max":1.0}}"#),
        (r#"{shm_size: 8GB}"#, r#"{"shm_size":8.0}"#),
        (r#"{shm_size: 1.5}"#, r#"{"shm_size":1.5}"#),
        (r#"{shm_size: "512MB"}"#, r#"{"shm_size":0.5}"#),
        (r#"{shm_size: null}"#, r#"{}"#),
        (r#"{disk: null}"#, r#"{"disk":null}"#),
        (r#"{disk: 100}"#, r#"{"disk":{"size":{"min":100.0,"max":100.0}}}"#),
        (r#"{disk: 1.5}"#, r#"{"disk":{"size":{"min":1.5,"max":1.5}}}"#),
        (r#"{disk: 200GB}"#, r#"{"disk":{"size":{"min":200.0,"max":200.0}}}"#),
        (r#"{disk: {size: 200GB}}"#, r#"{"disk":{"size":{"min":200.0,"max":200.0}}}"#),
        (r#"{disk: 100GB..200GB}"#, r#"{"disk":{"size":{"min":100.0,"max":200.0}}}"#),
        (r#"{disk: "..200GB"}"#, r#"{"disk":{"size":{"min":null,"max":200.0}}}"#),
        (r#"{disk: {size: {min: 100}}}"#, r#"{}"#),
        (
            r#"{cpu: 4, memory: 16GB.., gpu: "A10G:1", disk: 50GB.., shm_size: 2GB}"#,
            r#"{"cpu":{"arch":null,"count":{"min":4,"max":4}},"memory":{"min":16.0,"max":null},"shm_size":2.0,"gpu":{"vendor":null,"name":["A10G"],"count":{"min":1,"max":1},"memory":null,"total_memory":null,"compute_capability":null},"disk":{"size":{"min":50.0,"max":null}}}"#,
        ),
    ];

    /// `resources` value -> (field path, message); dstack 0.22.5 refuses each too.
    const ERR: &[(&str, &str, &str)] = &[
        (r#"{gpu: "A100:40GB:H100"}"#, "gpu", "GPU spec name conflict: A100:40GB:H100"),
        (r#"{gpu: "1:2"}"#, "gpu", "GPU spec count conflict: 1:2"),
        (r#"{gpu: "A100:H100"}"#, "gpu", "GPU spec name conflict: A100:H100"),
        (r#"{gpu: "nvidia:amd"}"#, "gpu", "GPU spec vendor conflict: nvidia:amd"),
        (r#"{gpu: "24GB:80GB"}"#, "gpu", "GPU spec memory conflict: 24GB:80GB"),
        (r#"{gpu: "2:4"}"#, "gpu", "GPU spec count conflict: 2:4"),
        (r#"{gpu: "A100:"}"#, "gpu", "GPU spec contains empty token: A100:"),
        (r#"{gpu: "A100::2"}"#, "gpu", "GPU spec contains empty token: A100::2"),
        (r#"{gpu: ""}"#, "gpu", "GPU spec contains empty token: "),
        (r#"{gpu: "A100,,H100"}"#, "gpu", "GPU name can not be empty: A100,,H100"),
        (r#"{gpu: "A100:1.5"}"#, "gpu.count", "expected an integer, found a string \"1.5\""),
        (r#"{gpu: "2..4..8"}"#, "gpu.count", "invalid range \"2..4..8\""),
        (r#"{gpu: "A100:24GB..32GB..64GB"}"#, "gpu.memory", "invalid range \"24GB..32GB..64GB\""),
        (r#"{gpu: "A100:80GiB"}"#, "gpu.memory", "cannot read \"80GiB\" as a memory size"),
        (r#"{gpu: "4..2"}"#, "gpu.count", "Invalid range order: 4..2"),
        (r#"{gpu: "80GB..40GB"}"#, "gpu.memory", "Invalid range order: 80GB..40GB"),
        (r#"{gpu: ".."}"#, "gpu.count", "Invalid empty range: .."),
        (r#"{gpu: 1.5}"#, "gpu", "expected a GPU spec"),
        (r#"{gpu: [A100]}"#, "gpu", "expected a GPU spec"),
        (r#"{gpu: {vendor: foo}}"#, "gpu.vendor", "unknown GPU vendor \"foo\""),
        (r#"{gpu: {vendor: 1}}"#, "gpu.vendor", "expected a GPU vendor, found an integer `1`"),
        (r#"{gpu: {name: [true]}}"#, "gpu.name[0]", "expected a string, found a boolean `true`"),
        (
            r#"{gpu: {count: null}}"#,
            "gpu.count",
            "expected a number or a range (`2..8`, `2..`, `..8`), found null",
        ),
        (
            r#"{gpu: {compute_capability: [8, 0, 1]}}"#,
            "gpu.compute_capability",
            "Invalid compute capability: [8, 0, 1]",
        ),
        (r#"{gpu: {compute_capability: 8}}"#, "gpu.compute_capability", "Invalid compute capability: 8"),
        (
            r#"{gpu: {compute_capability: "7.x"}}"#,
            "gpu.compute_capability",
            "Invalid compute capability: '7.x'",
        ),
        (r#"{gpu: {nam: A100}}"#, "gpu.nam", "unknown field `nam`"),
        (r#"{cpu: null}"#, "cpu", "expected a CPU spec"),
        (r#"{cpu: "8:16"}"#, "cpu", "CPU spec count conflict: 8:16"),
        (r#"{cpu: "arm:x86"}"#, "cpu", "CPU spec arch conflict: arm:x86"),
        (r#"{cpu: "risc:4"}"#, "cpu", "Invalid CPU architecture: risc:4"),
        (r#"{cpu: "arm::4"}"#, "cpu", "CPU spec contains empty token: arm::4"),
        (r#"{cpu: ""}"#, "cpu", "CPU spec contains empty token: "),
        (r#"{cpu: 4.0}"#, "cpu", "expected a CPU spec"),
        (r#"{cpu: "arm64"}"#, "cpu", "Invalid CPU architecture: arm64"),
        (r#"{cpu: -1}"#, "cpu", "Invalid CPU architecture: -1"),
        (r#"{cpu: "4..2"}"#, "cpu.count", "Invalid range order: 4..2"),
        (r#"{cpu: "x86:2..4..8"}"#, "cpu.count", "invalid range \"2..4..8\""),
        (r#"{cpu: {min: 4, arch: arm}}"#, "cpu.min", "unknown field `min`"),
        (r#"{cpu: {min: null}}"#, "cpu.count", "Invalid empty range: .."),
        (
            r#"{cpu: {count: null}}"#,
            "cpu.count",
            "expected a number or a range (`2..8`, `2..`, `..8`), found null",
        ),
        (
            r#"{cpu: {arch: amd64}}"#,
            "cpu.arch",
            "expected a CPU architecture (`x86` or `arm`), found a string \"amd64\"",
        ),
        (r#"{cpu: [4]}"#, "cpu", "expected a CPU spec"),
        (r#"{memory: null}"#, "memory", "expected a number or a range (`2..8`, `2..`, `..8`), found null"),
        (r#"{memory: 16GiB}"#, "memory", "cannot read \"16GiB\" as a memory size"),
        (r#"{memory: "64GB..16GB"}"#, "memory", "Invalid range order: 64GB..16GB"),
        (r#"{shm_size: 8GB..}"#, "shm_size", "cannot read \"8GB..\" as a memory size"),
        (
            r#"{disk: {size: null}}"#,
            "disk.size",
            "expected a number or a range (`2..8`, `2..`, `..8`), found null",
        ),
        (r#"{disk: {}}"#, "disk.size", "missing required field `size`"),
        (r#"{disk: {size: 200GB, foo: 1}}"#, "disk.foo", "unknown field `foo`"),
        (r#"{disk: [1]}"#, "disk", "expected a disk size (`100GB`)"),
        (r#"{gpus: 1}"#, "gpus", "unknown field `gpus`"),
    ];

    #[test]
    fn accepted_inputs_match_dstack() {
        for (input, changed) in OK {
            let (spec, diags) = parse(input);
            let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
            let spec = spec.unwrap_or_else(|| panic!("{input}: {errors:?}"));
            let mut expected = default_json();
            let changed: J = serde_json::from_str(changed).unwrap();
            for (key, value) in changed.as_object().unwrap() {
                expected[key] = value.clone();
            }
            // Compare the text, so `8.0` and `8` are told apart as dstack's JSON does.
            assert_eq!(
                serde_json::to_string(&spec).unwrap(),
                serde_json::to_string(&expected).unwrap(),
                "{input}"
            );
        }
    }

    #[test]
    fn refused_inputs_name_the_field_and_problem() {
        for (input, path, message) in ERR {
            let (spec, diags) = parse(input);
            assert!(spec.is_none(), "{input} was accepted");
            let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
            assert_eq!(errors.len(), 1, "{input}: {errors:?}");
            assert_eq!(errors[0].path, *path, "{input}");
            assert!(
                errors[0].message.starts_with(message),
                "{input}: {:?} does not start with {message:?}",
                errors[0].message
            );
        }
    }

    /// Inputs dstack 0.22.5 accepts by mangling them; see the module docs.
    #[test]
    fn deliberate_differences_are_refused() {
        let cases: &[(&str, &str, &str)] = &[
            ("{gpu: true}", "gpu", "expected a GPU spec"),
            ("{gpu: false}", "gpu", "expected a GPU spec"),
            ("{gpu: tpu-}", "gpu", "GPU name can not be empty"),
            ("{gpu: {name: ''}}", "gpu.name", "GPU name can not be empty"),
            ("{gpu: {name: [A100, '']}}", "gpu.name", "GPU name can not be empty"),
            (
                "{gpu: {compute_capability: [8.5, 0]}}",
                "gpu.compute_capability[0]",
                "expected an integer, found a number with a fractional part `8.5`",
            ),
            ("{gpu: 99999999999999999999999}", "gpu.count", "integer is out of range"),
            ("{memory: inf}", "memory", "expected a finite memory size"),
            ("{memory: inf..}", "memory", "expected a finite memory size"),
            ("{memory: nan}", "memory", "expected a finite memory size"),
            ("{shm_size: '1e400'}", "shm_size", "expected a finite memory size"),
            ("{gpu: 'A100:1e400GB'}", "gpu.memory", "expected a finite memory size"),
            ("{disk: inf}", "disk.size", "expected a finite memory size"),
        ];
        for (input, path, message) in cases {
            let (spec, diags) = parse(input);
            assert!(spec.is_none(), "{input} was accepted");
            let error = diags.iter().find(|d| d.is_error()).unwrap();
            assert_eq!(error.path, *path, "{input}");
            assert!(error.message.starts_with(message), "{input}: {error:?}");
        }
    }

    #[test]
    fn tpu_prefix_is_stripped_with_a_warning() {
        for input in ["{gpu: tpu-v5e-8}", "{gpu: {name: [tpu-v5e-8, tpu-v4-8]}}"] {
            let (spec, diags) = parse(input);
            let gpu = spec.unwrap().gpu.unwrap();
            assert!(gpu.name.unwrap()[0] == "v5e-8");
            assert_eq!(gpu.vendor, None, "the prefix does not set the vendor");
            assert_eq!(diags.len(), 1, "{diags:?}");
            assert_eq!(diags[0].severity, crate::de::Severity::Warning);
            assert_eq!(diags[0].message, TPU_PREFIX_WARNING);
        }
        let (_, diags) = parse("{gpu: 'tpu:v5litepod-8'}");
        assert!(diags.is_empty(), "{diags:?}");
    }

    #[test]
    fn errors_carry_the_position_of_the_value() {
        let (_, diags) = parse("cpu: 4\ngpu: A100:40GB:H100   # meant A100,H100:40GB\n");
        assert_eq!(
            diags.iter().map(|d| d.render("f.yml")).collect::<Vec<_>>(),
            vec![
                "f.yml:2:6: error: `gpu`: GPU spec name conflict: A100:40GB:H100\n  help: write each of vendor, names, memory and count at most once; list several names with commas (`A100,H100:80GB:2`)"
            ]
        );
    }

    #[test]
    fn every_field_error_is_reported() {
        let (spec, diags) = parse("{cpu: 'arm:x86', memory: 16GiB, gpu: '2:4', disk: {}, foo: 1}");
        assert!(spec.is_none());
        let paths: Vec<_> = diags.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["cpu", "memory", "gpu", "disk.size", "foo"]);
    }

    #[test]
    fn defaults_and_unconstrained_match_dstack() {
        assert_eq!(serde_json::to_value(ResourcesSpec::default()).unwrap(), default_json());
        // `ResourcesSpec.unconstrained().model_dump_json()` from dstack 0.22.5.
        assert_eq!(
            serde_json::to_string(&ResourcesSpec::unconstrained()).unwrap(),
            r#"{"cpu":{"arch":null,"count":{"min":1,"max":null}},"memory":{"min":0.0,"max":null},"shm_size":null,"gpu":{"vendor":null,"name":null,"count":{"min":0,"max":null},"memory":null,"total_memory":null,"compute_capability":null},"disk":null}"#
        );
    }

    #[test]
    fn wire_json_reads_back_as_the_same_spec() {
        for (input, _) in OK {
            let (spec, _) = parse(input);
            let spec = spec.unwrap();
            let json = serde_json::to_string(&spec).unwrap();
            let back: ResourcesSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{input}");
        }
        let err = serde_json::from_str::<ResourcesSpec>(r#"{"gpu": {"count": "2:4"}}"#);
        assert!(err.unwrap_err().to_string().contains("gpu.count"));
    }

    #[test]
    fn shorthand_prints_what_parses_back() {
        let gpu: &[(&str, Option<&str>)] = &[
            ("A100", Some("A100")),
            ("a100 : 80 GB : 2", Some("a100:80GB:2")),
            ("2:nvidia:80GB:A100", Some("nvidia:A100:80GB:2")),
            ("H100,H200:8", Some("H100,H200:8")),
            ("nvidia", Some("nvidia")),
            ("1..", Some("1..")),
            ("0", Some("0")),
            ("-1", Some("-1")),
            ("..2", Some("..2")),
            ("24GB..:2..8", Some("24GB..:2..8")),
            ("A100:512MB", Some("A100:0.5GB")),
            ("A100:1.5TB..", Some("A100:1536GB..")),
            ("A100:24MB", Some("A100:0.0234375GB")),
            ("tpu:v5litepod-8", Some("google:v5litepod-8")),
        ];
        for (input, printed) in gpu {
            let spec = GpuSpec::from_shorthand(input).unwrap();
            assert_eq!(spec.shorthand().as_deref(), *printed, "{input}");
            if let Some(p) = printed {
                assert_eq!(GpuSpec::from_shorthand(p).unwrap(), spec, "{p}");
            }
        }
        let mapping_only = [
            "{total_memory: 80GB}",
            "{compute_capability: 7.5}",
            "{name: nvidia}",
            "{name: '8x'}",
            "{name: 'A100,H100'}",
            "{name: 'A 100'}",
            "{name: []}",
        ];
        for input in mapping_only {
            let spec = GpuSpec::from_node(&load(input).unwrap(), &mut Cx::new()).unwrap();
            assert_eq!(spec.shorthand(), None, "{input}");
        }
        let cpu = [
            ("8", "8"),
            ("x86", "x86"),
            ("x86:2..", "x86"),
            ("16..:ARM", "arm:16.."),
            ("..8", "..8"),
            ("2..8", "2..8"),
            ("x86:-1..4", "x86:-1..4"),
        ];
        for (input, printed) in cpu {
            let spec = CpuSpec::from_shorthand(input).unwrap();
            assert_eq!(spec.to_string(), printed, "{input}");
            assert_eq!(CpuSpec::from_shorthand(printed).unwrap(), spec, "{printed}");
        }
        let negative = CpuSpec { arch: None, count: Range::exact(-4) };
        assert_eq!(negative.shorthand(), "-4..-4");
        assert_eq!(CpuSpec::from_shorthand("-4..-4").unwrap(), negative);
        assert_eq!(DiskSpec::default().shorthand().as_deref(), Some("100GB.."));
        assert_eq!(count_shorthand(&Range::exact(3)), "3");
        assert_eq!(memory_shorthand(Memory(f64::INFINITY)), None);
    }

    #[test]
    fn display_falls_back_to_fields() {
        let spec = GpuSpec::from_node(
            &load("{name: [A100], total_memory: 160GB.., compute_capability: '8.0'}").unwrap(),
            &mut Cx::new(),
        )
        .unwrap();
        assert_eq!(
            spec.to_string(),
            r#"name=["A100"] count=1.. total_memory=160GB.. compute_capability=8.0"#
        );
    }

    #[test]
    fn compute_capability_forms() {
        let cases: &[(&str, Option<(i64, i64)>)] = &[
            ("7.5", Some((7, 5))),
            ("'7.5'", Some((7, 5))),
            ("[7, 5]", Some((7, 5))),
            ("['8', '0']", Some((8, 0))),
            ("12.0", Some((12, 0))),
            ("'8.0.1'", None),
            ("8", None),
            ("1e3", None),
            ("true", None),
            ("[8]", None),
        ];
        for (input, expected) in cases {
            let mut cx = Cx::new();
            let cc = ComputeCapability::from_node(&load(input).unwrap(), &mut cx);
            assert_eq!(cc.map(|c| (c.0, c.1)), *expected, "{input}");
            assert_eq!(cx.has_errors(), expected.is_none(), "{input}");
        }
    }
}
