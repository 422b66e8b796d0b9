//! The rollout of one release as a pure state machine: the recorded progress says which
//! action comes next, and each action's outcome is recorded as an event. The engine only
//! carries actions out, so a crash between two events resumes exactly where it stopped.

pub mod gates;
pub mod pace;

use crate::cloud::{LaunchTemplateRef, StandIn, Weight};
use crate::config::Capacity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rollout either brings a new release in, or brings a kept previous group back
/// (`immune rollback` after a release finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Release,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Phase {
    /// Find or bake the release's image.
    Bake,
    /// Restore only: scale the kept group back up.
    ScaleUp,
    /// Launch template version, target group, Auto Scaling group.
    Launch,
    /// Every new instance InService and healthy in the target group (a worker fleet's:
    /// InService).
    WaitHealthy,
    /// A web fleet: set the listener weights for `steps[step]`. A worker fleet: give the
    /// new group its share of the capacity, then take it from the old group, whose
    /// workers finish their jobs first (see [`capacity_at`]).
    Shift {
        step: usize,
    },
    /// Weights (or capacities) are set; watch the gates for the step's pause.
    Observe {
        step: usize,
    },
    /// All traffic is on the new group and the previous one drains, its instances still
    /// running: the gates and the new group's health are watched until the drain ends,
    /// and a failure sends traffic back to the previous group, which can still serve.
    Drain,
    /// The previous group has drained: keep it scaled to zero or delete it.
    Retire,
    Done,
    /// Undo the release: traffic back first, then tear down what was created.
    RollBack {
        reason: String,
    },
    RolledBack {
        reason: String,
    },
    /// An irreversible release failed after traffic reached it: nothing is rolled back on
    /// its own. Traffic (or capacity) stays where `from` left it and the fleet is locked
    /// until a person chooses `immune promote` (go on from `from`) or `immune rollback
    /// --force` (undo it).
    Held {
        reason: String,
        from: Box<Phase>,
    },
}

impl Phase {
    /// The phase's name as state records it: `observe`, `roll_back`, ...
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack { .. })
    }
}

/// The group a rollout replaces, as recorded in state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub group: String,
    /// A worker fleet's group has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group: Option<String>,
    /// Its per-release alarms, deleted with it.
    #[serde(default)]
    pub alarms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub group: String,
    pub seq: u32,
    pub release: String,
    pub fingerprint: String,
    pub bake: String,
    pub steps: Vec<u8>,
    pub listener_arn: String,
    /// The listener's weights when the rollout started: where traffic goes back to.
    pub previous_weights: Vec<Weight>,
    /// What the route answered with when it forwarded nowhere (a fresh load balancer's
    /// fixed response): put back when this first release is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stand_in: Option<StandIn>,
    /// The immune group being replaced, if any (the first release replaces nothing).
    pub previous: Option<Previous>,
    pub phase: Phase,
    pub builder: Option<String>,
    pub image: Option<String>,
    pub launch_template: Option<LaunchTemplateRef>,
    /// The new group's target group; a worker fleet has none.
    pub target_group: Option<String>,
    pub group_created: bool,
    /// The new target group is in the route's forward (at weight 0 until the first
    /// shift): ELB health-checks only target groups that a listener or rule forwards to,
    /// so it joins before the health wait, and an undo takes it out again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    /// On a route that forwards nowhere (a fixed response or a redirect), there is no
    /// forward to join: a rule of immune's own that no request matches forwards to the
    /// new target group instead, until the group takes traffic or is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_rule: Option<String>,
    /// Percent of traffic the listener currently sends to the new group, or for a worker
    /// fleet the share of capacity taken from the old group so far.
    pub weight: u8,
    /// Set when a failure after launch started the rollback: the fleet gets locked until
    /// a person has looked.
    #[serde(default)]
    pub lock_after_rollback: bool,
    #[serde(default)]
    pub kind: Kind,
    /// Retire scales the previous group to zero and keeps it, instead of deleting it.
    #[serde(default)]
    pub keep_previous: bool,
    /// The per-release alarms of metric gates, once created.
    #[serde(default)]
    pub alarms: Vec<String>,
    #[serde(default)]
    pub alarms_created: bool,
    /// When the window the gates are judged over began (RFC 3339): the last shift, or the
    /// start of the drain. Any ALARM in the alarm's history since then fails the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_from: Option<String>,
    /// Manual gates a person let through in the current step; they stay approved for the
    /// rest of it and through the drain that follows the last step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<String>,
    /// A manual gate waiting for `immune approve` or `immune reject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<Awaiting>,
    /// Restore only: who asked for it, for the lock it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Saved before a call that creates something, cleared when its outcome is recorded:
    /// a crash in between leaves it, and what the lost call made is found again by name
    /// and tags (adopted) instead of being made twice or leaked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// When each resource this rollout created was recorded (RFC 3339), by instance id,
    /// target group ARN or group name: AWS is eventually consistent, so a NotFound for
    /// one of them soon after means "not yet" (see `cloud::CONSISTENCY`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub created: BTreeMap<String, String>,
    /// `immune pause`: who holds the rollout at its current step. Gates are still
    /// watched (a failing one still rolls back); the step does not pass until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// `immune promote --full`: every remaining step passes as soon as its gates allow,
    /// without waiting out its pause.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
    /// `fleet { irreversible = true }` when the release started (a schema migration, say):
    /// once traffic reached it, a failure holds it instead of rolling it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
    /// `plan::image_spec` of the release: what another environment's `promote_after`
    /// compares.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_spec: String,
    /// With a `rate`: how long the current step is watched, in milliseconds, as the
    /// gates' readings set it (see `pace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_ms: Option<u64>,
    /// A worker fleet's release, which moves capacity instead of traffic (its
    /// `listener_arn` is empty and it has no target group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Workers>,
}

/// What a worker fleet's capacity canary shares out between the two groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workers {
    /// The fleet's capacity once every step passed: the configured one, or with scaling
    /// policies the replaced group's desired count when the release started (within min
    /// and max), so that a release during a peak does not shrink the fleet.
    pub full: Capacity,
    /// The replaced group's capacity when the release started: what a rollback gives
    /// back to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Capacity>,
}

/// The new and the old group's capacities at a step of `percent`: the new group runs
/// `ceil(desired * percent / 100)` and the old one the rest, so the two always add up to
/// the fleet's desired count. Before the last step both are pinned (min = max =
/// desired): a scaling policy must not give back what a step took away while the step is
/// judged. At 100 the new group gets the fleet's own min and max, the old one nothing.
pub fn capacity_at(full: Capacity, percent: u8) -> (Capacity, Capacity) {
    let pinned = |n: u32| Capacity {
        min: n,
        max: n,
        desired: n,
    };
    if percent >= 100 {
        return (full, pinned(0));
    }
    let desired = full.desired;
    let new = (desired * u32::from(percent)).div_ceil(100).min(desired);
    (pinned(new), pinned(desired - new))
}

/// What a create call in flight may have made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Builder,
    Image,
    LaunchTemplate,
    TargetGroup,
    Alarms,
    Group,
    HealthRule,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Released {
        group: String,
    },
    RolledBack {
        reason: String,
        locked: bool,
    },
    /// `immune rollback` after a finished release brought the kept group back.
    Restored {
        group: String,
    },
    /// An irreversible release failed after traffic reached it: it is held where it is
    /// and the fleet locked until a person promotes it or rolls it back.
    Held {
        reason: String,
        group: String,
    },
}

/// What a lost create call turned out to have made, found by name and tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Builder(String),
    LaunchTemplate(LaunchTemplateRef),
    TargetGroup(String),
    Alarms(Vec<String>),
    Group,
    HealthRule(String),
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiting {
    pub gate: String,
    pub step: usize,
    /// What the gate saw, for whoever answers.
    pub evidence: String,
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Reuse an image baked earlier from the same spec, or launch a builder.
    FindImageOrLaunchBuilder,
    /// Wait for the builder, create the image, wait until it is available.
    CaptureImage {
        builder: String,
    },
    TerminateBuilder {
        builder: String,
    },
    /// While rolling back: find what a create call lost in a crash made, so that it is
    /// torn down too.
    Adopt {
        intent: Intent,
    },
    ScaleUp,
    CreateLaunchTemplateVersion {
        image: String,
    },
    CreateTargetGroup,
    /// The per-release alarms of metric gates; may create none.
    CreateAlarms {
        target_group: Option<String>,
    },
    CreateGroup {
        launch_template: LaunchTemplateRef,
        target_group: Option<String>,
    },
    /// The new target group joins the route's forward at weight 0, so that ELB
    /// health-checks it before it takes traffic.
    JoinRoute {
        weights: Vec<Weight>,
    },
    /// A route that forwards nowhere: a rule of immune's own, that no request matches,
    /// forwards to the new target group so that ELB health-checks it.
    AddHealthRule,
    DeleteHealthRule {
        rule: String,
    },
    WaitHealthy {
        target_group: Option<String>,
    },
    SetWeights {
        weights: Vec<Weight>,
        percent: u8,
    },
    /// A worker fleet's step: the new group up to `new` (its instances InService), then
    /// the old group down to its share, waiting while its leaving workers finish.
    SetCapacity {
        new: Capacity,
        old: Option<(String, Capacity)>,
        percent: u8,
    },
    /// A worker fleet's rollback: the old group gets its capacity back first (waiting
    /// until its instances are InService).
    RestoreCapacity {
        previous: Option<(String, Capacity)>,
    },
    Observe {
        step: usize,
    },
    /// Watch the gates while the previous group drains.
    Drain,
    RetirePrevious {
        previous: Option<Previous>,
        keep: bool,
        /// Wait the deregistration delay first (a restore, whose replaced group was not
        /// watched while it drained).
        drain: bool,
    },
    RestoreWeights {
        weights: Vec<Weight>,
    },
    /// A first release undone on a route that forwarded nowhere: its fixed response or
    /// redirect goes back.
    RestoreStandIn {
        stand_in: StandIn,
    },
    DeleteGroup,
    /// Restore only: the kept group goes back to zero, kept as it was.
    ScaleToZero,
    DeleteAlarms {
        alarms: Vec<String>,
    },
    DeleteTargetGroup {
        target_group: String,
    },
    DeleteLaunchTemplateVersion {
        launch_template: LaunchTemplateRef,
    },
    /// Nothing left to do.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    BuilderLaunched(String),
    ImageReady(String),
    BuilderTerminated,
    LaunchTemplateCreated(LaunchTemplateRef),
    TargetGroupCreated(String),
    AlarmsCreated(Vec<String>),
    GroupCreated,
    ScaledUp,
    /// The new target group is in the route's forward.
    Joined,
    HealthRuleAdded(String),
    HealthRuleDeleted,
    Healthy,
    WeightsSet(u8),
    /// A worker fleet's step: `percent` of the capacity moved to the new group, which
    /// runs `instances`; the old group keeps the rest (`left`), its leaving workers
    /// finishing their jobs while the step is observed.
    CapacitySet {
        percent: u8,
        instances: u32,
        left: Option<(String, u32)>,
    },
    StepPassed,
    /// The previous group drained with every gate passing.
    Drained,
    PreviousRetired,
    /// The release failed (health, gates, a person's rollback): before all traffic is on
    /// the new group this rolls back, and a release that got as far as launching locks
    /// the fleet.
    Failed(String),
    /// `immune promote` of a held release: it goes on as if the step it failed in had
    /// passed (`full`: every remaining step as soon as its gates allow).
    Promoted {
        full: bool,
    },
    /// A person asked for the rollback (`immune rollback`): recorded as a failure of
    /// the release (it locks once the release got as far as launching), said as what it is.
    RollbackAsked(String),
    /// AWS refused an action for good (a name held by someone else, a bad parameter):
    /// rolled back like a failure, without locking the fleet, since the release itself
    /// was never tried.
    Refused(String),
    /// AWS kept failing past the retry budget after traffic moved: traffic went back to
    /// the previous groups and the step will be shifted again by the next apply.
    Suspended,
    Adopted(Found),
    WeightsRestored,
    /// The old group has its capacity back.
    CapacityRestored,
    GroupDeleted,
    ScaledToZero,
    AlarmsDeleted,
    TargetGroupDeleted,
    LaunchTemplateDeleted,
}

/// Whether the event is the outcome of a create call, which ends its intent. A failure
/// does not: the call may have made something before it failed.
fn creates(event: &Event) -> bool {
    matches!(
        event,
        Event::BuilderLaunched(_)
            | Event::ImageReady(_)
            | Event::HealthRuleAdded(_)
            | Event::LaunchTemplateCreated(_)
            | Event::TargetGroupCreated(_)
            | Event::AlarmsCreated(_)
            | Event::GroupCreated
            | Event::Adopted(_)
    )
}

/// What names a release: its group, sequence number, name and fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub group: String,
    pub seq: u32,
    pub release: String,
    pub fingerprint: String,
    pub bake: String,
}

impl Rollout {
    /// A rollout of a new release, about to bake.
    pub fn new(
        identity: Identity,
        steps: Vec<u8>,
        listener_arn: String,
        previous_weights: Vec<Weight>,
        previous: Option<Previous>,
    ) -> Rollout {
        let Identity {
            group,
            seq,
            release,
            fingerprint,
            bake,
        } = identity;
        Rollout {
            group,
            seq,
            release,
            fingerprint,
            bake,
            steps,
            listener_arn,
            previous_weights,
            previous,
            phase: Phase::Bake,
            builder: None,
            image: None,
            launch_template: None,
            target_group: None,
            group_created: false,
            joined: false,
            health_rule: None,
            weight: 0,
            lock_after_rollback: false,
            kind: Kind::Release,
            keep_previous: false,
            alarms: Vec::new(),
            alarms_created: false,
            awaiting: None,
            requested_by: None,
            intent: None,
            window_from: None,
            stand_in: None,
            approved: Vec::new(),
            workers: None,
            held_by: None,
            promoted: false,
            irreversible: false,
            image_spec: String::new(),
            pace_ms: None,
            created: BTreeMap::new(),
        }
    }

    /// The key [`Rollout::created`] records the event's resource by, for an event that
    /// says something was created.
    pub fn created_by(&self, event: &Event) -> Option<String> {
        match event {
            Event::BuilderLaunched(id) => Some(id.clone()),
            Event::TargetGroupCreated(arn) => Some(arn.clone()),
            Event::LaunchTemplateCreated(lt) => Some(lt.id.clone()),
            Event::GroupCreated => Some(self.group.clone()),
            _ => None,
        }
    }

    pub fn next_action(&self) -> Action {
        match &self.phase {
            Phase::Bake => match (&self.image, &self.builder) {
                (None, None) => Action::FindImageOrLaunchBuilder,
                (None, Some(b)) => Action::CaptureImage { builder: b.clone() },
                (Some(_), Some(b)) => Action::TerminateBuilder { builder: b.clone() },
                (Some(_), None) => unreachable!("settle() moves a baked rollout to Launch"),
            },
            Phase::ScaleUp => Action::ScaleUp,
            Phase::Launch => match (&self.launch_template, &self.target_group) {
                (None, _) => Action::CreateLaunchTemplateVersion {
                    image: self.image.clone().expect("launch follows bake"),
                },
                // Workers take no traffic: no target group.
                (Some(_), None) if self.workers.is_none() => Action::CreateTargetGroup,
                (Some(_), tg) if !self.alarms_created => Action::CreateAlarms {
                    target_group: tg.clone(),
                },
                (Some(lt), tg) => Action::CreateGroup {
                    launch_template: lt.clone(),
                    target_group: tg.clone(),
                },
            },
            Phase::WaitHealthy => match &self.target_group {
                Some(_) if self.workers.is_none() && !self.joined => {
                    match self.previous_weights.is_empty() && self.stand_in.is_some() {
                        true => Action::AddHealthRule,
                        false => Action::JoinRoute {
                            weights: self.joined_weights(),
                        },
                    }
                }
                target_group => Action::WaitHealthy {
                    target_group: target_group.clone(),
                },
            },
            Phase::Shift { step } => {
                let percent = self.steps[*step];
                match self.workers {
                    Some(workers) => {
                        let (new, old) = capacity_at(workers.full, percent);
                        // A replaced group that was not found when the release started
                        // (deleted outside immune) has no capacity to give up.
                        let replaced = self
                            .previous
                            .as_ref()
                            .filter(|_| workers.previous.is_some());
                        Action::SetCapacity {
                            new,
                            old: replaced.map(|p| (p.group.clone(), old)),
                            percent,
                        }
                    }
                    None => {
                        let weights = self.weights_at(percent);
                        // A route that forwarded nowhere (a fixed response) cannot share:
                        // the first step sends all of it, and says so.
                        let shared = weights.iter().any(|w| {
                            w.weight > 0 && Some(&w.target_group) != self.target_group.as_ref()
                        });
                        Action::SetWeights {
                            weights,
                            percent: if shared { percent } else { 100 },
                        }
                    }
                }
            }
            Phase::Observe { step } => Action::Observe { step: *step },
            Phase::Drain => Action::Drain,
            Phase::Retire => Action::RetirePrevious {
                previous: self.previous.clone(),
                keep: self.kind == Kind::Release && self.keep_previous,
                drain: self.kind == Kind::Restore,
            },
            Phase::RollBack { .. } => {
                if let Some(intent) = self.intent {
                    Action::Adopt { intent }
                } else if let (true, Some(workers)) = (self.weight > 0, self.workers) {
                    Action::RestoreCapacity {
                        previous: self
                            .previous
                            .as_ref()
                            .zip(workers.previous)
                            .map(|(p, capacity)| (p.group.clone(), capacity)),
                    }
                } else if self.weight > 0 || (self.joined && self.health_rule.is_none()) {
                    match (&self.stand_in, self.previous_weights.is_empty()) {
                        (Some(stand_in), true) => Action::RestoreStandIn {
                            stand_in: stand_in.clone(),
                        },
                        _ => Action::RestoreWeights {
                            weights: self.previous_weights.clone(),
                        },
                    }
                } else if let Some(rule) = &self.health_rule {
                    Action::DeleteHealthRule { rule: rule.clone() }
                } else if self.group_created {
                    match self.kind {
                        Kind::Release => Action::DeleteGroup,
                        Kind::Restore => Action::ScaleToZero,
                    }
                } else if !self.alarms.is_empty() {
                    Action::DeleteAlarms {
                        alarms: self.alarms.clone(),
                    }
                } else if let Some(tg) = &self.target_group {
                    Action::DeleteTargetGroup {
                        target_group: tg.clone(),
                    }
                } else if let Some(lt) = &self.launch_template {
                    Action::DeleteLaunchTemplateVersion {
                        launch_template: lt.clone(),
                    }
                } else if let Some(b) = &self.builder {
                    Action::TerminateBuilder { builder: b.clone() }
                } else {
                    unreachable!("settle() finishes a rollback with nothing left")
                }
            }
            Phase::Done | Phase::RolledBack { .. } | Phase::Held { .. } => Action::Finished,
        }
    }

    pub fn record(&mut self, event: Event) {
        if creates(&event) {
            self.intent = None;
        }
        match event {
            Event::BuilderLaunched(id) => self.builder = Some(id),
            Event::ImageReady(id) => self.image = Some(id),
            Event::BuilderTerminated => self.builder = None,
            Event::LaunchTemplateCreated(lt) => self.launch_template = Some(lt),
            Event::TargetGroupCreated(arn) => self.target_group = Some(arn),
            Event::AlarmsCreated(names) => {
                self.alarms = names;
                self.alarms_created = true;
            }
            Event::ScaledUp => self.phase = Phase::WaitHealthy,
            Event::GroupCreated => {
                self.group_created = true;
                self.phase = Phase::WaitHealthy;
            }
            Event::Joined => self.joined = true,
            Event::HealthRuleAdded(rule) => {
                self.health_rule = Some(rule);
                self.joined = true;
            }
            Event::HealthRuleDeleted => {
                self.health_rule = None;
                self.joined = self.weight > 0;
            }
            Event::Healthy => self.phase = Phase::Shift { step: 0 },
            Event::WeightsSet(percent) | Event::CapacitySet { percent, .. } => {
                self.weight = percent;
                self.joined |= self.workers.is_none();
                // Its health rule went once the group took traffic.
                self.health_rule = None;
                // A new step: what a person approved at the last one is asked again.
                self.approved.clear();
                if let Phase::Shift { step } = self.phase {
                    // Bringing a known-good group back is urgent: no observation.
                    self.phase = match self.kind {
                        Kind::Release => Phase::Observe { step },
                        Kind::Restore => Phase::Retire,
                    };
                }
            }
            Event::StepPassed => {
                if let Phase::Observe { step } = self.phase {
                    self.phase = if step + 1 < self.steps.len() {
                        Phase::Shift { step: step + 1 }
                    } else if self.previous.is_some() && self.workers.is_none() {
                        // Old workers need no drain: they finished their jobs before the
                        // last step took the last of their capacity.
                        Phase::Drain
                    } else {
                        Phase::Retire
                    };
                }
            }
            Event::Drained => {
                if self.phase == Phase::Drain {
                    self.phase = Phase::Retire;
                }
            }
            Event::PreviousRetired => self.phase = Phase::Done,
            // Held, a release waits for a person's choice: nothing else moves it.
            Event::Failed(_) | Event::Refused(_) if matches!(self.phase, Phase::Held { .. }) => {}
            Event::Failed(reason) | Event::Refused(reason) if self.holds() => self.hold(reason),
            Event::Refused(reason) => {
                self.roll_back(reason);
                self.lock_after_rollback = false;
            }
            Event::Failed(reason) => self.roll_back(reason),
            // A person's choice: rolled back even when the release is irreversible.
            Event::RollbackAsked(by) => {
                self.roll_back(format!("rolled back by {by} (immune rollback)"))
            }
            Event::Promoted { full } => {
                if let Phase::Held { from, .. } = &self.phase {
                    let from = (**from).clone();
                    self.awaiting = None;
                    self.promoted |= full;
                    self.phase = from.clone();
                    // As if the step it failed in passed: a person looked and let it on.
                    // A failed shift is tried again.
                    match from {
                        Phase::Observe { .. } => self.record(Event::StepPassed),
                        Phase::Drain => self.record(Event::Drained),
                        _ => {}
                    }
                }
            }
            Event::Suspended => {
                if let Phase::Shift { step } | Phase::Observe { step } = self.phase {
                    self.phase = Phase::Shift { step };
                }
                self.weight = 0;
                self.awaiting = None;
            }
            Event::Adopted(found) => match found {
                Found::Builder(id) => self.builder = Some(id),
                Found::LaunchTemplate(lt) => self.launch_template = Some(lt),
                Found::TargetGroup(arn) => self.target_group = Some(arn),
                Found::Alarms(names) => self.alarms = names,
                Found::Group => self.group_created = true,
                Found::HealthRule(rule) => {
                    self.health_rule = Some(rule);
                    self.joined = true;
                }
                Found::Nothing => {}
            },
            Event::WeightsRestored | Event::CapacityRestored => {
                self.weight = 0;
                self.joined = false;
            }
            Event::GroupDeleted => self.group_created = false,
            Event::ScaledToZero => {
                // The kept group, its target group and template belong to the fleet's
                // kept groups, not to this rollout: nothing of them is deleted.
                self.group_created = false;
                self.target_group = None;
                self.launch_template = None;
            }
            Event::AlarmsDeleted => self.alarms.clear(),
            Event::TargetGroupDeleted => self.target_group = None,
            Event::LaunchTemplateDeleted => self.launch_template = None,
        }
        self.settle();
    }

    /// An irreversible release that traffic (or capacity) reached: only a person's
    /// forced rollback undoes it.
    pub fn irreversibly_reached(&self) -> bool {
        self.irreversible && self.weight > 0
    }

    /// Whether a failure now holds the release instead of rolling it back: an
    /// irreversible release that traffic (or capacity) reached, while it is judged.
    fn holds(&self) -> bool {
        self.irreversibly_reached()
            && self.kind == Kind::Release
            && matches!(
                self.phase,
                Phase::Shift { .. } | Phase::Observe { .. } | Phase::Drain
            )
    }

    fn hold(&mut self, reason: String) {
        self.awaiting = None;
        let from = std::mem::replace(&mut self.phase, Phase::Done);
        self.phase = Phase::Held {
            reason,
            from: Box::new(from),
        };
    }

    fn roll_back(&mut self, reason: String) {
        // Once every step has passed the new group carries all traffic and is the
        // healthy one: a failure while retiring the old group is retried, never
        // answered by sending traffic back to the group being retired.
        if matches!(
            self.phase,
            Phase::Retire | Phase::Done | Phase::RollBack { .. } | Phase::RolledBack { .. }
        ) {
            return;
        }
        // The weights call may have taken effect even though it reported a failure: put
        // the old weights back to be sure.
        if let Phase::Shift { step } = self.phase {
            self.weight = self.weight.max(self.steps[step]);
        }
        // So may a join of the route's forward: the target group is taken out again.
        if let (Action::JoinRoute { .. }, Phase::WaitHealthy) = (self.next_action(), &self.phase) {
            self.joined = true;
        }
        self.lock_after_rollback = self.kind == Kind::Release && !matches!(self.phase, Phase::Bake);
        self.awaiting = None;
        self.phase = Phase::RollBack { reason };
    }

    /// Write-ahead: notes what `action` may create before it runs. True when the rollout
    /// changed and must be saved before the call.
    pub fn begin(&mut self, action: &Action) -> bool {
        let intent = Rollout::intent_of(action);
        if intent.is_some() && intent != self.intent {
            self.intent = intent;
            return true;
        }
        false
    }

    /// Brings a rollout read from a state document into a shape `next_action` can act
    /// on, or says what is wrong with it. A document someone edited by hand gets a clear
    /// error here instead of a panic in the middle of a rollout.
    pub fn check(&mut self) -> Result<(), String> {
        if self.steps.is_empty() || self.steps.iter().any(|s| !(1..=100).contains(s)) {
            return Err(format!("its steps {:?} are not percentages", self.steps));
        }
        if self.weight > 100 {
            return Err(format!("its weight {} is over 100", self.weight));
        }
        self.settle();
        let launched = self.launch_template.is_some()
            && (self.target_group.is_some() || self.workers.is_some());
        let problem = match &self.phase {
            Phase::Shift { step } | Phase::Observe { step } if *step >= self.steps.len() => {
                Some(format!("step {} of {}", step + 1, self.steps.len()))
            }
            Phase::Launch if self.image.is_none() => Some("launch without an image".into()),
            Phase::WaitHealthy
            | Phase::Shift { .. }
            | Phase::Observe { .. }
            | Phase::Drain
            | Phase::Retire
            | Phase::Done
            | Phase::Held { .. }
                if !launched =>
            {
                Some(format!(
                    "{} without a launch template and target group",
                    self.phase.name()
                ))
            }
            Phase::ScaleUp if self.kind != Kind::Restore || !launched => {
                Some("scale_up outside a restore of a kept group".into())
            }
            _ => None,
        };
        match problem {
            Some(problem) => Err(format!("the rollout of {} is at {problem}", self.group)),
            None => Ok(()),
        }
    }

    /// What the action may create, saved as the intent before it runs.
    pub fn intent_of(action: &Action) -> Option<Intent> {
        match action {
            Action::FindImageOrLaunchBuilder => Some(Intent::Builder),
            Action::CaptureImage { .. } => Some(Intent::Image),
            Action::CreateLaunchTemplateVersion { .. } => Some(Intent::LaunchTemplate),
            Action::CreateTargetGroup => Some(Intent::TargetGroup),
            Action::CreateAlarms { .. } => Some(Intent::Alarms),
            Action::CreateGroup { .. } => Some(Intent::Group),
            Action::AddHealthRule => Some(Intent::HealthRule),
            _ => None,
        }
    }

    /// Moves on from phases whose work is complete.
    fn settle(&mut self) {
        match &self.phase {
            Phase::Bake if self.image.is_some() && self.builder.is_none() => {
                self.phase = Phase::Launch
            }
            Phase::RollBack { reason }
                if self.intent.is_none()
                    && self.weight == 0
                    && !self.joined
                    && self.health_rule.is_none()
                    && !self.group_created
                    && self.alarms.is_empty()
                    && self.target_group.is_none()
                    && self.launch_template.is_none()
                    && self.builder.is_none() =>
            {
                self.phase = Phase::RolledBack {
                    reason: reason.clone(),
                }
            }
            _ => {}
        }
    }

    /// The route's weights with the new target group joined at 0: every target group
    /// the route forwarded to when the rollout started keeps its weight.
    pub fn joined_weights(&self) -> Vec<Weight> {
        let new = self.target_group.clone().expect("joining follows launch");
        let mut weights: Vec<Weight> = self
            .previous_weights
            .iter()
            .filter(|w| w.target_group != new)
            .cloned()
            .collect();
        weights.push(Weight {
            target_group: new,
            weight: 0,
        });
        weights
    }

    /// The listener weights with `percent` on the new group and the rest shared by the
    /// groups that had traffic before, in their old proportions.
    pub fn weights_at(&self, percent: u8) -> Vec<Weight> {
        let new = self.target_group.clone().expect("shifting follows launch");
        let rest = 100 - u32::from(percent.min(100));
        let old: Vec<&Weight> = self
            .previous_weights
            .iter()
            .filter(|w| w.weight > 0 && w.target_group != new)
            .collect();
        let total: u32 = old.iter().map(|w| u32::from(w.weight)).sum();
        let mut weights = Vec::new();
        if rest > 0 && total > 0 {
            let mut given = 0;
            for (i, w) in old.iter().enumerate() {
                let share = if i + 1 == old.len() {
                    rest - given
                } else {
                    rest * u32::from(w.weight) / total
                };
                given += share;
                weights.push(Weight {
                    target_group: w.target_group.clone(),
                    weight: share as u16,
                });
            }
        }
        if percent > 0 || weights.is_empty() {
            weights.push(Weight {
                target_group: new.clone(),
                weight: if weights.is_empty() {
                    100
                } else {
                    u16::from(percent)
                },
            });
        }
        // Target groups the route forwarded to without traffic stay as they were: they
        // are not immune's to remove.
        weights.extend(
            self.previous_weights
                .iter()
                .filter(|w| w.weight == 0 && w.target_group != new)
                .cloned(),
        );
        weights
    }
}

#[cfg(test)]
mod tests;
