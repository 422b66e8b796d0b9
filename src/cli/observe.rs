//! Reading the live cloud for a plan, and turning what is wrong out there (a listener or
//! image that does not exist, an endpoint that does not answer) into a clear error before
//! anything is created.

use super::{Cli, CliError};
use crate::cloud::aws::Aws;
use crate::cloud::faulty::Faulty;
use crate::cloud::survey::listener_not_found;
use crate::cloud::{
    retry_reads, unsupported_protocol, Claim, Cloud, CloudError, Clouds, Conflict, RouteRef,
    Weight, TARGET_GROUPS_PER_FORWARD,
};
use crate::config::{Config, Fleet, GateCheck, ListenerRef};
use crate::plan::{self, Live, Observed, Plan};
use crate::state::{Group, State};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The cloud as this state's configuration sees it, one per region its fleets use:
/// what carries `state.lineage` is its own, everything else is left alone.
/// `IMMUNE_INJECT_FAULTS=RATE[:SEED]` fails that share of calls on purpose, for
/// fault-injection runs (see `cloud::faulty`).
pub async fn connect(cli: &Cli, config: &Config, state: &State) -> Result<Clouds, CliError> {
    let faults = Faulty::from_env();
    if let Some((rate, _)) = faults {
        eprintln!("warning: IMMUNE_INJECT_FAULTS is set: {rate} of AWS calls fail on purpose");
    }
    let open = |region: Option<String>| async move {
        let aws = Aws::connect(region, &state.lineage)
            .await?
            .with_legacy_ownership(state.legacy_ownership);
        Ok::<Arc<dyn Cloud>, CloudError>(match faults {
            Some((rate, seed)) => Arc::new(Faulty::new(Arc::new(aws), rate, seed)),
            None => Arc::new(aws),
        })
    };
    let failed = |e: CloudError| CliError::Message(format!("error: {e}"));
    // `--region`, else the environment's, else (when every fleet names one) the first
    // fleet's: the region of fleets that name none.
    let first = config.fleets.iter().find_map(|f| f.region.clone());
    let default = match open(cli.region.clone()).await {
        Ok(cloud) => cloud,
        Err(CloudError::Invalid(_)) if cli.region.is_none() && first.is_some() => {
            open(first).await.map_err(failed)?
        }
        Err(e) => return Err(failed(e)),
    };
    let default_region = default.region();
    let wanted: BTreeSet<String> = config
        .fleets
        .iter()
        .filter_map(|f| f.region.clone())
        .chain(state.fleets.values().filter_map(|f| f.region.clone()))
        .filter(|r| *r != default_region)
        .collect();
    let mut others = BTreeMap::new();
    for region in wanted {
        others.insert(region.clone(), open(Some(region)).await.map_err(failed)?);
    }
    Ok(Clouds::new(default, others))
}

/// The region a fleet's resources are in: the one recorded at its first release, else
/// the one the configuration names (`None`: the default region).
pub fn fleet_region<'a>(config: &'a Config, state: &'a State, name: &str) -> Option<&'a str> {
    state
        .fleets
        .get(name)
        .and_then(|f| f.region.as_deref())
        .or_else(|| {
            config
                .fleets
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.region.as_deref())
        })
}

/// The cloud of the region the named fleet's resources are in.
pub fn cloud_of<'a>(
    clouds: &'a Clouds,
    config: &Config,
    state: &State,
    name: &str,
) -> &'a dyn Cloud {
    clouds.get(fleet_region(config, state, name))
}

/// `unproven`: why a fleet's release may not go here yet (`promote_after`), by fleet.
///
/// Each region's fleets are read together, side by side with the other regions': each
/// kind of thing (load balancers, rules, images, subnets, alarms, groups...) in a few
/// calls whatever the number of fleets.
pub async fn plan(
    clouds: &Clouds,
    config: &Config,
    state: &State,
    unproven: &BTreeMap<String, String>,
) -> Result<Plan, CliError> {
    // Every call here only reads: a transient fault is asked again within the budget.
    let budget = crate::engine::retry_budget();
    let mut problems = Vec::new();
    let mut regions: BTreeMap<String, (&dyn Cloud, Vec<&Fleet>)> = BTreeMap::new();
    for fleet in &config.fleets {
        let at = format!("fleet \"{}\" ({})", fleet.name, fleet.location);
        let cloud = clouds.for_fleet(fleet);
        // Its groups, images and template are where its first release put them.
        let recorded = state.fleets.get(&fleet.name);
        if let Some(lives) = recorded.and_then(|f| f.region.as_deref()) {
            let has_resources = recorded.is_some_and(|f| {
                f.active.is_some() || !f.previous.is_empty() || f.rollout.is_some()
            });
            if has_resources && lives != cloud.region() {
                problems.push(format!(
                    "error: {at} runs in {lives}, but the configuration puts it in {}: a fleet cannot move between regions\n  set region = \"{lives}\" again (or pass --region {lives}); to move the fleet, add one of another name in {} and remove this one once it serves",
                    cloud.region(),
                    cloud.region()
                ));
                continue;
            }
        }
        regions
            .entry(cloud.region())
            .or_insert_with(|| (cloud, Vec::new()))
            .1
            .push(fleet);
    }
    let surveys = futures_util::future::join_all(
        regions
            .values()
            .map(|(cloud, fleets)| survey(*cloud, fleets, state, unproven, budget)),
    )
    .await;
    let mut observed = BTreeMap::new();
    let mut weights = BTreeMap::new();
    let mut pending = Vec::new();
    for ((cloud, _), survey) in regions.values().zip(surveys) {
        observed.extend(survey.observed);
        problems.extend(survey.problems);
        weights.extend(survey.weights);
        pending.push((*cloud, survey.claims));
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(CliError::Message(problems.join("\n\n")));
    }
    // What runs now, region by region.
    let mut by_region: BTreeMap<Option<&str>, State> = BTreeMap::new();
    for (name, recorded) in &state.fleets {
        let part = by_region
            .entry(fleet_region(config, state, name))
            .or_insert_with(|| State {
                fleets: BTreeMap::new(),
                ..state.clone()
            });
        part.fleets.insert(name.clone(), recorded.clone());
    }
    let lives = futures_util::future::join_all(by_region.iter().map(|(region, part)| {
        let cloud = clouds.get(*region);
        let weights = &weights;
        async move {
            let live = retry_reads(budget, || refresh_knowing(cloud, part, weights))
                .await
                .map_err(|e| {
                    CliError::Message(format!(
                        "error: reading what runs now in {}: {e}\n  check the network and your credentials, then plan again",
                        cloud.region()
                    ))
                })?;
            Ok::<_, CliError>((cloud.region(), live))
        }
    }))
    .await;
    for lives in lives {
        let (region, live) = lives?;
        for (name, live) in live {
            let seen = observed.entry(name).or_default();
            seen.live = Some(live);
            seen.region = Some(region.clone());
        }
    }
    // Only a fleet that releases needs an image to reuse and its next names checked:
    // those are read for the fleets this plan releases, and the plan made again with
    // them (they can only turn a release into one that reuses an image, or block it).
    let first = plan::plan(config, state, &observed);
    let releasing: BTreeSet<&str> = first
        .changes
        .iter()
        .filter(|c| matches!(c.action, plan::Action::Release(_)))
        .map(|c| c.fleet.as_str())
        .collect();
    if releasing.is_empty() {
        return Ok(first);
    }
    let claimed = futures_util::future::join_all(pending.iter().map(|(cloud, claims)| {
        let asked: Vec<&Pending> = claims
            .iter()
            .filter(|p| releasing.contains(p.fleet.name.as_str()))
            .collect();
        async move {
            match asked.is_empty() {
                true => Ok(Vec::new()),
                false => read_claims(*cloud, &asked, budget).await,
            }
        }
    }))
    .await;
    for claimed in claimed {
        match claimed {
            Ok(found) => {
                for c in found {
                    let seen = observed.entry(c.fleet).or_default();
                    seen.baked_image = c.baked_image;
                    seen.conflicts = c.conflicts;
                }
            }
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(CliError::Message(problems.join("\n\n")));
    }
    Ok(plan::plan(config, state, &observed))
}

/// What a plan read of one region's fleets.
#[derive(Default)]
struct Survey<'a> {
    observed: BTreeMap<String, Observed>,
    problems: Vec<String>,
    /// The weights of every route read, by ARN: the refresh need not read them again.
    weights: BTreeMap<String, Vec<Weight>>,
    /// What each fleet that passed its checks would claim if it released.
    claims: Vec<Pending<'a>>,
}

/// Reads the surroundings of one region's fleets in batches, then checks each fleet
/// against them: a fleet whose surroundings are wrong is a problem, named with the fix.
async fn survey<'a>(
    cloud: &dyn Cloud,
    fleets: &[&'a Fleet],
    state: &State,
    unproven: &BTreeMap<String, String>,
    budget: std::time::Duration,
) -> Survey<'a> {
    let sorted = |items: Vec<String>| -> Vec<String> {
        let set: BTreeSet<String> = items.into_iter().collect();
        set.into_iter().collect()
    };
    let wanted_routes: Vec<RouteRef> = fleets
        .iter()
        .filter_map(|f| f.traffic.as_ref())
        .map(|t| (t.listener.clone(), t.rule_priority))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sources = sorted(fleets.iter().map(|f| f.image.source_ami.clone()).collect());
    let subnets = sorted(
        fleets
            .iter()
            .flat_map(|f| f.instances.subnets.iter().cloned())
            .collect(),
    );
    let types_of = |fleet: &Fleet| {
        let mut types = vec![
            fleet.image.instance_type.clone(),
            fleet.instances.instance_type.clone(),
        ];
        if let Some(spot) = &fleet.instances.spot {
            types.extend(spot.instance_types.iter().cloned());
        }
        sorted(types)
    };
    let types = sorted(fleets.iter().flat_map(|f| types_of(f)).collect());
    let keys = sorted(
        fleets
            .iter()
            .filter_map(|f| f.instances.key_name.clone())
            .collect(),
    );
    let alarms_of = |fleet: &Fleet| -> Vec<(String, String)> {
        fleet
            .rollout
            .gates
            .iter()
            .filter_map(|g| match &g.check {
                GateCheck::Alarm(name) => Some((g.name.clone(), name.clone())),
                GateCheck::Metric(_) => None,
            })
            .collect()
    };
    let alarms = sorted(
        fleets
            .iter()
            .flat_map(|f| alarms_of(f).into_iter().map(|(_, a)| a))
            .collect(),
    );
    let (routes, sources, subnets, types, keys, alarms) = tokio::join!(
        async {
            match wanted_routes.is_empty() {
                true => Ok(BTreeMap::new()),
                false => retry_reads(budget, || cloud.routes(&wanted_routes)).await,
            }
        },
        retry_reads(budget, || cloud.source_images(&sources)),
        retry_reads(budget, || cloud.subnet_vpcs(&subnets)),
        retry_reads(budget, || cloud.unknown_instance_types(&types)),
        async {
            match keys.is_empty() {
                true => Ok(BTreeSet::new()),
                false => retry_reads(budget, || cloud.key_pairs(&keys)).await,
            }
        },
        async {
            match alarms.is_empty() {
                true => Ok(BTreeMap::new()),
                false => retry_reads(budget, || cloud.alarms(&alarms)).await,
            }
        },
    );
    let mut survey = Survey::default();
    if let Ok(routes) = &routes {
        survey.weights = routes
            .values()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| (r.arn.clone(), r.weights.clone()))
            .collect();
    }
    let recorded_target_groups: BTreeSet<&String> = state
        .fleets
        .values()
        .flat_map(|f| f.active.iter().chain(&f.previous))
        .filter_map(|g| g.target_group.as_ref())
        .collect();
    for fleet in fleets {
        let at = format!("fleet \"{}\" ({})", fleet.name, fleet.location);
        let problems = &mut survey.problems;
        let mut check = |result: Result<(), CloudError>, fix: &str| match result {
            Ok(()) => true,
            Err(e) => {
                problems.push(problem(&at, e, fix));
                false
            }
        };
        // A worker fleet has no route.
        let route = match &fleet.traffic {
            Some(traffic) => {
                let route = match &routes {
                    Ok(routes) => routes
                        .get(&(traffic.listener.clone(), traffic.rule_priority))
                        .cloned()
                        .unwrap_or_else(|| Err(listener_not_found(&traffic.listener))),
                    Err(e) => Err(e.clone()),
                };
                // A rule that is missing, or the load balancer or listener it is on.
                let rule_missing = matches!(&route, Err(CloudError::NotFound(what)) if what.starts_with("rule with priority"));
                let fix = match (&traffic.listener, traffic.rule_priority) {
                    (_, Some(_)) if rule_missing => {
                        "check traffic.rule_priority: the listener needs a rule with that priority whose action forwards to a target group"
                    }
                    (ListenerRef::Arn(_), _) => "check traffic.listener_arn",
                    (ListenerRef::LoadBalancer { .. }, _) => {
                        "check traffic.load_balancer and traffic.listener_port, or create the listener first; its default action must forward to a target group"
                    }
                };
                // What ELB would refuse at the first release's join, refused now.
                let route = route.and_then(|route| {
                    if let Some(why) = route.protocol.as_deref().and_then(unsupported_protocol) {
                        return Err(CloudError::Invalid(why));
                    }
                    if route.weights.len() >= TARGET_GROUPS_PER_FORWARD {
                        return Err(CloudError::Invalid(format!(
                            "the route forwards to {} target groups, and a release adds one: ELB allows {TARGET_GROUPS_PER_FORWARD} in one forward (Application Load Balancer quotas, \"Target groups per action\"); take the target groups that carry no traffic out of the forward",
                            route.weights.len()
                        )));
                    }
                    Ok(route)
                });
                match route {
                    Ok(route) => Some((route, traffic)),
                    Err(e) => {
                        check(Err(e), fix);
                        continue;
                    }
                }
            }
            None => None,
        };
        let source = match &sources {
            Ok(found) if found.contains(&fleet.image.source_ami) => Ok(()),
            Ok(_) => Err(CloudError::NotFound(format!(
                "source image {}",
                fleet.image.source_ami
            ))),
            Err(e) => Err(e.clone()),
        };
        if !check(
            source,
            "check image.source_ami: the image must exist in this region and account",
        ) {
            continue;
        }
        let in_vpcs = subnets.as_ref().map_err(Clone::clone).and_then(|found| {
            let wanted = &fleet.instances.subnets;
            let missing: Vec<&str> = wanted
                .iter()
                .filter(|s| !found.contains_key(*s))
                .map(String::as_str)
                .collect();
            let vpcs: BTreeSet<&String> = wanted.iter().filter_map(|s| found.get(s)).collect();
            match (missing.is_empty(), vpcs.len()) {
                (false, _) => Err(CloudError::NotFound(format!(
                    "subnet(s) {}",
                    missing.join(", ")
                ))),
                (true, 1) => Ok(()),
                (true, _) => Err(CloudError::Invalid(format!(
                    "subnets {} are in different VPCs; a fleet's subnets must share one VPC",
                    wanted.join(", ")
                ))),
            }
        });
        if !check(in_vpcs, "check instances.subnets") {
            continue;
        }
        // Instance types and the key pair fail only when instances launch, after the
        // bake: found here, they never get that far.
        let offered = types
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|unknown_anywhere| {
                let unknown: Vec<String> = types_of(fleet)
                    .into_iter()
                    .filter(|t| unknown_anywhere.contains(t))
                    .collect();
                match unknown.is_empty() {
                    true => Ok(()),
                    false => Err(CloudError::NotFound(format!(
                        "instance type{} {} in {}",
                        if unknown.len() == 1 { "" } else { "s" },
                        unknown.join(", "),
                        cloud.region()
                    ))),
                }
            });
        if !check(
            offered,
            "check the instance types (image.instance_type, instances.instance_type, spot.instance_types): each must be offered in the fleet's region",
        ) {
            continue;
        }
        if let Some(key) = &fleet.instances.key_name {
            let found =
                keys.as_ref()
                    .map_err(Clone::clone)
                    .and_then(|found| match found.contains(key) {
                        true => Ok(()),
                        false => Err(CloudError::NotFound(format!(
                            "key pair {key} in {}",
                            cloud.region()
                        ))),
                    });
            if !check(
                found,
                "check instances.key_name, or import the key pair into the fleet's region first",
            ) {
                continue;
            }
        }
        // An alarm gate that names no alarm would fail the first step of every release.
        let mut gate_alarms = BTreeMap::new();
        let wanted = alarms_of(fleet);
        if !wanted.is_empty() {
            match &alarms {
                Ok(found) => {
                    for (gate, alarm) in &wanted {
                        match found.get(alarm) {
                            Some(reading) => {
                                gate_alarms.insert(alarm.clone(), reading.clone());
                            }
                            None => {
                                check(
                                    Err(CloudError::NotFound(format!(
                                        "alarm {alarm} of gate \"{gate}\""
                                    ))),
                                    "create the CloudWatch alarm first, or fix the gate's `alarm` name",
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    check(Err(e.clone()), "");
                }
            }
        }
        // The names a next release would take, asked only if the fleet releases.
        let seq = state.fleets.get(&fleet.name).map_or(0, |f| f.seq) + 1;
        let group = plan::group_name(&fleet.resource_name(), seq);
        let mut claim = Claim {
            group: group.clone(),
            workers: fleet.is_worker(),
            launch_template: plan::template_name(fleet),
            alarms: fleet
                .rollout
                .gates
                .iter()
                .filter(|g| matches!(g.check, GateCheck::Metric(_)))
                .map(|g| g.alarm_name(&group))
                .collect(),
            image: Some(plan::image_name(fleet, seq)),
            route: None,
        };
        let mut stand_in = None;
        if let Some((route, traffic)) = route {
            // One preflight with apply: a route must forward somewhere, or answer with the
            // fixed response or redirect of a fresh load balancer, to have somewhere to send
            // traffic back to.
            if route.weights.iter().all(|w| w.weight == 0) {
                match route.stand_in {
                    Some(found) => stand_in = Some(found),
                    None => {
                        check(
                            Err(CloudError::Invalid(format!(
                                "{} neither forwards to a target group nor answers with a fixed response or a redirect, so a rollback would have nowhere to send traffic",
                                traffic.route()
                            ))),
                            "point the route's action at a target group, a fixed response or a redirect first",
                        );
                        continue;
                    }
                }
            }
            // The route's target groups now: one of another configuration's means two
            // configurations would shift the same traffic.
            // Target groups this state records are its own: only the others are asked
            // who holds them.
            claim.route = Some((
                traffic.route(),
                route
                    .weights
                    .into_iter()
                    .map(|w| w.target_group)
                    .filter(|tg| !recorded_target_groups.contains(tg))
                    .collect(),
            ));
        }
        let seen = Observed {
            baked_image: None,
            live: None,
            conflicts: Vec::new(),
            gate_alarms,
            stand_in,
            region: Some(cloud.region()),
            unproven: unproven.get(&fleet.name).cloned(),
        };
        survey.observed.insert(fleet.name.clone(), seen);
        survey.claims.push(Pending {
            fleet,
            bake: plan::bake_id(fleet),
            claim,
        });
    }
    survey
}

/// What a release of a fleet would take, read only for the fleets a plan releases: a
/// settled fleet needs neither an image to reuse nor its next names checked, and at a
/// hundred fleets these reads return a hundred images and launch templates.
struct Pending<'a> {
    fleet: &'a Fleet,
    bake: String,
    /// With the image name it takes if it bakes.
    claim: Claim,
}

/// What [`read_claims`] found for one fleet.
struct Claimed {
    fleet: String,
    baked_image: Option<String>,
    conflicts: Vec<Conflict>,
}

/// For the releasing fleets of one region: the image each can reuse (baked earlier from
/// the same spec), then the names its release would take that anything but this
/// configuration holds. What could not be read is a problem of each fleet.
async fn read_claims(
    cloud: &dyn Cloud,
    pending: &[&Pending<'_>],
    budget: std::time::Duration,
) -> Result<Vec<Claimed>, Vec<String>> {
    let at = |fleet: &Fleet| format!("fleet \"{}\" ({})", fleet.name, fleet.location);
    let bakes: Vec<(String, String)> = pending
        .iter()
        .map(|p| (p.fleet.name.clone(), p.bake.clone()))
        .collect();
    let baked = match retry_reads(budget, || cloud.baked_images(&bakes)).await {
        Ok(baked) => baked,
        Err(e) => {
            return Err(pending
                .iter()
                .map(|p| problem(&at(p.fleet), e.clone(), ""))
                .collect())
        }
    };
    // A release that reuses an image bakes none, so it takes no image name.
    let asked: Vec<Claim> = pending
        .iter()
        .map(|p| Claim {
            image: p
                .claim
                .image
                .clone()
                .filter(|_| !baked.contains_key(&p.fleet.name)),
            ..p.claim.clone()
        })
        .collect();
    match retry_reads(budget, || cloud.claims_conflicts(&asked)).await {
        Ok(conflicts) => Ok(pending
            .iter()
            .zip(conflicts)
            .map(|(p, conflicts)| Claimed {
                fleet: p.fleet.name.clone(),
                baked_image: baked.get(&p.fleet.name).map(|i| i.id.clone()),
                conflicts,
            })
            .collect()),
        Err(e) => Err(pending
            .iter()
            .map(|p| problem(&at(p.fleet), e.clone(), ""))
            .collect()),
    }
}

/// A fleet's surroundings that are wrong, or could not be read, in words with the fix.
fn problem(at: &str, e: CloudError, fix: &str) -> String {
    match e {
        CloudError::Credentials { .. } => format!(
            "error: {e}\n  immune takes AWS credentials from the standard chain: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), log in with `aws sso login`, or run where an instance or container role applies"
        ),
        CloudError::Transport { .. } => format!(
            "error: cannot reach AWS: {e}\n  check the network, AWS_ENDPOINT_URL ({}) and your credentials",
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "not set".into())
        ),
        e if e.is_transient() => format!(
            "error: AWS kept failing while reading {at}: {e}\n  nothing was changed; try again in a moment"
        ),
        _ => format!("error: {at}: {e}\n  {fix}"),
    }
}

/// The live side of every release the state records as active, for the three-way plan.
/// Many fleets cost a few calls, all made at once: DescribeAutoScalingGroups per 100
/// groups, one listing of target groups, one DescribeImages, and each route's weights.
#[cfg(test)]
pub(crate) async fn refresh(
    cloud: &dyn Cloud,
    state: &State,
) -> Result<BTreeMap<String, Live>, CloudError> {
    refresh_knowing(cloud, state, &BTreeMap::new()).await
}

/// [`refresh`], with the weights of routes already read (by a plan) not read again, and
/// the target groups they forward to known to exist.
pub(crate) async fn refresh_knowing(
    cloud: &dyn Cloud,
    state: &State,
    known: &BTreeMap<String, Vec<Weight>>,
) -> Result<BTreeMap<String, Live>, CloudError> {
    let recorded: Vec<(&String, &Group, &Vec<Weight>)> = state
        .fleets
        .iter()
        .filter_map(|(name, f)| {
            let group = f.active.as_ref().or(f.previous.first())?;
            Some((name, group, &f.original_weights))
        })
        .collect();
    let groups: Vec<String> = recorded.iter().map(|(_, g, _)| g.name.clone()).collect();
    let target_groups: Vec<String> = recorded
        .iter()
        .flat_map(|(_, g, original)| {
            g.target_group
                .clone()
                .into_iter()
                .chain(original.iter().map(|w| w.target_group.clone()))
        })
        .collect();
    let images: Vec<String> = recorded.iter().map(|(_, g, _)| g.image.clone()).collect();
    let routes: BTreeSet<&String> = recorded
        .iter()
        .filter_map(|(_, g, _)| g.listener_arn.as_ref())
        .collect();
    // Routes the plan has not read already, in one batch.
    let unread: Vec<String> = routes
        .into_iter()
        .filter(|route| !known.contains_key(*route))
        .cloned()
        .collect();
    let weights = async {
        if unread.is_empty() {
            return Ok(BTreeMap::new());
        }
        cloud.route_weights(&unread).await
    };
    // A target group a route read forwards to exists: ELBv2 refuses to delete one that
    // a listener or rule uses. Only the others are looked for, so a plan of settled
    // fleets lists no target groups.
    let forwarded: BTreeSet<&String> = known.values().flatten().map(|w| &w.target_group).collect();
    let (seen, unseen): (Vec<String>, Vec<String>) = target_groups
        .into_iter()
        .partition(|tg| forwarded.contains(tg));
    let existing_target_groups = async {
        match unseen.is_empty() {
            true => Ok(BTreeSet::new()),
            false => cloud.existing_target_groups(&unseen).await,
        }
    };
    let (mut groups, mut target_groups, images, weights) = tokio::try_join!(
        cloud.groups(&groups),
        existing_target_groups,
        cloud.existing_images(&images),
        weights,
    )?;
    target_groups.extend(seen);
    let mut weights: BTreeMap<String, Vec<Weight>> = weights
        .into_iter()
        .map(|(route, read)| match read {
            Ok(weights) => Ok((route, weights)),
            // A route deleted outside immune sends nothing: shown as drift.
            Err(CloudError::NotFound(_)) => Ok((route, Vec::new())),
            Err(e) => Err(e),
        })
        .collect::<Result<_, _>>()?;
    weights.extend(known.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(recorded
        .into_iter()
        .map(|(name, group, original)| {
            let live = Live {
                group: groups.remove(&group.name),
                // A worker group has no target group to lose.
                target_group_exists: group
                    .target_group
                    .as_ref()
                    .is_none_or(|tg| target_groups.contains(tg)),
                image_exists: images.contains(&group.image),
                weights: group
                    .listener_arn
                    .as_ref()
                    .and_then(|route| weights.get(route))
                    .cloned()
                    .unwrap_or_default(),
                original_target_groups: original
                    .iter()
                    .map(|w| w.target_group.clone())
                    .filter(|tg| target_groups.contains(tg))
                    .collect(),
            };
            (name.clone(), live)
        })
        .collect())
}
