//! The apply sequence on the in-memory cloud: outcomes, not call scripts.

use super::*;
use crate::cloud::fake::FakeCloud;
use crate::config::{load, VarInputs};
use crate::plan::{plan, Action as PlanAction};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Reporter for Lines {
    fn line(&self, _: &str, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

struct Setup {
    pause: String,
    signals: Signals,
    dir: std::path::PathBuf,
    cloud: FakeCloud,
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
    let dir = std::env::temp_dir().join(format!("immune-engine-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        r#"
variable "release" { type = string }
variable "pause" { type = string }
fleet "web" {
  release = var.release
  image {
    source_ami    = "ami-source"
    instance_type = "t3.small"
  }
  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
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
        .replace("EXTRA", extra),
    )
    .unwrap();
    Setup {
        pause: pause.into(),
        signals: Signals::default(),
        backend: LocalBackend::new(dir.join(".immune/state.json")),
        dir,
        cloud: FakeCloud::with_surroundings(),
        state: State::new(),
    }
}

impl Setup {
    async fn apply(&mut self, release: &str) -> Result<Outcome, EngineError> {
        let inputs = VarInputs {
            cli: vec![
                ("release".into(), release.into()),
                ("pause".into(), self.pause.clone()),
            ],
            ..VarInputs::default()
        };
        let config = load(&self.dir, &inputs).unwrap();
        let fleet = &config.fleets[0];
        let change = plan(&config, &self.state, &BTreeMap::new())
            .changes
            .remove(0);
        let mut engine = Engine {
            cloud: &self.cloud,
            backend: &self.backend,
            state: &mut self.state,
            reporter: &Lines::default(),
            signals: &self.signals,
        };
        match change.action {
            PlanAction::Release(release) => engine.release(fleet, &release).await,
            PlanAction::Resume { .. } => engine.resume(fleet).await,
            other => panic!("unexpected plan {other:?}"),
        }
    }

    fn weights(&self) -> Vec<(String, u8)> {
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
async fn a_failed_launch_leaves_nothing_behind_and_locks_the_fleet() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.cloud.fail("create_group", 1);
    let outcome = s.apply("v2").await.unwrap();
    assert!(
        matches!(outcome, Outcome::RolledBack { locked: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(s.weights(), [("arn:tg/web-v001".to_string(), 100)]);
    let w = s.cloud.world.lock().unwrap();
    assert_eq!(w.groups.keys().collect::<Vec<_>>(), ["web-v001"]);
    assert_eq!(w.target_groups.values().collect::<Vec<_>>(), ["web-v001"]);
    assert!(s.state.fleets["web"].lock.is_some());
}

#[tokio::test]
async fn unhealthy_new_instances_are_rolled_back() {
    let mut s = setup();
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

#[tokio::test]
async fn a_failure_while_retiring_is_finished_by_the_next_apply() {
    let mut s = setup();
    s.apply("v1").await.unwrap();
    s.cloud.fail("delete_group", 1);
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
