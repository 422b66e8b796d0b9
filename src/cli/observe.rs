//! Reading the live cloud for a plan, and turning what is wrong out there (a listener or
//! image that does not exist, an endpoint that does not answer) into a clear error before
//! anything is created.

use super::{Cli, CliError};
use crate::cloud::aws::Aws;
use crate::cloud::faulty::Faulty;
use crate::cloud::{resolve_route, retry_reads, Claim, Cloud, CloudError, Clouds, Weight};
use crate::config::{Config, GateCheck, ListenerRef};
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
pub async fn plan(
    clouds: &Clouds,
    config: &Config,
    state: &State,
    unproven: &BTreeMap<String, String>,
) -> Result<Plan, CliError> {
    // Every call here only reads: a transient fault is asked again within the budget.
    let budget = crate::engine::retry_budget();
    let mut observed = BTreeMap::new();
    let mut problems = Vec::new();
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
        let mut check = |result: Result<(), CloudError>, fix: &str| {
            if let Err(e) = result {
                problems.push(match e {
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
                });
                false
            } else {
                true
            }
        };
        // A worker fleet has no route.
        let route = match &fleet.traffic {
            Some(traffic) => {
                let route = retry_reads(budget, || resolve_route(cloud, traffic)).await;
                let listener = route.as_ref().map(|_| ()).map_err(Clone::clone);
                let fix = match (&traffic.listener, traffic.rule_priority) {
                    (_, Some(_)) => {
                        "check traffic.rule_priority: the listener needs a rule with that priority whose action forwards to a target group"
                    }
                    (ListenerRef::Arn(_), None) => "check traffic.listener_arn",
                    (ListenerRef::LoadBalancer { .. }, None) => {
                        "check traffic.load_balancer and traffic.listener_port, or create the listener first; its default action must forward to a target group"
                    }
                };
                if !check(listener, fix) {
                    continue;
                }
                route.ok().map(|route| (route, traffic))
            }
            None => None,
        };
        let source = match retry_reads(budget, || {
            cloud.source_image_exists(&fleet.image.source_ami)
        })
        .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(CloudError::NotFound(format!(
                "source image {}",
                fleet.image.source_ami
            ))),
            Err(e) => Err(e),
        };
        if !check(
            source,
            "check image.source_ami: the image must exist in this region and account",
        ) {
            continue;
        }
        let subnets = retry_reads(budget, || cloud.vpc_of_subnets(&fleet.instances.subnets))
            .await
            .map(|_| ());
        if !check(subnets, "check instances.subnets") {
            continue;
        }
        // Instance types and the key pair fail only when instances launch, after the
        // bake: found here, they never get that far.
        let mut types = vec![
            fleet.image.instance_type.clone(),
            fleet.instances.instance_type.clone(),
        ];
        if let Some(spot) = &fleet.instances.spot {
            types.extend(spot.instance_types.iter().cloned());
        }
        types.sort();
        types.dedup();
        let offered = match retry_reads(budget, || cloud.unknown_instance_types(&types)).await {
            Ok(unknown) if unknown.is_empty() => Ok(()),
            Ok(unknown) => Err(CloudError::NotFound(format!(
                "instance type{} {} in {}",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                cloud.region()
            ))),
            Err(e) => Err(e),
        };
        if !check(
            offered,
            "check the instance types (image.instance_type, instances.instance_type, spot.instance_types): each must be offered in the fleet's region",
        ) {
            continue;
        }
        if let Some(key) = &fleet.instances.key_name {
            let found = match retry_reads(budget, || cloud.key_pair_exists(key)).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(CloudError::NotFound(format!(
                    "key pair {key} in {}",
                    cloud.region()
                ))),
                Err(e) => Err(e),
            };
            if !check(
                found,
                "check instances.key_name, or import the key pair into the fleet's region first",
            ) {
                continue;
            }
        }
        // An alarm gate that names no alarm would fail the first step of every release.
        let alarms: Vec<(String, String)> = fleet
            .rollout
            .gates
            .iter()
            .filter_map(|g| match &g.check {
                GateCheck::Alarm(name) => Some((g.name.clone(), name.clone())),
                GateCheck::Metric(_) => None,
            })
            .collect();
        let mut gate_alarms = BTreeMap::new();
        if !alarms.is_empty() {
            let names: Vec<String> = alarms.iter().map(|(_, a)| a.clone()).collect();
            match retry_reads(budget, || cloud.alarms(&names)).await {
                Ok(found) => {
                    gate_alarms = found.clone();
                    for (gate, alarm) in &alarms {
                        if !found.contains_key(alarm) {
                            check(
                                Err(CloudError::NotFound(format!(
                                    "alarm {alarm} of gate \"{gate}\""
                                ))),
                                "create the CloudWatch alarm first, or fix the gate's `alarm` name",
                            );
                        }
                    }
                }
                Err(e) => {
                    check(Err(e), "");
                }
            }
        }
        let bake = plan::bake_id(fleet);
        let baked = match retry_reads(budget, || cloud.find_baked_image(&fleet.name, &bake)).await {
            Ok(baked) => baked.map(|i| i.id),
            Err(e) => {
                check(Err(e), "");
                continue;
            }
        };
        // The names the next release takes: held by anything but this configuration,
        // they block the fleet here, before apply creates anything.
        let seq = state.fleets.get(&fleet.name).map_or(0, |f| f.seq) + 1;
        let group = plan::group_name(&fleet.resource_name(), seq);
        let claim = Claim {
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
            image: baked.is_none().then(|| plan::image_name(fleet, seq)),
            route: None,
        };
        let mut stand_in = None;
        let claim = match route {
            Some((route, traffic)) => {
                // The route's target groups now: one of another configuration's means two
                // configurations would shift the same traffic.
                let forwards = match retry_reads(budget, || cloud.listener_weights(&route)).await {
                    Ok(weights) => weights,
                    Err(e) => {
                        check(Err(e), "");
                        continue;
                    }
                };
                // One preflight with apply: a route must forward somewhere, or answer with the
                // fixed response or redirect of a fresh load balancer, to have somewhere to send
                // traffic back to.
                if forwards.iter().all(|w| w.weight == 0) {
                    match retry_reads(budget, || cloud.stand_in(&route)).await {
                        Ok(Some(found)) => stand_in = Some(found),
                        Ok(None) => {
                            check(
                        Err(CloudError::Invalid(format!(
                            "{} neither forwards to a target group nor answers with a fixed response or a redirect, so a rollback would have nowhere to send traffic",
                            traffic.route()
                        ))),
                        "point the route's action at a target group, a fixed response or a redirect first",
                    );
                            continue;
                        }
                        Err(e) => {
                            check(Err(e), "");
                            continue;
                        }
                    }
                }
                Claim {
                    route: Some((
                        traffic.route(),
                        forwards.into_iter().map(|w| w.target_group).collect(),
                    )),
                    ..claim
                }
            }
            None => claim,
        };
        match retry_reads(budget, || cloud.claim_conflicts(&claim)).await {
            Ok(conflicts) => {
                observed.insert(
                    fleet.name.clone(),
                    Observed {
                        baked_image: baked,
                        live: None,
                        conflicts,
                        gate_alarms,
                        stand_in,
                        region: Some(cloud.region()),
                        unproven: unproven.get(&fleet.name).cloned(),
                    },
                );
            }
            Err(e) => {
                check(Err(e), "");
            }
        }
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
    for (region, part) in &by_region {
        let cloud = clouds.get(*region);
        let live = retry_reads(budget, || refresh(cloud, part)).await.map_err(|e| {
            CliError::Message(format!(
                "error: reading what runs now in {}: {e}\n  check the network and your credentials, then plan again",
                cloud.region()
            ))
        })?;
        for (name, live) in live {
            let seen = observed.entry(name).or_default();
            seen.live = Some(live);
            seen.region = Some(cloud.region());
        }
    }
    Ok(plan::plan(config, state, &observed))
}

/// The live side of every release the state records as active, for the three-way plan.
/// Many fleets cost a few calls, all made at once: DescribeAutoScalingGroups per 100
/// groups, one listing of target groups, one DescribeImages, and each route's weights.
pub(crate) async fn refresh(
    cloud: &dyn Cloud,
    state: &State,
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
    let weights = futures_util::future::try_join_all(routes.into_iter().map(|route| async move {
        match cloud.listener_weights(route).await {
            Ok(weights) => Ok((route.clone(), weights)),
            // A route deleted outside immune sends nothing: shown as drift.
            Err(CloudError::NotFound(_)) => Ok((route.clone(), Vec::new())),
            Err(e) => Err(e),
        }
    }));
    let (mut groups, target_groups, images, weights) = tokio::try_join!(
        cloud.groups(&groups),
        cloud.existing_target_groups(&target_groups),
        cloud.existing_images(&images),
        weights,
    )?;
    let weights: BTreeMap<String, Vec<Weight>> = weights.into_iter().collect();
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
