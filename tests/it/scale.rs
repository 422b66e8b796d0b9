//! Many fleets in one configuration on LocalStack: released side by side
//! (`--parallelism`), each on its own listener rule of one load balancer.

use crate::harness::{Sdk, World};
use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, RuleCondition,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// Listener rules 1..=count, each answering with a fixed response as a fresh route does.
pub async fn rules(sdk: &Sdk, listener_arn: &str, count: u32) {
    for priority in 1..=count {
        sdk.elb
            .create_rule()
            .listener_arn(listener_arn)
            .priority(priority as i32)
            .conditions(
                RuleCondition::builder()
                    .field("path-pattern")
                    .values(format!("/f{priority}/*"))
                    .build(),
            )
            .actions(
                Action::builder()
                    .r#type(ActionTypeEnum::FixedResponse)
                    .fixed_response_config(
                        FixedResponseActionConfig::builder()
                            .status_code("503")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("CreateRule");
    }
}

/// A fleet named `name` on rule `priority`, with `extra` in its rollout block.
pub fn fleet(w: &World, name: &str, priority: u32, pause: &str, extra: &str) -> String {
    let s = &w.surroundings;
    format!(
        r##"
fleet "{name}" {{
  release = var.release
  image {{
    source_ami    = "{source_ami}"
    instance_type = "t3.micro"
    provision     = "#!/bin/sh\necho baked"
  }}
  instances {{
    instance_type   = "t3.micro"
    subnets         = {subnets:?}
    security_groups = ["{sg}"]
    capacity {{
      min     = 1
      max     = 1
      desired = 1
    }}
  }}
  traffic {{
    load_balancer        = "{lb}"
    listener_port        = 80
    rule_priority        = {priority}
    port                 = 8080
    deregistration_delay = "0s"
  }}
  rollout {{
    steps          = [50, 100]
    pause          = "{pause}"
    healthy_within = "1m"
    poll_interval  = "200ms"
    {extra}
  }}
}}
"##,
        source_ami = s.source_ami,
        subnets = s.subnets,
        sg = s.security_group,
        lb = s.load_balancer,
    )
}

/// The most fleets whose releases were under way at once, from the order of the lines.
fn most_at_once(stdout: &str) -> usize {
    let mut running = BTreeSet::new();
    let mut most = 0;
    for line in stdout.lines() {
        let Some((fleet, said)) = line
            .strip_prefix("fleet.")
            .and_then(|rest| rest.split_once(": "))
        else {
            continue;
        };
        if said.starts_with("starting release") {
            running.insert(fleet.to_string());
        } else if said.starts_with("release complete") || said.starts_with("ROLLED BACK") {
            running.remove(fleet);
        }
        most = most.max(running.len());
    }
    most
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_fleets_go_out_five_at_a_time_and_one_rollback_stops_only_its_own() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    rules(&sdk, &s.listener_arn, 20).await;
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    // The fleet named after the prefix fails its gate; `late` runs after it, `third`
    // after another fleet.
    let bad = w.prefix.clone();
    let name = |i: u32| format!("{}n{i}", w.prefix);
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let mut config = String::from("variable \"release\" { type = string }\n");
    config.push_str(&fleet(&w, &bad, 1, "8s", &gate));
    for i in 2..=18 {
        config.push_str(&fleet(&w, &name(i), i, "1s", ""));
    }
    let third = name(19);
    let late = name(20);
    config.push_str(&fleet(
        &w,
        &third,
        19,
        "1s",
        &format!("after = [fleet.{}]", name(3)),
    ));
    config.push_str(&fleet(
        &w,
        &late,
        20,
        "1s",
        &format!("after = [fleet.{bad}]"),
    ));
    w.write("main.hcl", &config);

    let apply = w.spawn(&[
        "apply",
        "--auto-approve",
        "--parallelism",
        "5",
        "--var",
        "release=v1",
    ]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
    let out = apply.wait(Duration::from_secs(300));
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;

    assert_eq!(out.code, 3, "the worst outcome is the rollback: {out:?}");
    assert!(
        out.stdout.contains(&format!("fleet.{bad}: ROLLED BACK")),
        "{out:?}"
    );
    let most = most_at_once(&out.stdout);
    assert!(
        (2..=5).contains(&most),
        "releases ran side by side, at most 5 at once, not {most}: {out:?}"
    );
    // Every other fleet finished, in one state document that lost none of them.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.dir.join(".immune/state.json")).unwrap())
            .unwrap();
    for i in 2..=19 {
        let fleet = name(i);
        assert!(
            out.stdout
                .contains(&format!("fleet.{fleet}: release complete")),
            "{fleet}: {out:?}"
        );
        assert_eq!(
            state["fleets"][&fleet]["active"]["name"],
            format!("{fleet}-v001"),
            "{fleet} in {state:#}"
        );
        assert!(state["fleets"][&fleet]["rollout"].is_null(), "{state:#}");
    }
    assert!(state["fleets"][&bad]["lock"].is_object(), "{state:#}");
    // `after` held: the third fleet started after its predecessor finished, and the
    // one after the rolled-back fleet never started.
    let done = out
        .stdout
        .find(&format!("fleet.{}: release complete", name(3)))
        .unwrap();
    let started = out
        .stdout
        .find(&format!("fleet.{third}: starting release"))
        .unwrap();
    assert!(done < started, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "fleet {late} was not started: it runs after fleet {bad}, which was rolled back in this apply"
        )),
        "{out:?}"
    );
    assert!(!sdk.group_exists(&format!("{late}-v001")).await);
    assert!(!sdk.group_exists(&format!("{bad}-v001")).await);
}

/// `immune ARGS` with every AWS request logged: the requests, by operation.
pub fn counted(w: &World, args: &[&str]) -> (crate::harness::Run, Vec<String>) {
    let out = crate::harness::immune_command(&w.dir, args, crate::harness::ENDPOINT)
        .env("IMMUNE_LOG", "immune::aws=debug")
        .output()
        .expect("run immune");
    let run = crate::harness::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let calls = run
        .stderr
        .lines()
        .filter(|l| l.contains("immune::aws: call"))
        .filter_map(|l| l.split("operation=").nth(1))
        .map(|op| op.trim_matches('"').to_string())
        .collect();
    (run, calls)
}

/// A configuration of fleets 1..=count, each on its own rule.
fn fleets(w: &World, count: u32) -> String {
    let gate = format!(
        "gate \"errors\" {{\n      alarm = \"{}\"\n    }}",
        w.surroundings.alarm
    );
    let mut config = String::from("variable \"release\" { type = string }\n");
    for i in 1..=count {
        // Polled every second: fifty fleets baking side by side at 200 ms would keep
        // LocalStack busy answering their builders and images.
        let fleet = fleet(w, &format!("{}n{i}", w.prefix), i, "0s", &gate)
            .replace("poll_interval  = \"200ms\"", "poll_interval  = \"1s\"");
        config.push_str(&fleet);
    }
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_and_status_of_fifty_live_fleets_make_no_more_calls_than_of_five() {
    let w = World::new();
    let sdk = w.sdk().await;
    rules(&sdk, &w.surroundings.listener_arn, 50).await;
    sdk.set_alarm(&w.surroundings.alarm, StateValue::Ok).await;
    let mut seen = Vec::new();
    for count in [5, 50] {
        w.write("main.hcl", &fleets(&w, count));
        let apply = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
        assert_eq!(apply.code, 0, "{apply:?}");
        let (plan, plan_calls) = counted(&w, &["plan", "--var", "release=v1"]);
        assert_eq!(plan.code, 0, "{plan:?}");
        assert!(plan.stdout.contains("No changes"), "{plan:?}");
        let (status, status_calls) = counted(&w, &["status"]);
        assert_eq!(status.code, 0, "{status:?}");
        assert!(
            status
                .stdout
                .contains(&format!("{}n{count}-v001", w.prefix)),
            "{status:?}"
        );
        seen.push((plan_calls, status_calls));
    }
    let (five, fifty) = (&seen[0], &seen[1]);
    assert!(
        fifty.0.len() <= five.0.len() && fifty.0.len() <= 25,
        "plan: 5 fleets {:?}\n50 fleets {:?}",
        five.0,
        fifty.0
    );
    assert!(
        fifty.1.len() <= five.1.len() && fifty.1.len() <= 25,
        "status: 5 fleets {:?}\n50 fleets {:?}",
        five.1,
        fifty.1
    );
}

/// Waits until every fleet named has its rollout recorded in `phase`.
fn wait_until_all_in(w: &World, fleets: &[String], phase: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let state: serde_json::Value = std::fs::read_to_string(w.dir.join(".immune/state.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if fleets
            .iter()
            .all(|f| state["fleets"][f]["rollout"]["phase"]["name"] == phase)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every fleet reached {phase}: {state:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fleets observing side by side, stopped by Ctrl-C or by kill -9, are each where the
/// state says: the next apply finishes every one of them, nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn fleets_stopped_side_by_side_by_ctrl_c_or_kill_9_are_all_finished_by_the_next_apply() {
    let w = World::new();
    let sdk = w.sdk().await;
    rules(&sdk, &w.surroundings.listener_arn, 4).await;
    let names: Vec<String> = (1..=4).map(|i| format!("{}n{i}", w.prefix)).collect();
    let mut config = String::from("variable \"release\" { type = string }\n");
    for (i, name) in names.iter().enumerate() {
        config.push_str(&fleet(&w, name, i as u32 + 1, "10s", ""));
    }
    w.write("main.hcl", &config);
    // Ctrl-C: every fleet stops at its next safe point, and says so.
    let apply = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    wait_until_all_in(&w, &names, "observe");
    apply.interrupt();
    let stopped = apply.wait(Duration::from_secs(60));
    assert_eq!(stopped.code, 1, "{stopped:?}");
    for name in &names {
        assert!(
            stopped
                .stderr
                .contains(&format!("fleet {name}: interrupted during")),
            "{name}: {stopped:?}"
        );
    }
    // The next apply goes on with all four; kill -9 while they observe again.
    let apply = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    wait_until_all_in(&w, &names, "observe");
    apply.signal("KILL");
    let killed = apply.wait(Duration::from_secs(10));
    assert_eq!(killed.code, -1, "{killed:?}");
    // A lock left by a killed process is taken over; every fleet finishes.
    let done = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(done.code, 0, "{done:?}");
    let state = w.state();
    for name in &names {
        assert_eq!(
            state["fleets"][name]["active"]["name"],
            format!("{name}-v001")
        );
        assert!(state["fleets"][name]["rollout"].is_null(), "{state:#}");
        assert_eq!(
            sdk.groups_with_prefix(name).await,
            [format!("{name}-v001")],
            "one group per fleet"
        );
    }
}
