//! The plan: what `apply` will do to each fleet and why, computed without I/O from the
//! configuration, the state and what was observed in the cloud. Rendering is separate.

mod document;
mod render;

pub use document::{config_hash, Document, Summary, FORMAT_VERSION};
pub use render::render;

use crate::cloud::{GroupStatus, Weight};
use crate::config::{Capacity, Config, Fleet};
use crate::state::{FleetState, Group, HistoryEntry, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| !matches!(c.action, Action::NoOp))
    }

    /// Whether apply would change anything: a locked (or blocked) fleet is left as it is.
    pub fn acts(&self) -> bool {
        self.changes.iter().any(|c| {
            !matches!(
                c.action,
                Action::NoOp | Action::Locked { .. } | Action::Blocked { .. }
            )
        })
    }

    /// Whether a fleet is locked: apply would leave it and exit 4.
    pub fn has_locked(&self) -> bool {
        self.changes
            .iter()
            .any(|c| matches!(c.action, Action::Locked { .. }))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub fleet: String,
    pub action: Action,
    /// Why, in words an operator reads in a pull request.
    pub reason: String,
    /// What changed outside immune since the last apply.
    pub drift: Vec<Drift>,
    /// What the operator should know before applying: a gate in ALARM now, a pause too
    /// short for a gate to change state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The region the fleet's resources are in, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// One difference between what immune recorded and what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The resource, e.g. `group web-v002`.
    pub resource: String,
    /// What changed, e.g. `desired capacity 3 -> 2 changed outside immune`.
    pub change: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Release(Box<Release>),
    /// Finish a rollout that an earlier apply left unfinished.
    Resume {
        group: String,
        phase: String,
    },
    /// The fleet is locked by an automatic rollback, or holds an irreversible release
    /// that failed (`held`).
    Locked {
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        held: bool,
    },
    /// Changes to the running release that need no new machines.
    Update(Update),
    /// The fleet left the configuration: its traffic goes back where it was before
    /// immune, then its groups are deleted.
    Retire(Retire),
    /// Apply cannot act on the fleet until the operator does something first.
    Blocked {
        reason: String,
    },
    NoOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub group: String,
    /// Set the group's capacity (min, max, desired) to the configured one.
    pub capacity: Option<CapacityChange>,
    /// Put the route's weights back to all traffic on the active group.
    pub weights: Option<WeightsChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityChange {
    pub from: Capacity,
    pub to: Capacity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsChange {
    pub route: String,
    pub from: Vec<Weight>,
    pub to: Vec<Weight>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retire {
    /// The active group and the kept ones, all deleted.
    pub groups: Vec<String>,
    /// The route that sends the fleet traffic; a worker fleet has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// A worker fleet: each group is scaled in through its lifecycle hook first, so its
    /// workers finish their jobs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workers: bool,
    /// Where the traffic goes first; empty when the route no longer sends any to the fleet.
    pub restore: Vec<Weight>,
    /// Or, for a route that forwarded nowhere before immune, the fixed response or
    /// redirect it answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stand_in: Option<crate::cloud::StandIn>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The target group's port, its health check and the route that shifts traffic to
    /// it; a worker fleet has none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// A worker fleet's canary, by capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkerPlan>,
    pub steps: Vec<u8>,
    pub pause: String,
    pub healthy_within: String,
    /// The group this release replaces and how long it drains.
    pub replaces: Option<Replaced>,
    /// Every gate, as the operator configured it.
    pub gates: Vec<GatePlan>,
    /// Replaced groups kept scaled to zero for rollback.
    pub keep_previous: u32,
    /// The instances' other settings, in words: what the launch template and group get.
    #[serde(default)]
    pub settings: Vec<Setting>,
    /// `fleet { irreversible = true }`: a failure after traffic reached it holds it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
    /// `rollout { rate }`: the pauses' bounds and the gates that pace them, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace: Option<String>,
    /// `rollout { after }`: fleets whose releases must finish in this apply first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// How a worker fleet's release moves capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPlan {
    /// Instances on the new group at each step, of `desired`.
    pub instances: Vec<u32>,
    pub desired: u32,
    /// How long a leaving worker may take to finish its job, e.g. `15m`.
    pub termination_grace: String,
}

/// One instance setting of a release, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replaced {
    pub group: String,
    pub release: String,
    pub drain: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImagePlan {
    Bake {
        source_ami: String,
        instance_type: String,
        name: String,
        /// How long the provision script may take, e.g. `30m`.
        #[serde(default)]
        bake_timeout: String,
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
    /// The live side of the release the state records as active.
    pub live: Option<Live>,
    /// Names the next release would take that someone else holds.
    pub conflicts: Vec<crate::cloud::Conflict>,
    /// The operator's gate alarms as they read now, by alarm name.
    pub gate_alarms: BTreeMap<String, crate::cloud::AlarmReading>,
    /// What the route answers with when it forwards nowhere (a fresh load balancer).
    pub stand_in: Option<crate::cloud::StandIn>,
    /// The region the fleet was read in.
    pub region: Option<String>,
    /// `promote_after`: why its release is not proven in the other environment yet.
    pub unproven: Option<String>,
}

/// The active release as it runs now, refreshed for the three-way comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// `None` when the group was deleted.
    pub group: Option<GroupStatus>,
    pub target_group_exists: bool,
    pub image_exists: bool,
    /// The route's forward weights now (weight 0 included).
    pub weights: Vec<Weight>,
    /// Of the target groups the route sent traffic to before immune, those that still
    /// exist.
    pub original_target_groups: Vec<String>,
}

/// The instances' settings beyond type, subnets and capacity, in words, for the plan.
pub fn settings_of(fleet: &Fleet) -> Vec<Setting> {
    let i = &fleet.instances;
    let mut settings = Vec::new();
    let mut add = |name: &str, value: String| {
        settings.push(Setting {
            name: name.into(),
            value,
        })
    };
    if let Some(profile) = &i.iam_instance_profile {
        add("profile", profile.clone());
    }
    if let Some(key) = &i.key_name {
        add("key pair", key.clone());
    }
    let tags = fleet.instance_tags();
    if !tags.is_empty() {
        let shown: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        add("tags", shown.join(", "));
    }
    if let Some(v) = &i.root_volume {
        let mut parts = vec![format!(
            "{} {}",
            v.size.map_or("image's size".into(), |s| format!("{s} GiB")),
            v.volume_type.as_deref().unwrap_or("(image's type)")
        )];
        match v.encrypted {
            Some(true) => parts.push("encrypted".into()),
            Some(false) => parts.push("not encrypted".into()),
            None => {}
        }
        if let Some(iops) = v.iops {
            parts.push(format!("{iops} IOPS"));
        }
        if let Some(t) = v.throughput {
            parts.push(format!("{t} MiB/s"));
        }
        add("root", parts.join(", "));
    }
    add(
        "metadata",
        format!(
            "IMDSv2 {}, hop limit {}",
            if i.metadata.tokens_required {
                "required"
            } else {
                "optional (IMDSv1 allowed)"
            },
            i.metadata.hop_limit
        ),
    );
    if let Some(spot) = &i.spot {
        add(
            "spot",
            format!(
                "{}; the first {} on demand, then {}% on demand",
                spot.instance_types.join(", "),
                spot.on_demand_base,
                spot.on_demand_percent
            ),
        );
    }
    for policy in &i.scaling {
        add(
            "scaling",
            format!(
                "{}: keep {} at {} (target tracking)",
                policy.name,
                match policy.metric {
                    crate::config::ScalingMetric::Cpu => "average CPU % per instance",
                    crate::config::ScalingMetric::RequestsPerTarget => "requests per target",
                    crate::config::ScalingMetric::NetworkIn => "average network in per instance",
                    crate::config::ScalingMetric::NetworkOut => "average network out per instance",
                },
                policy.target
            ),
        );
    }
    settings
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
    // Added later: hashed only when set, so that existing bakes keep their id.
    if let Some(profile) = &image.iam_instance_profile {
        h.update(format!("profile={profile}\0").as_bytes());
    }
    hex(&h.finalize()[..8])
}

/// What makes "the same release" in two environments: the image's source, provision
/// script and builder type, without the names each environment gives its resources.
pub fn image_spec(fleet: &Fleet) -> String {
    let mut h = Sha256::new();
    let image = &fleet.image;
    for part in [
        &image.source_ami,
        &image.instance_type,
        image.provision.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..8])
}

/// Whether `release` of `fleet`, built from `spec`, finished (done, not rolled back) in
/// the environment whose state is `upstream` (`place` names it); if not, where it stands
/// there, in words.
pub fn proven(
    upstream: &State,
    place: &str,
    fleet: &str,
    release: &str,
    spec: &str,
) -> Result<(), String> {
    let Some(there) = upstream.fleets.get(fleet) else {
        return Err(format!(
            "{place} has no fleet `{fleet}`: release {release} has not run there"
        ));
    };
    let done = there
        .history
        .iter()
        .enumerate()
        .filter(|(_, h)| h.release == release && h.outcome == "done")
        .collect::<Vec<_>>();
    // Finished, and not rolled back by hand right after (`immune rollback` restores the
    // group it replaced: the next entry).
    let restored = |k: usize| {
        there
            .history
            .get(k + 1)
            .is_some_and(|n| n.outcome == "restored")
    };
    if done
        .iter()
        .any(|(k, h)| h.image_spec == spec && !restored(*k))
    {
        return Ok(());
    }
    if let Some((k, _)) = done.iter().rev().find(|(_, h)| h.image_spec == spec) {
        let back = &there.history[k + 1];
        return Err(format!(
            "release {release} finished in {place} but was rolled back by hand afterwards (to release {} at {})",
            back.release,
            back.finished_at.as_deref().unwrap_or(&back.started_at)
        ));
    }
    let done: Vec<&HistoryEntry> = done.into_iter().map(|(_, h)| h).collect();
    if let Some(h) = done.last() {
        return Err(match h.image_spec.is_empty() {
            true => format!("release {release} finished in {place} at {}, recorded before immune kept image specs, so it cannot be told to be the same release: release it there again", h.finished_at.as_deref().unwrap_or("?")),
            false => format!("release {release} finished in {place}, but built from another image (its source image, provision script or builder instance type differ)"),
        });
    }
    if let Some(r) = there.rollout.as_ref().filter(|r| r.release == release) {
        if let crate::rollout::Phase::Held { .. } = r.phase {
            return Err(format!(
                "release {release} is held in {place} after a failure ({})",
                r.group
            ));
        }
        return Err(format!(
            "release {release} is still in progress in {place} ({} of {})",
            r.phase.name(),
            r.group
        ));
    }
    if let Some(h) = there.history.iter().rev().find(|h| h.release == release) {
        return Err(format!(
            "release {release} did not finish in {place}: it was {} at {}",
            h.outcome.replace('_', " "),
            h.finished_at.as_deref().unwrap_or(&h.started_at)
        ));
    }
    let runs = there
        .active
        .as_ref()
        .map_or("nothing".to_string(), |a| format!("release {}", a.release));
    Err(format!(
        "release {release} has not run in {place}, which runs {runs}"
    ))
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
        &fleet
            .traffic
            .as_ref()
            .map_or(String::new(), |t| t.port.to_string()),
        fleet.traffic.as_ref().map_or("", |t| &t.health_check.path),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // Settings added later are hashed only when they differ from their default, so that
    // upgrading immune does not make a new release of every fleet.
    let mut added = serde_json::json!({
        "iam_instance_profile": i.iam_instance_profile,
        "key_name": i.key_name,
        "tags": i.tags,
        "default_tags": fleet.default_tags,
        "root_volume": i.root_volume,
        "metadata": (i.metadata != crate::config::Metadata::default()).then_some(i.metadata),
        "spot": i.spot,
        "scaling": i.scaling,
        // The lifecycle hook is made with each group.
        "termination_grace": fleet.is_worker().then_some(i.termination_grace.as_secs()),
    });
    let set = added.as_object_mut().expect("an object");
    set.retain(|_, v| {
        !(v.is_null()
            || v.as_object().is_some_and(|o| o.is_empty())
            || v.as_array().is_some_and(|a| a.is_empty()))
    });
    if !set.is_empty() {
        h.update(added.to_string().as_bytes());
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

// The names a release gives AWS resources come from the configuration, which checks
// them against AWS's rules.
pub use crate::config::names::{builder_name, group_name, image_name, policy_name, template_name};

pub fn plan(config: &Config, state: &State, observed: &BTreeMap<String, Observed>) -> Plan {
    let mut changes: Vec<Change> = in_order(&config.fleets)
        .into_iter()
        .map(|fleet| plan_fleet(fleet, state, observed.get(&fleet.name)))
        .collect();
    // One preflight with apply: a fleet that runs after a locked or blocked one will not
    // be started, so the plan says so (the changes are in order: the fleets it runs
    // after are decided already).
    for i in 0..changes.len() {
        if matches!(
            changes[i].action,
            Action::NoOp | Action::Locked { .. } | Action::Blocked { .. }
        ) {
            continue;
        }
        let Some(fleet) = config.fleets.iter().find(|f| f.name == changes[i].fleet) else {
            continue;
        };
        let waits_for = fleet.rollout.after.iter().find_map(|after| {
            let earlier = changes[..i].iter().find(|c| &c.fleet == after)?;
            match earlier.action {
                Action::Locked { .. } => Some((after, "is locked")),
                Action::Blocked { .. } => Some((after, "is blocked")),
                _ => None,
            }
        });
        if let Some((after, why)) = waits_for {
            let reason = format!("will not start: it runs after fleet {after}, which {why}");
            changes[i].reason = format!(
                "{reason}\n  it goes out with the apply that finds fleet {after} free to release"
            );
            changes[i].action = Action::Blocked { reason };
        }
    }
    for (name, recorded) in &state.fleets {
        if !config.fleets.iter().any(|f| &f.name == name) {
            changes.extend(plan_removed(name, recorded, observed.get(name)));
        }
    }
    Plan { changes }
}

/// The fleets in the configuration's order, except that a fleet comes after the fleets
/// of its `after` (the configuration has no circles: it is checked when loaded).
pub fn in_order(fleets: &[Fleet]) -> Vec<&Fleet> {
    let mut placed: Vec<&Fleet> = Vec::with_capacity(fleets.len());
    while placed.len() < fleets.len() {
        let before = placed.len();
        for fleet in fleets {
            let ready = fleet.rollout.after.iter().all(|name| {
                placed.iter().any(|p| &p.name == name) || !fleets.iter().any(|f| &f.name == name)
            });
            if ready && !placed.iter().any(|p| p.name == fleet.name) {
                placed.push(fleet);
            }
        }
        if placed.len() == before {
            // A circle (refused at load): the rest in the configuration's order.
            placed.extend(
                fleets
                    .iter()
                    .filter(|f| !placed.iter().any(|p| p.name == f.name))
                    .collect::<Vec<_>>(),
            );
        }
    }
    placed
}

fn plan_fleet(fleet: &Fleet, state: &State, observed: Option<&Observed>) -> Change {
    let recorded = state.fleets.get(&fleet.name).cloned().unwrap_or_default();
    let live = observed.and_then(|o| o.live.as_ref());
    let scaled = !fleet.instances.scaling.is_empty();
    let drift = match (&recorded.active, live) {
        (Some(active), Some(live)) if recorded.rollout.is_none() => drift_of(active, live, scaled),
        _ => Vec::new(),
    };
    let notes = scaling_note(fleet, live);
    let region = observed
        .and_then(|o| o.region.clone())
        .or_else(|| recorded.region.clone());
    let change = |action, reason: String| Change {
        fleet: fleet.name.clone(),
        action,
        reason,
        drift: drift.clone(),
        warnings: notes.clone(),
        region: region.clone(),
    };
    if let Some(rollout) = recorded.rollout.as_ref() {
        if let crate::rollout::Phase::Held { reason, .. } = &rollout.phase {
            let since = recorded.lock.as_ref().map_or("", |l| l.at.as_str());
            let on = match rollout.workers {
                Some(_) => format!("{}% of the capacity", rollout.weight),
                None => format!("{}% of the traffic", rollout.weight),
            };
            return change(
                Action::Locked {
                    reason: reason.clone(),
                    held: true,
                },
                format!(
                    "irreversible release {} is held since {since} with {on} on {}, after: {reason}",
                    rollout.release, rollout.group
                ),
            );
        }
    }
    if let Some(lock) = &recorded.lock {
        return change(
            Action::Locked {
                reason: lock.reason.clone(),
                held: false,
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
                if rollout.kind == crate::rollout::Kind::Restore {
                    format!(
                        "an earlier `immune rollback` stopped during {phase} while bringing back {} (release {}): apply (or `immune rollback {}`) finishes it, and then the fleet is locked",
                        rollout.group, rollout.release, fleet.name
                    )
                } else if (rollout.release.as_str(), rollout.fingerprint.as_str())
                    == (release.as_str(), fingerprint.as_str())
                {
                    format!(
                        "an earlier apply stopped during {phase} of release {} ({})",
                        rollout.release, rollout.group
                    )
                } else if rollout.irreversibly_reached() {
                    format!(
                        "an earlier apply stopped during {phase} of irreversible release {} ({}), which the configuration no longer asks for: traffic reached it, so it will be held for a person, not rolled back",
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
    let seq = recorded.seq + 1;
    let group = group_name(&fleet.resource_name(), seq);
    if let Some(active) = &recorded.active {
        let was_worker = active.target_group.is_none();
        if was_worker != fleet.is_worker() {
            let (was, is) = match was_worker {
                true => ("a worker fleet", "a web fleet (it has a traffic block now)"),
                false => (
                    "a web fleet behind a load balancer",
                    "a worker fleet (it has no traffic block now)",
                ),
            };
            return change(
                Action::Blocked {
                    reason: format!("{} runs as {was}", active.name),
                },
                format!(
                    "fleet {} runs as {was} ({}), and the configuration makes it {is}: a fleet cannot change kind in place\n  add a fleet of another name for the new kind, and remove this one once that one runs",
                    fleet.name, active.name
                ),
            );
        }
    }
    let lost = live.and_then(lost);
    let reason = match (&recorded.active, lost) {
        (None, _) => format!("first release {release}"),
        (Some(a), _) if a.release != release => format!("release {release} replaces {}", a.release),
        (Some(a), _) if a.fingerprint != fingerprint => format!(
            "release {release} changed (image or instance settings differ from {})",
            a.name
        ),
        (Some(_), Some(what)) => {
            format!("{what} outside immune: release {release} again as {group}")
        }
        (Some(a), None) => {
            let update = live.and_then(|live| {
                let update = update_of(fleet, a, live);
                update_reason(fleet, a, &update).map(|reason| (update, reason))
            });
            return match update {
                Some((update, reason)) => change(Action::Update(update), reason),
                None => change(
                    Action::NoOp,
                    format!("release {release} is live in {}", a.name),
                ),
            };
        }
    };
    // The configuration's names hold up to release 9999 (`config::names` checks them at
    // 1 and 1000); a fifth digit may make one too long for AWS.
    let refused: Vec<crate::config::names::Problem> = crate::config::names::problems(fleet, seq)
        .into_iter()
        .map(|p| crate::config::names::Problem {
            from_seq: Some(seq),
            ..p
        })
        .collect();
    if !refused.is_empty() {
        let said: Vec<String> = refused.iter().map(|p| p.summary(true)).collect();
        let fix = format!(
            "{}; `immune state mv fleet.{} fleet.NEW` renames the fleet without touching what runs, and its next release takes the new names",
            refused[0].hint(true, fleet.namespace.is_some()),
            fleet.name
        );
        return change(
            Action::Blocked {
                reason: said.join("; "),
            },
            format!("{}\n  {fix}", said.join("\n")),
        );
    }
    if let Some(why) = observed.and_then(|o| o.unproven.clone()) {
        return change(
            Action::Blocked {
                reason: why.clone(),
            },
            format!("{why}\n  promote_after: release {release} goes here once it finished there"),
        );
    }
    let conflicts = observed.map_or(&[][..], |o| &o.conflicts[..]);
    if !conflicts.is_empty() {
        return change(
            Action::Blocked {
                reason: conflicts
                    .iter()
                    .map(|c| c.describe())
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            conflict_reason(&fleet.name, &group, conflicts),
        );
    }
    let image = match observed.and_then(|o| o.baked_image.clone()) {
        Some(image) => ImagePlan::Reuse { image },
        None => ImagePlan::Bake {
            source_ami: fleet.image.source_ami.clone(),
            instance_type: fleet.image.instance_type.clone(),
            name: image_name(fleet, seq),
            bake_timeout: crate::config::show_duration(fleet.image.bake_timeout),
        },
    };
    use crate::config::show_duration as show;
    let release_plan = Release {
        group: group.clone(),
        seq,
        release,
        fingerprint,
        bake: bake_id(fleet),
        image,
        instance_type: fleet.instances.instance_type.clone(),
        // With scaling policies a release starts as large as the fleet runs now.
        capacity: match live.and_then(|l| l.group.as_ref()) {
            Some(running) => scaled_desired(fleet.instances.capacity, running.capacity, scaled),
            None => fleet.instances.capacity,
        },
        subnets: fleet.instances.subnets.len(),
        port: fleet.traffic.as_ref().map(|t| t.port),
        health_check_path: fleet.traffic.as_ref().map(|t| t.health_check.path.clone()),
        listener: fleet.traffic.as_ref().map(|t| t.route()),
        workers: fleet.is_worker().then(|| worker_plan(fleet, live)),
        settings: settings_of(fleet),
        irreversible: fleet.irreversible,
        after: fleet.rollout.after.clone(),
        pace: fleet.rollout.rate.map(|rate| {
            let gates: Vec<String> = fleet
                .rollout
                .gates
                .iter()
                .filter_map(|g| Some(format!("{} (slow_at {:.0}%)", g.name, g.slow_at? * 100.0)))
                .collect();
            format!(
                "each pause between {} and {} (the first {}), paced by {}",
                show(rate.min_pause),
                show(rate.max_pause),
                show(rate.clamp(fleet.rollout.pause)),
                gates.join(", ")
            )
        }),
        steps: fleet.rollout.steps.clone(),
        pause: show(fleet.rollout.pause),
        healthy_within: show(fleet.rollout.healthy_within),
        replaces: recorded.active.as_ref().map(|a| Replaced {
            group: a.name.clone(),
            release: a.release.clone(),
            // Workers drain by finishing their jobs, within their grace.
            drain: show(match &fleet.traffic {
                Some(traffic) => traffic.deregistration_delay,
                None => fleet.instances.termination_grace,
            }),
        }),
        gates: fleet
            .rollout
            .gates
            .iter()
            .map(|g| GatePlan {
                name: g.name.clone(),
                alarm: g.alarm_name(&group),
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
    let mut warnings = gate_warnings(fleet, &group, observed);
    if let Some(stand_in) = observed.and_then(|o| o.stand_in.as_ref()) {
        warnings.push(format!(
            "the route answers with {} now, which cannot share traffic with a target group: the first step sends all of it to {group}; undoing the release puts {} back",
            stand_in.describe(),
            stand_in.describe()
        ));
    }
    Change {
        warnings,
        ..change(Action::Release(Box::new(release_plan)), reason)
    }
}

/// A worker fleet's steps as instances on the new group. With scaling policies the fleet
/// keeps the size the running group has now.
fn worker_plan(fleet: &Fleet, live: Option<&Live>) -> WorkerPlan {
    let configured = fleet.instances.capacity;
    let full = match live.and_then(|l| l.group.as_ref()) {
        Some(running) => scaled_desired(
            configured,
            running.capacity,
            !fleet.instances.scaling.is_empty(),
        ),
        None => configured,
    };
    WorkerPlan {
        instances: fleet
            .rollout
            .steps
            .iter()
            .map(|s| crate::rollout::capacity_at(full, *s).0.desired)
            .collect(),
        desired: full.desired,
        termination_grace: crate::config::show_duration(fleet.instances.termination_grace),
    }
}

/// Before a release: each enforce gate already in ALARM (apply will not start while it
/// is), and each gate whose alarm cannot change state within one pause.
fn gate_warnings(fleet: &Fleet, group: &str, observed: Option<&Observed>) -> Vec<String> {
    use crate::config::{show_duration, GateCheck, GateMode};
    let pause = fleet.rollout.pause;
    let mut warnings = Vec::new();
    for gate in &fleet.rollout.gates {
        let alarm = gate.alarm_name(group);
        let reading = observed.and_then(|o| o.gate_alarms.get(&alarm));
        if let Some(r) = reading.filter(|r| r.state == crate::cloud::AlarmState::Alarm) {
            let since = r
                .since
                .as_deref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default();
            warnings.push(match gate.mode {
                GateMode::Enforce => format!(
                    "gate {}: alarm {alarm} is in ALARM now{since}; apply will not start the release until it is OK",
                    gate.name
                ),
                _ => format!(
                    "gate {}: alarm {alarm} is in ALARM now{since}",
                    gate.name
                ),
            });
        }
        let needs = match &gate.check {
            GateCheck::Metric(m) => Some(
                m.period * m.evaluation_periods.max(1)
                    + crate::cloud::publication_delay(&m.namespace),
            ),
            GateCheck::Alarm(_) => reading.and_then(|r| r.needs),
        };
        if let Some(needs) = needs.filter(|needs| *needs > pause) {
            let then = match gate.mode {
                // The engine stretches each step to it (`rollout::gates::watch_for`).
                GateMode::Enforce => format!("each step is watched for {}", show_duration(needs)),
                _ => "a step can pass before the gate could fail (only an enforce gate lengthens the step)".to_string(),
            };
            warnings.push(format!(
                "gate {}: its alarm needs {} of data before it can go into ALARM, longer than the pause of {}: {then}",
                gate.name,
                show_duration(needs),
                show_duration(pause)
            ));
        }
    }
    warnings
}

/// Why a release cannot start: each name it needs and who holds it, with the way out.
fn conflict_reason(fleet: &str, group: &str, conflicts: &[crate::cloud::Conflict]) -> String {
    use crate::cloud::{Conflict, Holder};
    let image = |c: &Conflict| c.resource.starts_with("image name");
    let held = |c: &Conflict| match (&c.holder, image(c)) {
        (Holder::Ours, true) => {
            format!("{} is taken by an image of this configuration", c.resource)
        }
        (Holder::Ours, false) => format!(
            "{} already exists with this state's lineage, though this state has not made it",
            c.resource
        ),
        _ => c.describe(),
    };
    let mut text = format!(
        "fleet {fleet} cannot be released as {group}: {}",
        conflicts.iter().map(held).collect::<Vec<_>>().join("; ")
    );
    if conflicts.iter().any(|c| c.holder != Holder::Ours) {
        text += "; immune never modifies or deletes what is not this configuration's";
    }
    if conflicts
        .iter()
        .any(|c| matches!(c.holder, Holder::OtherState { .. }))
    {
        text += "\n  another state manages a fleet of this name in this account: if it is this configuration's own state that moved, bring it back (`immune init --migrate-state` moves a state between backends, keeping its lineage) instead of starting a new one; if it is another configuration, set `immune { namespace = \"...\" }` or give this fleet another name";
    }
    if conflicts.iter().any(|c| c.holder == Holder::Foreign) {
        text += "\n  rename or remove what holds the name outside immune, or set `immune { namespace = \"...\" }` so that this configuration's names differ";
    }
    if conflicts
        .iter()
        .any(|c| c.holder == Holder::Ours && !image(c))
    {
        text += "\n  this state is older than what runs: another copy of it (a restored backup, a copied directory, a *.migrated file) went further; use the newest state";
    }
    if conflicts
        .iter()
        .any(|c| c.holder == Holder::Ours && image(c))
    {
        text += "\n  image names are unique in an account: set image.name so that each bake has a name of its own";
    }
    text
}

/// What of the active release is gone, when anything is: it cannot be repaired in place,
/// only released again.
fn lost(live: &Live) -> Option<String> {
    let mut gone = Vec::new();
    if live.group.is_none() {
        gone.push("its Auto Scaling group");
    }
    if !live.target_group_exists {
        gone.push("its target group");
    }
    if !live.image_exists {
        gone.push("its image");
    }
    (!gone.is_empty()).then(|| format!("the active release lost {}", gone.join(" and ")))
}

/// With scaling policies the running desired capacity is theirs to move: the plan says
/// so when it differs from the configured one, instead of calling it drift.
fn scaling_note(fleet: &Fleet, live: Option<&Live>) -> Vec<String> {
    let status = live.and_then(|l| l.group.as_ref());
    match status {
        Some(status)
            if !fleet.instances.scaling.is_empty()
                && status.capacity.desired != fleet.instances.capacity.desired =>
        {
            let configured = fleet.instances.capacity;
            let running = status.capacity.desired;
            let kept = running.clamp(configured.min, configured.max);
            vec![if kept == running {
                format!(
                    "{} runs {running} instances where {} are configured: its scaling policies set the desired capacity, so apply leaves it, and a new release starts as large",
                    status.name, configured.desired
                )
            } else {
                format!(
                    "{} runs {running} instances, outside the configured min {} and max {}: apply sets it to {kept}, and its scaling policies move it from there",
                    status.name, configured.min, configured.max
                )
            }]
        }
        _ => Vec::new(),
    }
}

/// `capacity` with the desired count of `running` when scaling policies move it.
pub fn scaled_desired(capacity: Capacity, running: Capacity, scaled: bool) -> Capacity {
    if scaled {
        Capacity {
            desired: running.desired.clamp(capacity.min, capacity.max),
            ..capacity
        }
    } else {
        capacity
    }
}

/// Every difference between the recorded active release and what runs. With scaling
/// policies (`scaled`), the desired capacity is theirs and not compared.
fn drift_of(active: &Group, live: &Live, scaled: bool) -> Vec<Drift> {
    let mut drift = Vec::new();
    let group = format!("group {}", active.name);
    match &live.group {
        None => drift.push(Drift {
            resource: group,
            change: "deleted outside immune".into(),
        }),
        Some(status) => {
            if let Some(recorded) = active.capacity {
                let recorded = scaled_desired(recorded, status.capacity, scaled);
                if recorded != status.capacity {
                    drift.push(Drift {
                        resource: group,
                        change: format!(
                            "{} changed outside immune",
                            capacity_change(recorded, status.capacity)
                        ),
                    });
                }
            }
        }
    }
    if let (Some(target_group), false) = (&active.target_group, live.target_group_exists) {
        drift.push(Drift {
            resource: format!("target group {}", target_group_name(target_group)),
            change: "deleted outside immune".into(),
        });
    }
    if !live.image_exists {
        drift.push(Drift {
            resource: format!("image {}", active.image),
            change: "deregistered outside immune: the group cannot launch instances".into(),
        });
    }
    let forwarding = forwarding(&live.weights);
    if let (Some(target_group), Some(route)) = (&active.target_group, &active.listener_arn) {
        if live.target_group_exists && forwarding != all_on(target_group) {
            drift.push(Drift {
                resource: route_name(route),
                change: format!(
                    "sends {} instead of all traffic to {}",
                    show_weights(&forwarding),
                    target_group_name(target_group)
                ),
            });
        }
    }
    drift
}

/// What apply changes in place to bring the running release to the configuration.
fn update_of(fleet: &Fleet, active: &Group, live: &Live) -> Update {
    let scaled = !fleet.instances.scaling.is_empty();
    let capacity = live.group.as_ref().and_then(|status| {
        let wanted = scaled_desired(fleet.instances.capacity, status.capacity, scaled);
        let recorded = active
            .capacity
            .map(|c| scaled_desired(c, status.capacity, scaled));
        (status.capacity != wanted || recorded != Some(wanted)).then_some(CapacityChange {
            from: status.capacity,
            to: wanted,
        })
    });
    let forwarding = forwarding(&live.weights);
    let weights = match (&active.target_group, &active.listener_arn) {
        (Some(target_group), Some(route)) if forwarding != all_on(target_group) => {
            Some(WeightsChange {
                route: route.clone(),
                from: forwarding,
                to: all_on(target_group),
            })
        }
        _ => None,
    };
    Update {
        group: active.name.clone(),
        capacity,
        weights,
    }
}

/// Why the update is needed, or `None` when there is nothing to do.
fn update_reason(fleet: &Fleet, active: &Group, update: &Update) -> Option<String> {
    let mut why = Vec::new();
    let scaled = !fleet.instances.scaling.is_empty();
    if let Some(c) = &update.capacity {
        let recorded = scaled_desired(active.capacity.unwrap_or(c.from), c.from, scaled);
        if recorded != scaled_desired(fleet.instances.capacity, c.from, scaled) {
            why.push(format!(
                "capacity changed in the configuration: {}",
                capacity_change(recorded, c.to)
            ));
        }
        if c.from != recorded {
            why.push(format!(
                "{} drifted outside immune: apply sets it back",
                capacity_change(recorded, c.from)
            ));
        } else if c.from == c.to && recorded != c.to {
            why.push("the live capacity already matches: apply records it".into());
        }
    }
    if let Some(w) = &update.weights {
        why.push(format!(
            "the route sends {}: apply puts all traffic back on {}",
            show_weights(&w.from),
            active.name
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// A fleet the state knows but the configuration no longer names.
fn plan_removed(name: &str, recorded: &FleetState, observed: Option<&Observed>) -> Option<Change> {
    let region = observed
        .and_then(|o| o.region.clone())
        .or_else(|| recorded.region.clone());
    let change = |action, reason: String| Change {
        fleet: name.to_string(),
        action,
        reason,
        drift: Vec::new(),
        warnings: Vec::new(),
        region: region.clone(),
    };
    if let Some(rollout) = recorded.rollout.as_ref().filter(|r| !r.phase.is_finished()) {
        return Some(change(
            Action::Blocked {
                reason: format!("a rollout of {} is unfinished", rollout.group),
            },
            format!(
                "fleet {name} is no longer in the configuration but its rollout of {} is unfinished; put the fleet back and run `immune apply` (or `immune rollback {name}`) first",
                rollout.group
            ),
        ));
    }
    let active = recorded.active.as_ref().or(recorded.previous.first())?;
    let groups: Vec<String> = recorded
        .active
        .iter()
        .chain(&recorded.previous)
        .map(|g| g.name.clone())
        .collect();
    let live = observed.and_then(|o| o.live.as_ref());
    let ours: Vec<&String> = recorded
        .active
        .iter()
        .chain(&recorded.previous)
        .filter_map(|g| g.target_group.as_ref())
        .collect();
    // A worker fleet has no route: nothing to give back.
    let route = active.listener_arn.clone();
    let sends_to_fleet = route.is_some()
        && live.is_none_or(|l| {
            forwarding(&l.weights)
                .iter()
                .any(|w| ours.contains(&&w.target_group))
        });
    let originals_exist = live.is_some_and(|l| {
        recorded
            .original_weights
            .iter()
            .all(|w| l.original_target_groups.contains(&w.target_group))
    });
    let stand_in = recorded
        .original_stand_in
        .clone()
        .filter(|_| sends_to_fleet && recorded.original_weights.is_empty());
    let restore = if !sends_to_fleet || stand_in.is_some() {
        Vec::new()
    } else if !recorded.original_weights.is_empty() && originals_exist {
        recorded.original_weights.clone()
    } else {
        return Some(change(
            Action::Blocked {
                reason: "its traffic would have nowhere to go".into(),
            },
            format!(
                "fleet {name} is no longer in the configuration, but {} still sends it traffic and the target groups it used before immune are unknown or gone; point the route at another target group first, then apply retires the fleet",
                route_name(route.as_deref().unwrap_or_default())
            ),
        ));
    };
    let reason = if let Some(stand_in) = &stand_in {
        format!(
            "fleet {name} is no longer in the configuration: the route answers with {} again, as before immune, then {} deleted",
            stand_in.describe(),
            groups.join(", ")
        )
    } else if restore.is_empty() {
        format!(
            "fleet {name} is no longer in the configuration: {} deleted",
            groups.join(", ")
        )
    } else {
        format!(
            "fleet {name} is no longer in the configuration: traffic goes back to {}, then {} deleted",
            show_weights(&restore),
            groups.join(", ")
        )
    };
    Some(change(
        Action::Retire(Retire {
            groups,
            workers: route.is_none(),
            route,
            restore,
            stand_in,
        }),
        reason,
    ))
}

/// The target groups that carry traffic, with their share in percent, by target group:
/// a lone target group of weight 1 carries all of it, as one of weight 100 does.
fn forwarding(weights: &[Weight]) -> Vec<Weight> {
    let total: u32 = weights.iter().map(|w| u32::from(w.weight)).sum();
    let mut shares: Vec<Weight> = weights
        .iter()
        .filter(|w| w.weight > 0)
        .map(|w| Weight {
            target_group: w.target_group.clone(),
            weight: (u32::from(w.weight) * 100 / total) as u16,
        })
        .collect();
    shares.sort_by(|a, b| a.target_group.cmp(&b.target_group));
    shares
}

fn all_on(target_group: &str) -> Vec<Weight> {
    vec![Weight {
        target_group: target_group.to_string(),
        weight: 100,
    }]
}

/// `web-v002 75%, api 25%`, or `nothing` for no traffic.
pub fn show_weights(weights: &[Weight]) -> String {
    if weights.is_empty() {
        return "nothing".into();
    }
    forwarding(weights)
        .iter()
        .map(|w| format!("{} {}%", target_group_name(&w.target_group), w.weight))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A target group's name from its ARN (`...:targetgroup/web-v002/abc`).
pub fn target_group_name(arn: &str) -> String {
    arn.split_once("targetgroup/")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or(arn)
        .to_string()
}

fn route_name(arn: &str) -> String {
    if crate::cloud::is_rule_arn(arn) {
        format!("listener rule {arn}")
    } else {
        format!("listener {arn}")
    }
}

/// The fields that differ: `desired 3 -> 2, max 4 -> 5`.
pub fn capacity_change(from: Capacity, to: Capacity) -> String {
    let parts: Vec<String> = [
        ("desired", from.desired, to.desired),
        ("min", from.min, to.min),
        ("max", from.max, to.max),
    ]
    .iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what} capacity {a} -> {b}"))
    .collect();
    if parts.is_empty() {
        format!("capacity {} (unchanged)", to.desired)
    } else {
        parts.join(", ")
    }
}

/// A serialized enum's name as the configuration spells it: `dry-run`, `hold`, `>`.
pub fn word(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
