//! How `apply` grows with the number of fleets, on LocalStack with the real binary:
//! the first release of every fleet (bake, launch, two canary steps of 1 s, all at the
//! default --parallelism 10) and a second release that replaces them all, wall time and
//! AWS calls, for 1, 10 and 100 fleets, and the ratio of the largest to the smallest.
//! Goal: 100 fleets within 15x of one fleet.
//!
//! `cargo bench --bench apply_scale` (LocalStack is started when it is not running).
//! IMMUNE_BENCH_FLEETS (default "1,10,100") the fleet counts; IMMUNE_BENCH_CALLS=1 prints
//! each run's calls by operation with their answer times; IMMUNE_BENCH_LOG=DIR keeps logs.
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
    println!("apply of every fleet, --parallelism 10, steps [50, 100] with 1s pauses");
    println!(
        "{:>7} {:>14} {:>7} {:>15} {:>7} {:>11}",
        "fleets", "first release", "calls", "second release", "calls", "state file"
    );
    let mut rows = Vec::new();
    for count in sizes() {
        let w = runtime.block_on(world(count, "1s"));
        let first = timed(&w, &["apply", "--auto-approve", "--var", "release=v1"]);
        let second = timed(&w, &["apply", "--auto-approve", "--var", "release=v2"]);
        let size = std::fs::metadata(w.dir.join(".immune/state.json")).map_or(0, |m| m.len());
        println!(
            "{count:>7} {:>14} {:>7} {:>15} {:>7} {:>8} KB",
            seconds(first.0),
            first.1,
            seconds(second.0),
            second.1,
            size / 1024
        );
        rows.push((count, first, second));
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        println!(
            "{}/{} fleets: first release {} the time, second release {} the time",
            last.0,
            first.0,
            ratio(first.1 .0, last.1 .0),
            ratio(first.2 .0, last.2 .0)
        );
    }
}
