//! Loading small configurations from a temporary directory.

use super::*;

fn load_text(text: &str) -> Result<Config, String> {
    let dir = std::env::temp_dir().join(format!("immune-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.hcl"), text).unwrap();
    let result = load(&dir, &VarInputs::default()).map_err(|e| e.to_string());
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

fn fleet_with_rollout(rollout: &str) -> String {
    format!(
        r#"
fleet "web" {{
  image {{
    source_ami    = "ami-1"
    instance_type = "t3.small"
  }}
  instances {{
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    capacity {{
      min     = 1
      max     = 2
      desired = 1
    }}
  }}
  traffic {{
    load_balancer = "web"
    port          = 8080
  }}
  rollout {{
{rollout}
  }}
}}
"#
    )
}

#[test]
fn alarm_and_metric_gates_with_modes() {
    let config = load_text(&fleet_with_rollout(
        r#"
    keep_previous = 2
    gate "errors" {
      alarm = "web-5xx"
    }
    gate "latency" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = { TargetGroup = release.target_group }
        statistic  = "p99"
        period     = "60s"
        threshold  = 0.5
        comparison = ">="
      }
      insufficient_data = "hold"
      mode              = "dry-run"
    }"#,
    ))
    .unwrap();
    let rollout = &config.fleets[0].rollout;
    assert_eq!(rollout.keep_previous, 2);
    let [errors, latency] = &rollout.gates[..] else {
        panic!("two gates expected: {:?}", rollout.gates)
    };
    assert_eq!(errors.check, GateCheck::Alarm("web-5xx".into()));
    assert_eq!(errors.mode, GateMode::Enforce);
    assert_eq!(errors.insufficient_data, OnInsufficientData::Pass);
    assert_eq!(latency.mode, GateMode::DryRun);
    assert_eq!(latency.insufficient_data, OnInsufficientData::Hold);
    let GateCheck::Metric(metric) = &latency.check else {
        panic!("metric gate expected")
    };
    assert_eq!(metric.statistic, "p99");
    assert_eq!(metric.threshold, 0.5);
    assert_eq!(metric.comparison, Comparison::GreaterOrEqual);
    assert_eq!(
        metric.dimensions["TargetGroup"], "${release.target_group}",
        "the release reference is filled in at launch"
    );
    assert_eq!(latency.alarm_name("web-v003"), "web-v003-latency");
}

#[test]
fn gate_mistakes_are_reported_together() {
    let err = load_text(&fleet_with_rollout(
        r#"
    gate "nothing" {
    }
    gate "both" {
      alarm = "a"
      metric {
        namespace = "n"
        name      = "m"
        threshold = 1
      }
    }
    gate "typo" {
      alarm = "a"
      mode  = "enforced"
      insufficient_data = "ignore"
    }
    gate "typo" {
      alarm = "b"
    }"#,
    ))
    .unwrap_err();
    for expected in [
        "gate \"nothing\" needs `alarm` or a `metric` block",
        "gate \"both\" has both `alarm` and `metric`; give one",
        "unknown mode \"enforced\"",
        "did you mean \"enforce\"?",
        "unknown insufficient_data \"ignore\"",
        "duplicate gate \"typo\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

fn load_files(files: &[(&str, &str)], mode: Mode) -> Result<Config, String> {
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = files
        .iter()
        .map(|(p, t)| (p.into(), t.as_bytes().to_vec()))
        .collect();
    load_sources(&files, &VarInputs::default(), mode).map_err(|e| e.to_string())
}

#[test]
fn operators_follow_hcl_precedence() {
    let config = load_files(
        &[(
            "main.hcl",
            r#"
locals {
  a = 1 + 2 * 3 == 7 && 10 - 4 - 3 == 3 || false
  b = 2 * 3 + 1
  c = 8 / 2 / 2
}
output "a" { value = local.a }
output "b" { value = local.b }
output "c" { value = local.c }
"#,
        )],
        Mode::Plan,
    )
    .unwrap();
    let values: Vec<String> = config.outputs.iter().map(|o| o.value.to_string()).collect();
    assert_eq!(values, ["true", "7", "2"]);
}
