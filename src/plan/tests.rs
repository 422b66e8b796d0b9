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
        target_group: Some("arn:tg".into()),
        listener_arn: Some("arn:l".into()),
        created_at: "then".into(),
        alarms: Vec::new(),
        capacity: Some(fleet.instances.capacity),
        irreversible: false,
    });
}

/// Release v1 of fleet `web`, and a state in which it is live.
fn v1_live() -> (Config, State) {
    let v1 = config("v1");
    let mut state = State::new();
    live(&v1, &mut state);
    (v1, state)
}

/// The cloud as the state recorded it: the group at the configured capacity, all
/// traffic on its target group.
fn as_recorded(config: &Config) -> Live {
    Live {
        group: Some(GroupStatus {
            name: "web-v001".into(),
            capacity: config.fleets[0].instances.capacity,
            instances: Vec::new(),
            unhealthy: Default::default(),
        }),
        target_group_exists: true,
        image_exists: true,
        weights: vec![Weight {
            target_group: "arn:tg".into(),
            weight: 100,
        }],
        original_target_groups: vec!["arn:placeholder".into()],
    }
}

fn observed(live: Live) -> BTreeMap<String, Observed> {
    BTreeMap::from([(
        "web".to_string(),
        Observed {
            baked_image: None,
            live: Some(live),
            conflicts: Vec::new(),
            gate_alarms: BTreeMap::new(),
            stand_in: None,
            region: None,
            unproven: None,
        },
    )])
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
        text.contains("Plan: 1 to release, 0 to update in place, 0 to retire, 0 to resume, 0 blocked or locked, 0 unchanged."),
        "{text}"
    );
}

#[test]
fn the_live_release_is_a_no_op_and_a_new_one_replaces_it() {
    let (v1, state) = v1_live();
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

#[test]
fn a_cloud_as_recorded_is_no_change_and_no_drift() {
    let (v1, state) = v1_live();
    let plan = plan(&v1, &state, &observed(as_recorded(&v1)));
    assert!(!plan.has_changes());
    assert!(plan.changes[0].drift.is_empty());
}

#[test]
fn capacity_changed_by_hand_is_drift_that_apply_sets_back() {
    let (v1, state) = v1_live();
    let mut live = as_recorded(&v1);
    live.group.as_mut().unwrap().capacity.desired = 3;
    let plan = plan(&v1, &state, &observed(live));
    let change = &plan.changes[0];
    assert_eq!(
        change.drift,
        [Drift {
            resource: "group web-v001".into(),
            change: "desired capacity 2 -> 3 changed outside immune".into(),
        }]
    );
    let Action::Update(update) = &change.action else {
        panic!("expected an update: {change:?}");
    };
    assert_eq!(update.capacity.unwrap().to.desired, 2);
    assert!(update.weights.is_none());
    assert_eq!(
        change.reason,
        "desired capacity 2 -> 3 drifted outside immune: apply sets it back"
    );
    let text = render(&plan, false);
    assert!(text.contains("Drift: changed outside immune"), "{text}");
    assert!(
        text.contains("~ group   web-v001: desired capacity 3 -> 2"),
        "{text}"
    );
}

#[test]
fn a_capacity_change_in_the_configuration_is_an_update_without_a_release() {
    let (v1, state) = v1_live();
    let mut more = v1.clone();
    more.fleets[0].instances.capacity.desired = 3;
    let plan = plan(&more, &state, &observed(as_recorded(&v1)));
    let change = &plan.changes[0];
    assert!(change.drift.is_empty());
    assert!(matches!(&change.action, Action::Update(u) if u.capacity.unwrap().to.desired == 3));
    assert_eq!(
        change.reason,
        "capacity changed in the configuration: desired capacity 2 -> 3"
    );
}

#[test]
fn weights_moved_by_hand_are_put_back_on_the_active_group() {
    let (v1, state) = v1_live();
    let mut live = as_recorded(&v1);
    live.weights = vec![
        Weight {
            target_group: "arn:tg".into(),
            weight: 50,
        },
        Weight {
            target_group: "arn:aws:elasticloadbalancing:r:1:targetgroup/other/1".into(),
            weight: 50,
        },
    ];
    let plan = plan(&v1, &state, &observed(live));
    let change = &plan.changes[0];
    assert_eq!(change.drift.len(), 1, "{change:?}");
    assert!(change.drift[0].change.contains("other 50%"), "{change:?}");
    let Action::Update(update) = &change.action else {
        panic!("expected an update: {change:?}");
    };
    assert_eq!(
        update.weights.as_ref().unwrap().to,
        [Weight {
            target_group: "arn:tg".into(),
            weight: 100
        }]
    );
}

#[test]
fn a_group_deleted_outside_immune_is_released_again() {
    let (v1, state) = v1_live();
    let mut live = as_recorded(&v1);
    live.group = None;
    let plan = plan(&v1, &state, &observed(live));
    let change = &plan.changes[0];
    assert_eq!(change.drift[0].change, "deleted outside immune");
    let Action::Release(r) = &change.action else {
        panic!("expected a release: {change:?}");
    };
    assert_eq!(r.group, "web-v002");
    assert_eq!(
        change.reason,
        "the active release lost its Auto Scaling group outside immune: release v1 again as web-v002"
    );
}

#[test]
fn a_fleet_removed_from_the_configuration_is_retired_to_its_original_traffic() {
    let (v1, mut state) = v1_live();
    let original = vec![Weight {
        target_group: "arn:placeholder".into(),
        weight: 100,
    }];
    state.fleets.get_mut("web").unwrap().original_weights = original.clone();
    let empty = Config {
        fleets: Vec::new(),
        ..v1.clone()
    };
    let retire_plan = plan(&empty, &state, &observed(as_recorded(&v1)));
    let Action::Retire(retire) = &retire_plan.changes[0].action else {
        panic!("expected a retire: {retire_plan:?}");
    };
    assert_eq!(retire.restore, original);
    assert_eq!(retire.groups, ["web-v001"]);
    assert!(render(&retire_plan, false).contains("- group   web-v001"));

    // Without a record of where traffic went before, it would have nowhere to go.
    state
        .fleets
        .get_mut("web")
        .unwrap()
        .original_weights
        .clear();
    let blocked = plan(&empty, &state, &observed(as_recorded(&v1)));
    assert!(matches!(blocked.changes[0].action, Action::Blocked { .. }));
    // Unless the route no longer sends the fleet any traffic.
    let mut elsewhere = as_recorded(&v1);
    elsewhere.weights = original;
    let free = plan(&empty, &state, &observed(elsewhere));
    assert!(matches!(&free.changes[0].action, Action::Retire(r) if r.restore.is_empty()));
}

#[test]
fn one_target_group_of_any_weight_carries_all_traffic() {
    let (v1, state) = v1_live();
    let mut live = as_recorded(&v1);
    live.weights[0].weight = 1;
    assert!(!plan(&v1, &state, &observed(live)).has_changes());
}

#[path = "../../tests/it/schema.rs"]
mod schema;
use schema::plan_schema_errors as schema_errors;

#[test]
fn every_kind_of_plan_document_follows_the_schema() {
    let v1 = config("v1");
    let mut state = State::new();
    let mut plans = vec![plan(&v1, &state, &BTreeMap::new())];
    live(&v1, &mut state);
    let mut drifted = as_recorded(&v1);
    drifted.group.as_mut().unwrap().capacity.desired = 3;
    drifted.weights.push(Weight {
        target_group: "arn:other".into(),
        weight: 10,
    });
    plans.push(plan(&config("v2"), &state, &observed(drifted.clone())));
    plans.push(plan(&v1, &state, &observed(drifted)));
    plans.push(plan(&v1, &state, &observed(as_recorded(&v1))));
    state.fleets.get_mut("web").unwrap().original_weights = vec![Weight {
        target_group: "arn:placeholder".into(),
        weight: 100,
    }];
    let empty = Config {
        fleets: Vec::new(),
        ..v1.clone()
    };
    plans.push(plan(&empty, &state, &observed(as_recorded(&v1))));
    state
        .fleets
        .get_mut("web")
        .unwrap()
        .original_weights
        .clear();
    plans.push(plan(&empty, &state, &observed(as_recorded(&v1))));
    state.fleets.get_mut("web").unwrap().lock = Some(crate::state::FleetLock {
        reason: "gate".into(),
        release: "v1".into(),
        at: "now".into(),
    });
    plans.push(plan(&v1, &state, &BTreeMap::new()));

    let mut kinds = std::collections::BTreeSet::new();
    for p in &plans {
        let document = serde_json::to_value(Document::new(p, &state, &v1)).unwrap();
        assert_eq!(
            schema_errors(&document),
            Vec::<String>::new(),
            "{document:#}"
        );
        for change in document["changes"].as_array().unwrap() {
            kinds.insert(change["action"]["kind"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["blocked", "locked", "no_op", "release", "retire", "update"]
    );
    // The schema rejects what it should: a document without its state serial.
    let mut broken = serde_json::to_value(Document::new(&plans[0], &state, &v1)).unwrap();
    broken.as_object_mut().unwrap().remove("serial");
    assert!(!schema_errors(&broken).is_empty());
}

#[test]
fn a_saved_plan_is_stale_once_the_state_or_the_configuration_moves_on() {
    let v1 = config("v1");
    let mut state = State::new();
    let document = Document::new(&plan(&v1, &state, &BTreeMap::new()), &state, &v1);
    assert_eq!(document.stale(&state, &v1), None);
    assert!(document
        .stale(&state, &config("v2"))
        .unwrap()
        .contains("configuration"));
    // User data and the bake script make the release, though no plan shows them.
    let mut user_data = v1.clone();
    user_data.fleets[0].instances.user_data = Some("#!/bin/sh\necho changed".into());
    assert!(document.stale(&state, &user_data).is_some());
    let mut script = v1.clone();
    script.fleets[0].image.provision = Some("#!/bin/sh\necho changed".into());
    assert!(document.stale(&state, &script).is_some());
    state.serial += 1;
    assert!(document
        .stale(&state, &v1)
        .unwrap()
        .contains("serial 0, now 1"));
    assert_eq!(
        document.stale(&State::new(), &v1),
        None,
        "a plan made from an empty state applies to an empty state"
    );
    let mut other = State::new();
    other.serial = 1;
    let document = Document::new(&plan(&v1, &other, &BTreeMap::new()), &other, &v1);
    let mut another = State::new();
    another.serial = 1;
    assert!(document.stale(&another, &v1).unwrap().contains("lineage"));
}

#[test]
fn a_release_warns_of_a_gate_in_alarm_now_and_of_a_pause_too_short_for_a_gate() {
    use crate::cloud::{AlarmReading, AlarmState};
    let mut v1 = config("v1");
    let fleet = &mut v1.fleets[0];
    fleet.rollout.pause = std::time::Duration::from_secs(30);
    fleet.rollout.gates = vec![crate::config::Gate {
        name: "errors".into(),
        check: crate::config::GateCheck::Alarm("web-5xx".into()),
        insufficient_data: crate::config::OnInsufficientData::Pass,
        mode: crate::config::GateMode::Enforce,
        slow_at: None,
    }];
    let reading = AlarmReading {
        state: AlarmState::Alarm,
        reason: "Threshold Crossed".into(),
        since: Some("2026-12-01T10:00:00Z".into()),
        needs: Some(std::time::Duration::from_secs(300)),
    };
    let observed = BTreeMap::from([(
        "web".to_string(),
        Observed {
            gate_alarms: BTreeMap::from([("web-5xx".to_string(), reading)]),
            ..Observed::default()
        },
    )]);
    let plan = plan(&v1, &State::new(), &observed);
    let warnings = &plan.changes[0].warnings;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains(
            "alarm web-5xx is in ALARM now since 2026-12-01T10:00:00Z; apply will not start"
        ),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("needs 5m of data")
            && warnings[1].contains("each step is watched for 5m"),
        "{warnings:?}"
    );
    let text = render(&plan, false);
    assert!(
        text.contains("! warning: gate errors: alarm web-5xx is in ALARM now"),
        "{text}"
    );
    let json = serde_json::to_value(Document::new(&plan, &State::new(), &v1)).unwrap();
    assert_eq!(schema_errors(&json), Vec::<String>::new());
}

/// The fleet of `config`, without its traffic block: a worker fleet.
fn worker_config(release: &str) -> Config {
    let mut config = config(release);
    config.fleets[0].traffic = None;
    config
}

#[test]
fn a_worker_fleet_plans_its_steps_as_instances_and_retires_without_a_route() {
    let v1 = worker_config("v1");
    let mut state = State::new();
    let first = plan(&v1, &state, &BTreeMap::new());
    let Action::Release(release) = &first.changes[0].action else {
        panic!("a release: {first:?}")
    };
    let workers = release.workers.as_ref().expect("a capacity canary");
    assert_eq!(
        (workers.instances.as_slice(), workers.desired),
        (&[1, 2][..], 2)
    );
    assert_eq!(workers.termination_grace, "15m");
    assert_eq!(
        (release.port, &release.listener, &release.health_check_path),
        (None, &None, &None)
    );
    let text = render(&first, false);
    assert!(
        text.contains("capacity 1 -> 2 of 2 instances on web-v001"),
        "{text}"
    );
    assert!(!text.contains("target "), "{text}");

    live(&v1, &mut state);
    let active = state
        .fleets
        .get_mut("web")
        .unwrap()
        .active
        .as_mut()
        .unwrap();
    active.target_group = None;
    active.listener_arn = None;
    let v2 = plan(&worker_config("v2"), &state, &BTreeMap::new());
    let text = render(&v2, false);
    assert!(
        text.contains("web-v001 (release v1) loses its capacity step by step, its workers finishing their jobs (within 15m), then deleted"),
        "{text}"
    );
    let empty = Config {
        fleets: Vec::new(),
        ..v1.clone()
    };
    let mut gone = as_recorded(&v1);
    gone.target_group_exists = true;
    gone.weights.clear();
    let retire = plan(&empty, &state, &observed(gone));
    let Action::Retire(r) = &retire.changes[0].action else {
        panic!("retired: {retire:?}")
    };
    assert_eq!((&r.route, r.restore.is_empty()), (&None, true));
    for p in [&first, &v2, &retire] {
        let document = serde_json::to_value(Document::new(p, &state, &v1)).unwrap();
        assert_eq!(
            schema_errors(&document),
            Vec::<String>::new(),
            "{document:#}"
        );
    }
    // The schema tells the two kinds apart: a release with a port and workers is neither.
    let mut both = serde_json::to_value(Document::new(&first, &state, &v1)).unwrap();
    both["changes"][0]["action"]["port"] = 8080.into();
    assert!(!schema_errors(&both).is_empty());
}

#[test]
fn a_locked_fleet_is_no_change_apply_would_make() {
    let v1 = config("v1");
    let mut state = State::new();
    live(&v1, &mut state);
    state.fleets.get_mut("web").unwrap().lock = Some(crate::state::FleetLock {
        reason: "gate".into(),
        release: "v2".into(),
        at: "now".into(),
    });
    let locked = plan(&config("v3"), &state, &BTreeMap::new());
    assert!(locked.has_locked() && !locked.acts());
    let first = plan(&v1, &State::new(), &BTreeMap::new());
    assert!(first.acts() && !first.has_locked());
}

#[test]
fn a_fleet_that_changes_kind_is_blocked_with_the_way_out() {
    let v1 = config("v1");
    let mut state = State::new();
    live(&v1, &mut state);
    let p = plan(&worker_config("v2"), &state, &BTreeMap::new());
    assert!(matches!(p.changes[0].action, Action::Blocked { .. }));
    assert!(
        p.changes[0].reason.contains("cannot change kind in place"),
        "{}",
        p.changes[0].reason
    );
}

#[test]
fn a_release_is_proven_only_by_a_finished_run_of_the_same_image_spec_upstream() {
    use crate::state::HistoryEntry;
    let entry = |release: &str, outcome: &str, spec: &str| HistoryEntry {
        group: "web-v001".into(),
        release: release.into(),
        started_at: "t0".into(),
        finished_at: Some("t1".into()),
        outcome: outcome.into(),
        image_spec: spec.into(),
        fingerprint: String::new(),
        gates: Default::default(),
        decisions: Vec::new(),
    };
    let mut staging = State::new();
    let place = "../staging";
    let none = super::proven(&staging, place, "web", "v2", "s2").unwrap_err();
    assert!(none.contains("has no fleet `web`"), "{none}");

    let fleet = staging.fleets.entry("web".into()).or_default();
    fleet.history.push(entry("v1", "done", "s1"));
    let elsewhere = super::proven(&staging, place, "web", "v2", "s2").unwrap_err();
    assert!(
        elsewhere.contains("has not run in ../staging"),
        "{elsewhere}"
    );

    let fleet = staging.fleets.get_mut("web").unwrap();
    fleet.history.push(entry("v2", "rolled_back", "s2"));
    let rolled = super::proven(&staging, place, "web", "v2", "s2").unwrap_err();
    assert!(rolled.contains("it was rolled back at t1"), "{rolled}");

    let fleet = staging.fleets.get_mut("web").unwrap();
    fleet.history.push(entry("v2", "done", "other"));
    let other = super::proven(&staging, place, "web", "v2", "s2").unwrap_err();
    assert!(other.contains("built from another image"), "{other}");

    let fleet = staging.fleets.get_mut("web").unwrap();
    fleet.history.push(entry("v2", "done", "s2"));
    assert_eq!(super::proven(&staging, place, "web", "v2", "s2"), Ok(()));

    // Rolled back by hand right after it finished: not proven.
    let fleet = staging.fleets.get_mut("web").unwrap();
    fleet.history.push(entry("v1", "restored", ""));
    let back = super::proven(&staging, place, "web", "v2", "s2").unwrap_err();
    assert!(
        back.contains("was rolled back by hand afterwards (to release v1"),
        "{back}"
    );
}

#[test]
fn an_unproven_release_is_blocked_with_where_it_stands_and_an_update_is_not() {
    let config = config("v2");
    let (_, mut state) = v1_live();
    let observed = BTreeMap::from([(
        "web".to_string(),
        Observed {
            unproven: Some("release v2 is still in progress in ../staging".into()),
            ..Observed::default()
        },
    )]);
    let plan = plan(&config, &state, &observed);
    let Action::Blocked { reason } = &plan.changes[0].action else {
        panic!("{plan:?}")
    };
    assert!(reason.contains("in progress in ../staging"), "{reason}");
    // The release that runs already is not held back by it.
    let v1 = self::config("v1");
    live(&v1, &mut state);
    let plan = super::plan(&v1, &state, &observed);
    assert!(matches!(plan.changes[0].action, Action::NoOp), "{plan:?}");
}

#[test]
fn fleets_are_planned_after_the_fleets_they_run_after_and_otherwise_in_order() {
    let mut config = config("v1");
    let fleet = |name: &str, after: &[&str]| {
        let mut f = config.fleets[0].clone();
        f.name = name.into();
        f.rollout.after = after.iter().map(|a| a.to_string()).collect();
        f
    };
    let fleets = vec![
        fleet("web", &["api", "db"]),
        fleet("api", &["db"]),
        fleet("batch", &[]),
        fleet("db", &[]),
    ];
    config.fleets = fleets;
    let order: Vec<&str> = super::in_order(&config.fleets)
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(order, ["batch", "db", "api", "web"]);
}

#[test]
fn a_fleet_after_a_locked_one_is_planned_as_blocked_and_so_is_one_after_it() {
    let mut config = config("v2");
    let fleet = |name: &str, after: &[&str]| {
        let mut f = config.fleets[0].clone();
        f.name = name.into();
        f.rollout.after = after.iter().map(|a| a.to_string()).collect();
        f
    };
    config.fleets = vec![
        fleet("web", &[]),
        fleet("api", &["web"]),
        fleet("edge", &["api"]),
        fleet("batch", &[]),
    ];
    let mut state = State::new();
    state.fleets.entry("web".into()).or_default().lock = Some(crate::state::FleetLock {
        reason: "gate errors fired".into(),
        release: "v2".into(),
        at: "now".into(),
    });
    let plan = plan(&config, &state, &BTreeMap::new());
    let action = |name: &str| {
        &plan
            .changes
            .iter()
            .find(|c| c.fleet == name)
            .unwrap()
            .action
    };
    assert!(matches!(action("web"), Action::Locked { .. }));
    assert!(
        matches!(action("api"), Action::Blocked { reason } if reason == "will not start: it runs after fleet web, which is locked")
    );
    assert!(
        matches!(action("edge"), Action::Blocked { reason } if reason.contains("after fleet api, which is blocked"))
    );
    assert!(matches!(action("batch"), Action::Release(_)));
    assert!(render(&plan, false).contains("fleet.api: will not start"));
}

#[test]
fn a_release_whose_fifth_sequence_digit_makes_a_name_too_long_is_blocked() {
    // `nnnn...-abcde` has 26 characters: 32 with `-v9999`, which the configuration's
    // check allows, and 33 with `-v10000`.
    let mut config = config("v2");
    config.fleets[0].namespace = Some("n".repeat(20));
    config.fleets[0].name = "abcde".into();
    let mut state = State::new();
    state.fleets.entry("abcde".into()).or_default().seq = 9998;
    let planned = plan(&config, &state, &BTreeMap::new());
    let Action::Release(release) = &planned.changes[0].action else {
        panic!("{:?}", planned.changes[0]);
    };
    assert_eq!(release.group, format!("{}-abcde-v9999", "n".repeat(20)));

    state.fleets.get_mut("abcde").unwrap().seq = 9999;
    let planned = plan(&config, &state, &BTreeMap::new());
    let change = &planned.changes[0];
    let Action::Blocked { reason } = &change.action else {
        panic!("{change:?}");
    };
    assert_eq!(
        reason,
        &format!("at release 10000, name `{}-abcde-v10000` has 33 characters, more than the 32 ELB allows in a target group name", "n".repeat(20))
    );
    assert!(
        change
            .reason
            .contains("`immune state mv fleet.abcde fleet.NEW` renames the fleet"),
        "{}",
        change.reason
    );
}
