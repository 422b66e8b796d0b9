//! Fleets as production runs them (issue 12): a bake that waits for the provision script,
//! the instance settings real groups need, several regions, and what retiring tidies.
//! LocalStack plays the builder: see localstack/plugin/immune_localstack_plugin/builders.py.

use crate::harness::*;
use std::time::{Duration, Instant};

/// This test's images, as the SDK sees them.
async fn images(w: &World) -> Vec<aws_sdk_ec2::types::Image> {
    let sdk = w.sdk().await;
    sdk.ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:immune:fleet")
                .values(&w.prefix)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .images()
        .to_vec()
}

/// This test's builders that are not terminated, with their state.
async fn builders(w: &World) -> Vec<(String, String)> {
    let sdk = w.sdk().await;
    let out = sdk
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values(format!("{}-builder", w.group(1)))
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let state = i.state()?.name()?.as_str().to_string();
            let id = i.instance_id()?.to_string();
            (state != "terminated").then_some((id, state))
        })
        .collect()
}

fn with_bake_timeout(config: String, timeout: &str) -> String {
    config.replace(
        "    provision     =",
        &format!("    bake_timeout  = \"{timeout}\"\n    provision     ="),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_is_taken_only_after_the_builder_powered_off() {
    let w = World::new();
    // A script that "never ends" until the test plays its end by stopping the builder.
    let source = w.source_image_whose_provision("hangs").await;
    w.write(
        "main.hcl",
        &w.fleet_config(&source, &w.surroundings.load_balancer, ""),
    );
    let apply = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    let started = Instant::now();
    let builder = loop {
        if let Some((id, state)) = builders(&w).await.into_iter().next() {
            if state == "running" {
                break id;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no builder came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        images(&w).await.is_empty(),
        "no image is taken while the provision script runs"
    );
    let sdk = w.sdk().await;
    sdk.ec2
        .stop_instances()
        .instance_ids(&builder)
        .send()
        .await
        .unwrap();
    let run = apply.wait(Duration::from_secs(180));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("waiting for it to power off"),
        "{run:?}"
    );
    assert_eq!(images(&w).await.len(), 1);
    assert!(builders(&w).await.is_empty(), "the builder is terminated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_builder_that_never_powers_off_fails_after_bake_timeout_with_its_console() {
    let w = World::new();
    let source = w.source_image_whose_provision("hangs").await;
    w.write(
        "main.hcl",
        &with_bake_timeout(
            w.fleet_config(&source, &w.surroundings.load_balancer, ""),
            "4s",
        ),
    );
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_ne!(run.code, 0, "{run:?}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("did not power off within bake_timeout 4s"),
        "{run:?}"
    );
    assert!(
        all.contains("waiting for the package mirror"),
        "the end of the console is shown: {run:?}"
    );
    assert!(images(&w).await.is_empty(), "no image is left");
    assert!(builders(&w).await.is_empty(), "the builder is terminated");
    let history = w.immune(&["history", &w.prefix]);
    assert!(
        history.stdout.contains("did not power off"),
        "history keeps the reason: {history:?}"
    );
    assert!(
        w.state()["fleets"][&w.prefix]["lock"].is_null(),
        "a failed bake touched no running instance: the fleet is not locked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provision_script_that_fails_is_reported_from_the_console_before_the_timeout() {
    let w = World::new();
    let source = w.source_image_whose_provision("fails").await;
    w.write(
        "main.hcl",
        &with_bake_timeout(
            w.fleet_config(&source, &w.surroundings.load_balancer, ""),
            "30m",
        ),
    );
    let started = Instant::now();
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(120));
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains("exit status 100"), "{run:?}");
    assert!(all.contains("Unable to locate package nginx"), "{run:?}");
    assert!(images(&w).await.is_empty());
}

/// A fleet with every instance setting, and default tags.
fn production_config(w: &World) -> String {
    let s = &w.surroundings;
    let settings = format!(
        r#"    iam_instance_profile = "{profile}"
    key_name             = "{key}"
    tags                 = {{ service = "web" }}
    root_volume {{
      size      = 30
      type      = "gp3"
      encrypted = true
      iops      = 3000
    }}
    metadata {{
      http_tokens = "required"
      hop_limit   = 2
    }}
    spot {{
      instance_types    = ["t3.micro", "t3a.micro"]
      on_demand_base    = 1
      on_demand_percent = 25
    }}
    scaling "cpu" {{
      metric = "cpu"
      target = 50
    }}
    scaling "requests" {{
      metric = "requests_per_target"
      target = 1000
    }}
    capacity {{"#,
        profile = s.instance_profile,
        key = s.key_pair,
    );
    let fleet = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replacen("    capacity {", &settings, 1);
    format!("immune {{\n  default_tags = {{ env = \"prod\" }}\n}}\n{fleet}")
}

fn has_tag<'a>(
    tags: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    key: &str,
    value: &str,
) -> bool {
    tags.into_iter()
        .any(|(k, v)| k == Some(key) && v == Some(value))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_instance_setting_reaches_the_launch_template_group_and_policies() {
    let w = World::new();
    w.write("main.hcl", &production_config(&w));
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    for shown in [
        "profile",
        "key pair",
        "env=prod, service=web",
        "30 GiB gp3, encrypted, 3000 IOPS",
        "IMDSv2 required, hop limit 2",
        "t3.micro, t3a.micro; the first 1 on demand, then 25% on demand",
        "cpu: keep average CPU % per instance at 50",
    ] {
        assert!(
            plan.stdout.contains(shown),
            "plan shows {shown:?}: {plan:?}"
        );
    }
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let sdk = w.sdk().await;
    let state = w.state();
    let active = &state["fleets"][&w.prefix]["active"];
    let template = active["launch_template"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let version = active["launch_template"]["version"].as_i64().unwrap();

    let versions = sdk
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&template)
        .versions(version.to_string())
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0]
        .launch_template_data()
        .unwrap();
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some(w.surroundings.instance_profile.as_str())
    );
    assert_eq!(data.key_name(), Some(w.surroundings.key_pair.as_str()));
    let metadata = data.metadata_options().unwrap();
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(2));
    let root = &data.block_device_mappings()[0];
    let image = sdk
        .ec2
        .describe_images()
        .image_ids(active["image"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let image = &image.images()[0];
    assert_eq!(
        root.device_name(),
        image.root_device_name(),
        "the image's root volume is replaced"
    );
    let ebs = root.ebs().unwrap();
    assert_eq!(
        (
            ebs.volume_size(),
            ebs.volume_type().map(|t| t.as_str()),
            ebs.encrypted(),
            ebs.iops()
        ),
        (Some(30), Some("gp3"), Some(true), Some(3000))
    );
    for resource in ["instance", "volume"] {
        let spec = data
            .tag_specifications()
            .iter()
            .find(|t| t.resource_type().map(|r| r.as_str()) == Some(resource))
            .unwrap_or_else(|| panic!("tags for {resource}s"));
        let tags = spec.tags().iter().map(|t| (t.key(), t.value()));
        assert!(has_tag(tags.clone(), "service", "web"), "{resource}");
        assert!(has_tag(tags, "env", "prod"), "{resource}");
    }
    assert!(
        has_tag(
            image.tags().iter().map(|t| (t.key(), t.value())),
            "env",
            "prod"
        ),
        "images carry default tags"
    );

    let group = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(w.group(1))
        .send()
        .await
        .unwrap();
    let group = &group.auto_scaling_groups()[0];
    let mixed = group
        .mixed_instances_policy()
        .expect("a mixed instances policy");
    let overrides: Vec<&str> = mixed
        .launch_template()
        .unwrap()
        .overrides()
        .iter()
        .filter_map(|o| o.instance_type())
        .collect();
    assert_eq!(overrides, ["t3.micro", "t3a.micro"]);
    let distribution = mixed.instances_distribution().unwrap();
    assert_eq!(distribution.on_demand_base_capacity(), Some(1));
    assert_eq!(
        distribution.on_demand_percentage_above_base_capacity(),
        Some(25)
    );
    for (key, value) in [("service", "web"), ("env", "prod")] {
        assert!(
            group.tags().iter().any(|t| t.key() == Some(key)
                && t.value() == Some(value)
                && t.propagate_at_launch() == Some(true)),
            "group tag {key} is propagated to instances"
        );
    }

    let target_group = sdk
        .elb
        .describe_tags()
        .resource_arns(active["target_group"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        has_tag(
            target_group.tag_descriptions()[0]
                .tags()
                .iter()
                .map(|t| (t.key(), t.value())),
            "env",
            "prod"
        ),
        "target groups carry default tags"
    );

    let policies = sdk
        .autoscaling
        .describe_policies()
        .auto_scaling_group_name(w.group(1))
        .send()
        .await
        .unwrap();
    let mut found: Vec<(String, f64)> = policies
        .scaling_policies()
        .iter()
        .filter_map(|p| {
            let tracking = p.target_tracking_configuration()?;
            let metric = tracking.predefined_metric_specification()?;
            Some((
                metric.predefined_metric_type()?.as_str().to_string(),
                tracking.target_value()?,
            ))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        [
            ("ALBRequestCountPerTarget".to_string(), 1000.0),
            ("ASGAverageCPUUtilization".to_string(), 50.0)
        ]
    );

    // The next release retires v001: its launch template version goes with it.
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let versions = sdk
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&template)
        .send()
        .await
        .unwrap();
    let left: Vec<Option<&str>> = versions
        .launch_template_versions()
        .iter()
        .map(|v| v.version_description())
        .collect();
    assert_eq!(
        left,
        [Some(w.group(2).as_str())],
        "only the running release's version is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fleets_in_two_regions_are_each_deployed_in_their_own() {
    let w = World::new();
    let west_name = format!("{}w", w.prefix);
    let west = surroundings(&west_name, "us-west-2");
    let east_fleet = w.fleet_config(
        &w.surroundings.source_ami,
        &w.surroundings.load_balancer,
        "",
    );
    let west_fleet = w
        .fleet_config(&west.source_ami, &west.load_balancer, "")
        .replace("variable \"release\" { type = string }", "")
        .replace(
            &format!("fleet \"{}\" {{", w.prefix),
            &format!("fleet \"{west_name}\" {{\n  region = \"us-west-2\""),
        )
        .replace(
            &format!("{:?}", w.surroundings.subnets),
            &format!("{:?}", west.subnets),
        )
        .replace(&w.surroundings.security_group, &west.security_group);
    w.write("main.hcl", &format!("{east_fleet}\n{west_fleet}"));

    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert!(
        plan.stdout.contains("region us-east-1:") && plan.stdout.contains("region us-west-2:"),
        "the plan groups fleets by region: {plan:?}"
    );
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(run.code, 0, "{run:?}");

    let east = Sdk::in_region("us-east-1").await;
    let west_sdk = Sdk::in_region("us-west-2").await;
    let east_group = w.group(1);
    let west_group = format!("{west_name}-v001");
    assert!(east.group_exists(&east_group).await);
    assert!(!west_sdk.group_exists(&east_group).await);
    assert!(west_sdk.group_exists(&west_group).await, "{run:?}");
    assert!(!east.group_exists(&west_group).await);
    let state = w.state();
    assert_eq!(state["fleets"][&w.prefix]["region"], "us-east-1");
    assert_eq!(state["fleets"][&west_name]["region"], "us-west-2");

    // A fleet cannot move: its resources stay where its first release put them.
    let moved = std::fs::read_to_string(w.dir.join("main.hcl"))
        .unwrap()
        .replace("region = \"us-west-2\"", "region = \"eu-west-1\"");
    w.write("main.hcl", &moved);
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert_ne!(plan.code, 0);
    assert!(
        plan.stderr.contains("runs in us-west-2")
            && plan.stderr.contains("cannot move between regions"),
        "{plan:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_instance_type_or_key_pair_is_refused_at_plan_before_anything_is_made() {
    let w = World::new();
    let s = &w.surroundings;
    let config = w.fleet_config(&s.source_ami, &s.load_balancer, "");
    w.write(
        "main.hcl",
        &config.replacen(
            "instance_type = \"t3.micro\"",
            "instance_type = \"t9.huge\"",
            1,
        ),
    );
    for args in [
        &["plan", "--var", "release=v1"][..],
        &["apply", "--auto-approve", "--var", "release=v1"],
    ] {
        let run = w.immune(args);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stderr.contains("instance type t9.huge in us-east-1"),
            "{args:?}: {run:?}"
        );
    }
    w.write(
        "main.hcl",
        &config.replacen(
            "    capacity {",
            "    key_name = \"nobody-has-this-key\"\n    capacity {",
            1,
        ),
    );
    let run = w.immune(&["plan", "--var", "release=v1"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("key pair nobody-has-this-key"),
        "{run:?}"
    );
    assert!(images(&w).await.is_empty(), "nothing was baked");
    assert!(builders(&w).await.is_empty());
}
