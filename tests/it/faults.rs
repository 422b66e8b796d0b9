//! Fault injection on LocalStack: whole releases by the real binary with 5%, 10% and 20%
//! of its AWS calls failing (throttling, 5xx, and timeouts after the call took effect).
//! Every release ends done or stops resumably; a fault never locks the fleet, and one
//! clean apply repairs any stop with nothing left over.

use crate::harness::{immune_command, World, ENDPOINT};

fn apply_with_faults(w: &World, release: &str, faults: &str) -> (i32, String) {
    let out = immune_command(
        &w.dir,
        &[
            "apply",
            "--auto-approve",
            "--var",
            &format!("release={release}"),
        ],
        ENDPOINT,
    )
    .env("IMMUNE_INJECT_FAULTS", faults)
    .env("IMMUNE_RETRY_BUDGET", "2s")
    .output()
    .expect("run immune");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn releases_with_faults(rate: &str) {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate),
    );
    sdk.cloudwatch
        .set_alarm_state()
        .alarm_name(&s.alarm)
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("the test")
        .send()
        .await
        .expect("SetAlarmState");
    for (seq, release) in [(1, "v1"), (2, "v2")] {
        let (code, output) = apply_with_faults(&w, release, &format!("{rate}:{seq}"));
        assert!(
            code == 0 || code == 1,
            "{release} at {rate}: a fault neither rolls back nor locks (exit {code})\n{output}"
        );
        assert!(
            w.fleet_state()["lock"].is_null(),
            "{release} at {rate}: a fault locked the fleet\n{output}"
        );
        if code == 1 {
            assert!(
                output.contains("run `immune apply` again")
                    || output.contains("run `immune apply` to resume"),
                "a stop says how to go on: {output}"
            );
            let repair = w.immune(&[
                "apply",
                "--auto-approve",
                "--var",
                &format!("release={release}"),
            ]);
            assert_eq!(
                repair.code, 0,
                "one clean apply repairs the stop: {repair:?}\nafter {output}"
            );
        }
        let group = w.group(seq);
        assert_eq!(sdk.weights(&s.listener_arn).await, [(group.clone(), 100)]);
        assert_eq!(sdk.groups_with_prefix(&w.prefix).await, [group.as_str()]);
        assert_eq!(sdk.live_instances(&w.prefix).await, 1, "no builder is left");
    }
    let versions = sdk
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(&w.prefix)
        .send()
        .await
        .expect("DescribeLaunchTemplateVersions");
    assert_eq!(
        versions.launch_template_versions().len(),
        1,
        "only the running release's launch template version is left, none made twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_with_5_percent_of_calls_failing_end_done_or_resumable() {
    releases_with_faults("0.05").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_with_10_percent_of_calls_failing_end_done_or_resumable() {
    releases_with_faults("0.1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn releases_with_20_percent_of_calls_failing_end_done_or_resumable() {
    releases_with_faults("0.2").await;
}
