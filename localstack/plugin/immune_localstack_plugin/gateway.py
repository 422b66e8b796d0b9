"""Knobs, and hooks into LocalStack's request chain, shared by the modelled behaviours.

Some behaviours are about requests rather than about moto's models: a name AWS refuses,
a resource another request created a moment ago. Those are handled in LocalStack's
gateway, where every AWS request passes parsed (`context.service_request`) before the
provider (moto) sees it, and every answer passes parsed (`context.service_response`)
before it is sent. A request handler may refuse a request with the error AWS gives; a
response handler may see what was created, or take items out of a listing (the answer
is then serialized again).

Knobs (README.md, "What the emulator models"):
- IMMUNE_LOCALSTACK_TIME_SCALE (float, default 0.05): ELB health check intervals and
  deregistration delays are multiplied by it; a target group tagged
  `immune-localstack:time-scale` = a float uses that instead.
- IMMUNE_LOCALSTACK_PROPAGATION_SECONDS (float, default 0.2): how long a created
  resource stays unknown to requests naming it; a create whose tags carry
  `immune-localstack:propagation` = seconds uses that instead.
"""

import logging
import os

LOG = logging.getLogger(__name__)

TIME_SCALE_TAG = "immune-localstack:time-scale"
PROPAGATION_TAG = "immune-localstack:propagation"
HEALTH_TAG = "immune-localstack:health"


def _float_env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        LOG.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def time_scale(tags: dict | None = None) -> float:
    """The time scale for a target group with these tags."""
    value = (tags or {}).get(TIME_SCALE_TAG)
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return max(0.0, _float_env("IMMUNE_LOCALSTACK_TIME_SCALE", 0.05))


def propagation_seconds(tags: dict | None = None) -> float:
    """The propagation delay for a resource created with these tags."""
    value = (tags or {}).get(PROPAGATION_TAG)
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return max(0.0, _float_env("IMMUNE_LOCALSTACK_PROPAGATION_SECONDS", 0.2))


def refuse(code: str, message: str, status: int = 400):
    """Raises the error AWS answers with (a client error)."""
    from localstack.aws.api import CommonServiceException

    raise CommonServiceException(code, message, status_code=status, sender_fault=True)


def operation_of(context) -> tuple[str, str] | None:
    """(service, operation) of an AWS request that was parsed, else None."""
    if context.service is None or context.operation is None:
        return None
    return context.service.service_name, context.operation.name


def add_request_handler(handler) -> None:
    """handler(context) runs for every parsed AWS request, before the provider; it may
    raise (see refuse) to answer with an error instead."""
    from localstack.aws.handlers import serve_custom_service_request_handlers

    def run(_chain, context, _response):
        if operation_of(context) is not None and context.service_request is not None:
            handler(context)

    serve_custom_service_request_handlers.append(run)


def add_response_handler(handler) -> None:
    """handler(context) runs for every successful parsed AWS answer; it may return a
    new result dict, which is then sent instead (serialized as the provider's was)."""
    from localstack.aws.handlers import run_custom_response_handlers
    from localstack.aws.protocol.serializer import create_serializer

    def run(_chain, context, response):
        if operation_of(context) is None or context.service_exception is not None:
            return
        if context.service_response is None or response.status_code >= 300:
            return
        replaced = handler(context)
        if replaced is None:
            return
        context.service_response = replaced
        serializer = create_serializer(context.service, context.protocol)
        response.update_from(
            serializer.serialize_to_response(
                replaced, context.operation, context.request.headers, context.request_id
            )
        )

    run_custom_response_handlers.append(run)
