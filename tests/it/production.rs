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
            (state != "terminated").then(|| (i.instance_id()?.to_string(), state))
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
