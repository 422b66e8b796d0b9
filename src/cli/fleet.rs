//! The commands an operator uses on one fleet between and during rollouts: status,
//! history, rollback, approve, reject, unlock.

use super::signals::{interrupted, Interrupts};
use super::{apply, lock, observe, Cli, CliError, Success};
use crate::cloud::Cloud;
use crate::config::{Config, Fleet};
use crate::engine::{Engine, Outcome, Signals};
use crate::plan;
use crate::state::{
    now, operator, Answer, AnswerKind, Backend, FleetState, Holder, LockInfo, State, StateError,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn error(e: impl std::fmt::Display) -> CliError {
    CliError::Message(format!("error: {e}"))
}

fn find<'c>(config: &'c Config, name: &str) -> Result<&'c Fleet, CliError> {
    config
        .fleets
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = config.fleets.iter().map(|f| f.name.as_str()).collect();
            error(format!(
                "no fleet `{name}` in the configuration (fleets: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
}

fn recorded<'s>(state: &'s State, name: &str) -> Result<&'s FleetState, CliError> {
    state.fleets.get(name).ok_or_else(|| {
        error(format!(
            "fleet `{name}` has no state yet: nothing has been applied to it"
        ))
    })
}

/// `immune status [FLEET] [--json]`.
pub async fn status(cli: &Cli, only: Option<&str>, json: bool) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    if let Some(name) = only {
        find(&config, name)?;
    }
    let state = apply::read_state(cli, &config).await?;
    // Live figures are a bonus: state alone still answers most questions.
    let cloud = observe::connect(cli, &config, &state).await.ok();
    let fleets: Vec<&Fleet> = config
        .fleets
        .iter()
        .filter(|f| only.is_none_or(|n| n == f.name))
        .collect();
    let live = match &cloud {
        Some(clouds) => Some(Live::read(clouds, &config, &state, &fleets, only.is_some()).await),
        None => None,
    };
    let mut report = Vec::new();
    for fleet in fleets {
        let recorded = state.fleets.get(&fleet.name).cloned().unwrap_or_default();
        report.push(fleet_status(live.as_ref(), &fleet.name, &recorded));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("status serializes")
        );
    } else {
        for fleet in &report {
            print!("{}", fleet.render());
        }
    }
    Ok(Success::Done)
}

#[derive(Debug, Serialize)]
struct FleetStatus {
    fleet: String,
    active: Option<GroupStatus>,
    kept: Vec<GroupStatus>,
    /// Live listener weights (percent by target group), when the cloud answered.
    weights: Option<Vec<(String, u16)>>,
    rollout: Option<RolloutStatus>,
    locked: Option<crate::state::FleetLock>,
    /// Why live figures are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    live_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct GroupStatus {
    group: String,
    release: String,
    image: String,
    /// A worker fleet's group has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_group: Option<String>,
    /// Instances InService and healthy / wanted, when the cloud answered.
    healthy: Option<(usize, u32)>,
    /// Whose health that is: `target_group` (its targets' health checks, read for a
    /// fleet in a rollout or asked for by name) or `auto_scaling` (the group's own view,
    /// for steady fleets: for a group behind a target group, the load balancer's check).
    #[serde(skip_serializing_if = "Option::is_none")]
    health_from: Option<&'static str>,
}

/// A worker fleet's capacity during a rollout, as the groups run it.
#[derive(Debug, Serialize)]
struct WorkerShare {
    /// Instances InService on the new group.
    new: usize,
    /// The fleet's capacity once the rollout is done.
    of: u32,
    /// The old group and how many instances it still has (leaving ones included).
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<(String, usize)>,
}

#[derive(Debug, Serialize)]
struct RolloutStatus {
    group: String,
    release: String,
    kind: crate::rollout::Kind,
    phase: String,
    step: Option<usize>,
    steps: Vec<u8>,
    /// Percent of traffic on the new group; for a worker fleet, of capacity.
    weight: u8,
    /// A worker fleet: where its instances are now.
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<WorkerShare>,
    awaiting: Option<crate::rollout::Awaiting>,
    /// `immune pause`: who holds the rollout at its step.
    #[serde(skip_serializing_if = "Option::is_none")]
    held_by: Option<String>,
    /// `immune promote --full`: the remaining steps pass as soon as their gates allow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    promoted: bool,
}

/// What `status` read of the live fleets: every kind of thing in a few calls, the
/// regions side by side. Target health has no batched call, so it is read for the
/// fleets asked for by name or in a rollout; a steady fleet's health is its Auto
/// Scaling group's, which for a group behind a target group is the load balancer's
/// health check (health check type ELB).
#[derive(Default)]
struct Live {
    groups: BTreeMap<String, crate::cloud::GroupStatus>,
    weights: BTreeMap<String, Result<Vec<crate::cloud::Weight>, String>>,
    health: BTreeMap<String, Result<Vec<crate::cloud::Target>, String>>,
    /// Why a group's region could not be read, by group.
    unread: BTreeMap<String, String>,
}

impl Live {
    async fn read(
        clouds: &crate::cloud::Clouds,
        config: &Config,
        state: &crate::state::State,
        fleets: &[&Fleet],
        detailed: bool,
    ) -> Live {
        let mut regions: BTreeMap<String, (&dyn Cloud, Vec<&FleetState>)> = BTreeMap::new();
        let none = FleetState::default();
        for fleet in fleets {
            let cloud = observe::cloud_of(clouds, config, state, &fleet.name);
            let recorded = state.fleets.get(&fleet.name).unwrap_or(&none);
            regions
                .entry(cloud.region())
                .or_insert_with(|| (cloud, Vec::new()))
                .1
                .push(recorded);
        }
        let parts = futures_util::future::join_all(
            regions
                .into_values()
                .map(|(cloud, recorded)| Live::read_region(cloud, recorded, detailed)),
        )
        .await;
        let mut live = Live::default();
        for part in parts {
            live.groups.extend(part.groups);
            live.weights.extend(part.weights);
            live.health.extend(part.health);
            live.unread.extend(part.unread);
        }
        live
    }

    async fn read_region(cloud: &dyn Cloud, recorded: Vec<&FleetState>, detailed: bool) -> Live {
        let mut groups = BTreeSet::new();
        let mut routes = BTreeSet::new();
        let mut checked = BTreeSet::new();
        for fleet in &recorded {
            let listed = fleet.active.iter().chain(&fleet.previous);
            for g in listed.clone() {
                groups.insert(g.name.clone());
            }
            if let Some(r) = &fleet.rollout {
                groups.insert(r.group.clone());
                groups.extend(r.previous.iter().map(|p| p.group.clone()));
            }
            if let Some(route) = route_of(fleet) {
                routes.insert(route);
            }
            if detailed || fleet.rollout.is_some() {
                checked.extend(listed.filter_map(|g| g.target_group.clone()));
            }
        }
        let groups: Vec<String> = groups.into_iter().collect();
        let routes: Vec<String> = routes.into_iter().collect();
        let health = futures_util::future::join_all(checked.into_iter().map(|tg| async move {
            let read = cloud.target_health(&tg).await.map_err(|e| e.to_string());
            (tg, read)
        }));
        let weights = async {
            match routes.is_empty() {
                true => Ok(BTreeMap::new()),
                false => cloud.route_weights(&routes).await,
            }
        };
        let (found, weights, health) = tokio::join!(cloud.groups(&groups), weights, health);
        let mut live = Live {
            health: health.into_iter().collect(),
            ..Live::default()
        };
        match found {
            Ok(found) => live.groups = found,
            Err(e) => live.unread = groups.iter().map(|g| (g.clone(), e.to_string())).collect(),
        }
        match weights {
            Ok(weights) => {
                live.weights = weights
                    .into_iter()
                    .map(|(route, read)| (route, read.map_err(|e| e.to_string())))
                    .collect()
            }
            Err(e) => {
                live.weights = routes
                    .iter()
                    .map(|r| (r.clone(), Err(e.to_string())))
                    .collect()
            }
        }
        live
    }
}

/// The route whose weights `status` shows: the rollout's, else the active group's.
fn route_of(recorded: &FleetState) -> Option<String> {
    recorded
        .rollout
        .as_ref()
        .map(|r| r.listener_arn.clone())
        .filter(|arn| !arn.is_empty())
        .or_else(|| {
            recorded
                .active
                .as_ref()
                .and_then(|a| a.listener_arn.clone())
        })
}

fn fleet_status(live: Option<&Live>, name: &str, recorded: &FleetState) -> FleetStatus {
    let mut live_error = live.is_none().then(|| "cannot connect to AWS".to_string());
    let mut group_status = |g: &crate::state::Group| {
        let mut healthy = None;
        let mut health_from = None;
        if let Some(live) = live {
            // A worker group is healthy when its instances are InService.
            let targets = g.target_group.as_ref().map(|tg| live.health.get(tg));
            match (live.groups.get(&g.name), targets) {
                (_, Some(Some(Err(e)))) => live_error = Some(e.clone()),
                (Some(status), targets) => {
                    let (count, from) = match targets {
                        Some(Some(Ok(targets))) => (status.healthy_in(targets), "target_group"),
                        _ => (status.in_service_healthy(), "auto_scaling"),
                    };
                    health_from = Some(from);
                    healthy = Some((count, status.capacity.desired));
                }
                (None, _) => {
                    live_error = Some(match live.unread.get(&g.name) {
                        Some(e) => e.clone(),
                        None => format!("group {} not found", g.name),
                    })
                }
            }
        }
        GroupStatus {
            group: g.name.clone(),
            release: g.release.clone(),
            image: g.image.clone(),
            target_group: g.target_group.clone(),
            healthy,
            health_from,
        }
    };
    let active = recorded.active.as_ref().map(&mut group_status);
    let kept: Vec<GroupStatus> = recorded.previous.iter().map(&mut group_status).collect();
    let mut weights = None;
    if let (Some(live), Some(listener)) = (live, route_of(recorded)) {
        match live.weights.get(&listener) {
            Some(Ok(w)) => {
                weights = Some(
                    w.iter()
                        .map(|w| (w.target_group.clone(), w.weight))
                        .collect(),
                )
            }
            Some(Err(e)) => live_error = Some(e.clone()),
            None => {}
        }
    }
    // A worker rollout's capacity, read from both groups.
    let mut instances = None;
    if let (Some(r), Some(live)) = (&recorded.rollout, live) {
        if let Some(workers) = r.workers {
            let found = &live.groups;
            instances = Some(WorkerShare {
                new: found.get(&r.group).map_or(0, |g| g.in_service()),
                of: workers.full.desired,
                old: r.previous.as_ref().map(|p| {
                    let left = found.get(&p.group).map_or(0, |g| g.instances.len());
                    (p.group.clone(), left)
                }),
            });
        }
    }
    let rollout = recorded.rollout.as_ref().map(|r| RolloutStatus {
        group: r.group.clone(),
        release: r.release.clone(),
        kind: r.kind,
        phase: r.phase.name(),
        step: match r.phase {
            crate::rollout::Phase::Shift { step } | crate::rollout::Phase::Observe { step } => {
                Some(step)
            }
            _ => None,
        },
        steps: r.steps.clone(),
        weight: r.weight,
        instances,
        awaiting: r.awaiting.clone(),
        held_by: r.held_by.clone(),
        promoted: r.promoted,
    });
    FleetStatus {
        fleet: name.to_string(),
        active,
        kept,
        weights,
        rollout,
        locked: recorded.lock.clone(),
        live_error,
    }
}

impl FleetStatus {
    fn render(&self) -> String {
        let mut out = format!("fleet.{}\n", self.fleet);
        let group_line = |g: &GroupStatus| {
            let health = g.healthy.map_or("health unknown".to_string(), |(h, w)| {
                match (g.health_from, &g.target_group) {
                    (Some("auto_scaling"), Some(_)) => format!("{h}/{w} healthy by Auto Scaling"),
                    _ => format!("{h}/{w} healthy"),
                }
            });
            format!(
                "{} (release {}, image {}, {health})",
                g.group, g.release, g.image
            )
        };
        match &self.active {
            Some(g) => out += &format!("  active:   {}\n", group_line(g)),
            None => out += "  active:   none\n",
        }
        for g in &self.kept {
            let coming_back = self.rollout.as_ref().is_some_and(|r| r.group == g.group);
            let how = match (coming_back, g.healthy) {
                (true, _) => "coming back (immune rollback)",
                (false, Some((_, 0))) | (false, None) => "scaled to zero for rollback",
                (false, Some(_)) => "kept for rollback, running",
            };
            out += &format!("  kept:     {} {how}\n", group_line(g));
        }
        if let Some(weights) = &self.weights {
            let shown: Vec<String> = weights
                .iter()
                .map(|(tg, w)| format!("{}={w}%", short_target_group(tg)))
                .collect();
            out += &format!("  weights:  {}\n", shown.join(" "));
        }
        if let Some(r) = &self.rollout {
            let step = r
                .step
                .map(|s| format!(" step {}/{} ({}%)", s + 1, r.steps.len(), r.steps[s]))
                .unwrap_or_default();
            let share = match &r.instances {
                Some(w) => {
                    let old = w
                        .old
                        .as_ref()
                        .map(|(group, left)| format!(", {left} left on {group}"))
                        .unwrap_or_default();
                    format!("{} of {} instances InService on it{old}", w.new, w.of)
                }
                None => format!("{}% of traffic on it", r.weight),
            };
            out += &format!(
                "  rollout:  {} of release {}, {}{step}, {share}\n",
                r.group,
                r.release,
                phase_words(&r.phase)
            );
            if let Some(by) = &r.held_by {
                out += &format!(
                    "  PAUSED:   by {by}: the step does not pass (the gates are still watched)\n            run `immune resume {}` or `immune promote {}`\n",
                    self.fleet, self.fleet
                );
            }
            if r.promoted {
                out += "  promoted: every remaining step passes as soon as its gates allow\n";
            }
            if let Some(a) = &r.awaiting {
                out += &format!(
                    "  WAITING:  gate {} needs a person since {}: {}\n            run `immune approve {}` or `immune reject {}`\n",
                    a.gate, a.since, a.evidence, self.fleet, self.fleet
                );
            }
        }
        let held = self.rollout.as_ref().is_some_and(|r| r.phase == "held");
        if let Some(lock) = &self.locked {
            let next = match held {
                true => super::apply::held_hint(&self.fleet),
                false => format!(
                    "run `immune unlock {} --reason TEXT` once the cause is understood",
                    self.fleet
                ),
            };
            out += &format!(
                "  LOCKED:   since {} after release {}: {}\n            {next}\n",
                lock.at, lock.release, lock.reason
            );
        }
        if let Some(e) = &self.live_error {
            out += &format!("  (live figures unavailable: {e})\n");
        }
        out
    }
}

/// A rollout phase as a person reads it.
fn phase_words(phase: &str) -> &str {
    match phase {
        "bake" => "baking its image",
        "scale_up" => "scaling the kept group up",
        "launch" => "launching",
        "wait_healthy" => "waiting for healthy instances",
        "shift" => "shifting",
        "observe" => "observing",
        "drain" => "draining the replaced group",
        "retire" => "retiring the replaced group",
        "done" => "done",
        "roll_back" => "rolling back",
        "rolled_back" => "rolled back",
        "held" => "HELD after a failure (irreversible: nothing is rolled back on its own)",
        other => other,
    }
}

/// `arn:...:targetgroup/web-v002/abc` -> `web-v002`.
fn short_target_group(arn: &str) -> &str {
    arn.split("targetgroup/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(arn)
}

/// `immune history FLEET [--json]`.
/// `immune gates [FLEET] [--json]`: the gate quality report, from history.
pub async fn gates(cli: &Cli, only: Option<&str>, json: bool) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    if let Some(name) = only {
        find(&config, name)?;
    }
    let state = apply::read_state(cli, &config).await?;
    let report: Vec<crate::quality::GateQuality> = state
        .fleets
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .flat_map(|(name, recorded)| crate::quality::of_fleet(name, recorded))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report serializes")
        );
    } else if report.is_empty() {
        println!("No gate has watched a release yet: the report fills in as releases go out.");
    } else {
        print!("{}", crate::quality::render(&report));
    }
    Ok(Success::Done)
}

pub async fn history(cli: &Cli, name: &str, json: bool) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    find(&config, name)?;
    let state = apply::read_state(cli, &config).await?;
    let recorded = recorded(&state, name)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&recorded.history).expect("history serializes")
        );
        return Ok(Success::Done);
    }
    if recorded.history.is_empty() {
        println!("fleet.{name}: no rollouts yet");
    }
    for entry in &recorded.history {
        println!(
            "{} release {} ({}): {} at {}",
            entry.started_at,
            entry.release,
            entry.group,
            entry.outcome.to_uppercase().replace('_', " "),
            entry.finished_at.as_deref().unwrap_or("(not finished)")
        );
        for d in &entry.decisions {
            println!("  {}  {}", d.at, d.what);
            if let Some(e) = &d.evidence {
                println!(
                    "      evidence: gate {} alarm {} {}{}: {}",
                    e.gate,
                    e.alarm,
                    e.state,
                    e.since
                        .as_deref()
                        .map(|s| format!(" since {s}"))
                        .unwrap_or_default(),
                    e.reason
                );
            }
        }
    }
    Ok(Success::Done)
}

/// `immune approve FLEET` / `immune reject FLEET`: answers the manual gate the fleet's
/// rollout waits on. The running apply holds the state lock, so the answer is left
/// beside the state for it.
pub async fn answer(cli: &Cli, name: &str, kind: AnswerKind) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    find(&config, name)?;
    let backend = apply::backend(cli, &config).await?;
    let state = backend.load().await.map_err(error)?;
    let rollout = recorded(&state, name)?
        .rollout
        .as_ref()
        .filter(|r| !r.phase.is_finished());
    let Some((rollout, waiting)) = rollout.and_then(|r| Some((r, r.awaiting.as_ref()?))) else {
        return Err(error(format!(
            "fleet `{name}` has no gate waiting for a person; `immune status {name}` shows where its rollout stands"
        )));
    };
    backend
        .post_answer(
            name,
            &Answer {
                kind,
                group: rollout.group.clone(),
                by: operator(),
                at: now(),
            },
        )
        .await
        .map_err(error)?;
    let gate = format!("gate {} of {}", waiting.gate, rollout.group);
    println!(
        "fleet.{name}: {}",
        delivery(backend.as_ref(), &gate, kind).await
    );
    Ok(Success::Done)
}

/// `immune pause`, `resume` and `promote [--full]`: left for the apply that runs the
/// fleet's release, which acts on it at its next poll of a step.
pub async fn control(cli: &Cli, name: &str, kind: AnswerKind) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    find(&config, name)?;
    let backend = apply::backend(cli, &config).await?;
    let state = backend.load().await.map_err(error)?;
    let Some(rollout) = recorded(&state, name)?
        .rollout
        .as_ref()
        .filter(|r| !r.phase.is_finished() && r.kind == crate::rollout::Kind::Release)
    else {
        return Err(error(format!(
            "fleet `{name}` has no release in progress; `immune status {name}` shows where it stands"
        )));
    };
    if let (crate::rollout::Phase::Held { .. }, AnswerKind::Promote | AnswerKind::PromoteFull) =
        (&rollout.phase, kind)
    {
        return promote_held(cli, name, kind == AnswerKind::PromoteFull).await;
    }
    if let crate::rollout::Phase::Held { .. } = rollout.phase {
        return Err(error(format!(
            "fleet `{name}` holds irreversible release {}, which failed: no apply runs it to pause or resume\n  {}",
            rollout.release,
            apply::held_hint(name)
        )));
    }
    if matches!(
        rollout.phase,
        crate::rollout::Phase::RollBack { .. } | crate::rollout::Phase::Retire
    ) {
        return Err(error(format!(
            "the release {} of fleet `{name}` is {}: there is no step left to hold or pass",
            rollout.release,
            match rollout.phase {
                crate::rollout::Phase::Retire => "retiring the group it replaced",
                _ => "being rolled back",
            }
        )));
    }
    if kind == AnswerKind::Resume && rollout.held_by.is_none() {
        return Err(error(format!(
            "the rollout of {} is not paused; `immune pause {name}` holds it",
            rollout.group
        )));
    }
    backend
        .post_answer(
            name,
            &Answer {
                kind,
                group: rollout.group.clone(),
                by: operator(),
                at: now(),
            },
        )
        .await
        .map_err(error)?;
    let what = format!("the rollout of {}", rollout.group);
    println!(
        "fleet.{name}: {}",
        delivery(backend.as_ref(), &what, kind).await
    );
    Ok(Success::Done)
}

/// `immune promote` of a held irreversible release: nothing runs it, so this process
/// takes the state lock and goes on with the release, as `immune apply` would (it needs
/// the same variables), from the step that failed as if it had passed.
async fn promote_held(cli: &Cli, name: &str, full: bool) -> Result<Success, CliError> {
    let config = cli.load()?;
    let fleet = find(&config, name)?;
    let backend = apply::backend(cli, &config).await?;
    let lock = lock::take(backend.as_ref(), "promote", Duration::ZERO)
        .await
        .map_err(error)?;
    let notifier = crate::notify::Notifier::new(&config).await;
    let result = async {
        let mut state = backend.load().await.map_err(error)?;
        super::init::check_location(cli, &config, &state).await?;
        // The release goes on as it was started: the variables must describe it.
        if let Some(held) = state.fleets.get(name).and_then(|f| f.rollout.as_ref()) {
            let (release, fingerprint) = (plan::release_name(fleet), plan::fingerprint(fleet));
            if (held.release.as_str(), held.fingerprint.as_str())
                != (release.as_str(), fingerprint.as_str())
            {
                return Err(error(format!(
                    "the configuration describes release {release}, but release {} is held{}: give the variables it was released with (as for the apply that started it)",
                    held.release,
                    if held.release == release { " with other settings" } else { "" }
                )));
            }
        }
        let clouds = observe::connect(cli, &config, &state).await?;
        let cloud = observe::cloud_of(&clouds, &config, &state, name);
        let signals = Signals::default();
        let view = apply::View::Text { color: cli.color() };
        let reporter = apply::Notifying::new(view, &notifier);
        let mut engine = Engine::new(cloud, backend.as_ref(), &mut state, &reporter, &signals);
        // The first Ctrl-C stops at the next safe point, as in apply; the second at once.
        let mut interrupts = Interrupts::new();
        let stop = async {
            interrupts.next().await;
            signals.interrupt();
            eprintln!("\nInterrupted: stopping at the next safe point. Press Ctrl-C again to stop at once.");
            interrupts.next().await;
        };
        let by = operator();
        let outcome = tokio::select! {
            outcome = engine.promote_held(fleet, &by, full) => outcome,
            () = stop => return Err(error(
                "stopped at once; state records the last completed step: run `immune apply` to go on with the release"
            )),
        };
        reporter.finish(name);
        let outcome = outcome.map_err(error)?;
        let (kind, text, group, locked) = match &outcome {
            Outcome::Released { group } => (
                crate::config::NoticeKind::Released,
                format!("release complete on {group} (promoted past what held it)"),
                Some(group.clone()),
                false,
            ),
            Outcome::RolledBack { reason, locked } => (
                crate::config::NoticeKind::RolledBack,
                format!("ROLLED BACK: {reason}"),
                None,
                *locked,
            ),
            // Told by the engine when it saved the hold.
            Outcome::Held { .. } | Outcome::Restored { .. } => {
                (crate::config::NoticeKind::Held, String::new(), None, true)
            }
        };
        if !text.is_empty() {
            notifier.send(apply::notice(engine.state, kind, name, text, group.as_deref(), locked));
        }
        match outcome {
            Outcome::Released { group } => {
                println!("fleet.{name}: release complete: all on {group}");
                Ok(Success::Done)
            }
            Outcome::Held { reason, group } => Err(CliError::Locked(format!(
                "fleet {name} holds its irreversible release on {group} again: {reason}\n  {}",
                apply::held_hint(name)
            ))),
            Outcome::RolledBack { reason, .. } => Err(CliError::RolledBack(format!(
                "fleet {name} rolled back: {reason}"
            ))),
            Outcome::Restored { group } => {
                println!("fleet.{name}: back on {group}");
                Ok(Success::Done)
            }
        }
    }
    .await;
    apply::release(lock).await;
    notifier.flush().await;
    result
}

/// Who will act on an answer: the apply holding the lock if it runs, else the next one.
/// Saying "at the next poll" when no apply runs would leave an operator waiting.
async fn delivery(backend: &dyn Backend, gate: &str, kind: AnswerKind) -> String {
    let (verb, goes) = match kind {
        AnswerKind::Approve => ("approved", "the release goes on"),
        AnswerKind::Pause => ("paused", "it holds at its current step"),
        AnswerKind::Resume => ("resumed", "it goes on"),
        AnswerKind::Promote => ("promoted", "its current step passes once its gates allow"),
        AnswerKind::PromoteFull => (
            "promoted in full",
            "every remaining step passes as soon as its gates allow",
        ),
        _ => ("rejected", "the release will be rolled back"),
    };
    let later = "the next `immune apply` picks the answer up (answers are kept)";
    match backend.lock_holder().await {
        Ok(Some(held)) => match held.holder() {
            Holder::Running => format!("{gate} {verb}: {goes} at the rollout's next poll."),
            Holder::Gone => format!(
                "{gate} {verb}, but no apply is running to act on it (the state lock was left by {}, whose process is gone); {later}.",
                held.describe()
            ),
            Holder::Unknown(place) => format!(
                "{gate} {verb}. The state lock is held by {}, {place}, so immune cannot tell from here whether that apply still runs: if it does, {goes} at its next poll; if not, {later}.",
                held.describe()
            ),
        },
        Ok(None) => format!("{gate} {verb}, but no apply is running to act on it; {later}."),
        Err(e) => format!(
            "{gate} {verb}; whether an apply is running to act on it is unknown ({e}); if none is, {later}."
        ),
    }
}

/// `immune unlock FLEET --reason TEXT`.
pub async fn unlock(
    cli: &Cli,
    name: &str,
    reason: &str,
    lock_timeout: Duration,
) -> Result<Success, CliError> {
    if reason.trim().is_empty() {
        return Err(error(
            "--reason must say why the fleet may be released again",
        ));
    }
    let config = cli.load_known()?;
    let fleet = find(&config, name)?;
    let backend = apply::backend(cli, &config).await?;
    let lock = lock::take(backend.as_ref(), "unlock", lock_timeout)
        .await
        .map_err(error)?;
    let result = tokio::select! {
        result = unlock_locked(backend.as_ref(), fleet, reason) => result,
        _ = interrupted() => Err(error("interrupted: `immune status` shows whether the fleet is still locked")),
    };
    apply::release(lock).await;
    result
}

async fn unlock_locked(
    backend: &dyn Backend,
    fleet: &Fleet,
    reason: &str,
) -> Result<Success, CliError> {
    let name = &fleet.name;
    let mut state = backend.load().await.map_err(error)?;
    let recorded = state
        .fleets
        .get_mut(name)
        .filter(|f| f.lock.is_some())
        .ok_or_else(|| error(format!("fleet `{name}` is not locked")))?;
    // A held release needs a decision, which lifting the lock would not be.
    if let Some(rollout) = recorded
        .rollout
        .as_ref()
        .filter(|r| matches!(r.phase, crate::rollout::Phase::Held { .. }))
    {
        return Err(error(format!(
            "fleet `{name}` holds irreversible release {} ({}), which failed: unlocking would not say what becomes of it\n  {}",
            rollout.release,
            rollout.group,
            super::apply::held_hint(name)
        )));
    }
    let (lock, what) = recorded
        .unlock(&operator(), reason, &now())
        .expect("checked above");
    backend.save(&mut state).await.map_err(error)?;
    println!("fleet.{name}: {what}");
    if plan::release_name(fleet) == lock.release {
        println!(
            "note: the configuration still asks for release {}, so the next apply releases it again; change it first if that is not what you want",
            lock.release
        );
    }
    Ok(Success::Done)
}

/// `immune rollback FLEET`: back to the previous group now. With an apply running the
/// rollout, it is asked to roll back at its next poll; otherwise this process does it,
/// also when the apply that held the lock is gone from this machine (its lock is taken
/// over).
pub async fn rollback(
    cli: &Cli,
    name: &str,
    asked: &RollbackAsk,
    lock_timeout: Duration,
) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    let fleet = find(&config, name)?;
    let backend = apply::backend(cli, &config).await?;
    if asked.force && asked.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(error(
            "--force needs --reason TEXT: why the irreversible release is rolled back, kept in the fleet's history",
        ));
    }
    let by = match &asked.reason {
        Some(reason) => format!("{} (reason: {})", operator(), reason.trim()),
        None => operator(),
    };
    let lock = match lock::take(backend.as_ref(), "rollback", lock_timeout).await {
        Ok(lock) => lock,
        Err(StateError::Locked(held)) => {
            return ask_running_apply(backend.as_ref(), name, &held, asked, &by).await
        }
        Err(e) => return Err(error(e)),
    };
    let notifier = crate::notify::Notifier::new(&config).await;
    let result =
        roll_back_locked(cli, &config, backend.as_ref(), fleet, &notifier, asked, &by).await;
    apply::release(lock).await;
    notifier.flush().await;
    result
}

/// What `immune rollback` was asked with.
pub struct RollbackAsk {
    /// `--force`: roll an irreversible release back.
    pub force: bool,
    pub reason: Option<String>,
}

/// An irreversible release is rolled back only by `--force`: what it changed (a schema,
/// say) stays changed, and the previous release may not work with it.
fn irreversible_refusal(
    state: &crate::state::State,
    name: &str,
    force: bool,
) -> Result<(), CliError> {
    let Some(recorded) = state.fleets.get(name) else {
        return Ok(());
    };
    let release = match recorded.rollout.as_ref().filter(|r| !r.phase.is_finished()) {
        Some(r) if r.kind == crate::rollout::Kind::Release => {
            let held = matches!(r.phase, crate::rollout::Phase::Held { .. });
            (r.irreversibly_reached() || held).then(|| (r.release.clone(), r.group.clone()))
        }
        Some(_) => None,
        None => recorded
            .active
            .as_ref()
            .filter(|a| a.irreversible)
            .map(|a| (a.release.clone(), a.name.clone())),
    };
    match (release, force) {
        (Some((release, group)), false) => Err(error(format!(
            "release {release} of fleet `{name}` ({group}) is irreversible: what it changed stays changed, and the release it goes back to may not work with it\n  if that is understood, run `immune rollback {name} --force --reason TEXT`"
        ))),
        _ => Ok(()),
    }
}

/// Another process holds the lock: if it runs the fleet's rollout, leave it a request
/// to roll back. A holder on another machine may be gone without immune knowing, so the
/// messages then say how to go on without it.
async fn ask_running_apply(
    backend: &dyn Backend,
    name: &str,
    held: &LockInfo,
    asked: &RollbackAsk,
    by: &str,
) -> Result<Success, CliError> {
    let holder = held.describe();
    let unverified = match held.holder() {
        Holder::Unknown(place) => Some(format!(
            "{holder} is {place}, so immune cannot tell from here whether it still runs; if it is gone, run `immune state force-unlock {}` then `immune rollback {name}`",
            held.id
        )),
        Holder::Running | Holder::Gone => None,
    };
    let hint = unverified
        .as_ref()
        .map(|u| format!("\n  {u}"))
        .unwrap_or_default();
    let state = backend.load().await.map_err(error)?;
    irreversible_refusal(&state, name, asked.force)?;
    let rollout = state
        .fleets
        .get(name)
        .and_then(|f| f.rollout.as_ref())
        .filter(|r| !r.phase.is_finished())
        .ok_or_else(|| {
            error(format!(
                "state is locked by {holder} and fleet `{name}` has no rollout in progress to ask it to roll back; try again when it finishes{hint}"
            ))
        })?;
    if rollout.phase == crate::rollout::Phase::Retire {
        // Every step passed: the running apply finishes the release whatever
        // it is asked, so do not pretend otherwise.
        return Err(error(format!(
            "release {} of fleet `{name}` passed every step and {holder} is retiring the previous group; wait for it to finish, then run `immune rollback {name}` (needs keep_previous >= 1){hint}",
            rollout.release
        )));
    }
    backend
        .post_answer(
            name,
            &Answer {
                kind: AnswerKind::Rollback,
                group: rollout.group.clone(),
                by: by.to_string(),
                at: now(),
            },
        )
        .await
        .map_err(error)?;
    match unverified {
        None => println!(
            "fleet.{name}: asked the running apply ({holder}) to roll {} back; it does so at its next poll and exits 3.",
            rollout.group
        ),
        Some(unverified) => println!(
            "fleet.{name}: left a request to roll {} back for the apply holding the state lock: if it runs, it rolls back at its next poll and exits 3.\n  {unverified}",
            rollout.group
        ),
    }
    Ok(Success::Done)
}

async fn roll_back_locked(
    cli: &Cli,
    config: &Config,
    backend: &dyn Backend,
    fleet: &Fleet,
    notifier: &crate::notify::Notifier,
    asked: &RollbackAsk,
    by: &str,
) -> Result<Success, CliError> {
    let name = &fleet.name;
    let mut state = backend.load().await.map_err(error)?;
    irreversible_refusal(&state, name, asked.force)?;
    super::init::check_location(cli, config, &state).await?;
    let clouds = observe::connect(cli, config, &state).await?;
    let cloud = observe::cloud_of(&clouds, config, &state, name);
    let signals = Signals::default();
    let view = apply::View::Text { color: cli.color() };
    let reporter = apply::Notifying::new(view, notifier);
    let mut engine = Engine::new(cloud, backend, &mut state, &reporter, &signals);
    // A rollback is the safe direction, so the first Ctrl-C (or SIGTERM, SIGHUP) lets it
    // go on; the second stops at once with the last step recorded.
    let mut interrupts = Interrupts::new();
    let interrupts = async {
        let name = interrupts.next().await;
        eprintln!("\nInterrupted ({name}): the rollback goes on, it is the safe direction. Press Ctrl-C again to stop at once.");
        interrupts.next().await;
    };
    let outcome = tokio::select! {
        outcome = engine.roll_back(fleet, by) => outcome.map_err(error)?,
        _ = interrupts => return Err(error(format!(
            "stopped at once; state records the last completed step: run `immune rollback {name}` to finish"
        ))),
    };
    let (text, group) = match &outcome {
        Outcome::Restored { group } => (
            format!("rolled back by {by}: back on {group}; the fleet is locked"),
            Some(group.as_str()),
        ),
        Outcome::RolledBack { reason, .. } => (
            format!("rolled back by {by} ({reason}); the fleet is locked"),
            None,
        ),
        Outcome::Released { group } => {
            (format!("release complete on {group}"), Some(group.as_str()))
        }
        Outcome::Held { reason, group } => {
            (format!("held on {group}: {reason}"), Some(group.as_str()))
        }
    };
    let kind = match outcome {
        Outcome::Released { .. } => crate::config::NoticeKind::Released,
        _ => crate::config::NoticeKind::RolledBack,
    };
    let locked = kind == crate::config::NoticeKind::RolledBack;
    notifier.send(apply::notice(engine.state, kind, name, text, group, locked));
    match outcome {
        Outcome::Restored { group } => println!(
            "fleet.{name}: rolled back: all {} on {group}; the fleet is locked until `immune unlock {name} --reason TEXT`",
            if fleet.is_worker() { "capacity" } else { "traffic" }
        ),
        Outcome::RolledBack { reason, .. } => println!(
            "fleet.{name}: rolled back ({reason}); the fleet is locked until `immune unlock {name} --reason TEXT`"
        ),
        Outcome::Released { group } => println!("fleet.{name}: release {group} finished"),
        Outcome::Held { reason, group } => println!(
            "fleet.{name}: held on {group}: {reason}\n  {}",
            apply::held_hint(name)
        ),
    }
    Ok(Success::Done)
}

/// `immune state show FLEET`: everything the state records of one fleet, also of a fleet
/// that left the configuration.
pub async fn state_show(cli: &Cli, name: &str, json: bool) -> Result<Success, CliError> {
    let config = cli.load_known()?;
    let state = apply::read_state(cli, &config).await?;
    let recorded = recorded(&state, name)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(recorded).expect("state serializes")
        );
        return Ok(Success::Done);
    }
    println!(
        "fleet.{name} (state serial {}, lineage {})",
        state.serial, state.lineage
    );
    let describe = |g: &crate::state::Group| {
        let capacity = g.capacity.map_or("unrecorded".to_string(), |c| {
            format!("min {}, max {}, desired {}", c.min, c.max, c.desired)
        });
        format!(
            "{} (release {}), image {}, launch template {} version {}, {}, capacity {capacity}, since {}",
            g.name,
            g.release,
            g.image,
            g.launch_template.id,
            g.launch_template.version,
            g.target_group.as_deref().map_or("no target group (workers)".into(), |tg| {
                format!("target group {}", crate::plan::target_group_name(tg))
            }),
            g.created_at
        )
    };
    match &recorded.active {
        Some(g) => {
            println!("  active:        {}", describe(g));
            if let Some(route) = &g.listener_arn {
                println!("  route:         {route}");
            }
        }
        None => println!("  active:        none"),
    }
    for g in &recorded.previous {
        println!("  kept:          {}", describe(g));
    }
    match &recorded.rollout {
        Some(r) => println!(
            "  rollout:       {} (release {}) during {}",
            r.group,
            r.release,
            r.phase.name()
        ),
        None => println!("  rollout:       none in progress"),
    }
    match &recorded.lock {
        Some(l) => println!(
            "  lock:          since {} after release {}: {}",
            l.at, l.release, l.reason
        ),
        None => println!("  lock:          none"),
    }
    if !recorded.original_weights.is_empty() {
        println!(
            "  before immune: {}",
            crate::plan::show_weights(&recorded.original_weights)
        );
    }
    println!(
        "  history:       {} rollout{} (`immune history {name}`)",
        recorded.history.len(),
        if recorded.history.len() == 1 { "" } else { "s" }
    );
    Ok(Success::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalBackend;

    #[tokio::test]
    async fn an_answer_says_who_acts_on_it_by_whether_the_lock_holder_runs() {
        let dir = std::env::temp_dir().join(format!("immune-answer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let backend = LocalBackend::new(dir.join("state.json"));
        let said = || delivery(&backend, "gate errors of web-v002", AnswerKind::Approve);

        assert_eq!(
            said().await,
            "gate errors of web-v002 approved, but no apply is running to act on it; the next `immune apply` picks the answer up (answers are kept)."
        );

        let held = backend.lock("apply").unwrap();
        assert_eq!(
            said().await,
            "gate errors of web-v002 approved: the release goes on at the rollout's next poll."
        );
        drop(held);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = LockInfo {
            pid: child.id(),
            ..LockInfo::new("apply")
        };
        child.wait().unwrap();
        std::fs::write(dir.join("state.lock"), gone.to_json()).unwrap();
        let told = said().await;
        assert!(
            told.contains("but no apply is running to act on it (the state lock was left by"),
            "{told}"
        );
        assert!(told.contains("whose process is gone"), "{told}");

        let elsewhere = LockInfo {
            host: "another-host".into(),
            ..gone
        };
        std::fs::write(dir.join("state.lock"), elsewhere.to_json()).unwrap();
        let told = said().await;
        assert!(told.contains(", on host another-host, so immune cannot tell from here whether that apply still runs: if it does, the release goes on at its next poll; if not, the next `immune apply` picks the answer up"), "{told}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
