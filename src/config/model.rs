//! The typed configuration: what the rest of immune reads. Built by `load`, never by hand
//! outside tests.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub backend: Backend,
    /// `immune { namespace = "staging" }`: the prefix of every name this configuration
    /// gives a resource, so two configurations can each run a fleet `web` in one account.
    pub namespace: Option<String>,
    /// `immune { default_tags = { ... } }`, copied onto every fleet.
    pub default_tags: BTreeMap<String, String>,
    pub fleets: Vec<Fleet>,
    /// The root's `output` blocks, in the order written.
    pub outputs: Vec<Output>,
    /// The root's variables and the values they were given (or their defaults).
    pub variables: Vec<Variable>,
    /// The root's `notify` blocks: who hears of a release's end or a wait for a person.
    pub notify: Vec<Notify>,
}

/// `notify "NAME" { sns_topic = "arn:..." }` or `{ webhook = "https://..." }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub name: String,
    pub target: NotifyTarget,
    /// `on = [...]`: the kinds of notice sent; all of them unless it names some.
    pub on: Vec<NoticeKind>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NotifyTarget {
    Sns {
        topic_arn: String,
    },
    /// A webhook's address is often its password (chat webhooks are): it is never
    /// printed, only its host.
    Webhook {
        url: Secret,
    },
}

impl NotifyTarget {
    /// What a plan or a warning may show of it.
    pub fn shown(&self) -> String {
        match self {
            NotifyTarget::Sns { topic_arn } => format!("SNS topic {topic_arn}"),
            NotifyTarget::Webhook { url } => {
                // `user:password@host`: only the host is shown.
                let host = super::notify::scheme_and_host(&url.0).map_or("", |(_, h)| h);
                format!("webhook on {host}")
            }
        }
    }
}

/// A value that must not reach a terminal, a log or a file: its Debug form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(hidden)")
    }
}

/// The events that matter to a team, as `notify { on = [...] }` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A release finished: all traffic (or capacity) is on it.
    Released,
    /// A release was rolled back, by its gates, its health or a person.
    RolledBack,
    /// A manual gate waits for `immune approve` or `immune reject`.
    AwaitingApproval,
    /// An apply stopped before the end (a fault, an interrupt, a refusal): run it again.
    Stopped,
    /// An irreversible release failed after traffic reached it and is held: a person
    /// chooses `immune promote` or `immune rollback --force`.
    Held,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 5] = [
        NoticeKind::Released,
        NoticeKind::RolledBack,
        NoticeKind::AwaitingApproval,
        NoticeKind::Stopped,
        NoticeKind::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Released => "released",
            NoticeKind::RolledBack => "rolled_back",
            NoticeKind::AwaitingApproval => "awaiting_approval",
            NoticeKind::Stopped => "stopped",
            NoticeKind::Held => "held",
        }
    }
}

/// A root variable's value, as the configuration was evaluated with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub value: hcl::Value,
    /// `sensitive = true`: never written to a saved plan, logs or state.
    pub sensitive: bool,
}

/// An `output` of the root configuration. Values may hold `${fleet.NAME.group}`, the
/// active group, which is known only after apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Output {
    pub name: String,
    pub description: Option<String>,
    /// Shown as `(sensitive)`: set by `sensitive = true`, or because the value reads a
    /// sensitive variable (which requires `sensitive = true`).
    pub sensitive: bool,
    pub value: hcl::Value,
}

/// Where a release must have finished before this fleet takes it: another environment's
/// state, read and never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromoteAfter {
    pub place: Upstream,
    /// The fleet's name there; this fleet's own by default.
    pub fleet: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Upstream {
    /// A directory whose configuration names its backend.
    Dir(PathBuf),
    /// A backend written out.
    Backend(#[serde(skip)] Backend),
}

impl Upstream {
    /// How messages name it: the directory as written, or the backend.
    pub fn shown(&self) -> String {
        match self {
            Upstream::Dir(dir) => dir.display().to_string(),
            Upstream::Backend(Backend::Local { path }) => path.display().to_string(),
            Upstream::Backend(Backend::S3 { bucket, key, .. }) => format!("s3://{bucket}/{key}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Local {
        path: PathBuf,
    },
    /// One object in a bucket that already exists; `region` is the bucket's.
    S3 {
        bucket: String,
        key: String,
        region: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub name: String,
    /// The configuration's namespace, the first part of every resource name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub region: Option<String>,
    /// The operator's name for this release (`release = var.release`); when absent the
    /// release is named after its fingerprint.
    pub release: Option<String>,
    pub image: ImageSpec,
    pub instances: InstanceSpec,
    /// Where the fleet's traffic comes from; `None` makes it a worker fleet, whose
    /// releases move capacity instead of traffic (see `rollout::capacity_at`).
    pub traffic: Option<Traffic>,
    pub rollout: RolloutSpec,
    /// `irreversible = true`: the release cannot be undone safely (it migrates a schema,
    /// say). Once traffic reached it, a failure holds it and locks the fleet instead of
    /// rolling it back, and `immune rollback` needs `--force`.
    pub irreversible: bool,
    /// `promote_after { state = "../staging" }`: a release must have finished in that
    /// environment first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promote_after: Option<PromoteAfter>,
    /// `immune { default_tags }`: on everything immune creates for the fleet.
    pub default_tags: BTreeMap<String, String>,
    /// Where the fleet block starts, `file:line:col`, for errors found against the cloud.
    #[serde(skip)]
    pub location: String,
    /// Where the values that make its AWS names and tags are written, for AWS's naming
    /// rules, checked once the whole configuration is known (`config::names`).
    #[serde(skip)]
    pub places: BTreeMap<super::names::Source, Place>,
}

/// Where a value is written, and what lies behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub span: Option<crate::config::Span>,
    /// Sources outside the configuration the value came from: `--var release`.
    pub given: Vec<String>,
    /// It reads a sensitive value: messages do not show it.
    pub sensitive: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSpec {
    pub source_ami: String,
    pub instance_type: String,
    /// The provision script runs as the builder's user data. It may hold secrets, so it
    /// only ever leaves the process towards EC2; plans and state see its hash.
    #[serde(skip)]
    pub provision: Option<String>,
    pub name: Option<String>,
    pub keep: u32,
    /// How long the provision script may run: the builder must have powered itself off
    /// by then, or the bake fails with the end of its console output.
    #[serde(with = "secs")]
    pub bake_timeout: Duration,
    /// Where the builder runs; `None` takes the fleet's first subnet, its security
    /// groups and its instance profile.
    pub subnet: Option<String>,
    pub security_groups: Option<Vec<String>>,
    pub iam_instance_profile: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceSpec {
    pub instance_type: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    /// Like `provision`: hashed, never shown.
    #[serde(skip)]
    pub user_data: Option<String>,
    pub capacity: Capacity,
    /// An instance profile name, or its ARN.
    pub iam_instance_profile: Option<String>,
    pub key_name: Option<String>,
    /// On the group (propagated to instances), the volumes and the launch template.
    pub tags: BTreeMap<String, String>,
    pub root_volume: Option<RootVolume>,
    pub metadata: Metadata,
    /// Several instance types, some on spot: a mixed instances policy on the group.
    pub spot: Option<Spot>,
    /// Target tracking policies put on each new group before it takes traffic.
    pub scaling: Vec<ScalingPolicy>,
    /// Worker fleets: how long a leaving worker may take to finish its job, the
    /// heartbeat timeout of each group's termination lifecycle hook.
    #[serde(with = "secs")]
    pub termination_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootVolume {
    /// GiB; `None` keeps the image's size.
    pub size: Option<u32>,
    #[serde(rename = "type")]
    pub volume_type: Option<String>,
    pub encrypted: Option<bool>,
    pub iops: Option<u32>,
    pub throughput: Option<u32>,
}

/// The instance metadata service: IMDSv2 (session tokens) is required unless the
/// configuration says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Metadata {
    pub tokens_required: bool,
    pub hop_limit: u8,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            tokens_required: true,
            hop_limit: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spot {
    pub instance_types: Vec<String>,
    /// Instances kept on demand before any spot one.
    pub on_demand_base: u32,
    /// Of the instances above the base, the percentage on demand.
    pub on_demand_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingPolicy {
    pub name: String,
    pub metric: ScalingMetric,
    pub target: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingMetric {
    Cpu,
    RequestsPerTarget,
    NetworkIn,
    NetworkOut,
}

impl ScalingMetric {
    pub const NAMES: [&'static str; 4] =
        ["cpu", "requests_per_target", "network_in", "network_out"];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "cpu" => Self::Cpu,
            "requests_per_target" => Self::RequestsPerTarget,
            "network_in" => Self::NetworkIn,
            "network_out" => Self::NetworkOut,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The predefined metric of a target tracking policy.
    pub fn predefined(self) -> &'static str {
        match self {
            Self::Cpu => "ASGAverageCPUUtilization",
            Self::RequestsPerTarget => "ALBRequestCountPerTarget",
            Self::NetworkIn => "ASGAverageNetworkIn",
            Self::NetworkOut => "ASGAverageNetworkOut",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Capacity {
    pub min: u32,
    pub max: u32,
    pub desired: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ListenerRef {
    Arn(String),
    LoadBalancer { name: String, port: u16 },
}

impl std::fmt::Display for ListenerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerRef::Arn(arn) => write!(f, "listener {arn}"),
            ListenerRef::LoadBalancer { name, port } => {
                write!(f, "load balancer `{name}` listener on port {port}")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    pub listener: ListenerRef,
    /// The listener rule whose forward action immune shifts; `None` shifts the listener's
    /// default action.
    pub rule_priority: Option<u32>,
    pub port: u16,
    pub health_check: HealthCheck,
    #[serde(with = "secs")]
    pub deregistration_delay: Duration,
    /// `stickiness = "1h"`: the forward keeps a client on the target group it first
    /// reached for this long (group-level stickiness, TargetGroupStickinessConfig), so
    /// that a user stays on one release during a canary; zero (`"off"`) turns it off.
    /// `None` leaves the forward's stickiness as it is.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_secs")]
    pub stickiness: Option<Duration>,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => secs::serialize(d, s),
        None => s.serialize_none(),
    }
}

impl Traffic {
    /// Where traffic is shifted, for plans and errors: the listener, or one of its rules.
    pub fn route(&self) -> String {
        match self.rule_priority {
            Some(p) => format!("rule with priority {p} of {}", self.listener),
            None => self.listener.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(with = "secs")]
    pub interval: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutSpec {
    /// Percent of traffic on the new group at each step, strictly increasing, ending at 100.
    pub steps: Vec<u8>,
    #[serde(with = "secs")]
    pub pause: Duration,
    #[serde(with = "secs")]
    pub healthy_within: Duration,
    pub keep_previous: u32,
    #[serde(with = "secs")]
    pub poll_interval: Duration,
    pub gates: Vec<Gate>,
    /// `rate { min_pause, max_pause }`: each step's pause follows what the gates read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::rollout::pace::Rate>,
    /// `after = [fleet.api]`: fleets whose releases must finish first, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Where `after` is written, for errors found once every fleet is known.
    #[serde(skip)]
    pub after_span: Option<crate::config::Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub name: String,
    pub check: GateCheck,
    pub insufficient_data: OnInsufficientData,
    pub mode: GateMode,
    /// `slow_at = 0.8`: with a `rate`, a reading over this share of the alarm's
    /// threshold slows the rollout (see `rollout::pace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_at: Option<f64>,
}

impl Fleet {
    /// The tags of the group, its template, instances and volumes: the default tags,
    /// with the instances' own over them.
    pub fn instance_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.default_tags.clone();
        tags.extend(self.instances.tags.clone());
        tags
    }

    /// A fleet without a `traffic` block: queue workers, released by capacity.
    pub fn is_worker(&self) -> bool {
        self.traffic.is_none()
    }

    /// What the fleet's resource names start with: `staging-web`, or `web`.
    pub fn resource_name(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}-{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl Gate {
    /// The name of the alarm this gate reads for the release whose group is `group`:
    /// the operator's alarm, or the per-release alarm immune creates for a metric gate.
    pub fn alarm_name(&self, group: &str) -> String {
        match &self.check {
            GateCheck::Alarm(name) => name.clone(),
            GateCheck::Metric(_) => format!("{group}-{}", self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateCheck {
    /// An existing alarm, read as it is.
    Alarm(String),
    /// A metric immune watches through an alarm it creates per release.
    Metric(MetricSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSpec {
    pub namespace: String,
    pub name: String,
    /// Values may hold `${release.target_group}` and friends, filled in at launch.
    pub dimensions: std::collections::BTreeMap<String, String>,
    /// `Average`, `Sum`, `Minimum`, `Maximum`, `SampleCount`, or a percentile like `p99`.
    pub statistic: String,
    #[serde(with = "secs")]
    pub period: Duration,
    pub evaluation_periods: u32,
    pub threshold: f64,
    pub comparison: Comparison,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparison {
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Comparison {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => Self::Greater,
            ">=" => Self::GreaterOrEqual,
            "<" => Self::Less,
            "<=" => Self::LessOrEqual,
            _ => return None,
        })
    }

    /// The CloudWatch `ComparisonOperator` name.
    pub fn cloudwatch(self) -> &'static str {
        match self {
            Self::Greater => "GreaterThanThreshold",
            Self::GreaterOrEqual => "GreaterThanOrEqualToThreshold",
            Self::Less => "LessThanThreshold",
            Self::LessOrEqual => "LessThanOrEqualToThreshold",
        }
    }
}

/// What a gate without data means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInsufficientData {
    /// Keep observing: the step does not end until the gate has data (at most another
    /// pause), then a gate still without data fails.
    Hold,
    /// No data is no trouble: an error-count alarm has no data when nothing failed.
    Pass,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateMode {
    Enforce,
    /// Record what would have happened and go on.
    DryRun,
    /// Ask a person: `immune approve` / `immune reject`.
    Manual,
}

/// The names a metric gate's dimensions can use to point at the release being rolled
/// out; they only exist once it is launched, so they are filled in then.
pub const RELEASE_REFERENCES: [&str; 4] = ["target_group", "load_balancer", "group", "name"];

/// Replaces `${release.X}` in `text` with `lookup(X)`.
pub fn fill_release_references(text: &str, lookup: impl Fn(&str) -> String) -> String {
    let mut out = text.to_string();
    for name in RELEASE_REFERENCES {
        let marker = format!("${{release.{name}}}");
        if out.contains(&marker) {
            out = out.replace(&marker, &lookup(name));
        }
    }
    out
}

pub(crate) mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Parses `"90s"`, `"5m"`, `"1h"`, `"1m30s"`, `"250ms"`, and humantime's longer forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // humantime also reads "1h 30m" and "5min"; a bare number has no unit and is refused.
    humantime::parse_duration(text.trim()).map_err(|_| {
        format!(
            "invalid duration \"{text}\": use a number and a unit, like \"90s\", \"5m\" or \"1h\""
        )
    })
}

/// Human form of a duration for plans and logs.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (hours, minutes, seconds) = (s / 3600, s % 3600 / 60, s % 60);
    let mut text = String::new();
    if hours > 0 {
        text += &format!("{hours}h");
    }
    if minutes > 0 || (hours > 0 && seconds > 0) {
        text += &format!("{minutes}m");
    }
    if seconds > 0 || s == 0 {
        text += &format!("{seconds}s");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        // humantime's longer forms read as a person means them.
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2 minutes"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-1s",
            "ten minutes",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(show_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(show_duration(Duration::from_secs(300)), "5m");
        assert_eq!(show_duration(Duration::from_secs(7201)), "2h0m1s");
        assert_eq!(show_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(show_duration(Duration::ZERO), "0s");
        for text in ["1h1m1s", "2h0m1s", "45s", "90m", "3h"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&show_duration(d)), Ok(d), "{text}");
        }
    }
}
