//! Data-driven tests over the repository's configurations:
//! - every case in `tests/configs/broken/<name>/` fails with exactly the diagnostics in
//!   its `expected.txt` (a file `plan` in the case loads it for plan instead of validate,
//!   a file `vars` gives it `--var` values, one `NAME=VALUE` a line;
//!   `UPDATE_EXPECTED=1` rewrites the files, to be reviewed before committing);
//! - every example in `examples/` and module in `modules/` validates, and `fmt` leaves it
//!   unchanged and keeps its comments.

use super::*;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn dirs(path: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo(path))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn hcl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hcl"))
        .collect();
    files.sort();
    files
}

/// Expected and actual side by side, each line marked where they differ.
fn show_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => out += &format!("  {x}\n"),
            (x, y) => {
                if let Some(x) = x {
                    out += &format!("- {x}\n");
                }
                if let Some(y) = y {
                    out += &format!("+ {y}\n");
                }
            }
        }
    }
    out
}

#[test]
fn every_broken_configuration_fails_with_its_expected_message_and_location() {
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut failures = Vec::new();
    let cases = dirs("tests/configs/broken");
    assert!(cases.len() >= 25, "the suite went missing");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mode = if case.join("plan").exists() {
            Mode::Plan
        } else {
            Mode::Validate
        };
        let inputs = VarInputs {
            cli: std::fs::read_to_string(case.join("vars"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            ..VarInputs::default()
        };
        let actual = match load_with(&case, &inputs, mode) {
            Ok(_) => "(loaded without errors)\n".to_string(),
            Err(e) => e.diagnostics.render(&e.sources),
        };
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{name}: (- expected, + actual)\n{}",
                show_difference(&expected, &actual)
            ));
        }
        if !actual.ends_with("\n1 error in the configuration\n") {
            failures.push(format!("{name}: one error expected, got\n{actual}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_example_and_module_validates() {
    // examples/ci holds a pipeline, not a configuration (tests/it/ci.rs runs it).
    let dirs: Vec<PathBuf> = dirs("examples")
        .into_iter()
        .chain(dirs("modules"))
        .filter(|d| !hcl_files(d).is_empty() || !d.ends_with("ci"))
        .collect();
    assert!(dirs.len() >= 6, "examples or modules went missing");
    for dir in dirs {
        if let Err(e) = load_with(&dir, &VarInputs::default(), Mode::Validate) {
            panic!("{} does not validate:\n{e}", dir.display());
        }
    }
    // Examples with defaults for every variable also load for plan.
    for example in ["web-canary", "blue-green", "from-module"] {
        let config = load(&repo("examples").join(example), &VarInputs::default())
            .unwrap_or_else(|e| panic!("{example}:\n{e}"));
        assert!(!config.fleets.is_empty());
    }
}

#[test]
fn formatting_every_example_and_module_changes_nothing_and_keeps_comments() {
    let dirs: Vec<PathBuf> = dirs("examples")
        .into_iter()
        .chain(dirs("modules"))
        .collect();
    for dir in dirs {
        for file in hcl_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let formatted =
                format::format(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(
                formatted,
                text,
                "{} is not in canonical layout:\n{}",
                file.display(),
                show_difference(&text, &formatted)
            );
            // And from a scrambled layout back to the same text, comments included.
            let scrambled: String = text
                .lines()
                .map(|l| format!("   {}  \n\n", l.trim().replacen(" = ", "=", 1)))
                .collect();
            let again = format::format(&scrambled)
                .unwrap_or_else(|e| panic!("{} scrambled: {e}", file.display()));
            assert_eq!(format::format(&again).unwrap(), again, "idempotent");
            let comments = |t: &str| {
                t.lines()
                    .filter(|l| l.trim_start().starts_with('#'))
                    .count()
            };
            assert_eq!(comments(&again), comments(&text), "{}", file.display());
        }
    }
}

#[test]
fn the_quickstart_still_needs_its_variables_for_plan() {
    let err = load(&repo("examples/quickstart"), &VarInputs::default()).unwrap_err();
    assert!(err
        .to_string()
        .contains("no value for required variable `release`"));
}

/// Inputs that once crashed the parse-and-validate path or the formatter (found by the
/// fuzz target in `fuzz/`, or by hand), kept so they never do again. Each file is one
/// fuzz input: `main.hcl`, then optionally two NUL bytes and a module's `main.hcl`.
#[test]
fn fuzz_findings_end_in_a_configuration_or_diagnostics() {
    let mut found = 0;
    for entry in std::fs::read_dir(repo("tests/configs/fuzz")).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        found += 1;
        let (main, module) = match data.windows(2).position(|w| w == [0, 0]) {
            Some(i) => (&data[..i], Some(&data[i + 2..])),
            None => (&data[..], None),
        };
        let mut files = vec![(PathBuf::from("main.hcl"), main.to_vec())];
        if let Some(module) = module {
            files.push((PathBuf::from("modules/m/main.hcl"), module.to_vec()));
        }
        for mode in [Mode::Validate, Mode::Plan] {
            if let Err(e) = load_sources(&files, &VarInputs::default(), mode) {
                let _ = e.to_string();
            }
        }
        if let Ok(text) = std::str::from_utf8(main) {
            if let Ok(once) = format::format(text) {
                let twice = format::format(&once).expect("formatted text parses");
                assert_eq!(once, twice, "{}: not idempotent", path.display());
            }
        }
    }
    assert!(found > 0);
}
