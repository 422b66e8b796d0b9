//! Releases end to end on LocalStack.

use crate::harness::World;

#[tokio::test(flavor = "multi_thread")]
async fn two_releases_in_a_row_end_with_all_traffic_on_the_second() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );

    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("first release v1"), "{plan:?}");

    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    let sdk = w.sdk().await;
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);

    let again = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(
        again.code, 0,
        "after apply, the same release plans no changes: {again:?}"
    );

    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(v2.code, 0, "{v2:?}");
    assert!(v2.stdout.contains("release v2 replaces v1"), "{v2:?}");
    assert!(
        v2.stdout.contains("50% on"),
        "the canary step is shown: {v2:?}"
    );

    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    assert!(sdk.group_exists(&w.group(2)).await);
    assert!(
        !sdk.group_exists(&w.group(1)).await,
        "the first group is deleted"
    );
    assert!(
        !sdk.target_group_exists(&w.group(1)).await,
        "and its target group"
    );
    assert!(
        sdk.target_group_exists(&s.placeholder_target_group_name())
            .await,
        "the placeholder is not immune's and stays"
    );
    assert_eq!(
        sdk.live_instances(&w.prefix).await,
        1,
        "builders and old instances are gone"
    );

    let state = w.state();
    let fleet = &state["fleets"][&w.prefix];
    assert_eq!(fleet["active"]["name"], w.group(2));
    assert_eq!(fleet["active"]["release"], "v2");
    let history: Vec<(&str, &str)> = fleet["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["release"].as_str().unwrap(),
                h["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(history, [("v1", "done"), ("v2", "done")]);
    assert!(
        !std::fs::read_to_string(w.dir.join(".immune/state.json"))
            .unwrap()
            .contains("echo baked"),
        "the provision script never reaches state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gate_in_alarm_rolls_back_and_locks_the_fleet() {
    let w = World::new();
    let s = &w.surroundings;
    let gate = format!("gate \"errors\" {{ alarm = \"{}\" }}", s.alarm);
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate),
    );
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    let sdk = w.sdk().await;
    // The alarm fires once traffic reached v2 (one already firing would stop the release
    // before it started, not roll it back).
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", "pause          = \"20s\""),
    );
    let running = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    // LocalStack re-evaluates alarms every period and would overwrite a state that is only
    // set: the metric data keeps it in ALARM, SetAlarmState makes it so at once.
    sdk.put_5xx(&s.load_balancer_dimension(), std::time::SystemTime::now())
        .await;
    sdk.cloudwatch
        .set_alarm_state()
        .alarm_name(&s.alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("test: 5xx rate over threshold")
        .send()
        .await
        .unwrap();

    let v2 = running.wait(std::time::Duration::from_secs(60));
    assert_eq!(v2.code, 3, "a rolled-back release exits 3: {v2:?}");
    assert!(
        v2.stderr
            .contains(&format!("gate errors failed: alarm {} is ALARM", s.alarm)),
        "{v2:?}"
    );
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    assert!(
        !sdk.group_exists(&w.group(2)).await,
        "the new group is destroyed"
    );
    assert!(!sdk.target_group_exists(&w.group(2)).await);
    assert_eq!(sdk.live_instances(&w.prefix).await, 1);

    let locked = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(locked.code, 4, "a locked fleet refuses apply: {locked:?}");
    assert!(locked.stderr.contains("immune unlock"), "{locked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_can_name_its_listener_by_arn() {
    let w = World::new();
    let s = &w.surroundings;
    let config = w.fleet_config(&s.source_ami, &s.load_balancer, "").replace(
        &format!(
            "load_balancer        = \"{}\"\n    listener_port        = 80",
            s.load_balancer
        ),
        &format!("listener_arn         = \"{}\"", s.listener_arn),
    );
    assert!(config.contains("listener_arn"), "{config}");
    w.write("main.hcl", &config);
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    assert_eq!(
        w.sdk().await.weights(&s.listener_arn).await,
        [(w.group(1), 100)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cloud_layer_refuses_to_delete_what_immune_did_not_create() {
    use immune::cloud::{aws::Aws, Cloud, CloudError};
    let w = World::new();
    std::env::set_var("AWS_ENDPOINT_URL", crate::harness::ENDPOINT);
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let aws = Aws::connect(Some("us-east-1".into()), "some-lineage")
        .await
        .unwrap();
    let refused = aws
        .delete_target_group(&w.surroundings.placeholder_target_group)
        .await;
    assert!(
        matches!(refused, Err(CloudError::NotOurs(_))),
        "{refused:?}"
    );
    let sdk = w.sdk().await;
    assert!(
        sdk.target_group_exists(&w.surroundings.placeholder_target_group_name())
            .await
    );
}

/// What an apply that stopped right after CreateTargetGroup leaves behind: the target
/// group, tagged for the state's lineage, the fleet and release, but not recorded in
/// state. `None` makes an untagged one.
async fn leftover_target_group(w: &World, owner: Option<(&str, &str)>) -> String {
    use aws_sdk_elasticloadbalancingv2::types::Tag;
    let sdk = w.sdk().await;
    let mut tags = vec![Tag::builder().key("Name").value(w.group(1)).build()];
    if let Some((lineage, release)) = owner {
        for (k, v) in [
            ("immune:managed", "true"),
            ("immune:lineage", lineage),
            ("immune:fleet", w.prefix.as_str()),
            ("immune:release", release),
        ] {
            tags.push(Tag::builder().key(k).value(v).build());
        }
    }
    let out = sdk
        .elb
        .create_target_group()
        .name(w.group(1))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&w.surroundings.vpc_id)
        .set_tags(Some(tags))
        .send()
        .await
        .expect("CreateTargetGroup");
    sdk.until_target_group_shows(&w.group(1)).await;
    out.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_group_under_the_next_name_is_taken_over_only_by_the_rollout_that_made_it() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    // This state's lineage on a target group no rollout of this state started (another
    // copy of the state made it): not this state's to take. What a stopped rollout made
    // is adopted when it resumes (crash::killed_during_launch...).
    std::fs::create_dir_all(w.dir.join(".immune")).unwrap();
    w.write(
        ".immune/state.json",
        r#"{"version": 2, "lineage": "lineage-of-this-state", "serial": 1, "fleets": {}}"#,
    );
    leftover_target_group(&w, Some(("lineage-of-this-state", "v1"))).await;
    let refused = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "target group {} already exists with this state's lineage, though this state has not made it",
            w.group(1)
        )),
        "{refused:?}"
    );
    assert!(
        w.sdk().await.target_group_exists(&w.group(1)).await,
        "left alone"
    );

    let other = World::new();
    other.write(
        "main.hcl",
        &other.fleet_config(
            &other.surroundings.source_ami,
            &other.surroundings.load_balancer,
            "",
        ),
    );
    leftover_target_group(&other, None).await;
    let refused = other.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "target group {} is held by something not created by immune",
            other.group(1)
        )),
        "an untagged target group of the same name is not taken over: {refused:?}"
    );
    assert!(
        !other.dir.join(".immune/state.json").exists(),
        "refused before anything was started"
    );
    assert!(
        other.sdk().await.target_group_exists(&other.group(1)).await,
        "and it is left alone"
    );
}

/// On a terminal (a pseudo-terminal made by util-linux `script`), apply keeps a live row
/// per observed step under its lines; without one it prints the lines alone.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_apply_shows_a_live_row_with_the_step_time_left_and_gates() {
    let w = World::new();
    let s = &w.surroundings;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", "pause = \"3s\""),
    );
    let command = format!(
        "stty cols 160 rows 40; {} --chdir {} apply --auto-approve --var release=v1",
        env!("CARGO_BIN_EXE_immune"),
        w.dir.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("AWS_ENDPOINT_URL", crate::harness::ENDPOINT)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    let row = format!("fleet.{} step 1/2 50% on {} [", w.prefix, w.group(1));
    assert!(shown.contains(&row), "no live row: {shown}");
    // The gate's state follows the row: OK, or no data while LocalStack has not yet
    // evaluated the fresh alarm.
    assert!(
        shown.contains(" left · errors OK") || shown.contains(" left · errors no data"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("fleet.{}: release complete", w.prefix)),
        "{shown}"
    );

    // Without a terminal: the same lines, no rows.
    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(v2.code, 0, "{v2:?}");
    assert!(!v2.stdout.contains(" left · "), "{v2:?}");
    assert!(v2.stdout.contains("step 1/2: 50% on"), "{v2:?}");
}
