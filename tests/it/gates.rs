//! Gates that never miss, on LocalStack: an ALARM between two polls, an alarm already
//! firing before the release, an ALARM during the drain, and a fresh load balancer that
//! answers with a fixed response.

use crate::harness::{Sdk, World};
use aws_sdk_cloudwatch::types::StateValue;
use std::time::Duration;

/// The fleet with an enforce gate on the surroundings' alarm, `pause` and `poll`.
fn gated(w: &World, pause: &str, poll: &str, drain: &str) -> String {
    let s = &w.surroundings;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    w.fleet_config(&s.source_ami, &s.load_balancer, &gate)
        .replace(
            "pause          = \"1s\"",
            &format!("pause          = \"{pause}\""),
        )
        .replace(
            "poll_interval  = \"200ms\"",
            &format!("poll_interval  = \"{poll}\""),
        )
        .replace(
            "deregistration_delay = \"0s\"",
            &format!("deregistration_delay = \"{drain}\""),
        )
}

/// v1 released with its gate's alarm OK; returns the alarm's name.
async fn release_v1(w: &World, sdk: &Sdk) -> String {
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    w.write("main.hcl", &gated(w, "1s", "200ms", "0s"));
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    alarm
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_that_starts_and_ends_between_two_polls_is_caught_and_rolled_back() {
    let w = World::new();
    let sdk = w.sdk().await;
    let alarm = release_v1(&w, &sdk).await;

    // Polls 5 s apart; the alarm is in ALARM from 1 s to 4 s after the first one.
    w.write("main.hcl", &gated(&w, "12s", "5s", "0s"));
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let out = v2.wait(Duration::from_secs(60));
    assert_eq!(out.code, 3, "caught and rolled back: {out:?}");
    assert!(
        out.stdout.contains("went into ALARM at"),
        "the evidence names the transition: {out:?}"
    );
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)]
    );
    let history = w.fleet_state()["history"].clone();
    let last = history.as_array().unwrap().last().unwrap().clone();
    let evidence = last["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|d| d.get("evidence").filter(|e| !e.is_null()).cloned())
        .expect("the gate failure keeps its evidence");
    assert_eq!(evidence["state"], "ALARM", "{evidence}");
    assert!(
        evidence["since"].is_string(),
        "the transition's time: {evidence}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_already_firing_stops_apply_before_anything_is_launched_and_locks_nothing() {
    let w = World::new();
    let sdk = w.sdk().await;
    let alarm = release_v1(&w, &sdk).await;

    // LocalStack evaluates the alarm every period (10 s): errors keep coming, so that it
    // stays in ALARM while the plan and the apply look at it.
    let lb = w.surroundings.load_balancer_dimension();
    let keep_failing = {
        let (sdk, lb) = (w.sdk().await, lb.clone());
        tokio::spawn(async move {
            loop {
                sdk.put_5xx(&lb, std::time::SystemTime::now()).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let plan = w.immune(&["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("is in ALARM now") && plan.stdout.contains("apply will not start"),
        "plan warns: {plan:?}"
    );
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let v2 = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    keep_failing.abort();
    assert_eq!(v2.code, 1, "{v2:?}");
    assert!(v2.stderr.contains("not released"), "{v2:?}");
    assert!(v2.stderr.contains("the fleet is not locked"), "{v2:?}");
    assert!(!sdk.group_exists(&w.group(2)).await, "nothing was launched");
    assert!(w.fleet_state()["lock"].is_null());
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)]
    );

    // LocalStack's evaluator counts a datum for about 30 s (see `fire_alarm_once` in
    // immune.rs): once the last errors are older, the alarm clears for good.
    tokio::time::sleep(Duration::from_secs(35)).await;
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let again = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(
        again.code, 0,
        "once it clears the release goes out: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_during_the_drain_sends_traffic_back_to_the_old_group() {
    let w = World::new();
    let sdk = w.sdk().await;
    let alarm = release_v1(&w, &sdk).await;

    w.write("main.hcl", &gated(&w, "1s", "200ms", "20s"));
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("drain");
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let out = v2.wait(Duration::from_secs(60));
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(1), 100)],
        "traffic is back on the old group, which was still there"
    );
    assert_eq!(
        sdk.groups_with_prefix(&w.prefix).await,
        [w.group(1).as_str()]
    );
    assert!(!w.fleet_state()["lock"].is_null(), "a failed gate locks");
}

/// A listener on port 81 of the test's load balancer that answers 404, as a fresh one
/// does before anything is deployed.
async fn fixed_response_listener(w: &World, sdk: &Sdk) -> String {
    use aws_sdk_elasticloadbalancingv2::types::{
        Action, ActionTypeEnum, FixedResponseActionConfig, ProtocolEnum,
    };
    let out = sdk
        .elb
        .create_listener()
        .load_balancer_arn(&w.surroundings.load_balancer_arn)
        .protocol(ProtocolEnum::Http)
        .port(81)
        .default_actions(
            Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code("404")
                        .content_type("text/plain")
                        .message_body("nothing here yet")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
    out.listeners()[0].listener_arn().unwrap().to_string()
}

async fn answers_404(sdk: &Sdk, listener: &str) -> bool {
    let out = sdk
        .elb
        .describe_listeners()
        .listener_arns(listener)
        .send()
        .await
        .expect("DescribeListeners");
    out.listeners()[0].default_actions().iter().any(|a| {
        a.fixed_response_config()
            .is_some_and(|c| c.status_code() == Some("404"))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_load_balancer_that_answers_404_gets_its_response_back_when_a_first_release_fails()
{
    let w = World::new();
    let sdk = w.sdk().await;
    let listener = fixed_response_listener(&w, &sdk).await;
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let config = gated(&w, "8s", "200ms", "0s")
        .replace("listener_port        = 80", "listener_port        = 81");
    w.write("main.hcl", &config);
    let plan = w.immune(&["plan", "--detailed-exitcode", "--var", "release=v1"]);
    assert_eq!(plan.code, 2, "a fixed response is a valid start: {plan:?}");
    assert!(plan.stdout.contains("a fixed response 404"), "{plan:?}");

    let bad = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    w.wait_for_phase("observe");
    assert_eq!(sdk.weights(&listener).await, [(w.group(1), 100)]);
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let out = bad.wait(Duration::from_secs(60));
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        answers_404(&sdk, &listener).await,
        "the fixed response is back"
    );
    assert!(!sdk.group_exists(&w.group(1)).await);

    // Unlocked and with the alarm clear, a first release goes out.
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let unlock = w.immune(&["unlock", &w.prefix, "--reason", "the test"]);
    assert_eq!(unlock.code, 0, "{unlock:?}");
    w.write(
        "main.hcl",
        &config.replace("pause          = \"8s\"", "pause          = \"1s\""),
    );
    let good = w.immune(&["apply", "--auto-approve", "--var", "release=v2"]);
    assert_eq!(good.code, 0, "{good:?}");
    assert_eq!(sdk.weights(&listener).await, [(w.group(2), 100)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_and_promote_steer_a_running_rollout() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    assert_eq!(
        w.immune(&["apply", "--auto-approve", "--var", "release=v1"])
            .code,
        0
    );
    // Steps of ten minutes: only a person makes this release go faster.
    let slow = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replace("pause          = \"1s\"", "pause = \"10m\"");
    w.write("main.hcl", &slow);
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    let not_paused = w.immune(&["resume", &w.prefix]);
    assert_eq!(not_paused.code, 1, "{not_paused:?}");
    assert!(
        not_paused.stderr.contains("is not paused"),
        "{not_paused:?}"
    );

    let pause = w.immune(&["pause", &w.prefix]);
    assert_eq!(pause.code, 0, "{pause:?}");
    assert!(pause.stdout.contains("paused"), "{pause:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.fleet_state()["rollout"]["held_by"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pause was not heard"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = w.immune(&["status", &w.prefix]);
    assert!(status.stdout.contains("PAUSED:"), "{status:?}");
    let resume = w.immune(&["resume", &w.prefix]);
    assert_eq!(resume.code, 0, "{resume:?}");
    while !w.fleet_state()["rollout"]["held_by"].is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the resume was not heard"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Step 1 of 2 passes at once; then all that is left.
    assert_eq!(w.immune(&["promote", &w.prefix]).code, 0);
    while w.fleet_state()["rollout"]["phase"]["step"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the promote was not heard"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.wait_for_phase("observe");
    assert_eq!(w.immune(&["promote", &w.prefix, "--full"]).code, 0);
    let out = v2.wait(Duration::from_secs(60));
    assert_eq!(out.code, 0, "promoted to the end: {out:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    let history = w.immune(&["history", &w.prefix, "--json"]);
    for said in [
        "paused by",
        "resumed by",
        "promoted by",
        "promoted in full by",
    ] {
        assert!(history.stdout.contains(said), "{said}: {history:?}");
    }
    let none = w.immune(&["pause", &w.prefix]);
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("no release in progress"), "{none:?}");
}

/// Every line of an `apply --json` run: each must be a JSON event valid against
/// docs/events.schema.json (and the plan in it against docs/plan.schema.json).
fn events(out: &crate::harness::Run) -> Vec<serde_json::Value> {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    out.stdout
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{out:?}"));
            let errors: Vec<String> = validator
                .iter_errors(&event)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}: {line}");
            if event["type"] == "plan" {
                assert_eq!(
                    crate::schema::plan_schema_errors(&event["plan"]),
                    Vec::<String>::new()
                );
            }
            event
        })
        .collect()
}

fn of_type<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_json_prints_only_events_through_steps_a_manual_gate_and_a_rollback() {
    let w = World::new();
    let sdk = w.sdk().await;
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    let s = &w.surroundings;
    let with_gate = |mode: &str, pause: &str| {
        let gate = format!(
            "gate \"errors\" {{\n      alarm = \"{alarm}\"\n      mode = \"{mode}\"\n    }}"
        );
        w.fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", &format!("pause = \"{pause}\""))
    };

    // A release in two steps.
    w.write("main.hcl", &with_gate("enforce", "1s"));
    let v1 = w.immune(&["apply", "--json", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    let seen = events(&v1);
    assert_eq!(seen[0]["type"], "plan");
    assert_eq!(seen.last().unwrap()["type"], "done");
    assert_eq!(seen.last().unwrap()["exit_code"], 0);
    assert!(of_type(&seen, "decision")
        .iter()
        .any(|e| e["message"] == "listener weights set and verified: 50% on the new group"));
    assert!(of_type(&seen, "progress")
        .iter()
        .any(|e| e["message"].as_str().unwrap().starts_with("step 1/2")));
    let outcome = of_type(&seen, "outcome");
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0]["result"], "released");
    assert_eq!(outcome[0]["group"], w.group(1));

    // A manual gate that waits for a person, answered by `immune approve`.
    w.write("main.hcl", &with_gate("manual", "3s"));
    let v2 = w.spawn(&["apply", "--json", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while w.fleet_state()["rollout"]["awaiting"].is_null() {
        assert!(std::time::Instant::now() < deadline, "the gate never asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    assert_eq!(w.immune(&["approve", &w.prefix]).code, 0);
    let v2 = v2.wait(Duration::from_secs(60));
    assert_eq!(v2.code, 0, "{v2:?}");
    let seen = events(&v2);
    assert!(of_type(&seen, "decision").iter().any(|e| e["message"]
        .as_str()
        .unwrap()
        .starts_with("waiting for a person")));
    assert!(of_type(&seen, "decision").iter().any(|e| e["message"]
        .as_str()
        .unwrap()
        .starts_with("gate errors approved by")));

    // A gate that fails: the rollback, the error and the exit code are events too.
    w.write("main.hcl", &with_gate("enforce", "10s"));
    let v3 = w.spawn(&["apply", "--json", "--auto-approve", "--var", "release=v3"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let v3 = v3.wait(Duration::from_secs(60));
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    assert_eq!(v3.code, 3, "{v3:?}");
    let seen = events(&v3);
    let outcome = of_type(&seen, "outcome");
    assert_eq!(outcome[0]["result"], "rolled_back");
    assert_eq!(outcome[0]["locked"], true);
    assert_eq!(of_type(&seen, "error")[0]["exit_code"], 3);
    assert_eq!(seen.last().unwrap()["exit_code"], 3);

    // It never asks: without --auto-approve or a saved plan it refuses, as an event too.
    let asks = w.immune(&["apply", "--json", "--var", "release=v4"]);
    assert_eq!(asks.code, 1, "{asks:?}");
    assert_eq!(events(&asks).last().unwrap()["type"], "done");
}

/// A hundred fleets' gates are read in one DescribeAlarms, which AWS answers 50 alarms a
/// page: the alarms on the second page must be read too, or their gates look missing.
#[tokio::test(flavor = "multi_thread")]
async fn gate_alarms_beyond_the_first_page_of_describe_alarms_are_read() {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    const GATES: usize = 60;
    let w = World::new();
    let sdk = w.sdk().await;
    let names: Vec<String> = (0..GATES)
        .map(|i| format!("{}-gate-{i:02}", w.prefix))
        .collect();
    for name in &names {
        sdk.cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("Immune/Test")
            .metric_name("Errors")
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(1.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await
            .expect("PutMetricAlarm");
    }
    // LocalStack pages them as AWS does (our plugin): 50, then the rest.
    let first = sdk
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(names.clone()))
        .send()
        .await
        .expect("DescribeAlarms");
    assert_eq!(first.metric_alarms().len(), 50);
    assert!(first.next_token().is_some());

    let gates: String = names
        .iter()
        .enumerate()
        .map(|(i, alarm)| format!("gate \"g{i}\" {{\n      alarm = \"{alarm}\"\n    }}\n    "))
        .collect();
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gates),
    );
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "every gate's alarm is found: {plan:?}");
    assert!(!plan.stderr.contains("not found"), "{plan:?}");
}
