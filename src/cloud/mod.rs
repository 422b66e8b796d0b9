//! Everything immune asks of AWS, in the words of the domain. The engine only talks to
//! this trait: [`aws::Aws`] carries it out through the SDK, [`fake::FakeCloud`] in memory
//! for unit and property tests.

pub mod aws;
pub mod fake;
pub mod faulty;
pub mod survey;

use crate::config::{
    Capacity, Comparison, HealthCheck, ListenerRef, Metadata, RootVolume, ScalingMetric, Spot,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The tags on everything immune creates. Ownership is by lineage: immune modifies or
/// deletes only what carries its own state's `immune:lineage`, so two configurations (or
/// a state that was moved without its history) never touch each other's resources.
pub const TAG_MANAGED: &str = "immune:managed";
pub const TAG_LINEAGE: &str = "immune:lineage";
pub const TAG_FLEET: &str = "immune:fleet";
pub const TAG_RELEASE: &str = "immune:release";
/// On images: the hash of the image spec, so a release whose image did not change reuses it.
pub const TAG_BAKE: &str = "immune:bake";
/// On builder instances: `builder`, so a builder left by a crash is found again.
pub const TAG_ROLE: &str = "immune:role";
/// The lifecycle hook of a worker fleet's groups: a worker that learns it is leaving
/// finishes its job and completes the lifecycle action of this hook.
pub const TERMINATION_HOOK: &str = "immune-termination";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// The state's lineage: whose resource this is.
    pub lineage: String,
    pub fleet: String,
    pub release: String,
    /// The resource's own name (`web-v002`), shown as `Name` in the console.
    pub name: String,
    /// The operator's tags (`default_tags`, and the instances' `tags` where they go).
    /// The configuration cannot set immune's own keys, so these never overwrite them.
    pub extra: BTreeMap<String, String>,
}

impl Tags {
    pub fn pairs(&self) -> Vec<(String, String)> {
        let own = [
            ("Name", self.name.clone()),
            (TAG_MANAGED, "true".into()),
            (TAG_LINEAGE, self.lineage.clone()),
            (TAG_FLEET, self.fleet.clone()),
            (TAG_RELEASE, self.release.clone()),
        ];
        let mut pairs: Vec<(String, String)> = self
            .extra
            .iter()
            .filter(|(k, _)| !own.iter().any(|(o, _)| o == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.extend(own.into_iter().map(|(k, v)| (k.to_string(), v)));
        pairs
    }
}

/// Who holds a resource, read from its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Holder {
    /// This configuration's state (same lineage).
    Ours,
    /// Another immune state: another directory, a namespace, or a state that was
    /// replaced instead of migrated. `None` for resources made before lineage tags.
    OtherState { lineage: Option<String> },
    /// Not made by immune at all.
    Foreign,
}

impl Holder {
    /// Reads the holder from a resource's tags as (key, value) pairs. `lineage` is the
    /// state's; `legacy` also claims what an immune from before lineage tags made
    /// (`immune:managed` without a lineage), for a state upgraded from then.
    pub fn of<'a>(
        tags: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
        lineage: &str,
        legacy: bool,
    ) -> Holder {
        let mut managed = false;
        let mut found = None;
        for (k, v) in tags {
            match (k, v) {
                (Some(TAG_MANAGED), Some("true")) => managed = true,
                (Some(TAG_LINEAGE), Some(v)) => found = Some(v.to_string()),
                _ => {}
            }
        }
        match (managed, found) {
            (true, Some(l)) if l == lineage => Holder::Ours,
            (true, None) if legacy => Holder::Ours,
            (true, lineage) => Holder::OtherState { lineage },
            (false, _) => Holder::Foreign,
        }
    }

    /// Who, in words: `another immune configuration (state lineage 1b2c...)`.
    pub fn describe(&self) -> String {
        match self {
            Holder::Ours => "this configuration".into(),
            Holder::OtherState { lineage: Some(l) } => {
                format!("another immune configuration (state lineage {l})")
            }
            Holder::OtherState { lineage: None } => {
                "another immune configuration (made before lineage tags)".into()
            }
            Holder::Foreign => "something not created by immune".into(),
        }
    }
}

/// A name this configuration needs that someone else holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// `Auto Scaling group web-v002`, `launch template web`, ...
    pub resource: String,
    pub holder: Holder,
}

impl Conflict {
    pub fn describe(&self) -> String {
        format!("{} is held by {}", self.resource, self.holder.describe())
    }
}

/// The names one release would take, checked before anything is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Auto Scaling group and target group share the release's name.
    pub group: String,
    /// A worker fleet's release: it makes no target group, so none of the name is in
    /// its way.
    pub workers: bool,
    pub launch_template: String,
    /// The per-release alarms of metric gates.
    pub alarms: Vec<String>,
    /// The image name, when the release bakes one.
    pub image: Option<String>,
    /// The route the fleet's traffic goes through, with the target groups it forwards to
    /// now: one of another configuration's means two configurations share the route.
    pub route: Option<(String, Vec<String>)>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CloudError {
    #[error("{0} not found")]
    NotFound(String),
    /// The resource exists but is not this configuration's: never modified or deleted.
    #[error("{} is held by {}; immune never modifies or deletes it", .0.resource, .0.holder.describe())]
    NotOurs(Box<Conflict>),
    #[error("{operation} failed: {code}: {message}")]
    Service {
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("{operation} failed: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    /// No credentials were found, or AWS rejected them: asking again will not help.
    #[error("{operation} failed: no usable AWS credentials: {message}")]
    Credentials {
        operation: &'static str,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type CloudResult<T> = Result<T, CloudError>;

impl CloudError {
    pub fn not_ours(resource: impl Into<String>, holder: Holder) -> CloudError {
        CloudError::NotOurs(Box::new(Conflict {
            resource: resource.into(),
            holder,
        }))
    }

    /// AWS does not know the resource (now): `NotFound`, or a service code such as
    /// `InvalidInstanceID.NotFound` or `TargetGroupNotFound`. For something created a
    /// moment ago that means "not yet" (see [`CONSISTENCY`]).
    pub fn is_not_found(&self) -> bool {
        match self {
            CloudError::NotFound(_) => true,
            CloudError::Service { code, .. } => code.contains("NotFound"),
            _ => false,
        }
    }

    /// A fault that may pass if asked again: throttling, a 5xx, a timeout or a lost
    /// connection. Everything else is an answer that asking again will not change.
    pub fn is_transient(&self) -> bool {
        match self {
            CloudError::Transport { .. } => true,
            CloudError::Service { code, .. } => is_transient_code(code),
            _ => false,
        }
    }
}

/// How long after a create a NotFound for what was created means "not yet": EC2, ELB
/// and Auto Scaling are eventually consistent, and a describe right after a create may
/// not find it (EC2 API reference, "Eventual consistency in the Amazon EC2 API",
/// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html). Past it,
/// NotFound means gone.
pub const CONSISTENCY: Duration = Duration::from_secs(5 * 60);

/// How long after the fact a namespace's metrics reach CloudWatch. Elastic Load
/// Balancing publishes its metrics in 60-second intervals ("CloudWatch metrics for your
/// Application Load Balancer", https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-cloudwatch-metrics.html;
/// the same for Network Load Balancers): an alarm on them cannot see a minute that has
/// not been published.
pub fn publication_delay(namespace: &str) -> Duration {
    match namespace {
        "AWS/ApplicationELB" | "AWS/NetworkELB" => Duration::from_secs(60),
        _ => Duration::ZERO,
    }
}

/// Asks again while AWS answers a read with a transient fault, backing off, for at most
/// `budget`. Only for calls that change nothing: a create whose answer was lost must be
/// looked for, not repeated (the engine does that).
pub async fn retry_reads<T, F, Fut>(budget: Duration, read: F) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CloudResult<T>>,
{
    retry_while(budget, CloudError::is_transient, read).await
}

/// Asks again while `again` says the answer may change (a transient fault, a resource
/// AWS does not show yet), backing off from 100 ms to 5 s, for at most `budget`.
pub async fn retry_while<T, F, Fut>(
    budget: Duration,
    again: impl Fn(&CloudError) -> bool,
    mut call: F,
) -> CloudResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CloudResult<T>>,
{
    let start = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if again(&e) && start.elapsed() < budget => {
                tracing::info!("asking again: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// AWS error codes that mean "not now" rather than "no".
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "SlowDown"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "Unavailable"
            | "InternalError"
            | "InternalFailure"
            | "InternalServiceError"
            | "InternalServerError"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "RequestExpired"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "IDPCommunicationError"
    ) || code.starts_with('5')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Pending,
    Available,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub state: ImageState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchTemplateRef {
    pub id: String,
    pub version: i64,
}

/// A builder powers itself off when its provision script has finished (its
/// instance-initiated shutdown stops it), which is how immune knows the image can be taken.
#[derive(Debug, Clone)]
pub struct BuilderRequest {
    pub source_ami: String,
    pub instance_type: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub metadata: Metadata,
    pub user_data: Option<String>,
    pub tags: Tags,
}

#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub template_name: String,
    pub image_id: String,
    pub instance_type: String,
    pub security_groups: Vec<String>,
    pub user_data: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    pub root_volume: Option<RootVolume>,
    pub metadata: Metadata,
    /// On the template, its instances and their volumes.
    pub tags: Tags,
}

#[derive(Debug, Clone)]
pub struct TargetGroupRequest {
    pub name: String,
    pub vpc_id: String,
    pub port: u16,
    pub health_check: HealthCheck,
    pub deregistration_delay: Duration,
    pub tags: Tags,
}

#[derive(Debug, Clone)]
pub struct GroupRequest {
    pub name: String,
    pub launch_template: LaunchTemplateRef,
    pub subnets: Vec<String>,
    /// A web fleet's group registers its instances here and takes the load balancer's
    /// health checks; a worker fleet's has none and is checked by EC2.
    pub target_group_arn: Option<String>,
    pub capacity: Capacity,
    pub health_check_grace: Duration,
    /// Several instance types and spot capacity: a mixed instances policy.
    pub spot: Option<Spot>,
    /// Propagated to the instances.
    pub tags: Tags,
}

/// A target tracking policy for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRequest {
    pub group: String,
    pub name: String,
    pub metric: ScalingMetric,
    pub target: f64,
    /// For `requests_per_target`: `app/<lb>/<id>/targetgroup/<tg>/<id>`.
    pub resource_label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub name: String,
    pub capacity: Capacity,
    /// Instance id and whether Auto Scaling reports it `InService`.
    pub instances: Vec<(String, bool)>,
    /// Instances Auto Scaling found unhealthy (for a group behind a target group, by the
    /// load balancer's health check) and will replace.
    pub unhealthy: BTreeSet<String>,
}

impl GroupStatus {
    /// How many of the group's instances are `InService`: a worker fleet's health.
    pub fn in_service(&self) -> usize {
        self.instances.iter().filter(|(_, s)| *s).count()
    }

    /// How many are `InService` and not found unhealthy by Auto Scaling: the health
    /// the group itself reports, read without asking its target group.
    pub fn in_service_healthy(&self) -> usize {
        self.instances
            .iter()
            .filter(|(id, s)| *s && !self.unhealthy.contains(id))
            .count()
    }

    /// How many of the group's instances are InService and healthy in its target group.
    pub fn healthy_in(&self, targets: &[Target]) -> usize {
        self.instances
            .iter()
            .filter(|(id, in_service)| {
                *in_service
                    && targets
                        .iter()
                        .any(|t| &t.id == id && t.state == TargetState::Healthy)
            })
            .count()
    }

    /// The targets of the group's instances that are not healthy, in words by state and
    /// reason (`1 initial (Elb.InitialHealthChecking), 1 unhealthy
    /// (Target.ResponseCodeMismatch)`), failures first; empty when there are none.
    pub fn unhealthy_in(&self, targets: &[Target]) -> String {
        let mut counts: BTreeMap<(bool, String), usize> = BTreeMap::new();
        for (id, _) in &self.instances {
            let target = targets.iter().find(|t| &t.id == id);
            let (waiting, what) = match target {
                Some(t) if t.state == TargetState::Healthy => continue,
                Some(t) => (t.waiting(), t.describe()),
                // Auto Scaling registers an instance once it is launched: not yet.
                None => (true, "not registered yet".to_string()),
            };
            *counts.entry((waiting, what)).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((_, what), n)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One target of a target group as ELB reports it (TargetHealthDescription in the ELB
/// API reference, https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The instance id.
    pub id: String,
    pub state: TargetState,
    /// ELB's reason code (`Elb.InitialHealthChecking`, `Target.NotInUse`, ...), when
    /// it gives one.
    pub reason: Option<String>,
}

impl Target {
    pub fn new(id: &str, state: TargetState, reason: Option<&str>) -> Target {
        Target {
            id: id.to_string(),
            state,
            reason: reason.map(str::to_string),
        }
    }

    /// Whether the target may still become healthy by itself: its first health checks
    /// are running (`initial`), it is leaving (`draining`), or its target group is not
    /// health-checked yet (`unused` with `Target.NotRegistered` or `Target.NotInUse`:
    /// ELB checks only target groups that a listener or rule forwards to). `unhealthy`
    /// and `unused` with `Target.InvalidState` (a stopped or terminated instance) are
    /// failures; a health wait still waits them out (Auto Scaling replaces instances,
    /// an application may boot slowly), and says which.
    pub fn waiting(&self) -> bool {
        match self.state {
            TargetState::Initial | TargetState::Draining => true,
            TargetState::Unused => matches!(
                self.reason.as_deref(),
                None | Some("Target.NotRegistered") | Some("Target.NotInUse")
            ),
            _ => false,
        }
    }

    /// `initial (Elb.InitialHealthChecking)`.
    pub fn describe(&self) -> String {
        let state = match self.state {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
            TargetState::Other => "in an unknown state",
        };
        match &self.reason {
            Some(reason) => format!("{state} ({reason})"),
            None => state.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    /// Not health-checked: see the reason.
    Unused,
    Draining,
    /// Health checks are disabled.
    Unavailable,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub arn: String,
    pub load_balancer_arn: String,
}

/// What a route answers with when it forwards to no target group: the fixed response
/// (or redirect) of a fresh load balancer before anything is deployed. Recorded before
/// the fleet's first release, and put back when that release is undone or the fleet
/// retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StandIn {
    FixedResponse {
        status_code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_body: Option<String>,
    },
    Redirect {
        status_code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
    },
}

impl StandIn {
    /// In words, for plans and history: `a fixed response 404`.
    pub fn describe(&self) -> String {
        match self {
            StandIn::FixedResponse { status_code, .. } => format!("a fixed response {status_code}"),
            StandIn::Redirect {
                status_code, host, ..
            } => format!(
                "a redirect {status_code}{}",
                host.as_deref()
                    .map(|h| format!(" to {h}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// One target group's share of a listener's traffic: its weight against the others'
/// (0 to 999, ForwardActionConfig in the ELB API reference). immune's own are
/// percentages; an operator's are kept as they were.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    pub target_group: String,
    pub weight: u16,
}

/// One cloud per region, each made once: every fleet is planned, rolled out and retired
/// in its own region, and a fleet that names none is in the default one (`--region`,
/// else the environment's).
pub struct Clouds {
    default: std::sync::Arc<dyn Cloud>,
    others: BTreeMap<String, std::sync::Arc<dyn Cloud>>,
}

impl Clouds {
    /// All fleets in one cloud, whatever region they name: the in-memory fake.
    pub fn single(cloud: std::sync::Arc<dyn Cloud>) -> Clouds {
        Clouds {
            default: cloud,
            others: BTreeMap::new(),
        }
    }

    pub fn new(
        default: std::sync::Arc<dyn Cloud>,
        others: BTreeMap<String, std::sync::Arc<dyn Cloud>>,
    ) -> Clouds {
        Clouds { default, others }
    }

    /// The cloud of `region`, or the default one.
    pub fn get(&self, region: Option<&str>) -> &dyn Cloud {
        region
            .and_then(|r| self.others.get(r))
            .unwrap_or(&self.default)
            .as_ref()
    }

    pub fn for_fleet(&self, fleet: &crate::config::Fleet) -> &dyn Cloud {
        self.get(fleet.region.as_deref())
    }
}

#[async_trait]
pub trait Cloud: Send + Sync {
    /// The account's region, shown in plans.
    fn region(&self) -> String;

    // Images.
    async fn source_image_exists(&self, image_id: &str) -> CloudResult<bool>;
    /// An image immune baked earlier for this fleet from the same image spec.
    async fn find_baked_image(&self, fleet: &str, bake: &str) -> CloudResult<Option<Image>>;
    async fn launch_builder(&self, request: &BuilderRequest) -> CloudResult<String>;
    async fn instance_state(&self, instance_id: &str) -> CloudResult<InstanceState>;
    /// What the instance wrote to its console, decoded; empty when there is nothing yet.
    async fn console_output(&self, instance_id: &str) -> CloudResult<String>;
    async fn create_image(
        &self,
        builder: &str,
        name: &str,
        bake: &str,
        tags: &Tags,
    ) -> CloudResult<String>;
    async fn image(&self, image_id: &str) -> CloudResult<Image>;
    /// Which of these images exist (are not deregistered), in one call.
    async fn existing_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>>;
    async fn terminate_instance(&self, instance_id: &str) -> CloudResult<()>;

    // Network and traffic.
    async fn vpc_of_subnets(&self, subnets: &[String]) -> CloudResult<String>;
    /// Of these instance types, the ones this region does not offer.
    async fn unknown_instance_types(&self, types: &[String]) -> CloudResult<Vec<String>>;
    /// Whether the key pair exists in this region.
    async fn key_pair_exists(&self, name: &str) -> CloudResult<bool>;
    async fn resolve_listener(&self, listener: &ListenerRef) -> CloudResult<Listener>;
    /// The ARN of the listener's rule with this priority.
    async fn listener_rule(&self, listener_arn: &str, priority: u32) -> CloudResult<String>;
    /// The forward weights of a listener's default action, or of a rule's action when
    /// given a rule ARN.
    async fn listener_weights(&self, route_arn: &str) -> CloudResult<Vec<Weight>>;
    /// Sets all of the forward weights of a listener's default action, or of a rule's
    /// action, in one call; with `stickiness`, the forward's group-level stickiness too
    /// (without, it stays as it is).
    async fn set_listener_weights(
        &self,
        route_arn: &str,
        weights: &[Weight],
        stickiness: Option<Duration>,
    ) -> CloudResult<()>;
    /// The route's fixed response or redirect when it forwards to no target group.
    async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>>;
    /// Puts a fixed response or redirect back as the route's action, in one call.
    async fn set_stand_in(&self, route_arn: &str, stand_in: &StandIn) -> CloudResult<()>;
    /// Adds a rule of this configuration's to the route's listener that forwards to the
    /// target group only for requests no client sends (see [`health_rule_host`]): ELB
    /// health-checks only target groups that a listener or rule forwards to, and a route
    /// answering with a fixed response or a redirect has no forward to join. `name` is
    /// the release's group. Returns the rule's ARN.
    async fn add_health_rule(
        &self,
        route_arn: &str,
        target_group: &str,
        name: &str,
        tags: &Tags,
    ) -> CloudResult<String>;
    /// The health rule of the release `name` on the route's listener, if there is one:
    /// the one a lost call made.
    async fn health_rule(&self, route_arn: &str, name: &str) -> CloudResult<Option<String>>;
    /// Deletes a health rule of this configuration's; one already gone is fine.
    async fn delete_health_rule(&self, rule_arn: &str) -> CloudResult<()>;

    // Launch.
    /// A new version of the fleet's launch template, creating the template on first use.
    async fn create_launch_template_version(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<LaunchTemplateRef>;
    async fn delete_launch_template_version(&self, template: &LaunchTemplateRef)
        -> CloudResult<()>;
    /// Deletes the fleet's launch template (by id) with every version, once the fleet is
    /// retired; one already gone is fine, one not this configuration's is refused.
    async fn delete_launch_template(&self, id: &str) -> CloudResult<()>;
    async fn create_target_group(&self, request: &TargetGroupRequest) -> CloudResult<String>;
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()>;
    async fn create_group(&self, request: &GroupRequest) -> CloudResult<()>;
    /// Puts (creates or replaces) a target tracking policy on one of this
    /// configuration's groups.
    async fn put_scaling_policy(&self, request: &PolicyRequest) -> CloudResult<()>;
    /// Puts (creates or replaces) the termination lifecycle hook [`TERMINATION_HOOK`] on
    /// one of this configuration's groups: an instance the group scales in waits in
    /// `Terminating:Wait` until its worker completes the lifecycle action, or for at most
    /// `grace`, after which it is terminated anyway.
    async fn put_termination_hook(&self, group: &str, grace: Duration) -> CloudResult<()>;
    async fn group(&self, name: &str) -> CloudResult<Option<GroupStatus>> {
        Ok(self.groups(&[name.to_string()]).await?.remove(name))
    }
    /// The named groups that exist, read in batches (one DescribeAutoScalingGroups call
    /// per 100 names), for refreshing many fleets at once.
    async fn groups(&self, names: &[String]) -> CloudResult<BTreeMap<String, GroupStatus>>;
    /// Which of these target groups exist.
    async fn existing_target_groups(&self, arns: &[String]) -> CloudResult<BTreeSet<String>>;
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<Target>>;
    /// Deletes the group and terminates its instances.
    async fn delete_group(&self, name: &str) -> CloudResult<()>;

    /// Sets the group's capacity: to zero to keep a retired group for rollback, back up
    /// to restore it.
    async fn scale_group(&self, name: &str, capacity: Capacity) -> CloudResult<()>;

    // Images beyond `image.keep`.
    /// Every image immune baked for the fleet.
    async fn fleet_images(&self, fleet: &str) -> CloudResult<Vec<BakedImage>>;
    /// Deregisters the image and deletes its snapshots.
    async fn deregister_image(&self, image_id: &str) -> CloudResult<()>;

    // Gates.
    /// Each named CloudWatch alarm's state and why; absent names are missing from the map.
    async fn alarms(&self, names: &[String]) -> CloudResult<BTreeMap<String, AlarmReading>>;
    /// Each time one of the named alarms went into ALARM at or after `since` (RFC 3339),
    /// from its state history: a pulse between two polls is seen here, though the state
    /// read at the next poll is OK again.
    async fn alarm_transitions(
        &self,
        names: &[String],
        since: &str,
    ) -> CloudResult<Vec<AlarmTransition>>;
    /// The metric an alarm watches, read itself over the window since `since` (RFC 3339),
    /// by the alarm's own statistic and period: its worst datapoint, with the alarm's
    /// threshold and comparison. `None` when the alarm watches no single metric.
    async fn alarm_metric_peak(&self, alarm: &str, since: &str) -> CloudResult<Option<MetricPeak>>;
    /// Creates the per-release alarm of a metric gate, or replaces one immune created.
    async fn put_alarm(&self, request: &AlarmRequest) -> CloudResult<()>;
    /// Deletes an alarm immune created; one already gone is fine.
    async fn delete_alarm(&self, name: &str) -> CloudResult<()>;

    // Ownership and crash adoption.
    /// The names of `claim` that are held by anything but this configuration.
    async fn claim_conflicts(&self, claim: &Claim) -> CloudResult<Vec<Conflict>>;
    /// Who holds each of the named alarms that exist.
    async fn alarm_holders(&self, names: &[String]) -> CloudResult<Vec<(String, Holder)>>;
    /// Who holds the Auto Scaling group of this name, if it exists.
    async fn group_holder(&self, name: &str) -> CloudResult<Option<Holder>>;
    /// The target group of this name, if it exists: its ARN and who holds it.
    async fn target_group_named(&self, name: &str) -> CloudResult<Option<(String, Holder)>>;
    /// This configuration's builder instances of the fleet that are not terminated: the
    /// one a lost RunInstances made, or ones an older crash left behind.
    async fn builders(&self, fleet: &str) -> CloudResult<Vec<Builder>>;
    /// The account's image of this name, with who holds it.
    async fn image_named(&self, name: &str) -> CloudResult<Option<(Image, Holder)>>;
    /// The version of this configuration's launch template described as `description`
    /// (the release's group name): the one a lost call created.
    async fn launch_template_version_named(
        &self,
        template: &str,
        description: &str,
    ) -> CloudResult<Option<LaunchTemplateRef>>;

    // Batched reads, for a plan or status of many fleets: each kind of thing is read in
    // a few calls whatever the number of fleets. The defaults ask one at a time; the
    // AWS implementation batches (see `survey`).

    /// Each route's ARN, weights and stand-in, or why that route cannot be read. A
    /// transient fault fails the whole read, so that it is asked again.
    async fn routes(
        &self,
        wanted: &[RouteRef],
    ) -> CloudResult<BTreeMap<RouteRef, CloudResult<Route>>> {
        survey::routes_one_by_one(self, wanted).await
    }
    /// The source images among `ids` that exist.
    async fn source_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        for id in ids {
            if self.source_image_exists(id).await? {
                found.insert(id.clone());
            }
        }
        Ok(found)
    }
    /// The VPC of each subnet among `ids` that exists.
    async fn subnet_vpcs(&self, ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        let mut found = BTreeMap::new();
        for id in ids {
            match self.vpc_of_subnets(std::slice::from_ref(id)).await {
                Ok(vpc) => {
                    found.insert(id.clone(), vpc);
                }
                Err(CloudError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }
    /// The key pairs among `names` that exist.
    async fn key_pairs(&self, names: &[String]) -> CloudResult<BTreeSet<String>> {
        let mut found = BTreeSet::new();
        for name in names {
            if self.key_pair_exists(name).await? {
                found.insert(name.clone());
            }
        }
        Ok(found)
    }
    /// This configuration's baked image for each (fleet, bake), by fleet, when there is one.
    async fn baked_images(
        &self,
        wanted: &[(String, String)],
    ) -> CloudResult<BTreeMap<String, Image>> {
        let mut found = BTreeMap::new();
        for (fleet, bake) in wanted {
            if let Some(image) = self.find_baked_image(fleet, bake).await? {
                found.insert(fleet.clone(), image);
            }
        }
        Ok(found)
    }
    /// The weights of each route ARN (a listener or a rule), or why it cannot be read.
    async fn route_weights(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeMap<String, CloudResult<Vec<Weight>>>> {
        let mut found = BTreeMap::new();
        for arn in arns {
            match self.listener_weights(arn).await {
                Err(e) if e.is_transient() => return Err(e),
                read => {
                    found.insert(arn.clone(), read);
                }
            }
        }
        Ok(found)
    }
    /// [`Cloud::claim_conflicts`] of each claim, in order.
    async fn claims_conflicts(&self, claims: &[Claim]) -> CloudResult<Vec<Vec<Conflict>>> {
        let mut found = Vec::new();
        for claim in claims {
            found.push(self.claim_conflicts(claim).await?);
        }
        Ok(found)
    }
}

/// A route as a configuration names it: a listener, and the priority of one of its rules
/// (none: the listener's default action).
pub type RouteRef = (ListenerRef, Option<u32>);

/// A route read for a plan: where weights are set, what it forwards to now, and what it
/// answers when it forwards nowhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub arn: String,
    pub weights: Vec<Weight>,
    /// Read only when no target group has weight.
    pub stand_in: Option<StandIn>,
    /// The listener's protocol (`HTTP`, `HTTPS`; `TCP`, `TLS`, `UDP`, `TCP_UDP` for a
    /// Network Load Balancer, `GENEVE` for a Gateway Load Balancer), when read.
    pub protocol: Option<String>,
}

/// At most this many target groups in one forward action ("Target groups per action",
/// Quotas for your Application Load Balancers,
/// https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html).
pub const TARGET_GROUPS_PER_FORWARD: usize = 5;

/// Why immune cannot release behind a listener of this protocol, if it cannot: it makes
/// HTTP target groups and shifts traffic by weights on an Application Load Balancer's
/// forward. A Network Load Balancer's listener (TCP, TLS, UDP, TCP_UDP) forwards only to
/// target groups of its own protocols, and a Gateway Load Balancer's (GENEVE) sends
/// traffic to appliances, not to a fleet of releases.
pub fn unsupported_protocol(protocol: &str) -> Option<String> {
    match protocol {
        "HTTP" | "HTTPS" => None,
        "GENEVE" => Some(format!(
            "the listener is a Gateway Load Balancer's ({protocol}), which sends traffic to network appliances: immune does not release behind one"
        )),
        _ => Some(format!(
            "the listener is a Network Load Balancer's ({protocol}): immune makes HTTP target groups, which a {protocol} listener cannot forward to, so it releases only behind an Application Load Balancer (HTTP or HTTPS listener) for now"
        )),
    }
}

/// A builder instance immune launched to bake an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub id: String,
    /// Its `Name` tag: `web-v002-builder`.
    pub name: String,
}

/// The host header a health rule matches: a name under `invalid`, which no DNS resolves
/// and no client sends (RFC 2606, https://www.rfc-editor.org/rfc/rfc2606#section-2), with
/// the release and the state's lineage, so that it is found again and never another's.
pub fn health_rule_host(name: &str, lineage: &str) -> String {
    format!("{name}.{lineage}.immune.invalid").to_lowercase()
}

/// Listener rule ARNs (`...:listener-rule/app/...`) are told apart from listener ARNs
/// (`...:listener/app/...`) by their resource type.
pub fn is_rule_arn(arn: &str) -> bool {
    arn.contains(":listener-rule/")
}

/// An alarm's state with the evidence an operator needs afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmReading {
    pub state: AlarmState,
    /// CloudWatch's `StateReason`, e.g. "Threshold Crossed: 1 datapoint [12.0] ...".
    pub reason: String,
    /// When the alarm entered this state (RFC 3339), when known.
    pub since: Option<String>,
    /// How much data the alarm needs before it can go into ALARM (period times the
    /// datapoints to alarm), when known: a step shorter than this cannot see it fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Duration>,
}

/// What an alarm's metric read over a window (see [`Cloud::alarm_metric_peak`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPeak {
    /// The worst datapoint (the highest, or the lowest for a `<` alarm); `None` when
    /// the metric had none in the window.
    pub value: Option<f64>,
    pub threshold: f64,
    pub comparison: crate::config::Comparison,
}

/// An alarm going into ALARM, as its history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmTransition {
    pub alarm: String,
    /// RFC 3339.
    pub at: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRequest {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: String,
    pub period: Duration,
    pub evaluation_periods: u32,
    pub threshold: f64,
    pub comparison: Comparison,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedImage {
    pub id: String,
    /// Its `Name` tag: the group that baked it (`web-v002`).
    pub name: String,
    /// RFC 3339; images sort oldest first by it.
    pub created: String,
}

/// The `TargetGroup` dimension of ALB metrics: the ARN's `targetgroup/name/id` part.
pub fn target_group_dimension(arn: &str) -> String {
    arn.find("targetgroup/")
        .map_or(arn, |i| &arn[i..])
        .to_string()
}

/// The `LoadBalancer` dimension of ALB metrics (`app/name/id`), from a listener or load
/// balancer ARN.
pub fn load_balancer_dimension(arn: &str) -> String {
    let Some(i) = arn.find("app/").or_else(|| arn.find("net/")) else {
        return arn.to_string();
    };
    arn[i..]
        .splitn(4, '/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_is_ours_only_with_our_lineage_or_by_legacy() {
        let tags = |pairs: &[(&'static str, &'static str)]| {
            pairs
                .iter()
                .map(|(k, v)| (Some(*k), Some(*v)))
                .collect::<Vec<_>>()
        };
        let ours = tags(&[(TAG_MANAGED, "true"), (TAG_LINEAGE, "l1")]);
        let other = tags(&[(TAG_MANAGED, "true"), (TAG_LINEAGE, "l2")]);
        let old = tags(&[(TAG_MANAGED, "true")]);
        let foreign = tags(&[("Name", "web-v002")]);
        assert_eq!(Holder::of(ours.clone(), "l1", false), Holder::Ours);
        assert_eq!(
            Holder::of(other, "l1", true),
            Holder::OtherState {
                lineage: Some("l2".into())
            }
        );
        assert_eq!(
            Holder::of(old.clone(), "l1", false),
            Holder::OtherState { lineage: None }
        );
        assert_eq!(
            Holder::of(old, "l1", true),
            Holder::Ours,
            "made for this state before lineage tags"
        );
        assert_eq!(Holder::of(foreign, "l1", true), Holder::Foreign);
        let forged = tags(&[(TAG_LINEAGE, "l1")]);
        assert_eq!(
            Holder::of(forged, "l1", false),
            Holder::Foreign,
            "not managed"
        );
        assert!(CloudError::Service {
            operation: "x",
            code: "Throttling".into(),
            message: String::new()
        }
        .is_transient());
        assert!(!CloudError::not_ours("group", Holder::Foreign).is_transient());
    }
}
