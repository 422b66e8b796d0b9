//! `immune validate` and `immune fmt` end to end: offline, no LocalStack needed.

use crate::harness::immune_in;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn offline(dir: &Path, args: &[&str]) -> crate::harness::Run {
    // Nothing listens on port 9: a command that tried to reach AWS would fail.
    immune_in(dir, args, "http://127.0.0.1:9")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("immune-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn validate_exits_0_for_every_example_without_variables_and_1_for_a_broken_one() {
    for example in [
        "quickstart",
        "web-canary",
        "blue-green",
        "from-module",
        "queue-worker",
    ] {
        let run = offline(&repo("examples").join(example), &["validate"]);
        assert_eq!(run.code, 0, "{example}: {run:?}");
        assert!(run.stdout.contains("The configuration is valid"), "{run:?}");
    }
    let run = offline(&repo("tests/configs/broken/unknown-block"), &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error: unknown block `flet`\n --> main.hcl:6:1\n"),
        "{run:?}"
    );
}

#[test]
fn fmt_check_fails_on_unformatted_files_and_fmt_fixes_them_keeping_comments() {
    let dir = scratch();
    let messy =
        "# the web fleet\nlocals {\n    name=\"web\" # short\n  region =   \"us-east-1\"\n}\n";
    std::fs::write(dir.join("main.hcl"), messy).unwrap();

    let check = offline(&dir, &["fmt", "--check", "--diff"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stderr.contains("not formatted: main.hcl"),
        "{check:?}"
    );
    assert!(
        check.stdout.contains("-    name=\"web\" # short\n"),
        "{check:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("main.hcl")).unwrap(),
        messy,
        "--check changes nothing"
    );

    let fix = offline(&dir, &["fmt"]);
    assert_eq!(fix.code, 0, "{fix:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("main.hcl")).unwrap(),
        "# the web fleet\nlocals {\n  name   = \"web\" # short\n  region = \"us-east-1\"\n}\n"
    );
    assert_eq!(offline(&dir, &["fmt", "--check"]).code, 0, "idempotent");

    std::fs::write(dir.join("broken.hcl"), "locals {\n").unwrap();
    let broken = offline(&dir, &["fmt"]);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken
            .stderr
            .contains("cannot format broken.hcl: syntax error at line"),
        "{broken:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_for_three_shells_and_a_manual_page_come_from_the_command_line() {
    let dir = scratch();
    for (shell, marker) in [
        ("bash", "complete -F _immune"),
        ("zsh", "#compdef immune"),
        ("fish", "complete -c immune"),
    ] {
        let run = offline(&dir, &["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(run.stdout.contains(marker), "{shell}: {run:?}");
        for command in ["apply", "rollback", "output", "status"] {
            assert!(run.stdout.contains(command), "{shell} lacks {command}");
        }
    }
    let man = offline(&dir, &["man"]);
    assert_eq!(man.code, 0, "{man:?}");
    assert!(man.stdout.starts_with(".ie") && man.stdout.contains(".TH immune 1"));
    let unknown = offline(&dir, &["completions", "tcsh"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("possible values"), "{unknown:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
