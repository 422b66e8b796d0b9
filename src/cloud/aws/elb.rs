//! Load balancer listeners and target groups (ELBv2).

use super::*;
use crate::cloud::survey::{listener_not_found, rule_not_found};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, AuthenticateOidcActionConfig, FixedResponseActionConfig,
    ForwardActionConfig, HostHeaderConditionConfig, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum, RuleCondition, Tag, TargetGroupAttribute,
    TargetGroupStickinessConfig, TargetGroupTuple, TargetHealthStateEnum, TargetTypeEnum,
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
        self.all_rules(listener_arn)
            .await?
            .iter()
            .find(|r| r.priority() == Some(wanted.as_str()))
            .map(|rule| rule.rule_arn().unwrap_or_default().to_string())
            .ok_or_else(|| rule_not_found(listener_arn, priority))
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
        Ok(weights_of(&self.route_actions(route_arn).await?))
    }

    pub(super) async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>> {
        Ok(stand_in_of(&self.route_actions(route_arn).await?))
    }

    /// Every route wanted, in a few calls: the load balancers by name (20 a call), the
    /// listeners of each, and all the rules of each listener that rules are wanted of
    /// (400 a page), each listener's read side by side. Routes found before (by the
    /// plan, for a release) are read by their ARN instead, when that still answers.
    pub(super) async fn routes(
        &self,
        wanted: &[RouteRef],
    ) -> CloudResult<BTreeMap<RouteRef, CloudResult<Route>>> {
        if let Some(found) = self.known_routes(wanted).await? {
            return Ok(found);
        }
        let found = self.look_for_routes(wanted).await?;
        self.route_arns.lock().unwrap().extend(
            found
                .iter()
                .filter_map(|(route, read)| Some((route.clone(), read.as_ref().ok()?.arn.clone()))),
        );
        Ok(found)
    }

    /// The routes wanted, when each was found before: its rule (or listener) read by ARN
    /// with the listener it is on, two small calls where looking for it reads all the
    /// rules of the listener. `None` when one is not known, or no longer answers as the
    /// configuration names it: gone (deleted with its listener or load balancer), at
    /// another priority, or its listener moved to another port. A rule that still
    /// answers at the wanted priority on that listener is the route: ELBv2 keeps
    /// priorities unique on a listener and never renames a load balancer.
    async fn known_routes(
        &self,
        wanted: &[RouteRef],
    ) -> CloudResult<Option<BTreeMap<RouteRef, CloudResult<Route>>>> {
        // Each known route with the listener it is on (itself, for a default action).
        let known: Option<Vec<(&RouteRef, String, String)>> = {
            let arns = self.route_arns.lock().unwrap();
            wanted
                .iter()
                .map(|route| {
                    let arn = arns.get(route)?.clone();
                    let on = match is_rule_arn(&arn) {
                        true => listener_of_rule(&arn)?,
                        false => arn.clone(),
                    };
                    Some((route, arn, on))
                })
                .collect()
        };
        let Some(known) = known.filter(|k| !k.is_empty() && k.len() <= 20) else {
            return Ok(None);
        };
        let rules: Vec<String> = known
            .iter()
            .filter(|(_, arn, _)| is_rule_arn(arn))
            .map(|(_, arn, _)| arn.clone())
            .collect();
        let listeners: Vec<String> = known
            .iter()
            .map(|(_, _, on)| on.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let gone = |e: &CloudError| code_of(e).is_some_and(|c| c.contains("NotFound"));
        let read_rules = async {
            if rules.is_empty() {
                return Ok(Vec::new());
            }
            self.elb
                .describe_rules()
                .set_rule_arns(Some(rules.clone()))
                .send()
                .await
                .map(|out| out.rules().to_vec())
                .map_err(|e| sdk_error("DescribeRules", e))
        };
        let read_listeners = async {
            self.elb
                .describe_listeners()
                .set_listener_arns(Some(listeners.clone()))
                .send()
                .await
                .map(|out| out.listeners().to_vec())
                .map_err(|e| sdk_error("DescribeListeners", e))
        };
        let (rules, listeners) = match tokio::join!(read_rules, read_listeners) {
            (Ok(rules), Ok(listeners)) => (rules, listeners),
            (Err(e), _) | (_, Err(e)) if gone(&e) => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let mut found = BTreeMap::new();
        for ((listener, priority), arn, on) in known {
            let Some(on) = listeners
                .iter()
                .find(|l| l.listener_arn() == Some(on.as_str()))
            else {
                return Ok(None);
            };
            let same_listener = match listener {
                ListenerRef::Arn(wanted) => on.listener_arn() == Some(wanted.as_str()),
                ListenerRef::LoadBalancer { port, .. } => on.port() == Some(i32::from(*port)),
            };
            if !same_listener {
                return Ok(None);
            }
            let actions = match priority {
                None => on.default_actions().to_vec(),
                Some(priority) => {
                    let wanted = priority.to_string();
                    match rules.iter().find(|r| r.rule_arn() == Some(arn.as_str())) {
                        Some(rule) if rule.priority() == Some(wanted.as_str()) => {
                            rule.actions().to_vec()
                        }
                        _ => return Ok(None),
                    }
                }
            };
            let route = Route {
                protocol: on.protocol().map(|p| p.as_str().to_string()),
                ..route_of(arn, &actions)
            };
            found.insert((listener.clone(), *priority), Ok(route));
        }
        Ok(Some(found))
    }

    async fn look_for_routes(
        &self,
        wanted: &[RouteRef],
    ) -> CloudResult<BTreeMap<RouteRef, CloudResult<Route>>> {
        let names: BTreeSet<&str> = wanted
            .iter()
            .filter_map(|(l, _)| match l {
                ListenerRef::LoadBalancer { name, .. } => Some(name.as_str()),
                ListenerRef::Arn(_) => None,
            })
            .collect();
        let mut load_balancers: BTreeMap<String, String> = BTreeMap::new();
        let names: Vec<&str> = names.into_iter().collect();
        for chunk in names.chunks(20) {
            match self.load_balancer_arns(chunk).await {
                Ok(found) => load_balancers.extend(found),
                // One unknown name fails the call: the others are asked one by one.
                Err(CloudError::NotFound(_)) => {
                    for name in chunk {
                        match self.load_balancer_arns(&[name]).await {
                            Ok(found) => load_balancers.extend(found),
                            Err(CloudError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Listeners: all of each load balancer, and those named by ARN.
        let by_balancer = futures_util::future::try_join_all(load_balancers.iter().map(
            |(name, arn)| async move {
                let out = self
                    .elb
                    .describe_listeners()
                    .load_balancer_arn(arn)
                    .page_size(400)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DescribeListeners", e))?;
                Ok::<_, CloudError>((name.clone(), out.listeners().to_vec()))
            },
        ));
        let arns: BTreeSet<&String> = wanted
            .iter()
            .filter_map(|(l, _)| match l {
                ListenerRef::Arn(arn) => Some(arn),
                ListenerRef::LoadBalancer { .. } => None,
            })
            .collect();
        let by_arn = futures_util::future::try_join_all(arns.into_iter().map(|arn| async move {
            let out = self
                .elb
                .describe_listeners()
                .listener_arns(arn)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeListeners", e));
            match out {
                Ok(out) => Ok(out.listeners().to_vec()),
                Err(e) if code_of(&e).is_some_and(|c| c.contains("NotFound")) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        }));
        let (by_balancer, by_arn) = tokio::try_join!(by_balancer, by_arn)?;
        let by_balancer: BTreeMap<String, Vec<aws_sdk_elasticloadbalancingv2::types::Listener>> =
            by_balancer.into_iter().collect();
        let by_arn: Vec<_> = by_arn.into_iter().flatten().collect();
        let listener_of = |listener: &ListenerRef| match listener {
            ListenerRef::Arn(arn) => by_arn
                .iter()
                .find(|l| l.listener_arn() == Some(arn.as_str())),
            ListenerRef::LoadBalancer { name, port } => by_balancer
                .get(name)
                .and_then(|ls| ls.iter().find(|l| l.port() == Some(i32::from(*port)))),
        };
        // Rules of every listener a rule is wanted of, all pages once.
        let ruled: BTreeSet<String> = wanted
            .iter()
            .filter(|(_, priority)| priority.is_some())
            .filter_map(|(l, _)| listener_of(l)?.listener_arn().map(str::to_string))
            .collect();
        let rules = futures_util::future::try_join_all(ruled.iter().map(|arn| async move {
            Ok::<_, CloudError>((arn.clone(), self.all_rules(arn).await?))
        }))
        .await?;
        let rules: BTreeMap<String, Vec<aws_sdk_elasticloadbalancingv2::types::Rule>> =
            rules.into_iter().collect();
        Ok(wanted
            .iter()
            .map(|route @ (listener, priority)| {
                let read = (|| {
                    let found =
                        listener_of(listener).ok_or_else(|| listener_not_found(listener))?;
                    let listener_arn = found.listener_arn().unwrap_or_default();
                    let (arn, actions) = match priority {
                        None => (listener_arn.to_string(), found.default_actions().to_vec()),
                        Some(priority) => {
                            let wanted = priority.to_string();
                            let rule = rules
                                .get(listener_arn)
                                .and_then(|rs| {
                                    rs.iter().find(|r| r.priority() == Some(wanted.as_str()))
                                })
                                .ok_or_else(|| rule_not_found(listener_arn, *priority))?;
                            (
                                rule.rule_arn().unwrap_or_default().to_string(),
                                rule.actions().to_vec(),
                            )
                        }
                    };
                    Ok(Route {
                        protocol: found.protocol().map(|p| p.as_str().to_string()),
                        ..route_of(arn, &actions)
                    })
                })();
                (route.clone(), read)
            })
            .collect())
    }

    /// The weights of many routes. Rules are read with all the rules of their listener
    /// (400 a page), the listeners side by side; listeners in calls of 20 ARNs. One
    /// unknown listener ARN fails a call, so such a call is asked again one at a time.
    pub(super) async fn route_weights(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeMap<String, CloudResult<Vec<Weight>>>> {
        let (rules, listeners): (Vec<String>, Vec<String>) =
            arns.iter().cloned().partition(|arn| is_rule_arn(arn));
        let mut found = BTreeMap::new();
        let of_rules: BTreeSet<String> = rules.iter().filter_map(|r| listener_of_rule(r)).collect();
        let read = futures_util::future::join_all(
            of_rules
                .iter()
                .map(|listener| async move { (listener.clone(), self.all_rules(listener).await) }),
        )
        .await;
        let mut actions: BTreeMap<String, Vec<Action>> = BTreeMap::new();
        for (listener, rules) in read {
            match rules {
                Ok(rules) => actions.extend(
                    rules
                        .into_iter()
                        .filter_map(|r| Some((r.rule_arn()?.to_string(), r.actions().to_vec()))),
                ),
                Err(e) if e.is_transient() => return Err(e),
                // A listener gone: its rules are not found.
                Err(_) => tracing::debug!("rules of {listener} not read"),
            }
        }
        for arn in rules {
            let read = actions
                .get(&arn)
                .map(|a| weights_of(a))
                .ok_or_else(|| CloudError::NotFound(format!("listener rule {arn}")));
            found.insert(arn, read);
        }
        for chunk in listeners.chunks(20) {
            match self.listener_actions(chunk).await {
                Ok(actions) => {
                    for arn in chunk {
                        let read = actions
                            .get(arn)
                            .map(|a| weights_of(a))
                            .ok_or_else(|| CloudError::NotFound(format!("listener {arn}")));
                        found.insert(arn.clone(), read);
                    }
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(_) => {
                    for arn in chunk {
                        match self.listener_weights(arn).await {
                            Err(e) if e.is_transient() => return Err(e),
                            read => {
                                found.insert(arn.clone(), read);
                            }
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Every rule of a listener, all pages.
    async fn all_rules(
        &self,
        listener_arn: &str,
    ) -> CloudResult<Vec<aws_sdk_elasticloadbalancingv2::types::Rule>> {
        let mut rules = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .elb
                .describe_rules()
                .listener_arn(listener_arn)
                .page_size(400)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| sdk_error("DescribeRules", e))?;
            rules.extend(out.rules().iter().cloned());
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(rules);
            }
        }
    }

    async fn listener_actions(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeMap<String, Vec<Action>>> {
        let out = self
            .elb
            .describe_listeners()
            .set_listener_arns(Some(arns.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeListeners", e))?;
        Ok(out
            .listeners()
            .iter()
            .filter_map(|l| Some((l.listener_arn()?.to_string(), l.default_actions().to_vec())))
            .collect())
    }

    /// The ARN of each load balancer named; a `NotFound` when one of them is not.
    async fn load_balancer_arns(&self, names: &[&str]) -> CloudResult<Vec<(String, String)>> {
        let out = self
            .elb
            .describe_load_balancers()
            .set_names(Some(names.iter().map(|n| n.to_string()).collect()))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeLoadBalancers", e))
            .map_err(|e| match code_of(&e) {
                Some(c) if c.contains("NotFound") => CloudError::NotFound(names.join(", ")),
                _ => e,
            })?;
        Ok(out
            .load_balancers()
            .iter()
            .filter_map(|lb| {
                Some((
                    lb.load_balancer_name()?.to_string(),
                    lb.load_balancer_arn()?.to_string(),
                ))
            })
            .collect())
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
        let actions = self.route_actions(route_arn).await?;
        self.set_route_actions(route_arn, with_terminal(actions, action))
            .await
    }

    /// One ModifyListener (default actions) or ModifyRule (a rule's actions; its
    /// conditions stay as they are) call that rewrites only the forward's target groups.
    /// Both calls replace the whole action list (ModifyListener and ModifyRule in the ELB
    /// API reference), so the list is read first and written back with everything else
    /// as it was: authenticate actions and their order, the forward's stickiness.
    pub(super) async fn set_listener_weights(
        &self,
        route_arn: &str,
        weights: &[Weight],
        stickiness: Option<Duration>,
    ) -> CloudResult<()> {
        let groups: Vec<TargetGroupTuple> = weights
            .iter()
            .map(|w| {
                TargetGroupTuple::builder()
                    .target_group_arn(&w.target_group)
                    .weight(i32::from(w.weight))
                    .build()
            })
            .collect();
        let actions = self.route_actions(route_arn).await?;
        let stickiness = match stickiness {
            // `stickiness = "off"`.
            Some(Duration::ZERO) => Some(
                TargetGroupStickinessConfig::builder()
                    .enabled(false)
                    .build(),
            ),
            Some(duration) => Some(
                TargetGroupStickinessConfig::builder()
                    .enabled(true)
                    .duration_seconds(duration.as_secs() as i32)
                    .build(),
            ),
            None => actions
                .iter()
                .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
                .and_then(|a| a.forward_config())
                .and_then(|f| f.target_group_stickiness_config())
                .cloned(),
        };
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .set_target_groups(Some(groups))
                    .set_target_group_stickiness_config(stickiness)
                    .build(),
            )
            .build();
        self.set_route_actions(route_arn, with_terminal(actions, forward))
            .await
    }

    async fn set_route_actions(&self, route_arn: &str, actions: Vec<Action>) -> CloudResult<()> {
        if is_rule_arn(route_arn) {
            self.elb
                .modify_rule()
                .rule_arn(route_arn)
                .set_actions(Some(actions))
                .send()
                .await
                .map_err(|e| sdk_error("ModifyRule", e))?;
        } else {
            self.elb
                .modify_listener()
                .listener_arn(route_arn)
                .set_default_actions(Some(actions))
                .send()
                .await
                .map_err(|e| sdk_error("ModifyListener", e))?;
        }
        Ok(())
    }

    /// See [`Cloud::add_health_rule`]. The rule takes the highest free priority of the
    /// listener, after the operator's own rules: no request matches it anyway. Its
    /// condition names the release and the lineage ([`health_rule_host`]), so a lost
    /// call's rule is found again by it.
    pub(super) async fn add_health_rule(
        &self,
        route_arn: &str,
        target_group: &str,
        name: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        let listener = route_listener(route_arn)?;
        let used: BTreeSet<u32> = self
            .all_rules(&listener)
            .await?
            .iter()
            .filter_map(|r| r.priority()?.parse().ok())
            .collect();
        // ListenerRule priorities are 1 to 50000 (CreateRule in the ELB API reference).
        // Fleets released side by side on one listener may pick the same one: the next
        // free one is tried then.
        let mut free = (1..=50_000u32).rev().filter(|p| !used.contains(p)).take(20);
        let condition = RuleCondition::builder()
            .field("host-header")
            .host_header_config(
                HostHeaderConditionConfig::builder()
                    .values(health_rule_host(name, &self.lineage))
                    .build(),
            )
            .build();
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(target_group)
                            .weight(1)
                            .build(),
                    )
                    .build(),
            )
            .build();
        let tags: Vec<Tag> = tags
            .pairs()
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let out = loop {
            let priority = free.next().ok_or_else(|| {
                CloudError::Invalid(format!(
                    "listener {listener} has no free rule priority for the health rule of {name}"
                ))
            })?;
            let created = self
                .elb
                .create_rule()
                .listener_arn(&listener)
                .priority(priority as i32)
                .conditions(condition.clone())
                .actions(forward.clone())
                .set_tags(Some(tags.clone()))
                .send()
                .await
                .map_err(|e| sdk_error("CreateRule", e));
            match created {
                Err(e) if code_of(&e) == Some("PriorityInUse") => continue,
                other => break other?,
            }
        };
        out.rules()
            .first()
            .and_then(|r| r.rule_arn())
            .map(str::to_string)
            .ok_or_else(|| CloudError::Invalid("CreateRule returned no rule".into()))
    }

    pub(super) async fn health_rule(
        &self,
        route_arn: &str,
        name: &str,
    ) -> CloudResult<Option<String>> {
        let host = health_rule_host(name, &self.lineage);
        let rules = self.all_rules(&route_listener(route_arn)?).await?;
        Ok(rules
            .iter()
            .find(|r| {
                r.conditions().iter().any(|c| {
                    c.host_header_config()
                        .is_some_and(|h| h.values().contains(&host))
                })
            })
            .and_then(|r| r.rule_arn())
            .map(str::to_string))
    }

    pub(super) async fn delete_health_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let gone = |e: &CloudError| code_of(e).is_some_and(|c| c.contains("NotFound"));
        let tags = match self.resource_tags(rule_arn).await {
            Ok(tags) => tags,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.ensure_ours(format!("listener rule {rule_arn}"), tag_pairs(&tags))?;
        match self
            .elb
            .delete_rule()
            .rule_arn(rule_arn)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteRule", e))
        {
            Err(e) if gone(&e) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every target group's name and ARN, 400 a page: DescribeTargetGroups fails a whole
    /// call for one unknown name or ARN, so the wanted ones are picked out of the listing.
    async fn all_target_groups(&self) -> CloudResult<Vec<(String, String)>> {
        let mut found = Vec::new();
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
            found.extend(out.target_groups().iter().filter_map(|t| {
                Some((
                    t.target_group_name()?.to_string(),
                    t.target_group_arn()?.to_string(),
                ))
            }));
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(found);
            }
        }
    }

    pub(super) async fn existing_target_groups(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeSet<String>> {
        if arns.is_empty() {
            return Ok(BTreeSet::new());
        }
        // A few are asked for by ARN, which fails the whole call when one is gone: then,
        // and for many, they are picked out of the listing of all.
        if arns.len() <= 20 {
            let out = self
                .elb
                .describe_target_groups()
                .set_target_group_arns(Some(arns.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error("DescribeTargetGroups", e));
            match out {
                Ok(out) => {
                    return Ok(out
                        .target_groups()
                        .iter()
                        .filter_map(|t| t.target_group_arn().map(str::to_string))
                        .collect())
                }
                Err(CloudError::Service { code, .. }) if code == "TargetGroupNotFound" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self
            .all_target_groups()
            .await?
            .into_iter()
            .map(|(_, arn)| arn)
            .filter(|arn| arns.contains(arn))
            .collect())
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
        // Right after the create, ELB may not find the target group yet (eventual
        // consistency): asked again, backing off, within the consistency window.
        retry_while(CONSISTENCY, CloudError::is_not_found, || async {
            self.elb
                .modify_target_group_attributes()
                .target_group_arn(&arn)
                .attributes(attribute.clone())
                .send()
                .await
                .map_err(|e| sdk_error("ModifyTargetGroupAttributes", e))
        })
        .await?;
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
        let tags = self.resource_tags(arn).await?;
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
        let tags = self.resource_tags(&arn).await?;
        let holder = self.holder(tag_pairs(&tags));
        Ok(Some((arn, holder)))
    }

    /// The target groups of these names that exist, with who holds each. One name is
    /// asked for; more are picked out of the listing of all (400 a page), since one
    /// unknown name fails a DescribeTargetGroups call.
    pub(super) async fn target_groups_named(
        &self,
        names: &[String],
    ) -> CloudResult<BTreeMap<String, (String, Holder)>> {
        if let [name] = names {
            return Ok(self
                .target_group_named(name)
                .await?
                .map(|found| (name.clone(), found))
                .into_iter()
                .collect());
        }
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let arns: BTreeMap<String, String> = self
            .all_target_groups()
            .await?
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(name, arn)| (arn, name))
            .collect();
        let found: Vec<String> = arns.keys().cloned().collect();
        Ok(self
            .target_group_holders(&found)
            .await?
            .into_iter()
            .filter_map(|(arn, holder)| Some((arns.get(&arn)?.clone(), (arn, holder))))
            .collect())
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

    /// An ELB resource's tags (a target group's, a rule's) as (key, value) pairs.
    async fn resource_tags(&self, arn: &str) -> CloudResult<Vec<(String, String)>> {
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
        match self.resource_tags(arn).await {
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

    pub(super) async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<Target>> {
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
                let health = d.target_health();
                let state = match health.and_then(|h| h.state()) {
                    Some(TargetHealthStateEnum::Healthy) => TargetState::Healthy,
                    Some(TargetHealthStateEnum::Initial) => TargetState::Initial,
                    Some(TargetHealthStateEnum::Unhealthy) => TargetState::Unhealthy,
                    Some(TargetHealthStateEnum::Draining) => TargetState::Draining,
                    Some(TargetHealthStateEnum::Unused) => TargetState::Unused,
                    Some(TargetHealthStateEnum::Unavailable) => TargetState::Unavailable,
                    _ => TargetState::Other,
                };
                let reason = health.and_then(|h| h.reason()).map(|r| r.as_str());
                Some(Target::new(&id, state, reason))
            })
            .collect())
    }
}

/// The weights a route's forward action gives; none when it forwards nowhere.
fn weights_of(actions: &[Action]) -> Vec<Weight> {
    let Some(action) = actions
        .iter()
        .find(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
    else {
        return Vec::new();
    };
    let weighted: Vec<Weight> = action
        .forward_config()
        .map(|f| f.target_groups())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| {
            Some(Weight {
                target_group: t.target_group_arn()?.to_string(),
                weight: t.weight().unwrap_or(1).clamp(0, 999) as u16,
            })
        })
        .collect();
    if !weighted.is_empty() {
        return weighted;
    }
    // A plain forward to one target group carries all the traffic.
    action
        .target_group_arn()
        .map(|arn| {
            vec![Weight {
                target_group: arn.to_string(),
                weight: 100,
            }]
        })
        .unwrap_or_default()
}

/// What a route that forwards nowhere answers: a fixed response or a redirect.
fn stand_in_of(actions: &[Action]) -> Option<StandIn> {
    if actions
        .iter()
        .any(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
    {
        return None;
    }
    let text = |s: Option<&str>| s.map(str::to_string);
    actions.iter().find_map(|a| match a.r#type() {
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
    })
}

/// A route read: its weights, and what it answers when it forwards nowhere.
fn route_of(arn: String, actions: &[Action]) -> Route {
    let weights = weights_of(actions);
    let stand_in = match weights.iter().all(|w| w.weight == 0) {
        true => stand_in_of(actions),
        false => None,
    };
    Route {
        arn,
        weights,
        stand_in,
        protocol: None,
    }
}

/// The route's actions with its terminal action (a forward, fixed response or redirect:
/// the last, and the only one of its kind) replaced by `terminal`, at the same order.
/// Everything before it stays as it was. An OIDC action read back carries no client
/// secret (DescribeListeners never returns it), so it is written with
/// UseExistingClientSecret (AuthenticateOidcActionConfig in the ELB API reference).
fn with_terminal(actions: Vec<Action>, terminal: Action) -> Vec<Action> {
    let is_terminal = |a: &Action| {
        matches!(
            a.r#type(),
            Some(
                ActionTypeEnum::Forward | ActionTypeEnum::FixedResponse | ActionTypeEnum::Redirect
            )
        )
    };
    let order = actions
        .iter()
        .find(|a| is_terminal(a))
        .and_then(|a| a.order());
    let mut kept: Vec<Action> = actions
        .into_iter()
        .filter(|a| !is_terminal(a))
        .map(|a| match a.authenticate_oidc_config() {
            Some(oidc) if oidc.client_secret().is_none() => {
                let oidc = AuthenticateOidcActionConfig::builder()
                    .set_issuer(oidc.issuer().map(str::to_string))
                    .set_authorization_endpoint(oidc.authorization_endpoint().map(str::to_string))
                    .set_token_endpoint(oidc.token_endpoint().map(str::to_string))
                    .set_user_info_endpoint(oidc.user_info_endpoint().map(str::to_string))
                    .set_client_id(oidc.client_id().map(str::to_string))
                    .set_session_cookie_name(oidc.session_cookie_name().map(str::to_string))
                    .set_scope(oidc.scope().map(str::to_string))
                    .set_session_timeout(oidc.session_timeout())
                    .set_authentication_request_extra_params(
                        oidc.authentication_request_extra_params().cloned(),
                    )
                    .set_on_unauthenticated_request(oidc.on_unauthenticated_request().cloned())
                    .use_existing_client_secret(true)
                    .build();
                let mut a = a;
                a.authenticate_oidc_config = Some(oidc);
                a
            }
            _ => a,
        })
        .collect();
    // Actions run by order; without one the list's own order counts.
    let order = order.or_else(|| kept.iter().filter_map(|a| a.order()).max().map(|o| o + 1));
    let mut terminal = terminal;
    terminal.order = order;
    kept.push(terminal);
    kept
}

/// The listener a route is on: itself, or the listener of a rule.
fn route_listener(route_arn: &str) -> CloudResult<String> {
    match is_rule_arn(route_arn) {
        true => listener_of_rule(route_arn)
            .ok_or_else(|| CloudError::Invalid(format!("{route_arn} is not a listener rule ARN"))),
        false => Ok(route_arn.to_string()),
    }
}

/// The listener of a rule ARN: `...:listener-rule/app/LB/ID/LISTENER/RULE` belongs to
/// `...:listener/app/LB/ID/LISTENER`.
fn listener_of_rule(rule_arn: &str) -> Option<String> {
    let (listener, _rule) = rule_arn.rsplit_once('/')?;
    Some(listener.replacen(":listener-rule/", ":listener/", 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rule_belongs_to_the_listener_its_arn_names() {
        assert_eq!(
            super::listener_of_rule(
                "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/web/50dc/f2f7/9683"
            )
            .as_deref(),
            Some("arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/50dc/f2f7")
        );
    }
}
