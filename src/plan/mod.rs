//! The plan: what `apply` will do to each fleet and why, computed without I/O from the
//! configuration, the state and what was observed in the cloud. Rendering is separate.

mod render;

pub use render::render;

use crate::config::{Capacity, Config, Fleet};
use crate::state::State;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| !matches!(c.action, Action::NoOp))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub fleet: String,
    pub action: Action,
    /// Why, in words an operator reads in a pull request.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Release(Box<Release>),
    /// Finish a rollout that an earlier apply left unfinished.
    Resume {
        group: String,
        phase: String,
    },
    /// The fleet is locked by an automatic rollback.
    Locked {
        reason: String,
    },
    NoOp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub group: String,
    pub seq: u32,
    pub release: String,
    pub fingerprint: String,
    pub bake: String,
    pub image: ImagePlan,
    pub instance_type: String,
    pub capacity: Capacity,
    pub subnets: usize,
    pub port: u16,
    pub health_check_path: String,
    pub listener: String,
    pub steps: Vec<u8>,
    pub pause: String,
    pub healthy_within: String,
    /// The group this release replaces and how long it drains.
    pub replaces: Option<Replaced>,
    /// Every gate, as the operator configured it.
    pub gates: Vec<GatePlan>,
    /// Replaced groups kept scaled to zero for rollback.
    pub keep_previous: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatePlan {
    pub name: String,
    /// The alarm read: the operator's, or the per-release one immune creates.
    pub alarm: String,
    /// For a metric gate, what its alarm watches, e.g. `AWS/ApplicationELB
    /// TargetResponseTime p99 > 0.5 over 1m`.
    pub metric: Option<String>,
    pub mode: crate::config::GateMode,
    pub insufficient_data: crate::config::OnInsufficientData,
}

#[derive(Debug, Clone, Serialize)]
pub struct Replaced {
    pub group: String,
    pub release: String,
    pub drain: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImagePlan {
    Bake {
        source_ami: String,
        instance_type: String,
        name: String,
    },
    Reuse {
        image: String,
    },
}

/// What the cloud said about one fleet while planning.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// An image baked earlier from the same image spec.
    pub baked_image: Option<String>,
}

/// The hash of everything that goes into the image: the same spec bakes the same image.
pub fn bake_id(fleet: &Fleet) -> String {
    let mut h = Sha256::new();
    let image = &fleet.image;
    for part in [
        &image.source_ami,
        &image.instance_type,
        image.provision.as_deref().unwrap_or(""),
        image.name.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

/// The hash of everything that needs new machines: a change here is a new release.
/// Capacity is left out: it changes without replacing anything.
pub fn fingerprint(fleet: &Fleet) -> String {
    let mut h = Sha256::new();
    h.update(bake_id(fleet).as_bytes());
    let i = &fleet.instances;
    for part in [
        i.instance_type.as_str(),
        &i.subnets.join(","),
        &i.security_groups.join(","),
        i.user_data.as_deref().unwrap_or(""),
        &fleet.traffic.port.to_string(),
        &fleet.traffic.health_check.path,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The release's name: the operator's `release` or, failing that, its fingerprint.
pub fn release_name(fleet: &Fleet) -> String {
    fleet
        .release
        .clone()
        .unwrap_or_else(|| format!("r-{}", &fingerprint(fleet)[..8]))
}

pub fn group_name(fleet: &str, seq: u32) -> String {
    format!("{fleet}-v{seq:03}")
}

pub fn plan(config: &Config, state: &State, observed: &BTreeMap<String, Observed>) -> Plan {
    let changes = config
        .fleets
        .iter()
        .map(|fleet| plan_fleet(fleet, state, observed.get(&fleet.name)))
        .collect();
    Plan { changes }
}

fn plan_fleet(fleet: &Fleet, state: &State, observed: Option<&Observed>) -> Change {
    let recorded = state.fleets.get(&fleet.name).cloned().unwrap_or_default();
    let change = |action, reason: String| Change {
        fleet: fleet.name.clone(),
        action,
        reason,
    };
    if let Some(lock) = &recorded.lock {
        return change(
            Action::Locked {
                reason: lock.reason.clone(),
            },
            format!(
                "locked since {} after release {} was rolled back: {}",
                lock.at, lock.release, lock.reason
            ),
        );
    }
    let fingerprint = fingerprint(fleet);
    let release = release_name(fleet);
    if let Some(rollout) = &recorded.rollout {
        if !rollout.phase.is_finished() {
            let phase = rollout.phase.name();
            return change(
                Action::Resume {
                    group: rollout.group.clone(),
                    phase: phase.clone(),
                },
                if (rollout.release.as_str(), rollout.fingerprint.as_str())
                    == (release.as_str(), fingerprint.as_str())
                {
                    format!(
                        "an earlier apply stopped during {phase} of release {} ({})",
                        rollout.release, rollout.group
                    )
                } else {
                    format!(
                        "an earlier apply stopped during {phase} of release {} ({}), which the configuration no longer asks for: it will be rolled back; apply again for release {release}",
                        rollout.release, rollout.group
                    )
                },
            );
        }
    }
    if let Some(active) = &recorded.active {
        if active.fingerprint == fingerprint && active.release == release {
            return change(
                Action::NoOp,
                format!("release {release} is live in {}", active.name),
            );
        }
    }
    let seq = recorded.seq + 1;
    let reason = match &recorded.active {
        None => format!("first release {release}"),
        Some(a) if a.release == release => format!(
            "release {release} changed (image or instance settings differ from {})",
            a.name
        ),
        Some(a) => format!("release {release} replaces {}", a.release),
    };
    let image = match observed.and_then(|o| o.baked_image.clone()) {
        Some(image) => ImagePlan::Reuse { image },
        None => ImagePlan::Bake {
            source_ami: fleet.image.source_ami.clone(),
            instance_type: fleet.image.instance_type.clone(),
            name: image_name(fleet, seq),
        },
    };
    use crate::config::show_duration as show;
    let release_plan = Release {
        group: group_name(&fleet.name, seq),
        seq,
        release,
        fingerprint,
        bake: bake_id(fleet),
        image,
        instance_type: fleet.instances.instance_type.clone(),
        capacity: fleet.instances.capacity,
        subnets: fleet.instances.subnets.len(),
        port: fleet.traffic.port,
        health_check_path: fleet.traffic.health_check.path.clone(),
        listener: fleet.traffic.route(),
        steps: fleet.rollout.steps.clone(),
        pause: show(fleet.rollout.pause),
        healthy_within: show(fleet.rollout.healthy_within),
        replaces: recorded.active.as_ref().map(|a| Replaced {
            group: a.name.clone(),
            release: a.release.clone(),
            drain: show(fleet.traffic.deregistration_delay),
        }),
        gates: fleet
            .rollout
            .gates
            .iter()
            .map(|g| GatePlan {
                name: g.name.clone(),
                alarm: g.alarm_name(&group_name(&fleet.name, seq)),
                metric: match &g.check {
                    crate::config::GateCheck::Alarm(_) => None,
                    crate::config::GateCheck::Metric(m) => Some(format!(
                        "{} {} {} {} {} over {}",
                        m.namespace,
                        m.name,
                        m.statistic,
                        word(&m.comparison),
                        m.threshold,
                        show(m.period)
                    )),
                },
                mode: g.mode,
                insufficient_data: g.insufficient_data,
            })
            .collect(),
        keep_previous: fleet.rollout.keep_previous,
    };
    change(Action::Release(Box::new(release_plan)), reason)
}

/// A serialized enum's name as the configuration spells it: `dry-run`, `hold`, `>`.
fn word(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Image names must be unique in the account: the configured name, or the group's.
pub fn image_name(fleet: &Fleet, seq: u32) -> String {
    fleet
        .image
        .name
        .clone()
        .unwrap_or_else(|| group_name(&fleet.name, seq))
}

#[cfg(test)]
mod tests;
