use super::*;

fn rollout(previous: bool) -> Rollout {
    Rollout {
        group: "web-v002".into(),
        seq: 2,
        release: "v2".into(),
        fingerprint: "f".into(),
        bake: "b".into(),
        steps: vec![25, 100],
        listener_arn: "arn:listener".into(),
        previous_weights: vec![Weight {
            target_group: "arn:tg/web-v001".into(),
            weight: 100,
        }],
        previous: previous.then(|| Previous {
            group: "web-v001".into(),
            target_group: "arn:tg/web-v001".into(),
        }),
        phase: Phase::Bake,
        builder: None,
        image: None,
        launch_template: None,
        target_group: None,
        group_created: false,
        weight: 0,
        lock_after_rollback: false,
    }
}

fn lt() -> LaunchTemplateRef {
    LaunchTemplateRef {
        id: "lt-1".into(),
        version: 2,
    }
}

#[test]
fn a_clean_rollout_walks_every_phase_in_order() {
    let mut r = rollout(true);
    let mut seen = Vec::new();
    loop {
        let action = r.next_action();
        seen.push(
            format!("{action:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string(),
        );
        let event = match action {
            Action::FindImageOrLaunchBuilder => Event::BuilderLaunched("i-1".into()),
            Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
            Action::TerminateBuilder { .. } => Event::BuilderTerminated,
            Action::CreateLaunchTemplateVersion { .. } => Event::LaunchTemplateCreated(lt()),
            Action::CreateTargetGroup => Event::TargetGroupCreated("arn:tg/web-v002".into()),
            Action::CreateGroup { .. } => Event::GroupCreated,
            Action::WaitHealthy { .. } => Event::Healthy,
            Action::SetWeights { percent, .. } => Event::WeightsSet(percent),
            Action::Observe { .. } => Event::StepPassed,
            Action::RetirePrevious { .. } => Event::PreviousRetired,
            Action::Finished => break,
            other => panic!("unexpected {other:?}"),
        };
        r.record(event);
    }
    assert_eq!(r.phase, Phase::Done);
    assert_eq!(
        seen,
        [
            "FindImageOrLaunchBuilder",
            "CaptureImage",
            "TerminateBuilder",
            "CreateLaunchTemplateVersion",
            "CreateTargetGroup",
            "CreateGroup",
            "WaitHealthy",
            "SetWeights",
            "Observe",
            "SetWeights",
            "Observe",
            "RetirePrevious",
            "Finished"
        ]
    );
}

#[test]
fn failure_after_traffic_moved_restores_weights_before_tearing_down() {
    let mut r = rollout(true);
    r.record(Event::ImageReady("ami-1".into()));
    r.record(Event::LaunchTemplateCreated(lt()));
    r.record(Event::TargetGroupCreated("arn:tg/web-v002".into()));
    r.record(Event::GroupCreated);
    r.record(Event::Healthy);
    r.record(Event::WeightsSet(25));
    r.record(Event::Failed("alarm".into()));
    assert_eq!(
        r.next_action(),
        Action::RestoreWeights {
            weights: r.previous_weights.clone()
        }
    );
    r.record(Event::WeightsRestored);
    assert_eq!(r.next_action(), Action::DeleteGroup);
    r.record(Event::GroupDeleted);
    assert!(matches!(r.next_action(), Action::DeleteTargetGroup { .. }));
    r.record(Event::TargetGroupDeleted);
    assert!(matches!(
        r.next_action(),
        Action::DeleteLaunchTemplateVersion { .. }
    ));
    r.record(Event::LaunchTemplateDeleted);
    assert!(r.lock_after_rollback);
    assert_eq!(
        r.phase,
        Phase::RolledBack {
            reason: "alarm".into()
        }
    );
}

#[test]
fn failure_while_retiring_does_not_roll_back() {
    let mut r = rollout(true);
    r.phase = Phase::Retire;
    r.weight = 100;
    r.record(Event::Failed("throttled".into()));
    assert_eq!(r.phase, Phase::Retire);
}

#[test]
fn weights_split_the_rest_between_previous_groups() {
    let mut r = rollout(true);
    r.target_group = Some("new".into());
    r.previous_weights = vec![
        Weight {
            target_group: "a".into(),
            weight: 75,
        },
        Weight {
            target_group: "b".into(),
            weight: 25,
        },
    ];
    let w = r.weights_at(20);
    assert_eq!(
        w.iter()
            .map(|w| (w.target_group.as_str(), w.weight))
            .collect::<Vec<_>>(),
        [("a", 60), ("b", 20), ("new", 20)]
    );
    assert_eq!(
        r.weights_at(100)
            .iter()
            .map(|w| (w.target_group.as_str(), w.weight))
            .collect::<Vec<_>>(),
        [("new", 100)]
    );
}

#[test]
fn a_failed_bake_cleans_up_the_builder_without_locking() {
    let mut r = rollout(false);
    r.record(Event::BuilderLaunched("i-1".into()));
    r.record(Event::Failed("image failed".into()));
    assert_eq!(
        r.next_action(),
        Action::TerminateBuilder {
            builder: "i-1".into()
        }
    );
    r.record(Event::BuilderTerminated);
    assert!(r.phase.is_finished());
    assert!(!r.lock_after_rollback);
}
