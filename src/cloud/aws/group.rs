//! Auto Scaling groups.

use super::*;
use aws_sdk_autoscaling::types::{
    InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification,
    MixedInstancesPolicy, PredefinedMetricSpecification, Tag, TargetTrackingConfiguration,
};

impl Aws {
    pub(super) async fn create_group(&self, request: &GroupRequest) -> CloudResult<()> {
        let tags = request
            .tags
            .pairs()
            .into_iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .propagate_at_launch(true)
                    .resource_id(&request.name)
                    .resource_type("auto-scaling-group")
                    .build()
            })
            .collect();
        let template = LaunchTemplateSpecification::builder()
            .launch_template_id(&request.launch_template.id)
            .version(request.launch_template.version.to_string())
            .build();
        let create = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&request.name);
        // With spot, the template is launched through a mixed instances policy whose
        // overrides list the instance types; without, it is the group's template.
        let create = match &request.spot {
            Some(spot) => create.mixed_instances_policy(
                MixedInstancesPolicy::builder()
                    .launch_template(
                        LaunchTemplate::builder()
                            .launch_template_specification(template)
                            .set_overrides(Some(
                                spot.instance_types
                                    .iter()
                                    .map(|t| {
                                        LaunchTemplateOverrides::builder().instance_type(t).build()
                                    })
                                    .collect(),
                            ))
                            .build(),
                    )
                    .instances_distribution(
                        InstancesDistribution::builder()
                            .on_demand_base_capacity(spot.on_demand_base as i32)
                            .on_demand_percentage_above_base_capacity(spot.on_demand_percent as i32)
                            .spot_allocation_strategy("price-capacity-optimized")
                            .build(),
                    )
                    .build(),
            ),
            None => create.launch_template(template),
        };
        create
            .min_size(request.capacity.min as i32)
            .max_size(request.capacity.max as i32)
            .desired_capacity(request.capacity.desired as i32)
            .vpc_zone_identifier(request.subnets.join(","))
            .set_target_group_arns(request.target_group_arn.clone().map(|arn| vec![arn]))
            // Workers have no load balancer to judge them: EC2's status checks do.
            .health_check_type(match request.target_group_arn {
                Some(_) => "ELB",
                None => "EC2",
            })
            .health_check_grace_period(request.health_check_grace.as_secs() as i32)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateAutoScalingGroup", e))?;
        Ok(())
    }

    pub(super) async fn put_scaling_policy(&self, request: &PolicyRequest) -> CloudResult<()> {
        if !self.owned_group(&request.group).await? {
            return Err(CloudError::NotFound(format!(
                "Auto Scaling group {}",
                request.group
            )));
        }
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(request.metric.predefined().into())
            .set_resource_label(request.resource_label.clone())
            .build();
        let tracking = TargetTrackingConfiguration::builder()
            .predefined_metric_specification(metric)
            .target_value(request.target)
            .build();
        self.autoscaling
            .put_scaling_policy()
            .auto_scaling_group_name(&request.group)
            .policy_name(&request.name)
            .policy_type("TargetTrackingScaling")
            .target_tracking_configuration(tracking)
            .send()
            .await
            .map_err(|e| sdk_error("PutScalingPolicy", e))?;
        Ok(())
    }

    pub(super) async fn put_termination_hook(
        &self,
        group: &str,
        grace: Duration,
    ) -> CloudResult<()> {
        if !self.owned_group(group).await? {
            return Err(CloudError::NotFound(format!("Auto Scaling group {group}")));
        }
        // CONTINUE once the grace is over: a worker that never answers must not keep its
        // group alive, and the release does not depend on how that worker ended.
        self.autoscaling
            .put_lifecycle_hook()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(TERMINATION_HOOK)
            .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
            .heartbeat_timeout(grace.as_secs() as i32)
            .default_result("CONTINUE")
            .send()
            .await
            .map_err(|e| sdk_error("PutLifecycleHook", e))?;
        Ok(())
    }

    /// The groups of these names that exist: DescribeAutoScalingGroups takes at most 100
    /// names a call, and each batch is paged (50 a page unless asked for the most, 100).
    async fn described_groups(
        &self,
        names: &[String],
    ) -> CloudResult<Vec<aws_sdk_autoscaling::types::AutoScalingGroup>> {
        let mut found = Vec::new();
        for batch in names.chunks(100) {
            let mut token = None;
            loop {
                let out = self
                    .autoscaling
                    .describe_auto_scaling_groups()
                    .set_auto_scaling_group_names(Some(batch.to_vec()))
                    .max_records(100)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeAutoScalingGroups", e))?;
                found.extend(out.auto_scaling_groups().iter().cloned());
                token = out.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }

    pub(super) async fn groups(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, GroupStatus>> {
        let count = |n: Option<i32>| n.unwrap_or(0).max(0) as u32;
        let mut found = BTreeMap::new();
        for g in self.described_groups(names).await? {
            let Some(name) = g.auto_scaling_group_name() else {
                continue;
            };
            let status = GroupStatus {
                name: name.to_string(),
                capacity: Capacity {
                    min: count(g.min_size()),
                    max: count(g.max_size()),
                    desired: count(g.desired_capacity()),
                },
                instances: g
                    .instances()
                    .iter()
                    .filter_map(|i| {
                        let in_service = i.lifecycle_state()
                            == Some(&aws_sdk_autoscaling::types::LifecycleState::InService);
                        Some((i.instance_id()?.to_string(), in_service))
                    })
                    .collect(),
                unhealthy: g
                    .instances()
                    .iter()
                    .filter(|i| i.health_status() == Some("Unhealthy"))
                    .filter_map(|i| i.instance_id().map(str::to_string))
                    .collect(),
            };
            found.insert(name.to_string(), status);
        }
        Ok(found)
    }

    /// Who holds each of the groups named that exists.
    pub(super) async fn group_holders(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, Holder>> {
        Ok(self
            .described_groups(names)
            .await?
            .iter()
            .filter_map(|g| {
                let holder = self.holder(g.tags().iter().map(|t| (t.key(), t.value())));
                Some((g.auto_scaling_group_name()?.to_string(), holder))
            })
            .collect())
    }

    /// Who holds the group of this name, if it exists.
    pub(super) async fn group_holder(&self, name: &str) -> CloudResult<Option<Holder>> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeAutoScalingGroups", e))?;
        Ok(out
            .auto_scaling_groups()
            .first()
            .map(|g| self.holder(g.tags().iter().map(|t| (t.key(), t.value())))))
    }

    /// Whether the group exists; an error when it exists and is not this configuration's.
    async fn owned_group(&self, name: &str) -> CloudResult<bool> {
        match self.group_holder(name).await? {
            None => Ok(false),
            Some(Holder::Ours) => Ok(true),
            Some(other) => Err(CloudError::not_ours(
                format!("Auto Scaling group {name}"),
                other,
            )),
        }
    }

    pub(super) async fn delete_group(&self, name: &str) -> CloudResult<()> {
        if !self.owned_group(name).await? {
            return Ok(());
        }
        self.autoscaling
            .delete_auto_scaling_group()
            .auto_scaling_group_name(name)
            .force_delete(true)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteAutoScalingGroup", e))?;
        Ok(())
    }

    pub(super) async fn scale_group(&self, name: &str, capacity: Capacity) -> CloudResult<()> {
        if !self.owned_group(name).await? {
            return Err(CloudError::NotFound(format!("Auto Scaling group {name}")));
        }
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(capacity.min as i32)
            .max_size(capacity.max as i32)
            .desired_capacity(capacity.desired as i32)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateAutoScalingGroup", e))?;
        Ok(())
    }
}
