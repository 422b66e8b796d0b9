//! A cloud that fails a share of calls the way AWS does on a bad day, over any other
//! cloud (as mountpoint-s3's failure client does): throttling and 5xx before the call
//! reaches the service, and timeouts after it took effect, when only the answer is lost.
//! Tests run whole releases through it; `IMMUNE_INJECT_FAULTS` puts it under the real
//! binary for fault-injection runs against LocalStack.

use super::*;
use std::sync::{Arc, Mutex};

pub struct Faulty {
    inner: Arc<dyn Cloud>,
    /// Share of calls that fail, 0.0 to 1.0.
    rate: f64,
    rng: Mutex<u64>,
    /// Failures asked for by name: the next calls of an AWS operation fail this many
    /// times, transiently (a timeout) or for good (AWS says no).
    scripted: Mutex<BTreeMap<&'static str, Script>>,
    /// Calls failed so far, by operation, for tests to show faults were injected.
    pub injected: Mutex<Vec<&'static str>>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Cloud>, rate: f64, seed: u64) -> Self {
        Faulty {
            inner,
            rate,
            rng: Mutex::new(seed.max(1)),
            scripted: Mutex::new(BTreeMap::new()),
            injected: Mutex::new(Vec::new()),
        }
    }

    /// A cloud that fails only the calls scripted with [`Faulty::fail`] and
    /// [`Faulty::refuse`].
    pub fn scripted(inner: Arc<dyn Cloud>) -> Self {
        Faulty::new(inner, 0.0, 1)
    }

    /// The next `times` calls of the AWS `operation` (`CreateAutoScalingGroup`) time out.
    pub fn fail(&self, operation: &'static str, times: u32) {
        self.script(operation, 0, times, true);
    }

    /// After `skip` calls that succeed, the next `times` calls of `operation` time out.
    pub fn fail_after(&self, operation: &'static str, skip: u32, times: u32) {
        self.script(operation, skip, times, true);
    }

    /// The next `times` calls of the AWS `operation` are refused for good.
    pub fn refuse(&self, operation: &'static str, times: u32) {
        self.script(operation, 0, times, false);
    }

    /// No more scripted failures.
    pub fn heal(&self) {
        self.scripted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn script(&self, operation: &'static str, skip: u32, times: u32, transient: bool) {
        self.scripted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                operation,
                Script {
                    skip,
                    times,
                    transient,
                },
            );
    }

    /// Reads `IMMUNE_INJECT_FAULTS=RATE[:SEED]`, e.g. `0.1:7`.
    pub fn from_env() -> Option<(f64, u64)> {
        let text = std::env::var("IMMUNE_INJECT_FAULTS").ok()?;
        let (rate, seed) = text.split_once(':').unwrap_or((&text, "1"));
        Some((rate.parse().ok()?, seed.parse().unwrap_or(1)))
    }

    /// xorshift64: deterministic for a seed, no dependency.
    fn next(&self) -> f64 {
        let mut x = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x % 1_000_000) as f64 / 1_000_000.0
    }

    /// Whether this call fails, and how.
    fn roll(&self, operation: &'static str) -> Option<Fault> {
        if let Some(script) = self
            .scripted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(operation)
        {
            if script.skip > 0 {
                script.skip -= 1;
            } else if script.times > 0 {
                script.times -= 1;
                return Some(if script.transient {
                    Fault::TimedOut
                } else {
                    Fault::Refused
                });
            }
        }
        if self.rate <= 0.0 || self.next() >= self.rate {
            return None;
        }
        self.injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(operation);
        Some(match (self.next() * 3.0) as u32 {
            0 => Fault::Throttled,
            1 => Fault::Unavailable,
            _ => Fault::LostAnswer,
        })
    }

    async fn call<T, F>(&self, operation: &'static str, call: F) -> CloudResult<T>
    where
        F: Future<Output = CloudResult<T>>,
    {
        match self.roll(operation) {
            None => call.await,
            Some(Fault::Throttled) => Err(CloudError::Service {
                operation,
                code: "Throttling".into(),
                message: "Rate exceeded (injected)".into(),
            }),
            Some(Fault::Unavailable) => Err(CloudError::Service {
                operation,
                code: "ServiceUnavailable".into(),
                message: "Service unavailable (injected)".into(),
            }),
            Some(Fault::TimedOut) => Err(CloudError::Transport {
                operation,
                message: "operation timed out (injected)".into(),
            }),
            Some(Fault::Refused) => Err(CloudError::Service {
                operation,
                code: "ValidationError".into(),
                message: "refused (injected)".into(),
            }),
            Some(Fault::LostAnswer) => {
                // The request reached AWS and did its work; the answer never came back.
                let _ = call.await;
                Err(CloudError::Transport {
                    operation,
                    message: "operation timed out (injected, after the call took effect)".into(),
                })
            }
        }
    }
}

/// Scripted failures of one operation.
struct Script {
    skip: u32,
    times: u32,
    transient: bool,
}

enum Fault {
    Throttled,
    Unavailable,
    LostAnswer,
    TimedOut,
    Refused,
}

use std::future::Future;

#[async_trait]
impl Cloud for Faulty {
    fn region(&self) -> String {
        self.inner.region()
    }
    async fn source_image_exists(&self, image_id: &str) -> CloudResult<bool> {
        self.call("DescribeImages", self.inner.source_image_exists(image_id))
            .await
    }
    async fn find_baked_image(&self, fleet: &str, bake: &str) -> CloudResult<Option<Image>> {
        self.call("DescribeImages", self.inner.find_baked_image(fleet, bake))
            .await
    }
    async fn launch_builder(&self, request: &BuilderRequest) -> CloudResult<String> {
        self.call("RunInstances", self.inner.launch_builder(request))
            .await
    }
    async fn instance_state(&self, instance_id: &str) -> CloudResult<InstanceState> {
        self.call("DescribeInstances", self.inner.instance_state(instance_id))
            .await
    }
    async fn console_output(&self, instance_id: &str) -> CloudResult<String> {
        self.call("GetConsoleOutput", self.inner.console_output(instance_id))
            .await
    }
    async fn create_image(
        &self,
        builder: &str,
        name: &str,
        bake: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.call(
            "CreateImage",
            self.inner.create_image(builder, name, bake, tags),
        )
        .await
    }
    async fn image(&self, image_id: &str) -> CloudResult<Image> {
        self.call("DescribeImages", self.inner.image(image_id))
            .await
    }
    async fn existing_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        self.call("DescribeImages", self.inner.existing_images(ids))
            .await
    }
    async fn terminate_instance(&self, instance_id: &str) -> CloudResult<()> {
        self.call(
            "TerminateInstances",
            self.inner.terminate_instance(instance_id),
        )
        .await
    }
    async fn unknown_instance_types(&self, types: &[String]) -> CloudResult<Vec<String>> {
        self.call(
            "DescribeInstanceTypes",
            self.inner.unknown_instance_types(types),
        )
        .await
    }
    async fn key_pair_exists(&self, name: &str) -> CloudResult<bool> {
        self.call("DescribeKeyPairs", self.inner.key_pair_exists(name))
            .await
    }
    async fn vpc_of_subnets(&self, subnets: &[String]) -> CloudResult<String> {
        self.call("DescribeSubnets", self.inner.vpc_of_subnets(subnets))
            .await
    }
    async fn resolve_listener(&self, listener: &ListenerRef) -> CloudResult<Listener> {
        self.call("DescribeListeners", self.inner.resolve_listener(listener))
            .await
    }
    async fn listener_rule(&self, listener_arn: &str, priority: u32) -> CloudResult<String> {
        self.call(
            "DescribeRules",
            self.inner.listener_rule(listener_arn, priority),
        )
        .await
    }
    async fn listener_weights(&self, route_arn: &str) -> CloudResult<Vec<Weight>> {
        self.call("DescribeListeners", self.inner.listener_weights(route_arn))
            .await
    }
    async fn set_listener_weights(
        &self,
        route_arn: &str,
        weights: &[Weight],
        stickiness: Option<Duration>,
    ) -> CloudResult<()> {
        self.call(
            "ModifyListener",
            self.inner
                .set_listener_weights(route_arn, weights, stickiness),
        )
        .await
    }
    async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>> {
        self.call("DescribeListeners", self.inner.stand_in(route_arn))
            .await
    }
    async fn set_stand_in(&self, route_arn: &str, stand_in: &StandIn) -> CloudResult<()> {
        self.call(
            "ModifyListener",
            self.inner.set_stand_in(route_arn, stand_in),
        )
        .await
    }
    async fn add_health_rule(
        &self,
        route_arn: &str,
        target_group: &str,
        name: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.call(
            "CreateRule",
            self.inner
                .add_health_rule(route_arn, target_group, name, tags),
        )
        .await
    }
    async fn health_rule(&self, route_arn: &str, name: &str) -> CloudResult<Option<String>> {
        self.call("DescribeRules", self.inner.health_rule(route_arn, name))
            .await
    }
    async fn delete_health_rule(&self, rule_arn: &str) -> CloudResult<()> {
        self.call("DeleteRule", self.inner.delete_health_rule(rule_arn))
            .await
    }
    async fn create_launch_template_version(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<LaunchTemplateRef> {
        self.call(
            "CreateLaunchTemplateVersion",
            self.inner.create_launch_template_version(request),
        )
        .await
    }
    async fn delete_launch_template_version(
        &self,
        template: &LaunchTemplateRef,
    ) -> CloudResult<()> {
        self.call(
            "DeleteLaunchTemplateVersions",
            self.inner.delete_launch_template_version(template),
        )
        .await
    }
    async fn delete_launch_template(&self, id: &str) -> CloudResult<()> {
        self.call(
            "DeleteLaunchTemplate",
            self.inner.delete_launch_template(id),
        )
        .await
    }
    async fn create_target_group(&self, request: &TargetGroupRequest) -> CloudResult<String> {
        self.call("CreateTargetGroup", self.inner.create_target_group(request))
            .await
    }
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        self.call("DeleteTargetGroup", self.inner.delete_target_group(arn))
            .await
    }
    async fn create_group(&self, request: &GroupRequest) -> CloudResult<()> {
        self.call("CreateAutoScalingGroup", self.inner.create_group(request))
            .await
    }
    async fn put_scaling_policy(&self, request: &PolicyRequest) -> CloudResult<()> {
        self.call("PutScalingPolicy", self.inner.put_scaling_policy(request))
            .await
    }
    async fn put_termination_hook(&self, group: &str, grace: Duration) -> CloudResult<()> {
        self.call(
            "PutLifecycleHook",
            self.inner.put_termination_hook(group, grace),
        )
        .await
    }
    async fn groups(&self, names: &[String]) -> CloudResult<BTreeMap<String, GroupStatus>> {
        self.call("DescribeAutoScalingGroups", self.inner.groups(names))
            .await
    }
    async fn existing_target_groups(&self, arns: &[String]) -> CloudResult<BTreeSet<String>> {
        self.call(
            "DescribeTargetGroups",
            self.inner.existing_target_groups(arns),
        )
        .await
    }
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<Target>> {
        self.call(
            "DescribeTargetHealth",
            self.inner.target_health(target_group_arn),
        )
        .await
    }
    async fn delete_group(&self, name: &str) -> CloudResult<()> {
        self.call("DeleteAutoScalingGroup", self.inner.delete_group(name))
            .await
    }
    async fn scale_group(&self, name: &str, capacity: Capacity) -> CloudResult<()> {
        self.call(
            "UpdateAutoScalingGroup",
            self.inner.scale_group(name, capacity),
        )
        .await
    }
    async fn fleet_images(&self, fleet: &str) -> CloudResult<Vec<BakedImage>> {
        self.call("DescribeImages", self.inner.fleet_images(fleet))
            .await
    }
    async fn deregister_image(&self, image_id: &str) -> CloudResult<()> {
        self.call("DeregisterImage", self.inner.deregister_image(image_id))
            .await
    }
    async fn alarms(&self, names: &[String]) -> CloudResult<BTreeMap<String, AlarmReading>> {
        self.call("DescribeAlarms", self.inner.alarms(names)).await
    }
    async fn alarm_transitions(
        &self,
        names: &[String],
        since: &str,
    ) -> CloudResult<Vec<AlarmTransition>> {
        self.call(
            "DescribeAlarmHistory",
            self.inner.alarm_transitions(names, since),
        )
        .await
    }
    async fn alarm_metric_peak(&self, alarm: &str, since: &str) -> CloudResult<Option<MetricPeak>> {
        self.call(
            "GetMetricStatistics",
            self.inner.alarm_metric_peak(alarm, since),
        )
        .await
    }
    async fn put_alarm(&self, request: &AlarmRequest) -> CloudResult<()> {
        self.call("PutMetricAlarm", self.inner.put_alarm(request))
            .await
    }
    async fn delete_alarm(&self, name: &str) -> CloudResult<()> {
        self.call("DeleteAlarms", self.inner.delete_alarm(name))
            .await
    }
    async fn claim_conflicts(&self, claim: &Claim) -> CloudResult<Vec<Conflict>> {
        self.call("DescribeTags", self.inner.claim_conflicts(claim))
            .await
    }
    async fn alarm_holders(&self, names: &[String]) -> CloudResult<Vec<(String, Holder)>> {
        self.call("DescribeAlarms", self.inner.alarm_holders(names))
            .await
    }
    async fn group_holder(&self, name: &str) -> CloudResult<Option<Holder>> {
        self.call("DescribeAutoScalingGroups", self.inner.group_holder(name))
            .await
    }
    async fn target_group_named(&self, name: &str) -> CloudResult<Option<(String, Holder)>> {
        self.call("DescribeTargetGroups", self.inner.target_group_named(name))
            .await
    }
    async fn builders(&self, fleet: &str) -> CloudResult<Vec<Builder>> {
        self.call("DescribeInstances", self.inner.builders(fleet))
            .await
    }
    async fn image_named(&self, name: &str) -> CloudResult<Option<(Image, Holder)>> {
        self.call("DescribeImages", self.inner.image_named(name))
            .await
    }
    async fn launch_template_version_named(
        &self,
        template: &str,
        description: &str,
    ) -> CloudResult<Option<LaunchTemplateRef>> {
        self.call(
            "DescribeLaunchTemplateVersions",
            self.inner
                .launch_template_version_named(template, description),
        )
        .await
    }
}
