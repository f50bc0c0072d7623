//! GPU detection output, parsed (spec agents.md §1.11). The parsers are pure: the tests feed
//! them recorded outputs from `testdata/gpu/`.

/// One detected accelerator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpu {
    pub vendor: Vendor,
    pub name: String,
    /// MiB; 0 when the tool printed something unreadable.
    pub vram_mib: u64,
    /// NVIDIA: the GPU UUID. AMD: the PCI bus address (`0000:0c:00.0`), from which the shim
    /// finds the render node.
    pub id: String,
    /// Normalized: `""` when unknown.
    pub driver_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Nvidia,
    Amd,
}

impl Vendor {
    /// The name dstack uses (`host_info.json`, `/api/instance/info`).
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
        }
    }
}

/// Why an output could not be read; the shim then reports no GPUs of that vendor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "nvidia-smi line {line}: expected 4 comma-separated fields (name, memory, uuid, driver), found {found}"
    )]
    NvidiaFields { line: usize, found: usize },
    #[error("amd-smi output is not JSON: {0}")]
    AmdJson(String),
    #[error("amd-smi output is neither a JSON array nor an object with `gpu_data`")]
    AmdShape,
}

/// The query dstack runs; [`parse_nvidia_smi`] reads its output.
pub const NVIDIA_SMI_ARGS: [&str; 2] =
    ["--query-gpu=name,memory.total,uuid,driver_version", "--format=csv,noheader,nounits"];

/// `amd-smi static --json --asic --vram --bus --driver` (without `--driver` when that fails).
pub const AMD_SMI_ARGS: [&str; 6] = ["static", "--json", "--asic", "--vram", "--bus", "--driver"];

/// Reads `nvidia-smi` [`NVIDIA_SMI_ARGS`] output: one GPU per non-empty line, exactly four
/// trimmed fields. An unreadable memory value counts as 0 MiB, as in dstack; a line with another
/// number of fields fails the whole output.
pub fn parse_nvidia_smi(output: &str) -> Result<Vec<Gpu>, ParseError> {
    let mut gpus = Vec::new();
    for (idx, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [name, memory, uuid, driver] = fields.as_slice() else {
            return Err(ParseError::NvidiaFields { line: idx + 1, found: fields.len() });
        };
        gpus.push(Gpu {
            vendor: Vendor::Nvidia,
            name: (*name).to_owned(),
            vram_mib: memory.parse().unwrap_or(0),
            id: (*uuid).to_owned(),
            driver_version: normalize_driver(driver),
        });
    }
    Ok(gpus)
}

/// Reads `amd-smi` [`AMD_SMI_ARGS`] output: a JSON array (ROCm 6) or `{"gpu_data": [...]}`
/// (ROCm 7). Used: `asic.market_name`, `vram.size.value` (MiB; a number or a numeric string),
/// `bus.bdf`, and `driver.version` or `driver.driver_version`. Missing parts give empty values.
pub fn parse_amd_smi(output: &str) -> Result<Vec<Gpu>, ParseError> {
    use serde_json::Value;
    let value: Value = serde_json::from_str(output).map_err(|e| ParseError::AmdJson(e.to_string()))?;
    let items = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("gpu_data") {
            Some(Value::Array(items)) => items,
            _ => return Err(ParseError::AmdShape),
        },
        _ => return Err(ParseError::AmdShape),
    };
    let text = |v: &Value, path: &[&str]| -> String {
        path.iter().try_fold(v, |v, key| v.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    Ok(items
        .iter()
        .map(|item| {
            let size = item.get("vram").and_then(|v| v.get("size")).and_then(|s| s.get("value").or(Some(s)));
            let vram_mib = match size {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
                _ => 0,
            };
            let mut driver = text(item, &["driver", "version"]);
            if driver.is_empty() {
                driver = text(item, &["driver", "driver_version"]);
            }
            Gpu {
                vendor: Vendor::Amd,
                name: text(item, &["asic", "market_name"]),
                vram_mib,
                id: text(item, &["bus", "bdf"]),
                driver_version: normalize_driver(&driver),
            }
        })
        .collect())
}

/// `N/A` and friends mean "unknown": `""`.
pub fn normalize_driver(version: &str) -> String {
    let v = version.trim();
    let unknown = ["n/a", "[n/a]", "unknown", "[not supported]", "[not available]"];
    if unknown.contains(&v.to_lowercase().as_str()) { String::new() } else { v.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gpu/", $name))
        };
    }

    #[test]
    fn h100_node_has_eight_gpus() {
        let gpus = parse_nvidia_smi(fixture!("nvidia-smi-8xh100.csv")).expect("parses");
        assert_eq!(gpus.len(), 8);
        assert!(gpus.iter().all(|g| g.name == "NVIDIA H100 80GB HBM3" && g.vram_mib == 81559));
        assert_eq!(gpus[0].id, "GPU-2b79666e-d81f-f3f8-fd47-9903f118c3f5");
        assert_eq!(gpus[7].driver_version, "570.86.15");
        assert_eq!(gpus[0].vendor, Vendor::Nvidia);
    }

    #[test]
    fn a100_single_gpu_with_crlf() {
        let gpus = parse_nvidia_smi(fixture!("nvidia-smi-1xa100.csv")).expect("parses");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0].vram_mib, 40960);
        assert_eq!(gpus[0].driver_version, "535.183.01");
    }

    #[test]
    fn mixed_models_and_unknown_values() {
        let gpus = parse_nvidia_smi(fixture!("nvidia-smi-mixed.csv")).expect("parses");
        assert_eq!(gpus.len(), 3);
        assert_eq!(gpus[1].name, "NVIDIA L4");
        // `[N/A]` memory is 0 MiB and an `[N/A]` driver is unknown, as in dstack.
        assert_eq!(gpus[2].vram_mib, 0);
        assert_eq!(gpus[2].driver_version, "");
    }

    #[test]
    fn no_gpus_is_an_empty_list() {
        assert_eq!(parse_nvidia_smi("").expect("parses"), vec![]);
        assert_eq!(parse_nvidia_smi("\n\n").expect("parses"), vec![]);
    }

    #[test]
    fn malformed_nvidia_output_is_refused() {
        // The header line of `--format=csv` without `noheader` has 4 fields too, but a driver
        // message like this one does not.
        let err = parse_nvidia_smi(fixture!("nvidia-smi-malformed.txt")).expect_err("refused");
        assert_eq!(err, ParseError::NvidiaFields { line: 1, found: 1 });
        let err = parse_nvidia_smi("NVIDIA H100, 81559, GPU-1\n").expect_err("3 fields");
        assert_eq!(err, ParseError::NvidiaFields { line: 1, found: 3 });
    }

    #[test]
    fn mi300x_rocm6_array() {
        let gpus = parse_amd_smi(fixture!("amd-smi-8xmi300x-rocm6.json")).expect("parses");
        assert_eq!(gpus.len(), 8);
        assert_eq!(gpus[0].name, "AMD Instinct MI300X");
        assert_eq!(gpus[0].vram_mib, 196592);
        assert_eq!(gpus[0].id, "0000:0c:00.0");
        assert_eq!(gpus[3].id, "0000:9f:00.0");
        assert_eq!(gpus[0].driver_version, "6.10.5");
        assert_eq!(gpus[0].vendor, Vendor::Amd);
    }

    #[test]
    fn mi300x_rocm7_gpu_data() {
        let gpus = parse_amd_smi(fixture!("amd-smi-2xmi300x-rocm7.json")).expect("parses");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[1].name, "AMD Instinct MI300X");
        assert_eq!(gpus[1].vram_mib, 196592);
        assert_eq!(gpus[1].id, "0000:1b:00.0");
        // ROCm 7 names the field `driver_version`.
        assert_eq!(gpus[1].driver_version, "6.14.14");
    }

    #[test]
    fn amd_without_driver_section() {
        let gpus = parse_amd_smi(fixture!("amd-smi-no-driver.json")).expect("parses");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "AMD Instinct MI250X/MI250");
        assert_eq!(gpus[0].vram_mib, 65520);
        assert_eq!(gpus[0].driver_version, "");
    }

    #[test]
    fn malformed_amd_output_is_refused() {
        assert!(matches!(parse_amd_smi(fixture!("amd-smi-malformed.txt")), Err(ParseError::AmdJson(_))));
        assert_eq!(parse_amd_smi(r#"{"gpus": []}"#), Err(ParseError::AmdShape));
        assert_eq!(parse_amd_smi("42"), Err(ParseError::AmdShape));
    }

    #[test]
    fn unknown_driver_versions_are_empty() {
        assert_eq!(normalize_driver(" 570.86.15 "), "570.86.15");
        assert_eq!(normalize_driver("[N/A]"), "");
        assert_eq!(normalize_driver("Unknown"), "");
        assert_eq!(normalize_driver("[Not Supported]"), "");
    }
}
