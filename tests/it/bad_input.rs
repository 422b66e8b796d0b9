//! Bad input ends in one clear error, exit 1, and nothing left behind in the cloud.

use crate::harness::{immune_in, World};

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_required_attribute_names_file_line_and_attribute() {
    let w = World::new();
    let s = &w.surroundings;
    let config = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replace(&format!("source_ami    = \"{}\"", s.source_ami), "");
    w.write("main.hcl", &config);
    let run = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("missing required attribute `source_ami` in image"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--> main.hcl:"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_that_does_not_exist_is_refused_before_anything_is_created() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &format!("{}-nope", w.prefix), ""),
    );
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "load balancer `{}-nope` listener on port 80 not found",
            w.prefix
        )),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("check traffic.load_balancer"),
        "{run:?}"
    );
    let sdk = w.sdk().await;
    assert!(sdk.groups_with_prefix(&w.prefix).await.is_empty());
    assert_eq!(sdk.live_instances(&w.prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_image_that_does_not_exist_is_refused_before_anything_is_created() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config("ami-00000000deadbeef0", &s.load_balancer, ""),
    );
    let run = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("source image ami-00000000deadbeef0 not found"),
        "{run:?}"
    );
    assert!(run.stderr.contains("check image.source_ami"), "{run:?}");
    assert_eq!(w.sdk().await.live_instances(&w.prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_says_so_without_a_debug_dump() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    // Port 9 (discard) on loopback: nothing listens there.
    let run = immune_in(
        &w.dir,
        &["plan", "--var", "release=v1"],
        "http://127.0.0.1:9",
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot reach AWS"), "{run:?}");
    assert!(
        run.stderr.contains("AWS_ENDPOINT_URL (http://127.0.0.1:9)"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("DispatchFailure"),
        "no Rust debug output: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_are_named_as_such_at_once() {
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    let home = w.dir.join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let started = std::time::Instant::now();
    let out = crate::harness::immune_command(
        &w.dir,
        &["plan", "--var", "release=v1"],
        crate::harness::ENDPOINT,
    )
    .env_remove("AWS_ACCESS_KEY_ID")
    .env_remove("AWS_SECRET_ACCESS_KEY")
    .env_remove("AWS_PROFILE")
    .env("HOME", &home)
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no usable AWS credentials"), "{stderr}");
    assert!(stderr.contains("AWS_PROFILE"), "the way out: {stderr}");
    assert!(!stderr.contains("cannot reach AWS"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "not retried as a fault: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_aws_would_refuse_is_refused_by_plan_and_apply_before_anything_is_launched() {
    // `#` is not among the characters ELB takes in a tag value (the target group's
    // `immune:release`): the release was refused by CreateTargetGroup, after the bake.
    let w = World::new();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    for args in [
        &["plan", "--var", "release=feat#12"][..],
        &["apply", "--auto-approve", "--var", "release=feat#12"],
    ] {
        let run = w.immune(args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        for said in [
            "error: release `feat#12` holds `#`, which ELB does not allow in the `immune:release` tag of the release's target group\n --> main.hcl:",
            "the value comes from --var release",
            "letters, digits, spaces and _ . : / = + - @",
            "for example `feat-12`",
        ] {
            assert!(run.stderr.contains(said), "{args:?}: {said:?} in {run:?}");
        }
    }
    let sdk = w.sdk().await;
    assert_eq!(
        sdk.live_instances(&w.prefix).await,
        0,
        "no builder launched"
    );
    assert!(sdk.groups_with_prefix(&w.prefix).await.is_empty());
    // Every page: other tests' target groups share the emulator.
    let mut ours = Vec::new();
    let mut marker = None;
    loop {
        let out = sdk
            .elb
            .describe_target_groups()
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        ours.extend(
            out.target_groups()
                .iter()
                .filter_map(|t| t.target_group_name())
                .filter(|n| n.starts_with(&format!("{}-v", w.prefix)))
                .map(str::to_string),
        );
        marker = out.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    assert!(ours.is_empty(), "no target group made: {ours:?}");
    assert!(
        !w.dir.join(".immune").exists(),
        "refused before the state was opened"
    );
}
