"""What the conformance tests share: clients for a running LocalStack, unique names, the
default network, a load balancer with a listener, and waiting by polling.

The tests talk to the emulator with boto3 alone (no immune). Endpoint from
AWS_ENDPOINT_URL (default http://127.0.0.1:4566), region us-east-1, credentials
test/test. Every test makes its own uniquely named resources, so the suite can run
against a LocalStack that other tests use at the same time.
"""

import functools
import os
import time
import unittest
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
REGION = "us-east-1"

# The plugin's knobs, as tags (see ../../README.md, "What the emulator models").
TIME_SCALE = "immune-localstack:time-scale"
PROPAGATION = "immune-localstack:propagation"
HEALTH = "immune-localstack:health"

# Tests that create something and use it at once ask for no propagation delay; the
# tests of the delay itself ask for one.
NO_DELAY = [{"Key": PROPAGATION, "Value": "0"}]


@functools.cache
def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)


@functools.cache
def client(service: str):
    # No retries: a test must see the emulator's first answer (an error it expects
    # must not be retried away, nor a transient one hidden). No client-side parameter
    # validation: botocore would refuse some invalid names before the emulator sees them.
    config = Config(retries={"mode": "standard", "max_attempts": 1}, parameter_validation=False)
    return session().client(service, endpoint_url=ENDPOINT, config=config)


def unique(prefix: str = "cf") -> str:
    """A name no other test (or run) uses: letters, digits and hyphens, 16 characters."""
    return f"{prefix}-{uuid.uuid4().hex[:13]}"


def error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


def ec2_tags(resource_type: str, *tags: dict) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": list(tags)}]


def wait_for(what: str, probe, timeout: float = 20.0, every: float = 0.1):
    """Calls probe() until it returns something truthy; returns that. Fails the test
    with the last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(every)


@functools.cache
def default_network() -> tuple[str, tuple[str, str]]:
    """The default VPC and two of its subnets in different zones."""
    ec2 = client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
    by_zone = {}
    for s in sorted(subnets, key=lambda s: (s["AvailabilityZone"], s["SubnetId"])):
        by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
    first, second = list(by_zone.values())[:2]
    return vpc, (first, second)


@functools.cache
def source_ami() -> str:
    """One of moto's built-in Amazon Linux 2 images (as surroundings.py picks)."""
    images = client("ec2").describe_images(
        Owners=["amazon"],
        Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*-x86_64-gp2"]}],
    )["Images"]
    return sorted(images, key=lambda i: i["Name"])[-1]["ImageId"]


class EmulatorTest(unittest.TestCase):
    """Helpers that create resources for one test and clean up after it."""

    ec2 = property(lambda self: client("ec2"))
    elbv2 = property(lambda self: client("elbv2"))
    autoscaling = property(lambda self: client("autoscaling"))
    cloudwatch = property(lambda self: client("cloudwatch"))

    def cleanup(self, fn, *args, **kwargs):
        """Runs fn after the test, ignoring its errors (cleanup is a courtesy)."""

        def quietly():
            try:
                fn(*args, **kwargs)
            except Exception:
                pass

        self.addCleanup(quietly)

    def assertError(self, code: str, fn, *args, **kwargs) -> ClientError:
        with self.assertRaises(ClientError) as caught:
            fn(*args, **kwargs)
        self.assertEqual(error_code(caught.exception), code, caught.exception)
        return caught.exception

    # --- EC2 -------------------------------------------------------------------
    def run_instance(self, tags: list[dict] = NO_DELAY, count: int = 1) -> list[str]:
        _, subnets = default_network()
        reservation = self.ec2.run_instances(
            ImageId=source_ami(), InstanceType="t3.micro", MinCount=count, MaxCount=count,
            SubnetId=subnets[0], TagSpecifications=ec2_tags("instance", *tags),
        )
        ids = [i["InstanceId"] for i in reservation["Instances"]]
        self.cleanup(self.ec2.terminate_instances, InstanceIds=ids)
        return ids

    # --- ELBv2 -----------------------------------------------------------------
    def load_balancer(self) -> str:
        vpc, subnets = default_network()
        lb = self.elbv2.create_load_balancer(
            Name=unique(), Subnets=list(subnets), Scheme="internet-facing", Type="application",
        )["LoadBalancers"][0]["LoadBalancerArn"]
        self.cleanup(self.elbv2.delete_load_balancer, LoadBalancerArn=lb)
        return lb

    def target_group(self, *tags: dict, name: str | None = None, **kwargs) -> str:
        """A target group, tagged with no propagation delay and the given tags."""
        vpc, _ = default_network()
        arn = self.elbv2.create_target_group(
            Name=name or unique(), Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance",
            Tags=NO_DELAY + list(tags), **kwargs,
        )["TargetGroups"][0]["TargetGroupArn"]
        self.addCleanup(self._delete_target_group_later, arn)
        return arn

    def _delete_target_group_later(self, arn: str) -> None:
        try:
            self.elbv2.delete_target_group(TargetGroupArn=arn)
        except Exception:
            pass

    def listener(self, lb: str, *target_groups: str, weights=None, port: int = 80) -> str:
        """An HTTP listener whose default action forwards to the target groups."""
        weights = weights or [1] * len(target_groups)
        arn = self.elbv2.create_listener(
            LoadBalancerArn=lb, Protocol="HTTP", Port=port,
            DefaultActions=[forward(list(zip(target_groups, weights)))],
        )["Listeners"][0]["ListenerArn"]
        self.addCleanup(self._delete_listener_quietly, arn)
        return arn

    def _delete_listener_quietly(self, arn: str) -> None:
        try:
            self.elbv2.delete_listener(ListenerArn=arn)
        except Exception:
            pass

    def health(self, target_group: str, *ids: str) -> dict[str, tuple[str, str | None]]:
        """DescribeTargetHealth as {id: (state, reason)}."""
        kwargs = {"Targets": [{"Id": i} for i in ids]} if ids else {}
        answer = self.elbv2.describe_target_health(TargetGroupArn=target_group, **kwargs)
        return {
            d["Target"]["Id"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in answer["TargetHealthDescriptions"]
        }


def forward(groups: list[tuple[str, int]], **extra) -> dict:
    return {
        "Type": "forward",
        "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in groups],
            **extra,
        },
    }
