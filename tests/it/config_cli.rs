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

#[test]
fn a_release_aws_would_refuse_is_refused_by_validate_plan_and_apply_before_any_aws_call() {
    let dir = scratch();
    std::fs::write(
        dir.join("main.hcl"),
        r#"variable "release" {
  type = string
}

fleet "web" {
  release = var.release
  image {
    source_ami    = "ami-1"
    instance_type = "t3.small"
  }
  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    capacity {
      min     = 1
      max     = 2
      desired = 1
    }
  }
  traffic {
    load_balancer = "web"
    port          = 8080
  }
}
"#,
    )
    .unwrap();
    // Without the value, validate has nothing to check it against.
    let run = offline(&dir, &["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    for args in [
        &["validate", "--var", "release=feat#12"][..],
        &["plan", "--var", "release=feat#12"],
        &["apply", "--auto-approve", "--var", "release=feat#12"],
    ] {
        let run = offline(&dir, args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(
            run.stderr.starts_with(
                "error: release `feat#12` holds `#`, which ELB does not allow in the `immune:release` tag of the release's target group\n --> main.hcl:6:13\n"
            ),
            "{args:?}: {run:?}"
        );
        for said in [
            "the value comes from --var release",
            "letters, digits, spaces and _ . : / = + - @",
            "https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html",
            "for example `feat-12`",
        ] {
            assert!(run.stderr.contains(said), "{args:?}: {said:?} in {run:?}");
        }
        // Nothing listens on the endpoint: had immune called AWS, it would say so.
        assert!(!run.stderr.contains("127.0.0.1:9"), "{args:?}: {run:?}");
    }
    assert!(
        !dir.join(".immune").exists(),
        "not even the state was touched"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
