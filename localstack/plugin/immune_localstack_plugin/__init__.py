"""Autoscaling and ELBv2 for LocalStack's free build, served by its bundled moto.

Each provider is a Service whose dispatch table sends every operation of the
service's spec straight to moto (the same path LocalStack uses for parts of EC2).
"""

from localstack.aws.spec import load_service
from localstack.services.moto import _proxy_moto
from localstack.services.plugins import Service, aws_provider


class _MotoProvider:
    """A provider with no code of its own: LocalStack only needs `.service`."""

    def __init__(self, service: str):
        self.service = service


def _moto_service(name: str) -> Service:
    operations = load_service(name).operation_names
    return Service.for_provider(
        _MotoProvider(name),
        dispatch_table_factory=lambda _provider: {op: _proxy_moto for op in operations},
    )


@aws_provider(api="autoscaling", name="default")
def autoscaling() -> Service:
    return _moto_service("autoscaling")


@aws_provider(api="elbv2", name="default")
def elbv2() -> Service:
    return _moto_service("elbv2")
