//! Ownership on LocalStack: what another configuration, another tool or a person made
//! stands in the way of a release only as a conflict that `plan` names, with its holder;
//! nothing of it is touched, and the fleet goes on once the obstacle is gone.

use crate::harness::{immune_in, World, ENDPOINT};

fn config(w: &World) -> String {
    let s = &w.surroundings;
    w.fleet_config(&s.source_ami, &s.load_balancer, "")
}

/// The fleet, released once: something live to stand in the way of.
fn release_v1(w: &World) {
    w.write("main.hcl", &config(w));
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
}

fn lineage(w: &World) -> String {
    w.state()["lineage"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_configuration_with_the_same_fleet_name_is_refused_at_plan_and_touches_nothing() {
    let w = World::new();
    release_v1(&w);
    let first = lineage(&w);

    // Another directory, its own state, the same fleet name in the same account.
    let second = w.dir.join("second");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("main.hcl"), config(&w)).unwrap();
    let plan = immune_in(&second, &["plan", "--var", "release=v1"], ENDPOINT);
    assert_eq!(plan.code, 1, "{plan:?}");
    for held in [
        format!(
            "Auto Scaling group {} is held by another immune configuration (state lineage {first})",
            w.group(1)
        ),
        format!(
            "launch template {} is held by another immune configuration (state lineage {first})",
            w.prefix
        ),
    ] {
        assert!(plan.stderr.contains(&held), "{held}\n{plan:?}");
    }
    assert!(
        plan.stderr.contains("keeping its lineage"),
        "the way out: {plan:?}"
    );
    assert!(
        !plan.stdout.contains("reusing") && !plan.stdout.contains("reuse"),
        "another configuration's image is never reused: {plan:?}"
    );

    let apply = immune_in(
        &second,
        &["apply", "--auto-approve", "--var", "release=v2"],
        ENDPOINT,
    );
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(
        !second.join(".immune/state.json").exists(),
        "refused before anything started"
    );
    let sdk = w.sdk().await;
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)],
        "the first configuration's fleet is untouched"
    );
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [w.group(1)]);
    let again = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(
        again.code, 0,
        "the first configuration sees no change: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_switched_under_a_live_fleet_is_refused_at_plan() {
    let w = World::new();
    let sdk = w.sdk().await;
    release_v1(&w);
    let first = lineage(&w);

    // The operator adds an S3 backend, whose bucket holds no state yet, and moves the
    // local state out of the way.
    let bucket = format!("{}-state", w.prefix);
    sdk.bucket(&bucket).await;
    std::fs::rename(
        w.dir.join(".immune/state.json"),
        w.dir.join("old-state.json"),
    )
    .unwrap();
    w.write(
        "backend.hcl",
        &format!("immune {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key    = \"state.json\"\n    region = \"us-east-1\"\n  }}\n}}\n"),
    );
    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!("state lineage {first}")),
        "the holder is named: {plan:?}"
    );
    let rollback = w.immune(&["rollback", &w.prefix]);
    assert_ne!(rollback.code, 0, "{rollback:?}");
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)],
        "the live fleet is untouched"
    );
    assert!(sdk.group_exists(&w.group(1)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_target_group_holding_the_next_name_is_refused_until_it_is_gone() {
    use aws_sdk_elasticloadbalancingv2::types::ProtocolEnum;
    let w = World::new();
    let sdk = w.sdk().await;
    release_v1(&w);

    let foreign = sdk
        .elb
        .create_target_group()
        .name(w.group(2))
        .protocol(ProtocolEnum::Http)
        .port(8080)
        .vpc_id(&w.surroundings.vpc_id)
        .send()
        .await
        .expect("CreateTargetGroup");
    let foreign = foreign.target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    sdk.until_target_group_shows(&w.group(2)).await;
    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!(
            "target group {} is held by something not created by immune",
            w.group(2)
        )),
        "{plan:?}"
    );
    let apply = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(sdk.target_group_exists(&w.group(2)).await, "left alone");
    assert!(!sdk.group_exists(&w.group(2)).await, "nothing was launched");

    // Once the obstacle is gone the fleet goes on: it was never stuck.
    sdk.elb
        .delete_target_group()
        .target_group_arn(&foreign)
        .send()
        .await
        .expect("DeleteTargetGroup");
    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(v2.code, 0, "{v2:?}");
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(2), 100)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untagged_launch_template_of_the_fleets_name_is_refused_and_left_alone() {
    use aws_sdk_ec2::types::RequestLaunchTemplateData;
    let w = World::new();
    let sdk = w.sdk().await;
    w.write("main.hcl", &config(&w));
    let made = sdk
        .ec2
        .create_launch_template()
        .launch_template_name(&w.prefix)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&w.surroundings.source_ami)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let id = made
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap()
        .to_string();
    sdk.until_launch_template_shows(&w.prefix).await;
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!(
            "launch template {} is held by something not created by immune",
            w.prefix
        )),
        "{plan:?}"
    );
    let apply = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    let versions = sdk
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .send()
        .await
        .expect("DescribeLaunchTemplateVersions");
    assert_eq!(
        versions.launch_template_versions().len(),
        1,
        "no version was added"
    );

    sdk.ec2
        .delete_launch_template()
        .launch_template_id(&id)
        .send()
        .await
        .expect("DeleteLaunchTemplate");
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_configurations_run_a_fleet_of_the_same_name_side_by_side_in_namespaces() {
    let first = World::new();
    first.write("main.hcl", &config(&first));
    let v1 = first.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    // A second configuration, behind its own load balancer, names its fleet the same.
    let second = World::new();
    let name = &first.prefix;
    let text = config(&second).replace(
        &format!("fleet \"{}\"", second.prefix),
        &format!("fleet \"{name}\""),
    );
    second.write(
        "main.hcl",
        &format!("immune {{\n  namespace = \"b\"\n}}\n{text}"),
    );
    let plan = second.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains(&format!("b-{name}-v001")), "{plan:?}");
    let apply = second.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(apply.code, 0, "{apply:?}");

    let sdk = first.sdk().await;
    assert_eq!(
        sdk.weights(&second.surroundings.listener_arn).await,
        [(format!("b-{name}-v001"), 100)]
    );
    assert_eq!(
        sdk.weights(&first.surroundings.listener_arn).await,
        [(first.group(1), 100)],
        "the first configuration's fleet is untouched"
    );
    let again = first.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(again.code, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_backend_added_beside_local_state_is_refused_until_the_state_is_migrated() {
    let w = World::new();
    let sdk = w.sdk().await;
    release_v1(&w);
    let state = w.state();

    let bucket = format!("{}-state", w.prefix);
    sdk.bucket(&bucket).await;
    let backend = format!("immune {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key    = \"web/state.json\"\n    region = \"us-east-1\"\n  }}\n}}\n");
    w.write("backend.hcl", &backend);
    for args in [
        vec!["plan", "--var", "release=v2"],
        vec!["apply", "--auto-approve", "--var", "release=v2"],
        vec!["rollback", w.prefix.as_str()],
    ] {
        let refused = w.immune(&args);
        assert_eq!(refused.code, 1, "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("immune init --migrate-state"),
            "{args:?}: {refused:?}"
        );
        assert!(
            refused.stderr.contains(&format!(
                "s3://{bucket}/web/state.json, which holds no state"
            )),
            "{args:?}: {refused:?}"
        );
    }
    assert!(
        sdk.object(&bucket, "web/state.json").await.is_none(),
        "nothing written"
    );

    // `init` alone says where the state is and how to move it.
    let told = w.immune(&["init"]);
    assert_eq!(told.code, 1, "{told:?}");
    assert!(
        told.stdout.contains(&format!(
            "Backend: s3://{bucket}/web/state.json (no state yet)"
        )),
        "{told:?}"
    );
    assert!(
        told.stderr
            .contains("run `immune init --migrate-state` to move it"),
        "{told:?}"
    );
    let init = w.immune(&["init", "--migrate-state"]);
    assert_eq!(init.code, 0, "{init:?}");
    let moved: serde_json::Value =
        serde_json::from_str(&sdk.object(&bucket, "web/state.json").await.unwrap()).unwrap();
    assert_eq!(moved["lineage"], state["lineage"]);
    assert_eq!(moved["serial"], state["serial"], "the serial is kept");
    assert!(w.dir.join(".immune/state.json.migrated").exists());
    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "the live fleet is known again: {plan:?}");

    // Back to the local file: refused again until the state comes back.
    std::fs::remove_file(w.dir.join("backend.hcl")).unwrap();
    let refused = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("s3://{bucket}/web/state.json holds")),
        "{refused:?}"
    );
    let back = w.immune(&["init", "--migrate-state"]);
    assert_eq!(back.code, 0, "{back:?}");
    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(w.state()["lineage"], state["lineage"]);
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)],
        "the fleet was never touched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_auto_scaling_group_holding_the_next_name_is_never_taken_over() {
    use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
    use aws_sdk_ec2::types::RequestLaunchTemplateData;
    let w = World::new();
    let sdk = w.sdk().await;
    release_v1(&w);

    // Someone else's group, under the name immune's next release would take.
    let template = format!("{}-someone-else", w.prefix);
    sdk.ec2
        .create_launch_template()
        .launch_template_name(&template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(&w.surroundings.source_ami)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    sdk.autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(w.group(2))
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_name(&template)
                .build(),
        )
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .vpc_zone_identifier(w.surroundings.subnets.join(","))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    sdk.until_group_shows(&w.group(2)).await;

    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!(
            "Auto Scaling group {} is held by something not created by immune",
            w.group(2)
        )),
        "{plan:?}"
    );
    let apply = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(sdk.group_exists(&w.group(2)).await, "left alone");
    assert!(
        !sdk.target_group_exists(&w.group(2)).await,
        "nothing was created"
    );
    let rollback = w.immune(&["rollback", &w.prefix]);
    assert_ne!(rollback.code, 0, "{rollback:?}");
    assert!(
        sdk.group_exists(&w.group(2)).await,
        "a rollback does not touch it either"
    );

    sdk.autoscaling
        .delete_auto_scaling_group()
        .auto_scaling_group_name(w.group(2))
        .force_delete(true)
        .send()
        .await
        .expect("DeleteAutoScalingGroup");
    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(v2.code, 0, "the fleet was never stuck: {v2:?}");
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(2), 100)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_configuration_on_the_same_listener_is_refused_at_plan() {
    let w = World::new();
    release_v1(&w);

    // Another directory, another fleet name, but the same listener's default action.
    let second = w.dir.join("other");
    std::fs::create_dir_all(&second).unwrap();
    let text = config(&w).replace(
        &format!("fleet \"{}\"", w.prefix),
        &format!("fleet \"{}b\"", w.prefix),
    );
    std::fs::write(second.join("main.hcl"), text).unwrap();
    let plan = immune_in(&second, &["plan", "--var", "release=v1"], ENDPOINT);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(&format!(
            "which forwards to target group {} is held by another immune configuration",
            w.group(1)
        )),
        "{plan:?}"
    );
    let apply = immune_in(
        &second,
        &["apply", "--auto-approve", "--var", "release=v1"],
        ENDPOINT,
    );
    assert_eq!(apply.code, 1, "{apply:?}");
    assert_eq!(
        w.sdk().await.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)],
        "the first configuration keeps its traffic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_copy_of_the_state_is_refused_and_never_touches_the_live_group() {
    let w = World::new();
    release_v1(&w);
    // A copy of the state as it was after v1, kept aside (a backup, a copied directory).
    let stale = w.dir.join("stale");
    std::fs::create_dir_all(stale.join(".immune")).unwrap();
    std::fs::copy(
        w.dir.join(".immune/state.json"),
        stale.join(".immune/state.json"),
    )
    .unwrap();
    std::fs::write(stale.join("main.hcl"), config(&w)).unwrap();
    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(v2.code, 0, "{v2:?}");

    let plan = immune_in(&stale, &["plan", "--var", "release=v3"], ENDPOINT);
    assert_eq!(plan.code, 1, "{plan:?}");
    assert!(
        plan.stderr.contains(
            "already exists with this state's lineage, though this state has not made it"
        ),
        "{plan:?}"
    );
    assert!(plan.stderr.contains("use the newest state"), "{plan:?}");
    let apply = immune_in(
        &stale,
        &["apply", "--auto-approve", "--var", "release=v3"],
        ENDPOINT,
    );
    assert_eq!(apply.code, 1, "{apply:?}");
    let rollback = immune_in(&stale, &["rollback", &w.prefix], ENDPOINT);
    assert_ne!(rollback.code, 0, "{rollback:?}");
    let sdk = w.sdk().await;
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(2), 100)],
        "the live release keeps its traffic"
    );
    assert!(sdk.group_exists(&w.group(2)).await, "and its group");
}
