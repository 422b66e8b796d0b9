//! The immune system on LocalStack: gates that roll a release back (at a later step, for
//! an unhealthy group, for missing data), gates that only record (dry-run) or ask a
//! person (manual), and `immune rollback` to a kept group. Outcomes are checked through
//! the AWS SDK and the recorded history, not only through exit codes.

use crate::harness::{Background, Sdk, World};
use aws_sdk_cloudwatch::types::StateValue;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};

/// Longest an apply may take in these tests (a bake, a launch, two short steps).
const APPLY: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// Helpers

/// The harness's fleet with its own observation `pause` and `steps`, and `extra` HCL in
/// the rollout block.
fn config(w: &World, pause: &str, steps: &str, extra: &str) -> String {
    let s = &w.surroundings;
    let text = w.fleet_config(&s.source_ami, &s.load_balancer, extra);
    let pause_line = "pause          = \"1s\"";
    let steps_line = "steps          = [50, 100]";
    assert!(
        text.contains(pause_line) && text.contains(steps_line),
        "the harness's rollout block changed: {text}"
    );
    text.replace(pause_line, &format!("pause          = \"{pause}\""))
        .replace(steps_line, &format!("steps          = {steps}"))
}

/// A gate on the surroundings' `<prefix>-5xx` alarm.
fn errors_gate(w: &World, mode: &str) -> String {
    format!(
        "gate \"errors\" {{\n      alarm = \"{}\"\n      mode  = \"{mode}\"\n    }}",
        w.surroundings.alarm
    )
}

/// A metric gate: immune creates the alarm `<group>-latency` for each release.
fn latency_gate(insufficient_data: &str) -> String {
    format!(
        r#"gate "latency" {{
      metric {{
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = {{ TargetGroup = release.target_group }}
        statistic  = "Average"
        period     = "60s"
        threshold  = 0.5
        comparison = ">"
      }}
      insufficient_data = "{insufficient_data}"
    }}"#
    )
}

/// An operator command (status, history, approve, reject, unlock, rollback), run the way
/// an operator does from another terminal: without the release's variables.
fn op(w: &World, args: &[&str]) -> crate::harness::Run {
    w.immune(args)
}

fn apply(w: &World, release: &str) -> crate::harness::Run {
    w.immune(&[
        "apply",
        "--auto-approve",
        "--var",
        &format!("release={release}"),
    ])
}

fn apply_in_background(w: &World, release: &str) -> Background {
    w.spawn(&[
        "apply",
        "--auto-approve",
        "--var",
        &format!("release={release}"),
    ])
}

/// Polls `check` every 100 ms until it gives a value. Panics with `what` after `timeout`,
/// or at once with the apply's output if the apply exits first.
async fn wait_until<T>(
    what: &str,
    timeout: Duration,
    apply: &mut Background,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        let (exited, run) = apply.peek();
        assert!(!exited, "the apply exited before {what}: {run:?}");
        assert!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; the apply so far: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the recorded rollout of `group` is in `phase` (e.g. observe, step 1).
async fn wait_for_phase(w: &World, apply: &mut Background, group: &str, phase: Value) {
    let what = format!("rollout of {group} in phase {phase}");
    wait_until(&what, APPLY, apply, || {
        let rollout = &w.fleet_state()["rollout"];
        (rollout["group"] == group && rollout["phase"] == phase).then_some(())
    })
    .await
}

/// `immune status FLEET --json`, the fleet's entry.
/// v1 released with a 1s pause, then v2 started in the background with `pause` and
/// waited for until it observes `step`.
async fn second_release_observing(
    w: &World,
    steps: &str,
    extra: &str,
    pause: &str,
    step: usize,
) -> Background {
    w.write("main.hcl", &config(w, "1s", steps, extra));
    let v1 = apply(w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");
    w.write("main.hcl", &config(w, pause, steps, extra));
    let mut v2 = apply_in_background(w, "v2");
    wait_for_phase(
        w,
        &mut v2,
        &w.group(2),
        json!({"name": "observe", "step": step}),
    )
    .await;
    v2
}

fn status(w: &World) -> Value {
    let run = op(w, &["status", &w.prefix, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("status JSON");
    assert_eq!(report[0]["fleet"], w.prefix.as_str(), "{report}");
    report[0].clone()
}

/// `immune history FLEET --json`.
fn history(w: &World) -> Vec<Value> {
    let run = op(w, &["history", &w.prefix, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(&run.stdout).expect("history JSON")
}

/// The history entry of `group`.
fn entry_of(history: &[Value], group: &str) -> Value {
    history
        .iter()
        .find(|e| e["group"] == group)
        .unwrap_or_else(|| panic!("no history entry for {group}: {history:?}"))
        .clone()
}

fn decisions(entry: &Value) -> &[Value] {
    entry["decisions"].as_array().expect("decisions")
}

async fn set_alarm(sdk: &Sdk, alarm: &str, state: StateValue, reason: &str) {
    sdk.cloudwatch
        .set_alarm_state()
        .alarm_name(alarm)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .expect("SetAlarmState");
}

/// The alarm's state, or None when it does not exist.
async fn alarm_state(sdk: &Sdk, alarm: &str) -> Option<String> {
    let out = sdk
        .cloudwatch
        .describe_alarms()
        .alarm_names(alarm)
        .send()
        .await
        .expect("DescribeAlarms");
    out.metric_alarms()
        .first()
        .map(|a| a.state_value().expect("state").as_str().to_string())
}

/// LocalStack evaluates the 5xx alarm (period 10 s, 1 evaluation period) every 10 s over
/// the last 30 s of data, and would overwrite a state that is only set. So the alarm is
/// put into ALARM with SetAlarmState (at once) AND a datum that keeps it there.
///
/// This datum is backdated by 20 s: the alarm stays in ALARM for at least 10 s, and no
/// evaluation sees the datum after the returned instant, so the alarm can be made OK
/// again for good (`alarm_back_to_ok`).
async fn fire_alarm_once(sdk: &Sdk, w: &World) -> Instant {
    let load_balancer = w.surroundings.load_balancer_dimension();
    sdk.put_5xx(&load_balancer, SystemTime::now() - Duration::from_secs(20))
        .await;
    set_alarm(sdk, &w.surroundings.alarm, StateValue::Alarm, "test: 5xx").await;
    Instant::now() + Duration::from_secs(12)
}

/// After `fire_alarm_once`: OK again, and no later evaluation turns it back to ALARM.
async fn alarm_back_to_ok(sdk: &Sdk, w: &World, data_gone: Instant) {
    tokio::time::sleep(data_gone.saturating_duration_since(Instant::now())).await;
    let alarm = &w.surroundings.alarm;
    set_alarm(sdk, alarm, StateValue::Ok, "test: 5xx gone").await;
    assert_eq!(alarm_state(sdk, alarm).await.as_deref(), Some("OK"));
}

/// Keeps the 5xx alarm in ALARM (fresh data every second) until dropped.
struct AlarmFiring(tokio::task::JoinHandle<()>);

impl Drop for AlarmFiring {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_alarm_firing(w: &World) -> AlarmFiring {
    let sdk = w.sdk().await;
    let load_balancer = w.surroundings.load_balancer_dimension();
    sdk.put_5xx(&load_balancer, SystemTime::now()).await;
    set_alarm(&sdk, &w.surroundings.alarm, StateValue::Alarm, "test: 5xx").await;
    assert_eq!(
        alarm_state(&sdk, &w.surroundings.alarm).await.as_deref(),
        Some("ALARM")
    );
    AlarmFiring(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sdk.put_5xx(&load_balancer, SystemTime::now()).await;
        }
    }))
}

/// (desired capacity, instance ids) of an Auto Scaling group, or None when it is gone.
async fn group(sdk: &Sdk, name: &str) -> Option<(i32, Vec<String>)> {
    let out = sdk
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    out.auto_scaling_groups().first().map(|g| {
        (
            g.desired_capacity().unwrap_or_default(),
            g.instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect(),
        )
    })
}

// ---------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_at_the_second_step_rolls_back_locks_and_unlock_lets_the_release_go() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    let gate = errors_gate(&w, "enforce");
    // Long enough a step that the alarm surely fires inside step 2.
    let v2 = second_release_observing(&w, "[25, 100]", &gate, "3s", 1).await;
    assert_eq!(
        sdk.weights(&s.listener_arn).await,
        [(w.group(2), 100)],
        "step 2 carries all traffic"
    );
    let data_gone = fire_alarm_once(&sdk, &w).await;

    let v2 = v2.wait(APPLY);
    assert_eq!(v2.code, 3, "a rolled-back release exits 3: {v2:?}");
    assert!(
        v2.stderr
            .contains(&format!("gate errors failed: alarm {} is ALARM", s.alarm)),
        "{v2:?}"
    );
    assert!(v2.stdout.contains("step 2/2"), "{v2:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(2)).await, "the v2 group is gone");
    assert!(!sdk.target_group_exists(&w.group(2)).await);
    assert!(sdk.group_exists(&w.group(1)).await);
    assert_eq!(sdk.live_instances(&w.prefix).await, 1);

    let locked = apply(&w, "v2");
    assert_eq!(locked.code, 4, "a locked fleet refuses apply: {locked:?}");
    assert!(locked.stderr.contains("immune unlock"), "{locked:?}");
    assert!(
        sdk.groups_with_prefix(&w.prefix).await == [w.group(1)],
        "a locked apply creates nothing"
    );

    let entry = entry_of(&history(&w), &w.group(2));
    assert_eq!(entry["outcome"], "rolled_back", "{entry}");
    assert!(entry["finished_at"].is_string(), "{entry}");
    let evidence = decisions(&entry)
        .iter()
        .find_map(|d| d.get("evidence"))
        .unwrap_or_else(|| panic!("no decision with evidence: {entry}"));
    assert_eq!(evidence["gate"], "errors", "{evidence}");
    assert_eq!(evidence["alarm"], s.alarm.as_str(), "{evidence}");
    assert_eq!(evidence["state"], "ALARM", "{evidence}");
    assert_eq!(status(&w)["locked"]["release"], "v2");

    let reason = "5xx came from a bad deploy of the LB";
    let unlock = w.immune(&[
        "unlock",
        &w.prefix,
        "--reason",
        reason,
        "--var",
        "release=v2",
    ]);
    assert_eq!(unlock.code, 0, "{unlock:?}");
    assert!(
        unlock.stdout.contains("the next apply releases it again"),
        "{unlock:?}"
    );
    assert!(status(&w)["locked"].is_null());
    let unlocked = entry_of(&history(&w), &w.group(2));
    assert!(
        decisions(&unlocked)
            .iter()
            .any(|d| d["what"].as_str().unwrap().contains(reason)),
        "the unlock and its reason are in history: {unlocked}"
    );

    alarm_back_to_ok(&sdk, &w, data_gone).await;
    w.write("main.hcl", &config(&w, "1s", "[25, 100]", &gate));
    let again = apply(&w, "v2");
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(3), 100)]);
    assert!(!sdk.group_exists(&w.group(1)).await);
    assert_eq!(w.fleet_state()["active"]["release"], "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_gate_in_alarm_records_what_it_would_do_and_the_release_goes_on() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    w.write(
        "main.hcl",
        &config(&w, "1s", "[50, 100]", &errors_gate(&w, "dry-run")),
    );
    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");

    let _firing = keep_alarm_firing(&w).await;
    let v2 = apply(&w, "v2");
    assert_eq!(v2.code, 0, "dry-run never rolls back: {v2:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    assert!(!sdk.group_exists(&w.group(1)).await);
    assert_eq!(
        alarm_state(&sdk, &s.alarm).await.as_deref(),
        Some("ALARM"),
        "the alarm was in ALARM all along"
    );

    let entry = entry_of(&history(&w), &w.group(2));
    assert_eq!(entry["outcome"], "done", "{entry}");
    let would: Vec<&Value> = decisions(&entry)
        .iter()
        .filter(|d| {
            d["what"]
                .as_str()
                .unwrap()
                .starts_with("dry-run: would roll back")
        })
        .collect();
    assert!(!would.is_empty(), "{entry}");
    assert_eq!(would[0]["evidence"]["state"], "ALARM", "{entry}");
    assert!(status(&w)["locked"].is_null(), "dry-run does not lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_gate_waits_for_approve_at_each_step_and_reject_rolls_back() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    w.write(
        "main.hcl",
        &config(&w, "1s", "[50, 100]", &errors_gate(&w, "manual")),
    );
    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");

    let _firing = keep_alarm_firing(&w).await;
    let mut v2 = apply_in_background(&w, "v2");
    // Approve every question; a question is (step, since), answered once.
    let deadline = Instant::now() + APPLY;
    let mut answered: Vec<(u64, String)> = Vec::new();
    let v2 = loop {
        if let (true, run) = v2.peek() {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "v2 not finished within {APPLY:?}; approved {answered:?}: {:?}",
            v2.peek().1
        );
        let awaiting = status(&w)["rollout"]["awaiting"].clone();
        if !awaiting.is_null() {
            assert_eq!(awaiting["gate"], "errors", "{awaiting}");
            assert!(
                awaiting["evidence"].as_str().unwrap().contains("ALARM"),
                "{awaiting}"
            );
            let question = (
                awaiting["step"].as_u64().unwrap(),
                awaiting["since"].as_str().unwrap().to_string(),
            );
            if !answered.contains(&question) {
                let approve = op(&w, &["approve", &w.prefix]);
                assert_eq!(approve.code, 0, "{approve:?}");
                answered.push(question);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(v2.code, 0, "approved at every step: {v2:?}");
    let steps: Vec<u64> = answered.iter().map(|(step, _)| *step).collect();
    assert_eq!(
        steps,
        [0, 1],
        "a person is asked again at the next step while the alarm stays in ALARM"
    );
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    assert!(!sdk.group_exists(&w.group(1)).await);
    let entry = entry_of(&history(&w), &w.group(2));
    assert_eq!(entry["outcome"], "done", "{entry}");
    let approvals = decisions(&entry)
        .iter()
        .filter(|d| d["what"].as_str().unwrap().contains("approved by"))
        .count();
    assert_eq!(approvals, 2, "{entry}");

    // The next release: rejected.
    let mut v3 = apply_in_background(&w, "v3");
    let awaiting = wait_until("a gate waiting for a person", APPLY, &mut v3, || {
        let awaiting = status(&w)["rollout"]["awaiting"].clone();
        (!awaiting.is_null()).then_some(awaiting)
    })
    .await;
    assert_eq!(awaiting["step"], 0, "{awaiting}");
    let mut waiting_weights = sdk.weights(&s.listener_arn).await;
    waiting_weights.sort();
    assert_eq!(
        waiting_weights,
        [(w.group(2), 50), (w.group(3), 50)],
        "the apply waits at the first step's weights"
    );
    let reject = op(&w, &["reject", &w.prefix]);
    assert_eq!(reject.code, 0, "{reject:?}");
    let v3 = v3.wait(APPLY);
    assert_eq!(v3.code, 3, "{v3:?}");
    assert!(v3.stderr.contains("rejected by"), "{v3:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    assert!(!sdk.group_exists(&w.group(3)).await);
    assert!(!sdk.target_group_exists(&w.group(3)).await);
    let after = status(&w);
    assert_eq!(after["locked"]["release"], "v3", "{after}");
    assert_eq!(after["active"]["group"], w.group(2), "{after}");
    assert!(after["rollout"].is_null(), "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_gate_without_data_fails_under_fail_and_its_alarm_is_deleted() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    w.write(
        "main.hcl",
        &config(&w, "1s", "[50, 100]", &latency_gate("fail")),
    );
    let alarm = format!("{}-latency", w.group(1));

    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 3, "{v1:?}");
    assert!(v1.stderr.contains("gate latency failed"), "{v1:?}");
    assert_eq!(
        alarm_state(&sdk, &alarm).await,
        None,
        "the per-release alarm is deleted with the release"
    );
    assert_eq!(
        sdk.weights(&s.listener_arn).await,
        [(s.placeholder_target_group_name(), 100)],
        "traffic back where it was before the first release"
    );
    assert!(!sdk.group_exists(&w.group(1)).await);

    let entry = entry_of(&history(&w), &w.group(1));
    assert_eq!(entry["outcome"], "rolled_back", "{entry}");
    assert!(
        decisions(&entry)
            .iter()
            .any(|d| d["what"] == format!("gate alarms created: {alarm}")),
        "{entry}"
    );
    let evidence = decisions(&entry)
        .iter()
        .find_map(|d| d.get("evidence"))
        .unwrap_or_else(|| panic!("no evidence: {entry}"));
    assert_eq!(evidence["alarm"], alarm.as_str(), "{evidence}");
    assert_eq!(
        evidence["state"], "INSUFFICIENT_DATA",
        "a new alarm on LocalStack has no data: {evidence}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_gate_without_data_passes_under_pass_and_its_alarm_lives_with_the_release() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    w.write(
        "main.hcl",
        &config(&w, "1s", "[50, 100]", &latency_gate("pass")),
    );
    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);

    let alarm = format!("{}-latency", w.group(1));
    let out = sdk
        .cloudwatch
        .describe_alarms()
        .alarm_names(&alarm)
        .send()
        .await
        .unwrap();
    let [found] = out.metric_alarms() else {
        panic!("expected the alarm {alarm}: {out:?}");
    };
    assert_eq!(
        found.state_value(),
        Some(&StateValue::InsufficientData),
        "{found:?}"
    );
    assert_eq!(found.metric_name(), Some("TargetResponseTime"));
    let dimensions = found.dimensions();
    assert_eq!(dimensions.len(), 1, "{found:?}");
    assert_eq!(dimensions[0].name(), Some("TargetGroup"));
    assert!(
        dimensions[0]
            .value()
            .unwrap()
            .starts_with(&format!("targetgroup/{}/", w.group(1))),
        "the dimension is the release's target group: {found:?}"
    );
    let tags = sdk
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(found.alarm_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == Some("immune:managed") && t.value() == Some("true")),
        "{tags:?}"
    );

    // The next release replaces the group and its alarm.
    let v2 = apply(&w, "v2");
    assert_eq!(v2.code, 0, "{v2:?}");
    assert_eq!(alarm_state(&sdk, &alarm).await, None, "deleted with v1");
    assert_eq!(
        alarm_state(&sdk, &format!("{}-latency", w.group(2)))
            .await
            .as_deref(),
        Some("INSUFFICIENT_DATA")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_group_that_turns_unhealthy_while_observed_is_rolled_back() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    let v2 = second_release_observing(&w, "[50, 100]", "", "5s", 0).await;
    let (_, instances) = group(&sdk, &w.group(2)).await.expect("the v2 group");
    assert_eq!(instances.len(), 1, "{instances:?}");
    // moto reports a stopped instance as `unused` in target health.
    sdk.ec2
        .stop_instances()
        .instance_ids(&instances[0])
        .send()
        .await
        .expect("StopInstances");

    let v2 = v2.wait(APPLY);
    assert_eq!(v2.code, 3, "{v2:?}");
    assert!(
        v2.stderr
            .contains("only 0 of 1 new instances are healthy during step 1"),
        "{v2:?}"
    );
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(2)).await);
    assert!(!sdk.target_group_exists(&w.group(2)).await);
    let entry = entry_of(&history(&w), &w.group(2));
    assert_eq!(entry["outcome"], "rolled_back", "{entry}");
    assert_eq!(status(&w)["locked"]["release"], "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_after_a_finished_release_brings_the_kept_group_back_and_locks() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    w.write(
        "main.hcl",
        &config(&w, "1s", "[50, 100]", "keep_previous  = 1"),
    );
    for release in ["v1", "v2"] {
        let run = apply(&w, release);
        assert_eq!(run.code, 0, "{release}: {run:?}");
    }
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(2), 100)]);
    let (desired, _) = group(&sdk, &w.group(1)).await.expect("v1's group is kept");
    assert_eq!(desired, 0, "kept scaled to zero");
    assert!(sdk.target_group_exists(&w.group(1)).await);
    let before = status(&w);
    assert_eq!(before["kept"][0]["group"], w.group(1), "{before}");

    let rollback = op(&w, &["rollback", &w.prefix]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    let (desired, instances) = group(&sdk, &w.group(1)).await.expect("v1's group");
    assert_eq!((desired, instances.len()), (1, 1), "scaled back up");
    assert!(
        !sdk.group_exists(&w.group(2)).await,
        "the newer group is gone"
    );
    assert!(!sdk.target_group_exists(&w.group(2)).await);
    assert_eq!(sdk.live_instances(&w.prefix).await, 1);

    let after = status(&w);
    assert_eq!(after["active"]["group"], w.group(1), "{after}");
    assert_eq!(after["active"]["release"], "v1", "{after}");
    assert!(after["locked"].is_object(), "{after}");
    assert!(after["rollout"].is_null(), "{after}");
    let entry = history(&w).last().cloned().unwrap();
    assert_eq!(entry["group"], w.group(1), "{entry}");
    assert_eq!(entry["outcome"], "restored", "{entry}");

    let locked = apply(&w, "v2");
    assert_eq!(locked.code, 4, "{locked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_during_an_apply_asks_it_to_roll_back_at_its_next_poll() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    let v2 = second_release_observing(&w, "[50, 100]", "", "30s", 0).await;
    let asked = Instant::now();
    let rollback = op(&w, &["rollback", &w.prefix]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    assert!(
        rollback.stdout.contains("asked the running apply"),
        "{rollback:?}"
    );

    let v2 = v2.wait(APPLY);
    assert_eq!(v2.code, 3, "{v2:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "rolled back at a poll, not after the 30 s step"
    );
    assert!(v2.stderr.contains("(immune rollback)"), "{v2:?}");
    assert_eq!(sdk.weights(&s.listener_arn).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(2)).await);
    assert!(!sdk.target_group_exists(&w.group(2)).await);
    let after = status(&w);
    assert_eq!(after["active"]["group"], w.group(1), "{after}");
    assert_eq!(after["locked"]["release"], "v2", "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_rule_chosen_by_priority_carries_the_canary_and_the_rollback() {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, RuleCondition};
    let rule = sdk
        .elb
        .create_rule()
        .listener_arn(&s.listener_arn)
        .priority(10)
        .conditions(
            RuleCondition::builder()
                .field("path-pattern")
                .values("/api/*")
                .build(),
        )
        .actions(
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&s.placeholder_target_group)
                .build(),
        )
        .send()
        .await
        .expect("CreateRule");
    let rule_arn = rule.rules()[0].rule_arn().unwrap().to_string();
    let placeholder = vec![(s.placeholder_target_group_name(), 100)];
    let on_rule = |priority: u32| {
        config(&w, "1s", "[50, 100]", &errors_gate(&w, "enforce")).replace(
            "listener_port        = 80",
            &format!("listener_port        = 80\n    rule_priority        = {priority}"),
        )
    };

    w.write("main.hcl", &on_rule(11));
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 1, "no rule has priority 11: {plan:?}");
    assert!(plan.stderr.contains("rule with priority 11"), "{plan:?}");
    assert!(plan.stderr.contains("traffic.rule_priority"), "{plan:?}");

    w.write("main.hcl", &on_rule(10));
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert!(
        plan.stdout
            .contains("via rule with priority 10 of load balancer"),
        "{plan:?}"
    );
    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");
    assert_eq!(sdk.rule_weights(&rule_arn).await, [(w.group(1), 100)]);
    assert_eq!(
        sdk.weights(&s.listener_arn).await,
        placeholder,
        "the listener's default action is not immune's and stays as it was"
    );

    // The alarm fires once v2 carries traffic: one already firing would stop v2 before
    // it started.
    w.write(
        "main.hcl",
        &on_rule(10).replace("pause          = \"1s\"", "pause          = \"20s\""),
    );
    let running = apply_in_background(&w, "v2");
    w.wait_for_phase("observe");
    let firing = keep_alarm_firing(&w).await;
    let v2 = running.wait(APPLY);
    drop(firing);
    assert_eq!(v2.code, 3, "{v2:?}");
    assert_eq!(sdk.rule_weights(&rule_arn).await, [(w.group(1), 100)]);
    assert_eq!(sdk.weights(&s.listener_arn).await, placeholder);
    assert!(!sdk.group_exists(&w.group(2)).await);
    let rules = sdk
        .elb
        .describe_rules()
        .rule_arns(&rule_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        rules.rules()[0].conditions()[0].values(),
        ["/api/*"],
        "the rule's conditions are left as they were"
    );

    // The rule moves to another priority after the plan read it and before the release
    // starts: the release reads its route again and finds no rule at priority 10, rather
    // than shifting the rule it saw in the plan.
    let unlock = w.immune(&["unlock", &w.prefix, "--reason", "the test"]);
    assert_eq!(unlock.code, 0, "{unlock:?}");
    w.write("main.hcl", &on_rule(10));
    let mut waiting = crate::harness::immune_command(
        &w.dir,
        &["apply", "--var", "release=v3"],
        crate::harness::ENDPOINT,
    )
    .env("IMMUNE_CONFIRM_FROM_PIPE", "1")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start immune");
    let mut stdout = std::io::BufReader::new(waiting.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("Enter a value") {
        let mut line = Vec::new();
        let read = std::io::BufRead::read_until(&mut stdout, b':', &mut line).unwrap();
        assert!(read > 0, "apply ended before asking: {seen}");
        seen.push_str(&String::from_utf8_lossy(&line));
    }
    sdk.elb
        .set_rule_priorities()
        .rule_priorities(
            aws_sdk_elasticloadbalancingv2::types::RulePriorityPair::builder()
                .rule_arn(&rule_arn)
                .priority(12)
                .build(),
        )
        .send()
        .await
        .expect("SetRulePriorities");
    use std::io::Write;
    waiting.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{seen}\n{stderr}");
    assert!(stderr.contains("rule with priority 10"), "{stderr}");
    assert_eq!(sdk.rule_weights(&rule_arn).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(3)).await, "nothing was launched");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_beyond_image_keep_are_deregistered_with_their_snapshots() {
    let w = World::new();
    let sdk = w.sdk().await;
    let release = |provision: &str| {
        let text = config(&w, "0s", "[100]", "").replace(
            "provision     = \"#!/bin/sh\\necho baked\"",
            &format!("provision     = \"{provision}\"\n    keep          = 1"),
        );
        assert!(text.contains("keep          = 1"), "{text}");
        w.write("main.hcl", &text);
    };

    release("echo one");
    let v1 = apply(&w, "v1");
    assert_eq!(v1.code, 0, "{v1:?}");
    let first = w.fleet_state()["active"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let image = sdk
        .ec2
        .describe_images()
        .image_ids(&first)
        .send()
        .await
        .expect("DescribeImages");
    let snapshots: Vec<String> = image.images()[0]
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
        .collect();
    assert!(
        !snapshots.is_empty(),
        "a baked image has snapshots: {image:?}"
    );
    let tagged = sdk
        .ec2
        .describe_snapshots()
        .snapshot_ids(&snapshots[0])
        .send()
        .await
        .expect("DescribeSnapshots");
    assert!(
        tagged.snapshots()[0]
            .tags()
            .iter()
            .any(|t| t.key() == Some("immune:lineage")),
        "its snapshots carry the lineage from CreateImage: {tagged:?}"
    );

    release("echo two");
    let v2 = apply(&w, "v2");
    assert_eq!(v2.code, 0, "{v2:?}");
    let second = w.fleet_state()["active"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second, "a new provision script bakes a new image");
    let images = sdk
        .ec2
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
        .expect("DescribeImages");
    let left: Vec<&str> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .collect();
    assert_eq!(left, [second.as_str()], "only image.keep = 1 image is left");
    for snapshot in &snapshots {
        let found = sdk
            .ec2
            .describe_snapshots()
            .snapshot_ids(snapshot)
            .send()
            .await;
        assert!(
            found.map_or(true, |out| out.snapshots().is_empty()),
            "snapshot {snapshot} of the deregistered image is deleted"
        );
    }
    let entry = entry_of(&history(&w), &w.group(2));
    assert!(
        decisions(&entry).iter().any(|d| d["what"]
            .as_str()
            .unwrap()
            .contains(&format!("image {first} deregistered"))),
        "{entry}"
    );
}
