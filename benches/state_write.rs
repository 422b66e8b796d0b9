//! What a state write costs as fleets add up. Every transition of every rollout writes
//! the whole document atomically (temp file, fsync, rename); this measures that write
//! for 1 to 500 fleets, each with a kept group and ten releases of history.
//!
//! `cargo bench --bench state_write` (no LocalStack needed). IMMUNE_BENCH_FLEETS
//! (default "1,100,500") the fleet counts.

use immune::state::{LocalBackend, State};
use std::time::{Duration, Instant};

/// One fleet's record as a busy fleet has it: active and kept groups, ten releases of
/// history with their decisions and gate tallies.
fn record(name: &str) -> serde_json::Value {
    let group = |seq: u32| {
        serde_json::json!({
            "name": format!("{name}-v{seq:03}"),
            "seq": seq,
            "release": format!("v{seq}"),
            "fingerprint": "sha256:4f1c2b9a7d3e",
            "image": "ami-0123456789abcdef0",
            "launch_template": {"id": "lt-0123456789abcdef0", "version": seq},
            "target_group": format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/{name}-v{seq:03}/0123456789abcdef"),
            "listener_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/web/0123456789abcdef/0123456789abcdef/0123456789abcdef",
            "created_at": "2026-12-01T10:00:00Z",
            "alarms": [],
            "capacity": {"min": 2, "max": 6, "desired": 4}
        })
    };
    let decision = |what: &str| serde_json::json!({"at": "2026-12-01T10:00:00.123Z", "what": what});
    let history: Vec<serde_json::Value> = (1..=10)
        .map(|seq| {
            let mut decisions: Vec<serde_json::Value> = [
                "starting release",
                "builder instance i-0123456789abcdef0 launched",
                "image ami-0123456789abcdef0 available",
                "launch template lt-0123456789abcdef0 version 3",
                "target group created",
                "Auto Scaling group created",
                "all instances InService and healthy",
            ]
            .iter()
            .map(|w| decision(w))
            .collect();
            for step in [10, 25, 50, 100] {
                decisions.push(decision(&format!("weights {step}% on the new group")));
                decisions.push(decision("step passed: gate errors: alarm web-5xx is OK (enforce)"));
            }
            decisions.push(decision("drained: gate errors: alarm web-5xx is OK (enforce)"));
            serde_json::json!({
                "group": format!("{name}-v{seq:03}"),
                "release": format!("v{seq}"),
                "started_at": "2026-12-01T10:00:00Z",
                "finished_at": "2026-12-01T10:25:00Z",
                "outcome": "done",
                "gates": {"errors": {"mode": "enforce", "polls": 1500, "watched_ms": 1500000, "no_data_ms": 0, "fired": false, "flapped": false, "failed": false}},
                "decisions": decisions
            })
        })
        .collect();
    serde_json::json!({
        "seq": 10,
        "active": group(10),
        "previous": [group(9)],
        "history": history
    })
}

fn state(fleets: usize) -> State {
    let document = serde_json::json!({
        "version": immune::state::VERSION,
        "lineage": "5f0c8a52-1b7e-4c8e-9d0f-2f7a3c1e4b6d",
        "serial": 1,
        "fleets": (0..fleets)
            .map(|i| (format!("fleet{i}"), record(&format!("fleet{i}"))))
            .collect::<serde_json::Map<_, _>>()
    });
    immune::state::decode(&document.to_string(), "bench").expect("a valid state document")
}

fn main() {
    let sizes: Vec<usize> = std::env::var("IMMUNE_BENCH_FLEETS")
        .unwrap_or_else(|_| "1,100,500".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let dir = std::env::temp_dir().join(format!("immune-bench-state-{}", std::process::id()));
    println!("one state write (encode, temp file, fsync, rename), median of 21");
    println!("{:>7} {:>10} {:>10}", "fleets", "document", "write");
    for fleets in sizes {
        let backend = LocalBackend::new(dir.join(format!("{fleets}.json")));
        let mut state = state(fleets);
        let mut took: Vec<Duration> = (0..21)
            .map(|_| {
                let started = Instant::now();
                backend.save(&mut state).expect("saved");
                started.elapsed()
            })
            .collect();
        took.sort();
        let size = immune::state::encode(&state).len();
        println!(
            "{fleets:>7} {:>7} KB {:>8.1}ms",
            size / 1024,
            took[took.len() / 2].as_secs_f64() * 1000.0
        );
    }
    // Ten fleets saving side by side, as an apply at --parallelism 10 does: their saves
    // meet in one shared document and are written together.
    let fleets = 500;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let backend = LocalBackend::new(dir.join("shared.json"));
    let (took, writes) = runtime.block_on(async {
        let shared = immune::state::Shared::new(&backend, state(fleets));
        let started = Instant::now();
        let saves = (0..10).map(|i| {
            let shared = &shared;
            async move {
                let name = format!("fleet{i}");
                let saver = shared.fleet(&name);
                let mut state = shared.snapshot().await;
                for seq in 0..10 {
                    state.fleets.get_mut(&name).expect("a fleet").seq = seq;
                    immune::state::Backend::save(&saver, &mut state)
                        .await
                        .expect("saved");
                }
            }
        });
        futures_util::future::join_all(saves).await;
        (started.elapsed(), shared.into_state().serial - 1)
    });
    println!(
        "{fleets} fleets, 10 saving side by side, 100 saves: {writes} writes in {:.0}ms ({:.1}ms a save)",
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1000.0 / 100.0
    );
    let _ = std::fs::remove_dir_all(dir);
}
