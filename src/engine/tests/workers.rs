//! Worker fleets on the in-memory cloud: releases by capacity, leaving workers that
//! finish their jobs, and the same immune response as web fleets.

use super::*;
use crate::cloud::{GroupRequest, InstanceState};

/// A worker fleet `jobs` of 4 (min 1, max 6) released in steps of 25, 50 and 100%.
fn workers(extra: &str) -> Setup {
    workers_with(extra, "")
}

fn workers_with(extra: &str, instances: &str) -> Setup {
    setup_hcl(
        "0s",
        r#"
variable "release" { type = string }
variable "pause" { type = string }
fleet "jobs" {
  release = var.release
  image {
    source_ami    = "ami-source"
    instance_type = "t3.small"
  }
  instances {
    instance_type     = "t3.small"
    subnets           = ["subnet-a"]
    security_groups   = ["sg-1"]
    termination_grace = "1m"
    INSTANCES
    capacity {
      min     = 1
      max     = 6
      desired = 4
    }
  }
  rollout {
    steps          = [25, 50, 100]
    pause          = var.pause
    healthy_within = "50ms"
    poll_interval  = "10ms"
    EXTRA
  }
}
"#
        .replace("EXTRA", extra)
        .replace("INSTANCES", instances),
    )
}

const FULL: Capacity = Capacity {
    min: 1,
    max: 6,
    desired: 4,
};

/// The desired counts a group was given after it was created, in order.
fn scaled(s: &Setup, group: &str) -> Vec<u32> {
    let w = s.cloud.world.lock().unwrap();
    w.scaled
        .iter()
        .filter(|(g, _)| g == group)
        .map(|(_, c)| c.desired)
        .collect()
}

fn running(s: &Setup) -> usize {
    let w = s.cloud.world.lock().unwrap();
    w.groups.values().map(|(_, i)| i.len()).sum()
}

#[tokio::test]
async fn two_releases_move_all_capacity_step_by_step_and_old_workers_finish_their_jobs() {
    let mut s = workers("");
    assert_eq!(
        s.apply("v1").await.unwrap(),
        Outcome::Released {
            group: "jobs-v001".into()
        }
    );
    {
        let w = s.cloud.world.lock().unwrap();
        let (request, instances) = &w.groups["jobs-v001"];
        assert_eq!(request.target_group_arn, None, "workers take no traffic");
        assert_eq!(request.capacity, FULL);
        assert_eq!(instances.len(), 4);
        assert_eq!(w.hooks["jobs-v001"], Duration::from_secs(60));
        assert!(w.target_groups.is_empty() && w.weights["arn:listener/web/80"].len() == 1);
    }
    // The first release grows the fleet step by step: nothing to take capacity from.
    assert_eq!(scaled(&s, "jobs-v001"), [1, 2, 4]);

    s.apply("v2").await.unwrap();
    assert_eq!(
        scaled(&s, "jobs-v002"),
        [1, 2, 4],
        "the new group grows first"
    );
    assert_eq!(
        scaled(&s, "jobs-v001"),
        [1, 2, 4, 3, 2, 0, 0],
        "then the old one shrinks by as much (and is scaled in once more to be deleted)"
    );
    {
        let w = s.cloud.world.lock().unwrap();
        assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v002"]);
        assert_eq!(
            w.jobs_finished.len(),
            4,
            "every old worker finished its job"
        );
        assert!(w.cut_off.is_empty());
        assert!(w.leaving.is_empty());
    }
    let recorded = &s.state.fleets["jobs"];
    let active = recorded.active.as_ref().unwrap();
    assert_eq!(
        (
            active.name.as_str(),
            &active.target_group,
            &active.listener_arn
        ),
        ("jobs-v002", &None, &None)
    );
    assert_eq!(running(&s), 4);
    let decisions = s.decisions();
    assert!(
        decisions
            .iter()
            .any(|d| d == "capacity set (50%): 2 instances on the new group, 2 kept on jobs-v001, whose leaving workers finish their jobs"),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn a_bad_release_gives_the_old_group_its_capacity_back_removes_the_new_one_and_locks() {
    let mut s = workers(r#"gate "queue" { alarm = "queue-depth" }"#);
    s.set_alarm("queue-depth", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.cloud
        .world
        .lock()
        .unwrap()
        .fire_on_scale
        .insert("jobs-v002".into(), "queue-depth".into());
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, locked } = outcome else {
        panic!("rolled back, got {outcome:?}")
    };
    assert!(locked && reason.contains("gate queue failed"), "{reason}");
    {
        let w = s.cloud.world.lock().unwrap();
        assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v001"]);
        let (request, instances) = &w.groups["jobs-v001"];
        assert_eq!(
            request.capacity, FULL,
            "its own capacity back, bounds and all"
        );
        assert_eq!(instances.len(), 4);
        // The new group's one worker finished its job before its group was deleted.
        assert_eq!(w.jobs_finished.len(), 2, "{:?}", w.jobs_finished);
    }
    assert_eq!(
        scaled(&s, "jobs-v001")[3..],
        [3, 4],
        "shrunk by one, then back"
    );
    assert_eq!(
        scaled(&s, "jobs-v002"),
        [1, 0],
        "scaled in through its hook"
    );
    assert!(s.state.fleets["jobs"].lock.is_some());
    let decisions = s.decisions();
    let restored = decisions
        .iter()
        .position(|d| d.contains("has its capacity back"))
        .expect("capacity restored");
    let deleted = decisions
        .iter()
        .position(|d| d.contains("new Auto Scaling group deleted"))
        .expect("group deleted");
    assert!(restored < deleted, "{decisions:?}");
}

#[tokio::test]
async fn a_rollout_cut_off_in_the_middle_of_a_capacity_step_resumes_where_it_stood() {
    let mut s = workers("");
    s.apply("v1").await.unwrap();
    // Old workers hold on to their jobs: the first step waits for them, and the process
    // dies there (the future is dropped, as kill -9 would end it).
    s.cloud.world.lock().unwrap().workers_hang = true;
    let cut = tokio::time::timeout(Duration::from_millis(300), s.apply("v2")).await;
    assert!(cut.is_err(), "still waiting for the old workers");
    let saved = s.backend.load().unwrap();
    let rollout = saved.fleets["jobs"].rollout.clone().unwrap();
    // The step's capacity moved; its observation waits for the leaving workers.
    assert_eq!(rollout.phase, Phase::Observe { step: 0 });
    assert_eq!(
        rollout.workers.unwrap().previous,
        Some(FULL),
        "what a rollback gives back"
    );
    // The next process reads the saved state and finishes the release.
    s.state = saved;
    s.cloud.world.lock().unwrap().workers_hang = false;
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "jobs-v002".into()
        }
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v002"]);
    assert_eq!(w.groups["jobs-v002"].0.capacity, FULL);
    assert_eq!(w.groups["jobs-v002"].1.len(), 4);
}

#[tokio::test]
async fn a_worker_that_never_finishes_is_cut_off_at_its_grace() {
    let cloud = FakeCloud::with_surroundings();
    let request = GroupRequest {
        name: "jobs-v001".into(),
        launch_template: crate::cloud::LaunchTemplateRef {
            id: "lt-1".into(),
            version: 1,
        },
        subnets: vec!["subnet-a".into()],
        target_group_arn: None,
        capacity: FULL,
        health_check_grace: Duration::ZERO,
        spot: None,
        tags: crate::cloud::Tags {
            lineage: "l".into(),
            fleet: "jobs".into(),
            release: "v1".into(),
            name: "jobs-v001".into(),
            extra: Default::default(),
        },
    };
    cloud.create_group(&request).await.unwrap();
    cloud
        .put_termination_hook("jobs-v001", Duration::from_millis(50))
        .await
        .unwrap();
    cloud.world.lock().unwrap().workers_hang = true;
    let two = Capacity {
        min: 2,
        max: 2,
        desired: 2,
    };
    cloud.scale_group("jobs-v001", two).await.unwrap();
    let poll = Duration::from_millis(5);
    actions::drain_workers(
        &cloud,
        "jobs-v001",
        2,
        Duration::from_millis(50),
        poll,
        &|| None,
    )
    .await
    .unwrap();
    let w = cloud.world.lock().unwrap();
    assert_eq!(w.cut_off.len(), 2, "terminated once their grace was over");
    assert!(w.jobs_finished.is_empty());
    assert!(w
        .cut_off
        .iter()
        .all(|i| w.instances[i] == InstanceState::Terminated));
}

#[tokio::test]
async fn scaling_policies_size_the_release_as_the_fleet_runs_now() {
    let mut s = workers_with(
        "",
        r#"scaling "cpu" {
      metric = "cpu"
      target = 60
    }"#,
    );
    s.apply("v1").await.unwrap();
    // The policy grew the fleet to 6 since.
    let six = Capacity { desired: 6, ..FULL };
    s.cloud.scale_group("jobs-v001", six).await.unwrap();
    s.apply("v2").await.unwrap();
    assert_eq!(scaled(&s, "jobs-v002"), [2, 3, 6], "shares of 6, not of 4");
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups["jobs-v002"].0.capacity, six);
    assert_eq!(w.policies["jobs-v002"].len(), 1);
    assert_eq!(w.policies["jobs-v002"][0].resource_label, None);
}

#[tokio::test]
async fn rollback_after_a_finished_release_brings_the_kept_workers_back() {
    let mut s = workers("keep_previous = 1");
    s.apply("v1").await.unwrap();
    s.apply("v2").await.unwrap();
    assert_eq!(
        s.cloud.world.lock().unwrap().groups["jobs-v001"].0.capacity,
        Capacity {
            min: 0,
            max: 0,
            desired: 0
        },
        "kept at zero"
    );
    assert_eq!(
        s.roll_back().await.unwrap(),
        Outcome::Restored {
            group: "jobs-v001".into()
        }
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v001"]);
    assert_eq!(w.groups["jobs-v001"].0.capacity, FULL);
    assert_eq!(w.groups["jobs-v001"].1.len(), 4);
    drop(w);
    let recorded = &s.state.fleets["jobs"];
    assert_eq!(recorded.active.as_ref().unwrap().name, "jobs-v001");
    assert!(
        recorded.lock.is_some(),
        "a rollback locks, as for web fleets"
    );
}

#[tokio::test]
async fn a_fleet_cannot_change_between_web_and_workers() {
    let mut s = workers("");
    s.apply("v1").await.unwrap();
    // The same fleet name, now with a traffic block.
    let hcl = std::fs::read_to_string(s.dir.join("main.hcl"))
        .unwrap()
        .replace(
            "  rollout {",
            "  traffic {\n    load_balancer = \"web\"\n    port = 8080\n  }\n  rollout {",
        )
        .replace("termination_grace = \"1m\"", "");
    std::fs::write(s.dir.join("main.hcl"), hcl).unwrap();
    let config = s.config("v2");
    let change = plan(&config, &s.state, &BTreeMap::new()).changes.remove(0);
    let PlanAction::Blocked { reason } = &change.action else {
        panic!("blocked, got {:?}", change.action)
    };
    assert!(reason.contains("worker fleet"), "{reason}");
    assert!(
        change.reason.contains("cannot change kind"),
        "{}",
        change.reason
    );
}

#[tokio::test]
async fn a_release_replacing_a_group_deleted_outside_immune_still_goes_through() {
    let mut s = workers("");
    s.apply("v1").await.unwrap();
    s.cloud.world.lock().unwrap().groups.remove("jobs-v001");
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "jobs-v002".into()
        }
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v002"]);
    assert_eq!(w.groups["jobs-v002"].1.len(), 4);
}

#[tokio::test]
async fn the_gates_are_watched_while_old_workers_finish_their_jobs() {
    let mut s = workers(r#"gate "queue" { alarm = "queue-depth" }"#);
    s.set_alarm("queue-depth", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    {
        let mut w = s.cloud.world.lock().unwrap();
        // The old workers hold on to their jobs (a minute of grace), and the queue
        // backs up as soon as the first step took one of them away.
        w.workers_hang = true;
        w.fire_on_scale
            .insert("jobs-v001".into(), "queue-depth".into());
    }
    // The new group's worker lets go once the rollback scales it in.
    let cloud = s.cloud.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cloud.world.lock().unwrap().workers_hang = false;
    });
    let started = std::time::Instant::now();
    let outcome = s.apply("v2").await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "caught during the wait, not after the grace: {:?}",
        started.elapsed()
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v001"]);
    assert_eq!(w.groups["jobs-v001"].0.capacity, FULL);
}

#[tokio::test]
async fn a_rollback_cut_off_while_old_workers_leave_is_finished_by_the_next_rollback() {
    let mut s = workers("keep_previous = 1");
    s.apply("v1").await.unwrap();
    s.apply("v2").await.unwrap();
    s.cloud.world.lock().unwrap().workers_hang = true;
    let cut = tokio::time::timeout(Duration::from_millis(300), s.roll_back()).await;
    assert!(cut.is_err(), "still waiting for jobs-v002's workers");
    s.state = s.backend.load().unwrap();
    let rollout = s
        .state
        .fleets
        .get_mut("jobs")
        .unwrap()
        .rollout
        .as_mut()
        .unwrap();
    assert_eq!(rollout.kind, Kind::Restore);
    // As if the process died in the middle of the capacity step, before recording it.
    rollout.phase = Phase::Shift { step: 0 };
    rollout.weight = 0;
    s.cloud.world.lock().unwrap().workers_hang = false;
    // Asked again, the rollback goes on to its end: it never puts jobs-v002 back.
    assert_eq!(
        s.roll_back().await.unwrap(),
        Outcome::Restored {
            group: "jobs-v001".into()
        }
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["jobs-v001"]);
    assert_eq!(w.groups["jobs-v001"].0.capacity, FULL);
    drop(w);
    assert!(s.state.fleets["jobs"].lock.is_some());
}

/// Three worker fleets released side by side, each by its own engine on its own copy of
/// the state, saving through one shared document: every fleet's every transition lands,
/// none overwrites another's, and the next plan finds all three released.
#[tokio::test]
async fn fleets_released_side_by_side_over_one_shared_state_lose_no_update() {
    let block = std::fs::read_to_string(workers("").dir.join("main.hcl")).unwrap();
    let fleet = &block[block.find("fleet \"jobs\"").unwrap()..];
    let mut hcl = "variable \"release\" { type = string }\nvariable \"pause\" { type = string }\n"
        .to_string();
    for name in ["ant", "bee", "cat"] {
        hcl.push_str(&fleet.replace("fleet \"jobs\"", &format!("fleet \"{name}\"")));
    }
    let mut s = setup_hcl("0s", hcl);
    for release in ["v1", "v2"] {
        let config = s.config(release);
        let plan = plan(&config, &s.state, &BTreeMap::new());
        let shared = crate::state::Shared::new(&s.backend, s.state.clone());
        let runs = plan.changes.iter().map(|change| {
            let (shared, signals, cloud) = (&shared, &s.signals, &*s.faults);
            let fleet = config
                .fleets
                .iter()
                .find(|f| f.name == change.fleet)
                .unwrap();
            async move {
                let backend = shared.fleet(&change.fleet);
                let mut state = shared.snapshot().await;
                let mut engine = Engine::new(cloud, &backend, &mut state, &Quiet, signals);
                match &change.action {
                    PlanAction::Release(release) => engine.release(fleet, release).await,
                    other => panic!("unexpected plan {other:?}"),
                }
            }
        });
        let outcomes = futures_util::future::join_all(runs).await;
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, Ok(Outcome::Released { .. }))),
            "{outcomes:?}"
        );
        s.state = shared.into_state();
        let saved = s.backend.load().unwrap();
        assert_eq!(saved, s.state, "the shared document is what was written");
        let seq = if release == "v1" { 1 } else { 2 };
        for name in ["ant", "bee", "cat"] {
            let recorded = &saved.fleets[name];
            assert_eq!(
                recorded.active.as_ref().unwrap().name,
                format!("{name}-v00{seq}")
            );
            assert!(recorded.rollout.is_none());
            assert_eq!(recorded.history.len(), seq);
            assert!(recorded.history.iter().all(|h| h.outcome == "done"));
        }
    }
    // Nothing is left to do.
    let config = s.config("v2");
    let again = plan(&config, &s.state, &BTreeMap::new());
    assert!(!again.has_changes(), "{again:?}");
}
