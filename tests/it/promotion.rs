//! `promote_after` on LocalStack: production takes a release only once staging finished
//! it, reading staging's state without writing or locking it.

use crate::harness::{immune_in, surroundings, Surroundings, World, ENDPOINT};
use std::path::Path;

/// One environment's configuration of the test's fleet under its own namespace.
fn environment(
    w: &World,
    s: &Surroundings,
    dir: &Path,
    namespace: &str,
    extra: &str,
    provision: &str,
) {
    std::fs::create_dir_all(dir).unwrap();
    let fleet = w
        .fleet_config(&w.surroundings.source_ami, &s.load_balancer, "")
        .replace(&w.surroundings.subnets[0], &s.subnets[0])
        .replace(&w.surroundings.subnets[1], &s.subnets[1])
        .replace(&w.surroundings.security_group, &s.security_group)
        .replace("#!/bin/sh\\necho baked", provision)
        .replace(
            "  release = var.release\n",
            &format!("  release = var.release\n{extra}"),
        );
    std::fs::write(
        dir.join("main.hcl"),
        format!("immune {{\n  namespace = \"{namespace}\"\n}}\n{fleet}"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn production_takes_a_release_only_once_staging_finished_the_same_one() {
    let w = World::new();
    let staging = w.dir.join("staging");
    let production = w.dir.join("production");
    let after = "  promote_after {\n    state = \"../staging\"\n  }\n";
    // Each environment has its own load balancer: only the image is shared.
    let prod = surroundings(&format!("{}p", w.prefix), "us-east-1");
    environment(
        &w,
        &w.surroundings,
        &staging,
        &format!("{}s", w.prefix),
        "",
        "#!/bin/sh\\necho baked",
    );
    environment(
        &w,
        &prod,
        &production,
        &format!("{}p", w.prefix),
        after,
        "#!/bin/sh\\necho baked",
    );
    let run = |dir: &Path, args: &[&str]| immune_in(dir, args, ENDPOINT);

    // Nothing ran in staging yet: refused at plan, with where it stands there.
    let plan = run(&production, &["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let all = format!("{}{}", plan.stdout, plan.stderr);
    assert!(all.contains("has no fleet"), "{plan:?}");
    let apply = run(
        &production,
        &["apply", "--auto-approve", "--var", "release=v1"],
    );
    assert_eq!(apply.code, 1, "{apply:?}");
    assert!(
        !production.join(".immune/state.json").exists() || {
            let state: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(production.join(".immune/state.json")).unwrap(),
            )
            .unwrap();
            state["fleets"][&w.prefix]["active"].is_null()
        }
    );

    // Staging finishes v1: production takes it. Staging's state is only read.
    let v1 = run(
        &staging,
        &["apply", "--auto-approve", "--var", "release=v1"],
    );
    assert_eq!(v1.code, 0, "{v1:?}");
    let staged = std::fs::read_to_string(staging.join(".immune/state.json")).unwrap();
    let plan = run(&production, &["plan", "--var", "release=v1"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(plan.stdout.contains("first release v1"), "{plan:?}");
    let apply = run(
        &production,
        &["apply", "--auto-approve", "--var", "release=v1"],
    );
    assert_eq!(apply.code, 0, "{apply:?}");
    assert_eq!(
        std::fs::read_to_string(staging.join(".immune/state.json")).unwrap(),
        staged,
        "staging's state is never written"
    );

    // v2 is not in staging yet, and once there it is built differently: refused both times.
    let plan = run(&production, &["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let all = format!("{}{}", plan.stdout, plan.stderr);
    assert!(all.contains("release v2 has not run in"), "{plan:?}");
    assert!(all.contains("which runs release v1"), "{plan:?}");
    environment(
        &w,
        &w.surroundings,
        &staging,
        &format!("{}s", w.prefix),
        "",
        "#!/bin/sh\\necho baked differently",
    );
    let v2 = run(
        &staging,
        &["apply", "--auto-approve", "--var", "release=v2"],
    );
    assert_eq!(v2.code, 0, "{v2:?}");
    let plan = run(&production, &["plan", "--var", "release=v2"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let all = format!("{}{}", plan.stdout, plan.stderr);
    assert!(all.contains("built from another image"), "{plan:?}");
}
