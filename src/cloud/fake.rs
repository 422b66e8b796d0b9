//! An in-memory cloud for unit and property tests of the planner and the rollout. It keeps
//! state like AWS does (so tests assert on outcomes, not on call scripts) and can be told
//! to report targets unhealthy; failures come from wrapping it in [`super::faulty`].

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct World {
    pub source_images: BTreeSet<String>,
    pub subnets: BTreeMap<String, String>,
    /// (load balancer name, port) -> listener ARN.
    pub listeners: BTreeMap<(String, u16), String>,
    /// (listener ARN, priority) -> rule ARN.
    pub rules: BTreeMap<(String, u32), String>,
    pub weights: BTreeMap<String, Vec<Weight>>,
    /// Routes that answer with a fixed response or redirect instead of forwarding.
    pub stand_ins: BTreeMap<String, StandIn>,
    /// Health rules by release: a rule forwarding to the release's target group for
    /// requests nobody sends (their weights are under the rule's ARN in `weights`).
    pub health_rules: BTreeMap<String, String>,
    /// Each route's group-level stickiness, once set.
    pub stickiness: BTreeMap<String, Duration>,
    pub instances: BTreeMap<String, InstanceState>,
    /// image id -> (fleet, bake)
    pub images: BTreeMap<String, (String, String)>,
    pub templates: BTreeMap<String, (String, Vec<i64>)>,
    pub target_groups: BTreeMap<String, String>,
    /// target group ARNs that are not immune's.
    pub foreign_target_groups: BTreeSet<String>,
    pub groups: BTreeMap<String, (GroupRequest, Vec<String>)>,
    pub unhealthy: BTreeSet<String>,
    pub alarms: BTreeMap<String, AlarmState>,
    /// Every alarm's transitions into ALARM: (alarm, RFC 3339 time).
    pub alarm_history: Vec<(String, String)>,
    /// When each alarm's state was last set (pulses and firings are in its history).
    pub alarm_changed: BTreeMap<String, String>,
    /// What an alarm's metric reads (its share of a threshold of 1.0, `> 1`), by alarm.
    pub metric: BTreeMap<String, f64>,
    /// Alarms that go into ALARM as soon as traffic moves to a target group that had
    /// none: a bad release caught at its first step.
    pub fire_on_shift: BTreeSet<String>,
    /// Alarms that go into ALARM and straight out again when traffic next moves.
    pub pulse_on_shift: BTreeSet<String>,
    /// Group name -> alarm that goes into ALARM when that group is created.
    pub fire_on_create: BTreeMap<String, String>,
    /// Group name -> alarm that goes into ALARM when that group is next scaled: a bad
    /// worker release caught once it holds capacity.
    pub fire_on_scale: BTreeMap<String, String>,
    /// Alarms immune created, by name.
    pub created_alarms: BTreeMap<String, AlarmRequest>,
    /// Names held by someone else, by resource as conflicts name it
    /// (`Auto Scaling group web-v002`, `launch template web`, ...).
    pub held: BTreeMap<String, Holder>,
    /// Builder instance id -> (fleet, Name tag).
    pub builders: BTreeMap<String, (String, String)>,
    /// Image id -> its name.
    pub image_names: BTreeMap<String, String>,
    /// (template id, version) -> version description.
    pub version_descriptions: BTreeMap<(String, i64), String>,
    /// Builders never power off: a provision script that hangs.
    pub builders_hang: bool,
    /// Builders' provision scripts fail: the bake wrapper says so on the console and
    /// leaves the builder running.
    pub provision_fails: bool,
    /// Console output by instance id.
    pub console: BTreeMap<String, String>,
    /// Every builder launched, as asked.
    pub builder_requests: Vec<BuilderRequest>,
    /// Every launch template version asked for.
    pub launch_requests: Vec<LaunchRequest>,
    /// Scaling policies by group.
    pub policies: BTreeMap<String, Vec<PolicyRequest>>,
    /// Termination lifecycle hooks: group -> heartbeat timeout.
    pub hooks: BTreeMap<String, Duration>,
    /// Instances a hooked group scaled in, in `Terminating:Wait`: instance -> (group,
    /// when the grace ends, looked at once). Their workers finish at the second look,
    /// unless `workers_hang`.
    pub leaving: BTreeMap<String, (String, std::time::Instant, bool)>,
    /// Leaving workers never complete their lifecycle action: cut off at the grace.
    pub workers_hang: bool,
    /// Instances whose workers completed the lifecycle action.
    pub jobs_finished: Vec<String>,
    /// Instances terminated because their grace ran out.
    pub cut_off: Vec<String>,
    /// Every capacity a group was given after it was created, in order.
    pub scaled: Vec<(String, Capacity)>,
    pub calls: Vec<&'static str>,
    /// The target groups asked whether they exist.
    pub target_groups_asked: Vec<String>,
    counter: u64,
}

impl World {
    /// Leaving workers finish their job by the second look at their group, or, when they
    /// hang, are terminated once their grace is over.
    fn settle_leaving(&mut self) {
        let now = std::time::Instant::now();
        let hang = self.workers_hang;
        let mut gone = Vec::new();
        for (id, (_, until, seen)) in self.leaving.iter_mut() {
            if !hang && *seen {
                gone.push((id.clone(), false));
            } else if now >= *until {
                gone.push((id.clone(), true));
            }
            *seen = true;
        }
        for (id, cut_off) in gone {
            self.leaving.remove(&id);
            self.instances.insert(id.clone(), InstanceState::Terminated);
            match cut_off {
                true => self.cut_off.push(id),
                false => self.jobs_finished.push(id),
            }
        }
    }

    /// Whether a route forwards to the target group, at any weight.
    fn in_use(&self, target_group: &str) -> bool {
        self.weights
            .values()
            .flatten()
            .any(|x| x.target_group == target_group)
    }

    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{:08x}", self.counter)
    }
}

#[derive(Debug, Default)]
pub struct FakeCloud {
    pub world: Mutex<World>,
}

impl FakeCloud {
    /// A cloud with one subnet, one source image and one load balancer `web` whose port-80
    /// listener forwards to a placeholder target group that immune does not own.
    pub fn with_surroundings() -> Self {
        let cloud = FakeCloud::default();
        {
            let mut w = cloud.world.lock().unwrap();
            w.source_images.insert("ami-source".into());
            w.subnets.insert("subnet-a".into(), "vpc-1".into());
            let listener = "arn:listener/web/80".to_string();
            w.listeners.insert(("web".into(), 80), listener.clone());
            w.foreign_target_groups.insert("arn:tg/placeholder".into());
            w.weights.insert(
                listener,
                vec![Weight {
                    target_group: "arn:tg/placeholder".into(),
                    weight: 100,
                }],
            );
        }
        cloud
    }

    /// Sets an alarm's state; going into ALARM is kept in its history.
    pub fn set_alarm(&self, name: &str, state: AlarmState) {
        let mut w = self.world.lock().unwrap();
        if state == AlarmState::Alarm && w.alarms.get(name) != Some(&AlarmState::Alarm) {
            w.alarm_history
                .push((name.to_string(), crate::state::now()));
        }
        if w.alarms.get(name) != Some(&state) {
            w.alarm_changed
                .insert(name.to_string(), crate::state::now());
        }
        w.alarms.insert(name.to_string(), state);
    }

    /// The alarm goes into ALARM when traffic next moves to a new target group.
    pub fn fire_on_next_shift(&self, name: &str) {
        self.world
            .lock()
            .unwrap()
            .fire_on_shift
            .insert(name.to_string());
    }

    /// The alarm goes into ALARM and out again, between two polls, when traffic next
    /// moves: only its history knows.
    pub fn pulse_on_next_shift(&self, name: &str) {
        self.world
            .lock()
            .unwrap()
            .pulse_on_shift
            .insert(name.to_string());
    }

    /// The alarm goes into ALARM and out again now.
    pub fn pulse_alarm(&self, name: &str) {
        let mut w = self.world.lock().unwrap();
        w.alarm_history
            .push((name.to_string(), crate::state::now()));
    }

    fn enter(&self, operation: &'static str) -> CloudResult<std::sync::MutexGuard<'_, World>> {
        let mut w = self.world.lock().unwrap();
        w.calls.push(operation);
        Ok(w)
    }
}

#[async_trait]
impl Cloud for FakeCloud {
    fn region(&self) -> String {
        "fake-1".into()
    }

    async fn source_image_exists(&self, image_id: &str) -> CloudResult<bool> {
        let w = self.enter("source_image_exists")?;
        Ok(w.source_images.contains(image_id) || w.images.contains_key(image_id))
    }

    async fn find_baked_image(&self, fleet: &str, bake: &str) -> CloudResult<Option<Image>> {
        let w = self.enter("find_baked_image")?;
        Ok(w.images
            .iter()
            .find(|(_, (f, b))| f == fleet && b == bake)
            .map(|(id, _)| Image {
                id: id.clone(),
                state: ImageState::Available,
            }))
    }

    async fn launch_builder(&self, request: &BuilderRequest) -> CloudResult<String> {
        let mut w = self.enter("launch_builder")?;
        if !w.source_images.contains(&request.source_ami) {
            return Err(CloudError::NotFound(format!(
                "image {}",
                request.source_ami
            )));
        }
        let id = w.id("i");
        w.instances.insert(id.clone(), InstanceState::Running);
        w.builders.insert(
            id.clone(),
            (request.tags.fleet.clone(), request.tags.name.clone()),
        );
        let console = if w.provision_fails {
            "installing nginx\nE: Unable to locate package nginx\nimmune-bake: provision failed with exit status 100\n"
        } else {
            "installing nginx\n"
        };
        w.console.insert(id.clone(), console.into());
        w.builder_requests.push(request.clone());
        Ok(id)
    }

    async fn instance_state(&self, instance_id: &str) -> CloudResult<InstanceState> {
        let mut w = self.enter("instance_state")?;
        let state = w
            .instances
            .get(instance_id)
            .copied()
            .ok_or_else(|| CloudError::NotFound(format!("instance {instance_id}")))?;
        // A builder whose script succeeded powers itself off: seen stopped from the
        // second look on.
        let finishes =
            w.builders.contains_key(instance_id) && !w.builders_hang && !w.provision_fails;
        if finishes && state == InstanceState::Running {
            w.instances
                .insert(instance_id.to_string(), InstanceState::Stopped);
        }
        Ok(state)
    }

    async fn console_output(&self, instance_id: &str) -> CloudResult<String> {
        let w = self.enter("console_output")?;
        Ok(w.console.get(instance_id).cloned().unwrap_or_default())
    }

    async fn put_scaling_policy(&self, request: &PolicyRequest) -> CloudResult<()> {
        let mut w = self.enter("put_scaling_policy")?;
        if !w.groups.contains_key(&request.group) {
            return Err(CloudError::NotFound(format!(
                "Auto Scaling group {}",
                request.group
            )));
        }
        let policies = w.policies.entry(request.group.clone()).or_default();
        policies.retain(|p| p.name != request.name);
        policies.push(request.clone());
        Ok(())
    }

    async fn put_termination_hook(&self, group: &str, grace: Duration) -> CloudResult<()> {
        let mut w = self.enter("put_termination_hook")?;
        if !w.groups.contains_key(group) {
            return Err(CloudError::NotFound(format!("Auto Scaling group {group}")));
        }
        w.hooks.insert(group.to_string(), grace);
        Ok(())
    }

    async fn create_image(
        &self,
        builder: &str,
        name: &str,
        bake: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        let mut w = self.enter("create_image")?;
        if !w.instances.contains_key(builder) {
            return Err(CloudError::NotFound(format!("instance {builder}")));
        }
        // Not an AWS rule, but the one immune keeps: an image is taken only from a
        // builder whose provision script finished and powered it off.
        if w.builders.contains_key(builder) && w.instances[builder] != InstanceState::Stopped {
            return Err(CloudError::Invalid(format!(
                "image taken from builder {builder} before it powered off"
            )));
        }
        if w.image_names.values().any(|n| n == name) {
            return Err(CloudError::Service {
                operation: "create_image",
                code: "InvalidAMIName.Duplicate".into(),
                message: name.to_string(),
            });
        }
        let id = w.id("ami");
        w.image_names.insert(id.clone(), name.to_string());
        w.images
            .insert(id.clone(), (tags.fleet.clone(), bake.to_string()));
        Ok(id)
    }

    async fn image(&self, image_id: &str) -> CloudResult<Image> {
        let w = self.enter("image")?;
        match w.images.contains_key(image_id) {
            true => Ok(Image {
                id: image_id.into(),
                state: ImageState::Available,
            }),
            false => Err(CloudError::NotFound(format!("image {image_id}"))),
        }
    }

    async fn existing_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        let w = self.enter("existing_images")?;
        Ok(ids
            .iter()
            .filter(|id| w.images.contains_key(*id))
            .cloned()
            .collect())
    }

    async fn terminate_instance(&self, instance_id: &str) -> CloudResult<()> {
        let mut w = self.enter("terminate_instance")?;
        match w.instances.get_mut(instance_id) {
            Some(state) => *state = InstanceState::Terminated,
            None => return Err(CloudError::NotFound(format!("instance {instance_id}"))),
        }
        Ok(())
    }

    async fn unknown_instance_types(&self, _types: &[String]) -> CloudResult<Vec<String>> {
        // Every instance type is offered and every key pair there: the preflight is
        // tested against LocalStack.
        let _w = self.enter("unknown_instance_types")?;
        Ok(Vec::new())
    }
    async fn key_pair_exists(&self, _name: &str) -> CloudResult<bool> {
        let _w = self.enter("key_pair_exists")?;
        Ok(true)
    }
    async fn vpc_of_subnets(&self, subnets: &[String]) -> CloudResult<String> {
        let w = self.enter("vpc_of_subnets")?;
        let first = subnets
            .first()
            .ok_or_else(|| CloudError::Invalid("no subnets".into()))?;
        w.subnets
            .get(first)
            .cloned()
            .ok_or_else(|| CloudError::NotFound(format!("subnet {first}")))
    }

    async fn resolve_listener(&self, listener: &ListenerRef) -> CloudResult<Listener> {
        let w = self.enter("resolve_listener")?;
        let arn = match listener {
            ListenerRef::Arn(arn) => w.weights.contains_key(arn).then(|| arn.clone()),
            ListenerRef::LoadBalancer { name, port } => {
                w.listeners.get(&(name.clone(), *port)).cloned()
            }
        };
        arn.map(|arn| Listener {
            arn,
            load_balancer_arn: "arn:lb/web".into(),
        })
        .ok_or_else(|| CloudError::NotFound(listener.to_string()))
    }

    async fn listener_rule(&self, listener_arn: &str, priority: u32) -> CloudResult<String> {
        let w = self.enter("listener_rule")?;
        w.rules
            .get(&(listener_arn.to_string(), priority))
            .cloned()
            .ok_or_else(|| {
                CloudError::NotFound(format!("rule with priority {priority} of {listener_arn}"))
            })
    }

    async fn listener_weights(&self, listener_arn: &str) -> CloudResult<Vec<Weight>> {
        let w = self.enter("listener_weights")?;
        w.weights
            .get(listener_arn)
            .cloned()
            .ok_or_else(|| CloudError::NotFound(format!("listener {listener_arn}")))
    }

    async fn set_listener_weights(
        &self,
        listener_arn: &str,
        weights: &[Weight],
        stickiness: Option<Duration>,
    ) -> CloudResult<()> {
        let mut w = self.enter("set_listener_weights")?;
        if let Some(stickiness) = stickiness {
            w.stickiness.insert(listener_arn.to_string(), stickiness);
        }
        for weight in weights {
            if !w.target_groups.contains_key(&weight.target_group)
                && !w.foreign_target_groups.contains(&weight.target_group)
            {
                return Err(CloudError::NotFound(format!(
                    "target group {}",
                    weight.target_group
                )));
            }
        }
        let before = w.weights.get(listener_arn).cloned().unwrap_or_default();
        let had_traffic = |tg: &str| before.iter().any(|b| b.target_group == tg && b.weight > 0);
        if weights
            .iter()
            .any(|x| x.weight > 0 && !had_traffic(&x.target_group))
        {
            let now = crate::state::now();
            for alarm in std::mem::take(&mut w.fire_on_shift) {
                w.alarm_history.push((alarm.clone(), now.clone()));
                w.alarms.insert(alarm, AlarmState::Alarm);
            }
            for alarm in std::mem::take(&mut w.pulse_on_shift) {
                w.alarm_history.push((alarm, now.clone()));
            }
        }
        w.stand_ins.remove(listener_arn);
        w.weights.insert(listener_arn.to_string(), weights.to_vec());
        Ok(())
    }

    async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>> {
        let w = self.enter("stand_in")?;
        Ok(w.stand_ins.get(route_arn).cloned())
    }

    async fn set_stand_in(&self, route_arn: &str, stand_in: &StandIn) -> CloudResult<()> {
        let mut w = self.enter("set_stand_in")?;
        w.weights.insert(route_arn.to_string(), Vec::new());
        w.stand_ins.insert(route_arn.to_string(), stand_in.clone());
        Ok(())
    }

    async fn add_health_rule(
        &self,
        _route_arn: &str,
        target_group: &str,
        name: &str,
        _tags: &Tags,
    ) -> CloudResult<String> {
        let mut w = self.enter("add_health_rule")?;
        let arn = format!("arn:listener-rule/health/{name}");
        w.weights.insert(
            arn.clone(),
            vec![Weight {
                target_group: target_group.to_string(),
                weight: 1,
            }],
        );
        w.health_rules.insert(name.to_string(), arn.clone());
        Ok(arn)
    }

    async fn health_rule(&self, _route_arn: &str, name: &str) -> CloudResult<Option<String>> {
        let w = self.enter("health_rule")?;
        Ok(w.health_rules.get(name).cloned())
    }

    async fn delete_health_rule(&self, rule_arn: &str) -> CloudResult<()> {
        let mut w = self.enter("delete_health_rule")?;
        w.weights.remove(rule_arn);
        w.health_rules.retain(|_, arn| arn != rule_arn);
        Ok(())
    }

    async fn create_launch_template_version(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<LaunchTemplateRef> {
        let mut w = self.enter("create_launch_template_version")?;
        let new_id = w.id("lt");
        let (id, versions) = w
            .templates
            .entry(request.template_name.clone())
            .or_insert_with(|| (new_id, Vec::new()));
        let version = versions.last().map_or(1, |v| v + 1);
        versions.push(version);
        let id = id.clone();
        w.version_descriptions
            .insert((id.clone(), version), request.tags.name.clone());
        w.launch_requests.push(request.clone());
        Ok(LaunchTemplateRef { id, version })
    }

    async fn delete_launch_template_version(
        &self,
        template: &LaunchTemplateRef,
    ) -> CloudResult<()> {
        let mut w = self.enter("delete_launch_template_version")?;
        for (id, versions) in w.templates.values_mut() {
            if *id == template.id {
                versions.retain(|v| *v != template.version);
            }
        }
        Ok(())
    }

    async fn delete_launch_template(&self, id: &str) -> CloudResult<()> {
        let mut w = self.enter("delete_launch_template")?;
        w.templates.retain(|_, (template, _)| template != id);
        Ok(())
    }

    async fn create_target_group(&self, request: &TargetGroupRequest) -> CloudResult<String> {
        let mut w = self.enter("create_target_group")?;
        let held = format!("target group {}", request.name);
        if w.target_groups.values().any(|n| *n == request.name) || w.held.contains_key(&held) {
            return Err(CloudError::Service {
                operation: "create_target_group",
                code: "DuplicateTargetGroupName".into(),
                message: request.name.clone(),
            });
        }
        let arn = format!("arn:tg/{}", request.name);
        w.target_groups.insert(arn.clone(), request.name.clone());
        Ok(arn)
    }

    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        let mut w = self.enter("delete_target_group")?;
        if w.foreign_target_groups.contains(arn) {
            return Err(CloudError::not_ours(
                format!("target group {arn}"),
                Holder::Foreign,
            ));
        }
        // In use at any weight, as AWS's DeleteTargetGroup refuses.
        if w.in_use(arn) {
            return Err(CloudError::Service {
                operation: "delete_target_group",
                code: "ResourceInUse".into(),
                message: format!("{arn} is in use by a listener"),
            });
        }
        w.target_groups.remove(arn);
        Ok(())
    }

    async fn create_group(&self, request: &GroupRequest) -> CloudResult<()> {
        let mut w = self.enter("create_group")?;
        let held = format!("Auto Scaling group {}", request.name);
        if w.groups.contains_key(&request.name) || w.held.contains_key(&held) {
            return Err(CloudError::Service {
                operation: "create_group",
                code: "AlreadyExists".into(),
                message: request.name.clone(),
            });
        }
        if let Some(alarm) = w.fire_on_create.remove(&request.name) {
            let now = crate::state::now();
            w.alarm_history.push((alarm.clone(), now));
            w.alarms.insert(alarm, AlarmState::Alarm);
        }
        let instances: Vec<String> = (0..request.capacity.desired).map(|_| w.id("i")).collect();
        for i in &instances {
            w.instances.insert(i.clone(), InstanceState::Running);
        }
        w.groups
            .insert(request.name.clone(), (request.clone(), instances));
        Ok(())
    }

    async fn groups(&self, names: &[String]) -> CloudResult<BTreeMap<String, GroupStatus>> {
        let mut w = self.enter("groups")?;
        w.settle_leaving();
        Ok(names
            .iter()
            .filter_map(|name| {
                let (request, instances) = w.groups.get(name)?;
                let leaving = w
                    .leaving
                    .iter()
                    .filter(|(_, (group, _, _))| group == name)
                    .map(|(i, _)| (i.clone(), false));
                let status = GroupStatus {
                    name: name.clone(),
                    capacity: request.capacity,
                    instances: instances
                        .iter()
                        .map(|i| (i.clone(), true))
                        .chain(leaving)
                        .collect(),
                    unhealthy: Default::default(),
                };
                Some((name.clone(), status))
            })
            .collect())
    }

    async fn existing_target_groups(&self, arns: &[String]) -> CloudResult<BTreeSet<String>> {
        let mut w = self.enter("existing_target_groups")?;
        w.target_groups_asked.extend(arns.iter().cloned());
        Ok(arns
            .iter()
            .filter(|a| w.target_groups.contains_key(*a) || w.foreign_target_groups.contains(*a))
            .cloned()
            .collect())
    }

    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<Target>> {
        let w = self.enter("target_health")?;
        // ELB health-checks only target groups a route forwards to (at any weight).
        let (state, reason) = if !w.in_use(target_group_arn) {
            (TargetState::Unused, Some("Target.NotInUse"))
        } else if w.unhealthy.contains(target_group_arn) {
            (TargetState::Unhealthy, Some("Target.ResponseCodeMismatch"))
        } else {
            (TargetState::Healthy, None)
        };
        Ok(w.groups
            .values()
            .filter(|(r, _)| r.target_group_arn.as_deref() == Some(target_group_arn))
            .flat_map(|(_, instances)| instances.iter().map(|i| Target::new(i, state, reason)))
            .collect())
    }

    async fn delete_group(&self, name: &str) -> CloudResult<()> {
        let mut w = self.enter("delete_group")?;
        let held = format!("Auto Scaling group {name}");
        if let Some(holder) = w.held.get(&held) {
            return Err(CloudError::not_ours(held, holder.clone()));
        }
        if let Some((_, instances)) = w.groups.remove(name) {
            // Deleting a group skips its lifecycle hooks, as ForceDelete does.
            let leaving: Vec<String> = w
                .leaving
                .iter()
                .filter(|(_, (group, _, _))| group == name)
                .map(|(i, _)| i.clone())
                .collect();
            for i in instances.into_iter().chain(leaving) {
                w.leaving.remove(&i);
                w.instances.insert(i, InstanceState::Terminated);
            }
        }
        w.hooks.remove(name);
        Ok(())
    }

    async fn scale_group(&self, name: &str, capacity: Capacity) -> CloudResult<()> {
        let mut w = self.enter("scale_group")?;
        let mut new_ids: Vec<String> = Vec::new();
        let current = w
            .groups
            .get(name)
            .map(|(_, instances)| instances.len() as u32)
            .ok_or_else(|| CloudError::NotFound(format!("Auto Scaling group {name}")))?;
        for _ in current..capacity.desired {
            new_ids.push(w.id("i"));
        }
        for i in &new_ids {
            w.instances.insert(i.clone(), InstanceState::Running);
        }
        if let Some(alarm) = w.fire_on_scale.remove(name) {
            let now = crate::state::now();
            w.alarm_history.push((alarm.clone(), now));
            w.alarms.insert(alarm, AlarmState::Alarm);
        }
        let grace = w.hooks.get(name).copied();
        let (request, instances) = w.groups.get_mut(name).expect("checked above");
        request.capacity = capacity;
        let removed = instances.split_off(instances.len().min(capacity.desired as usize));
        instances.extend(new_ids);
        for i in removed {
            match grace {
                // A hooked group's leaving instance waits for its worker.
                Some(grace) => {
                    let until = std::time::Instant::now() + grace;
                    w.leaving.insert(i, (name.to_string(), until, false));
                }
                None => {
                    w.instances.insert(i, InstanceState::Terminated);
                }
            }
        }
        w.scaled.push((name.to_string(), capacity));
        Ok(())
    }

    async fn fleet_images(&self, fleet: &str) -> CloudResult<Vec<BakedImage>> {
        let w = self.enter("fleet_images")?;
        // Ids grow with the counter, so they sort in creation order.
        Ok(w.images
            .iter()
            .filter(|(_, (f, _))| f == fleet)
            .map(|(id, _)| BakedImage {
                id: id.clone(),
                name: id.clone(),
                created: id.clone(),
            })
            .collect())
    }

    async fn deregister_image(&self, image_id: &str) -> CloudResult<()> {
        let mut w = self.enter("deregister_image")?;
        if w.source_images.contains(image_id) {
            return Err(CloudError::not_ours(
                format!("image {image_id}"),
                Holder::Foreign,
            ));
        }
        w.images.remove(image_id);
        w.image_names.remove(image_id);
        Ok(())
    }

    async fn alarms(&self, names: &[String]) -> CloudResult<BTreeMap<String, AlarmReading>> {
        let w = self.enter("alarms")?;
        Ok(names
            .iter()
            .filter_map(|n| {
                let state = match w.alarms.get(n) {
                    Some(state) => *state,
                    None if w.created_alarms.contains_key(n) => AlarmState::InsufficientData,
                    None => return None,
                };
                // As AWS's StateUpdatedTimestamp: every transition moves it.
                let since = w
                    .alarm_history
                    .iter()
                    .filter(|(alarm, _)| alarm == n)
                    .map(|(_, at)| at.clone())
                    .chain(w.alarm_changed.get(n).cloned())
                    .max_by_key(|at| crate::state::parse_time(at));
                let reading = AlarmReading {
                    state,
                    reason: format!("fake alarm {n} is {state:?}"),
                    since,
                    needs: None,
                };
                Some((n.clone(), reading))
            })
            .collect())
    }

    async fn alarm_transitions(
        &self,
        names: &[String],
        since: &str,
    ) -> CloudResult<Vec<AlarmTransition>> {
        let w = self.enter("alarm_transitions")?;
        let since = crate::state::parse_time(since)
            .ok_or_else(|| CloudError::Invalid(format!("`{since}` is not a time")))?;
        Ok(w.alarm_history
            .iter()
            .filter(|(name, at)| {
                names.contains(name) && crate::state::parse_time(at).is_some_and(|t| t >= since)
            })
            .map(|(alarm, at)| AlarmTransition {
                alarm: alarm.clone(),
                at: at.clone(),
                reason: format!("fake alarm {alarm} went into ALARM"),
            })
            .collect())
    }

    async fn alarm_metric_peak(
        &self,
        alarm: &str,
        _since: &str,
    ) -> CloudResult<Option<MetricPeak>> {
        let w = self.enter("alarm_metric_peak")?;
        Ok(w.alarms.contains_key(alarm).then(|| MetricPeak {
            value: w.metric.get(alarm).copied(),
            threshold: 1.0,
            comparison: crate::config::Comparison::Greater,
        }))
    }

    async fn put_alarm(&self, request: &AlarmRequest) -> CloudResult<()> {
        let mut w = self.enter("put_alarm")?;
        if w.alarms.contains_key(&request.name) && !w.created_alarms.contains_key(&request.name) {
            return Err(CloudError::not_ours(
                format!("alarm {}", request.name),
                Holder::Foreign,
            ));
        }
        w.created_alarms
            .insert(request.name.clone(), request.clone());
        Ok(())
    }

    async fn delete_alarm(&self, name: &str) -> CloudResult<()> {
        let mut w = self.enter("delete_alarm")?;
        if w.alarms.contains_key(name) && !w.created_alarms.contains_key(name) {
            return Err(CloudError::not_ours(
                format!("alarm {name}"),
                Holder::Foreign,
            ));
        }
        w.created_alarms.remove(name);
        w.alarms.remove(name);
        Ok(())
    }

    async fn claim_conflicts(&self, claim: &Claim) -> CloudResult<Vec<Conflict>> {
        let w = self.enter("claim_conflicts")?;
        let mut wanted = vec![
            format!("Auto Scaling group {}", claim.group),
            format!("launch template {}", claim.launch_template),
        ];
        if !claim.workers {
            wanted.push(format!("target group {}", claim.group));
        }
        wanted.extend(claim.alarms.iter().map(|a| format!("alarm {a}")));
        let mut conflicts: Vec<Conflict> = wanted
            .into_iter()
            .filter_map(|resource| {
                let holder = w.held.get(&resource)?.clone();
                Some(Conflict { resource, holder })
            })
            .collect();
        // A group or target group of this state's under the next name: a stale state.
        if w.groups.contains_key(&claim.group) {
            conflicts.push(Conflict {
                resource: format!("Auto Scaling group {}", claim.group),
                holder: Holder::Ours,
            });
        }
        if let Some(name) = &claim.image {
            if let Some((id, _)) = w.image_names.iter().find(|(_, n)| *n == name) {
                conflicts.push(Conflict {
                    resource: format!("image name \"{name}\" ({id})"),
                    holder: Holder::Ours,
                });
            }
        }
        Ok(conflicts)
    }

    async fn alarm_holders(&self, names: &[String]) -> CloudResult<Vec<(String, Holder)>> {
        let w = self.enter("alarm_holders")?;
        Ok(names
            .iter()
            .filter_map(|name| {
                let holder = if w.created_alarms.contains_key(name) {
                    Holder::Ours
                } else if w.alarms.contains_key(name) {
                    Holder::Foreign
                } else {
                    return None;
                };
                Some((name.clone(), holder))
            })
            .collect())
    }

    async fn group_holder(&self, name: &str) -> CloudResult<Option<Holder>> {
        let w = self.enter("group_holder")?;
        if let Some(holder) = w.held.get(&format!("Auto Scaling group {name}")) {
            return Ok(Some(holder.clone()));
        }
        Ok(w.groups.contains_key(name).then_some(Holder::Ours))
    }

    async fn target_group_named(&self, name: &str) -> CloudResult<Option<(String, Holder)>> {
        let w = self.enter("target_group_named")?;
        if let Some(holder) = w.held.get(&format!("target group {name}")) {
            return Ok(Some((format!("arn:tg/foreign/{name}"), holder.clone())));
        }
        Ok(w.target_groups
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(arn, _)| (arn.clone(), Holder::Ours)))
    }

    async fn builders(&self, fleet: &str) -> CloudResult<Vec<Builder>> {
        let w = self.enter("builders")?;
        Ok(w.builders
            .iter()
            .filter(|(id, (f, _))| {
                f == fleet && w.instances.get(*id) != Some(&InstanceState::Terminated)
            })
            .map(|(id, (_, name))| Builder {
                id: id.clone(),
                name: name.clone(),
            })
            .collect())
    }

    async fn image_named(&self, name: &str) -> CloudResult<Option<(Image, Holder)>> {
        let w = self.enter("image_named")?;
        Ok(w.image_names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| {
                let image = Image {
                    id: id.clone(),
                    state: ImageState::Available,
                };
                (image, Holder::Ours)
            }))
    }

    async fn launch_template_version_named(
        &self,
        template: &str,
        description: &str,
    ) -> CloudResult<Option<LaunchTemplateRef>> {
        let w = self.enter("launch_template_version_named")?;
        let Some((id, versions)) = w.templates.get(template) else {
            return Ok(None);
        };
        Ok(versions
            .iter()
            .find(|v| {
                w.version_descriptions
                    .get(&(id.clone(), **v))
                    .map(String::as_str)
                    == Some(description)
            })
            .map(|v| LaunchTemplateRef {
                id: id.clone(),
                version: *v,
            }))
    }
}
