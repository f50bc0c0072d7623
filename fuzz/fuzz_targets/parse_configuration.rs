//! Coverage-guided fuzzing of the configuration parser: no input may panic, and a valid
//! configuration must survive a JSON round trip.
//!
//! Run: `scripts/fuzz [SECONDS]` (seeds: the corpus files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = dstack_model::parse_configuration(text);
    if let Some(conf) = parsed.configuration {
        let json = serde_json::to_value(&conf).expect("a configuration serializes");
        let back: dstack_model::AnyConfiguration = serde_json::from_value(json.clone()).expect("round trip");
        assert_eq!(serde_json::to_value(&back).expect("serializes again"), json);
    }
});
