//! The update rate on LocalStack: a metric gate whose metric reads near its threshold
//! stretches the step (read through GetMetricStatistics, beside the alarm), and the
//! history says why.

use crate::harness::World;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_metric_near_its_threshold_stretches_the_step_and_history_says_why() {
    let w = World::new();
    let sdk = w.sdk().await;
    let namespace = format!("Test/{}", w.prefix);
    let gate = format!(
        r#"rate {{
      min_pause = "1s"
      max_pause = "12s"
    }}
    gate "latency" {{
      metric {{
        namespace  = "{namespace}"
        name       = "Latency"
        dimensions = {{ Group = release.group }}
        statistic  = "Maximum"
        period     = "10s"
        threshold  = 10
        comparison = ">"
      }}
      slow_at = 0.8
    }}"#
    );
    let s = &w.surroundings;
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, &gate)
            .replace("pause          = \"1s\"", "pause = \"3s\""),
    );
    let v1 = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    w.wait_for_phase("observe");
    // 9 against a threshold of 10: under the alarm, over slow_at.
    let datum = MetricDatum::builder()
        .metric_name("Latency")
        .dimensions(Dimension::builder().name("Group").value(w.group(1)).build())
        .value(9.0)
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
            std::time::SystemTime::now(),
        ))
        .build();
    sdk.cloudwatch
        .put_metric_data()
        .namespace(&namespace)
        .metric_data(datum)
        .send()
        .await
        .unwrap();
    let out = v1.wait(Duration::from_secs(90));
    assert_eq!(out.code, 0, "the alarm never fired: {out:?}");
    assert!(
        out.stdout.contains("step 1 is watched for 10s, not 3s: gate latency's alarm needs that long before it can go into ALARM"),
        "a step lasts as long as its gate needs to be able to fail: {out:?}"
    );
    assert!(
        out.stdout.contains("pace: gate latency read 90% of its threshold (slow_at 80%): step 1 stretched to 12s (max_pause 12s)"),
        "{out:?}"
    );
    let history = w.immune(&["history", &w.prefix, "--json"]);
    assert!(
        history.stdout.contains("stretched to 12s"),
        "the change of pace is in the history: {history:?}"
    );
}
