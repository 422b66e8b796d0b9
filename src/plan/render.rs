//! The plan as an operator reads it: drift first (what changed outside immune), then one
//! block per fleet, `+` for what is created, `~` for what changes in place, `-` for what
//! is destroyed, `±` for a release that replaces another, and a summary line.

use super::{capacity_change, show_weights, word, Action, ImagePlan, Plan};
use std::fmt::Write;

pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

pub fn render(plan: &Plan, color: bool) -> String {
    let style = Style { color };
    let mut out = String::new();
    let drifted: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| !c.drift.is_empty())
        .collect();
    if !drifted.is_empty() {
        out.push_str("Drift: changed outside immune since the last apply:\n\n");
        for change in drifted {
            for d in &change.drift {
                let _ = writeln!(
                    out,
                    "  {} fleet.{}: {} {}",
                    style.paint("35", "!"),
                    change.fleet,
                    d.resource,
                    d.change
                );
            }
        }
        out.push('\n');
    }
    if !plan.has_changes() {
        out.push_str("No changes. Every fleet runs its configured release.\n");
        for c in &plan.changes {
            let _ = writeln!(out, "  fleet.{}: {}", c.fleet, c.reason);
            for warning in &c.warnings {
                let _ = writeln!(out, "      {} note: {warning}", style.paint("35", "!"));
            }
        }
        return out;
    }
    out.push_str("immune will perform the following actions:\n\n");
    let plus = style.paint("32", "+");
    let tilde = style.paint("33", "~");
    let minus = style.paint("31", "-");
    let bang = style.paint("31", "!");
    // Fleets of several regions are shown region by region (in the order the regions
    // first come), each under a heading.
    let first_of = |region: &Option<String>| plan.changes.iter().position(|c| &c.region == region);
    let mut ordered: Vec<&super::Change> = plan.changes.iter().collect();
    ordered.sort_by_key(|c| first_of(&c.region));
    let headed = ordered.iter().any(|c| c.region != ordered[0].region);
    let mut last_region = None;
    for change in ordered {
        // An unchanged fleet is shown only when there is something to know about it.
        if matches!(change.action, Action::NoOp) && change.warnings.is_empty() {
            continue;
        }
        if headed && last_region != Some(&change.region) {
            last_region = Some(&change.region);
            let _ = writeln!(
                out,
                "region {}:\n",
                change.region.as_deref().unwrap_or("(default)")
            );
        }
        match &change.action {
            Action::Release(r) => {
                let symbol = if r.replaces.is_some() { "±" } else { "+" };
                let _ = writeln!(
                    out,
                    "  {} fleet.{}: {}",
                    style.paint("33", symbol),
                    change.fleet,
                    change.reason
                );
                match &r.image {
                    ImagePlan::Bake {
                        source_ami,
                        instance_type,
                        name,
                        bake_timeout,
                    } => {
                        let _ = writeln!(
                            out,
                            "      {plus} image   bake \"{name}\" from {source_ami} on a {instance_type} builder (provision within {bake_timeout})"
                        );
                    }
                    ImagePlan::Reuse { image } => {
                        let _ = writeln!(
                            out,
                            "        image   reuse {image} (baked earlier from the same spec)"
                        );
                    }
                }
                let c = r.capacity;
                let _ = writeln!(
                    out,
                    "      {plus} group   {}: {} x{} (min {}, max {}) in {} subnet{}",
                    r.group,
                    r.instance_type,
                    c.desired,
                    c.min,
                    c.max,
                    r.subnets,
                    if r.subnets == 1 { "" } else { "s" }
                );
                for setting in &r.settings {
                    let _ = writeln!(out, "          {:<9}{}", setting.name, setting.value);
                }
                match (&r.workers, r.port, &r.health_check_path, &r.listener) {
                    (Some(workers), ..) => {
                        let steps: Vec<String> =
                            workers.instances.iter().map(u32::to_string).collect();
                        let _ = writeln!(
                            out,
                            "        capacity {} of {} instances on {}, pause {} per step, running within {}",
                            steps.join(" -> "),
                            workers.desired,
                            r.group,
                            r.pause,
                            r.healthy_within
                        );
                        let _ = writeln!(
                            out,
                            "        leaving workers get {} to finish their jobs (lifecycle hook {})",
                            workers.termination_grace,
                            crate::cloud::TERMINATION_HOOK
                        );
                    }
                    (None, Some(port), Some(path), Some(listener)) => {
                        let _ = writeln!(
                            out,
                            "      {plus} target  {}: port {port}, health check {path}",
                            r.group
                        );
                        let steps: Vec<String> = r.steps.iter().map(|s| format!("{s}%")).collect();
                        let _ = writeln!(
                            out,
                            "        traffic {} via {listener}, pause {} per step, healthy within {}",
                            steps.join(" -> "),
                            r.pause,
                            r.healthy_within
                        );
                    }
                    _ => {}
                }
                if r.gates.is_empty() {
                    let _ = writeln!(
                        out,
                        "        gates   none: each step watches instance health only"
                    );
                }
                for gate in &r.gates {
                    let how = format!(
                        "{}, no data: {}",
                        word(&gate.mode),
                        word(&gate.insufficient_data)
                    );
                    match &gate.metric {
                        None => {
                            let _ = writeln!(
                                out,
                                "        gate    {}: alarm {} ({how})",
                                gate.name, gate.alarm
                            );
                        }
                        Some(metric) => {
                            let _ = writeln!(
                                out,
                                "      {plus} gate    {}: alarm {} on {metric} ({how})",
                                gate.name, gate.alarm
                            );
                        }
                    }
                }
                if let Some(pace) = &r.pace {
                    let _ = writeln!(out, "        pace    {pace}");
                }
                if !r.after.is_empty() {
                    let after: Vec<String> = r.after.iter().map(|a| format!("fleet.{a}")).collect();
                    let _ = writeln!(
                        out,
                        "        after   {}: starts once their changes in this apply ended well",
                        after.join(", ")
                    );
                }
                if r.irreversible {
                    let moved = match r.workers {
                        Some(_) => "capacity moves to it",
                        None => "traffic reaches it",
                    };
                    let _ = writeln!(
                        out,
                        "        {}: once {moved}, a failing gate or health check holds it where it is and locks the fleet; nothing is rolled back on its own",
                        style.paint("1", "IRREVERSIBLE")
                    );
                }
                if let (Some(old), true) = (&r.replaces, r.workers.is_some()) {
                    let _ = writeln!(
                        out,
                        "      {} {} (release {}) loses its capacity step by step, its workers finishing their jobs (within {}){}",
                        if r.keep_previous > 0 { &tilde } else { &minus },
                        old.group,
                        old.release,
                        old.drain,
                        if r.keep_previous > 0 {
                            format!(", then kept at zero for rollback (keep_previous = {})", r.keep_previous)
                        } else {
                            ", then deleted".into()
                        }
                    );
                } else if let Some(old) = &r.replaces {
                    if r.keep_previous > 0 {
                        let _ = writeln!(
                            out,
                            "      {tilde} keep    {} (release {}) scaled to zero after draining {}, for rollback (keep_previous = {})",
                            old.group,
                            old.release,
                            old.drain,
                            r.keep_previous
                        );
                    } else {
                        let _ = writeln!(
                            out,
                            "      {minus} retire  {} (release {}) after draining {}",
                            old.group, old.release, old.drain
                        );
                    }
                }
            }
            Action::Resume { .. } => {
                let _ = writeln!(
                    out,
                    "  {tilde} fleet.{}: resume: {}",
                    change.fleet, change.reason
                );
            }
            Action::Locked { held: true, .. } => {
                let _ = writeln!(
                    out,
                    "  {bang} fleet.{name}: {}\n      nothing is rolled back on its own: run `immune promote {name}` to go on with it, or `immune rollback {name} --force --reason TEXT` to undo it",
                    change.reason,
                    name = change.fleet,
                );
            }
            Action::Locked { .. } => {
                let _ = writeln!(
                    out,
                    "  {bang} fleet.{}: {}\n      run `immune unlock {} --reason TEXT` once the cause is understood",
                    change.fleet,
                    change.reason,
                    change.fleet
                );
            }
            Action::Update(update) => {
                let _ = writeln!(out, "  {tilde} fleet.{}: {}", change.fleet, change.reason);
                if let Some(c) = &update.capacity {
                    let _ = writeln!(
                        out,
                        "      {tilde} group   {}: {} (min {}, max {}, desired {})",
                        update.group,
                        capacity_change(c.from, c.to),
                        c.to.min,
                        c.to.max,
                        c.to.desired
                    );
                }
                if let Some(w) = &update.weights {
                    let _ = writeln!(
                        out,
                        "      {tilde} traffic {} -> {}",
                        show_weights(&w.from),
                        show_weights(&w.to)
                    );
                }
            }
            Action::Retire(retire) => {
                let _ = writeln!(out, "  {minus} fleet.{}: {}", change.fleet, change.reason);
                if let Some(stand_in) = &retire.stand_in {
                    let _ = writeln!(out, "      {tilde} traffic back to {}", stand_in.describe());
                }
                if !retire.restore.is_empty() {
                    let _ = writeln!(
                        out,
                        "      {tilde} traffic back to {}",
                        show_weights(&retire.restore)
                    );
                }
                for group in &retire.groups {
                    let _ = match retire.workers {
                        true => writeln!(
                            out,
                            "      {minus} group   {group} scaled in through its lifecycle hook (its workers finish their jobs), then deleted with its alarms"
                        ),
                        false => writeln!(
                            out,
                            "      {minus} group   {group} with its target group and alarms"
                        ),
                    };
                }
            }
            Action::Blocked { .. } => {
                let _ = writeln!(out, "  {bang} fleet.{}: {}", change.fleet, change.reason);
            }
            Action::NoOp => {
                let _ = writeln!(out, "    fleet.{}: {}", change.fleet, change.reason);
            }
        }
        for warning in &change.warnings {
            let _ = writeln!(out, "      {} warning: {warning}", style.paint("35", "!"));
        }
        out.push('\n');
    }
    let s = plan.summary();
    let _ = writeln!(
        out,
        "Plan: {} to release, {} to update in place, {} to retire, {} to resume, {} blocked or locked, {} unchanged.",
        s.release,
        s.update,
        s.retire,
        s.resume,
        s.blocked + s.locked,
        s.unchanged
    );
    out
}
