//! One rollout action carried out against the cloud, with the waiting it implies. Each
//! returns the event to record, or why it halted, typed: the release's failure, AWS's
//! refusal, or a transient fault (a `CloudError` converts by its class with `?`).
//! Every create first looks for what an interrupted call of the same rollout made
//! (by name and this state's lineage) and adopts it instead of making another.

use super::{backoff, Halt, Reporter};
use crate::cloud::*;
use crate::config::{fill_release_references, show_duration, Capacity, Fleet, GateCheck};
use crate::plan::{builder_name, image_name, template_name};
use crate::rollout::{capacity_at, Action, Event, Found, Intent, Rollout};
use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Bakes and deletions have no configured limit; these bound them so a stuck call fails.
const BAKE_TIMEOUT: Duration = Duration::from_secs(45 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What an action runs with.
pub struct Context<'a> {
    pub cloud: &'a dyn Cloud,
    pub fleet: &'a Fleet,
    /// The state's lineage, tagged on everything created.
    pub lineage: &'a str,
    /// The action has not been tried before (no intent was saved for it): anything of
    /// this state's lineage found under its name was not made by this rollout.
    pub first_attempt: bool,
    pub rollout: &'a Rollout,
    pub reporter: &'a dyn Reporter,
    /// Asked at every poll of a wait: Ctrl-C or `immune rollback` end the wait early.
    pub stop: &'a (dyn Fn() -> Option<Halt> + Sync),
}

pub async fn perform(context: &Context<'_>, action: &Action) -> Result<Event, Halt> {
    let Context {
        cloud,
        fleet,
        lineage,
        first_attempt,
        rollout,
        reporter,
        stop,
    } = *context;
    // What a create finds of this lineage under its name: its own lost work when the
    // action was tried before, else someone else's (a stale copy of the state).
    let adopt_or_refuse = |what: String| -> Result<(), Halt> {
        if first_attempt {
            Err(stale(&what))
        } else {
            Ok(())
        }
    };
    let poll = fleet.rollout.poll_interval;
    let tags = Tags {
        lineage: lineage.to_string(),
        fleet: fleet.name.clone(),
        release: rollout.release.clone(),
        name: rollout.group.clone(),
        extra: fleet.default_tags.clone(),
    };
    // The operator's group-level stickiness goes with every weights the release sets.
    let stickiness = fleet.traffic.as_ref().and_then(|t| t.stickiness);
    // The group, its template, instances and volumes also carry the instances' tags.
    let instance_tags = Tags {
        extra: fleet.instance_tags(),
        ..tags.clone()
    };
    match action {
        Action::FindImageOrLaunchBuilder => {
            if let Some(image) = cloud.find_baked_image(&fleet.name, &rollout.bake).await? {
                reporter.line(
                    &fleet.name,
                    &format!("reusing image {} baked from the same spec", image.id),
                );
                wait_image(cloud, &image.id, None, poll, stop).await?;
                return Ok(Event::ImageReady(image.id));
            }
            let name = builder_name(&rollout.group);
            if let Some(builder) = find_builder(cloud, &fleet.name, &name).await? {
                adopt_or_refuse(format!("builder {builder} ({name})"))?;
                reporter.line(
                    &fleet.name,
                    &format!("found builder {builder} launched by an earlier attempt (cut off or timed out)"),
                );
                return Ok(Event::BuilderLaunched(builder));
            }
            let image = &fleet.image;
            let request = BuilderRequest {
                source_ami: image.source_ami.clone(),
                instance_type: image.instance_type.clone(),
                subnet: image
                    .subnet
                    .clone()
                    .unwrap_or_else(|| fleet.instances.subnets[0].clone()),
                security_groups: image
                    .security_groups
                    .clone()
                    .unwrap_or_else(|| fleet.instances.security_groups.clone()),
                iam_instance_profile: image
                    .iam_instance_profile
                    .clone()
                    .or_else(|| fleet.instances.iam_instance_profile.clone()),
                metadata: fleet.instances.metadata,
                user_data: Some(crate::bake::user_data(image.provision.as_deref())),
                tags: Tags { name, ..tags },
            };
            Ok(Event::BuilderLaunched(
                cloud.launch_builder(&request).await?,
            ))
        }
        Action::CaptureImage { builder } => {
            let name = image_name(fleet, rollout.seq);
            if let Some(image) = adoptable_image(cloud, fleet, rollout, &name).await? {
                reporter.line(
                    &fleet.name,
                    &format!("found image {image} (\"{name}\") created by an earlier attempt (cut off or timed out)"),
                );
                wait_image(cloud, &image, None, poll, stop).await?;
                return Ok(Event::ImageReady(image));
            }
            let timeout = fleet.image.bake_timeout;
            reporter.line(
                &fleet.name,
                &format!(
                    "builder {builder} runs the provision script; waiting for it to power off (bake_timeout {})",
                    show_duration(timeout)
                ),
            );
            let launched = fresh(rollout, builder);
            wait_provisioned(cloud, builder, launched, timeout, poll, stop).await?;
            let image = cloud
                .create_image(builder, &name, &rollout.bake, &tags)
                .await?;
            reporter.line(&fleet.name, &format!("creating image {image} (\"{name}\")"));
            wait_image(cloud, &image, Some(Instant::now()), poll, stop).await?;
            Ok(Event::ImageReady(image))
        }
        Action::TerminateBuilder { builder } => {
            match cloud.terminate_instance(builder).await {
                // Not found by a describe long after its launch: it is gone. Soon after,
                // it may only not be visible yet, and is asked for again.
                Err(e) if e.is_not_found() && fresh(rollout, builder).is_some() => {
                    return Err(not_yet(e))
                }
                Err(e) if e.is_not_found() => {}
                other => other?,
            }
            Ok(Event::BuilderTerminated)
        }
        Action::Adopt { intent } => adopt(cloud, fleet, rollout, *intent).await,
        Action::CreateLaunchTemplateVersion { image } => {
            let template = template_name(fleet);
            if let Some(version) = cloud
                .launch_template_version_named(&template, &rollout.group)
                .await?
            {
                adopt_or_refuse(format!(
                    "launch template {template} version {} ({})",
                    version.version, rollout.group
                ))?;
                return Ok(Event::LaunchTemplateCreated(version));
            }
            let instances = &fleet.instances;
            let request = LaunchRequest {
                template_name: template,
                image_id: image.clone(),
                instance_type: instances.instance_type.clone(),
                security_groups: instances.security_groups.clone(),
                user_data: instances.user_data.clone(),
                iam_instance_profile: instances.iam_instance_profile.clone(),
                key_name: instances.key_name.clone(),
                root_volume: instances.root_volume.clone(),
                metadata: instances.metadata,
                tags: instance_tags,
            };
            Ok(Event::LaunchTemplateCreated(
                cloud.create_launch_template_version(&request).await?,
            ))
        }
        Action::CreateTargetGroup => {
            match cloud.target_group_named(&rollout.group).await? {
                Some((arn, Holder::Ours)) => {
                    adopt_or_refuse(format!("target group {}", rollout.group))?;
                    return Ok(Event::TargetGroupCreated(arn));
                }
                Some((_, holder)) => {
                    return Err(held(format!("target group {}", rollout.group), holder))
                }
                None => {}
            }
            let Some(traffic) = &fleet.traffic else {
                return Err(Halt::Refused(format!(
                    "fleet {} has no traffic block, so {} takes no target group",
                    fleet.name, rollout.group
                )));
            };
            let vpc_id = cloud.vpc_of_subnets(&fleet.instances.subnets).await?;
            let request = TargetGroupRequest {
                name: rollout.group.clone(),
                vpc_id,
                port: traffic.port,
                health_check: traffic.health_check.clone(),
                deregistration_delay: traffic.deregistration_delay,
                tags,
            };
            Ok(Event::TargetGroupCreated(
                cloud.create_target_group(&request).await?,
            ))
        }
        Action::CreateAlarms { target_group } => {
            let mut names = Vec::new();
            for gate in &fleet.rollout.gates {
                let GateCheck::Metric(metric) = &gate.check else {
                    continue;
                };
                let fill = |text: &str| {
                    fill_release_references(text, |name| match name {
                        "target_group" => target_group
                            .as_deref()
                            .map(target_group_dimension)
                            .unwrap_or_default(),
                        "load_balancer" => load_balancer_dimension(&rollout.listener_arn),
                        "group" => rollout.group.clone(),
                        _ => rollout.release.clone(),
                    })
                };
                let request = AlarmRequest {
                    name: gate.alarm_name(&rollout.group),
                    namespace: metric.namespace.clone(),
                    metric: metric.name.clone(),
                    dimensions: metric
                        .dimensions
                        .iter()
                        .map(|(k, v)| (k.clone(), fill(v)))
                        .collect(),
                    statistic: metric.statistic.clone(),
                    period: metric.period,
                    evaluation_periods: metric.evaluation_periods,
                    threshold: metric.threshold,
                    comparison: metric.comparison,
                    tags: Tags {
                        name: gate.alarm_name(&rollout.group),
                        ..tags.clone()
                    },
                };
                cloud.put_alarm(&request).await?;
                names.push(request.name);
            }
            Ok(Event::AlarmsCreated(names))
        }
        Action::ScaleUp => {
            let capacity = rollout.workers.map_or(fleet.instances.capacity, |w| w.full);
            cloud.scale_group(&rollout.group, capacity).await?;
            Ok(Event::ScaledUp)
        }
        Action::ScaleToZero => {
            cloud.scale_group(&rollout.group, ZERO).await?;
            Ok(Event::ScaledToZero)
        }
        Action::DeleteAlarms { alarms } => {
            for alarm in alarms {
                match cloud.delete_alarm(alarm).await {
                    // Found by name after a crash, but someone else's: not ours to delete.
                    Err(CloudError::NotOurs(_)) => {}
                    other => other?,
                }
            }
            Ok(Event::AlarmsDeleted)
        }
        Action::CreateGroup {
            launch_template,
            target_group,
        } => {
            // An apply stopped between creating the group and recording it finds it here;
            // a group of the name that is not this configuration's is never taken over.
            match cloud.group_holder(&rollout.group).await? {
                Some(Holder::Ours) => {
                    adopt_or_refuse(format!("Auto Scaling group {}", rollout.group))?;
                    put_policies(cloud, fleet, rollout, target_group.as_deref()).await?;
                    put_hook(cloud, fleet, rollout).await?;
                    return Ok(Event::GroupCreated);
                }
                Some(holder) => {
                    return Err(held(
                        format!("Auto Scaling group {}", rollout.group),
                        holder,
                    ))
                }
                None => {}
            }
            // A worker fleet's new group starts with the first step's share.
            let capacity = match rollout.workers {
                Some(workers) => capacity_at(workers.full, rollout.steps[0]).0,
                None => starting_capacity(cloud, fleet, rollout, reporter).await?,
            };
            let request = GroupRequest {
                name: rollout.group.clone(),
                launch_template: launch_template.clone(),
                subnets: fleet.instances.subnets.clone(),
                target_group_arn: target_group.clone(),
                capacity,
                health_check_grace: fleet.rollout.healthy_within,
                spot: fleet.instances.spot.clone(),
                tags: instance_tags,
            };
            match cloud.create_group(&request).await {
                // Tried before (its intent was saved) and made then, though AWS did not
                // show it yet when this attempt looked: the lost call's group.
                Err(CloudError::Service { code, .. })
                    if code == "AlreadyExists" && !first_attempt => {}
                // Auto Scaling may not know a launch template version or target group
                // made a moment ago (eventual consistency): asked again.
                Err(e @ CloudError::Service { .. })
                    if e.to_string().contains("does not exist")
                        && (fresh(rollout, &launch_template.id).is_some()
                            || target_group
                                .as_deref()
                                .is_some_and(|tg| fresh(rollout, tg).is_some())) =>
                {
                    return Err(not_yet(e))
                }
                other => other?,
            }
            // AWS shows a new group a moment after creating it (eventual consistency):
            // its policies and hook can only be put once it does.
            wait_visible(cloud, &rollout.group, poll).await?;
            // Before the group takes traffic, so that it scales with the load it gets.
            put_policies(cloud, fleet, rollout, target_group.as_deref()).await?;
            // Before anything scales it in, so that no worker is ever cut off.
            put_hook(cloud, fleet, rollout).await?;
            Ok(Event::GroupCreated)
        }
        Action::JoinRoute { weights } => {
            // The target group was created a moment ago: the listener may not know it yet.
            let created = rollout
                .target_group
                .as_deref()
                .and_then(|tg| fresh(rollout, tg));
            cloud
                .set_listener_weights(&rollout.listener_arn, weights, stickiness)
                .await
                .map_err(|e| match created.is_some() && e.is_not_found() {
                    true => not_yet(e),
                    false => e.into(),
                })?;
            verify_weights(cloud, &rollout.listener_arn, weights).await?;
            Ok(Event::Joined)
        }
        Action::AddHealthRule => {
            let target_group = rollout.target_group.as_deref().unwrap_or_default();
            let route = &rollout.listener_arn;
            if let Some(rule) = cloud.health_rule(route, &rollout.group).await? {
                adopt_or_refuse(format!("health rule {rule}"))?;
                return Ok(Event::HealthRuleAdded(rule));
            }
            let created = fresh(rollout, target_group).is_some();
            let rule = cloud
                .add_health_rule(route, target_group, &rollout.group, &tags)
                .await
                .map_err(|e| match created && e.is_not_found() {
                    true => not_yet(e),
                    false => e.into(),
                })?;
            reporter.line(
                &fleet.name,
                &format!(
                    "the route answers with {} and has no forward to join: rule {rule}, which no request matches, forwards to {} so that the load balancer health-checks it",
                    rollout
                        .stand_in
                        .as_ref()
                        .map_or("no forward".into(), |s| s.describe()),
                    rollout.group
                ),
            );
            Ok(Event::HealthRuleAdded(rule))
        }
        Action::DeleteHealthRule { rule } => {
            cloud.delete_health_rule(rule).await?;
            Ok(Event::HealthRuleDeleted)
        }
        Action::WaitHealthy { target_group } => {
            let within = fleet.rollout.healthy_within;
            let fresh = |key: &str| fresh(rollout, key).is_some();
            let say = |line: &str| reporter.line(&fleet.name, line);
            wait_healthy(
                cloud,
                &rollout.group,
                target_group.as_deref(),
                within,
                poll,
                stop,
                &Watching {
                    fresh: &fresh,
                    say: &say,
                },
            )
            .await?;
            Ok(Event::Healthy)
        }
        Action::SetWeights { weights, percent } => {
            set_weights(cloud, &rollout.listener_arn, weights, stickiness).await?;
            // The group takes traffic through the route now: its health rule goes.
            if let Some(rule) = &rollout.health_rule {
                cloud.delete_health_rule(rule).await?;
            }
            Ok(Event::WeightsSet(*percent))
        }
        Action::SetCapacity { new, old, percent } => {
            // The new group grows first, so the fleet never runs below its capacity.
            cloud.scale_group(&rollout.group, *new).await?;
            let within = fleet.rollout.healthy_within;
            wait_healthy(
                cloud,
                &rollout.group,
                None,
                within,
                poll,
                stop,
                &Watching::QUIET,
            )
            .await?;
            // The old group's leaving workers finish their jobs while the step is
            // observed: the gates are watched all that time (see `Engine::observe`).
            if let Some((group, capacity)) = old {
                cloud.scale_group(group, *capacity).await?;
            }
            Ok(Event::CapacitySet {
                percent: *percent,
                instances: new.desired,
                left: old.as_ref().map(|(group, c)| (group.clone(), c.desired)),
            })
        }
        Action::RestoreCapacity { previous } => {
            // Rolling back: the old group serves again before the new one goes.
            if let Some((group, capacity)) = previous {
                cloud.scale_group(group, *capacity).await?;
                let within = fleet.rollout.healthy_within;
                wait_healthy(cloud, group, None, within, poll, stop, &Watching::QUIET).await?;
            }
            Ok(Event::CapacityRestored)
        }
        Action::Observe { .. } => unreachable!("the engine observes steps itself"),
        Action::Drain => unreachable!("the engine watches the drain itself"),
        Action::RetirePrevious {
            previous,
            keep,
            drain,
        } => {
            if let Some(previous) = previous {
                // A worker group drained already: its workers left at the last step.
                if let (true, Some(traffic)) = (*drain, &fleet.traffic) {
                    let drain = traffic.deregistration_delay;
                    reporter.line(
                        &fleet.name,
                        &format!("draining {} for {}", previous.group, show_duration(drain)),
                    );
                    pause(drain, poll, stop).await?;
                }
                if *keep {
                    // Kept with its target group, template version and alarms, so that
                    // `immune rollback` can scale it back up.
                    cloud.scale_group(&previous.group, ZERO).await?;
                    reporter.line(
                        &fleet.name,
                        &format!("{} scaled to zero and kept for rollback", previous.group),
                    );
                } else {
                    // Found by the description it was made with: the group's name.
                    let version = cloud
                        .launch_template_version_named(&template_name(fleet), &previous.group)
                        .await?;
                    delete_release(
                        cloud,
                        &previous.group,
                        &previous.alarms,
                        previous.target_group.as_deref(),
                        version.as_ref(),
                        Drain {
                            grace: fleet.instances.termination_grace,
                            poll,
                        },
                    )
                    .await?;
                }
            }
            Ok(Event::PreviousRetired)
        }
        Action::RestoreWeights { weights } => {
            set_weights(cloud, &rollout.listener_arn, weights, None).await?;
            Ok(Event::WeightsRestored)
        }
        Action::RestoreStandIn { stand_in } => {
            set_stand_in(cloud, &rollout.listener_arn, stand_in).await?;
            Ok(Event::WeightsRestored)
        }
        Action::DeleteGroup => {
            // A worker group is scaled in first: its workers finish what they hold.
            if rollout.workers.is_some() {
                let grace = fleet.instances.termination_grace;
                reporter.line(
                    &fleet.name,
                    &format!(
                        "scaling {} in: its workers finish their jobs (within {})",
                        rollout.group,
                        show_duration(grace)
                    ),
                );
                scale_in(cloud, &rollout.group, grace, poll, stop).await?;
            }
            delete_group(cloud, &rollout.group, poll).await?;
            Ok(Event::GroupDeleted)
        }
        Action::DeleteTargetGroup { target_group } => {
            cloud.delete_target_group(target_group).await?;
            Ok(Event::TargetGroupDeleted)
        }
        Action::DeleteLaunchTemplateVersion { launch_template } => {
            cloud
                .delete_launch_template_version(launch_template)
                .await?;
            Ok(Event::LaunchTemplateDeleted)
        }
        Action::Finished => unreachable!("the driver stops at Finished"),
    }
}

const ZERO: Capacity = Capacity {
    min: 0,
    max: 0,
    desired: 0,
};

/// Waits `length`, ending early when `stop` says so.
async fn pause(
    length: Duration,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    let deadline = Instant::now() + length;
    while Instant::now() < deadline {
        if let Some(halt) = stop() {
            return Err(halt);
        }
        sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    Ok(())
}

/// Polls `check` every `poll` until it yields a value, fails, `limit` passes, or `stop`
/// says to stop.
async fn wait_until<T, F, Fut>(
    poll: Duration,
    limit: Duration,
    what: &str,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
    mut check: F,
) -> Result<T, Halt>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Halt>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if let Some(halt) = stop() {
            return Err(halt);
        }
        if Instant::now() >= deadline {
            return Err(Halt::Failed(format!(
                "timed out after {} waiting for {what}",
                show_duration(limit)
            )));
        }
        sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Waits until the builder has powered itself off, which the bake wrapper does once the
/// provision script succeeded. A script that failed says so on the console (looked at
/// about once a minute); one still running at `timeout` fails the bake. Either way the
/// error carries the end of the console, and no image is taken.
async fn wait_provisioned(
    cloud: &dyn Cloud,
    builder: &str,
    launched: Option<Instant>,
    timeout: Duration,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    let console_every = (Duration::from_secs(60).as_millis() / poll.as_millis().max(1)).max(1);
    let deadline = Instant::now() + timeout;
    let mut polls: u128 = 0;
    loop {
        let state = match cloud.instance_state(builder).await {
            // Launched a moment ago: EC2 may not find it yet.
            Err(e) if e.is_not_found() && consistent_before(launched) => InstanceState::Pending,
            other => other?,
        };
        match state {
            InstanceState::Stopped => return Ok(()),
            InstanceState::Pending | InstanceState::Running | InstanceState::Stopping => {}
            InstanceState::Terminated => {
                return Err(bake_failed(
                    cloud,
                    builder,
                    format!("builder {builder} was terminated before it powered off"),
                    "no image was taken; look for what terminated it (an instance-initiated shutdown must stop a builder, not terminate it), then apply again",
                )
                .await)
            }
        }
        // The console only hastens a failure: one that cannot be read (no
        // ec2:GetConsoleOutput permission, a throttled call) leaves the wait to the state.
        if polls.is_multiple_of(console_every) {
            let console = cloud.console_output(builder).await.unwrap_or_default();
            if let Some(line) = crate::bake::failure_in(&console) {
                return Err(Halt::Failed(format!(
                    "the provision script failed on builder {builder} ({line})\n  the end of its console:\n{}\n  no image was taken; fix the script and apply again",
                    crate::bake::tail(&console, 20)
                )));
            }
        }
        polls += 1;
        if let Some(halt) = stop() {
            return Err(halt);
        }
        if Instant::now() >= deadline {
            return Err(bake_failed(
                cloud,
                builder,
                format!(
                    "builder {builder} did not power off within bake_timeout {}: the provision script is still running, or it failed without saying so",
                    show_duration(timeout)
                ),
                "no image was taken; fix the script, or raise image.bake_timeout if it needs longer, and apply again",
            )
            .await);
        }
        sleep(poll.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// A failed bake, with the end of the builder's console when it can be read.
async fn bake_failed(cloud: &dyn Cloud, builder: &str, what: String, next: &str) -> Halt {
    let console = match cloud.console_output(builder).await {
        Ok(console) => crate::bake::tail(&console, 20),
        Err(e) => format!("    (cannot read it: {e})"),
    };
    Halt::Failed(format!(
        "{what}\n  the end of its console:\n{console}\n  {next}"
    ))
}

/// What a new group starts with: the configured capacity, or, when scaling policies
/// move the fleet, the group it replaces as it runs now (within the configured bounds),
/// so that a release during a peak does not shrink the fleet.
async fn starting_capacity(
    cloud: &dyn Cloud,
    fleet: &Fleet,
    rollout: &Rollout,
    reporter: &dyn Reporter,
) -> Result<Capacity, Halt> {
    let configured = fleet.instances.capacity;
    let (Some(previous), false) = (&rollout.previous, fleet.instances.scaling.is_empty()) else {
        return Ok(configured);
    };
    let Some(running) = cloud.group(&previous.group).await? else {
        return Ok(configured);
    };
    let desired = running
        .capacity
        .desired
        .clamp(configured.min, configured.max);
    if desired != configured.desired {
        reporter.line(
            &fleet.name,
            &format!(
                "{} starts with {desired} instances, as {} runs now (its scaling policies moved it from {})",
                rollout.group, previous.group, configured.desired
            ),
        );
    }
    Ok(Capacity {
        desired,
        ..configured
    })
}

/// Puts the fleet's target tracking policies on the new group; putting one again
/// replaces it, so a resumed launch puts them all.
async fn put_policies(
    cloud: &dyn Cloud,
    fleet: &Fleet,
    rollout: &Rollout,
    target_group: Option<&str>,
) -> Result<(), Halt> {
    for policy in &fleet.instances.scaling {
        let resource_label = target_group
            .filter(|_| policy.metric == crate::config::ScalingMetric::RequestsPerTarget)
            .map(|target_group| {
                format!(
                    "{}/{}",
                    load_balancer_dimension(&rollout.listener_arn),
                    target_group_dimension(target_group)
                )
            });
        let request = PolicyRequest {
            group: rollout.group.clone(),
            name: crate::plan::policy_name(&rollout.group, &policy.name),
            metric: policy.metric,
            target: policy.target,
            resource_label,
        };
        cloud.put_scaling_policy(&request).await?;
    }
    Ok(())
}

/// Waits until the image is available. `created`: when this rollout asked for it, if
/// just now: until [`CONSISTENCY`] after, a NotFound means EC2 does not show it yet.
async fn wait_image(
    cloud: &dyn Cloud,
    image: &str,
    created: Option<Instant>,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    wait_until(
        poll,
        BAKE_TIMEOUT,
        "the image to become available",
        stop,
        || async {
            let read = match cloud.image(image).await {
                Err(e) if e.is_not_found() && consistent_before(created) => return Ok(None),
                other => other?,
            };
            match read.state {
                ImageState::Available => Ok(Some(())),
                ImageState::Pending => Ok(None),
                ImageState::Failed => Err(Halt::Failed(format!("image {image} failed to bake"))),
            }
        },
    )
    .await
}

/// How many of the group's wanted instances are InService and healthy in its target
/// group; a worker group (no target group): InService, which its EC2 health checks keep.
pub(super) async fn health(
    cloud: &dyn Cloud,
    group: &str,
    target_group: Option<&str>,
) -> Result<(usize, usize), Halt> {
    // Nothing counts as made a moment ago here: a group not found has disappeared.
    let (healthy, wanted, _) = health_in_words(cloud, group, target_group, &|_| false)
        .await?
        .ok_or_else(|| Halt::Failed(format!("Auto Scaling group {group} disappeared")))?;
    Ok((healthy, wanted))
}

/// [`health`], with the targets that are not healthy in words (`1 initial
/// (Elb.InitialHealthChecking)`), for a wait that says what it waits for. `None` while
/// the group or its target group, created a moment ago (`fresh`), is not found yet.
async fn health_in_words(
    cloud: &dyn Cloud,
    group: &str,
    target_group: Option<&str>,
    fresh: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<(usize, usize, String)>, Halt> {
    let status = match cloud.group(group).await? {
        Some(status) => status,
        None if fresh(group) => return Ok(None),
        None => {
            return Err(Halt::Failed(format!(
                "Auto Scaling group {group} disappeared"
            )))
        }
    };
    let wanted = status.capacity.desired as usize;
    let Some(target_group) = target_group else {
        return Ok(Some((status.in_service(), wanted, String::new())));
    };
    let targets = match cloud.target_health(target_group).await {
        Err(e) if e.is_not_found() && fresh(target_group) => return Ok(None),
        other => other?,
    };
    Ok(Some((
        status.healthy_in(&targets),
        wanted,
        status.unhealthy_in(&targets),
    )))
}

/// What a health wait knows beyond the group: whether a name was created a moment ago
/// (a NotFound for it means "not yet"), and where to say what it waits for.
#[derive(Clone, Copy)]
struct Watching<'a> {
    fresh: &'a (dyn Fn(&str) -> bool + Sync),
    say: &'a (dyn Fn(&str) + Sync),
}

impl Watching<'static> {
    /// A worker group's wait: nothing made a moment ago, nothing to say.
    const QUIET: Watching<'static> = Watching {
        fresh: &|_| false,
        say: &|_| {},
    };
}

/// Waits until every instance the group wants is healthy (see [`health`]), for at most
/// `within`: after that the release has failed its health. `fresh` says whether the
/// group or target group of that name was created a moment ago.
async fn wait_healthy(
    cloud: &dyn Cloud,
    group: &str,
    target_group: Option<&str>,
    within: Duration,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
    watching: &Watching<'_>,
) -> Result<(), Halt> {
    let Watching { fresh, say } = *watching;
    // The last count seen, so a timeout reports it without asking again.
    let last = std::sync::Mutex::new((0, 0, String::from("not found yet")));
    let waited = wait_until(poll, within, "instances to be healthy", stop, || async {
        let Some((healthy, wanted, others)) =
            health_in_words(cloud, group, target_group, fresh).await?
        else {
            return Ok(None);
        };
        // What the instances wait for, said when it changes: `initial` while ELB's
        // first checks run, `unhealthy` with ELB's reason.
        let changed = *last.lock().unwrap() != (healthy, wanted, others.clone());
        if changed && !others.is_empty() {
            say(&format!(
                "{group}: {healthy} of {wanted} instances healthy; {others}"
            ));
        }
        *last.lock().unwrap() = (healthy, wanted, others.clone());
        // A web group must have registered instances; a worker group scaled to zero
        // (a queue with nothing in it) has none to wait for.
        let some = wanted > 0 || target_group.is_none();
        Ok((healthy >= wanted && some).then_some(()))
    })
    .await;
    match waited {
        Err(Halt::Failed(_)) => {
            let (healthy, wanted, others) = last.lock().unwrap().clone();
            let others = match others.is_empty() {
                true => String::new(),
                false => format!(": {others}"),
            };
            Err(Halt::Failed(format!(
                "{healthy} of {wanted} instances of {group} healthy after {}{others}",
                show_duration(within)
            )))
        }
        other => other,
    }
}

/// How long past its grace a worker group's scale-in may take before immune stops: the
/// hook's timeout ends each wait, termination itself takes a minute or two.
pub(super) const DRAIN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Waits until a worker group that was scaled in runs at most `keep` instances: each
/// leaving instance waits in `Terminating:Wait` until its worker completed the lifecycle
/// action, or until `grace` is over and Auto Scaling terminates it anyway.
pub(super) async fn drain_workers(
    cloud: &dyn Cloud,
    group: &str,
    keep: u32,
    grace: Duration,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    let limit = grace + DRAIN_MARGIN;
    let left = std::sync::Mutex::new(0);
    let waited = wait_until(poll, limit, "leaving workers", stop, || async {
        let count = cloud.group(group).await?.map_or(0, |g| g.instances.len());
        *left.lock().unwrap() = count;
        Ok((count <= keep as usize).then_some(()))
    })
    .await;
    match waited {
        // Not the release's doing: Auto Scaling did not end what the hook let go of.
        Err(Halt::Failed(_)) => Err(Halt::Fault(format!(
            "{group} still runs {} instances {} after it was scaled in to {keep} (termination_grace {}): Auto Scaling has not terminated them",
            left.lock().unwrap(),
            show_duration(limit),
            show_duration(grace)
        ))),
        other => other,
    }
}

/// Scales a worker group to zero through its hook and waits until its workers are gone.
async fn scale_in(
    cloud: &dyn Cloud,
    group: &str,
    grace: Duration,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    cloud.scale_group(group, ZERO).await?;
    drain_workers(cloud, group, 0, grace, poll, stop).await
}

/// A worker group's termination lifecycle hook, put again on a resumed launch.
async fn put_hook(cloud: &dyn Cloud, fleet: &Fleet, rollout: &Rollout) -> Result<(), Halt> {
    if rollout.workers.is_some() {
        cloud
            .put_termination_hook(&rollout.group, fleet.instances.termination_grace)
            .await?;
    }
    Ok(())
}

/// Sets the weights in one call and reads them back: a listener that silently kept its
/// old weights must not be mistaken for a shifted one.
pub(super) async fn set_weights(
    cloud: &dyn Cloud,
    listener: &str,
    weights: &[Weight],
    stickiness: Option<Duration>,
) -> Result<(), Halt> {
    cloud
        .set_listener_weights(listener, weights, stickiness)
        .await?;
    verify_weights(cloud, listener, weights).await
}

/// Reads the weights back: a listener that silently kept its old weights must not be
/// mistaken for a shifted one.
async fn verify_weights(cloud: &dyn Cloud, listener: &str, weights: &[Weight]) -> Result<(), Halt> {
    // Target groups at weight 0 count: one joined for its health checks must be there.
    let mut read: Vec<Weight> = cloud.listener_weights(listener).await?;
    let mut wanted: Vec<Weight> = weights.to_vec();
    read.sort_by(|a, b| a.target_group.cmp(&b.target_group));
    wanted.sort_by(|a, b| a.target_group.cmp(&b.target_group));
    if read != wanted {
        return Err(Halt::Refused(format!(
            "listener {listener} reads back {} after setting {}",
            crate::plan::show_weights(&read),
            crate::plan::show_weights(&wanted)
        )));
    }
    Ok(())
}

/// Puts a fixed response or redirect back as the route's action and reads it back.
pub(super) async fn set_stand_in(
    cloud: &dyn Cloud,
    route: &str,
    stand_in: &StandIn,
) -> Result<(), Halt> {
    cloud.set_stand_in(route, stand_in).await?;
    match cloud.stand_in(route).await? {
        Some(read) if read == *stand_in => Ok(()),
        other => Err(Halt::Refused(format!(
            "route {route} reads back {} after setting {}",
            other.map_or("a forward".into(), |s| s.describe()),
            stand_in.describe()
        ))),
    }
}

/// How a retired group's instances leave.
#[derive(Debug, Clone, Copy)]
pub(super) struct Drain {
    /// A worker group's: how long its leaving workers may take.
    pub grace: Duration,
    pub poll: Duration,
}

/// Deletes a retired release for good: its group (waiting until it is gone), its gate
/// alarms, its target group and, when given, its launch template version (a retired
/// fleet's whole template goes instead). A worker group (no target group) is scaled in
/// first, so that its workers finish their jobs.
pub(super) async fn delete_release(
    cloud: &dyn Cloud,
    group: &str,
    alarms: &[String],
    target_group: Option<&str>,
    launch_template: Option<&LaunchTemplateRef>,
    drain: Drain,
) -> Result<(), Halt> {
    let poll = drain.poll;
    if target_group.is_none() && cloud.group(group).await?.is_some() {
        scale_in(cloud, group, drain.grace, poll, &|| None).await?;
    }
    delete_group(cloud, group, poll).await?;
    for alarm in alarms {
        cloud.delete_alarm(alarm).await?;
    }
    if let Some(target_group) = target_group {
        cloud.delete_target_group(target_group).await?;
    }
    if let Some(version) = launch_template {
        cloud.delete_launch_template_version(version).await?;
    }
    Ok(())
}

async fn delete_group(cloud: &dyn Cloud, name: &str, poll: Duration) -> Result<(), Halt> {
    cloud.delete_group(name).await?;
    // Its target group can only be deleted once the group is gone. Deleting is the way
    // out of trouble, so it is never cut short.
    let never = || None;
    wait_until(
        poll,
        DELETE_TIMEOUT,
        "the Auto Scaling group to be deleted",
        &never,
        || async { Ok(cloud.group(name).await?.is_none().then_some(())) },
    )
    .await
}

/// When this rollout created `key` (see `Rollout::created`), if that was less than
/// [`CONSISTENCY`] ago: a NotFound for it may only mean AWS does not show it yet.
fn fresh(rollout: &Rollout, key: &str) -> Option<Instant> {
    let created = crate::state::parse_time(rollout.created.get(key)?)?;
    let age = time::OffsetDateTime::now_utc() - created;
    let age = Duration::try_from(age).unwrap_or_default();
    (age < CONSISTENCY).then(|| Instant::now() - age)
}

/// Waits until DescribeAutoScalingGroups shows the group just created, for at most
/// [`CONSISTENCY`]; a group of the name that is not this configuration's is refused.
async fn wait_visible(cloud: &dyn Cloud, group: &str, poll: Duration) -> Result<(), Halt> {
    let start = Instant::now();
    let mut wait = poll.min(Duration::from_millis(200));
    loop {
        match cloud.group_holder(group).await? {
            Some(Holder::Ours) => return Ok(()),
            Some(holder) => return Err(held(format!("Auto Scaling group {group}"), holder)),
            None if start.elapsed() < CONSISTENCY => {
                sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            None => {
                return Err(Halt::Fault(format!(
                    "Auto Scaling group {group} was created but AWS has not shown it for {}",
                    show_duration(CONSISTENCY)
                )))
            }
        }
    }
}

/// Whether something created at `created` may still be missing from AWS's answers.
fn consistent_before(created: Option<Instant>) -> bool {
    created.is_some_and(|t| t.elapsed() < CONSISTENCY)
}

/// A NotFound for something created a moment ago: a transient fault, asked again
/// (with backoff, within the retry budget) until AWS shows it.
fn not_yet(e: CloudError) -> Halt {
    Halt::Fault(format!(
        "{e} yet: AWS is eventually consistent; asking again"
    ))
}

/// Runs `call` again while it meets transient faults, for at most `budget`.
pub(super) async fn with_retries<T, F, Fut>(
    poll: Duration,
    budget: Duration,
    mut call: F,
) -> Result<T, Halt>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Halt>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match call().await {
            Err(Halt::Fault(_)) if start.elapsed() < budget => {
                attempt += 1;
                sleep(backoff(poll, attempt)).await;
            }
            other => return other,
        }
    }
}

/// Something of this state's lineage holds a name this rollout is about to take, though
/// the rollout never tried to make it: another copy of this state made it. Never taken
/// over (a rollback would delete it).
fn stale(what: &str) -> Halt {
    Halt::NotMine(format!(
        "{what} already exists with this state's lineage, but this rollout did not make it: another copy of this state (a restored backup, a copied directory, a *.migrated file) is in use; immune leaves it alone\n  use the newest state, then run `immune plan`"
    ))
}

/// A name this release needs, held by someone else: refused, never taken over.
fn held(resource: String, holder: Holder) -> Halt {
    Halt::Refused(format!(
        "{}; `immune plan` reports such conflicts before anything is created",
        CloudError::not_ours(resource, holder)
    ))
}

/// This configuration's builder of this name that is still there.
async fn find_builder(cloud: &dyn Cloud, fleet: &str, name: &str) -> Result<Option<String>, Halt> {
    Ok(cloud
        .builders(fleet)
        .await?
        .into_iter()
        .find(|b| b.name == name)
        .map(|b| b.id))
}

/// The image an interrupted CreateImage of this rollout made: this configuration's,
/// of the release's image name and baked from the same spec. Any other image holding the
/// name is refused (image names are unique in an account).
async fn adoptable_image(
    cloud: &dyn Cloud,
    fleet: &Fleet,
    rollout: &Rollout,
    name: &str,
) -> Result<Option<String>, Halt> {
    let Some((image, holder)) = cloud.image_named(name).await? else {
        return Ok(None);
    };
    let same_spec = holder == Holder::Ours
        && cloud
            .find_baked_image(&fleet.name, &rollout.bake)
            .await?
            .is_some_and(|baked| baked.id == image.id);
    if same_spec {
        return Ok(Some(image.id));
    }
    Err(Halt::Refused(format!(
        "image name \"{name}\" is taken by {} ({}); set image.name so that each bake has a name of its own",
        image.id,
        match holder {
            Holder::Ours => "baked by this configuration from another spec".to_string(),
            other => format!("held by {}", other.describe()),
        }
    )))
}

/// While rolling back: what a create call that was cut off may have made, found by name
/// and this configuration's lineage, so the rollback tears it down as well. An image is
/// left: it is found again by its spec and counts towards image.keep.
async fn adopt(
    cloud: &dyn Cloud,
    fleet: &Fleet,
    rollout: &Rollout,
    intent: Intent,
) -> Result<Event, Halt> {
    let found = match intent {
        Intent::Builder => find_builder(cloud, &fleet.name, &builder_name(&rollout.group))
            .await?
            .filter(|id| rollout.builder.as_ref() != Some(id))
            .map(Found::Builder),
        Intent::Image => None,
        Intent::LaunchTemplate => cloud
            .launch_template_version_named(&template_name(fleet), &rollout.group)
            .await?
            .map(Found::LaunchTemplate),
        Intent::TargetGroup => match cloud.target_group_named(&rollout.group).await? {
            Some((arn, Holder::Ours)) => Some(Found::TargetGroup(arn)),
            _ => None,
        },
        Intent::Alarms => {
            let names: Vec<String> = fleet
                .rollout
                .gates
                .iter()
                .filter(|g| matches!(g.check, GateCheck::Metric(_)))
                .map(|g| g.alarm_name(&rollout.group))
                .collect();
            // Only this configuration's: one of the name made by someone else stays.
            let ours = cloud
                .alarm_holders(&names)
                .await?
                .into_iter()
                .filter(|(_, holder)| *holder == Holder::Ours)
                .map(|(name, _)| name)
                .collect();
            Some(Found::Alarms(ours))
        }
        Intent::Group => match cloud.group_holder(&rollout.group).await? {
            Some(Holder::Ours) => Some(Found::Group),
            _ => None,
        },
        Intent::HealthRule => cloud
            .health_rule(&rollout.listener_arn, &rollout.group)
            .await?
            .map(Found::HealthRule),
    };
    Ok(Event::Adopted(found.unwrap_or(Found::Nothing)))
}
