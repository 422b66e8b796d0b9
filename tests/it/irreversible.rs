//! Irreversible releases on LocalStack: a failure after traffic reached the release holds
//! it where it is instead of rolling it back, until a person promotes it or forces the
//! rollback.

use crate::harness::{Sdk, World};
use aws_sdk_cloudwatch::types::StateValue;
use std::time::Duration;

/// The fleet with an enforce gate, marked irreversible from a variable as an operator
/// would for a release that migrates a schema.
fn irreversible(w: &World, pause: &str) -> String {
    let s = &w.surroundings;
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let fleet = w
        .fleet_config(&s.source_ami, &s.load_balancer, &gate)
        .replace("pause          = \"1s\"", &format!("pause = \"{pause}\""))
        .replace(
            "  release = var.release\n",
            "  release = var.release\n  irreversible = var.migrates_schema\n",
        );
    format!("variable \"migrates_schema\" {{\n  type    = bool\n  default = false\n}}\n{fleet}")
}

/// v1 released, then v2 (irreversible) started and its alarm fired at the first step.
async fn held_v2(w: &World, sdk: &Sdk) -> crate::harness::Run {
    let alarm = w.surroundings.alarm.clone();
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    w.write("main.hcl", &irreversible(w, "1s"));
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");

    w.write("main.hcl", &irreversible(w, "20s"));
    let plan = w.immune(&[
        "plan",
        "--var",
        "release=v2",
        "--var",
        "migrates_schema=true",
    ]);
    assert!(
        plan.stdout
            .contains("IRREVERSIBLE: once traffic reaches it"),
        "{plan:?}"
    );
    let v2 = w.spawn(&[
        "apply",
        "--auto-approve",
        "--var",
        "release=v2",
        "--var",
        "migrates_schema=true",
    ]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&alarm, StateValue::Alarm).await;
    let out = v2.wait(Duration::from_secs(90));
    sdk.set_alarm(&alarm, StateValue::Ok).await;
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_irreversible_release_that_fails_at_its_first_step_keeps_its_traffic_until_forced_back()
{
    let w = World::new();
    let sdk = w.sdk().await;
    let v2 = held_v2(&w, &sdk).await;
    assert_eq!(v2.code, 4, "held with the locked code: {v2:?}");
    assert!(
        v2.stdout
            .contains("is irreversible: it keeps 50% of the traffic and is held"),
        "{v2:?}"
    );
    assert!(v2.stderr.contains("immune rollback"), "{v2:?}");
    assert!(v2.stderr.contains("--force --reason TEXT"), "{v2:?}");
    let listener = w.surroundings.listener_arn.clone();
    assert_eq!(
        sdk.weights(&listener).await,
        [(w.group(1), 50), (w.group(2), 50)],
        "traffic stays where the step put it"
    );
    assert!(sdk.group_exists(&w.group(2)).await);
    let fleet = w.fleet_state();
    assert_eq!(fleet["rollout"]["phase"]["name"], "held", "{fleet}");
    assert!(fleet["lock"]["reason"]
        .as_str()
        .unwrap()
        .contains("gate errors failed"));

    // What a person sees, and what does not move it.
    let status = w.immune(&["status", &w.prefix]);
    assert!(status.stdout.contains("HELD after a failure"), "{status:?}");
    let plan = w.immune(&["plan", "--var", "release=v3"]);
    assert!(plan.stdout.contains("is held since"), "{plan:?}");
    assert!(
        plan.stdout
            .contains(&format!("immune promote {}", w.prefix)),
        "{plan:?}"
    );
    let apply = w.immune(&["apply", "--auto-approve", "--var", "release=v3"]);
    assert_eq!(apply.code, 4, "{apply:?}");
    let unlock = w.immune(&["unlock", &w.prefix, "--reason", "looked"]);
    assert_eq!(unlock.code, 1, "{unlock:?}");
    assert!(
        unlock.stderr.contains("unlocking would not say"),
        "{unlock:?}"
    );
    let plain = w.immune(&["rollback", &w.prefix]);
    assert_eq!(plain.code, 1, "{plain:?}");
    assert!(plain.stderr.contains("is irreversible"), "{plain:?}");
    let no_reason = w.immune(&["rollback", &w.prefix, "--force"]);
    assert_eq!(no_reason.code, 1, "{no_reason:?}");
    assert!(
        no_reason.stderr.contains("--force needs --reason"),
        "{no_reason:?}"
    );
    assert_eq!(
        sdk.weights(&listener).await,
        [(w.group(1), 50), (w.group(2), 50)],
        "nothing moved it"
    );

    // Forced back, with the reason kept.
    let forced = w.immune(&[
        "rollback",
        &w.prefix,
        "--force",
        "--reason",
        "v2's migration is backwards compatible",
    ]);
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(sdk.weights(&listener).await, [(w.group(1), 100)]);
    assert!(!sdk.group_exists(&w.group(2)).await);
    let fleet = w.fleet_state();
    assert!(fleet["rollout"].is_null(), "{fleet}");
    let decisions = fleet["history"].as_array().unwrap().last().unwrap()["decisions"].to_string();
    assert!(
        decisions.contains("reason: v2's migration is backwards compatible"),
        "{decisions}"
    );
    assert!(
        !fleet["lock"].is_null(),
        "a rollback leaves the fleet locked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_irreversible_release_promoted_by_a_person_finishes() {
    let w = World::new();
    let sdk = w.sdk().await;
    let v2 = held_v2(&w, &sdk).await;
    assert_eq!(v2.code, 4, "{v2:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.write("main.hcl", &irreversible(&w, "1s"));
    let promoted = w.immune(&[
        "promote",
        &w.prefix,
        "--var",
        "release=v2",
        "--var",
        "migrates_schema=true",
    ]);
    assert_eq!(promoted.code, 0, "{promoted:?}");
    assert!(promoted.stdout.contains("promoted by"), "{promoted:?}");
    assert_eq!(
        sdk.weights(&w.surroundings.listener_arn).await,
        [(w.group(2), 100)]
    );
    let fleet = w.fleet_state();
    assert!(fleet["lock"].is_null(), "{fleet}");
    assert_eq!(fleet["active"]["name"], w.group(2));
    // Going back from it later needs --force too.
    let plain = w.immune(&["rollback", &w.prefix]);
    assert_eq!(plain.code, 1, "{plain:?}");
    assert!(plain.stderr.contains("is irreversible"), "{plain:?}");
}
