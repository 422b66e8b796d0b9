//! An apply that is interrupted holds the state lock while it runs, releases it on
//! Ctrl-C or SIGTERM, and the next apply finishes the release from the recorded phase. A
//! killed apply's lock is taken over on this host; one from another host is not assumed
//! to be running or gone.

use crate::harness::World;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_releases_the_lock_and_the_next_apply_resumes() {
    let w = World::new();
    let s = &w.surroundings;
    let slow = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replace("pause          = \"1s\"", "pause          = \"30s\"");
    w.write("main.hcl", &slow);

    let first = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);

    // Wait until the first apply is observing its first step.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = std::fs::read_to_string(w.dir.join(".immune/state.json")).unwrap_or_default();
        if state.contains("\"observe\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first apply never reached a step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let second = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains("state is locked by"), "{second:?}");
    assert!(
        second.stderr.contains("apply since"),
        "the holder's operation is named: {second:?}"
    );
    assert!(
        second.stderr.contains("immune state force-unlock"),
        "{second:?}"
    );

    first.interrupt();
    let out = first.wait(Duration::from_secs(60));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("interrupted"), "{out:?}");
    assert!(
        !w.dir.join(".immune/state.lock").exists(),
        "the lock is released"
    );

    // The next apply resumes the same release instead of starting another.
    w.write(
        "main.hcl",
        &w.fleet_config(&s.source_ami, &s.load_balancer, ""),
    );
    let resumed = w.immune(&["apply", "--auto-approve", "--var", "release=v1"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stdout.contains("resuming release v1"),
        "{resumed:?}"
    );
    assert_eq!(
        w.sdk().await.weights(&s.listener_arn).await,
        [(w.group(1), 100)]
    );
    assert_eq!(w.state()["fleets"][&w.prefix]["active"]["name"], w.group(1));
}

/// Waits until the fleet's rollout observes a step and `apply` holds the lock.
fn observing(w: &World, apply: &crate::harness::Background) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let held = std::fs::read_to_string(w.dir.join(".immune/state.lock")).unwrap_or_default();
        let state = std::fs::read_to_string(w.dir.join(".immune/state.json")).unwrap_or_default();
        if state.contains("\"observe\"") && held.contains(&format!("\"pid\":{}", apply.pid())) {
            return;
        }
        assert!(Instant::now() < deadline, "the apply never reached a step");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (what CI runners and `timeout` send) stops an apply like Ctrl-C: the lock is
/// released and the rollout resumable. SIGKILL leaves the lock behind, and `immune
/// rollback` on this host takes it over and rolls back itself, without `force-unlock`.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_like_ctrl_c_and_a_killed_applys_lock_is_taken_over_by_rollback() {
    let w = World::new();
    let s = &w.surroundings;
    let slow = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replace("pause          = \"1s\"", "pause          = \"30s\"");
    w.write("main.hcl", &slow);

    let first = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    observing(&w, &first);
    first.signal("TERM");
    let out = first.wait(Duration::from_secs(60));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("Interrupted (SIGTERM)"), "{out:?}");
    assert!(out.stderr.contains("interrupted during"), "{out:?}");
    assert!(
        !w.dir.join(".immune/state.lock").exists(),
        "the lock is released"
    );

    let resumed = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    observing(&w, &resumed);
    resumed.signal("KILL");
    let killed = resumed.wait(Duration::from_secs(30));
    assert!(
        w.dir.join(".immune/state.lock").exists(),
        "a killed apply leaves its lock: {killed:?}"
    );

    let rollback = w.immune(&["rollback", &w.prefix]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    assert!(
        rollback.stderr.contains("note: took over the state lock")
            && rollback.stderr.contains("whose process is gone"),
        "{rollback:?}"
    );
    assert!(
        !rollback.stdout.contains("asked the running apply"),
        "{rollback:?}"
    );
    assert!(rollback.stdout.contains("rolled back"), "{rollback:?}");
    assert!(!w.dir.join(".immune/state.lock").exists());
    assert!(
        w.fleet_state()["rollout"].is_null(),
        "{:?}",
        w.fleet_state()
    );
    assert!(!w.sdk().await.group_exists(&w.group(1)).await);
}

/// A lock held from another host cannot be checked from here: `rollback` leaves its
/// request but says so, and how to go on if that apply is gone.
#[tokio::test(flavor = "multi_thread")]
async fn rollback_says_it_cannot_tell_whether_a_holder_on_another_host_runs() {
    let w = World::new();
    let s = &w.surroundings;
    let slow = w
        .fleet_config(&s.source_ami, &s.load_balancer, "")
        .replace("pause          = \"1s\"", "pause          = \"30s\"");
    w.write("main.hcl", &slow);
    let apply = w.spawn(&["apply", "--auto-approve", "--var", "release=v1"]);
    observing(&w, &apply);
    let path = w.dir.join(".immune/state.lock");
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    lock["host"] = "another-host".into();
    std::fs::write(&path, lock.to_string()).unwrap();

    let rollback = w.immune(&["rollback", &w.prefix]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    let id = lock["id"].as_str().unwrap();
    for said in [
        "left a request to roll".to_string(),
        "on host another-host, so immune cannot tell from here whether it still runs".into(),
        format!(
            "if it is gone, run `immune state force-unlock {id}` then `immune rollback {}`",
            w.prefix
        ),
    ] {
        assert!(rollback.stdout.contains(&said), "{said:?} in {rollback:?}");
    }
    assert!(
        !rollback.stdout.contains("asked the running apply"),
        "{rollback:?}"
    );

    // It does run here, so it acts on the request.
    let out = apply.wait(Duration::from_secs(60));
    assert_eq!(out.code, 3, "{out:?}");
    assert!(!path.exists(), "its lock is released");
}
