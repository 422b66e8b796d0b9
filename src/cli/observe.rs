//! Reading the live cloud for a plan, and turning what is wrong out there (a listener or
//! image that does not exist, an endpoint that does not answer) into a clear error before
//! anything is created.

use super::{Cli, CliError};
use crate::cloud::aws::Aws;
use crate::cloud::{resolve_route, Cloud, CloudError};
use crate::config::{Config, GateCheck, ListenerRef};
use crate::plan::{self, Observed, Plan};
use crate::state::State;
use std::collections::BTreeMap;

pub async fn connect(cli: &Cli, config: &Config) -> Result<Box<dyn Cloud>, CliError> {
    let region = cli
        .region
        .clone()
        .or_else(|| config.fleets.iter().find_map(|f| f.region.clone()));
    let aws = Aws::connect(region)
        .await
        .map_err(|e| CliError::Message(format!("error: {e}")))?;
    Ok(Box::new(aws))
}

pub async fn plan(cloud: &dyn Cloud, config: &Config, state: &State) -> Result<Plan, CliError> {
    let mut observed = BTreeMap::new();
    let mut problems = Vec::new();
    for fleet in &config.fleets {
        let at = format!("fleet \"{}\" ({})", fleet.name, fleet.location);
        let mut check = |result: Result<(), CloudError>, fix: &str| {
            if let Err(e) = result {
                problems.push(match e {
                    CloudError::Transport { .. } => format!(
                        "error: cannot reach AWS: {e}\n  check the network, AWS_ENDPOINT_URL ({}) and your credentials",
                        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "not set".into())
                    ),
                    _ => format!("error: {at}: {e}\n  {fix}"),
                });
                false
            } else {
                true
            }
        };
        let listener = resolve_route(cloud, &fleet.traffic).await.map(|_| ());
        let fix = match (&fleet.traffic.listener, fleet.traffic.rule_priority) {
            (_, Some(_)) => {
                "check traffic.rule_priority: the listener needs a rule with that priority whose action forwards to a target group"
            }
            (ListenerRef::Arn(_), None) => "check traffic.listener_arn",
            (ListenerRef::LoadBalancer { .. }, None) => {
                "check traffic.load_balancer and traffic.listener_port, or create the listener first; its default action must forward to a target group"
            }
        };
        if !check(listener, fix) {
            continue;
        }
        let source = match cloud.source_image_exists(&fleet.image.source_ami).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(CloudError::NotFound(format!(
                "source image {}",
                fleet.image.source_ami
            ))),
            Err(e) => Err(e),
        };
        if !check(
            source,
            "check image.source_ami: the image must exist in this region and account",
        ) {
            continue;
        }
        let subnets = cloud
            .vpc_of_subnets(&fleet.instances.subnets)
            .await
            .map(|_| ());
        if !check(subnets, "check instances.subnets") {
            continue;
        }
        // An alarm gate that names no alarm would fail the first step of every release.
        let alarms: Vec<(String, String)> = fleet
            .rollout
            .gates
            .iter()
            .filter_map(|g| match &g.check {
                GateCheck::Alarm(name) => Some((g.name.clone(), name.clone())),
                GateCheck::Metric(_) => None,
            })
            .collect();
        if !alarms.is_empty() {
            let names: Vec<String> = alarms.iter().map(|(_, a)| a.clone()).collect();
            match cloud.alarms(&names).await {
                Ok(found) => {
                    for (gate, alarm) in &alarms {
                        if !found.contains_key(alarm) {
                            check(
                                Err(CloudError::NotFound(format!(
                                    "alarm {alarm} of gate \"{gate}\""
                                ))),
                                "create the CloudWatch alarm first, or fix the gate's `alarm` name",
                            );
                        }
                    }
                }
                Err(e) => {
                    check(Err(e), "");
                }
            }
        }
        match cloud
            .find_baked_image(&fleet.name, &plan::bake_id(fleet))
            .await
        {
            Ok(baked) => {
                observed.insert(
                    fleet.name.clone(),
                    Observed {
                        baked_image: baked.map(|i| i.id),
                    },
                );
            }
            Err(e) => {
                check(Err(e), "");
            }
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(CliError::Message(problems.join("\n\n")));
    }
    Ok(plan::plan(config, state, &observed))
}
