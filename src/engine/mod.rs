//! Carries out rollouts: asks the pure state machine for the next action, performs it
//! through the cloud, records the outcome and saves state after every transition.

mod actions;

use crate::cloud::{Cloud, CloudError, Weight};
use crate::config::Fleet;
use crate::plan::{self, Release};
use crate::rollout::{Action, Event, Phase, Previous, Rollout};
use crate::state::{
    now, Decision, FleetLock, Group, HistoryEntry, LocalBackend, State, StateError,
};

/// Where progress lines go: the terminal, or a buffer in tests.
pub trait Reporter: Send + Sync {
    fn line(&self, fleet: &str, message: &str);
}

pub struct Stdout;

impl Reporter for Stdout {
    fn line(&self, fleet: &str, message: &str) {
        println!("fleet.{fleet}: {message}");
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Released { group: String },
    RolledBack { reason: String, locked: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("fleet {fleet}: {message}")]
    Cloud { fleet: String, message: String },
    /// A step that cannot be undone by rolling back failed; the next apply retries it.
    #[error("fleet {fleet}: {message}\n  state records where it stopped: run `immune apply` again to finish")]
    Unfinished { fleet: String, message: String },
}

pub struct Engine<'a> {
    pub cloud: &'a dyn Cloud,
    pub backend: &'a LocalBackend,
    pub state: &'a mut State,
    pub reporter: &'a dyn Reporter,
}

impl Engine<'_> {
    /// Starts a planned release of `fleet` and drives it to its end.
    pub async fn release(
        &mut self,
        fleet: &Fleet,
        release: &Release,
    ) -> Result<Outcome, EngineError> {
        let cloud_error = |e: CloudError| EngineError::Cloud {
            fleet: fleet.name.clone(),
            message: e.to_string(),
        };
        let listener = self
            .cloud
            .resolve_listener(&fleet.traffic.listener)
            .await
            .map_err(cloud_error)?;
        let previous_weights: Vec<Weight> = self
            .cloud
            .listener_weights(&listener.arn)
            .await
            .map_err(cloud_error)?
            .into_iter()
            .filter(|w| w.weight > 0)
            .collect();
        if previous_weights.is_empty() {
            return Err(EngineError::Cloud {
                fleet: fleet.name.clone(),
                message: format!(
                    "{} does not forward to any target group, so there would be nothing to send traffic back to; point its default action at a target group first",
                    fleet.traffic.listener
                ),
            });
        }
        let recorded = self.state.fleets.entry(fleet.name.clone()).or_default();
        let rollout = Rollout {
            group: release.group.clone(),
            seq: release.seq,
            release: release.release.clone(),
            fingerprint: release.fingerprint.clone(),
            bake: release.bake.clone(),
            steps: fleet.rollout.steps.clone(),
            listener_arn: listener.arn,
            previous_weights,
            previous: recorded.active.as_ref().map(|a| Previous {
                group: a.name.clone(),
                target_group: a.target_group.clone(),
            }),
            phase: Phase::Bake,
            builder: None,
            image: None,
            launch_template: None,
            target_group: None,
            group_created: false,
            weight: 0,
            lock_after_rollback: false,
        };
        recorded.seq = release.seq;
        recorded.rollout = Some(rollout);
        recorded.history.push(HistoryEntry {
            group: release.group.clone(),
            release: release.release.clone(),
            started_at: now(),
            finished_at: None,
            outcome: "in_progress".into(),
            decisions: Vec::new(),
        });
        self.backend.save(self.state)?;
        self.reporter.line(
            &fleet.name,
            &format!("starting release {} as {}", release.release, release.group),
        );
        self.drive(fleet).await
    }

    /// Continues the fleet's unfinished rollout from its recorded phase.
    pub async fn resume(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        let rollout = self.rollout(&fleet.name).clone();
        let wanted = (plan::release_name(fleet), plan::fingerprint(fleet));
        let changed = (rollout.release.clone(), rollout.fingerprint.clone()) != wanted;
        if changed && !matches!(rollout.phase, Phase::RollBack { .. } | Phase::Retire) {
            self.record(
                fleet,
                Event::Failed("the configuration changed while this release was unfinished".into()),
            )?;
            // Nothing went wrong with the release itself: undo it without locking the fleet.
            self.rollout(&fleet.name).lock_after_rollback = false;
        }
        self.reporter.line(
            &fleet.name,
            &format!("resuming release {} ({})", rollout.release, rollout.group),
        );
        self.drive(fleet).await
    }

    fn rollout(&mut self, fleet: &str) -> &mut Rollout {
        self.state
            .fleets
            .get_mut(fleet)
            .and_then(|f| f.rollout.as_mut())
            .expect("a rollout in progress")
    }

    fn note(&mut self, fleet: &str, what: String) {
        self.reporter.line(fleet, &what);
        if let Some(entry) = self
            .state
            .fleets
            .get_mut(fleet)
            .and_then(|f| f.history.last_mut())
        {
            entry.decisions.push(Decision { at: now(), what });
        }
    }

    fn record(&mut self, fleet: &Fleet, event: Event) -> Result<(), EngineError> {
        let what = describe(&event);
        self.rollout(&fleet.name).record(event);
        self.note(&fleet.name, what);
        self.backend.save(self.state)?;
        Ok(())
    }

    async fn drive(&mut self, fleet: &Fleet) -> Result<Outcome, EngineError> {
        loop {
            let rollout = self.rollout(&fleet.name).clone();
            let action = rollout.next_action();
            if action == Action::Finished {
                return self.finish(fleet, rollout);
            }
            match actions::perform(self.cloud, fleet, &rollout, &action, self.reporter).await {
                Ok(event) => self.record(fleet, event)?,
                Err(message) => match rollout.phase {
                    Phase::Retire | Phase::RollBack { .. } => {
                        self.note(&fleet.name, format!("failed: {message}"));
                        self.backend.save(self.state)?;
                        return Err(EngineError::Unfinished {
                            fleet: fleet.name.clone(),
                            message,
                        });
                    }
                    _ => self.record(fleet, Event::Failed(message))?,
                },
            }
        }
    }

    fn finish(&mut self, fleet: &Fleet, rollout: Rollout) -> Result<Outcome, EngineError> {
        let recorded = self.state.fleets.get_mut(&fleet.name).expect("fleet state");
        recorded.rollout = None;
        let outcome = match &rollout.phase {
            Phase::Done => {
                recorded.active = Some(Group {
                    name: rollout.group.clone(),
                    seq: rollout.seq,
                    release: rollout.release.clone(),
                    fingerprint: rollout.fingerprint.clone(),
                    image: rollout.image.clone().unwrap_or_default(),
                    launch_template: rollout.launch_template.clone().expect("launched"),
                    target_group: rollout.target_group.clone().expect("launched"),
                    listener_arn: rollout.listener_arn.clone(),
                    created_at: now(),
                });
                Outcome::Released {
                    group: rollout.group.clone(),
                }
            }
            Phase::RolledBack { reason } => {
                if rollout.lock_after_rollback {
                    recorded.lock = Some(FleetLock {
                        reason: reason.clone(),
                        release: rollout.release.clone(),
                        at: now(),
                    });
                }
                Outcome::RolledBack {
                    reason: reason.clone(),
                    locked: rollout.lock_after_rollback,
                }
            }
            other => unreachable!("finish() in phase {other:?}"),
        };
        if let Some(entry) = recorded.history.last_mut() {
            entry.finished_at = Some(now());
            entry.outcome = match outcome {
                Outcome::Released { .. } => "done".into(),
                Outcome::RolledBack { .. } => "rolled_back".into(),
            };
        }
        self.backend.save(self.state)?;
        Ok(outcome)
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::BuilderLaunched(id) => format!("builder instance {id} launched"),
        Event::ImageReady(id) => format!("image {id} available"),
        Event::BuilderTerminated => "builder terminated".into(),
        Event::LaunchTemplateCreated(lt) => {
            format!("launch template {} version {}", lt.id, lt.version)
        }
        Event::TargetGroupCreated(arn) => format!("target group {arn} created"),
        Event::GroupCreated => "Auto Scaling group created".into(),
        Event::Healthy => "all instances InService and healthy".into(),
        Event::WeightsSet(p) => format!("listener weights set and verified: {p}% on the new group"),
        Event::StepPassed => "step passed: every gate OK".into(),
        Event::PreviousRetired => "previous group retired".into(),
        Event::Failed(reason) => format!("FAILED: {reason}; rolling back"),
        Event::WeightsRestored => "traffic restored to the previous group".into(),
        Event::GroupDeleted => "new Auto Scaling group deleted".into(),
        Event::TargetGroupDeleted => "new target group deleted".into(),
        Event::LaunchTemplateDeleted => "launch template version deleted".into(),
    }
}

#[cfg(test)]
mod tests;
