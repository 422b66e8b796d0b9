//! One rollout action carried out against the cloud, with the waiting it implies. Each
//! returns the event to record, or the failure in words for the operator.

use super::{Halt, Reporter};
use crate::cloud::*;
use crate::config::{fill_release_references, show_duration, Capacity, Fleet, GateCheck};
use crate::plan::image_name;
use crate::rollout::{Action, Event, Rollout};
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
    pub rollout: &'a Rollout,
    pub reporter: &'a dyn Reporter,
    /// Asked at every poll of a wait: Ctrl-C or `immune rollback` end the wait early.
    pub stop: &'a (dyn Fn() -> Option<Halt> + Sync),
}

pub async fn perform(context: &Context<'_>, action: &Action) -> Result<Event, Halt> {
    let Context {
        cloud,
        fleet,
        rollout,
        reporter,
        stop,
    } = *context;
    let poll = fleet.rollout.poll_interval;
    let tags = Tags {
        fleet: fleet.name.clone(),
        release: rollout.release.clone(),
        name: rollout.group.clone(),
    };
    let err = |e: CloudError| e.to_string();
    match action {
        Action::FindImageOrLaunchBuilder => {
            if let Some(image) = cloud
                .find_baked_image(&fleet.name, &rollout.bake)
                .await
                .map_err(err)?
            {
                reporter.line(
                    &fleet.name,
                    &format!("reusing image {} baked from the same spec", image.id),
                );
                wait_image(cloud, &image.id, poll, stop).await?;
                return Ok(Event::ImageReady(image.id));
            }
            let request = BuilderRequest {
                source_ami: fleet.image.source_ami.clone(),
                instance_type: fleet.image.instance_type.clone(),
                subnet: fleet.instances.subnets[0].clone(),
                security_groups: fleet.instances.security_groups.clone(),
                user_data: fleet.image.provision.clone(),
                tags: Tags {
                    name: format!("{}-builder", rollout.group),
                    ..tags
                },
            };
            Ok(cloud
                .launch_builder(&request)
                .await
                .map(Event::BuilderLaunched)
                .map_err(err)?)
        }
        Action::CaptureImage { builder } => {
            wait_until(poll, BAKE_TIMEOUT, "builder to run", stop, || async {
                match cloud.instance_state(builder).await.map_err(err)? {
                    InstanceState::Running => Ok(Some(())),
                    InstanceState::Pending => Ok(None),
                    other => Err(format!("builder {builder} is {other:?} instead of running")),
                }
            })
            .await?;
            let name = image_name(fleet, rollout.seq);
            let image = cloud
                .create_image(builder, &name, &rollout.bake, &tags)
                .await
                .map_err(err)?;
            reporter.line(&fleet.name, &format!("creating image {image} (\"{name}\")"));
            wait_image(cloud, &image, poll, stop).await?;
            Ok(Event::ImageReady(image))
        }
        Action::TerminateBuilder { builder } => {
            cloud.terminate_instance(builder).await.map_err(err)?;
            Ok(Event::BuilderTerminated)
        }
        Action::CreateLaunchTemplateVersion { image } => {
            let request = LaunchRequest {
                template_name: fleet.name.clone(),
                image_id: image.clone(),
                instance_type: fleet.instances.instance_type.clone(),
                security_groups: fleet.instances.security_groups.clone(),
                user_data: fleet.instances.user_data.clone(),
                tags,
            };
            Ok(cloud
                .create_launch_template_version(&request)
                .await
                .map(Event::LaunchTemplateCreated)
                .map_err(err)?)
        }
        Action::CreateTargetGroup => {
            let vpc_id = cloud
                .vpc_of_subnets(&fleet.instances.subnets)
                .await
                .map_err(err)?;
            let request = TargetGroupRequest {
                name: rollout.group.clone(),
                vpc_id,
                port: fleet.traffic.port,
                health_check: fleet.traffic.health_check.clone(),
                deregistration_delay: fleet.traffic.deregistration_delay,
                tags,
            };
            Ok(cloud
                .create_target_group(&request)
                .await
                .map(Event::TargetGroupCreated)
                .map_err(err)?)
        }
        Action::CreateAlarms { target_group } => {
            let mut names = Vec::new();
            for gate in &fleet.rollout.gates {
                let GateCheck::Metric(metric) = &gate.check else {
                    continue;
                };
                let fill = |text: &str| {
                    fill_release_references(text, |name| match name {
                        "target_group" => target_group_dimension(target_group),
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
                cloud.put_alarm(&request).await.map_err(err)?;
                names.push(request.name);
            }
            Ok(Event::AlarmsCreated(names))
        }
        Action::ScaleUp => {
            cloud
                .scale_group(&rollout.group, fleet.instances.capacity)
                .await
                .map_err(err)?;
            Ok(Event::ScaledUp)
        }
        Action::ScaleToZero => {
            cloud.scale_group(&rollout.group, ZERO).await.map_err(err)?;
            Ok(Event::ScaledToZero)
        }
        Action::DeleteAlarms { alarms } => {
            for alarm in alarms {
                cloud.delete_alarm(alarm).await.map_err(err)?;
            }
            Ok(Event::AlarmsDeleted)
        }
        Action::CreateGroup {
            launch_template,
            target_group,
        } => {
            // An apply stopped between creating the group and recording it finds it here.
            if cloud.group(&rollout.group).await.map_err(err)?.is_some() {
                return Ok(Event::GroupCreated);
            }
            let request = GroupRequest {
                name: rollout.group.clone(),
                launch_template: launch_template.clone(),
                subnets: fleet.instances.subnets.clone(),
                target_group_arn: target_group.clone(),
                capacity: fleet.instances.capacity,
                health_check_grace: fleet.rollout.healthy_within,
                tags,
            };
            cloud.create_group(&request).await.map_err(err)?;
            Ok(Event::GroupCreated)
        }
        Action::WaitHealthy { target_group } => {
            let within = fleet.rollout.healthy_within;
            // The last count seen, so a timeout reports it without asking again.
            let last = std::sync::Mutex::new((0, 0));
            let waited = wait_until(poll, within, "instances to be healthy", stop, || async {
                let (healthy, wanted) = health(cloud, &rollout.group, target_group).await?;
                *last.lock().unwrap() = (healthy, wanted);
                Ok((healthy >= wanted && wanted > 0).then_some(()))
            })
            .await;
            match waited {
                Ok(()) => Ok(Event::Healthy),
                Err(Halt::Failed(_)) => {
                    let (healthy, wanted) = *last.lock().unwrap();
                    Err(Halt::Failed(format!(
                        "{healthy} of {wanted} instances healthy after {}",
                        show_duration(within)
                    )))
                }
                Err(halt) => Err(halt),
            }
        }
        Action::SetWeights { weights, percent } => {
            set_weights(cloud, &rollout.listener_arn, weights).await?;
            Ok(Event::WeightsSet(*percent))
        }
        Action::Observe { .. } => unreachable!("the engine observes steps itself"),
        Action::RetirePrevious { previous, keep } => {
            if let Some(previous) = previous {
                let drain = fleet.traffic.deregistration_delay;
                reporter.line(
                    &fleet.name,
                    &format!("draining {} for {}", previous.group, show_duration(drain)),
                );
                pause(drain, poll, stop).await?;
                if *keep {
                    // Kept with its target group, template version and alarms, so that
                    // `immune rollback` can scale it back up.
                    cloud
                        .scale_group(&previous.group, ZERO)
                        .await
                        .map_err(err)?;
                    reporter.line(
                        &fleet.name,
                        &format!("{} scaled to zero and kept for rollback", previous.group),
                    );
                } else {
                    delete_release(
                        cloud,
                        &previous.group,
                        &previous.alarms,
                        &previous.target_group,
                        poll,
                    )
                    .await?;
                }
            }
            Ok(Event::PreviousRetired)
        }
        Action::RestoreWeights { weights } => {
            set_weights(cloud, &rollout.listener_arn, weights).await?;
            Ok(Event::WeightsRestored)
        }
        Action::DeleteGroup => {
            delete_group(cloud, &rollout.group, poll).await?;
            Ok(Event::GroupDeleted)
        }
        Action::DeleteTargetGroup { target_group } => {
            cloud.delete_target_group(target_group).await.map_err(err)?;
            Ok(Event::TargetGroupDeleted)
        }
        Action::DeleteLaunchTemplateVersion { launch_template } => {
            cloud
                .delete_launch_template_version(launch_template)
                .await
                .map_err(err)?;
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
    Fut: Future<Output = Result<Option<T>, String>>,
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

async fn wait_image(
    cloud: &dyn Cloud,
    image: &str,
    poll: Duration,
    stop: &(dyn Fn() -> Option<Halt> + Sync),
) -> Result<(), Halt> {
    wait_until(
        poll,
        BAKE_TIMEOUT,
        "the image to become available",
        stop,
        || async {
            match cloud.image(image).await.map_err(|e| e.to_string())?.state {
                ImageState::Available => Ok(Some(())),
                ImageState::Pending => Ok(None),
                ImageState::Failed => Err(format!("image {image} failed to bake")),
            }
        },
    )
    .await
}

/// How many of the group's wanted instances are InService and healthy in its target group.
pub(super) async fn health(
    cloud: &dyn Cloud,
    group: &str,
    target_group: &str,
) -> Result<(usize, usize), String> {
    let status = cloud
        .group(group)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("Auto Scaling group {group} disappeared"))?;
    let targets = cloud
        .target_health(target_group)
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status.healthy_in(&targets),
        status.capacity.desired as usize,
    ))
}

/// Sets the weights in one call and reads them back: a listener that silently kept its
/// old weights must not be mistaken for a shifted one.
pub(super) async fn set_weights(
    cloud: &dyn Cloud,
    listener: &str,
    weights: &[Weight],
) -> Result<(), String> {
    cloud
        .set_listener_weights(listener, weights)
        .await
        .map_err(|e| e.to_string())?;
    let mut read: Vec<Weight> = cloud
        .listener_weights(listener)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|w| w.weight > 0)
        .collect();
    let mut wanted: Vec<Weight> = weights.iter().filter(|w| w.weight > 0).cloned().collect();
    read.sort_by(|a, b| a.target_group.cmp(&b.target_group));
    wanted.sort_by(|a, b| a.target_group.cmp(&b.target_group));
    if read != wanted {
        return Err(format!(
            "listener {listener} reads back weights {read:?} after setting {wanted:?}"
        ));
    }
    Ok(())
}

/// Deletes a retired release for good: its group (waiting until it is gone), its gate
/// alarms, then its target group.
pub(super) async fn delete_release(
    cloud: &dyn Cloud,
    group: &str,
    alarms: &[String],
    target_group: &str,
    poll: Duration,
) -> Result<(), String> {
    delete_group(cloud, group, poll).await?;
    for alarm in alarms {
        cloud.delete_alarm(alarm).await.map_err(|e| e.to_string())?;
    }
    cloud
        .delete_target_group(target_group)
        .await
        .map_err(|e| e.to_string())
}

async fn delete_group(cloud: &dyn Cloud, name: &str, poll: Duration) -> Result<(), String> {
    cloud.delete_group(name).await.map_err(|e| e.to_string())?;
    // Its target group can only be deleted once the group is gone. Deleting is the way
    // out of trouble, so it is never cut short.
    let never = || None;
    wait_until(
        poll,
        DELETE_TIMEOUT,
        "the Auto Scaling group to be deleted",
        &never,
        || async {
            Ok(cloud
                .group(name)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                .then_some(()))
        },
    )
    .await
    .map_err(|halt| match halt {
        Halt::Failed(message) => message,
        _ => unreachable!("deleting is never stopped"),
    })
}
