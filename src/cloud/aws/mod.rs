//! The real cloud: AWS through the SDK for Rust. One `SdkConfig` (credential chain, region,
//! `AWS_ENDPOINT_URL` for LocalStack, standard retries) shared by the four clients.

mod alarms;
mod calls;
mod ec2;
mod elb;
mod group;
mod poller;

use super::*;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

pub struct Aws {
    region: String,
    /// The state's lineage: only resources tagged with it are modified or deleted.
    lineage: String,
    /// Also own resources an immune from before lineage tags made (`State::legacy_ownership`).
    legacy: bool,
    ec2: aws_sdk_ec2::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// Every rollout's gate alarms, read together.
    poller: std::sync::Arc<poller::Poller>,
    /// The VPC of each subnet read so far: a subnet never moves to another VPC, so the
    /// plan's read serves every release's target group.
    subnet_vpcs: std::sync::Mutex<BTreeMap<String, String>>,
    /// The ARN each route was found at (a rule, or a listener for its default action):
    /// read again by ARN, and checked, before a route is looked for from its load
    /// balancer down (see `routes`).
    route_arns: std::sync::Mutex<BTreeMap<RouteRef, String>>,
    /// How long each composite gate alarm needs before it can fire, read once.
    composite_needs: std::sync::Mutex<BTreeMap<String, Option<Duration>>>,
}

impl Aws {
    /// Connects with the standard configuration chain. `region` overrides it. `lineage`
    /// is the state's: what it tags is this configuration's, everything else is left alone.
    pub async fn connect(region: Option<String>, lineage: &str) -> CloudResult<Aws> {
        let config = sdk_config(region).await;
        let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
            CloudError::Invalid(
                "no AWS region configured: set `region` in the fleet, pass --region, or set AWS_REGION".into(),
            )
        })?;
        Ok(Aws {
            region,
            lineage: lineage.to_string(),
            legacy: false,
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&config)
                    .interceptor(calls::Calls)
                    .build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&config)
                    .interceptor(calls::Calls)
                    .build(),
            ),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&config)
                    .interceptor(calls::Calls)
                    .build(),
            ),
            poller: Default::default(),
            subnet_vpcs: Default::default(),
            route_arns: Default::default(),
            composite_needs: Default::default(),
            cloudwatch: aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(&config)
                    .interceptor(calls::Calls)
                    .build(),
            ),
        })
    }
}

/// The standard configuration chain (credentials, region, `AWS_ENDPOINT_URL`) with
/// immune's retries and timeouts, for every client immune makes. `region` overrides it.
pub async fn sdk_config(region: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    loader.load().await
}

/// Who the credentials are, asked of STS in `region`: it needs no permission, so it
/// checks the credentials and that the region answers, and nothing else.
pub async fn identity(region: &str) -> CloudResult<(String, String)> {
    let config = sdk_config(Some(region.to_string())).await;
    let out = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| sdk_error("GetCallerIdentity", e))?;
    Ok((out.account.unwrap_or_default(), out.arn.unwrap_or_default()))
}

/// The region of the standard configuration chain (`AWS_REGION`, the profile), if any.
pub async fn default_region() -> Option<String> {
    sdk_config(None).await.region().map(|r| r.to_string())
}

/// Splits SDK errors into "the service said no" (with its error code) and everything
/// else (connection, timeout), which callers treat differently.
fn sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            let message = e.message().unwrap_or_default().to_string();
            // A 5xx or 429 is "not now" whatever its body says: a gateway's 502, 503 or
            // 504 often carries no error code at all. Refusals are 4xx with a code.
            if status >= 500 || status == 429 {
                let code = e.code().unwrap_or("no error code");
                return CloudError::Transport {
                    operation,
                    message: format!("HTTP {status} ({code}) {message}")
                        .trim_end()
                        .to_string(),
                };
            }
            let code = e.code().unwrap_or("Unknown").to_string();
            match is_credential_code(&code) {
                true => CloudError::Credentials {
                    operation,
                    message: format!("{code}: {message}"),
                },
                false => CloudError::Service {
                    operation,
                    code,
                    message,
                },
            }
        }
        _ => {
            let message = error_chain(&err);
            // The SDK says so when its credential chain found nothing: no retry helps.
            if message.contains("no credentials found in chain")
                || message.contains("credential provider was not enabled")
                || message.contains("while loading credentials")
            {
                CloudError::Credentials { operation, message }
            } else {
                CloudError::Transport { operation, message }
            }
        }
    }
}

/// Service error codes that mean AWS did not accept who is calling.
fn is_credential_code(code: &str) -> bool {
    matches!(
        code,
        "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "AuthFailure"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidAccessKeyId"
            | "MissingAuthenticationToken"
    )
}

/// The error's message and its causes, innermost last, without Rust debug output.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

impl Aws {
    /// Who holds a resource with these tags (any SDK's, as (key, value) pairs).
    fn holder<'a>(
        &self,
        tags: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> Holder {
        Holder::of(tags, &self.lineage, self.legacy)
    }

    /// Claims what an immune from before lineage tags made, for a state upgraded from
    /// then.
    pub fn with_legacy_ownership(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// The one test for immune's ownership: nothing without this state's lineage is
    /// modified or deleted.
    fn ensure_ours<'a>(
        &self,
        resource: impl Into<String>,
        tags: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
    ) -> CloudResult<()> {
        match self.holder(tags) {
            Holder::Ours => Ok(()),
            other => Err(CloudError::not_ours(resource, other)),
        }
    }

    /// Every name of each claim held by anything but this configuration: each kind of
    /// resource read once for all the claims, the kinds side by side.
    async fn claims_conflicts(&self, claims: &[Claim]) -> CloudResult<Vec<Vec<Conflict>>> {
        let names = |of: &dyn Fn(&Claim) -> Option<String>| -> Vec<String> {
            let set: BTreeSet<String> = claims.iter().filter_map(of).collect();
            set.into_iter().collect()
        };
        let groups = names(&|c| Some(c.group.clone()));
        let target_groups = names(&|c| (!c.workers).then(|| c.group.clone()));
        let templates = names(&|c| Some(c.launch_template.clone()));
        let images = names(&|c| c.image.clone());
        let alarms: Vec<String> = claims
            .iter()
            .flat_map(|c| c.alarms.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let routed: Vec<String> = claims
            .iter()
            .filter_map(|c| c.route.as_ref())
            .flat_map(|(_, tgs)| tgs.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let images = async {
            match images.is_empty() {
                true => Ok(BTreeMap::new()),
                false => self.images_named(&images).await,
            }
        };
        let routed = async {
            Ok::<_, CloudError>(
                self.target_group_holders(&routed)
                    .await?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let alarms = async {
            Ok::<_, CloudError>(
                self.alarm_holders(&alarms)
                    .await?
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let (groups, target_groups, templates, images, alarms, routed) = tokio::try_join!(
            self.group_holders(&groups),
            self.target_groups_named(&target_groups),
            self.launch_template_holders(&templates),
            images,
            alarms,
            routed,
        )?;
        Ok(claims
            .iter()
            .map(|claim| {
                let mut conflicts = Vec::new();
                // A group or target group of this lineage under the next release's name
                // was made by another copy of this state (this one has not reached that
                // release): a conflict too.
                if let Some(holder) = groups.get(&claim.group) {
                    conflicts.push(Conflict {
                        resource: format!("Auto Scaling group {}", claim.group),
                        holder: holder.clone(),
                    });
                }
                if let Some((_, holder)) =
                    target_groups.get(&claim.group).filter(|_| !claim.workers)
                {
                    conflicts.push(Conflict {
                        resource: format!("target group {}", claim.group),
                        holder: holder.clone(),
                    });
                }
                // The fleet's launch template and alarms of this lineage are its own.
                if let Some(holder) = templates
                    .get(&claim.launch_template)
                    .filter(|h| **h != Holder::Ours)
                {
                    conflicts.push(Conflict {
                        resource: format!("launch template {}", claim.launch_template),
                        holder: holder.clone(),
                    });
                }
                for alarm in &claim.alarms {
                    if let Some(holder) = alarms.get(alarm).filter(|h| **h != Holder::Ours) {
                        conflicts.push(Conflict {
                            resource: format!("alarm {alarm}"),
                            holder: holder.clone(),
                        });
                    }
                }
                // Image names are unique in the account: even one of ours cannot be baked
                // again under the same name.
                if let Some((image, holder)) =
                    claim.image.as_ref().and_then(|n| Some((n, images.get(n)?)))
                {
                    conflicts.push(Conflict {
                        resource: format!("image name \"{}\" ({})", image, holder.0.id),
                        holder: holder.1.clone(),
                    });
                }
                // A route that forwards to another configuration's target group: two
                // configurations would shift the same traffic.
                if let Some((route, tgs)) = &claim.route {
                    for arn in tgs {
                        if let Some(holder @ Holder::OtherState { .. }) = routed.get(arn) {
                            conflicts.push(Conflict {
                                resource: format!(
                                    "the route {route}, which forwards to target group {}",
                                    crate::plan::target_group_name(arn)
                                ),
                                holder: holder.clone(),
                            });
                        }
                    }
                }
                conflicts
            })
            .collect())
    }
}

fn code_of(err: &CloudError) -> Option<&str> {
    match err {
        CloudError::Service { code, .. } => Some(code),
        _ => None,
    }
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[async_trait]
impl Cloud for Aws {
    fn region(&self) -> String {
        self.region.clone()
    }

    async fn source_image_exists(&self, image_id: &str) -> CloudResult<bool> {
        self.source_image_exists(image_id).await
    }
    async fn find_baked_image(&self, fleet: &str, bake: &str) -> CloudResult<Option<Image>> {
        self.find_baked_image(fleet, bake).await
    }
    async fn launch_builder(&self, request: &BuilderRequest) -> CloudResult<String> {
        self.launch_builder(request).await
    }
    async fn instance_state(&self, instance_id: &str) -> CloudResult<InstanceState> {
        self.instance_state(instance_id).await
    }
    async fn console_output(&self, instance_id: &str) -> CloudResult<String> {
        self.console_output(instance_id).await
    }
    async fn create_image(
        &self,
        builder: &str,
        name: &str,
        bake: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.create_image(builder, name, bake, tags).await
    }
    async fn image(&self, image_id: &str) -> CloudResult<Image> {
        self.image(image_id).await
    }
    async fn existing_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        self.existing_images(ids).await
    }
    async fn terminate_instance(&self, instance_id: &str) -> CloudResult<()> {
        self.terminate_instance(instance_id).await
    }
    async fn unknown_instance_types(&self, types: &[String]) -> CloudResult<Vec<String>> {
        self.unknown_instance_types(types).await
    }
    async fn key_pair_exists(&self, name: &str) -> CloudResult<bool> {
        self.key_pair_exists(name).await
    }
    async fn vpc_of_subnets(&self, subnets: &[String]) -> CloudResult<String> {
        self.vpc_of_subnets(subnets).await
    }
    async fn resolve_listener(&self, listener: &ListenerRef) -> CloudResult<Listener> {
        self.resolve_listener(listener).await
    }
    async fn listener_rule(&self, listener_arn: &str, priority: u32) -> CloudResult<String> {
        self.listener_rule(listener_arn, priority).await
    }
    async fn listener_weights(&self, listener_arn: &str) -> CloudResult<Vec<Weight>> {
        self.listener_weights(listener_arn).await
    }
    async fn set_listener_weights(
        &self,
        listener_arn: &str,
        weights: &[Weight],
        stickiness: Option<Duration>,
    ) -> CloudResult<()> {
        self.set_listener_weights(listener_arn, weights, stickiness)
            .await
    }
    async fn stand_in(&self, route_arn: &str) -> CloudResult<Option<StandIn>> {
        self.stand_in(route_arn).await
    }
    async fn set_stand_in(&self, route_arn: &str, stand_in: &StandIn) -> CloudResult<()> {
        self.set_stand_in(route_arn, stand_in).await
    }
    async fn add_health_rule(
        &self,
        route_arn: &str,
        target_group: &str,
        name: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        self.add_health_rule(route_arn, target_group, name, tags)
            .await
    }
    async fn health_rule(&self, route_arn: &str, name: &str) -> CloudResult<Option<String>> {
        self.health_rule(route_arn, name).await
    }
    async fn delete_health_rule(&self, rule_arn: &str) -> CloudResult<()> {
        self.delete_health_rule(rule_arn).await
    }
    async fn create_launch_template_version(
        &self,
        request: &LaunchRequest,
    ) -> CloudResult<LaunchTemplateRef> {
        self.create_launch_template_version(request).await
    }
    async fn delete_launch_template_version(
        &self,
        template: &LaunchTemplateRef,
    ) -> CloudResult<()> {
        self.delete_launch_template_version(template).await
    }
    async fn delete_launch_template(&self, id: &str) -> CloudResult<()> {
        self.delete_launch_template(id).await
    }
    async fn create_target_group(&self, request: &TargetGroupRequest) -> CloudResult<String> {
        self.create_target_group(request).await
    }
    async fn delete_target_group(&self, arn: &str) -> CloudResult<()> {
        self.delete_target_group(arn).await
    }
    async fn create_group(&self, request: &GroupRequest) -> CloudResult<()> {
        self.create_group(request).await
    }
    async fn put_scaling_policy(&self, request: &PolicyRequest) -> CloudResult<()> {
        self.put_scaling_policy(request).await
    }
    async fn put_termination_hook(&self, group: &str, grace: Duration) -> CloudResult<()> {
        self.put_termination_hook(group, grace).await
    }
    async fn groups(&self, names: &[String]) -> CloudResult<BTreeMap<String, GroupStatus>> {
        self.groups(names).await
    }
    async fn existing_target_groups(&self, arns: &[String]) -> CloudResult<BTreeSet<String>> {
        self.existing_target_groups(arns).await
    }
    async fn target_health(&self, target_group_arn: &str) -> CloudResult<Vec<Target>> {
        self.target_health(target_group_arn).await
    }
    async fn delete_group(&self, name: &str) -> CloudResult<()> {
        self.delete_group(name).await
    }

    async fn scale_group(&self, name: &str, capacity: Capacity) -> CloudResult<()> {
        self.scale_group(name, capacity).await
    }

    async fn fleet_images(&self, fleet: &str) -> CloudResult<Vec<BakedImage>> {
        self.fleet_images(fleet).await
    }
    async fn deregister_image(&self, image_id: &str) -> CloudResult<()> {
        self.deregister_image(image_id).await
    }

    async fn alarms(&self, names: &[String]) -> CloudResult<BTreeMap<String, AlarmReading>> {
        self.alarms(names).await
    }
    async fn claim_conflicts(&self, claim: &Claim) -> CloudResult<Vec<Conflict>> {
        let mut found = self.claims_conflicts(std::slice::from_ref(claim)).await?;
        Ok(found.pop().unwrap_or_default())
    }
    async fn claims_conflicts(&self, claims: &[Claim]) -> CloudResult<Vec<Vec<Conflict>>> {
        Aws::claims_conflicts(self, claims).await
    }
    async fn routes(
        &self,
        wanted: &[RouteRef],
    ) -> CloudResult<BTreeMap<RouteRef, CloudResult<Route>>> {
        Aws::routes(self, wanted).await
    }
    async fn route_weights(
        &self,
        arns: &[String],
    ) -> CloudResult<BTreeMap<String, CloudResult<Vec<Weight>>>> {
        Aws::route_weights(self, arns).await
    }
    async fn source_images(&self, ids: &[String]) -> CloudResult<BTreeSet<String>> {
        Aws::source_images(self, ids).await
    }
    async fn subnet_vpcs(&self, ids: &[String]) -> CloudResult<BTreeMap<String, String>> {
        Aws::subnet_vpcs(self, ids).await
    }
    async fn key_pairs(&self, names: &[String]) -> CloudResult<BTreeSet<String>> {
        Aws::key_pairs(self, names).await
    }
    async fn baked_images(
        &self,
        wanted: &[(String, String)],
    ) -> CloudResult<BTreeMap<String, Image>> {
        Aws::baked_images(self, wanted).await
    }
    async fn alarm_holders(&self, names: &[String]) -> CloudResult<Vec<(String, Holder)>> {
        self.alarm_holders(names).await
    }
    async fn group_holder(&self, name: &str) -> CloudResult<Option<Holder>> {
        self.group_holder(name).await
    }
    async fn target_group_named(&self, name: &str) -> CloudResult<Option<(String, Holder)>> {
        self.target_group_named(name).await
    }
    async fn builders(&self, fleet: &str) -> CloudResult<Vec<Builder>> {
        self.builders(fleet).await
    }
    async fn image_named(&self, name: &str) -> CloudResult<Option<(Image, Holder)>> {
        self.image_named(name).await
    }
    async fn launch_template_version_named(
        &self,
        template: &str,
        description: &str,
    ) -> CloudResult<Option<LaunchTemplateRef>> {
        self.launch_template_version_named(template, description)
            .await
    }
    async fn alarm_transitions(
        &self,
        names: &[String],
        since: &str,
    ) -> CloudResult<Vec<AlarmTransition>> {
        self.alarm_transitions(names, since).await
    }
    async fn alarm_metric_peak(&self, alarm: &str, since: &str) -> CloudResult<Option<MetricPeak>> {
        self.alarm_metric_peak(alarm, since).await
    }
    async fn put_alarm(&self, request: &AlarmRequest) -> CloudResult<()> {
        self.put_alarm(request).await
    }
    async fn delete_alarm(&self, name: &str) -> CloudResult<()> {
        self.delete_alarm(name).await
    }
}
