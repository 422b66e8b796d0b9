//! Reading many fleets' surroundings at once: the defaults of the batched [`Cloud`] reads
//! that ask one thing at a time, and the pure parts the AWS batches share with them.

use super::{Cloud, CloudError, CloudResult, Route, RouteRef};
use crate::config::ListenerRef;
use std::collections::BTreeMap;

/// Each route read with the single calls: a listener, its rule, its weights.
pub async fn routes_one_by_one(
    cloud: &(impl Cloud + ?Sized),
    wanted: &[RouteRef],
) -> CloudResult<BTreeMap<RouteRef, CloudResult<Route>>> {
    let mut found = BTreeMap::new();
    for route in wanted {
        match read_route(cloud, route).await {
            Err(e) if e.is_transient() => return Err(e),
            read => {
                found.insert(route.clone(), read);
            }
        }
    }
    Ok(found)
}

async fn read_route(
    cloud: &(impl Cloud + ?Sized),
    (listener, priority): &RouteRef,
) -> CloudResult<Route> {
    let listener = cloud.resolve_listener(listener).await?;
    let arn = match priority {
        Some(priority) => cloud.listener_rule(&listener.arn, *priority).await?,
        None => listener.arn,
    };
    let weights = cloud.listener_weights(&arn).await?;
    let stand_in = match weights.iter().all(|w| w.weight == 0) {
        true => cloud.stand_in(&arn).await?,
        false => None,
    };
    Ok(Route {
        arn,
        weights,
        stand_in,
        protocol: None,
    })
}

/// Why a listener a configuration names cannot be found.
pub fn listener_not_found(listener: &ListenerRef) -> CloudError {
    CloudError::NotFound(listener.to_string())
}

/// Why a rule a configuration names cannot be found.
pub fn rule_not_found(listener_arn: &str, priority: u32) -> CloudError {
    CloudError::NotFound(format!(
        "rule with priority {priority} of listener {listener_arn}"
    ))
}
