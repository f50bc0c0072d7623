//! Property tests: printing a normalized resource spec in shorthand and parsing the text back
//! gives the same spec, and no input text makes the parsers panic.

use dstack_model::common::{Memory, Range};
use dstack_model::de::{Cx, FromNode};
use dstack_model::resources::{
    CpuArch, CpuSpec, DiskSpec, GpuSpec, GpuVendor, ResourcesSpec, count_shorthand, memory_range_shorthand,
};
use dstack_model::yaml::{Node, Value};
use proptest::prelude::*;

/// Parses `text` as a YAML string scalar would arrive.
fn parse_str<T: FromNode>(text: &str) -> Result<T, String> {
    let node = Node::new(Value::Str(text.to_owned()), None);
    let mut cx = Cx::new();
    let value = T::from_node(&node, &mut cx);
    match value {
        Some(v) if !cx.has_errors() => Ok(v),
        _ => Err(format!("{:?}", cx.into_diagnostics())),
    }
}

/// A closed range with the ends in order.
fn between<T: PartialOrd + Copy>(a: T, b: T) -> Range<T> {
    let (min, max) = if a > b { (b, a) } else { (a, b) };
    Range { min: Some(min), max: Some(max) }
}

fn at_most<T>(max: T) -> Range<T> {
    Range { min: None, max: Some(max) }
}

fn count_value() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..10, -5i64..200, any::<i64>()]
}

fn count_range() -> impl Strategy<Value = Range<i64>> {
    prop_oneof![
        count_value().prop_map(Range::exact),
        (count_value(), count_value()).prop_map(|(a, b)| between(a, b)),
        count_value().prop_map(Range::at_least),
        count_value().prop_map(at_most),
    ]
}

fn memory_value() -> impl Strategy<Value = Memory> + Clone {
    prop_oneof![
        (0u32..2048).prop_map(|g| Memory(f64::from(g))),
        (0i64..10_000_000).prop_map(|mb| Memory(mb as f64 / 1024.0)),
        prop::num::f64::NORMAL.prop_map(Memory),
        prop::num::f64::SUBNORMAL.prop_map(Memory),
        Just(Memory(0.0)),
    ]
}

/// Sizes as configurations write them; serde_json without its `float_roundtrip` feature
/// may read an arbitrary float back one ulp off.
fn wire_memory_value() -> impl Strategy<Value = Memory> + Clone {
    prop_oneof![
        (0u32..2048).prop_map(|g| Memory(f64::from(g))),
        (0i64..10_000_000).prop_map(|mb| Memory(mb as f64 / 1024.0)),
    ]
}

fn memory_range() -> impl Strategy<Value = Range<Memory>> {
    range_of(memory_value())
}

fn wire_memory_range() -> impl Strategy<Value = Range<Memory>> {
    range_of(wire_memory_value())
}

fn range_of(value: impl Strategy<Value = Memory> + Clone) -> impl Strategy<Value = Range<Memory>> {
    prop_oneof![
        value.clone().prop_map(Range::exact),
        (value.clone(), value.clone()).prop_map(|(a, b)| between(a, b)),
        value.clone().prop_map(Range::at_least),
        value.prop_map(at_most),
    ]
}

fn cpu_spec() -> impl Strategy<Value = CpuSpec> {
    (prop::option::of(prop_oneof![Just(CpuArch::X86), Just(CpuArch::Arm)]), count_range())
        .prop_map(|(arch, count)| CpuSpec { arch, count })
}

fn vendor() -> impl Strategy<Value = GpuVendor> {
    prop_oneof![
        Just(GpuVendor::Nvidia),
        Just(GpuVendor::Amd),
        Just(GpuVendor::Google),
        Just(GpuVendor::Intel),
        Just(GpuVendor::Tenstorrent),
    ]
}

/// Names the shorthand can hold: a leading letter, no `:`, `,` or space, no `tpu-` prefix.
fn gpu_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9._-]{0,10}",
        Just("A100".to_owned()),
        Just("v5litepod-8".to_owned()),
        Just("RTX4090".to_owned()),
        Just("ÉX1".to_owned()),
    ]
    .prop_filter("not a tpu- name", |n| !n.starts_with("tpu-"))
}

fn gpu_names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(gpu_name(), 1..4).prop_filter(
        "a lone name is not a vendor",
        |names| !matches!(names.as_slice(), [n] if GpuVendor::parse(n).is_some()),
    )
}

fn gpu_spec() -> impl Strategy<Value = GpuSpec> {
    gpu_spec_with(memory_range())
}

fn gpu_spec_with(memory: impl Strategy<Value = Range<Memory>>) -> impl Strategy<Value = GpuSpec> {
    (prop::option::of(vendor()), prop::option::of(gpu_names()), count_range(), prop::option::of(memory))
        .prop_map(|(vendor, name, count, memory)| GpuSpec {
            vendor,
            name,
            count,
            memory,
            total_memory: None,
            compute_capability: None,
        })
}

/// Text built from the pieces the shorthand is made of, to reach the interesting branches.
fn shorthand_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("A100"),
        Just("nvidia"),
        Just("TPU"),
        Just("tt"),
        Just("tpu-"),
        Just("tpu-v5e-8"),
        Just("x86"),
        Just("ARM"),
        Just("80GB"),
        Just("1.5TB"),
        Just("512mb"),
        Just("1e3"),
        Just("1e400GB"),
        Just("inf"),
        Just(".."),
        Just("2"),
        Just("-1"),
        Just("99999999999999999999"),
        Just(":"),
        Just(","),
        Just(" "),
        Just("é"),
        Just("_"),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn count_range_round_trips(range in count_range()) {
        let text = count_shorthand(&range);
        prop_assert_eq!(parse_str::<Range<i64>>(&text), Ok(range), "{}", text);
    }

    #[test]
    fn memory_range_round_trips(range in memory_range()) {
        let text = memory_range_shorthand(&range).unwrap();
        prop_assert_eq!(parse_str::<Range<Memory>>(&text), Ok(range), "{}", text);
        let disk = DiskSpec { size: range };
        prop_assert_eq!(parse_str::<DiskSpec>(&text), Ok(disk));
    }

    #[test]
    fn cpu_spec_round_trips(spec in cpu_spec()) {
        let text = spec.shorthand();
        prop_assert_eq!(CpuSpec::from_shorthand(&text), Ok(spec), "{}", text);
    }

    #[test]
    fn gpu_spec_round_trips(spec in gpu_spec()) {
        let text = spec.shorthand();
        prop_assert!(text.is_some(), "{:?} has no shorthand", spec);
        let text = text.unwrap_or_default();
        prop_assert_eq!(GpuSpec::from_shorthand(&text), Ok(spec), "{}", text);
    }

    #[test]
    fn resources_round_trip_through_wire_json(
        cpu in cpu_spec(),
        memory in wire_memory_range(),
        gpu in prop::option::of(gpu_spec_with(wire_memory_range())),
        total in prop::option::of(wire_memory_range()),
        cc in prop::option::of((0i64..20, 0i64..10)),
        disk in prop::option::of(wire_memory_range()),
    ) {
        let gpu = gpu.map(|g| GpuSpec {
            total_memory: total,
            compute_capability: cc.map(|(a, b)| dstack_model::resources::ComputeCapability(a, b)),
            ..g
        });
        let spec = ResourcesSpec {
            cpu,
            memory,
            shm_size: None,
            gpu,
            disk: disk.map(|size| DiskSpec { size }),
        };
        let json = serde_json::to_string(&spec).unwrap();
        let back: Result<ResourcesSpec, _> = serde_json::from_str(&json);
        prop_assert_eq!(back.map_err(|e| e.to_string()), Ok(spec), "{}", json);
    }

    /// Whatever text parses, printing it and parsing again is stable, and nothing panics.
    #[test]
    fn any_text_parses_to_a_stable_spec(text in prop_oneof![shorthand_soup(), ".{0,24}"]) {
        let gpu = GpuSpec::from_shorthand(&text).ok();
        if let Some((spec, printed)) = gpu.and_then(|s| s.shorthand().map(|p| (s, p))) {
            prop_assert_eq!(GpuSpec::from_shorthand(&printed), Ok(spec), "{} -> {}", text, printed);
        }
        if let Ok(spec) = CpuSpec::from_shorthand(&text) {
            let printed = spec.shorthand();
            prop_assert_eq!(CpuSpec::from_shorthand(&printed), Ok(spec), "{} -> {}", text, printed);
        }
        let _ = parse_str::<Range<Memory>>(&text);
        let _ = parse_str::<ResourcesSpec>(&text);
    }
}
