"""Target health as ELBv2's DescribeTargetHealth reports it.

AWS pages:
- TargetHealth: https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html
- Health checks for Application Load Balancer target groups:
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html
- Deregistration delay:
  https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay

Timing: target groups here are tagged with a small time scale (0.04), so a 30 s health
check interval takes 1.2 s and a deregistration delay of 30 s takes 1.2 s; the tests
poll.
"""

import time
import unittest

from support import HEALTH, TIME_SCALE, EmulatorTest, forward, unique, wait_for

FAST = {"Key": TIME_SCALE, "Value": "0.04"}


class TargetHealthTest(EmulatorTest):
    def in_use_group(self, *tags, **kwargs) -> tuple[str, str, str]:
        """A fast target group forwarded to (weight 0) by a new load balancer's
        listener; returns (load balancer, listener, target group)."""
        tg = self.target_group(FAST, *tags, **kwargs)
        lb = self.load_balancer()
        listener = self.listener(lb, tg, weights=[0])
        return lb, listener, tg

    def register(self, tg: str, instance: str) -> None:
        self.elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": instance}])

    def test_not_in_use(self):
        """A target group no listener or rule forwards to: its targets read unused,
        Target.NotInUse ("The target group is not used by any load balancer").
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        tg = self.target_group(FAST)
        [instance] = self.run_instance()
        self.register(tg, instance)
        time.sleep(1.3)  # past the initial check it would have on a group in use
        self.assertEqual(self.health(tg), {instance: ("unused", "Target.NotInUse")})

    def test_initial_then_healthy(self):
        """A registered target in a group in use (a forward with weight 0 counts) reads
        initial, Elb.InitialHealthChecking, for one health check interval, then healthy
        ("After your target is registered, it must pass one health check to be
        considered healthy").
        https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html"""
        _, _, tg = self.in_use_group()
        [instance] = self.run_instance()
        self.register(tg, instance)
        self.assertEqual(self.health(tg), {instance: ("initial", "Elb.InitialHealthChecking")})
        wait_for("healthy", lambda: self.health(tg) == {instance: ("healthy", None)}, timeout=10)

    def test_interval_and_default_time_scale(self):
        """Without the time-scale tag the interval is scaled by the default
        (IMMUNE_LOCALSTACK_TIME_SCALE, 0.05): a 20 s interval reads initial for about a
        second, then healthy.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html"""
        tg = self.target_group(HealthCheckIntervalSeconds=20, HealthCheckTimeoutSeconds=5)
        lb = self.load_balancer()
        self.listener(lb, tg)
        [instance] = self.run_instance()
        self.register(tg, instance)
        self.assertEqual(self.health(tg)[instance], ("initial", "Elb.InitialHealthChecking"))
        wait_for("healthy", lambda: self.health(tg)[instance] == ("healthy", None), timeout=10)

    def test_leaving_use_and_coming_back_starts_initial_again(self):
        """A group that stops being forwarded to reads unused, Target.NotInUse; forwarded
        to again, its targets go through the initial health check again.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        _, listener, tg = self.in_use_group()
        other = self.target_group(FAST)
        [instance] = self.run_instance()
        self.register(tg, instance)
        wait_for("healthy", lambda: self.health(tg)[instance] == ("healthy", None))
        self.elbv2.modify_listener(ListenerArn=listener, DefaultActions=[forward([(other, 1)])])
        self.assertEqual(self.health(tg)[instance], ("unused", "Target.NotInUse"))
        self.elbv2.modify_listener(
            ListenerArn=listener, DefaultActions=[forward([(other, 1), (tg, 0)])]
        )
        self.assertEqual(self.health(tg)[instance], ("initial", "Elb.InitialHealthChecking"))
        wait_for("healthy again", lambda: self.health(tg)[instance] == ("healthy", None))

    def test_stopped_instance_is_invalid_state(self):
        """A stopped instance reads unused, Target.InvalidState ("The target is in the
        stopped or terminated state"); so does one terminated through EC2 (it stays
        registered: only Auto Scaling deregisters the instances it takes out).
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        _, _, tg = self.in_use_group()
        [stopped, terminated] = self.run_instance(count=2)
        self.register(tg, stopped)
        self.register(tg, terminated)
        wait_for("healthy", lambda: set(self.health(tg).values()) == {("healthy", None)})
        self.ec2.stop_instances(InstanceIds=[stopped])
        self.ec2.terminate_instances(InstanceIds=[terminated])
        invalid = ("unused", "Target.InvalidState")
        self.assertEqual(self.health(tg), {stopped: invalid, terminated: invalid})

    def test_deregistered_target_drains_then_is_gone(self):
        """A deregistered target of a group in use reads draining,
        Target.DeregistrationInProgress, for the group's deregistration delay, then is
        no longer listed.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html
        https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay"""
        _, _, tg = self.in_use_group()
        self.elbv2.modify_target_group_attributes(
            TargetGroupArn=tg,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
        )
        [instance] = self.run_instance()
        self.register(tg, instance)
        self.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": instance}])
        self.assertEqual(self.health(tg), {instance: ("draining", "Target.DeregistrationInProgress")})
        wait_for("the drained target to be gone", lambda: self.health(tg) == {}, timeout=10)
        self.assertEqual(self.health(tg, instance), {instance: ("unused", "Target.NotRegistered")})

    def test_deregistered_from_group_not_in_use_is_gone_at_once(self):
        """A group not in use sends no traffic, so a deregistered target has nothing to
        drain: it is gone at once.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-target-group-attributes.html#deregistration-delay"""
        tg = self.target_group(FAST)
        [instance] = self.run_instance()
        self.register(tg, instance)
        self.elbv2.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": instance}])
        self.assertEqual(self.health(tg), {})

    def test_unregistered_target_named(self):
        """DescribeTargetHealth naming a target that is not registered: unused,
        Target.NotRegistered.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        _, _, tg = self.in_use_group()
        [instance] = self.run_instance()
        self.assertEqual(self.health(tg, instance), {instance: ("unused", "Target.NotRegistered")})

    def test_health_tag_makes_target_unhealthy(self):
        """The emulator's way to fail health checks: an instance tagged
        immune-localstack:health = unhealthy reads unhealthy,
        Target.ResponseCodeMismatch, once its initial check is done.
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        _, _, tg = self.in_use_group()
        [instance] = self.run_instance()
        self.ec2.create_tags(Resources=[instance], Tags=[{"Key": HEALTH, "Value": "unhealthy"}])
        self.register(tg, instance)
        self.assertEqual(self.health(tg)[instance], ("initial", "Elb.InitialHealthChecking"))
        wait_for(
            "unhealthy",
            lambda: self.health(tg)[instance] == ("unhealthy", "Target.ResponseCodeMismatch"),
        )

    def test_auto_scaling_scale_in_drains(self):
        """An instance Auto Scaling takes out (scale-in) is deregistered from the group's
        target groups, and drains.
        https://docs.aws.amazon.com/autoscaling/ec2/userguide/autoscaling-load-balancer.html
        https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_TargetHealth.html"""
        _, _, tg = self.in_use_group()
        self.elbv2.modify_target_group_attributes(
            TargetGroupArn=tg,
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "60"}],
        )
        group = self.auto_scaling_group(tg, size=1)
        [instance] = [
            i["InstanceId"]
            for i in self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
                "AutoScalingGroups"
            ][0]["Instances"]
        ]
        self.assertEqual(self.health(tg)[instance], ("initial", "Elb.InitialHealthChecking"))
        self.autoscaling.set_desired_capacity(AutoScalingGroupName=group, DesiredCapacity=0)
        self.assertEqual(self.health(tg), {instance: ("draining", "Target.DeregistrationInProgress")})
        wait_for("the drained target to be gone", lambda: self.health(tg) == {}, timeout=10)

    def auto_scaling_group(self, tg: str, size: int) -> str:
        from support import NO_DELAY, default_network, ec2_tags, source_ami

        _, subnets = default_network()
        template = self.ec2.create_launch_template(
            LaunchTemplateName=unique(),
            LaunchTemplateData={"ImageId": source_ami(), "InstanceType": "t3.micro"},
            TagSpecifications=ec2_tags("launch-template", *NO_DELAY),
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.cleanup(self.ec2.delete_launch_template, LaunchTemplateId=template)
        name = unique()
        self.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=size, DesiredCapacity=size,
            LaunchTemplate={"LaunchTemplateId": template, "Version": "1"},
            VPCZoneIdentifier=subnets[0], TargetGroupARNs=[tg],
            Tags=[{"Key": k["Key"], "Value": k["Value"], "PropagateAtLaunch": False} for k in NO_DELAY],
        )
        self.cleanup(self.autoscaling.delete_auto_scaling_group, AutoScalingGroupName=name, ForceDelete=True)
        return name


if __name__ == "__main__":
    unittest.main()
