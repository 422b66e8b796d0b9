//! Every request immune sends to AWS is logged at debug level under `immune::aws`
//! (`IMMUNE_LOG=immune::aws=debug`): how an operator sees what a command asks of AWS,
//! and how the tests and benchmarks count calls. Retries are requests too.

use aws_sdk_ec2::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

#[derive(Debug, Clone, Copy)]
pub struct Calls;

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
}
