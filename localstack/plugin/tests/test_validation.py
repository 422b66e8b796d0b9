"""Names and tags AWS refuses.

AWS pages:
- ELB Tag: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html
- CreateTargetGroup (Name): https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html
- CreateImage (Name): https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
- EC2 error codes: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
- CreateLaunchTemplate (LaunchTemplateName):
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html
- EC2 tag restrictions: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
- CreateAutoScalingGroup (AutoScalingGroupName):
  https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html
"""

import unittest

from support import NO_DELAY, EmulatorTest, default_network, ec2_tags, source_ami, unique


class ValidationTest(EmulatorTest):
    def test_elb_tags(self):
        """ELB tags: key 1-128 and value 0-256 characters of letters, spaces, digits and
        _ . : / = + - @; anything else is a ValidationError (CreateTargetGroup, AddTags).
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_Tag.html"""
        vpc, _ = default_network()
        bad = [
            {"Key": "k" * 129, "Value": "v"},
            {"Key": "ok", "Value": "v" * 257},
            {"Key": "semi;colon", "Value": "v"},
            {"Key": "ok", "Value": "comma,value"},
        ]
        for tag in bad:
            self.assertError(
                "ValidationError", self.elbv2.create_target_group, Name=unique(), Protocol="HTTP",
                Port=80, VpcId=vpc, Tags=NO_DELAY + [tag],
            )
        tg = self.target_group({"Key": "k" * 128, "Value": "Ünïcode letters 1 _.:/=+-@"})
        self.elbv2.add_tags(ResourceArns=[tg], Tags=[{"Key": "empty-value", "Value": ""}])
        for tag in bad:
            self.assertError("ValidationError", self.elbv2.add_tags, ResourceArns=[tg], Tags=[tag])

    def test_target_group_names(self):
        """Target group names: at most 32 alphanumeric characters or hyphens, not
        beginning or ending with a hyphen; otherwise ValidationError.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateTargetGroup.html"""
        vpc, _ = default_network()
        for name in ("a" * 33, "-leading", "trailing-", "under_score", "dot.ted"):
            self.assertError(
                "ValidationError", self.elbv2.create_target_group, Name=name, Protocol="HTTP",
                Port=80, VpcId=vpc, Tags=NO_DELAY,
            )
        self.target_group(name=unique("A1")[:32].ljust(32, "0"))

    def test_image_names(self):
        """CreateImage names: 3-128 letters, digits, ( ) [ ] space . / - ' @ _;
        otherwise InvalidAMIName.Malformed (the EC2 error code for a malformed AMI name).
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html"""
        [instance] = self.run_instance()
        for name in ("ab", "x" * 129, "semi;colon", "plus+sign", "star*"):
            self.assertError(
                "InvalidAMIName.Malformed", self.ec2.create_image, InstanceId=instance, Name=name
            )
        good = f"ok (1) [2] ./-'@_ {unique()}"
        image = self.ec2.create_image(
            InstanceId=instance, Name=good, TagSpecifications=ec2_tags("image", *NO_DELAY)
        )["ImageId"]
        self.cleanup(self.ec2.deregister_image, ImageId=image)

    def test_launch_template_names(self):
        """Launch template names: 3-128 letters, digits, ( ) . - / _; otherwise
        InvalidLaunchTemplateName.MalformedException.
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateLaunchTemplate.html
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html"""
        data = {"ImageId": source_ami(), "InstanceType": "t3.micro"}
        for name in ("ab", "x" * 129, "with space", "at@sign", "brack[et]"):
            self.assertError(
                "InvalidLaunchTemplateName.MalformedException", self.ec2.create_launch_template,
                LaunchTemplateName=name, LaunchTemplateData=data,
            )
        template = self.ec2.create_launch_template(
            LaunchTemplateName=f"ok(1).-/_{unique()}", LaunchTemplateData=data,
            TagSpecifications=ec2_tags("launch-template", *NO_DELAY),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)

    def test_ec2_tags(self):
        """EC2 tags: key at most 128 characters, value at most 256, no aws: prefix;
        otherwise InvalidParameterValue (CreateTags and TagSpecifications).
        https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Tag.html"""
        [instance] = self.run_instance()
        bad = [
            {"Key": "k" * 129, "Value": "v"},
            {"Key": "ok", "Value": "v" * 257},
            {"Key": "aws:reserved", "Value": "v"},
        ]
        for tag in bad:
            self.assertError("InvalidParameterValue", self.ec2.create_tags, Resources=[instance], Tags=[tag])
            self.assertError(
                "InvalidParameterValue", self.ec2.create_launch_template, LaunchTemplateName=unique(),
                LaunchTemplateData={"ImageId": source_ami()},
                TagSpecifications=ec2_tags("launch-template", tag),
            )
        self.ec2.create_tags(Resources=[instance], Tags=[{"Key": "k" * 128, "Value": "v" * 256}])

    def test_auto_scaling_group_names(self):
        """Auto Scaling group names are 1-255 characters; 256 is a ValidationError.
        https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html"""
        _, subnets = default_network()
        template = self.ec2.create_launch_template(
            LaunchTemplateName=unique(), LaunchTemplateData={"ImageId": source_ami(), "InstanceType": "t3.micro"},
            TagSpecifications=ec2_tags("launch-template", *NO_DELAY),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)
        group = {
            "MinSize": 0, "MaxSize": 0, "VPCZoneIdentifier": subnets[0],
            "LaunchTemplate": {"LaunchTemplateId": template, "Version": "1"},
        }
        self.assertError(
            "ValidationError", self.autoscaling.create_auto_scaling_group,
            AutoScalingGroupName="g" * 256, **group,
        )
        name = unique().ljust(255, "g")
        self.autoscaling.create_auto_scaling_group(AutoScalingGroupName=name, **group)
        self.cleanup(self.autoscaling.delete_auto_scaling_group, AutoScalingGroupName=name, ForceDelete=True)


if __name__ == "__main__":
    unittest.main()
