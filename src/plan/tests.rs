use super::*;
use crate::config::{load, VarInputs};
use crate::state::Group;

fn config(release: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("immune-plan-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("main.hcl"),
        format!(
            r#"
fleet "web" {{
  release = "{release}"
  image {{
    source_ami    = "ami-source"
    instance_type = "t3.small"
  }}
  instances {{
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    capacity {{
      min     = 1
      max     = 3
      desired = 2
    }}
  }}
  traffic {{
    load_balancer = "web"
    listener_port = 80
    port          = 8080
  }}
  rollout {{
    steps = [25, 100]
  }}
}}
"#
        ),
    )
    .unwrap();
    let config = load(&dir, &VarInputs::default()).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    config
}

fn live(config: &Config, state: &mut State) {
    let fleet = &config.fleets[0];
    let entry = state.fleets.entry("web".into()).or_default();
    entry.seq = 1;
    entry.active = Some(Group {
        name: "web-v001".into(),
        seq: 1,
        release: release_name(fleet),
        fingerprint: fingerprint(fleet),
        image: "ami-1".into(),
        launch_template: crate::cloud::LaunchTemplateRef {
            id: "lt".into(),
            version: 1,
        },
        target_group: "arn:tg".into(),
        listener_arn: "arn:l".into(),
        created_at: "then".into(),
        alarms: Vec::new(),
    });
}

#[test]
fn an_empty_state_plans_the_first_release() {
    let config = config("v1");
    let plan = plan(&config, &State::new(), &BTreeMap::new());
    assert!(plan.has_changes());
    let Action::Release(r) = &plan.changes[0].action else {
        panic!("expected a release");
    };
    assert_eq!(r.group, "web-v001");
    assert!(r.replaces.is_none());
    assert_eq!(plan.changes[0].reason, "first release v1");
    let text = render(&plan, false);
    assert!(text.contains("+ fleet.web: first release v1"), "{text}");
    assert!(text.contains("25% -> 100%"), "{text}");
    assert!(
        text.contains("Plan: 1 to release, 0 to resume, 0 locked, 0 unchanged."),
        "{text}"
    );
}

#[test]
fn the_live_release_is_a_no_op_and_a_new_one_replaces_it() {
    let v1 = config("v1");
    let mut state = State::new();
    live(&v1, &mut state);
    assert!(!plan(&v1, &state, &BTreeMap::new()).has_changes());

    let v2 = config("v2");
    let plan = plan(&v2, &state, &BTreeMap::new());
    let Action::Release(r) = &plan.changes[0].action else {
        panic!("expected a release");
    };
    assert_eq!(r.group, "web-v002");
    assert_eq!(r.replaces.as_ref().unwrap().group, "web-v001");
    assert_eq!(plan.changes[0].reason, "release v2 replaces v1");
    assert!(render(&plan, false).contains("- retire  web-v001 (release v1)"));
}

#[test]
fn a_locked_fleet_plans_nothing_but_the_lock() {
    let v2 = config("v2");
    let mut state = State::new();
    state.fleets.entry("web".into()).or_default().lock = Some(crate::state::FleetLock {
        reason: "gate errors fired".into(),
        release: "v2".into(),
        at: "now".into(),
    });
    let plan = plan(&v2, &state, &BTreeMap::new());
    assert!(matches!(plan.changes[0].action, Action::Locked { .. }));
    assert!(render(&plan, false).contains("immune unlock web"));
}

#[test]
fn provision_scripts_change_the_bake_but_capacity_does_not_change_the_release() {
    let mut a = config("v1").fleets.remove(0);
    let before = (bake_id(&a), fingerprint(&a));
    a.instances.capacity.desired = 3;
    assert_eq!((bake_id(&a), fingerprint(&a)), before);
    a.image.provision = Some("apt-get install nginx".into());
    assert_ne!(bake_id(&a), before.0);
    assert_ne!(fingerprint(&a), before.1);
}
