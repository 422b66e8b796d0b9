//! `rollout { after = [fleet.NAME] }` on LocalStack: a fleet starts only once the fleets
//! it runs after ended well in the same apply, and is not started when one did not.

use crate::harness::{surroundings, World};
use aws_sdk_cloudwatch::types::StateValue;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_after_another_waits_for_it_and_is_not_started_when_it_rolls_back() {
    let w = World::new();
    let sdk = w.sdk().await;
    let s = &w.surroundings;
    let api = w.prefix.clone();
    let web = format!("{}w", w.prefix);
    let second = surroundings(&web, "us-east-1");
    let gate = format!("gate \"errors\" {{\n      alarm = \"{}\"\n    }}", s.alarm);
    let config = |pause: &str| {
        let first = w
            .fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", &format!("pause = \"{pause}\""));
        // The second fleet, on its own load balancer, written first: the order comes
        // from `after`, not from the file.
        let other = w
            .fleet_config(
                &s.source_ami,
                &second.load_balancer,
                &format!("after = [fleet.{api}]"),
            )
            .replace(&format!("fleet \"{api}\""), &format!("fleet \"{web}\""))
            .replace("variable \"release\" { type = string }", "");
        format!("{other}\n{first}")
    };
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    w.write("main.hcl", &config("1s"));
    let plan = w.immune(&["plan", "--var", "release=v1"]);
    assert!(
        plan.stdout
            .contains(&format!("after   fleet.{api}: starts once")),
        "{plan:?}"
    );
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    let api_done = v1
        .stdout
        .find(&format!("fleet.{api}: release complete"))
        .unwrap();
    let web_start = v1
        .stdout
        .find(&format!("fleet.{web}: starting release"))
        .unwrap();
    assert!(api_done < web_start, "web waited for api: {v1:?}");

    // api's v2 is rolled back by its gate: web's v2 is not started.
    w.write("main.hcl", &config("10s"));
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&s.alarm, StateValue::Alarm).await;
    let v2 = v2.wait(Duration::from_secs(90));
    sdk.set_alarm(&s.alarm, StateValue::Ok).await;
    assert_eq!(v2.code, 3, "{v2:?}");
    assert!(
        v2.stderr.contains(&format!(
            "fleet {web} was not started: it runs after fleet {api}, which was rolled back in this apply"
        )),
        "{v2:?}"
    );
    assert!(
        !v2.stdout
            .contains(&format!("fleet.{web}: starting release v2")),
        "{v2:?}"
    );
    assert!(sdk.group_exists(&format!("{web}-v001")).await);
    assert!(!sdk.group_exists(&format!("{web}-v002")).await);
}
