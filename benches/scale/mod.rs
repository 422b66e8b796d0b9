//! What the scale benchmarks share: one test world per fleet count, its fleets on the
//! rules of one load balancer, commands timed and their AWS calls counted.

use crate::harness::World;
use crate::scale;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The fleet counts to measure: IMMUNE_BENCH_FLEETS (default "1,10,100").
pub fn sizes() -> Vec<u32> {
    std::env::var("IMMUNE_BENCH_FLEETS")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// A world with `count` fleets configured, each on its own listener rule, each with an
/// alarm gate and `pause` between its steps.
pub async fn world(count: u32, pause: &str) -> World {
    let w = World::new();
    let sdk = w.sdk().await;
    scale::rules(&sdk, &w.surroundings.listener_arn, count).await;
    sdk.set_alarm(
        &w.surroundings.alarm,
        aws_sdk_cloudwatch::types::StateValue::Ok,
    )
    .await;
    let gate = format!(
        "gate \"errors\" {{\n      alarm = \"{}\"\n    }}",
        w.surroundings.alarm
    );
    let mut config = String::from("variable \"release\" { type = string }\n");
    for i in 1..=count {
        // Polled every second, as a production fleet would be, rather than the tests'
        // 200 ms: a hundred fleets baking side by side poll their builders and images.
        let fleet = scale::fleet(&w, &format!("{}n{i}", w.prefix), i, pause, &gate)
            .replace("poll_interval  = \"200ms\"", "poll_interval  = \"1s\"");
        config.push_str(&fleet);
    }
    w.write("main.hcl", &config);
    w
}

/// One run of `immune ARGS`: its wall time and AWS calls; it must succeed. With
/// IMMUNE_BENCH_CALLS set, the calls by operation follow, with their answer times; with
/// IMMUNE_BENCH_LOG=DIR, the run's log is kept in DIR.
pub fn timed(w: &World, args: &[&str]) -> (Duration, usize) {
    let started = Instant::now();
    let (run, calls) = scale::counted(w, args);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "immune {args:?} failed: {run:?}");
    if std::env::var_os("IMMUNE_BENCH_CALLS").is_some() {
        print_calls(&run.stderr);
    }
    // Each run's log, to read the calls in order: IMMUNE_BENCH_LOG=DIR.
    if let Some(dir) = std::env::var_os("IMMUNE_BENCH_LOG") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let file = format!(
            "{}-{}.log",
            w.prefix,
            args.join("_").replace(['/', '='], "-")
        );
        let _ = std::fs::write(dir.join(file), &run.stderr);
    }
    (took, calls.len())
}

/// Per operation: how many answers, their total and longest time, the costliest first.
fn print_calls(stderr: &str) {
    let mut by_operation: BTreeMap<String, (u32, u64, u64)> = BTreeMap::new();
    for line in stderr
        .lines()
        .filter(|l| l.contains("immune::aws: answered"))
    {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|v| v.trim_matches('"').to_string())
        };
        let (Some(operation), Some(ms)) = (field("operation"), field("ms")) else {
            continue;
        };
        let ms: u64 = ms.parse().unwrap_or(0);
        let entry = by_operation.entry(operation).or_default();
        entry.0 += 1;
        entry.1 += ms;
        entry.2 = entry.2.max(ms);
    }
    let mut rows: Vec<_> = by_operation.into_iter().collect();
    rows.sort_by_key(|(_, (_, total, _))| std::cmp::Reverse(*total));
    for (operation, (count, total, longest)) in rows {
        println!(
            "    {operation:<32} {count:>6} calls {total:>8} ms total {:>6} ms mean {longest:>6} ms longest",
            total / u64::from(count.max(1))
        );
    }
}

/// The median of `runs` runs.
pub fn median(w: &World, args: &[&str], runs: usize) -> (Duration, usize) {
    let mut seen: Vec<(Duration, usize)> = (0..runs).map(|_| timed(w, args)).collect();
    seen.sort();
    seen[seen.len() / 2]
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// `last / first` of the figures, as `12.3x`.
pub fn ratio(first: Duration, last: Duration) -> String {
    format!("{:.1}x", last.as_secs_f64() / first.as_secs_f64().max(1e-9))
}
