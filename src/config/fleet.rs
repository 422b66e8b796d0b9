//! One `fleet` block into a typed [`Fleet`]: image, instances, traffic, rollout and gates.

use super::diagnostic::{Diagnostic, Diagnostics};
use super::eval::{span_of, type_name, Evaluator};
use super::model::*;
use super::names::Source;
use super::reader::BlockReader;
use super::source::{FileId, Sources};
use hcl::Value;
use hcl_edit::structure::Block;
use std::time::Duration;

/// Reads the fleet written as `fleet "label"`, named `name` (see `load::fleet_name`).
pub fn read_fleet(
    eval: &Evaluator,
    diags: &mut Diagnostics,
    sources: &Sources,
    file: FileId,
    block: &Block,
    label: &str,
    name: String,
) -> Fleet {
    let what = format!("fleet \"{label}\"");
    let location = span_of(file, &block.ident);
    let mut places = Places::new();
    places.insert(
        Source::Name,
        Place {
            span: span_of(file, &block.labels[0]),
            ..Place::default()
        },
    );
    let mut r = BlockReader::new(eval, diags, file, block, what);
    if !valid_name_part(&name) {
        let d = Diagnostic::new(
            format!("fleet name `{name}` must be 1 to 20 lowercase letters, digits or hyphens, starting with a letter"),
            span_of(file, &block.labels[0]),
        );
        r.diags.push(if name == label {
            d
        } else {
            d.with_hint(format!("inside module `{}`, fleet \"{label}\" is named `{name}`; shorten the module or fleet name", eval.module_path.join(".")))
        });
    }
    let region = r.string("region");
    let release = r.string("release");
    places.insert(Source::Release, r.place("release"));
    let irreversible = r.boolean("irreversible").unwrap_or(false);
    let promote_after = r
        .block("promote_after")
        .and_then(|b| read_promote_after(&mut r, b, &name));

    let image = match r.required_block("image") {
        Some(b) => {
            let mut ir = r.nested(b, "image".into());
            let spec = ImageSpec {
                source_ami: ir.required_string("source_ami"),
                instance_type: instance_type(&mut ir, "instance_type"),
                provision: ir.string("provision"),
                name: ir.string("name"),
                keep: ir.number("keep", 1..=100, Some(3)) as u32,
                bake_timeout: ir.duration("bake_timeout", Duration::from_secs(30 * 60)),
                subnet: ir.string("subnet"),
                security_groups: ir.optional_strings("security_groups"),
                iam_instance_profile: ir.string("iam_instance_profile"),
            };
            places.insert(Source::ImageName, ir.place("name"));
            if let Some(script) = &spec.provision {
                check_provision(&mut ir, script);
            }
            if spec.bake_timeout.is_zero() {
                let span = ir.body_span("bake_timeout");
                ir.diags.push(
                    Diagnostic::new("`bake_timeout` must be longer than zero", span)
                        .with_hint("the builder boots, runs the provision script and powers off within it; bake_timeout = \"30m\" is the default"),
                );
            }
            ir.finish();
            spec
        }
        None => ImageSpec {
            source_ami: String::new(),
            instance_type: String::new(),
            provision: None,
            name: None,
            keep: 3,
            bake_timeout: Duration::from_secs(30 * 60),
            subnet: None,
            security_groups: None,
            iam_instance_profile: None,
        },
    };

    let worker = r.blocks("traffic").is_empty();
    let instances = match r.required_block("instances") {
        Some(b) => read_instances(r.nested(b, "instances".into()), worker, &mut places),
        None => InstanceSpec {
            instance_type: String::new(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            user_data: None,
            capacity: Capacity {
                min: 1,
                max: 1,
                desired: 1,
            },
            iam_instance_profile: None,
            key_name: None,
            tags: Default::default(),
            root_volume: None,
            metadata: Metadata::default(),
            spot: None,
            scaling: Vec::new(),
            termination_grace: DEFAULT_TERMINATION_GRACE,
        },
    };

    // Without a traffic block the fleet is a worker fleet: released by capacity.
    let traffic = r
        .block("traffic")
        .map(|b| read_traffic(&mut r.nested(b, "traffic".into())));

    let rollout = match r.block("rollout") {
        Some(b) => read_rollout(
            &mut r.nested(b, "rollout".into()),
            traffic.is_none(),
            &mut places,
        ),
        None => default_rollout(vec![100]),
    };
    r.finish();

    Fleet {
        name,
        namespace: None,
        region,
        release,
        image,
        instances,
        traffic,
        rollout,
        irreversible,
        promote_after,
        default_tags: Default::default(),
        location: location
            .map(|span| {
                let at = sources.position(&span);
                format!("{}:{}:{}", at.path.display(), at.line, at.column)
            })
            .unwrap_or_default(),
        places,
    }
}

/// Where the values of a fleet's names and tags are written.
type Places = std::collections::BTreeMap<Source, Place>;

/// A fleet name, or a namespace: both become parts of AWS resource names
/// (`<namespace>-<fleet>-v001`), whose target group form has at most 32 characters.
pub(super) fn valid_name_part(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// The provision script runs inside immune's bake wrapper (see `crate::bake`), which
/// needs a script and room for itself in EC2's 16 KiB of user data.
fn check_provision(ir: &mut BlockReader, script: &str) {
    let span = ir.body_span("provision");
    let start = script.trim_start();
    if start.starts_with("#cloud-config") || start.to_ascii_lowercase().starts_with("content-type:")
    {
        ir.diags.push(
            Diagnostic::new("`provision` must be a script, not cloud-init configuration", span)
                .with_hint("immune runs the provision script on the builder and powers it off when the script succeeds; write the steps as a shell script (#!/bin/sh)"),
        );
        return;
    }
    let size = crate::bake::user_data(Some(script)).len();
    if size > crate::bake::USER_DATA_MAX {
        ir.diags.push(
            Diagnostic::new(
                format!(
                    "the provision script makes {size} bytes of user data, over the {} EC2 accepts",
                    crate::bake::USER_DATA_MAX
                ),
                span,
            )
            .with_hint("keep the script short: have it download the larger parts (from S3, with the builder's instance profile)"),
        );
    }
}

/// `worker`: the fleet has no `traffic` block.
fn read_instances(mut ir: BlockReader, worker: bool, places: &mut Places) -> InstanceSpec {
    let instance_type = instance_type(&mut ir, "instance_type");
    let subnets = ir.strings("subnets");
    let security_groups = ir.strings("security_groups");
    let user_data = ir.string("user_data");
    let iam_instance_profile = ir.string("iam_instance_profile");
    let key_name = ir.string("key_name");
    let tags = ir.tags("tags");
    places.insert(Source::InstanceTags, ir.place("tags"));
    let capacity = match ir.required_block("capacity") {
        Some(c) => read_capacity(ir.nested(c, "capacity".into())),
        None => Capacity {
            min: 1,
            max: 1,
            desired: 1,
        },
    };
    let root_volume = ir.block("root_volume").map(|b| {
        let mut vr = ir.nested(b, "root_volume".into());
        let optional = |vr: &mut BlockReader, key, range| {
            vr.has(key).then(|| vr.number(key, range, Some(0)) as u32)
        };
        let size = optional(&mut vr, "size", 1..=65_536);
        let volume_type = vr.has("type").then(|| {
            vr.choice(
                "type",
                &["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"],
                "gp3",
            )
            .to_string()
        });
        let encrypted = vr.boolean("encrypted");
        let iops = optional(&mut vr, "iops", 100..=256_000);
        let throughput = optional(&mut vr, "throughput", 125..=2_000);
        let kind = volume_type.as_deref().unwrap_or("gp3");
        if iops.is_some() && !matches!(kind, "gp3" | "io1" | "io2") {
            let span = vr.span.clone();
            vr.diags.push(
                Diagnostic::new(format!("`iops` does not apply to {kind} volumes"), span)
                    .with_hint("iops can be set for gp3, io1 and io2 volumes"),
            );
        }
        if matches!(kind, "io1" | "io2") && iops.is_none() && volume_type.is_some() {
            let span = vr.span.clone();
            vr.diags.push(
                Diagnostic::new(format!("{kind} volumes need `iops`"), span)
                    .with_hint("set iops, e.g. iops = 3000"),
            );
        }
        if throughput.is_some() && kind != "gp3" {
            let span = vr.span.clone();
            vr.diags.push(
                Diagnostic::new(
                    format!("`throughput` does not apply to {kind} volumes"),
                    span,
                )
                .with_hint("throughput can be set for gp3 volumes only"),
            );
        }
        vr.finish();
        RootVolume {
            size,
            volume_type,
            encrypted,
            iops,
            throughput,
        }
    });
    let metadata = match ir.block("metadata") {
        Some(b) => {
            let mut mr = ir.nested(b, "metadata".into());
            let tokens = mr.choice("http_tokens", &["required", "optional"], "required");
            let hop_limit = mr.number("hop_limit", 1..=64, Some(1)) as u8;
            mr.finish();
            Metadata {
                tokens_required: tokens == "required",
                hop_limit,
            }
        }
        None => Metadata::default(),
    };
    let spot = ir.block("spot").map(|b| {
        let mut sr = ir.nested(b, "spot".into());
        let span = sr.span.clone();
        let instance_types = if sr.has("instance_types") {
            let types = sr.strings("instance_types");
            if types.is_empty() {
                sr.diags
                    .error("`instance_types` must name at least one type", span);
            }
            for t in &types {
                check_instance_type(&mut sr, "instance_types", t);
            }
            types
        } else {
            sr.diags.push(
                Diagnostic::new("`spot` needs `instance_types`", span.clone()).with_hint(
                    "list the types instances may have, e.g. instance_types = [\"t3.small\", \"t3a.small\"]",
                ),
            );
            Vec::new()
        };
        let on_demand_base = sr.number("on_demand_base", 0..=1000, Some(0)) as u32;
        let on_demand_percent = sr.number("on_demand_percent", 0..=100, Some(0)) as u8;
        sr.finish();
        Spot {
            instance_types,
            on_demand_base,
            on_demand_percent,
        }
    });
    let mut scaling: Vec<ScalingPolicy> = Vec::new();
    for b in ir.blocks("scaling") {
        let span = span_of(ir.file, &b.ident);
        let Some(name) = b.labels.first().map(|l| l.as_str().to_string()) else {
            ir.diags.push(
                Diagnostic::new("`scaling` block needs a name", span)
                    .with_hint("scaling \"cpu\" { metric = \"cpu\"  target = 50 }"),
            );
            continue;
        };
        if scaling.iter().any(|p| p.name == name) {
            ir.diags
                .error(format!("duplicate scaling policy \"{name}\""), span.clone());
        }
        places.insert(
            Source::Scaling(name.clone()),
            Place {
                span: span_of(ir.file, &b.labels[0]),
                ..Place::default()
            },
        );
        let mut pr = ir.nested(b, format!("scaling \"{name}\""));
        let metric = pr.choice("metric", &ScalingMetric::NAMES, "cpu");
        if !pr.has("metric") {
            pr.missing("metric");
        }
        if worker && metric == ScalingMetric::RequestsPerTarget.name() {
            let span = pr.body_span("metric");
            pr.diags.push(
                Diagnostic::new(
                    "scaling metric \"requests_per_target\" needs a load balancer, and this worker fleet has no `traffic` block",
                    span,
                )
                .with_hint("scale workers on cpu, network_in or network_out (or on a queue's depth through an alarm of your own), or add a traffic block for a web fleet"),
            );
        }
        let target = pr.float("target").unwrap_or(50.0);
        if target <= 0.0 {
            let span = pr.span.clone();
            pr.diags.error("`target` must be above zero", span);
        }
        pr.finish();
        scaling.push(ScalingPolicy {
            name,
            metric: ScalingMetric::parse(metric).unwrap_or(ScalingMetric::Cpu),
            target,
        });
    }
    if !scaling.is_empty() && capacity.min == capacity.max {
        let span = ir.span.clone();
        ir.diags.push(
            Diagnostic::new(
                format!(
                    "scaling policies need room to scale, but capacity min and max are both {}",
                    capacity.min
                ),
                span,
            )
            .with_hint("set capacity.max above capacity.min"),
        );
    }
    let termination_grace = ir.duration("termination_grace", DEFAULT_TERMINATION_GRACE);
    if ir.has("termination_grace") && !(GRACE_MIN..=GRACE_MAX).contains(&termination_grace) {
        let span = ir.body_span("termination_grace");
        ir.diags.push(
            Diagnostic::new(
                format!(
                    "`termination_grace` must be from {} to {}, got {}",
                    show_duration(GRACE_MIN),
                    show_duration(GRACE_MAX),
                    show_duration(termination_grace)
                ),
                span,
            )
            .with_hint("it is the heartbeat timeout of the group's termination lifecycle hook, which AWS bounds; a worker with longer jobs sends heartbeats (`aws autoscaling record-lifecycle-action-heartbeat`)"),
        );
    }
    if !worker && ir.has("termination_grace") {
        let span = ir.body_span("termination_grace");
        ir.diags.push(
            Diagnostic::new(
                "`termination_grace` applies to worker fleets, and this fleet has a `traffic` block",
                span,
            )
            .with_hint("a web fleet's instances leave once the load balancer drained them (traffic.deregistration_delay); remove termination_grace, or the traffic block for a fleet of queue workers"),
        );
    }
    ir.finish();
    InstanceSpec {
        instance_type,
        subnets,
        security_groups,
        user_data,
        capacity,
        iam_instance_profile,
        key_name,
        tags,
        root_volume,
        metadata,
        spot,
        scaling,
        termination_grace,
    }
}

/// How long a leaving worker may take by default to finish its job.
const DEFAULT_TERMINATION_GRACE: Duration = Duration::from_secs(15 * 60);
/// AWS's bounds on a lifecycle hook's heartbeat timeout.
const GRACE_MIN: Duration = Duration::from_secs(30);
const GRACE_MAX: Duration = Duration::from_secs(2 * 3600);

fn read_capacity(mut cr: BlockReader) -> Capacity {
    let min = cr.try_number("min", 0..=1000);
    let max = cr.try_number("max", 1..=1000);
    let desired = cr.try_number("desired", 0..=1000);
    // Compared only when all three are known.
    if let (Some(min), Some(max), Some(desired)) = (min, max, desired) {
        if !(min <= desired && desired <= max) {
            let span = cr.span.clone();
            cr.diags.push(Diagnostic::new(
                format!("capacity must satisfy min <= desired <= max, got min {min}, desired {desired}, max {max}"),
                span,
            ));
        }
    }
    cr.finish();
    let min = min.unwrap_or(1) as u32;
    Capacity {
        min,
        max: max.map_or(min.max(1), |m| m as u32),
        desired: desired.map_or(min, |d| d as u32),
    }
}

/// A required instance type attribute, checked for the `family.size` shape.
fn instance_type(r: &mut BlockReader, key: &'static str) -> String {
    let text = r.required_string(key);
    if !text.is_empty() {
        check_instance_type(r, key, &text);
    }
    text
}

fn check_instance_type(r: &mut BlockReader, key: &'static str, text: &str) {
    let part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let valid = match text.split_once('.') {
        Some((family, size)) => {
            part(family) && part(size) && family.starts_with(|c: char| c.is_ascii_lowercase())
        }
        None => false,
    };
    if !valid {
        let span = r.body_span(key);
        r.diags.push(
            Diagnostic::new(format!("`{text}` is not an EC2 instance type"), span)
                .with_hint("instance types look like \"t3.small\" or \"m7g.large\""),
        );
    }
}

fn read_traffic(r: &mut BlockReader) -> Traffic {
    let given = (r.has("listener_arn"), r.has("load_balancer"));
    let arn = r.string("listener_arn");
    let lb = r.string("load_balancer");
    let has_port = r.has("listener_port");
    let listener_port = r.number("listener_port", 1..=65535, Some(80)) as u16;
    let listener = match (arn, lb) {
        (Some(arn), None) => {
            if has_port {
                let span = r.span.clone();
                r.diags.error(
                    "`listener_port` goes with `load_balancer`, not `listener_arn`",
                    span,
                );
            }
            ListenerRef::Arn(arn)
        }
        (None, Some(name)) => ListenerRef::LoadBalancer {
            name,
            port: listener_port,
        },
        // Given but not evaluated: the reason is reported already.
        (None, None) if given.0 || given.1 => ListenerRef::Arn(String::new()),
        (arn, lb) => {
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new(
                    if arn.is_some() && lb.is_some() {
                        "traffic has both `listener_arn` and `load_balancer`; give one"
                    } else {
                        "traffic needs `listener_arn` or `load_balancer`"
                    },
                    span,
                )
                .with_hint("load_balancer = \"web\" with listener_port = 80, or listener_arn = \"arn:...\""),
            );
            ListenerRef::Arn(String::new())
        }
    };
    let port = r.number("port", 1..=65535, None) as u16;
    let health_check = match r.block("health_check") {
        Some(b) => {
            let mut hr = r.nested(b, "health_check".into());
            let check = HealthCheck {
                path: hr.string("path").unwrap_or_else(|| "/".into()),
                interval: hr.duration("interval", Duration::from_secs(30)),
                healthy_threshold: hr.number("healthy_threshold", 2..=10, Some(5)) as u32,
                unhealthy_threshold: hr.number("unhealthy_threshold", 2..=10, Some(2)) as u32,
            };
            hr.finish();
            check
        }
        None => default_health_check(),
    };
    let deregistration_delay = r.duration("deregistration_delay", Duration::from_secs(300));
    // TargetGroupStickinessConfig's DurationSeconds: 1 to 604800 (7 days), whole seconds.
    // `"off"` turns it off (zero); left out, the forward's stickiness stays as it is.
    let stickiness = r.has("stickiness").then(|| {
        if matches!(r.value("stickiness"), Some((Value::String(s), _)) if s == "off") {
            return Duration::ZERO;
        }
        let wanted = r.duration("stickiness", Duration::from_secs(3600));
        if !(1..=604_800).contains(&wanted.as_secs()) || wanted.subsec_nanos() != 0 {
            let span = r.body_span("stickiness");
            r.diags.push(
                Diagnostic::new(
                    format!(
                        "`stickiness` of {} is outside what ELB takes: whole seconds from 1s to 7d",
                        crate::config::show_duration(wanted)
                    ),
                    span,
                )
                .with_hint("stickiness = \"1h\" keeps each user on the release they first reached for an hour (TargetGroupStickinessConfig in the ELB API reference)"),
            );
        }
        wanted
    });
    // ELBv2 rule priorities run from 1 to 50000; the default action has none.
    let rule_priority = r
        .has("rule_priority")
        .then(|| r.number("rule_priority", 1..=50_000, Some(1)) as u32);
    Traffic {
        listener,
        rule_priority,
        port,
        health_check,
        deregistration_delay,
        stickiness,
    }
}

fn default_health_check() -> HealthCheck {
    HealthCheck {
        path: "/".into(),
        interval: Duration::from_secs(30),
        healthy_threshold: 5,
        unhealthy_threshold: 2,
    }
}

fn default_rollout(steps: Vec<u8>) -> RolloutSpec {
    RolloutSpec {
        steps,
        pause: Duration::from_secs(300),
        healthy_within: Duration::from_secs(600),
        keep_previous: 0,
        poll_interval: Duration::from_secs(5),
        rate: None,
        after: Vec::new(),
        after_span: None,
        gates: Vec::new(),
    }
}

/// `worker`: the fleet has no load balancer, so steps are shares of capacity and metric
/// gates cannot point at a target group or load balancer.
fn read_rollout(r: &mut BlockReader, worker: bool, places: &mut Places) -> RolloutSpec {
    let steps = match r.value("steps") {
        None => vec![100],
        Some((value, span)) => match steps_of(&value) {
            Ok(steps) => steps,
            Err(message) => {
                r.diags.push(Diagnostic::new(message, span).with_hint(
                    "steps are percentages of traffic (of capacity, for a worker fleet) on the new release, such as [5, 25, 50, 100]",
                ));
                vec![100]
            }
        },
    };
    let defaults = default_rollout(steps);
    let pause = r.duration("pause", defaults.pause);
    let healthy_within = r.duration("healthy_within", defaults.healthy_within);
    let keep_previous = r.number("keep_previous", 0..=10, Some(0)) as u32;
    let poll_interval = r.duration("poll_interval", defaults.poll_interval);
    if poll_interval.is_zero() {
        let span = r.span.clone();
        r.diags
            .error("`poll_interval` must be longer than zero", span);
    }
    let rate = r.block("rate").map(|b| {
        let mut rr = r.nested(b, "rate".into());
        let present = (rr.has("min_pause"), rr.has("max_pause"));
        let min_pause = rr.duration("min_pause", Duration::ZERO);
        let max_pause = rr.duration("max_pause", Duration::ZERO);
        for (key, there) in [("min_pause", present.0), ("max_pause", present.1)] {
            if !there {
                rr.missing(key);
            }
        }
        if present == (true, true) && (min_pause.is_zero() || min_pause > max_pause) {
            let span = rr.body_span("min_pause");
            rr.diags.push(
                Diagnostic::new(
                    "rate: min_pause must be longer than zero and at most max_pause",
                    span,
                )
                .with_hint("e.g. rate { min_pause = \"1m\"  max_pause = \"20m\" }"),
            );
        }
        rr.finish();
        (
            crate::rollout::pace::Rate {
                min_pause,
                max_pause,
            },
            b,
        )
    });
    let mut gates = Vec::new();
    // A wrong `slow_at` is reported where it is written, not also as a missing one.
    let mut slow_at_written = false;
    for gate in r.blocks("gate") {
        slow_at_written |= gate.body.get_attribute("slow_at").is_some();
        let Some(name) = gate.labels.first().map(|l| l.as_str().to_string()) else {
            let span = span_of(r.file, &gate.ident);
            r.diags.error(
                "`gate` block needs a name, as in `gate \"errors\" { }`",
                span,
            );
            continue;
        };
        if gates.iter().any(|g: &Gate| g.name == name) {
            let span = span_of(r.file, &gate.ident);
            r.diags.error(format!("duplicate gate \"{name}\""), span);
            continue;
        }
        places.insert(
            Source::Gate(name.clone()),
            Place {
                span: span_of(r.file, &gate.labels[0]),
                ..Place::default()
            },
        );
        let mut gr = r.nested(gate, format!("gate \"{name}\""));
        let check = read_gate_check(&mut gr, worker, &name, places);
        // Read even when the check is not known (an alarm from an unset variable), so
        // that its other attributes are not taken for unknown ones.
        let gate = read_gate(&mut gr, name);
        if let Some(check) = check {
            gates.push(Gate { check, ..gate });
        }
        gr.finish();
    }
    // A pace needs gates that read how close they come; slow_at needs a pace.
    let paced = slow_at_written;
    match &rate {
        Some((_, block)) if !paced && !gates.is_empty() => {
            let span = span_of(r.file, &block.ident);
            r.diags.push(
                Diagnostic::new("the rollout's rate has no gate to pace it", span)
                    .with_hint("give a gate `slow_at = 0.8`: its readings over 80% of its threshold slow the rollout, and far below it speed it up"),
            );
        }
        None if paced => {
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new("a gate has slow_at but the rollout has no rate", span).with_hint(
                    "add rate { min_pause = \"1m\"  max_pause = \"20m\" } to the rollout block",
                ),
            );
        }
        _ => {}
    }
    let rate = rate
        .map(|(rate, _)| rate)
        .filter(|r| !r.min_pause.is_zero() && r.min_pause <= r.max_pause);
    // Read as written, not evaluated: a fleet's attributes are not known while fleets
    // are read, but its name is.
    let (after, after_span) = match r.expression("after") {
        None => (Vec::new(), None),
        Some((expression, span)) => (read_after(r, expression, span.clone()), span),
    };
    RolloutSpec {
        pause,
        healthy_within,
        keep_previous,
        poll_interval,
        gates,
        rate,
        after,
        after_span,
        ..defaults
    }
}

fn read_gate_check(
    r: &mut BlockReader,
    worker: bool,
    gate: &str,
    places: &mut Places,
) -> Option<GateCheck> {
    let has_alarm = r.has("alarm");
    let alarm = r.string("alarm");
    places.insert(Source::GateAlarm(gate.to_string()), r.place("alarm"));
    let metric = r.block("metric");
    match (alarm, metric) {
        // Given but not known (or already reported): nothing more to say.
        (None, None) if has_alarm => None,
        (Some(alarm), None) => Some(GateCheck::Alarm(alarm)),
        (None, Some(block)) => {
            let mut mr = r.nested(block, "metric".into());
            let metric = read_metric(&mut mr);
            for attribute in ["namespace", "name", "dimensions"] {
                let source = Source::Metric(gate.to_string(), attribute);
                places.insert(source, mr.place(attribute));
            }
            if worker {
                check_worker_metric(&mut mr, &metric);
            }
            mr.finish();
            Some(GateCheck::Metric(metric))
        }
        (alarm, metric) => {
            let both = alarm.is_some() && metric.is_some();
            let span = r.span.clone();
            r.diags.push(
                Diagnostic::new(
                    if both {
                        format!("{} has both `alarm` and `metric`; give one", r.what)
                    } else {
                        format!("{} needs `alarm` or a `metric` block", r.what)
                    },
                    span,
                )
                .with_hint("alarm = \"web-5xx\" reads an existing alarm; metric { namespace = ... name = ... threshold = ... } makes one per release"),
            );
            None
        }
    }
}

/// The gate's settings; its check is filled in by the caller.
fn read_gate(r: &mut BlockReader, name: String) -> Gate {
    let insufficient_data = match r.choice("insufficient_data", &["hold", "pass", "fail"], "pass") {
        "hold" => OnInsufficientData::Hold,
        "fail" => OnInsufficientData::Fail,
        _ => OnInsufficientData::Pass,
    };
    let mode = match r.choice("mode", &["enforce", "dry-run", "manual"], "enforce") {
        "dry-run" => GateMode::DryRun,
        "manual" => GateMode::Manual,
        _ => GateMode::Enforce,
    };
    let slow_at = r.has("slow_at").then(|| r.float("slow_at")).flatten();
    if let Some(share) = slow_at.filter(|s| !(*s > 0.0 && *s < 1.0)) {
        let span = r.body_span("slow_at");
        r.diags.push(
            Diagnostic::new(format!("slow_at {share} is not a share of the threshold"), span)
                .with_hint("use a number between 0 and 1, e.g. slow_at = 0.8: a reading over 80% of the alarm's threshold slows the rollout"),
        );
    }
    Gate {
        name,
        check: GateCheck::Alarm(String::new()),
        insufficient_data,
        mode,
        slow_at: slow_at.filter(|s| *s > 0.0 && *s < 1.0),
    }
}

/// A worker fleet's release has a group but no target group or load balancer.
fn check_worker_metric(r: &mut BlockReader, metric: &MetricSpec) {
    for name in ["target_group", "load_balancer"] {
        let marker = format!("${{release.{name}}}");
        if metric.dimensions.values().any(|v| v.contains(&marker)) {
            let span = r.body_span("dimensions");
            r.diags.push(
                Diagnostic::new(
                    format!("`release.{name}` does not exist in a worker fleet, which has no load balancer"),
                    span,
                )
                .with_hint("point the metric at the release's Auto Scaling group: dimensions = { AutoScalingGroupName = release.group }"),
            );
        }
    }
}

fn read_metric(r: &mut BlockReader) -> MetricSpec {
    let namespace = r.required_string("namespace");
    let name = r.required_string("name");
    let dimensions = r.string_map("dimensions");
    let statistic = r.string("statistic").unwrap_or_else(|| "Average".into());
    if !valid_statistic(&statistic) {
        let span = r.span.clone();
        r.diags.push(
            Diagnostic::new(format!("unknown statistic \"{statistic}\""), span).with_hint(
                "use Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99",
            ),
        );
    }
    let period = r.duration("period", Duration::from_secs(60));
    let secs = period.as_secs();
    if !matches!(secs, 10 | 20 | 30) && (secs == 0 || !secs.is_multiple_of(60)) {
        let span = r.span.clone();
        r.diags.error(
            "metric `period` must be 10s, 20s, 30s or a multiple of 60s (CloudWatch's rule)",
            span,
        );
    }
    let evaluation_periods = r.number("evaluation_periods", 1..=100, Some(1)) as u32;
    let threshold = r.float("threshold").unwrap_or_default();
    let comparison = match r.value("comparison") {
        None => Comparison::Greater,
        Some((value, span)) => match value.as_str().and_then(Comparison::parse) {
            Some(c) => c,
            None => {
                r.diags.push(
                    Diagnostic::new(format!("unknown comparison {value}"), span)
                        .with_hint("comparison is one of \">\", \">=\", \"<\", \"<=\""),
                );
                Comparison::Greater
            }
        },
    };
    MetricSpec {
        namespace,
        name,
        dimensions,
        statistic,
        period,
        evaluation_periods,
        threshold,
        comparison,
    }
}

fn valid_statistic(s: &str) -> bool {
    matches!(s, "Average" | "Sum" | "Minimum" | "Maximum" | "SampleCount")
        || s.strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| (0.0..=100.0).contains(&p))
}

fn steps_of(value: &Value) -> Result<Vec<u8>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "`steps` must be a list of percentages, found {}",
            type_name(value)
        ));
    };
    let mut steps = Vec::new();
    for item in items {
        match item.as_u64() {
            Some(p @ 1..=100) => steps.push(p as u8),
            _ => {
                return Err(format!(
                    "step {item} is not a whole percentage from 1 to 100"
                ))
            }
        }
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err("`steps` must be strictly increasing".into());
    }
    if steps.last() != Some(&100) {
        return Err("`steps` must end at 100".into());
    }
    Ok(steps)
}

/// `promote_after { state = "../staging" }` or `promote_after { backend "s3" { ... } }`,
/// with `fleet = "NAME"` when the fleet is named otherwise there.
fn read_promote_after<'a>(
    r: &mut BlockReader<'_, 'a>,
    block: &'a Block,
    name: &str,
) -> Option<PromoteAfter> {
    let dir = r.eval.program.dir.to_path_buf();
    let mut pr = r.nested(block, "promote_after".into());
    let state = pr.string("state");
    let fleet = pr.string("fleet").unwrap_or_else(|| name.to_string());
    let backend = pr
        .block("backend")
        .and_then(|b| super::load::read_backend(&mut pr, b, &dir));
    let written_backend = block.body.iter().any(
        |s| matches!(s, hcl_edit::structure::Structure::Block(b) if b.ident.as_str() == "backend"),
    );
    let place = match (state, backend) {
        (Some(_), _) if written_backend => {
            pr.diags.push(
                Diagnostic::new(
                    "promote_after names both a `state` directory and a `backend`",
                    pr.body_span("state"),
                )
                .with_hint("keep one: the directory of the other environment's configuration, or its backend"),
            );
            None
        }
        (Some(state), _) => Some(Upstream::Dir(dir.join(state))),
        (None, Some(backend)) => Some(Upstream::Backend(backend)),
        (None, None) if written_backend => None,
        (None, None) => {
            pr.diags.push(
                Diagnostic::new(
                    "promote_after says nowhere to look",
                    pr.span.clone(),
                )
                .with_hint("add `state = \"../staging\"` (the other environment's configuration directory) or a `backend \"s3\" { ... }` block"),
            );
            None
        }
    };
    pr.finish();
    Some(PromoteAfter {
        place: place?,
        fleet,
    })
}

/// `after = [fleet.api, fleet.db]`: the names of the fleets, as state knows them.
fn read_after(
    r: &mut BlockReader,
    expression: &hcl_edit::expr::Expression,
    span: Option<crate::config::Span>,
) -> Vec<String> {
    use hcl_edit::expr::{Expression, TraversalOperator};
    let fix = "write after = [fleet.api, fleet.db], naming fleets of the same module";
    let Expression::Array(items) = expression else {
        r.diags
            .push(Diagnostic::new("`after` must be a list of fleets", span).with_hint(fix));
        return Vec::new();
    };
    let mut names = Vec::new();
    for item in items.iter() {
        let label = match item {
            Expression::Traversal(t) => match (&t.expr, t.operators.as_slice()) {
                (Expression::Variable(root), [op]) if root.as_str() == "fleet" => {
                    match op.value() {
                        TraversalOperator::GetAttr(name) => Some(name.as_str().to_string()),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        };
        match label {
            Some(label) => names.push(super::load::fleet_name(&r.eval.module_path, &label)),
            None => r.diags.push(
                Diagnostic::new(
                    "`after` lists fleets, as `fleet.NAME`",
                    span_of(r.file, item),
                )
                .with_hint(fix),
            ),
        }
    }
    names
}
