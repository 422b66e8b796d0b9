//! The apply sequence on the in-memory cloud: outcomes, not call scripts.

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::cloud::faulty::Faulty;
use crate::cloud::AlarmState;
use crate::config::{load, Capacity, VarInputs};
use crate::plan::{plan, Action as PlanAction};
use crate::state::{Answer, AnswerKind, LocalBackend};
use std::collections::BTreeMap;
use std::time::Duration;

mod workers;

/// Progress lines go nowhere: the tests assert on state and the cloud.
struct Quiet;

impl Reporter for Quiet {
    fn line(&self, _: &str, _: &str) {}
}

struct Setup {
    pause: String,
    signals: Signals,
    dir: std::path::PathBuf,
    cloud: std::sync::Arc<FakeCloud>,
    /// The fake seen through scripted faults: what the engine talks to.
    faults: std::sync::Arc<Faulty>,
    backend: LocalBackend,
    state: State,
}

fn setup() -> Setup {
    setup_with_pause("0s")
}

fn setup_with_pause(pause: &str) -> Setup {
    setup_with(pause, "")
}

/// A fleet whose rollout block also holds `extra` (gates, keep_previous).
fn setup_with(pause: &str, extra: &str) -> Setup {
    setup_fleet(pause, extra, "", "")
}

/// A fleet with more in its rollout, image and instances blocks.
fn setup_fleet(pause: &str, extra: &str, image: &str, instances: &str) -> Setup {
    setup_hcl(
        pause,
        r#"
variable "release" { type = string }
variable "pause" { type = string }
fleet "web" {
  release = var.release
  image {
    source_ami    = "ami-source"
    instance_type = "t3.small"
    IMAGE
  }
  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    INSTANCES
    capacity {
      min     = 1
      max     = 2
      desired = 2
    }
  }
  traffic {
    load_balancer        = "web"
    listener_port        = 80
    port                 = 8080
    deregistration_delay = "0s"
  }
  rollout {
    steps          = [50, 100]
    pause          = var.pause
    healthy_within = "50ms"
    poll_interval  = "10ms"
    EXTRA
  }
}
"#
        .replace("EXTRA", extra)
        .replace("IMAGE", image)
        .replace("INSTANCES", instances),
    )
}

/// The configuration `hcl` (variables `release` and `pause`) on the fake surroundings.
fn setup_hcl(pause: &str, hcl: String) -> Setup {
    let dir = std::env::temp_dir().join(format!("immune-engine-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.hcl"), hcl).unwrap();
    let cloud = std::sync::Arc::new(FakeCloud::with_surroundings());
    Setup {
        pause: pause.into(),
        signals: Signals::default(),
        backend: LocalBackend::new(dir.join(".immune/state.json")),
        dir,
        faults: std::sync::Arc::new(Faulty::scripted(cloud.clone())),
        cloud,
        state: State::new(),
    }
}

impl Setup {
    async fn apply(&mut self, release: &str) -> Result<Outcome, EngineError> {
        self.apply_within(release, crate::engine::retry_budget())
            .await
    }

    /// Applies with transient faults retried for at most `budget`.
    async fn apply_within(
        &mut self,
        release: &str,
        budget: Duration,
    ) -> Result<Outcome, EngineError> {
        let faults = self.faults.clone();
        self.apply_through(&*faults, release, budget).await
    }

    /// Plans `release` and carries the plan out through `cloud`.
    async fn apply_through(
        &mut self,
        cloud: &dyn Cloud,
        release: &str,
        budget: Duration,
    ) -> Result<Outcome, EngineError> {
        let config = self.config(release);
        let fleet = &config.fleets[0];
        let change = plan(&config, &self.state, &BTreeMap::new())
            .changes
            .remove(0);
        let mut engine = Engine::new(cloud, &self.backend, &mut self.state, &Quiet, &self.signals);
        engine.retry_budget = budget;
        match change.action {
            PlanAction::Release(release) => engine.release(fleet, &release).await,
            PlanAction::Resume { .. } => engine.resume(fleet).await,
            other => panic!("unexpected plan {other:?}"),
        }
    }

    async fn roll_back(&mut self) -> Result<Outcome, EngineError> {
        let config = self.config("any");
        self.engine().roll_back(&config.fleets[0], "ops").await
    }

    fn set_alarm(&self, name: &str, state: AlarmState) {
        self.cloud.set_alarm(name, state);
    }

    /// Every decision recorded in the fleet's last rollout.
    fn decisions(&self) -> Vec<String> {
        let state = self.backend.load().unwrap();
        let fleet = state.fleets.values().next().expect("one fleet");
        fleet
            .history
            .last()
            .unwrap()
            .decisions
            .iter()
            .map(|d| d.what.clone())
            .collect()
    }

    fn weights(&self) -> Vec<(String, u16)> {
        let w = self.cloud.world.lock().unwrap();
        w.weights["arn:listener/web/80"]
            .iter()
            .map(|w| (w.target_group.clone(), w.weight))
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn two_releases_leave_all_traffic_on_the_second_and_the_first_gone() {
    let mut s = setup();
    assert_eq!(
        s.apply("v1").await.unwrap(),
        Outcome::Released {
            group: "web-v001".into()
        }
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    s.apply("v2").await.unwrap();
    assert_eq!(s.weights(), [("arn:tg/web-v002".to_string(), 100)]);
    {
        let w = s.cloud.world.lock().unwrap();
        assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["web-v002"]);
        assert_eq!(w.target_groups.values().collect::<Vec<_>>(), ["web-v002"]);
        assert!(
            w.instances
                .values()
                .filter(|s| **s != crate::cloud::InstanceState::Terminated)
                .count()
                == 2,
            "builders and the old group's instances are terminated"
        );
    }
    let saved = s.backend.load().unwrap();
    let fleet = &saved.fleets["web"];
    assert_eq!(fleet.active.as_ref().unwrap().name, "web-v002");
    assert_eq!(
        fleet
            .history
            .iter()
            .map(|h| h.outcome.as_str())
            .collect::<Vec<_>>(),
        ["done", "done"]
    );
    assert!(fleet.rollout.is_none());
}

#[tokio::test]
async fn a_new_target_group_joins_the_forward_at_weight_0_and_an_unhealthy_one_leaves_it() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.cloud
        .world
        .lock()
        .unwrap()
        .unhealthy
        .insert("arn:tg/web-v002".into());
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    // Checked, so unhealthy with its reason, not `unused` (Target.NotInUse).
    assert!(
        reason.contains("2 unhealthy (Target.ResponseCodeMismatch)"),
        "{reason}"
    );
    let decisions = s.decisions();
    assert!(
        decisions
            .iter()
            .any(|d| d.starts_with("target group joined the route at weight 0")),
        "{decisions:?}"
    );
    // Out of the forward again, so its target group could be deleted.
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(!s
        .cloud
        .world
        .lock()
        .unwrap()
        .target_groups
        .contains_key("arn:tg/web-v002"));
}

#[tokio::test]
async fn target_groups_the_route_forwarded_to_without_traffic_stay_in_it() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    {
        let mut w = s.cloud.world.lock().unwrap();
        w.foreign_target_groups
            .insert("arn:tg/someone-elses".into());
        w.weights
            .get_mut("arn:listener/web/80")
            .unwrap()
            .push(Weight {
                target_group: "arn:tg/someone-elses".into(),
                weight: 0,
            });
    }
    s.apply("v2").await.unwrap();
    assert_eq!(
        s.weights(),
        [
            ("arn:tg/web-v002".to_string(), 100),
            ("arn:tg/someone-elses".to_string(), 0)
        ]
    );
}

#[tokio::test]
async fn traffic_stickiness_is_set_on_the_forward_with_the_weights() {
    let mut s = setup_fleet("0s", "", "", "");
    let hcl = std::fs::read_to_string(s.dir.join("main.hcl")).unwrap();
    std::fs::write(
        s.dir.join("main.hcl"),
        hcl.replace(
            "deregistration_delay = \"0s\"",
            "deregistration_delay = \"0s\"\n    stickiness           = \"1h\"",
        ),
    )
    .unwrap();
    s.apply("v1").await.unwrap();
    assert_eq!(
        s.cloud
            .world
            .lock()
            .unwrap()
            .stickiness
            .get("arn:listener/web/80"),
        Some(&Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn a_transient_fault_on_launch_is_retried_and_the_release_goes_on() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.faults.fail("CreateAutoScalingGroup", 2);
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "web-v002".into()
        }
    );
    assert!(s.state.fleets["web"].lock.is_none());
}

#[tokio::test]
async fn a_refused_launch_leaves_nothing_behind_and_does_not_lock_the_fleet() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.faults.refuse("CreateAutoScalingGroup", 1);
    let outcome = s.apply("v2").await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: false, .. }),
        "{outcome:?}"
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    {
        let w = s.cloud.world.lock().unwrap();
        assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["web-v001"]);
        assert_eq!(w.target_groups.values().collect::<Vec<_>>(), ["web-v001"]);
    }
    assert!(s.state.fleets["web"].lock.is_none());
    assert!(matches!(
        s.apply("v2").await.unwrap(),
        Outcome::Released { .. }
    ));
}

#[tokio::test]
async fn a_group_name_held_by_someone_else_is_never_taken_over() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.cloud.world.lock().unwrap().held.insert(
        "Auto Scaling group web-v002".into(),
        crate::cloud::Holder::Foreign,
    );
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, locked } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(!locked, "the release was never tried: {reason}");
    assert!(
        reason.contains("Auto Scaling group web-v002 is held by something not created by immune"),
        "{reason}"
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(
        !s.cloud
            .world
            .lock()
            .unwrap()
            .calls
            .contains(&"delete_group"),
        "nothing of the other group's was touched"
    );
    // The next release takes the next name: the fleet is not stuck.
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "web-v003".into()
        }
    );
}

#[tokio::test]
async fn a_fault_that_outlives_the_budget_stops_resumably_with_traffic_back() {
    let mut s = setup_with("10s", &gate("enforce", "pass"));
    s.pause = "0s".into();
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.pause = "10s".into();
    // Readable for the baselines at the start and before the first shift, then not.
    s.faults.fail_after("DescribeAlarms", 2, 1_000_000);
    let err = s
        .apply_within("v2", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Fault { .. }), "{err}");
    assert!(err.to_string().contains("traffic is back"), "{err}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    let saved = s.backend.load().unwrap();
    let fleet = &saved.fleets["web"];
    assert!(fleet.lock.is_none(), "a fault does not lock the fleet");
    let rollout = fleet.rollout.as_ref().unwrap();
    assert_eq!(
        (&rollout.phase, rollout.weight),
        (&Phase::Shift { step: 0 }, 0)
    );

    s.faults.heal();
    s.pause = "0s".into();
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "web-v002".into()
        }
    );
}

#[tokio::test]
async fn a_failure_while_retiring_is_finished_by_the_next_apply() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.faults.refuse("DeleteAutoScalingGroup", 1);
    let err = s.apply("v2").await.unwrap_err();
    assert!(matches!(err, EngineError::Unfinished { .. }), "{err}");
    // Traffic already moved and stays on the new release.
    assert_eq!(s.weights(), [("arn:tg/web-v002".to_string(), 100)]);
    assert!(s.backend.load().unwrap().fleets["web"].rollout.is_some());
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "web-v002".into()
        }
    );
    assert_eq!(s.cloud.world.lock().unwrap().groups.len(), 1);
}

#[tokio::test]
async fn an_unchanged_image_spec_reuses_the_baked_image() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    let images = s.cloud.world.lock().unwrap().images.len();
    s.apply("v2").await.unwrap();
    assert_eq!(s.cloud.world.lock().unwrap().images.len(), images);
}

#[tokio::test]
async fn an_interrupted_release_whose_config_changed_is_rolled_back_without_locking() {
    let mut s = setup_with_pause("10s");
    s.pause = "0s".into();
    s.apply("v1").await.unwrap();
    s.pause = "10s".into();
    // Stopped while observing the first step, as by Ctrl-C or a crash.
    let stopped = tokio::time::timeout(std::time::Duration::from_millis(300), s.apply("v2")).await;
    assert!(stopped.is_err(), "the release was still observing");
    assert_eq!(
        s.weights(),
        [
            ("arn:tg/web-v001".to_string(), 50),
            ("arn:tg/web-v002".to_string(), 50)
        ]
    );
    s.pause = "0s".into();
    let outcome = s.apply("v3").await.unwrap();
    assert_eq!(
        outcome,
        Outcome::RolledBack {
            reason: "the configuration changed while this release was unfinished".into(),
            locked: false
        }
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(s.state.fleets["web"].lock.is_none());
    assert_eq!(
        s.apply("v3").await.unwrap(),
        Outcome::Released {
            group: "web-v003".into()
        }
    );
}

fn gate(mode: &str, insufficient: &str) -> String {
    format!(
        r#"gate "errors" {{
      alarm             = "web-5xx"
      mode              = "{mode}"
      insufficient_data = "{insufficient}"
    }}"#
    )
}

#[tokio::test]
async fn two_gates_on_one_alarm_both_read_it() {
    // A dry-run gate beside the enforce one on the same alarm: each reads the alarm.
    let both = format!(
        "{}\n    gate \"errors-trial\" {{\n      alarm = \"web-5xx\"\n      mode  = \"dry-run\"\n    }}",
        gate("enforce", "pass")
    );
    let mut s = setup_with("0s", &both);
    s.set_alarm("web-5xx", AlarmState::Ok);
    assert!(matches!(
        s.apply("v1").await.unwrap(),
        Outcome::Released { .. }
    ));
    let decisions = s.decisions();
    assert!(
        !decisions.iter().any(|d| d.contains("does not exist")),
        "the second gate lost the alarm: {decisions:?}"
    );
}

#[tokio::test]
async fn an_alarm_in_enforce_mode_rolls_back_with_evidence_and_locks() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.cloud.fire_on_next_shift("web-5xx");
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, locked } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(locked);
    assert!(reason.contains("gate errors failed"), "{reason}");
    assert!(reason.contains("web-5xx is ALARM"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert_eq!(
        s.cloud
            .world
            .lock()
            .unwrap()
            .groups
            .keys()
            .collect::<Vec<_>>(),
        ["web-v001"]
    );
    let saved = s.backend.load().unwrap();
    let evidence = saved.fleets["web"].history[1]
        .decisions
        .iter()
        .find_map(|d| d.evidence.clone())
        .expect("the failed gate's reading is kept");
    assert_eq!(
        (evidence.gate.as_str(), evidence.state.as_str()),
        ("errors", "ALARM")
    );
    assert!(saved.fleets["web"].lock.is_some());
}

#[tokio::test]
async fn dry_run_records_what_it_would_do_and_goes_on() {
    let mut s = setup_with("0s", &gate("dry-run", "pass"));
    s.set_alarm("web-5xx", AlarmState::Alarm);
    assert!(matches!(
        s.apply("v1").await.unwrap(),
        Outcome::Released { .. }
    ));
    let would: Vec<String> = s
        .decisions()
        .into_iter()
        .filter(|d| d.starts_with("dry-run: would roll back"))
        .collect();
    assert_eq!(
        would.len(),
        2,
        "once per step, not once per poll: {would:?}"
    );
}

#[tokio::test]
async fn insufficient_data_follows_its_policy() {
    for (policy, released) in [("pass", true), ("fail", false), ("hold", false)] {
        let mut s = setup_with("20ms", &gate("enforce", policy));
        s.set_alarm("web-5xx", AlarmState::InsufficientData);
        let outcome = s.apply("v1").await.unwrap();
        assert_eq!(
            matches!(outcome, Outcome::Released { .. }),
            released,
            "{policy}: {outcome:?}"
        );
        if policy == "hold" {
            let Outcome::RolledBack { reason, .. } = outcome else {
                unreachable!()
            };
            assert!(reason.contains("had no data"), "{reason}");
        }
    }
}

#[tokio::test]
async fn hold_waits_for_data_that_arrives_within_another_pause() {
    let mut s = setup_with("200ms", &gate("enforce", "hold"));
    s.set_alarm("web-5xx", AlarmState::InsufficientData);
    let cloud = s.cloud.clone();
    let data_arrives = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cloud
            .world
            .lock()
            .unwrap()
            .alarms
            .insert("web-5xx".into(), AlarmState::Ok);
    };
    let (outcome, ()) = tokio::join!(s.apply("v1"), data_arrives);
    assert!(
        matches!(outcome.unwrap(), Outcome::Released { .. }),
        "the step held past its pause until the gate had data"
    );
}

#[tokio::test]
async fn a_missing_gate_alarm_is_retried_then_fails_in_enforce_mode() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    // A few failed reads: retried, the release goes on.
    s.faults.fail("DescribeAlarms", 3);
    assert!(matches!(
        s.apply("v1").await.unwrap(),
        Outcome::Released { .. }
    ));
    // An alarm that is gone is a reading of its own, judged by the decision table.
    s.cloud.world.lock().unwrap().alarms.remove("web-5xx");
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("UNREADABLE"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

/// An answer from the operator `ops` about `group`.
fn answer(kind: AnswerKind, group: &str) -> Answer {
    Answer {
        kind,
        group: group.into(),
        by: "ops".into(),
        at: "now".into(),
    }
}

/// Answers `kind` whenever the rollout waits for a person; never returns.
async fn answer_when_waiting(dir: std::path::PathBuf, kind: AnswerKind) {
    let backend = LocalBackend::new(dir.join(".immune/state.json"));
    loop {
        let state = backend.load().unwrap();
        if let Some(r) = state.fleets.get("web").and_then(|f| f.rollout.as_ref()) {
            let pending = backend.pending_answer("web", &r.group).unwrap().is_some();
            if r.awaiting.is_some() && !pending {
                backend.post_answer("web", &answer(kind, &r.group)).unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Applies `release` while answering every manual gate with `kind`.
async fn apply_answering(s: &mut Setup, release: &str, kind: AnswerKind) -> Outcome {
    let dir = s.dir.clone();
    tokio::select! {
        outcome = s.apply(release) => outcome.unwrap(),
        () = answer_when_waiting(dir, kind) => unreachable!(),
    }
}

#[tokio::test]
async fn manual_gates_wait_for_approve_or_reject() {
    let mut s = setup_with("0s", &gate("manual", "pass"));
    s.set_alarm("web-5xx", AlarmState::Alarm);
    let outcome = apply_answering(&mut s, "v1", AnswerKind::Approve).await;
    assert!(matches!(outcome, Outcome::Released { .. }));
    let approvals = s
        .decisions()
        .iter()
        .filter(|d| d.contains("gate errors approved by ops"))
        .count();
    assert_eq!(approvals, 2, "a person is asked at each step");

    let outcome = apply_answering(&mut s, "v2", AnswerKind::Reject).await;
    let Outcome::RolledBack { reason, locked } = outcome else {
        panic!("rejected")
    };
    assert!(reason.contains("rejected by ops"), "{reason}");
    assert!(locked);
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

#[tokio::test]
async fn a_rollback_asked_while_observing_sends_traffic_back() {
    let mut s = setup_with("10s", "");
    s.pause = "0s".into();
    s.apply("v1").await.unwrap();
    s.pause = "10s".into();
    let dir = s.dir.clone();
    let ask = async move {
        let backend = LocalBackend::new(dir.join(".immune/state.json"));
        loop {
            let state = backend.load().unwrap();
            let observing = state.fleets["web"]
                .rollout
                .as_ref()
                .is_some_and(|r| matches!(r.phase, Phase::Observe { .. }));
            if observing {
                let asked = answer(AnswerKind::Rollback, "web-v002");
                backend.post_answer("web", &asked).unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (outcome, ()) = tokio::join!(s.apply("v2"), ask);
    let Outcome::RolledBack { reason, locked } = outcome.unwrap() else {
        panic!("rolled back")
    };
    assert!(reason.contains("rolled back by ops"), "{reason}");
    assert!(locked);
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    // A person's rollback reads as what it is, not as a failed release.
    let decisions = s.decisions();
    assert!(
        decisions
            .iter()
            .any(|d| d == "rollback asked by ops (immune rollback): rolling back"),
        "{decisions:?}"
    );
    assert!(
        !decisions.iter().any(|d| d.starts_with("FAILED")),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn ctrl_c_stops_at_a_safe_point_and_the_next_apply_resumes() {
    let mut s = setup_with("10s", "");
    s.signals.interrupt();
    let err = s.apply("v1").await.unwrap_err();
    assert!(matches!(err, EngineError::Interrupted { .. }), "{err}");
    s.signals = Signals::default();
    s.pause = "0s".into();
    assert!(matches!(
        s.apply("v1").await.unwrap(),
        Outcome::Released { .. }
    ));
}

#[tokio::test]
async fn metric_gates_get_an_alarm_per_release_deleted_with_it() {
    let metric = r#"gate "latency" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = { TargetGroup = release.target_group, LoadBalancer = release.load_balancer }
        statistic  = "p99"
        threshold  = 0.5
      }
      insufficient_data = "pass"
    }"#;
    let mut s = setup_with("0s", metric);
    s.apply("v1").await.unwrap();
    {
        let w = s.cloud.world.lock().unwrap();
        let alarm = &w.created_alarms["web-v001-latency"];
        assert_eq!(alarm.dimensions["TargetGroup"], "arn:tg/web-v001");
        assert_eq!(alarm.tags.release, "v1");
    }
    // v2's own alarm goes into ALARM once traffic reaches v2.
    s.cloud.fire_on_next_shift("web-v002-latency");
    let outcome = s.apply("v2").await;
    let Outcome::RolledBack { reason, .. } = outcome.unwrap() else {
        panic!("rolled back")
    };
    assert!(
        reason.contains("gate latency failed: alarm web-v002-latency is ALARM"),
        "{reason}"
    );
    let w = s.cloud.world.lock().unwrap();
    assert!(!w.created_alarms.contains_key("web-v002-latency"));
    assert!(w.created_alarms.contains_key("web-v001-latency"));
}

#[tokio::test]
async fn kept_groups_allow_rollback_after_a_finished_release() {
    let mut s = setup_with("0s", "keep_previous = 1");
    s.apply("v1").await.unwrap();
    s.apply("v2").await.unwrap();
    {
        let w = s.cloud.world.lock().unwrap();
        let (kept, instances) = &w.groups["web-v001"];
        assert_eq!((kept.capacity.desired, instances.len()), (0, 0));
    }
    assert_eq!(s.state.fleets["web"].previous[0].name, "web-v001");

    assert_eq!(
        s.roll_back().await.unwrap(),
        Outcome::Restored {
            group: "web-v001".into()
        }
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups["web-v001"].1.len(), 2, "scaled back up");
    assert!(
        !w.groups.contains_key("web-v002"),
        "the bad release is gone"
    );
    let fleet = &s.state.fleets["web"];
    assert_eq!(fleet.active.as_ref().unwrap().name, "web-v001");
    assert!(fleet.previous.is_empty());
    assert!(fleet
        .lock
        .as_ref()
        .unwrap()
        .reason
        .contains("ops rolled release v2 back to v1"));
}

#[tokio::test]
async fn only_keep_previous_groups_are_kept() {
    let mut s = setup_with("0s", "keep_previous = 1");
    for release in ["v1", "v2", "v3"] {
        s.apply(release).await.unwrap();
    }
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(
        w.groups.keys().collect::<Vec<_>>(),
        ["web-v002", "web-v003"]
    );
    assert_eq!(s.state.fleets["web"].previous.len(), 1);
}

#[tokio::test]
async fn rollback_without_a_kept_group_says_how_to_get_one() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    let err = s.roll_back().await.unwrap_err();
    assert!(err.to_string().contains("keep_previous = 1"), "{err}");
}

/// The fleet's traffic goes through the listener rule with priority 10, which forwards to
/// a target group of its own; the listener's default action is someone else's.
fn setup_on_rule(extra: &str) -> Setup {
    let s = setup_with("0s", extra);
    let path = s.dir.join("main.hcl");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "listener_port        = 80",
        "listener_port        = 80\n    rule_priority        = 10",
    );
    std::fs::write(path, text).unwrap();
    {
        let mut w = s.cloud.world.lock().unwrap();
        let rule = "arn:listener-rule/web/80/10".to_string();
        w.rules
            .insert(("arn:listener/web/80".into(), 10), rule.clone());
        w.foreign_target_groups.insert("arn:tg/api".into());
        w.weights.insert(
            rule,
            vec![Weight {
                target_group: "arn:tg/api".into(),
                weight: 100,
            }],
        );
    }
    s
}

impl Setup {
    fn rule_weights(&self) -> Vec<(String, u16)> {
        let w = self.cloud.world.lock().unwrap();
        w.weights["arn:listener-rule/web/80/10"]
            .iter()
            .map(|w| (w.target_group.clone(), w.weight))
            .collect()
    }
}

#[tokio::test]
async fn a_rule_chosen_by_priority_is_shifted_and_the_default_action_left_alone() {
    let mut s = setup_on_rule(&gate("enforce", "pass"));
    let default_action = s.weights();
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    assert_eq!(s.rule_weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert_eq!(
        s.weights(),
        default_action,
        "the default action is not immune's"
    );

    s.cloud.fire_on_next_shift("web-5xx");
    assert!(matches!(
        s.apply("v2").await.unwrap(),
        Outcome::RolledBack { .. }
    ));
    assert_eq!(s.rule_weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert_eq!(s.weights(), default_action);
}

#[tokio::test]
async fn a_missing_rule_is_refused_before_anything_is_made() {
    let mut s = setup_on_rule("");
    s.cloud.world.lock().unwrap().rules.clear();
    let error = s.apply("v1").await.unwrap_err().to_string();
    assert!(error.contains("rule with priority 10"), "{error}");
    assert!(s.cloud.world.lock().unwrap().groups.is_empty());
}

impl Setup {
    fn config(&self, release: &str) -> crate::config::Config {
        let inputs = VarInputs {
            cli: vec![
                ("release".into(), release.into()),
                ("pause".into(), self.pause.clone()),
            ],
            ..VarInputs::default()
        };
        load(&self.dir, &inputs).unwrap()
    }

    /// The plan as `immune plan` makes it: with the live side refreshed from the cloud.
    async fn plan_live(&self, config: &crate::config::Config) -> crate::plan::Plan {
        let live = crate::cli::observe::refresh(&*self.cloud, &self.state)
            .await
            .unwrap();
        let observed = live
            .into_iter()
            .map(|(name, live)| {
                let observed = crate::plan::Observed {
                    baked_image: None,
                    live: Some(live),
                    conflicts: Vec::new(),
                    gate_alarms: BTreeMap::new(),
                    stand_in: None,
                    region: None,
                    unproven: None,
                };
                (name, observed)
            })
            .collect();
        plan(config, &self.state, &observed)
    }

    fn engine(&mut self) -> Engine<'_> {
        Engine::new(
            &*self.faults,
            &self.backend,
            &mut self.state,
            &Quiet,
            &self.signals,
        )
    }
}

#[tokio::test]
async fn capacity_changed_by_hand_is_set_back_in_place() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    let config = s.config("v1");
    assert!(!s.plan_live(&config).await.has_changes());

    s.cloud
        .scale_group(
            "web-v001",
            Capacity {
                min: 1,
                max: 2,
                desired: 1,
            },
        )
        .await
        .unwrap();
    let plan = s.plan_live(&config).await;
    let change = &plan.changes[0];
    assert_eq!(change.drift.len(), 1, "{change:?}");
    let PlanAction::Update(update) = &change.action else {
        panic!("expected an update: {change:?}");
    };
    s.engine().update(&config.fleets[0], update).await.unwrap();
    let group = s.cloud.group("web-v001").await.unwrap().unwrap();
    assert_eq!(group.capacity.desired, 2);
    assert_eq!(group.instances.len(), 2);
    assert!(!s.plan_live(&config).await.has_changes());
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

#[tokio::test]
async fn a_fleet_removed_from_the_configuration_gives_its_traffic_back_and_is_deleted() {
    let mut s = setup_with("0s", "keep_previous = 1");
    let before = s.weights();
    s.apply("v1").await.unwrap();
    s.apply("v2").await.unwrap();
    let config = crate::config::Config {
        fleets: Vec::new(),
        ..s.config("v2")
    };
    let plan = s.plan_live(&config).await;
    let PlanAction::Retire(retire) = &plan.changes[0].action else {
        panic!("expected a retire: {plan:?}");
    };
    assert_eq!(retire.groups, ["web-v002", "web-v001"]);
    s.engine().retire("web", retire).await.unwrap();

    assert_eq!(
        s.weights(),
        before,
        "traffic is back where it was before immune"
    );
    {
        let w = s.cloud.world.lock().unwrap();
        assert!(w.groups.is_empty(), "{:?}", w.groups.keys());
        assert!(w.target_groups.is_empty());
        assert!(
            w.templates.is_empty(),
            "the launch template goes with the fleet: {:?}",
            w.templates
        );
    }
    let saved = s.backend.load().unwrap();
    let fleet = &saved.fleets["web"];
    assert!(fleet.active.is_none() && fleet.previous.is_empty());
    assert_eq!(fleet.history.last().unwrap().outcome, "retired");
    assert!(
        !s.plan_live(&config).await.has_changes(),
        "nothing is left to retire"
    );
}

/// Applies `release` through a cloud that fails `rate` of its calls (throttling, 5xx and
/// timeouts after the call took effect), with a short retry budget so that some faults
/// outlive it.
async fn apply_under_faults(
    s: &mut Setup,
    release: &str,
    rate: f64,
    seed: u64,
) -> (Result<Outcome, EngineError>, usize) {
    let faulty = crate::cloud::faulty::Faulty::new(s.cloud.clone(), rate, seed);
    let result = s
        .apply_through(&faulty, release, Duration::from_millis(40))
        .await;
    let injected = faulty.injected.lock().unwrap().len();
    (result, injected)
}

#[tokio::test]
async fn releases_under_injected_faults_never_lock_and_one_clean_apply_repairs_any_stop() {
    let mut injected = 0;
    let mut stops = 0;
    for rate in [0.05, 0.1, 0.2] {
        for seed in 1..=6 {
            let mut s = setup_with("0s", &gate("enforce", "pass"));
            s.set_alarm("web-5xx", AlarmState::Ok);
            for (seq, release) in [(1, "v1"), (2, "v2")] {
                let (result, n) = apply_under_faults(&mut s, release, rate, seed).await;
                injected += n;
                match &result {
                    Ok(Outcome::Released { .. }) => {}
                    Err(EngineError::Fault { .. } | EngineError::Unfinished { .. }) => {
                        stops += 1;
                        assert!(
                            s.state.fleets["web"].rollout.is_some(),
                            "a stop is resumable"
                        );
                    }
                    other => panic!("rate {rate} seed {seed} {release}: {other:?}"),
                }
                assert!(
                    s.state.fleets["web"].lock.is_none(),
                    "rate {rate} seed {seed} {release}: a fault locked the fleet"
                );
                if result.is_err() {
                    assert_eq!(
                        s.apply(release).await.unwrap(),
                        Outcome::Released {
                            group: format!("web-v{seq:03}")
                        },
                        "rate {rate} seed {seed}: one clean apply repairs the stop"
                    );
                }
                let group = format!("web-v{seq:03}");
                assert_eq!(s.weights(), [(format!("arn:tg/{group}"), 100)]);
                let w = s.cloud.world.lock().unwrap();
                assert_eq!(w.groups.keys().collect::<Vec<_>>(), [&group]);
                assert_eq!(w.target_groups.values().collect::<Vec<_>>(), [&group]);
                assert_eq!(w.images.len(), 1, "one bake, adopted rather than repeated");
                assert_eq!(
                    w.templates["web"].1.len(),
                    1,
                    "only the running release's template version is left (a lost call made no second one, and retiring deleted the old): {:?}",
                    w.templates
                );
                let running: Vec<_> = w
                    .builders
                    .keys()
                    .filter(|id| w.instances[*id] != crate::cloud::InstanceState::Terminated)
                    .collect();
                assert!(running.is_empty(), "builders left running: {running:?}");
            }
        }
    }
    assert!(injected > 20, "faults were injected: {injected}");
    assert!(stops > 0, "some faults outlived the budget");
}

#[tokio::test]
async fn an_alarm_that_comes_and_goes_between_two_polls_fails_the_step() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    // The alarm's state reads OK at every poll; only its history holds the ALARM.
    s.cloud.pulse_on_next_shift("web-5xx");
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::RolledBack { reason, locked } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(locked, "a gate failed: the release is to blame");
    assert!(reason.contains("went into ALARM at"), "{reason}");
    assert!(reason.contains("and is OK again"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

#[tokio::test]
async fn a_lately_changed_alarm_costs_one_history_read_per_step_until_it_changes_again() {
    let mut s = setup_with("300ms", &gate("enforce", "pass"));
    // Set just now: inside every step's window, so its history is worth a read.
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    let count = |calls: &[&str], what: &str| calls.iter().filter(|c| **c == what).count();
    let (polls, reads, seen) = {
        let w = s.cloud.world.lock().unwrap();
        (
            count(&w.calls, "alarms"),
            count(&w.calls, "alarm_transitions"),
            w.calls.len(),
        )
    };
    assert!(
        polls >= 20,
        "the steps were polled: {polls} reads of the alarm"
    );
    assert!(
        reads <= 3,
        "one history read per step, not per poll: {reads} of {polls}"
    );

    // A pulse in the middle of a step moves the alarm's timestamp: read again, caught.
    let cloud = s.cloud.clone();
    let pulser = tokio::spawn(async move {
        loop {
            let read = cloud.world.lock().unwrap().calls[seen..].contains(&"alarm_transitions");
            if read {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        cloud.pulse_alarm("web-5xx");
    });
    let outcome = s.apply("v2").await.unwrap();
    pulser.await.unwrap();
    let Outcome::RolledBack { reason, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("went into ALARM at"), "{reason}");
}

#[tokio::test]
async fn an_alarm_already_firing_stops_the_release_before_anything_is_launched() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    let calls = s.cloud.world.lock().unwrap().calls.len();
    s.set_alarm("web-5xx", AlarmState::Alarm);
    let err = s.apply("v2").await.unwrap_err();
    assert!(matches!(err, EngineError::NotStarted { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("gate errors: alarm web-5xx is ALARM"),
        "{err}"
    );
    {
        let w = s.cloud.world.lock().unwrap();
        let made: Vec<_> = w.calls[calls..]
            .iter()
            .filter(|c| c.starts_with("create") || c.starts_with("launch"))
            .collect();
        assert!(made.is_empty(), "nothing was created: {made:?}");
    }
    let saved = s.backend.load().unwrap();
    assert!(
        saved.fleets["web"].lock.is_none(),
        "not the release's fault"
    );
    assert!(saved.fleets["web"].rollout.is_none());
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);

    s.set_alarm("web-5xx", AlarmState::Ok);
    assert_eq!(
        s.apply("v2").await.unwrap(),
        Outcome::Released {
            group: "web-v002".into()
        }
    );
}

#[tokio::test]
async fn a_gate_that_fires_after_launch_but_before_traffic_moves_tears_down_without_a_lock() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    // Fires while the new group comes up: before the first shift.
    s.cloud
        .world
        .lock()
        .unwrap()
        .fire_on_create
        .insert("web-v002".into(), "web-5xx".into());
    let outcome = s.apply("v2").await;
    let Outcome::RolledBack { reason, locked } = outcome.unwrap() else {
        panic!("rolled back")
    };
    assert!(!locked, "{reason}");
    assert!(reason.contains("before any traffic moved"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert_eq!(
        s.cloud
            .world
            .lock()
            .unwrap()
            .groups
            .keys()
            .collect::<Vec<_>>(),
        ["web-v001"]
    );
}

#[tokio::test]
async fn an_alarm_during_the_drain_sends_traffic_back_to_the_old_group() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    let text = std::fs::read_to_string(s.dir.join("main.hcl"))
        .unwrap()
        .replace(
            "deregistration_delay = \"0s\"",
            "deregistration_delay = \"2s\"",
        );
    std::fs::write(s.dir.join("main.hcl"), text).unwrap();
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    let state_file = s.dir.join(".immune/state.json");
    let cloud = s.cloud.clone();
    let fires = async {
        loop {
            let text = std::fs::read_to_string(&state_file).unwrap_or_default();
            if text.contains("\"drain\"") {
                cloud.set_alarm("web-5xx", AlarmState::Alarm);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (outcome, ()) = tokio::join!(s.apply("v2"), fires);
    let Outcome::RolledBack { reason, locked } = outcome.unwrap() else {
        panic!("rolled back")
    };
    assert!(locked);
    assert!(reason.contains("gate errors failed"), "{reason}");
    assert_eq!(
        s.weights(),
        [("arn:tg/web-v001".to_string(), 100)],
        "the old group still existed and serves again"
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["web-v001"]);
}

#[tokio::test]
async fn a_passed_step_says_what_its_gates_saw() {
    let mut s = setup_with("0s", &gate("dry-run", "pass"));
    s.set_alarm("web-5xx", AlarmState::Alarm);
    s.apply("v1").await.unwrap();
    let passed: Vec<String> = s
        .decisions()
        .into_iter()
        .filter(|d| d.starts_with("step passed"))
        .collect();
    assert_eq!(passed.len(), 2, "{passed:?}");
    assert!(
        passed
            .iter()
            .all(|d| d == "step passed: gate errors would have rolled back (dry-run)"),
        "a step with dry-run findings is not 'every gate OK': {passed:?}"
    );
}

#[tokio::test]
async fn an_alarm_in_alarm_fails_its_gate_even_when_its_history_cannot_be_read() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.faults.fail("DescribeAlarmHistory", 1_000_000);
    s.cloud.fire_on_next_shift("web-5xx");
    let outcome = s.apply("v2").await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

fn fixed_response() -> crate::cloud::StandIn {
    crate::cloud::StandIn::FixedResponse {
        status_code: "404".into(),
        content_type: Some("text/plain".into()),
        message_body: Some("nothing here yet".into()),
    }
}

/// A fresh load balancer: the listener answers with a fixed response, forwarding nowhere.
fn fresh_listener(s: &Setup) {
    let mut w = s.cloud.world.lock().unwrap();
    w.weights.insert("arn:listener/web/80".into(), Vec::new());
    w.stand_ins
        .insert("arn:listener/web/80".into(), fixed_response());
}

#[tokio::test]
async fn a_bad_first_release_on_a_fresh_load_balancer_puts_its_fixed_response_back() {
    let mut s = setup_with("0s", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    fresh_listener(&s);
    s.cloud.fire_on_next_shift("web-5xx");
    let outcome = s.apply("v1").await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "{outcome:?}"
    );
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(
        w.stand_ins.get("arn:listener/web/80"),
        Some(&fixed_response()),
        "the listener answers as it did before immune"
    );
    assert!(w.groups.is_empty());
    assert!(w.health_rules.is_empty(), "the health rule is gone");
    assert!(w.target_groups.is_empty());
}

#[tokio::test]
async fn a_first_release_on_a_fresh_load_balancer_goes_out_and_retiring_puts_the_response_back() {
    let mut s = setup();
    fresh_listener(&s);
    assert_eq!(
        s.apply("v1").await.unwrap(),
        Outcome::Released {
            group: "web-v001".into()
        }
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(s.cloud.world.lock().unwrap().stand_ins.is_empty());
    assert!(
        s.decisions().iter().any(|d| d.starts_with("health rule ")),
        "a route with no forward to join gets a health rule: {:?}",
        s.decisions()
    );
    assert!(
        !s.decisions()
            .iter()
            .any(|d| d.contains("50% on the new group")),
        "a fixed response cannot share: the first step says it sends all: {:?}",
        s.decisions()
    );
    assert!(
        s.cloud.world.lock().unwrap().health_rules.is_empty(),
        "deleted once the group took traffic"
    );
    assert_eq!(
        s.state.fleets["web"].original_stand_in,
        Some(fixed_response())
    );

    let config = crate::config::Config {
        fleets: Vec::new(),
        ..s.config("v1")
    };
    let plan = s.plan_live(&config).await;
    let PlanAction::Retire(retire) = &plan.changes[0].action else {
        panic!("expected a retire: {plan:?}");
    };
    assert_eq!(retire.stand_in, Some(fixed_response()));
    s.engine().retire("web", retire).await.unwrap();
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(
        w.stand_ins.get("arn:listener/web/80"),
        Some(&fixed_response())
    );
    assert!(w.groups.is_empty());
}

#[tokio::test]
async fn immune_rollback_is_heard_while_the_gates_cannot_be_read() {
    let mut s = setup_with("10s", &gate("enforce", "pass"));
    s.pause = "0s".into();
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.pause = "10s".into();
    // Readable for the two baselines, then not at all.
    s.faults.fail_after("DescribeAlarms", 2, 1_000_000);
    let state_file = s.dir.join(".immune/state.json");
    let backend = LocalBackend::new(&state_file);
    let asks = async {
        loop {
            let text = std::fs::read_to_string(&state_file).unwrap_or_default();
            if text.contains("\"observe\"") {
                backend
                    .post_answer("web", &answer(AnswerKind::Rollback, "web-v002"))
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (outcome, ()) = tokio::join!(s.apply("v2"), asks);
    let Outcome::RolledBack { reason, .. } = outcome.unwrap() else {
        panic!("rolled back")
    };
    assert!(reason.contains("rolled back by ops"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

#[tokio::test]
async fn a_fault_stop_during_the_bake_says_the_builder_is_left_for_the_next_apply() {
    let mut s = setup();
    // The builder is looked for and launched; then its state cannot be read.
    s.faults.fail_after("DescribeInstances", 1, 1_000_000);
    let err = s
        .apply_within("v1", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Fault { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("keeps running until the next apply finishes the bake"),
        "{err}"
    );
    s.faults.heal();
    assert!(matches!(
        s.apply("v1").await.unwrap(),
        Outcome::Released { .. }
    ));
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.builders.len(), 1, "the same builder finished the bake");
}

/// The reason a rolled-back release gave.
fn rolled_back_reason(outcome: &Outcome) -> String {
    match outcome {
        Outcome::RolledBack { reason, .. } => reason.clone(),
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[tokio::test]
async fn the_image_is_taken_once_the_builder_ran_the_script_and_powered_off() {
    let mut s = setup_fleet("0s", "", r#"provision = "apt-get install -y nginx""#, "");
    s.apply("v1").await.unwrap();
    let w = s.cloud.world.lock().unwrap();
    // The fake refuses an image from a builder that is still running.
    assert_eq!(w.images.len(), 1);
    let user_data = w.builder_requests[0].user_data.clone().unwrap();
    assert!(
        user_data.contains("apt-get install -y nginx"),
        "{user_data}"
    );
    assert!(user_data.contains("poweroff"), "{user_data}");
    assert!(
        w.builders
            .keys()
            .all(|b| w.instances[b] == crate::cloud::InstanceState::Terminated),
        "the builder is terminated once the image is ready"
    );
}

#[tokio::test]
async fn a_builder_that_never_powers_off_fails_the_bake_with_its_console_and_no_image() {
    let mut s = setup_fleet("0s", "", r#"bake_timeout = "50ms""#, "");
    s.cloud.world.lock().unwrap().builders_hang = true;
    let outcome = s.apply("v1").await.unwrap();
    let reason = rolled_back_reason(&outcome);
    assert!(
        reason.contains("did not power off within bake_timeout 50ms"),
        "{reason}"
    );
    assert!(
        reason.contains("installing nginx"),
        "the console's end: {reason}"
    );
    assert!(matches!(outcome, Outcome::RolledBack { locked: false, .. }));
    let w = s.cloud.world.lock().unwrap();
    assert!(w.images.is_empty());
    assert!(w.groups.is_empty(), "nothing was launched");
    assert!(w
        .builders
        .keys()
        .all(|b| w.instances[b] == crate::cloud::InstanceState::Terminated));
}

#[tokio::test]
async fn a_provision_script_that_fails_is_seen_on_the_console_without_waiting_for_the_timeout() {
    let mut s = setup_fleet("0s", "", r#"bake_timeout = "1h""#, "");
    s.apply("v1").await.unwrap();
    s.cloud.world.lock().unwrap().provision_fails = true;
    let started = std::time::Instant::now();
    let outcome = s
        .apply_with_image_change("v2", "apt-get install -y nginx")
        .await;
    let reason = rolled_back_reason(&outcome);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(reason.contains("exit status 100"), "{reason}");
    assert!(reason.contains("Unable to locate package"), "{reason}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(
        s.state.fleets["web"].lock.is_none(),
        "a broken bake never touched the fleet"
    );
    assert_eq!(s.cloud.world.lock().unwrap().images.len(), 1);
}

impl Setup {
    /// Applies `release` with another provision script, so that a new image is baked.
    async fn apply_with_image_change(&mut self, release: &str, provision: &str) -> Outcome {
        let path = self.dir.join("main.hcl");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "instance_type = \"t3.small\"\n",
            &format!("instance_type = \"t3.small\"\n    provision = {provision:?}\n"),
        );
        std::fs::write(&path, text).unwrap();
        self.apply(release).await.unwrap()
    }
}

const PRODUCTION: &str = r#"
    iam_instance_profile = "web"
    key_name             = "ops"
    tags                 = { service = "web", team = "edge" }
    root_volume {
      size      = 30
      type      = "gp3"
      encrypted = true
      iops      = 3000
    }
    metadata {
      hop_limit = 2
    }
    spot {
      instance_types    = ["t3.small", "t3a.small"]
      on_demand_base    = 1
      on_demand_percent = 25
    }
    scaling "cpu" {
      metric = "cpu"
      target = 50
    }
    scaling "requests" {
      metric = "requests_per_target"
      target = 1000
    }
"#;

#[tokio::test]
async fn every_instance_setting_reaches_the_template_the_group_and_its_policies() {
    let mut s = setup_fleet("0s", "", r#"iam_instance_profile = "builder""#, PRODUCTION);
    s.apply("v1").await.unwrap();
    let w = s.cloud.world.lock().unwrap();
    let builder = &w.builder_requests[0];
    assert_eq!(builder.iam_instance_profile.as_deref(), Some("builder"));
    assert!(builder.metadata.tokens_required);
    let lt = &w.launch_requests[0];
    assert_eq!(lt.iam_instance_profile.as_deref(), Some("web"));
    assert_eq!(lt.key_name.as_deref(), Some("ops"));
    let volume = lt.root_volume.as_ref().unwrap();
    assert_eq!(
        (
            volume.size,
            volume.volume_type.as_deref(),
            volume.encrypted,
            volume.iops
        ),
        (Some(30), Some("gp3"), Some(true), Some(3000))
    );
    assert_eq!(
        lt.metadata,
        crate::config::Metadata {
            tokens_required: true,
            hop_limit: 2
        }
    );
    assert_eq!(lt.tags.extra["service"], "web");
    let (group, _) = &w.groups["web-v001"];
    let spot = group.spot.as_ref().unwrap();
    assert_eq!(spot.instance_types, ["t3.small", "t3a.small"]);
    assert_eq!((spot.on_demand_base, spot.on_demand_percent), (1, 25));
    assert!(group.tags.pairs().contains(&("team".into(), "edge".into())));
    let policies = &w.policies["web-v001"];
    assert_eq!(policies.len(), 2);
    let label = |name: &str| {
        let policy = policies.iter().find(|p| p.name == name).unwrap();
        policy.resource_label.clone()
    };
    assert_eq!(label("web-v001-cpu"), None);
    let requests = label("web-v001-requests").expect("requests per target name their target group");
    assert!(requests.ends_with("web-v001"), "{requests}");
}

#[tokio::test]
async fn with_scaling_policies_a_new_group_starts_as_large_as_the_old_one_runs() {
    let mut s = setup_fleet("0s", "", "", PRODUCTION);
    s.apply("v1").await.unwrap();
    // The policy scaled the fleet in: one instance instead of the configured two.
    s.cloud
        .scale_group(
            "web-v001",
            Capacity {
                min: 1,
                max: 2,
                desired: 1,
            },
        )
        .await
        .unwrap();
    let config = s.config("v2");
    let clouds = crate::cloud::Clouds::single(s.cloud.clone());
    let observed = crate::cli::observe::plan(&clouds, &config, &s.state, &BTreeMap::new())
        .await
        .unwrap();
    assert!(
        observed.changes[0].drift.is_empty(),
        "desired capacity moved by a policy is not drift: {:?}",
        observed.changes[0].drift
    );
    s.apply("v2").await.unwrap();
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups["web-v002"].0.capacity.desired, 1);
    assert_eq!(w.policies["web-v002"].len(), 2);
}

/// The plan's calls while it plans release `release` of the fleet.
async fn plan_calls(s: &Setup, release: &str) -> (crate::plan::Plan, Vec<&'static str>) {
    let config = s.config(release);
    let clouds = crate::cloud::Clouds::single(s.cloud.clone());
    s.cloud.world.lock().unwrap().calls.clear();
    let plan = crate::cli::observe::plan(&clouds, &config, &s.state, &BTreeMap::new())
        .await
        .unwrap();
    (
        plan,
        std::mem::take(&mut s.cloud.world.lock().unwrap().calls),
    )
}

/// The plan releases its one fleet with an image baked earlier.
fn assert_reuses_an_image(plan: &crate::plan::Plan) {
    let PlanAction::Release(release) = &plan.changes[0].action else {
        panic!("{plan:?}")
    };
    assert!(
        matches!(release.image, crate::plan::ImagePlan::Reuse { .. }),
        "{release:?}"
    );
}

#[tokio::test]
async fn a_plan_reads_only_what_its_fleets_need_an_image_to_reuse_and_next_names_only_to_release() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    let asks_claims = |calls: &[&str]| {
        (
            calls.contains(&"find_baked_image"),
            calls.contains(&"claim_conflicts"),
        )
    };
    // Settled: nothing to bake or to name, and the target group the route forwards to
    // exists without being looked for.
    let (plan, calls) = plan_calls(&s, "v1").await;
    assert!(
        matches!(plan.changes[0].action, PlanAction::NoOp),
        "{plan:?}"
    );
    assert_eq!(asks_claims(&calls), (false, false), "{calls:?}");
    let asked = std::mem::take(&mut s.cloud.world.lock().unwrap().target_groups_asked);
    assert!(!asked.contains(&"arn:tg/web-v001".to_string()), "{asked:?}");

    // A new release of the same image spec reuses the image, and its names are checked.
    let (plan, calls) = plan_calls(&s, "v2").await;
    assert_reuses_an_image(&plan);
    assert_eq!(asks_claims(&calls), (true, true), "{calls:?}");

    // The same release whose group was deleted outside immune goes out again: its next
    // names are checked, so a name held by someone else blocks it here, in the plan.
    {
        let mut w = s.cloud.world.lock().unwrap();
        w.groups.remove("web-v001");
        w.held.insert(
            "Auto Scaling group web-v002".into(),
            crate::cloud::Holder::Foreign,
        );
    }
    let (plan, calls) = plan_calls(&s, "v1").await;
    assert_eq!(asks_claims(&calls), (true, true), "{calls:?}");
    let PlanAction::Blocked { reason } = &plan.changes[0].action else {
        panic!("{plan:?}")
    };
    assert!(reason.contains("web-v002"), "{reason}");
    s.cloud.world.lock().unwrap().held.clear();
    let (plan, _) = plan_calls(&s, "v1").await;
    assert_reuses_an_image(&plan);
}

/// Posts `kind` for the running release once it observes step `step` (0-based).
async fn answer_at_step(dir: std::path::PathBuf, kind: AnswerKind, step: usize) {
    let backend = LocalBackend::new(dir.join(".immune/state.json"));
    loop {
        let state = backend.load().unwrap();
        if let Some(r) = state.fleets.get("web").and_then(|f| f.rollout.as_ref()) {
            if r.phase == (Phase::Observe { step }) {
                backend.post_answer("web", &answer(kind, &r.group)).unwrap();
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_paused_step_holds_past_its_pause_until_resumed() {
    let mut s = setup_with("100ms", "");
    s.apply("v1").await.unwrap();
    let dir = s.dir.clone();
    let operator = async {
        answer_at_step(dir.clone(), AnswerKind::Pause, 0).await;
        // Well past the 100ms pause, the step still holds.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let backend = LocalBackend::new(dir.join(".immune/state.json"));
        let state = backend.load().unwrap();
        let rollout = state.fleets["web"].rollout.clone().unwrap();
        assert_eq!(rollout.phase, Phase::Observe { step: 0 }, "held");
        assert_eq!(rollout.held_by.as_deref(), Some("ops"));
        backend
            .post_answer("web", &answer(AnswerKind::Resume, &rollout.group))
            .unwrap();
    };
    let (outcome, ()) = tokio::join!(s.apply("v2"), operator);
    assert_eq!(
        outcome.unwrap(),
        Outcome::Released {
            group: "web-v002".into()
        }
    );
    let decisions = s.decisions();
    let paused = decisions
        .iter()
        .position(|d| d.starts_with("paused by ops"));
    let resumed = decisions.iter().position(|d| d == "resumed by ops");
    assert!(paused.is_some() && paused < resumed, "{decisions:?}");
}

#[tokio::test]
async fn promote_passes_a_long_step_now_and_full_passes_every_step() {
    // v1's steps would take an hour each: promoted in full, it is done at once.
    let mut s = setup_with("1h", "");
    let dir = s.dir.clone();
    let started = std::time::Instant::now();
    let (outcome, ()) = tokio::join!(
        s.apply("v1"),
        answer_at_step(dir.clone(), AnswerKind::PromoteFull, 0)
    );
    assert!(matches!(outcome.unwrap(), Outcome::Released { .. }));
    assert!(started.elapsed() < Duration::from_secs(30));
    // A single promote passes only the step it is given at: the next one waits its hour.
    let (cut, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), s.apply("v2")),
        answer_at_step(dir.clone(), AnswerKind::Promote, 0)
    );
    assert!(cut.is_err(), "step 2 still waits out its pause");
    let state = LocalBackend::new(dir.join(".immune/state.json"))
        .load()
        .unwrap();
    assert_eq!(
        state.fleets["web"].rollout.as_ref().unwrap().phase,
        Phase::Observe { step: 1 }
    );
    let decisions = s.decisions();
    assert!(
        decisions
            .iter()
            .any(|d| d.starts_with("promoted by ops: step 1 passes now")),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn a_promote_does_not_pass_a_failing_gate() {
    let mut s = setup_with("1h", &gate("enforce", "pass"));
    s.set_alarm("web-5xx", AlarmState::Ok);
    let dir = s.dir.clone();
    let cloud = s.cloud.clone();
    let operator = async {
        // The alarm fires during the first step; a person promotes the release anyway.
        while !LocalBackend::new(dir.join(".immune/state.json"))
            .load()
            .unwrap()
            .fleets
            .get("web")
            .and_then(|f| f.rollout.as_ref())
            .is_some_and(|r| r.phase == (Phase::Observe { step: 0 }))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cloud.set_alarm("web-5xx", AlarmState::Alarm);
        answer_at_step(dir.clone(), AnswerKind::PromoteFull, 0).await;
    };
    let (outcome, ()) = tokio::join!(s.apply("v1"), operator);
    let outcome = outcome.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "the gate decides, not the promote: {outcome:?}"
    );
}

/// A fleet marked irreversible (a release that migrates a schema, say).
fn irreversible_setup(pause: &str) -> Setup {
    let s = setup_with(pause, &gate("enforce", "pass"));
    let path = s.dir.join("main.hcl");
    let hcl = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        hcl.replace(
            "  release = var.release\n",
            "  release = var.release\n  irreversible = true\n",
        ),
    )
    .unwrap();
    s
}

#[tokio::test]
async fn an_irreversible_release_whose_gate_fails_keeps_its_traffic_and_is_held() {
    let mut s = irreversible_setup("0s");
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.cloud.fire_on_next_shift("web-5xx");
    let outcome = s.apply("v2").await.unwrap();
    let Outcome::Held { reason, group } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("gate errors failed"), "{reason}");
    assert_eq!(group, "web-v002");
    // Traffic stays where the step put it, the new group runs, the fleet is locked.
    assert_eq!(
        s.weights(),
        [
            ("arn:tg/web-v001".to_string(), 50),
            ("arn:tg/web-v002".to_string(), 50)
        ]
    );
    assert!(s
        .cloud
        .world
        .lock()
        .unwrap()
        .groups
        .contains_key("web-v002"));
    let saved = s.backend.load().unwrap();
    let lock = saved.fleets["web"].lock.clone().expect("locked");
    assert!(
        lock.reason.contains("irreversible release v2 held"),
        "{lock:?}"
    );
    assert!(s.decisions().iter().any(
        |d| d.contains("the release is irreversible: it keeps 50% of the traffic and is held")
    ));
    // The plan leaves it, saying what a person can do.
    let plan = plan(&s.config("v2"), &saved, &BTreeMap::new());
    assert!(matches!(
        plan.changes[0].action,
        PlanAction::Locked { held: true, .. }
    ));

    // A person's forced rollback sends traffic back and tears the release down.
    let outcome = s.roll_back().await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    assert!(!s
        .cloud
        .world
        .lock()
        .unwrap()
        .groups
        .contains_key("web-v002"));
}

#[tokio::test]
async fn a_promoted_held_release_goes_on_from_the_step_that_failed() {
    let mut s = irreversible_setup("0s");
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.cloud.fire_on_next_shift("web-5xx");
    assert!(matches!(s.apply("v2").await.unwrap(), Outcome::Held { .. }));
    s.set_alarm("web-5xx", AlarmState::Ok);
    let config = s.config("v2");
    let outcome = s
        .engine()
        .promote_held(&config.fleets[0], "ops", false)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Released {
            group: "web-v002".into()
        }
    );
    assert_eq!(s.weights(), [("arn:tg/web-v002".to_string(), 100)]);
    let saved = s.backend.load().unwrap();
    assert!(saved.fleets["web"].lock.is_none());
    assert!(saved.fleets["web"].active.as_ref().unwrap().irreversible);
    assert!(s
        .decisions()
        .iter()
        .any(|d| d.starts_with("promoted by ops past what held it")));
}

#[tokio::test]
async fn an_irreversible_release_that_fails_before_traffic_rolls_back_as_usual() {
    let mut s = irreversible_setup("0s");
    s.set_alarm("web-5xx", AlarmState::Ok);
    s.apply("v1").await.unwrap();
    s.cloud
        .world
        .lock()
        .unwrap()
        .unhealthy
        .insert("arn:tg/web-v002".into());
    let outcome = s.apply("v2").await.unwrap();
    assert!(matches!(outcome, Outcome::RolledBack { .. }), "{outcome:?}");
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
}

/// A paced fleet: pause 40ms between 20ms and 80ms, its gate slowing at 80%.
fn paced_setup() -> Setup {
    let gate = r#"rate {
      min_pause = "20ms"
      max_pause = "80ms"
    }
    gate "errors" {
      alarm   = "web-5xx"
      slow_at = 0.8
    }"#;
    let s = setup_with("40ms", gate);
    s.set_alarm("web-5xx", AlarmState::Ok);
    s
}

#[tokio::test]
async fn a_reading_near_its_threshold_stretches_the_step_and_says_why() {
    let mut s = paced_setup();
    s.cloud
        .world
        .lock()
        .unwrap()
        .metric
        .insert("web-5xx".into(), 0.9);
    let outcome = s.apply("v1").await.unwrap();
    assert!(matches!(outcome, Outcome::Released { .. }), "{outcome:?}");
    let decisions = s.decisions();
    let stretched: Vec<&String> = decisions
        .iter()
        .filter(|d| d.starts_with("pace:"))
        .collect();
    assert!(
        stretched.iter().any(|d| d.contains(
            "gate errors read 90% of its threshold (slow_at 80%): step 1 stretched to 80ms"
        )),
        "{decisions:?}"
    );
    // At max_pause it passes (the alarm never fired), and the next step starts there.
    assert!(
        !stretched.iter().any(|d| d.contains("stretched to 160ms")),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn readings_far_below_every_threshold_shorten_the_next_step_and_no_data_changes_nothing() {
    let mut s = paced_setup();
    s.cloud
        .world
        .lock()
        .unwrap()
        .metric
        .insert("web-5xx".into(), 0.1);
    s.apply("v1").await.unwrap();
    let decisions = s.decisions();
    assert!(
        decisions.iter().any(|d| d.contains("gate errors read 10% of its threshold (slow_at 80%) for all of step 1: the next step is watched for 20ms (was 40ms, min_pause 20ms)")),
        "{decisions:?}"
    );

    let mut s = paced_setup();
    s.apply("v1").await.unwrap();
    assert!(
        !s.decisions().iter().any(|d| d.starts_with("pace:")),
        "no data, no change of pace: {:?}",
        s.decisions()
    );
}
