//! The names and tags a fleet's releases give AWS resources, all made here from the
//! configuration, and their check against AWS's rules (`aws_names`), each with the
//! attribute it comes from, so that `validate` and `plan` can point at it.

use super::aws_names::{self as rules, Breach, Rule};
use super::model::{fill_release_references, Fleet, GateCheck};

/// A release's group, target group and launch template version: `web-v001`. Past 999 the
/// sequence takes a fourth digit (`web-v1000`), which the names must have room for.
pub fn group_name(fleet: &str, seq: u32) -> String {
    format!("{fleet}-v{seq:03}")
}

/// The fleet's launch template: one per fleet, a version per release.
pub fn template_name(fleet: &Fleet) -> String {
    fleet.resource_name()
}

/// The builder instance that bakes the release's image.
pub fn builder_name(group: &str) -> String {
    format!("{group}-builder")
}

/// Image names must be unique in the account: the configured name, or the group's.
pub fn image_name(fleet: &Fleet, seq: u32) -> String {
    fleet
        .image
        .name
        .clone()
        .unwrap_or_else(|| group_name(&fleet.resource_name(), seq))
}

/// A scaling policy of the release's group.
pub fn policy_name(group: &str, policy: &str) -> String {
    format!("{group}-{policy}")
}

/// The first sequence number of four digits: names are checked at 1 and at 1000, so
/// they hold for every release up to 9999 (`plan` checks each release's own names past
/// that).
pub const FOUR_DIGITS: u32 = 1000;

/// Where a name or tag comes from in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// The namespace and the fleet's name, which every resource name starts with.
    Name,
    /// The fleet's `release`, in the `immune:release` tag of what a release creates.
    Release,
    /// `image.name`.
    ImageName,
    /// `immune { default_tags }`.
    DefaultTags,
    /// `instances.tags`.
    InstanceTags,
    /// A metric gate's label: its per-release alarm is named after it.
    Gate(String),
    /// A gate's `alarm`.
    GateAlarm(String),
    /// An attribute of a metric gate's `metric` block.
    Metric(String, &'static str),
    /// A scaling policy's label.
    Scaling(String),
}

/// One name or tag value immune sends, with the rule AWS holds it to.
#[derive(Debug, Clone)]
pub struct Sent {
    pub source: Source,
    /// What the value is, for messages: "release", "tag key", or with `{}` where the
    /// value goes, "value {} of tag `team`".
    pub subject: String,
    pub value: String,
    pub rule: &'static Rule,
    /// Where AWS gets it, for messages: "the tags of the release's target group".
    pub place: String,
}

/// A name or tag value AWS would refuse.
#[derive(Debug, Clone)]
pub struct Problem {
    pub sent: Sent,
    pub breach: Breach,
    /// The release whose names break the rule, when not every release's do (`-v1000`).
    pub from_seq: Option<u32>,
    /// A name too long already is longer still from release 1000 on: by this much.
    pub longest: Option<usize>,
}

impl Problem {
    /// One line: "release `feat#12` holds `#`, which ELB does not allow in the
    /// `immune:release` tag of the release's target group". `shown` is false for a
    /// value that reads a sensitive variable.
    pub fn summary(&self, shown: bool) -> String {
        let Sent {
            subject,
            value,
            rule,
            place,
            ..
        } = &self.sent;
        let value = match shown {
            true => format!("`{value}`"),
            false => "(sensitive)".into(),
        };
        let service = rule.service;
        let clause = match &self.breach {
            Breach::Starts("aws:") => "begins with `aws:`, which AWS keeps for its own tags".into(),
            Breach::TooLong { .. } | Breach::TooShort { length: 1.. } => {
                format!("{} in {place}", self.breach.describe(rule))
            }
            other => format!(
                "{}, which {service} does not allow in {place}",
                other.describe(rule)
            ),
        };
        let when = match self.from_seq {
            Some(seq) if seq == FOUR_DIGITS => format!("from release {seq} on, "),
            Some(seq) => format!("at release {seq}, "),
            None => String::new(),
        };
        let said = match subject.contains("{}") {
            true => subject.replacen("{}", &value, 1),
            false => format!("{subject} {value}"),
        };
        format!("{when}{said} {clause}")
    }

    /// The rule, its page and a way out.
    pub fn hint(&self, shown: bool, namespace: bool) -> String {
        let rule = self.sent.rule;
        let mut text = format!("{} ({})", rule.describe(), rule.page);
        let fix = match (&self.breach, &self.sent.source) {
            (Breach::TooLong { length }, source) => {
                let over = self.longest.unwrap_or(*length).max(*length) - rule.max;
                let s = if over == 1 { "" } else { "s" };
                let fourth = match self.longest {
                    Some(_) => " (names take a fourth digit from release 1000 on)",
                    None => "",
                };
                Some(format!("{}{fourth}", match source {
                    Source::Name if namespace => format!("every name of the fleet begins with `<namespace>-<fleet>`: shorten the namespace or the fleet name by {over} character{s}"),
                    Source::Name => format!("every name of the fleet begins with its name: shorten it by {over} character{s}"),
                    Source::Gate(_) => format!("the alarm is named after the release's group and the gate: shorten the gate's name by {over} character{s}"),
                    Source::Scaling(_) => format!("the policy is named after the release's group and the policy: shorten the policy's name by {over} character{s}"),
                    _ => format!("shorten it by {over} character{s}"),
                }))
            }
            (Breach::TooShort { .. }, Source::Name) => Some(
                "use a fleet name of 3 characters or more, or set `immune { namespace = \"...\" }`, which goes before it in every name".into(),
            ),
            (Breach::Starts("aws:"), _) => {
                Some("AWS keeps keys beginning with `aws:` for its own tags: give the tag another key".into())
            }
            (Breach::Character(_), Source::Name) => None,
            (Breach::Character(_), _) if shown => {
                Some(format!("for example `{}`", rule.mend(&self.sent.value)))
            }
            _ => None,
        };
        if let Some(fix) = fix {
            text += "; ";
            text += &fix;
        }
        text
    }
}

/// Everything immune names or tags for a release `seq` of the fleet that comes from the
/// configuration (immune's own constant tags and ids are left out), strictest rule first
/// where one value goes to several services.
pub fn sent(fleet: &Fleet, seq: u32) -> Vec<Sent> {
    let group = group_name(&fleet.resource_name(), seq);
    let release = fleet.release.as_deref();
    let mut out = Vec::new();
    let mut send =
        |source: Source, subject: &str, value: &str, rule: &'static Rule, place: &str| {
            out.push(Sent {
                source,
                subject: subject.to_string(),
                value: value.to_string(),
                rule,
                place: place.to_string(),
            })
        };

    // Names first: where a value is also a tag (`Name`), the name's rule is the stricter.
    let named = |rule: &'static Rule| rule.what;
    if !fleet.is_worker() {
        let rule = &rules::TARGET_GROUP_NAME;
        send(Source::Name, "name", &group, rule, named(rule));
    }
    for rule in [
        &rules::AUTO_SCALING_GROUP_NAME,
        &rules::LAUNCH_TEMPLATE_VERSION_DESCRIPTION,
    ] {
        send(Source::Name, "name", &group, rule, named(rule));
    }
    // Without a namespace the launch template is named after the fleet alone.
    let subject = match fleet.namespace {
        Some(_) => "name",
        None => "fleet name",
    };
    let rule = &rules::LAUNCH_TEMPLATE_NAME;
    send(
        Source::Name,
        subject,
        &template_name(fleet),
        rule,
        named(rule),
    );
    let (source, subject) = match fleet.image.name {
        Some(_) => (Source::ImageName, "image name"),
        None => (Source::Name, "name"),
    };
    let rule = &rules::AMI_NAME;
    send(source, subject, &image_name(fleet, seq), rule, named(rule));

    for gate in &fleet.rollout.gates {
        let label = gate.name.clone();
        match &gate.check {
            GateCheck::Alarm(alarm) => {
                let rule = &rules::ALARM_NAME;
                send(
                    Source::GateAlarm(label),
                    "alarm name",
                    alarm,
                    rule,
                    named(rule),
                );
            }
            GateCheck::Metric(metric) => {
                let rule = &rules::ALARM_NAME;
                let alarm = gate.alarm_name(&group);
                send(
                    Source::Gate(label.clone()),
                    "alarm name",
                    &alarm,
                    rule,
                    named(rule),
                );
                let metric_rules = [
                    (
                        "namespace",
                        "metric namespace",
                        &metric.namespace,
                        &rules::METRIC_NAMESPACE,
                    ),
                    ("name", "metric name", &metric.name, &rules::METRIC_NAME),
                ];
                for (attribute, subject, value, rule) in metric_rules {
                    let source = Source::Metric(label.clone(), attribute);
                    send(source, subject, value, rule, named(rule));
                }
                for (key, value) in &metric.dimensions {
                    let source = || Source::Metric(label.clone(), "dimensions");
                    let rule = &rules::DIMENSION_NAME;
                    send(source(), "dimension name", key, rule, named(rule));
                    // The target group's and load balancer's dimensions are known at
                    // launch only, and are far shorter than the limit.
                    let filled = fill_release_references(value, |r| match r {
                        "group" => group.clone(),
                        // Without a `release`, the fingerprint's name, as long as this.
                        "name" => release.unwrap_or("r-00000000").to_string(),
                        other => format!("${{release.{other}}}"),
                    });
                    let rule = &rules::DIMENSION_VALUE;
                    let subject = format!("value {{}} of dimension `{key}`");
                    send(source(), &subject, &filled, rule, named(rule));
                }
            }
        }
    }
    for policy in &fleet.instances.scaling {
        let rule = &rules::SCALING_POLICY_NAME;
        let source = Source::Scaling(policy.name.clone());
        let name = policy_name(&group, &policy.name);
        send(source, "scaling policy name", &name, rule, named(rule));
    }
    // Then the tags, ELB's first: a release or default tag ELB refuses is reported as
    // ELB's, whatever else refuses it too.
    let mut tagged = |resource: &str,
                      name: (&str, Source, &str),
                      extra: &[(&std::collections::BTreeMap<String, String>, Source)],
                      key_rule: &'static Rule,
                      value_rule: &'static Rule| {
        let own = |tag: &str| format!("the `{tag}` tag of {resource}");
        send(name.1, name.2, name.0, value_rule, &own("Name"));
        send(
            Source::Name,
            "fleet name",
            &fleet.name,
            value_rule,
            &own("immune:fleet"),
        );
        if let Some(release) = release {
            send(
                Source::Release,
                "release",
                release,
                value_rule,
                &own("immune:release"),
            );
        }
        let place = format!("the tags of {resource}");
        for (tags, source) in extra {
            for (key, value) in tags.iter() {
                send(source.clone(), "tag key", key, key_rule, &place);
                let subject = format!("value {{}} of tag `{key}`");
                send(source.clone(), &subject, value, value_rule, &place);
            }
        }
    };
    // The default tags go everywhere, the instances' own to what carries instances.
    let defaults = [(&fleet.default_tags, Source::DefaultTags)];
    let with_instances = [
        defaults[0].clone(),
        (&fleet.instances.tags, Source::InstanceTags),
    ];
    if !fleet.is_worker() {
        tagged(
            "the release's target group",
            (&group, Source::Name, "name"),
            &defaults,
            &rules::ELB_TAG_KEY,
            &rules::ELB_TAG_VALUE,
        );
    }
    tagged(
        "the release's Auto Scaling group",
        (&group, Source::Name, "name"),
        &with_instances,
        &rules::AUTOSCALING_TAG_KEY,
        &rules::AUTOSCALING_TAG_VALUE,
    );
    tagged(
        "the builder instance",
        (&builder_name(&group), Source::Name, "name"),
        &defaults,
        &rules::EC2_TAG_KEY,
        &rules::EC2_TAG_VALUE,
    );
    tagged(
        "the release's instances, volumes and image",
        (&group, Source::Name, "name"),
        &with_instances,
        &rules::EC2_TAG_KEY,
        &rules::EC2_TAG_VALUE,
    );
    for gate in &fleet.rollout.gates {
        if let GateCheck::Metric(_) = gate.check {
            tagged(
                "the release's gate alarms",
                (
                    &gate.alarm_name(&group),
                    Source::Gate(gate.name.clone()),
                    "alarm name",
                ),
                &defaults,
                &rules::CLOUDWATCH_TAG_KEY,
                &rules::CLOUDWATCH_TAG_VALUE,
            );
        }
    }

    out
}

/// What AWS would refuse of the names and tags of release `seq`: one problem for each
/// value of each source, the first rule it breaks.
pub fn problems(fleet: &Fleet, seq: u32) -> Vec<Problem> {
    let mut found: Vec<Problem> = Vec::new();
    for sent in sent(fleet, seq) {
        let Err(breach) = sent.rule.check(&sent.value) else {
            continue;
        };
        let seen = found.iter().any(|p| {
            (&p.sent.source, &p.sent.subject, &p.sent.value)
                == (&sent.source, &sent.subject, &sent.value)
        });
        if !seen {
            found.push(Problem {
                sent,
                breach,
                from_seq: None,
                longest: None,
            });
        }
    }
    found
}

/// The problems of every release a fleet can reach in the sequence's first four digits:
/// those of the first release, then those that only the four-digit sequence brings
/// (a target group name of 33 characters from `-v1000` on).
pub fn problems_of_every_release(fleet: &Fleet) -> Vec<Problem> {
    let mut found = problems(fleet, 1);
    let same = |a: &Problem, b: &Problem| {
        (&a.sent.source, &a.sent.subject, a.sent.rule.what)
            == (&b.sent.source, &b.sent.subject, b.sent.rule.what)
    };
    for problem in problems(fleet, FOUR_DIGITS) {
        match found.iter_mut().find(|p| same(p, &problem)) {
            Some(first) => {
                if let (Breach::TooLong { length: now }, Breach::TooLong { length: then }) =
                    (&first.breach, &problem.breach)
                {
                    first.longest = (then > now).then_some(*then);
                }
            }
            None => found.push(Problem {
                from_seq: Some(FOUR_DIGITS),
                ..problem
            }),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_sources, Mode, VarInputs};
    use std::path::PathBuf;

    /// A web fleet `web` with a metric gate and a scaling policy, as loaded.
    fn web() -> Fleet {
        let text = r#"
fleet "web" {
  release = "v1"
  image {
    source_ami    = "ami-1"
    instance_type = "t3.small"
  }
  instances {
    instance_type   = "t3.small"
    subnets         = ["subnet-a"]
    security_groups = ["sg-1"]
    scaling "cpu" {
      metric = "cpu"
      target = 50
    }
    capacity {
      min     = 1
      max     = 3
      desired = 2
    }
  }
  traffic {
    load_balancer = "web"
    port          = 8080
  }
  rollout {
    gate "latency" {
      metric {
        namespace  = "AWS/ApplicationELB"
        name       = "TargetResponseTime"
        dimensions = { TargetGroup = release.target_group, Release = release.name }
        threshold  = 0.5
      }
    }
  }
}
"#;
        let files = [(PathBuf::from("main.hcl"), text.as_bytes().to_vec())];
        let config = load_sources(&files, &VarInputs::default(), Mode::Plan)
            .unwrap_or_else(|e| panic!("{e}"));
        config.fleets.into_iter().next().unwrap()
    }

    fn worker() -> Fleet {
        Fleet {
            traffic: None,
            ..web()
        }
    }

    /// (subject, value, where, breach) of each problem.
    fn found(fleet: &Fleet, seq: u32) -> Vec<(String, String, String, Breach)> {
        problems(fleet, seq)
            .into_iter()
            .map(|p| (p.sent.subject, p.sent.value, p.sent.place, p.breach))
            .collect()
    }

    #[test]
    fn a_fleet_as_configured_has_names_and_tags_aws_takes() {
        let fleet = web();
        assert!(found(&fleet, 1).is_empty());
        assert!(found(&fleet, 1000).is_empty());
        let sent = sent(&fleet, 7);
        let values: Vec<(&str, &str)> = sent
            .iter()
            .map(|s| (s.rule.what, s.value.as_str()))
            .collect();
        for expected in [
            ("a target group name", "web-v007"),
            ("an Auto Scaling group name", "web-v007"),
            ("a launch template name", "web"),
            ("an AMI name", "web-v007"),
            ("an alarm name", "web-v007-latency"),
            ("a scaling policy name", "web-v007-cpu"),
            ("a target group's tag value", "v1"),
            ("an EC2 tag value", "web-v007-builder"),
            ("an alarm's tag value", "web-v007-latency"),
            ("a dimension value", "v1"),
        ] {
            assert!(values.contains(&expected), "{expected:?} in {values:?}");
        }
    }

    #[test]
    fn a_release_with_a_hash_is_refused_for_the_target_groups_tags_only() {
        let mut fleet = web();
        fleet.release = Some("feat#12".into());
        assert_eq!(
            found(&fleet, 1),
            [(
                "release".to_string(),
                "feat#12".to_string(),
                "the `immune:release` tag of the release's target group".to_string(),
                Breach::Character('#')
            )],
            "one problem, ELB's, though the value goes to other services too"
        );
        let problem = &problems(&fleet, 1)[0];
        assert_eq!(
            problem.summary(true),
            "release `feat#12` holds `#`, which ELB does not allow in the `immune:release` tag of the release's target group"
        );
        assert!(
            problem
                .hint(true, false)
                .ends_with("; for example `feat-12`"),
            "{}",
            problem.hint(true, false)
        );
        assert_eq!(
            problem.summary(false),
            "release (sensitive) holds `#`, which ELB does not allow in the `immune:release` tag of the release's target group"
        );
        assert!(!problem.hint(false, false).contains("feat"));
        // EC2, Auto Scaling and CloudWatch take any character in a tag value.
        let mut worker = worker();
        worker.release = Some("feat#12".into());
        assert!(found(&worker, 1).is_empty());
        // Letters of any script are letters to ELB.
        fleet.release = Some("Überprüfung 日本 ٣".into());
        assert!(found(&fleet, 1).is_empty());
    }

    #[test]
    fn a_release_over_256_characters_is_refused_once() {
        let mut fleet = worker();
        fleet.release = Some("r".repeat(257));
        let found = found(&fleet, 1);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].3, Breach::TooLong { length: 257 });
    }

    #[test]
    fn a_target_group_name_of_32_characters_gets_a_33rd_at_release_1000() {
        let mut fleet = web();
        fleet.namespace = Some("n".repeat(20));
        fleet.name = "abcdef".into();
        // `nnnn...-abcdef` has 27 characters: 32 with `-v999`, 33 with `-v1000`.
        assert!(found(&fleet, 999).is_empty());
        assert_eq!(
            found(&fleet, 1000),
            [(
                "name".to_string(),
                format!("{}-abcdef-v1000", "n".repeat(20)),
                "a target group name".to_string(),
                Breach::TooLong { length: 33 }
            )]
        );
        let every = problems_of_every_release(&fleet);
        assert_eq!(every.len(), 1);
        assert_eq!(every[0].from_seq, Some(FOUR_DIGITS));
        assert_eq!(
            every[0].summary(true),
            format!("from release 1000 on, name `{}-abcdef-v1000` has 33 characters, more than the 32 ELB allows in a target group name", "n".repeat(20))
        );
        assert!(every[0]
            .hint(true, true)
            .ends_with("shorten the namespace or the fleet name by 1 character"));
        // A worker fleet has no target group: its names may be longer.
        let worker = Fleet {
            traffic: None,
            ..fleet.clone()
        };
        assert!(problems_of_every_release(&worker).is_empty());
        // One character less holds up to release 9999.
        fleet.name = "abcde".into();
        assert!(problems_of_every_release(&fleet).is_empty());
        assert!(found(&fleet, 9999).is_empty());
        assert_eq!(
            found(&fleet, 10_000)[0].3,
            Breach::TooLong { length: 33 },
            "past 9999, plan checks each release's names"
        );
    }

    #[test]
    fn a_name_already_too_long_says_how_much_to_cut_for_release_1000() {
        let mut fleet = web();
        fleet.namespace = Some("n".repeat(20));
        fleet.name = "abcdefghij".into();
        let every = problems_of_every_release(&fleet);
        assert_eq!(every.len(), 1, "reported once, for the first release");
        assert_eq!(every[0].from_seq, None);
        assert_eq!(every[0].breach, Breach::TooLong { length: 36 });
        assert!(every[0].hint(true, true).ends_with(
            "shorten the namespace or the fleet name by 5 characters (names take a fourth digit from release 1000 on)"
        ));
    }

    #[test]
    fn a_fleet_name_under_3_characters_is_too_short_for_a_launch_template() {
        let mut fleet = worker();
        fleet.name = "f1".into();
        assert_eq!(
            found(&fleet, 1),
            [(
                "fleet name".to_string(),
                "f1".to_string(),
                "a launch template name".to_string(),
                Breach::TooShort { length: 2 }
            )]
        );
        fleet.namespace = Some("staging".into());
        assert!(found(&fleet, 1).is_empty());
    }

    #[test]
    fn an_image_name_follows_the_ami_rule() {
        let mut fleet = web();
        fleet.image.name = Some("web:feat#12".into());
        let found = found(&fleet, 1);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].0.as_str(), &found[0].3),
            ("image name", &Breach::Character(':'))
        );
        assert_eq!(problems(&fleet, 1)[0].sent.source, Source::ImageName);
        fleet.image.name = Some("ab".into());
        assert_eq!(
            problems(&fleet, 1)[0].breach,
            Breach::TooShort { length: 2 }
        );
    }

    #[test]
    fn tags_meet_the_rules_of_the_resources_they_go_to() {
        let mut fleet = web();
        // The instances' tags go to EC2 and Auto Scaling, which take `#`...
        fleet.instances.tags = [("cost#center".to_string(), "R&D".to_string())].into();
        assert!(found(&fleet, 1).is_empty());
        // ... the default tags to the target group too, which does not.
        fleet.default_tags = fleet.instances.tags.clone();
        let found = problems(&fleet, 1);
        let summaries: Vec<String> = found.iter().map(|p| p.summary(true)).collect();
        assert_eq!(
            summaries,
            [
                "tag key `cost#center` holds `#`, which ELB does not allow in the tags of the release's target group",
                "value `R&D` of tag `cost#center` holds `&`, which ELB does not allow in the tags of the release's target group",
            ]
        );
        assert!(found.iter().all(|p| p.sent.source == Source::DefaultTags));
        fleet.default_tags = [("aws:team".to_string(), "x".to_string())].into();
        assert_eq!(
            problems(&fleet, 1)[0].summary(true),
            "tag key `aws:team` begins with `aws:`, which AWS keeps for its own tags"
        );
        fleet.instances.tags = [("k".to_string(), "v".repeat(257))].into();
        fleet.default_tags.clear();
        let found = problems(&fleet, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].breach, Breach::TooLong { length: 257 });
        assert_eq!(found[0].sent.source, Source::InstanceTags);
    }

    #[test]
    fn gate_and_policy_labels_make_names_of_at_most_255_characters() {
        let mut fleet = web();
        // `web-v001-` has 9 characters: a label of 246 makes 255, 247 makes 256.
        fleet.rollout.gates[0].name = "g".repeat(246);
        fleet.instances.scaling[0].name = "p".repeat(246);
        assert!(found(&fleet, 1).is_empty());
        assert_eq!(
            found(&fleet, FOUR_DIGITS).len(),
            2,
            "from release 1000 on, the group's name has one more character"
        );
        fleet.rollout.gates[0].name = "g".repeat(247);
        fleet.instances.scaling[0].name = "p".repeat(247);
        let found = problems(&fleet, 1);
        let sources: Vec<&Source> = found.iter().map(|p| &p.sent.source).collect();
        assert_eq!(
            sources,
            [
                &Source::Gate("g".repeat(247)),
                &Source::Scaling("p".repeat(247))
            ],
            "one problem each, the alarm's name and not also its Name tag"
        );
        assert!(found[0]
            .hint(true, false)
            .ends_with("shorten the gate's name by 1 character"));
    }

    #[test]
    fn an_alarm_gate_names_an_alarm_of_at_most_255_characters() {
        let mut fleet = web();
        fleet.rollout.gates[0].check = GateCheck::Alarm("a".repeat(256));
        let found = problems(&fleet, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].sent.source, Source::GateAlarm("latency".into()));
    }
}
