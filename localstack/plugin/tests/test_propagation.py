"""Eventual consistency after a create: for a propagation delay, requests naming the new
resource answer as AWS answers for an unknown one.

AWS pages:
- Eventual consistency in the Amazon EC2 API:
  https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
- Elastic Load Balancing and Auto Scaling are eventually consistent the same way:
  https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/Welcome.html
  https://docs.aws.amazon.com/autoscaling/ec2/APIReference/Welcome.html

Each create here is tagged immune-localstack:propagation = 1.5 (seconds), except the
test of the default delay and the test of a 2 s delay.
"""

import time
import unittest

from support import (
    PROPAGATION,
    EmulatorTest,
    default_network,
    ec2_tags,
    source_ami,
    unique,
    wait_for,
)

DELAYED = {"Key": PROPAGATION, "Value": "1.5"}


def found(fn, *args, **kwargs) -> bool:
    from botocore.exceptions import ClientError

    try:
        fn(*args, **kwargs)
        return True
    except ClientError:
        return False


class PropagationTest(EmulatorTest):
    def test_run_instances(self):
        """After RunInstances, DescribeInstances, DescribeInstanceStatus,
        GetConsoleOutput, StopInstances and TerminateInstances naming the instance
        answer InvalidInstanceID.NotFound for a while.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        [instance] = self.run_instance(tags=[DELAYED])
        ids = {"InstanceIds": [instance]}
        self.assertError("InvalidInstanceID.NotFound", self.ec2.describe_instances, **ids)
        self.assertError("InvalidInstanceID.NotFound", self.ec2.describe_instance_status, **ids)
        self.assertError("InvalidInstanceID.NotFound", self.ec2.get_console_output, InstanceId=instance)
        self.assertError("InvalidInstanceID.NotFound", self.ec2.stop_instances, **ids)
        self.assertError("InvalidInstanceID.NotFound", self.ec2.terminate_instances, **ids)
        wait_for("the instance", lambda: found(self.ec2.describe_instances, **ids), timeout=5)
        state = self.ec2.describe_instances(**ids)["Reservations"][0]["Instances"][0]["State"]
        self.assertEqual(state["Name"], "running")  # the refused calls did nothing

    def test_instance_listing_omits_new_instance(self):
        """A listing that does not name the instance (DescribeInstances by tag filter)
        leaves it out while it propagates.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        marker = unique()
        [instance] = self.run_instance(tags=[DELAYED, {"Key": "conformance", "Value": marker}])
        filters = [{"Name": "tag:conformance", "Values": [marker]}]

        def listed():
            reservations = self.ec2.describe_instances(Filters=filters)["Reservations"]
            return [i["InstanceId"] for r in reservations for i in r["Instances"]]

        self.assertEqual(listed(), [])
        wait_for("the instance listed", lambda: listed() == [instance], timeout=5)

    def test_create_image(self):
        """After CreateImage, DescribeImages naming the image answers
        InvalidAMIID.NotFound for a while; a listing by name leaves it out.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        [instance] = self.run_instance()
        name = unique()
        image = self.ec2.create_image(
            InstanceId=instance, Name=name, TagSpecifications=ec2_tags("image", DELAYED)
        )["ImageId"]
        self.cleanup(self.ec2.deregister_image, ImageId=image)
        self.assertError("InvalidAMIID.NotFound", self.ec2.describe_images, ImageIds=[image])
        by_name = {"Owners": ["self"], "Filters": [{"Name": "name", "Values": [name]}]}
        self.assertEqual(self.ec2.describe_images(**by_name)["Images"], [])
        wait_for("the image", lambda: found(self.ec2.describe_images, ImageIds=[image]), timeout=5)
        self.assertEqual(len(self.ec2.describe_images(**by_name)["Images"]), 1)

    def test_create_launch_template(self):
        """After CreateLaunchTemplate, DescribeLaunchTemplates and
        DescribeLaunchTemplateVersions naming it answer
        InvalidLaunchTemplateName.NotFoundException (by name) or
        InvalidLaunchTemplateId.NotFound (by id) for a while.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html"""
        name = unique()
        template = self.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData={"ImageId": source_ami(), "InstanceType": "t3.micro"},
            TagSpecifications=ec2_tags("launch-template", DELAYED),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)
        by_name = "InvalidLaunchTemplateName.NotFoundException"
        by_id = "InvalidLaunchTemplateId.NotFound"
        self.assertError(by_name, self.ec2.describe_launch_templates, LaunchTemplateNames=[name])
        self.assertError(by_id, self.ec2.describe_launch_templates, LaunchTemplateIds=[template])
        self.assertError(by_name, self.ec2.describe_launch_template_versions, LaunchTemplateName=name)
        self.assertError(by_id, self.ec2.describe_launch_template_versions, LaunchTemplateId=template)
        wait_for(
            "the template",
            lambda: found(self.ec2.describe_launch_template_versions, LaunchTemplateId=template),
            timeout=5,
        )
        self.ec2.describe_launch_templates(LaunchTemplateNames=[name])

    def test_create_launch_template_version(self):
        """After CreateLaunchTemplateVersion (of a template tagged with the delay),
        DescribeLaunchTemplateVersions naming the new version answers
        InvalidLaunchTemplateId.VersionNotFound for a while, and a listing of the
        template's versions leaves it out.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html"""
        template = self.ec2.create_launch_template(
            LaunchTemplateName=unique(),
            LaunchTemplateData={"ImageId": source_ami(), "InstanceType": "t3.micro"},
            TagSpecifications=ec2_tags("launch-template", {"Key": PROPAGATION, "Value": "0"}),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)
        self.ec2.create_tags(Resources=[template], Tags=[DELAYED])
        self.ec2.create_launch_template_version(
            LaunchTemplateId=template, SourceVersion="1", LaunchTemplateData={"InstanceType": "t3.small"}
        )
        self.assertError(
            "InvalidLaunchTemplateId.VersionNotFound",
            self.ec2.describe_launch_template_versions, LaunchTemplateId=template, Versions=["2"],
        )

        def numbers():
            versions = self.ec2.describe_launch_template_versions(LaunchTemplateId=template)
            return sorted(v["VersionNumber"] for v in versions["LaunchTemplateVersions"])

        self.assertEqual(numbers(), [1])
        wait_for("version 2", lambda: numbers() == [1, 2], timeout=5)
        self.ec2.describe_launch_template_versions(LaunchTemplateId=template, Versions=["2"])

    def test_create_target_group(self):
        """After CreateTargetGroup, DescribeTargetGroups (by ARN or name),
        DescribeTargetHealth, ModifyTargetGroupAttributes, DescribeTargetGroupAttributes
        and DescribeTags naming it answer TargetGroupNotFound for a while; a listing of
        all target groups leaves it out.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetGroups.html
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        vpc, _ = default_network()
        name = unique()
        arn = self.elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=80, VpcId=vpc, Tags=[DELAYED]
        )["TargetGroups"][0]["TargetGroupArn"]
        self.cleanup(self.elbv2.delete_target_group, TargetGroupArn=arn)
        code = "TargetGroupNotFound"
        self.assertError(code, self.elbv2.describe_target_groups, TargetGroupArns=[arn])
        self.assertError(code, self.elbv2.describe_target_groups, Names=[name])
        self.assertError(code, self.elbv2.describe_target_health, TargetGroupArn=arn)
        self.assertError(code, self.elbv2.describe_target_group_attributes, TargetGroupArn=arn)
        self.assertError(
            code, self.elbv2.modify_target_group_attributes, TargetGroupArn=arn,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "10"}],
        )
        self.assertError(code, self.elbv2.describe_tags, ResourceArns=[arn])

        def listed():
            pages = self.elbv2.get_paginator("describe_target_groups").paginate()
            return any(g["TargetGroupArn"] == arn for p in pages for g in p["TargetGroups"])

        self.assertFalse(listed())
        wait_for("the target group", lambda: found(self.elbv2.describe_target_groups, Names=[name]), timeout=5)
        self.assertTrue(listed())
        self.elbv2.describe_target_health(TargetGroupArn=arn)

    def test_create_auto_scaling_group(self):
        """After CreateAutoScalingGroup, DescribeAutoScalingGroups by name answers an
        empty list for a while (not an error).
        https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeAutoScalingGroups.html
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        _, subnets = default_network()
        template = self.ec2.create_launch_template(
            LaunchTemplateName=unique(),
            LaunchTemplateData={"ImageId": source_ami(), "InstanceType": "t3.micro"},
            TagSpecifications=ec2_tags("launch-template", {"Key": PROPAGATION, "Value": "0"}),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)
        name = unique()
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=1, DesiredCapacity=0,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "1"},
            VPCZoneIdentifier=subnets[0],
            Tags=[{**DELAYED, "PropagateAtLaunch": False}],
        )
        self.cleanup(self.autoscaling.delete_auto_scaling_group, AutoScalingGroupName=name, ForceDelete=True)

        def groups():
            answer = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
            return [g["AutoScalingGroupName"] for g in answer["AutoScalingGroups"]]

        self.assertEqual(groups(), [])
        wait_for("the group", lambda: groups() == [name], timeout=5)

    def test_default_delay(self):
        """Without the tag, the delay is IMMUNE_LOCALSTACK_PROPAGATION_SECONDS (default
        0.2 s): a target group asked for at once is not found, a moment later it is.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        vpc, _ = default_network()
        name = unique()
        arn = self.elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=80, VpcId=vpc
        )["TargetGroups"][0]["TargetGroupArn"]
        created = time.monotonic()
        self.cleanup(self.elbv2.delete_target_group, TargetGroupArn=arn)
        visible = found(self.elbv2.describe_target_groups, Names=[name])
        if time.monotonic() - created < 0.15:  # asked well inside the default window
            self.assertFalse(visible)
        wait_for("the target group", lambda: found(self.elbv2.describe_target_groups, Names=[name]), timeout=5)

    def test_two_second_delay(self):
        """A create tagged immune-localstack:propagation = 2 stays unknown for 2 s: an
        instance is still not found after 1.5 s, and is found after 2 s.
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        started = time.monotonic()
        [instance] = self.run_instance(tags=[{"Key": PROPAGATION, "Value": "2"}])
        ids = {"InstanceIds": [instance]}
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
        self.assertError("InvalidInstanceID.NotFound", self.ec2.describe_instances, **ids)
        seen = wait_for("the instance", lambda: found(self.ec2.describe_instances, **ids) and time.monotonic(), timeout=5)
        self.assertGreaterEqual(seen - started, 2.0)


if __name__ == "__main__":
    unittest.main()
