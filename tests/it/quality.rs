//! `immune gates` on LocalStack: a history with a rollback that turned out a false alarm
//! (the release went out unchanged after), a flapping alarm and a dry-run finding on a
//! release that went well, counted from what the gates saw.

use crate::harness::World;
use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_report_counts_false_alarms_flapping_and_dry_run_findings() {
    let w = World::new();
    let sdk = w.sdk().await;
    let errors = w.surroundings.alarm.clone();
    let trial = format!("{}-trial", w.prefix);
    sdk.cloudwatch
        .put_metric_alarm()
        .alarm_name(&trial)
        .namespace("Trial")
        .metric_name("Latency")
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    sdk.set_alarm(&errors, StateValue::Ok).await;
    sdk.set_alarm(&trial, StateValue::Ok).await;
    let s = &w.surroundings;
    let gates = format!(
        "gate \"errors\" {{\n      alarm = \"{errors}\"\n    }}\n    gate \"trial\" {{\n      alarm = \"{trial}\"\n      mode  = \"dry-run\"\n    }}"
    );
    let config = |pause: &str, poll: &str| {
        w.fleet_config(&s.source_ami, &s.load_balancer, &gates)
            .replace("pause          = \"1s\"", &format!("pause = \"{pause}\""))
            .replace(
                "poll_interval  = \"200ms\"",
                &format!("poll_interval = \"{poll}\""),
            )
    };
    let apply = |release: &str| {
        w.immune(&[
            "apply",
            "--auto-approve",
            "--var",
            &format!("release={release}"),
        ])
    };

    w.write("main.hcl", &config("1s", "200ms"));
    assert_eq!(apply("v1").code, 0);

    // v2: the errors alarm goes into ALARM and out between two polls 5 s apart.
    w.write("main.hcl", &config("12s", "5s"));
    let v2 = w.spawn(&["apply", "--auto-approve", "--var", "release=v2"]);
    w.wait_for_phase("observe");
    tokio::time::sleep(Duration::from_secs(1)).await;
    sdk.set_alarm(&errors, StateValue::Alarm).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sdk.set_alarm(&errors, StateValue::Ok).await;
    let v2 = v2.wait(Duration::from_secs(60));
    assert_eq!(v2.code, 3, "{v2:?}");

    // Nothing was wrong with v2: it goes out unchanged after the unlock.
    assert_eq!(
        w.immune(&["unlock", &w.prefix, "--reason", "a blip"]).code,
        0
    );
    w.write("main.hcl", &config("1s", "200ms"));
    let again = apply("v2");
    assert_eq!(again.code, 0, "{again:?}");

    // v3: the dry-run gate's alarm fires, the release goes well anyway.
    w.write("main.hcl", &config("3s", "200ms"));
    let v3 = w.spawn(&["apply", "--auto-approve", "--var", "release=v3"]);
    w.wait_for_phase("observe");
    sdk.set_alarm(&trial, StateValue::Alarm).await;
    let v3 = v3.wait(Duration::from_secs(60));
    sdk.set_alarm(&trial, StateValue::Ok).await;
    assert_eq!(v3.code, 0, "{v3:?}");

    let report = w.immune(&["gates", &w.prefix, "--json"]);
    assert_eq!(report.code, 0, "{report:?}");
    let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    let gate = |name: &str| {
        report
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gate"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
            .clone()
    };
    let errors = gate("errors");
    assert_eq!(errors["watched"], 4, "{errors}");
    assert_eq!(errors["fired_enforce"], 1, "{errors}");
    assert_eq!(errors["flapping"], 1, "{errors}");
    assert_eq!(errors["false_alarms"], 1, "{errors}");
    assert_eq!(errors["missed"], 0, "{errors}");
    let trial = gate("trial");
    assert_eq!(trial["mode"], "dry-run", "{trial}");
    assert_eq!(trial["fired_dry_run"], 1, "{trial}");
    assert_eq!(trial["noise"], 1, "{trial}");
    assert_eq!(trial["ready_to_enforce"], false, "{trial}");

    let text = w.immune(&["gates", &w.prefix]);
    assert!(text.stdout.contains("likely false alarms"), "{text:?}");
    assert!(
        text.stdout
            .contains("would have stopped 1 release that went well"),
        "{text:?}"
    );
}
