//! Parse and validate arbitrary input as a configuration: it must end in a configuration
//! or in diagnostics, never in a panic, a stack overflow or a hang.
//!
//! The input is split at the first two NUL bytes into `main.hcl` and a module's
//! `modules/m/main.hcl`, so that module loading is reached too.
#![no_main]

// The configuration module is compiled into this target directly instead of through the
// `immune` crate: that crate pulls in the AWS SDKs, which take a long time to build with
// coverage instrumentation and have nothing to do with parsing.
#[path = "../../src/config/mod.rs"]
#[allow(dead_code, unused_imports)]
mod config;

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|data: &[u8]| {
    let (main, module) = match data.windows(2).position(|w| w == [0, 0]) {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let mut files = vec![(PathBuf::from("main.hcl"), main.to_vec())];
    if let Some(module) = module {
        files.push((PathBuf::from("modules/m/main.hcl"), module.to_vec()));
    }
    let inputs = config::VarInputs::default();
    for mode in [config::Mode::Validate, config::Mode::Plan] {
        if let Err(e) = config::load_sources(&files, &inputs, mode) {
            // Rendering walks every span: it must not panic on any of them.
            let _ = e.to_string();
        }
    }
    // Formatting must accept whatever parses, and be idempotent.
    if let Ok(text) = std::str::from_utf8(main) {
        if let Ok(once) = config::format::format(text) {
            let twice = config::format::format(&once).expect("formatted text parses");
            assert_eq!(once, twice, "formatting is not idempotent");
        }
    }
});
