use super::*;

fn rollout(previous: bool) -> Rollout {
    Rollout::new(
        Identity {
            group: "web-v002".into(),
            seq: 2,
            release: "v2".into(),
            fingerprint: "f".into(),
            bake: "b".into(),
        },
        vec![25, 100],
        "arn:listener".into(),
        vec![Weight {
            target_group: "arn:tg/web-v001".into(),
            weight: 100,
        }],
        previous.then(|| Previous {
            group: "web-v001".into(),
            target_group: Some("arn:tg/web-v001".into()),
            alarms: Vec::new(),
        }),
    )
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
            Action::CreateAlarms { .. } => Event::AlarmsCreated(vec!["web-v002-latency".into()]),
            Action::CreateGroup { .. } => Event::GroupCreated,
            Action::JoinRoute { weights } => {
                assert_eq!(
                    weights.last().map(|w| (w.target_group.as_str(), w.weight)),
                    Some(("arn:tg/web-v002", 0)),
                    "the new target group joins at weight 0, the others keep theirs: {weights:?}"
                );
                assert_eq!(weights[..weights.len() - 1], r.previous_weights[..]);
                Event::Joined
            }
            Action::WaitHealthy { .. } => Event::Healthy,
            Action::SetWeights { percent, .. } => Event::WeightsSet(percent),
            Action::Observe { .. } => Event::StepPassed,
            Action::Drain => Event::Drained,
            Action::RetirePrevious { .. } => Event::PreviousRetired,
            Action::Finished => break,
            other => panic!("a clean rollout does not {other:?}"),
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
            "CreateAlarms",
            "CreateGroup",
            "JoinRoute",
            "WaitHealthy",
            "SetWeights",
            "Observe",
            "SetWeights",
            "Observe",
            "Drain",
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
    r.record(Event::AlarmsCreated(vec!["web-v002-latency".into()]));
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
    assert_eq!(
        r.next_action(),
        Action::DeleteAlarms {
            alarms: vec!["web-v002-latency".into()]
        }
    );
    r.record(Event::AlarmsDeleted);
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

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Carries out `action` on a tiny model of the cloud: the listener's weights and
    /// whether the new group and target group exist. `fail` makes it fail instead.
    fn step(r: &mut Rollout, listener: &mut Vec<Weight>, fail: bool) -> bool {
        let action = r.next_action();
        if action == Action::Finished {
            return false;
        }
        if fail {
            // Failures while retiring or rolling back are retried by the next apply.
            r.record(Event::Failed("injected".into()));
            return true;
        }
        let event = match action {
            Action::FindImageOrLaunchBuilder => Event::BuilderLaunched("i-1".into()),
            Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
            Action::TerminateBuilder { .. } => Event::BuilderTerminated,
            Action::CreateLaunchTemplateVersion { .. } => Event::LaunchTemplateCreated(lt()),
            Action::CreateTargetGroup => Event::TargetGroupCreated("new".into()),
            Action::CreateAlarms { .. } => Event::AlarmsCreated(vec!["new-latency".into()]),
            Action::CreateGroup { .. } => Event::GroupCreated,
            Action::ScaleUp => Event::ScaledUp,
            Action::ScaleToZero => Event::ScaledToZero,
            Action::DeleteAlarms { .. } => Event::AlarmsDeleted,
            Action::JoinRoute { weights } => {
                *listener = weights;
                Event::Joined
            }
            Action::AddHealthRule => Event::HealthRuleAdded("rule".into()),
            Action::DeleteHealthRule { .. } => Event::HealthRuleDeleted,
            Action::WaitHealthy { .. } => {
                assert!(
                    r.health_rule.is_some() || listener.iter().any(|w| w.target_group == "new"),
                    "ELB health-checks only a target group a route forwards to: {listener:?}"
                );
                Event::Healthy
            }
            Action::SetWeights { weights, percent } => {
                *listener = weights;
                Event::WeightsSet(percent)
            }
            Action::Observe { .. } => Event::StepPassed,
            Action::Drain => Event::Drained,
            Action::RetirePrevious { .. } => Event::PreviousRetired,
            Action::RestoreWeights { weights } => {
                *listener = weights;
                Event::WeightsRestored
            }
            Action::DeleteGroup => {
                assert!(
                    listener
                        .iter()
                        .all(|w| w.target_group != "new" || w.weight == 0),
                    "the group is deleted only after traffic left it"
                );
                Event::GroupDeleted
            }
            Action::DeleteTargetGroup { .. } => {
                assert!(
                    listener.iter().all(|w| w.target_group != "new") && r.health_rule.is_none(),
                    "ELB refuses to delete a target group a route forwards to: {listener:?}"
                );
                Event::TargetGroupDeleted
            }
            Action::DeleteLaunchTemplateVersion { .. } => Event::LaunchTemplateDeleted,
            Action::Adopt { .. } => Event::Adopted(Found::Nothing),
            Action::RestoreStandIn { .. } => Event::WeightsRestored,
            Action::SetCapacity { .. } | Action::RestoreCapacity { .. } => {
                unreachable!("a web fleet moves traffic")
            }
            Action::Finished => unreachable!(),
        };
        r.record(event);
        true
    }

    proptest! {
        #[test]
        fn any_failures_end_done_or_rolled_back_with_traffic_on_a_live_group(
            failures in proptest::collection::vec(any::<bool>(), 0..40),
            steps in prop_oneof![Just(vec![100u8]), Just(vec![5, 25, 50, 100]), Just(vec![50, 100])],
        ) {
            let mut r = rollout(true);
            r.steps = steps;
            let mut listener = r.previous_weights.clone();
            let mut failures = failures.into_iter();
            let mut moves = 0;
            while step(&mut r, &mut listener, failures.next().unwrap_or(false)) {
                moves += 1;
                prop_assert!(moves < 200, "the rollout must terminate");
                // The listener always forwards all of its traffic somewhere that exists.
                let total: u32 = listener.iter().map(|w| u32::from(w.weight)).sum();
                prop_assert_eq!(total, 100);
                for w in &listener {
                    if w.target_group == "new" && w.weight > 0 {
                        prop_assert!(r.group_created && r.target_group.is_some());
                    }
                }
            }
            match &r.phase {
                Phase::Done => prop_assert_eq!(listener.clone(), vec![Weight { target_group: "new".into(), weight: 100 }]),
                Phase::RolledBack { .. } => {
                    prop_assert_eq!(listener.clone(), r.previous_weights.clone());
                    prop_assert!(!r.group_created && r.target_group.is_none() && r.builder.is_none());
                }
                other => prop_assert!(false, "ended in {:?}", other),
            }
        }
    }

    /// A richer model of the cloud for both kinds of rollout: which groups exist and
    /// serve (scaled up), and the listener. Outcomes are random per action: success,
    /// failure, or the call taking effect but reporting a failure (a lost response).
    #[derive(Debug)]
    struct Cloud {
        listener: Vec<Weight>,
        /// target group -> (group exists, group scaled up)
        groups: std::collections::BTreeMap<String, (bool, bool)>,
    }

    impl Cloud {
        fn serving(&self, tg: &str) -> bool {
            self.groups
                .get(tg)
                .is_some_and(|(exists, up)| *exists && *up)
        }

        fn carries_traffic(&self, tg: &str) -> bool {
            self.listener
                .iter()
                .any(|w| w.target_group == tg && w.weight > 0)
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Ok,
        Fail,
        /// The call took effect, but its answer was lost.
        FailAfter,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            6 => Just(Outcome::Ok),
            1 => Just(Outcome::Fail),
            1 => Just(Outcome::FailAfter),
        ]
    }

    /// Carries out the next action on `cloud`; false when finished.
    fn act(r: &mut Rollout, cloud: &mut Cloud, outcome: Outcome) -> bool {
        let action = r.next_action();
        if action == Action::Finished {
            return false;
        }
        if let Outcome::Fail = outcome {
            r.record(Event::Failed("injected".into()));
            return true;
        }
        let tg = r.target_group.clone().unwrap_or_else(|| "new".into());
        let event = match action {
            Action::FindImageOrLaunchBuilder => Event::BuilderLaunched("i-1".into()),
            Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
            Action::TerminateBuilder { .. } => Event::BuilderTerminated,
            Action::CreateLaunchTemplateVersion { .. } => Event::LaunchTemplateCreated(lt()),
            Action::CreateTargetGroup => {
                cloud.groups.insert("new".into(), (false, false));
                Event::TargetGroupCreated("new".into())
            }
            Action::CreateAlarms { .. } => Event::AlarmsCreated(vec!["new-latency".into()]),
            Action::CreateGroup { .. } => {
                cloud.groups.insert(tg.clone(), (true, true));
                Event::GroupCreated
            }
            Action::ScaleUp => {
                cloud.groups.insert(tg.clone(), (true, true));
                Event::ScaledUp
            }
            Action::JoinRoute { weights } => {
                cloud.listener = weights;
                Event::Joined
            }
            Action::AddHealthRule => Event::HealthRuleAdded("rule".into()),
            Action::DeleteHealthRule { .. } => Event::HealthRuleDeleted,
            Action::WaitHealthy { .. } => {
                assert!(
                    r.health_rule.is_some() || cloud.listener.iter().any(|w| w.target_group == tg),
                    "ELB health-checks only a target group a route forwards to: {cloud:?}"
                );
                Event::Healthy
            }
            Action::SetWeights { weights, percent } => {
                for w in &weights {
                    assert!(
                        w.weight == 0 || cloud.serving(&w.target_group),
                        "traffic only to serving groups: {weights:?} on {cloud:?}"
                    );
                }
                cloud.listener = weights;
                Event::WeightsSet(percent)
            }
            Action::Observe { .. } => Event::StepPassed,
            Action::Drain => Event::Drained,
            Action::RetirePrevious { previous, keep, .. } => {
                if let Some(p) = previous {
                    assert!(
                        !cloud.carries_traffic(p.target_group.as_deref().unwrap()),
                        "a group is retired only after traffic left it"
                    );
                    cloud.groups.insert(p.target_group.unwrap(), (keep, false));
                }
                Event::PreviousRetired
            }
            Action::RestoreWeights { weights } => {
                cloud.listener = weights;
                Event::WeightsRestored
            }
            Action::DeleteGroup | Action::ScaleToZero => {
                assert!(
                    !cloud.carries_traffic(&tg),
                    "a group stops serving only after traffic left it"
                );
                let kept = matches!(action, Action::ScaleToZero);
                cloud.groups.insert(tg, (kept, false));
                if kept {
                    Event::ScaledToZero
                } else {
                    Event::GroupDeleted
                }
            }
            Action::DeleteAlarms { .. } => Event::AlarmsDeleted,
            Action::DeleteTargetGroup { target_group } => {
                assert!(
                    cloud
                        .listener
                        .iter()
                        .all(|w| w.target_group != target_group),
                    "ELB refuses to delete a target group a route forwards to: {cloud:?}"
                );
                Event::TargetGroupDeleted
            }
            Action::DeleteLaunchTemplateVersion { .. } => Event::LaunchTemplateDeleted,
            Action::Adopt { .. } => Event::Adopted(Found::Nothing),
            Action::RestoreStandIn { .. } => Event::WeightsRestored,
            Action::SetCapacity { .. } | Action::RestoreCapacity { .. } => {
                unreachable!("a web fleet moves traffic")
            }
            Action::Finished => unreachable!(),
        };
        match outcome {
            Outcome::FailAfter => r.record(Event::Failed("answer lost".into())),
            _ => r.record(event),
        }
        true
    }

    /// A restore: the kept group `old` comes back in place of the active `bad` one.
    fn restore() -> Rollout {
        let mut r = rollout(true);
        r.kind = Kind::Restore;
        r.phase = Phase::ScaleUp;
        r.steps = vec![100];
        r.group = "web-v001".into();
        r.target_group = Some("old".into());
        r.launch_template = Some(lt());
        r.image = Some("ami-0".into());
        r.group_created = true;
        r.alarms_created = true;
        r.previous_weights = vec![Weight {
            target_group: "bad".into(),
            weight: 100,
        }];
        r.previous = Some(Previous {
            group: "web-v002".into(),
            target_group: Some("bad".into()),
            alarms: Vec::new(),
        });
        r
    }

    proptest! {
        #[test]
        fn random_outcomes_never_leave_traffic_on_a_group_that_does_not_serve(
            restoring in any::<bool>(),
            outcomes in proptest::collection::vec(outcome(), 0..60),
            steps in prop_oneof![Just(vec![100u8]), Just(vec![5, 25, 50, 100]), Just(vec![50, 100])],
        ) {
            let (mut r, mut cloud) = if restoring {
                let r = restore();
                let groups = [("bad".to_string(), (true, true)), ("old".to_string(), (true, false))];
                (r, Cloud { listener: vec![Weight { target_group: "bad".into(), weight: 100 }], groups: groups.into() })
            } else {
                let mut r = rollout(true);
                r.steps = steps;
                let groups = [("arn:tg/web-v001".to_string(), (true, true))];
                let listener = r.previous_weights.clone();
                (r, Cloud { listener, groups: groups.into() })
            };
            let mut outcomes = outcomes.into_iter();
            let mut moves = 0;
            // Failures while retiring or rolling back are retried, as the next apply does.
            while act(&mut r, &mut cloud, outcomes.next().unwrap_or(Outcome::Ok)) {
                moves += 1;
                prop_assert!(moves < 300, "the rollout must terminate");
                let total: u32 = cloud.listener.iter().map(|w| u32::from(w.weight)).sum();
                prop_assert_eq!(total, 100);
                for w in cloud.listener.iter().filter(|w| w.weight > 0) {
                    prop_assert!(cloud.serving(&w.target_group), "{:?} carries traffic but does not serve: {:?}", w, cloud);
                }
            }
            let target = r.target_group.clone();
            match &r.phase {
                Phase::Done => {
                    let tg = target.expect("a finished rollout has its target group");
                    prop_assert_eq!(cloud.listener.clone(), vec![Weight { target_group: tg, weight: 100 }]);
                }
                Phase::RolledBack { .. } => {
                    prop_assert_eq!(cloud.listener.clone(), r.previous_weights.clone());
                    prop_assert!(!r.group_created && r.builder.is_none() && r.alarms.is_empty());
                    if restoring {
                        prop_assert_eq!(cloud.groups["old"], (true, false), "the kept group is kept, not deleted");
                    }
                }
                other => prop_assert!(false, "ended in {:?}", other),
            }
        }
    }
}

/// Crashes between any two saves. The engine saves the rollout after `begin` (the intent
/// to create) and after every recorded event; a crash loses everything since the last
/// save but not what the cloud did. The model cloud counts what exists of the new
/// release; in the end nothing may be left that the state does not know of.
mod crashes {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Ok,
        /// The call failed before it did anything.
        Fail,
        /// The process died before the call.
        CrashBefore,
        /// The call did its work, then the process died.
        CrashAfter,
        /// The gate saw ALARM.
        Alarm,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            8 => Just(Outcome::Ok),
            1 => Just(Outcome::Fail),
            1 => Just(Outcome::CrashBefore),
            2 => Just(Outcome::CrashAfter),
            1 => Just(Outcome::Alarm),
        ]
    }

    /// What exists of the new release.
    #[derive(Debug, Default)]
    struct Made {
        things: BTreeSet<&'static str>,
    }

    /// The action's effect on the model cloud, and the event it reports. Creates adopt
    /// what exists, as the real actions look by name and lineage first.
    fn perform(r: &Rollout, action: &Action, made: &mut Made, alarm: bool) -> Event {
        let mut create = |what: &'static str| made.things.insert(what);
        match action {
            Action::FindImageOrLaunchBuilder => {
                create("builder");
                Event::BuilderLaunched("i-1".into())
            }
            Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
            Action::TerminateBuilder { .. } => {
                made.things.remove("builder");
                Event::BuilderTerminated
            }
            Action::CreateLaunchTemplateVersion { .. } => {
                create("template");
                Event::LaunchTemplateCreated(lt())
            }
            Action::CreateTargetGroup => {
                create("target group");
                Event::TargetGroupCreated("new".into())
            }
            Action::CreateAlarms { .. } => {
                create("alarm");
                Event::AlarmsCreated(vec!["new-latency".into()])
            }
            Action::CreateGroup { .. } => {
                create("group");
                Event::GroupCreated
            }
            Action::Adopt { intent } => {
                let has = |what| made.things.contains(what);
                Event::Adopted(match intent {
                    Intent::Builder if has("builder") => Found::Builder("i-1".into()),
                    Intent::LaunchTemplate if has("template") => Found::LaunchTemplate(lt()),
                    Intent::TargetGroup if has("target group") => Found::TargetGroup("new".into()),
                    Intent::Alarms => Found::Alarms(vec!["new-latency".into()]),
                    Intent::Group if has("group") => Found::Group,
                    _ => Found::Nothing,
                })
            }
            Action::JoinRoute { .. } => {
                create("join");
                Event::Joined
            }
            Action::WaitHealthy { .. } => Event::Healthy,
            Action::SetWeights { percent, .. } => {
                create("join");
                Event::WeightsSet(*percent)
            }
            Action::Observe { step } if alarm => {
                Event::Failed(format!("gate errors: ALARM at step {}", step + 1))
            }
            Action::Observe { .. } => Event::StepPassed,
            Action::Drain => Event::Drained,
            Action::RetirePrevious { .. } => Event::PreviousRetired,
            Action::RestoreWeights { .. } => {
                made.things.remove("join");
                Event::WeightsRestored
            }
            Action::DeleteGroup => {
                made.things.remove("group");
                Event::GroupDeleted
            }
            Action::DeleteAlarms { .. } => {
                made.things.remove("alarm");
                Event::AlarmsDeleted
            }
            Action::DeleteTargetGroup { .. } => {
                assert!(
                    !made.things.contains("join"),
                    "ELB refuses to delete a target group a route forwards to"
                );
                made.things.remove("target group");
                Event::TargetGroupDeleted
            }
            Action::DeleteLaunchTemplateVersion { .. } => {
                made.things.remove("template");
                Event::LaunchTemplateDeleted
            }
            other => panic!("a release does not {other:?} ({:?})", r.phase),
        }
    }

    /// The state document's round trip: what the next process reads.
    fn reread(saved: &str) -> Rollout {
        serde_json::from_str(saved).expect("the saved rollout reads back")
    }

    proptest! {
        #[test]
        fn crashes_at_any_point_leave_nothing_the_state_does_not_know(
            outcomes in proptest::collection::vec(outcome(), 0..80),
        ) {
            let mut r = rollout(true);
            let mut saved = serde_json::to_string(&r).unwrap();
            let mut made = Made::default();
            let mut outcomes = outcomes.into_iter();
            let mut moves = 0;
            let mut decided_rollback = false;
            loop {
                moves += 1;
                prop_assert!(moves < 400, "the rollout must terminate");
                let action = r.next_action();
                if action == Action::Finished {
                    break;
                }
                // Save, then act.
                if r.begin(&action) {
                    saved = serde_json::to_string(&r).unwrap();
                }
                let outcome = outcomes.next().unwrap_or(Outcome::Ok);
                match outcome {
                    Outcome::CrashBefore => {
                        r = reread(&saved);
                        continue;
                    }
                    Outcome::CrashAfter => {
                        perform(&r, &action, &mut made, false);
                        r = reread(&saved);
                        continue;
                    }
                    Outcome::Fail => r.record(Event::Failed("injected".into())),
                    Outcome::Ok | Outcome::Alarm => {
                        let event = perform(&r, &action, &mut made, matches!(outcome, Outcome::Alarm));
                        r.record(event);
                    }
                }
                saved = serde_json::to_string(&r).unwrap();
                // A rollback once saved is never reversed by a later process.
                if matches!(reread(&saved).phase, Phase::RollBack { .. }) {
                    decided_rollback = true;
                }
                if decided_rollback {
                    prop_assert!(
                        matches!(r.phase, Phase::RollBack { .. } | Phase::RolledBack { .. }),
                        "a decided rollback was reversed: {:?}", r.phase
                    );
                }
            }
            match &r.phase {
                Phase::Done => {
                    prop_assert!(!made.things.contains("builder"), "builder left: {:?}", made);
                    prop_assert!(made.things.contains("join"), "the release took traffic: {:?}", made);
                    prop_assert!(r.group_created && r.target_group.is_some() && r.launch_template.is_some());
                }
                Phase::RolledBack { .. } => {
                    prop_assert!(made.things.is_empty(), "left behind by a crash: {:?}", made);
                }
                other => prop_assert!(false, "ended in {:?}", other),
            }
        }
    }
}

/// Worker fleets: the canary moves capacity, and the arithmetic is the whole release.
mod workers {
    use super::*;
    use proptest::prelude::*;

    fn capacity(min: u32, desired: u32, max: u32) -> Capacity {
        Capacity { min, max, desired }
    }

    fn shares(full: Capacity, steps: &[u8]) -> Vec<(u32, u32)> {
        steps
            .iter()
            .map(|s| {
                let (new, old) = capacity_at(full, *s);
                (new.desired, old.desired)
            })
            .collect()
    }

    #[test]
    fn each_step_moves_its_share_rounded_up_and_the_total_stays_at_desired() {
        assert_eq!(
            shares(capacity(2, 4, 6), &[25, 50, 100]),
            [(1, 3), (2, 2), (4, 0)]
        );
        // Odd capacities round up on the new group: a 10% step still moves one worker.
        assert_eq!(
            shares(capacity(1, 5, 5), &[10, 33, 50, 100]),
            [(1, 4), (2, 3), (3, 2), (5, 0)]
        );
        assert_eq!(
            shares(capacity(3, 7, 9), &[1, 99, 100]),
            [(1, 6), (7, 0), (7, 0)]
        );
        // A fleet of one moves at its first step; the others change nothing.
        assert_eq!(
            shares(capacity(1, 1, 1), &[25, 50, 100]),
            [(1, 0), (1, 0), (1, 0)]
        );
        assert_eq!(shares(capacity(0, 0, 2), &[50, 100]), [(0, 0), (0, 0)]);
    }

    #[test]
    fn shares_are_pinned_until_the_last_step_which_gives_the_fleet_its_bounds() {
        let full = capacity(2, 4, 6);
        let (new, old) = capacity_at(full, 50);
        assert_eq!((new, old), (capacity(2, 2, 2), capacity(2, 2, 2)));
        let (new, old) = capacity_at(full, 100);
        assert_eq!(new, full, "min and max as configured");
        assert_eq!(old, capacity(0, 0, 0));
    }

    proptest! {
        #[test]
        fn the_groups_always_add_up_to_the_fleet(
            desired in 0u32..200,
            spare in 0u32..50,
            percent in 1u8..=100,
        ) {
            let full = capacity(desired.min(1), desired, desired + spare);
            let (new, old) = capacity_at(full, percent);
            prop_assert_eq!(new.desired + old.desired, desired);
            prop_assert!(new.min <= new.desired && new.desired <= new.max);
            prop_assert!(old.min <= old.desired && old.desired <= old.max);
            if desired > 0 {
                prop_assert!(new.desired >= 1, "every step moves at least one worker");
            }
            if desired > 0 {
                let share = f64::from(new.desired) / f64::from(desired);
                prop_assert!(share + 1e-9 >= f64::from(percent) / 100.0, "never less than the step");
            }
        }
    }

    fn worker_rollout(previous: bool) -> Rollout {
        let mut r = rollout(previous);
        r.listener_arn = String::new();
        r.previous_weights = Vec::new();
        if let Some(p) = r.previous.as_mut() {
            p.target_group = None;
        }
        r.steps = vec![25, 50, 100];
        r.workers = Some(Workers {
            full: capacity(2, 4, 6),
            previous: previous.then_some(capacity(2, 4, 6)),
        });
        r
    }

    #[test]
    fn a_worker_release_creates_no_target_group_and_needs_no_drain() {
        let mut r = worker_rollout(true);
        let mut seen = Vec::new();
        loop {
            let action = r.next_action();
            let event = match &action {
                Action::FindImageOrLaunchBuilder => Event::BuilderLaunched("i-1".into()),
                Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
                Action::TerminateBuilder { .. } => Event::BuilderTerminated,
                Action::CreateLaunchTemplateVersion { .. } => Event::LaunchTemplateCreated(lt()),
                Action::CreateAlarms { target_group } => {
                    assert_eq!(*target_group, None);
                    Event::AlarmsCreated(Vec::new())
                }
                Action::CreateGroup { target_group, .. } => {
                    assert_eq!(*target_group, None);
                    Event::GroupCreated
                }
                Action::WaitHealthy { .. } => Event::Healthy,
                Action::SetCapacity { new, old, percent } => {
                    seen.push((
                        new.desired,
                        old.as_ref().map(|(g, c)| (g.clone(), c.desired)),
                    ));
                    Event::CapacitySet {
                        percent: *percent,
                        instances: 1,
                        left: None,
                    }
                }
                Action::Observe { .. } => Event::StepPassed,
                Action::RetirePrevious { .. } => Event::PreviousRetired,
                Action::Finished => break,
                other => panic!("a worker release does not {other:?}"),
            };
            r.record(event);
        }
        assert_eq!(r.phase, Phase::Done);
        let old = |n| Some(("web-v001".to_string(), n));
        assert_eq!(seen, [(1, old(3)), (2, old(2)), (4, old(0))]);
    }

    #[test]
    fn a_failed_worker_step_gives_the_old_group_its_capacity_back_before_deleting_the_new() {
        let mut r = worker_rollout(true);
        for event in [
            Event::ImageReady("ami-1".into()),
            Event::LaunchTemplateCreated(lt()),
            Event::AlarmsCreated(Vec::new()),
            Event::GroupCreated,
            Event::Healthy,
            Event::CapacitySet {
                percent: 25,
                instances: 1,
                left: None,
            },
            Event::Failed("gate queue-depth".into()),
        ] {
            r.record(event);
        }
        assert!(r.lock_after_rollback);
        assert_eq!(
            r.next_action(),
            Action::RestoreCapacity {
                previous: Some(("web-v001".into(), capacity(2, 4, 6)))
            }
        );
        r.record(Event::CapacityRestored);
        assert_eq!(r.next_action(), Action::DeleteGroup);
        r.record(Event::GroupDeleted);
        assert!(matches!(
            r.next_action(),
            Action::DeleteLaunchTemplateVersion { .. }
        ));
        r.record(Event::LaunchTemplateDeleted);
        assert!(r.phase.is_finished());
    }

    #[test]
    fn a_failure_during_a_capacity_step_restores_even_if_the_step_half_happened() {
        let mut r = worker_rollout(true);
        r.record(Event::ImageReady("ami-1".into()));
        r.record(Event::LaunchTemplateCreated(lt()));
        r.record(Event::AlarmsCreated(Vec::new()));
        r.record(Event::GroupCreated);
        r.record(Event::Healthy);
        assert!(matches!(r.next_action(), Action::SetCapacity { .. }));
        // The old group may have been scaled in before the failure was reported.
        r.record(Event::Failed("throttled for good".into()));
        assert!(matches!(r.next_action(), Action::RestoreCapacity { .. }));
    }

    #[test]
    fn a_first_worker_release_has_nothing_to_give_capacity_back_to() {
        let mut r = worker_rollout(false);
        r.record(Event::ImageReady("ami-1".into()));
        r.record(Event::LaunchTemplateCreated(lt()));
        r.record(Event::AlarmsCreated(Vec::new()));
        r.record(Event::GroupCreated);
        r.record(Event::Healthy);
        assert_eq!(
            r.next_action(),
            Action::SetCapacity {
                new: capacity(1, 1, 1),
                old: None,
                percent: 25
            }
        );
        r.record(Event::CapacitySet {
            percent: 25,
            instances: 1,
            left: None,
        });
        r.record(Event::Failed("alarm".into()));
        assert_eq!(r.next_action(), Action::RestoreCapacity { previous: None });
    }

    /// The two groups as the cloud runs them: (exists, desired) each.
    #[derive(Debug)]
    struct Groups {
        old: u32,
        new: Option<u32>,
    }

    proptest! {
        /// Random failures and lost answers at every action: the fleet never runs fewer
        /// workers than it needs once a step took some away, the new group is deleted
        /// only after the old one has its capacity back, and the end is all on one group.
        #[test]
        fn random_failures_never_leave_the_fleet_short_of_workers(
            failures in proptest::collection::vec(0u8..8, 0..60),
            steps in prop_oneof![Just(vec![100u8]), Just(vec![25, 50, 100]), Just(vec![10, 100])],
            desired in 1u32..9,
        ) {
            let mut r = worker_rollout(true);
            let full = capacity(1, desired, desired + 2);
            r.steps = steps;
            r.workers = Some(Workers { full, previous: Some(full) });
            let mut cloud = Groups { old: desired, new: None };
            let mut failures = failures.into_iter();
            let mut moves = 0;
            loop {
                moves += 1;
                prop_assert!(moves < 300, "the rollout must terminate");
                let action = r.next_action();
                if action == Action::Finished {
                    break;
                }
                // Save, then act: a lost answer is found again through the intent.
                r.begin(&action);
                let roll = failures.next().unwrap_or(7);
                if roll == 0 {
                    r.record(Event::Failed("injected".into()));
                    continue;
                }
                let event = match &action {
                    Action::FindImageOrLaunchBuilder => Event::BuilderLaunched("i-1".into()),
                    Action::CaptureImage { .. } => Event::ImageReady("ami-1".into()),
                    Action::TerminateBuilder { .. } => Event::BuilderTerminated,
                    Action::CreateLaunchTemplateVersion { .. } => Event::LaunchTemplateCreated(lt()),
                    Action::CreateAlarms { .. } => Event::AlarmsCreated(Vec::new()),
                    Action::CreateGroup { .. } => {
                        cloud.new = Some(capacity_at(full, r.steps[0]).0.desired);
                        Event::GroupCreated
                    }
                    Action::WaitHealthy { .. } => Event::Healthy,
                    Action::SetCapacity { new, old, percent } => {
                        cloud.new = Some(new.desired);
                        if let Some((_, old)) = old {
                            cloud.old = old.desired;
                        }
                        Event::CapacitySet {
                        percent: *percent,
                        instances: 1,
                        left: None,
                    }
                    }
                    Action::RestoreCapacity { previous } => {
                        if let Some((_, c)) = previous {
                            cloud.old = c.desired;
                        }
                        Event::CapacityRestored
                    }
                    Action::DeleteGroup => {
                        prop_assert_eq!(cloud.old, desired, "the old group serves again first");
                        cloud.new = None;
                        Event::GroupDeleted
                    }
                    Action::Observe { .. } => Event::StepPassed,
                    Action::RetirePrevious { .. } => {
                        prop_assert_eq!(cloud.old, 0, "the old group lost its workers step by step");
                        Event::PreviousRetired
                    }
                    Action::DeleteLaunchTemplateVersion { .. } => Event::LaunchTemplateDeleted,
                    Action::Adopt { intent: Intent::Group } if cloud.new.is_some() => {
                        Event::Adopted(Found::Group)
                    }
                    Action::Adopt { .. } => Event::Adopted(Found::Nothing),
                    other => panic!("a worker release does not {other:?}"),
                };
                // A lost answer: the call did its work, the engine records a failure.
                r.record(if roll == 1 { Event::Failed("answer lost".into()) } else { event });
                prop_assert!(
                    cloud.old + cloud.new.unwrap_or(0) >= desired,
                    "the fleet runs {} + {:?} of {}", cloud.old, cloud.new, desired
                );
            }
            match &r.phase {
                Phase::Done => prop_assert_eq!((cloud.old, cloud.new), (0, Some(desired))),
                Phase::RolledBack { .. } => prop_assert_eq!((cloud.old, cloud.new), (desired, None)),
                other => prop_assert!(false, "ended in {:?}", other),
            }
        }
    }
}

/// An irreversible rollout launched and healthy, about to shift its first step.
fn irreversible_launched() -> Rollout {
    let mut r = rollout(true);
    r.irreversible = true;
    r.record(Event::ImageReady("ami-1".into()));
    r.record(Event::LaunchTemplateCreated(lt()));
    r.record(Event::TargetGroupCreated("arn:tg/web-v002".into()));
    r.record(Event::AlarmsCreated(Vec::new()));
    r.record(Event::GroupCreated);
    r.record(Event::Healthy);
    r
}

#[test]
fn an_irreversible_release_that_traffic_reached_is_held_not_rolled_back() {
    for failure in [
        Event::Failed("gate errors failed".into()),
        Event::Refused("the configuration changed".into()),
    ] {
        let mut r = irreversible_launched();
        r.record(Event::WeightsSet(25));
        r.record(failure.clone());
        let Phase::Held { from, .. } = &r.phase else {
            panic!("{failure:?} rolled back: {:?}", r.phase)
        };
        assert_eq!(**from, Phase::Observe { step: 0 });
        assert_eq!(r.weight, 25, "traffic stays where it was");
        assert_eq!(r.next_action(), Action::Finished, "nothing acts on its own");
        // Later failures change nothing; only a person moves it.
        r.record(Event::Failed("again".into()));
        assert!(matches!(r.phase, Phase::Held { .. }));
    }
    // In the drain, all traffic is on it: held too.
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::StepPassed);
    r.record(Event::WeightsSet(100));
    r.record(Event::StepPassed);
    assert_eq!(r.phase, Phase::Drain);
    r.record(Event::Failed("5xx".into()));
    assert!(matches!(r.phase, Phase::Held { .. }));
}

#[test]
fn an_irreversible_release_rolls_back_as_usual_before_any_traffic_moved() {
    let mut r = irreversible_launched();
    r.record(Event::Failed("unhealthy".into()));
    assert!(matches!(r.phase, Phase::RollBack { .. }), "{:?}", r.phase);
    // A failed first shift (weight still 0) is before traffic too.
    let mut r = irreversible_launched();
    r.record(Event::Refused(
        "gate already failing before any traffic moved".into(),
    ));
    assert!(matches!(r.phase, Phase::RollBack { .. }), "{:?}", r.phase);
}

#[test]
fn a_held_release_goes_where_a_person_sends_it() {
    // Rolled back by a person (`immune rollback --force`): traffic back first.
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::Failed("gate errors failed".into()));
    r.record(Event::RollbackAsked(
        "ops (reason: schema v3 is broken)".into(),
    ));
    assert!(matches!(r.phase, Phase::RollBack { .. }));
    assert!(matches!(r.next_action(), Action::RestoreWeights { .. }));
    assert!(r.lock_after_rollback);

    // Promoted at its first step: the next step shifts.
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::Failed("gate errors failed".into()));
    r.record(Event::Promoted { full: false });
    assert_eq!(r.phase, Phase::Shift { step: 1 });
    assert!(matches!(
        r.next_action(),
        Action::SetWeights { percent: 100, .. }
    ));

    // Promoted in the drain: the old group retires.
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::StepPassed);
    r.record(Event::WeightsSet(100));
    r.record(Event::StepPassed);
    r.record(Event::Failed("5xx".into()));
    r.record(Event::Promoted { full: true });
    assert_eq!(r.phase, Phase::Retire);
    assert!(r.promoted);

    // A release that is not held is not moved by a promotion.
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::Promoted { full: false });
    assert_eq!(r.phase, Phase::Observe { step: 0 });
}

#[test]
fn a_held_rollout_survives_the_state_document() {
    let mut r = irreversible_launched();
    r.record(Event::WeightsSet(25));
    r.record(Event::Failed("gate errors failed".into()));
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.contains(r#""name":"held""#), "{text}");
    let mut back: Rollout = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.check(), Ok(()));
}
