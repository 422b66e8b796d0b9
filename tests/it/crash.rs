//! kill -9 at every phase of a release, on LocalStack: the next `apply` (no
//! force-unlock) finishes the release or its rollback, nothing it made is left over, and
//! a rollback decided before the kill is never reversed.

use crate::harness::{Sdk, World};
use aws_sdk_cloudwatch::types::StateValue;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Where a kill lands, read from the fleet's recorded state.
#[derive(Clone, Copy)]
enum At {
    /// The builder is launched and recorded, the image not yet made.
    Bake,
    Launch,
    WaitHealthy,
    Observe,
    /// Draining the previous group.
    Retire,
    /// Rolling back after a gate failed.
    RollBack,
}

impl At {
    /// The phases before the first observation pass in a blink on LocalStack, so a kill
    /// aimed at one lands there or a little later, never earlier.
    fn reached(self, fleet: &Value) -> bool {
        let rollout = &fleet["rollout"];
        let phase = rollout["phase"]["name"].as_str().unwrap_or_default();
        let or_later = |from: &[&str]| from.contains(&phase);
        match self {
            At::Bake => {
                (phase == "bake" && !rollout["builder"].is_null())
                    || or_later(&["launch", "wait_healthy", "shift", "observe"])
            }
            At::Launch => or_later(&["launch", "wait_healthy", "shift", "observe"]),
            At::WaitHealthy => or_later(&["wait_healthy", "shift", "observe"]),
            At::Observe => phase == "observe",
            At::Retire => phase == "retire",
            At::RollBack => phase == "roll_back",
        }
    }
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

async fn launch_template_versions(sdk: &Sdk, name: &str) -> usize {
    sdk.ec2
        .describe_launch_template_versions()
        .launch_template_name(name)
        .send()
        .await
        .map(|out| out.launch_template_versions().len())
        .unwrap_or(0)
}

/// Releases v1, then starts v2 (with a new bake), kills it with SIGKILL once `at` is
/// recorded, and runs `apply` again.
async fn killed_at(at: At) {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let base = w.fleet_config(&s.source_ami, &s.load_balancer, &gate);
    w.write("main.hcl", &base);
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    // v2 bakes a new image, observes long enough to be caught, and drains for a while.
    let slow = base
        .replace("echo baked", "echo baked v2")
        .replace("pause          = \"1s\"", "pause          = \"20s\"")
        .replace(
            "deregistration_delay = \"0s\"",
            "deregistration_delay = \"20s\"",
        );
    let slow = match at {
        At::Retire => slow.replace("pause          = \"20s\"", "pause          = \"1s\""),
        _ => slow,
    };
    w.write("main.hcl", &slow);
    let mut running = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut alarm_set = false;
    loop {
        let fleet = w.fleet_state();
        if matches!(at, At::RollBack) && !alarm_set && At::Observe.reached(&fleet) {
            sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
            alarm_set = true;
        }
        if at.reached(&fleet) {
            break;
        }
        let (finished, run) = running.peek();
        assert!(
            !finished,
            "the apply finished before the kill point: {run:?}"
        );
        assert!(Instant::now() < deadline, "never reached the kill point");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(running.pid());
    let killed = running.wait(Duration::from_secs(10));
    assert_eq!(killed.code, -1, "killed by the signal: {killed:?}");
    let decided_rollback = matches!(at, At::RollBack);
    if decided_rollback {
        // The alarm clears: the decision stands anyway.
        sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    }

    w.write(
        "main.hcl",
        &slow
            .replace("pause          = \"20s\"", "pause          = \"1s\"")
            .replace(
                "deregistration_delay = \"20s\"",
                "deregistration_delay = \"0s\"",
            ),
    );
    let next = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    let (active, gone) = if decided_rollback {
        assert_eq!(
            next.code, 3,
            "the rollback is finished, not reversed: {next:?}"
        );
        assert!(
            !w.fleet_state()["lock"].is_null(),
            "a failed gate locks the fleet"
        );
        (w.group(1), w.group(2))
    } else {
        assert_eq!(next.code, 0, "{next:?}");
        (w.group(2), w.group(1))
    };
    assert_eq!(sdk.weights(&s.listener_arn).await, [(active.clone(), 100)]);
    assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [active.as_str()]);
    assert!(!sdk.target_group_exists(&gone).await, "{gone} is deleted");
    assert_eq!(
        sdk.live_instances(&w.prefix).await,
        1,
        "only the active group's instance runs: no builder is left"
    );
    let versions = launch_template_versions(&sdk, &w.prefix).await;
    assert_eq!(
        versions, 1,
        "only the running release's launch template version is left: the undone or retired one is deleted, none was made twice"
    );
    let images = sdk
        .ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values(w.group(2))
                .build(),
        )
        .send()
        .await
        .expect("DescribeImages");
    assert!(
        images.images().len() <= 1,
        "no second image of one name: {:?}",
        images.images()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_bake_the_next_apply_finishes_without_a_leftover_builder() {
    killed_at(At::Bake).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_during_launch_the_next_apply_finishes() {
    killed_at(At::Launch).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_waiting_for_health_the_next_apply_finishes() {
    killed_at(At::WaitHealthy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_observing_a_step_the_next_apply_finishes() {
    killed_at(At::Observe).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_draining_the_next_apply_finishes() {
    killed_at(At::Retire).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_rolling_back_the_next_apply_finishes_the_rollback() {
    killed_at(At::RollBack).await;
}
