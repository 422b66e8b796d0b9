//! Load balancer listeners and target groups (ELBv2).

use super::*;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, ForwardActionConfig, ProtocolEnum,
    RedirectActionConfig, RedirectActionStatusCodeEnum, Tag, TargetGroupAttribute,
    TargetGroupTuple, TargetHealthStateEnum, TargetTypeEnum,
};

fn tag_pairs(tags: &[(String, String)]) -> impl Iterator<Item = (Option<&str>, Option<&str>)> {
    tags.iter()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
}

impl Aws {
    pub(super) async fn resolve_listener(&self, listener: &ListenerRef) -> CloudResult<Listener> {
        let not_found = || CloudError::NotFound(listener.to_string());
        let listeners = match listener {
            ListenerRef::Arn(arn) => self
                .elb
                .describe_listeners()
                .listener_arns(arn)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeListeners", e)),
            ListenerRef::LoadBalancer { name, .. } => {
                let lbs = self
                    .elb
                    .describe_load_balancers()
                    .names(name)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeLoadBalancers", e))
                    .map_err(|e| match code_of(&e) {
                        Some(c) if c.contains("NotFound") => not_found(),
                        _ => e,
                    })?;
                let lb_arn = lbs
                    .load_balancers()
                    .first()
                    .and_then(|lb| lb.load_balancer_arn())
                    .ok_or_else(not_found)?
                    .to_string();
                self.elb
                    .describe_listeners()
                    .load_balancer_arn(lb_arn)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeListeners", e))
            }
        }
        .map_err(|e| match code_of(&e) {
            Some(c) if c.contains("NotFound") => not_found(),
            _ => e,
        })?;
        listeners
            .listeners()
            .iter()
            .find(|l| match listener {
                ListenerRef::Arn(arn) => l.listener_arn() == Some(arn.as_str()),
                ListenerRef::LoadBalancer { port, .. } => l.port() == Some(i32::from(*port)),
            })
            .map(|l| Listener {
                arn: l.listener_arn().unwrap_or_default().to_string(),
                load_balancer_arn: l.load_balancer_arn().unwrap_or_default().to_string(),
            })
            .ok_or_else(not_found)
    }

    pub(super) async fn listener_rule(
        &self,
        listener_arn: &str,
        priority: u32,
    ) -> CloudResult<String> {
        let wanted = priority.to_string();
        let mut marker = None;
        loop {
            let out = self
                .elb
                .describe_rules()
                .listener_arn(listener_arn)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeRules", e))?;
            if let Some(rule) = out
                .rules()
                .iter()
                .find(|r| r.priority() == Some(wanted.as_str()))
            {
                return Ok(rule.rule_arn().unwrap_or_default().to_string());
            }
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Err(CloudError::NotFound(format!(
                    "rule with priority {priority} of listener {listener_arn}"
                )));
            }
        }
    }

    /// The actions of a listener's default action or of a rule.
    async fn route_actions(&self, route_arn: &str) -> CloudResult<Vec<Action>> {
        if is_rule_arn(route_arn) {
            let not_found = || CloudError::NotFound(format!("listener rule {route_arn}"));
            let out = self
                .elb
                .describe_rules()
                .rule_arns(route_arn)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeRules", e))?;
            let rule = out.rules().first().ok_or_else(not_found)?;
            Ok(rule.actions().to_vec())
        } else {
            let not_found = || CloudError::NotFound(format!("listener {route_arn}"));
            let out = self
                .elb
                .describe_listeners()
                .listener_arns(route_arn)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeListeners", e))?;
            let listener = out.listeners().first().ok_or_else(not_found)?;
            Ok(listener.default_actions().to_vec())
        }
    }

    pub(super) async fn listener_weights(&self, route_arn: &str) -> CloudResult<Vec<Weight>> {
        let actions = self.route_actions(route_arn).await?;
        let Some(action) = actions
            .iter()
            .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
        else {
            return Ok(Vec::new());
        };
        let weighted: Vec<Weight> = action
            .forward_config()
            .map(|f| f.target_groups())
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                Some(Weight {
                    target_group: t.target_group_arn()?.to_string(),
                    weight: t.weight().unwrap_or(1).clamp(0, 100) as u8,
                })
            })
            .collect();
        if !weighted.is_empty() {
            return Ok(weighted);
        }
        // A plain forward to one target group carries all the traffic.
        Ok(action
            .target_group_arn()
            .map(|arn| {
                vec![Weight {
                    target_group: arn.to_string(),
                    weight: 100,
                }]
            })
            .unwrap_or_default())
    }

    pub(super) async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>> {
        let actions = self.route_actions(route_arn).await?;
        if actions
            .iter()
            .any(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
        {
            return Ok(None);
        }
        let text = |s: Option<&str>| s.map(str::to_string);
        Ok(actions.iter().find_map(|a| match a.r#type() {
            Some(ActionTypeEnum::FixedResponse) => {
                let c = a.fixed_response_config()?;
                Some(StandIn::FixedResponse {
                    status_code: c.status_code().unwrap_or("200").to_string(),
                    content_type: text(c.content_type()),
                    message_body: text(c.message_body()),
                })
            }
            Some(ActionTypeEnum::Redirect) => {
                let c = a.redirect_config()?;
                Some(StandIn::Redirect {
                    status_code: c
                        .status_code()
                        .map_or("HTTP_302", |s| s.as_str())
                        .to_string(),
                    protocol: text(c.protocol()),
                    host: text(c.host()),
                    port: text(c.port()),
                    path: text(c.path()),
                    query: text(c.query()),
                })
            }
            _ => None,
        }))
    }

    pub(super) async fn set_stand_in(
        &self,
        route_arn: &str,
        stand_in: &StandIn,
    ) -> CloudResult<()> {
        let action = match stand_in {
            StandIn::FixedResponse {
                status_code,
                content_type,
                message_body,
            } => Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code(status_code)
                        .set_content_type(content_type.clone())
                        .set_message_body(message_body.clone())
                        .build(),
                )
                .build(),
            StandIn::Redirect {
                status_code,
                protocol,
                host,
                port,
                path,
                query,
            } => Action::builder()
                .r#type(ActionTypeEnum::Redirect)
                .redirect_config(
                    RedirectActionConfig::builder()
                        .status_code(RedirectActionStatusCodeEnum::from(status_code.as_str()))
                        .set_protocol(protocol.clone())
                        .set_host(host.clone())
                        .set_port(port.clone())
                        .set_path(path.clone())
                        .set_query(query.clone())
                        .build(),
                )
                .build(),
        };
        self.set_route_action(route_arn, action).await
    }

    /// One ModifyListener (default action) or ModifyRule (a rule's action; its conditions
    /// stay as they are) call.
    pub(super) async fn set_listener_weights(
        &self,
        route_arn: &str,
        weights: &[Weight],
    ) -> CloudResult<()> {
        let groups = weights
            .iter()
            .map(|w| {
                TargetGroupTuple::builder()
                    .target_group_arn(&w.target_group)
                    .weight(i32::from(w.weight))
                    .build()
            })
            .collect();
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .set_target_groups(Some(groups))
                    .build(),
            )
            .build();
        self.set_route_action(route_arn, action).await
    }

    async fn set_route_action(&self, route_arn: &str, action: Action) -> CloudResult<()> {
        if is_rule_arn(route_arn) {
            self.elb
                .modify_rule()
                .rule_arn(route_arn)
                .actions(action)
                .send()
                .await
                .map_err(|e| sdk_error("ModifyRule", e))?;
        } else {
            self.elb
                .modify_listener()
                .listener_arn(route_arn)
                .default_actions(action)
                .send()
                .await
                .map_err(|e| sdk_error("ModifyListener", e))?;
        }
        Ok(())
    }

    /// DescribeTargetGroups fails a whole call for one unknown ARN, so every target group
    /// is listed (400 a page) and the wanted ones picked out.
    pub(super) async fn existing_target_groups(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        if arns.is_empty() {
            return Ok(found);
        }
        let mut marker = None;
        loop {
            let out = self
                .elb
                .describe_target_groups()
                .page_size(400)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTargetGroups", e))?;
            found.extend(
                out.target_groups()
                    .iter()
                    .filter_map(|t| t.target_group_arn())
                    .filter(|arn| arns.iter().any(|a| a == arn))
                    .map(str::to_string),
            );
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    pub(super) async fn create_target_group(
        &self,
        request: &TargetGroupRequest,
    ) -> CloudResult<String> {
        let tags = request
            .tags
            .pairs()
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let check = &request.health_check;
        let out = self
            .elb
            .create_target_group()
            .name(&request.name)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(request.port))
            .vpc_id(&request.vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_path(&check.path)
            .health_check_interval_seconds(check.interval.as_secs().clamp(5, 300) as i32)
            .healthy_threshold_count(check.healthy_threshold as i32)
            .unhealthy_threshold_count(check.unhealthy_threshold as i32)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateTargetGroup", e));
        let arn = match out {
            Err(e) if code_of(&e) == Some("DuplicateTargetGroupName") => {
                self.adopt_target_group(request).await?.ok_or(e)?
            }
            other => other?
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .ok_or_else(|| {
                    CloudError::Invalid("CreateTargetGroup returned no target group".into())
                })?
                .to_string(),
        };
        let attribute = TargetGroupAttribute::builder()
            .key("deregistration_delay.timeout_seconds")
            .value(request.deregistration_delay.as_secs().min(3600).to_string())
            .build();
        self.elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(attribute)
            .send()
            .await
            .map_err(|e| sdk_error("ModifyTargetGroupAttributes", e))?;
        Ok(arn)
    }

    /// A target group of this name that immune created for the same fleet and release:
    /// the one an apply created before it stopped without recording it. Anything else
    /// under the name is left alone and the duplicate name reported.
    async fn adopt_target_group(
        &self,
        request: &TargetGroupRequest,
    ) -> CloudResult<Option<String>> {
        let out = self
            .elb
            .describe_target_groups()
            .names(&request.name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTargetGroups", e))?;
        let Some(arn) = out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
        else {
            return Ok(None);
        };
        let tags = self.target_group_tags(arn).await?;
        let has = |key: &str, value: &str| {
            tags.iter()
                .any(|(k, v)| k.as_str() == key && v.as_str() == value)
        };
        let ours = self.holder(tag_pairs(&tags)) == Holder::Ours
            && has(TAG_FLEET, &request.tags.fleet)
            && has(TAG_RELEASE, &request.tags.release);
        Ok(ours.then(|| arn.to_string()))
    }

    /// The target group of this name, if it exists, with who holds it.
    pub(super) async fn target_group_named(
        &self,
        name: &str,
    ) -> CloudResult<Option<(String, Holder)>> {
        let out = self
            .elb
            .describe_target_groups()
            .names(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTargetGroups", e));
        let arn = match out {
            Ok(out) => out
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .map(str::to_string),
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => None,
            Err(e) => return Err(e),
        };
        let Some(arn) = arn else {
            return Ok(None);
        };
        let tags = self.target_group_tags(&arn).await?;
        let holder = self.holder(tag_pairs(&tags));
        Ok(Some((arn, holder)))
    }

    /// Who holds each of these target groups (DescribeTags takes 20 ARNs a call).
    pub(super) async fn target_group_holders(
        &self,
        arns: &[String],
    ) -> CloudResult<Vec<(String, Holder)>> {
        let mut holders = Vec::new();
        for chunk in arns.chunks(20) {
            let out = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTags", e))?;
            for description in out.tag_descriptions() {
                let tags = description.tags().iter().map(|t| (t.key(), t.value()));
                holders.push((
                    description.resource_arn().unwrap_or_default().to_string(),
                    self.holder(tags),
                ));
            }
        }
        Ok(holders)
    }

    /// The target group's tags as (key, value) pairs.
    async fn target_group_tags(&self, arn: &str) -> CloudResult<Vec<(String, String)>> {
        let out = self
            .elb
            .describe_tags()
            .resource_arns(arn)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTags", e))?;
        Ok(out
            .tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .map(|t| {
                let text = |s: Option<&str>| s.unwrap_or_default().to_string();
                (text(t.key()), text(t.value()))
            })
            .collect())
    }

    pub(super) async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        match self.target_group_tags(arn).await {
            Ok(tags) => self.ensure_ours(format!("target group {arn}"), tag_pairs(&tags))?,
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self
            .elb
            .delete_target_group()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteTargetGroup", e))
        {
            Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub(super) async fn target_health(
        &self,
        target_group_arn: &str,
    ) -> CloudResult<Vec<(String, TargetState)>> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target()?.id()?.to_string();
                let state = match d.target_health().and_then(|h| h.state()) {
                    Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
                    Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
                    Some(TargetHealthStateEnum::Unhealthy) => TargetState::Unhealthy,
                    Some(TargetHealthStateEnum::Draining) => TargetState::Draining,
                    _ => TargetState::Other,
                };
                Some((id, state))
            })
            .collect())
    }
}
