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

/// Runs `work` on a thread with an ordinary 2 MiB stack, as test threads and many
/// callers have: loading must not rely on the main thread's larger stack.
fn on_small_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(work)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn thousands_of_nested_brackets_end_in_an_error_not_a_stack_overflow() {
    for text in [
        format!("locals {{\n  a = {}\n}}\n", "[".repeat(10_000)),
        format!(
            "locals {{\n  a = {}1{}\n}}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        format!("locals {{\n  a = \"{}\"\n}}\n", "${\"".repeat(5_000)),
        format!("locals {{\n  a = {}1\n}}\n", "-".repeat(10_000)),
        format!("locals {{\n  a = 1{}\n}}\n", " + 1".repeat(10_000)),
        format!("{}{}", "a {\n".repeat(10_000), "}\n".repeat(10_000)),
    ] {
        let err =
            on_small_stack(move || load_files(&[("main.hcl", &text)], Mode::Validate)).unwrap_err();
        assert!(
            err.contains("nested more than 100 levels deep")
                || err.contains("more than 2000 operators"),
            "{}",
            &err[..err.len().min(300)]
        );
        assert!(
            err.contains("--> main.hcl:2:") || err.contains("--> main.hcl:"),
            "names the file"
        );
    }
    // Within the limits, deep but legal nesting loads (or fails evaluation) cleanly.
    let text = format!(
        "locals {{\n  a = {}1{}\n}}\n",
        "[".repeat(99),
        "]".repeat(99)
    );
    on_small_stack(move || load_files(&[("main.hcl", &text)], Mode::Validate)).unwrap();
    let text = format!(
        "locals {{\n  a = 1{}\n}}\noutput \"a\" {{ value = local.a }}\n",
        " + 1".repeat(1900)
    );
    let config =
        on_small_stack(move || load_files(&[("main.hcl", &text)], Mode::Validate)).unwrap();
    assert_eq!(config.outputs[0].value, hcl::Value::from(1901));
}

#[test]
fn binary_garbage_invalid_utf8_and_huge_files_end_in_a_clear_error_naming_the_file() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = load_sources(
        &[("main.hcl".into(), garbage)],
        &VarInputs::default(),
        Mode::Validate,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("main.hcl"), "{err}");

    let nul = b"fleet \"web\" {\0\0\0}".to_vec();
    let err = load_sources(
        &[("nul.hcl".into(), nul)],
        &VarInputs::default(),
        Mode::Validate,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--> nul.hcl:1:"), "{err}");

    let dir = std::env::temp_dir().join(format!("immune-huge-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let huge = "# padding\n".repeat(5 * 1024 * 1024);
    std::fs::write(dir.join("huge.hcl"), huge).unwrap();
    let started = std::time::Instant::now();
    let err = load_with(&dir, &VarInputs::default(), Mode::Validate)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains(
            "cannot read huge.hcl: the file is 50.0 MB; configuration files are limited to 4 MB"
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused without parsing"
    );
}

#[test]
fn validate_accepts_required_variables_without_values_and_plan_does_not() {
    let files = [(
        "main.hcl",
        r#"
variable "release" { type = string }
variable "count" { type = number }
locals { name = "web-${var.release}" }
output "name" { value = local.name }
"#,
    )];
    let config = load_files(&files, Mode::Validate).unwrap();
    assert!(config.outputs.is_empty(), "unknown values are left out");
    let err = load_files(&files, Mode::Plan).unwrap_err();
    assert!(
        err.contains("no value for required variable `release`"),
        "{err}"
    );
    assert!(
        err.contains("no value for required variable `count`"),
        "{err}"
    );
}

const MODULE_FLEET: &str = r#"
variable "release" { type = string }
variable "lb" {
  type    = string
  default = "web"
}
fleet "this" {
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
    load_balancer = var.lb
    port          = 8080
  }
}
output "name" { value = fleet.this.name }
output "lb" { value = fleet.this.load_balancer }
"#;

#[test]
fn nested_modules_name_their_fleets_after_the_calls_and_pass_outputs_up() {
    let config = load_files(
        &[
            (
                "main.hcl",
                r#"
module "shop" {
  source  = "./modules/service"
  release = "v7"
}
output "fleets" { value = module.shop.fleets }
"#,
            ),
            (
                "modules/service/main.hcl",
                r#"
variable "release" { type = string }
module "web" {
  source  = "../fleet"
  release = var.release
}
module "api" {
  source  = "../fleet"
  release = "${var.release}-api"
  lb      = "internal"
}
output "fleets" { value = [module.web.name, module.api.name, module.api.lb] }
"#,
            ),
            ("modules/fleet/main.hcl", MODULE_FLEET),
        ],
        Mode::Plan,
    )
    .unwrap();
    let names: Vec<&str> = config.fleets.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["shop-web", "shop-api"]);
    assert_eq!(config.fleets[1].release.as_deref(), Some("v7-api"));
    assert_eq!(
        config.fleets[0].location, "modules/fleet/main.hcl:7:1",
        "locations point into the module's file"
    );
    assert_eq!(
        config.outputs[0].value,
        hcl::Value::from(vec!["shop-web", "shop-api", "internal"])
    );
}

#[test]
fn sensitive_variables_must_be_shown_by_sensitive_outputs_only() {
    let config = load_files(
        &[(
            "main.hcl",
            r#"
variable "token" {
  type      = string
  default   = "s3cret"
  sensitive = true
}
locals { header = "Bearer ${var.token}" }
output "header" {
  value     = local.header
  sensitive = true
}
output "plain" { value = "hello" }
"#,
        )],
        Mode::Plan,
    )
    .unwrap();
    assert!(config.outputs[0].sensitive);
    assert!(!config.outputs[1].sensitive);
}

#[test]
fn variable_values_follow_terraforms_precedence() {
    let dir = std::env::temp_dir().join(format!("immune-vars-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        r#"
variable "a" { default = "default" }
variable "b" { default = "default" }
variable "c" { default = "default" }
variable "d" { default = "default" }
variable "e" { default = "default" }
output "all" { value = [var.a, var.b, var.c, var.d, var.e] }
"#,
    )
    .unwrap();
    std::fs::write(dir.join("values.vars"), "b = \"file\"\nc = \"file\"\n").unwrap();
    let inputs = VarInputs {
        // A saved plan's values come below every source given now, above defaults.
        saved: vec![
            ("a".into(), hcl::Value::from("saved")),
            ("e".into(), hcl::Value::from("saved")),
        ],
        cli: vec![("c".into(), "cli".into())],
        files: vec![dir.join("values.vars")],
        env: vec![
            ("a".into(), "env".into()),
            ("b".into(), "env".into()),
            ("c".into(), "env".into()),
        ],
    };
    let config = load(&dir, &inputs).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        config.outputs[0].value,
        hcl::Value::from(vec!["env", "file", "cli", "default", "saved"])
    );
}

#[test]
fn a_json_variable_file_gives_typed_values_and_a_broken_one_says_where() {
    let dir = std::env::temp_dir().join(format!("immune-vars-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        r#"
variable "release" { type = string }
variable "steps" { type = list(number) }
variable "tags" { type = map(string) }
output "all" { value = [var.release, var.steps, var.tags] }
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("vars.json"),
        r#"{"release": "v7", "steps": [10, 100], "tags": {"team": "orders"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("broken.json"), "{\"release\": \"v7\",\n}").unwrap();
    let inputs = |file: &str| VarInputs {
        files: vec![dir.join(file)],
        ..VarInputs::default()
    };
    let config = load(&dir, &inputs("vars.json")).unwrap();
    let err = load(&dir, &inputs("broken.json")).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let hcl::Value::Array(all) = &config.outputs[0].value else {
        panic!("a list")
    };
    assert_eq!(all[0], hcl::Value::from("v7"));
    assert_eq!(all[1], hcl::Value::from(vec![10, 100]));
    let hcl::Value::Object(tags) = &all[2] else {
        panic!("a map")
    };
    assert_eq!(tags["team"], hcl::Value::from("orders"));
    let shown = err.diagnostics.render(&err.sources);
    assert!(
        shown.contains("broken.json is not valid JSON") && shown.contains("line 2"),
        "{shown}"
    );
    assert!(
        shown.contains("1 error in the configuration"),
        "no follow-on errors for the variables the file would give: {shown}"
    );
}

#[test]
fn a_validation_message_never_shows_a_sensitive_value() {
    let dir = std::env::temp_dir().join(format!("immune-vars-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        r#"
variable "token" {
  type      = string
  sensitive = true
  validation {
    condition     = length(var.token) > 8
    error_message = "token too short: ${var.token}"
  }
}
variable "port" {
  type = number
  validation {
    condition     = var.port > 1024
    error_message = "port ${var.port} is too low"
  }
}
"#,
    )
    .unwrap();
    let inputs = VarInputs {
        cli: vec![
            ("token".into(), "SHORTSEC".into()),
            ("port".into(), "80".into()),
        ],
        ..VarInputs::default()
    };
    let err = load(&dir, &inputs).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let shown = err.diagnostics.render(&err.sources);
    assert!(!shown.contains("SHORTSEC"), "{shown}");
    assert!(
        shown.contains("shows a sensitive value, so it is not printed"),
        "{shown}"
    );
    assert!(
        shown.contains("port 80 is too low"),
        "others are shown: {shown}"
    );
}

#[test]
fn an_s3_backend_names_its_bucket_key_and_region() {
    let backend = r#"
immune {
  backend "s3" {
    bucket = "team-state"
    key    = "web/state.json"
    region = "eu-west-1"
  }
}
"#;
    let config = load_text(&format!("{backend}{}", fleet_with_rollout(""))).unwrap();
    assert_eq!(
        config.backend,
        Backend::S3 {
            bucket: "team-state".into(),
            key: "web/state.json".into(),
            region: Some("eu-west-1".into()),
        }
    );
    let without_key = backend.replace("key    = \"web/state.json\"", "");
    let err = load_text(&format!("{without_key}{}", fleet_with_rollout(""))).unwrap_err();
    assert!(err.contains("`key`"), "{err}");
    assert!(
        err.contains("main.hcl:3:"),
        "the backend block is pointed at: {err}"
    );
}

#[test]
fn a_namespace_prefixes_every_name_and_must_leave_room_for_it() {
    let fleet = fleet_with_rollout("steps = [100]");
    let config = load_text(&format!(
        "immune {{\n  namespace = \"staging\"\n}}\n{fleet}"
    ))
    .unwrap();
    assert_eq!(config.namespace.as_deref(), Some("staging"));
    let web = &config.fleets[0];
    assert_eq!(web.resource_name(), "staging-web");
    assert_eq!(crate::plan::template_name(web), "staging-web");
    assert_eq!(
        crate::plan::group_name(&web.resource_name(), 2),
        "staging-web-v002"
    );

    let long = fleet.replace("fleet \"web\"", "fleet \"checkout-payments-eu\"");
    let err = load_text(&format!(
        "immune {{\n  namespace = \"staging-blue\"\n}}\n{long}"
    ))
    .unwrap_err();
    assert!(
        err.contains(
            "name `staging-blue-checkout-payments-eu-v001` has 38 characters, more than the 32 ELB allows in a target group name"
        ),
        "{err}"
    );
    assert!(
        err.contains("main.hcl:2:"),
        "points at the namespace: {err}"
    );
    assert!(
        err.contains("shorten the namespace or the fleet name by 7 characters (names take a fourth digit from release 1000 on)"),
        "{err}"
    );
    assert_eq!(
        err.matches("error:").count(),
        1,
        "one mistake, one error: {err}"
    );

    let err = load_text(&format!(
        "immune {{\n  namespace = \"Staging_1\"\n}}\n{fleet}"
    ))
    .unwrap_err();
    assert!(err.contains("not a valid name prefix"), "{err}");
}

#[test]
fn instance_settings_are_read_and_their_mistakes_reported_together() {
    let with = |settings: &str| {
        fleet_with_rollout("")
            .replacen("    capacity {", &format!("{settings}\n    capacity {{"), 1)
            .replace("max     = 2", "max     = 4")
    };
    let config = load_text(&with(
        r#"    iam_instance_profile = "arn:aws:iam::1:instance-profile/web"
    tags = { service = "web" }
    root_volume { size = 30 }
    metadata { http_tokens = "optional" }
    scaling "cpu" {
      metric = "network_in"
      target = 1000000
    }"#,
    ))
    .unwrap();
    let i = &config.fleets[0].instances;
    assert_eq!(
        i.iam_instance_profile.as_deref(),
        Some("arn:aws:iam::1:instance-profile/web")
    );
    assert_eq!(i.root_volume.as_ref().unwrap().size, Some(30));
    assert!(!i.metadata.tokens_required);
    assert_eq!(i.metadata.hop_limit, 1);
    assert_eq!(i.scaling[0].metric, ScalingMetric::NetworkIn);

    let errors = load_text(&with(
        r#"    tags = { Name = "web", "aws:x" = "y" }
    metadata { hop_limit = 65 }
    spot {
      instance_types    = ["t3.small", "big"]
      on_demand_percent = 120
    }
    root_volume {
      type       = "gp2"
      throughput = 200
    }
    scaling "cpu" {
      metric = "memory"
      target = 0
    }"#,
    ))
    .unwrap_err();
    for expected in [
        "tag `Name` is set by immune",
        "tag key `aws:x` begins with `aws:`, which AWS keeps for its own tags",
        "`hop_limit` must be a whole number from 1 to 64",
        "`big` is not an EC2 instance type",
        "`on_demand_percent` must be a whole number from 0 to 100",
        "`throughput` does not apply to gp2 volumes",
        "unknown metric \"memory\"",
        "`target` must be above zero",
    ] {
        assert!(errors.contains(expected), "{expected:?} in {errors}");
    }
}

#[test]
fn a_gate_whose_alarm_comes_from_an_unset_variable_keeps_its_other_settings_known() {
    // `immune status`, `approve` or `rollback` run without the variables: the gate's
    // mode must not be taken for an unknown attribute then.
    let quickstart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/main.hcl"),
    )
    .unwrap()
    .replace(
        "      alarm = var.alarm\n",
        "      alarm = var.alarm\n      mode  = \"manual\"\n      insufficient_data = \"hold\"\n",
    );
    assert!(quickstart.contains("mode  = \"manual\""));
    let files = [
        ("main.hcl", quickstart.as_str()),
        ("bake.sh", "#!/bin/sh\n"),
        ("boot.sh", "#!/bin/sh\n"),
    ];
    let loaded = load_files(&files, Mode::Validate);
    assert!(loaded.is_ok(), "{}", loaded.unwrap_err());
}

#[test]
fn a_name_aws_would_refuse_points_at_its_attribute_and_says_where_the_value_came_from() {
    // A fleet whose release, image name and instance tags are written by the caller.
    let fleet = |name: &str, release: &str, image: &str, tags: &str| {
        format!(
            r#"
fleet "{name}" {{
  release = {release}
  image {{
    source_ami    = "ami-1"
    instance_type = "t3.small"
    name          = {image}
  }}
  instances {{
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    tags            = {tags}
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
}}
"#
        )
    };
    // The module's release comes through a local and the module call from --var; the
    // root fleet's image name from the environment, its tags from a sensitive variable.
    let main = format!(
        r#"
variable "release" {{ type = string }}
variable "suffix" {{ type = string }}
variable "owner" {{
  type      = string
  sensitive = true
}}
locals {{
  release = "${{var.release}}-rc"
}}
module "web" {{
  source  = "./modules/web"
  release = local.release
}}
{}"#,
        fleet(
            "api",
            "\"v1\"",
            "\"api-${var.suffix}\"",
            "{ owner = \"${var.owner}\\u0007\" }"
        )
    );
    let module = format!(
        "variable \"release\" {{ type = string }}\n{}",
        fleet("this", "var.release", "\"web\"", "{}")
    );
    let files: Vec<(std::path::PathBuf, Vec<u8>)> =
        [("main.hcl", &main), ("modules/web/main.hcl", &module)]
            .iter()
            .map(|(p, t)| (p.into(), t.as_bytes().to_vec()))
            .collect();
    let inputs = VarInputs {
        cli: vec![("release".into(), "feat#12".into())],
        env: vec![
            ("suffix".into(), "a:b".into()),
            ("owner".into(), "alice".into()),
        ],
        ..VarInputs::default()
    };
    let err = load_sources(&files, &inputs, Mode::Plan)
        .unwrap_err()
        .to_string();
    let errors: Vec<&str> = err.split("\nerror: ").collect();
    assert_eq!(errors.len(), 3, "{err}");
    assert!(
        errors[0].starts_with("error: image name `api-a:b` holds `:`"),
        "{err}"
    );
    assert!(
        errors[0].contains("the value comes from environment variable IMMUNE_VAR_suffix; "),
        "{err}"
    );
    assert!(
        errors[1].starts_with("value (sensitive) of tag `owner` holds the character U+0007"),
        "{err}"
    );
    assert!(
        errors[2].starts_with("release `feat#12-rc` holds `#`"),
        "{err}"
    );
    assert!(
        errors[2].contains("--> modules/web/main.hcl:4:13"),
        "points at the attribute in the module: {err}"
    );
    assert!(
        errors[2].contains("hint: the value comes from --var release; "),
        "through the local and the module call: {err}"
    );
    assert!(
        !err.contains("alice"),
        "a sensitive value is never shown: {err}"
    );

    // `validate` without the values knows none of them: nothing to say.
    let loaded = load_sources(&files, &VarInputs::default(), Mode::Validate);
    assert!(loaded.is_ok(), "{}", loaded.unwrap_err());
    // `status`, `approve` and `rollback` are about what runs, not the next release.
    let loaded = load_sources(&files, &inputs, Mode::Running);
    assert!(loaded.is_ok(), "{}", loaded.unwrap_err());
}

#[test]
fn stickiness_is_whole_seconds_from_1s_to_7d() {
    let with = |stickiness: &str| {
        fleet_with_rollout("    steps = [100]").replace(
            "    port          = 8080\n",
            &format!("    port          = 8080\n    stickiness    = \"{stickiness}\"\n"),
        )
    };
    let config = load_text(&with("1h")).unwrap();
    let traffic = config.fleets[0].traffic.as_ref().unwrap();
    assert_eq!(
        traffic.stickiness,
        Some(std::time::Duration::from_secs(3600))
    );
    for wrong in ["8d", "500ms"] {
        let err = load_text(&with(wrong)).unwrap_err();
        assert!(
            err.contains("whole seconds from 1s to 7d") && err.contains("main.hcl:"),
            "{wrong}: {err}"
        );
    }
    let off = load_text(&with("off")).unwrap();
    assert_eq!(
        off.fleets[0].traffic.as_ref().unwrap().stickiness,
        Some(std::time::Duration::ZERO)
    );
    let none = load_text(&fleet_with_rollout("    steps = [100]")).unwrap();
    assert_eq!(none.fleets[0].traffic.as_ref().unwrap().stickiness, None);
}
