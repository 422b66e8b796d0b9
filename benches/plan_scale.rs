//! How `plan` and `status` grow with the number of live fleets, on LocalStack with the
//! real binary: wall time (median of 3 runs) and AWS calls, for 1, 10 and 100 fleets,
//! and the ratio of the largest to the smallest. Goals: a plan of 100 fleets within 3x
//! of one fleet's and at most 25 calls; status of 100 fleets at most 25 calls.
//!
//! `cargo bench --bench plan_scale` (LocalStack is started when it is not running).
//! IMMUNE_BENCH_FLEETS (default "1,10,100") the fleet counts; IMMUNE_BENCH_CALLS=1 prints
//! each run's calls by operation with their answer times; IMMUNE_BENCH_LOG=DIR keeps logs;
//! IMMUNE_BENCH_KEEP=1 keeps each size's directory to plan it again by hand.
//! Figures are LocalStack's as much as immune's: start it afresh before measuring.

#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;
#[allow(dead_code, unused_imports)]
#[path = "../tests/it/scale.rs"]
mod scale;
#[allow(dead_code)]
#[path = "scale/mod.rs"]
mod scale_bench;

use scale_bench::*;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!("plan and status of live fleets (median of 3 runs)");
    println!(
        "{:>7} {:>10} {:>11} {:>12} {:>13}",
        "fleets", "plan", "plan calls", "status", "status calls"
    );
    let mut rows = Vec::new();
    for count in sizes() {
        let w = runtime.block_on(world(count, "0s"));
        // The fleets live: released once, untimed.
        timed(
            &w,
            &[
                "apply",
                "--auto-approve",
                "--parallelism",
                "25",
                "--var",
                "release=v1",
            ],
        );
        let plan = median(&w, &["plan", "--var", "release=v1"], 3);
        let status = median(&w, &["status"], 3);
        println!(
            "{count:>7} {:>10} {:>11} {:>12} {:>13}",
            seconds(plan.0),
            plan.1,
            seconds(status.0),
            status.1
        );
        rows.push((count, plan, status));
        // IMMUNE_BENCH_KEEP=1 keeps the fleets' directory, to plan them again by hand
        // (with a profiler on LocalStack, say); their resources stay in LocalStack anyway.
        if std::env::var_os("IMMUNE_BENCH_KEEP").is_some() {
            println!("        kept: {}", w.dir.display());
            std::mem::forget(w);
        }
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "{}/{} fleets: plan {} the time ({} -> {} calls), status {} the time ({} -> {} calls)",
            last.0,
            first.0,
            ratio(first.1 .0, last.1 .0),
            first.1 .1,
            last.1 .1,
            ratio(first.2 .0, last.2 .0),
            first.2 .1,
            last.2 .1
        );
    }
}
