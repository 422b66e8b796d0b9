//! Every request immune sends to AWS is logged at debug level under `immune::aws`
//! (`IMMUNE_LOG=immune::aws=debug`): how an operator sees what a command asks of AWS and
//! how long each answer took, and how the tests and benchmarks count calls. Retries are
//! requests too.

use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Calls;

/// When the attempt's request left, to say how long its answer took.
#[derive(Debug, Clone, Copy)]
struct Sent(Instant);

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "immune-calls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(call) = cfg.load::<Metadata>() {
            tracing::debug!(
                target: "immune::aws",
                service = call.service(),
                operation = call.name(),
                "call"
            );
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().store_put(Sent(Instant::now()));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let (Some(call), Some(sent)) = (cfg.load::<Metadata>(), cfg.load::<Sent>()) {
            let status = context.response().map_or(0, |r| r.status().as_u16());
            tracing::debug!(
                target: "immune::aws",
                service = call.service(),
                operation = call.name(),
                status,
                ms = sent.0.elapsed().as_millis() as u64,
                "answered"
            );
        }
        Ok(())
    }
}
