//! How fast the immune system responds: the time from a gate's alarm going into ALARM to
//! all traffic being back on the previous group, measured end to end against LocalStack
//! with the real binary (SDK calls, state writes and all).
//!
//! Side by side, the detection rate of ALARM pulses shorter than the poll interval: the
//! alarm goes into ALARM and out again between two polls, and only its history shows it.
//!
//! `cargo bench --bench rollback_response` (LocalStack is started when it is not running).
//! IMMUNE_BENCH_SAMPLES (default 5) rollbacks per poll interval; IMMUNE_BENCH_POLLS
//! (default "1s,5s") the poll intervals to measure; pulses of IMMUNE_BENCH_PULSE
//! (default "1s") are sent with the last poll interval.

#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;

use harness::World;
use std::time::{Duration, Instant, SystemTime};

fn main() {
    let samples: usize = std::env::var("IMMUNE_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let polls = std::env::var("IMMUNE_BENCH_POLLS").unwrap_or_else(|_| "1s,5s".into());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "gate failure -> traffic back on the previous group, {samples} rollbacks per poll interval"
    );
    for poll in polls.split(',') {
        let (total, detected) = runtime.block_on(measure(poll.trim(), samples));
        println!(
            "poll_interval {poll:>5}: traffic back after {}   (failure seen after {}; shift back and verify {})",
            spread(&total),
            spread(&detected),
            spread(
                &total
                    .iter()
                    .zip(&detected)
                    .map(|(t, d)| t.saturating_sub(*d))
                    .collect::<Vec<_>>()
            )
        );
    }
    let poll = polls
        .split(',')
        .next_back()
        .unwrap_or("5s")
        .trim()
        .to_string();
    let pulse = std::env::var("IMMUNE_BENCH_PULSE").unwrap_or_else(|_| "1s".into());
    let caught = runtime.block_on(measure_pulses(&poll, &pulse, samples));
    println!(
        "ALARM pulses of {pulse} with poll_interval {poll}: {caught} of {samples} caught and rolled back ({:.0}%)",
        100.0 * caught as f64 / samples as f64
    );
}

/// Releases that each see one ALARM pulse of `pulse`, starting somewhere between two
/// polls; how many were rolled back (the others would have been promoted).
async fn measure_pulses(poll: &str, pulse: &str, samples: usize) -> usize {
    let w = World::new();
    let sdk = w.sdk().await;
    let (alarm, config) = released_fleet(&w, &sdk, poll).await;
    // Two polls per step: a pulse the gates miss lets the step pass.
    let pause = parse_duration(poll) * 2;
    w.write(
        "main.hcl",
        &config.replace(
            "pause          = \"1s\"",
            &format!("pause          = \"{}ms\"", pause.as_millis()),
        ),
    );
    let set_alarm = |state: aws_sdk_cloudwatch::types::StateValue| {
        sdk.cloudwatch
            .set_alarm_state()
            .alarm_name(&alarm)
            .state_value(state)
            .state_reason("bench pulse")
            .send()
    };
    let mut caught = 0;
    for sample in 0..samples {
        let apply = w.spawn(&[
            "apply",
            "--auto-approve",
            "--var",
            &format!("release=p{sample}"),
        ]);
        wait_for(
            Duration::from_secs(120),
            "the release to observe its first step",
            || {
                std::fs::read_to_string(w.dir.join(".immune/state.json"))
                    .is_ok_and(|s| s.contains("\"observe\""))
            },
        )
        .await;
        // Start the pulse at a different point between two polls each time, and end it
        // before the next poll.
        let poll_length = parse_duration(poll);
        let length = parse_duration(pulse).min(poll_length / 2);
        let room = poll_length.saturating_sub(length) / 2;
        let offset = Duration::from_millis(100) + room.mul_f64(sample as f64 / samples as f64);
        tokio::time::sleep(offset).await;
        set_alarm(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .await
            .unwrap();
        tokio::time::sleep(length).await;
        set_alarm(aws_sdk_cloudwatch::types::StateValue::Ok)
            .await
            .unwrap();
        let run = apply.wait(Duration::from_secs(180));
        match run.code {
            3 => {
                caught += 1;
                let unlock = w.immune(&["unlock", &w.prefix, "--reason", "bench"]);
                assert_eq!(unlock.code, 0, "{unlock:?}");
            }
            0 => {}
            _ => panic!("neither rolled back nor promoted: {run:?}"),
        }
    }
    caught
}

/// The fleet gated on an alarm of the bench's own, polling every `poll`, released once
/// (v1): the alarm's name and the configuration.
async fn released_fleet(w: &World, sdk: &harness::Sdk, poll: &str) -> (String, String) {
    let s = &w.surroundings;
    let alarm = bench_alarm(w, sdk).await;
    let config = w
        .fleet_config(
            &s.source_ami,
            &s.load_balancer,
            &format!("gate \"errors\" {{\n      alarm = \"{alarm}\"\n    }}"),
        )
        .replace(
            "poll_interval  = \"200ms\"",
            &format!("poll_interval  = \"{poll}\""),
        );
    w.write("main.hcl", &config);
    let v1 = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(v1.code, 0, "{v1:?}");
    (alarm, config)
}

/// An alarm of the bench's own on a metric nobody feeds, evaluated once a day, so the
/// states the bench sets stay until it changes them.
async fn bench_alarm(w: &World, sdk: &harness::Sdk) -> String {
    let alarm = format!("{}-bench", w.prefix);
    sdk.cloudwatch
        .put_metric_alarm()
        .alarm_name(&alarm)
        .namespace("Immune/Bench")
        .metric_name("Failures")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(86_400)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("create the bench alarm");
    alarm
}

/// `min / median / max`.
fn spread(values: &[Duration]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort();
    let ms = |d: &Duration| format!("{:.0}ms", d.as_secs_f64() * 1000.0);
    format!(
        "min {} / median {} / max {}",
        ms(&sorted[0]),
        ms(&sorted[sorted.len() / 2]),
        ms(&sorted[sorted.len() - 1])
    )
}

async fn measure(poll: &str, samples: usize) -> (Vec<Duration>, Vec<Duration>) {
    let w = World::new();
    let s = &w.surroundings;
    let sdk = w.sdk().await;
    let (alarm, config) = released_fleet(&w, &sdk, poll).await;
    // Later releases observe long enough for the gate to fail during the step.
    w.write(
        "main.hcl",
        &config.replace("pause          = \"1s\"", "pause          = \"10m\""),
    );
    let set_alarm = |state: aws_sdk_cloudwatch::types::StateValue| {
        sdk.cloudwatch
            .set_alarm_state()
            .alarm_name(&alarm)
            .state_value(state)
            .state_reason("bench")
            .send()
    };
    let (mut total, mut detected) = (Vec::new(), Vec::new());
    for sample in 0..samples {
        set_alarm(aws_sdk_cloudwatch::types::StateValue::Ok)
            .await
            .unwrap();
        let release = format!("release=b{sample}");
        let apply = w.spawn(&["apply", "--auto-approve", "--var", &release]);
        wait_for(
            Duration::from_secs(120),
            "the release to observe its first step",
            || {
                std::fs::read_to_string(w.dir.join(".immune/state.json"))
                    .is_ok_and(|s| s.contains("\"observe\""))
            },
        )
        .await;
        // Somewhere within a poll interval, as a real alarm would.
        let offset = parse_duration(poll).mul_f64(sample as f64 / samples as f64);
        tokio::time::sleep(offset).await;
        let failed_at = SystemTime::now();
        let start = Instant::now();
        set_alarm(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .await
            .unwrap();
        let previous = w.group(1);
        loop {
            if sdk.weights(&s.listener_arn).await == [(previous.clone(), 100)] {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "traffic never went back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        total.push(start.elapsed());
        let run = apply.wait(Duration::from_secs(120));
        assert_eq!(run.code, 3, "the release was rolled back: {run:?}");
        detected.push(seen_after(&w, failed_at));
        let unlock = w.immune(&["unlock", &w.prefix, "--reason", "bench"]);
        assert_eq!(unlock.code, 0, "{unlock:?}");
    }
    (total, detected)
}

/// When the rollout recorded the failed gate, relative to `failed_at`.
fn seen_after(w: &World, failed_at: SystemTime) -> Duration {
    let state = w.state();
    let history = state["fleets"][&w.prefix]["history"].as_array().unwrap();
    let decisions = history.last().unwrap()["decisions"].as_array().unwrap();
    let at = decisions
        .iter()
        .find(|d| d["what"].as_str().unwrap().starts_with("gate failed"))
        .expect("the failed gate is recorded")["at"]
        .as_str()
        .unwrap();
    let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 time");
    let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos() as u64);
    at.duration_since(failed_at).unwrap_or_default()
}

fn parse_duration(text: &str) -> Duration {
    immune::config::parse_duration(text).expect("a duration like 1s")
}

async fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
