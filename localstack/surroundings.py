#!/usr/bin/env python3
"""Create the surroundings a fleet needs, which immune expects to exist already.

immune takes a load balancer, subnets, security groups, a source image and an
alarm as given (see shared DESIGN.md, "traffic" and "gate"). Tests and demos need
them in LocalStack first; this script makes them, named after --prefix, and prints
what it made as one JSON object (and optionally an HCL var file for immune).

Idempotent: everything is looked up by name first and reused, so a second run is
cheap and changes nothing. Different prefixes never touch each other's resources,
so tests can run it in parallel.

Run it with the LocalStack venv's python (it has boto3):
    ~/.cache/immune-localstack/venv/bin/python localstack/surroundings.py --prefix t1
"""

import argparse
import fcntl
import json
import os
import re
import sys
import tempfile

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
PLACEHOLDER_SUFFIX = "-placeholder"
# ELBv2 names (load balancers and target groups): at most 32 characters, letters,
# digits and hyphens, no hyphen at either end. The longest name made here is the
# placeholder target group, so that bounds the prefix.
MAX_PREFIX = 32 - len(PLACEHOLDER_SUFFIX)
PREFIX_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")


def error_code(e: ClientError) -> str:
    return e.response.get("Error", {}).get("Code", "")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefix", default="immune-demo", help="name of everything made (default immune-demo)")
    p.add_argument("--var-file", help="also write these as HCL variables to this file")
    p.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", REGION))
    p.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        help="LocalStack gateway (default $AWS_ENDPOINT_URL or http://127.0.0.1:4566)",
    )
    args = p.parse_args()
    if len(args.prefix) > MAX_PREFIX or not PREFIX_RE.match(args.prefix) or args.prefix.startswith("internal-"):
        p.error(
            f"--prefix {args.prefix!r}: at most {MAX_PREFIX} letters, digits and hyphens, "
            "not starting or ending with a hyphen nor starting with 'internal-' "
            f"(load balancer and target group names; '{PLACEHOLDER_SUFFIX}' is appended to one)"
        )
    return args


class Surroundings:
    def __init__(self, prefix: str, region: str, endpoint_url: str):
        self.prefix = prefix
        # LocalStack accepts any credentials; explicit ones keep a developer's real
        # AWS profile from ever being read.
        session = boto3.Session(
            aws_access_key_id="test", aws_secret_access_key="test", region_name=region
        )
        # A test's setup should not fail on one bad answer from a busy emulator: the
        # standard retry mode also retries InternalError and other transient codes.
        config = Config(retries={"mode": "standard", "max_attempts": 8})
        client = lambda service: session.client(service, endpoint_url=endpoint_url, config=config)
        self.ec2 = client("ec2")
        self.elbv2 = client("elbv2")
        self.cloudwatch = client("cloudwatch")
        self.iam = client("iam")
        self.tags = [{"Key": "Name", "Value": prefix}, {"Key": "immune:surroundings", "Value": prefix}]

    def default_network(self) -> tuple[str, list[str]]:
        """The default VPC and two of its subnets in different zones (an ALB needs two)."""
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            sys.exit("surroundings: no default VPC (moto makes one per region; is this LocalStack?)")
        vpc_id = vpcs[0]["VpcId"]
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        by_zone = {}
        for s in sorted(subnets, key=lambda s: (s["AvailabilityZone"], s["SubnetId"])):
            by_zone.setdefault(s["AvailabilityZone"], s["SubnetId"])
        picked = list(by_zone.values())[:2]
        if len(picked) < 2:
            sys.exit(f"surroundings: default VPC {vpc_id} has subnets in fewer than two zones")
        return vpc_id, picked

    def security_group(self, vpc_id: str) -> str:
        name = f"{self.prefix}-sg"
        filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}]
        found = self.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
        if found:
            return found[0]["GroupId"]
        try:
            sg = self.ec2.create_security_group(
                GroupName=name,
                Description=f"immune test surroundings {self.prefix}",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": self.tags}],
            )["GroupId"]
        except ClientError as e:
            if error_code(e) != "InvalidGroup.Duplicate":  # lost a race with a twin run
                raise
            return self.ec2.describe_security_groups(Filters=filters)["SecurityGroups"][0]["GroupId"]
        # Only documentation for a reader of the emulator's state: moto sends no traffic.
        self.ec2.authorize_security_group_ingress(
            GroupId=sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        )
        return sg

    def source_ami(self) -> str:
        """One of moto's pre-registered Amazon Linux 2 images (fixed ids); else register one."""
        images = self.ec2.describe_images(
            Owners=["amazon"],
            Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*-x86_64-gp2"]},
                     {"Name": "state", "Values": ["available"]}],
        )["Images"]
        if images:
            return sorted(images, key=lambda i: i["Name"])[-1]["ImageId"]
        name = f"{self.prefix}-source"
        mine = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        if mine:
            return mine[0]["ImageId"]
        return self.ec2.register_image(
            Name=name, RootDeviceName="/dev/xvda", Architecture="x86_64", VirtualizationType="hvm",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        )["ImageId"]

    def load_balancer(self, subnets: list[str], sg: str) -> tuple[str, str]:
        try:
            lb = self.elbv2.describe_load_balancers(Names=[self.prefix])["LoadBalancers"][0]
        except ClientError as e:
            if error_code(e) != "LoadBalancerNotFound":
                raise
            lb = self.elbv2.create_load_balancer(
                Name=self.prefix, Subnets=subnets, SecurityGroups=[sg],
                Scheme="internet-facing", Type="application", IpAddressType="ipv4", Tags=self.tags,
            )["LoadBalancers"][0]
        return lb["LoadBalancerArn"], lb["LoadBalancerArn"].split(":loadbalancer/", 1)[1]

    def placeholder_target_group(self, vpc_id: str) -> str:
        name = f"{self.prefix}{PLACEHOLDER_SUFFIX}"
        try:
            return self.elbv2.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
        except ClientError as e:
            if error_code(e) != "TargetGroupNotFound":
                raise
        return self.elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance", Tags=self.tags,
        )["TargetGroups"][0]["TargetGroupArn"]

    def listener(self, lb_arn: str, tg_arn: str, port: int = 80) -> str:
        # An existing listener is left as it is: a test may have moved its weights.
        for listener in self.elbv2.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
            if listener["Port"] == port:
                return listener["ListenerArn"]
        return self.elbv2.create_listener(
            LoadBalancerArn=lb_arn, Protocol="HTTP", Port=port,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        )["Listeners"][0]["ListenerArn"]

    def alarm(self, lb_dimension: str) -> str:
        name = f"{self.prefix}-5xx"
        # PutMetricAlarm would overwrite, and reset the state a test may have set.
        if self.cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"]:
            return name
        self.cloudwatch.put_metric_alarm(
            AlarmName=name,
            # The application's own count of 5xx answers, published at once as a
            # high-resolution metric: the alarm can fire 10 s after errors start. On
            # AWS/ApplicationELB's HTTPCode_Target_5XX_Count, published a minute late,
            # immune would watch each step for 1m10s (a step never passes before its
            # gates could have failed).
            AlarmDescription=f"5xx from the targets behind {self.prefix}",
            Namespace="Immune/Demo",
            MetricName="Target5XXCount",
            Dimensions=[{"Name": "LoadBalancer", "Value": lb_dimension}],
            Statistic="Sum",
            Period=10,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            # Without data the alarm keeps its state (AWS: "ignore - the current alarm
            # state is maintained"): a state a test or demo set with SetAlarmState
            # holds while a step is watched, instead of going back to OK at the next
            # evaluation, 10 s later.
            TreatMissingData="ignore",
            Tags=self.tags,
        )
        return name


    def instance_profile(self) -> str:
        """An instance profile for the fleet's instances (a production fleet names one)."""
        name = f"{self.prefix}-instances"
        try:
            self.iam.create_instance_profile(InstanceProfileName=name)
        except ClientError as e:
            if error_code(e) != "EntityAlreadyExists":
                raise
        return name

    def key_pair(self) -> str:
        name = f"{self.prefix}-ops"
        try:
            self.ec2.create_key_pair(KeyName=name)
        except ClientError as e:
            if error_code(e) != "InvalidKeyPair.Duplicate":
                raise
        return name


def hcl_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def main() -> None:
    args = parse_args()
    # Two runs with one prefix must not both create: moto allows two load balancers
    # of one name (DescribeLoadBalancers then finds only the newer, listener-less one).
    lock = open(os.path.join(tempfile.gettempdir(), f"immune-surroundings-{args.prefix}.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    s = Surroundings(args.prefix, args.region, args.endpoint_url)
    vpc_id, subnets = s.default_network()
    sg = s.security_group(vpc_id)
    ami = s.source_ami()
    lb_arn, lb_dimension = s.load_balancer(subnets, sg)
    tg_arn = s.placeholder_target_group(vpc_id)
    listener_arn = s.listener(lb_arn, tg_arn)
    alarm = s.alarm(lb_dimension)
    profile = s.instance_profile()
    key_pair = s.key_pair()

    out = {
        "load_balancer": args.prefix,
        "load_balancer_arn": lb_arn,
        "listener_arn": listener_arn,
        "listener_port": 80,
        "vpc_id": vpc_id,
        "subnets": subnets,
        "security_group": sg,
        "source_ami": ami,
        "alarm": alarm,
        "placeholder_target_group": tg_arn,
        "instance_profile": profile,
        "key_pair": key_pair,
        "region": args.region,
    }
    if args.var_file:
        # JSON strings are valid HCL strings, so json.dumps does the quoting.
        text = (
            f"# Made by localstack/surroundings.py --prefix {args.prefix}\n"
            f"subnets         = {hcl_list(subnets)}\n"
            f"security_groups = {hcl_list([sg])}\n"
            f"source_ami      = {json.dumps(ami)}\n"
            f"load_balancer   = {json.dumps(args.prefix)}\n"
            f"alarm           = {json.dumps(alarm)}\n"
            f"instance_profile = {json.dumps(profile)}\n"
            f"key_pair        = {json.dumps(key_pair)}\n"
        )
        tmp = f"{args.var_file}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.var_file)  # a reader never sees half a file
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
