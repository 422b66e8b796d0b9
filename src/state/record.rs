//! The fleet record's transitions: what starting a release or a restore, finishing a
//! rollout, lifting a lock and deleting a retired group do to one fleet's state. Pure, so
//! they are tested without a cloud or a backend; the engine carries out the cloud side
//! and saves after each of them.

use super::{Decision, FleetLock, FleetState, Group, HistoryEntry};
use crate::cloud::Weight;
use crate::config::Capacity;
use crate::rollout::{Identity, Kind, Outcome, Phase, Previous, Rollout, Workers};

impl FleetState {
    /// A release starts: it takes its sequence number, and the fleet's first release
    /// remembers where the route sent traffic before immune.
    pub fn start_release(&mut self, rollout: Rollout, at: &str) {
        if self.active.is_none()
            && self.original_weights.is_empty()
            && self.original_stand_in.is_none()
        {
            self.original_weights = rollout.previous_weights.clone();
            self.original_stand_in = rollout.stand_in.clone();
        }
        self.seq = rollout.seq;
        self.open_history(&rollout, at);
        self.rollout = Some(rollout);
    }

    /// The group a new release replaces: the active one.
    pub fn replaced(&self) -> Option<Previous> {
        self.active.as_ref().map(|a| Previous {
            group: a.name.clone(),
            target_group: a.target_group.clone(),
            alarms: a.alarms.clone(),
        })
    }

    /// `immune rollback` after a finished release: the newest kept group comes back in
    /// place of the active one, from the weights the route has now (a worker fleet: with
    /// the capacities in `workers`). Returns the two groups, or `None` when nothing was
    /// kept to go back to.
    pub fn start_restore(
        &mut self,
        weights: Vec<Weight>,
        workers: Option<Workers>,
        by: &str,
        at: &str,
    ) -> Option<(Group, Group)> {
        let (active, kept) = (self.active.clone()?, self.previous.first().cloned()?);
        let mut rollout = Rollout::new(
            Identity {
                group: kept.name.clone(),
                seq: kept.seq,
                release: kept.release.clone(),
                fingerprint: kept.fingerprint.clone(),
                bake: String::new(),
            },
            vec![100],
            // The listener immune recorded, not the configuration's: under pressure the
            // operator may run this without the variables that name it.
            active.listener_arn.clone().unwrap_or_default(),
            weights,
            self.replaced(),
        );
        rollout.kind = Kind::Restore;
        rollout.phase = Phase::ScaleUp;
        rollout.image = Some(kept.image.clone());
        rollout.launch_template = Some(kept.launch_template.clone());
        rollout.target_group = kept.target_group.clone();
        rollout.workers = workers;
        rollout.alarms = kept.alarms.clone();
        rollout.alarms_created = true;
        rollout.group_created = true;
        rollout.requested_by = Some(by.to_string());
        self.open_history(&rollout, at);
        self.rollout = Some(rollout);
        Some((active, kept))
    }

    fn open_history(&mut self, rollout: &Rollout, at: &str) {
        self.history.push(HistoryEntry {
            group: rollout.group.clone(),
            release: rollout.release.clone(),
            started_at: at.to_string(),
            finished_at: None,
            outcome: "in_progress".into(),
            image_spec: rollout.image_spec.clone(),
            fingerprint: rollout.fingerprint.clone(),
            gates: Default::default(),
            decisions: Vec::new(),
        });
    }

    /// The rollout reached its end: the fleet records what runs now (with `capacity`),
    /// a failed release or any restore locks it, and the history entry is closed.
    /// `None` while the rollout has not ended.
    pub fn finish(&mut self, capacity: Capacity, at: &str) -> Option<Outcome> {
        let rollout = self.rollout.take_if(|r| r.phase.is_finished())?;
        let outcome = match (&rollout.phase, rollout.kind) {
            (Phase::Done, Kind::Release) => {
                let replaced = self.active.replace(Group {
                    name: rollout.group.clone(),
                    seq: rollout.seq,
                    release: rollout.release.clone(),
                    fingerprint: rollout.fingerprint.clone(),
                    image: rollout.image.clone().unwrap_or_default(),
                    // `Rollout::check` refuses a finished release without them.
                    launch_template: rollout.launch_template.clone()?,
                    target_group: rollout.target_group.clone(),
                    listener_arn: (!rollout.listener_arn.is_empty())
                        .then(|| rollout.listener_arn.clone()),
                    created_at: at.to_string(),
                    alarms: rollout.alarms.clone(),
                    capacity: Some(capacity),
                    irreversible: rollout.irreversible,
                });
                if rollout.keep_previous {
                    self.previous.splice(0..0, replaced);
                }
                Outcome::Released {
                    group: rollout.group.clone(),
                }
            }
            (Phase::Done, Kind::Restore) => {
                let position = self.previous.iter().position(|g| g.name == rollout.group);
                let restored = position.map(|i| Group {
                    capacity: Some(capacity),
                    ..self.previous.remove(i)
                });
                let replaced = std::mem::replace(&mut self.active, restored);
                let from = replaced.map(|g| g.release).unwrap_or_default();
                self.lock = Some(FleetLock {
                    reason: format!(
                        "{} rolled release {from} back to {} ({})",
                        rollout.requested_by.as_deref().unwrap_or("an operator"),
                        rollout.release,
                        rollout.group
                    ),
                    release: from,
                    at: at.to_string(),
                });
                Outcome::Restored {
                    group: rollout.group.clone(),
                }
            }
            (Phase::RolledBack { reason }, _) => {
                if rollout.lock_after_rollback {
                    self.lock = Some(FleetLock {
                        reason: reason.clone(),
                        release: rollout.release.clone(),
                        at: at.to_string(),
                    });
                }
                Outcome::RolledBack {
                    reason: reason.clone(),
                    locked: rollout.lock_after_rollback,
                }
            }
            _ => return None,
        };
        if let Some(entry) = self.history.last_mut() {
            entry.finished_at = Some(at.to_string());
            entry.outcome = match outcome {
                Outcome::Released { .. } => "done".into(),
                Outcome::RolledBack { .. } => "rolled_back".into(),
                Outcome::Restored { .. } => "restored".into(),
                Outcome::Held { .. } => "held".into(),
            };
        }
        Some(outcome)
    }

    /// A held irreversible release locks the fleet (once) with what failed; its history
    /// entry stays open until a person decides.
    pub fn hold(&mut self, at: &str) -> Option<Outcome> {
        let rollout = self.rollout.as_ref()?;
        let Phase::Held { reason, .. } = &rollout.phase else {
            return None;
        };
        if self.lock.is_none() {
            self.lock = Some(FleetLock {
                reason: format!("irreversible release {} held: {reason}", rollout.release),
                release: rollout.release.clone(),
                at: at.to_string(),
            });
        }
        if let Some(entry) = self.history.last_mut() {
            entry.outcome = "held".into();
        }
        Some(Outcome::Held {
            reason: reason.clone(),
            group: rollout.group.clone(),
        })
    }

    /// `immune promote` of a held release: the lock goes, recorded like an unlock, and
    /// the rollout goes on. Returns the decision's words, or `None` when nothing is held.
    pub fn promote_held(&mut self, by: &str, full: bool, at: &str) -> Option<String> {
        let rollout = self.rollout.as_mut()?;
        let Phase::Held { reason, .. } = &rollout.phase else {
            return None;
        };
        let what = format!(
            "promoted by {by} past what held it ({reason}): release {} goes on{}",
            rollout.release,
            if full {
                ", every remaining step as soon as its gates allow"
            } else {
                ""
            }
        );
        rollout.record(crate::rollout::Event::Promoted { full });
        self.lock = None;
        if let Some(entry) = self.history.last_mut() {
            entry.outcome = "in_progress".into();
            entry.decisions.push(Decision {
                at: at.to_string(),
                what: what.clone(),
                evidence: None,
            });
        }
        Some(what)
    }

    /// Lifts the lock a rollback left, recording who and why in the last history entry.
    /// Returns the lock that was lifted and the decision's words, or `None` when the
    /// fleet was not locked.
    pub fn unlock(&mut self, by: &str, reason: &str, at: &str) -> Option<(FleetLock, String)> {
        let lock = self.lock.take()?;
        let what = format!(
            "unlocked by {by}: {reason} (was locked since {}: {})",
            lock.at, lock.reason
        );
        if let Some(entry) = self.history.last_mut() {
            entry.decisions.push(Decision {
                at: at.to_string(),
                what: what.clone(),
                evidence: None,
            });
        }
        Some((lock, what))
    }

    /// A group of a fleet that left the configuration was deleted.
    pub fn forget(&mut self, group: &Group) {
        if self.active.as_ref() == Some(group) {
            self.active = None;
        } else {
            self.previous.retain(|g| g != group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::LaunchTemplateRef;
    use crate::rollout::Event;

    const AT: &str = "2026-12-01T00:00:00Z";
    const CAPACITY: Capacity = Capacity {
        min: 1,
        max: 2,
        desired: 1,
    };

    fn release(seq: u32, previous: Option<Previous>) -> Rollout {
        let mut r = Rollout::new(
            Identity {
                group: format!("web-v00{seq}"),
                seq,
                release: format!("v{seq}"),
                fingerprint: "f".into(),
                bake: "b".into(),
            },
            vec![100],
            "arn:listener".into(),
            vec![Weight {
                target_group: "arn:tg/before".into(),
                weight: 100,
            }],
            previous,
        );
        r.keep_previous = true;
        r
    }

    /// Walks a release to its end: done, or failed at its step and rolled back.
    fn run(r: &mut Rollout, fail: bool) {
        let tg = format!("arn:tg/{}", r.group);
        for event in [
            Event::BuilderLaunched("i-1".into()),
            Event::ImageReady("ami-1".into()),
            Event::BuilderTerminated,
            Event::LaunchTemplateCreated(LaunchTemplateRef {
                id: "lt-1".into(),
                version: i64::from(r.seq),
            }),
            Event::TargetGroupCreated(tg),
            Event::AlarmsCreated(Vec::new()),
            Event::GroupCreated,
            Event::Healthy,
            Event::WeightsSet(100),
        ] {
            r.record(event);
        }
        if fail {
            for event in [
                Event::Failed("gate errors".into()),
                Event::WeightsRestored,
                Event::GroupDeleted,
                Event::TargetGroupDeleted,
                Event::LaunchTemplateDeleted,
            ] {
                r.record(event);
            }
        } else {
            r.record(Event::StepPassed);
            r.record(Event::PreviousRetired);
        }
    }

    #[test]
    fn a_release_is_recorded_a_failed_one_locks_and_a_restore_swaps_the_groups_back() {
        let mut fleet = FleetState::default();
        fleet.start_release(release(1, None), AT);
        assert_eq!(
            fleet.original_weights.len(),
            1,
            "where traffic went before immune"
        );
        assert_eq!(fleet.finish(CAPACITY, AT), None, "not finished yet");
        run(fleet.rollout.as_mut().unwrap(), false);
        assert_eq!(
            fleet.finish(CAPACITY, AT),
            Some(Outcome::Released {
                group: "web-v001".into()
            })
        );
        assert_eq!(fleet.history[0].outcome, "done");

        let v2 = release(2, fleet.replaced());
        fleet.start_release(v2, AT);
        run(fleet.rollout.as_mut().unwrap(), false);
        fleet.finish(CAPACITY, AT).unwrap();
        assert_eq!(fleet.active.as_ref().unwrap().name, "web-v002");
        assert_eq!(fleet.previous[0].name, "web-v001", "kept for rollback");

        let v3 = release(3, fleet.replaced());
        fleet.start_release(v3, AT);
        run(fleet.rollout.as_mut().unwrap(), true);
        let Some(Outcome::RolledBack { locked: true, .. }) = fleet.finish(CAPACITY, AT) else {
            panic!("a failed gate locks")
        };
        assert_eq!(fleet.active.as_ref().unwrap().name, "web-v002", "unchanged");
        assert_eq!(fleet.seq, 3, "the name web-v003 is used up");
        let (lock, what) = fleet.unlock("ops", "looked", AT).unwrap();
        assert_eq!(lock.release, "v3");
        assert!(what.starts_with("unlocked by ops: looked"), "{what}");
        assert_eq!(fleet.unlock("ops", "again", AT), None);

        let (active, kept) = fleet.start_restore(Vec::new(), None, "ops", AT).unwrap();
        assert_eq!(
            (active.name.as_str(), kept.name.as_str()),
            ("web-v002", "web-v001")
        );
        let r = fleet.rollout.as_mut().unwrap();
        r.record(Event::ScaledUp);
        r.record(Event::Healthy);
        r.record(Event::WeightsSet(100));
        r.record(Event::PreviousRetired);
        assert_eq!(
            fleet.finish(CAPACITY, AT),
            Some(Outcome::Restored {
                group: "web-v001".into()
            })
        );
        assert_eq!(fleet.active.as_ref().unwrap().name, "web-v001");
        assert!(fleet.lock.is_some(), "a restore locks the fleet");

        let group = fleet.active.clone().unwrap();
        fleet.forget(&group);
        assert!(fleet.active.is_none());
    }

    #[test]
    fn nothing_kept_means_no_restore() {
        let mut fleet = FleetState::default();
        assert!(fleet.start_restore(Vec::new(), None, "ops", AT).is_none());
        assert!(fleet.rollout.is_none() && fleet.history.is_empty());
    }
}
